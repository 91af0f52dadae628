-- Notifications and rollback.
--
-- `instance` holds one random id per history, made when this migration
-- runs: the `source` of every CloudEvent this history's runs send, so a
-- receiver can tell two tagsync installations apart and an event id is
-- unique within it. It survives pod restarts with the database.
--
-- `outbox` holds the events not yet delivered, one row per event and
-- receiver. A run writes them in the same transaction that records what
-- they describe (the feed run, a target's apply), so an event exists if and
-- only if its fact does; delivery deletes the row. A receiver that is down
-- keeps its rows until it answers (retried by the next run, and by the
-- daemon between runs) or until retention prunes them.
--
-- `applies.owned_set` is the prefix set tagsync owned on the target after
-- that apply: what `tagsync rollback --to` returns the target to. Rows
-- written before this migration have none.
--
-- Pruning at the cost of what it deletes: `applies` is rebuilt without
-- foreign keys on its three prefix-set columns and without indexes on them.
-- Each prefix set counts instead how many apply columns refer to it
-- (`apply_refs`, kept by the history in the same transactions that insert
-- and delete applies): retention deletes a set when its count reaches 0
-- and no snapshot holds it, without looking up every deleted apply's sets
-- in three indexes (and, for the foreign keys, its parents) row by row.
CREATE TABLE instance (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    -- 32 random hex digits (SQLite's randomblob).
    uuid       TEXT    NOT NULL,
    created_at TEXT    NOT NULL
);
INSERT INTO instance (id, uuid, created_at)
VALUES (1, lower(hex(randomblob(16))), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL,
    sink            TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    -- The CloudEvent exactly as it is posted.
    body            TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    last_error      TEXT,
    UNIQUE (sink, event_id)
);
CREATE INDEX outbox_by_sink ON outbox (sink, id);
CREATE INDEX outbox_by_age ON outbox (created_at);

CREATE TABLE applies_rebuilt (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id           INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    target           TEXT    NOT NULL,
    resource_id      TEXT    NOT NULL,
    started_at       TEXT    NOT NULL,
    finished_at      TEXT    NOT NULL,
    outcome          TEXT    NOT NULL CHECK (outcome IN ('applied', 'unchanged', 'dry-run', 'refused', 'failed', 'drifted')),
    guard            TEXT,
    error            TEXT,
    rules_before     TEXT    NOT NULL DEFAULT '',
    rules_after      TEXT    NOT NULL DEFAULT '',
    added            TEXT    NOT NULL DEFAULT '',
    removed          TEXT    NOT NULL DEFAULT '',
    drift            TEXT    NOT NULL DEFAULT '',
    rules_before_set INTEGER,
    rules_after_set  INTEGER,
    repeats          INTEGER NOT NULL DEFAULT 1,
    owned_set        INTEGER
);
INSERT INTO applies_rebuilt (id, run_id, target, resource_id, started_at, finished_at, outcome, guard, error,
                             rules_before, rules_after, added, removed, drift, rules_before_set, rules_after_set, repeats)
SELECT id, run_id, target, resource_id, started_at, finished_at, outcome, guard, error,
       rules_before, rules_after, added, removed, drift, rules_before_set, rules_after_set, repeats
FROM applies;
DROP TABLE applies;
ALTER TABLE applies_rebuilt RENAME TO applies;
CREATE INDEX applies_by_target ON applies (target, id);
CREATE INDEX applies_by_run ON applies (run_id);

ALTER TABLE prefix_sets ADD COLUMN apply_refs INTEGER NOT NULL DEFAULT 0;
UPDATE prefix_sets SET apply_refs = c.n
FROM (SELECT s, COUNT(*) AS n
      FROM (SELECT rules_before_set AS s FROM applies
            UNION ALL SELECT rules_after_set FROM applies
            UNION ALL SELECT owned_set FROM applies)
      WHERE s IS NOT NULL GROUP BY s) AS c
WHERE c.s = prefix_sets.id;
