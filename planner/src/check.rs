//! Validate-time SQL planning: every `sql` task is planned by DataFusion against the schemas
//! its inputs will have, so syntax errors and unknown tables or columns are reported against
//! the task and the line that holds them, before anything runs. A task downstream of a
//! command's output (`produces_data`), whose columns only a run tells, is planned when it runs.
//!
//! A task's `when: { sql }` is planned the same way and must return one boolean column.
//!
//! A SQL task sees the datasets and the tasks it `needs`, nothing else. Generated tables have
//! known schemas; an upstream SQL task's schema is its planned output. Nothing is executed:
//! tables are registered empty.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::empty::EmptyTable;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionContext;

use amdahl_dags::diagnostic::did_you_mean;
use amdahl_dags::yaml::Span;
use amdahl_dags::{
    Dag, Diagnostic, Diagnostics, Generate, Located, Probe, RunContext, TaskKind, Wait,
    mapping::Over, template,
};

use crate::schemas;
use crate::session::TableInput;
use crate::session::{query_only, register_input, session_config};

/// Plans every SQL task of `dag` with its default params; returns the problems found.
pub async fn check_sql(dag: &Dag) -> Diagnostics {
    let file = dag.source.display_path.as_str();
    let mut diagnostics = Diagnostics::default();
    let ctx_params = RunContext::new(dag, 0, "2026-01-01T00:00:00Z".into(), dag.params.clone());
    // A templated dataset whose sample run's data is not there is read when a run starts.
    let (dataset_schemas, unread) = dataset_schemas(dag, &ctx_params, &mut diagnostics).await;
    let mut task_schemas: HashMap<&str, SchemaRef> = HashMap::new();
    // Outputs whose columns only a run tells (a command's `produces_data`), and the queries
    // over them, which are planned when they run.
    let mut at_run_time: HashSet<&str> = HashSet::new();
    let run_ctx = ctx_params;
    for task in &dag.tasks {
        if task.needs.iter().any(|n| at_run_time.contains(n.as_str())) {
            at_run_time.insert(&task.id);
            continue;
        }
        // A mapped task's templates see a value of its list: a sample of the right type.
        let mapped_ctx = match &task.map {
            Some(map) => {
                let sample = match &map.over {
                    Over::List(list) => amdahl_dags::mapping::list_values(list, &run_ctx)
                        .ok()
                        .and_then(|values| values.into_iter().next()),
                    Over::Sql(over) => {
                        let (ctx, tables) =
                            task_session(&dataset_schemas, &task_schemas, &task.needs);
                        match template::render(over, &run_ctx) {
                            Ok(query) => match plan(&ctx, &query).await {
                                Ok(schema) => match one_column(&schema) {
                                    Ok(field) => Some(sample_of(field.data_type())),
                                    Err(why) => {
                                        diagnostics.push(
                                            Diagnostic::new(
                                                file,
                                                over.span,
                                                format!("`map.over` of task `{}` {why}", task.id),
                                            )
                                            .with_help("select only the column to map over, e.g. `SELECT DISTINCT region FROM orders`"),
                                        );
                                        None
                                    }
                                },
                                Err(e) if reads_unread(&e, &unread) => None,
                                Err(e) => {
                                    let mut d =
                                        locate(file, dag, &task.id, over, &query, &e, &tables);
                                    d.message = d.message.replacen(
                                        "in SQL of task",
                                        "in `map.over` of task",
                                        1,
                                    );
                                    diagnostics.push(d);
                                    None
                                }
                            },
                            Err(_) => None,
                        }
                    }
                };
                Some(run_ctx.clone().with_item(
                    &map.name,
                    sample.unwrap_or_else(|| serde_json::Value::String(String::new())),
                ))
            }
            None => None,
        };
        let ctx_params = mapped_ctx.as_ref().unwrap_or(&run_ctx);
        match &task.kind {
            TaskKind::Generate(Generate::Tpch { table, .. }) => {
                task_schemas.insert(&task.id, schemas::tpch(*table));
            }
            TaskKind::Generate(Generate::Vectors { dim, .. }) => {
                task_schemas.insert(&task.id, schemas::generated_schema(*dim as usize));
            }
            TaskKind::Shell(_) if task.shell_output => {
                at_run_time.insert(&task.id);
            }
            TaskKind::Shell(_) | TaskKind::Empty | TaskKind::Wait(_) => {}
            TaskKind::Knn(_) | TaskKind::Matmul(_) | TaskKind::Score(_) => {
                let known = |name: &str| {
                    dataset_schemas
                        .get(name)
                        .or_else(|| task_schemas.get(name))
                        .cloned()
                };
                let column = match &task.kind {
                    TaskKind::Knn(k) => &k.column,
                    TaskKind::Matmul(m) => &m.column,
                    TaskKind::Score(s) => &s.column,
                    _ => unreachable!("dense kinds only"),
                };
                for table in task.kind.tables() {
                    let Some(schema) = known(&table.name) else {
                        continue;
                    };
                    let problem = match schema.field_with_name(column) {
                        Err(_) => Some(format!(
                            "table `{}` has no column `{column}` (columns: {})",
                            table.name,
                            schema
                                .fields()
                                .iter()
                                .map(|f| f.name().as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                        Ok(f) if !schemas::is_vector(f.data_type()) => Some(format!(
                            "column `{column}` of table `{}` is {}, not a list of floats",
                            table.name,
                            f.data_type()
                        )),
                        Ok(_) => None,
                    };
                    if let Some(problem) = problem {
                        diagnostics.push(Diagnostic::new(file, table.span, problem));
                    }
                }
                let output = match &task.kind {
                    TaskKind::Knn(_) => Some(schemas::knn_schema()),
                    // The width is the right table's row count: known only at run time.
                    TaskKind::Matmul(_) => Some(schemas::vectors_schema("vector", 2)),
                    TaskKind::Score(s) => {
                        let path = dag.source.base_dir.join(&s.model);
                        match crate::model::Mlp::load(&path, s.activation) {
                            Ok(mlp) => Some(schemas::vectors_schema("score", mlp.outputs())),
                            Err(e) => {
                                diagnostics.push(Diagnostic::new(file, task.span, e));
                                None
                            }
                        }
                    }
                    _ => None,
                };
                if let Some(schema) = output {
                    task_schemas.insert(&task.id, schema);
                }
            }
            TaskKind::Sql(located) => {
                let Ok(query) = template::render(located, ctx_params) else {
                    continue;
                };
                let (ctx, tables) = task_session(&dataset_schemas, &task_schemas, &task.needs);
                match plan(&ctx, &query).await {
                    Ok(schema) => {
                        task_schemas.insert(&task.id, schema);
                    }
                    Err(e) if reads_unread(&e, &unread) => {
                        at_run_time.insert(&task.id);
                    }
                    Err(e) => {
                        diagnostics.push(locate(file, dag, &task.id, located, &query, &e, &tables));
                    }
                }
            }
        }
        // Queries that decide (`when.sql`, a sensor's `wait.sql`) answer one boolean.
        let wait_sql = match &task.kind {
            TaskKind::Wait(Wait {
                probe: Probe::Sql(sql),
                ..
            }) => Some(sql),
            _ => None,
        };
        let deciding = [
            task.when
                .as_ref()
                .and_then(|w| w.sql())
                .map(|q| ("when.sql", q)),
            wait_sql.map(|q| ("wait.sql", q)),
        ];
        for (label, condition) in deciding.into_iter().flatten() {
            let Ok(query) = template::render(condition, ctx_params) else {
                continue;
            };
            let (ctx, tables) = task_session(&dataset_schemas, &task_schemas, &task.needs);
            let problem = match plan(&ctx, &query).await {
                Ok(schema) => one_boolean(&schema).err().map(|why| {
                    Diagnostic::new(
                        file,
                        condition.span,
                        format!("`{label}` of task `{}` {why}", task.id),
                    )
                    .with_help("write a query with one boolean column, e.g. `SELECT count(*) > 0 FROM staged`")
                }),
                Err(e) if reads_unread(&e, &unread) => None,
                Err(e) => {
                    let mut d = locate(file, dag, &task.id, condition, &query, &e, &tables);
                    d.message = d
                        .message
                        .replacen("in SQL of task", &format!("in `{label}` of task"), 1);
                    Some(d)
                }
            };
            if let Some(d) = problem {
                diagnostics.push(d);
            }
        }
    }
    diagnostics.sort();
    diagnostics
}

/// A session holding, as empty tables, what a task's SQL may read: the datasets and the
/// outputs of the tasks it needs. Returns the session and those tables' names.
fn task_session<'a>(
    dataset_schemas: &'a BTreeMap<String, SchemaRef>,
    task_schemas: &HashMap<&'a str, SchemaRef>,
    needs: &'a [String],
) -> (SessionContext, Vec<&'a str>) {
    let ctx = SessionContext::new_with_config(session_config(1));
    let mut tables = Vec::new();
    for (name, schema) in dataset_schemas.iter().map(|(n, s)| (n.as_str(), s)).chain(
        needs
            .iter()
            .filter_map(|n| task_schemas.get(n.as_str()).map(|s| (n.as_str(), s))),
    ) {
        let _ = ctx.register_table(name, Arc::new(EmptyTable::new(schema.clone())));
        tables.push(name);
    }
    (ctx, tables)
}

/// The one column of a `map.over` query, or what it returns instead.
pub fn one_column(schema: &SchemaRef) -> Result<&datafusion::arrow::datatypes::Field, String> {
    match schema.fields().as_ref() {
        [field] => Ok(field),
        fields => Err(format!(
            "must return one column; it returns {} ({})",
            fields.len(),
            column_names(fields)
        )),
    }
}

/// A value of `data_type` for checking a mapped task's templates: `0`, `false` or `""`.
fn sample_of(data_type: &DataType) -> serde_json::Value {
    if data_type.is_numeric() {
        serde_json::json!(0)
    } else if data_type == &DataType::Boolean {
        serde_json::json!(false)
    } else {
        serde_json::json!("")
    }
}

/// Whether a condition's result is one boolean column; otherwise what it is instead.
pub fn one_boolean(schema: &SchemaRef) -> Result<(), String> {
    match schema.fields().as_ref() {
        [field] if field.data_type() == &DataType::Boolean => Ok(()),
        [field] => Err(format!(
            "must return one boolean column; its column `{}` is {}",
            field.name(),
            field.data_type()
        )),
        fields => Err(format!(
            "must return one boolean column; it returns {} columns ({})",
            fields.len(),
            column_names(fields)
        )),
    }
}

/// A result's column names, as an error lists them: `a, b, c`.
fn column_names(fields: &[datafusion::arrow::datatypes::FieldRef]) -> String {
    fields
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn plan(ctx: &SessionContext, query: &str) -> Result<SchemaRef, DataFusionError> {
    let frame = ctx.sql_with_options(query, query_only()).await?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    // Physical planning catches type errors the logical plan lets through.
    frame.create_physical_plan().await?;
    Ok(schema)
}

/// The datasets' schemas, read for a sample run, and the templated datasets whose sample data
/// is not there (not an error: a run reads its own).
async fn dataset_schemas(
    dag: &Dag,
    sample: &RunContext,
    diagnostics: &mut Diagnostics,
) -> (BTreeMap<String, SchemaRef>, HashSet<String>) {
    let mut out = BTreeMap::new();
    let mut unread = HashSet::new();
    // A session registers every built-in function: not worth it for no dataset (a DAG of
    // commands, checked on every `amdahl trigger`).
    if dag.datasets.is_empty() {
        return (out, unread);
    }
    let ctx = SessionContext::new_with_config(session_config(1));
    for dataset in dag.datasets.values() {
        let input = match TableInput::for_run(dataset, sample, &dag.source.base_dir) {
            Ok(input) => input,
            Err(_) if dataset.templated => {
                unread.insert(dataset.name.clone());
                continue;
            }
            Err(e) => {
                diagnostics.push(Diagnostic::new(&dag.source.display_path, dataset.span, e));
                continue;
            }
        };
        let schema = match register_input(&ctx, &input).await {
            Ok(()) => match ctx.table(dataset.name.as_str()).await {
                Ok(frame) => Ok(Arc::new(frame.schema().as_arrow().clone())),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match schema {
            Ok(schema) => {
                out.insert(dataset.name.clone(), schema);
            }
            Err(_) if dataset.templated => {
                unread.insert(dataset.name.clone());
            }
            Err(e) => diagnostics.push(Diagnostic::new(
                &dag.source.display_path,
                dataset.span,
                format!(
                    "cannot read dataset `{}`: {}",
                    dataset.name,
                    first_line(&e.find_root().to_string())
                ),
            )),
        }
    }
    (out, unread)
}

/// Whether a planning error is a query naming a templated dataset whose data is not there
/// for the sample run.
fn reads_unread(error: &DataFusionError, unread: &HashSet<String>) -> bool {
    let message = error.to_string();
    message.contains("not found")
        && unread.iter().any(|name| {
            message.contains(&format!("'{name}'")) || message.contains(&format!(".{name}'"))
        })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// Turns a planning error into a diagnostic at the right place in the file.
fn locate(
    file: &str,
    dag: &Dag,
    task_id: &str,
    located: &Located,
    query: &str,
    error: &DataFusionError,
    tables: &[&str],
) -> Diagnostic {
    let diagnostic = error.iter().find_map(DataFusionError::diagnostic);
    let root = error.find_root();
    let message = clean(&diagnostic.map_or_else(|| root.to_string(), |d| d.message.clone()));
    let position = diagnostic
        .and_then(|d| d.span)
        .filter(|s| s.start.line > 0)
        .map(|s| {
            let len = if s.end.line == s.start.line {
                (s.end.column.saturating_sub(s.start.column)) as usize
            } else {
                1
            };
            (s.start.line as usize, s.start.column as usize, len)
        })
        .or_else(|| parser_position(&root.to_string()));
    let span = match position {
        Some((line, column, len)) => {
            let (line, column) = located.file_position(line, column);
            Span::at(line, column, len)
        }
        None => located.span,
    };
    let mut d = Diagnostic::new(file, span, format!("in SQL of task `{task_id}`: {message}"));
    if let Some(help) = table_help(&message, query, dag, task_id, tables) {
        d = d.with_help(help);
    }
    d
}

/// sqlparser reports `... at Line: 2, Column: 5`.
fn parser_position(text: &str) -> Option<(usize, usize, usize)> {
    let at = text.rfind("Line: ")?;
    let rest = &text[at + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?, 1))
}

fn clean(text: &str) -> String {
    let text = first_line(text);
    if [
        "DDL not supported",
        "DML not supported",
        "Statement not supported",
    ]
    .iter()
    .any(|m| text.contains(m))
    {
        return "a `sql` task holds one query (SELECT, WITH or VALUES); DDL, DML and SET statements are not allowed"
            .to_string();
    }
    // The position is shown by the diagnostic itself.
    let text = match text.rfind(" at Line: ") {
        Some(at) => &text[..at],
        None => text,
    };
    for prefix in ["Error during planning: ", "SQL error: ", "Schema error: "] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    text.to_string()
}

/// For "table not found": say why the table is not visible and what might be meant.
fn table_help(
    message: &str,
    _query: &str,
    dag: &Dag,
    task_id: &str,
    tables: &[&str],
) -> Option<String> {
    if !message.contains("not found") || !message.contains("table") {
        return None;
    }
    let name = message.split('\'').nth(1)?.rsplit('.').next()?.to_string();
    if let Some(other) = dag.task(&name) {
        if !other.produces_data() {
            if matches!(other.kind, TaskKind::Shell(_)) {
                return Some(format!(
                    "`{name}` is a shell task that produces no table; give it \
                     `produces_data: true` if its command writes one into $AMDAHL_OUTPUT_DIR"
                ));
            }
            return Some(format!(
                "`{name}` is a {} task; it produces no table",
                other.kind.name()
            ));
        }
        return Some(format!(
            "`{name}` is a task; add it to `needs` of `{task_id}` to read it"
        ));
    }
    match did_you_mean(&name, tables.iter().copied()) {
        Some(s) => Some(format!("did you mean `{s}`?")),
        None if tables.is_empty() => Some(
            "this task can read no tables: list upstream tasks in `needs` or declare `datasets`"
                .into(),
        ),
        None => Some(format!("tables this task can read: {}", tables.join(", "))),
    }
}
