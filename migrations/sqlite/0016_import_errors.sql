-- DAG files under a scheduler's --dags-folder that do not validate: one row per file, the first
-- problem located (line, column) and every problem rendered. The scheduler keeps the last good
-- version of such a file's DAG scheduled; fixing (or removing) the file deletes the row.
CREATE TABLE import_errors (
    path          TEXT PRIMARY KEY,
    -- The DAG the file held when it last loaded, if this scheduler knew it.
    dag_id        TEXT,
    line          BIGINT NOT NULL,
    col           BIGINT NOT NULL,
    message       TEXT NOT NULL,
    problems      BIGINT NOT NULL CHECK (problems >= 1),
    details       TEXT NOT NULL,
    first_seen_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
