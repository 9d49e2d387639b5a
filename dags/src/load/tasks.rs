//! `tasks:`: the task list, each task's id, `needs` and common settings (with `defaults:`),
//! and the checks that tie a task's kind to those settings.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::notify::NoticeScope;
use super::{Cx, Defaults};
use crate::diagnostic::did_you_mean;
use crate::model::{Dataset, Engine, RetryBackoff, Task, TaskKind};
use crate::template::RunContext;
use crate::yaml::{Node, Span, Value};

/// Keys allowed on a task (the settings plus the kinds).
pub const TASK_KEYS: &[&str] = &[
    "needs",
    "retries",
    "retry_delay",
    "retry_backoff",
    "max_retry_delay",
    "timeout",
    "device",
    "trigger",
    "depends_on_past",
    "when",
    "pool",
    "priority",
    "shards",
    "engine",
    "produces_data",
    "output",
    "produces",
    "map",
    "sql",
    "shell",
    "generate",
    "empty",
    "knn",
    "matmul",
    "score",
    "wait",
    "on_failure",
    "on_retry",
    "on_success",
];
/// The task kinds: each task has exactly one of these keys.
pub const KIND_KEYS: &[&str] = &[
    "sql", "shell", "generate", "empty", "knn", "matmul", "score", "wait",
];
/// Most tasks one DAG may declare.
pub const MAX_TASKS: usize = 10_000;

impl Cx {
    pub(super) fn tasks(
        &mut self,
        node: &Node,
        defaults: &Defaults,
        dag: &DagFacts<'_>,
        ctx: &RunContext,
        scope: &NoticeScope<'_>,
    ) -> Vec<(Task, Vec<(String, Span)>)> {
        let datasets = dag.datasets;
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
                scope,
                scheduled: dag.scheduled,
                base_dir: dag.base_dir,
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
        let scope = known.scope;
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

        // A mapped task's templates also see its value (`map.as`): a sample one here.
        let map = match field("map") {
            Some(n) => self
                .map(n, &what, ctx)
                .map(|(map, sample)| (Some(map), Some(sample), n)),
            None => Some((None, None, key)),
        };
        let mapped_ctx = match &map {
            Some((Some(m), Some(sample), _)) => {
                Some(ctx.clone().with_item(&m.name, sample.clone()))
            }
            _ => None,
        };
        // (A Jinja `when:` is decided when the run is created, before any value is known.)
        let run_ctx = ctx;
        let ctx = mapped_ctx.as_ref().unwrap_or(ctx);
        if map.is_none() {
            ok = false;
        }

        let retries = match field("retries") {
            Some(n) => self.unsigned(n, &format!("{what}.retries"), 100),
            None => Some(defaults.retries.unwrap_or(0)),
        };
        let retry_delay = match field("retry_delay") {
            Some(n) => self.duration(n, &format!("{what}.retry_delay")),
            None => Some(defaults.retry_delay.unwrap_or(Duration::from_secs(10))),
        };
        let exponential = match field("retry_backoff") {
            Some(n) => self
                .backoff(n, &format!("{what}.retry_backoff"))
                .map(|e| (e, Some(n.span))),
            None => Some(
                defaults
                    .retry_backoff
                    .map_or((false, None), |(e, span)| (e, Some(span))),
            ),
        };
        let max_retry_delay = match field("max_retry_delay") {
            Some(n) => self
                .duration(n, &format!("{what}.max_retry_delay"))
                .map(|m| Some((m, n.span))),
            None => Some(defaults.max_retry_delay),
        };
        let retry_backoff = match (exponential, max_retry_delay) {
            (Some((true, _)), Some(max)) => {
                let max = max.map_or(RetryBackoff::DEFAULT_MAX, |(m, _)| m);
                if max.is_zero() {
                    self.error(
                        field("max_retry_delay").map_or(key.span, |n| n.span),
                        "`max_retry_delay` must be longer than 0s",
                    );
                    None
                } else {
                    Some(RetryBackoff::Exponential { max })
                }
            }
            // A cap from `defaults:` does not bind a task that chose a constant backoff.
            (Some((false, _)), Some(Some(_)))
                if field("retry_backoff").is_some() && field("max_retry_delay").is_none() =>
            {
                Some(RetryBackoff::Constant)
            }
            (Some((false, _)), Some(Some((_, span)))) => {
                self.error_help(
                    span,
                    format!("task `{id}`: `max_retry_delay` caps an exponential backoff, but its retries wait a constant `retry_delay`"),
                    "add `retry_backoff: exponential`, or remove `max_retry_delay`",
                );
                None
            }
            (Some((false, _)), Some(None)) => Some(RetryBackoff::Constant),
            _ => None,
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
        let trigger = match field("trigger") {
            Some(n) => self.trigger(n, &format!("{what}.trigger")),
            None => Some(defaults.trigger.unwrap_or_default()),
        };
        let depends_on_past = match field("depends_on_past") {
            Some(n) => self
                .boolean(n, &format!("{what}.depends_on_past"))
                .map(|b| (b, n.span)),
            None => Some(defaults.depends_on_past.unwrap_or((false, key.span))),
        };
        if let Some((true, span)) = depends_on_past
            && !known.scheduled
        {
            self.error_help(
                span,
                format!(
                    "task `{id}` has `depends_on_past`, but the DAG has no `schedule`: its runs have no previous run to wait for"
                ),
                "add a `schedule`, or remove `depends_on_past`",
            );
            ok = false;
        }
        let when = match field("when") {
            Some(n) => {
                let when_ctx = if matches!(n.value, Value::Map(_)) {
                    ctx
                } else {
                    run_ctx
                };
                self.condition(n, &format!("{what}.when"), when_ctx)
                    .map(Some)
            }
            None => Some(None),
        };
        let notify = self.notify(&fields, &format!("{what}."), scope);
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

        let output = match field("output") {
            Some(n) => self
                .output(n, &what, ctx, known.base_dir)
                .map(|o| Some((o, n.span))),
            None => Some(None),
        };
        let shell_output = match field("produces_data") {
            Some(n) => self
                .boolean(n, &format!("{what}.produces_data"))
                .map(|b| (b, Some(n))),
            None => Some((false, None)),
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
                let kind = self.kind(kind, value, &what, ctx, known.base_dir);
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

        // Only a command's output is its own choice; every other kind writes its result.
        if let (Some((true, Some(node))), Some(kind)) = (shell_output, &kind)
            && !matches!(kind, TaskKind::Shell(_))
        {
            self.error_help(
                node.span,
                format!(
                    "`produces_data` on a `{}` task; only a `shell` task says whether it writes \
                     a dataset (every `{}` task's result is its output)",
                    kind.name(),
                    kind.name()
                ),
                "remove `produces_data`",
            );
            ok = false;
        }
        // Only a task with a result has one to write out.
        if let (Some(Some((_, span))), Some(kind)) = (&output, &kind) {
            let writes = match kind {
                TaskKind::Shell(_) => shell_output.is_some_and(|(b, _)| b),
                TaskKind::Empty | TaskKind::Wait(_) => false,
                _ => true,
            };
            if !writes {
                self.error_help(
                    *span,
                    format!("`output` on a task of kind `{}`, which has no result to write", kind.name()),
                    if matches!(kind, TaskKind::Shell(_)) {
                        "add `produces_data: true` if the command writes one into $AMDAHL_OUTPUT_DIR"
                    } else {
                        "remove `output`"
                    },
                );
                ok = false;
            }
        }
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
        let produces = match field("produces") {
            Some(n) => self.produces(n, &format!("{what}.produces")),
            None => Some(Vec::new()),
        };
        // A mapped task's instances end one by one, each with its own result.
        if let Some((Some(_), _, map_node)) = &map {
            let refused = [
                (
                    "produces",
                    "each instance would record its own event; put `produces` on a task downstream of it",
                ),
                (
                    "output",
                    "every instance would write its result there; write it from a task downstream, which reads them all",
                ),
            ];
            for (key, why) in refused {
                if let Some(n) = field(key) {
                    self.error_help(
                        n.span,
                        format!(
                            "`{key}` on mapped task `{id}` (its `map` is at line {})",
                            map_node.span.start.line
                        ),
                        why,
                    );
                    ok = false;
                }
            }
        }
        let task = Task {
            id: id.to_string(),
            needs: needs.iter().map(|(n, _)| n.clone()).collect(),
            retries: retries?,
            retry_delay: retry_delay?,
            retry_backoff: retry_backoff?,
            timeout: timeout?,
            device: device?,
            trigger: trigger?,
            depends_on_past: depends_on_past?.0,
            when: when?,
            notify: notify?,
            pool: pool?,
            priority: priority?,
            shards: shards?.0,
            engine: engine?,
            shell_output: shell_output?.0,
            output: output?.map(|(o, _)| o),
            produces: produces?,
            map: map?.0,
            kind: kind?,
            span: key.span,
        };
        ok.then_some((task, needs))
    }
}

/// The names a task may refer to: the DAG's task ids, its datasets, and what its
/// notification templates may use.
/// What the tasks of a DAG are checked against, besides each other.
pub(super) struct DagFacts<'a> {
    pub datasets: &'a BTreeMap<String, Dataset>,
    /// Whether the DAG has a schedule (which `depends_on_past` needs).
    pub scheduled: bool,
    /// The DAG file's folder.
    pub base_dir: &'a std::path::Path,
}

struct Known<'a> {
    tasks: &'a HashSet<&'a str>,
    datasets: &'a BTreeMap<String, Dataset>,
    scope: &'a NoticeScope<'a>,
    /// Whether the DAG has a schedule (which `depends_on_past` needs).
    scheduled: bool,
    /// The DAG file's folder (relative output paths start there).
    base_dir: &'a std::path::Path,
}
