//! Staying inside Resource Manager's request limits.
//!
//! Resource Manager throttles each principal, per region, with two token
//! buckets: about 250 reads refilled at 25 per second and 200 writes
//! refilled at 10 per second; past them every call is answered 429. A run
//! over many targets would spend its time on 429s and retries, so the client
//! keeps the same buckets itself and waits for a token before each request.
//! It also believes the server: when an answer says fewer requests remain
//! (`x-ms-ratelimit-remaining-subscription-reads`/`-writes`, or the
//! `-global-` forms) than the local bucket holds, the bucket drops to that;
//! a 429 empties it and holds every request back until its `Retry-After`.
//!
//! The client aims at [`HEADROOM`] of each bucket, not all of it: its
//! requests reach Azure a little earlier or later than it sent them, so a
//! client pacing at exactly the refill rate would find the server's bucket
//! one token short now and then, and be answered 429.
//!
//! A reservation may take the bucket below zero: that is a queue, and each
//! caller waits for the time its own token takes to refill, so waiting tasks
//! are served in order without polling.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

/// The sizes of the two buckets (`[azure]` read_burst, reads_per_second,
/// write_burst, writes_per_second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    pub read_burst: u32,
    pub reads_per_second: f64,
    pub write_burst: u32,
    pub writes_per_second: f64,
}

impl Default for RateLimits {
    /// Resource Manager's documented sizes.
    fn default() -> Self {
        Self {
            read_burst: 250,
            reads_per_second: 25.0,
            write_burst: 200,
            writes_per_second: 10.0,
        }
    }
}

/// The share of Resource Manager's burst and refill rate the client uses.
pub const HEADROOM: f64 = 0.9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

#[derive(Debug)]
struct Bucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    at: Instant,
    not_before: Instant,
}

impl Bucket {
    fn new(capacity: f64, rate: f64, now: Instant) -> Self {
        let capacity = capacity.max(1.0);
        Self {
            capacity,
            rate: rate.max(0.001),
            tokens: capacity,
            at: now,
            not_before: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
        self.at = self.at.max(now);
    }

    /// Takes a token; how long the caller must wait before using it.
    fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        let refill_wait = if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        };
        refill_wait.max(self.not_before.saturating_duration_since(now))
    }

    fn observe_remaining(&mut self, remaining: f64, now: Instant) {
        self.refill(now);
        self.tokens = self.tokens.min(remaining);
    }

    fn throttled(&mut self, retry_after: Duration, now: Instant) {
        self.refill(now);
        self.tokens = self.tokens.min(0.0);
        self.not_before = self.not_before.max(now + retry_after);
    }
}

/// The two buckets of one principal, shared by all of a run's requests.
#[derive(Debug)]
pub struct RateLimiter {
    reads: Mutex<Bucket>,
    writes: Mutex<Bucket>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        let now = Instant::now();
        Self {
            reads: Mutex::new(Bucket::new(
                f64::from(limits.read_burst) * HEADROOM,
                limits.reads_per_second * HEADROOM,
                now,
            )),
            writes: Mutex::new(Bucket::new(
                f64::from(limits.write_burst) * HEADROOM,
                limits.writes_per_second * HEADROOM,
                now,
            )),
        }
    }

    fn bucket(&self, kind: Kind) -> &Mutex<Bucket> {
        match kind {
            Kind::Read => &self.reads,
            Kind::Write => &self.writes,
        }
    }

    fn with<T>(&self, kind: Kind, f: impl FnOnce(&mut Bucket) -> T) -> T {
        // A poisoned lock only means another task panicked mid-update of
        // two floats; the bucket is still usable.
        let mut b = self
            .bucket(kind)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut b)
    }

    /// Reserves a token for one request; how long to wait before sending.
    pub fn reserve(&self, kind: Kind) -> Duration {
        self.with(kind, |b| b.reserve(Instant::now()))
    }

    /// Learns from an answer's headers (and a 429's `Retry-After`).
    pub fn observe(&self, kind: Kind, headers: &HeaderMap, throttled: Option<Duration>) {
        let now = Instant::now();
        if let Some(remaining) = remaining(kind, headers) {
            self.with(kind, |b| b.observe_remaining(remaining, now));
        }
        if let Some(wait) = throttled {
            self.with(kind, |b| b.throttled(wait, now));
        }
    }
}

/// The limiter of the process for one Resource Manager endpoint and its
/// sizes. Every run of a daemon (and every client of a run) shares it, so a
/// run that starts right after another, a retry after a failure say, knows
/// how much of the buckets the last one used.
pub fn shared(endpoint: &str, limits: RateLimits) -> std::sync::Arc<RateLimiter> {
    use std::collections::HashMap;
    use std::sync::{Arc, OnceLock};
    type Key = (String, [u64; 4]);
    static LIMITERS: OnceLock<Mutex<HashMap<Key, Arc<RateLimiter>>>> = OnceLock::new();
    let key = (
        endpoint.to_owned(),
        [
            u64::from(limits.read_burst),
            limits.reads_per_second.to_bits(),
            u64::from(limits.write_burst),
            limits.writes_per_second.to_bits(),
        ],
    );
    let mut map = LIMITERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    map.entry(key)
        .or_insert_with(|| Arc::new(RateLimiter::new(limits)))
        .clone()
}

/// The lowest "remaining" count among the headers Resource Manager sends
/// for this kind of request.
fn remaining(kind: Kind, headers: &HeaderMap) -> Option<f64> {
    let names: &[&str] = match kind {
        Kind::Read => &[
            "x-ms-ratelimit-remaining-subscription-reads",
            "x-ms-ratelimit-remaining-subscription-global-reads",
            "x-ms-ratelimit-remaining-tenant-reads",
        ],
        Kind::Write => &[
            "x-ms-ratelimit-remaining-subscription-writes",
            "x-ms-ratelimit-remaining-subscription-global-writes",
            "x-ms-ratelimit-remaining-tenant-writes",
        ],
    };
    names
        .iter()
        .filter_map(|n| headers.get(*n)?.to_str().ok()?.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .reduce(f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(3.0, 10.0, t0);
        let waits: Vec<Duration> = (0..6).map(|_| b.reserve(t0)).collect();
        assert_eq!(waits[..3], [Duration::ZERO; 3]);
        // The 4th, 5th and 6th wait 0.1, 0.2 and 0.3 s: in order, no polling.
        for (w, want) in waits[3..].iter().zip([0.1, 0.2, 0.3]) {
            assert!((w.as_secs_f64() - want).abs() < 1e-9, "{w:?}");
        }
        // A second later the debt is paid and 7 tokens accrued, capped at 3.
        let later = t0 + Duration::from_secs(1);
        b.refill(later);
        assert!((b.tokens - 3.0).abs() < 1e-9, "{}", b.tokens);
    }

    #[test]
    fn the_server_s_count_and_a_429_slow_it_down() {
        let t0 = Instant::now();
        let mut b = Bucket::new(250.0, 25.0, t0);
        b.observe_remaining(2.0, t0);
        assert_eq!(b.reserve(t0), Duration::ZERO);
        assert_eq!(b.reserve(t0), Duration::ZERO);
        assert!(b.reserve(t0) > Duration::ZERO);
        b.throttled(Duration::from_secs(5), t0);
        assert!(b.reserve(t0) >= Duration::from_secs(5));
        // A higher count from the server never adds tokens.
        let mut c = Bucket::new(10.0, 1.0, t0);
        c.observe_remaining(1000.0, t0);
        assert!((c.tokens - 10.0).abs() < 1e-9);
    }

    #[test]
    fn runs_of_one_process_share_the_buckets_of_an_endpoint() {
        let limits = RateLimits::default();
        let a = shared("https://management.example", limits);
        let b = shared("https://management.example", limits);
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        let other = shared("https://management.example.cn", limits);
        assert!(!std::sync::Arc::ptr_eq(&a, &other));
        let smaller = RateLimits {
            read_burst: 10,
            ..limits
        };
        assert!(!std::sync::Arc::ptr_eq(
            &a,
            &shared("https://management.example", smaller)
        ));
    }

    #[test]
    fn headers_are_read_by_kind_and_the_lowest_wins() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-ms-ratelimit-remaining-subscription-reads",
            "11999".parse().expect("value"),
        );
        h.insert(
            "x-ms-ratelimit-remaining-subscription-global-reads",
            "40".parse().expect("value"),
        );
        h.insert(
            "x-ms-ratelimit-remaining-subscription-writes",
            "junk".parse().expect("value"),
        );
        assert_eq!(remaining(Kind::Read, &h), Some(40.0));
        assert_eq!(remaining(Kind::Write, &h), None);
    }
}
