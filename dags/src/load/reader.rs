//! The loader's primitive readers: one YAML node in, a typed value or a located diagnostic out.
//!
//! Each reader reports what is wrong with its node and returns `None`, so a caller can keep
//! going and collect every problem in the file.

use std::collections::HashMap;
use std::time::Duration;

use super::{Cx, Entries};
use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::model::{
    DevicePreference, Engine, Located, RetryBackoff, TriggerRule, is_valid_id, parse_duration,
};
use crate::yaml::{Node, Span, Style, Value};

impl Cx {
    pub(super) fn error(&mut self, span: Span, message: impl Into<String>) {
        self.diags.push(Diagnostic::new(&self.file, span, message));
    }

    pub(super) fn error_help(
        &mut self,
        span: Span,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.diags
            .push(Diagnostic::new(&self.file, span, message).with_help(help));
    }

    pub(super) fn wrong_type(&mut self, node: &Node, expected: &str, what: &str) {
        self.error(
            node.span,
            format!("`{what}` must be {expected}, found {}", node.type_name()),
        );
    }

    /// The entries of a mapping with string keys; reports duplicates and, given `allowed`,
    /// unknown keys with a suggestion.
    pub(super) fn entries<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: Option<&[&str]>,
    ) -> Option<Entries<'n>> {
        let Value::Map(pairs) = &node.value else {
            if node.value == Value::Null {
                return Some(Vec::new());
            }
            self.wrong_type(node, "a mapping", what);
            return None;
        };
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut out = Vec::new();
        for (key, value) in pairs {
            let Some(name) = key.as_str() else {
                self.error(
                    key.span,
                    format!(
                        "keys in `{what}` must be strings, found {}",
                        key.type_name()
                    ),
                );
                continue;
            };
            if let Some(first) = seen.get(name) {
                self.error(
                    key.span,
                    format!(
                        "duplicate key `{name}` in `{what}` (first defined at line {})",
                        first.start.line
                    ),
                );
                continue;
            }
            seen.insert(name, key.span);
            if let Some(allowed) = allowed
                && !allowed.contains(&name)
            {
                let message = format!("unknown key `{name}` in `{what}`");
                match did_you_mean(name, allowed.iter().copied()) {
                    Some(s) => self.error_help(key.span, message, format!("did you mean `{s}`?")),
                    None => self.error_help(
                        key.span,
                        message,
                        format!("expected one of: {}", allowed.join(", ")),
                    ),
                }
                continue;
            }
            out.push((name, key, value));
        }
        Some(out)
    }

    pub(super) fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Str(s, _) => Some(s.clone()),
            _ => {
                self.wrong_type(node, "a string", what);
                None
            }
        }
    }

    pub(super) fn located(&mut self, node: &Node, what: &str) -> Option<Located> {
        let text = self.string(node, what)?;
        let style = match &node.value {
            Value::Str(_, style) => *style,
            _ => Style::Plain,
        };
        Some(Located {
            text,
            span: node.span,
            style,
        })
    }

    pub(super) fn unsigned(&mut self, node: &Node, what: &str, max: u32) -> Option<u32> {
        self.bounded(node, what, 0, max, "a non-negative integer")
    }

    pub(super) fn positive(&mut self, node: &Node, what: &str, max: u32) -> Option<u32> {
        self.bounded(node, what, 1, max, "a positive integer")
    }

    fn bounded(&mut self, node: &Node, what: &str, min: u32, max: u32, kind: &str) -> Option<u32> {
        match node.value {
            Value::Int(i) if (i64::from(min)..=i64::from(max)).contains(&i) => Some(i as u32),
            Value::Int(i) if i < i64::from(min) => {
                self.error(node.span, format!("`{what}` must be at least {min}"));
                None
            }
            Value::Int(i) => {
                self.error(
                    node.span,
                    format!("`{what}` must be between {min} and {max}, found {i}"),
                );
                None
            }
            _ => {
                self.wrong_type(node, kind, what);
                None
            }
        }
    }

    pub(super) fn integer(&mut self, node: &Node, what: &str) -> Option<i32> {
        match node.value {
            Value::Int(i) if i32::try_from(i).is_ok() => Some(i as i32),
            _ => {
                self.wrong_type(node, "an integer", what);
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.wrong_type(node, "true or false", what);
                None
            }
        }
    }

    pub(super) fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let text = match &node.value {
            Value::Str(s, _) => s.clone(),
            Value::Int(i) if *i >= 0 => i.to_string(),
            _ => {
                self.wrong_type(node, "a duration such as 30s, 10m or 1h30m", what);
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(node.span, format!("bad duration for `{what}`: {e}"));
                None
            }
        }
    }

    pub(super) fn device(&mut self, node: &Node, what: &str) -> Option<DevicePreference> {
        self.named(
            node,
            what,
            DevicePreference::parse,
            &DevicePreference::NAMES,
        )
    }

    pub(super) fn trigger(&mut self, node: &Node, what: &str) -> Option<TriggerRule> {
        self.named(node, what, TriggerRule::parse, &TriggerRule::NAMES)
    }

    /// `retry_backoff:`: true for `exponential`, false for `constant`.
    pub(super) fn backoff(&mut self, node: &Node, what: &str) -> Option<bool> {
        self.named(
            node,
            what,
            |t| match t {
                "constant" => Some(false),
                "exponential" => Some(true),
                _ => None,
            },
            &RetryBackoff::NAMES,
        )
    }

    pub(super) fn engine(&mut self, node: &Node, what: &str) -> Option<Engine> {
        self.named(node, what, Engine::parse, &Engine::NAMES)
    }

    /// A string that must be one of `names`, read by `parse`; otherwise a located error with
    /// "did you mean".
    pub(super) fn named<T>(
        &mut self,
        node: &Node,
        what: &str,
        parse: fn(&str) -> Option<T>,
        names: &[&str],
    ) -> Option<T> {
        let text = self.string(node, what)?;
        let value = parse(&text);
        if value.is_none() {
            self.one_of(node.span, what, &text, names);
        }
        value
    }

    pub(super) fn one_of(&mut self, span: Span, what: &str, found: &str, allowed: &[&str]) {
        let message = format!(
            "`{what}` must be one of {}, found `{found}`",
            allowed.join(", ")
        );
        match did_you_mean(found, allowed.iter().copied()) {
            Some(s) => self.error_help(span, message, format!("did you mean `{s}`?")),
            None => self.error(span, message),
        }
    }

    pub(super) fn id(&mut self, node: &Node, name: &str, what: &str) -> bool {
        if is_valid_id(name) {
            return true;
        }
        self.error_help(
            node.span,
            format!("invalid {what} id `{name}`"),
            "ids use lowercase letters, digits and `_`, start with a letter or `_`, at most 64 characters",
        );
        false
    }
}
