-- Pruning that empties most of `applies` at the cost of a page walk.
--
-- SQLite deletes rows one at a time, rebalancing the table and both of its
-- indexes for each: about 4 us a row, 1.5 s for the 400,000 entries of 400
-- weekly runs over 1,000 targets that all changed every week. When most of
-- the table goes, retention instead copies the rows it keeps aside, empties
-- the table with `DELETE FROM applies` and writes them back. An unqualified
-- DELETE frees the table's pages without visiting its rows (SQLite's
-- truncate optimization, 0.17 s for the same table), but only on a table
-- that takes part in no foreign key. `applies.run_id` therefore loses its
-- `REFERENCES runs (id) ON DELETE SET NULL`: the history itself clears the
-- run id of the entries it keeps when it deletes their run, in the same
-- transaction. Nothing refers to `applies`, and its prefix-set columns lost
-- their foreign keys in 0006.
CREATE TEMP TABLE applies_sequence AS SELECT seq FROM sqlite_sequence WHERE name = 'applies';

CREATE TABLE applies_rebuilt (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The run of the entry's latest apply; NULL once that run was pruned.
    run_id           INTEGER,
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
                             rules_before, rules_after, added, removed, drift, rules_before_set, rules_after_set,
                             repeats, owned_set)
SELECT id, run_id, target, resource_id, started_at, finished_at, outcome, guard, error,
       rules_before, rules_after, added, removed, drift, rules_before_set, rules_after_set, repeats, owned_set
FROM applies;
DROP TABLE applies;
ALTER TABLE applies_rebuilt RENAME TO applies;
CREATE INDEX applies_by_target ON applies (target, id);
CREATE INDEX applies_by_run ON applies (run_id);

-- Apply ids are never reused: the sequence keeps its high-water mark, even
-- where the newest entries were deleted before this rebuild.
DELETE FROM sqlite_sequence WHERE name = 'applies';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'applies', MAX(COALESCE((SELECT seq FROM applies_sequence), 0), COALESCE((SELECT MAX(id) FROM applies), 0));
DROP TABLE applies_sequence;
