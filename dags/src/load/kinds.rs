//! Each task kind's body: `sql`, `shell`, `empty` and the dense kinds `knn`, `matmul` and
//! `score` (`generate` has its own file).

use std::path::PathBuf;

use super::Cx;
use crate::model::{Activation, Knn, Matmul, Metric, Score, TableRef, TaskKind};
use crate::template::RunContext;
use crate::yaml::{Node, Value};

pub const KNN_KEYS: &[&str] = &["base", "queries", "column", "k", "metric"];
pub const MATMUL_KEYS: &[&str] = &["left", "right", "column"];
pub const SCORE_KEYS: &[&str] = &["input", "column", "model", "activation"];
/// Most neighbours a `knn` task may ask for per query.
pub const MAX_K: u32 = 4096;

impl Cx {
    pub(super) fn kind(
        &mut self,
        kind: &str,
        node: &Node,
        what: &str,
        ctx: &RunContext,
    ) -> Option<TaskKind> {
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
}
