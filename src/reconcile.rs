//! Reconcile: plan and apply every target.
//!
//! One code path serves `plan`, `sync --dry-run`, `sync` and `apply`: read
//! the live rules, compute the pure plan, stop there for a plan or dry-run,
//! otherwise re-read (re-planning if someone changed the rules meanwhile),
//! write the whole rule set, read it back to detect drift, and update the
//! ownership ledger. Targets run concurrently and independently: one
//! failing target never stops the others.

use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::azure::arm::ArmClient;
use crate::history::{History, now};
use crate::tags::TagState;
use crate::ledger::ApplyRecord;
use crate::plan::{Policy, TargetPlan, plan};
use crate::prefix::PrefixSet;
use crate::tags::TagSelection;
use crate::targets::{Adapter, LiveState, ResourceFacts, TargetSpec};

#[derive(Debug, Clone, Default)]
pub struct ReconcileOptions {
    /// Compute and show the plan; write nothing to Azure or the ledger.
    pub dry_run: bool,
    /// Lift the removal-ratio guard.
    pub force: bool,
}

/// What happened to one target. Also the per-target part of a saved plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetReport {
    pub name: String,
    pub kind: String,
    pub resource_id: String,
    /// `planned`, `applied`, `unchanged`, `refused` or `failed`.
    pub outcome: String,
    pub tags: Vec<String>,
    /// The desired rules (the tags' prefixes in this target's rule form).
    pub desired: Option<PrefixSet>,
    pub plan: Option<TargetPlan>,
    /// Digest of the live rule set the plan was computed on.
    pub live_fingerprint: Option<String>,
    pub sku: Option<String>,
    pub location: Option<String>,
    /// The guard that refused, when refused.
    pub guard: Option<String>,
    pub error: Option<String>,
    /// How the desired prefixes were fitted into the budget.
    pub fit: Option<FitReport>,
    /// Rules that differ from the plan after writing (read back).
    pub drift: PrefixSet,
    pub replanned: bool,
    pub warnings: Vec<String>,
}

impl TargetReport {
    fn new(target: &TargetSpec) -> Self {
        Self {
            name: target.name.clone(),
            kind: target.adapter.name().to_owned(),
            resource_id: target.resource.id.clone(),
            outcome: "failed".into(),
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
            replanned: false,
            warnings: Vec::new(),
        }
    }

    fn fail(mut self, error: impl std::fmt::Display) -> Self {
        self.outcome = "failed".into();
        self.error = Some(error.to_string());
        self
    }
}

/// A saved plan (`tagsync plan --out`), applied by `tagsync apply`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanDocument {
    pub format: u32,
    pub created_at: String,
    pub run_id: i64,
    pub change_number: Option<u64>,
    pub targets: Vec<TargetReport>,
}

pub const PLAN_FORMAT: u32 = 1;

struct Ctx {
    history: History,
    arm: ArmClient,
    run_id: Option<i64>,
    opts: ReconcileOptions,
}

/// What a selection takes from a run's recorded tags: the tags it picks
/// (the named tags, or their sub-tags for the regions; with
/// `include_unassigned` also the global tag, for the prefixes no sub-tag
/// carries) and the prefixes they give. The feed run resolved and recorded
/// every target's selection, so a missing tag is an error.
pub fn select<'a>(
    selection: &TagSelection,
    states: &'a [TagState],
) -> Result<(Vec<&'a TagState>, PrefixSet), String> {
    let mut tags: Vec<&TagState> = Vec::new();
    let mut desired = PrefixSet::new();
    for base in &selection.tags {
        let global = || {
            states
                .iter()
                .find(|s| &s.name == base)
                .ok_or_else(|| format!("tag `{base}` was not recorded by this run"))
        };
        if selection.regions.is_empty() {
            let g = global()?;
            desired = desired.union(&g.prefixes);
            tags.push(g);
            continue;
        }
        let prefix = format!("{base}.");
        let regional: Vec<&TagState> = states
            .iter()
            .filter(|s| s.name.starts_with(&prefix))
            .collect();
        for region in &selection.regions {
            let found: Vec<&TagState> = regional
                .iter()
                .copied()
                .filter(|s| crate::tags::region_matches(base, &s.name, &s.region, region))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "no sub-tag of `{base}` for region `{region}` was recorded by this run"
                ));
            }
            for t in found {
                desired = desired.union(&t.prefixes);
                tags.push(t);
            }
        }
        if selection.include_unassigned {
            let g = global()?;
            let subs: Vec<&PrefixSet> = regional.iter().map(|s| &s.prefixes).collect();
            desired = desired.union(&crate::tags::unassigned(&g.prefixes, &subs));
            tags.push(g);
        }
    }
    tags.sort_by(|a, b| a.name.cmp(&b.name));
    tags.dedup_by(|a, b| a.name == b.name);
    Ok((tags, desired))
}

/// Plans (and unless dry-run, applies) every target, `concurrency` at a time.
pub async fn reconcile(
    targets: &[TargetSpec],
    states: &[TagState],
    history: &History,
    arm: &ArmClient,
    run_id: Option<i64>,
    concurrency: usize,
    opts: &ReconcileOptions,
) -> Vec<TargetReport> {
    let ctx = Arc::new(Ctx {
        history: history.clone(),
        arm: arm.clone(),
        run_id,
        opts: opts.clone(),
    });
    let states = Arc::new(states.to_vec());
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, target) in targets.iter().cloned().enumerate() {
        let ctx = ctx.clone();
        let states = states.clone();
        let gate = gate.clone();
        tasks.spawn(async move {
            let _slot = gate.acquire_owned().await;
            (i, reconcile_one(&ctx, &target, &states).await)
        });
    }
    collect(tasks, targets.len()).await
}

async fn collect(
    mut tasks: tokio::task::JoinSet<(usize, TargetReport)>,
    n: usize,
) -> Vec<TargetReport> {
    let mut out: Vec<Option<TargetReport>> = vec![None; n];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, report)) => out[i] = Some(report),
            Err(e) => tracing::error!("a target task panicked: {e}"),
        }
    }
    out.into_iter().flatten().collect()
}

async fn reconcile_one(ctx: &Ctx, target: &TargetSpec, states: &[TagState]) -> TargetReport {
    let started_at = now();
    let adapter = target.adapter;
    let mut report = TargetReport::new(target);
    let (tags, desired_raw) = match select(&target.selection, states) {
        Ok(t) => t,
        Err(e) => return finish(ctx, target, report.fail(e), &started_at, None).await,
    };
    report.tags = tags.iter().map(|t| t.name.clone()).collect();
    let admissible = adapter.admissible(&desired_raw, target);
    report.warnings.extend(admissible.dropped.iter().cloned());

    let facts = match adapter.facts(&ctx.arm, target).await {
        Ok(f) => f,
        Err(e) => return finish(ctx, target, report.fail(e), &started_at, None).await,
    };
    report.sku = facts.sku.clone();
    report.location = facts.location.clone();
    if let Some(why) = &facts.unsupported {
        report.outcome = "refused".into();
        report.guard = Some("tier".into());
        report.error = Some(why.clone());
        return finish(ctx, target, report, &started_at, None).await;
    }
    let live = match adapter.read(&ctx.arm, target).await {
        Ok(l) => l,
        Err(e) => return finish(ctx, target, report.fail(e), &started_at, None).await,
    };
    let mut ledger = match ctx.history.ledger(target).await {
        Ok(l) => l,
        Err(e) => return finish(ctx, target, report.fail(e), &started_at, Some(&live)).await,
    };
    report
        .warnings
        .extend(live_warnings(target, &live, &facts, &tags));

    // Fit the desired prefixes into the room the budget leaves.
    let caps = adapter.capabilities(target);
    let foreign = foreign_rules(&live, &ledger);
    let shared = if caps.vnet_rules_share_budget {
        live.rules.vnet_rules
    } else {
        0
    };
    let room = caps
        .budget
        .saturating_sub(foreign.len() + live.rules.other_ip_rules + shared);
    let fitted = fit_target(
        target,
        &caps,
        &admissible.rules,
        room,
        facts.location.as_deref(),
    );
    report.desired = Some(fitted.rules.clone());
    report.fit = Some(fitted.report.clone());

    // The grace period runs from when a prefix was last in the tag, as the
    // history records it: the ledger's stamp alone would be stale for a
    // target that could not be reached for a while.
    let leaving: Vec<IpNet> = ledger
        .keys()
        .filter(|n| !fitted.rules.contains(n))
        .copied()
        .collect();
    match ctx.history.last_seen(&report.tags, &leaving).await {
        Ok(seen) => {
            for (net, at) in seen {
                if let Some(owned) = ledger.get_mut(&net)
                    && at > owned.last_desired_at
                {
                    owned.last_desired_at = at;
                }
            }
        }
        Err(e) => return finish(ctx, target, report.fail(e), &started_at, Some(&live)).await,
    }
    let policy = Policy {
        removal_grace: target.removal_grace,
        max_removal_ratio: target.max_removal_ratio,
        force: ctx.opts.force,
    };
    let mut p = plan(
        &fitted.rules,
        &live.rules,
        &ledger,
        &caps,
        &policy,
        OffsetDateTime::now_utc(),
    );
    fitted.amend(&mut p);
    report.live_fingerprint = Some(live.fingerprint.clone());
    report.plan = Some(p.clone());
    if ctx.opts.dry_run {
        report.outcome = if p.refused() { "refused" } else { "planned" }.into();
        report.guard = p.refusals.first().map(|r| r.guard.clone());
        report.error = p.refusals.first().map(|r| r.message.clone());
        record_target_metrics(&report);
        return report;
    }
    let desired = fitted.rules.clone();
    apply_planned(
        ctx,
        adapter,
        target,
        report,
        live,
        p,
        &desired,
        &started_at,
        Some(((&ledger, &policy), &fitted)),
    )
    .await
}

/// Applies a plan to a target whose live state was `live` when planned:
/// re-reads first and, if the rules changed meanwhile, re-plans (with
/// `replan`) or refuses (a saved plan), then writes, reads back and updates
/// the ledger.
#[allow(clippy::too_many_arguments)]
async fn apply_planned(
    ctx: &Ctx,
    adapter: &dyn Adapter,
    target: &TargetSpec,
    mut report: TargetReport,
    live: LiveState,
    mut p: TargetPlan,
    desired: &PrefixSet,
    started_at: &str,
    replan: Option<((&crate::plan::Ledger, &Policy), &Fitted)>,
) -> TargetReport {
    let mut live = live;
    if !p.refused() && p.has_changes() {
        let fresh = match adapter.read(&ctx.arm, target).await {
            Ok(f) => f,
            Err(e) => return finish(ctx, target, report.fail(e), started_at, Some(&live)).await,
        };
        if fresh.fingerprint != live.fingerprint {
            match replan {
                Some(((ledger, policy), fitted)) => {
                    tracing::warn!(target = %target.name, "the live rules changed since they were read; planning again");
                    let caps = adapter.capabilities(target);
                    p = plan(
                        desired,
                        &fresh.rules,
                        ledger,
                        &caps,
                        policy,
                        OffsetDateTime::now_utc(),
                    );
                    fitted.amend(&mut p);
                    report.replanned = true;
                    report.warnings.push("the live rules changed after they were read; the plan was computed again on the new rules".into());
                    report.live_fingerprint = Some(fresh.fingerprint.clone());
                    report.plan = Some(p.clone());
                }
                None => {
                    report.outcome = "refused".into();
                    report.guard = Some("stale-plan".into());
                    report.error = Some("the target's rules changed since the plan was made; run `tagsync plan` again".into());
                    return finish(ctx, target, report, started_at, Some(&fresh)).await;
                }
            }
        }
        live = fresh;
    }
    if let Some(r) = p.refusals.first() {
        report.outcome = "refused".into();
        report.guard = Some(r.guard.clone());
        report.error = Some(r.message.clone());
        return finish(ctx, target, report, started_at, Some(&live)).await;
    }
    if !p.has_changes() {
        report.outcome = "unchanged".into();
        if let Err(e) = ctx
            .history
            .update_ledger(target, &PrefixSet::new(), &PrefixSet::new(), desired, false)
            .await
        {
            return finish(ctx, target, report.fail(e), started_at, Some(&live)).await;
        }
        return finish(ctx, target, report, started_at, Some(&live)).await;
    }
    let written = match adapter
        .write(&ctx.arm, target, &live, &p.add, &p.remove)
        .await
    {
        Ok(w) => w,
        Err(e) => return finish(ctx, target, report.fail(e), started_at, Some(&live)).await,
    };
    // Read back: what Azure holds now, not what it answered.
    let after = match adapter.read(&ctx.arm, target).await {
        Ok(a) => a,
        Err(e) => {
            report
                .warnings
                .push(format!("could not read the rules back after writing: {e}"));
            written
        }
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
    let added = p.add.intersection(&after.rules.ip);
    let removed = p.remove.difference(&after.rules.ip);
    if let Err(e) = ctx
        .history
        .update_ledger(target, &added, &removed, desired, false)
        .await
    {
        return finish(ctx, target, report.fail(e), started_at, Some(&after)).await;
    }
    report.outcome = "applied".into();
    report.plan = Some(p);
    tracing::info!(target = %target.name, added = added.len(), removed = removed.len(), "applied");
    finish(ctx, target, report, started_at, Some(&after)).await
}

/// Records the apply (not for dry-runs) and logs a failure.
async fn finish(
    ctx: &Ctx,
    target: &TargetSpec,
    report: TargetReport,
    started_at: &str,
    live: Option<&LiveState>,
) -> TargetReport {
    if let Some(e) = &report.error {
        tracing::error!(target = %target.name, outcome = %report.outcome, "{e}");
    }
    record_target_metrics(&report);
    if ctx.opts.dry_run {
        return report;
    }
    let (add, remove) = report
        .plan
        .as_ref()
        .filter(|_| report.outcome == "applied")
        .map(|p| (p.add.clone(), p.remove.clone()))
        .unwrap_or_default();
    let rules_after = live.map(|l| l.rules.ip.clone()).unwrap_or_default();
    let rules_before = rules_after.difference(&add).union(&remove);
    let rec = ApplyRecord {
        run_id: ctx.run_id,
        started_at: started_at.to_owned(),
        outcome: report.outcome.clone(),
        guard: report.guard.clone(),
        error: report.error.clone(),
        rules_before,
        rules_after,
        added: add,
        removed: remove,
        drift: report.drift.clone(),
    };
    if let Err(e) = ctx.history.record_apply(target, &rec).await {
        tracing::error!(target = %target.name, "cannot record the apply: {e}");
    }
    report
}

/// Applies a saved plan: each target only if its live rules are exactly
/// those the plan was made on.
pub async fn apply_document(
    doc: &PlanDocument,
    targets: &[TargetSpec],
    history: &History,
    arm: &ArmClient,
    concurrency: usize,
) -> Vec<TargetReport> {
    let ctx = Arc::new(Ctx {
        history: history.clone(),
        arm: arm.clone(),
        run_id: Some(doc.run_id),
        opts: ReconcileOptions::default(),
    });
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, saved) in doc.targets.iter().cloned().enumerate() {
        let ctx = ctx.clone();
        let gate = gate.clone();
        let target = targets.iter().find(|t| t.name == saved.name).cloned();
        tasks.spawn(async move {
            let _slot = gate.acquire_owned().await;
            (i, apply_saved(&ctx, target, saved).await)
        });
    }
    collect(tasks, doc.targets.len()).await
}

async fn apply_saved(ctx: &Ctx, target: Option<TargetSpec>, saved: TargetReport) -> TargetReport {
    let started_at = now();
    let Some(target) = target.filter(|t| t.resource.same_as(&saved.resource_id)) else {
        let mut r = saved;
        r.outcome = "failed".into();
        r.error = Some(
            "this target is no longer configured with the same resource id; make a new plan".into(),
        );
        return r;
    };
    let (Some(p), Some(desired), Some(fingerprint)) = (
        saved.plan.clone(),
        saved.desired.clone(),
        saved.live_fingerprint.clone(),
    ) else {
        // The plan had already failed for this target: nothing to apply.
        return saved;
    };
    let adapter = target.adapter;
    let mut report = saved;
    report.warnings.clear();
    let live = match adapter.read(&ctx.arm, &target).await {
        Ok(l) => l,
        Err(e) => return finish(ctx, &target, report.fail(e), &started_at, None).await,
    };
    if live.fingerprint != fingerprint {
        report.outcome = "refused".into();
        report.guard = Some("stale-plan".into());
        report.error = Some(
            "the target's rules changed since the plan was made; run `tagsync plan` again".into(),
        );
        return finish(ctx, &target, report, &started_at, Some(&live)).await;
    }
    apply_planned(
        ctx,
        adapter,
        &target,
        report,
        live,
        p,
        &desired,
        &started_at,
        None,
    )
    .await
}

/// Warnings about the resource's own settings (plan and `targets check`).
pub fn live_warnings(
    target: &TargetSpec,
    live: &LiveState,
    facts: &ResourceFacts,
    tags: &[&TagState],
) -> Vec<String> {
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
    w.extend(target.adapter.resource_warnings(live, facts, tags));
    w
}

/// Prefixes owned by no rule: `live.ip` minus a ledger's keys.
pub fn foreign_rules(live: &LiveState, ledger: &crate::plan::Ledger) -> PrefixSet {
    live.rules
        .ip
        .difference(&PrefixSet::from_nets(ledger.keys().copied()))
}

/// Parses prefixes given on the command line.
pub fn parse_prefix_args(args: &[String]) -> Result<PrefixSet, String> {
    let nets: Result<Vec<IpNet>, String> = args
        .iter()
        .map(|a| {
            crate::prefix::parse_prefix(a)
                .map(|(n, _)| n)
                .map_err(|e| e.to_string())
        })
        .collect();
    nets.map(PrefixSet::from_nets)
}

/// How a target's desired prefixes were fitted into its budget (reported
/// in the plan).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitReport {
    /// `lossless` (it fit), `summarize` or `fail` (it did not fit).
    pub policy: String,
    /// Rules the exact (aggregated) form needs.
    pub rules_needed: usize,
    /// Rules after fitting.
    pub rules_after: usize,
    /// Rules the budget leaves after foreign and shared rules.
    pub room: usize,
    /// Summarized blocks that admit addresses outside the tags.
    pub over_admitting: Vec<crate::fit::OverAdmitting>,
    pub extra_addresses: u128,
    /// For `fail`: what would fit instead.
    pub alternatives: Vec<String>,
}

/// The desired rules after fitting, and what the plan must be told.
pub struct Fitted {
    pub rules: PrefixSet,
    pub report: FitReport,
    /// A summary that could not be made (refuses the target).
    refusal: Option<crate::plan::Refusal>,
}

impl Fitted {
    /// Adds the fitting's refusal, or the alternatives to a budget refusal.
    fn amend(&self, p: &mut TargetPlan) {
        if let Some(r) = &self.refusal {
            p.refusals.retain(|x| x.guard != "budget");
            p.refusals.push(r.clone());
        } else if !self.report.alternatives.is_empty() {
            for r in p.refusals.iter_mut().filter(|r| r.guard == "budget") {
                r.message = format!(
                    "{} Alternatives: {}",
                    r.message,
                    self.report.alternatives.join("; ")
                );
            }
        }
        if self.report.extra_addresses > 0 {
            p.warnings.push(format!(
                "summarized {} rules into {}: {} blocks admit {} addresses outside the tags",
                self.report.rules_needed,
                self.report.rules_after,
                self.report.over_admitting.len(),
                self.report.extra_addresses
            ));
        }
    }
}

/// Aggregates the admissible prefixes losslessly; if that does not fit the
/// room, summarizes (overflow = "summarize") or prepares the refusal's
/// alternatives (overflow = "fail"). Pure.
pub fn fit_target(
    target: &TargetSpec,
    caps: &crate::plan::Capabilities,
    admissible: &PrefixSet,
    room: usize,
    location: Option<&str>,
) -> Fitted {
    use crate::fit::Overflow;
    use crate::fit::{CostModel, summarize};
    let exact = admissible.aggregate();
    let cost = CostModel {
        split_31: caps.split_31,
    };
    let needed = cost.rules_of(&exact);
    let mut report = FitReport {
        policy: "lossless".into(),
        rules_needed: needed,
        rules_after: needed,
        room,
        over_admitting: Vec::new(),
        extra_addresses: 0,
        alternatives: Vec::new(),
    };
    let exact_rules = crate::targets::rule_forms(&exact, caps);
    if needed <= room {
        return Fitted {
            rules: exact_rules,
            report,
            refusal: None,
        };
    }
    let summary = summarize(&exact, room, cost, &target.fit_bounds);
    match target.overflow {
        Overflow::Fail => {
            report.policy = "fail".into();
            let region = location
                .map(|l| l.to_ascii_lowercase().replace(' ', ""))
                .unwrap_or_else(|| "<region>".into());
            report.alternatives.push(format!(
                "select the regional sub-tag of this resource's region (regions = [\"{region}\"], with include_unassigned = true to keep the prefixes no region carries; `tagsync feed regions` lists them)"
            ));
            report.alternatives.push(match &summary {
                Ok(s) => format!(
                    "overflow = \"summarize\" fits it in {} rules admitting {} addresses outside the tags",
                    s.rules, s.extra_addresses
                ),
                Err(e) => format!("overflow = \"summarize\" cannot: {e}"),
            });
            Fitted {
                rules: exact_rules,
                report,
                refusal: None,
            }
        }
        Overflow::Summarize => {
            report.policy = "summarize".into();
            match summary {
                Ok(s) => {
                    report.rules_after = s.rules;
                    report.extra_addresses = s.extra_addresses;
                    report.over_admitting = s.over_admitting;
                    Fitted {
                        rules: crate::targets::rule_forms(&s.blocks, caps),
                        report,
                        refusal: None,
                    }
                }
                Err(e) => {
                    let refusal = crate::plan::Refusal {
                        guard: "budget".into(),
                        message: format!(
                            "the tags need {needed} rules and the budget leaves {room}: {e}"
                        ),
                    };
                    Fitted {
                        rules: exact_rules,
                        report,
                        refusal: Some(refusal),
                    }
                }
            }
        }
    }
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
    if let Some(g) = &r.guard {
        m.guard_refusals
            .with_label_values(&[name, g.as_str()])
            .inc();
    }
    if let Some(p) = &r.plan {
        let applied = r.outcome == "applied";
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
    use super::*;

    fn state(name: &str, region: &str, prefixes: &[&str]) -> TagState {
        TagState {
            name: name.into(),
            region: region.into(),
            change_number: 1,
            prefixes: PrefixSet::parse_all(prefixes.iter().copied())
                .expect("valid")
                .0,
        }
    }

    #[test]
    fn select_picks_only_the_regions_asked_for_plus_the_unassigned_prefixes() {
        let states = vec![
            state(
                "AzureDigitalTwins",
                "",
                &["20.0.0.0/29", "20.0.1.0/29", "20.0.9.0/29"],
            ),
            state(
                "AzureDigitalTwins.FranceCentral",
                "centralfrance",
                &["20.0.0.0/29"],
            ),
            state(
                "AzureDigitalTwins.NorthEurope",
                "northeurope",
                &["20.0.1.0/29"],
            ),
        ];
        let mut sel = TagSelection::new(
            vec!["AzureDigitalTwins".into()],
            vec!["francecentral".into()],
        );
        sel.include_unassigned = true;
        let (tags, desired) = select(&sel, &states).expect("selects");
        let names: Vec<&str> = tags.iter().map(|t| t.name.as_str()).collect();
        // North Europe is not selected: it must not be reported (nor warned about).
        assert_eq!(
            names,
            vec!["AzureDigitalTwins", "AzureDigitalTwins.FranceCentral"]
        );
        // France Central's prefix and the one no region carries; not North Europe's.
        assert_eq!(desired.to_lines(), "20.0.0.0/29\n20.0.9.0/29");

        let missing = TagSelection::new(vec!["AzureDigitalTwins".into()], vec!["mars".into()]);
        assert!(select(&missing, &states).unwrap_err().contains("`mars`"));
    }
}
