-- Amdahl state store, PostgreSQL flavour. Times are milliseconds since the Unix epoch.

CREATE TABLE dags (
    dag_id            TEXT PRIMARY KEY,
    latest_version_id BIGINT,
    paused            BIGINT NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    created_at_ms     BIGINT NOT NULL,
    updated_at_ms     BIGINT NOT NULL
);

CREATE TABLE dag_versions (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dag_id        TEXT NOT NULL REFERENCES dags (dag_id),
    hash          TEXT NOT NULL,
    source_path   TEXT NOT NULL,
    base_dir      TEXT NOT NULL,
    yaml          TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (dag_id, hash)
);

CREATE TABLE run_state_transitions (
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    PRIMARY KEY (from_state, to_state)
);
INSERT INTO run_state_transitions VALUES
    ('queued', 'running'), ('queued', 'failed'), ('queued', 'cancelled'),
    ('running', 'success'), ('running', 'failed'), ('running', 'cancelled');

CREATE TABLE task_state_transitions (
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    PRIMARY KEY (from_state, to_state)
);
INSERT INTO task_state_transitions VALUES
    ('scheduled', 'queued'), ('scheduled', 'upstream_failed'), ('scheduled', 'skipped'), ('scheduled', 'cancelled'),
    ('queued', 'running'), ('queued', 'cancelled'),
    ('running', 'success'), ('running', 'failed'), ('running', 'up_for_retry'), ('running', 'cancelled'),
    ('up_for_retry', 'queued'), ('up_for_retry', 'cancelled');

CREATE TABLE runs (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dag_id          TEXT NOT NULL REFERENCES dags (dag_id),
    dag_version_id  BIGINT NOT NULL REFERENCES dag_versions (id),
    state           TEXT NOT NULL CHECK (state IN ('queued', 'running', 'success', 'failed', 'cancelled')),
    trigger_kind    TEXT NOT NULL CHECK (trigger_kind IN ('manual', 'schedule', 'backfill')),
    params_json     TEXT NOT NULL,
    logical_date    TEXT NOT NULL,
    max_active_tasks BIGINT NOT NULL CHECK (max_active_tasks > 0),
    owner           TEXT,
    heartbeat_at_ms BIGINT,
    note            TEXT,
    created_at_ms   BIGINT NOT NULL,
    started_at_ms   BIGINT,
    finished_at_ms  BIGINT
);
CREATE INDEX runs_by_dag ON runs (dag_id, id DESC);
CREATE INDEX runs_unfinished ON runs (state) WHERE state IN ('queued', 'running');

CREATE TABLE task_instances (
    run_id         BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_id        TEXT NOT NULL,
    position       BIGINT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('sql', 'shell', 'generate')),
    state          TEXT NOT NULL CHECK (state IN ('scheduled', 'queued', 'running', 'success', 'failed',
                                                  'up_for_retry', 'upstream_failed', 'skipped', 'cancelled')),
    needs_json     TEXT NOT NULL,
    priority       BIGINT NOT NULL,
    retries        BIGINT NOT NULL CHECK (retries >= 0),
    retry_delay_ms BIGINT NOT NULL CHECK (retry_delay_ms >= 0),
    timeout_ms     BIGINT CHECK (timeout_ms > 0),
    attempts       BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    retry_at_ms    BIGINT,
    device         TEXT,
    output_path    TEXT,
    rows_out       BIGINT,
    bytes_out      BIGINT,
    error          TEXT,
    started_at_ms  BIGINT,
    finished_at_ms BIGINT,
    PRIMARY KEY (run_id, task_id)
);

CREATE TABLE task_attempts (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id         BIGINT NOT NULL,
    task_id        TEXT NOT NULL,
    attempt        BIGINT NOT NULL CHECK (attempt >= 1),
    state          TEXT NOT NULL CHECK (state IN ('running', 'success', 'failed', 'timed_out', 'cancelled', 'lost')),
    device         TEXT,
    owner          TEXT,
    error          TEXT,
    rows_out       BIGINT,
    bytes_out      BIGINT,
    started_at_ms  BIGINT NOT NULL,
    finished_at_ms BIGINT,
    UNIQUE (run_id, task_id, attempt),
    FOREIGN KEY (run_id, task_id) REFERENCES task_instances (run_id, task_id) ON DELETE CASCADE
);

CREATE TABLE task_logs (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    attempt_id BIGINT NOT NULL REFERENCES task_attempts (id) ON DELETE CASCADE,
    stream     TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
    line       TEXT NOT NULL,
    at_ms      BIGINT NOT NULL
);
CREATE INDEX task_logs_by_attempt ON task_logs (attempt_id, id);

-- Illegal lifecycle edges are refused by the database too, not only by the code.
CREATE FUNCTION amdahl_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state <> NEW.state THEN
        IF TG_TABLE_NAME = 'runs' THEN
            IF NOT EXISTS (SELECT 1 FROM run_state_transitions t WHERE t.from_state = OLD.state AND t.to_state = NEW.state) THEN
                RAISE EXCEPTION 'illegal run state transition % -> %', OLD.state, NEW.state;
            END IF;
        ELSE
            IF NOT EXISTS (SELECT 1 FROM task_state_transitions t WHERE t.from_state = OLD.state AND t.to_state = NEW.state) THEN
                RAISE EXCEPTION 'illegal task state transition % -> %', OLD.state, NEW.state;
            END IF;
        END IF;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER runs_legal_transition BEFORE UPDATE OF state ON runs
    FOR EACH ROW EXECUTE FUNCTION amdahl_check_transition();

CREATE TRIGGER task_instances_legal_transition BEFORE UPDATE OF state ON task_instances
    FOR EACH ROW EXECUTE FUNCTION amdahl_check_transition();
