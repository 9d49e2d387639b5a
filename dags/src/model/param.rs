//! What a param declares in its long form, and how a run's value is checked against it.

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
