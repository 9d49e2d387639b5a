-- Workers claim tasks that compute and tasks of the light kinds (`empty`, `wait`: see
-- `light_kinds!` in scheduler/src/store/claims.rs) into separate slots, with one pick each.
-- Each pick reads an index of its own kind only: one index for both would make a pick walk
-- past every queued task of the other kind (10,000 queued `empty` tasks before the first
-- command).
DROP INDEX task_instances_claimable;
CREATE INDEX task_instances_claimable
    ON task_instances (priority DESC, queued_at_ms, run_id, task_id)
    WHERE state = 'queued' AND in_process = 0 AND kind NOT IN ('empty', 'wait');
CREATE INDEX task_instances_claimable_light
    ON task_instances (priority DESC, queued_at_ms, run_id, task_id)
    WHERE state = 'queued' AND in_process = 0 AND kind IN ('empty', 'wait');
