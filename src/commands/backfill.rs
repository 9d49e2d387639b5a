//! `amdahl backfill DAG --from DATE --to DATE`: hands a date range to the scheduler service.
//!
//! The command only validates and records the backfill (or, with `--dry-run`, prints what it
//! would do and changes nothing); the scheduler creates the runs, at most `--max-active-runs`
//! unfinished at a time, and refills a slot as soon as one of them ends.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};

use amdahl_dags::schedule::Schedule;
use amdahl_scheduler::backfill::{self, Reprocess};
use amdahl_scheduler::runs::{logical_text, record_version};
use amdahl_scheduler::service::backfill_plan;
use amdahl_scheduler::store::{BackfillRecord, NewBackfill};
use amdahl_scheduler::{Clock, RunState, Store, SystemClock, Topic};

use super::run::{RunArgs, resolve_dag};
use crate::output::table;

#[derive(clap::Args, Debug)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// First logical date: YYYY-MM-DD (midnight in the DAG's `timezone`) or an RFC 3339 time
    #[arg(long, value_parser = parse_date)]
    pub from: Moment,
    /// Last logical date, inclusive
    #[arg(long, value_parser = parse_date)]
    pub to: Moment,
    /// Dates that already have a run: skip them (none), rerun failed or cancelled ones
    /// (failed), or rerun all
    #[arg(long, default_value = "none", value_parser = ["none", "failed", "all"])]
    pub reprocess: String,
    /// Runs of this backfill unfinished at once
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i64).range(1..=1024))]
    pub max_active_runs: i64,
    /// Print the dates and what would happen to each; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// A `--from`/`--to` bound: a calendar day, read on the DAG's clock once the DAG is known,
/// or an instant.
#[derive(Clone, Copy, Debug)]
pub enum Moment {
    Day(NaiveDate),
    At(DateTime<Utc>),
}

impl Moment {
    fn on(self, schedule: &Schedule) -> DateTime<Utc> {
        match self {
            Moment::Day(day) => schedule.start_of(day),
            Moment::At(at) => at,
        }
    }
}

fn parse_date(text: &str) -> Result<Moment, String> {
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(Moment::Day(day));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| Moment::At(t.with_timezone(&Utc)))
        .map_err(|_| format!("`{text}` is not a date: use YYYY-MM-DD or RFC 3339"))
}

pub async fn backfill(store: &Store, args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let dag = match resolve_dag(store, &args.run).await? {
        Ok(dag) => dag,
        Err(rendered) => {
            eprint!("{rendered}");
            eprintln!("the DAG is invalid; nothing was queued");
            return Ok(ExitCode::FAILURE);
        }
    };
    let Some(cron) = dag.cron() else {
        bail!(
            "DAG `{}` has no `schedule:`; a backfill cuts its range at the schedule's ticks",
            dag.id
        );
    };
    let (from, to) = (args.from.on(&cron), args.to.on(&cron));
    if from > to {
        bail!(
            "--from {} is after --to {}; nothing was queued",
            logical_text(from),
            logical_text(to)
        );
    }
    let dates = backfill::dates(&cron, from, to).map_err(anyhow::Error::msg)?;
    // Like the scheduler's own runs, a date's run needs its interval to have ended.
    let now = SystemClock.now_ms();
    let now_time = DateTime::from_timestamp_millis(now).unwrap_or_default();
    let (dates, open) = backfill::ended(&cron, dates, now_time);
    if let Some(first_open) = open.first() {
        let ends = cron
            .next(first_open, false)
            .map_or_else(|| "later".to_string(), logical_text);
        if dates.is_empty() {
            bail!(
                "no interval in the range has ended yet: the first, from {}, ends at {ends}; \
                 nothing was queued",
                logical_text(*first_open)
            );
        }
        eprintln!(
            "the range is cut at {}: {} later date(s) from {} on have not ended yet (the first \
             ends at {ends}); a backfill runs only intervals that are over",
            logical_text(dates[dates.len() - 1]),
            open.len(),
            logical_text(*first_open),
        );
    }
    if dates.is_empty() {
        bail!(
            "the schedule `{}` has no tick between {} and {}; nothing was queued",
            dag.schedule.as_deref().unwrap_or_default(),
            logical_text(from),
            logical_text(to)
        );
    }
    let params =
        amdahl_dags::params::resolve(&dag, &args.run.params).map_err(anyhow::Error::msg)?;
    let reprocess = Reprocess::parse(&args.reprocess).context("bad --reprocess")?;
    let mut record = BackfillRecord {
        id: 0,
        dag_id: dag.id.clone(),
        dag_version_id: 0,
        from_date: logical_text(dates[0]),
        to_date: logical_text(dates[dates.len() - 1]),
        reprocess: reprocess.as_str().to_string(),
        max_active_runs: args.max_active_runs,
        params_json: serde_json::to_string(&params)?,
        state: "running".into(),
        created_at_ms: now,
        finished_at_ms: None,
    };
    if args.dry_run {
        let plan = backfill_plan(store, &dag, &record).await?;
        let rows: Vec<Vec<String>> = plan
            .iter()
            .map(|d| {
                let action = match (backfill::wanted(d.other, reprocess), d.other) {
                    (true, None) => "run".to_string(),
                    (true, Some(state)) => format!("run again (a run is {state})"),
                    (false, Some(state)) => format!("skip (a run is {state})"),
                    (false, None) => "skip".to_string(),
                };
                let mut row = vec![logical_text(d.logical)];
                if !cron.is_utc() {
                    row.push(cron.local_text(d.logical));
                }
                row.push(action);
                row
            })
            .collect();
        let headers: &[&str] = if cron.is_utc() {
            &["LOGICAL DATE", "ACTION"]
        } else {
            &["LOGICAL DATE", "LOCAL TIME", "ACTION"]
        };
        print!("{}", table(headers, &rows));
        let runs = rows
            .iter()
            .filter(|r| r.last().is_some_and(|a| a.starts_with("run")))
            .count();
        println!(
            "dry run: {runs} run(s) of `{}`, at most {} at a time; nothing was changed",
            dag.id, args.max_active_runs
        );
        return Ok(ExitCode::SUCCESS);
    }
    record.dag_version_id = record_version(store, &dag, now).await?;
    let id = store
        .create_backfill(&NewBackfill {
            dag_id: record.dag_id.clone(),
            dag_version_id: record.dag_version_id,
            from_date: record.from_date.clone(),
            to_date: record.to_date.clone(),
            reprocess: record.reprocess.clone(),
            max_active_runs: record.max_active_runs,
            params_json: record.params_json.clone(),
            now_ms: now,
        })
        .await?;
    record.id = id;
    store.signal(Topic::Progress).await;
    println!(
        "backfill {id} of `{}` queued: {} date(s) from {} to {}, at most {} run(s) at a time",
        dag.id,
        dates.len(),
        record.from_date,
        record.to_date,
        args.max_active_runs
    );
    if !args.run.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let mut progress = store.subscribe(Topic::Progress).await?;
    let state = loop {
        let now = store.backfill(id).await?.context("the backfill vanished")?;
        if now.state != "running" {
            break now.state;
        }
        tokio::select! {
            _ = progress.wait(Duration::from_millis(50)) => {}
            _ = tokio::signal::ctrl_c() => {
                eprintln!("stopped waiting; backfill {id} goes on in the service");
                return Ok(ExitCode::FAILURE);
            }
        }
    };
    let plan = backfill_plan(store, &dag, &record).await?;
    let succeeded = plan
        .iter()
        .filter(|d| d.own == Some(RunState::Success))
        .count();
    let made = plan.iter().filter(|d| d.own.is_some()).count();
    println!("backfill {id} {state}: {succeeded} of {made} run(s) succeeded");
    Ok(if state == "success" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `amdahl backfills list`.
pub async fn list(store: &Store) -> anyhow::Result<ExitCode> {
    let backfills = store.list_backfills(100).await?;
    if backfills.is_empty() {
        println!("no backfills; `amdahl backfill DAG --from DATE --to DATE` starts one");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = Vec::new();
    for b in backfills {
        let runs = store
            .dated_runs(&b.dag_id, &b.from_date, &b.to_date)
            .await?;
        let own: Vec<RunState> = runs
            .iter()
            .filter(|r| r.backfill_id == Some(b.id))
            .map(|r| r.state)
            .collect();
        let done = own.iter().filter(|s| s.is_terminal()).count();
        let ok = own.iter().filter(|s| **s == RunState::Success).count();
        rows.push(vec![
            b.id.to_string(),
            b.dag_id,
            b.from_date,
            b.to_date,
            b.reprocess,
            b.max_active_runs.to_string(),
            b.state,
            format!("{} made, {done} ended, {ok} succeeded", own.len()),
        ]);
    }
    print!(
        "{}",
        table(
            &[
                "ID",
                "DAG",
                "FROM",
                "TO",
                "REPROCESS",
                "AT ONCE",
                "STATE",
                "RUNS"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// `amdahl backfills cancel ID`.
pub async fn cancel(store: &Store, id: i64) -> anyhow::Result<ExitCode> {
    let Some(backfill) = store.backfill(id).await? else {
        bail!("no backfill {id}; `amdahl backfills list` shows them");
    };
    match store.cancel_backfill(id, SystemClock.now_ms()).await {
        Ok(runs) => {
            store.signal(Topic::Progress).await;
            println!(
                "backfill {id} of `{}` cancelled: no more runs; {runs} unfinished run(s) asked to cancel",
                backfill.dag_id
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(amdahl_scheduler::StoreError::Conflict(_)) => {
            bail!(
                "backfill {id} already ended ({}); nothing to cancel",
                backfill.state
            )
        }
        Err(e) => Err(e.into()),
    }
}
