//! The validated DAG: types the rest of Amdahl can trust.
//!
//! A [`Dag`] only exists after `load` has checked everything it can without running anything:
//! ids, references, cycles, durations, cron, templates. Positions ([`Span`]) stay attached to
//! the parts whose later checks (SQL planning in `executors`) still need to blame a line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::yaml::Located;
use crate::yaml::Span;

mod kinds;
pub mod map;
mod param;
mod syntax;

pub use kinds::*;
pub use param::{ParamSpec, ParamType};
pub use syntax::{format_duration, is_valid_id, parse_duration};

/// A loaded, validated DAG file.
#[derive(Clone, Debug)]
pub struct Dag {
    pub id: String,
    pub description: Option<String>,
    pub schedule: Option<String>,
    /// Runs started by data instead of the clock (`schedule: { assets | any | after }`).
    pub data_schedule: Option<crate::assets::DataSchedule>,
    /// The wall clock `schedule` and `start_date` are read on (`timezone:`, UTC by default).
    pub timezone: chrono_tz::Tz,
    pub start_date: Option<chrono::NaiveDate>,
    pub catchup: bool,
    pub max_active_runs: Option<u32>,
    pub max_active_tasks: Option<u32>,
    /// Declared params and their defaults.
    pub params: BTreeMap<String, serde_json::Value>,
    /// What each param declares besides its default (its type, description, choices,
    /// bounds); every param has one, empty for the short form.
    pub param_specs: BTreeMap<String, ParamSpec>,
    pub datasets: BTreeMap<String, Dataset>,
    /// Secrets its `shell` tasks receive (see [`Secret`]).
    pub secrets: BTreeMap<String, Secret>,
    /// Who is told when a run fails or succeeds, a task of it retries, or it misses its
    /// deadline.
    pub notify: crate::notice::Notify,
    /// When a run should have finished; missing it calls `on_deadline` (the run goes on).
    pub deadline: Option<Deadline>,
    /// How long a run may take from its start: past it, unfinished tasks fail and so does the
    /// run.
    pub run_timeout: Option<Duration>,
    /// Tasks in a topological order: every task comes after all of its `needs`.
    pub tasks: Vec<Task>,
    pub source: DagSource,
    /// Task positions by id, built on the first lookup (a 10,000-task DAG is looked up once
    /// per task a worker runs).
    pub(crate) task_index: std::sync::OnceLock<std::collections::HashMap<String, usize>>,
}

impl Dag {
    /// The DAG's schedule on its time zone, if it has a valid one.
    pub fn cron(&self) -> Option<crate::schedule::Schedule> {
        crate::schedule::Schedule::parse(self.schedule.as_deref()?, self.timezone).ok()
    }

    /// Where scheduled intervals may begin: midnight of `start_date` in the DAG's zone.
    pub fn start(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let date = self.start_date?;
        self.cron().map(|s| s.start_of(date))
    }

    /// Whether the DAG or any of its tasks lists a notifier.
    pub fn notifies(&self) -> bool {
        !self.notify.is_empty() || self.tasks.iter().any(|t| !t.notify.is_empty())
    }

    /// The task a task instance runs: `load` for `load` and for a mapped instance `load[3]`.
    pub fn task(&self, id: &str) -> Option<&Task> {
        let id = map::split_instance(id).0;
        let index = self.task_index.get_or_init(|| {
            self.tasks
                .iter()
                .enumerate()
                .map(|(i, t)| (t.id.clone(), i))
                .collect()
        });
        match index.get(id).and_then(|&i| self.tasks.get(i)) {
            Some(task) if task.id == id => Some(task),
            // `tasks` was changed after the index was built: look the slow way.
            _ => self.tasks.iter().find(|t| t.id == id),
        }
    }
}

/// Where a DAG came from; the hash identifies a DAG version.
#[derive(Clone, Debug)]
pub struct DagSource {
    /// The path as the user gave it (for messages).
    pub display_path: String,
    /// The folder relative paths in the file resolve against.
    pub base_dir: PathBuf,
    pub text: String,
    /// Hex SHA-256 of the file's bytes.
    pub hash: String,
}

/// An external input, referenced by name in SQL.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    /// As written in the file.
    pub uri: String,
    /// Whether `uri` is a template, rendered for each run ([`Dataset::location_for`]).
    pub templated: bool,
    /// Where its files are (for a templated `uri`, a sample run's: see `location_for`).
    pub location: Location,
    pub format: DatasetFormat,
    pub span: Span,
}

impl Dataset {
    /// Where the dataset is for a run: a templated `uri` rendered with the run's context and
    /// read as the loader reads one (relative paths from `base_dir`, the same `options`).
    pub fn location_for(
        &self,
        ctx: &crate::RunContext,
        base_dir: &std::path::Path,
    ) -> Result<Location, String> {
        run_location(&self.uri, self.templated, &self.location, ctx, base_dir)
            .map_err(|e| format!("dataset `{}`: {e}", self.name))
    }
}

/// A location for one run: `uri` rendered with the run's context when it is a template,
/// with the options of the loader's `sample`.
pub(crate) fn run_location(
    uri: &str,
    templated: bool,
    sample: &Location,
    ctx: &crate::RunContext,
    base_dir: &std::path::Path,
) -> Result<Location, String> {
    if !templated {
        return Ok(sample.clone());
    }
    let rendered = crate::template::render_text(uri, ctx).map_err(|e| e.message)?;
    let mut location = Location::parse(rendered.trim(), base_dir)
        .map_err(|e| format!("`{}`: {e}", rendered.trim()))?;
    if let (Location::Object(object), Location::Object(sample)) = (&mut location, sample) {
        object.options = sample.options.clone();
    }
    Ok(location)
}

/// `output:` on a task: where its result is also written, for readers outside Amdahl, once
/// its attempt has succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// As written in the file.
    pub uri: String,
    /// Whether `uri` is a template, rendered for each run.
    pub templated: bool,
    /// Where it goes (for a templated `uri`, a sample run's: see [`Output::location_for`]).
    pub location: Location,
    pub mode: OutputMode,
    pub format: DatasetFormat,
    pub span: Span,
}

impl Output {
    /// Where a run's output goes.
    pub fn location_for(
        &self,
        ctx: &crate::RunContext,
        base_dir: &std::path::Path,
    ) -> Result<Location, String> {
        run_location(&self.uri, self.templated, &self.location, ctx, base_dir)
            .map_err(|e| format!("output: {e}"))
    }
}

/// What writing an output does to what is already there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputMode {
    /// Replaces it, whole (the default).
    #[default]
    Overwrite,
    /// Adds this run's files beside the ones there.
    Append,
    /// Fails the attempt if anything is there.
    ErrorIfExists,
}

impl OutputMode {
    pub const NAMES: [&'static str; 3] = ["overwrite", "append", "error_if_exists"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "overwrite" => Some(OutputMode::Overwrite),
            "append" => Some(OutputMode::Append),
            "error_if_exists" => Some(OutputMode::ErrorIfExists),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OutputMode::Overwrite => "overwrite",
            OutputMode::Append => "append",
            OutputMode::ErrorIfExists => "error_if_exists",
        }
    }
}

/// Where a dataset's files live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A file, or a folder of files, on this machine.
    Local(PathBuf),
    /// An object, or every object under a prefix (a URL ending in `/`, or one naming no
    /// object), in object storage.
    Object(ObjectLocation),
}

/// A URL in object storage and the settings for reaching it (never credentials: those come
/// from the environment, see `amdahl_executors::objects`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectLocation {
    /// `s3://bucket/key`, `gs://bucket/key`, `az://container/key` (and the other spellings
    /// of [`OBJECT_SCHEMES`]).
    pub url: String,
    /// Settings such as `endpoint` or `region` (see [`OBJECT_OPTIONS`]).
    pub options: BTreeMap<String, String>,
}

/// The object storage schemes a dataset URI may use.
pub const OBJECT_SCHEMES: [&str; 7] = ["s3", "s3a", "gs", "az", "abfs", "abfss", "azure"];

/// Settings a DAG file may give for a dataset in object storage. Credentials are not among
/// them: a DAG file is code, shared and shown; secrets belong in the worker's environment.
pub const OBJECT_OPTIONS: [&str; 6] = [
    "endpoint",
    "region",
    "allow_http",
    "virtual_hosted_style_request",
    "skip_signature",
    "account_name",
];

impl Location {
    /// A location as written: `file://PATH` or a plain path (relative ones from `base_dir`),
    /// or a URL in object storage (`s3://BUCKET/KEY`, …), with no options. The error says
    /// what is wrong, without a place (the caller knows where the text came from).
    pub fn parse(uri: &str, base_dir: &Path) -> Result<Location, String> {
        let path = match uri.split_once("://") {
            Some(("file", rest)) => rest,
            Some((scheme, rest)) if OBJECT_SCHEMES.contains(&scheme) => {
                if rest.split('/').next().unwrap_or_default().is_empty() {
                    return Err(format!(
                        "`{uri}` names no bucket: write {scheme}://BUCKET/KEY"
                    ));
                }
                return Ok(Location::Object(ObjectLocation {
                    url: uri.to_string(),
                    options: BTreeMap::new(),
                }));
            }
            Some((scheme, _)) => {
                return Err(format!(
                    "unsupported URI scheme `{scheme}://`; use a local path (`file://` or a \
                     plain path) or object storage ({})",
                    OBJECT_SCHEMES.map(|s| format!("{s}://")).join(", ")
                ));
            }
            None => uri,
        };
        if path.is_empty() {
            return Err("empty path".into());
        }
        let path = Path::new(path);
        Ok(Location::Local(if path.is_absolute() {
            path.to_path_buf()
        } else {
            base_dir.join(path)
        }))
    }

    /// The local path, when the data is on this machine.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Location::Local(path) => Some(path),
            Location::Object(_) => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::Object(object) => f.write_str(&object.url),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetFormat {
    Csv,
    Parquet,
}

impl DatasetFormat {
    pub const NAMES: [&'static str; 2] = ["csv", "parquet"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "csv" => Some(DatasetFormat::Csv),
            "parquet" => Some(DatasetFormat::Parquet),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            DatasetFormat::Csv => ".csv",
            DatasetFormat::Parquet => ".parquet",
        }
    }
}

/// `deadline: { within, from }`: a run should finish `within` of a moment of its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    pub within: Duration,
    pub from: DeadlineFrom,
}

/// The moment a [`Deadline`] counts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeadlineFrom {
    /// When the run was due: the end of its data interval for a scheduled or backfilled run,
    /// its creation for a triggered one (the default).
    #[default]
    Scheduled,
    /// When the run was created (queued).
    Queued,
    /// When the run started.
    Started,
}

impl DeadlineFrom {
    pub const NAMES: [&'static str; 3] = ["scheduled", "queued", "started"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "scheduled" => Some(DeadlineFrom::Scheduled),
            "queued" => Some(DeadlineFrom::Queued),
            "started" => Some(DeadlineFrom::Started),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DeadlineFrom::Scheduled => "scheduled",
            DeadlineFrom::Queued => "queued",
            DeadlineFrom::Started => "started",
        }
    }
}

/// How the wait before a retry grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RetryBackoff {
    /// `retry_delay` before every retry (the default).
    #[default]
    Constant,
    /// `retry_delay` before the first retry, doubling before each next one, at most `max`
    /// (`max_retry_delay`, default 1 h), less up to a tenth of jitter.
    Exponential { max: Duration },
}

impl RetryBackoff {
    pub const NAMES: [&'static str; 2] = ["constant", "exponential"];
    /// `max_retry_delay` when the file gives none.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(3600);

    /// The cap of an exponential backoff, `None` for a constant one.
    pub fn cap(self) -> Option<Duration> {
        match self {
            RetryBackoff::Constant => None,
            RetryBackoff::Exponential { max } => Some(max),
        }
    }
}

/// What runs a `sql` task's query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Engine {
    /// DataFusion in the worker (on its CPU, or its GPU's kernels).
    #[default]
    DataFusion,
    /// A Ballista cluster: the worker hands the query to its scheduler.
    Ballista,
}

impl Engine {
    pub const NAMES: [&'static str; 2] = ["datafusion", "ballista"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "datafusion" => Some(Engine::DataFusion),
            "ballista" => Some(Engine::Ballista),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::DataFusion => "datafusion",
            Engine::Ballista => "ballista",
        }
    }
}

/// Where a task asks to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DevicePreference {
    #[default]
    Auto,
    Cpu,
    Gpu,
}

impl DevicePreference {
    pub const NAMES: [&'static str; 3] = ["auto", "cpu", "gpu"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "auto" => Some(DevicePreference::Auto),
            "cpu" => Some(DevicePreference::Cpu),
            "gpu" => Some(DevicePreference::Gpu),
            _ => None,
        }
    }
}

impl fmt::Display for DevicePreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DevicePreference::Auto => "auto",
            DevicePreference::Cpu => "cpu",
            DevicePreference::Gpu => "gpu",
        })
    }
}

/// When a task runs, given how its upstream tasks ended (Airflow's trigger rules, with the
/// same meanings). "Failed" counts `failed`, `upstream_failed` and `cancelled` upstreams;
/// "done" is any end. A rule that can no longer be met makes the task `upstream_failed` when
/// a failure stopped it and `skipped` otherwise (see the scheduler's `decide`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TriggerRule {
    /// Every upstream succeeded (the default). A failed upstream makes the task
    /// `upstream_failed`; a skipped one, `skipped`.
    #[default]
    AllSuccess,
    /// Every upstream is done, however it ended (cleanups).
    AllDone,
    /// Every upstream failed; a success or a skip makes the task `skipped`.
    AllFailed,
    /// At least one upstream failed: runs at once, without waiting for the others.
    OneFailed,
    /// At least one upstream succeeded: runs at once, without waiting for the others.
    OneSuccess,
    /// Every upstream is done and none failed (successes and skips).
    NoneFailed,
    /// Every upstream is done, none failed, and at least one succeeded.
    NoneFailedMinOneSuccess,
    /// Runs as soon as the run starts, whatever its upstream tasks do.
    Always,
}

impl TriggerRule {
    pub const ALL: [TriggerRule; 8] = [
        TriggerRule::AllSuccess,
        TriggerRule::AllDone,
        TriggerRule::AllFailed,
        TriggerRule::OneFailed,
        TriggerRule::OneSuccess,
        TriggerRule::NoneFailed,
        TriggerRule::NoneFailedMinOneSuccess,
        TriggerRule::Always,
    ];
    pub const NAMES: [&'static str; 8] = [
        "all_success",
        "all_done",
        "all_failed",
        "one_failed",
        "one_success",
        "none_failed",
        "none_failed_min_one_success",
        "always",
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|r| *r == self).expect("listed")]
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .position(|n| *n == text)
            .map(|i| Self::ALL[i])
    }
}

impl fmt::Display for TriggerRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A task's `when:`.
#[derive(Clone, Debug)]
pub enum Condition {
    /// A Jinja condition decided when a run is created (see `template::condition`).
    Template(Located),
    /// `when: { sql: … }`: a query over the task's inputs (the datasets and the outputs of the
    /// tasks it needs) returning one boolean, run when the task's attempt starts. Planned at
    /// validate time; at run time no row or NULL counts as false, more than one row fails the
    /// attempt.
    Sql(Located),
}

impl Condition {
    /// The template decided at run creation, if this is one.
    pub fn template(&self) -> Option<&Located> {
        match self {
            Condition::Template(t) => Some(t),
            Condition::Sql(_) => None,
        }
    }

    /// The query run when the task starts, if this is one.
    pub fn sql(&self) -> Option<&Located> {
        match self {
            Condition::Sql(q) => Some(q),
            Condition::Template(_) => None,
        }
    }
}

/// One task of a DAG.
#[derive(Clone, Debug)]
pub struct Task {
    pub id: String,
    pub needs: Vec<String>,
    /// Attempts after the first.
    pub retries: u32,
    pub retry_delay: Duration,
    /// How the wait grows from one retry to the next.
    pub retry_backoff: RetryBackoff,
    /// `None` means no limit.
    pub timeout: Option<Duration>,
    pub device: DevicePreference,
    /// When it runs, given how its upstream tasks ended.
    pub trigger: TriggerRule,
    /// Waits, in a scheduled or backfilled run, until the same task of the previous run (by
    /// logical date) succeeded or was skipped.
    pub depends_on_past: bool,
    /// Whether the task runs at all in a run: false makes it `skipped`, and its downstream
    /// tasks follow their rules.
    pub when: Option<Condition>,
    /// Who is told when this task fails for good, retries or succeeds.
    pub notify: crate::notice::Notify,
    pub pool: Option<String>,
    pub priority: i32,
    /// Parts the input is split into (`sql` tasks; 1: not split).
    pub shards: u32,
    /// What runs the query (`sql` tasks).
    pub engine: Engine,
    /// `produces_data: true` on a `shell` task: the Parquet or CSV files the command writes
    /// into `$AMDAHL_OUTPUT_DIR` are its output, read downstream by the task's id.
    pub shell_output: bool,
    /// `output:`: where the result is also written for readers outside Amdahl.
    pub output: Option<Output>,
    /// Assets this task updates (`produces:`): each gets one event when the task succeeds.
    pub produces: Vec<String>,
    /// `map:`: one instance per value of a list read when the run reaches the task.
    pub map: Option<map::Map>,
    pub kind: TaskKind,
    /// Where the task's id is written.
    pub span: Span,
}

impl Task {
    /// Whether the task writes an Arrow dataset that downstream SQL can read by the task's id.
    pub fn produces_data(&self) -> bool {
        match self.kind {
            TaskKind::Sql(_)
            | TaskKind::Generate(_)
            | TaskKind::Knn(_)
            | TaskKind::Matmul(_)
            | TaskKind::Score(_) => true,
            TaskKind::Shell(_) => self.shell_output,
            TaskKind::Empty | TaskKind::Wait(_) => false,
        }
    }
}

/// A secret a DAG's `shell` tasks receive as an environment variable (its name in capitals),
/// resolved on the worker when a task runs. The DAG names only where it comes from; the value
/// is never stored, and the worker masks it in logs and errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    pub source: SecretSource,
    pub span: Span,
}

/// `text` with every one of `values` (empty ones aside) replaced by `***`, longest first so
/// that a secret containing another is masked whole.
pub fn mask<'a>(text: &str, values: impl Iterator<Item = &'a str>) -> String {
    let mut values: Vec<&str> = values.filter(|v| !v.is_empty()).collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = text.to_string();
    for value in values {
        if out.contains(value) {
            out = out.replace(value, "***");
        }
    }
    out
}

/// Where a secret's value is read on the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file (absolute, or from the DAG file's folder); one trailing newline is dropped.
    File(PathBuf),
}

impl Secret {
    /// The environment variable a `shell` task reads it from.
    pub fn variable(&self) -> String {
        self.name.to_uppercase()
    }

    /// Its value on this machine, or why there is none (which never holds the value).
    pub fn resolve(&self) -> Result<String, String> {
        match &self.source {
            SecretSource::Env(variable) => std::env::var(variable).map_err(|e| {
                format!(
                    "secret `{}`: the environment variable {variable} {}",
                    self.name,
                    match e {
                        std::env::VarError::NotPresent => "is not set on this worker",
                        std::env::VarError::NotUnicode(_) => "is not valid UTF-8",
                    }
                )
            }),
            SecretSource::File(path) => match std::fs::read_to_string(path) {
                Ok(mut text) => {
                    if text.ends_with('\n') {
                        text.pop();
                        if text.ends_with('\r') {
                            text.pop();
                        }
                    }
                    Ok(text)
                }
                Err(e) => Err(format!(
                    "secret `{}`: cannot read {} on this worker: {e}",
                    self.name,
                    path.display()
                )),
            },
        }
    }
}

#[derive(Clone, Debug)]
pub enum TaskKind {
    /// A DataFusion SQL query (a template) whose result is the task's dataset.
    Sql(Located),
    /// A shell command line (a template), run with `/bin/sh -c`.
    Shell(Located),
    Generate(Generate),
    /// Does nothing and succeeds (Airflow's `EmptyOperator`): a join point, a marker, or a
    /// measure of the orchestrator's own overhead. Workers run it without a process.
    Empty,
    /// The `k` nearest rows of a base table for each row of a query table, by a vector column.
    Knn(Knn),
    /// Every row vector of `left` times every row vector of `right`: `left · rightᵀ`.
    Matmul(Matmul),
    /// A small MLP (weights in a safetensors file) applied to each row's vector.
    Score(Score),
    /// A sensor: succeeds once a file or object exists, or a query says so.
    Wait(Wait),
}

impl TaskKind {
    /// The kinds that use no CPU while they run: an `empty` task does nothing and a sensor's
    /// poke looks for a file or runs a small query, then gives its slot back. Workers run
    /// them in light slots, beyond their CPU slots.
    pub const LIGHT: [&'static str; 2] = ["empty", "wait"];

    pub fn is_light(&self) -> bool {
        Self::LIGHT.contains(&self.name())
    }

    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Sql(_) => "sql",
            TaskKind::Shell(_) => "shell",
            TaskKind::Generate(_) => "generate",
            TaskKind::Empty => "empty",
            TaskKind::Knn(_) => "knn",
            TaskKind::Matmul(_) => "matmul",
            TaskKind::Score(_) => "score",
            TaskKind::Wait(_) => "wait",
        }
    }

    /// The tables a dense task reads, with where each is named.
    pub fn tables(&self) -> Vec<&TableRef> {
        match self {
            TaskKind::Knn(k) => vec![&k.base, &k.queries],
            TaskKind::Matmul(m) => vec![&m.left, &m.right],
            TaskKind::Score(s) => vec![&s.input],
            _ => Vec::new(),
        }
    }
}
