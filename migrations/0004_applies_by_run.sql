-- Applies by run: a fresh process looks for the last run whose targets all
-- succeeded (NOT EXISTS over a run's applies) at every start, and deleting
-- a run nulls its applies' run_id. Without this index both scan the whole
-- table once per run.
CREATE INDEX applies_by_run ON applies (run_id);
