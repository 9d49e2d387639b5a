-- A worker whose task just ended claims the chain's next link in the statement that would
-- have queued it (`claim_next!` in scheduler/src/store/claims.rs): the task goes from
-- `scheduled` straight to `running`, its `queued_at_ms` and `started_at_ms` the same instant.
INSERT INTO task_state_transitions VALUES ('scheduled', 'running');
