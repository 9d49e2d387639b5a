//! `amdahl run DAG_FILE_OR_ID`: validate, record, execute in this process, report.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use amdahl_dags::Dag;
use amdahl_executors::ballista::Ballista;
use amdahl_executors::{CpuRuntime, Executors};
use amdahl_runner::{LocalRunner, RunObserver};
use amdahl_scheduler::notify::{self, Deliverer, DeliverySettings};
use amdahl_scheduler::store::NotificationState;
use amdahl_scheduler::{RunState, Store, SystemClock, TaskState};

use super::validate::check_file;
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// A DAG file, or the id of a DAG in the dags folder or the state store
    pub dag: String,
    /// Override a param: --param name=value (repeatable)
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, serde_json::Value)>,
    /// Wait for the run to finish (runs started by `amdahl run` always execute in this
    /// process, so this is the default; the flag is accepted for scripts)
    #[arg(long)]
    pub wait: bool,
    /// Where to look for DAG files when given an id
    #[arg(long, default_value = "dags", value_name = "DIR")]
    pub dags_folder: PathBuf,
}

/// `amdahl run`: the run's arguments, and what the process that executes it may use.
#[derive(clap::Args, Debug)]
pub struct RunCommand {
    #[command(flatten)]
    pub run: RunArgs,
    /// Memory the run's queries may share (e.g. 4GiB): beyond it they spill to disk, and a
    /// query that still cannot fit fails saying so [default: unbounded]
    #[arg(long, value_parser = super::parse_memory)]
    pub memory: Option<usize>,
    #[command(flatten)]
    pub cluster: super::BallistaArgs,
    #[command(flatten)]
    pub policy: super::PolicyArgs,
}

fn parse_param(text: &str) -> Result<(String, serde_json::Value), String> {
    amdahl_dags::params::parse_assignment(text)
}

pub async fn run(
    store: &Store,
    settings: &Settings,
    owner: &str,
    command: RunCommand,
) -> anyhow::Result<ExitCode> {
    let args = command.run;
    let dag = match resolve_dag(store, &args).await? {
        Ok(dag) => dag,
        Err(rendered) => {
            eprint!("{rendered}");
            eprintln!("the DAG is invalid; nothing was run");
            return Ok(ExitCode::FAILURE);
        }
    };
    let params = amdahl_dags::params::resolve(&dag, &args.params).map_err(anyhow::Error::msg)?;
    // A run in this process would wait forever for a pool nobody creates.
    let missing = missing_pools(store, &dag).await?;
    if let Some((task, pool)) = missing.first() {
        bail!(
            "task `{task}` names pool `{pool}`, which does not exist; create it with \
             `amdahl pools set {pool} SLOTS`; nothing was run"
        );
    }
    super::reap(store, owner).await?;
    super::check_data_root(settings).await?;

    let policy = command.policy.policy(settings)?;
    let runtime = CpuRuntime::for_machine(command.memory).context("cannot start the CPU pool")?;
    let runner = LocalRunner {
        store: store.clone(),
        executors: Executors::new(runtime)
            .with_ballista(Ballista::new(command.cluster.ballista.clone()))
            .with_policy(policy),
        data_root: settings.data_root.clone(),
        owner: owner.to_string(),
        clock: Arc::new(SystemClock),
        profile: super::calibrate::for_worker(
            placement_profile(store, command.cluster.ballista_auto).await,
            command.cluster.ballista.as_ref(),
            command.cluster.ballista_auto,
            "run",
        ),
    };
    let run_id = runner.create_run(&dag, &params).await?;
    eprintln!(
        "run {run_id} of `{}` started ({} tasks)",
        dag.id,
        dag.tasks.len()
    );
    let progress = Progress::new(dag.tasks.len());
    let cancel = async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("cancelling run {run_id}…");
    };
    let state = runner.drive(&dag, run_id, &progress, cancel).await?;
    progress.finish();
    if dag.notifies() {
        tell(store, run_id).await;
    }

    super::inspect::print_tasks(store, run_id).await?;
    let run = store.run(run_id).await?.context("the run vanished")?;
    println!(
        "run {run_id} {state} in {}",
        crate::output::duration_ms(
            run.started_at_ms.or(Some(run.created_at_ms)),
            run.finished_at_ms
        )
    );
    Ok(if state == RunState::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// (task, pool) for each task that names a pool the store does not have.
/// Sends the run's notifications (`on_failure`, …) before exiting, retrying for a while;
/// what is still pending then, a scheduler sends later. Trouble here never changes the run's
/// answer.
async fn tell(store: &Store, run_id: i64) {
    let deliverer = match Deliverer::new(DeliverySettings::from_env()) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            eprintln!("notifications not sent: {e}");
            return;
        }
    };
    let clock: Arc<dyn amdahl_scheduler::Clock> = Arc::new(SystemClock);
    match notify::tell_now(store, &clock, run_id, &deliverer, Duration::from_secs(15)).await {
        Ok(notes) if !notes.is_empty() => {
            let count =
                |state: NotificationState| notes.iter().filter(|n| n.state == state).count();
            let pending = count(NotificationState::Pending);
            eprintln!(
                "notifications: {} delivered, {} failed{}",
                count(NotificationState::Delivered),
                count(NotificationState::Failed),
                if pending > 0 {
                    format!(", {pending} pending (a scheduler sends them)")
                } else {
                    String::new()
                }
            );
        }
        Ok(_) => {}
        Err(e) => eprintln!("notifications not sent: {e}"),
    }
}

pub async fn missing_pools(store: &Store, dag: &Dag) -> anyhow::Result<Vec<(String, String)>> {
    if dag.tasks.iter().all(|t| t.pool.is_none()) {
        return Ok(Vec::new());
    }
    let known: std::collections::BTreeSet<String> =
        store.pools().await?.into_iter().map(|p| p.name).collect();
    Ok(dag
        .tasks
        .iter()
        .filter_map(|t| {
            let pool = t.pool.as_ref()?;
            (!known.contains(pool)).then(|| (t.id.clone(), pool.clone()))
        })
        .collect())
}

/// A path loads that file; an id is looked for in the dags folder, then in the store.
/// `Ok(Err(text))` is an invalid DAG, rendered for the terminal.
pub async fn resolve_dag(store: &Store, args: &RunArgs) -> anyhow::Result<Result<Dag, String>> {
    let as_path = Path::new(&args.dag);
    if as_path.is_file() {
        return Ok(check_file(as_path).await.map_err(|e| e.render()));
    }
    if args.dag.contains('/') || args.dag.ends_with(".yaml") || args.dag.ends_with(".yml") {
        bail!("DAG file not found: {}", args.dag);
    }
    if !amdahl_dags::is_valid_id(&args.dag) {
        bail!("`{}` is neither a DAG file nor a valid DAG id", args.dag);
    }
    match amdahl_scheduler::resolve::resolve_dag_id(store, &args.dag, &args.dags_folder).await? {
        Some(found) => Ok(found),
        None => bail!(
            "no DAG `{}`: not a file, not in {}/, and never run before",
            args.dag,
            args.dags_folder.display()
        ),
    }
}

/// A progress bar on a terminal; one line per finished task otherwise.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(tasks: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(tasks as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            ) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Progress { bar }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl RunObserver for Progress {
    fn task_changed(&self, task_id: &str, state: TaskState) {
        match &self.bar {
            Some(bar) => {
                if state.is_terminal() {
                    bar.inc(1);
                    bar.println(format!("  {task_id}: {state}"));
                } else if state == TaskState::Running {
                    bar.set_message(format!("running {task_id}"));
                } else if state == TaskState::UpForRetry {
                    bar.println(format!(
                        "  {task_id}: up_for_retry (a retry, or a sensor's next poke)"
                    ));
                }
            }
            None => {
                if state.is_terminal() || state == TaskState::UpForRetry {
                    eprintln!("  {task_id}: {state}");
                }
            }
        }
    }
}

/// The profile `device: auto` tasks are placed with: only a machine with a usable GPU or a
/// cluster it may use (`--ballista-auto`) has a choice to make; it uses its stored profile,
/// measured quickly (and stored) the first time.
async fn placement_profile(
    store: &Store,
    ballista_auto: bool,
) -> Option<Arc<amdahl_placement::Profile>> {
    if !ballista_auto && !amdahl_executors::gpu::devices().usable() {
        return None;
    }
    super::calibrate::profile_on_start(store, "run", false).await
}
