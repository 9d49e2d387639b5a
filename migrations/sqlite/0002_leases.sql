-- Leases for claimed tasks, and the index workers claim through.
ALTER TABLE task_instances ADD COLUMN queued_at_ms INTEGER;
ALTER TABLE task_instances ADD COLUMN lease_owner TEXT;
ALTER TABLE task_instances ADD COLUMN lease_expires_at_ms INTEGER;

-- Claims read queued tasks best-first; only queued rows are in this index.
CREATE INDEX task_instances_claimable
    ON task_instances (priority DESC, queued_at_ms, run_id, task_id)
    WHERE state = 'queued';

-- The reaper looks for running tasks whose lease ran out.
CREATE INDEX task_instances_leases
    ON task_instances (lease_expires_at_ms)
    WHERE state = 'running';
