//! The write path's promises under every fault the fake Resource Manager
//! can inject, and under SIGKILL at random points of runs with three
//! targets: no foreign or VNet rule is ever touched, no namespace is ever
//! opened, no failure exits 0, the history stays intact, the next run
//! converges, and every rule tagsync wrote is owned or gone.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_http::Response;
use crate::util::*;
use crate::world::*;

/// The rules each resource started with that tagsync does not own.
fn foreign_of(target: &str) -> (&'static str, Value) {
    match target {
        "adt-events" => ("1.1.1.1", eh_rules()),
        "adt-queue" => ("2.2.2.0/24", sb_rules()),
        _ => ("25.1.2.3", storage_acls()),
    }
}

/// Live IP rule values of a target, and its whole rule object.
fn live(w: &World, target: &str) -> (BTreeSet<String>, Value) {
    let (obj, key) = match target {
        "adt-events" => (w.arm.rule_set(EH, "adt-eh"), "ipMask"),
        "adt-queue" => (w.arm.rule_set(SB, "adt-sb"), "ipMask"),
        _ => (w.arm.storage_acls("adtdeadletter"), "value"),
    };
    (masks(&obj["ipRules"], key).into_iter().collect(), obj)
}

/// Canonical prefixes (`1.2.3.4` -> `1.2.3.4/32`).
fn canonical(values: &BTreeSet<String>) -> BTreeSet<String> {
    values
        .iter()
        .map(|v| {
            v.parse::<ipnet::IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .expect("a rule value")
                .to_string()
        })
        .collect()
}

fn owned(w: &World, target: &str) -> BTreeSet<String> {
    let sql = format!("SELECT prefix FROM ownership WHERE target = '{target}'");
    with_db(&w.dir.db(), async |pool| {
        sqlx::query_scalar::<_, String>(&sql)
            .fetch_all(pool)
            .await
            .expect("ownership")
            .into_iter()
            .collect()
    })
}

const TARGETS: [&str; 3] = ["adt-events", "adt-queue", "adt-deadletter"];

/// What must hold after any run, whatever happened in it.
fn check_safe(w: &World, context: &str) {
    for t in TARGETS {
        let (values, obj) = live(w, t);
        let (foreign, original) = foreign_of(t);
        assert!(
            values.contains(foreign),
            "{context}: {t} lost its foreign rule: {obj}"
        );
        // Azure re-cases the subnet ids it returns (`resourcegroups`).
        assert_eq!(
            obj["virtualNetworkRules"].to_string().to_lowercase(),
            original["virtualNetworkRules"].to_string().to_lowercase(),
            "{context}: {t}'s VNet rules were touched"
        );
        assert_eq!(
            obj["defaultAction"], original["defaultAction"],
            "{context}: {t}"
        );
        if t != "adt-deadletter" {
            assert_eq!(
                obj["publicNetworkAccess"], original["publicNetworkAccess"],
                "{context}: {t} public access changed"
            );
            assert!(
                !values.is_empty(),
                "{context}: {t} was left with no IP rules (open)"
            );
        } else {
            assert_eq!(obj["bypass"], original["bypass"], "{context}");
        }
    }
}

/// After a clean run: the live rules are exactly the foreign ones and the
/// desired ones, and tagsync owns exactly the desired ones.
fn check_converged(w: &World, desired: &[&str], context: &str) {
    for t in TARGETS {
        let (values, _) = live(w, t);
        let (foreign, _) = foreign_of(t);
        let mut expected: BTreeSet<String> = canonical(
            &desired
                .iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<_>>(),
        );
        if t == "adt-deadletter" {
            // Storage holds a /31 as its two addresses.
            expected = expected
                .into_iter()
                .flat_map(|p| {
                    let net: ipnet::IpNet = p.parse().expect("prefix");
                    if net.prefix_len() == 31 {
                        net.hosts().map(|a| format!("{a}/32")).collect::<Vec<_>>()
                    } else {
                        vec![p]
                    }
                })
                .collect();
        }
        let live_set = canonical(&values);
        let foreign_set = canonical(&[foreign.to_owned()].into_iter().collect());
        let ours: BTreeSet<String> = live_set.difference(&foreign_set).cloned().collect();
        assert_eq!(
            ours, expected,
            "{context}: {t} live rules besides the foreign one"
        );
        assert_eq!(
            owned(w, t),
            expected,
            "{context}: {t}: every rule tagsync wrote is owned"
        );
    }
}

/// An event exists exactly when its fact does: one `feed.changed` per
/// changed run, one target event per apply that was not unchanged, none
/// for anything that was not recorded.
fn check_outbox(w: &World, context: &str) {
    if !w.dir.db().exists() {
        return;
    }
    let (facts, events) = with_db(&w.dir.db(), async |pool| {
        let has_outbox: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'outbox'")
                .fetch_one(pool)
                .await
                .expect("schema");
        if has_outbox == 0 {
            return (Vec::new(), Vec::new());
        }
        let facts: Vec<String> = sqlx::query_scalar(
            "SELECT 'run ' || id FROM runs WHERE outcome = 'changed'
             UNION ALL
             SELECT 'apply ' || id FROM applies WHERE outcome IN ('applied', 'refused', 'failed', 'drifted')
             ORDER BY 1",
        )
        .fetch_all(pool)
        .await
        .expect("facts");
        let events: Vec<String> = sqlx::query_scalar(
            "SELECT CASE WHEN type = 'io.tagsync.feed.changed'
                         THEN 'run ' || json_extract(body, '$.data.run_id')
                         ELSE 'apply ' || json_extract(body, '$.data.apply_id') END
             FROM outbox ORDER BY 1",
        )
        .fetch_all(pool)
        .await
        .expect("events");
        (facts, events)
    });
    assert_eq!(
        events, facts,
        "{context}: the outbox holds one event per fact"
    );
}

/// Ages the history, if a killed run left one with its tables.
fn age_if_any(w: &World) {
    if !w.dir.db().exists() {
        return;
    }
    with_db(&w.dir.db(), async |pool| {
        for sql in [
            "UPDATE ownership SET last_desired_at = '2020-01-01T00:00:00.000Z'",
            "UPDATE runs SET started_at = '2020-01-01T00:00:00.000Z'",
        ] {
            // A run killed before its schema was created has no tables yet.
            let _ = sqlx::query(sql).execute(pool).await;
        }
    });
}

fn integrity(w: &World) -> String {
    if !w.dir.db().exists() {
        // Killed before the run created its database: nothing to check.
        return "ok".into();
    }
    with_db(&w.dir.db(), async |pool| {
        sqlx::query_scalar::<_, String>("PRAGMA integrity_check")
            .fetch_one(pool)
            .await
            .expect("integrity check")
    })
}

/// A small deterministic generator (the rounds are the same on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

const FEEDS: [&[&str]; 3] = [&[P1, P2, P3], &[P2, P4], &[P1, P3, P4]];

#[test]
fn kill_9_at_random_points_never_leaves_a_written_rule_unowned() {
    const ROUNDS: u64 = 40;
    let w = world("Standard", "");
    // Slow answers stretch each run to a few hundred milliseconds, so the
    // kills land before, during and after the writes.
    w.arm.state.lock().expect("lock").delay = Some(Duration::from_millis(15));
    // A receiver that never takes an event: every event a run recorded
    // stays in the outbox, so the outbox must match the facts exactly.
    let receiver = crate::fake_http::FakeServer::start(|_| Response::new(503, ""));
    let mut cfg = std::fs::read_to_string(&w.cfg).expect("config");
    cfg.push_str(&format!(
        "\n[[notify]]\nname = \"ops\"\nurl = \"{}\"\ntimeout = \"1s\"\n",
        receiver.url("/hook")
    ));
    std::fs::write(&w.cfg, cfg).expect("config");
    let identity = w.arm.identity_env();
    let mut rng = Lcg(20261201);
    let (mut killed, mut writes_in_killed) = (0, 0);
    for round in 0..ROUNDS {
        let prefixes = FEEDS[rng.next(FEEDS.len() as u64) as usize];
        let f = w.dir.write("feed.json", feed(prefixes, 100 + round));
        // Owned rules that left the tag may go at once in the next round.
        age_if_any(&w);
        let writes_before = w.arm.writes().len();
        let mut cmd = w.dir.command();
        cmd.args([
            "--config",
            &w.cfg,
            "sync",
            "--force",
            "--feed-file",
            f.to_str().expect("utf-8"),
        ])
        .envs(identity.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("sync");
        std::thread::sleep(Duration::from_millis(rng.next(400)));
        if child.try_wait().expect("status").is_none() {
            child.kill().expect("SIGKILL");
            killed += 1;
            writes_in_killed += w.arm.writes().len() - writes_before;
        }
        let _ = child.wait();
        assert_eq!(integrity(&w), "ok", "round {round}");
        check_safe(&w, &format!("round {round}"));
        check_outbox(&w, &format!("round {round}"));
    }
    eprintln!(
        "crash test: {ROUNDS} rounds, {killed} killed mid-run, {writes_in_killed} writes sent in killed runs"
    );
    assert!(killed >= ROUNDS / 4, "too few kills landed: {killed}");
    assert!(
        writes_in_killed > 0,
        "no kill landed after a write was sent"
    );
    // Two clean runs: the first converges, the second changes nothing.
    w.arm.state.lock().expect("lock").delay = None;
    age_if_any(&w);
    w.sync(FEEDS[0], 1000, &["--force"]).assert_code(0);
    let again = w.sync(FEEDS[0], 1000, &[]);
    again.assert_code(0);
    for t in TARGETS {
        assert_eq!(w.target(&again.json(), t)["outcome"], "unchanged", "{t}");
    }
    check_safe(&w, "after the clean runs");
    check_converged(&w, FEEDS[0], "after the clean runs");
}

fn api_error(status: u16, code: &str) -> Response {
    Response::json(
        status,
        json!({"error": {"code": code, "message": "injected"}}).to_string(),
    )
}

#[test]
fn under_every_injected_fault_the_promises_hold() {
    let faults: Vec<(&str, Response)> = vec![
        ("429 without Retry-After", api_error(429, "TooManyRequests")),
        (
            "429 with an absurd Retry-After",
            api_error(429, "TooManyRequests").header("Retry-After", "99999999999999999999"),
        ),
        (
            "429 with an HTTP-date Retry-After",
            api_error(429, "TooManyRequests")
                .header("Retry-After", "Tue, 01 Dec 2026 00:00:00 GMT"),
        ),
        ("500", api_error(500, "InternalServerError")),
        ("503", api_error(503, "ServiceUnavailable")),
        ("connection reset", Response::json(200, "{}").cut_after(0)),
        (
            "body cut mid-way",
            Response::json(200, r#"{"properties": {"ipRules": [{"ipMask": "1.1"#).cut_after(30),
        ),
        ("not JSON", Response::json(200, "<html>gateway</html>")),
        (
            "a body missing its fields",
            Response::json(200, r#"{"properties": {}}"#),
        ),
        ("404", api_error(404, "ResourceNotFound")),
        ("403", api_error(403, "AuthorizationFailed")),
    ];
    let calls = [
        ("networkrulesets", "GET"),
        ("networkrulesets", "PUT"),
        ("storageaccounts", "GET"),
        ("storageaccounts", "PATCH"),
    ];
    let mut tried = 0;
    for (name, fault) in &faults {
        for (part, method) in calls {
            let w = world("Standard", "");
            // Every attempt (retries = 2) meets the fault.
            for _ in 0..3 {
                w.arm.fail(part, method, fault.clone());
            }
            let run = w.sync(&[P1, P2, P3], 10, &[]);
            let context = format!("{name} on {method} {part}");
            let report = run.json();
            let outcomes: Vec<&str> = report["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .map(|t| t["outcome"].as_str().expect("outcome"))
                .collect();
            assert_eq!(outcomes.len(), 3, "{context}: every target reported");
            let failed = outcomes.iter().any(|o| *o != "applied");
            assert_eq!(
                run.code != 0,
                failed,
                "{context}: exit {} with {outcomes:?}",
                run.code
            );
            check_safe(&w, &context);
            // With the fault gone, the next run converges.
            w.arm.state.lock().expect("lock").faults.clear();
            w.sync(&[P1, P2, P3], 10, &[]).assert_code(0);
            check_converged(&w, &[P1, P2, P3], &context);
            tried += 1;
        }
    }
    // An answer slower than `[azure] timeout` (2 s here), once: the attempt
    // times out and the retry goes through.
    for (part, method) in [("networkrulesets", "GET"), ("networkrulesets", "PUT")] {
        let w = world("Standard", "");
        w.arm.fail(
            part,
            method,
            api_error(500, "InternalServerError").delayed(Duration::from_millis(2500)),
        );
        w.sync(&[P1, P2, P3], 10, &[]).assert_code(0);
        check_safe(&w, &format!("a timeout on {method} {part}"));
        check_converged(&w, &[P1, P2, P3], &format!("a timeout on {method} {part}"));
        tried += 1;
    }
    // Writes that Azure applied while their answers were lost, and writes
    // answered 200 but not applied.
    for method in ["PUT", "PATCH"] {
        let w = world("Standard", "");
        // Every attempt of every write of this method (retries = 2).
        w.arm
            .lose_answers("", method, 6, api_error(500, "InternalServerError"));
        let run = w.sync(&[P1, P2, P3], 10, &[]);
        assert_ne!(run.code, 0, "lost answers on {method}: {}", run.stdout);
        check_safe(&w, "lost answers");
        w.sync(&[P1, P2, P3], 10, &[]).assert_code(0);
        check_converged(&w, &[P1, P2, P3], &format!("lost answers on {method}"));
        tried += 1;
    }
    let w = world("Standard", "");
    w.arm.state.lock().expect("lock").drop_on_write = Some(P1.to_owned());
    let run = w.sync(&[P1, P2], 10, &["--target", "adt-events"]);
    run.assert_code(5);
    check_safe(&w, "a write answered 200 but not applied");
    tried += 1;
    // The identity endpoint failing or answering garbage: nothing is written.
    for (name, resp) in [
        (
            "token 500",
            Response::json(500, r#"{"error":"server_error"}"#),
        ),
        ("token garbage", Response::json(200, "not a token")),
    ] {
        let w = world("Standard", "");
        for _ in 0..10 {
            w.arm.fail("/msi/token", "*", resp.clone());
        }
        let run = w.sync(&[P1], 10, &[]);
        run.assert_code(5);
        assert!(w.arm.writes().is_empty(), "{name}");
        check_safe(&w, name);
        tried += 1;
    }
    // A resource deleted between runs.
    let w = world("Standard", "");
    w.sync(&[P1], 10, &[]).assert_code(0);
    w.arm.state.lock().expect("lock").rule_sets.clear();
    let run = w.sync(&[P1, P2], 11, &[]);
    run.assert_code(5);
    let report = run.json();
    assert_eq!(w.target(&report, "adt-deadletter")["outcome"], "applied");
    tried += 1;
    eprintln!("fault matrix: {tried} faulted runs, every promise held");
}

/// Copies the database files of `from` (the main file, and a WAL if one is
/// left) over those of `to`, removing any of `to`'s the copy lacks.
fn restore_db(from: &std::path::Path, to: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let src = std::path::PathBuf::from(format!("{}{suffix}", from.display()));
        let dst = std::path::PathBuf::from(format!("{}{suffix}", to.display()));
        if src.exists() {
            std::fs::copy(&src, &dst).expect("restore");
        } else {
            let _ = std::fs::remove_file(&dst);
        }
    }
}

#[test]
fn kill_9_during_pruning_leaves_the_history_whole_or_pruned() {
    const ROUNDS: u64 = 16;
    let w = world("Standard", "");
    w.sync(&[P1], 10, &[]).assert_code(0);
    w.sync(&[P1, P2], 11, &[]).assert_code(0);
    // 20,000 more entries of the first run, referring to its sets, so that
    // pruning takes long enough for kills to land inside it (it empties
    // the table and writes back each target's latest entry).
    execute_sql(
        &w.dir.db(),
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO applies (run_id, target, resource_id, started_at, finished_at, outcome,
                              rules_before_set, rules_after_set)
         SELECT a.run_id, a.target, a.resource_id, a.started_at, a.finished_at, 'applied',
                a.rules_before_set, a.rules_after_set
         FROM n, (SELECT * FROM applies ORDER BY id LIMIT 1) a;
         UPDATE prefix_sets SET apply_refs = apply_refs + 20000 * ((id = (SELECT rules_before_set FROM applies ORDER BY id LIMIT 1))
                                                                  + (id = (SELECT rules_after_set FROM applies ORDER BY id LIMIT 1)));
         UPDATE runs SET started_at = '2020-01-01T00:00:00.000Z';
         UPDATE applies SET started_at = '2020-01-01T00:00:00.000Z';
         PRAGMA wal_checkpoint(TRUNCATE);",
    );
    assert_history_references_hold(&w.dir.db());
    let pristine = w.dir.path("pristine.db");
    restore_db(&w.dir.db(), &pristine);
    let count = |sql: &'static str| {
        with_db(&w.dir.db(), async |pool| {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(pool)
                .await
                .expect(sql)
        })
    };
    let state = || {
        (
            count("SELECT COUNT(*) FROM applies"),
            count("SELECT COUNT(*) FROM runs"),
        )
    };
    let before = state();
    let retention = [("TAGSYNC_DATABASE_RETENTION", "2y")];
    // One run to the end: what a completed prune leaves, and how long a
    // run takes.
    let f = w.dir.write("feed.json", feed(&[P1, P2], 11));
    let args = [
        "sync",
        "--target",
        "adt-events",
        "--feed-file",
        f.to_str().expect("utf-8"),
    ];
    let started = std::time::Instant::now();
    w.run_env(&args, &retention).assert_code(0);
    let span = u64::try_from(started.elapsed().as_millis()).unwrap_or(1000) + 50;
    let pruned = state();
    assert!(pruned.0 < 100, "{pruned:?}");
    assert_history_references_hold(&w.dir.db());

    let identity = w.arm.identity_env();
    let mut rng = Lcg(20261202);
    let (mut whole, mut done) = (0, 0);
    for round in 0..ROUNDS {
        restore_db(&pristine, &w.dir.db());
        let mut cmd = w.dir.command();
        cmd.args(["--config", &w.cfg])
            .args(args)
            .envs(identity.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(retention)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("sync");
        std::thread::sleep(Duration::from_millis(rng.next(span)));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(integrity(&w), "ok", "round {round}");
        let (applies, runs) = state();
        // One transaction: either nothing was pruned (the killed run may
        // or may not have recorded itself) or all of it was.
        if applies == before.0 {
            assert!(
                runs == before.1 || runs == before.1 + 1,
                "round {round}: {runs} runs"
            );
            whole += 1;
        } else {
            // Pruned, and the target's apply recorded or not yet.
            assert_eq!(runs, pruned.1, "round {round}: a part of the prune");
            assert!(
                applies == pruned.0 || applies == TARGETS.len() as i64,
                "round {round}: a part of the prune: {applies} applies"
            );
            done += 1;
        }
        assert_history_references_hold(&w.dir.db());
    }
    eprintln!(
        "kill during pruning: {whole} rounds left the history whole, {done} pruned (runs of {span} ms)"
    );
    assert!(whole > 0 && done > 0, "the kills landed on one side only");
}
