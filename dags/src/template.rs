//! Jinja templating of task text (`sql`, `shell`, `generate.scale_factor`).
//!
//! Templates see `params` (the DAG's defaults overridden by the run's `--param`s), `run.id`,
//! `run.logical_date`, `dag.id`, and Airflow's names for the run's dates: `ds` (the logical
//! date's day on the DAG's clock), `ds_nodash`, `ts` (the logical date),
//! `data_interval_start` and `data_interval_end`. Undefined names are errors, never empty strings: a typo in a
//! param name must fail validation rather than produce a query over the wrong data. Rendering is
//! given a fuel budget so a hostile template cannot loop forever.

use std::collections::{BTreeMap, HashSet};

use minijinja::{Environment, UndefinedBehavior};

use crate::yaml::Located;

/// Names a template may use at the top level.
pub const TOP_LEVEL_NAMES: [&str; 8] = [
    "params",
    "run",
    "dag",
    "ds",
    "ds_nodash",
    "ts",
    "data_interval_start",
    "data_interval_end",
];
/// Names under `run.`.
pub const RUN_NAMES: [&str; 2] = ["id", "logical_date"];

/// What a run supplies to its templates.
#[derive(Clone, Debug)]
pub struct RunContext {
    pub dag_id: String,
    pub run_id: i64,
    /// RFC 3339 timestamp of the interval the run is for (the trigger time for manual runs).
    pub logical_date: String,
    pub params: BTreeMap<String, serde_json::Value>,
    /// The logical date's day on the DAG's wall clock (`timezone:`), `YYYY-MM-DD`.
    pub ds: String,
    /// The end of the run's data interval (RFC 3339, UTC): the next tick of the schedule for
    /// a run whose logical date is a tick (scheduled and backfilled runs), else the logical
    /// date itself (a triggered run's interval is empty).
    pub data_interval_end: String,
    /// A mapped instance's value and the name its templates see it under (`map.as`).
    pub item: Option<(String, serde_json::Value)>,
}

impl RunContext {
    /// The context of run `run_id` of `dag` for `logical_date` (RFC 3339).
    pub fn new(
        dag: &crate::Dag,
        run_id: i64,
        logical_date: String,
        params: BTreeMap<String, serde_json::Value>,
    ) -> Self {
        let (ds, data_interval_end) = interval(dag, &logical_date);
        RunContext {
            dag_id: dag.id.clone(),
            run_id,
            logical_date,
            params,
            ds,
            data_interval_end,
            item: None,
        }
    }

    /// The context of one instance of a mapped task: `value` under `name`.
    pub fn with_item(mut self, name: &str, value: serde_json::Value) -> Self {
        self.item = Some((name.to_string(), value));
        self
    }
}

/// `ds` and the data interval's end for a logical date (see [`RunContext`]).
fn interval(dag: &crate::Dag, logical_date: &str) -> (String, String) {
    let Ok(logical) = chrono::DateTime::parse_from_rfc3339(logical_date) else {
        return (
            logical_date.chars().take(10).collect(),
            logical_date.to_string(),
        );
    };
    let logical = logical.with_timezone(&chrono::Utc);
    let ds = logical
        .with_timezone(&dag.timezone)
        .format("%Y-%m-%d")
        .to_string();
    let end = dag
        .cron()
        .filter(|schedule| schedule.next(&logical, true) == Some(logical))
        .and_then(|schedule| schedule.next(&logical, false))
        .map_or_else(
            || logical_date.to_string(),
            |end| end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    (ds, end)
}

/// A template problem, positioned inside the template text (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
    pub line: usize,
    pub column: usize,
    pub len: usize,
    pub help: Option<String>,
}

pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.set_fuel(Some(200_000));
    env
}

/// Renders `template` for a run. Names are checked first so that an unknown param is reported
/// with its name and a suggestion, not as a bare "undefined value".
pub fn render(template: &Located, ctx: &RunContext) -> Result<String, TemplateError> {
    render_text(&template.text, ctx)
}

pub fn render_text(text: &str, ctx: &RunContext) -> Result<String, TemplateError> {
    if !text.contains("{{") && !text.contains("{%") && !text.contains("{#") {
        return Ok(text.to_string());
    }
    refuse_repeated_literals(text)?;
    let env = environment();
    let compiled = env
        .template_from_str(text)
        .map_err(|e| from_minijinja(text, &e))?;
    check_names(text, &compiled.undeclared_variables(true), ctx)?;
    compiled
        .render(values(ctx))
        .map_err(|e| from_minijinja(text, &e))
}

/// What templates see: the names of [`TOP_LEVEL_NAMES`] and a mapped instance's value.
fn values(ctx: &RunContext) -> minijinja::Value {
    let base = minijinja::context! {
        params => minijinja::Value::from(minijinja::value::Serde(&ctx.params)),
        run => minijinja::context! { id => ctx.run_id, logical_date => ctx.logical_date.clone() },
        dag => minijinja::context! { id => ctx.dag_id.clone() },
        ds => ctx.ds.clone(),
        ds_nodash => ctx.ds.replace('-', ""),
        ts => ctx.logical_date.clone(),
        data_interval_start => ctx.logical_date.clone(),
        data_interval_end => ctx.data_interval_end.clone(),
    };
    match &ctx.item {
        Some((name, value)) => {
            let item: BTreeMap<&str, minijinja::Value> = [(
                name.as_str(),
                minijinja::Value::from(minijinja::value::Serde(value)),
            )]
            .into_iter()
            .collect();
            minijinja::context! { ..minijinja::Value::from(item), ..base }
        }
        None => base,
    }
}

/// Evaluates one expression (`expr`, the inside of `{{ … }}` in `text`) to a value: a
/// mapped task's list. Names are checked as [`render_text`] checks them.
pub fn evaluate(
    expr: &str,
    text: &str,
    ctx: &RunContext,
) -> Result<serde_json::Value, TemplateError> {
    refuse_repeated_literals(text)?;
    let env = environment();
    // Compiled as a template first: that is what finds the names it uses.
    let compiled = env
        .template_from_str(text)
        .map_err(|e| from_minijinja(text, &e))?;
    check_names(text, &compiled.undeclared_variables(true), ctx)?;
    let expression = env
        .compile_expression(expr)
        .map_err(|e| from_minijinja(text, &e))?;
    let value = expression
        .eval(values(ctx))
        .map_err(|e| from_minijinja(text, &e))?;
    serde_json::to_value(&value).map_err(|e| TemplateError {
        message: format!("`{}` gives a value that is not data: {e}", expr.trim()),
        line: 1,
        column: 1,
        len: text.len().max(1),
        help: None,
    })
}

/// Refuses a list or tuple literal multiplied (`[0] * 1000000`, `(0,) * n`): the template
/// engine folds constant expressions while it compiles, before any fuel is spent, and
/// materialises a repeated literal sequence of up to 100 million values there (seconds of CPU
/// and gigabytes for a line of text). DAG templates have no use for it.
fn refuse_repeated_literals(text: &str) -> Result<(), TemplateError> {
    let bytes = text.as_bytes();
    for (open, close) in [("{{", "}}"), ("{%", "%}")] {
        let mut from = 0;
        while let Some(start) = text[from..].find(open).map(|i| from + i + 2) {
            let end = text[start..].find(close).map_or(text.len(), |i| start + i);
            for (offset, _) in text[start..end].match_indices('*') {
                let at = start + offset;
                if repeats_a_literal(&bytes[start..end], offset) {
                    let (line, column) = line_column(text, at);
                    return Err(TemplateError {
                        message: "repeating a list with `*` is not supported in templates".into(),
                        line,
                        column,
                        len: 1,
                        help: Some("write the values out, or loop with `{% for %}`".into()),
                    });
                }
            }
            from = end;
        }
    }
    Ok(())
}

/// Whether the `*` at `at` of an expression has a list or tuple literal for an operand.
fn repeats_a_literal(expr: &[u8], at: usize) -> bool {
    let mut before = at;
    while before > 0 && (expr[before - 1].is_ascii_whitespace() || expr[before - 1] == b')') {
        before -= 1;
    }
    let mut after = at + 1;
    while after < expr.len() && (expr[after].is_ascii_whitespace() || expr[after] == b'(') {
        after += 1;
    }
    // A `[` after the operator opens a list literal.
    if after < expr.len() && expr[after] == b'[' {
        return true;
    }
    // A tuple literal ends `,)` (spaces allowed).
    let closing = expr[..at].trim_ascii_end();
    if closing.ends_with(b")")
        && closing[..closing.len() - 1]
            .trim_ascii_end()
            .ends_with(b",")
    {
        return true;
    }
    // A `]` before it ends a list literal, unless its `[` follows a name, `)` or `]` (a
    // subscript such as `params.sizes[0] * 2`).
    if before == 0 || expr[before - 1] != b']' {
        return false;
    }
    let mut depth = 0usize;
    let mut i = before;
    while i > 0 {
        i -= 1;
        match expr[i] {
            b']' => depth += 1,
            b'[' => {
                depth -= 1;
                if depth == 0 {
                    let mut j = i;
                    while j > 0 && expr[j - 1].is_ascii_whitespace() {
                        j -= 1;
                    }
                    let subscript = j > 0
                        && (expr[j - 1].is_ascii_alphanumeric()
                            || matches!(expr[j - 1], b'_' | b')' | b']'));
                    return !subscript;
                }
            }
            _ => {}
        }
    }
    true
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Whether a `when:` condition holds for a run: the template is rendered, and the text is
/// false when it is empty or (in any case) `false`, `0`, `no`, `off`, `none`, `[]` or `{}`;
/// anything else is true. It is decided when the run is created, before the run has an id,
/// so `run.id` is refused.
pub fn condition(template: &Located, ctx: &RunContext) -> Result<bool, TemplateError> {
    let text = &template.text;
    let env = environment();
    let compiled = env
        .template_from_str(text)
        .map_err(|e| from_minijinja(text, &e))?;
    if compiled.undeclared_variables(true).contains("run.id") {
        let (line, column) = locate(text, "run.id").unwrap_or((1, 1));
        return Err(TemplateError {
            message: "`when` is decided when the run is created, before it has an id".into(),
            line,
            column,
            len: "run.id".len(),
            help: Some("use params, run.logical_date or dag.id".into()),
        });
    }
    let rendered = render_text(text, ctx)?;
    let value = rendered.trim().to_ascii_lowercase();
    Ok(!matches!(
        value.as_str(),
        "" | "false" | "0" | "no" | "off" | "none" | "[]" | "{}"
    ))
}

fn check_names(text: &str, names: &HashSet<String>, ctx: &RunContext) -> Result<(), TemplateError> {
    let mut names: Vec<&String> = names.iter().collect();
    names.sort();
    for name in names {
        let mut parts = name.splitn(2, '.');
        let head = parts.next().unwrap_or_default();
        let tail = parts.next();
        let (bad, candidates): (Option<&str>, Vec<&str>) = match (head, tail) {
            ("params", Some(p)) if !ctx.params.contains_key(p) => {
                (Some(p), ctx.params.keys().map(String::as_str).collect())
            }
            ("run", Some(r)) if !RUN_NAMES.contains(&r) => (Some(r), RUN_NAMES.to_vec()),
            ("dag", Some(d)) if d != "id" => (Some(d), vec!["id"]),
            (h, _) if ctx.item.as_ref().is_some_and(|(name, _)| name == h) => (None, Vec::new()),
            (h, _) if !TOP_LEVEL_NAMES.contains(&h) => (
                Some(h),
                TOP_LEVEL_NAMES
                    .iter()
                    .copied()
                    .chain(ctx.item.as_ref().map(|(name, _)| name.as_str()))
                    .collect(),
            ),
            _ => (None, Vec::new()),
        };
        if let Some(bad) = bad {
            let (line, column) = locate(text, name).unwrap_or((1, 1));
            let what = match head {
                "params" => format!("template names undefined param `{bad}`"),
                _ if Some(bad) == Some(head) => {
                    format!("template names undefined variable `{bad}`")
                }
                _ => format!("template names undefined field `{head}.{bad}`"),
            };
            let help = crate::diagnostic::did_you_mean(bad, candidates.iter().copied())
                .map(|s| format!("did you mean `{s}`?"))
                .or_else(|| {
                    (head == "params").then(|| {
                        if candidates.is_empty() {
                            "the DAG declares no params; add it under `params:`".to_string()
                        } else {
                            format!("declared params: {}", candidates.join(", "))
                        }
                    })
                });
            return Err(TemplateError {
                message: what,
                line,
                column,
                len: name.len(),
                help,
            });
        }
    }
    Ok(())
}

/// Position (1-based line, column) of the first occurrence of `needle` in `text`.
pub(crate) fn locate(text: &str, needle: &str) -> Option<(usize, usize)> {
    let at = text.find(needle)?;
    Some(offset_to_position(text, at))
}

fn offset_to_position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

pub(crate) fn from_minijinja(text: &str, err: &minijinja::Error) -> TemplateError {
    let (line, column, len) = match err.range() {
        Some(range) if range.start <= text.len() => {
            let (line, column) = offset_to_position(text, range.start);
            (line, column, range.len().max(1))
        }
        _ => (err.line().unwrap_or(1), 1, 1),
    };
    let message = match err.detail() {
        Some(detail) => format!("template error: {detail}"),
        None => format!("template error: {}", err.kind()),
    };
    TemplateError {
        message,
        line,
        column,
        len,
        help: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RunContext {
        RunContext {
            dag_id: "d".into(),
            run_id: 7,
            logical_date: "2026-01-01T00:00:00Z".into(),
            params: BTreeMap::from([("sf".to_string(), serde_json::json!(0.1))]),
            ds: "2026-01-01".into(),
            data_interval_end: "2026-01-02T00:00:00Z".into(),
            item: None,
        }
    }

    #[test]
    fn renders_params_and_run() {
        assert_eq!(
            render_text("sf={{ params.sf }} run={{ run.id }} {{ dag.id }}", &ctx()).unwrap(),
            "sf=0.1 run=7 d"
        );
    }

    /// `ds` is the logical date's day on the DAG's clock; a run on a tick of the schedule
    /// covers the interval to the next tick, a triggered one (off the ticks) none.
    #[test]
    fn run_dates_follow_the_schedule_and_its_zone() {
        let dag = |zone: &str| {
            let yaml = format!(
                "dag: d\nschedule: \"@daily\"\ntimezone: {zone}\ntasks:\n  a:\n    shell: \"true\"\n"
            );
            crate::load_bytes("d.yaml", std::path::Path::new("."), yaml.as_bytes()).unwrap()
        };
        let template =
            "{{ ds }} {{ ds_nodash }} {{ ts }} {{ data_interval_start }} {{ data_interval_end }}";
        let render = |dag: &crate::Dag, logical: &str| {
            render_text(
                template,
                &RunContext::new(dag, 1, logical.into(), BTreeMap::new()),
            )
            .unwrap()
        };
        let paris = dag("Europe/Paris");
        // Paris midnight of 29 March (23:00 UTC the day before); the next is 22:00 UTC (CEST).
        assert_eq!(
            render(&paris, "2026-03-28T23:00:00Z"),
            "2026-03-29 20260329 2026-03-28T23:00:00Z 2026-03-28T23:00:00Z 2026-03-29T22:00:00Z"
        );
        // Triggered at 10:15 UTC: no interval.
        assert_eq!(
            render(&paris, "2026-03-29T10:15:00Z"),
            "2026-03-29 20260329 2026-03-29T10:15:00Z 2026-03-29T10:15:00Z 2026-03-29T10:15:00Z"
        );
        assert_eq!(
            render(&dag("UTC"), "2026-03-28T00:00:00Z"),
            "2026-03-28 20260328 2026-03-28T00:00:00Z 2026-03-28T00:00:00Z 2026-03-29T00:00:00Z"
        );
        let err = render_text("{{ dss }}", &ctx()).unwrap_err();
        assert_eq!(err.help.as_deref(), Some("did you mean `ds`?"));
    }

    #[test]
    fn unknown_param_is_named_with_a_suggestion() {
        let err = render_text("x\n  {{ params.sff }}", &ctx()).unwrap_err();
        assert_eq!(err.message, "template names undefined param `sff`");
        assert_eq!((err.line, err.column), (2, 6));
        assert_eq!(err.help.as_deref(), Some("did you mean `sf`?"));
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = render_text("a {{ params.sf ", &ctx()).unwrap_err();
        assert!(err.message.starts_with("template error"), "{err:?}");
    }

    #[test]
    fn conditions_are_jinja_truth_in_text() {
        let when = |text: &str| {
            let located = Located {
                text: text.into(),
                span: crate::yaml::Span::at(1, 1, 1),
                style: crate::yaml::Style::Plain,
            };
            condition(&located, &ctx())
        };
        assert_eq!(when("{{ params.sf > 0.05 }}"), Ok(true));
        assert_eq!(when("{{ params.sf > 1 }}"), Ok(false));
        assert_eq!(when("{{ dag.id == 'd' }}"), Ok(true));
        for falsy in [
            "", "false", "False", "0", "no", "OFF", "none", "[]", "{}", "  ",
        ] {
            assert_eq!(when(falsy), Ok(false), "`{falsy}`");
        }
        assert_eq!(when("yes"), Ok(true));
        let err = when("{{ run.id > 3 }}").unwrap_err();
        assert!(err.message.contains("before it has an id"), "{err:?}");
        assert_eq!(
            when("{{ params.sff }}").unwrap_err().message,
            "template names undefined param `sff`"
        );
    }

    #[test]
    fn repeated_literal_lists_are_refused_before_they_are_folded() {
        let ctx = ctx();
        // Found by the fuzzer: compiling this folded a 44-million-value list (23 s).
        let found = "{{ pav+44~4444444*44444444*444444444440~44444444*[0] }} {# c #} {} {mpaa rmpaa ra$ r }-}";
        let started = std::time::Instant::now();
        let error = render_text(found, &ctx).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(
            (error.message.as_str(), error.line, error.column),
            (
                "repeating a list with `*` is not supported in templates",
                1,
                49
            )
        );
        for refused in [
            "{{ [0] * 9 }}",
            "{{ 9 * ([1, 2]) }}",
            "{% set t = (0,) * 9 %}",
            "{{ ([0]) * 9 }}",
        ] {
            assert!(render_text(refused, &ctx).is_err(), "{refused}");
        }
        // Multiplying numbers, subscripts and SQL's `*` outside expressions are fine.
        for fine in [
            "{{ 2 * 3 }}",
            "SELECT * FROM t WHERE a[1] * 2 > {{ 3 * 4 }}",
            "{{ [2, 3][0] * 5 }}",
        ] {
            assert!(
                render_text(fine, &ctx).is_ok(),
                "{fine}: {:?}",
                render_text(fine, &ctx)
            );
        }
    }

    #[test]
    fn runaway_loops_run_out_of_fuel() {
        let err = render_text(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            &ctx(),
        );
        assert!(err.is_err());
    }
}
