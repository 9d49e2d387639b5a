//! From a DAG file's bytes to a validated [`Dag`], collecting every problem on the way.
//!
//! Loading never stops at the first error: each section is checked on its own and every
//! problem becomes a located [`Diagnostic`]. Only when none was found is a [`Dag`] returned.
//! SQL is not planned here (that needs the executors' knowledge of schemas); see
//! `amdahl_executors::check`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::diagnostic::{Diagnostic, Diagnostics, did_you_mean};
use crate::model::*;
use crate::template::{self, RunContext};
use crate::yaml::{self, Node, Span, Style, Value};

mod order;
mod reader;

/// Keys allowed at the top of a DAG file.
pub const DAG_KEYS: &[&str] = &[
    "dag",
    "description",
    "schedule",
    "start_date",
    "catchup",
    "max_active_runs",
    "max_active_tasks",
    "params",
    "defaults",
    "datasets",
    "secrets",
    "tasks",
];
/// Keys allowed under `defaults:`.
pub const DEFAULTS_KEYS: &[&str] = &[
    "retries",
    "retry_delay",
    "timeout",
    "device",
    "pool",
    "priority",
    "engine",
];
/// Keys allowed on a task (the settings plus the kinds).
pub const TASK_KEYS: &[&str] = &[
    "needs",
    "retries",
    "retry_delay",
    "timeout",
    "device",
    "pool",
    "priority",
    "shards",
    "engine",
    "sql",
    "shell",
    "generate",
    "empty",
    "knn",
    "matmul",
    "score",
];
/// The task kinds: each task has exactly one of these keys.
pub const KIND_KEYS: &[&str] = &[
    "sql", "shell", "generate", "empty", "knn", "matmul", "score",
];
pub const KNN_KEYS: &[&str] = &["base", "queries", "column", "k", "metric"];
pub const MATMUL_KEYS: &[&str] = &["left", "right", "column"];
pub const SCORE_KEYS: &[&str] = &["input", "column", "model", "activation"];
/// Most neighbours a `knn` task may ask for per query.
pub const MAX_K: u32 = 4096;
pub const DATASET_KEYS: &[&str] = &["uri", "format", "options"];
/// Keys allowed under `secrets.<name>`: exactly one of them.
pub const SECRET_KEYS: &[&str] = &["env", "file"];
pub const GENERATE_KEYS: &[&str] = &["tpch", "scale_factor", "vectors", "dim", "seed"];
/// Most rows and widths `generate: { vectors }` makes.
pub const MAX_VECTOR_ROWS: u64 = 1 << 32;
pub const MAX_VECTOR_DIM: u32 = 65_536;
/// Most tasks one DAG may declare.
pub const MAX_TASKS: usize = 10_000;

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
    timeout: Option<Duration>,
    device: Option<DevicePreference>,
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
        let schedule = get("schedule").and_then(|n| {
            let text = self.string(n, "schedule")?;
            match crate::schedule::parse_cron(&text) {
                Ok(_) => Some(text),
                Err(e) => {
                    self.error(n.span, format!("bad cron expression `{text}`: {e}"));
                    None
                }
            }
        });
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

        let mut params = BTreeMap::new();
        if let Some(node) = get("params") {
            for (name, key, value) in self.entries(node, "params", None).unwrap_or_default() {
                if self.id(key, name, "param") {
                    params.insert(name.to_string(), value.to_json());
                }
            }
        }
        let defaults = get("defaults")
            .map(|n| self.defaults(n))
            .unwrap_or_default();
        let datasets = get("datasets")
            .map(|n| self.datasets(n, &source.base_dir))
            .unwrap_or_default();

        let secrets = get("secrets")
            .map(|n| self.secrets(n, &source.base_dir))
            .unwrap_or_default();

        let ctx = RunContext {
            dag_id: id.clone().unwrap_or_default(),
            run_id: 0,
            logical_date: "2026-01-01T00:00:00Z".into(),
            params: params.clone(),
        };
        let tasks = match get("tasks") {
            Some(node) => self.tasks(node, &defaults, &datasets, &ctx),
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
        let tasks = self.order(tasks);
        Some(Dag {
            id: id?,
            description,
            schedule,
            start_date,
            catchup,
            max_active_runs,
            max_active_tasks,
            params,
            datasets,
            secrets,
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
                "timeout" => d.timeout = self.duration(value, &what),
                "device" => d.device = self.device(value, &what),
                "pool" => d.pool = self.string(value, &what),
                "priority" => d.priority = self.integer(value, &what),
                "engine" => d.engine = self.engine(value, &what),
                _ => {}
            }
        }
        d
    }

    fn datasets(&mut self, node: &Node, base_dir: &Path) -> BTreeMap<String, Dataset> {
        let mut out = BTreeMap::new();
        for (name, key, value) in self.entries(node, "datasets", None).unwrap_or_default() {
            let valid = self.id(key, name, "dataset");
            let what = format!("datasets.{name}");
            let Some(fields) = self.entries(value, &what, Some(DATASET_KEYS)) else {
                continue;
            };
            let field = |k: &str| fields.iter().find(|(f, _, _)| *f == k).map(|(_, _, v)| *v);
            let uri = match field("uri") {
                Some(n) => self.string(n, &format!("{what}.uri")).map(|u| (u, n.span)),
                None => {
                    self.error(key.span, format!("dataset `{name}` needs a `uri`"));
                    None
                }
            };
            let format = match field("format") {
                Some(n) => self.string(n, &format!("{what}.format")).and_then(|f| {
                    let parsed = DatasetFormat::parse(&f);
                    if parsed.is_none() {
                        self.one_of(n.span, &format!("{what}.format"), &f, &DatasetFormat::NAMES);
                    }
                    parsed
                }),
                None => {
                    self.error(
                        key.span,
                        format!("dataset `{name}` needs a `format` (csv or parquet)"),
                    );
                    None
                }
            };
            let options = field("options").map(|n| (self.object_options(n, &what), n.span));
            let Some((uri, uri_span)) = uri else {
                continue;
            };
            let Some(location) = self.resolve_uri(&uri, uri_span, base_dir) else {
                continue;
            };
            let location = match (location, options) {
                (Location::Object(mut object), Some((options, _))) => {
                    object.options = options;
                    Location::Object(object)
                }
                (Location::Local(_), Some((_, span))) => {
                    self.error(
                        span,
                        format!(
                            "`{what}.options` are settings for object storage; `{uri}` is a local path"
                        ),
                    );
                    continue;
                }
                (location, None) => location,
            };
            if let Location::Local(path) = &location
                && !path.exists()
            {
                let shown = if Path::new(uri.split_once("://").map_or(uri.as_str(), |(_, p)| p))
                    .is_absolute()
                {
                    path.display().to_string()
                } else {
                    format!(
                        "{} (relative to the DAG file's folder)",
                        path.strip_prefix(base_dir).unwrap_or(path).display()
                    )
                };
                self.error(uri_span, format!("dataset file not found: {shown}"));
                continue;
            }
            let (Some(format), true) = (format, valid) else {
                continue;
            };
            out.insert(
                name.to_string(),
                Dataset {
                    name: name.to_string(),
                    uri,
                    location,
                    format,
                    span: key.span,
                },
            );
        }
        out
    }

    /// `secrets:`: each names where its value comes from, `env: VARIABLE` or `file: PATH`.
    fn secrets(&mut self, node: &Node, base_dir: &Path) -> BTreeMap<String, Secret> {
        let mut out = BTreeMap::new();
        for (name, key, value) in self.entries(node, "secrets", None).unwrap_or_default() {
            let mut valid = self.id(key, name, "secret");
            if valid && name.starts_with("amdahl_") {
                self.error(
                    key.span,
                    format!(
                        "secret `{name}`: names starting with `amdahl_` are Amdahl's own \
                         variables; choose another"
                    ),
                );
                valid = false;
            }
            let what = format!("secrets.{name}");
            let Some(fields) = self.entries(value, &what, Some(SECRET_KEYS)) else {
                continue;
            };
            let field = |k: &str| fields.iter().find(|(f, _, _)| *f == k).map(|(_, _, v)| *v);
            let source = match (field("env"), field("file")) {
                (Some(node), None) => {
                    self.string(node, &format!("{what}.env"))
                        .and_then(|variable| {
                            let ok = !variable.is_empty()
                                && !variable.starts_with(|c: char| c.is_ascii_digit())
                                && variable
                                    .chars()
                                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
                            if !ok {
                                self.error(
                                    node.span,
                                    format!(
                                        "`{what}.env` must name an environment variable \
                                     (letters, digits and `_`), found `{variable}`"
                                    ),
                                );
                            }
                            ok.then_some(SecretSource::Env(variable))
                        })
                }
                (None, Some(node)) => self
                    .string(node, &format!("{what}.file"))
                    .map(|path| SecretSource::File(base_dir.join(path))),
                (Some(_), Some(node)) => {
                    self.error(
                        node.span,
                        format!("secret `{name}` has both `env` and `file`; give one"),
                    );
                    None
                }
                (None, None) => {
                    self.error(
                        key.span,
                        format!("secret `{name}` needs `env: VARIABLE` or `file: PATH`"),
                    );
                    None
                }
            };
            if let (Some(source), true) = (source, valid) {
                out.insert(
                    name.to_string(),
                    Secret {
                        name: name.to_string(),
                        source,
                        span: key.span,
                    },
                );
            }
        }
        out
    }

    /// A dataset's `options:` for object storage: known settings only, never credentials.
    fn object_options(&mut self, node: &Node, what: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let what = format!("{what}.options");
        for (key, key_node, value) in self.entries(node, &what, None).unwrap_or_default() {
            if !OBJECT_OPTIONS.contains(&key) {
                let secret = ["key", "secret", "token", "password", "sas", "credential"]
                    .iter()
                    .any(|s| key.to_ascii_lowercase().contains(s));
                if secret {
                    self.error(
                        key_node.span,
                        format!(
                            "`{what}.{key}`: credentials do not belong in a DAG file; give them to \
                             the workers in their environment (AWS_ACCESS_KEY_ID, \
                             AWS_SECRET_ACCESS_KEY, GOOGLE_SERVICE_ACCOUNT, AZURE_STORAGE_ACCOUNT_KEY, …)"
                        ),
                    );
                } else {
                    self.one_of(key_node.span, &what, key, &OBJECT_OPTIONS);
                }
                continue;
            }
            let text = match &value.value {
                Value::Str(s, _) => Some(s.clone()),
                Value::Bool(b) => Some(b.to_string()),
                _ => {
                    self.wrong_type(value, "a string or true/false", &format!("{what}.{key}"));
                    None
                }
            };
            if let Some(text) = text {
                out.insert(key.to_string(), text);
            }
        }
        out
    }

    fn resolve_uri(&mut self, uri: &str, span: Span, base_dir: &Path) -> Option<Location> {
        Location::parse(uri, base_dir)
            .map_err(|e| {
                let e = if e == "empty path" {
                    "empty dataset path".to_string()
                } else {
                    e
                };
                self.error(span, e)
            })
            .ok()
    }

    fn tasks(
        &mut self,
        node: &Node,
        defaults: &Defaults,
        datasets: &BTreeMap<String, Dataset>,
        ctx: &RunContext,
    ) -> Vec<(Task, Vec<(String, Span)>)> {
        let mut out = Vec::new();
        let entries = self.entries(node, "tasks", None).unwrap_or_default();
        if entries.len() > MAX_TASKS {
            self.error(
                node.span,
                format!(
                    "{} tasks; a DAG may have at most {MAX_TASKS}",
                    entries.len()
                ),
            );
            return Vec::new();
        }
        let ids: HashSet<&str> = entries.iter().map(|(k, _, _)| *k).collect();
        for (id, key, value) in &entries {
            let valid = self.id(key, id, "task");
            if datasets.contains_key(*id) {
                self.error(
                    key.span,
                    format!("task id `{id}` is also a dataset name; SQL could not tell them apart"),
                );
            }
            let known = Known {
                tasks: &ids,
                datasets,
            };
            if let Some(task) = self.task(id, key, value, defaults, &known, ctx)
                && valid
            {
                out.push(task);
            }
        }
        out
    }

    fn task(
        &mut self,
        id: &str,
        key: &Node,
        node: &Node,
        defaults: &Defaults,
        known: &Known<'_>,
        ctx: &RunContext,
    ) -> Option<(Task, Vec<(String, Span)>)> {
        let (all_ids, datasets) = (known.tasks, known.datasets);
        let what = format!("tasks.{id}");
        let fields = self.entries(node, &what, Some(TASK_KEYS))?;
        let field = |k: &str| fields.iter().find(|(f, _, _)| *f == k).map(|(_, _, v)| *v);
        let mut ok = true;

        let mut needs = Vec::new();
        if let Some(n) = field("needs") {
            let items: Vec<&Node> = match &n.value {
                Value::Seq(items) => items.iter().collect(),
                Value::Str(..) => vec![n],
                _ => {
                    self.wrong_type(n, "a list of task ids", &format!("{what}.needs"));
                    ok = false;
                    Vec::new()
                }
            };
            for item in items {
                let Some(need) = self.string(item, &format!("{what}.needs")) else {
                    ok = false;
                    continue;
                };
                if need == id {
                    self.error(item.span, format!("task `{id}` needs itself"));
                    ok = false;
                } else if !all_ids.contains(need.as_str()) {
                    let message = format!("task `{id}` needs unknown task `{need}`");
                    // Suggestions cost an edit distance per task; skip them in huge DAGs.
                    let candidates = all_ids.iter().copied().filter(|_| all_ids.len() <= 2_000);
                    match did_you_mean(&need, candidates) {
                        Some(s) => {
                            self.error_help(item.span, message, format!("did you mean `{s}`?"))
                        }
                        None => self.error(item.span, message),
                    }
                    ok = false;
                } else if needs.iter().any(|(n, _): &(String, Span)| *n == need) {
                    self.error(item.span, format!("`{need}` is listed twice in `needs`"));
                    ok = false;
                } else {
                    needs.push((need, item.span));
                }
            }
        }

        let retries = match field("retries") {
            Some(n) => self.unsigned(n, &format!("{what}.retries"), 100),
            None => Some(defaults.retries.unwrap_or(0)),
        };
        let retry_delay = match field("retry_delay") {
            Some(n) => self.duration(n, &format!("{what}.retry_delay")),
            None => Some(defaults.retry_delay.unwrap_or(Duration::from_secs(10))),
        };
        let timeout = match field("timeout") {
            Some(n) => self.duration(n, &format!("{what}.timeout")).map(Some),
            None => Some(defaults.timeout),
        };
        if let Some(Some(t)) = timeout
            && t.is_zero()
        {
            self.error(
                field("timeout").map_or(key.span, |n| n.span),
                "`timeout` must be longer than 0s",
            );
            ok = false;
        }
        let device = match field("device") {
            Some(n) => self.device(n, &format!("{what}.device")),
            None => Some(defaults.device.unwrap_or_default()),
        };
        let pool = match field("pool") {
            Some(n) => self.string(n, &format!("{what}.pool")).map(Some),
            None => Some(defaults.pool.clone()),
        };
        let priority = match field("priority") {
            Some(n) => self.integer(n, &format!("{what}.priority")),
            None => Some(defaults.priority.unwrap_or(0)),
        };
        let shards = match field("shards") {
            Some(n) => self
                .positive(n, &format!("{what}.shards"), 4096)
                .map(|s| (s, Some(n))),
            None => Some((1, None)),
        };
        let engine = match field("engine") {
            Some(n) => self
                .engine(n, &format!("{what}.engine"))
                .map(|e| (e, Some(n))),
            None => Some((defaults.engine.unwrap_or_default(), None)),
        };

        let kinds: Vec<(&str, &Node, &Node)> = fields
            .iter()
            .filter(|(k, _, _)| KIND_KEYS.contains(k))
            .copied()
            .collect();
        let kind = match kinds.as_slice() {
            [] => {
                self.error_help(
                    key.span,
                    format!("task `{id}` has no kind"),
                    format!("add exactly one of: {}", KIND_KEYS.join(", ")),
                );
                None
            }
            [(kind, _, value)] => {
                let kind = self.kind(kind, value, &what, ctx);
                // A dense task reads tables it needs or datasets, by name.
                for table in kind.iter().flat_map(|k| k.tables()) {
                    let known = needs.iter().any(|(n, _)| *n == table.name)
                        || datasets.contains_key(&table.name);
                    if !known {
                        self.error_help(
                            table.span,
                            format!(
                                "task `{id}` reads table `{}`, which is neither one of its \
                                 `needs` nor a dataset",
                                table.name
                            ),
                            format!("add `{}` to `needs` or to `datasets`", table.name),
                        );
                        ok = false;
                    }
                }
                kind
            }
            [_, (second, second_key, _), ..] => {
                let names: Vec<&str> = kinds.iter().map(|(k, _, _)| *k).collect();
                self.error_help(
                    second_key.span,
                    format!(
                        "task `{id}` has {} kinds ({}); a task has exactly one",
                        names.len(),
                        names.join(", ")
                    ),
                    format!("split `{second}` into its own task"),
                );
                None
            }
        };

        // Only a query's input can be split into parts and the parts' results combined.
        if let (Some((shards, Some(node))), Some(kind)) = (shards, &kind)
            && shards > 1
            && !matches!(kind, TaskKind::Sql(_))
        {
            self.error_help(
                node.span,
                format!(
                    "`shards: {shards}` on a `{}` task; only `sql` tasks are split into shards",
                    kind.name()
                ),
                "remove `shards`, or split the input in a `sql` task",
            );
            ok = false;
        }
        // Only a query runs on another engine; a default applies to the queries alone.
        let engine = match (engine, &kind) {
            (Some((engine, node)), Some(kind)) if !matches!(kind, TaskKind::Sql(_)) => {
                if let (Engine::Ballista, Some(node)) = (engine, node) {
                    self.error_help(
                        node.span,
                        format!(
                            "`engine: ballista` on a `{}` task; only `sql` tasks run on Ballista",
                            kind.name()
                        ),
                        "remove `engine`, or move the query into a `sql` task",
                    );
                    ok = false;
                }
                Some(Engine::DataFusion)
            }
            (engine, _) => engine.map(|(e, _)| e),
        };
        if engine == Some(Engine::Ballista) && shards.is_some_and(|(s, _)| s > 1) {
            if let Some((_, Some(node))) = shards {
                self.error_help(
                    node.span,
                    "`shards` on a task with `engine: ballista`; Ballista splits the query itself",
                    "remove `shards`, or run the task on `datafusion`",
                );
            }
            ok = false;
        }
        let task = Task {
            id: id.to_string(),
            needs: needs.iter().map(|(n, _)| n.clone()).collect(),
            retries: retries?,
            retry_delay: retry_delay?,
            timeout: timeout?,
            device: device?,
            pool: pool?,
            priority: priority?,
            shards: shards?.0,
            engine: engine?,
            kind: kind?,
            span: key.span,
        };
        ok.then_some((task, needs))
    }

    fn kind(&mut self, kind: &str, node: &Node, what: &str, ctx: &RunContext) -> Option<TaskKind> {
        match kind {
            "sql" => {
                let located = self.located(node, &format!("{what}.sql"))?;
                if located.text.trim().is_empty() {
                    self.error(node.span, "`sql` is empty");
                    return None;
                }
                self.template(&located, ctx).map(|_| TaskKind::Sql(located))
            }
            "shell" => {
                let located = self.located(node, &format!("{what}.shell"))?;
                if located.text.trim().is_empty() {
                    self.error(node.span, "`shell` is empty");
                    return None;
                }
                self.template(&located, ctx)
                    .map(|_| TaskKind::Shell(located))
            }
            "generate" => self.generate(node, what, ctx).map(TaskKind::Generate),
            "knn" => self.knn(node, what),
            "matmul" => self.matmul(node, what),
            "score" => self.score(node, what),
            "empty" => match &node.value {
                Value::Null => Some(TaskKind::Empty),
                Value::Map(pairs) if pairs.is_empty() => Some(TaskKind::Empty),
                _ => {
                    self.error_help(
                        node.span,
                        format!("`{what}.empty` takes no settings"),
                        "write `empty: {}`",
                    );
                    None
                }
            },
            _ => None,
        }
    }

    /// A required table name of a dense task.
    fn table_ref(
        &mut self,
        fields: &[(&str, &Node, &Node)],
        key: &str,
        node: &Node,
        what: &str,
    ) -> Option<TableRef> {
        let Some((_, _, value)) = fields.iter().find(|(f, _, _)| *f == key) else {
            self.error(node.span, format!("`{what}` needs `{key}`: a table name"));
            return None;
        };
        let name = self.string(value, &format!("{what}.{key}"))?;
        Some(TableRef {
            name,
            span: value.span,
        })
    }

    /// The vector column of a dense task (`vector` unless named).
    fn vector_column(&mut self, fields: &[(&str, &Node, &Node)], what: &str) -> Option<String> {
        match fields.iter().find(|(f, _, _)| *f == "column") {
            Some((_, _, value)) => self.string(value, &format!("{what}.column")),
            None => Some("vector".to_string()),
        }
    }

    fn knn(&mut self, node: &Node, what: &str) -> Option<TaskKind> {
        let what = format!("{what}.knn");
        let fields = self.entries(node, &what, Some(KNN_KEYS))?;
        let base = self.table_ref(&fields, "base", node, &what);
        let queries = self.table_ref(&fields, "queries", node, &what);
        let column = self.vector_column(&fields, &what);
        let field = |k: &str| fields.iter().find(|(f, _, _)| *f == k).map(|(_, _, v)| *v);
        let k = match field("k") {
            Some(n) => self.positive(n, &format!("{what}.k"), MAX_K),
            None => Some(10),
        };
        let metric = match field("metric") {
            Some(n) => self.string(n, &format!("{what}.metric")).and_then(|m| {
                let metric = Metric::parse(&m);
                if metric.is_none() {
                    self.one_of(n.span, &format!("{what}.metric"), &m, &Metric::NAMES);
                }
                metric
            }),
            None => Some(Metric::Cosine),
        };
        Some(TaskKind::Knn(Knn {
            base: base?,
            queries: queries?,
            column: column?,
            k: k?,
            metric: metric?,
        }))
    }

    fn matmul(&mut self, node: &Node, what: &str) -> Option<TaskKind> {
        let what = format!("{what}.matmul");
        let fields = self.entries(node, &what, Some(MATMUL_KEYS))?;
        let left = self.table_ref(&fields, "left", node, &what);
        let right = self.table_ref(&fields, "right", node, &what);
        let column = self.vector_column(&fields, &what);
        Some(TaskKind::Matmul(Matmul {
            left: left?,
            right: right?,
            column: column?,
        }))
    }

    fn score(&mut self, node: &Node, what: &str) -> Option<TaskKind> {
        let what = format!("{what}.score");
        let fields = self.entries(node, &what, Some(SCORE_KEYS))?;
        let input = self.table_ref(&fields, "input", node, &what);
        let column = self.vector_column(&fields, &what);
        let field = |k: &str| fields.iter().find(|(f, _, _)| *f == k).map(|(_, _, v)| *v);
        let model = match field("model") {
            Some(n) => self.string(n, &format!("{what}.model")).and_then(|m| {
                if m.trim().is_empty() {
                    self.error(n.span, "`model` is empty; name a safetensors file");
                    None
                } else {
                    Some(PathBuf::from(m))
                }
            }),
            None => {
                self.error_help(
                    node.span,
                    format!("`{what}` needs `model`"),
                    "name a safetensors file: `model: models/mlp.safetensors`",
                );
                None
            }
        };
        let activation = match field("activation") {
            Some(n) => self.string(n, &format!("{what}.activation")).and_then(|a| {
                let activation = Activation::parse(&a);
                if activation.is_none() {
                    self.one_of(
                        n.span,
                        &format!("{what}.activation"),
                        &a,
                        &Activation::NAMES,
                    );
                }
                activation
            }),
            None => Some(Activation::Relu),
        };
        Some(TaskKind::Score(Score {
            input: input?,
            column: column?,
            model: model?,
            activation: activation?,
        }))
    }

    fn generate(&mut self, node: &Node, what: &str, ctx: &RunContext) -> Option<Generate> {
        let what = format!("{what}.generate");
        let fields = self.entries(node, &what, Some(GENERATE_KEYS))?;
        let field = |k: &str| fields.iter().find(|(f, _, _)| *f == k).map(|(_, _, v)| *v);
        if let Some(rows_node) = field("vectors") {
            if let Some(n) = field("tpch").or(field("scale_factor")) {
                self.error_help(
                    n.span,
                    "`generate` has two generators",
                    "use either `tpch: <table>` or `vectors: <rows>`",
                );
                return None;
            }
            let rows = match rows_node.value {
                Value::Int(i) if (1..=MAX_VECTOR_ROWS as i64).contains(&i) => Some(i as u64),
                Value::Int(_) => {
                    self.error(
                        rows_node.span,
                        format!("`{what}.vectors` must be between 1 and {MAX_VECTOR_ROWS}"),
                    );
                    None
                }
                _ => {
                    self.wrong_type(rows_node, "a number of rows", &format!("{what}.vectors"));
                    None
                }
            };
            let dim = match field("dim") {
                Some(n) => self.positive(n, &format!("{what}.dim"), MAX_VECTOR_DIM),
                None => {
                    self.error_help(
                        rows_node.span,
                        "`generate: { vectors }` needs `dim`",
                        "add the vector length, e.g. `dim: 128`",
                    );
                    None
                }
            };
            let seed = match field("seed") {
                Some(n) => self
                    .unsigned(n, &format!("{what}.seed"), u32::MAX)
                    .map(u64::from),
                None => Some(0),
            };
            return Some(Generate::Vectors {
                rows: rows?,
                dim: dim?,
                seed: seed?,
            });
        }
        if let Some(n) = field("dim").or(field("seed")) {
            self.error(n.span, "`dim` and `seed` go with `vectors: <rows>`");
            return None;
        }
        let Some(table_node) = field("tpch") else {
            self.error_help(
                node.span,
                "`generate` needs a generator",
                "use `tpch: <table>` or `vectors: <rows>` with `dim`",
            );
            return None;
        };
        let table = self
            .string(table_node, &format!("{what}.tpch"))
            .and_then(|name| {
                let table = TpchTable::parse(&name);
                if table.is_none() {
                    self.one_of(
                        table_node.span,
                        &format!("{what}.tpch"),
                        &name,
                        &TpchTable::NAMES,
                    );
                }
                table
            });
        let scale_factor = match field("scale_factor") {
            None => Located {
                text: "1".into(),
                span: table_node.span,
                style: Style::Plain,
            },
            Some(n) => {
                let Some(text) = n
                    .scalar_text()
                    .filter(|_| !matches!(n.value, Value::Bool(_)))
                else {
                    self.wrong_type(n, "a number or a template", &format!("{what}.scale_factor"));
                    return None;
                };
                Located {
                    text,
                    span: n.span,
                    style: match &n.value {
                        Value::Str(_, style) => *style,
                        _ => Style::Plain,
                    },
                }
            }
        };
        let rendered = self.template(&scale_factor, ctx)?;
        if let Err(e) = parse_scale_factor(&rendered) {
            self.error(scale_factor.span, format!("`scale_factor` {e}"));
            return None;
        }
        Some(Generate::Tpch {
            table: table?,
            scale_factor,
        })
    }

    /// Renders a template with the DAG's default params to find undefined names and syntax errors.
    fn template(&mut self, located: &Located, ctx: &RunContext) -> Option<String> {
        match template::render(located, ctx) {
            Ok(text) => Some(text),
            Err(e) => {
                let (line, column) = located.file_position(e.line, e.column);
                let mut d = Diagnostic::new(&self.file, Span::at(line, column, e.len), e.message);
                d.help = e.help;
                self.diags.push(d);
                None
            }
        }
    }
}

/// Parses a rendered `scale_factor`.
pub fn parse_scale_factor(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(sf) if sf.is_finite() && sf > 0.0 && sf <= 1000.0 => Ok(sf),
        Ok(sf) => Err(format!(
            "must be greater than 0 and at most 1000, found {sf}"
        )),
        Err(_) => Err(format!("must be a number, found `{}`", text.trim())),
    }
}

/// The names a task may refer to: the DAG's task ids and its datasets.
struct Known<'a> {
    tasks: &'a HashSet<&'a str>,
    datasets: &'a BTreeMap<String, Dataset>,
}
