//! One run: the one code path behind every command that looks at targets
//! (`sync`, `plan`, `apply`, `targets check`, `targets adopt`), the
//! Kubernetes CronJob and each tick of the daemon.
//!
//! A [`Session`] holds what a run works with (the run lock, the history, the
//! HTTP and Resource Manager clients); a [`Mode`] is everything that differs
//! between the commands, decided here and nowhere else: where the tags come
//! from (the feed, the history, a saved plan), and what the per-target
//! pipeline ([`crate::reconcile`]) does after planning.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::azure::arm::ArmClient;
use crate::config::Settings;
use crate::error::{Error, exit};
use crate::feed::source::SourceSpec;
use crate::feed_stage::{FeedRun, run_feed};
use crate::history::{History, RunLock};
use crate::http::HttpClient;
use crate::metrics::{metrics, now_seconds};
use crate::notify::{Notifier, Pass, deliver};
use crate::plan::Guard;
use crate::prefix::PrefixSet;
use crate::reconcile::{Context, Outcome, Step, TargetReport, TargetRun, Work, reconcile};
use crate::tags::TagState;
use crate::targets::TargetSpec;

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

/// What a run does: the only thing that differs between the commands.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `plan`, `sync --dry-run`: record the feed, plan every target, write
    /// nothing.
    Plan,
    /// `sync`, each daemon tick: record the feed, plan and write.
    Apply,
    /// `apply PLAN`: write a saved plan's targets, each only onto the rules
    /// it was made on.
    ApplySaved(PlanDocument),
    /// `targets check`: plan on the latest recorded tags (if any), write and
    /// record nothing. Takes no run lock.
    Check,
    /// `targets adopt`: take over the rules `sync` would own that are live
    /// as foreign rules (planned on the latest recorded tags), or the given
    /// prefixes.
    Adopt(Option<PrefixSet>),
    /// `rollback --to`: plan one target back to the owned rule set recorded
    /// at that apply, through the same guards; write it unless `dry_run`.
    Rollback { to: i64, dry_run: bool },
}

/// Where a mode's tags come from.
enum Tags {
    /// Fetch, validate and record the feed.
    Feed,
    /// The latest recorded snapshots; `required` when planning needs them.
    Recorded { required: bool },
    /// A saved plan carries its own desired rules.
    Saved,
    /// A rollback's rules come from the history's record of an apply.
    None,
}

impl Mode {
    fn tags(&self) -> Tags {
        match self {
            Mode::Plan | Mode::Apply => Tags::Feed,
            Mode::ApplySaved(_) => Tags::Saved,
            Mode::Check => Tags::Recorded { required: false },
            Mode::Adopt(given) => Tags::Recorded {
                required: given.is_none(),
            },
            Mode::Rollback { .. } => Tags::None,
        }
    }

    fn step(&self) -> Step {
        match self {
            Mode::Plan => Step::Plan,
            Mode::Apply => Step::Write,
            Mode::ApplySaved(_) => Step::WriteSaved,
            Mode::Check => Step::Check,
            Mode::Adopt(given) => Step::Adopt(given.clone()),
            Mode::Rollback { dry_run: true, .. } => Step::Plan,
            Mode::Rollback { dry_run: false, .. } => Step::Write,
        }
    }

    /// Everything but `targets check` changes the history, so it holds the
    /// run lock.
    fn locks(&self) -> bool {
        !matches!(self, Mode::Check)
    }
}

/// The options of a run that its command line gives.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub allow_regression: bool,
    /// Lift the removal-ratio guard.
    pub force: bool,
    /// Only these targets (all when empty).
    pub targets: Vec<String>,
    /// Becomes true on SIGTERM or SIGINT: no new write is sent after it.
    pub stop: Option<watch::Receiver<bool>>,
}

/// Resolves when the stop flag becomes true (never, if its sender is gone
/// without setting it).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits for SIGTERM (a Kubernetes Job deadline, a node drain) or SIGINT.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A stop flag set by the first SIGTERM or SIGINT (for one-shot commands).
/// A second signal exits at once: every stage is atomic in the history and
/// pending writes are settled by the next run (the crash test kills at
/// random points), so an impatient operator loses nothing.
pub fn stop_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::warn!(
            "stopping: writes in flight finish and are recorded, no new ones are sent (signal again to exit at once)"
        );
        let _ = tx.send(true);
        wait_for_signal().await;
        tracing::warn!("second signal: exiting at once");
        std::process::exit(i32::from(crate::error::exit::INTERRUPTED));
    });
    rx
}

/// What a run did.
#[derive(Debug)]
pub struct RunReport {
    /// The feed stage, in the modes that fetch the feed.
    pub feed: Option<FeedRun>,
    pub targets: Vec<TargetRun>,
}

impl RunReport {
    pub fn reports(&self) -> Vec<TargetReport> {
        self.targets.iter().map(|t| t.report.clone()).collect()
    }

    /// 0 when every target succeeded, 5 when one failed, else 6 when a
    /// guard refused one.
    pub fn exit_code(&self) -> u8 {
        targets_exit(self.targets.iter().map(|t| t.report.outcome))
    }
}

/// What a run works with. Opened once per run; the daemon opens one per
/// tick, so each run gets fresh clients and its own deadline.
pub struct Session<'s> {
    settings: &'s Settings,
    history: History,
    notifier: Arc<Notifier>,
    /// Declared after the history, so it is released after it.
    _lock: Option<RunLock>,
}

impl<'s> Session<'s> {
    pub async fn open(settings: &'s Settings, mode: &Mode) -> Result<Self, Error> {
        let lock = if mode.locks() {
            Some(RunLock::acquire(&settings.db_path, settings.lock_timeout)?)
        } else {
            None
        };
        let history = History::open(&settings.db_path, true).await?;
        let notifier = if settings.notify.receivers.is_empty() {
            Notifier::none()
        } else {
            Notifier::new(&settings.notify, &history.instance_id().await?)
        };
        Ok(Self {
            settings,
            _lock: lock,
            history,
            notifier: Arc::new(notifier),
        })
    }

    /// Delivers the events waiting in the outbox (this run's, and any an
    /// earlier run could not deliver; those of receivers no longer
    /// configured are dropped); never fails the run.
    pub async fn deliver(&self) {
        deliver(&self.settings.notify, &self.history, Pass::AfterRun).await;
    }

    pub async fn close(self) {
        self.history.close().await;
    }

    /// Runs the mode over the selected targets.
    pub async fn run(&self, mode: &Mode, opts: &RunOptions) -> Result<RunReport, Error> {
        let settings = self.settings;
        let targets = select_targets(settings, &opts.targets)?;
        let mut work = Vec::new();
        let mut missing = Vec::new();
        match mode {
            Mode::ApplySaved(doc) => {
                if let Some(name) = opts
                    .targets
                    .iter()
                    .find(|n| !doc.targets.iter().any(|t| &t.name == *n))
                {
                    return Err(Error::Usage(format!(
                        "the plan has no target named `{name}`; it was made for: {}",
                        doc.targets
                            .iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                for saved in &doc.targets {
                    if !opts.targets.is_empty() && !opts.targets.contains(&saved.name) {
                        continue;
                    }
                    match targets.iter().find(|t| t.name == saved.name) {
                        Some(t) => work.push(Work {
                            target: t.clone(),
                            saved: Some(saved.clone()),
                            rollback: None,
                        }),
                        None => missing.push(saved.clone()),
                    }
                }
            }
            Mode::Rollback { to, .. } => {
                let [target] = targets.as_slice() else {
                    return Err(Error::Usage(
                        "rollback takes exactly one target: --target NAME".into(),
                    ));
                };
                let set = self
                    .history
                    .owned_at(target, *to)
                    .await
                    .map_err(Error::from)?;
                let set = set.map_err(Error::Usage)?;
                work.push(Work {
                    target: target.clone(),
                    saved: None,
                    rollback: Some(set),
                });
            }
            _ => work.extend(targets.into_iter().map(|target| Work {
                target,
                saved: None,
                rollback: None,
            })),
        }
        let needs_arm = !work.is_empty()
            || (matches!(mode.tags(), Tags::Feed)
                && matches!(settings.source, SourceSpec::DiscoveryApi { .. }));
        let arm = if needs_arm {
            Some(arm_client(settings)?)
        } else {
            None
        };
        let (feed, tags, run_id) = match mode.tags() {
            Tags::Feed => {
                let http = HttpClient::new(settings.http.clone());
                // A signal during the download stops it at once: nothing has
                // been written anywhere yet, and the feed stage records its
                // run in one transaction at its very end.
                let feed = run_feed(
                    settings,
                    &self.history,
                    &http,
                    arm.as_ref(),
                    &self.notifier,
                    opts.allow_regression,
                );
                let run = match opts.stop.clone() {
                    None => feed.await?,
                    Some(mut stop) => tokio::select! {
                        run = feed => run?,
                        _ = stopped(&mut stop) => {
                            return Err(Error::Interrupted(
                                "while the feed was being fetched; no target was written",
                            ));
                        }
                    },
                };
                let tags: Vec<TagState> =
                    run.recorded.tags.iter().map(|c| c.state.clone()).collect();
                let id = run.recorded.run_id;
                (Some(run), tags, Some(id))
            }
            Tags::Recorded { required } => match self.history.latest_snapshot_run().await? {
                Some(id) => (None, self.history.run_snapshots(id).await?, None),
                None if required => {
                    return Err(Error::Usage(
                        "the history has no snapshots yet; run `tagsync sync` first".into(),
                    ));
                }
                None => (None, Vec::new(), None),
            },
            Tags::Saved => {
                let id = match mode {
                    Mode::ApplySaved(doc) => Some(doc.run_id),
                    _ => None,
                };
                (None, Vec::new(), id)
            }
            Tags::None => (None, Vec::new(), None),
        };
        let mut runs = match arm {
            Some(arm) if !work.is_empty() => {
                let ctx = Arc::new(Context {
                    history: self.history.clone(),
                    arm: Arc::new(arm),
                    run_id,
                    force: opts.force,
                    step: mode.step(),
                    stop: opts.stop.clone(),
                    notifier: self.notifier.clone(),
                    rollback_to: match mode {
                        Mode::Rollback { to, .. } => Some(*to),
                        _ => None,
                    },
                });
                reconcile(ctx, work, Arc::new(tags), settings.azure.concurrency).await
            }
            _ => Vec::new(),
        };
        for mut report in missing {
            report.outcome = Outcome::Failed;
            report.error = Some(
                "this target is no longer configured with the same resource id; make a new plan"
                    .into(),
            );
            runs.push(TargetRun::new(report, None));
        }
        Ok(RunReport {
            feed,
            targets: runs,
        })
    }
}

/// Opens a session, runs the mode, closes the session, and for the modes
/// that fetch the feed records the run's metrics. Every command that looks
/// at targets, and each daemon tick, comes through here.
pub async fn execute(
    settings: &Settings,
    mode: &Mode,
    opts: &RunOptions,
) -> Result<RunReport, Error> {
    let started = Instant::now();
    let result = match Session::open(settings, mode).await {
        Ok(session) => {
            let result = session.run(mode, opts).await;
            // After the run, whatever its outcome: a failed feed stage
            // still lets earlier events through.
            if mode.locks() {
                session.deliver().await;
            }
            session.close().await;
            result
        }
        Err(e) => Err(e),
    };
    if matches!(mode.tags(), Tags::Feed) {
        let m = metrics();
        m.run_duration.observe(started.elapsed().as_secs_f64());
        m.last_run.set(now_seconds());
        match &result {
            Ok(report) => {
                // A run whose targets did not all succeed says so.
                let outcome = match (report.exit_code(), &report.feed) {
                    (exit::TARGET_FAILED, _) => "targets-failed",
                    (exit::GUARD_REFUSED, _) => "targets-refused",
                    (_, Some(f)) if f.recorded.changed => "changed",
                    _ => "unchanged",
                };
                m.runs.with_label_values(&[outcome]).inc();
                if report.exit_code() == exit::OK {
                    m.last_success.set(now_seconds());
                }
            }
            Err(_) => m.runs.with_label_values(&["failed"]).inc(),
        }
    }
    result
}

/// Starts a fresh process's metrics from the history, once per process:
/// every CronJob run is a new process, and so is every daemon restart, and
/// without this each would export a last success of 0 and no feed, tag or
/// target series until its own run succeeds (alerts would fire on one
/// failure, and a failing download could never look stale). Counters get
/// their known label sets at 0, so `increase()` sees the first failure.
pub async fn seed_metrics(settings: &Settings, history: &History) {
    static SEEDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SEEDED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let m = metrics();
    for outcome in [
        "changed",
        "unchanged",
        "failed",
        "targets-failed",
        "targets-refused",
    ] {
        m.runs.with_label_values(&[outcome]);
    }
    for r in &settings.notify.receivers {
        for outcome in ["delivered", "failed"] {
            m.notify_deliveries
                .with_label_values(&[r.name.as_str(), outcome]);
        }
    }
    for t in &settings.targets {
        let name = t.name.as_str();
        for o in [
            Outcome::Planned,
            Outcome::Applied,
            Outcome::Unchanged,
            Outcome::Drifted,
            Outcome::Refused,
            Outcome::Failed,
        ] {
            m.target_applies.with_label_values(&[name, o.as_str()]);
        }
        for g in [
            Guard::Budget,
            Guard::EmptyRuleSet,
            Guard::RemovalRatio,
            Guard::Tier,
            Guard::StalePlan,
        ] {
            m.guard_refusals.with_label_values(&[name, g.as_str()]);
        }
        m.target_drift.with_label_values(&[name]);
        m.target_added.with_label_values(&[name]);
        m.target_removed.with_label_values(&[name]);
        m.target_budget
            .with_label_values(&[name])
            .set(t.adapter.capabilities(t).budget as i64);
    }
    if let Err(e) = seed_from_history(settings, history).await {
        tracing::warn!("cannot start the metrics from the history: {e}");
    }
}

async fn seed_from_history(settings: &Settings, history: &History) -> Result<(), Error> {
    let m = metrics();
    let seconds = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| t.unix_timestamp() as f64)
    };
    let r = history.recovered().await?;
    if let Some(t) = r.last_run.as_deref().and_then(seconds) {
        m.last_run.set(t);
    }
    if let Some(t) = r.last_success.as_deref().and_then(seconds) {
        m.last_success.set(t);
    }
    let cloud = settings.cloud.feed_name();
    if let Some(cn) = history
        .last_good_run(cloud)
        .await?
        .and_then(|l| l.change_number)
    {
        m.feed_change_number.set(cn as i64);
        if let Some(t) = history
            .first_seen(cloud, cn)
            .await?
            .as_deref()
            .and_then(seconds)
        {
            m.set_feed_first_seen(t);
        }
    }
    if let Some(run) = history.latest_snapshot_run().await? {
        for t in history.run_snapshots(run).await? {
            let name = t.name.as_str();
            m.tag_prefixes
                .with_label_values(&[name, "ipv4"])
                .set(t.prefixes.v4().len() as i64);
            m.tag_prefixes
                .with_label_values(&[name, "ipv6"])
                .set(t.prefixes.v6().len() as i64);
            m.tag_change_number
                .with_label_values(&[name])
                .set(t.change_number as i64);
        }
    }
    let configured = |name: &str| settings.targets.iter().any(|t| t.name == name);
    for (target, outcome, at) in r.last_applies.iter().filter(|a| configured(&a.0)) {
        if let Some(t) = seconds(at) {
            m.target_last_apply
                .with_label_values(&[target.as_str(), outcome.as_str()])
                .set(t);
        }
    }
    for (target, after, owned) in r.rules.iter().filter(|r| configured(&r.0)) {
        m.target_rules
            .with_label_values(&[target.as_str(), "owned"])
            .set(*owned as i64);
        m.target_rules
            .with_label_values(&[target.as_str(), "foreign"])
            .set(after.saturating_sub(*owned) as i64);
    }
    Ok(())
}

/// Pushes the process's metrics to a Prometheus Pushgateway (text format,
/// `PUT /metrics/job/<job>`, replacing the group). A failed push is logged,
/// never fatal: the run's own outcome is what the exit code reports.
pub async fn push_metrics(settings: &Settings, url: &str, job: &str) {
    let target = format!("{}/metrics/job/{job}", url.trim_end_matches('/'));
    let shown = crate::http::redact(&target);
    let client = match reqwest::Client::builder()
        .user_agent(crate::http::user_agent())
        .timeout(settings.http.timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot build the Pushgateway client: {e}");
            return;
        }
    };
    let body = metrics().render();
    match client
        .put(&target)
        .header(reqwest::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)
        .body(body)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => tracing::info!(url = %shown, "pushed the metrics"),
        Ok(r) => {
            tracing::error!(url = %shown, status = r.status().as_u16(), "the Pushgateway refused the metrics")
        }
        Err(e) => tracing::error!(url = %shown, "cannot push the metrics: {e}"),
    }
}

/// The configured targets, or those named with --target.
pub fn select_targets(settings: &Settings, names: &[String]) -> Result<Vec<TargetSpec>, Error> {
    for name in names {
        if !settings.targets.iter().any(|t| &t.name == name) {
            let known: Vec<&str> = settings.targets.iter().map(|t| t.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "no target named `{name}`; configured targets: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    Ok(settings
        .targets
        .iter()
        .filter(|t| names.is_empty() || names.contains(&t.name))
        .cloned()
        .collect())
}

/// The Resource Manager client of one run.
pub fn arm_client(settings: &Settings) -> Result<ArmClient, Error> {
    let (credential, _) = crate::azure::auth::credential(&settings.azure.auth)
        .map_err(|e| Error::Azure(e.to_string()))?;
    ArmClient::new(settings.azure.arm.clone(), credential).map_err(|e| Error::Azure(e.to_string()))
}

/// 0 when every target succeeded, 5 when one failed, else 6 when a guard
/// refused one.
pub fn targets_exit(outcomes: impl IntoIterator<Item = Outcome>) -> u8 {
    let mut code = exit::OK;
    for o in outcomes {
        match o {
            Outcome::Failed | Outcome::Drifted => return exit::TARGET_FAILED,
            Outcome::Refused => code = exit::GUARD_REFUSED,
            _ => {}
        }
    }
    code
}
