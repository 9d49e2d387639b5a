-- Notifications (`on_failure`, `on_retry`, `on_success` in DAG files), an outbox the
-- scheduler fills and drains. `runs.notify` is NULL for runs whose DAG version has no notifier,
-- 'watching' while events may still be recorded, 'done' once the finished run's are. A
-- notification is recorded once per (run, level, task, event, occurrence, notifier): the occurrence is
-- the attempt for a task's event and the finish time for a run's, so recording again after a
-- crash adds nothing, and a cleared run that ends again is told again.
ALTER TABLE runs ADD COLUMN notify TEXT CHECK (notify IN ('watching', 'done'));
CREATE INDEX runs_notify_watching ON runs (id) WHERE notify = 'watching';

CREATE TABLE notifications (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    -- 'dag' for a notifier the DAG lists (about the run, or any task's retry), 'task' for one
    -- a task lists (about that task).
    level           TEXT NOT NULL CHECK (level IN ('dag', 'task')),
    -- '' for an event of the run itself.
    task_id         TEXT NOT NULL,
    event           TEXT NOT NULL CHECK (event IN ('failure', 'retry', 'success')),
    occurrence      BIGINT NOT NULL,
    -- Which notifier of its level's list for the event.
    notifier        BIGINT NOT NULL CHECK (notifier >= 0),
    kind            TEXT NOT NULL CHECK (kind IN ('webhook', 'email')),
    -- Where it goes, secrets masked (for display).
    target          TEXT NOT NULL,
    -- What its templates see (JSON, never secrets).
    context_json    TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_at_ms      BIGINT NOT NULL,
    response_code   BIGINT,
    last_error      TEXT,
    created_at_ms   BIGINT NOT NULL,
    finished_at_ms  BIGINT,
    UNIQUE (run_id, level, task_id, event, occurrence, notifier)
);
CREATE INDEX notifications_due ON notifications (next_at_ms) WHERE state = 'pending';
