-- Dynamic mapping (`map:`). A mapped task's first attempt reads its values; its end creates an
-- instance per value, `task[0]`, `task[1]`…, each a task instance of its own with the parent's
-- position (a run's page shows a mapped task and its instances together), its index and its
-- value (JSON text, what its templates see under the `map.as` name).
ALTER TABLE task_instances ADD COLUMN map_index BIGINT CHECK (map_index >= 0);
ALTER TABLE task_instances ADD COLUMN map_value TEXT;
