-- `when: { sql }` is decided when a task's attempt starts: a false condition ends the attempt
-- `success` and moves its task from running to skipped.
INSERT INTO task_state_transitions VALUES ('running', 'skipped');
