-- Why a task of a run is skipped before it starts: its `when:` condition was false when the
-- run was created (NULL: it runs by its trigger rule).
ALTER TABLE task_instances ADD COLUMN skip_note TEXT;
