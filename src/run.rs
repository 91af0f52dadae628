//! Run once: the one code path behind `tagsync sync`, the Kubernetes
//! CronJob and each tick of the daemon. It takes the run lock, records the
//! feed, plans and applies every target, and records the run's metrics.

use std::time::Instant;

use crate::azure::arm::ArmClient;
use crate::config::Settings;
use crate::error::{Error, exit};
use crate::history::{History, RunLock};
use crate::http::HttpClient;
use crate::metrics::{metrics, now_seconds};
use crate::reconcile::{ReconcileOptions, TargetReport, reconcile};
use crate::render::SyncReport;
use crate::sync::{SyncOptions, run_feed};
use crate::targets::TargetSpec;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub allow_regression: bool,
    pub dry_run: bool,
    pub force: bool,
    /// Only these targets (all when empty).
    pub targets: Vec<String>,
}

/// Fetches and records the feed, then plans and applies the targets.
pub async fn run_once(settings: &Settings, opts: &RunOptions) -> Result<SyncReport, Error> {
    let started = Instant::now();
    let result = run_inner(settings, opts).await;
    let m = metrics();
    m.run_duration.observe(started.elapsed().as_secs_f64());
    m.last_run.set(now_seconds());
    match &result {
        Ok(report) => {
            m.runs.with_label_values(&[report.outcome]).inc();
            if targets_exit(&report.targets) == exit::OK {
                m.last_success.set(now_seconds());
            }
        }
        Err(_) => m.runs.with_label_values(&["failed"]).inc(),
    }
    result
}

async fn run_inner(settings: &Settings, opts: &RunOptions) -> Result<SyncReport, Error> {
    let targets = select_targets(settings, &opts.targets)?;
    let _lock = RunLock::acquire(&settings.db_path, settings.lock_timeout)?;
    let history = History::open(&settings.db_path, true).await?;
    let result = with_history(settings, opts, &targets, &history).await;
    history.close().await;
    result
}

async fn with_history(
    settings: &Settings,
    opts: &RunOptions,
    targets: &[TargetSpec],
    history: &History,
) -> Result<SyncReport, Error> {
    let http =
        HttpClient::new(settings.http.clone()).map_err(|e| Error::Internal(e.to_string()))?;
    let arm = if targets.is_empty() && !uses_discovery(settings) {
        None
    } else {
        Some(arm_client(settings)?)
    };
    let feed_opts = SyncOptions {
        allow_regression: opts.allow_regression,
    };
    let run = run_feed(settings, history, &http, arm.as_ref(), &feed_opts).await?;
    let mut report = SyncReport::new(&run);
    if let (false, Some(arm)) = (targets.is_empty(), arm.as_ref()) {
        let states: Vec<_> = run.recorded.tags.iter().map(|c| c.state.clone()).collect();
        let ropts = ReconcileOptions {
            dry_run: opts.dry_run,
            force: opts.force,
        };
        report.targets = reconcile(
            targets,
            &states,
            history,
            arm,
            Some(run.recorded.run_id),
            settings.azure.concurrency,
            &ropts,
        )
        .await;
    }
    Ok(report)
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

pub fn uses_discovery(settings: &Settings) -> bool {
    matches!(
        settings.source,
        crate::feed::source::SourceSpec::DiscoveryApi { .. }
    )
}

pub fn arm_client(settings: &Settings) -> Result<ArmClient, Error> {
    let (credential, _) = crate::azure::auth::credential(&settings.azure.auth)
        .map_err(|e| Error::Azure(e.to_string()))?;
    ArmClient::new(settings.azure.arm.clone(), credential).map_err(|e| Error::Azure(e.to_string()))
}

/// 0 when every target succeeded, 5 when one failed, else 6 when a guard
/// refused one.
pub fn targets_exit(reports: &[TargetReport]) -> u8 {
    if reports.iter().any(|r| r.outcome == "failed") {
        exit::TARGET_FAILED
    } else if reports.iter().any(|r| r.outcome == "refused") {
        exit::GUARD_REFUSED
    } else {
        exit::OK
    }
}
