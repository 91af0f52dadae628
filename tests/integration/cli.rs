//! Command-line behaviour: output formats, exit codes, documentation that
//! must match the code.

use crate::util::*;

#[test]
fn feed_show_prints_counts_and_prefixes() {
    let dir = TestDir::new();
    let feed = dir.fixture("ServiceTags_Public_20251106.json.gz");
    let feed = feed.to_str().expect("utf-8");
    let run = dir.run(&[
        "--output",
        "json",
        "feed",
        "show",
        "--feed-file",
        feed,
        "--tag",
        ADT,
    ]);
    run.assert_code(0);
    let j = run.json();
    assert_eq!(j["change_number"], 375);
    let t = &j["tags"][0];
    assert_eq!(t["ipv4_count"], 289);
    assert_eq!(t["ipv6_count"], 78);
    assert_eq!(
        t["aggregated_count"], 367,
        "lossless aggregation merges nothing"
    );
    let expected = tag_prefixes(&std::fs::read(feed).expect("read"), ADT);
    let shown: std::collections::BTreeSet<String> = t["ipv4"]
        .as_array()
        .expect("ipv4")
        .iter()
        .chain(t["ipv6"].as_array().expect("ipv6"))
        .map(|p| p.as_str().expect("prefix").to_owned())
        .collect();
    assert_eq!(shown, expected);
    // Nothing was recorded.
    assert!(!dir.db().exists());

    let human = dir.run(&["feed", "show", "--feed-file", feed, "--tag", ADT]);
    human.assert_code(0);
    assert!(
        human
            .stdout
            .contains("AzureDigitalTwins (changeNumber 52, global): 289 IPv4"),
        "{}",
        human.stdout
    );
    // Same input, same bytes.
    assert_eq!(
        human.stdout,
        dir.run(&["feed", "show", "--feed-file", feed, "--tag", ADT])
            .stdout
    );

    // Case and typos both get a suggestion: tags, and regions.
    for (args, env, suggestion) in [
        (
            [
                "feed",
                "show",
                "--feed-file",
                feed,
                "--tag",
                "azuredigitaltwins",
            ]
            .as_slice(),
            [].as_slice(),
            "did you mean `AzureDigitalTwins`?",
        ),
        (
            &[
                "feed",
                "show",
                "--feed-file",
                feed,
                "--tag",
                "AzureDigitalTwin",
            ],
            &[],
            "did you mean `AzureDigitalTwins`?",
        ),
        (
            &["sync", "--feed-file", feed],
            &[("TAGSYNC_TAGS_REGIONS", "westeurop")],
            "did you mean `westeurope`?",
        ),
    ] {
        let run = dir.run_with(args, env);
        run.assert_code(3);
        assert!(run.stderr.contains(suggestion), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn history_and_diff_on_a_fresh_directory_say_what_to_do() {
    let dir = TestDir::new();
    let run = dir.run(&["history"]);
    run.assert_code(4);
    assert!(
        run.stderr.contains("run `tagsync sync` first"),
        "{}",
        run.stderr
    );
    assert!(!dir.db().exists(), "history does not create a database");
}

#[test]
fn diff_rejects_unknown_runs_and_tags() {
    let dir = TestDir::new();
    let feed = dir.fixture("ServiceTags_Public_20210106.json.gz");
    dir.run(&["sync", "--feed-file", feed.to_str().expect("utf-8")])
        .assert_code(0);
    let run = dir.run(&["diff", "1", "7"]);
    run.assert_code(4);
    assert!(
        run.stderr.contains("run 7 has no snapshots"),
        "{}",
        run.stderr
    );
    let run = dir.run(&["diff", "1", "x"]);
    run.assert_code(2);
    let run = dir.run(&["diff", "1", "latest", "--tag", "Nope"]);
    run.assert_code(2);
    assert!(run.stderr.contains("`Nope`"), "{}", run.stderr);
    let same = dir.run(&["--output", "json", "diff", "1", "latest"]);
    same.assert_code(0);
    assert_eq!(same.json()["tags"][0]["added"], serde_json::json!([]));
}

#[test]
fn json_errors_on_stdout_and_usage_errors_exit_2() {
    let dir = TestDir::new();
    let run = dir.run(&["--output", "json", "sync", "--feed-file", "absent.json"]);
    run.assert_code(3);
    let j = run.json();
    assert_eq!(j["error"]["kind"], "source");
    assert_eq!(j["error"]["exit_code"], 3);
    dir.run(&["sync", "--no-such-flag"]).assert_code(2);
    dir.run(&["--help"]).assert_code(0);
}

#[test]
fn json_logs_for_kubernetes() {
    let dir = TestDir::new();
    let feed = dir.fixture("ServiceTags_Public_20210106.json.gz");
    let run = dir.run(&[
        "--log-format",
        "json",
        "-v",
        "sync",
        "--feed-file",
        feed.to_str().expect("utf-8"),
    ]);
    run.assert_code(0);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
}

#[test]
fn config_check_reports_the_effective_settings() {
    let dir = TestDir::new();
    let cfg = dir.write(
        "t.toml",
        "[feed]\ncloud = \"usgov\"\n[tags]\nselect = [\"AzureDigitalTwins\"]\nregions = [\"usgovvirginia\"]\n[database]\nretention = \"2y\"\n",
    );
    let run = dir.run_with(
        &[
            "--config",
            cfg.to_str().expect("utf-8"),
            "--output",
            "json",
            "config",
            "check",
        ],
        &[("TAGSYNC_DB", "/var/lib/tagsync/h.db")],
    );
    run.assert_code(0);
    let j = run.json();
    assert_eq!(j["cloud"], "usgov");
    assert_eq!(j["regions"][0], "usgovvirginia");
    assert_eq!(j["database"], "/var/lib/tagsync/h.db");
    assert_eq!(j["retention"], "2years");
    // A flag beats the environment.
    let run = dir.run_with(
        &[
            "--config",
            cfg.to_str().expect("utf-8"),
            "--db",
            "flag.db",
            "--output",
            "json",
            "config",
            "check",
        ],
        &[("TAGSYNC_DB", "/var/lib/tagsync/h.db")],
    );
    assert_eq!(run.json()["database"], "flag.db");
}

#[test]
fn readme_documents_every_exit_code() {
    // The environment variables are checked against the CLI definition
    // itself, in `src/commands.rs`.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    for code in 0..=7 {
        assert!(
            readme.contains(&format!("| {code} |")),
            "README lacks exit code {code}"
        );
    }
}

#[test]
fn retention_prunes_old_runs_but_keeps_the_latest_snapshot() {
    let dir = TestDir::new();
    let files = weekly_fixtures();
    for name in &files[..3] {
        let f = dir.write("f.json", fixture_bytes(name));
        dir.run(&["sync", "--feed-file", f.to_str().expect("utf-8")])
            .assert_code(0);
    }
    // Age every run by three years, then sync the same file with retention.
    execute_sql(
        &dir.db(),
        "UPDATE runs SET started_at = '2023-01-01T00:00:00.000Z'",
    );
    let f = dir.write("f.json", fixture_bytes(&files[3]));
    let run = dir.run_with(
        &[
            "--output",
            "json",
            "sync",
            "--feed-file",
            f.to_str().expect("utf-8"),
        ],
        &[("TAGSYNC_DATABASE_RETENTION", "2y")],
    );
    run.assert_code(0);
    // Runs 1 and 2 are gone; run 3 (the latest snapshot before this run
    // was recorded) went too once run 4 holds the latest snapshot.
    let state = db_state(&dir.db());
    let ids: Vec<i64> = state.runs.iter().map(|r| r.0).collect();
    assert_eq!(ids, vec![4]);
    assert_eq!(run.json()["pruned_runs"], 3);
    assert_eq!(state.snapshots.len(), 1);
    assert_eq!(state.prefix_sets.len(), 1, "unused prefix sets are deleted");
}

#[test]
fn a_gzip_feed_file_is_read_as_its_json_and_a_gzip_bomb_stops_at_the_cap() {
    let dir = TestDir::new();
    let gz = fixtures().join("ServiceTags_Public_20210106.json.gz");
    let gz = gz.to_str().expect("utf-8");
    let first = dir.run(&["--output", "json", "sync", "--feed-file", gz]);
    first.assert_code(0);
    let plain = dir.fixture("ServiceTags_Public_20210106.json.gz");
    let second = dir.run(&[
        "--output",
        "json",
        "sync",
        "--feed-file",
        plain.to_str().expect("utf-8"),
    ]);
    second.assert_code(0);
    // The same feed: the digest is of the JSON, not of its compression.
    assert_eq!(
        first.json()["feed"]["sha256"],
        second.json()["feed"]["sha256"]
    );
    assert_eq!(second.json()["outcome"], "unchanged");
    // 64 MiB of spaces in a few KiB of gzip: refused at the 1 MiB cap.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut enc, &vec![b' '; 64 << 20]).expect("gzip");
    let bomb = dir.write("bomb.json", enc.finish().expect("gzip"));
    let cfg = dir.write("small.toml", "[feed]\nmax_bytes = \"1MiB\"\n");
    let run = dir.run(&[
        "--config",
        cfg.to_str().expect("utf-8"),
        "sync",
        "--feed-file",
        bomb.to_str().expect("utf-8"),
    ]);
    run.assert_code(3);
    assert!(run.stderr.contains("max_bytes"), "{}", run.stderr);
}

#[test]
fn config_check_flags_a_client_secret_credential_without_its_parts() {
    let dir = TestDir::new();
    let cfg = dir.write("cs.toml", "[azure]\nauth = \"client-secret\"\n");
    let run = dir.run(&[
        "--config",
        cfg.to_str().expect("utf-8"),
        "--output",
        "json",
        "config",
        "check",
    ]);
    run.assert_code(0);
    let warnings = run.json()["warnings"].to_string();
    assert!(
        warnings.contains("AZURE_TENANT_ID") && warnings.contains("AZURE_CLIENT_SECRET"),
        "{warnings}"
    );
    let ok = dir.run_with(
        &[
            "--config",
            cfg.to_str().expect("utf-8"),
            "--output",
            "json",
            "config",
            "check",
        ],
        &[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s3cret-value"),
        ],
    );
    assert_eq!(ok.json()["warnings"], serde_json::json!([]));
    assert!(!ok.stdout.contains("s3cret-value"));
}

/// Copies `db` alone into a new directory `ro`, the file 0444 and the
/// directory 0555: the usual read-only copy.
fn read_only_copy(dir: &TestDir, db: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let ro = dir.path("ro");
    std::fs::create_dir(&ro).expect("mkdir");
    let copy = ro.join("tagsync.db");
    std::fs::copy(db, &copy).expect("copy");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    std::fs::set_permissions(dir.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    copy
}

/// Runs tagsync on the database `copy`, from its directory, as a user who
/// may not write it (root writes anything: uid 65534 then).
fn run_unprivileged(dir: &TestDir, copy: &std::path::Path, args: &[&str]) -> Run {
    use std::os::unix::fs::MetadataExt;
    let as_root = std::fs::metadata("/proc/self").expect("proc").uid() == 0;
    let inner = dir.command();
    let mut cmd = if as_root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(inner.get_program());
        c
    } else {
        std::process::Command::new(inner.get_program())
    };
    let cwd = copy.parent().expect("directory");
    cmd.current_dir(cwd).arg("--db").arg(copy).args(args);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    finish(cmd.output().expect("run tagsync"))
}

#[test]
fn history_and_diff_read_a_read_only_copy_without_writing_to_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new();
    let old = dir.fixture("ServiceTags_Public_20210106.json.gz");
    dir.run(&["sync", "--feed-file", old.to_str().expect("utf-8")])
        .assert_code(0);
    let new = dir.fixture("ServiceTags_Public_20251106.json.gz");
    dir.run(&["sync", "--feed-file", new.to_str().expect("utf-8")])
        .assert_code(0);
    // The usual copy: the database file alone, in a directory and a file
    // nobody may write.
    let copy = read_only_copy(&dir, &dir.db());
    let ro = copy.parent().expect("directory").to_owned();
    let before = std::fs::read(&copy).expect("read");
    let read = |args: &[&str]| run_unprivileged(&dir, &copy, args);
    let history = read(&["history"]);
    history.assert_code(0);
    let first = history.stdout.lines().next().expect("a header");
    assert!(
        first.split_whitespace().collect::<Vec<_>>()
            == ["RUN", "STARTED", "OUTCOME", "CHANGENUMBER", "SOURCE"],
        "{}",
        history.stdout
    );
    let outcomes: Vec<&str> = history
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(outcomes, ["changed", "changed"], "{}", history.stdout);
    let diff = read(&["--output", "json", "diff", "1", "2"]);
    diff.assert_code(0);
    assert!(
        !diff.json()["tags"][0]["added"]
            .as_array()
            .expect("added")
            .is_empty()
    );
    let applies = read(&["history", "--target", "none"]);
    applies.assert_code(0);
    // Nothing was written: the file is byte for byte the same, and no WAL
    // or shared-memory file appeared.
    assert_eq!(std::fs::read(&copy).expect("read"), before);
    let mut names: Vec<String> = std::fs::read_dir(&ro)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["tagsync.db"]);
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn a_read_only_copy_of_an_older_schema_is_named_and_a_writable_one_upgraded() {
    // A database as the tagsync of migrations 0001-0004 left it.
    let dir = TestDir::new();
    let db = database_before_migration(&dir, "0005");
    let latest = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("ls")
        .count();
    // Read-only, it cannot be upgraded: the error says what it is.
    let copy = read_only_copy(&dir, &db);
    let ro = run_unprivileged(&dir, &copy, &["history"]);
    ro.assert_code(4);
    assert!(
        ro.stderr.contains(&format!(
            "written by an older tagsync (schema 4, this one reads {latest})"
        )),
        "{}",
        ro.stderr
    );
    // Writable, the read command upgrades it and reads it.
    let upgraded = dir.run(&["--db", db.to_str().expect("utf-8"), "history"]);
    upgraded.assert_code(0);
    assert!(
        upgraded.stdout.contains("no runs recorded"),
        "{}",
        upgraded.stdout
    );
    let version = with_db(&db, async |pool| {
        sqlx::query_scalar::<_, i64>("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(pool)
            .await
            .expect("version")
    });
    assert_eq!(version, i64::try_from(latest).expect("count"));
}
