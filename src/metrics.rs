//! Prometheus metrics: one registry for the process, served by the daemon
//! on `/metrics` and pushed to a Pushgateway by CronJob runs.
//!
//! Names follow Prometheus conventions: prefix `tagsync_`, base units,
//! `_total` counters, `_seconds` durations, `_timestamp_seconds` times.
//! Labels are bounded: target names, tag names, kinds, outcomes, guards;
//! never prefixes or error texts. The README's metric table is checked
//! against this registry by a test.

use std::sync::LazyLock;

use prometheus::{
    Counter, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    /// When the current feed changeNumber was first recorded (f64 bits; 0
    /// until known): `tagsync_feed_age_seconds` is computed from it at each
    /// scrape, so the daemon's value never goes stale between runs.
    feed_first_seen: std::sync::atomic::AtomicU64,
    pub registry: Registry,
    catalogue: Vec<(&'static str, &'static str)>,
    pub runs: IntCounterVec,
    pub run_duration: Histogram,
    pub last_run: Gauge,
    pub last_success: Gauge,
    pub feed_change_number: IntGauge,
    pub feed_age: Gauge,
    pub feed_bytes: IntGauge,
    pub feed_download_duration: Gauge,
    pub tag_prefixes: IntGaugeVec,
    pub tag_change_number: IntGaugeVec,
    pub target_rules: IntGaugeVec,
    pub target_budget: IntGaugeVec,
    pub target_last_apply: GaugeVec,
    pub target_applies: IntCounterVec,
    pub target_added: IntCounterVec,
    pub target_removed: IntCounterVec,
    pub guard_refusals: IntCounterVec,
    pub target_overadmitted: GaugeVec,
    pub target_drift: IntCounterVec,
    pub arm_requests: IntCounterVec,
    pub arm_throttled: IntCounter,
    pub arm_retries: IntCounter,
    pub arm_rate_limit_wait: Counter,
    pub notify_deliveries: IntCounterVec,
    pub notify_waiting: IntGaugeVec,
    pub build_info: IntGaugeVec,
}

// Metric construction only fails on an invalid name or label set, which
// are constants here and covered by the tests: a panic would be a bug.
fn must<T>(r: prometheus::Result<T>) -> T {
    r.unwrap_or_else(|e| unreachable!("invalid metric definition: {e}"))
}

/// Registers metrics and remembers every name and help text, including
/// label vectors that have no sample yet (which `gather` leaves out).
struct Builder {
    registry: Registry,
    catalogue: Vec<(&'static str, &'static str)>,
}

impl Builder {
    fn add<C: prometheus::core::Collector + Clone + 'static>(
        &mut self,
        name: &'static str,
        help: &'static str,
        c: C,
    ) -> C {
        must(self.registry.register(Box::new(c.clone())));
        self.catalogue.push((name, help));
        c
    }

    fn counter_vec(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[&str],
    ) -> IntCounterVec {
        self.add(
            name,
            help,
            must(IntCounterVec::new(Opts::new(name, help), labels)),
        )
    }

    fn int_gauge_vec(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[&str],
    ) -> IntGaugeVec {
        self.add(
            name,
            help,
            must(IntGaugeVec::new(Opts::new(name, help), labels)),
        )
    }

    fn gauge_vec(&mut self, name: &'static str, help: &'static str, labels: &[&str]) -> GaugeVec {
        self.add(
            name,
            help,
            must(GaugeVec::new(Opts::new(name, help), labels)),
        )
    }

    fn gauge(&mut self, name: &'static str, help: &'static str) -> Gauge {
        self.add(name, help, must(Gauge::new(name, help)))
    }

    fn int_gauge(&mut self, name: &'static str, help: &'static str) -> IntGauge {
        self.add(name, help, must(IntGauge::new(name, help)))
    }

    fn counter(&mut self, name: &'static str, help: &'static str) -> IntCounter {
        self.add(name, help, must(IntCounter::new(name, help)))
    }

    fn float_counter(&mut self, name: &'static str, help: &'static str) -> Counter {
        self.add(name, help, must(Counter::new(name, help)))
    }
}

impl Metrics {
    fn new() -> Self {
        let mut r = Builder {
            registry: Registry::new(),
            catalogue: Vec::new(),
        };
        const DURATION: &str = "Duration of a whole run (feed and targets).";
        let run_duration = r.add(
            "tagsync_run_duration_seconds",
            DURATION,
            must(Histogram::with_opts(
                HistogramOpts::new("tagsync_run_duration_seconds", DURATION).buckets(vec![
                    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                ]),
            )),
        );
        let m = Self {
            runs: r.counter_vec("tagsync_runs_total",
                "Runs by outcome: changed, unchanged, failed (the feed stage), targets-failed, targets-refused.",
                &["outcome"],
            ),
            run_duration,
            last_run: r.gauge("tagsync_last_run_timestamp_seconds",
                "When the last run finished.",
            ),
            last_success: r.gauge("tagsync_last_success_timestamp_seconds",
                "When the last run that recorded the feed and had no failed target finished.",
            ),
            feed_change_number: r.int_gauge("tagsync_feed_change_number",
                "Top-level changeNumber of the feed last recorded.",
            ),
            feed_age: r.gauge("tagsync_feed_age_seconds",
                "Now minus when the current feed changeNumber was first recorded.",
            ),
            feed_bytes: r.int_gauge("tagsync_feed_download_bytes",
                "Size of the feed last read.",
            ),
            feed_download_duration: r.gauge("tagsync_feed_download_duration_seconds",
                "Time to find, fetch and read the feed in the last run.",
            ),
            tag_prefixes: r.int_gauge_vec("tagsync_tag_prefixes",
                "Prefixes of a recorded tag by family.",
                &["tag", "family"],
            ),
            tag_change_number: r.int_gauge_vec("tagsync_tag_change_number",
                "changeNumber of a recorded tag.",
                &["tag"],
            ),
            target_rules: r.int_gauge_vec("tagsync_target_rules",
                "IP rules on a target by ownership (owned, foreign), after the last run.",
                &["target", "ownership"],
            ),
            target_budget: r.int_gauge_vec("tagsync_target_rule_budget",
                "Rules a target can hold.",
                &["target"],
            ),
            target_last_apply: r.gauge_vec("tagsync_target_last_apply_timestamp_seconds",
                "When a target was last processed, by outcome.",
                &["target", "outcome"],
            ),
            target_applies: r.counter_vec("tagsync_target_applies_total",
                "Target runs by outcome (applied, unchanged, planned, refused, failed).",
                &["target", "outcome"],
            ),
            target_added: r.counter_vec("tagsync_target_rules_added_total",
                "Rules added to a target.",
                &["target"],
            ),
            target_removed: r.counter_vec("tagsync_target_rules_removed_total",
                "Rules removed from a target.",
                &["target"],
            ),
            guard_refusals: r.counter_vec("tagsync_guard_refusals_total",
                "Targets refused by a guard.",
                &["target", "guard"],
            ),
            target_overadmitted: r.gauge_vec("tagsync_target_overadmitted_addresses",
                "Addresses outside the tags admitted by a summarized rule set.",
                &["target"],
            ),
            target_drift: r.counter_vec("tagsync_target_drift_total",
                "Writes after which the stored rules differed from the plan.",
                &["target"],
            ),
            arm_requests: r.counter_vec("tagsync_arm_requests_total",
                "Resource Manager requests by kind (read, write, token), status class and outcome (ok, retry, error).",
                &["kind", "status_class", "outcome"],
            ),
            arm_throttled: r.counter("tagsync_arm_throttled_total",
                "Resource Manager answers 429 Too Many Requests.",
            ),
            arm_retries: r.counter("tagsync_arm_retries_total",
                "Resource Manager requests retried.",
            ),
            arm_rate_limit_wait: r.float_counter("tagsync_arm_rate_limit_wait_seconds_total",
                "Time requests waited for Resource Manager's request rate (the client's token buckets).",
            ),
            notify_deliveries: r.counter_vec("tagsync_notify_deliveries_total",
                "Notification delivery attempts by receiver and outcome (delivered, failed).",
                &["receiver", "outcome"],
            ),
            notify_waiting: r.int_gauge_vec("tagsync_notify_waiting_events",
                "Notifications waiting in the outbox for a receiver after the last delivery pass.",
                &["receiver"],
            ),
            build_info: r.int_gauge_vec("tagsync_build_info",
                "Always 1; the version as a label.",
                &["version"],
            ),
            feed_first_seen: std::sync::atomic::AtomicU64::new(0),
            registry: r.registry.clone(),
            catalogue: r.catalogue.clone(),
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m
    }

    /// Records when the current feed changeNumber was first seen.
    pub fn set_feed_first_seen(&self, unix_seconds: f64) {
        self.feed_first_seen
            .store(unix_seconds.to_bits(), std::sync::atomic::Ordering::SeqCst);
        self.refresh_feed_age();
    }

    fn refresh_feed_age(&self) {
        let first = f64::from_bits(
            self.feed_first_seen
                .load(std::sync::atomic::Ordering::SeqCst),
        );
        if first > 0.0 {
            self.feed_age.set((now_seconds() - first).max(0.0));
        }
    }

    /// The registry in the Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        self.refresh_feed_age();
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for I/O reasons; an invalid family
        // would have been refused at registration.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Every metric name with its help text (for the README check).
    pub fn catalogue(&self) -> &[(&'static str, &'static str)] {
        &self.catalogue
    }
}

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static M: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &M
}

pub fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The status class label of an HTTP status (`2xx`...), or `none`.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        _ => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_prefixed_and_renders() {
        let m = metrics();
        m.runs.with_label_values(&["changed"]).inc();
        for (name, help) in m.catalogue() {
            assert!(name.starts_with("tagsync_"), "{name}");
            assert!(!help.is_empty(), "{name}");
        }
        let text = m.render();
        assert!(
            text.contains("tagsync_runs_total{outcome=\"changed\"} 1"),
            "{text}"
        );
        assert!(text.contains("tagsync_build_info{version="));
    }
}
