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
}

pub async fn run(store: &Store, args: &CalibrateArgs) -> anyhow::Result<ExitCode> {
    let host = hostname();
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

/// Measures this machine and stores the profile under its host name.
pub async fn measure_and_store(store: &Store, effort: Effort) -> anyhow::Result<Calibration> {
    let calibration = calibrate(effort)
        .await
        .map_err(|e| anyhow::anyhow!("calibration failed: {e}"))?;
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
