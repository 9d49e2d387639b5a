-- Clearing tasks of a finished run (`amdahl tasks clear`, the UI's Clear): the cleared tasks
-- go back to `scheduled` and the run to `queued`, for the scheduler service to run again.
INSERT INTO run_state_transitions VALUES
    ('success', 'queued'), ('failed', 'queued'), ('cancelled', 'queued');
INSERT INTO task_state_transitions VALUES
    ('success', 'scheduled'), ('failed', 'scheduled'), ('upstream_failed', 'scheduled'),
    ('skipped', 'scheduled'), ('cancelled', 'scheduled');
