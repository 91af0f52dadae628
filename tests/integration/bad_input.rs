//! Bad input: each case gives its error and exit code, and the good history
//! is exactly what it was (a failed run row is added where a run started).

use crate::util::*;

const FEED_EXIT: i32 = 3;

/// A database with one good run of the 2025 feed, and the feed's path.
fn seeded() -> (TestDir, std::path::PathBuf) {
    let dir = TestDir::new();
    let feed = dir.fixture("ServiceTags_Public_20251106.json.gz");
    dir.run(&["sync", "--feed-file", feed.to_str().expect("utf-8")])
        .assert_code(0);
    (dir, feed)
}

/// Runs `sync` on a bad feed and checks the error and the database.
#[track_caller]
fn refused(body: &[u8], env: &[(&str, &str)], expect: &str) {
    let (dir, _) = seeded();
    let before = db_state(&dir.db());
    let bad = dir.write("bad.json", body);
    let run = dir.run_with(&["sync", "--feed-file", bad.to_str().expect("utf-8")], env);
    run.assert_code(FEED_EXIT);
    assert!(
        run.stderr.contains(expect),
        "expected `{expect}` in:\n{}",
        run.stderr
    );
    let after = db_state(&dir.db());
    assert_eq!(after.good(), before.good(), "good history untouched");
    assert_eq!(after.runs.len(), before.runs.len() + 1);
    assert_eq!(after.runs.last().expect("run").1, "failed");
}

fn small_feed(cloud: &str, change: u64, prefixes: &[&str]) -> Vec<u8> {
    serde_json::json!({
        "changeNumber": change, "cloud": cloud,
        "values": [{"name": "AzureDigitalTwins", "id": "AzureDigitalTwins", "properties": {
            "changeNumber": 99, "region": "", "regionId": 0, "platform": "Azure",
            "systemService": "AzureDigitalTwins", "addressPrefixes": prefixes, "networkFeatures": null}}]
    })
    .to_string()
    .into_bytes()
}

#[test]
fn truncated_json() {
    let full = fixture_bytes("ServiceTags_Public_20251106.json.gz");
    refused(&full[..full.len() / 2], &[], "truncated");
}

#[test]
fn html_page() {
    refused(
        b"<!DOCTYPE html>\r\n<html><head><title>Download</title>",
        &[],
        "HTML page",
    );
}

#[test]
fn empty_values() {
    refused(
        br#"{"changeNumber": 400, "cloud": "Public", "values": []}"#,
        &[],
        "`values` list is empty",
    );
}

#[test]
fn missing_tag() {
    refused(
        &small_feed("Public", 400, &["20.0.0.0/29"]),
        &[(
            "TAGSYNC_TAGS_SELECT",
            "AzureDigitalTwins,AzureFrontDoor.Backend",
        )],
        "`AzureFrontDoor.Backend` is not in the feed",
    );
}

#[test]
fn invalid_cidr() {
    refused(
        &small_feed("Public", 400, &["20.0.0.0/29", "20.0.0.0/33"]),
        &[],
        "`20.0.0.0/33` is not a CIDR",
    );
}

#[test]
fn empty_prefix_list_is_refused() {
    refused(&small_feed("Public", 400, &[]), &[], "lists no prefixes");
}

#[test]
fn wrong_cloud() {
    refused(
        &small_feed("China", 400, &["20.0.0.0/29"]),
        &[],
        "for cloud `China` but cloud `public",
    );
}

#[test]
fn over_the_size_cap() {
    let full = fixture_bytes("ServiceTags_Public_20251106.json.gz");
    refused(
        &full,
        &[("TAGSYNC_FEED_MAX_BYTES", "1MiB")],
        "larger than the 1048576 byte cap",
    );
}

#[test]
fn change_number_regression_is_refused_unless_allowed() {
    refused(
        &small_feed("Public", 374, &["20.0.0.0/29"]),
        &[],
        "changeNumber 374 is lower than 375",
    );

    let (dir, _) = seeded();
    let old = dir.write("old.json", small_feed("Public", 374, &["20.0.0.0/29"]));
    let run = dir.run(&[
        "--output",
        "json",
        "sync",
        "--allow-regression",
        "--feed-file",
        old.to_str().expect("utf-8"),
    ]);
    run.assert_code(0);
    assert_eq!(run.json()["feed"]["change_number"], 374);
    let history = dir
        .run(&["--output", "json", "history", "--limit", "1"])
        .json();
    assert_eq!(history[0]["allow_regression"], true);
}

#[test]
fn host_bits_are_normalized_with_a_warning() {
    let (dir, _) = seeded();
    let feed = dir.write("hb.json", small_feed("Public", 400, &["20.0.0.5/29"]));
    let run = dir.run(&[
        "--output",
        "json",
        "sync",
        "--feed-file",
        feed.to_str().expect("utf-8"),
    ]);
    run.assert_code(0);
    let report = run.json();
    assert_eq!(
        report["tags"][0]["added"],
        serde_json::json!(["20.0.0.0/29"])
    );
    assert!(
        report["warnings"][0]
            .as_str()
            .expect("warning")
            .contains("`20.0.0.5/29` has host bits set")
    );
}

#[test]
fn unknown_config_key_changes_nothing() {
    let (dir, feed) = seeded();
    let before = db_state(&dir.db());
    let cfg = dir.write(
        "tagsync.toml",
        "[feed]\nsource = \"file\"\nfiel = \"x.json\"\n",
    );
    let run = dir.run(&[
        "--config",
        cfg.to_str().expect("utf-8"),
        "sync",
        "--feed-file",
        feed.to_str().expect("utf-8"),
    ]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("unknown field `fiel`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("tagsync.toml"), "{}", run.stderr);
    assert_eq!(db_state(&dir.db()), before);

    let check = dir.run(&["--config", cfg.to_str().expect("utf-8"), "config", "check"]);
    check.assert_code(2);
    assert!(check.stderr.contains("fiel"));
}

#[test]
fn unreadable_database_path() {
    let dir = TestDir::new();
    let feed = dir.fixture("ServiceTags_Public_20210106.json.gz");
    let db = dir.path("missing-dir/sub/tagsync.db");
    let run = dir.run(&[
        "--db",
        db.to_str().expect("utf-8"),
        "sync",
        "--feed-file",
        feed.to_str().expect("utf-8"),
    ]);
    run.assert_code(4);
    assert!(
        run.stderr.contains("missing-dir/sub/tagsync.db"),
        "{}",
        run.stderr
    );
    assert!(!db.exists());
}

#[test]
fn missing_feed_file() {
    let (dir, _) = seeded();
    let before = db_state(&dir.db());
    let run = dir.run(&["sync", "--feed-file", "nope.json"]);
    run.assert_code(FEED_EXIT);
    assert!(
        run.stderr.contains("cannot read feed file nope.json"),
        "{}",
        run.stderr
    );
    assert_eq!(db_state(&dir.db()).good(), before.good());
}
