//! The daemon: run once on a cron schedule, serve `/metrics`, `/healthz`
//! and `/readyz`.
//!
//! The schedule is a 5-field cron expression in exactly the syntax of a
//! Kubernetes CronJob `schedule` (parsed by croner with seconds and years
//! disallowed), in an IANA time zone. Each run starts at its slot plus a
//! random jitter, so a fleet does not hit Microsoft at the same second. Runs
//! missed while the daemon was down are not replayed, runs never overlap,
//! and a failed run is retried with backoff until the next slot. SIGTERM or
//! SIGINT lets the current run finish its target writes, then exits.
//! Every tick calls the same [`crate::run::run_once`] as `tagsync sync`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Settings;
use crate::error::{Error, exit};
use crate::metrics::metrics;
use crate::reconcile::Outcome;
use crate::run::{Mode, RunOptions, execute};

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
    text: String,
}

impl Schedule {
    /// Parses a Kubernetes CronJob schedule (5 fields, or a `@daily` style
    /// nickname) and an IANA time zone name.
    pub fn parse(expr: &str, time_zone: &str) -> Result<Self, String> {
        let fields = expr.split_whitespace().count();
        if !expr.trim_start().starts_with('@') && fields != 5 {
            return Err(format!(
                "schedule `{expr}` has {fields} fields; write the 5 fields of a Kubernetes CronJob (minute hour day-of-month month day-of-week), e.g. \"0 6 * * 1\""
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| format!("schedule `{expr}` is not a valid cron expression: {e}"))?;
        // jiff's database: the system's (`TZDIR`, `/usr/share/zoneinfo`),
        // updated with the OS as the one Kubernetes itself uses, or where
        // there is none (an image without tzdata) the copy built in.
        let tz = TimeZone::get(time_zone)
            .map_err(|_| format!("time zone `{time_zone}` is not an IANA time zone name (e.g. \"Europe/Berlin\", \"UTC\")"))?;
        Ok(Self {
            cron,
            tz,
            text: expr.to_owned(),
        })
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&t.to_zoned(self.tz.clone()), false)
            .ok()
            .map(|d| d.timestamp())
    }

    /// The most jitter a run of `slot` may get: the configured bound, but
    /// never more than half the gap to the following slot, so a run never
    /// starts at (or past) the next one.
    pub fn jitter_bound(&self, slot: Timestamp, configured: Duration) -> Duration {
        let gap = self
            .next_after(slot)
            .and_then(|next| Duration::try_from(next.duration_since(slot)).ok())
            .unwrap_or(configured.saturating_mul(2));
        configured.min(gap / 2)
    }

    /// The gap between the next two slots: how often the job runs.
    pub fn interval(&self, now: Timestamp) -> Duration {
        self.next_after(now)
            .and_then(|a| {
                self.next_after(a)
                    .map(|b| Duration::try_from(b.duration_since(a)).unwrap_or_default())
            })
            .unwrap_or(Duration::from_secs(7 * 86400))
    }
}

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub schedule: Schedule,
    pub listen: SocketAddr,
    pub run_at_start: bool,
    /// Each run starts up to this long after its slot.
    pub jitter: Duration,
    /// First wait before retrying a failed run (doubles each time).
    pub retry_backoff: Duration,
    pub retries: u32,
    /// `/readyz` fails when the last run is older than this many intervals.
    pub ready_factor: u32,
    /// How often, between runs, notifications due for a retry are sent.
    pub redeliver_every: Duration,
}

/// What `/readyz` looks at.
struct Health {
    started: i64,
    last_run: AtomicI64,
    database_ok: AtomicBool,
    stale_after: i64,
}

impl crate::status_server::Status for Health {
    fn metrics(&self) -> String {
        metrics().render()
    }

    fn ready(&self) -> Result<(), String> {
        if !self.database_ok.load(Ordering::SeqCst) {
            return Err("the history database could not be opened by the last run".into());
        }
        let last = self.last_run.load(Ordering::SeqCst).max(self.started);
        let age = Timestamp::now().as_second() - last;
        if age > self.stale_after {
            return Err(format!(
                "the last run was {age}s ago, more than {}s",
                self.stale_after
            ));
        }
        Ok(())
    }
}

/// Runs until SIGTERM or SIGINT. Returns the exit code.
pub async fn run(settings: Settings, opts: DaemonOptions) -> Result<u8, Error> {
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|e| Error::Usage(format!("cannot listen on {}: {e}", opts.listen)))?;
    let interval = opts.schedule.interval(Timestamp::now());
    let health = Arc::new(Health {
        started: Timestamp::now().as_second(),
        last_run: AtomicI64::new(0),
        database_ok: AtomicBool::new(true),
        stale_after: (interval + opts.jitter).as_secs() as i64
            * i64::from(opts.ready_factor.max(1)),
    });
    let (stop_tx, mut stop) = watch::channel(false);
    let server = tokio::spawn(crate::status_server::serve(
        listener,
        health.clone(),
        stop_tx.subscribe(),
    ));
    tokio::spawn(async move {
        crate::run::wait_for_signal().await;
        tracing::info!("stopping: the current run, if any, finishes first");
        let _ = stop_tx.send(true);
    });
    tracing::info!(
        schedule = %opts.schedule.text,
        listen = %opts.listen,
        every = %humantime::format_duration(interval),
        "daemon started"
    );
    let mut first = true;
    loop {
        if !(first && opts.run_at_start) {
            let Some(slot) = opts.schedule.next_after(Timestamp::now()) else {
                return Err(Error::Usage(format!(
                    "schedule `{}` has no future run",
                    opts.schedule.text
                )));
            };
            let jitter = jitter(opts.schedule.jitter_bound(slot, opts.jitter));
            let wait = Duration::try_from(slot.duration_since(Timestamp::now()))
                .unwrap_or_default()
                + jitter;
            tracing::info!(next = %slot, jitter_s = jitter.as_secs(), "waiting for the next run");
            if idle(&settings, wait, opts.redeliver_every, &mut stop).await {
                break;
            }
        }
        first = false;
        tick(&settings, &opts, &health, &mut stop).await;
        if *stop.borrow() {
            break;
        }
    }
    // The loop only ends on a stop signal, which the server saw too: it
    // stops accepting and finishes the requests being answered.
    let _ = server.await;
    tracing::info!("daemon stopped");
    Ok(exit::OK)
}

/// One scheduled run, retried with backoff while it fails and the next
/// slot is not reached. A run whose targets were only refused by a guard is
/// not retried: the refusal repeats until the feed or the configuration
/// changes, and each retry would record the feed again.
async fn tick(
    settings: &Settings,
    opts: &DaemonOptions,
    health: &Health,
    stop: &mut watch::Receiver<bool>,
) {
    let next_slot = opts.schedule.next_after(Timestamp::now());
    for attempt in 0..=opts.retries {
        let run_opts = RunOptions {
            stop: Some(stop.clone()),
            ..RunOptions::default()
        };
        let result = execute(settings, &Mode::Apply, &run_opts).await;
        health
            .last_run
            .store(Timestamp::now().as_second(), Ordering::SeqCst);
        health
            .database_ok
            .store(!matches!(result, Err(Error::History(_))), Ordering::SeqCst);
        let count = |report: &crate::run::RunReport, of: &[Outcome]| {
            report
                .targets
                .iter()
                .filter(|t| of.contains(&t.report.outcome))
                .count()
        };
        let failed = [Outcome::Failed, Outcome::Drifted];
        let failure = match &result {
            Ok(report) if count(report, &failed) > 0 => Some(format!(
                "{} of {} targets failed",
                count(report, &failed),
                report.targets.len()
            )),
            Ok(report) if count(report, &[Outcome::Refused]) > 0 => {
                tracing::warn!(
                    refused = count(report, &[Outcome::Refused]),
                    "guards refused targets; not retrying: the next slot plans them again"
                );
                return;
            }
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        let Some(failure) = failure else {
            tracing::info!("run succeeded");
            return;
        };
        if attempt == opts.retries || *stop.borrow() {
            tracing::error!(
                attempts = attempt + 1,
                "run failed, waiting for the next slot: {failure}"
            );
            return;
        }
        let wait = opts.retry_backoff.saturating_mul(1 << attempt.min(10));
        if next_slot.is_some_and(|n| {
            SignedDuration::try_from(wait).map_or(true, |w| Timestamp::now().duration_until(n) <= w)
        }) {
            tracing::error!("run failed; the next slot comes before a retry would: {failure}");
            return;
        }
        tracing::warn!(
            attempt = attempt + 1,
            retry_in_s = wait.as_secs(),
            "run failed, retrying: {failure}"
        );
        if idle(settings, wait, opts.redeliver_every, stop).await {
            return;
        }
    }
}

/// Waits like [`sleep_or_stop`], and every `every` meanwhile sends the
/// notifications whose retry is due.
async fn idle(
    settings: &Settings,
    wait: Duration,
    every: Duration,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    if settings.notify.receivers.is_empty() {
        return sleep_or_stop(wait, stop).await;
    }
    let end = tokio::time::Instant::now() + wait;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        if sleep_or_stop(left.min(every), stop).await {
            return true;
        }
        if tokio::time::Instant::now() < end && crate::notify::maybe_waiting() {
            redeliver(settings).await;
        }
    }
}

/// One delivery pass between runs: only when the last pass left events
/// waiting, no run holds the history (a run delivers its own events when it
/// ends), and a receiver's oldest event is due.
async fn redeliver(settings: &Settings) {
    let Ok(_lock) = crate::history::RunLock::acquire(&settings.db_path, Duration::ZERO) else {
        return;
    };
    let history = match crate::history::History::open(&settings.db_path, false).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("cannot open the history to retry notifications: {e}");
            return;
        }
    };
    crate::notify::deliver(&settings.notify, &history, crate::notify::Pass::Due).await;
    history.close().await;
}

/// Sleeps; true when asked to stop meanwhile.
async fn sleep_or_stop(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = stop.changed() => true,
    }
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_millis(crate::http::random_u64() % (max.as_millis() as u64 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    #[test]
    fn kubernetes_schedules_parse_and_weekdays_count_from_sunday_zero() {
        let s = Schedule::parse("0 6 * * 1", "UTC").expect("valid");
        // 2026-11-22 is a Sunday: the next Monday 06:00.
        assert_eq!(
            s.next_after(at("2026-11-22T13:00:00Z")),
            Some(at("2026-11-23T06:00:00Z"))
        );
        assert_eq!(
            s.interval(at("2026-11-22T13:00:00Z")),
            Duration::from_secs(7 * 86400)
        );
        let sunday = Schedule::parse("30 2 * * 0", "UTC").expect("valid");
        assert_eq!(
            sunday.next_after(at("2026-11-22T13:00:00Z")),
            Some(at("2026-11-29T02:30:00Z"))
        );
        assert!(Schedule::parse("@daily", "UTC").is_ok());
    }

    #[test]
    fn time_zones_move_the_slot() {
        let s = Schedule::parse("0 6 * * 1", "Europe/Berlin").expect("valid");
        // 06:00 in Berlin in November (CET, UTC+1) is 05:00 UTC.
        assert_eq!(
            s.next_after(at("2026-11-22T13:00:00Z")),
            Some(at("2026-11-23T05:00:00Z"))
        );
    }

    #[test]
    fn summer_time_and_its_gap_move_the_slot() {
        let s = Schedule::parse("0 6 * * 1", "Europe/Berlin").expect("valid");
        // In June Berlin is on CEST (UTC+2).
        assert_eq!(
            s.next_after(at("2027-06-06T12:00:00Z")),
            Some(at("2027-06-07T04:00:00Z"))
        );
        // 02:30 does not exist in Berlin on 2027-03-28 (clocks go from
        // 02:00 to 03:00): that day's run still happens, once, in the hour
        // after the gap, and the next day's at 02:30 CEST.
        let nightly = Schedule::parse("30 2 * * *", "Europe/Berlin").expect("valid");
        let gap_day = nightly.next_after(at("2027-03-27T12:00:00Z"));
        assert!(
            gap_day
                .is_some_and(|t| t >= at("2027-03-28T01:00:00Z") && t < at("2027-03-28T02:00:00Z")),
            "{gap_day:?}"
        );
        assert_eq!(
            gap_day.and_then(|t| nightly.next_after(t)),
            Some(at("2027-03-29T00:30:00Z"))
        );
    }

    #[test]
    fn the_built_in_time_zone_database_is_there_for_images_without_tzdata() {
        // jiff falls back to it when the system has no database; with the
        // `tzdb-bundle-always` feature off it would be empty.
        let bundled = jiff::tz::TimeZoneDatabase::bundled();
        assert!(!bundled.is_definitively_empty());
        let berlin = bundled.get("Europe/Berlin").expect("built in");
        assert_eq!(
            at("2027-06-07T04:00:00Z").to_zoned(berlin).offset(),
            jiff::tz::offset(2),
            "CEST"
        );
        assert!(bundled.get("Mars/Olympus").is_err());
    }

    #[test]
    fn seconds_years_and_bad_names_are_refused() {
        assert!(
            Schedule::parse("0 0 6 * * 1", "UTC")
                .unwrap_err()
                .contains("6 fields")
        );
        assert!(
            Schedule::parse("0 6 * *", "UTC")
                .unwrap_err()
                .contains("4 fields")
        );
        assert!(
            Schedule::parse("61 6 * * 1", "UTC")
                .unwrap_err()
                .contains("not a valid cron")
        );
        assert!(
            Schedule::parse("0 6 * * 1", "Mars/Olympus")
                .unwrap_err()
                .contains("IANA")
        );
    }

    #[test]
    fn jitter_never_reaches_the_next_slot() {
        let every_minute = Schedule::parse("* * * * *", "UTC").expect("valid");
        let slot = at("2026-12-01T10:00:00Z");
        assert_eq!(
            every_minute.jitter_bound(slot, Duration::from_secs(600)),
            Duration::from_secs(30)
        );
        let weekly = Schedule::parse("0 6 * * 1", "UTC").expect("valid");
        assert_eq!(
            weekly.jitter_bound(slot, Duration::from_secs(600)),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_secs(600)) <= Duration::from_secs(600));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
