//! Notifications: CloudEvents about what a run found and did, posted to
//! webhooks (and Event Grid topics, which take CloudEvents natively).
//!
//! Events are built here and written to the outbox ([`crate::outbox`]) in
//! the same transaction as the fact they describe; [`deliver`] posts them
//! after the run. Delivery never fails a run: a receiver that is down keeps
//! its events, retried by the next run and by the daemon between runs, and
//! the metrics count every attempt.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::history::{History, Outgoing, TagChange, format_time, now};
use crate::outbox::Queued;
use crate::prefix::PrefixSet;

/// The kinds of event, as configured (`events = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    FeedChanged,
    TargetApplied,
    TargetRefused,
    TargetFailed,
    TargetDrift,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::FeedChanged,
        EventKind::TargetApplied,
        EventKind::TargetRefused,
        EventKind::TargetFailed,
        EventKind::TargetDrift,
    ];

    /// The configured name: `feed.changed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::FeedChanged => "feed.changed",
            EventKind::TargetApplied => "target.applied",
            EventKind::TargetRefused => "target.refused",
            EventKind::TargetFailed => "target.failed",
            EventKind::TargetDrift => "target.drift",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The CloudEvents `type`: `io.tagsync.feed.changed`.
    pub fn cloud_event_type(self) -> String {
        format!("io.tagsync.{}", self.as_str())
    }
}

/// How a receiver is authenticated, besides the optional signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverAuth {
    /// Nothing but the signature, if a secret is configured.
    None,
    /// An Entra ID bearer token for Event Grid (`https://eventgrid.azure.net/.default`),
    /// from the same credential as Resource Manager: the identity needs the
    /// "EventGrid Data Sender" role on the topic.
    EntraEventGrid,
}

/// Where a receiver's URL comes from.
#[derive(Debug, Clone)]
pub enum ReceiverUrl {
    Inline(String),
    /// A file holding it, for URLs that carry a secret (a Slack or Teams
    /// webhook's path): read at each delivery, never shown.
    File(PathBuf),
}

/// One receiver, validated.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub name: String,
    pub url: ReceiverUrl,
    /// The HMAC-SHA256 key, read at each delivery (a rotated Kubernetes
    /// Secret is picked up without a restart).
    pub secret_file: Option<PathBuf>,
    pub events: BTreeSet<EventKind>,
    /// Per request.
    pub timeout: Duration,
    pub auth: ReceiverAuth,
}

impl Receiver {
    /// The URL as logs may show it: scheme and host only. Webhook URLs
    /// often carry their secret in the path (Slack, Teams), not just the
    /// query.
    pub fn shown_url(&self) -> String {
        let url = match &self.url {
            ReceiverUrl::Inline(u) => u,
            ReceiverUrl::File(_) => return "(url_file)".into(),
        };
        match url::Url::parse(url) {
            Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or_default()),
            Err(_) => "(unparsable url)".into(),
        }
    }
}

/// The configured receivers.
#[derive(Debug, Clone, Default)]
pub struct NotifySettings {
    pub receivers: Vec<Receiver>,
    /// The credential for `auth = "entra"` receivers.
    pub auth: Option<crate::azure::auth::AuthSettings>,
}

/// What a target's event says.
#[derive(Debug, Clone, Serialize)]
pub struct TargetEvent<'a> {
    pub target: &'a str,
    pub kind: &'a str,
    pub resource_id: &'a str,
    pub outcome: &'a str,
    pub run_id: Option<i64>,
    /// The apply's id in `tagsync history --target` (what `rollback --to` takes).
    pub apply_id: i64,
    pub added: &'a PrefixSet,
    pub removed: &'a PrefixSet,
    pub drift: &'a PrefixSet,
    pub guard: Option<&'a str>,
    pub error: Option<&'a str>,
    /// The apply a rollback returned the target to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_to: Option<i64>,
}

/// Builds a run's events: who wants which, and the CloudEvent envelope.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    source: String,
    wants: Vec<(String, BTreeSet<EventKind>)>,
}

impl Notifier {
    /// `instance` is the history's id ([`History::instance_id`]).
    pub fn new(settings: &NotifySettings, instance: &str) -> Self {
        Self {
            source: format!("urn:tagsync:{instance}"),
            wants: settings
                .receivers
                .iter()
                .map(|r| (r.name.clone(), r.events.clone()))
                .collect(),
        }
    }

    /// A notifier with no receivers: builds nothing.
    pub fn none() -> Self {
        Self::default()
    }

    fn event(&self, kind: EventKind, subject: &str, data: Value) -> Vec<Outgoing> {
        let sinks: Vec<String> = self
            .wants
            .iter()
            .filter(|(_, events)| events.contains(&kind))
            .map(|(name, _)| name.clone())
            .collect();
        if sinks.is_empty() {
            return Vec::new();
        }
        let id = uuid::Uuid::new_v4().to_string();
        let time = now();
        let body = json!({
            "specversion": "1.0",
            "id": id,
            "source": self.source,
            "type": kind.cloud_event_type(),
            "subject": subject,
            "time": time,
            "datacontenttype": "application/json",
            "data": data,
        });
        vec![Outgoing {
            event_id: id,
            kind: kind.cloud_event_type(),
            created_at: time,
            body: body.to_string(),
            sinks,
        }]
    }

    /// `feed.changed`: each changed tag with its changeNumbers and the
    /// prefixes added and removed. Nothing when no tag changed.
    pub fn feed_changed(
        &self,
        run_id: i64,
        cloud: &str,
        change_number: Option<u64>,
        tags: &[TagChange],
    ) -> Vec<Outgoing> {
        let changed: Vec<Value> = tags
            .iter()
            .filter(|t| t.changed())
            .map(|t| {
                json!({
                    "name": t.state.name,
                    "region": t.state.region,
                    "change_number": t.state.change_number,
                    "previous_change_number": t.previous_change_number,
                    "first": t.first,
                    // A tag's first snapshot adds all of its prefixes.
                    "added": if t.first { &t.state.prefixes } else { &t.added },
                    "removed": t.removed,
                })
            })
            .collect();
        if changed.is_empty() {
            return Vec::new();
        }
        self.event(
            EventKind::FeedChanged,
            cloud,
            json!({"run_id": run_id, "cloud": cloud, "change_number": change_number, "tags": changed}),
        )
    }

    /// The event of a target's outcome, if it has one (`applied`,
    /// `refused`, `failed`, `drifted`; nothing for `unchanged`).
    pub fn target(&self, e: &TargetEvent<'_>) -> Vec<Outgoing> {
        let kind = match e.outcome {
            "applied" => EventKind::TargetApplied,
            "refused" => EventKind::TargetRefused,
            "failed" => EventKind::TargetFailed,
            "drifted" => EventKind::TargetDrift,
            _ => return Vec::new(),
        };
        let data = serde_json::to_value(e).unwrap_or(Value::Null);
        self.event(kind, e.target, data)
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of the body under the secret, as in
/// GitHub's `X-Hub-Signature-256`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is never reached.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(71);
    hex.push_str("sha256=");
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Tagsync-Signature-256";
pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";

/// Which events a delivery pass takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// After a run: every waiting event, whatever its backoff.
    AfterRun,
    /// The daemon between runs: only those whose retry is due.
    Due,
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    pub delivered: u64,
    pub failed: u64,
    /// Still waiting after the pass, all receivers.
    pub waiting: u64,
}

/// Whether the last pass of this process left events waiting (true until a
/// pass has run): the daemon opens the history between runs only then.
static WAITING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// See [`WAITING`].
pub fn maybe_waiting() -> bool {
    WAITING.load(std::sync::atomic::Ordering::SeqCst)
}

/// Attempts per event within one pass before it waits for the next one.
const ATTEMPTS_PER_PASS: u32 = 3;
/// A pass spends at most this long on one receiver.
const PASS_BUDGET: Duration = Duration::from_secs(60);

/// When the daemon tries an event again after `passes` failed delivery
/// passes: 30 s, doubling, at most an hour.
pub fn retry_after(passes: i64) -> Duration {
    let exp = u32::try_from(passes.clamp(1, 8) - 1).unwrap_or(0);
    Duration::from_secs(30u64 << exp).min(Duration::from_secs(3600))
}

/// Delivers the waiting events to every receiver, concurrently, each in
/// order (a receiver that fails stops its queue for this pass, so events
/// never arrive out of order). Never fails: errors are logged, counted and
/// kept with the event.
pub async fn deliver(settings: &NotifySettings, history: &History, pass: Pass) -> Delivered {
    let m = crate::metrics::metrics();
    let names: Vec<String> = settings.receivers.iter().map(|r| r.name.clone()).collect();
    let mut summary = match history.outbox_summary().await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot read the notification outbox: {e}");
            return Delivered::default();
        }
    };
    if summary.iter().any(|(sink, _, _)| !names.contains(sink)) {
        match history.outbox_forget_others(&names).await {
            Ok(n) => tracing::warn!(
                events = n,
                "dropped notifications for receivers no longer configured"
            ),
            Err(e) => tracing::error!("cannot drop notifications of removed receivers: {e}"),
        }
        summary.retain(|(sink, _, _)| names.contains(sink));
    }
    let due_by = now();
    let has_work = summary
        .iter()
        .any(|(_, _, next)| pass == Pass::AfterRun || *next <= due_by);
    let mut total = Delivered::default();
    if has_work {
        let client = match reqwest::Client::builder()
            .user_agent(crate::http::user_agent())
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("cannot build the notification client: {e}");
                return Delivered::default();
            }
        };
        let token = Arc::new(EntraToken::new(settings.auth.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        for r in settings.receivers.clone() {
            if !summary.iter().any(|(s, _, _)| *s == r.name) {
                continue;
            }
            let (client, history, token) = (client.clone(), history.clone(), token.clone());
            let due = (pass == Pass::Due).then(|| due_by.clone());
            tasks.spawn(async move {
                let d = deliver_to(&r, &client, &history, due, &token).await;
                (r.name, d)
            });
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok((name, d)) = done {
                total.delivered += d.delivered;
                total.failed += d.failed;
                // Delivered events leave the outbox; the pass holds the run
                // lock, so nothing else changed what waits.
                if let Some(entry) = summary.iter_mut().find(|(s, _, _)| *s == name) {
                    entry.1 -= i64::try_from(d.delivered).unwrap_or(0);
                }
            }
        }
    }
    for r in &settings.receivers {
        let waiting = summary
            .iter()
            .find(|(s, _, _)| *s == r.name)
            .map_or(0, |(_, n, _)| (*n).max(0));
        total.waiting += u64::try_from(waiting).unwrap_or(0);
        m.notify_waiting
            .with_label_values(&[r.name.as_str()])
            .set(waiting);
    }
    WAITING.store(total.waiting > 0, std::sync::atomic::Ordering::SeqCst);
    if total.delivered + total.failed > 0 {
        tracing::info!(
            delivered = total.delivered,
            failed_attempts = total.failed,
            waiting = total.waiting,
            "notifications"
        );
    }
    total
}

async fn deliver_to(
    r: &Receiver,
    client: &reqwest::Client,
    history: &History,
    due_by: Option<String>,
    token: &EntraToken,
) -> Delivered {
    let m = crate::metrics::metrics();
    let mut out = Delivered::default();
    let started = Instant::now();
    let secret = match &r.secret_file {
        None => None,
        Some(path) => match std::fs::read(path) {
            // A trailing newline (`echo secret > file`) is not part of it.
            Ok(mut s) => {
                while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    s.pop();
                }
                Some(s)
            }
            Err(e) => {
                tracing::error!(
                    receiver = %r.name,
                    "cannot read the secret_file {}: {e}; its events wait until it can be read",
                    path.display()
                );
                m.notify_deliveries
                    .with_label_values(&[r.name.as_str(), "failed"])
                    .inc();
                out.failed += 1;
                return out;
            }
        },
    };
    let url = match &r.url {
        ReceiverUrl::Inline(u) => u.clone(),
        ReceiverUrl::File(path) => {
            let url = std::fs::read_to_string(path).map(|t| t.trim().to_owned());
            match url {
                Ok(u) if crate::http::check_url_allowed(&u).is_ok() => u,
                // Never shown: the URL in the file is the secret.
                Ok(_) => {
                    tracing::error!(receiver = %r.name, "the URL in url_file {} is not an https URL (http only on loopback); its events wait", path.display());
                    return out;
                }
                Err(e) => {
                    tracing::error!(receiver = %r.name, "cannot read the url_file {}: {e}; its events wait until it can be read", path.display());
                    return out;
                }
            }
        }
    };
    let mut first = true;
    loop {
        let batch = match history.outbox_waiting(&r.name, 50).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(receiver = %r.name, "cannot read the notification outbox: {e}");
                return out;
            }
        };
        // Between runs a receiver's queue moves only when its oldest event
        // is due; the events behind it follow it, in order.
        let not_due = |e: &Queued| {
            due_by
                .as_deref()
                .is_some_and(|d| e.next_attempt_at.as_str() > d)
        };
        if batch.is_empty() || (first && batch.first().is_some_and(not_due)) {
            return out;
        }
        first = false;
        for event in batch {
            match post(r, &url, client, &event, secret.as_deref(), token, started).await {
                Ok(()) => {
                    m.notify_deliveries
                        .with_label_values(&[r.name.as_str(), "delivered"])
                        .inc();
                    out.delivered += 1;
                    tracing::info!(receiver = %r.name, event = %event.kind, id = %event.event_id, "delivered a notification");
                    if let Err(e) = history.outbox_delivered(event.id).await {
                        // Delivered but still queued: the receiver may get
                        // it twice (the id lets it tell).
                        tracing::error!(receiver = %r.name, "cannot mark a notification delivered: {e}");
                        return out;
                    }
                }
                Err((attempts, why)) => {
                    m.notify_deliveries
                        .with_label_values(&[r.name.as_str(), "failed"])
                        .inc_by(u64::from(attempts));
                    out.failed += u64::from(attempts);
                    let total = event.attempts + i64::from(attempts);
                    // The backoff grows with the passes that failed, not
                    // with the attempts inside each.
                    let passes =
                        (total + i64::from(ATTEMPTS_PER_PASS) - 1) / i64::from(ATTEMPTS_PER_PASS);
                    let next = format_time(time::OffsetDateTime::now_utc() + retry_after(passes));
                    tracing::warn!(
                        receiver = %r.name,
                        url = %r.shown_url(),
                        event = %event.kind,
                        attempts = total,
                        "cannot deliver a notification ({why}); it is kept and retried later, with those after it"
                    );
                    if let Err(e) = history
                        .outbox_failed(event.id, i64::from(attempts), &why, &next)
                        .await
                    {
                        tracing::error!(receiver = %r.name, "cannot record a failed delivery: {e}");
                    }
                    return out;
                }
            }
        }
    }
}

/// Posts one event, retrying with backoff within the pass. On failure
/// returns the attempts made and the last reason (no URL in it).
async fn post(
    r: &Receiver,
    url: &str,
    client: &reqwest::Client,
    event: &Queued,
    secret: Option<&[u8]>,
    token: &EntraToken,
    started: Instant,
) -> Result<(), (u32, String)> {
    let mut why = String::new();
    for attempt in 1..=ATTEMPTS_PER_PASS {
        if started.elapsed() + r.timeout > PASS_BUDGET {
            let spent = "this pass's time for the receiver is spent";
            return Err((
                attempt - 1,
                if why.is_empty() {
                    spent.to_owned()
                } else {
                    format!("{why}; {spent}")
                },
            ));
        }
        let mut request = client
            .post(url)
            .timeout(r.timeout)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(event.body.clone());
        if let Some(secret) = secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, event.body.as_bytes()));
        }
        if r.auth == ReceiverAuth::EntraEventGrid {
            match token.get().await {
                Ok(t) => request = request.bearer_auth(t),
                Err(e) => return Err((attempt, format!("no Entra ID token: {e}"))),
            }
        }
        let mut wait = Duration::from_millis(500 << (attempt - 1));
        match request.send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => {
                why = format!("the receiver answered {}", resp.status());
                if let Some(after) = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                {
                    wait = Duration::from_secs(after).min(Duration::from_secs(10));
                }
            }
            Err(e) => {
                why = crate::http::describe(&e.without_url());
            }
        }
        if attempt < ATTEMPTS_PER_PASS {
            tokio::time::sleep(wait).await;
        }
    }
    Err((ATTEMPTS_PER_PASS, why))
}

/// An Entra ID token for Event Grid, fetched once per pass when a receiver
/// needs one.
struct EntraToken {
    auth: Option<crate::azure::auth::AuthSettings>,
    token: tokio::sync::Mutex<Option<Result<String, String>>>,
}

impl EntraToken {
    fn new(auth: Option<crate::azure::auth::AuthSettings>) -> Self {
        Self {
            auth,
            token: tokio::sync::Mutex::new(None),
        }
    }

    async fn get(&self) -> Result<String, String> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            return t.clone();
        }
        let result = match &self.auth {
            None => Err("no [azure] credential is configured".to_owned()),
            Some(auth) => match crate::azure::auth::credential(auth) {
                Err(e) => Err(e.to_string()),
                Ok((cred, _)) => match tokio::time::timeout(
                    Duration::from_secs(30),
                    cred.get_token(&["https://eventgrid.azure.net/.default"], None),
                )
                .await
                {
                    Ok(Ok(t)) => Ok(t.token.secret().to_owned()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the identity endpoint did not answer in 30s".to_owned()),
                },
            },
        };
        *cached = Some(result.clone());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_githubs_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_from_30s_to_an_hour() {
        assert_eq!(retry_after(1), Duration::from_secs(30));
        assert_eq!(retry_after(2), Duration::from_secs(60));
        assert_eq!(retry_after(100), Duration::from_secs(3600));
    }

    #[test]
    fn only_the_receivers_that_want_an_event_get_it() {
        let receiver = |name: &str, events: &[EventKind]| Receiver {
            name: name.into(),
            url: ReceiverUrl::Inline("https://hooks.example.com/x".into()),
            secret_file: None,
            events: events.iter().copied().collect(),
            timeout: Duration::from_secs(5),
            auth: ReceiverAuth::None,
        };
        let settings = NotifySettings {
            receivers: vec![
                receiver("all", &EventKind::ALL),
                receiver("feed", &[EventKind::FeedChanged]),
            ],
            auth: None,
        };
        let n = Notifier::new(&settings, "abc");
        let empty = PrefixSet::new();
        let e = TargetEvent {
            target: "eh",
            kind: "event-hubs",
            resource_id: "/subscriptions/x",
            outcome: "refused",
            run_id: Some(3),
            apply_id: 7,
            added: &empty,
            removed: &empty,
            drift: &empty,
            guard: Some("removal-ratio"),
            error: Some("too many"),
            rollback_to: None,
        };
        let out = n.target(&e);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].sinks, vec!["all".to_string()]);
        let body: Value = serde_json::from_str(&out[0].body).expect("json");
        assert_eq!(body["specversion"], "1.0");
        assert_eq!(body["type"], "io.tagsync.target.refused");
        assert_eq!(body["source"], "urn:tagsync:abc");
        assert_eq!(body["data"]["guard"], "removal-ratio");
        assert!(
            n.target(&TargetEvent {
                outcome: "unchanged",
                ..e
            })
            .is_empty()
        );
        assert!(Notifier::none().target(&e).is_empty());
        let shown = receiver("x", &[]);
        assert_eq!(shown.shown_url(), "https://hooks.example.com/…");
    }
}
