//! Inspection commands (`dags list`, `pools list`, `runs list|show`, `tasks logs`) and the
//! small state changes beside them (`dags pause|unpause`, `runs cancel`).

use std::process::ExitCode;

use anyhow::{Context, bail};

use amdahl_placement::Place;
use amdahl_scheduler::Store;
use amdahl_scheduler::store::TaskRecord;

use crate::output::{bytes, count, duration_ms, table, timestamp};

pub async fn dags_list(store: &Store) -> anyhow::Result<ExitCode> {
    let dags = store.list_dags().await?;
    let errors = store.import_errors().await?;
    for e in &errors {
        eprintln!(
            "import error: {}:{}:{}: {}{}{}",
            e.path,
            e.line,
            e.column,
            e.message,
            if e.problems > 1 {
                format!(" (and {} more)", e.problems - 1)
            } else {
                String::new()
            },
            match &e.dag_id {
                Some(id) => format!("; DAG `{id}` keeps its last good version"),
                None => String::new(),
            }
        );
    }
    if !errors.is_empty() {
        eprintln!("`amdahl dags validate FILE` shows every problem\n");
    }
    if dags.is_empty() {
        println!("no DAGs recorded yet; `amdahl run FILE` records one");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = dags
        .into_iter()
        .map(|d| {
            vec![
                d.dag_id,
                d.latest_hash[..12.min(d.latest_hash.len())].to_string(),
                d.runs.to_string(),
                d.last_run_state.map_or("-".into(), |s| s.to_string()),
                if d.paused { "yes" } else { "no" }.to_string(),
                d.source_path,
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["DAG", "VERSION", "RUNS", "LAST RUN", "PAUSED", "SOURCE"],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn pools_list(store: &Store) -> anyhow::Result<ExitCode> {
    let pools = store.pools().await?;
    if pools.is_empty() {
        println!("no pools; `amdahl pools set NAME SLOTS` creates one");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = pools
        .into_iter()
        .map(|p| {
            vec![
                p.name,
                p.slots.to_string(),
                p.occupied.to_string(),
                p.description,
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["POOL", "SLOTS", "IN USE", "DESCRIPTION"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn runs_cancel(store: &Store, run_id: i64) -> anyhow::Result<ExitCode> {
    use amdahl_scheduler::{Clock, Topic};
    let run = store
        .run(run_id)
        .await?
        .with_context(|| format!("no run {run_id}"))?;
    if !store
        .request_cancel(run_id, amdahl_scheduler::SystemClock.now_ms())
        .await?
    {
        bail!(
            "run {run_id} already ended ({}); nothing to cancel",
            run.state
        );
    }
    store.signal(Topic::Progress).await;
    let who = match &run.owner {
        Some(owner) => format!("the process that runs it ({owner}) stops its tasks"),
        None => "the scheduler stops its tasks".to_string(),
    };
    println!("cancel requested for run {run_id}: {who}");
    Ok(ExitCode::SUCCESS)
}

pub async fn set_paused(store: &Store, dag_id: &str, paused: bool) -> anyhow::Result<ExitCode> {
    use amdahl_scheduler::Clock;
    if !store
        .set_paused(dag_id, paused, amdahl_scheduler::SystemClock.now_ms())
        .await?
    {
        bail!("no DAG `{dag_id}` is recorded; `amdahl dags list` shows the known ones");
    }
    println!(
        "DAG `{dag_id}` {}",
        if paused { "paused" } else { "unpaused" }
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn runs_list(
    store: &Store,
    dag: Option<&str>,
    state: Option<amdahl_scheduler::RunState>,
    limit: i64,
) -> anyhow::Result<ExitCode> {
    let runs = store.runs_before(dag, state, None, limit).await?;
    if runs.is_empty() {
        println!("no runs");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = runs
        .into_iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.dag_id,
                r.state.to_string(),
                timestamp(Some(r.created_at_ms)),
                duration_ms(r.started_at_ms, r.finished_at_ms),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["RUN", "DAG", "STATE", "CREATED", "DURATION"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}

/// The task table printed after a run and by `runs show`.
pub async fn print_tasks(store: &Store, run_id: i64) -> anyhow::Result<()> {
    let tasks = compact_instances(store.tasks(run_id).await?);
    let rows: Vec<Vec<String>> = tasks
        .into_iter()
        .map(|t| {
            let t = match t {
                TaskLine::Task(t) => *t,
                TaskLine::More { hidden, successful } => {
                    let mut row = vec![String::new(); 8];
                    row[0] = format!("  … {hidden} more");
                    row[7] = format!("{successful} of them successful");
                    return row;
                }
            };
            let name = match (t.map_index, &t.map_value) {
                (Some(index), Some(value)) => {
                    let value = serde_json::from_str(value)
                        .map_or_else(|_| value.clone(), |v| amdahl_dags::mapping::label(&v));
                    format!("  [{index}] {value}")
                }
                _ => t.task_id,
            };
            vec![
                name,
                t.state.to_string(),
                t.device.map_or("-", Place::code).to_string(),
                t.attempts.to_string(),
                duration_ms(t.started_at_ms, t.finished_at_ms),
                count(t.rows_out),
                bytes(t.bytes_out),
                t.error
                    .map(|e| first_line(&e).to_string())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "TASK", "STATE", "DEVICE", "ATTEMPTS", "DURATION", "ROWS", "BYTES", "ERROR"
            ],
            &rows
        )
    );
    Ok(())
}

/// Instances of a mapped task shown under it, at most this many (those not successful
/// first); a line says how many more there are.
const INSTANCES_SHOWN: usize = 10;

/// A row of the task table: a task (or an instance), or the instances left out.
enum TaskLine {
    Task(Box<TaskRecord>),
    More { hidden: usize, successful: usize },
}

/// A run's tasks with each mapped task's instances cut to [`INSTANCES_SHOWN`].
fn compact_instances(tasks: Vec<TaskRecord>) -> Vec<TaskLine> {
    fn flush(group: &mut Vec<TaskRecord>, out: &mut Vec<TaskLine>) {
        let total = group.len();
        let (mut shown, well): (Vec<_>, Vec<_>) = group
            .drain(..)
            .partition(|t| t.state != amdahl_scheduler::TaskState::Success);
        shown.truncate(INSTANCES_SHOWN);
        let room = INSTANCES_SHOWN - shown.len();
        let successful = well.len().saturating_sub(room);
        shown.extend(well.into_iter().take(room));
        shown.sort_by_key(|t| t.map_index);
        let hidden = total - shown.len();
        out.extend(shown.into_iter().map(|t| TaskLine::Task(Box::new(t))));
        if hidden > 0 {
            out.push(TaskLine::More { hidden, successful });
        }
    }
    let mut out = Vec::with_capacity(tasks.len());
    let mut group = Vec::new();
    for t in tasks {
        if t.map_index.is_some() {
            group.push(t);
        } else {
            flush(&mut group, &mut out);
            out.push(TaskLine::Task(Box::new(t)));
        }
    }
    flush(&mut group, &mut out);
    out
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

pub async fn runs_show(store: &Store, run_id: i64) -> anyhow::Result<ExitCode> {
    let Some(run) = store.run(run_id).await? else {
        bail!("no run {run_id}");
    };
    println!(
        "run {}  dag {}  version {}",
        run.id,
        run.dag_id,
        &run.version_hash[..12.min(run.version_hash.len())]
    );
    println!("state    {}", run.state);
    println!("params   {}", run.params_json);
    println!("logical  {}", run.logical_date);
    println!("created  {}", timestamp(Some(run.created_at_ms)));
    println!("started  {}", timestamp(run.started_at_ms));
    println!(
        "finished {}  ({})",
        timestamp(run.finished_at_ms),
        duration_ms(run.started_at_ms, run.finished_at_ms)
    );
    if let Some(note) = &run.note {
        println!("note     {note}");
    }
    let causes = store.run_causes(run_id).await?;
    if !causes.is_empty() {
        let shown: Vec<String> = causes
            .iter()
            .map(|e| match (e.source.as_str(), &e.dag_id, e.run_id) {
                ("run", Some(dag), Some(run)) => format!("run {run} of {dag} succeeded"),
                ("task", Some(dag), Some(run)) => format!(
                    "event {} on {} ({dag}.{} in run {run})",
                    e.id,
                    e.asset,
                    e.task_id.as_deref().unwrap_or_default()
                ),
                _ => format!("event {} on {} (posted)", e.id, e.asset),
            })
            .collect();
        println!("cause    {}", shown.join("; "));
    }
    println!();
    print_tasks(store, run_id).await?;
    let attempts = store.attempts(run_id).await?;
    let tasks = store.tasks(run_id).await?;
    let breakdown = amdahl_scheduler::breakdown::breakdown(
        run.started_at_ms.unwrap_or(run.created_at_ms),
        &tasks,
        &attempts,
    );
    if !attempts.is_empty() {
        println!();
        let notes: Vec<String> = attempts
            .iter()
            .filter_map(|a| {
                let note = a.device_note.as_ref()?;
                Some(format!("{} attempt {}: {note}", a.task_id, a.attempt))
            })
            .collect();
        let predicted = placement_rows(&attempts);
        let rows: Vec<Vec<String>> = attempts
            .into_iter()
            .map(|a| {
                vec![
                    a.task_id,
                    a.attempt.to_string(),
                    a.state.to_string(),
                    a.route.unwrap_or_else(|| "-".into()),
                    a.device.map_or("-", Place::code).to_string(),
                    timestamp(Some(a.started_at_ms)),
                    duration_ms(Some(a.started_at_ms), a.finished_at_ms),
                    a.error
                        .map(|e| first_line(&e).to_string())
                        .unwrap_or_default(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    "TASK", "ATTEMPT", "STATE", "ROUTE", "DEVICE", "STARTED", "DURATION", "ERROR"
                ],
                &rows
            )
        );
        if !predicted.is_empty() {
            println!("\nPlacement, predicted beside actual:");
            print!(
                "{}",
                table(
                    &[
                        "TASK",
                        "ATTEMPT",
                        "RAN ON",
                        "ACTUAL",
                        "PREDICTED CPU",
                        "PREDICTED GPU",
                        "PREDICTED ÷ ACTUAL",
                    ],
                    &predicted
                )
            );
        }
        if !notes.is_empty() {
            println!("\nWhy attempts ran where they did:");
            for note in notes {
                println!("  {note}");
            }
        }
    }
    let outputs: Vec<String> = tasks
        .iter()
        .filter_map(|t| Some(format!("  {}  {}", t.task_id, t.output_path.as_ref()?)))
        .collect();
    if !outputs.is_empty() {
        println!("\nOutputs:");
        for line in outputs {
            println!("{line}");
        }
    }
    print_notifications(&store.notifications(run_id).await?);
    print_breakdown(&breakdown);
    Ok(ExitCode::SUCCESS)
}

/// Who was told what about the run (`on_failure`, `on_retry`, `on_success`), and how it went.
fn print_notifications(notes: &[amdahl_scheduler::store::NotificationRecord]) {
    if notes.is_empty() {
        return;
    }
    println!("\nNotifications:");
    let rows: Vec<Vec<String>> = notes
        .iter()
        .map(|n| {
            let about = if n.task_id.is_empty() {
                format!("run {}", n.event)
            } else {
                format!("{} {} (attempt {})", n.task_id, n.event, n.occurrence)
            };
            vec![
                about,
                n.target.clone(),
                n.state.to_string(),
                n.attempts.to_string(),
                n.response_code.map_or("-".into(), |c| c.to_string()),
                n.last_error
                    .as_deref()
                    .filter(|_| n.state != amdahl_scheduler::store::NotificationState::Delivered)
                    .map(|e| first_line(e).to_string())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ABOUT", "TO", "STATE", "ATTEMPTS", "ANSWER", "LAST ERROR"],
            &rows
        )
    );
}

/// Where the run's time went, per task and in total, and the speed-up ceiling that follows.
fn print_breakdown(b: &amdahl_scheduler::breakdown::Breakdown) {
    if b.tasks.is_empty() {
        return;
    }
    let ms = |v: f64| amdahl_placement::seconds(v / 1e3);
    let row = |name: &str, p: &amdahl_scheduler::breakdown::Parts| {
        vec![
            name.to_string(),
            ms(p.waiting),
            ms(p.io),
            ms(p.transfer),
            ms(p.compute),
            ms(p.other),
        ]
    };
    let mut rows: Vec<Vec<String>> = b.tasks.iter().map(|(t, p)| row(t, p)).collect();
    rows.push(row("(total)", &b.total));
    println!(
        "\nWhere the time went (per task: waiting to start, data I/O, host↔device copies, compute, the rest):"
    );
    print!(
        "{}",
        table(
            &["TASK", "WAITING", "I/O", "TRANSFER", "COMPUTE", "OTHER"],
            &rows
        )
    );
    match b.ceiling {
        Some(ceiling) => println!(
            "compute is {:.0} % of task time: faster devices can speed this run up {ceiling:.2}× at most",
            100.0 * b.total.compute / b.total.total()
        ),
        None => {
            println!("no task measured its compute time, so there is no speed-up ceiling to give")
        }
    }
}

/// Attempts placement decided, with its predictions beside the time each took.
fn placement_rows(attempts: &[amdahl_scheduler::store::AttemptRecord]) -> Vec<Vec<String>> {
    let us = |v: Option<i64>| {
        v.map_or("-".to_string(), |us| {
            amdahl_placement::seconds(us as f64 / 1e6)
        })
    };
    attempts
        .iter()
        .filter(|a| a.predicted_cpu_us.is_some() || a.predicted_gpu_us.is_some())
        .map(|a| {
            let actual = a.finished_at_ms.map(|f| (f - a.started_at_ms) as f64 / 1e3);
            let predicted = match a.device {
                Some(Place::Gpu) => a.predicted_gpu_us,
                Some(Place::Cluster) => None,
                _ => a.predicted_cpu_us,
            };
            let ratio = match (predicted, actual) {
                (Some(p), Some(t)) if t > 0.0 => format!("{:.2}", p as f64 / 1e6 / t),
                _ => "-".into(),
            };
            vec![
                a.task_id.clone(),
                a.attempt.to_string(),
                a.device.map_or("-", Place::code).to_string(),
                actual.map_or("-".into(), amdahl_placement::seconds),
                us(a.predicted_cpu_us),
                us(a.predicted_gpu_us),
                ratio,
            ]
        })
        .collect()
}

/// The task `task_id` of run `run_id`, or an error naming the run's tasks.
async fn find_task(
    store: &Store,
    run_id: i64,
    task_id: &str,
) -> anyhow::Result<amdahl_scheduler::store::TaskRecord> {
    let tasks = store.tasks(run_id).await.context("reading the run")?;
    if tasks.is_empty() {
        bail!("no run {run_id}");
    }
    let names: Vec<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
    let names = names.join(", ");
    tasks
        .into_iter()
        .find(|t| t.task_id == task_id)
        .with_context(|| format!("run {run_id} has no task `{task_id}`; its tasks: {names}"))
}

/// `amdahl tasks show`: the task, its attempts, and what the latest one ran.
pub async fn task_show(store: &Store, run_id: i64, task_id: &str) -> anyhow::Result<ExitCode> {
    let task = find_task(store, run_id, task_id).await?;
    println!("task     {task_id} ({}) of run {run_id}", task.kind);
    println!("state    {}", task.state);
    if let Some(error) = &task.error {
        println!("error    {}", first_line(error));
    }
    let attempts = store.attempts_of(run_id, &[task_id.to_string()]).await?;
    let rows: Vec<Vec<String>> = attempts
        .iter()
        .map(|a| {
            vec![
                a.attempt.to_string(),
                a.state.to_string(),
                a.route.clone().unwrap_or_else(|| "-".into()),
                a.device.map_or("-", Place::code).to_string(),
                timestamp(Some(a.started_at_ms)),
                duration_ms(Some(a.started_at_ms), a.finished_at_ms),
                a.device_note
                    .as_deref()
                    .map(first_line)
                    .unwrap_or_default()
                    .to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!();
        print!(
            "{}",
            table(
                &[
                    "ATTEMPT", "STATE", "ROUTE", "DEVICE", "STARTED", "DURATION", "NOTE"
                ],
                &rows
            )
        );
    }
    let Some(latest) = attempts.last() else {
        println!(
            "
no attempt yet"
        );
        return Ok(ExitCode::SUCCESS);
    };
    match &latest.rendered {
        Some(rendered) => println!(
            "
Ran (attempt {}):
{rendered}",
            latest.attempt
        ),
        None => println!(
            "
Ran (attempt {}): nothing to render",
            latest.attempt
        ),
    }
    if let Some(plan) = &latest.plan {
        println!(
            "
Physical plan:
{}",
            plan.trim_end()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `amdahl tasks preview`: the first rows of a task's published output.
pub async fn task_preview(
    store: &Store,
    run_id: i64,
    task_id: &str,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    let task = find_task(store, run_id, task_id).await?;
    let Some(output) = task.output_path.as_deref() else {
        bail!(
            "task `{task_id}` of run {run_id} has published no output (it is {}, and a {} \
             task writes one only when it succeeds)",
            task.state,
            task.kind
        );
    };
    let location = amdahl_dags::Location::parse(output, std::path::Path::new("/"))
        .map_err(anyhow::Error::msg)?;
    let shown = amdahl_planner::preview::preview(&location, limit)
        .await
        .map_err(anyhow::Error::msg)?;
    let headers: Vec<String> = shown
        .columns
        .iter()
        .map(|(name, data_type)| format!("{name} ({data_type})"))
        .collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    print!("{}", table(&headers, &shown.rows));
    println!(
        "{} of {} rows{}",
        shown.rows.len(),
        crate::output::count(task.rows_out),
        task.bytes_out
            .map(|b| format!(", {} in all", crate::output::bytes(Some(b))))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn task_logs(store: &Store, run_id: i64, task_id: &str) -> anyhow::Result<ExitCode> {
    find_task(store, run_id, task_id).await?;
    let logs = store.logs(run_id, task_id).await?;
    if logs.is_empty() {
        eprintln!("no log lines for task `{task_id}` of run {run_id}");
    }
    let mut current = None;
    for log in logs {
        if current != Some(log.attempt) {
            println!("--- attempt {} ---", log.attempt);
            current = Some(log.attempt);
        }
        match log.stream.as_str() {
            "stdout" => println!("{}", log.line),
            other => println!("[{other}] {}", log.line),
        }
    }
    Ok(ExitCode::SUCCESS)
}
