//! `generate:`: a built-in data generator task, TPC-H tables or random vectors, and its
//! `scale_factor` check.

use super::Cx;
use crate::model::{Generate, Located, TpchTable};
use crate::template::RunContext;
use crate::yaml::{Node, Style, Value};

pub const GENERATE_KEYS: &[&str] = &["tpch", "scale_factor", "vectors", "dim", "seed"];
/// Most rows and widths `generate: { vectors }` makes.
pub const MAX_VECTOR_ROWS: u64 = 1 << 32;
pub const MAX_VECTOR_DIM: u32 = 65_536;

impl Cx {
    pub(super) fn generate(
        &mut self,
        node: &Node,
        what: &str,
        ctx: &RunContext,
    ) -> Option<Generate> {
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
