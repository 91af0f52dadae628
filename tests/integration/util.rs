//! Helpers: run the real binary in a temporary directory, unpack fixtures,
//! and read the history database back.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::Row;

pub const ADT: &str = "AzureDigitalTwins";

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Gunzips a fixture into memory.
pub fn fixture_bytes(rel: &str) -> Vec<u8> {
    let file =
        std::fs::File::open(fixtures().join(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut out)
        .expect("gunzip fixture");
    out
}

/// The weekly ADT captures, in date order (file names sort by date).
pub fn weekly_fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures().join("adt-weekly"))
        .expect("adt-weekly fixtures")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json.gz"))
        .map(|n| format!("adt-weekly/{n}"))
        .collect();
    names.sort();
    names
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A scratch directory the binary runs in.
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    /// Unpacks a gzipped fixture into the directory.
    pub fn fixture(&self, rel: &str) -> PathBuf {
        let name = Path::new(rel)
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.trim_end_matches(".gz").to_owned())
            .expect("fixture name");
        self.write(&name, fixture_bytes(rel))
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tagsync"));
        cmd.current_dir(self.dir.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("TAGSYNC_")
                || k == "RUST_LOG"
                || k.starts_with("AZURE_")
                || k == "IDENTITY_ENDPOINT"
            {
                cmd.env_remove(k);
            }
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        finish(cmd.output().expect("run tagsync"))
    }

    pub fn db(&self) -> PathBuf {
        self.path("tagsync.db")
    }
}

pub fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A run row: (id, outcome, error_kind).
pub type RunRow = (i64, String, Option<String>);

/// The database contents that matter, as comparable values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbState {
    pub runs: Vec<RunRow>,
    /// Every snapshot and prefix set row, rendered.
    pub snapshots: Vec<String>,
    pub prefix_sets: Vec<String>,
}

impl DbState {
    /// The good history: everything but failed runs.
    pub fn good(&self) -> (Vec<RunRow>, &[String], &[String]) {
        (
            self.runs
                .iter()
                .filter(|r| r.1 != "failed")
                .cloned()
                .collect(),
            &self.snapshots,
            &self.prefix_sets,
        )
    }
}

/// Runs `f` on a connection pool of the SQLite file at `path`: the one way
/// tests reach a history database behind tagsync's back.
pub fn with_db<T>(path: &Path, f: impl AsyncFnOnce(&sqlx::SqlitePool) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
        let pool = sqlx::SqlitePool::connect_with(opts).await.expect("open db");
        let out = f(&pool).await;
        pool.close().await;
        out
    })
}

/// A new database in `dir` with the schema an older tagsync left: the
/// migrations whose file names sort before `first_missing` (e.g. "0005").
pub fn database_before_migration(dir: &TestDir, first_missing: &str) -> PathBuf {
    let old_migrations = dir.path(&format!("migrations-before-{first_missing}"));
    std::fs::create_dir(&old_migrations).expect("mkdir");
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).expect("ls")
    {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        if name.as_str() < first_missing {
            std::fs::copy(&path, old_migrations.join(&name)).expect("copy");
        }
    }
    let db = dir.path(&format!("before-{first_missing}.db"));
    std::fs::File::create(&db).expect("create");
    with_db(&db, async |pool| {
        sqlx::migrate::Migrator::new(old_migrations.as_path())
            .await
            .expect("migrator")
            .run(pool)
            .await
            .expect("old schema");
    });
    db
}

/// No prefix set is left that nothing refers to, every set counts exactly
/// the apply columns that refer to it, and every reference resolves.
pub fn assert_history_references_hold(db: &Path) {
    let scalar = |sql: &str| {
        with_db(db, async |pool| {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
    };
    let orphans = scalar(
        "SELECT COUNT(*) FROM prefix_sets p WHERE NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.prefix_set_id = p.id)
           AND NOT EXISTS (SELECT 1 FROM applies a
                           WHERE a.rules_before_set = p.id OR a.rules_after_set = p.id OR a.owned_set = p.id)",
    );
    assert_eq!(orphans, 0, "prefix sets nothing refers to");
    let miscounted = scalar(
        "SELECT COUNT(*) FROM prefix_sets p WHERE p.apply_refs !=
           (SELECT COUNT(*) FROM applies a WHERE a.rules_before_set = p.id)
         + (SELECT COUNT(*) FROM applies a WHERE a.rules_after_set = p.id)
         + (SELECT COUNT(*) FROM applies a WHERE a.owned_set = p.id)",
    );
    assert_eq!(miscounted, 0, "prefix sets whose apply_refs is wrong");
    let dangling = scalar(
        "SELECT COUNT(*) FROM applies a WHERE NOT EXISTS (SELECT 1 FROM prefix_sets p WHERE p.id = a.rules_after_set)
            OR NOT EXISTS (SELECT 1 FROM prefix_sets p WHERE p.id = a.rules_before_set)
            OR (a.owned_set IS NOT NULL AND NOT EXISTS (SELECT 1 FROM prefix_sets p WHERE p.id = a.owned_set))",
    );
    assert_eq!(dangling, 0, "applies referring to a missing set");
    let runless = scalar(
        "SELECT COUNT(*) FROM applies a WHERE a.run_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = a.run_id)",
    );
    assert_eq!(runless, 0, "applies naming a pruned run");
}

/// Executes one statement on the database at `path`.
pub fn execute_sql(path: &Path, sql: &str) {
    with_db(path, async |pool| {
        sqlx::query(sql)
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    });
}

pub fn db_state(path: &Path) -> DbState {
    with_db(path, async |pool| {
        let runs = sqlx::query("SELECT id, outcome, error_kind FROM runs ORDER BY id")
            .fetch_all(pool)
            .await
            .expect("runs")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let snapshots = sqlx::query(
            "SELECT id, run_id, tag, region, change_number, prefix_set_id, previous_snapshot_id, changed, added, removed FROM snapshots ORDER BY id",
        )
        .fetch_all(pool)
        .await
        .expect("snapshots")
        .iter()
        .map(|r| {
            format!(
                "{}|{}|{}|{}|{}|{}|{:?}|{}|{}|{}",
                r.get::<i64, _>(0),
                r.get::<i64, _>(1),
                r.get::<String, _>(2),
                r.get::<String, _>(3),
                r.get::<i64, _>(4),
                r.get::<i64, _>(5),
                r.get::<Option<i64>, _>(6),
                r.get::<i64, _>(7),
                r.get::<String, _>(8),
                r.get::<String, _>(9)
            )
        })
        .collect();
        let prefix_sets = sqlx::query("SELECT id, sha256, prefixes FROM prefix_sets ORDER BY id")
            .fetch_all(pool)
            .await
            .expect("prefix sets")
            .iter()
            .map(|r| {
                format!(
                    "{}|{}|{}",
                    r.get::<i64, _>(0),
                    r.get::<String, _>(1),
                    r.get::<String, _>(2)
                )
            })
            .collect();
        DbState {
            runs,
            snapshots,
            prefix_sets,
        }
    })
}

/// The canonical prefixes of one tag in a feed, computed independently of
/// tagsync's scanner: a full serde_json parse and ipnet.
pub fn tag_prefixes(feed: &[u8], tag: &str) -> std::collections::BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_slice(feed).expect("fixture is JSON");
    let values = v["values"].as_array().expect("values");
    let t = values
        .iter()
        .find(|t| t["name"] == tag)
        .unwrap_or_else(|| panic!("{tag} in fixture"));
    t["properties"]["addressPrefixes"]
        .as_array()
        .expect("prefixes")
        .iter()
        .map(|p| {
            let net: ipnet::IpNet = p.as_str().expect("string").parse().expect("cidr");
            net.trunc().to_string()
        })
        .collect()
}
