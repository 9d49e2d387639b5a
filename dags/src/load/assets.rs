//! `produces:` on a task and the data form of `schedule:` (`assets`, `any`, `after`).

use super::Cx;
use crate::assets::{DataSchedule, MAX_LISTED, after_key, is_valid_name};
use crate::model::is_valid_id;
use crate::yaml::{Node, Span, Value};

/// Keys allowed under `schedule:` when it is a mapping.
pub const SCHEDULE_KEYS: &[&str] = &["assets", "any", "after"];
/// Keys allowed under `schedule.after`.
pub const AFTER_KEYS: &[&str] = &["dag"];

impl Cx {
    /// `schedule: { assets: [a, b] }`, `{ any: [a, b] }` or `{ after: { dag: ingest } }`.
    pub(super) fn data_schedule(
        &mut self,
        node: &Node,
        own_id: Option<&str>,
    ) -> Option<DataSchedule> {
        let entries = self.entries(node, "schedule", Some(SCHEDULE_KEYS))?;
        let [(key, key_node, value)] = entries.as_slice() else {
            let help = "write one of `schedule: { assets: [a, b] }` (each has a new event), \
                        `{ any: [a, b] }` (either has) or `{ after: { dag: ingest } }`";
            if entries.is_empty() && matches!(&node.value, Value::Map(pairs) if !pairs.is_empty()) {
                // Its keys were unknown, each reported with a suggestion.
                return None;
            }
            let message = if entries.is_empty() {
                "`schedule` lists nothing to wait for".to_string()
            } else {
                let keys: Vec<String> = entries.iter().map(|(k, _, _)| format!("`{k}`")).collect();
                format!(
                    "`schedule` has {}; it takes exactly one",
                    keys.join(" and ")
                )
            };
            self.error_help(node.span, message, help);
            return None;
        };
        let watch = match *key {
            "after" => {
                let what = "schedule.after";
                let fields = self.entries(value, what, Some(AFTER_KEYS))?;
                let Some((_, _, dag_node)) = fields.iter().find(|(k, _, _)| *k == "dag") else {
                    self.error_help(
                        value.span,
                        "`schedule.after` needs `dag`",
                        "write e.g. `after: { dag: ingest }`",
                    );
                    return None;
                };
                let dag = self.string(dag_node, "schedule.after.dag")?;
                if !is_valid_id(&dag) {
                    self.error(
                        dag_node.span,
                        format!("`{dag}` is not a DAG id (letters, digits, `_` and `-`)"),
                    );
                    return None;
                }
                if own_id == Some(dag.as_str()) {
                    self.error_help(
                        dag_node.span,
                        format!("DAG `{dag}` would start itself after each of its runs"),
                        "name another DAG",
                    );
                    return None;
                }
                vec![(after_key(&dag), dag_node.span)]
            }
            _ => self.asset_list(value, &format!("schedule.{key}"))?,
        };
        Some(DataSchedule {
            watch,
            any: *key == "any",
            span: key_node.span,
        })
    }

    /// A DAG that waits on an asset one of its own tasks produces would start itself forever.
    pub(super) fn starts_itself(
        &mut self,
        schedule: &DataSchedule,
        tasks: &[(crate::model::Task, Vec<(String, Span)>)],
    ) {
        for (key, span) in &schedule.watch {
            if let Some((task, _)) = tasks.iter().find(|(t, _)| t.produces.contains(key)) {
                self.error_help(
                    *span,
                    format!(
                        "the DAG waits on asset `{key}`, which its own task `{}` produces: each run would start the next",
                        task.id
                    ),
                    "wait on another asset, or move the producing task to another DAG",
                );
            }
        }
    }

    /// `produces: lake.orders` or `produces: [lake.orders, lake.customers]`.
    pub(super) fn produces(&mut self, node: &Node, what: &str) -> Option<Vec<String>> {
        let list = self.asset_list(node, what)?;
        Some(list.into_iter().map(|(name, _)| name).collect())
    }

    /// One asset name or a list of them, each valid and listed once.
    fn asset_list(&mut self, node: &Node, what: &str) -> Option<Vec<(String, Span)>> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Str(..) => vec![node],
            _ => {
                self.wrong_type(node, "an asset name or a list of them", what);
                return None;
            }
        };
        if items.is_empty() {
            self.error_help(
                node.span,
                format!("`{what}` is empty"),
                "list at least one asset",
            );
            return None;
        }
        if items.len() > MAX_LISTED {
            self.error(
                node.span,
                format!(
                    "`{what}` lists {} assets; at most {MAX_LISTED}",
                    items.len()
                ),
            );
            return None;
        }
        let mut out: Vec<(String, Span)> = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(name) = self.string(item, what) else {
                ok = false;
                continue;
            };
            if !is_valid_name(&name) {
                self.error_help(
                    item.span,
                    format!("`{name}` is not an asset name"),
                    "use letters, digits, `_`, `-`, `.` and `/` (at most 200), e.g. `lake.orders`",
                );
                ok = false;
            } else if out.iter().any(|(n, _)| *n == name) {
                self.error(
                    item.span,
                    format!("asset `{name}` is listed twice in `{what}`"),
                );
                ok = false;
            } else {
                out.push((name, item.span));
            }
        }
        ok.then_some(out)
    }
}
