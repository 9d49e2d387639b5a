//! From a DAG file's bytes to a validated [`Dag`], collecting every problem on the way.
//!
//! Loading never stops at the first error: each section is checked on its own and every
//! problem becomes a located [`Diagnostic`]. Only when none was found is a [`Dag`] returned.
//! SQL is not planned here (that needs the executors' knowledge of schemas); see
//! `amdahl_executors::check`.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::*;
use crate::template::{self, RunContext};
use crate::yaml::{self, Node, Span, Value};

mod assets;
mod datasets;
mod generate;
mod kinds;
mod mapping;
mod notify;
mod order;
mod params;
mod reader;
mod secrets;
mod tasks;

pub use assets::{AFTER_KEYS, SCHEDULE_KEYS};
pub use datasets::DATASET_KEYS;
pub use generate::{GENERATE_KEYS, MAX_VECTOR_DIM, MAX_VECTOR_ROWS, parse_scale_factor};
pub use kinds::{KNN_KEYS, MATMUL_KEYS, MAX_K, SCORE_KEYS};
pub use notify::{EMAIL_KEYS, MAX_NOTIFIERS, NOTIFIER_KEYS, WEBHOOK_KEYS};
pub use secrets::SECRET_KEYS;
pub use tasks::{KIND_KEYS, MAX_TASKS, TASK_KEYS};

/// Keys allowed at the top of a DAG file.
pub const DAG_KEYS: &[&str] = &[
    "dag",
    "description",
    "schedule",
    "timezone",
    "start_date",
    "catchup",
    "max_active_runs",
    "max_active_tasks",
    "params",
    "defaults",
    "datasets",
    "secrets",
    "on_failure",
    "on_retry",
    "on_success",
    "on_deadline",
    "deadline",
    "run_timeout",
    "tasks",
];
/// Keys allowed under a task's `when:` when it is a mapping.
pub const WHEN_KEYS: &[&str] = &["sql"];
/// Keys allowed under `deadline:`.
pub const DEADLINE_KEYS: &[&str] = &["within", "from"];
/// Keys allowed under `defaults:`.
pub const DEFAULTS_KEYS: &[&str] = &[
    "retries",
    "retry_delay",
    "retry_backoff",
    "max_retry_delay",
    "timeout",
    "device",
    "trigger",
    "depends_on_past",
    "pool",
    "priority",
    "engine",
];

/// Why a DAG file did not load: the file's text (for snippets) and every problem found.
#[derive(Clone, Debug)]
pub struct LoadError {
    pub display_path: String,
    pub source_text: String,
    pub diagnostics: Diagnostics,
}

impl LoadError {
    pub fn render(&self) -> String {
        self.diagnostics.render(&self.source_text)
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.diagnostics)
    }
}

impl std::error::Error for LoadError {}

/// Reads and validates a DAG file. Relative paths inside resolve against its folder.
pub fn load_file(path: &Path) -> Result<Dag, LoadError> {
    let display_path = path.display().to_string();
    let fail = |message: String| LoadError {
        display_path: display_path.clone(),
        source_text: String::new(),
        diagnostics: Diagnostics {
            items: vec![Diagnostic::new(&display_path, Span::at(1, 1, 1), message)],
        },
    };
    let metadata =
        std::fs::metadata(path).map_err(|e| fail(format!("cannot read DAG file: {e}")))?;
    if !metadata.is_file() {
        return Err(fail("not a file".into()));
    }
    if metadata.len() > yaml::MAX_FILE_BYTES as u64 {
        return Err(fail(format!(
            "file is {} bytes; DAG files may be at most {} bytes",
            metadata.len(),
            yaml::MAX_FILE_BYTES
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read DAG file: {e}")))?;
    let base_dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let base_dir = std::fs::canonicalize(&base_dir).unwrap_or(base_dir);
    load_bytes(&display_path, &base_dir, &bytes)
}

/// Validates a DAG from bytes, as if it were a file at `display_path` inside `base_dir`.
pub fn load_bytes(display_path: &str, base_dir: &Path, bytes: &[u8]) -> Result<Dag, LoadError> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.to_string(),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            let valid = std::str::from_utf8(valid).unwrap_or_default();
            let line = valid.matches('\n').count() + 1;
            let column = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            return Err(LoadError {
                display_path: display_path.to_string(),
                source_text: String::from_utf8_lossy(bytes).into_owned(),
                diagnostics: Diagnostics {
                    items: vec![Diagnostic::new(
                        display_path,
                        Span::at(line, column, 1),
                        format!("file is not valid UTF-8 (byte offset {})", e.valid_up_to()),
                    )],
                },
            });
        }
    };
    let hash = hex(&Sha256::digest(bytes));
    let source = DagSource {
        display_path: display_path.to_string(),
        base_dir: base_dir.to_path_buf(),
        text: text.clone(),
        hash,
    };
    let mut cx = Cx {
        file: display_path.to_string(),
        diags: Diagnostics::default(),
    };
    let dag = match yaml::parse_document(&text) {
        Err(e) => {
            cx.error(e.span, e.message);
            None
        }
        Ok(None) => {
            cx.error(
                Span::at(1, 1, 1),
                "file is empty; a DAG file needs at least `dag:` and `tasks:`",
            );
            None
        }
        Ok(Some(root)) => cx.dag(&root, source),
    };
    match dag {
        Some(dag) if cx.diags.is_empty() => Ok(dag),
        _ => {
            let mut diagnostics = cx.diags;
            diagnostics.sort();
            Err(LoadError {
                display_path: display_path.to_string(),
                source_text: text,
                diagnostics,
            })
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Settings a task inherits from `defaults:`.
#[derive(Clone, Debug, Default)]
struct Defaults {
    retries: Option<u32>,
    retry_delay: Option<Duration>,
    /// `exponential` (with where it is written) or `constant`.
    retry_backoff: Option<(bool, Span)>,
    max_retry_delay: Option<(Duration, Span)>,
    timeout: Option<Duration>,
    device: Option<DevicePreference>,
    trigger: Option<TriggerRule>,
    /// With where it is written.
    depends_on_past: Option<(bool, Span)>,
    pool: Option<String>,
    priority: Option<i32>,
    /// With where it is written: a non-`sql` task ignores the default.
    engine: Option<Engine>,
}

/// The loader's state: the file being read and the problems found so far.
struct Cx {
    file: String,
    diags: Diagnostics,
}

type Entries<'n> = Vec<(&'n str, &'n Node, &'n Node)>;

impl Cx {
    fn dag(&mut self, root: &Node, source: DagSource) -> Option<Dag> {
        let entries = self.entries(root, "DAG file", Some(DAG_KEYS))?;
        let get = |key: &str| {
            entries
                .iter()
                .find(|(k, _, _)| *k == key)
                .map(|(_, _, v)| *v)
        };
        let get_key = |key: &str| {
            entries
                .iter()
                .find(|(k, _, _)| *k == key)
                .map(|(_, k, _)| *k)
        };

        let id = match get("dag") {
            Some(node) => self
                .string(node, "dag")
                .filter(|id| self.id(node, id, "DAG")),
            None => {
                self.error(root.span, "missing required key `dag` (the DAG's id)");
                None
            }
        };
        let description = get("description").and_then(|n| self.string(n, "description"));
        let data_schedule = get("schedule")
            .filter(|n| matches!(n.value, Value::Map(_)))
            .and_then(|n| self.data_schedule(n, id.as_deref()));
        let schedule = get("schedule")
            .filter(|n| !matches!(n.value, Value::Map(_)))
            .and_then(|n| {
                let text = self.string(n, "schedule")?;
                match crate::schedule::parse_cron(&text) {
                    Ok(_) => Some(text),
                    Err(e) => {
                        self.error(n.span, format!("bad cron expression `{text}`: {e}"));
                        None
                    }
                }
            });
        let timezone = get("timezone")
            .and_then(|n| {
                let text = self.string(n, "timezone")?;
                crate::schedule::parse_zone(text.trim())
                    .map_err(|e| self.error(n.span, e))
                    .ok()
            })
            .unwrap_or(chrono_tz::Tz::UTC);
        let start_date = get("start_date").and_then(|n| {
            let text = n.scalar_text().unwrap_or_default();
            match chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d") {
                Ok(d) => Some(d),
                Err(_) => {
                    self.error(
                        n.span,
                        format!("`start_date` must be a date like 2026-01-01, found `{text}`"),
                    );
                    None
                }
            }
        });
        let catchup = get("catchup")
            .and_then(|n| self.boolean(n, "catchup"))
            .unwrap_or(false);
        let max_active_runs =
            get("max_active_runs").and_then(|n| self.positive(n, "max_active_runs", 10_000));
        let max_active_tasks =
            get("max_active_tasks").and_then(|n| self.positive(n, "max_active_tasks", 10_000));

        let (params, param_specs) = get("params")
            .map(|node| self.params(node))
            .unwrap_or_default();
        let defaults = get("defaults")
            .map(|n| self.defaults(n))
            .unwrap_or_default();
        // A sample run, for checking templates (the DAG is not built yet).
        let ctx = RunContext {
            dag_id: id.clone().unwrap_or_default(),
            run_id: 0,
            logical_date: "2026-01-01T00:00:00Z".into(),
            params: params.clone(),
            ds: "2026-01-01".into(),
            data_interval_end: "2026-01-02T00:00:00Z".into(),
            item: None,
        };
        let datasets = get("datasets")
            .map(|n| self.datasets(n, &source.base_dir, &ctx))
            .unwrap_or_default();

        let secrets = get("secrets")
            .map(|n| self.secrets(n, &source.base_dir))
            .unwrap_or_default();

        let scope = notify::NoticeScope {
            dag_id: id.as_deref().unwrap_or_default(),
            params: &params,
            secrets: secrets.keys().map(String::as_str).collect(),
        };
        let notify = self.notify(&entries, "", &scope);
        let deadline = get("deadline").and_then(|n| self.deadline(n));
        let run_timeout = get("run_timeout").and_then(|n| self.at_least_a_second(n, "run_timeout"));
        match (get_key("deadline"), get_key("on_deadline")) {
            (Some(key), None) => self.error_help(
                key.span,
                "`deadline` tells no one when a run misses it",
                "add `on_deadline:` with a webhook or an email",
            ),
            (None, Some(key)) => self.error_help(
                key.span,
                "`on_deadline` is never called: the DAG has no `deadline`",
                "add e.g. `deadline: { within: 2h }`",
            ),
            _ => {}
        }
        let tasks = match get("tasks") {
            Some(node) => {
                // `depends_on_past` follows the clock: a data schedule has no previous date.
                let scheduled = schedule.is_some();
                let facts = tasks::DagFacts {
                    datasets: &datasets,
                    scheduled,
                    base_dir: &source.base_dir,
                };
                self.tasks(node, &defaults, &facts, &ctx, &scope)
            }
            None => {
                self.error(root.span, "missing required key `tasks`");
                Vec::new()
            }
        };
        if let Some(key) = get_key("tasks")
            && tasks.is_empty()
            && self.diags.is_empty()
        {
            self.error(key.span, "`tasks` is empty; a DAG needs at least one task");
        }
        if let Some(watching) = &data_schedule {
            self.starts_itself(watching, &tasks);
        }
        let tasks = self.order(tasks);
        Some(Dag {
            id: id?,
            description,
            schedule,
            data_schedule,
            timezone,
            start_date,
            catchup,
            max_active_runs,
            max_active_tasks,
            params,
            param_specs,
            datasets,
            secrets,
            notify: notify?,
            deadline,
            run_timeout,
            tasks,
            source,
            task_index: Default::default(),
        })
    }

    fn defaults(&mut self, node: &Node) -> Defaults {
        let mut d = Defaults::default();
        for (key, _, value) in self
            .entries(node, "defaults", Some(DEFAULTS_KEYS))
            .unwrap_or_default()
        {
            let what = format!("defaults.{key}");
            match key {
                "retries" => d.retries = self.unsigned(value, &what, 100),
                "retry_delay" => d.retry_delay = self.duration(value, &what),
                "retry_backoff" => {
                    d.retry_backoff = self.backoff(value, &what).map(|e| (e, value.span))
                }
                "max_retry_delay" => {
                    d.max_retry_delay = self.duration(value, &what).map(|m| (m, value.span))
                }
                "timeout" => d.timeout = self.duration(value, &what),
                "device" => d.device = self.device(value, &what),
                "trigger" => d.trigger = self.trigger(value, &what),
                "depends_on_past" => {
                    d.depends_on_past = self.boolean(value, &what).map(|b| (b, value.span))
                }
                "pool" => d.pool = self.string(value, &what),
                "priority" => d.priority = self.integer(value, &what),
                "engine" => d.engine = self.engine(value, &what),
                _ => {}
            }
        }
        d
    }

    /// `deadline: { within: 2h, from: scheduled }` (`from` defaults to `scheduled`).
    fn deadline(&mut self, node: &Node) -> Option<Deadline> {
        let entries = self.entries(node, "deadline", Some(DEADLINE_KEYS))?;
        let get = |key: &str| {
            entries
                .iter()
                .find(|(k, _, _)| *k == key)
                .map(|(_, _, v)| *v)
        };
        let from = match get("from") {
            Some(n) => self.named(
                n,
                "deadline.from",
                DeadlineFrom::parse,
                &DeadlineFrom::NAMES,
            ),
            None => Some(DeadlineFrom::default()),
        };
        let Some(within) = get("within") else {
            self.error_help(
                node.span,
                "`deadline` needs `within`: how long after `from` a run should have finished",
                "write e.g. `deadline: { within: 2h, from: scheduled }`",
            );
            return None;
        };
        let within = self.at_least_a_second(within, "deadline.within");
        Some(Deadline {
            within: within?,
            from: from?,
        })
    }

    /// A duration of at least one second.
    fn at_least_a_second(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let d = self.duration(node, what)?;
        if d < Duration::from_secs(1) {
            self.error(
                node.span,
                format!(
                    "`{what}` must be at least 1s, found {}",
                    node.scalar_text().unwrap_or_else(|| format_duration(d))
                ),
            );
            return None;
        }
        Some(d)
    }

    /// Renders a template with the DAG's default params to find undefined names and syntax errors.
    /// A `when:` condition, checked as it will be evaluated: a template (names, syntax, no
    /// `run.id`), or `{ sql: … }` (its templates here; the planner plans the query).
    fn condition(&mut self, node: &Node, what: &str, ctx: &RunContext) -> Option<Condition> {
        if !matches!(node.value, Value::Map(_)) {
            if !matches!(node.value, Value::Str(..)) {
                self.wrong_type(node, "a string (a Jinja condition) or `{ sql: … }`", what);
                return None;
            }
            let located = self.located(node, what)?;
            return match template::condition(&located, ctx) {
                Ok(_) => Some(Condition::Template(located)),
                Err(e) => self.template_error(&located, e),
            };
        }
        let entries = self.entries(node, what, Some(WHEN_KEYS))?;
        let Some((_, _, sql)) = entries.iter().find(|(k, _, _)| *k == "sql") else {
            if matches!(&node.value, Value::Map(pairs) if !pairs.is_empty()) {
                // Its unknown key was reported, with the suggestion.
                return None;
            }
            self.error_help(
                node.span,
                format!("`{what}` needs `sql`: a query returning one boolean"),
                "write e.g. `when: { sql: \"SELECT count(*) > 0 FROM staged\" }`, or a Jinja condition as a string",
            );
            return None;
        };
        let located = self.located(sql, &format!("{what}.sql"))?;
        if located.text.trim().is_empty() {
            self.error(sql.span, format!("`{what}.sql` is empty"));
            return None;
        }
        self.template(&located, ctx)
            .map(|_| Condition::Sql(located))
    }

    fn template(&mut self, located: &Located, ctx: &RunContext) -> Option<String> {
        match template::render(located, ctx) {
            Ok(text) => Some(text),
            Err(e) => self.template_error(located, e),
        }
    }

    /// A template problem, located in the file.
    fn template_error<T>(&mut self, located: &Located, e: template::TemplateError) -> Option<T> {
        let (line, column) = located.file_position(e.line, e.column);
        let mut d = Diagnostic::new(&self.file, Span::at(line, column, e.len), e.message);
        d.help = e.help;
        self.diags.push(d);
        None
    }
}
