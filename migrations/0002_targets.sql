-- Targets, the ownership ledger, and every apply.
--
-- The ledger holds, per target, the IP rules tagsync wrote and so may
-- remove. Nothing else on a target is ever removed. `last_desired_at` is the
-- last run in which the prefix was in the target's desired set: a prefix
-- that left the tag is removed only once that is older than the target's
-- removal grace period.

CREATE TABLE targets (
    name        TEXT PRIMARY KEY,
    resource_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE ownership (
    target          TEXT NOT NULL REFERENCES targets (name) ON DELETE CASCADE,
    prefix          TEXT NOT NULL,
    added_at        TEXT NOT NULL,
    last_desired_at TEXT NOT NULL,
    -- 1 when taken over with `tagsync targets adopt` rather than written.
    adopted         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (target, prefix)
);

CREATE TABLE applies (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    target       TEXT    NOT NULL,
    resource_id  TEXT    NOT NULL,
    started_at   TEXT    NOT NULL,
    finished_at  TEXT    NOT NULL,
    outcome      TEXT    NOT NULL CHECK (outcome IN ('applied', 'unchanged', 'dry-run', 'refused', 'failed')),
    guard        TEXT,
    error        TEXT,
    -- Canonical prefix lists, one a line.
    rules_before TEXT    NOT NULL DEFAULT '',
    rules_after  TEXT    NOT NULL DEFAULT '',
    added        TEXT    NOT NULL DEFAULT '',
    removed      TEXT    NOT NULL DEFAULT '',
    drift        TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX applies_by_target ON applies (target, id);
