//! Operations: the daemon (schedule, endpoints, retries, SIGTERM), the
//! Pushgateway push, and the metric documentation.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::fake_http::{FakeServer, Response};
use crate::util::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Sends `request` to 127.0.0.1 and reads the whole answer, or None while
/// nothing listens.
fn exchange(port: u16, request: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// GET on 127.0.0.1; (status, body), or None while nothing listens.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let text = exchange(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
    )?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Polls until `check` holds on the metrics text (10 s at most).
fn wait_for_metrics(port: u16, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((200, body)) = get(port, "/metrics")
            && check(&body)
        {
            return body;
        }
        assert!(Instant::now() < deadline, "metrics never matched");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(child: Child) -> Run {
    let pid = child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    finish(child.wait_with_output().expect("daemon exits"))
}

fn daemon(dir: &TestDir, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = dir.command();
    cmd.args([
        "daemon",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--schedule",
        "0 6 1 1 *",
        "--jitter",
        "0s",
    ])
    .args(extra)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn daemon")
}

#[test]
fn the_daemon_runs_at_start_serves_its_endpoints_and_stops_on_sigterm() {
    let dir = TestDir::new();
    let feed = dir.fixture("ServiceTags_Public_20210106.json.gz");
    let port = free_port();
    let child = daemon(
        &dir,
        port,
        &["--run-at-start"],
        &[
            ("TAGSYNC_FEED_SOURCE", "file"),
            ("TAGSYNC_FEED_FILE", feed.to_str().expect("utf-8")),
        ],
    );
    let body = wait_for_metrics(port, |m| {
        m.contains("tagsync_runs_total{outcome=\"changed\"} 1")
    });
    assert!(body.contains("tagsync_feed_change_number 128"), "{body}");
    assert!(
        body.contains("tagsync_tag_prefixes{family=\"ipv4\",tag=\"AzureDigitalTwins\"} 216"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE tagsync_run_duration_seconds histogram"),
        "{body}"
    );
    // The feed was first seen a moment ago: its age is small, and present.
    let age: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("tagsync_feed_age_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .expect("feed age in the scrape");
    assert!((0.0..600.0).contains(&age), "{age}");
    assert_eq!(get(port, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(get(port, "/readyz").map(|r| r.0), Some(200));
    assert_eq!(get(port, "/nope").map(|r| r.0), Some(404));
    let run = stop(child);
    run.assert_code(0);
    assert!(run.stderr.contains("daemon stopped"), "{}", run.stderr);
    let state = db_state(&dir.db());
    assert_eq!(
        state.runs.len(),
        1,
        "exactly one run: the next slot is months away"
    );
}

#[test]
fn a_failed_run_is_retried_with_backoff_and_the_daemon_lives_on() {
    let dir = TestDir::new();
    let port = free_port();
    let child = daemon(
        &dir,
        port,
        &[
            "--run-at-start",
            "--retry-backoff",
            "200ms",
            "--retries",
            "2",
        ],
        &[
            ("TAGSYNC_FEED_SOURCE", "file"),
            ("TAGSYNC_FEED_FILE", "missing.json"),
        ],
    );
    wait_for_metrics(port, |m| {
        m.contains("tagsync_runs_total{outcome=\"failed\"} 3")
    });
    assert_eq!(get(port, "/healthz").map(|r| r.0), Some(200));
    let run = stop(child);
    run.assert_code(0);
    assert!(run.stderr.contains("retrying"), "{}", run.stderr);
    let state = db_state(&dir.db());
    assert_eq!(state.runs.iter().filter(|r| r.1 == "failed").count(), 3);
}

#[test]
fn bad_schedules_and_time_zones_are_usage_errors() {
    let dir = TestDir::new();
    let run = dir.run(&["daemon", "--schedule", "0 0 6 * * 1"]);
    run.assert_code(2);
    assert!(run.stderr.contains("6 fields"), "{}", run.stderr);
    let run = dir.run(&["daemon", "--time-zone", "Mars/Olympus"]);
    run.assert_code(2);
    assert!(run.stderr.contains("IANA"), "{}", run.stderr);
    // Absurd durations and counts are refused at start, not overflowed later.
    for args in [
        ["--jitter", "100000000y"],
        ["--retry-backoff", "1000y"],
        ["--retries", "4294967295"],
        ["--ready-factor", "0"],
    ] {
        let mut all = vec!["daemon"];
        all.extend(args);
        let run = dir.run(&all);
        run.assert_code(2);
        assert!(run.stderr.contains(args[0]), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn sync_pushes_its_metrics_to_a_pushgateway_on_success_and_failure() {
    let gateway = FakeServer::start(|_| Response::new(200, ""));
    let dir = TestDir::new();
    let feed = dir.fixture("ServiceTags_Public_20210106.json.gz");
    let url = gateway.base();
    dir.run(&[
        "sync",
        "--feed-file",
        feed.to_str().expect("utf-8"),
        "--pushgateway",
        &url,
    ])
    .assert_code(0);
    dir.run(&[
        "sync",
        "--feed-file",
        "missing.json",
        "--pushgateway",
        &url,
        "--push-job",
        "adt",
    ])
    .assert_code(3);
    let pushes = gateway.requests();
    assert_eq!(pushes.len(), 2);
    assert_eq!(pushes[0].method, "PUT");
    assert_eq!(pushes[0].path, "/metrics/job/tagsync");
    let first = String::from_utf8_lossy(&pushes[0].body);
    assert!(
        first.contains("tagsync_runs_total{outcome=\"changed\"} 1"),
        "{first}"
    );
    assert!(first.contains("tagsync_feed_change_number 128"), "{first}");
    assert_eq!(pushes[1].path, "/metrics/job/adt");
    let second = String::from_utf8_lossy(&pushes[1].body);
    assert!(
        second.contains("tagsync_runs_total{outcome=\"failed\"} 1"),
        "{second}"
    );
    assert!(
        pushes[0]
            .header("content-type")
            .expect("type")
            .starts_with("text/plain; version=0.0.4")
    );
}

#[test]
fn readme_documents_every_metric() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let catalogue = tagsync::metrics::metrics().catalogue();
    assert!(catalogue.len() >= 20);
    for (name, _) in catalogue {
        assert!(
            readme.contains(&format!("`{name}`")),
            "README lacks metric {name}"
        );
    }
}

#[test]
fn a_guard_refusal_is_not_retried_by_the_daemon() {
    // A Basic namespace is refused (tier) on every run until someone
    // upgrades it: retrying would only record the feed again and again.
    let w = crate::world::world("Basic", "");
    let feed = w
        .dir
        .write("feed.json", crate::world::feed(&[crate::world::P1], 10));
    let port = free_port();
    let identity = w.arm.identity_env();
    let mut env: Vec<(&str, &str)> = identity
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend([
        ("TAGSYNC_CONFIG", w.cfg.as_str()),
        ("TAGSYNC_FEED_SOURCE", "file"),
        ("TAGSYNC_FEED_FILE", feed.to_str().expect("utf-8")),
    ]);
    let child = daemon(
        &w.dir,
        port,
        &[
            "--run-at-start",
            "--retry-backoff",
            "50ms",
            "--retries",
            "3",
        ],
        &env,
    );
    // The run is counted as one whose targets were refused.
    wait_for_metrics(port, |m| {
        m.contains("tagsync_runs_total{outcome=\"targets-refused\"} 1")
    });
    // Retries would start 50 ms after the run and be over within 350 ms.
    std::thread::sleep(Duration::from_millis(1000));
    let run = stop(child);
    run.assert_code(0);
    assert!(run.stderr.contains("not retrying"), "{}", run.stderr);
    assert_eq!(
        db_state(&w.dir.db()).runs.len(),
        1,
        "a refusal is not retried: {}",
        run.stderr
    );
}

#[test]
fn a_fresh_process_exports_what_the_history_knows() {
    let w = crate::world::world("Standard", "");
    w.sync(&[crate::world::P1], 10, &[]).assert_code(0);
    // A new daemon that has not run yet (its next slot is months away).
    let port = free_port();
    let identity = w.arm.identity_env();
    let mut env: Vec<(&str, &str)> = identity
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.push(("TAGSYNC_CONFIG", w.cfg.as_str()));
    let child = daemon(&w.dir, port, &[], &env);
    let body = wait_for_metrics(port, |m| m.contains("tagsync_feed_change_number"));
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} in\n{body}"))
    };
    assert!(
        value("tagsync_last_success_timestamp_seconds ") > 1.0e9,
        "{body}"
    );
    assert!(
        value("tagsync_last_run_timestamp_seconds ") > 1.0e9,
        "{body}"
    );
    assert_eq!(value("tagsync_feed_change_number "), 10.0);
    assert!(value("tagsync_feed_age_seconds ") < 600.0, "{body}");
    assert_eq!(
        value("tagsync_tag_prefixes{family=\"ipv4\",tag=\"AzureDigitalTwins\"} "),
        1.0
    );
    assert_eq!(
        value("tagsync_target_rules{ownership=\"owned\",target=\"adt-events\"} "),
        1.0
    );
    assert_eq!(
        value("tagsync_target_rules{ownership=\"foreign\",target=\"adt-events\"} "),
        1.0
    );
    assert!(
        value(
            "tagsync_target_last_apply_timestamp_seconds{outcome=\"applied\",target=\"adt-events\"} "
        ) > 1.0e9
    );
    // Counters start at 0 for every known label set.
    assert_eq!(value("tagsync_runs_total{outcome=\"failed\"} "), 0.0);
    assert_eq!(
        value("tagsync_runs_total{outcome=\"targets-failed\"} "),
        0.0
    );
    assert_eq!(
        value("tagsync_target_applies_total{outcome=\"failed\",target=\"adt-queue\"} "),
        0.0
    );
    stop(child).assert_code(0);
}

/// Waits until something listens on `port` and answers `/healthz`.
fn wait_until_serving(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(port, "/healthz").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "the daemon never served");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True once the server has closed `conn` (EOF or reset) within `within`.
fn closed_by_server(conn: &mut TcpStream, within: Duration) -> bool {
    conn.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 512];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

#[test]
fn slow_and_idle_clients_cannot_hold_the_status_port() {
    let dir = TestDir::new();
    let port = free_port();
    let child = daemon(&dir, port, &[], &[]);
    wait_until_serving(port);
    // More idle connections than the server serves at once, and one
    // slowloris client trickling header lines.
    let mut idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let trickle = std::thread::spawn(move || {
        let _ = slow.write_all(b"GET /metrics HTTP/1.1\r\n");
        for i in 0..60 {
            std::thread::sleep(Duration::from_millis(250));
            if write!(slow, "X-Slow-{i}: 1\r\n").is_err() {
                return true;
            }
        }
        closed_by_server(&mut slow, Duration::from_millis(100))
    });
    // A probe still gets its answer: held connections are cut off by the
    // header deadline and the waiting ones are served in turn.
    let probe_deadline = Instant::now() + Duration::from_secs(40);
    let answered = loop {
        if let Some((code, _)) = get(port, "/healthz") {
            break code;
        }
        assert!(
            Instant::now() < probe_deadline,
            "the probe never got an answer"
        );
    };
    assert_eq!(answered, 200);
    for conn in idle.iter_mut().take(5) {
        assert!(
            closed_by_server(conn, Duration::from_secs(30)),
            "an idle connection stayed open"
        );
    }
    assert!(
        trickle.join().expect("trickle thread"),
        "a slowloris connection sending a header line every 250 ms was kept open for 15 s"
    );
    // HEAD answers like GET without a body; other methods are refused.
    let text = exchange(port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("HEAD");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\n"), "HEAD sent a body: {text}");
    let text = exchange(
        port,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .expect("POST");
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("allow: get, head"),
        "{text}"
    );
    let run = stop(child);
    run.assert_code(0);
}

/// CPU time (user + system, in clock ticks) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the parenthesised command name: state is field 3,
    // utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').expect("comm").1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[test]
fn running_out_of_file_descriptors_backs_off_instead_of_spinning() {
    let dir = TestDir::new();
    let port = free_port();
    // The daemon, limited to 48 descriptors: fewer than the connection
    // limit, so accept() fails with EMFILE while the test holds connections.
    let inner = dir.command();
    let mut cmd = std::process::Command::new("sh");
    cmd.current_dir(dir.dir.path())
        .arg("-c")
        .arg("ulimit -n 48 && exec \"$0\" \"$@\"")
        .arg(inner.get_program())
        .args([
            "daemon",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--schedule",
            "0 6 1 1 *",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let child = cmd.spawn().expect("spawn daemon");
    wait_until_serving(port);
    let held: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(child.id()) - before;
    // A spinning accept loop burns a whole core: ~300 ticks in 3 s.
    assert!(
        used < 60,
        "{used} ticks of CPU in 3 s while out of descriptors"
    );
    drop(held);
    wait_until_serving(port);
    let run = stop(child);
    run.assert_code(0);
    let warnings = run
        .stderr
        .lines()
        .filter(|l| l.contains("cannot accept a connection"))
        .count();
    assert!(
        (1..200).contains(&warnings),
        "{warnings} accept warnings:\n{}",
        run.stderr
    );
}
