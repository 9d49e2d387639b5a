-- Deadlines and timeouts. `runs.run_timeout_ms`: how long the run may take from its start
-- (`run_timeout`, NULL: no limit). `task_instances.depends_on_past`: the task waits for the
-- same task of the previous run by logical date. `notifications.event` gains 'deadline'
-- (`on_deadline`).
ALTER TABLE runs ADD COLUMN run_timeout_ms BIGINT CHECK (run_timeout_ms > 0);
ALTER TABLE task_instances ADD COLUMN depends_on_past BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE notifications DROP CONSTRAINT notifications_event_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_event_check
    CHECK (event IN ('failure', 'retry', 'success', 'deadline'));
CREATE INDEX runs_by_logical_date ON runs (dag_id, logical_date);
-- A run past its `run_timeout` fails the tasks that had not run (again) yet.
INSERT INTO task_state_transitions VALUES
    ('scheduled', 'failed'), ('queued', 'failed'), ('up_for_retry', 'failed');
