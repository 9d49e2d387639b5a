-- Named pools cap how many tasks that name them are queued or running at once, across runs.
CREATE TABLE pools (
    name          TEXT PRIMARY KEY,
    slots         INTEGER NOT NULL CHECK (slots >= 0),
    description   TEXT NOT NULL DEFAULT '',
    updated_at_ms INTEGER NOT NULL
);

ALTER TABLE task_instances ADD COLUMN pool TEXT;
CREATE INDEX task_instances_pool_active ON task_instances (pool)
    WHERE pool IS NOT NULL AND state IN ('queued', 'running');

-- A backfill is owned by the scheduler: it creates the runs of a date range, at most
-- max_active_runs at a time, and ends when all of them have.
CREATE TABLE backfills (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    dag_id          TEXT NOT NULL,
    dag_version_id  INTEGER NOT NULL REFERENCES dag_versions (id),
    from_date       TEXT NOT NULL,
    to_date         TEXT NOT NULL,
    reprocess       TEXT NOT NULL CHECK (reprocess IN ('none', 'failed', 'all')),
    max_active_runs INTEGER NOT NULL CHECK (max_active_runs > 0),
    params_json     TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('running', 'success', 'failed', 'cancelled')),
    created_at_ms   INTEGER NOT NULL,
    finished_at_ms  INTEGER
);

ALTER TABLE runs ADD COLUMN backfill_id INTEGER REFERENCES backfills (id);
CREATE UNIQUE INDEX runs_backfilled_once ON runs (backfill_id, logical_date)
    WHERE backfill_id IS NOT NULL;

-- `amdahl runs cancel` asks; whoever drives the run (the scheduler, or the owner process)
-- stops its tasks and ends it cancelled.
ALTER TABLE runs ADD COLUMN cancel_requested_at_ms INTEGER;

-- Tasks of runs an `amdahl run` process drives are that process's to start; workers claim
-- only the others, through an index that holds only those.
ALTER TABLE task_instances ADD COLUMN in_process INTEGER NOT NULL DEFAULT 0 CHECK (in_process IN (0, 1));
DROP INDEX task_instances_claimable;
CREATE INDEX task_instances_claimable
    ON task_instances (priority DESC, queued_at_ms, run_id, task_id)
    WHERE state = 'queued' AND in_process = 0;
