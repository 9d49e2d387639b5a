//! Each task kind's body: `sql`, `shell`, `empty`, `wait` and the dense kinds `knn`, `matmul`
//! and `score` (`generate` has its own file).

use std::path::{Path, PathBuf};

use super::Cx;
use crate::model::{
    Activation, DEFAULT_POKE, DEFAULT_WAIT_TIMEOUT, Knn, MIN_POKE, Matmul, Metric, Probe, Score,
    TableRef, TaskKind, Wait, format_duration,
};
use crate::template::RunContext;
use crate::yaml::{Node, Value};

pub const KNN_KEYS: &[&str] = &["base", "queries", "column", "k", "metric"];
pub const MATMUL_KEYS: &[&str] = &["left", "right", "column"];
pub const SCORE_KEYS: &[&str] = &["input", "column", "model", "activation"];
/// Keys of a `wait:` (a sensor): exactly one of `uri` and `sql`.
pub const WAIT_KEYS: &[&str] = &["uri", "sql", "options", "poke", "timeout", "soft_fail"];
/// Most neighbours a `knn` task may ask for per query.
pub const MAX_K: u32 = 4096;

impl Cx {
    pub(super) fn kind(
        &mut self,
        kind: &str,
        node: &Node,
        what: &str,
        ctx: &RunContext,
        base_dir: &Path,
    ) -> Option<TaskKind> {
        match kind {
            "wait" => self.wait(node, what, ctx, base_dir).map(TaskKind::Wait),
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

    /// `wait: { uri | sql, options, poke, timeout, soft_fail }`.
    fn wait(&mut self, node: &Node, what: &str, ctx: &RunContext, base_dir: &Path) -> Option<Wait> {
        let what = format!("{what}.wait");
        let fields = self.entries(node, &what, Some(WAIT_KEYS))?;
        let field = |k: &str| fields.iter().find(|(f, _, _)| *f == k).map(|(_, _, v)| *v);
        let probe = match (field("uri"), field("sql")) {
            (Some(uri), None) => self
                .uri_location(uri, field("options"), &what, ctx, base_dir)
                .map(|(uri_text, templated, location)| Probe::Uri {
                    uri: uri_text,
                    templated,
                    location,
                    span: uri.span,
                }),
            (None, Some(sql)) => {
                if let Some(options) = field("options") {
                    self.error(
                        options.span,
                        format!("`{what}.options` go with a `uri`; a `sql` wait reads its inputs"),
                    );
                }
                let located = self.located(sql, &format!("{what}.sql"))?;
                if located.text.trim().is_empty() {
                    self.error(sql.span, format!("`{what}.sql` is empty"));
                    return None;
                }
                self.template(&located, ctx).map(|_| Probe::Sql(located))
            }
            (Some(_), Some(sql)) => {
                self.error(
                    sql.span,
                    format!("`{what}` has both `uri` and `sql`; a wait checks one of them"),
                );
                None
            }
            (None, None) => {
                self.error_help(
                    node.span,
                    format!("`{what}` needs `uri` or `sql`: what to wait for"),
                    "write e.g. `wait: { uri: \"s3://lake/raw/dt={{ ds }}/_SUCCESS\" }` or \
                     `wait: { sql: \"SELECT COUNT(*) > 0 FROM orders\" }`",
                );
                None
            }
        };
        let poke = match field("poke") {
            Some(n) => self.duration(n, &format!("{what}.poke")).and_then(|d| {
                if d < MIN_POKE {
                    self.error(
                        n.span,
                        format!(
                            "`{what}.poke` is {}; pokes are at least {} apart",
                            format_duration(d),
                            format_duration(MIN_POKE)
                        ),
                    );
                    return None;
                }
                Some((d, Some(n)))
            }),
            None => Some((DEFAULT_POKE, None)),
        };
        let timeout = match field("timeout") {
            Some(n) => self.duration(n, &format!("{what}.timeout")).and_then(|d| {
                if d.is_zero() {
                    self.error(n.span, format!("`{what}.timeout` must be longer than 0s"));
                    return None;
                }
                Some(d)
            }),
            None => Some(DEFAULT_WAIT_TIMEOUT),
        };
        let soft_fail = match field("soft_fail") {
            Some(n) => self.boolean(n, &format!("{what}.soft_fail")),
            None => Some(false),
        };
        let ((poke, poke_node), timeout) = (poke?, timeout?);
        if poke > timeout {
            self.error(
                poke_node.map_or(node.span, |n| n.span),
                format!(
                    "`{what}.poke` ({}) is longer than its `timeout` ({}): it would poke once",
                    format_duration(poke),
                    format_duration(timeout)
                ),
            );
            return None;
        }
        Some(Wait {
            probe: probe?,
            poke,
            timeout,
            soft_fail: soft_fail?,
        })
    }
}
