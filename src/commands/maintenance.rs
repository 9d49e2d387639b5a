//! `amdahl db clean`: remove old finished runs, in batches, with their output files.

use std::process::ExitCode;
use std::time::Duration;

use amdahl_scheduler::{Clock, Store, SystemClock};

use crate::settings::Settings;

/// Runs deleted per transaction: small enough to keep each lock short.
const BATCH: i64 = 200;

pub async fn clean(
    store: &Store,
    settings: &Settings,
    older_than: Duration,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let cutoff = SystemClock.now_ms() - older_than.as_millis().min(i64::MAX as u128) as i64;
    if dry_run {
        let count = store.count_finished_runs(cutoff).await?;
        println!(
            "would delete {count} finished run(s) older than {}",
            amdahl_dags::model::format_duration(older_than)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut deleted = 0usize;
    loop {
        let ids = store.delete_finished_runs(cutoff, BATCH).await?;
        if ids.is_empty() {
            break;
        }
        for id in &ids {
            if let Some(prefix) = settings.data_root.shared_run(*id)
                && let Err(e) = amdahl_executors::objects::delete_prefix(&prefix).await
            {
                eprintln!(
                    "warning: could not remove the objects under {}: {e}",
                    prefix.url
                );
            }
            let dir = settings.data_root.local.join("runs").join(id.to_string());
            if dir.exists()
                && let Err(e) = std::fs::remove_dir_all(&dir)
            {
                eprintln!("warning: could not remove {}: {e}", dir.display());
            }
        }
        deleted += ids.len();
    }
    let backfills = store.delete_finished_backfills(cutoff).await?;
    println!(
        "deleted {deleted} finished run(s) and {backfills} finished backfill(s) older than {}",
        amdahl_dags::model::format_duration(older_than)
    );
    Ok(ExitCode::SUCCESS)
}
