-- Sensors (`wait:`). A poke that finds nothing ends its attempt `rescheduled` and puts the task
-- back to waiting (`up_for_retry` with the next poke's time), holding no worker slot.
-- `pokes` counts those attempts (retries count the others); `waiting_since_ms` is when the
-- first poke of the current wait started (the wait's timeout counts from there).
ALTER TABLE task_instances ADD COLUMN pokes INTEGER NOT NULL DEFAULT 0 CHECK (pokes >= 0);
ALTER TABLE task_instances ADD COLUMN waiting_since_ms INTEGER;

-- SQLite cannot change a CHECK: task_attempts is rebuilt, and task_logs (which references
-- it, ON DELETE CASCADE) is copied aside first so that dropping the old table deletes none
-- of its lines; renaming the new tables points task_logs' reference at the new one.
CREATE TABLE task_attempts_0021 (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id         INTEGER NOT NULL,
    task_id        TEXT NOT NULL,
    attempt        INTEGER NOT NULL CHECK (attempt >= 1),
    state          TEXT NOT NULL CHECK (state IN ('running', 'success', 'failed', 'timed_out', 'cancelled', 'lost', 'rescheduled')),
    device         TEXT,
    owner          TEXT,
    error          TEXT,
    rows_out       INTEGER,
    bytes_out      INTEGER,
    started_at_ms  INTEGER NOT NULL,
    finished_at_ms INTEGER,
    device_note    TEXT,
    predicted_cpu_us INTEGER,
    predicted_gpu_us INTEGER,
    predicted_kind TEXT,
    cpu_factor     REAL,
    gpu_factor     REAL,
    io_us          INTEGER,
    transfer_us    INTEGER,
    compute_us     INTEGER,
    route          TEXT,
    UNIQUE (run_id, task_id, attempt),
    FOREIGN KEY (run_id, task_id) REFERENCES task_instances (run_id, task_id) ON DELETE CASCADE
);
INSERT INTO task_attempts_0021 (id, run_id, task_id, attempt, state, device, owner, error, rows_out,
        bytes_out, started_at_ms, finished_at_ms, device_note, predicted_cpu_us, predicted_gpu_us,
        predicted_kind, cpu_factor, gpu_factor, io_us, transfer_us, compute_us, route)
    SELECT id, run_id, task_id, attempt, state, device, owner, error, rows_out,
        bytes_out, started_at_ms, finished_at_ms, device_note, predicted_cpu_us, predicted_gpu_us,
        predicted_kind, cpu_factor, gpu_factor, io_us, transfer_us, compute_us, route
    FROM task_attempts;
CREATE TABLE task_logs_0021 (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    attempt_id INTEGER NOT NULL REFERENCES task_attempts_0021 (id) ON DELETE CASCADE,
    stream     TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
    line       TEXT NOT NULL,
    at_ms      INTEGER NOT NULL
);
INSERT INTO task_logs_0021 (id, attempt_id, stream, line, at_ms)
    SELECT id, attempt_id, stream, line, at_ms FROM task_logs;
DROP TABLE task_logs;
DROP TABLE task_attempts;
ALTER TABLE task_attempts_0021 RENAME TO task_attempts;
ALTER TABLE task_logs_0021 RENAME TO task_logs;
CREATE INDEX task_logs_by_attempt ON task_logs (attempt_id, id);
