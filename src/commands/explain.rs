//! `amdahl explain DAG [--param …] [--profile FILE]`: where each task would run and why.
//!
//! The DAG is checked like `dags validate`, each task is estimated (input and output sizes,
//! work by kind, whether the GPU can run it), priced on the profile's CPU, GPU and cluster, and the
//! whole DAG is assigned by the minimum cut. Without `--profile` the profile is this machine's
//! as `amdahl calibrate` stored it, or, when it has none, a CPU-only reference.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;

use amdahl_dags::RunContext;
use amdahl_placement::{Place, Priced, Profile, edge_cost, greedy, min_cut, price, seconds, why};

use crate::output::table;

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// The DAG file
    pub file: PathBuf,
    /// Override a param: --param name=value (repeatable)
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, serde_json::Value)>,
    /// A machine profile (JSON) to explain against, e.g. profiles/h100-spec.json
    #[arg(long)]
    pub profile: Option<PathBuf>,
}

fn parse_param(text: &str) -> Result<(String, serde_json::Value), String> {
    amdahl_dags::params::parse_assignment(text)
}

/// The profile used without `--profile`: a modest CPU and no GPU.
fn reference_profile() -> Profile {
    let text = include_str!("../../profiles/h100-spec.json");
    let mut profile: Profile = serde_json::from_str(text).expect("the built-in profile parses");
    profile.gpu = None;
    profile
}

/// This machine's profile from the state store, if a store exists and holds one; a store
/// that cannot be read is mentioned and passed over.
async fn stored_profile(database_url: Option<String>) -> Option<(Profile, String)> {
    let url = database_url?;
    let store = match amdahl_scheduler::Store::connect(&url).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("note: cannot open the state store for this machine's profile: {e}");
            return None;
        }
    };
    let host = amdahl_executors::calibrate::hostname();
    let found = super::calibrate::stored_profile(&store, &host).await;
    // What runs taught the model so far.
    let history = store
        .predicted_attempts(amdahl_runner::attempt::LEARN_FROM)
        .await
        .unwrap_or_default();
    store.close().await;
    let observations = amdahl_runner::attempt::observations(&history);
    match found {
        Ok(Some((profile, measured_at_ms))) => Some((
            amdahl_placement::learned(&profile, &observations),
            format!(
                "of {host}, measured {} (`amdahl calibrate`)",
                crate::output::timestamp(Some(measured_at_ms))
            ),
        )),
        Ok(None) => None,
        Err(e) => {
            eprintln!("note: cannot read this machine's profile: {e:#}");
            None
        }
    }
}

/// Explains `args.file`; `database_url` is the state store to find this machine's measured
/// profile in when no `--profile` is given (`None`: there is no store).
pub async fn explain(args: &ExplainArgs, database_url: Option<String>) -> anyhow::Result<ExitCode> {
    let dag = match super::validate::check_file(&args.file).await {
        Ok(dag) => dag,
        Err(error) => {
            eprint!("{}", error.render());
            eprintln!("the DAG is invalid; nothing to explain");
            return Ok(ExitCode::FAILURE);
        }
    };
    let (profile, source) = match &args.profile {
        Some(path) => (
            super::calibrate::read_profile(path)?,
            path.display().to_string(),
        ),
        None => match stored_profile(database_url).await {
            Some(found) => found,
            None => (
                reference_profile(),
                "built-in reference (CPU only; `amdahl calibrate` measures this machine, \
                 --profile FILE explains against another)"
                    .to_string(),
            ),
        },
    };
    let params = amdahl_dags::params::resolve(&dag, &args.params).map_err(anyhow::Error::msg)?;
    let context = RunContext::new(&dag, 0, "2026-01-01T00:00:00Z".into(), params);
    let graph = match amdahl_planner::estimate::estimate(&dag, &context).await {
        Ok(graph) => graph,
        Err(e) => bail!("cannot estimate `{}`: {e}", dag.id),
    };
    let priced = price(&profile, &graph);
    let chosen = min_cut(&profile, &graph);
    let per_task = greedy(&profile, &graph);
    let all_cpu: f64 = priced.iter().map(|p| p.cpu).sum();
    // Copies into each GPU stage of what CPU stages before it made (the edges of the cut).
    let mut incoming = vec![0.0; graph.stages.len()];
    for &(u, v, bytes) in &graph.edges {
        if chosen.places[u] != Place::Gpu {
            incoming[v] += edge_cost(&profile, bytes);
        }
    }
    println!("DAG `{}` against profile {source}", dag.id);
    if let Some(gpu) = &profile.gpu {
        println!("GPU: {}", gpu.name);
    }
    if let Some(cluster) = &profile.cluster {
        println!(
            "cluster: {} (a worker sends tasks there only when started with --ballista {} \
             --ballista-auto)",
            cluster.name, cluster.name
        );
    }
    let learned = amdahl_placement::learn::describe(&profile.corrections);
    if !learned.is_empty() {
        println!("learned from runs: {}", learned.join(", "));
    }
    println!();
    let on_ballista = |id: &str| {
        dag.task(id)
            .is_some_and(|t| t.engine == amdahl_dags::Engine::Ballista)
    };
    let rows: Vec<Vec<String>> = graph
        .stages
        .iter()
        .zip(&priced)
        .zip(&chosen.places)
        .zip(&incoming)
        .map(|(((stage, p), place), incoming)| {
            let p = &Priced {
                cpu: p.cpu,
                gpu: p.gpu.clone().map(|mut g| {
                    g.transfer_in += incoming;
                    g
                }),
                cluster: p.cluster.clone(),
            };
            let (gpu_in, gpu_compute, gpu_out) = match &p.gpu {
                Ok(g) => (
                    seconds(g.transfer_in),
                    seconds(g.compute),
                    seconds(g.transfer_out),
                ),
                Err(_) => ("-".into(), "-".into(), "-".into()),
            };
            let mut row = vec![
                stage.id.clone(),
                bytes(stage.touched_bytes),
                seconds(p.cpu),
                gpu_in,
                gpu_compute,
                gpu_out,
            ];
            if profile.cluster.is_some() {
                row.push(p.cluster.as_ref().map_or("-".into(), |c| seconds(*c)));
            }
            row.push(match place {
                Place::Cluster if on_ballista(&stage.id) => "ballista".into(),
                other => other.name().to_lowercase(),
            });
            row.push(if on_ballista(&stage.id) && profile.cluster.is_none() {
                "engine: ballista: runs on the cluster (none in the profile: priced as this CPU)"
                    .into()
            } else {
                why(p, *place)
            });
            row
        })
        .collect();
    let mut headers = vec!["TASK", "INPUT", "CPU", "GPU IN", "GPU COMPUTE", "GPU OUT"];
    if profile.cluster.is_some() {
        headers.push("CLUSTER");
    }
    headers.extend(["CHOICE", "WHY"]);
    print!("{}", table(&headers, &rows));
    let sharded = shard_lines(&dag, &graph, &priced, &incoming, &profile);
    if !sharded.is_empty() {
        println!();
        println!("split tasks (parts shared so that the devices finish together):");
        for line in sharded {
            println!("  {line}");
        }
    }
    println!();
    println!(
        "predicted: {} as chosen (minimum cut over the whole DAG); {} choosing task by task; {} all on the CPU",
        seconds(chosen.total),
        seconds(per_task.total),
        seconds(all_cpu)
    );
    println!(
        "estimates: sizes from datasets' files and generators' parameters; a filter keeps half \
         its rows and a group-by makes 1000 until the task has run"
    );
    Ok(ExitCode::SUCCESS)
}

/// For each task with `shards` above 1: how its parts would be shared between the devices,
/// and the predicted time beside the whole task on either.
fn shard_lines(
    dag: &amdahl_dags::Dag,
    graph: &amdahl_placement::Graph,
    priced: &[Priced],
    incoming: &[f64],
    profile: &Profile,
) -> Vec<String> {
    let mut lines = Vec::new();
    for ((stage, p), incoming) in graph.stages.iter().zip(priced).zip(incoming) {
        let Some(task) = dag.task(&stage.id).filter(|t| t.shards > 1) else {
            continue;
        };
        let gpu = match (&p.gpu, &profile.gpu, task.device) {
            (_, _, amdahl_dags::DevicePreference::Cpu) => None,
            (Ok(g), Some(device), _) => Some((g.total() + incoming, device.device.fixed_seconds)),
            _ => None,
        };
        let lanes = amdahl_placement::lanes_from((p.cpu, profile.cpu.fixed_seconds), gpu);
        let n = task.shards as usize;
        let parts = vec![stage.touched_bytes / n as u64; n];
        let shares = amdahl_placement::share(&parts, &lanes);
        let counts = shares.counts();
        let on = |place: Place| {
            lanes
                .iter()
                .position(|l| l.place == place)
                .map_or(0, |i| counts[i])
        };
        lines.push(format!(
            "{}: {n} parts, {} on the CPU and {} on the GPU: {} (whole on the CPU {}, on the GPU {})",
            stage.id,
            on(Place::Cpu),
            on(Place::Gpu),
            seconds(shares.makespan()),
            seconds(p.cpu),
            gpu.map_or("-".into(), |(total, _)| seconds(total)),
        ));
    }
    lines
}

/// Why the place was chosen, in words.
fn bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}
