//! Reconcile: the per-target pipeline of a run.
//!
//! Every target goes through the same steps, whatever the command:
//!
//! 1. read the resource (its facts and its whole live rule set);
//! 2. desired: the selected tags' prefixes, those the kind may hold, fitted
//!    into the room the budget leaves; then the pure plan, computed once;
//! 3. the [`Step`] the run's mode asked for decides what happens next:
//!    stop there (plan, dry-run, check), take over rules (adopt), or write;
//! 4. write the whole rule set from the rules read in 1, and compare what
//!    Resource Manager answers (or, when the answer carries no resource, a
//!    read-back) with the plan to detect drift (verify);
//! 5. update the ownership ledger and record the apply.
//!
//! Targets run concurrently and independently: one failing target (even one
//! whose task panics) never stops the others and is always reported.

use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::azure::arm::Transport;
use crate::history::{History, now};
use crate::ledger::{ApplyRecord, LedgerChange};
use crate::notify::{Notifier, TargetEvent};
use crate::plan::{FitReport, FitSettings, Fitted, Guard, Ledger, Policy, TargetPlan, fit, plan};
use crate::prefix::PrefixSet;
use crate::tags::TagState;
use crate::targets::{LiveState, TargetSpec};

/// What happened to one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Planned and stopped there (plan, dry-run, check, adopt).
    Planned,
    /// Written.
    Applied,
    /// Nothing to change.
    Unchanged,
    /// Written, but the rules read back differ from the plan: a failure
    /// (exit 5); the next run plans again from what is live.
    Drifted,
    /// A guard refused it; nothing was written.
    Refused,
    /// An error; nothing was written unless the report says so.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Planned => "planned",
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Drifted => "drifted",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// What happened to one target. Also the per-target part of a saved plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetReport {
    pub name: String,
    pub kind: String,
    pub resource_id: String,
    pub outcome: Outcome,
    pub tags: Vec<String>,
    /// The desired rules (the tags' prefixes in this target's rule form).
    pub desired: Option<PrefixSet>,
    pub plan: Option<TargetPlan>,
    /// Digest of the live rule set the plan was computed on.
    pub live_fingerprint: Option<String>,
    pub sku: Option<String>,
    pub location: Option<String>,
    /// The guard that refused, when refused.
    pub guard: Option<Guard>,
    pub error: Option<String>,
    /// How the desired prefixes were fitted into the budget.
    pub fit: Option<FitReport>,
    /// Rules that differ from the plan after writing (in the write's answer,
    /// or read back when it carried none).
    pub drift: PrefixSet,
    pub warnings: Vec<String>,
}

impl TargetReport {
    fn new(target: &TargetSpec) -> Self {
        Self {
            name: target.name.clone(),
            kind: target.adapter.name().to_owned(),
            resource_id: target.resource.id.clone(),
            outcome: Outcome::Failed,
            tags: Vec::new(),
            desired: None,
            plan: None,
            live_fingerprint: None,
            sku: None,
            location: None,
            guard: None,
            error: None,
            fit: None,
            drift: PrefixSet::new(),
            warnings: Vec::new(),
        }
    }

    fn fail(&mut self, error: impl std::fmt::Display) {
        self.outcome = Outcome::Failed;
        self.error = Some(error.to_string());
    }

    fn refuse(&mut self, guard: Guard, message: impl Into<String>) {
        self.outcome = Outcome::Refused;
        self.guard = Some(guard);
        self.error = Some(message.into());
    }
}

/// A target's report with what the pipeline saw: the live state it ended
/// on (`targets check` shows it) and the rules it took over (`adopt`).
#[derive(Debug, Clone)]
pub struct TargetRun {
    pub report: TargetReport,
    pub live: Option<LiveState>,
    /// The live IP rules the ledger owns, when both were read.
    pub owned: Option<PrefixSet>,
    pub adopted: PrefixSet,
}

impl TargetRun {
    pub fn new(report: TargetReport, live: Option<LiveState>) -> Self {
        Self {
            report,
            live,
            owned: None,
            adopted: PrefixSet::new(),
        }
    }
}

/// What the pipeline does after planning, as the run's mode decided.
#[derive(Debug, Clone)]
pub enum Step {
    /// Stop after planning and record nothing; a selection the history
    /// cannot satisfy is a warning (`targets check`).
    Check,
    /// Stop after planning: nothing is written (plan, dry-run).
    Plan,
    /// Write; re-read first and plan again if the rules changed meanwhile.
    Write,
    /// Write a saved plan, only onto the live state it was made on.
    WriteSaved,
    /// Take over as owned the desired rules present as foreign, or these.
    Adopt(Option<PrefixSet>),
}

impl Step {
    fn writes(&self) -> bool {
        matches!(self, Step::Write | Step::WriteSaved)
    }

    /// Whether the target metrics count this run.
    fn records_metrics(&self) -> bool {
        matches!(self, Step::Plan | Step::Write | Step::WriteSaved)
    }
}

/// Everything the targets of one run share.
pub struct Context {
    pub history: History,
    pub arm: Arc<dyn Transport>,
    pub run_id: Option<i64>,
    /// `--force`: lift the removal-ratio guard.
    pub force: bool,
    pub step: Step,
    /// Set on SIGTERM or SIGINT: a target not yet written is not written.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// Builds the events recorded with each apply.
    pub notifier: Arc<Notifier>,
    /// The apply a rollback returns to (named in its events).
    pub rollback_to: Option<i64>,
}

impl Context {
    fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| *s.borrow())
    }
}

/// One target's work: its configuration, and for a saved plan its saved
/// report.
pub struct Work {
    pub target: TargetSpec,
    pub saved: Option<TargetReport>,
    /// A rollback: the owned rule set to return to, instead of the tags'.
    pub rollback: Option<PrefixSet>,
}

/// Runs the pipeline for every target, `concurrency` at a time.
pub async fn reconcile(
    ctx: Arc<Context>,
    work: Vec<Work>,
    tags: Arc<Vec<TagState>>,
    concurrency: usize,
) -> Vec<TargetRun> {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut ids = std::collections::HashMap::new();
    let mut out: Vec<Option<TargetRun>> = Vec::new();
    let mut targets = Vec::new();
    for (i, w) in work.into_iter().enumerate() {
        targets.push(w.target.clone());
        out.push(None);
        let (ctx, tags, gate) = (ctx.clone(), tags.clone(), gate.clone());
        let handle = tasks.spawn(async move {
            let _slot = gate.acquire_owned().await;
            (i, reconcile_one(&ctx, &w, &tags).await)
        });
        ids.insert(handle.id(), i);
    }
    while let Some(joined) = tasks.join_next_with_id().await {
        match joined {
            Ok((_, (i, run))) => out[i] = Some(run),
            Err(e) => {
                // A panic is a failed target, reported and recorded like any
                // other failure: it must never vanish behind exit 0.
                let Some(&i) = ids.get(&e.id()) else { continue };
                let mut report = TargetReport::new(&targets[i]);
                report.fail(format!("internal error while working on this target: {e}"));
                out[i] = Some(finish(&ctx, &targets[i], report, &now(), None).await);
            }
        }
    }
    out.into_iter().flatten().collect()
}

/// Plans a target from the run's tags: its ledger (with the grace periods
/// the history gives), the desired prefixes the kind may hold, and the
/// policy. [`Planner::plan`] is pure: planning twice on the same rules
/// gives the same plan.
struct Planner {
    ledger: Ledger,
    admissible: PrefixSet,
    policy: Policy,
}

impl Planner {
    fn plan(&self, target: &TargetSpec, live: &LiveState) -> (Fitted, TargetPlan) {
        let caps = target.adapter.capabilities(target);
        let foreign = foreign_rules(live, &self.ledger);
        let shared = if caps.vnet_rules_share_budget {
            live.rules.vnet_rules
        } else {
            0
        };
        let room = caps
            .budget
            .saturating_sub(foreign.len() + live.rules.other_ip_rules + shared);
        let fitted = fit(
            &self.admissible,
            &caps,
            room,
            FitSettings {
                overflow: target.overflow,
                bounds: &target.fit_bounds,
                location: live.facts.location.as_deref(),
            },
        );
        let p = plan(
            &fitted,
            &live.rules,
            &self.ledger,
            &caps,
            &self.policy,
            OffsetDateTime::now_utc(),
        );
        (fitted, p)
    }
}

async fn reconcile_one(ctx: &Context, work: &Work, tags: &[TagState]) -> TargetRun {
    let (target, saved) = (&work.target, work.saved.clone());
    let started_at = now();
    let mut report = match &saved {
        Some(s) => TargetReport {
            warnings: Vec::new(),
            ..s.clone()
        },
        None => TargetReport::new(target),
    };
    macro_rules! fail {
        ($e:expr, $live:expr) => {{
            report.fail($e);
            return finish(ctx, target, report, &started_at, $live).await;
        }};
    }
    if saved.is_some() && !target.resource.same_as(&report.resource_id) {
        fail!(
            "this target is no longer configured with the same resource id; make a new plan",
            None
        );
    }

    // 1. Read.
    let live = match target.adapter.read(ctx.arm.as_ref(), target, None).await {
        Ok(l) => l,
        Err(e) => fail!(e, None),
    };
    report.sku = live.facts.sku.clone();
    report.location = live.facts.location.clone();
    if let Some(why) = &live.facts.unsupported {
        report.refuse(Guard::Tier, why.clone());
        return finish(ctx, target, report, &started_at, Some(live)).await;
    }

    // An earlier run may have died, or lost the answer, after sending a
    // write: the additions it recorded as pending are settled against what
    // is live now (live ones become owned, the rest are forgotten), so no
    // rule tagsync wrote is ever left outside the ledger.
    let pending = match ctx.history.pending(&target.name).await {
        Ok(p) => p,
        Err(e) => fail!(e, Some(live)),
    };
    let settles = ctx.step.writes() || matches!(ctx.step, Step::Adopt(_));
    if settles
        && !pending.is_empty()
        && let Err(e) = ctx.history.settle_pending(target, &live.rules.ip).await
    {
        fail!(e, Some(live));
    }

    // 2. Desired and the plan.
    let mut owned = None;
    let (p, desired) = match saved {
        Some(saved) => {
            let (Some(p), Some(desired)) = (saved.plan, saved.desired) else {
                // The plan had already failed for this target: nothing to apply.
                return TargetRun::new(report, Some(live));
            };
            if saved.live_fingerprint.as_deref() != Some(live.fingerprint.as_str()) {
                report.refuse(
                    Guard::StalePlan,
                    "the target's rules changed since the plan was made; run `tagsync plan` again",
                );
                return finish(ctx, target, report, &started_at, Some(live)).await;
            }
            (p, desired)
        }
        None => {
            let mut ledger = match ctx.history.ledger(target).await {
                Ok(l) => l,
                Err(e) => fail!(e, Some(live)),
            };
            if !settles {
                // Plan and check see the settled ledger without writing it.
                for (net, at) in pending {
                    if live.rules.ip.contains(&net) {
                        ledger.entry(net).or_insert(at);
                    }
                }
            }
            owned = Some(live.rules.ip.difference(&foreign_rules(&live, &ledger)));
            let selected = match &work.rollback {
                // A rollback follows no tag: its rules are the owned set
                // recorded at the apply it returns to.
                Some(set) => Ok(crate::tags::Selected {
                    followed: Vec::new(),
                    consulted: Vec::new(),
                    prefixes: set.clone(),
                }),
                None => target.selection.select(tags),
            };
            let selected = match selected {
                Ok(s) => s,
                Err(e) if matches!(ctx.step, Step::Check) => {
                    // `targets check` before the history holds what this
                    // target follows: the resource is still worth showing.
                    report.outcome = Outcome::Planned;
                    report.warnings.push(if tags.is_empty() {
                        "no tags are recorded yet; `tagsync sync` records them and plans this target".into()
                    } else {
                        format!("cannot plan: {e}")
                    });
                    report.warnings.extend(live_warnings(target, &live, &[]));
                    return TargetRun {
                        owned,
                        ..TargetRun::new(report, Some(live))
                    };
                }
                Err(e) => fail!(e, Some(live)),
            };
            report.tags = selected.followed.iter().map(|t| t.name.clone()).collect();
            report
                .warnings
                .extend(live_warnings(target, &live, &selected.followed));
            let mut admissible = target.adapter.admissible(&selected.prefixes, target);
            report.warnings.extend(admissible.dropped.iter().cloned());
            if live.facts.ipv6_endpoints == Some(false) {
                let v6 = admissible.rules.v6().len();
                if v6 > 0 {
                    admissible.rules = PrefixSet::from_nets(
                        admissible
                            .rules
                            .iter()
                            .filter(|n| matches!(n, IpNet::V4(_))),
                    );
                    report.warnings.push(format!(
                        "{v6} IPv6 prefixes are not written: the resource has no IPv6 endpoints (ipV6Enabled is false), so they would admit nothing"
                    ));
                }
            }
            let mut planner = Planner {
                ledger,
                admissible: admissible.rules,
                policy: Policy {
                    // A rollback returns to exactly the recorded set: the
                    // grace period for prefixes leaving a tag has no say.
                    removal_grace: if work.rollback.is_some() {
                        std::time::Duration::ZERO
                    } else {
                        target.removal_grace
                    },
                    max_removal_ratio: target.max_removal_ratio,
                    force: ctx.force,
                },
            };
            let (fitted, _) = planner.plan(target, &live);
            // The grace period runs from when a prefix was last in the tag,
            // as the history records it: the ledger's stamp alone would be
            // stale for a target that could not be reached for a while.
            let leaving: Vec<IpNet> = planner
                .ledger
                .keys()
                .filter(|n| !fitted.rules.contains(n))
                .copied()
                .collect();
            match ctx.history.last_seen(&report.tags, &leaving).await {
                Ok(seen) => {
                    for (net, at) in seen {
                        if let Some(owned) = planner.ledger.get_mut(&net)
                            && at > owned.last_desired_at
                        {
                            owned.last_desired_at = at;
                        }
                    }
                }
                Err(e) => fail!(e, Some(live)),
            }
            let (fitted, p) = planner.plan(target, &live);
            report.desired = Some(fitted.rules.clone());
            report.fit = Some(fitted.report);
            report.live_fingerprint = Some(live.fingerprint.clone());
            report.plan = Some(p.clone());
            (p, fitted.rules)
        }
    };

    // 3. The mode decides.
    match &ctx.step {
        Step::Check | Step::Plan => {
            report.outcome = if p.refused() {
                Outcome::Refused
            } else {
                Outcome::Planned
            };
            report.guard = p.refusals.first().map(|r| r.guard);
            report.error = p.refusals.first().map(|r| r.message.clone());
            if ctx.step.records_metrics() {
                record_target_metrics(&report);
            }
            if matches!(ctx.step, Step::Check) {
                // Everything `plan` would say about the target, as warnings.
                report.warnings.extend(p.warnings.iter().cloned());
                report.warnings.extend(
                    p.refusals.iter().map(|r| {
                        format!("sync would refuse ({}): {}", r.guard.as_str(), r.message)
                    }),
                );
            }
            return TargetRun {
                owned,
                ..TargetRun::new(report, Some(live))
            };
        }
        Step::Adopt(given) => {
            let adopt = match given {
                None => p.desired_foreign.clone(),
                Some(wanted) => {
                    let absent = wanted.difference(&live.rules.ip);
                    if !absent.is_empty() {
                        fail!(
                            format!(
                                "not rules of target `{}`: {}; only live rules can be adopted",
                                target.name,
                                absent.to_strings().join(", ")
                            ),
                            Some(live)
                        );
                    }
                    wanted.clone()
                }
            };
            if let Err(e) = ctx
                .history
                .update_ledger(
                    target,
                    &LedgerChange {
                        added: adopt.clone(),
                        removed: PrefixSet::new(),
                        desired: adopt.clone(),
                        adopted: true,
                    },
                )
                .await
            {
                fail!(e, Some(live));
            }
            report.outcome = Outcome::Planned;
            return TargetRun {
                owned: owned.map(|o| o.union(&adopt)),
                adopted: adopt,
                ..TargetRun::new(report, Some(live))
            };
        }
        Step::Write | Step::WriteSaved => {}
    }
    debug_assert!(ctx.step.writes());

    // 4. Write, from the rules just read. Resource Manager offers no
    // ETag or If-Match on these resources, so no read closes the window
    // to a concurrent edit; a second read before writing would only move
    // it, at one more request per target. A saved plan's single read is
    // that check: its target is refused if the rules changed since the plan.
    if let Some(r) = p.refusals.first() {
        report.refuse(r.guard, r.message.clone());
        return finish(ctx, target, report, &started_at, Some(live)).await;
    }
    let desired = report.desired.clone().unwrap_or(desired);
    if !p.has_changes() {
        report.outcome = Outcome::Unchanged;
        let change = LedgerChange {
            desired,
            ..LedgerChange::default()
        };
        return finish_with(ctx, target, report, &started_at, Some(live), Some(change)).await;
    }
    if ctx.stopping() {
        fail!(
            "stopped by SIGTERM or SIGINT before writing; nothing was written to this target",
            Some(live)
        );
    }
    // Write-ahead: the additions are recorded as pending before the write
    // is sent; the ledger update after the read-back settles them.
    if let Err(e) = ctx.history.record_pending(target, &p.add).await {
        fail!(e, Some(live));
    }
    let written = match target
        .adapter
        .write(ctx.arm.as_ref(), target, &live, &p.add, &p.remove)
        .await
    {
        Ok(w) => w,
        Err(e) => fail!(
            format!(
                "{e} (if Azure applied the write anyway, the next run finds its rules and owns them)"
            ),
            Some(live)
        ),
    };

    // Verify: the write's answer is the resource as Resource Manager
    // stored it (a synchronous PUT or PATCH, or the end of a long-running
    // one); only when it carries no resource is it read back.
    let after = match written {
        Some(w) => w,
        None => match target
            .adapter
            .read(ctx.arm.as_ref(), target, Some(&live.facts))
            .await
        {
            Ok(a) => a,
            Err(e) => fail!(
                format!(
                    "the write was sent, but its result could not be read back: {e}; the next run reads it and settles ownership"
                ),
                Some(live)
            ),
        },
    };
    let missing = p.result.difference(&after.rules.ip);
    let unexpected = after.rules.ip.difference(&p.result);
    report.drift = missing.union(&unexpected);
    if !report.drift.is_empty() {
        report.warnings.push(format!(
            "drift: after writing, {} planned rules are missing and {} unplanned rules are present",
            missing.len(),
            unexpected.len()
        ));
    }

    // 5. The ledger: what was written and is there now.
    let added = p.add.intersection(&after.rules.ip);
    let removed = p.remove.difference(&after.rules.ip);
    report.outcome = if report.drift.is_empty() {
        Outcome::Applied
    } else {
        Outcome::Drifted
    };
    report.plan = Some(p);
    tracing::info!(target = %target.name, added = added.len(), removed = removed.len(), "applied");
    let change = LedgerChange {
        added,
        removed,
        desired,
        adopted: false,
    };
    finish_with(ctx, target, report, &started_at, Some(after), Some(change)).await
}

/// [`finish_with`] without a ledger change.
async fn finish(
    ctx: &Context,
    target: &TargetSpec,
    report: TargetReport,
    started_at: &str,
    live: Option<LiveState>,
) -> TargetRun {
    finish_with(ctx, target, report, started_at, live, None).await
}

/// Records the target's apply, with its ledger change in the same
/// transaction (in the modes that record them), logs a failure, records the
/// target's metrics, and wraps up the report. If the ledger cannot be
/// recorded the target has failed: its pending additions stay, and the next
/// run settles them against the live rules.
async fn finish_with(
    ctx: &Context,
    target: &TargetSpec,
    mut report: TargetReport,
    started_at: &str,
    live: Option<LiveState>,
    change: Option<LedgerChange>,
) -> TargetRun {
    if ctx.step.writes() {
        let (add, remove) = report
            .plan
            .as_ref()
            .filter(|_| matches!(report.outcome, Outcome::Applied | Outcome::Drifted))
            .map(|p| (p.add.clone(), p.remove.clone()))
            .unwrap_or_default();
        let rules_after = live
            .as_ref()
            .map(|l| l.rules.ip.clone())
            .unwrap_or_default();
        let rules_before = rules_after.difference(&add).union(&remove);
        let rec = ApplyRecord {
            run_id: ctx.run_id,
            started_at: started_at.to_owned(),
            outcome: report.outcome.as_str().to_owned(),
            guard: report.guard.map(|g| g.as_str().to_owned()),
            error: report.error.clone(),
            rules_before,
            rules_after,
            added: add,
            removed: remove,
            drift: report.drift.clone(),
        };
        let recorded = ctx
            .history
            .record_outcome(target, change.as_ref(), &rec, &|apply_id| {
                target_events(ctx, &report, &rec, apply_id)
            })
            .await;
        if let Err(e) = recorded {
            if change.is_some() {
                report.fail(format!(
                    "cannot record the ledger: {e}; the next run settles what was written"
                ));
                let failed = ApplyRecord {
                    outcome: report.outcome.as_str().to_owned(),
                    error: report.error.clone(),
                    ..rec
                };
                let events = |apply_id| target_events(ctx, &report, &failed, apply_id);
                if let Err(e) = ctx
                    .history
                    .record_outcome(target, None, &failed, &events)
                    .await
                {
                    tracing::error!(target = %target.name, "cannot record the apply: {e}");
                }
            } else {
                tracing::error!(target = %target.name, "cannot record the apply: {e}");
            }
        }
    }
    if let Some(e) = &report.error {
        tracing::error!(target = %target.name, outcome = report.outcome.as_str(), "{e}");
    }
    if ctx.step.records_metrics() {
        record_target_metrics(&report);
    }
    TargetRun::new(report, live)
}

/// The events of a target's recorded apply.
fn target_events(
    ctx: &Context,
    report: &TargetReport,
    rec: &ApplyRecord,
    apply_id: i64,
) -> Vec<crate::history::Outgoing> {
    ctx.notifier.target(&TargetEvent {
        target: &report.name,
        kind: &report.kind,
        resource_id: &report.resource_id,
        outcome: &rec.outcome,
        run_id: ctx.run_id,
        apply_id,
        added: &rec.added,
        removed: &rec.removed,
        drift: &report.drift,
        guard: rec.guard.as_deref(),
        error: rec.error.as_deref(),
        rollback_to: ctx.rollback_to,
    })
}

/// Warnings about the resource's own settings.
fn live_warnings(target: &TargetSpec, live: &LiveState, tags: &[&TagState]) -> Vec<String> {
    let mut w = Vec::new();
    if live.default_action.as_deref() == Some("Allow") {
        w.push("defaultAction is Allow: the IP rules are stored but not enforced (tagsync never changes defaultAction)".into());
    }
    if live.public_network_access.as_deref() == Some("Disabled") {
        w.push(
            "publicNetworkAccess is Disabled: IP rules have no effect while public access is off"
                .into(),
        );
    }
    w.extend(target.adapter.resource_warnings(live, tags));
    w
}

/// Prefixes owned by no rule: `live.ip` minus a ledger's keys.
pub fn foreign_rules(live: &LiveState, ledger: &Ledger) -> PrefixSet {
    live.rules
        .ip
        .difference(&PrefixSet::from_nets(ledger.keys().copied()))
}

/// Per-target metrics from a finished report.
fn record_target_metrics(r: &TargetReport) {
    let m = crate::metrics::metrics();
    let name = r.name.as_str();
    m.target_applies
        .with_label_values(&[name, r.outcome.as_str()])
        .inc();
    m.target_last_apply
        .with_label_values(&[name, r.outcome.as_str()])
        .set(crate::metrics::now_seconds());
    if let Some(g) = r.guard {
        m.guard_refusals
            .with_label_values(&[name, g.as_str()])
            .inc();
    }
    if let Some(p) = &r.plan {
        let applied = matches!(r.outcome, Outcome::Applied | Outcome::Drifted);
        let owned = if applied {
            p.result.len() - p.foreign.len()
        } else {
            p.keep.len() + p.remove.len() + p.pending_removal.len()
        };
        m.target_rules
            .with_label_values(&[name, "owned"])
            .set(owned as i64);
        m.target_rules
            .with_label_values(&[name, "foreign"])
            .set(p.foreign.len() as i64);
        m.target_budget
            .with_label_values(&[name])
            .set(p.capacity.budget as i64);
        if applied {
            m.target_added
                .with_label_values(&[name])
                .inc_by(p.add.len() as u64);
            m.target_removed
                .with_label_values(&[name])
                .inc_by(p.remove.len() as u64);
        }
    }
    if let Some(f) = &r.fit {
        m.target_overadmitted
            .with_label_values(&[name])
            .set(f.extra_addresses as f64);
    }
    if !r.drift.is_empty() {
        m.target_drift.with_label_values(&[name]).inc();
    }
}

#[cfg(test)]
mod tests {
    //! The pipeline in process: the real adapters, planner and ledger (a
    //! real SQLite file) against an in-memory Event Hubs namespace behind
    //! the [`Transport`] trait.

    use std::sync::Mutex;

    use reqwest::Method;
    use serde_json::{Value, json};

    use super::*;
    use crate::azure::arm::ArmError;

    /// One Event Hubs namespace: its resource and its rule set; records the
    /// calls; can be told to panic.
    struct MemoryNamespace {
        rules: Mutex<Value>,
        calls: Mutex<Vec<String>>,
        panic_on_put: bool,
    }

    impl MemoryNamespace {
        fn new(ip_rules: Value) -> Self {
            Self {
                rules: Mutex::new(json!({"properties": {
                    "publicNetworkAccess": "Enabled", "defaultAction": "Deny",
                    "virtualNetworkRules": [], "ipRules": ip_rules,
                    "trustedServiceAccessEnabled": false}})),
                calls: Mutex::new(Vec::new()),
                panic_on_put: false,
            }
        }

        fn calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().expect("lock"))
        }

        fn masks(&self) -> Vec<String> {
            self.rules.lock().expect("lock")["properties"]["ipRules"]
                .as_array()
                .expect("rules")
                .iter()
                .map(|r| r["ipMask"].as_str().expect("mask").to_owned())
                .collect()
        }
    }

    #[async_trait::async_trait]
    impl Transport for MemoryNamespace {
        async fn send(
            &self,
            method: Method,
            path: &str,
            _api_version: &str,
            body: Option<&Value>,
            _action: &str,
        ) -> Result<Value, ArmError> {
            let rules_path = path.ends_with("/networkRuleSets/default");
            self.calls.lock().expect("lock").push(format!(
                "{method} {}",
                if rules_path { "rules" } else { "namespace" }
            ));
            match (method, rules_path) {
                (Method::GET, false) => {
                    Ok(json!({"sku": {"name": "Standard"}, "location": "westeurope"}))
                }
                (Method::GET, true) => Ok(self.rules.lock().expect("lock").clone()),
                (Method::PUT, true) => {
                    assert!(!self.panic_on_put, "the fake was told to panic");
                    let body = body.cloned().unwrap_or_default();
                    *self.rules.lock().expect("lock") = body.clone();
                    Ok(body)
                }
                (m, _) => Err(ArmError::Invalid(format!("unexpected {m} {path}"))),
            }
        }
    }

    fn target() -> TargetSpec {
        let toml = "[[targets]]\nname = \"eh\"\nresource_id = \"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.EventHub/namespaces/ns\"\n";
        let settings = crate::config::ConfigFile::parse(toml, "test")
            .and_then(|c| c.validate())
            .expect("valid");
        settings.targets[0].clone()
    }

    fn tags(prefixes: &[&str]) -> Arc<Vec<TagState>> {
        Arc::new(vec![TagState {
            name: "AzureDigitalTwins".into(),
            region: String::new(),
            change_number: 1,
            prefixes: PrefixSet::parse_all(prefixes.iter().copied())
                .expect("valid")
                .0,
        }])
    }

    async fn run(
        history: &History,
        arm: Arc<MemoryNamespace>,
        step: Step,
        prefixes: &[&str],
    ) -> TargetRun {
        let ctx = Arc::new(Context {
            history: history.clone(),
            arm,
            run_id: None,
            force: false,
            step,
            stop: None,
            notifier: Arc::new(Notifier::none()),
            rollback_to: None,
        });
        let work = vec![Work {
            target: target(),
            saved: None,
            rollback: None,
        }];
        let mut runs = reconcile(ctx, work, tags(prefixes), 4).await;
        assert_eq!(runs.len(), 1, "every target is reported");
        runs.remove(0)
    }

    #[tokio::test]
    async fn plan_writes_nothing_apply_writes_once_and_an_unchanged_target_costs_two_reads() {
        let dir = tempfile::tempdir().expect("dir");
        let history = History::open(&dir.path().join("t.db"), true)
            .await
            .expect("db");
        let ns = Arc::new(MemoryNamespace::new(
            json!([{"ipMask": "1.1.1.1", "action": "Allow"}]),
        ));

        let planned = run(&history, ns.clone(), Step::Plan, &["20.0.0.0/29"]).await;
        assert_eq!(planned.report.outcome, Outcome::Planned);
        assert_eq!(ns.calls(), vec!["GET namespace", "GET rules"]);
        assert!(history.ledger(&target()).await.expect("ledger").is_empty());

        let applied = run(&history, ns.clone(), Step::Write, &["20.0.0.0/29"]).await;
        assert_eq!(
            applied.report.outcome,
            Outcome::Applied,
            "{:?}",
            applied.report
        );
        assert_eq!(ns.masks(), vec!["1.1.1.1", "20.0.0.0/29"]);
        assert_eq!(ns.calls(), vec!["GET namespace", "GET rules", "PUT rules"]);
        let ledger = history.ledger(&target()).await.expect("ledger");
        assert_eq!(
            ledger.keys().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["20.0.0.0/29"]
        );

        let again = run(&history, ns.clone(), Step::Write, &["20.0.0.0/29"]).await;
        assert_eq!(again.report.outcome, Outcome::Unchanged);
        assert_eq!(ns.calls(), vec!["GET namespace", "GET rules"]);
        history.close().await;
    }

    #[tokio::test]
    async fn a_panic_inside_a_target_is_a_failed_target_not_a_missing_one() {
        let dir = tempfile::tempdir().expect("dir");
        let history = History::open(&dir.path().join("t.db"), true)
            .await
            .expect("db");
        let mut ns = MemoryNamespace::new(json!([]));
        ns.panic_on_put = true;
        let failed = run(&history, Arc::new(ns), Step::Write, &["20.0.0.0/29"]).await;
        assert_eq!(failed.report.outcome, Outcome::Failed);
        let error = failed.report.error.unwrap_or_default();
        assert!(error.contains("internal error"), "{error}");
        // Recorded like any failure.
        let applies = history.applies("eh", 10).await.expect("applies");
        assert_eq!(applies.len(), 1);
        assert_eq!(applies[0].outcome, "failed");
        history.close().await;
    }
}
