-- A run's tasks a page at a time (the API's run page): by position, without reading the rest.
CREATE INDEX task_instances_by_position ON task_instances (run_id, position);
