//! `amdahl calibrate`: measure this machine's CPU and GPU for the placement cost model and
//! keep the profile in the state store (one per host), where `explain` and workers find it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use amdahl_executors::calibrate::{Calibration, Effort, calibrate, hostname};
use amdahl_placement::Profile;
use amdahl_scheduler::{Clock, Store, SystemClock};

use crate::output::table;

#[derive(clap::Args, Debug)]
pub struct CalibrateArgs {
    /// Measure again even if this machine already has a stored profile
    #[arg(long)]
    pub recalibrate: bool,
    /// Measure briefly (about a second; rougher figures)
    #[arg(long)]
    pub quick: bool,
    /// Also write the profile as JSON to this file (for `amdahl explain --profile` elsewhere)
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the profile as JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Measure this Ballista cluster (`standalone` or df://HOST:50050) as a place for `sql`
    /// tasks and keep it in this machine's profile; workers started with the same --ballista
    /// and --ballista-auto then let placement choose it
    #[arg(long, value_name = "URL", value_parser = super::parse_ballista)]
    pub ballista: Option<amdahl_executors::ballista::Cluster>,
    /// Store this profile (JSON, as --output writes it) as this machine's instead of measuring
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ballista", "quick", "recalibrate"])]
    pub import: Option<PathBuf>,
}

pub async fn run(
    store: &Store,
    settings: &crate::settings::Settings,
    args: &CalibrateArgs,
) -> anyhow::Result<ExitCode> {
    let host = hostname();
    if let Some(path) = &args.import {
        let profile = read_profile(path)?;
        let json = serde_json::to_string(&profile)?;
        store
            .save_profile(&host, &json, SystemClock.now_ms())
            .await?;
        emit(args, &profile, None)?;
        if !args.json {
            println!("stored {} as {host}'s profile", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(cluster) = &args.ballista {
        return measure_cluster(store, settings, args, cluster).await;
    }
    if !args.recalibrate
        && let Some(stored) = stored_profile(store, &host).await?
    {
        let (profile, measured_at_ms) = stored;
        emit(args, &profile, None)?;
        if !args.json {
            println!(
                "stored for {host} at {}; `amdahl calibrate --recalibrate` measures again",
                crate::output::timestamp(Some(measured_at_ms))
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let effort = if args.quick {
        Effort::Quick
    } else {
        Effort::Full
    };
    if !args.json {
        eprintln!("measuring {host} …");
    }
    let calibration = measure_and_store(store, effort).await?;
    emit(args, &calibration.profile, Some(&calibration))?;
    if !args.json {
        println!("stored as {host}'s profile; `amdahl explain` now prices against it");
    }
    Ok(ExitCode::SUCCESS)
}

/// A profile from a JSON file; errors say where in it.
pub fn read_profile(path: &std::path::Path) -> anyhow::Result<Profile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read profile {}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))
}

/// `calibrate --ballista`: measures the cluster and keeps it in this machine's profile (the
/// machine itself measured first when it has none).
async fn measure_cluster(
    store: &Store,
    settings: &crate::settings::Settings,
    args: &CalibrateArgs,
    cluster: &amdahl_executors::ballista::Cluster,
) -> anyhow::Result<ExitCode> {
    super::check_data_root(settings).await?;
    let effort = if args.quick {
        Effort::Quick
    } else {
        Effort::Full
    };
    let host = hostname();
    let mut profile = match stored_profile(store, &host).await? {
        Some((profile, _)) if !args.recalibrate => profile,
        _ => {
            if !args.json {
                eprintln!("measuring {host} …");
            }
            measure_and_store(store, effort).await?.profile
        }
    };
    if !args.json {
        eprintln!("measuring {cluster} from {host} …");
    }
    let runtime = amdahl_executors::runtime::CpuRuntime::for_machine(None)
        .context("cannot start the CPU pool")?;
    let ballista = amdahl_executors::ballista::Ballista::new(Some(cluster.clone()));
    let measured = amdahl_executors::calibrate::calibrate_cluster(
        &ballista,
        &runtime,
        effort,
        settings.data_root.shared.as_ref(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("calibrating the cluster failed: {e}"))?;
    profile.cluster = Some(measured.profile);
    let json = serde_json::to_string(&profile)?;
    store
        .save_profile(&host, &json, SystemClock.now_ms())
        .await?;
    let calibration = Calibration {
        profile: profile.clone(),
        figures: measured.figures,
        gpu_problem: None,
    };
    emit(args, &profile, Some(&calibration))?;
    if !args.json {
        println!(
            "stored in {host}'s profile; workers started with --ballista {} --ballista-auto \
             may now place `sql` tasks there",
            cluster.name()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The profile a worker places with: the stored `profile`, keeping its cluster only when the
/// worker hands queries to that same cluster (`--ballista`) and placement may choose it
/// (`--ballista-auto`); otherwise the cluster is no place for it. What does not fit is said.
pub fn for_worker(
    profile: Option<Arc<Profile>>,
    ballista: Option<&amdahl_executors::ballista::Cluster>,
    auto: bool,
    who: &str,
) -> Option<Arc<Profile>> {
    let profile = profile?;
    let keep = match (&profile.cluster, ballista) {
        _ if !auto => false,
        (Some(measured), Some(named)) if measured.name == named.name() => true,
        (Some(measured), Some(named)) => {
            eprintln!(
                "{who}: the profile measured the cluster {}, not {}: placement keeps tasks \
                 here until `amdahl calibrate --ballista {}`",
                measured.name,
                named.name(),
                named.name()
            );
            false
        }
        (None, named) => {
            eprintln!(
                "{who}: --ballista-auto, but the cluster was never measured: placement keeps \
                 tasks here until `amdahl calibrate --ballista {}`",
                named.map_or("URL", |n| n.name())
            );
            false
        }
        (Some(_), None) => false,
    };
    if keep || profile.cluster.is_none() {
        return Some(profile);
    }
    Some(Arc::new(Profile {
        cluster: None,
        ..(*profile).clone()
    }))
}

/// Measures this machine and stores the profile under its host name (keeping the cluster a
/// stored profile measured).
pub async fn measure_and_store(store: &Store, effort: Effort) -> anyhow::Result<Calibration> {
    let mut calibration = calibrate(effort)
        .await
        .map_err(|e| anyhow::anyhow!("calibration failed: {e}"))?;
    if let Ok(Some((stored, _))) = stored_profile(store, &hostname()).await {
        calibration.profile.cluster = stored.cluster;
    }
    let json = serde_json::to_string(&calibration.profile)?;
    store
        .save_profile(&hostname(), &json, SystemClock.now_ms())
        .await?;
    Ok(calibration)
}

/// `host`'s stored profile and when it was measured, if any.
pub async fn stored_profile(store: &Store, host: &str) -> anyhow::Result<Option<(Profile, i64)>> {
    let Some(record) = store.profile(host).await? else {
        return Ok(None);
    };
    let profile: Profile = serde_json::from_str(&record.profile)
        .with_context(|| format!("the stored profile of {host} is not a profile"))?;
    Ok(Some((profile, record.measured_at_ms)))
}

fn emit(
    args: &CalibrateArgs,
    profile: &Profile,
    calibration: Option<&Calibration>,
) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(profile)?;
    if let Some(path) = &args.output {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{json}");
        return Ok(());
    }
    match calibration {
        Some(c) => {
            let rows: Vec<Vec<String>> = c
                .figures
                .iter()
                .map(|(what, value)| vec![what.clone(), value.clone()])
                .collect();
            print!("{}", table(&["MEASURE", "VALUE"], &rows));
        }
        None => print!("{}", summary(profile)),
    }
    Ok(())
}

/// A stored profile in words.
pub fn summary(profile: &Profile) -> String {
    let mut rows = vec![vec![
        "CPU memory bandwidth".to_string(),
        format!("{:.1} GB/s", profile.cpu.memory_bandwidth / 1e9),
    ]];
    let rate = |kind: amdahl_placement::OpKind, r: f64| match kind {
        amdahl_placement::OpKind::Gemm => format!("{:.1} GFLOP/s", r / 1e9),
        _ if r < 10e6 => format!("{:.2} M rows/s", r / 1e6),
        _ => format!("{:.0} M rows/s", r / 1e6),
    };
    for (kind, r) in &profile.cpu.throughput {
        rows.push(vec![format!("CPU {}", kind.name()), rate(*kind, *r)]);
    }
    match &profile.gpu {
        Some(gpu) => {
            rows.push(vec!["GPU".into(), gpu.name.clone()]);
            rows.push(vec![
                "GPU memory bandwidth".into(),
                format!("{:.0} GB/s", gpu.device.memory_bandwidth / 1e9),
            ]);
            rows.push(vec![
                "host → GPU / GPU → host (pinned)".into(),
                format!(
                    "{:.1} / {:.1} GB/s",
                    gpu.host_to_device / 1e9,
                    gpu.device_to_host / 1e9
                ),
            ]);
            for (kind, r) in &gpu.device.throughput {
                rows.push(vec![format!("GPU {}", kind.name()), rate(*kind, *r)]);
            }
            rows.push(vec![
                "GPU memory free".into(),
                format!("{} MiB", gpu.free_bytes >> 20),
            ]);
        }
        None => rows.push(vec!["GPU".into(), "none".into()]),
    }
    if let Some(cluster) = &profile.cluster {
        rows.push(vec!["cluster".into(), cluster.name.clone()]);
        rows.push(vec![
            "cluster fixed cost per query".into(),
            format!("{:.1} ms", cluster.device.fixed_seconds * 1e3),
        ]);
        for (kind, r) in &cluster.device.throughput {
            rows.push(vec![format!("cluster {}", kind.name()), rate(*kind, *r)]);
        }
    }
    if let Some(source) = &profile.source {
        rows.push(vec!["source".into(), source.clone()]);
    }
    table(&["MEASURE", "VALUE"], &rows)
}

/// This machine's profile for placement: the stored one, or (when there is none, or when
/// asked to) a quick measurement, stored. A failure is reported and the caller goes on
/// without one (`device: auto` then uses the size threshold).
pub async fn profile_on_start(store: &Store, who: &str, recalibrate: bool) -> Option<Arc<Profile>> {
    let host = hostname();
    if !recalibrate {
        match stored_profile(store, &host).await {
            Ok(Some((profile, _))) => return Some(Arc::new(profile)),
            Ok(None) => {}
            Err(e) => eprintln!("{who}: {e:#}; measuring again"),
        }
    }
    let started = std::time::Instant::now();
    match measure_and_store(store, Effort::Quick).await {
        Ok(c) => {
            eprintln!(
                "{who}: calibrated {host} in {:.1}s ({}); `amdahl calibrate --recalibrate` measures longer",
                started.elapsed().as_secs_f64(),
                match &c.profile.gpu {
                    Some(gpu) => format!("GPU {}", gpu.name),
                    None => "no GPU".to_string(),
                }
            );
            Some(Arc::new(c.profile))
        }
        Err(e) => {
            eprintln!("{who}: calibration failed, `device: auto` uses the size threshold: {e:#}");
            None
        }
    }
}
