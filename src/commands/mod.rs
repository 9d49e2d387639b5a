//! One module per command group; [`dispatch`] routes the parsed command line.

pub mod assets;
pub mod backfill;
pub mod calibrate;
pub mod devices;
pub mod explain;
pub mod inspect;
pub mod maintenance;
pub mod run;
pub mod service;
pub mod validate;
pub mod web;

use std::process::ExitCode;

use anyhow::Context;

use amdahl_scheduler::store::Connections;
use amdahl_scheduler::{Clock, Store, SystemClock};

use crate::settings::{Settings, redact};
use crate::{
    AssetsCommand, BackfillsCommand, Cli, Command, DagsCommand, DbCommand, PoolsCommand,
    RunsCommand, TasksCommand,
};

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    // Validation needs no database: it must work on a laptop with nothing set up.
    if let Command::Dags(DagsCommand::Validate { paths }) = &cli.command {
        return validate::validate(paths).await;
    }
    // Nor does explaining placement.
    if let Command::Explain(args) = &cli.command {
        let url =
            crate::settings::existing_database_url(cli.database_url.clone(), cli.home.clone());
        return explain::explain(args, url).await;
    }
    // Nor does asking which GPUs this machine has.
    if let Command::Devices { json } = &cli.command {
        return devices::devices_list(*json);
    }
    let settings = Settings::resolve(cli.database_url, cli.home, cli.data_root)?;
    // Services wait for a database that is not up yet (starting together, or restarting);
    // a command a person typed says at once that it cannot reach it.
    let patient = matches!(
        cli.command,
        Command::Scheduler(_) | Command::Worker(_) | Command::Standalone(_)
    );
    let store = open_store(&settings, patient, connections(&cli.command)).await?;
    let clock = SystemClock;
    let owner = amdahl_scheduler::runs::owner_id(clock.now_ms());
    let result = match cli.command {
        Command::Dags(DagsCommand::Validate { .. })
        | Command::Devices { .. }
        | Command::Explain(_) => {
            unreachable!("handled above")
        }
        Command::Dags(DagsCommand::List) => inspect::dags_list(&store).await,
        Command::Dags(DagsCommand::Pause { dag_id }) => {
            inspect::set_paused(&store, &dag_id, true).await
        }
        Command::Dags(DagsCommand::Unpause { dag_id }) => {
            inspect::set_paused(&store, &dag_id, false).await
        }
        Command::Run(args) => run::run(&store, &settings, &owner, args).await,
        Command::Trigger(args) => service::trigger(&store, args).await,
        Command::Backfill(args) => backfill::backfill(&store, *args).await,
        Command::Backfills(BackfillsCommand::List) => backfill::list(&store).await,
        Command::Backfills(BackfillsCommand::Cancel { backfill_id }) => {
            backfill::cancel(&store, backfill_id).await
        }
        Command::Scheduler(args) => service::scheduler(&store, args).await,
        Command::Worker(args) => service::worker(&store, &settings, &owner, args).await,
        Command::Standalone(args) => service::standalone(&store, &settings, &owner, args).await,
        Command::Runs(RunsCommand::List { dag, state, limit }) => {
            reap(&store, &owner).await?;
            let state = state.as_deref().and_then(amdahl_scheduler::RunState::parse);
            inspect::runs_list(&store, dag.as_deref(), state, limit).await
        }
        Command::Runs(RunsCommand::Show { run_id }) => {
            reap(&store, &owner).await?;
            inspect::runs_show(&store, run_id).await
        }
        Command::Runs(RunsCommand::Cancel { run_id }) => {
            reap(&store, &owner).await?;
            inspect::runs_cancel(&store, run_id).await
        }
        Command::Tasks(TasksCommand::Show { run_id, task_id }) => {
            inspect::task_show(&store, run_id, &task_id).await
        }
        Command::Tasks(TasksCommand::Preview {
            run_id,
            task_id,
            limit,
        }) => inspect::task_preview(&store, run_id, &task_id, limit.into()).await,
        Command::Tasks(TasksCommand::Logs { run_id, task_id }) => {
            inspect::task_logs(&store, run_id, &task_id).await
        }
        Command::Tasks(TasksCommand::Clear {
            run_id,
            task_ids,
            only,
        }) => {
            reap(&store, &owner).await?;
            let cleared = amdahl_scheduler::clear::clear(&store, run_id, &task_ids, !only).await?;
            if cleared.is_empty() {
                println!("nothing to clear in run {run_id}: those tasks never ran");
            } else {
                println!("run {run_id} queued again; cleared {}", cleared.join(", "));
                eprintln!(
                    "note: the scheduler service runs it (`amdahl standalone`, or `amdahl scheduler`                      with workers)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Assets(AssetsCommand::List) => assets::list(&store).await,
        Command::Assets(AssetsCommand::Show { name, limit }) => {
            assets::show(&store, &name, limit).await
        }
        Command::Assets(AssetsCommand::Emit { name, extra }) => {
            assets::emit(&store, &name, extra.as_deref()).await
        }
        Command::Pools(PoolsCommand::List) => inspect::pools_list(&store).await,
        Command::Pools(PoolsCommand::Set {
            name,
            slots,
            description,
        }) => {
            store
                .set_pool(&name, slots, &description, clock.now_ms())
                .await?;
            println!("pool `{name}` has {slots} slot(s)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Pools(PoolsCommand::Delete { name }) => {
            if !store.delete_pool(&name).await? {
                anyhow::bail!("no pool `{name}`; `amdahl pools list` shows them");
            }
            println!("pool `{name}` deleted; tasks naming it wait until it exists again");
            Ok(ExitCode::SUCCESS)
        }
        Command::Db(DbCommand::Clean {
            older_than,
            dry_run,
        }) => maintenance::clean(&store, &settings, older_than, dry_run).await,
        Command::Calibrate(args) => calibrate::run(&store, &settings, &args).await,
        Command::Web(args) => web::web(&store, args).await,
        Command::Tokens(command) => web::tokens(&store, command).await,
        Command::Db(DbCommand::Migrate) => {
            println!(
                "migrations applied to {} ({})",
                redact(&settings.database_url),
                store.kind()
            );
            Ok(ExitCode::SUCCESS)
        }
    };
    store.close().await;
    result
}

/// Connects and applies migrations.
/// A data root in object storage must be reachable before any task runs: a wrong bucket or
/// missing credentials fail here, once, rather than in every task after its work is done.
pub async fn check_data_root(settings: &Settings) -> anyhow::Result<()> {
    if let Some(root) = &settings.data_root.shared {
        amdahl_executors::objects::reachable(root)
            .await
            .map_err(anyhow::Error::msg)
            .context("the data root (--data-root) cannot be used")?;
    }
    Ok(())
}

/// How many connections the command keeps to PostgreSQL: one reused by a command a person
/// types, a pool that follows the slots for the processes that run tasks.
fn connections(command: &Command) -> Connections {
    let cores = || std::thread::available_parallelism().map_or(1, usize::from);
    let slots = |slots: Option<u32>| slots.map_or_else(cores, |s| s as usize);
    match command {
        Command::Worker(args) => Connections::for_slots(slots(args.slots)),
        // The scheduler loop and the web server share the pool with the worker's slots.
        Command::Standalone(args) => Connections::for_slots(slots(args.worker.slots) + 4),
        Command::Run(_) => Connections::for_slots(cores()),
        Command::Scheduler(_) | Command::Web(_) => Connections::SERVICE,
        _ => Connections::COMMAND,
    }
}

/// Connects and migrates. With `patient`, an unreachable database (connection refused, the
/// server starting) is tried again with backoff until it answers.
pub async fn open_store(
    settings: &Settings,
    patient: bool,
    connections: Connections,
) -> anyhow::Result<Store> {
    let url = redact(&settings.database_url);
    let mut backoff = amdahl_scheduler::store::Backoff::default();
    loop {
        let opened = async {
            let store = Store::connect_with(&settings.database_url, connections).await?;
            store.migrate().await?;
            Ok::<Store, amdahl_scheduler::StoreError>(store)
        }
        .await;
        match opened {
            Ok(store) => return Ok(store),
            Err(e) if patient && e.is_transient() => {
                let wait = backoff.next_wait();
                eprintln!("cannot reach the state store {url} yet ({e}); trying again in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("cannot open the state store {url}"));
            }
        }
    }
}

/// Fails runs whose owning process is gone, and says so.
pub async fn reap(store: &Store, owner: &str) -> anyhow::Result<()> {
    let reaped = amdahl_scheduler::reap_orphans(store, &SystemClock, owner).await?;
    for run_id in reaped {
        eprintln!("note: run {run_id} lost its owner process and was marked failed");
    }
    Ok(())
}

/// The Ballista cluster of every command that runs tasks (`run`, `worker`, `standalone`).
#[derive(clap::Args, Debug, Clone)]
pub struct BallistaArgs {
    /// Where `engine: ballista` tasks run: a Ballista scheduler (df://HOST:50050) or
    /// `standalone` (a scheduler and an executor in this process)
    #[arg(long, env = "AMDAHL_BALLISTA", value_name = "URL", value_parser = parse_ballista)]
    pub ballista: Option<amdahl_executors::ballista::Cluster>,
    /// Let placement send `device: auto` SQL tasks to the --ballista cluster when its measured
    /// profile (`amdahl calibrate --ballista …`) prices them faster there
    #[arg(
        long,
        env = "AMDAHL_BALLISTA_AUTO",
        requires = "ballista",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub ballista_auto: bool,
}

/// What a deployment lets tasks do, on every command that runs tasks (`run`, `worker`,
/// `standalone`).
#[derive(clap::Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Refuse `shell` tasks: they fail saying so, and nothing is run
    #[arg(long, env = "AMDAHL_NO_SHELL", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_shell: bool,
    /// Tasks may read local files only under this folder (repeatable, or comma-separated in
    /// the environment; the data root is always allowed) [default: anywhere]
    #[arg(
        long = "file-root",
        env = "AMDAHL_FILE_ROOTS",
        value_name = "DIR",
        value_delimiter = ','
    )]
    pub file_roots: Vec<std::path::PathBuf>,
}

impl PolicyArgs {
    pub fn policy(&self, settings: &Settings) -> anyhow::Result<amdahl_executors::policy::Policy> {
        amdahl_executors::policy::Policy::new(
            !self.no_shell,
            &self.file_roots,
            &settings.data_root.local,
        )
        .map_err(anyhow::Error::msg)
    }
}

/// `--ballista`: `standalone` or a scheduler's address.
pub fn parse_ballista(text: &str) -> Result<amdahl_executors::ballista::Cluster, String> {
    amdahl_executors::ballista::Cluster::parse(text)
}

/// A memory size for `--memory`: bytes, or a number with a unit: `KiB`/`MiB`/`GiB`/`TiB` (or
/// `Ki`, `Mi`…, powers of 1024), `KB`/`MB`/`GB`/`TB` (or `K`, `M`…, powers of 1000). At least
/// 1 MiB: less cannot hold a batch.
pub fn parse_memory(text: &str) -> Result<usize, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a memory size (try 512MiB or 4GiB)"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
            ));
        }
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes >= usize::MAX as f64 {
        return Err(format!("`{text}` is too large"));
    }
    if bytes < (1 << 20) as f64 {
        return Err(format!(
            "`{text}` is less than 1 MiB, too little to run a query"
        ));
    }
    Ok(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::parse_memory;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512MiB"), Ok(512 << 20));
        assert_eq!(parse_memory("4GiB"), Ok(4 << 30));
        assert_eq!(parse_memory("4Gi"), Ok(4 << 30));
        assert_eq!(parse_memory("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_memory("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_memory("1048576"), Ok(1 << 20));
        assert!(
            parse_memory("12 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(
            parse_memory("lots")
                .unwrap_err()
                .contains("not a memory size")
        );
        assert!(
            parse_memory("100KiB")
                .unwrap_err()
                .contains("less than 1 MiB")
        );
        assert!(parse_memory("").is_err());
    }
}
