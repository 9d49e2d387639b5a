-- Sensors (`wait:`). A poke that finds nothing ends its attempt `rescheduled` and puts the task
-- back to waiting (`up_for_retry` with the next poke's time), holding no worker slot.
-- `pokes` counts those attempts (retries count the others); `waiting_since_ms` is when the
-- first poke of the current wait started (the wait's timeout counts from there).
ALTER TABLE task_attempts DROP CONSTRAINT task_attempts_state_check;
ALTER TABLE task_attempts ADD CONSTRAINT task_attempts_state_check
    CHECK (state IN ('running', 'success', 'failed', 'timed_out', 'cancelled', 'lost', 'rescheduled'));
ALTER TABLE task_instances ADD COLUMN pokes BIGINT NOT NULL DEFAULT 0 CHECK (pokes >= 0);
ALTER TABLE task_instances ADD COLUMN waiting_since_ms BIGINT;
