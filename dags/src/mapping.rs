//! Dynamic mapping: `map: { over, as, max_map }` runs one instance of a task per value of a
//! list known only when the run reaches it.
//!
//! The task's first attempt (the *expansion*) reads the list: a query over its inputs
//! returning one column (`over: "SELECT region FROM regions"`), or a list param
//! (`over: "{{ params.regions }}"`). Its end creates the instances `task[0]`, `task[1]`, … in
//! the run, each rendering the task's templates with the value under the `as` name; a
//! downstream task then waits on every instance and reads their outputs as one table. An
//! empty list skips the task; a list longer than `max_map` fails it with the count.

pub use crate::model::map::{DEFAULT_MAX, MAX_MAX, Map, Over, instance_id, split_instance};

use crate::model::Located;
use crate::model::map::expression;
use crate::template::{RunContext, TemplateError};

/// The values of a list expression (`Over::List`) for a run.
pub fn list_values(
    located: &Located,
    ctx: &RunContext,
) -> Result<Vec<serde_json::Value>, TemplateError> {
    let fail = |message: String| TemplateError {
        message,
        line: 1,
        column: 1,
        len: located.text.len().max(1),
        help: Some("write a list param, e.g. `over: \"{{ params.regions }}\"`".into()),
    };
    let Some(expr) = expression(&located.text) else {
        return Err(fail("`map.over` is not one `{{ … }}` expression".into()));
    };
    let value = crate::template::evaluate(expr, &located.text, ctx)?;
    match value {
        serde_json::Value::Array(items) => Ok(items),
        other => Err(fail(format!(
            "`map.over` must give a list; it gives {}",
            kind_of(&other)
        ))),
    }
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

/// Refuses a list longer than `max`, saying how long it is.
pub fn check_count(count: usize, max: usize) -> Result<(), String> {
    if count > max {
        return Err(format!(
            "`map.over` gave {count} values; at most {max} are allowed (`max_map: {max}`)"
        ));
    }
    Ok(())
}

/// A value as a person reads it: a string without quotes, anything else as JSON.
pub fn label(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_round_trip() {
        assert_eq!(instance_id("load", 3), "load[3]");
        assert_eq!(split_instance("load[3]"), ("load", Some(3)));
        assert_eq!(split_instance("load"), ("load", None));
        assert_eq!(split_instance("load[]"), ("load[]", None));
        assert_eq!(split_instance("load[x]"), ("load[x]", None));
        assert_eq!(split_instance("load[3]x"), ("load[3]x", None));
    }

    #[test]
    fn over_is_a_list_only_when_it_is_one_expression() {
        let located = |text: &str| Located {
            text: text.into(),
            span: crate::yaml::Span::at(1, 1, 1),
            style: crate::yaml::Style::Plain,
        };
        assert!(matches!(
            Over::parse(located("{{ params.regions }}")),
            Over::List(_)
        ));
        assert!(matches!(
            Over::parse(located("SELECT '{{ ds }}' AS d")),
            Over::Sql(_)
        ));
        assert!(matches!(
            Over::parse(located("{{ a }} {{ b }}")),
            Over::Sql(_)
        ));
    }

    #[test]
    fn counts_over_the_bound_are_refused_with_the_count() {
        assert!(check_count(3, 3).is_ok());
        let e = check_count(5, 3).unwrap_err();
        assert!(
            e.contains("gave 5 values") && e.contains("at most 3"),
            "{e}"
        );
    }

    #[test]
    fn labels_strings_without_quotes() {
        assert_eq!(label(&serde_json::json!("eu")), "eu");
        assert_eq!(label(&serde_json::json!(3)), "3");
    }
}
