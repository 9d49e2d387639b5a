-- One scheduled run per DAG and logical date, however many schedulers race to create it.
CREATE UNIQUE INDEX runs_scheduled_once ON runs (dag_id, logical_date) WHERE trigger_kind = 'schedule';
