-- The runs of each DAG version (the DAG page's versions list counts them).
CREATE INDEX runs_by_version ON runs (dag_version_id);
