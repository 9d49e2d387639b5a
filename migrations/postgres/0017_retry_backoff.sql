-- `retry_backoff: exponential`: the longest wait before a retry (NULL: a constant
-- `retry_delay` before every retry).
ALTER TABLE task_instances ADD COLUMN max_retry_delay_ms BIGINT CHECK (max_retry_delay_ms > 0);
