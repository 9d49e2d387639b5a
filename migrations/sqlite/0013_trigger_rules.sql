-- Each task instance's trigger rule (`trigger:` in the DAG): when it runs, given how its
-- upstream tasks ended. Rows of older runs keep the rule they ran under, all_success.
ALTER TABLE task_instances ADD COLUMN trigger_rule TEXT NOT NULL DEFAULT 'all_success';
