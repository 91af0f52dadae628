//! Notifications: a loopback receiver gets the documented CloudEvents,
//! signed; a receiver that is down gets them on the next run (or from the
//! daemon between runs), in order, once; it never changes an exit code; and
//! neither the secret nor the URL's path reaches the logs or the history.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::fake_http::{FakeServer, Request, Response};
use crate::util::*;
use crate::world::*;

const SECRET: &str = "s3cr3t-webhook-key";
/// A path token like a Slack or Teams webhook's: a secret of its own.
const PATH_TOKEN: &str = "T0KEN-IN-THE-PATH";

/// A receiver answering `status` (shared, so a test can bring it up and
/// down) to every request.
fn receiver(status: Arc<AtomicU16>) -> FakeServer {
    FakeServer::start(move |_| Response::new(status.load(Ordering::SeqCst), "ok"))
}

/// Adds a `[[notify]]` receiver to the world's configuration.
fn notify_to(w: &World, url: &str, extra: &str) {
    let secret = w.dir.write("webhook-secret", format!("{SECRET}\n"));
    let mut cfg = std::fs::read_to_string(&w.cfg).expect("config");
    cfg.push_str(&format!(
        "\n[[notify]]\nname = \"ops\"\nurl = \"{url}\"\nsecret_file = \"{}\"\ntimeout = \"2s\"\n{extra}\n",
        secret.display()
    ));
    std::fs::write(&w.cfg, cfg).expect("write config");
}

/// The events a receiver accepted (answered 2xx), in order.
fn accepted(server: &FakeServer, accepted_from: usize) -> Vec<(Request, Value)> {
    server
        .requests()
        .into_iter()
        .skip(accepted_from)
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("a JSON event");
            (r, body)
        })
        .collect()
}

fn verify(req: &Request) {
    assert_eq!(
        req.header("content-type"),
        Some("application/cloudevents+json; charset=utf-8")
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(&req.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        req.header("x-tagsync-signature-256"),
        Some(format!("sha256={hex}").as_str()),
        "the signature is the HMAC-SHA256 of the body, without the secret file's newline"
    );
}

fn outbox_rows(w: &World) -> i64 {
    with_db(&w.dir.db(), async |pool| {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox")
            .fetch_one(pool)
            .await
            .expect("outbox")
    })
}

#[test]
fn a_changed_feed_and_applied_targets_send_signed_cloudevents_and_an_unchanged_run_sends_none() {
    let w = world("Standard", "");
    let up = Arc::new(AtomicU16::new(200));
    let server = receiver(up.clone());
    notify_to(&w, &server.url(&format!("/hooks/{PATH_TOKEN}")), "");

    let run = w.sync(&[P1, P2], 10, &[]);
    run.assert_code(0);
    let events = accepted(&server, 0);
    let types: Vec<&str> = events
        .iter()
        .map(|(_, e)| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types[0], "io.tagsync.feed.changed", "{types:?}");
    assert_eq!(
        types[1..]
            .iter()
            .filter(|t| **t == "io.tagsync.target.applied")
            .count(),
        3,
        "{types:?}"
    );
    let mut ids = std::collections::BTreeSet::new();
    for (req, e) in &events {
        verify(req);
        assert_eq!(req.method, "POST");
        assert_eq!(e["specversion"], "1.0");
        assert!(
            e["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("urn:tagsync:"))
        );
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(
            ids.insert(e["id"].as_str().expect("id").to_owned()),
            "ids are unique"
        );
    }
    let feed = &events[0].1["data"];
    assert_eq!(feed["change_number"], 10);
    assert_eq!(feed["tags"][0]["name"], "AzureDigitalTwins");
    assert_eq!(feed["tags"][0]["change_number"], 10);
    let added: Vec<&str> = feed["tags"][0]["added"]
        .as_array()
        .expect("added")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(added, vec![P1, P2]);
    let eh = events
        .iter()
        .map(|(_, e)| e)
        .find(|e| e["subject"] == "adt-events")
        .expect("the Event Hubs target's event");
    assert_eq!(eh["data"]["kind"], "event-hubs");
    assert_eq!(eh["data"]["outcome"], "applied");
    assert_eq!(
        eh["data"]["resource_id"],
        crate::fake_arm::namespace_id(EH, "adt-eh")
    );
    assert_eq!(eh["data"]["added"].as_array().map(Vec::len), Some(2));
    assert!(eh["data"]["apply_id"].as_i64().is_some());
    assert_eq!(outbox_rows(&w), 0, "delivered events leave the outbox");

    // Nothing changed: nothing to say.
    w.sync(&[P1, P2], 10, &[]).assert_code(0);
    assert_eq!(server.requests().len(), events.len());

    // The tag changes: one feed event and one per target, with the removal.
    w.sync(&[P1, P2, P3], 11, &[]).assert_code(0);
    let more = accepted(&server, events.len());
    assert_eq!(more.len(), 4);
    assert_eq!(more[0].1["data"]["tags"][0]["previous_change_number"], 10);
    assert_eq!(more[0].1["data"]["tags"][0]["added"][0], P3);

    // No secret anywhere: not the key, not the URL's path token.
    for text in [&run.stderr, &run.stdout] {
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains(PATH_TOKEN), "{text}");
    }
    let db = std::fs::read(w.dir.db()).expect("db");
    let db = String::from_utf8_lossy(&db);
    assert!(!db.contains(SECRET));
    assert!(!db.contains(PATH_TOKEN));
}

#[test]
fn a_receiver_that_is_down_gets_every_event_on_the_next_run_in_order_and_never_changes_the_exit_code()
 {
    let w = world("Standard", "");
    let up = Arc::new(AtomicU16::new(503));
    let server = receiver(up.clone());
    notify_to(&w, &server.url(&format!("/hooks/{PATH_TOKEN}")), "");

    let first = w.sync(&[P1, P2], 10, &[]);
    first.assert_code(0);
    let tried = server.requests().len();
    assert_eq!(
        tried, 3,
        "a failing receiver's queue stops at its first event: tried 3 times, the rest wait"
    );
    assert_eq!(
        outbox_rows(&w),
        4,
        "the feed event and three target events wait"
    );
    assert!(
        first.stderr.contains("cannot deliver a notification") && first.stderr.contains("503"),
        "{}",
        first.stderr
    );
    assert!(!first.stderr.contains(PATH_TOKEN), "{}", first.stderr);

    // A guard refusal while the receiver is still down: exit 6, as always.
    w.age_history();
    let refused = w.sync(&[P4], 11, &[]);
    refused.assert_code(6);
    assert_eq!(
        outbox_rows(&w),
        8,
        "the feed change and three target.refused events join them"
    );

    // The receiver is back: the next run delivers them all, oldest first,
    // each once, with its own events after them.
    up.store(204, Ordering::SeqCst);
    let before = server.requests().len();
    w.sync(&[P4], 11, &["--force"]).assert_code(0);
    assert_eq!(outbox_rows(&w), 0);
    let delivered: Vec<Value> = accepted(&server, before)
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let types: Vec<&str> = delivered
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    let ids: std::collections::BTreeSet<&str> =
        delivered.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), delivered.len(), "each event once: {types:?}");
    let applied = "io.tagsync.target.applied";
    let refused = "io.tagsync.target.refused";
    let feed = "io.tagsync.feed.changed";
    assert_eq!(
        types,
        vec![
            feed, applied, applied, applied, feed, refused, refused, refused, applied, applied,
            applied
        ]
    );
    let refusal = &delivered[5];
    assert_eq!(refusal["data"]["guard"], "removal-ratio");
    assert!(refusal["data"]["error"].as_str().is_some());
}

#[test]
fn a_receiver_that_cannot_be_reached_or_has_no_secret_file_leaves_the_run_alone() {
    let w = world("Standard", "");
    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    notify_to(&w, &format!("http://127.0.0.1:{port}/hook"), "");
    let run = w.sync(&[P1], 10, &[]);
    run.assert_code(0);
    assert_eq!(outbox_rows(&w), 4);

    // A secret file that cannot be read: the events wait, the run is fine.
    std::fs::remove_file(w.dir.path("webhook-secret")).expect("rm");
    let run = w.sync(&[P1, P2], 11, &[]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("cannot read the secret_file"),
        "{}",
        run.stderr
    );
    assert_eq!(outbox_rows(&w), 8);

    // The receiver is removed from the configuration: its events go with it.
    let cfg = std::fs::read_to_string(&w.cfg).expect("config");
    let without = &cfg[..cfg.find("[[notify]]").expect("notify section")];
    std::fs::write(&w.cfg, without).expect("config");
    let run = w.sync(&[P1, P2], 11, &[]);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("dropped notifications for receivers no longer configured"),
        "{}",
        run.stderr
    );
    assert_eq!(outbox_rows(&w), 0);
}

#[test]
fn the_daemon_retries_waiting_events_between_runs() {
    let w = world("Standard", "");
    let up = Arc::new(AtomicU16::new(500));
    let server = receiver(up.clone());
    notify_to(&w, &server.url("/hook"), "");
    let feed = w.dir.write("feed.json", feed(&[P1], 10));
    let mut cfg = std::fs::read_to_string(&w.cfg).expect("config");
    cfg = cfg.replacen(
        "[azure]",
        &format!(
            "[feed]\nsource = \"file\"\nfile = \"{}\"\n\n[azure]",
            feed.display()
        ),
        1,
    );
    std::fs::write(&w.cfg, cfg).expect("config");
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let identity = w.arm.identity_env();
    let mut child = w
        .dir
        .command()
        .args(["--config", &w.cfg, "daemon", "--run-at-start", "--listen"])
        .arg(listen.to_string())
        .args(["--schedule", "0 6 1 1 *", "--redeliver-every", "200ms"])
        .envs(identity.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("daemon");
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let attempts = || {
        if !w.dir.db().exists() {
            return 0;
        }
        // The daemon may be creating the schema right now: no table yet is 0.
        with_db(&w.dir.db(), async |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(attempts), 0) FROM outbox")
                .fetch_one(pool)
                .await
                .unwrap_or(0)
        })
    };
    wait_for("the run's failed delivery", &|| attempts() >= 3);
    assert_eq!(
        server.requests().len(),
        3,
        "the queue stopped at its first event"
    );
    // Its next attempt is 30 s away; the daemon's passes between runs move
    // a queue only when its oldest event is due, even if those behind it
    // (never tried) are: events never overtake each other.
    up.store(200, Ordering::SeqCst);
    execute_sql(
        &w.dir.db(),
        "UPDATE outbox SET next_attempt_at = '2000-01-01T00:00:00.000Z' WHERE id > (SELECT MIN(id) FROM outbox)",
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        server.requests().len(),
        3,
        "the oldest is not due: nothing sent"
    );
    // The oldest falls due: the whole queue goes, in order.
    execute_sql(
        &w.dir.db(),
        "UPDATE outbox SET next_attempt_at = '2000-01-01T00:00:00.000Z'",
    );
    wait_for("the outbox to empty", &|| outbox_rows(&w) == 0);
    World::terminate(&child);
    let status = child.wait().expect("wait");
    assert!(status.success());
    let events = accepted(&server, 0);
    assert_eq!(events.len(), 7, "three failed attempts, then four accepted");
    assert_eq!(
        events[0].1["id"], events[3].1["id"],
        "the first event, retried"
    );
    assert_eq!(events[3].1["type"], "io.tagsync.feed.changed");
    assert!(
        events[4..]
            .iter()
            .all(|(_, e)| e["type"] == "io.tagsync.target.applied")
    );
}

#[test]
fn bad_receivers_are_config_errors_naming_them() {
    let dir = TestDir::new();
    for (cfg, expected) in [
        (
            "[[notify]]\nname = \"ops\"\nurl = \"http://hooks.example.com/x\"\n",
            "plain http",
        ),
        (
            "[[notify]]\nname = \"ops\"\nurl = \"https://hooks.example.com/x\"\nevents = [\"target.aplied\"]\n",
            "did you mean `target.applied`",
        ),
        (
            "[[notify]]\nname = \"ops\"\nurl = \"https://hooks.example.com/x\"\n[[notify]]\nname = \"ops\"\nurl = \"https://hooks.example.com/y\"\n",
            "two receivers have this name",
        ),
        (
            "[[notify]]\nname = \"ops\"\nurl = \"https://hooks.example.com/x\"\nauth = \"sas\"\n",
            "auth = \"sas\" is not known",
        ),
    ] {
        let path = dir.write("bad.toml", cfg);
        let run = dir.run(&["--config", path.to_str().expect("utf-8"), "config", "check"]);
        run.assert_code(2);
        assert!(run.stderr.contains("[[notify]] `ops`"), "{}", run.stderr);
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
    }
    // Valid, but its secret file is not here: a warning, and the URL shown
    // as scheme and host only.
    let path = dir.write(
        "ok.toml",
        "[[notify]]\nname = \"ops\"\nurl = \"https://hooks.example.com/services/T0/B0/XYZ\"\nsecret_file = \"/nonexistent/secret\"\n",
    );
    let run = dir.run(&["--config", path.to_str().expect("utf-8"), "config", "check"]);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("notify:    ops https://hooks.example.com/…, signed"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("secret_file /nonexistent/secret cannot be read here"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("XYZ"), "{}", run.stdout);
}

#[test]
fn an_event_grid_topic_gets_an_entra_token_for_event_grid_and_a_url_file_is_never_shown() {
    let w = world("Standard", "");
    // Like an Event Grid topic: 401 without a token for Event Grid.
    let topic = FakeServer::start(|req| {
        let want = format!("Bearer {}", crate::fake_arm::EVENT_GRID_TOKEN);
        if req.header("authorization") == Some(want.as_str()) {
            Response::new(200, "")
        } else {
            Response::json(401, r#"{"error":{"code":"Unauthorized"}}"#)
        }
    });
    let url_file = w.dir.write(
        "topic-url",
        format!("{}\n", topic.url(&format!("/api/events/{PATH_TOKEN}"))),
    );
    let mut cfg = std::fs::read_to_string(&w.cfg).expect("config");
    cfg.push_str(&format!(
        "\n[[notify]]\nname = \"topic\"\nurl_file = \"{}\"\nauth = \"entra\"\n",
        url_file.display()
    ));
    std::fs::write(&w.cfg, cfg).expect("config");
    let run = w.sync(&[P1], 10, &[]);
    run.assert_code(0);
    let requests = topic.requests();
    assert_eq!(requests.len(), 4, "one feed event and three target events");
    assert!(requests.iter().all(|r| r.path.ends_with(PATH_TOKEN)));
    assert!(
        requests
            .iter()
            .all(|r| r.header("x-tagsync-signature-256").is_none()),
        "no secret_file, no signature"
    );
    assert_eq!(
        outbox_rows(&w),
        0,
        "every event accepted: the token was Event Grid's"
    );

    // A URL file that holds no https URL: the events wait, and the file's
    // content is never shown.
    std::fs::write(&url_file, format!("ftp://example.com/{PATH_TOKEN}")).expect("write");
    let run = w.sync(&[P1, P2], 11, &[]);
    run.assert_code(0);
    assert!(run.stderr.contains("is not an https URL"), "{}", run.stderr);
    assert!(!run.stderr.contains(PATH_TOKEN), "{}", run.stderr);
    assert_eq!(outbox_rows(&w), 4);
}

#[test]
fn a_receiver_that_never_answers_is_cut_off_by_the_timeout_and_old_events_expire_with_retention() {
    let w = world("Standard", "");
    // Accepts the connection, then answers only after 5 s: without the
    // timeout every event would be delivered, late.
    let slow = FakeServer::start(|_| Response::new(200, "").delayed(Duration::from_secs(5)));
    let mut cfg = std::fs::read_to_string(&w.cfg).expect("config");
    cfg.push_str(&format!(
        "\n[[notify]]\nname = \"slow\"\nurl = \"{}\"\ntimeout = \"200ms\"\n",
        slow.url("/hook")
    ));
    std::fs::write(&w.cfg, cfg).expect("config");
    let feed_file = w.dir.write("feed.json", feed(&[P1], 10));
    let feed_arg = feed_file.to_str().expect("utf-8");
    let run = w.run(&["sync", "--feed-file", feed_arg]);
    run.assert_code(0);
    assert_eq!(outbox_rows(&w), 4, "timed out: every event still waits");
    assert!(
        run.stderr.contains("cannot deliver a notification"),
        "{}",
        run.stderr
    );

    // A year later nobody has taken them: retention drops them with the
    // runs they describe (the same feed again adds no new event).
    execute_sql(
        &w.dir.db(),
        "UPDATE outbox SET created_at = '2020-01-01T00:00:00.000Z'",
    );
    let run = w.run_env(
        &["sync", "--feed-file", feed_arg],
        &[("TAGSYNC_DATABASE_RETENTION", "1y")],
    );
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("dropped notifications older than the retention"),
        "{}",
        run.stderr
    );
    assert_eq!(outbox_rows(&w), 0);
}
