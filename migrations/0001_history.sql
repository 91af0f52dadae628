-- History of feed runs and tag snapshots.
--
-- A run is one `tagsync sync` (or daemon tick). Each successful run records,
-- per selected tag, a snapshot: the tag's changeNumber and prefix set, and the
-- prefixes added and removed against the previous snapshot of that tag.
-- Prefix sets are stored once per distinct content (prefix_sets.sha256), so a
-- tag that does not change for months costs one small row a week.
-- Timestamps are UTC, RFC 3339 with milliseconds ("2026-11-22T13:00:00.000Z"),
-- so they sort as text.

CREATE TABLE runs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at       TEXT    NOT NULL,
    finished_at      TEXT    NOT NULL,
    outcome          TEXT    NOT NULL CHECK (outcome IN ('changed', 'unchanged', 'failed')),
    error_kind       TEXT,
    error            TEXT,
    source           TEXT    NOT NULL,
    cloud            TEXT    NOT NULL,
    feed_location    TEXT,
    found_by         TEXT,
    feed_sha256      TEXT,
    feed_bytes       INTEGER,
    change_number    INTEGER,
    etag             TEXT,
    last_modified    TEXT,
    not_modified     INTEGER NOT NULL DEFAULT 0,
    allow_regression INTEGER NOT NULL DEFAULT 0,
    selection        TEXT    NOT NULL
);

CREATE INDEX runs_by_cloud ON runs (cloud, outcome, id);

CREATE TABLE prefix_sets (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256     TEXT    NOT NULL UNIQUE,
    ipv4_count INTEGER NOT NULL,
    ipv6_count INTEGER NOT NULL,
    -- Canonical text: one prefix a line, IPv4 first, sorted.
    prefixes   TEXT    NOT NULL
);

CREATE TABLE snapshots (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id               INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    tag                  TEXT    NOT NULL,
    region               TEXT    NOT NULL,
    change_number        INTEGER NOT NULL,
    prefix_set_id        INTEGER NOT NULL REFERENCES prefix_sets (id),
    previous_snapshot_id INTEGER REFERENCES snapshots (id) ON DELETE SET NULL,
    -- 1 when the prefixes differ from the previous snapshot or there is none.
    changed              INTEGER NOT NULL,
    added                TEXT    NOT NULL DEFAULT '',
    removed              TEXT    NOT NULL DEFAULT '',
    UNIQUE (run_id, tag)
);

CREATE INDEX snapshots_by_tag ON snapshots (tag, id);
CREATE INDEX snapshots_by_prefix_set ON snapshots (prefix_set_id);
