//! The JSON Schema of the DAG file format, generated from these types.
//!
//! These types describe the file's shape for editors (autocomplete, inline checks); they are
//! not used to load DAGs, which `load` does by hand so it can report every problem with its
//! location. A test keeps them honest: the key lists `load` accepts must equal the properties
//! here, and the committed `amdahl-dag.schema.json` must equal what [`json_schema`] prints.

use std::collections::BTreeMap;

use schemars::JsonSchema;

/// An Amdahl DAG file.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Amdahl DAG")]
#[allow(dead_code)]
pub struct DagFile {
    /// The DAG's id: lowercase letters, digits and `_`.
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,63}$"))]
    dag: String,
    description: Option<String>,
    /// When runs start by themselves: a cron expression, or data (assets, another DAG).
    schedule: Option<ScheduleSpec>,
    /// The IANA time zone `schedule` and `start_date` are read in (default `UTC`), e.g.
    /// `Europe/Paris`.
    timezone: Option<String>,
    /// First logical date, `YYYY-MM-DD` (midnight in `timezone`).
    #[schemars(regex(pattern = r"^\d{4}-\d{2}-\d{2}$"))]
    start_date: Option<String>,
    /// Whether missed intervals since `start_date` run.
    catchup: Option<bool>,
    #[schemars(range(min = 1))]
    max_active_runs: Option<u32>,
    #[schemars(range(min = 1))]
    max_active_tasks: Option<u32>,
    /// Params: a default (`sf: 0.1`), or a typed declaration (`sf: { default: 0.1, type:
    /// number, minimum: 0.01 }`) that every run's value is checked against. Override with
    /// `--param name=value`; templates read `{{ params.name }}`.
    params: Option<BTreeMap<String, ParamSpecOrDefault>>,
    /// Settings every task inherits.
    defaults: Option<Defaults>,
    /// External inputs, readable in SQL by name.
    datasets: Option<BTreeMap<String, DatasetSpec>>,
    /// Secrets `shell` tasks receive as environment variables (the name in capitals), read on
    /// the worker and masked in logs and errors.
    secrets: Option<BTreeMap<String, SecretSpec>>,
    /// Notifiers called when a run fails (`task` is its first failed task).
    on_failure: Option<Vec<NotifierSpec>>,
    /// Notifiers called when any task of a run fails an attempt and will be tried again.
    on_retry: Option<Vec<NotifierSpec>>,
    /// Notifiers called when a run succeeds.
    on_success: Option<Vec<NotifierSpec>>,
    /// Notifiers called once when a run has not finished by its `deadline` (it goes on).
    on_deadline: Option<Vec<NotifierSpec>>,
    /// When a run should have finished; missing it calls `on_deadline`.
    deadline: Option<DeadlineSpec>,
    /// How long a run may take from its start (at least 1s): past it, its unfinished tasks
    /// fail with that reason and so does the run.
    run_timeout: Option<DurationSpec>,
    /// Tasks by id.
    tasks: BTreeMap<String, TaskSpec>,
}

/// Settings every task inherits unless it sets its own.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Defaults {
    #[schemars(range(max = 100))]
    retries: Option<u32>,
    retry_delay: Option<DurationSpec>,
    retry_backoff: Option<RetryBackoffSpec>,
    max_retry_delay: Option<DurationSpec>,
    timeout: Option<DurationSpec>,
    device: Option<Device>,
    trigger: Option<Trigger>,
    depends_on_past: Option<bool>,
    pool: Option<String>,
    priority: Option<i32>,
    /// What runs the `sql` tasks that name no engine.
    engine: Option<Engine>,
}

/// `within` (at least 1s) of `from`, a run should have finished.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct DeadlineSpec {
    within: DurationSpec,
    /// `scheduled` (the default): when the run was due (the end of its data interval, or when
    /// it was triggered); `queued`: when it was created; `started`: when it started.
    from: Option<DeadlineFromSpec>,
}

/// `schedule:`: the clock or data.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ScheduleSpec {
    /// A 5-field cron expression or @hourly, @daily, @weekly, @monthly, @yearly, read in
    /// `timezone`.
    Cron(String),
    /// A run once data changed: exactly one of `assets`, `any` or `after`.
    Data(DataScheduleSpec),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
#[allow(dead_code)]
pub struct DataScheduleSpec {
    /// A run once each of these assets has a new event since the DAG's last asset run.
    assets: Option<AssetList>,
    /// A run once any of these assets has a new event.
    any: Option<AssetList>,
    /// A run after each successful run of another DAG of the same folder.
    after: Option<AfterSpec>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct AfterSpec {
    /// The DAG whose successful runs start this one's.
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,63}$"))]
    dag: String,
}

/// One asset name or a list of them (letters, digits, `_`, `-`, `.`, `/`; e.g.
/// `lake.orders`).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum AssetList {
    One(AssetName),
    Many(#[schemars(length(min = 1, max = 64))] Vec<AssetName>),
}

/// An asset's name, e.g. `lake.orders`.
#[derive(JsonSchema)]
#[allow(dead_code)]
pub struct AssetName(#[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}$"))] String);

/// A task's `when:`.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum WhenSpec {
    /// A Jinja condition over params, `run.logical_date` and `dag.id`, decided when a run is
    /// created: false (empty, `false`, `0`, `no`, `off`, `none`) skips the task in that run.
    Template(String),
    /// A query over the task's inputs, run when the task starts.
    Sql(WhenSqlSpec),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct WhenSqlSpec {
    /// A query over the datasets and the outputs of the tasks this one needs, returning one
    /// boolean column (planned at validate time); no row or NULL counts as false.
    sql: String,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum DeadlineFromSpec {
    Scheduled,
    Queued,
    Started,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum RetryBackoffSpec {
    Constant,
    Exponential,
}

/// A duration such as `30s`, `10m`, `1h30m`, `2d`, or a number of seconds.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum DurationSpec {
    Text(#[schemars(regex(pattern = r"^(\d+(ms|s|m|h|d))+$"))] String),
    Seconds(u64),
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Device {
    Auto,
    Cpu,
    Gpu,
}

/// When a task runs, given how its upstream tasks ended: `all_success` (the default),
/// `all_done`, `all_failed`, `one_failed`, `one_success`, `none_failed`,
/// `none_failed_min_one_success`, `always`.
#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum Trigger {
    AllSuccess,
    AllDone,
    AllFailed,
    OneFailed,
    OneSuccess,
    NoneFailed,
    NoneFailedMinOneSuccess,
    Always,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Engine {
    Datafusion,
    Ballista,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Format {
    Csv,
    Parquet,
}

/// An external dataset: a local file or folder, or objects in object storage.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct DatasetSpec {
    /// `file://relative/or/absolute` or a plain path (relative to the DAG file's folder), or
    /// `s3://bucket/key`, `gs://bucket/key`, `az://container/key` (a key ending in `/` is a
    /// prefix: every object under it).
    uri: String,
    format: Format,
    /// Object storage settings (credentials come from the environment, never from here).
    options: Option<ObjectOptions>,
}

/// Where a task's result is also written once its attempt succeeded, published whole or not
/// at all (a `_SUCCESS` manifest naming its files is written last).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct OutputSpec {
    /// A local folder (relative to the DAG file's folder) or an object storage prefix; a Jinja
    /// template over the run (`s3://lake/revenue/dt={{ ds }}/`).
    uri: String,
    /// What happens to what is already there (default `overwrite`).
    mode: Option<OutputModeSpec>,
    /// The files' format (default `parquet`).
    format: Option<Format>,
    /// Object storage settings (credentials come from the environment, never from here).
    options: Option<ObjectOptions>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum OutputModeSpec {
    Overwrite,
    Append,
    ErrorIfExists,
}

/// Where a secret's value is read on the worker: exactly one of `env` and `file`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct SecretSpec {
    /// An environment variable of the worker.
    env: Option<String>,
    /// A file on the worker (absolute, or from the DAG file's folder); a trailing newline is
    /// dropped.
    file: Option<String>,
}

/// How to reach a dataset in object storage.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ObjectOptions {
    /// An S3-compatible server's address, e.g. `http://127.0.0.1:9000`.
    endpoint: Option<String>,
    region: Option<String>,
    /// Allow `http://` endpoints (set by itself for an `http://` endpoint).
    allow_http: Option<bool>,
    virtual_hosted_style_request: Option<bool>,
    /// Anonymous access to a public bucket.
    skip_signature: Option<bool>,
    /// Azure storage account.
    account_name: Option<String>,
}

/// One task: settings plus exactly one kind (`sql`, `shell`, `generate`, `empty`, `knn`,
/// `matmul`, `score` or `wait`).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    {"required": ["sql"]},
    {"required": ["shell"]},
    {"required": ["generate"]},
    {"required": ["empty"]},
    {"required": ["knn"]},
    {"required": ["matmul"]},
    {"required": ["score"]},
    {"required": ["wait"]}
]))]
#[allow(dead_code)]
pub struct TaskSpec {
    /// Upstream task ids.
    needs: Option<Vec<String>>,
    #[schemars(range(max = 100))]
    retries: Option<u32>,
    retry_delay: Option<DurationSpec>,
    /// `constant` (the default): `retry_delay` before every retry; `exponential`: doubling
    /// from `retry_delay`, at most `max_retry_delay`, with jitter.
    retry_backoff: Option<RetryBackoffSpec>,
    /// The longest wait of an exponential backoff (default 1h).
    max_retry_delay: Option<DurationSpec>,
    timeout: Option<DurationSpec>,
    device: Option<Device>,
    /// When the task runs, given how its upstream tasks ended (Airflow's trigger rules).
    trigger: Option<Trigger>,
    /// Whether the task runs: false skips it, and its downstream tasks follow their rules.
    when: Option<WhenSpec>,
    /// In a scheduled DAG: wait until the same task of the previous run (by logical date)
    /// succeeded or was skipped.
    depends_on_past: Option<bool>,
    /// Notifiers called when this task fails for good (its last attempt failed).
    on_failure: Option<Vec<NotifierSpec>>,
    /// Notifiers called when an attempt of this task failed and it will be tried again.
    on_retry: Option<Vec<NotifierSpec>>,
    /// Notifiers called when this task succeeds.
    on_success: Option<Vec<NotifierSpec>>,
    pool: Option<String>,
    priority: Option<i32>,
    /// `sql` tasks: split the largest input into this many row ranges that run side by side
    /// (on the CPU and the GPU) and combine to the whole query's answer.
    #[schemars(range(min = 1, max = 4096))]
    shards: Option<u32>,
    engine: Option<Engine>,
    /// `shell` tasks: the command writes Parquet or CSV files into `$AMDAHL_OUTPUT_DIR`;
    /// they are published as the task's dataset (CSV converted to Parquet), read downstream
    /// by the task's id.
    produces_data: Option<bool>,
    /// Also write the task's result here (any task with a result).
    output: Option<OutputSpec>,
    /// Assets this task updates: each gets an event when the task succeeds, which starts the
    /// runs of DAGs scheduled on it.
    produces: Option<AssetList>,
    /// Run one instance of the task per value of a list read when the run reaches it
    /// (`task[0]`, `task[1]`, …); downstream tasks read the instances' outputs as one table.
    map: Option<MapSpec>,
    /// A DataFusion SQL query (Jinja template); its result is the task's dataset.
    sql: Option<String>,
    /// A shell command (Jinja template), run with `/bin/sh -c`.
    shell: Option<String>,
    generate: Option<GenerateSpec>,
    /// Does nothing and succeeds: a join point or marker. Write `empty: {}`.
    empty: Option<EmptySpec>,
    knn: Option<KnnSpec>,
    matmul: Option<MatmulSpec>,
    score: Option<ScoreSpec>,
    /// A sensor: succeeds once a file or object exists, or a query over its inputs says so.
    /// Between pokes it holds no worker slot.
    wait: Option<WaitSpec>,
}

/// A param: its typed declaration, or just its default.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ParamSpecOrDefault {
    Typed(ParamDeclaration),
    Default(serde_json::Value),
}

/// A param's long form. Its default must satisfy what it declares.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ParamDeclaration {
    default: Option<serde_json::Value>,
    /// Without it, the default's type.
    #[serde(rename = "type")]
    kind: Option<ParamTypeSpec>,
    /// Shown beside the field in the UI's trigger form.
    description: Option<String>,
    /// The values allowed (a select in the form).
    #[serde(rename = "enum")]
    choices: Option<Vec<serde_json::Value>>,
    /// Bounds of a number or an integer.
    minimum: Option<f64>,
    maximum: Option<f64>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ParamTypeSpec {
    String,
    Number,
    Integer,
    Boolean,
    Array,
    Object,
}

/// Dynamic mapping: the values, the name each instance sees its value under, and a bound.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct MapSpec {
    /// A DataFusion query over the task's `needs` and datasets returning one column (a value
    /// per row), or one template expression giving a list (`{{ params.regions }}`). An
    /// empty list skips the task.
    #[schemars(length(min = 1))]
    over: String,
    /// The name the task's templates use for an instance's value (`{{ region }}`).
    #[serde(rename = "as")]
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,63}$"))]
    name: String,
    /// Most instances (default 1024); a longer list fails the task, saying how long it was.
    #[schemars(range(min = 1, max = 100000))]
    max_map: Option<u32>,
}

/// What a sensor waits for (exactly one of `uri` and `sql`) and how long.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["uri"]}, {"required": ["sql"]}]))]
#[allow(dead_code)]
pub struct WaitSpec {
    /// A local file or folder (relative to the DAG file's folder) or an object storage URL
    /// that must exist; ending in `/`: anything under that prefix. A Jinja template over the
    /// run (`s3://lake/raw/dt={{ ds }}/_SUCCESS`).
    uri: Option<String>,
    /// A DataFusion query over the task's `needs` and datasets returning one row with one
    /// boolean column: true ends the wait.
    sql: Option<String>,
    /// Object storage settings for `uri` (credentials come from the environment).
    options: Option<ObjectOptions>,
    /// Time between two pokes (default 1m, at least 1s).
    poke: Option<DurationSpec>,
    /// How long to wait from the first poke (default 7d); then the task fails.
    timeout: Option<DurationSpec>,
    /// A timeout skips the task instead of failing it.
    soft_fail: Option<bool>,
}

/// One notifier: exactly one of `webhook` or `email`. Every text is a Jinja template over
/// `event`, `dag.id`, `run.{id, logical_date, state, url}`, `task.{id, state, attempt, error,
/// log_tail}`, `params` and `secrets`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["webhook"]}, {"required": ["email"]}]))]
#[allow(dead_code)]
pub struct NotifierSpec {
    webhook: Option<WebhookSpec>,
    email: Option<EmailSpec>,
}

/// An HTTP request, sent by the scheduler, retried with backoff until the server answers 2xx.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct WebhookSpec {
    /// `http://` or `https://` (keep tokens in a secret: `{{ secrets.slack_hook }}`).
    url: String,
    /// `POST` (default), `PUT`, `PATCH` or `GET`.
    method: Option<WebhookMethod>,
    /// Header names and value templates.
    headers: Option<BTreeMap<String, String>>,
    /// The request body; without it, a JSON object describing the event.
    body: Option<String>,
}

#[derive(JsonSchema)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub enum WebhookMethod {
    POST,
    PUT,
    PATCH,
    GET,
}

/// An email, sent by the scheduler through the SMTP server in `AMDAHL_SMTP_URL`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct EmailSpec {
    /// One address or a list of them.
    to: AddressList,
    subject: Option<String>,
    body: Option<String>,
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum AddressList {
    One(String),
    Many(Vec<String>),
}

/// `empty` takes no settings.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct EmptySpec {}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum TpchTableSpec {
    Region,
    Nation,
    Supplier,
    Customer,
    Part,
    Partsupp,
    Orders,
    Lineitem,
}

/// Synthetic data: a TPC-H table, or random vectors.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    {"required": ["tpch"]},
    {"required": ["vectors", "dim"]}
]))]
#[allow(dead_code)]
pub struct GenerateSpec {
    /// A TPC-H table.
    tpch: Option<TpchTableSpec>,
    /// TPC-H scale factor (1 ≈ 6 million lineitem rows); a number or a template.
    scale_factor: Option<ScaleFactor>,
    /// Rows of random vectors (columns `id` and `vector`), uniform in [-1, 1).
    #[schemars(range(min = 1))]
    vectors: Option<u64>,
    /// The vectors' length.
    #[schemars(range(min = 1, max = 65536))]
    dim: Option<u32>,
    /// The same seed gives the same vectors.
    seed: Option<u32>,
}

/// Closeness for `knn`.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum MetricSpec {
    Dot,
    Cosine,
    L2,
}

/// The `k` nearest rows of `base` for each row of `queries`, by a vector column. Output:
/// `query`, `rank`, `neighbour` (row positions from 0) and `score`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct KnnSpec {
    /// The table searched (a task in `needs`, or a dataset).
    base: String,
    /// The table of query vectors.
    queries: String,
    /// The vector column of both tables (default `vector`).
    column: Option<String>,
    /// Neighbours per query (default 10).
    #[schemars(range(min = 1, max = 4096))]
    k: Option<u32>,
    /// Default `cosine`.
    metric: Option<MetricSpec>,
}

/// `left · rightᵀ` over the rows' vectors. Output: `row` and `vector`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct MatmulSpec {
    left: String,
    right: String,
    column: Option<String>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ActivationSpec {
    Relu,
    Tanh,
    Sigmoid,
}

/// An MLP from a safetensors file (`<layer>.weight`, `<layer>.bias`) over each row's vector.
/// Output: `row` and `score` (a float, or a vector for several outputs).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ScoreSpec {
    input: String,
    column: Option<String>,
    /// The safetensors file, relative to the DAG file's folder.
    model: String,
    /// Between layers (default `relu`).
    activation: Option<ActivationSpec>,
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ScaleFactor {
    Number(f64),
    Template(String),
}

/// The schema as pretty JSON, ending in a newline.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(DagFile);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
