-- Deadlines and timeouts. `runs.run_timeout_ms`: how long the run may take from its start
-- (`run_timeout`, NULL: no limit). `task_instances.depends_on_past`: the task waits for the
-- same task of the previous run by logical date. `notifications.event` gains 'deadline'
-- (`on_deadline`): SQLite cannot change a CHECK, so the table is rebuilt.
ALTER TABLE runs ADD COLUMN run_timeout_ms BIGINT CHECK (run_timeout_ms > 0);
ALTER TABLE task_instances ADD COLUMN depends_on_past BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE notifications_0018 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    level           TEXT NOT NULL CHECK (level IN ('dag', 'task')),
    task_id         TEXT NOT NULL,
    event           TEXT NOT NULL CHECK (event IN ('failure', 'retry', 'success', 'deadline')),
    occurrence      BIGINT NOT NULL,
    notifier        BIGINT NOT NULL CHECK (notifier >= 0),
    kind            TEXT NOT NULL CHECK (kind IN ('webhook', 'email')),
    target          TEXT NOT NULL,
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
INSERT INTO notifications_0018 SELECT * FROM notifications;
DROP TABLE notifications;
ALTER TABLE notifications_0018 RENAME TO notifications;
CREATE INDEX notifications_due ON notifications (next_at_ms) WHERE state = 'pending';
CREATE INDEX runs_by_logical_date ON runs (dag_id, logical_date);
-- A run past its `run_timeout` fails the tasks that had not run (again) yet.
INSERT INTO task_state_transitions VALUES
    ('scheduled', 'failed'), ('queued', 'failed'), ('up_for_retry', 'failed');
