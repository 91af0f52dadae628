//! Safe under faults: each promise of the write path, attacked. Lost
//! answers, incomplete reads, absurd headers, operations that outlive the
//! deadline, damaged feeds, lock aliases, leaking URLs, SIGTERM, and a
//! namespace whose public access is off.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_http::{FakeServer, Response};
use crate::util::*;
use crate::world::*;

/// Waits (10 s at most) until the fake Resource Manager has seen `n`
/// requests: the run is past its feed stage and working on targets.
fn wait_for_arm_requests(w: &World, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.arm.state.lock().expect("lock").requests.len() < n {
        assert!(
            Instant::now() < deadline,
            "no Resource Manager request came"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn owned(w: &World, target: &str) -> Vec<String> {
    let sql = format!("SELECT prefix FROM ownership WHERE target = '{target}' ORDER BY prefix");
    with_db(&w.dir.db(), async |pool| {
        sqlx::query_scalar::<_, String>(&sql)
            .fetch_all(pool)
            .await
            .expect("ownership")
    })
}

#[test]
fn a_write_whose_answer_is_lost_is_owned_by_the_next_run() {
    let w = world("Standard", "");
    // Azure applies every attempt of the PUT, and every answer is lost.
    w.arm.lose_answers(
        "networkrulesets",
        "PUT",
        3,
        Response::json(
            503,
            r#"{"error":{"code":"ServiceUnavailable","message":"try later"}}"#,
        ),
    );
    let run = w.sync(&[P1], 10, &["--target", "adt-events"]);
    run.assert_code(5);
    assert!(masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask").contains(&P1.to_owned()));
    // The next run finds the rule live and owns it: it was written by tagsync.
    let again = w.sync(&[P1], 10, &["--target", "adt-events"]);
    again.assert_code(0);
    let eh = w.target(&again.json(), "adt-events").clone();
    assert_eq!(eh["outcome"], "unchanged", "{eh}");
    assert_eq!(eh["plan"]["keep"], json!([P1]));
    assert_eq!(eh["plan"]["foreign"], json!(["1.1.1.1/32"]));
    assert_eq!(owned(&w, "adt-events"), vec![P1.to_owned()]);
    // And so it is removed once it leaves the tag.
    w.age_history();
    let after = w.sync(&[P2], 11, &["--target", "adt-events", "--force"]);
    after.assert_code(0);
    assert_eq!(
        masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask"),
        vec!["1.1.1.1", "20.39.2.134"]
    );
}

#[test]
fn an_incomplete_read_is_never_written_back() {
    for field in [
        "ipRules",
        "virtualNetworkRules",
        "defaultAction",
        "publicNetworkAccess",
    ] {
        let w = world("Standard", "");
        let mut rules = w.arm.rule_set(EH, "adt-eh");
        rules.as_object_mut().expect("object").remove(field);
        w.arm.set_rule_set(EH, "adt-eh", rules);
        let run = w.sync(&[P1], 10, &["--target", "adt-events"]);
        run.assert_code(5);
        let eh = w.target(&run.json(), "adt-events").clone();
        assert_eq!(eh["outcome"], "failed", "{field}");
        let error = eh["error"].as_str().expect("error");
        assert!(error.contains(&format!("`{field}`")), "{field}: {error}");
        assert!(w.arm.writes().is_empty(), "{field}: nothing written");
    }
    for field in ["ipRules", "virtualNetworkRules", "defaultAction", "bypass"] {
        let w = world("Standard", "");
        let mut account = w.arm.storage_acls("adtdeadletter");
        account.as_object_mut().expect("object").remove(field);
        w.arm.add_storage("adtdeadletter", "northeurope", account);
        let run = w.sync(&[P1], 10, &["--target", "adt-deadletter"]);
        run.assert_code(5);
        let sa = w.target(&run.json(), "adt-deadletter").clone();
        assert!(
            sa["error"]
                .as_str()
                .expect("error")
                .contains(&format!("`{field}`")),
            "{field}: {sa}"
        );
        assert!(w.arm.writes().is_empty(), "{field}: nothing written");
    }
}

#[test]
fn an_absurd_retry_after_is_survived_and_every_target_reported() {
    let w = world("Standard", "");
    for value in ["18446744073709551615", "-3", "Mon, 99 Foo 2026"] {
        w.arm.fail(
            "microsoft.servicebus",
            "GET",
            Response::json(
                429,
                r#"{"error":{"code":"TooManyRequests","message":"slow down"}}"#,
            )
            .header("Retry-After", value),
        );
    }
    let run = w.sync(&[P1], 10, &[]);
    let report = run.json();
    assert_eq!(
        report["targets"].as_array().expect("targets").len(),
        3,
        "{report}"
    );
    // Retried with backoff (retries = 2 in this world): the third 429 is the last straw.
    assert_eq!(
        w.target(&report, "adt-queue")["outcome"],
        "failed",
        "{report}"
    );
    run.assert_code(5);
    assert_eq!(w.target(&report, "adt-events")["outcome"], "applied");
}

#[test]
fn a_long_running_write_past_the_deadline_is_unknown_then_settled() {
    let w = world("Standard", "");
    {
        let mut st = w.arm.state.lock().expect("lock");
        st.async_writes = true;
        st.operation_retry_after = Some("30".into());
    }
    let cfg = std::fs::read_to_string(&w.cfg).expect("cfg").replace(
        "retry_backoff = \"10ms\"",
        "retry_backoff = \"10ms\"\ndeadline = \"2s\"",
    );
    std::fs::write(&w.cfg, cfg).expect("cfg");
    let started = Instant::now();
    let run = w.sync(&[P1], 10, &["--target", "adt-events"]);
    // The 30 s poll interval is not slept through a 2 s deadline.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    run.assert_code(5);
    let eh = w.target(&run.json(), "adt-events").clone();
    assert!(
        eh["error"].as_str().expect("error").contains("deadline"),
        "{eh}"
    );
    // The write was accepted and did complete: the next run owns its rules.
    {
        let mut st = w.arm.state.lock().expect("lock");
        st.async_writes = false;
    }
    w.sync(&[P1], 10, &["--target", "adt-events"])
        .assert_code(0);
    assert_eq!(owned(&w, "adt-events"), vec![P1.to_owned()]);
}

fn feed_with(values: Value) -> Vec<u8> {
    json!({"changeNumber": 10, "cloud": "Public", "values": values})
        .to_string()
        .into_bytes()
}

fn adt(prefixes: &[&str]) -> Value {
    json!({"name": "AzureDigitalTwins", "id": "AzureDigitalTwins", "properties": {"changeNumber": 10,
           "region": "", "platform": "Azure", "systemService": "AzureDigitalTwins",
           "addressPrefixes": prefixes}})
}

#[test]
fn broad_prefixes_and_duplicate_tags_refuse_the_feed_and_write_nothing() {
    let w = world("Standard", "");
    w.sync(&[P1], 9, &[]).assert_code(0);
    let writes = w.arm.writes().len();
    let before = db_state(&w.dir.db());
    let cases: Vec<(Value, &str)> = vec![
        (json!([adt(&[P1, "32.0.0.0/3"])]), "broader than /12"),
        (json!([adt(&[P1, "20.0.0.0/8"])]), "broader than /12"),
        (json!([adt(&[P1, "2400::/6"])]), "broader than /32"),
        (json!([adt(&["0.0.0.0/0"])]), "the whole IPv4 address space"),
        (json!([adt(&["::/0"])]), "the whole IPv6 address space"),
        (json!([adt(&["0.0.0.0/0"]), adt(&[P1])]), "twice"),
    ];
    for (values, says) in cases {
        let f = w.dir.write("bad.json", feed_with(values.clone()));
        let run = w.run(&["sync", "--feed-file", f.to_str().expect("utf-8")]);
        run.assert_code(3);
        assert!(run.stderr.contains(says), "{values}: {}", run.stderr);
    }
    assert_eq!(w.arm.writes().len(), writes, "nothing written");
    let after = db_state(&w.dir.db());
    assert_eq!(after.good(), before.good(), "the good history is untouched");
    // The bound is configurable, for a tag that really is that broad.
    let cfg = std::fs::read_to_string(&w.cfg).expect("cfg");
    std::fs::write(&w.cfg, format!("[feed]\nmin_prefix_len_v4 = 8\n{cfg}")).expect("cfg");
    let f = w
        .dir
        .write("wide.json", feed_with(json!([adt(&[P1, "20.0.0.0/8"])])));
    let run = w.run(&[
        "sync",
        "--dry-run",
        "--feed-file",
        f.to_str().expect("utf-8"),
    ]);
    run.assert_code(0);
}

#[test]
fn the_run_lock_holds_through_symlinks_and_hard_links() {
    let dir = TestDir::new();
    let body = fixture_bytes("ServiceTags_Public_20210106.json.gz");
    // A slow feed keeps the first run (and its lock) busy.
    let server = FakeServer::start(move |_| {
        Response::json(200, body.clone()).delayed(Duration::from_millis(1500))
    });
    dir.run(&[
        "sync",
        "--feed-file",
        dir.fixture("ServiceTags_Public_20210106.json.gz")
            .to_str()
            .expect("utf-8"),
    ])
    .assert_code(0);
    std::os::unix::fs::symlink(dir.db(), dir.path("via-symlink.db")).expect("symlink");
    std::fs::hard_link(dir.db(), dir.path("via-hardlink.db")).expect("hard link");
    // The second run gives up long before the first is done.
    let impatient = dir.write("impatient.toml", "[database]\nlock_timeout = \"100ms\"\n");
    let file = dir.path("ServiceTags_Public_20210106.json");
    for alias in ["via-symlink.db", "via-hardlink.db"] {
        let mut first = dir.command();
        first
            .args(["sync", "--feed-url", &server.url("/feed.json")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let first = first.spawn().expect("first sync");
        std::thread::sleep(Duration::from_millis(500));
        let second = dir.run(&[
            "--config",
            impatient.to_str().expect("utf-8"),
            "--db",
            alias,
            "sync",
            "--feed-file",
            file.to_str().expect("utf-8"),
        ]);
        let first = finish(first.wait_with_output().expect("first sync"));
        assert_eq!(first.code, 0, "{}", first.stderr);
        second.assert_code(4);
        assert!(
            second.stderr.contains("holds the lock"),
            "{alias}: {}",
            second.stderr
        );
    }
    let integrity = with_db(&dir.db(), async |pool| {
        sqlx::query_scalar::<_, String>("PRAGMA integrity_check")
            .fetch_one(pool)
            .await
            .expect("integrity")
    });
    assert_eq!(integrity, "ok");
}

#[test]
fn urls_and_upstream_text_never_leak_a_secret() {
    let dir = TestDir::new();
    let secret = "sig=TopSecret123";
    // config check, in both output modes.
    let cfg = dir.write(
        "t.toml",
        format!(
            "[feed]\nsource = \"url\"\nurl = \"https://mirror.example.com/f.json?sv=1&{secret}\"\n"
        ),
    );
    for output in ["human", "json"] {
        let run = dir.run(&[
            "--config",
            cfg.to_str().expect("utf-8"),
            "--output",
            output,
            "config",
            "check",
        ]);
        run.assert_code(0);
        assert!(
            !run.stdout.contains("TopSecret"),
            "{output}: {}",
            run.stdout
        );
        assert!(run.stdout.contains("mirror.example.com"), "{}", run.stdout);
    }
    // An error page that echoes the URL it was asked for.
    let server = FakeServer::start(|req| {
        Response::new(
            200,
            format!(
                "<html><body>Not here: http://127.0.0.1{}</body></html>",
                req.path
            ),
        )
    });
    let url = server.url(&format!("/f.json?sv=1&{secret}"));
    let run = dir.run(&["sync", "--feed-url", &url]);
    run.assert_code(3);
    assert!(run.stderr.contains("HTML"), "{}", run.stderr);
    assert!(!run.stderr.contains("TopSecret"), "{}", run.stderr);
    let stored = with_db(&dir.db(), async |pool| {
        sqlx::query_scalar::<_, Option<String>>("SELECT error FROM runs")
            .fetch_all(pool)
            .await
            .expect("runs")
    });
    assert!(!format!("{stored:?}").contains("TopSecret"), "{stored:?}");
    // A redirect off to an address that is neither https nor loopback.
    let redirect = FakeServer::start(|_| {
        Response::new(302, "").header("Location", "http://0.0.0.0:9/feed.json")
    });
    let once = dir.write("once.toml", "[feed]\nretries = 0\n");
    let run = dir.run(&[
        "--config",
        once.to_str().expect("utf-8"),
        "sync",
        "--feed-url",
        &redirect.url("/feed.json"),
    ]);
    run.assert_code(3);
    assert!(
        run.stderr.contains("refusing the redirect"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_fifo_as_the_feed_file_is_refused_not_waited_on() {
    let dir = TestDir::new();
    let fifo = dir.path("feed.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let run = dir.run(&["sync", "--feed-file", fifo.to_str().expect("utf-8")]);
    run.assert_code(3);
    assert!(run.stderr.contains("not a regular file"), "{}", run.stderr);
}

#[test]
fn sigterm_during_sync_sends_no_new_writes_and_records_what_was_done() {
    let w = world("Standard", "");
    // One target at a time, so the signal lands while some are not written.
    let cfg = std::fs::read_to_string(&w.cfg)
        .expect("cfg")
        .replace("[azure]\n", "[azure]\nconcurrency = 1\n");
    std::fs::write(&w.cfg, cfg).expect("cfg");
    w.arm.state.lock().expect("lock").delay = Some(Duration::from_millis(150));
    let child = w.spawn_sync(&[P1], 10, &[]);
    // One target takes about 5 answers of 150 ms: stop during the first.
    wait_for_arm_requests(&w, 2);
    World::terminate(&child);
    let run = finish(child.wait_with_output().expect("exits"));
    run.assert_code(7);
    let report = run.json();
    let outcomes: Vec<String> = report["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t["outcome"].as_str().expect("outcome").to_owned())
        .collect();
    assert_eq!(outcomes.len(), 3, "every target is reported: {report}");
    let stopped = report["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| {
            t["error"]
                .as_str()
                .is_some_and(|e| e.contains("stopped by SIGTERM"))
        })
        .count();
    assert!(stopped >= 1, "{report}");
    assert!(
        w.arm.writes().len() < 3,
        "no new writes after SIGTERM: {:?}",
        w.arm.writes()
    );
    // What was written is owned; the next run finishes the job.
    w.arm.state.lock().expect("lock").delay = None;
    w.assert_settles(&[P1], 10);
}

#[test]
fn an_empty_rule_set_is_allowed_only_where_public_access_is_disabled() {
    for (access, code, outcome) in [("Enabled", 6, "refused"), ("Disabled", 0, "applied")] {
        let w = world("Standard", "");
        w.arm.set_rule_set(
            EH,
            "adt-eh",
            json!({"publicNetworkAccess": access, "defaultAction": "Deny",
                   "virtualNetworkRules": [], "ipRules": [], "trustedServiceAccessEnabled": false}),
        );
        w.sync(&[P1], 10, &["--target", "adt-events"])
            .assert_code(0);
        w.age_history();
        // The tag now gives this IPv4-only namespace nothing it can hold.
        let run = w.sync(
            &["2603:1000:4::/64"],
            11,
            &["--target", "adt-events", "--force"],
        );
        run.assert_code(code);
        let eh = w.target(&run.json(), "adt-events").clone();
        assert_eq!(eh["outcome"], outcome, "{access}: {eh}");
        let rules = w.arm.rule_set(EH, "adt-eh");
        assert_eq!(rules["publicNetworkAccess"], access, "never changed");
        if access == "Disabled" {
            assert_eq!(rules["ipRules"], json!([]));
            assert!(
                eh["warnings"]
                    .to_string()
                    .contains("publicNetworkAccess is Disabled"),
                "{eh}"
            );
        } else {
            assert_eq!(eh["guard"], "empty-rule-set");
            assert_eq!(masks(&rules["ipRules"], "ipMask"), vec![P1]);
        }
    }
}

#[test]
fn a_second_sigterm_exits_at_once_and_the_next_run_settles_everything() {
    let w = world("Standard", "");
    w.arm.state.lock().expect("lock").delay = Some(Duration::from_millis(300));
    let child = w.spawn_sync(&[P1], 10, &[]);
    // The targets' work has begun (the feed stage is over).
    wait_for_arm_requests(&w, 1);
    for _ in 0..2 {
        World::terminate(&child);
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = finish(child.wait_with_output().expect("exits"));
    run.assert_code(7);
    assert!(run.stderr.contains("exiting at once"), "{}", run.stderr);
    assert!(
        run.stdout.is_empty(),
        "no report: it did not wait for the run"
    );
    w.arm.state.lock().expect("lock").delay = None;
    w.assert_settles(&[P1], 10);
}

#[test]
fn every_json_log_line_parses_with_unique_keys() {
    let w = world("Standard", "");
    let run = w.run(&[
        "-vv",
        "--log-format",
        "json",
        "sync",
        "--feed-file",
        w.dir
            .write("feed.json", feed(&[P1], 10))
            .to_str()
            .expect("utf-8"),
    ]);
    run.assert_code(0);
    let mut with_target = 0;
    for line in run.stderr.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let object = value.as_object().expect("an object per line");
        // serde_json keeps the last of duplicate keys: count them in the text.
        for key in object.keys() {
            let n = line.matches(&format!("\"{key}\":")).count();
            assert!(n <= 1, "key `{key}` appears {n} times: {line}");
        }
        if object.get("target").and_then(Value::as_str) == Some("adt-events") {
            with_target += 1;
        }
    }
    assert!(with_target > 0, "the target's name survives in `target`");
}

#[test]
fn sigterm_during_the_feed_download_stops_at_once() {
    let dir = TestDir::new();
    let body = fixture_bytes("ServiceTags_Public_20210106.json.gz");
    let server = FakeServer::start(move |_| {
        Response::json(200, body.clone()).delayed(Duration::from_secs(8))
    });
    let mut cmd = dir.command();
    cmd.args(["sync", "--feed-url", &server.url("/feed.json")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("sync");
    std::thread::sleep(Duration::from_millis(500));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let run = finish(child.wait_with_output().expect("exits"));
    run.assert_code(7);
    assert!(
        run.stderr.contains("while the feed was being fetched"),
        "{}",
        run.stderr
    );
    // It did not wait for the download: nothing was recorded.
    let recorded = db_state(&dir.db());
    assert!(
        recorded.runs.iter().all(|r| r.1 == "failed") && recorded.snapshots.is_empty(),
        "{recorded:?}"
    );
}
