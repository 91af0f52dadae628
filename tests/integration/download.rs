//! The download center, faked on 127.0.0.1: discovery strategies, ETag and
//! 304, retries, slow and broken responses, driven through the real binary.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::fake_http::{FakeServer, Response};
use crate::util::*;

const FILE_DIR: &str = "/download/7/1/D/71D86715-5596-4529-9B13-DA13A5DE5B63";

fn config(dir: &TestDir, server: &FakeServer, extra: &str) -> String {
    let text = format!(
        "[feed]\nlanding_base = \"{base}\"\ndownload_base = \"{base}\"\ntimeout = \"1s\"\nconnect_timeout = \"1s\"\nretries = 1\nretry_backoff = \"10ms\"\n{extra}",
        base = server.base()
    );
    dir.write("tagsync.toml", text)
        .to_str()
        .expect("utf-8")
        .to_owned()
}

fn sync(dir: &TestDir, cfg: &str) -> Run {
    dir.run(&["--config", cfg, "--output", "json", "sync"])
}

fn feed_2025() -> Arc<Vec<u8>> {
    Arc::new(fixture_bytes("ServiceTags_Public_20251106.json.gz"))
}

fn details_page(link: &str) -> Response {
    Response::new(
        200,
        format!("<html><body><a href=\"{link}\" class=\"mscom-link\">click here to download manually</a></body></html>"),
    )
    .header("Content-Type", "text/html")
}

/// The file URL the fake pages link to, on the fake's own host.
fn file_link(req: &crate::fake_http::Request) -> String {
    format!(
        "http://{}{FILE_DIR}/ServiceTags_Public_20251110.json",
        req.header("host").unwrap_or_default()
    )
}

fn date_days_ago(days: i64) -> String {
    let d = time::OffsetDateTime::now_utc().date() - time::Duration::days(days);
    format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
}

#[test]
fn details_page_link_then_etag_makes_the_second_run_download_nothing() {
    let feed = feed_2025();
    let bodies_sent = Arc::new(AtomicUsize::new(0));
    let counter = bodies_sent.clone();
    let server = FakeServer::start(move |req| {
        let link = file_link(req);
        match req.path_only() {
            "/download/details.aspx" => details_page(&link),
            p if p == format!("{FILE_DIR}/ServiceTags_Public_20251110.json") => {
                if req.header("if-none-match") == Some("\"0x8DE1C\"") {
                    Response::new(304, "")
                } else {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Response::json(200, feed.to_vec())
                        .header("ETag", "\"0x8DE1C\"")
                        .header("Last-Modified", "Mon, 10 Nov 2025 08:00:00 GMT")
                }
            }
            _ => Response::new(404, "not found"),
        }
    });
    let dir = TestDir::new();
    let cfg = config(&dir, &server, "");
    let first = sync(&dir, &cfg);
    first.assert_code(0);
    let first = first.json();
    assert_eq!(first["feed"]["found_by"], "details page");
    assert_eq!(first["feed"]["change_number"], 375);
    assert_eq!(first["tags"][0]["ipv4"], 289);
    assert!(
        first["feed"]["location"]
            .as_str()
            .expect("url")
            .ends_with("ServiceTags_Public_20251110.json")
    );

    let second = sync(&dir, &cfg);
    second.assert_code(0);
    let second = second.json();
    assert_eq!(second["feed"]["not_modified"], true);
    assert_eq!(second["outcome"], "unchanged");
    assert_eq!(second["tags"][0]["ipv4"], 289);
    assert_eq!(
        bodies_sent.load(Ordering::SeqCst),
        1,
        "the second run downloaded nothing"
    );
    let conditional = server
        .requests()
        .into_iter()
        .filter(|r| r.path_only().ends_with(".json"))
        .nth(1)
        .expect("second download request");
    assert_eq!(
        conditional.header("if-modified-since"),
        Some("Mon, 10 Nov 2025 08:00:00 GMT")
    );
    assert!(
        conditional
            .header("user-agent")
            .expect("ua")
            .starts_with("tagsync/")
    );

    // A changed selection cannot reuse the 304: it downloads again.
    let third = dir.run_with(
        &["--config", &cfg, "--output", "json", "sync"],
        &[("TAGSYNC_TAGS_REGIONS", "westeurope")],
    );
    third.assert_code(0);
    assert_eq!(
        third.json()["tags"][0]["name"],
        "AzureDigitalTwins.WestEurope"
    );
    assert_eq!(bodies_sent.load(Ordering::SeqCst), 2);
}

#[test]
fn confirmation_page_when_details_page_is_missing() {
    let feed = feed_2025();
    let server = FakeServer::start(move |req| {
        let link = file_link(req);
        match req.path_only() {
            "/download/confirmation.aspx" => details_page(&link),
            p if p.ends_with("ServiceTags_Public_20251110.json") => {
                Response::json(200, feed.to_vec())
            }
            _ => Response::new(404, "not found"),
        }
    });
    let dir = TestDir::new();
    let run = sync(&dir, &config(&dir, &server, ""));
    run.assert_code(0);
    assert_eq!(run.json()["feed"]["found_by"], "confirmation page");
}

#[test]
fn fixed_url_probing_when_both_pages_have_no_link() {
    let feed = feed_2025();
    let published = date_days_ago(2);
    let wanted = format!("{FILE_DIR}/ServiceTags_Public_{published}.json");
    let server = FakeServer::start(move |req| match req.path_only() {
        "/download/details.aspx" | "/download/confirmation.aspx" => {
            Response::new(200, "<html>the page was redesigned</html>")
        }
        p if p == wanted => Response::json(200, feed.to_vec()),
        _ => Response::new(404, "not found"),
    });
    let dir = TestDir::new();
    let run = sync(&dir, &config(&dir, &server, ""));
    run.assert_code(0);
    let found_by = run.json()["feed"]["found_by"]
        .as_str()
        .expect("found_by")
        .to_owned();
    assert_eq!(found_by, format!("fixed URL for {}", date_days_ago(2)));
    // It probed today, yesterday, then found the file.
    let probes = server
        .requests()
        .iter()
        .filter(|r| r.path_only().ends_with(".json"))
        .count();
    assert_eq!(probes, 3);
}

#[test]
fn nothing_found_lists_every_strategy_and_records_a_failed_run() {
    let server = FakeServer::start(|_| Response::new(404, "not found"));
    let dir = TestDir::new();
    let run = sync(&dir, &config(&dir, &server, ""));
    run.assert_code(3);
    assert!(run.stderr.contains("details page"), "{}", run.stderr);
    assert!(run.stderr.contains("confirmation page"), "{}", run.stderr);
    assert!(run.stderr.contains("all 404"), "{}", run.stderr);
    let state = db_state(&dir.db());
    assert_eq!(
        state.runs,
        vec![(1, "failed".to_owned(), Some("source".to_owned()))]
    );
    assert!(state.snapshots.is_empty());
}

#[test]
fn slow_details_page_times_out_and_discovery_moves_on() {
    let feed = feed_2025();
    let server = FakeServer::start(move |req| {
        let link = file_link(req);
        match req.path_only() {
            "/download/details.aspx" => details_page(&link).delayed(Duration::from_secs(3)),
            "/download/confirmation.aspx" => details_page(&link),
            p if p.ends_with(".json") => Response::json(200, feed.to_vec()),
            _ => Response::new(404, ""),
        }
    });
    let dir = TestDir::new();
    let run = sync(&dir, &config(&dir, &server, ""));
    run.assert_code(0);
    assert_eq!(run.json()["feed"]["found_by"], "confirmation page");
    // retries = 1: the slow page was asked twice.
    let asked = server
        .requests()
        .iter()
        .filter(|r| r.path_only() == "/download/details.aspx")
        .count();
    assert_eq!(asked, 2);
}

#[test]
fn server_errors_are_retried_with_retry_after() {
    let feed = feed_2025();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let server = FakeServer::start(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            Response::new(503, "busy").header("Retry-After", "1")
        } else {
            Response::json(200, feed.to_vec())
        }
    });
    let dir = TestDir::new();
    let cfg = config(
        &dir,
        &server,
        &format!(
            "source = \"url\"\nurl = \"{}/pinned.json\"\n",
            server.base()
        ),
    );
    let started = std::time::Instant::now();
    let run = sync(&dir, &cfg);
    run.assert_code(0);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Retry-After (1 s) was honoured rather than the 10 ms backoff.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(run.stderr.contains("HTTP 503"), "{}", run.stderr);
}

#[test]
fn broken_responses_are_refused_and_recorded() {
    let feed = feed_2025();
    let server = FakeServer::start(move |req| match req.path_only() {
        "/html.json" => Response::new(200, "<!DOCTYPE html><html><body>Sign in</body></html>")
            .header("Content-Type", "text/html"),
        "/cut.json" => Response::json(200, feed.to_vec()).cut_after(100_000),
        "/big.json" => Response::json(200, feed.to_vec()),
        "/error.json" => Response::new(500, "oops"),
        "/forbidden.json" => Response::new(403, "no"),
        _ => Response::new(404, ""),
    });
    let cases: [(&str, &str, &str); 5] = [
        ("/html.json", "", "HTML page"),
        ("/cut.json", "", "after 2 attempts"),
        (
            "/big.json",
            "max_bytes = \"1MiB\"\n",
            "larger than the 1048576 byte cap",
        ),
        ("/error.json", "", "HTTP 500"),
        ("/forbidden.json", "", "HTTP 403"),
    ];
    for (path, extra, expect) in cases {
        let dir = TestDir::new();
        let cfg = config(
            &dir,
            &server,
            &format!("source = \"url\"\nurl = \"{}\"\n{extra}", server.url(path)),
        );
        let run = sync(&dir, &cfg);
        run.assert_code(3);
        assert!(
            run.stderr.contains(expect),
            "{path}: expected `{expect}` in\n{}",
            run.stderr
        );
        let state = db_state(&dir.db());
        assert_eq!(state.runs.len(), 1, "{path}");
        assert_eq!(state.runs[0].1, "failed");
        assert!(
            state.snapshots.is_empty() && state.prefix_sets.is_empty(),
            "{path}"
        );
    }
}

#[test]
fn plain_http_to_a_remote_host_is_a_config_error() {
    let dir = TestDir::new();
    let run = dir.run_with(
        &["sync"],
        &[
            ("TAGSYNC_FEED_SOURCE", "url"),
            ("TAGSYNC_FEED_URL", "http://download.example.com/f.json"),
        ],
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains("only https is allowed"),
        "{}",
        run.stderr
    );
    assert!(!dir.db().exists());
}

#[test]
fn a_pinned_urls_sas_token_never_reaches_output_or_the_database() {
    let feed = feed_2025();
    let server = FakeServer::start(move |req| match req.path_only() {
        "/tags/ServiceTags.json" => Response::json(200, feed.to_vec()),
        _ => Response::new(404, ""),
    });
    let dir = TestDir::new();
    let secret = "sig=Zm9vYmFyU0VDUkVUc2lnbmF0dXJl";
    for (path, code) in [("/tags/ServiceTags.json", 0), ("/tags/missing.json", 3)] {
        let url = format!(
            "{}{path}?sv=2024-11-04&se=2027-01-01&sr=b&sp=r&{secret}",
            server.base()
        );
        let run = dir.run(&["--output", "json", "-vv", "sync", "--feed-url", &url]);
        run.assert_code(code);
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "SAS token leaked:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
    let db = std::fs::read(dir.db()).expect("db");
    let wal = std::fs::read(dir.path("tagsync.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "SAS token in the database"
        );
    }
    // The request itself carried the token.
    assert!(server.requests()[0].path.contains(secret));
}
