//! `map:` on a task: `{ over, as, max_map }` (see [`crate::mapping`]).

use super::Cx;
use crate::mapping::{DEFAULT_MAX, MAX_MAX, Map, Over, list_values};
use crate::model::is_valid_id;
use crate::template::{RunContext, TOP_LEVEL_NAMES};
use crate::yaml::{Node, Value};

/// Keys allowed under a task's `map:`.
pub const MAP_KEYS: &[&str] = &["over", "as", "max_map"];

impl Cx {
    /// A task's `map:`, and the sample value its templates are checked with (the list's first
    /// value, or `""` when only a run can tell).
    pub(super) fn map(
        &mut self,
        node: &Node,
        what: &str,
        ctx: &RunContext,
    ) -> Option<(Map, serde_json::Value)> {
        let what = format!("{what}.map");
        let entries = self.entries(node, &what, Some(MAP_KEYS))?;
        let field = |k: &str| entries.iter().find(|(f, _, _)| *f == k).map(|(_, _, v)| *v);
        let mut ok = true;
        let over = match field("over") {
            Some(n) => self.located(n, &format!("{what}.over")),
            None => {
                if matches!(&node.value, Value::Map(pairs) if pairs.len() > entries.len()) {
                    // An unknown key was reported, with its suggestion.
                    return None;
                }
                self.error_help(
                    node.span,
                    format!("`{what}` needs `over`: the values to run the task for"),
                    "write e.g. `map: { over: \"SELECT region FROM regions\", as: region }` \
                     or `over: \"{{ params.regions }}\"`",
                );
                return None;
            }
        };
        let over = over.map(Over::parse);
        let mut sample = serde_json::Value::String(String::new());
        match &over {
            Some(over) if over.text().text.trim().is_empty() => {
                self.error(over.text().span, format!("`{what}.over` is empty"));
                ok = false;
            }
            Some(Over::List(located)) => match list_values(located, ctx) {
                Ok(values) => {
                    if let Some(first) = values.into_iter().next() {
                        sample = first;
                    }
                }
                Err(e) => {
                    let _: Option<()> = self.template_error(located, e);
                    ok = false;
                }
            },
            Some(Over::Sql(located)) => {
                ok &= self.template(located, ctx).is_some();
            }
            None => ok = false,
        }
        let name = match field("as") {
            Some(n) => {
                let name = self.string(n, &format!("{what}.as"));
                match name {
                    Some(name) if !is_valid_id(&name) => {
                        self.error_help(
                            n.span,
                            format!("`{what}.as` must be a name templates can use, found `{name}`"),
                            "use lowercase letters, digits and `_`, starting with a letter or `_`",
                        );
                        None
                    }
                    Some(name) if TOP_LEVEL_NAMES.contains(&name.as_str()) => {
                        self.error_help(
                            n.span,
                            format!("`{what}.as: {name}` would hide the template name `{name}`"),
                            "choose another name, e.g. `item`",
                        );
                        None
                    }
                    name => name,
                }
            }
            None => {
                self.error_help(
                    node.span,
                    format!("`{what}` needs `as`: the name each instance's templates see its value under"),
                    "write e.g. `as: region`, then use `{{ region }}` in the task",
                );
                None
            }
        };
        let max = match field("max_map") {
            Some(n) => self
                .positive(n, &format!("{what}.max_map"), MAX_MAX as u32)
                .map(|m| m as usize),
            None => Some(DEFAULT_MAX),
        };
        let map = Map {
            over: over?,
            name: name?,
            max: max?,
        };
        ok.then_some((map, sample))
    }
}
