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

ALTER TABLE applies ADD COLUMN owned_set INTEGER REFERENCES prefix_sets (id);
CREATE INDEX applies_by_owned_set ON applies (owned_set);
