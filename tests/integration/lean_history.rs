//! A lean history: an unchanged run costs little per target, applies refer
//! to shared prefix sets, and retention prunes applies with their runs.

use crate::util::*;
use crate::world::{P1, P2, P4, World, world};

/// 100 addresses of 20.0.0.0/16, one /32 each: 100 rules on every target.
fn many() -> Vec<String> {
    (0..100).map(|i| format!("20.0.{i}.1/32")).collect()
}

fn sync_many(w: &World, change: u64) -> Run {
    let prefixes = many();
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    w.sync(&refs, change, &[])
}

fn checkpointed_size(w: &World) -> u64 {
    execute_sql(&w.dir.db(), "PRAGMA wal_checkpoint(TRUNCATE)");
    std::fs::metadata(w.dir.db()).expect("db").len()
}

fn scalar(w: &World, sql: &'static str) -> i64 {
    with_db(&w.dir.db(), async |pool| {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    })
}

fn age_everything(w: &World) {
    execute_sql(
        &w.dir.db(),
        "UPDATE runs SET started_at = '2020-01-01T00:00:00.000Z'",
    );
    execute_sql(
        &w.dir.db(),
        "UPDATE applies SET started_at = '2020-01-01T00:00:00.000Z'",
    );
}

#[test]
fn an_unchanged_run_costs_under_a_kilobyte_per_target() {
    let w = world("Standard", "");
    sync_many(&w, 10).assert_code(0);
    sync_many(&w, 10).assert_code(0);
    let before = checkpointed_size(&w);
    let runs = 12;
    for _ in 0..runs {
        let run = sync_many(&w, 10);
        run.assert_code(0);
        let report = run.json();
        for t in report["targets"].as_array().expect("targets") {
            assert_eq!(t["outcome"], "unchanged", "{t}");
        }
    }
    let grown = checkpointed_size(&w) - before;
    let per_target_run = grown / (runs * 3);
    // Each target holds about 100 rules (1.7 KB of text, twice per apply
    // if copied); a reference to the shared set is a few bytes.
    assert!(
        per_target_run < 1024,
        "{grown} bytes for {runs} unchanged runs of 3 targets: {per_target_run} per target and run"
    );
    // Every apply of an unchanged target refers to one stored set.
    let sets = scalar(
        &w,
        "SELECT COUNT(DISTINCT rules_after_set) FROM applies WHERE outcome = 'unchanged'",
    );
    assert_eq!(sets, 3, "one rule set per target");
}

#[test]
fn retention_prunes_applies_and_their_sets_but_keeps_each_target_s_latest() {
    let w = world("Standard", "");
    w.sync(&[P1], 10, &[]).assert_code(0);
    w.sync(&[P1, P2], 11, &[]).assert_code(0);
    w.sync(&[P1, P2], 11, &[]).assert_code(0);
    assert_eq!(scalar(&w, "SELECT COUNT(*) FROM applies"), 9);
    age_everything(&w);
    // A new run over one target only, with retention, that changes it.
    let sync_events = || {
        let run = w.run_env(
            &["sync", "--target", "adt-events", "--feed-file", "feed.json"],
            &[("TAGSYNC_DATABASE_RETENTION", "2y")],
        );
        run.assert_code(0);
        run
    };
    w.dir
        .write("feed.json", crate::world::feed(&[P1, P2, P4], 12));
    let run = sync_events();
    assert_eq!(run.json()["pruned_runs"], 3);
    let old_applies = || {
        with_db(&w.dir.db(), async |pool| {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT target, COUNT(*) FROM applies WHERE started_at < '2021-01-01'
                 GROUP BY target ORDER BY target",
            )
            .fetch_all(pool)
            .await
            .expect("applies")
        })
    };
    // Pruning comes with recording the feed, before this run's targets:
    // each target keeps its latest apply of then, however old.
    assert_eq!(
        old_applies(),
        [
            ("adt-deadletter".to_owned(), 1),
            ("adt-events".to_owned(), 1),
            ("adt-queue".to_owned(), 1)
        ]
    );
    // The next run prunes adt-events' old apply (it has a newer one now);
    // the two targets no run touched keep theirs.
    sync_events();
    assert_eq!(
        old_applies(),
        [
            ("adt-deadletter".to_owned(), 1),
            ("adt-queue".to_owned(), 1)
        ]
    );
    assert_eq!(
        scalar(
            &w,
            "SELECT COUNT(*) FROM applies WHERE target = 'adt-events'"
        ),
        2
    );
    assert_history_references_hold(&w.dir.db());
    // The kept applies still read back with their rule counts.
    let history = w.run(&["history", "--target", "adt-queue"]);
    history.assert_code(0);
    let list = history.json();
    assert_eq!(list[0]["rules_after"], 3, "{list}");
}

#[test]
fn pruning_a_few_old_applies_among_many_recent_ones_deletes_just_those() {
    // One old run, then three recent ones that each change every target:
    // retention takes 3 of 12 entries (deleted one by one, not by emptying
    // the table and writing back the rest).
    let w = world("Standard", "");
    w.sync(&[P1], 10, &[]).assert_code(0);
    age_everything(&w);
    w.sync(&[P1, P2], 11, &[]).assert_code(0);
    w.sync(&[P1, P2, P4], 12, &[]).assert_code(0);
    w.sync(&[P2], 13, &[]).assert_code(0);
    let recent: Vec<i64> = with_db(&w.dir.db(), async |pool| {
        sqlx::query_scalar("SELECT id FROM applies WHERE started_at > '2021' ORDER BY id")
            .fetch_all(pool)
            .await
            .expect("ids")
    });
    assert_eq!(recent.len(), 9);
    let run = w.run_env(
        &["sync", "--feed-file", "feed.json"],
        &[("TAGSYNC_DATABASE_RETENTION", "2y")],
    );
    run.assert_code(0);
    assert_eq!(run.json()["pruned_runs"], 1);
    let left: Vec<i64> = with_db(&w.dir.db(), async |pool| {
        sqlx::query_scalar("SELECT id FROM applies ORDER BY id")
            .fetch_all(pool)
            .await
            .expect("ids")
    });
    // The recent entries, then this run's (an unchanged run extends the
    // latest entry of each target rather than adding one).
    assert_eq!(&left[..recent.len()], recent.as_slice(), "{left:?}");
    assert_eq!(
        scalar(&w, "SELECT COUNT(*) FROM runs WHERE started_at < '2021'"),
        0
    );
    assert_history_references_hold(&w.dir.db());
}

#[test]
fn the_applies_of_an_older_schema_keep_their_rows_ids_and_sequence() {
    // A database as 0001-0006 left it, with applies whose newest was
    // deleted: migration 0007 rebuilds the table without its foreign key.
    let dir = crate::util::TestDir::new();
    let db = database_before_migration(&dir, "0007");
    execute_sql(
        &db,
        "INSERT INTO runs (id, started_at, finished_at, outcome, source, cloud, selection)
         VALUES (1, '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:01.000Z', 'changed', 'file', 'public', '[]');
         INSERT INTO applies (id, run_id, target, resource_id, started_at, finished_at, outcome)
         VALUES (1, 1, 'a', '/x/a', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:01.000Z', 'applied'),
                (2, NULL, 'b', '/x/b', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:01.000Z', 'failed'),
                (3, 1, 'c', '/x/c', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:01.000Z', 'applied');
         DELETE FROM applies WHERE id = 3;",
    );
    dir.run(&["--db", db.to_str().expect("utf-8"), "history"])
        .assert_code(0);
    let (rows, sequence, foreign_keys, indexes) = with_db(&db, async |pool| {
        let rows: Vec<(i64, Option<i64>, String)> =
            sqlx::query_as("SELECT id, run_id, target FROM applies ORDER BY id")
                .fetch_all(pool)
                .await
                .expect("rows");
        let sequence: i64 =
            sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'applies'")
                .fetch_one(pool)
                .await
                .expect("sequence");
        let foreign_keys: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pragma_foreign_key_list('applies')")
                .fetch_one(pool)
                .await
                .expect("foreign keys");
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM pragma_index_list('applies') WHERE origin = 'c' ORDER BY name",
        )
        .fetch_all(pool)
        .await
        .expect("indexes");
        (rows, sequence, foreign_keys, indexes)
    });
    assert_eq!(
        rows,
        [(1, Some(1), "a".to_owned()), (2, None, "b".to_owned())]
    );
    assert_eq!(sequence, 3, "the deleted apply 3's id is not given again");
    assert_eq!(foreign_keys, 0);
    assert_eq!(indexes, ["applies_by_run", "applies_by_target"]);
}

#[test]
fn applies_recorded_before_the_prefix_set_columns_still_read() {
    let w = world("Standard", "");
    w.sync(&[P1], 10, &["--target", "adt-events"])
        .assert_code(0);
    // A row as the previous schema wrote it: rule lists as text.
    execute_sql(
        &w.dir.db(),
        "INSERT INTO applies (run_id, target, resource_id, started_at, finished_at, outcome, rules_before, rules_after, added)
         VALUES (NULL, 'adt-events', 'x', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:01.000Z', 'applied',
                 '1.1.1.1/32', '1.1.1.1/32\n20.0.0.1/32\n20.0.0.2/32', '20.0.0.1/32\n20.0.0.2/32')",
    );
    let history = w.run(&["history", "--target", "adt-events"]);
    history.assert_code(0);
    let list = history.json();
    let old = list
        .as_array()
        .expect("applies")
        .iter()
        .find(|a| a["resource_id"] == "x")
        .expect("the old row");
    assert_eq!(old["rules_before"], 1);
    assert_eq!(old["rules_after"], 3);
    assert_eq!(old["added"].as_array().map(Vec::len), Some(2));
}

#[test]
fn unchanged_runs_in_a_row_are_one_entry_and_a_change_starts_the_next() {
    let w = world("Standard", "");
    w.sync(&[P1], 10, &["--target", "adt-events"])
        .assert_code(0);
    for _ in 0..4 {
        w.sync(&[P1], 10, &["--target", "adt-events"])
            .assert_code(0);
    }
    w.sync(&[P1, P2], 11, &["--target", "adt-events"])
        .assert_code(0);
    w.sync(&[P1, P2], 11, &["--target", "adt-events"])
        .assert_code(0);
    let history = w.run(&["history", "--target", "adt-events"]);
    history.assert_code(0);
    let list = history.json();
    let shape: Vec<(String, i64)> = list
        .as_array()
        .expect("applies")
        .iter()
        .map(|a| {
            (
                a["outcome"].as_str().expect("outcome").to_owned(),
                a["repeats"].as_i64().expect("repeats"),
            )
        })
        .collect();
    // Newest first: one unchanged run after the change, the change, four
    // unchanged runs, the first write.
    assert_eq!(
        shape,
        [
            ("unchanged".to_owned(), 1),
            ("applied".to_owned(), 1),
            ("unchanged".to_owned(), 4),
            ("applied".to_owned(), 1)
        ]
    );
    // The collapsed entry points at the last run it stands for.
    let runs = w.run(&["history"]).json();
    assert_eq!(list[2]["run_id"], runs[2]["run_id"], "{list}\n{runs}");
    let human = w.dir.run_with(
        &["--config", &w.cfg, "history", "--target", "adt-events"],
        &[],
    );
    assert!(
        human.stdout.contains("(4 runs in a row, the last at "),
        "{}",
        human.stdout
    );
}
