//! Run-time params: the DAG's defaults overridden by `--param name=value`.

use std::collections::BTreeMap;

use crate::diagnostic::did_you_mean;
use crate::model::Dag;

/// Parses one `name=value` flag. The value is read as YAML would read a plain scalar: numbers
/// and booleans keep their type, anything else is a string.
pub fn parse_assignment(text: &str) -> Result<(String, serde_json::Value), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!("`--param {text}`: expected name=value"));
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("`--param {text}`: the name is empty"));
    }
    let value = value.trim();
    let parsed = if let Ok(i) = value.parse::<i64>() {
        serde_json::Value::from(i)
    } else if let Some(f) = value.parse::<f64>().ok().filter(|f| f.is_finite()) {
        serde_json::Value::from(f)
    } else if value == "true" || value == "false" {
        serde_json::Value::Bool(value == "true")
    } else {
        serde_json::Value::String(value.to_string())
    };
    Ok((name.to_string(), parsed))
}

pub use crate::model::{ParamSpec, ParamType};

/// The params a run sees. Names the DAG does not declare are refused, with a suggestion;
/// values are checked against what a param declares (see [`ParamSpec::check`]).
pub fn resolve(
    dag: &Dag,
    overrides: &[(String, serde_json::Value)],
) -> Result<BTreeMap<String, serde_json::Value>, String> {
    let mut params = dag.params.clone();
    for (name, value) in overrides {
        if !params.contains_key(name) {
            let hint = match did_you_mean(name, dag.params.keys().map(String::as_str)) {
                Some(s) => format!("; did you mean `{s}`?"),
                None if dag.params.is_empty() => format!("; DAG `{}` declares no params", dag.id),
                None => format!(
                    "; declared: {}",
                    dag.params.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
            return Err(format!("unknown param `{name}`{hint}"));
        }
        let value = match dag.param_specs.get(name) {
            Some(spec) => spec.check(name, value)?,
            None => value.clone(),
        };
        params.insert(name.clone(), value);
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_as_their_params_declare() {
        use serde_json::json;
        let sf = ParamSpec {
            kind: Some(ParamType::Number),
            minimum: Some(0.01),
            maximum: Some(100.0),
            ..ParamSpec::default()
        };
        assert_eq!(sf.check("sf", &json!(1)).unwrap(), json!(1));
        assert_eq!(sf.check("sf", &json!("0.5")).unwrap(), json!(0.5));
        assert_eq!(
            sf.check("sf", &json!(0.001)).unwrap_err(),
            "param `sf` must be at least 0.01, found 0.001"
        );
        assert_eq!(
            sf.check("sf", &json!(101)).unwrap_err(),
            "param `sf` must be at most 100, found 101"
        );
        assert_eq!(
            sf.check("sf", &json!("lots")).unwrap_err(),
            "param `sf` must be a number, found \"lots\""
        );
        let n = ParamSpec {
            kind: Some(ParamType::Integer),
            ..ParamSpec::default()
        };
        assert_eq!(n.check("n", &json!(3.0)).unwrap(), json!(3));
        assert!(n.check("n", &json!(3.5)).is_err());
        let day = ParamSpec {
            kind: Some(ParamType::String),
            choices: vec![json!("EU"), json!("US")],
            ..ParamSpec::default()
        };
        assert_eq!(day.check("region", &json!("EU")).unwrap(), json!("EU"));
        assert_eq!(
            day.check("region", &json!("APAC")).unwrap_err(),
            "param `region` must be one of \"EU\", \"US\", found \"APAC\""
        );
        let flag = ParamSpec {
            kind: Some(ParamType::Boolean),
            ..ParamSpec::default()
        };
        assert_eq!(flag.check("full", &json!("true")).unwrap(), json!(true));
        assert!(flag.check("full", &json!(1)).is_err());
        let list = ParamSpec {
            kind: Some(ParamType::Array),
            ..ParamSpec::default()
        };
        assert_eq!(list.check("r", &json!("[1, 2]")).unwrap(), json!([1, 2]));
        assert!(list.check("r", &json!("{}")).is_err());
        // The short form checks nothing.
        assert_eq!(
            ParamSpec::default().check("x", &json!([1])).unwrap(),
            json!([1])
        );
    }

    #[test]
    fn assignments_keep_scalar_types() {
        assert_eq!(parse_assignment("sf=1").unwrap().1, serde_json::json!(1));
        assert_eq!(
            parse_assignment("sf=0.5").unwrap().1,
            serde_json::json!(0.5)
        );
        assert_eq!(
            parse_assignment("name=abc").unwrap().1,
            serde_json::json!("abc")
        );
        assert!(parse_assignment("nothing").is_err());
        assert!(parse_assignment("=1").is_err());
    }
}
