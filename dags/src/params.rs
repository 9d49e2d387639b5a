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

/// The types a param may declare (`type:` in its long form).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    String,
    Number,
    Integer,
    Boolean,
    Array,
    Object,
}

impl ParamType {
    pub const NAMES: [&'static str; 6] =
        ["string", "number", "integer", "boolean", "array", "object"];

    pub fn parse(text: &str) -> Option<ParamType> {
        Some(match text {
            "string" => ParamType::String,
            "number" => ParamType::Number,
            "integer" => ParamType::Integer,
            "boolean" => ParamType::Boolean,
            "array" => ParamType::Array,
            "object" => ParamType::Object,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Number => "number",
            ParamType::Integer => "integer",
            ParamType::Boolean => "boolean",
            ParamType::Array => "array",
            ParamType::Object => "object",
        }
    }

    /// The type a value has (`None` for null); a whole number is an `integer`.
    pub fn of(value: &serde_json::Value) -> Option<ParamType> {
        use serde_json::Value::*;
        Some(match value {
            Null => return None,
            Bool(_) => ParamType::Boolean,
            Number(n) if n.is_i64() || n.is_u64() => ParamType::Integer,
            Number(_) => ParamType::Number,
            String(_) => ParamType::String,
            Array(_) => ParamType::Array,
            Object(_) => ParamType::Object,
        })
    }
}

/// What a param declares beside its default (its long form: `sf: { default: 0.1, type:
/// number, minimum: 0.01, description: … }`). The short form `sf: 0.1` declares nothing, and
/// its values are not checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamSpec {
    /// Declared, or (in the long form) the default's type; `None`: anything goes.
    pub kind: Option<ParamType>,
    pub description: Option<String>,
    /// `enum:` the values allowed (empty: any).
    pub choices: Vec<serde_json::Value>,
    /// Bounds of a `number` or `integer`.
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
}

impl ParamSpec {
    /// `value` as this param takes it, or why not. Text is read as the type asks (`--param
    /// sf=0.5` arrives as a number, `--param day=2026-01-02` as text; a `string` param given
    /// `7` takes `"7"`), then the choices and bounds are checked.
    pub fn check(
        &self,
        name: &str,
        value: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        use serde_json::Value;
        let shown = value.to_string();
        let wrong = |kind: ParamType| {
            format!(
                "param `{name}` must be {} {}, found {shown}",
                article(kind),
                kind.name()
            )
        };
        let value = match (self.kind, value) {
            (None, v) | (Some(_), v @ Value::Null) => v.clone(),
            (Some(ParamType::String), Value::String(_)) => value.clone(),
            (Some(ParamType::String), Value::Number(_) | Value::Bool(_)) => {
                Value::String(shown.clone())
            }
            (Some(ParamType::Number), Value::Number(_)) => value.clone(),
            (Some(ParamType::Number), Value::String(text)) => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Value::from)
                .ok_or_else(|| wrong(ParamType::Number))?,
            (Some(ParamType::Integer), Value::Number(n)) => match n.as_i64() {
                Some(i) => Value::from(i),
                None => match n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15) {
                    Some(f) => Value::from(f as i64),
                    None => return Err(wrong(ParamType::Integer)),
                },
            },
            (Some(ParamType::Integer), Value::String(text)) => text
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| wrong(ParamType::Integer))?,
            (Some(ParamType::Boolean), Value::Bool(_)) => value.clone(),
            (Some(ParamType::Boolean), Value::String(text))
                if text == "true" || text == "false" =>
            {
                Value::Bool(text == "true")
            }
            (Some(ParamType::Array), Value::Array(_)) => value.clone(),
            (Some(ParamType::Object), Value::Object(_)) => value.clone(),
            (Some(kind @ (ParamType::Array | ParamType::Object)), Value::String(text)) => {
                match serde_json::from_str::<Value>(text) {
                    Ok(parsed) if ParamType::of(&parsed) == Some(kind) => parsed,
                    _ => return Err(wrong(kind)),
                }
            }
            (Some(kind), _) => return Err(wrong(kind)),
        };
        if !self.choices.is_empty() && !self.choices.contains(&value) {
            let allowed: Vec<String> = self.choices.iter().map(|c| c.to_string()).collect();
            return Err(format!(
                "param `{name}` must be one of {}, found {value}",
                allowed.join(", ")
            ));
        }
        if let Some(number) = value.as_f64() {
            if let Some(min) = self.minimum.filter(|&min| number < min) {
                return Err(format!(
                    "param `{name}` must be at least {min}, found {value}"
                ));
            }
            if let Some(max) = self.maximum.filter(|&max| number > max) {
                return Err(format!(
                    "param `{name}` must be at most {max}, found {value}"
                ));
            }
        }
        Ok(value)
    }
}

fn article(kind: ParamType) -> &'static str {
    match kind {
        ParamType::Integer | ParamType::Array | ParamType::Object => "an",
        _ => "a",
    }
}

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
