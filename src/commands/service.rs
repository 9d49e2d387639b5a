//! The service commands: `trigger`, `scheduler`, `worker`, `standalone`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::signals::shutdown_signal;

use amdahl_executors::ballista::Ballista;
use amdahl_executors::{CpuRuntime, Executors};
use amdahl_runner::attempt::AttemptEnv;
use amdahl_runner::{Worker, WorkerConfig};
use amdahl_scheduler::runs::RunOrigin;
use amdahl_scheduler::service::SchedulerService;
use amdahl_scheduler::{RunState, Store, SystemClock, Topic};

use super::run::{RunArgs, resolve_dag};
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct TriggerArgs {
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(clap::Args, Debug)]
pub struct SchedulerArgs {
    /// How often to look for work
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub poll: Duration,
    /// Where DAG files with `schedule:` are read from (recursively)
    #[arg(long, default_value = "dags", value_name = "DIR")]
    pub dags_folder: std::path::PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct StandaloneArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Where DAG files with `schedule:` are read from (recursively)
    #[arg(long, default_value = "dags", value_name = "DIR")]
    pub dags_folder: std::path::PathBuf,
    /// Also serve the web UI and the REST API on this address (e.g. 127.0.0.1:8080)
    #[arg(long, value_name = "ADDR")]
    pub web: Option<std::net::SocketAddr>,
    /// With --web: show outputs' first rows to admin tokens only, not to viewers
    #[arg(long, requires = "web")]
    pub no_preview: bool,
}

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// Tasks this worker runs at once [default: the number of cores]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub slots: Option<u32>,
    /// Tasks that use no CPU (`empty`, sensors' pokes) this worker runs at once, beyond
    /// --slots
    #[arg(long, default_value_t = amdahl_runner::worker::DEFAULT_LIGHT_SLOTS as u32,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub light_slots: u32,
    /// How long a claimed task stays this worker's without a renewal; after that a scheduler
    /// hands it to another worker
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub lease: Duration,
    /// Also take tasks that asked for `device: gpu`; refused unless this machine has a usable
    /// GPU (`amdahl devices` says)
    #[arg(long)]
    pub gpu: bool,
    /// Measure this machine again on start (`amdahl calibrate --quick`) even if the state
    /// store has its profile; without it a worker measures only when there is none
    #[arg(long)]
    pub recalibrate: bool,
    /// Memory the worker's queries may share (e.g. 4GiB): beyond it they spill to disk, and a
    /// query that still cannot fit fails saying so [default: unbounded]
    #[arg(long, value_parser = super::parse_memory)]
    pub memory: Option<usize>,
    #[command(flatten)]
    pub cluster: super::BallistaArgs,
    #[command(flatten)]
    pub policy: super::PolicyArgs,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = amdahl_dags::model::parse_duration(text)?;
    if d.is_zero() {
        return Err("must be longer than 0s".into());
    }
    Ok(d)
}

pub async fn trigger(store: &Store, args: TriggerArgs) -> anyhow::Result<ExitCode> {
    let args = args.run;
    // The wait's subscription (on PostgreSQL a connection of its own) opens while the DAG is
    // read and the run created.
    let progress = args.wait.then(|| {
        let store = store.clone();
        tokio::spawn(async move { store.subscribe(Topic::Progress).await })
    });
    let dag = match resolve_dag(store, &args).await? {
        Ok(dag) => dag,
        Err(rendered) => {
            eprint!("{rendered}");
            eprintln!("the DAG is invalid; nothing was queued");
            return Ok(ExitCode::FAILURE);
        }
    };
    let params = amdahl_dags::params::resolve(&dag, &args.params).map_err(anyhow::Error::msg)?;
    for (task, pool) in super::run::missing_pools(store, &dag).await? {
        eprintln!(
            "note: task `{task}` names pool `{pool}`, which does not exist; it waits until \
             `amdahl pools set {pool} SLOTS` creates it"
        );
    }
    let run_id = amdahl_scheduler::runs::create_run_quietly(
        store,
        &SystemClock,
        &dag,
        &params,
        RunOrigin::Manual,
    )
    .await?;
    println!("run {run_id} of `{}` queued", dag.id);
    // Its first tasks are queued from here, and workers woken, without a round through a
    // scheduler; a run that cannot start now is left to the schedulers.
    if !amdahl_scheduler::service::start_now(store, &SystemClock, run_id).await
        && store.is_paused(&dag.id).await?
    {
        eprintln!(
            "note: DAG `{}` is paused; the run waits until `amdahl dags unpause {}`",
            dag.id, dag.id
        );
    }
    let Some(progress) = progress else {
        return Ok(ExitCode::SUCCESS);
    };
    // Schedulers and workers signal when runs finish; the poll covers signals that cannot
    // reach this process.
    let mut progress = progress.await.context("subscribing to run progress")??;
    let state = loop {
        let run = store.run(run_id).await?.context("the run vanished")?;
        if run.state.is_terminal() {
            break run.state;
        }
        tokio::select! {
            _ = progress.wait(Duration::from_millis(50)) => {}
            _ = tokio::signal::ctrl_c() => {
                eprintln!("stopped waiting; run {run_id} goes on in the service");
                return Ok(ExitCode::FAILURE);
            }
        }
    };
    super::inspect::print_tasks(store, run_id).await?;
    println!("run {run_id} {state}");
    Ok(if state == RunState::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn scheduler_service(
    store: &Store,
    poll: Duration,
    dags_folder: &std::path::Path,
) -> SchedulerService {
    SchedulerService::new(
        store.clone(),
        Arc::new(SystemClock),
        poll,
        Some(dags_folder.to_path_buf()),
    )
}

fn worker_service(
    store: &Store,
    settings: &Settings,
    owner: &str,
    args: &WorkerArgs,
    profile: Option<Arc<amdahl_placement::Profile>>,
) -> anyhow::Result<Arc<Worker>> {
    if args.gpu {
        let devices = amdahl_executors::gpu::devices();
        if let Some(problem) = &devices.problem {
            anyhow::bail!(
                "--gpu: this machine has no usable GPU: {problem} (see `amdahl devices`)"
            );
        }
    }
    let policy = args.policy.policy(settings)?;
    let runtime = CpuRuntime::for_machine(args.memory).context("cannot start the CPU pool")?;
    let slots = args.slots.map_or(runtime.threads(), |s| s as usize);
    let env = AttemptEnv {
        store: store.clone(),
        executors: Executors::new(runtime)
            .with_ballista(Ballista::new(args.cluster.ballista.clone()))
            .with_policy(policy),
        clock: Arc::new(SystemClock),
        profile,
    };
    let config = WorkerConfig {
        owner: owner.to_string(),
        host: owner.split(':').next().unwrap_or_default().to_string(),
        slots,
        light_slots: args.light_slots as usize,
        lease: args.lease,
        has_gpu: args.gpu,
        memory_bytes: total_memory_bytes(),
    };
    Ok(Arc::new(Worker::new(
        env,
        settings.data_root.clone(),
        config,
    )))
}

/// MemTotal from /proc/meminfo; 0 where it cannot be read.
fn total_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

pub async fn scheduler(store: &Store, args: SchedulerArgs) -> anyhow::Result<ExitCode> {
    eprintln!(
        "scheduler: started on {} (poll every {:?})",
        store.kind(),
        args.poll
    );
    scheduler_service(store, args.poll, &args.dags_folder)
        .run(shutdown_signal("scheduler"))
        .await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn worker(
    store: &Store,
    settings: &Settings,
    owner: &str,
    args: WorkerArgs,
) -> anyhow::Result<ExitCode> {
    super::check_data_root(settings).await?;
    let who = format!("worker {owner}");
    let profile = super::calibrate::profile_on_start(store, &who, args.recalibrate).await;
    let profile = super::calibrate::for_worker(
        profile,
        args.cluster.ballista.as_ref(),
        args.cluster.ballista_auto,
        &who,
    );
    let worker = worker_service(store, settings, owner, &args, profile)?;
    eprintln!(
        "worker {owner}: started with {} slot(s) on {}",
        worker.config.slots,
        store.kind()
    );
    worker.run(shutdown_signal("worker")).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn standalone(
    store: &Store,
    settings: &Settings,
    owner: &str,
    args: StandaloneArgs,
) -> anyhow::Result<ExitCode> {
    super::check_data_root(settings).await?;
    let profile =
        super::calibrate::profile_on_start(store, "standalone", args.worker.recalibrate).await;
    let profile = super::calibrate::for_worker(
        profile,
        args.worker.cluster.ballista.as_ref(),
        args.worker.cluster.ballista_auto,
        "standalone",
    );
    let worker = worker_service(store, settings, owner, &args.worker, profile)?;
    let scheduler = scheduler_service(store, Duration::from_millis(200), &args.dags_folder);
    eprintln!(
        "standalone: scheduler and worker ({} slot(s)) on {}; trigger runs with `amdahl trigger`",
        worker.config.slots,
        store.kind()
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let scheduled = scheduler.run(stopped(stop_rx.clone()));
    let web_stop = stopped(stop_rx.clone());
    let web = async {
        match args.web {
            Some(bind) => {
                super::web::serve(
                    store,
                    bind,
                    args.dags_folder.clone(),
                    !args.no_preview,
                    web_stop,
                )
                .await
            }
            None => Ok(()),
        }
    };
    let worked = worker.run(stopped(stop_rx));
    tokio::pin!(scheduled, worked, web);
    tokio::select! {
        // Either half ending on its own means it failed; the error is the answer.
        result = &mut scheduled => result?,
        result = &mut worked => result?,
        result = &mut web, if args.web.is_some() => {
            let _ = stop_tx.send(true);
            let (a, b) = tokio::join!(scheduled, worked);
            a?;
            b?;
            result?;
        }
        _ = shutdown_signal("standalone") => {
            let _ = stop_tx.send(true);
            let (a, b, c) = tokio::join!(scheduled, worked, web);
            a?;
            b?;
            c?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
