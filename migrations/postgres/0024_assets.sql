-- Assets (issue 21): events, who produces and waits on what, how far each waiting DAG has read,
-- and the events that started each run.
--
-- An event is recorded once: a task's success records its `produces:` in the transaction that
-- records the end (unique per asset, run, task and attempt); a run's success records `dag:ID`
-- for DAGs that wait on it with `after:` (attempt 0, task ''); a post from outside has no run
-- (NULLs are distinct, so posts are never merged).
CREATE TABLE asset_events (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    asset         TEXT NOT NULL,
    source        TEXT NOT NULL CHECK (source IN ('task', 'run', 'api')),
    dag_id        TEXT,
    run_id        BIGINT,
    task_id       TEXT,
    attempt       BIGINT,
    extra_json    TEXT,
    created_at_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX asset_events_once ON asset_events (asset, run_id, task_id, attempt);
CREATE INDEX asset_events_by_asset ON asset_events (asset, id);

-- What each DAG's current version produces (by task) and waits on (task ''), written when the
-- scheduler reads its file.
CREATE TABLE asset_links (
    dag_id  TEXT NOT NULL,
    asset   TEXT NOT NULL,
    role    TEXT NOT NULL CHECK (role IN ('produces', 'consumes')),
    task_id TEXT NOT NULL,
    PRIMARY KEY (dag_id, asset, role, task_id)
);
CREATE INDEX asset_links_by_asset ON asset_links (asset);

-- The newest event of each watched key a DAG has consumed; moved forward fenced on its old
-- value in the transaction that creates the run, so two schedulers start one run.
CREATE TABLE asset_cursors (
    dag_id   TEXT NOT NULL,
    asset    TEXT NOT NULL,
    event_id BIGINT NOT NULL,
    PRIMARY KEY (dag_id, asset)
);

-- The events that started a run (a run started by assets has `started_by = 'assets'`; its
-- `trigger_kind` stays 'manual', whose check SQLite could only change by rebuilding `runs`).
CREATE TABLE run_asset_events (
    run_id   BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    event_id BIGINT NOT NULL REFERENCES asset_events (id) ON DELETE CASCADE,
    PRIMARY KEY (run_id, event_id)
);
CREATE INDEX run_asset_events_by_event ON run_asset_events (event_id);
ALTER TABLE runs ADD COLUMN started_by TEXT CHECK (started_by IN ('assets'));
