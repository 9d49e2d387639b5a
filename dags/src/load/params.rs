//! `params:`: each param's default, in the short form (`sf: 0.1`) or the long form (`sf: {
//! default: 0.1, type: number, minimum: 0.01, maximum: 100, description: …, enum: […] }`),
//! whose default must satisfy what it declares.

use std::collections::BTreeMap;

use super::Cx;
use crate::diagnostic::did_you_mean;
use crate::params::{ParamSpec, ParamType};
use crate::yaml::{Node, Value};

/// Keys of a param's long form.
pub const PARAM_KEYS: &[&str] = &[
    "default",
    "type",
    "description",
    "enum",
    "minimum",
    "maximum",
];

/// Declared params: defaults and what each declares.
pub(super) type Params = (
    BTreeMap<String, serde_json::Value>,
    BTreeMap<String, ParamSpec>,
);

impl Cx {
    pub(super) fn params(&mut self, node: &Node) -> Params {
        let (mut defaults, mut specs) = (BTreeMap::new(), BTreeMap::new());
        for (name, key, value) in self.entries(node, "params", None).unwrap_or_default() {
            if !self.id(key, name, "param") {
                continue;
            }
            let (default, spec) = if long_form(value) {
                match self.param_spec(name, value) {
                    Some(found) => found,
                    None => continue,
                }
            } else {
                (value.to_json(), ParamSpec::default())
            };
            defaults.insert(name.to_string(), default);
            specs.insert(name.to_string(), spec);
        }
        (defaults, specs)
    }

    fn param_spec(&mut self, name: &str, node: &Node) -> Option<(serde_json::Value, ParamSpec)> {
        let what = format!("params.{name}");
        let fields = self.entries(node, &what, Some(PARAM_KEYS))?;
        let field = |k: &str| fields.iter().find(|(f, _, _)| *f == k).map(|(_, _, v)| *v);
        let default = field("default").map_or(serde_json::Value::Null, Node::to_json);
        let declared = match field("type") {
            Some(n) => {
                let text = self.string(n, &format!("{what}.type"))?;
                let parsed = ParamType::parse(&text);
                if parsed.is_none() {
                    self.one_of(n.span, &format!("{what}.type"), &text, &ParamType::NAMES);
                }
                Some(parsed?)
            }
            None => None,
        };
        // Without `type:`, the default's (a whole number default reads as a number).
        let kind = declared.or_else(|| {
            ParamType::of(&default).map(|t| match t {
                ParamType::Integer => ParamType::Number,
                other => other,
            })
        });
        let description = match field("description") {
            Some(n) => Some(self.string(n, &format!("{what}.description"))?),
            None => None,
        };
        let choices = match field("enum") {
            Some(n) => match &n.value {
                Value::Seq(items) if !items.is_empty() => items.iter().map(Node::to_json).collect(),
                _ => {
                    self.error(
                        n.span,
                        format!("`{what}.enum` must be a non-empty list of values"),
                    );
                    return None;
                }
            },
            None => Vec::new(),
        };
        let mut bound = |key: &str| -> Option<Option<f64>> {
            let Some(n) = field(key) else {
                return Some(None);
            };
            let number = match n.value {
                Value::Int(i) => i as f64,
                Value::Float(f) if f.is_finite() => f,
                _ => {
                    self.error(n.span, format!("`{what}.{key}` must be a number"));
                    return None;
                }
            };
            if !matches!(kind, Some(ParamType::Number | ParamType::Integer)) {
                self.error(
                    n.span,
                    format!(
                        "`{what}.{key}` bounds a number; `{name}` is not a number or an integer"
                    ),
                );
                return None;
            }
            Some(Some(number))
        };
        let (minimum, maximum) = (bound("minimum")?, bound("maximum")?);
        if let (Some(min), Some(max)) = (minimum, maximum)
            && min > max
        {
            let span = field("minimum").map_or(node.span, |n| n.span);
            self.error(
                span,
                format!("`{what}.minimum` ({min}) is above its maximum ({max})"),
            );
            return None;
        }
        let spec = ParamSpec {
            kind,
            description,
            choices,
            minimum,
            maximum,
        };
        // The default must be a value the param takes (a null default: none given).
        if !default.is_null()
            && let Err(why) = spec.check(name, &default)
        {
            let span = field("default").map_or(node.span, |n| n.span);
            self.error(span, format!("the default of {why}"));
            return None;
        }
        Some((default, spec))
    }
}

/// Whether a param's mapping is its long form: its keys are the long form's (or a misspelling
/// of one, reported as such); any other mapping is an object default.
fn long_form(node: &Node) -> bool {
    let Value::Map(pairs) = &node.value else {
        return false;
    };
    !pairs.is_empty()
        && pairs.iter().any(|(k, _)| {
            k.as_str().is_some_and(|k| {
                PARAM_KEYS.contains(&k) || did_you_mean(k, PARAM_KEYS.iter().copied()).is_some()
            })
        })
}
