-- Workers say what they have; tasks say which device they asked for.
CREATE TABLE workers (
    worker_id       TEXT PRIMARY KEY,
    host            TEXT NOT NULL,
    slots           INTEGER NOT NULL CHECK (slots > 0),
    gpus            INTEGER NOT NULL CHECK (gpus >= 0),
    memory_bytes    INTEGER NOT NULL CHECK (memory_bytes >= 0),
    started_at_ms   INTEGER NOT NULL,
    heartbeat_at_ms INTEGER NOT NULL
);

ALTER TABLE task_instances ADD COLUMN device_pref TEXT NOT NULL DEFAULT 'auto'
    CHECK (device_pref IN ('auto', 'cpu', 'gpu'));
