//! `amdahl assets list|show|emit`: what each asset is, who produces and waits on it, its
//! events and the runs they started; posting an event from a script.

use std::process::ExitCode;

use anyhow::{Context, bail};

use amdahl_scheduler::store::AssetEvent;
use amdahl_scheduler::{Clock, Store, SystemClock, Topic};

use crate::output::{table, timestamp};

/// Largest `--extra` (the API's bound too).
const MAX_EXTRA_BYTES: usize = 16 * 1024;

pub async fn list(store: &Store) -> anyhow::Result<ExitCode> {
    let assets = store.asset_summaries("", 1_000).await?;
    if assets.is_empty() {
        println!(
            "no assets; a task declares one with `produces: NAME`, and `amdahl assets emit NAME` posts an event"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = assets
        .into_iter()
        .map(|a| {
            vec![
                a.asset,
                a.events.to_string(),
                a.last_event
                    .as_ref()
                    .map_or("-".into(), |e| timestamp(Some(e.created_at_ms))),
                a.last_event.as_ref().map_or("-".into(), origin),
                list_or_dash(&a.producers),
                list_or_dash(&a.consumers),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "ASSET",
                "EVENTS",
                "LAST EVENT",
                "FROM",
                "PRODUCED BY",
                "STARTS"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn show(store: &Store, name: &str, limit: i64) -> anyhow::Result<ExitCode> {
    let Some(asset) = store.asset_summary(name).await? else {
        bail!("no asset `{name}`: no DAG declares it and it has no event");
    };
    println!("asset       {}", asset.asset);
    println!("events      {}", asset.events);
    println!("produced by {}", list_or_dash(&asset.producers));
    println!("starts      {}", list_or_dash(&asset.consumers));
    let events = store.asset_events(name, i64::MAX, limit).await?;
    if events.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    println!();
    let rows: Vec<Vec<String>> = events
        .into_iter()
        .map(|(e, runs)| {
            vec![
                e.id.to_string(),
                timestamp(Some(e.created_at_ms)),
                origin(&e),
                e.extra_json.clone().unwrap_or_else(|| "-".into()),
                if runs.is_empty() {
                    "-".into()
                } else {
                    runs.iter()
                        .map(|r| format!("run {r}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["EVENT", "AT", "FROM", "EXTRA", "STARTED"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn emit(store: &Store, name: &str, extra: Option<&str>) -> anyhow::Result<ExitCode> {
    if amdahl_dags::assets::after_dag(name).is_some() || !amdahl_dags::assets::is_valid_name(name) {
        bail!(
            "`{name}` is not an asset name: use letters, digits, `_`, `-`, `.` and `/` (at most 200), e.g. `lake.orders`"
        );
    }
    let extra = match extra {
        Some(text) => {
            let value: serde_json::Value = serde_json::from_str(text)
                .context("`--extra` must be JSON, e.g. '{\"rows\": 10}'")?;
            if !value.is_object() {
                bail!("`--extra` must be a JSON object, e.g. '{{\"rows\": 10}}'");
            }
            let text = value.to_string();
            if text.len() > MAX_EXTRA_BYTES {
                bail!("`--extra` is larger than {MAX_EXTRA_BYTES} bytes");
            }
            Some(text)
        }
        None => None,
    };
    let event = store
        .post_asset_event(name, extra.as_deref(), SystemClock.now_ms())
        .await?;
    store.signal(Topic::Progress).await;
    println!("event {} on `{}` recorded", event.id, event.asset);
    Ok(ExitCode::SUCCESS)
}

/// Where an event came from, in words.
fn origin(e: &AssetEvent) -> String {
    match (e.source.as_str(), &e.dag_id, e.run_id, &e.task_id) {
        ("task", Some(dag), Some(run), Some(task)) => format!("{dag}.{task} (run {run})"),
        ("run", Some(dag), Some(run), _) => format!("run {run} of {dag}"),
        _ => "posted".into(),
    }
}

fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}
