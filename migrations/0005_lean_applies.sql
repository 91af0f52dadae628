-- A lean history of applies.
--
-- An apply refers to the stored prefix sets of the target's rules before
-- and after (deduplicated like the tag snapshots: a target whose rules do
-- not change for a year costs one prefix set, not 52 copies of its rules).
-- The text columns rules_before / rules_after stay for the rows written
-- before this migration and are left empty by new ones.
--
-- Consecutive unchanged applies of a target (same rules, no error) are one
-- row: `repeats` counts the runs it stands for, started_at is the first,
-- finished_at and run_id the last. A weekly run over a fleet that does not
-- change adds no row at all.
--
-- Retention now prunes applies with their runs; these indexes let pruning
-- find the prefix sets nothing refers to any more by looking only at the
-- sets of the rows it deleted, and find old runs by start time.
ALTER TABLE applies ADD COLUMN rules_before_set INTEGER REFERENCES prefix_sets (id);
ALTER TABLE applies ADD COLUMN rules_after_set INTEGER REFERENCES prefix_sets (id);
ALTER TABLE applies ADD COLUMN repeats INTEGER NOT NULL DEFAULT 1;
CREATE INDEX applies_by_before_set ON applies (rules_before_set);
CREATE INDEX applies_by_after_set ON applies (rules_after_set);
CREATE INDEX runs_by_start ON runs (started_at);
