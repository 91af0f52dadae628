//! The SQLite history: every run, every tag snapshot and every change.
//!
//! Schema in `migrations/`, applied on open. A run is written in one
//! transaction, so a crash mid-run leaves the previous state intact; a failed
//! run is recorded on its own and never touches the snapshots. Only one
//! tagsync process writes at a time: [`RunLock`] holds an advisory lock on
//! `<db>.lock` for the whole run (download included), which the kernel
//! releases if the process dies.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::digest::sha256_hex;
use crate::prefix::PrefixSet;
use crate::tags::TagState;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(
        "cannot open the history database {path}: {detail}; check that the directory exists and is writable, or set --db / [database] path"
    )]
    Open { path: String, detail: String },
    #[error("cannot read the history database {path}: {detail}")]
    Read { path: String, detail: String },
    #[error(
        "no history database at {path}; run `tagsync sync` first, or point --db at an existing database"
    )]
    Missing { path: String },
    #[error(
        "another tagsync run holds the lock on {path}; it was not released within {waited:?}. Wait for that run to finish"
    )]
    Locked { path: String, waited: Duration },
    #[error("history database {path}: {detail}")]
    Query { path: String, detail: String },
    #[error("{0}")]
    NotFound(String),
}

/// The advisory lock of one run; released on drop or process exit.
///
/// It is an exclusive `flock` on the database file itself, so it follows
/// the file, not the name: every path to one database (a symlink, a hard
/// link, `./x.db` and `/abs/x.db`) takes the same lock. SQLite's own locks
/// are POSIX record locks, which are independent of `flock` on a local file
/// system (the database must be on one: SQLite's WAL mode needs it anyway).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the run lock of `db`, waiting up to `wait` for another run.
    /// Creates the (empty) database file if it does not exist yet.
    pub fn acquire(db: &Path, wait: Duration) -> Result<Self, HistoryError> {
        let shown = db.display().to_string();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(db)
            .map_err(|e| HistoryError::Open {
                path: shown.clone(),
                detail: e.to_string(),
            })?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(TryLockError::WouldBlock) if started.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(HistoryError::Locked {
                        path: shown,
                        waited: wait,
                    });
                }
                Err(TryLockError::Error(e)) => {
                    return Err(HistoryError::Open {
                        path: shown,
                        detail: format!("cannot lock: {e}"),
                    });
                }
            }
        }
    }
}

/// Current time in the stored format.
pub fn now() -> String {
    format_time(OffsetDateTime::now_utc())
}

pub fn format_time(t: OffsetDateTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// A run about to be recorded.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    pub started_at: String,
    pub source: String,
    pub cloud: String,
    pub feed_location: Option<String>,
    pub found_by: Option<String>,
    pub feed_sha256: Option<String>,
    pub feed_bytes: Option<u64>,
    pub change_number: Option<u64>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub not_modified: bool,
    pub allow_regression: bool,
    /// The selection as configured, as JSON (what this run was asked for).
    pub selection: String,
}

/// What a recorded snapshot changed against the previous one of its tag.
#[derive(Debug, Clone)]
pub struct TagChange {
    pub state: TagState,
    pub previous_change_number: Option<u64>,
    pub previous_run_id: Option<i64>,
    /// True when there was no earlier snapshot of this tag.
    pub first: bool,
    pub added: PrefixSet,
    pub removed: PrefixSet,
}

impl TagChange {
    pub fn changed(&self) -> bool {
        self.first || !self.added.is_empty() || !self.removed.is_empty()
    }
}

/// A successful run as recorded.
#[derive(Debug, Clone)]
pub struct RecordedRun {
    pub run_id: i64,
    pub changed: bool,
    pub tags: Vec<TagChange>,
}

/// The last successful run of a cloud: for the regression guard and for
/// conditional GET.
#[derive(Debug, Clone)]
pub struct LastRun {
    pub id: i64,
    pub change_number: Option<u64>,
    pub feed_location: Option<String>,
    pub feed_sha256: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub selection: String,
}

/// A run as listed by `tagsync history`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunEntry {
    pub run_id: i64,
    pub started_at: String,
    pub finished_at: String,
    pub outcome: String,
    pub source: String,
    pub cloud: String,
    pub feed: Option<String>,
    pub change_number: Option<u64>,
    pub not_modified: bool,
    pub allow_regression: bool,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub tags: Vec<SnapshotEntry>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotEntry {
    pub tag: String,
    pub region: String,
    pub change_number: u64,
    pub ipv4: u64,
    pub ipv6: u64,
    pub changed: bool,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

#[derive(Clone)]
pub struct History {
    pool: SqlitePool,
    path: PathBuf,
    /// Opened for writing (not [`History::open_read_only`]).
    writable: bool,
}

impl History {
    /// Opens (creating when `create`) the database and applies migrations.
    pub async fn open(path: &Path, create: bool) -> Result<Self, HistoryError> {
        let shown = path.display().to_string();
        if !create && !path.exists() {
            return Err(HistoryError::Missing { path: shown });
        }
        let open_err = |detail: String| HistoryError::Open {
            path: shown.clone(),
            detail,
        };
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| open_err(e.to_string()))?
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Up to 32 MB of pages per connection (SQLite's default is
            // 2 MB): a large prune changes pages all over `applies`, and
            // with a small cache it writes and rereads them many times.
            .pragma("cache_size", "-32768")
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| open_err(format!("cannot apply the schema migrations: {e}")))?;
        Ok(Self {
            pool,
            path: path.to_owned(),
            writable: true,
        })
    }

    /// Opens an existing history for reading only (`history`, `diff`):
    /// nothing is written, so a read-only copy, a read-only volume or a
    /// file the caller may not write all work. A database whose WAL was
    /// checkpointed away (the usual copy: just the `.db` file) in a
    /// directory where SQLite cannot create its `-shm` index is opened as
    /// immutable, which is exact when there is no WAL to read. A database
    /// of an older schema is upgraded by a normal open when it can be
    /// written, and named as such when it cannot.
    pub async fn open_read_only(path: &Path) -> Result<Self, HistoryError> {
        let shown = path.display().to_string();
        if !path.exists() {
            return Err(HistoryError::Missing { path: shown });
        }
        let open_err = |detail: String| HistoryError::Read {
            path: shown.clone(),
            detail,
        };
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| open_err(e.to_string()))?
            .filename(path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10));
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal_has_frames = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
        let mut last_error = String::new();
        for immutable in [false, true] {
            if immutable && wal_has_frames {
                break;
            }
            let pool = match SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone().immutable(immutable))
                .await
            {
                Ok(pool) => pool,
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            let applied: Result<Option<i64>, _> =
                sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
                    .fetch_one(&pool)
                    .await;
            match applied {
                Ok(version) => {
                    let latest = sqlx::migrate!("./migrations")
                        .iter()
                        .map(|m| m.version)
                        .max()
                        .unwrap_or(0);
                    if version.unwrap_or(0) >= latest {
                        return Ok(Self {
                            pool,
                            path: path.to_owned(),
                            writable: false,
                        });
                    }
                    pool.close().await;
                    // An older schema: upgrade it if it can be written.
                    return Self::open(path, false).await.map_err(|e| {
                        open_err(format!(
                            "it was written by an older tagsync (schema {}, this one reads {latest}) and cannot be upgraded here ({e}); run this tagsync once with write access to it (e.g. `tagsync sync`, or `history` on a writable copy)",
                            version.unwrap_or(0)
                        ))
                    });
                }
                Err(e) => {
                    pool.close().await;
                    last_error = e.to_string();
                }
            }
        }
        Err(open_err(format!(
            "{last_error} (opened read-only{})",
            if wal_has_frames {
                "; its write-ahead log must be readable, and its -shm file present or creatable"
            } else {
                ""
            }
        )))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A transaction that writes. It takes the write lock at BEGIN
    /// (IMMEDIATE), waiting for it under the busy timeout: a deferred one
    /// that reads first cannot upgrade once another connection of the pool
    /// (a concurrent target) has committed, and SQLite answers SQLITE_BUSY
    /// at once, without waiting.
    pub async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn err(&self, e: impl std::fmt::Display) -> HistoryError {
        HistoryError::Query {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        }
    }

    /// The last run of `cloud` that was not a failure.
    pub async fn last_good_run(&self, cloud: &str) -> Result<Option<LastRun>, HistoryError> {
        let row = sqlx::query(
            "SELECT id, change_number, feed_location, feed_sha256, etag, last_modified, selection
             FROM runs WHERE cloud = ?1 AND outcome != 'failed' ORDER BY id DESC LIMIT 1",
        )
        .bind(cloud)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.map(|r| LastRun {
            id: r.get(0),
            change_number: r.get::<Option<i64>, _>(1).map(|n| n as u64),
            feed_location: r.get(2),
            feed_sha256: r.get(3),
            etag: r.get(4),
            last_modified: r.get(5),
            selection: r.get(6),
        }))
    }

    /// Records a successful run and its snapshots in one transaction, and
    /// returns what changed for each tag.
    pub async fn record_success(
        &self,
        run: &NewRun,
        tags: &[TagState],
        events: &(dyn Fn(i64, &[TagChange]) -> Vec<Outgoing> + Sync),
    ) -> Result<RecordedRun, HistoryError> {
        let mut tx = self.write_tx().await.map_err(|e| self.err(e))?;
        let run_id = insert_run(&mut tx, run, "changed", None)
            .await
            .map_err(|e| self.err(e))?;
        let mut changes = Vec::with_capacity(tags.len());
        for tag in tags {
            let change = insert_snapshot(&mut tx, run_id, tag)
                .await
                .map_err(|e| self.err(e))?;
            changes.push(change);
        }
        let changed = changes.iter().any(TagChange::changed);
        enqueue_events(&mut tx, &events(run_id, &changes))
            .await
            .map_err(|e| self.err(e))?;
        sqlx::query("UPDATE runs SET outcome = ?1, finished_at = ?2 WHERE id = ?3")
            .bind(if changed { "changed" } else { "unchanged" })
            .bind(now())
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(RecordedRun {
            run_id,
            changed,
            tags: changes,
        })
    }

    /// Records a failed run. Snapshots are not touched.
    pub async fn record_failure(
        &self,
        run: &NewRun,
        kind: &str,
        error: &str,
    ) -> Result<i64, HistoryError> {
        let mut tx = self.write_tx().await.map_err(|e| self.err(e))?;
        let id = insert_run(&mut tx, run, "failed", Some((kind, error)))
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(id)
    }

    /// Deletes runs that started before `now - retention` (except those
    /// that hold the latest snapshot of a tag) with their snapshots and
    /// their targets' applies (except each target's latest apply), then the
    /// prefix sets that only the deleted rows used. The cost grows with
    /// what is deleted, not with the size of the history: the statements
    /// reach the rows they delete through an index, and the one path that
    /// visits all of `applies` runs only when at least half of it goes
    /// (see `prune_applies`).
    pub async fn prune(&self, retention: Duration) -> Result<u64, HistoryError> {
        let cutoff = format_time(OffsetDateTime::now_utc() - retention);
        let ids_json = |ids: &[i64]| serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        let mut tx = self.write_tx().await.map_err(|e| self.err(e))?;
        let runs: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE started_at < ?1 AND id NOT IN (
                 SELECT run_id FROM snapshots WHERE id IN (SELECT MAX(id) FROM snapshots GROUP BY tag))",
        )
        .bind(&cutoff)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        let runs_json = ids_json(&runs);
        let released = self.prune_applies(&mut tx, &runs_json, &cutoff).await?;
        let mut sets: std::collections::BTreeSet<i64> = sqlx::query_scalar(
            "SELECT prefix_set_id FROM snapshots WHERE run_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(&runs_json)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.err(e))?
        .into_iter()
        .collect();
        sets.extend(
            released
                .iter()
                .filter(|(_, refs)| *refs <= 0)
                .map(|(id, _)| *id),
        );
        // The entries kept (each target's latest) outlive their run.
        sqlx::query(
            "UPDATE applies SET run_id = NULL WHERE run_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(&runs_json)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        let deleted = sqlx::query("DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?1))")
            .bind(&runs_json)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?
            .rows_affected();
        let sets: Vec<i64> = sets.into_iter().collect();
        sqlx::query(
            "DELETE FROM prefix_sets WHERE id IN (SELECT value FROM json_each(?1))
               AND apply_refs <= 0
               AND NOT EXISTS (SELECT 1 FROM snapshots WHERE prefix_set_id = prefix_sets.id)",
        )
        .bind(ids_json(&sets))
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        // Events older than the retention were never accepted by their
        // receiver; they describe facts the history no longer holds.
        let expired = sqlx::query("DELETE FROM outbox WHERE created_at < ?1")
            .bind(&cutoff)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?
            .rows_affected();
        if expired > 0 {
            tracing::warn!(
                events = expired,
                "dropped notifications older than the retention that no receiver accepted"
            );
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(deleted)
    }

    /// Deletes the applies of the pruned runs (`runs_json`) and the run-less
    /// ones older than `cutoff`, except each target's latest, and returns
    /// the prefix sets whose reference counts it set, with their new counts
    /// (a set at 0 is no longer referred to by any apply).
    ///
    /// When at least half of the table goes, the entries kept are copied
    /// aside and the table is emptied with an unqualified `DELETE`, which
    /// SQLite's truncate optimization does by freeing pages rather than
    /// deleting rows one at a time through the table and its indexes
    /// (migration 0007 says why `applies` takes part in no foreign key for
    /// this); the counts are then recounted from the kept entries.
    /// Otherwise the rows are deleted and the counts lowered by what they
    /// referred to. Either way the cost follows what is deleted.
    async fn prune_applies(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        runs_json: &str,
        cutoff: &str,
    ) -> Result<Vec<(i64, i64)>, HistoryError> {
        // What retention takes, before keeping each target's latest: the
        // entries of the pruned runs, and the run-less ones older than the
        // cutoff. Each half alone can use the index on `run_id`.
        const OF_PRUNED_RUNS: &str = "run_id IN (SELECT value FROM json_each(?1))";
        const RUNLESS_OLD: &str = "run_id IS NULL AND started_at < ?2";
        const LATEST: &str = "SELECT MAX(id) FROM applies GROUP BY target";
        let (candidates, total): (i64, i64) = sqlx::query_as(&format!(
            "SELECT (SELECT COUNT(*) FROM applies WHERE {OF_PRUNED_RUNS})
                  + (SELECT COUNT(*) FROM applies WHERE {RUNLESS_OLD}),
                    (SELECT COUNT(*) FROM applies)"
        ))
        .bind(runs_json)
        .bind(cutoff)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| self.err(e))?;
        if candidates == 0 {
            return Ok(Vec::new());
        }
        if candidates * 2 < total {
            let doomed = format!(
                "(SELECT id FROM applies WHERE {OF_PRUNED_RUNS}
                  UNION ALL SELECT id FROM applies WHERE {RUNLESS_OLD}
                  EXCEPT {LATEST})"
            );
            // The sets lose one reference per column that named them.
            let released: Vec<(i64, i64)> = sqlx::query_as(&format!(
                "UPDATE prefix_sets SET apply_refs = apply_refs - d.n
                 FROM (SELECT CASE k.k WHEN 1 THEN a.rules_before_set WHEN 2 THEN a.rules_after_set
                                       ELSE a.owned_set END AS s, COUNT(*) AS n
                       FROM applies a, (SELECT 1 AS k UNION ALL SELECT 2 UNION ALL SELECT 3) k
                       WHERE a.id IN {doomed} AND s IS NOT NULL GROUP BY s) AS d
                 WHERE prefix_sets.id = d.s
                 RETURNING prefix_sets.id, prefix_sets.apply_refs"
            ))
            .bind(runs_json)
            .bind(cutoff)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| self.err(e))?;
            sqlx::query(&format!("DELETE FROM applies WHERE id IN {doomed}"))
                .bind(runs_json)
                .bind(cutoff)
                .execute(&mut **tx)
                .await
                .map_err(|e| self.err(e))?;
            return Ok(released);
        }
        // Temporary tables belong to this connection and, created inside
        // the transaction, vanish with it if it rolls back.
        // (`IN` is NULL for a run-less entry: COALESCE makes it false.)
        sqlx::query(&format!(
            "CREATE TEMP TABLE pruned_applies_kept AS SELECT * FROM applies
             WHERE NOT (COALESCE({OF_PRUNED_RUNS}, 0) OR ({RUNLESS_OLD}))
                OR id IN ({LATEST})"
        ))
        .bind(runs_json)
        .bind(cutoff)
        .execute(&mut **tx)
        .await
        .map_err(|e| self.err(e))?;
        for step in [
            "CREATE TEMP TABLE pruned_applies_refs (s INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
            "INSERT INTO pruned_applies_refs (s, n)
             SELECT s, COUNT(*) FROM (SELECT rules_before_set AS s FROM pruned_applies_kept
                                      UNION ALL SELECT rules_after_set FROM pruned_applies_kept
                                      UNION ALL SELECT owned_set FROM pruned_applies_kept)
             WHERE s IS NOT NULL GROUP BY s",
        ] {
            sqlx::query(step)
                .execute(&mut **tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        let released: Vec<(i64, i64)> = sqlx::query_as(
            "UPDATE prefix_sets
             SET apply_refs = COALESCE((SELECT n FROM pruned_applies_refs WHERE s = prefix_sets.id), 0)
             WHERE apply_refs != 0 OR id IN (SELECT s FROM pruned_applies_refs)
             RETURNING id, apply_refs",
        )
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| self.err(e))?;
        for step in [
            "DELETE FROM applies",
            "INSERT INTO applies SELECT * FROM pruned_applies_kept",
            "DROP TABLE pruned_applies_kept",
            "DROP TABLE pruned_applies_refs",
        ] {
            sqlx::query(step)
                .execute(&mut **tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(released)
    }

    /// Runs, newest first. With `tag`, only runs holding a snapshot of it,
    /// each showing only that tag.
    pub async fn runs(&self, tag: Option<&str>, limit: u32) -> Result<Vec<RunEntry>, HistoryError> {
        let rows = match tag {
            Some(tag) => sqlx::query(
                "SELECT r.* FROM runs r WHERE EXISTS (SELECT 1 FROM snapshots s WHERE s.run_id = r.id AND s.tag = ?1)
                 ORDER BY r.id DESC LIMIT ?2",
            )
            .bind(tag)
            .bind(limit)
            .fetch_all(&self.pool)
            .await,
            None => sqlx::query("SELECT * FROM runs ORDER BY id DESC LIMIT ?1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await,
        }
        .map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let run_id: i64 = r.get("id");
            let snaps = sqlx::query(
                "SELECT s.tag, s.region, s.change_number, s.changed, s.added, s.removed, p.ipv4_count, p.ipv6_count
                 FROM snapshots s JOIN prefix_sets p ON p.id = s.prefix_set_id
                 WHERE s.run_id = ?1 AND (?2 IS NULL OR s.tag = ?2) ORDER BY s.tag",
            )
            .bind(run_id)
            .bind(tag)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
            out.push(RunEntry {
                run_id,
                started_at: r.get("started_at"),
                finished_at: r.get("finished_at"),
                outcome: r.get("outcome"),
                source: r.get("source"),
                cloud: r.get("cloud"),
                feed: r.get("feed_location"),
                change_number: r.get::<Option<i64>, _>("change_number").map(|n| n as u64),
                not_modified: r.get::<i64, _>("not_modified") != 0,
                allow_regression: r.get::<i64, _>("allow_regression") != 0,
                error_kind: r.get("error_kind"),
                error: r.get("error"),
                tags: snaps
                    .iter()
                    .map(|s| SnapshotEntry {
                        tag: s.get(0),
                        region: s.get(1),
                        change_number: s.get::<i64, _>(2) as u64,
                        changed: s.get::<i64, _>(3) != 0,
                        added: lines(s.get(4)),
                        removed: lines(s.get(5)),
                        ipv4: s.get::<i64, _>(6) as u64,
                        ipv6: s.get::<i64, _>(7) as u64,
                    })
                    .collect(),
            });
        }
        Ok(out)
    }

    /// When a feed changeNumber of a cloud was first recorded.
    pub async fn first_seen(
        &self,
        cloud: &str,
        change_number: u64,
    ) -> Result<Option<String>, HistoryError> {
        sqlx::query_scalar(
            "SELECT MIN(started_at) FROM runs WHERE cloud = ?1 AND change_number = ?2 AND outcome != 'failed'",
        )
        .bind(cloud)
        .bind(change_number as i64)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))
    }

    /// The id of the newest run holding snapshots.
    pub async fn latest_snapshot_run(&self) -> Result<Option<i64>, HistoryError> {
        sqlx::query_scalar("SELECT MAX(run_id) FROM snapshots")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))
    }

    /// The snapshots a run recorded, one query (the 304 path, `adopt`,
    /// `diff`). A run without snapshots is an error naming it.
    pub async fn run_snapshots(&self, run_id: i64) -> Result<Vec<TagState>, HistoryError> {
        let rows = sqlx::query(
            "SELECT s.tag, s.region, s.change_number, p.prefixes FROM snapshots s
             JOIN prefix_sets p ON p.id = s.prefix_set_id WHERE s.run_id = ?1 ORDER BY s.tag",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        if rows.is_empty() {
            return Err(HistoryError::NotFound(format!(
                "run {run_id} has no snapshots (it does not exist, failed, or was pruned); `tagsync history` lists the runs"
            )));
        }
        rows.iter()
            .map(|r| {
                Ok(TagState {
                    name: r.get(0),
                    region: r.get(1),
                    change_number: r.get::<i64, _>(2) as u64,
                    prefixes: PrefixSet::from_lines(r.get::<&str, _>(3))
                        .map_err(|e| self.err(e))?,
                })
            })
            .collect()
    }

    /// Checkpoints the WAL into the database file, then closes. SQLite
    /// checkpoints when its last connection closes, but only if that close
    /// completes before the process exits; done here, the database file
    /// alone holds everything once a command ends, so copying just that file
    /// (a backup, a read-only copy) never misses a run.
    pub async fn close(self) {
        if self.writable
            && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await
        {
            tracing::debug!("cannot checkpoint the history: {e}");
        }
        self.pool.close().await;
    }
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn insert_run(
    tx: &mut Transaction<'_, Sqlite>,
    run: &NewRun,
    outcome: &str,
    error: Option<(&str, &str)>,
) -> Result<i64, sqlx::Error> {
    let id = sqlx::query(
        "INSERT INTO runs (started_at, finished_at, outcome, error_kind, error, source, cloud, feed_location,
             found_by, feed_sha256, feed_bytes, change_number, etag, last_modified, not_modified,
             allow_regression, selection)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )
    .bind(&run.started_at)
    .bind(now())
    .bind(outcome)
    .bind(error.map(|e| e.0))
    .bind(error.map(|e| e.1))
    .bind(&run.source)
    .bind(&run.cloud)
    .bind(&run.feed_location)
    .bind(&run.found_by)
    .bind(&run.feed_sha256)
    .bind(run.feed_bytes.map(|n| n as i64))
    .bind(run.change_number.map(|n| n as i64))
    .bind(&run.etag)
    .bind(&run.last_modified)
    .bind(run.not_modified)
    .bind(run.allow_regression)
    .bind(&run.selection)
    .execute(&mut **tx)
    .await?
    .last_insert_rowid();
    Ok(id)
}

/// An event to be written to the outbox with the fact it describes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The CloudEvents `id`: the same for every receiver.
    pub event_id: String,
    /// The CloudEvents `type`.
    pub kind: String,
    pub created_at: String,
    /// The event exactly as it is posted.
    pub body: String,
    /// The receivers that want it.
    pub sinks: Vec<String>,
}

/// Writes events in the caller's transaction.
pub(crate) async fn enqueue_events(
    tx: &mut Transaction<'_, Sqlite>,
    events: &[Outgoing],
) -> Result<(), sqlx::Error> {
    for e in events {
        for sink in &e.sinks {
            sqlx::query(
                "INSERT OR IGNORE INTO outbox (event_id, sink, type, created_at, body, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?4)",
            )
            .bind(&e.event_id)
            .bind(sink)
            .bind(&e.kind)
            .bind(&e.created_at)
            .bind(&e.body)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// Stores a prefix set once per distinct content (by the SHA-256 of its
/// canonical text) and returns its id.
pub(crate) async fn store_prefix_set(
    tx: &mut Transaction<'_, Sqlite>,
    set: &PrefixSet,
) -> Result<i64, sqlx::Error> {
    let text = set.to_lines();
    let sha = sha256_hex(text.as_bytes());
    let existing: Option<i64> = sqlx::query_scalar("SELECT id FROM prefix_sets WHERE sha256 = ?1")
        .bind(&sha)
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let id = sqlx::query(
        "INSERT INTO prefix_sets (sha256, ipv4_count, ipv6_count, prefixes) VALUES (?1, ?2, ?3, ?4)",
    )
    .bind(&sha)
    .bind(set.v4().len() as i64)
    .bind(set.v6().len() as i64)
    .bind(&text)
    .execute(&mut **tx)
    .await?
    .last_insert_rowid();
    Ok(id)
}

async fn insert_snapshot(
    tx: &mut Transaction<'_, Sqlite>,
    run_id: i64,
    tag: &TagState,
) -> Result<TagChange, sqlx::Error> {
    let set_id = store_prefix_set(tx, &tag.prefixes).await?;
    let previous = sqlx::query(
        "SELECT s.id, s.run_id, s.change_number, p.prefixes, s.prefix_set_id FROM snapshots s
         JOIN prefix_sets p ON p.id = s.prefix_set_id WHERE s.tag = ?1 ORDER BY s.id DESC LIMIT 1",
    )
    .bind(&tag.name)
    .fetch_optional(&mut **tx)
    .await?;
    let (previous_id, previous_run_id, previous_change_number, added, removed) = match &previous {
        Some(row) => {
            let prev_set_id: i64 = row.get(4);
            let (added, removed) = if prev_set_id == set_id {
                (PrefixSet::new(), PrefixSet::new())
            } else {
                let prev = PrefixSet::from_lines(row.get::<&str, _>(3))
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                (
                    tag.prefixes.difference(&prev),
                    prev.difference(&tag.prefixes),
                )
            };
            (
                Some(row.get::<i64, _>(0)),
                Some(row.get::<i64, _>(1)),
                Some(row.get::<i64, _>(2) as u64),
                added,
                removed,
            )
        }
        None => (None, None, None, PrefixSet::new(), PrefixSet::new()),
    };
    let change = TagChange {
        state: tag.clone(),
        previous_change_number,
        previous_run_id,
        first: previous.is_none(),
        added,
        removed,
    };
    sqlx::query(
        "INSERT INTO snapshots (run_id, tag, region, change_number, prefix_set_id, previous_snapshot_id,
             changed, added, removed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .bind(run_id)
    .bind(&tag.name)
    .bind(&tag.region)
    .bind(tag.change_number as i64)
    .bind(set_id)
    .bind(previous_id)
    .bind(change.changed())
    .bind(change.added.to_lines())
    .bind(change.removed.to_lines())
    .execute(&mut **tx)
    .await?;
    Ok(change)
}
