-- no-transaction
-- Task kinds are the DAG loader's to name (`empty` now, the dense kinds later); the database
-- only checks that a kind looks like one. SQLite cannot change a CHECK in place, so the table
-- is rebuilt (SQLite's documented procedure): foreign keys off so that dropping the old table
-- cascades nothing, everything copied in one transaction, then its indexes and trigger again.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE task_instances_rebuilt (
    run_id              INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_id             TEXT NOT NULL,
    position            INTEGER NOT NULL,
    kind                TEXT NOT NULL CHECK (length(kind) BETWEEN 1 AND 32 AND kind NOT GLOB '*[^a-z_]*'),
    state               TEXT NOT NULL CHECK (state IN ('scheduled', 'queued', 'running', 'success', 'failed',
                                                       'up_for_retry', 'upstream_failed', 'skipped', 'cancelled')),
    needs_json          TEXT NOT NULL,
    priority            INTEGER NOT NULL,
    retries             INTEGER NOT NULL CHECK (retries >= 0),
    retry_delay_ms      INTEGER NOT NULL CHECK (retry_delay_ms >= 0),
    timeout_ms          INTEGER CHECK (timeout_ms > 0),
    attempts            INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    retry_at_ms         INTEGER,
    device              TEXT,
    output_path         TEXT,
    rows_out            INTEGER,
    bytes_out           INTEGER,
    error               TEXT,
    started_at_ms       INTEGER,
    finished_at_ms      INTEGER,
    queued_at_ms        INTEGER,
    lease_owner         TEXT,
    lease_expires_at_ms INTEGER,
    device_pref         TEXT NOT NULL DEFAULT 'auto' CHECK (device_pref IN ('auto', 'cpu', 'gpu')),
    pool                TEXT,
    in_process          INTEGER NOT NULL DEFAULT 0 CHECK (in_process IN (0, 1)),
    PRIMARY KEY (run_id, task_id)
);
INSERT INTO task_instances_rebuilt (run_id, task_id, position, kind, state, needs_json, priority, retries,
        retry_delay_ms, timeout_ms, attempts, retry_at_ms, device, output_path, rows_out, bytes_out, error,
        started_at_ms, finished_at_ms, queued_at_ms, lease_owner, lease_expires_at_ms, device_pref, pool, in_process)
    SELECT run_id, task_id, position, kind, state, needs_json, priority, retries,
        retry_delay_ms, timeout_ms, attempts, retry_at_ms, device, output_path, rows_out, bytes_out, error,
        started_at_ms, finished_at_ms, queued_at_ms, lease_owner, lease_expires_at_ms, device_pref, pool, in_process
    FROM task_instances;
DROP TABLE task_instances;
ALTER TABLE task_instances_rebuilt RENAME TO task_instances;
CREATE INDEX task_instances_leases
    ON task_instances (lease_expires_at_ms)
    WHERE state = 'running';
CREATE INDEX task_instances_pool_active ON task_instances (pool)
    WHERE pool IS NOT NULL AND state IN ('queued', 'running');
CREATE INDEX task_instances_claimable
    ON task_instances (priority DESC, queued_at_ms, run_id, task_id)
    WHERE state = 'queued' AND in_process = 0;
CREATE TRIGGER task_instances_legal_transition BEFORE UPDATE OF state ON task_instances
WHEN OLD.state <> NEW.state
 AND NOT EXISTS (SELECT 1 FROM task_state_transitions t WHERE t.from_state = OLD.state AND t.to_state = NEW.state)
BEGIN
    SELECT RAISE(ABORT, 'illegal task state transition');
END;
COMMIT;
PRAGMA foreign_keys = ON;
