//! The `amdahl` command: parses the command line, wires the crates together, prints results.
//!
//! Nothing here decides or executes anything: DAGs come from `amdahl-dags`, runs are driven by
//! `amdahl-scheduler`, stages run in `amdahl-executors`. This file owns the user's edge:
//! flags, environment variables, exit codes, and how results look in a terminal.

mod commands;
mod output;
mod settings;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Amdahl: a batch dataflow orchestrator that runs every stage where it finishes soonest.
#[derive(Parser, Debug)]
#[command(name = "amdahl", version, about, propagate_version = true)]
pub struct Cli {
    /// State store: postgres://… or sqlite://… [default: sqlite in the Amdahl home folder]
    #[arg(long, global = true, env = "AMDAHL_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Folder for the default SQLite database and task outputs
    /// [default: $XDG_DATA_HOME/amdahl or ~/.local/share/amdahl]
    #[arg(long, global = true, env = "AMDAHL_HOME", value_name = "DIR")]
    pub home: Option<std::path::PathBuf>,
    /// Where task outputs go: a folder, or a prefix in object storage (s3://BUCKET/PREFIX,
    /// gs://…, az://…) that workers on every machine share; credentials and endpoint come
    /// from the standard variables (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, …)
    /// [default: the `data` folder in the Amdahl home]
    #[arg(long, global = true, env = "AMDAHL_DATA_ROOT", value_name = "DIR|URL")]
    pub data_root: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

impl Command {
    /// Commands that talk to the state store and do nothing else: one thread runs them,
    /// which saves each reply a hand-off between threads (about 1.5 ms of a `trigger --wait`
    /// of one task). Commands that run tasks or read outputs keep the threaded runtime.
    fn store_only(&self) -> bool {
        matches!(
            self,
            Command::Trigger(_)
                | Command::Backfill(_)
                | Command::Backfills(_)
                | Command::Runs(_)
                | Command::Dags(_)
                | Command::Pools(_)
                | Command::Assets(_)
        )
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate and list DAGs
    #[command(subcommand)]
    Dags(DagsCommand),
    /// Run a DAG in this process and wait for it to finish
    Run(commands::run::RunCommand),
    /// Queue a run for the scheduler service (`amdahl scheduler` + `amdahl worker`, or
    /// `amdahl standalone`) to execute
    Trigger(commands::service::TriggerArgs),
    /// Queue the runs of a past date range for the scheduler service, a few at a time
    Backfill(Box<commands::backfill::BackfillArgs>),
    /// List or cancel backfills
    #[command(subcommand)]
    Backfills(BackfillsCommand),
    /// Run the scheduler service: moves queued runs forward and reaps lost workers' tasks
    Scheduler(commands::service::SchedulerArgs),
    /// Run a worker: claims queued tasks and executes them
    Worker(commands::service::WorkerArgs),
    /// Run a scheduler and a worker in one process (SQLite by default)
    Standalone(commands::service::StandaloneArgs),
    /// Inspect runs
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Inspect task instances
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Assets: named data that tasks produce (`produces:`) and DAGs wait on (`schedule: {
    /// assets: [...] }`); their events and the runs they started
    #[command(subcommand)]
    Assets(AssetsCommand),
    /// Named pools: cap how many tasks that name a pool (`pool:` in the DAG) run at once
    #[command(subcommand)]
    Pools(PoolsCommand),
    /// Manage the state store
    #[command(subcommand)]
    Db(DbCommand),
    /// Where each task of a DAG would run (CPU or GPU) and why, with predicted times
    Explain(commands::explain::ExplainArgs),
    /// Measure this machine's CPU and GPU (bandwidths, throughput per operator, copy costs)
    /// and store the profile that placement prices stages with
    Calibrate(commands::calibrate::CalibrateArgs),
    /// Serve the web UI and the REST API (`/api/v1`, OpenAPI at `/api/v1/openapi.json`)
    Web(commands::web::WebArgs),
    /// API tokens for the web UI and the REST API
    #[command(subcommand)]
    Tokens(commands::web::TokensCommand),
    /// List the GPUs this machine can run stages on, or say why there are none
    Devices {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum BackfillsCommand {
    /// Backfills, newest first, with how many of their runs are in each state
    List,
    /// Stop a backfill: no more runs are created, and its unfinished runs are cancelled
    Cancel { backfill_id: i64 },
}

#[derive(Subcommand, Debug)]
pub enum AssetsCommand {
    /// Assets with their newest event, producers and the DAGs they start
    List,
    /// One asset and its recent events, each with the runs it started
    Show {
        name: String,
        /// Events shown, newest first
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
    },
    /// Record an event on an asset (data landed): DAGs scheduled on it start
    Emit {
        name: String,
        /// JSON kept with the event (at most 16 KiB), e.g. '{"rows": 1200}'
        #[arg(long)]
        extra: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PoolsCommand {
    /// List pools with their slots and how many are taken
    List,
    /// Create a pool or change its slots
    Set {
        /// Lowercase letters, digits, `_` and `-`
        #[arg(value_parser = parse_pool_name)]
        name: String,
        /// Tasks of the pool that may be queued or running at once (0 holds them all back)
        #[arg(value_parser = clap::value_parser!(i64).range(0..=1_000_000))]
        slots: i64,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a pool; tasks naming it wait until it exists again
    Delete { name: String },
}

fn parse_pool_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(text.to_string())
    } else {
        Err("use 1 to 64 lowercase letters, digits, `_` or `-`".into())
    }
}

#[derive(Subcommand, Debug)]
pub enum DagsCommand {
    /// Check DAG files (or folders of them) and report every problem with file:line:column
    Validate {
        /// DAG files or folders to search for *.yaml / *.yml
        #[arg(required = true)]
        paths: Vec<std::path::PathBuf>,
    },
    /// List the DAGs recorded in the state store
    List,
    /// Stop the scheduler from starting cron runs and tasks of a DAG
    Pause { dag_id: String },
    /// Let the scheduler start cron runs and tasks of a DAG again
    Unpause { dag_id: String },
}

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// List recent runs, newest first
    List {
        /// Only runs of this DAG
        #[arg(long)]
        dag: Option<String>,
        /// Only runs in this state
        #[arg(long, value_parser = ["queued", "running", "success", "failed", "cancelled"])]
        state: Option<String>,
        /// How many runs to show
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
    },
    /// Show a run: its tasks, their attempts and timings
    Show { run_id: i64 },
    /// Cancel an unfinished run: queued tasks never start, running ones are stopped
    Cancel { run_id: i64 },
}

#[derive(Subcommand, Debug)]
pub enum TasksCommand {
    /// Show a task: its state, its attempts, and what its latest attempt ran after templating
    /// (the query, the command with secrets masked) with the physical plan of a query
    Show { run_id: i64, task_id: String },
    /// Print the first rows of a task's output as a table, with its columns' types and its
    /// row count (read from the start of its files, never the whole output)
    Preview {
        run_id: i64,
        task_id: String,
        /// Rows to show (1–1000)
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
    },
    /// Print the logs of every attempt of a task
    Logs { run_id: i64, task_id: String },
    /// Run tasks of a finished run again, with everything downstream of them; the scheduler
    /// service (`amdahl standalone` or `amdahl scheduler` + workers) runs them
    Clear {
        run_id: i64,
        #[arg(required = true)]
        task_ids: Vec<String>,
        /// Clear only the tasks named, not what needs them
        #[arg(long)]
        only: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Apply pending migrations (also done automatically on start)
    Migrate,
    /// Delete finished runs (with their tasks, attempts, logs and output files) older than a duration
    Clean {
        /// Runs that finished longer ago than this go: e.g. 30d, 12h, 90m
        #[arg(long, value_name = "DURATION", value_parser = parse_age)]
        older_than: std::time::Duration,
        /// Only say how many runs would go
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    amdahl_dags::model::parse_duration(text)
}

/// Like other Unix tools, end quietly when the reader of our output goes away (`amdahl runs
/// show 1 | head`), with the status a shell gives a process SIGPIPE ended (141), instead of a
/// panic message. SIGPIPE itself stays ignored: a worker or a Ballista client writing to a
/// socket its peer closed must get an error to handle, not be killed.
fn end_quietly_when_stdout_closes() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info);
    }));
}

fn main() -> ExitCode {
    end_quietly_when_stdout_closes();
    let cli = Cli::parse();
    let built = if cli.command.store_only() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::dispatch(cli));
    // Stage work may still be winding down on other threads; do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole chain: "cannot open the state store …: <why>".
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
