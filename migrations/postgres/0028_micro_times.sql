-- When an attempt's start and end were written, in µs since the Unix epoch by the writing
-- process's clock (`wall_us` in scheduler/src/store/mod.rs): the milliseconds beside them
-- cannot show a hand-off (one task's end to the next one's start) of under a millisecond.
-- NULL for attempts written before this migration.
ALTER TABLE task_attempts ADD COLUMN started_at_us BIGINT;
ALTER TABLE task_attempts ADD COLUMN finished_at_us BIGINT;
