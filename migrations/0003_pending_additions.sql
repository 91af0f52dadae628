-- Write-ahead ownership, and the `drifted` outcome.
--
-- Before a write is sent, the prefixes it adds are recorded here. If the
-- process dies or the answer is lost after Azure applied the write, the next
-- run reads the target and settles them: a pending prefix found live becomes
-- owned, one not found is forgotten. So a rule tagsync wrote is never left
-- outside the ledger, whatever happened to the run that wrote it.

CREATE TABLE pending_additions (
    target      TEXT NOT NULL REFERENCES targets (name) ON DELETE CASCADE,
    prefix      TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (target, prefix)
);

-- SQLite cannot change a CHECK constraint in place: rebuild `applies` with
-- `drifted` (written, but the rules read back differ from the plan).
CREATE TABLE applies_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    target       TEXT    NOT NULL,
    resource_id  TEXT    NOT NULL,
    started_at   TEXT    NOT NULL,
    finished_at  TEXT    NOT NULL,
    outcome      TEXT    NOT NULL CHECK (outcome IN ('applied', 'unchanged', 'dry-run', 'refused', 'failed', 'drifted')),
    guard        TEXT,
    error        TEXT,
    rules_before TEXT    NOT NULL DEFAULT '',
    rules_after  TEXT    NOT NULL DEFAULT '',
    added        TEXT    NOT NULL DEFAULT '',
    removed      TEXT    NOT NULL DEFAULT '',
    drift        TEXT    NOT NULL DEFAULT ''
);
INSERT INTO applies_new SELECT * FROM applies;
DROP TABLE applies;
ALTER TABLE applies_new RENAME TO applies;
CREATE INDEX applies_by_target ON applies (target, id);
