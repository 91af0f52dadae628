//! The pruning benchmark, worst case: a history of RUNS weekly runs over
//! TARGETS targets in which every target changed in every run (one applied
//! entry per target and run; unchanged runs in a row would share one entry),
//! all older than the retention, then one `tagsync sync` with
//! `[database] retention` that prunes them. Prints the sync's wall time
//! with pruning and, on a copy of the history with nothing to prune, without.
//!
//!     cargo build --release --bin tagsync
//!     cargo run --release --example prune -- [RUNS] [TARGETS] [BINARY]
//!
//! Defaults: 400 runs, 1000 targets, target/release/tagsync.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../tests/fixtures/load.rs"]
mod fixture;

fn sync(binary: &Path, dir: &Path, retention: &str) -> Duration {
    let started = Instant::now();
    let out = Command::new(binary)
        .current_dir(dir)
        .args([
            "-q",
            "--db",
            "tagsync.db",
            "sync",
            "--feed-file",
            "feed.json",
        ])
        .env("TAGSYNC_DATABASE_RETENTION", retention)
        .output()
        .expect("run tagsync");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs: i64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(400);
    let targets: i64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let binary =
        std::fs::canonicalize(args.get(2).map_or("target/release/tagsync", String::as_str))
            .expect("the tagsync binary (cargo build --release --bin tagsync)");
    let dir = std::env::temp_dir().join(format!("tagsync-prune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    std::fs::write(dir.join("feed.json"), fixture::feed_2025()).expect("feed");
    // The schema, from a first run.
    sync(&binary, &dir, "100y");

    let db = dir.join("tagsync.db");
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&db))
        .await
        .expect("open");
    let mut tx = pool.begin().await.expect("begin");
    for t in 0..targets {
        let text: String = (0..20)
            .map(|i| format!("20.{}.{i}.0/24\n", t % 250))
            .collect();
        sqlx::query("INSERT INTO prefix_sets (sha256, ipv4_count, ipv6_count, prefixes) VALUES (?1, 20, 0, ?2)")
            .bind(format!("bench-{t}"))
            .bind(text)
            .execute(&mut *tx)
            .await
            .expect("set");
    }
    let first_set: i64 =
        sqlx::query_scalar("SELECT MIN(id) FROM prefix_sets WHERE sha256 LIKE 'bench-%'")
            .fetch_one(&mut *tx)
            .await
            .expect("set id");
    for r in 0..runs {
        let day = format!("2020-01-01T00:00:{:02}.000Z", r % 60);
        let run_id = sqlx::query(
            "INSERT INTO runs (started_at, finished_at, outcome, source, cloud, selection) VALUES (?1, ?1, 'changed', 'file', 'public', '[]')",
        )
        .bind(&day)
        .execute(&mut *tx)
        .await
        .expect("run")
        .last_insert_rowid();
        for t in 0..targets {
            sqlx::query(
                "INSERT INTO applies (run_id, target, resource_id, started_at, finished_at, outcome, rules_before_set, rules_after_set)
                 VALUES (?1, ?2, ?3, ?4, ?4, 'applied', ?5, ?5)",
            )
            .bind(run_id)
            .bind(format!("t{t:05}"))
            .bind(format!("/subscriptions/x/resourceGroups/rg/providers/Microsoft.EventHub/namespaces/ns{t:05}"))
            .bind(&day)
            .bind(first_set + t)
            .execute(&mut *tx)
            .await
            .expect("apply");
        }
    }
    // Each apply refers to its target's set twice (before and after).
    sqlx::query("UPDATE prefix_sets SET apply_refs = apply_refs + ?1 WHERE sha256 LIKE 'bench-%'")
        .bind(2 * runs)
        .execute(&mut *tx)
        .await
        .expect("refs");
    tx.commit().await.expect("commit");
    pool.close().await;
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);

    // The same sync with nothing to prune, on a copy, for the baseline.
    let base = dir.join("base");
    std::fs::create_dir_all(&base).expect("dir");
    std::fs::copy(dir.join("feed.json"), base.join("feed.json")).expect("copy");
    std::fs::copy(&db, base.join("tagsync.db")).expect("copy");
    if std::env::var_os("TAGSYNC_PRUNE_KEEP").is_some() {
        // For experiments: leave the unpruned history behind.
        println!("{}", base.join("tagsync.db").display());
        return;
    }
    let without = sync(&binary, &base, "100y");
    let with = sync(&binary, &dir, "1y");
    println!(
        "{runs} runs x {targets} targets ({} applies, {:.0} MB): sync without pruning {:.3} s, with pruning {:.3} s: pruning took {:.3} s",
        runs * targets,
        size as f64 / 1e6,
        without.as_secs_f64(),
        with.as_secs_f64(),
        (with.saturating_sub(without)).as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
