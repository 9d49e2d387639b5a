//! The scheduler service: cron runs, backfills, decisions for every service run, the reaper.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use amdahl_dags::Dag;

use super::{Moved, advance, backfill_plan, load_pinned, tolerate_conflict};
use crate::Clock;
use crate::assets::AssetStep;
use crate::backfill::{self, Reprocess, Step};
use crate::decide::after_failure;
use crate::notify::{self, Deliverer, DeliverySettings};
use crate::runs::{RunOrigin, create_run, record_version, task_view};
use crate::state::RunState;
use crate::store::{AssetLink, Backoff, ImportError, ReapLease, Store, StoreError, Topic};
use crate::triggers::{ScheduleView, due_runs};

/// Drives ownerless runs, creates cron runs for the DAGs in a folder, reaps expired leases.
pub struct SchedulerService {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    /// How often to look for work.
    pub poll: Duration,
    /// Where DAG files live; `None` schedules nothing by cron.
    pub dags_folder: Option<PathBuf>,
    /// What each DAG file held when last read, by path.
    files: Mutex<HashMap<PathBuf, KnownFile>>,
    /// Sends notifications (`None`: this scheduler records them but leaves sending to others).
    deliverer: Option<Arc<Deliverer>>,
    /// The DAGs with a data schedule this scheduler follows.
    watching: Mutex<Watching>,
}

/// What [`SchedulerService`] knows about data schedules between passes.
#[derive(Default)]
struct Watching {
    /// The DAGs it follows (valid, and not refused by `folder::check_folder`).
    dags: Vec<Arc<Dag>>,
    /// The DAG ids and versions they were computed from.
    signature: Vec<(String, String)>,
    /// The newest event when every DAG last had all it could get; `None`: look again.
    seen: Option<i64>,
    /// Files whose import error says they are refused by the folder check.
    flagged: std::collections::HashSet<String>,
}

/// A DAG file as last read: its modification time and the DAG it schedules (the last good
/// version when the file no longer loads).
struct KnownFile {
    modified: Option<std::time::SystemTime>,
    dag: Option<Arc<Dag>>,
}

impl SchedulerService {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        poll: Duration,
        dags_folder: Option<PathBuf>,
    ) -> Self {
        SchedulerService {
            store,
            clock,
            poll,
            dags_folder,
            files: Mutex::new(HashMap::new()),
            watching: Mutex::new(Watching::default()),
            deliverer: match Deliverer::new(DeliverySettings::from_env()) {
                Ok(deliverer) => Some(Arc::new(deliverer)),
                Err(e) => {
                    eprintln!("scheduler: notifications will not be sent: {e}");
                    None
                }
            },
        }
    }

    /// Sends notifications with these settings instead of the defaults (tests shorten the
    /// timeouts and backoff).
    pub fn with_delivery(mut self, settings: DeliverySettings) -> Result<Self, String> {
        self.deliverer = Some(Arc::new(Deliverer::new(settings)?));
        Ok(self)
    }

    /// Runs until `shutdown` resolves. A [`Topic::Progress`] signal (a run created, an attempt
    /// ended) makes it decide at once; cron, DAG files and leases are looked at every `poll`.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), StoreError> {
        tokio::pin!(shutdown);
        let mut progress = self
            .store
            .subscribe_when_reachable(Topic::Progress, "scheduler")
            .await?;
        let mut next_tick = tokio::time::Instant::now();
        let mut backoff = Backoff::default();
        let mut failing = false;
        // Notifications are sent beside the decisions, so a slow webhook never holds a run up.
        let _delivery = self.deliverer.clone().map(|deliverer| {
            AbortOnDrop(tokio::spawn(deliver_forever(
                deliverer,
                self.store.clone(),
                self.clock.clone(),
            )))
        });
        loop {
            let pass = tokio::time::Instant::now();
            let done = if pass >= next_tick {
                let ticked = self.tick().await;
                if ticked.is_ok() {
                    next_tick = tokio::time::Instant::now() + self.poll;
                }
                ticked
            } else {
                self.advance_runs().await
            };
            // The database going away (a restart, a failover, a deadlock, a timeout) is
            // waited out: every move is fenced, so a pass cut short is simply made again.
            match done {
                Ok(()) => {
                    if std::mem::take(&mut failing) {
                        eprintln!("scheduler: the database answers again");
                    }
                    backoff.reset();
                }
                Err(e) if e.is_transient() => {
                    failing = true;
                    let wait = backoff.next_wait();
                    eprintln!("scheduler: database unavailable ({e}); trying again in {wait:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = &mut shutdown => return Ok(()),
                    }
                }
                Err(e) => return Err(e),
            }
            // Rest as long as the pass took before the next one: a stream of signals (a wide
            // run finishing thousands of tasks) then costs at most half a core, and every
            // signal that comes meanwhile is answered by the next pass.
            let spent = pass.elapsed().min(Duration::from_millis(100));
            tokio::select! {
                _ = tokio::time::sleep(spent) => {}
                _ = &mut shutdown => return Ok(()),
            }
            let until_tick = next_tick.saturating_duration_since(tokio::time::Instant::now());
            tokio::select! {
                _ = progress.wait(until_tick) => {}
                _ = &mut shutdown => return Ok(()),
            }
        }
    }

    /// One pass: cron runs that are due, every unfinished service run, expired leases.
    pub async fn tick(&self) -> Result<(), StoreError> {
        self.schedule_due_runs().await?;
        self.advance_runs().await?;
        self.reap_expired_leases().await?;
        let ui_url = self
            .deliverer
            .as_ref()
            .and_then(|d| d.settings().ui_url.clone());
        notify::record_watched(&self.store, self.clock.as_ref(), ui_url.as_deref(), 256).await?;
        Ok(())
    }

    /// Sends the notifications due now once (what the delivery loop of [`Self::run`] does
    /// continuously). Returns how many attempts were made.
    pub async fn deliver_notifications(&self) -> Result<usize, StoreError> {
        match &self.deliverer {
            Some(deliverer) => deliverer.deliver_due(&self.store, &self.clock, 256).await,
            None => Ok(0),
        }
    }

    /// Decides every unfinished service run once, steps the backfills, and wakes workers if
    /// tasks were queued and waiters if runs finished.
    async fn advance_runs(&self) -> Result<(), StoreError> {
        self.schedule_asset_runs().await?;
        let mut moved = Moved::default();
        // One decision per run and pass: `decide` already follows a cascade (a failure
        // marking every downstream task) within one decision. A move that lost a race to
        // another scheduler is looked at again on the next pass.
        for run in self.store.service_runs(None).await? {
            advance(&self.store, self.clock.as_ref(), run, true, &mut moved).await?;
        }
        if moved.queued > 0 {
            self.store.signal(Topic::Queued).await;
        }
        if moved.finished {
            self.store.signal(Topic::Progress).await;
        }
        self.run_backfills().await
    }

    /// Creates the runs each unfinished backfill wants now (its free slots, oldest dates
    /// first) and finishes backfills that have nothing left. Another scheduler creating the
    /// same run first is a `Conflict`, which is fine.
    async fn run_backfills(&self) -> Result<(), StoreError> {
        let backfills = self.store.running_backfills().await?;
        if backfills.is_empty() {
            return Ok(());
        }
        let mut created = false;
        for backfill in backfills {
            let now = self.clock.now_ms();
            let dag = match load_pinned(&self.store, backfill.dag_version_id).await {
                Ok(dag) => dag,
                Err(e) => {
                    eprintln!("scheduler: backfill {} fails: {e}", backfill.id);
                    tolerate_conflict(
                        self.store
                            .finish_backfill(backfill.id, RunState::Failed, now)
                            .await,
                    )?;
                    continue;
                }
            };
            let plan = backfill_plan(&self.store, &dag, &backfill).await?;
            let reprocess = Reprocess::parse(&backfill.reprocess).unwrap_or(Reprocess::None);
            match backfill::step(&plan, reprocess, backfill.max_active_runs.max(1) as usize) {
                Step::Wait => {}
                Step::Finish(state) => {
                    tolerate_conflict(self.store.finish_backfill(backfill.id, state, now).await)?;
                    eprintln!(
                        "scheduler: backfill {} of `{}` {state}",
                        backfill.id, dag.id
                    );
                    created = true;
                }
                Step::Create(dates) => {
                    let params = serde_json::from_str(&backfill.params_json).unwrap_or_default();
                    for logical in dates {
                        let origin = RunOrigin::Backfill {
                            backfill_id: backfill.id,
                            logical,
                        };
                        match create_run(&self.store, self.clock.as_ref(), &dag, &params, origin)
                            .await
                        {
                            Ok(_) | Err(StoreError::Conflict(_)) => created = true,
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        }
        if created {
            self.store.signal(Topic::Progress).await;
        }
        Ok(())
    }

    /// Re-reads changed DAG files (recording new versions) and returns the valid DAGs, one per
    /// id. A file that stops validating is recorded as an import error (file, line, column,
    /// message) and its last good version stays scheduled; fixing or removing the file clears
    /// the error.
    async fn sync_dags(&self) -> Result<Vec<Arc<Dag>>, StoreError> {
        let Some(folder) = &self.dags_folder else {
            return Ok(Vec::new());
        };
        let mut files = self.files.lock().await;
        let found = amdahl_dags::discover::dag_files(std::slice::from_ref(folder));
        // Errors of files that are gone are forgotten: those this scheduler read, and on its
        // first pass those recorded before it started.
        let mut gone: Vec<String> = files
            .keys()
            .filter(|p| !found.contains(*p))
            .map(|p| p.display().to_string())
            .collect();
        if files.is_empty() {
            let prefix = folder.display().to_string();
            let present: std::collections::HashSet<String> =
                found.iter().map(|p| p.display().to_string()).collect();
            gone.extend(
                self.store
                    .import_errors()
                    .await?
                    .into_iter()
                    .map(|e| e.path)
                    .filter(|p| p.starts_with(&prefix) && !present.contains(p)),
            );
        }
        for path in gone {
            self.store.clear_import_error(&path).await?;
        }
        files.retain(|path, _| found.contains(path));
        for path in found {
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            if files
                .get(&path)
                .is_some_and(|known| known.modified == modified)
            {
                continue;
            }
            let shown = path.display().to_string();
            let loaded = match amdahl_dags::load_file(&path) {
                Ok(dag) => {
                    let problems = amdahl_planner::check::check_sql(&dag).await;
                    if problems.is_empty() {
                        Ok(dag)
                    } else {
                        let text = dag.source.text.clone();
                        Err((problems, text))
                    }
                }
                Err(e) => Err((e.diagnostics, e.source_text)),
            };
            let dag = match loaded {
                Ok(dag) => {
                    record_version(&self.store, &dag, self.clock.now_ms()).await?;
                    self.store.clear_import_error(&shown).await?;
                    Some(Arc::new(dag))
                }
                Err((problems, source)) => {
                    // The last good version: what this scheduler had, or else the newest
                    // version recorded from this file.
                    let last_good = match files.get(&path).and_then(|k| k.dag.clone()) {
                        Some(dag) => Some(dag),
                        None => match self.store.latest_version_at(&shown).await? {
                            Some(version) => amdahl_dags::load_bytes(
                                &version.source_path,
                                std::path::Path::new(&version.base_dir),
                                version.yaml.as_bytes(),
                            )
                            .ok()
                            .map(Arc::new),
                            None => None,
                        },
                    };
                    let first = problems.items.first();
                    eprintln!(
                        "scheduler: {shown}: {} problem(s){}; `amdahl dags validate {shown}` shows them",
                        problems.items.len(),
                        match &last_good {
                            Some(dag) => format!("; DAG `{}` keeps its last good version", dag.id),
                            None => String::new(),
                        }
                    );
                    self.store
                        .set_import_error(&ImportError {
                            path: shown.clone(),
                            dag_id: last_good.as_ref().map(|d| d.id.clone()),
                            line: first.map_or(1, |d| d.line as i64),
                            column: first.map_or(1, |d| d.column as i64),
                            message: first.map_or_else(
                                || "the file does not load".into(),
                                |d| d.message.clone(),
                            ),
                            problems: problems.items.len().max(1) as i64,
                            details: problems.render(&source),
                            first_seen_at_ms: self.clock.now_ms(),
                            updated_at_ms: self.clock.now_ms(),
                        })
                        .await?;
                    last_good
                }
            };
            files.insert(path, KnownFile { modified, dag });
        }
        let mut seen = std::collections::HashSet::new();
        let mut dags = Vec::new();
        let mut paths: Vec<_> = files.keys().cloned().collect();
        paths.sort();
        for path in paths {
            if let Some(dag) = files.get(&path).and_then(|k| k.dag.clone()) {
                if seen.insert(dag.id.clone()) {
                    dags.push(dag);
                } else {
                    eprintln!(
                        "scheduler: {} defines DAG `{}` again; ignored",
                        path.display(),
                        dag.id
                    );
                }
            }
        }
        Ok(dags)
    }

    /// Creates the cron runs that are due (see `triggers`); a run another scheduler created
    /// first is a `Conflict`, which is fine.
    async fn schedule_due_runs(&self) -> Result<(), StoreError> {
        let dags = self.sync_dags().await?;
        self.follow_data_schedules(&dags).await?;
        for dag in dags {
            let Some(cron) = dag.cron() else {
                continue;
            };
            if self.store.is_paused(&dag.id).await? {
                continue;
            }
            let (last, active) = self.store.schedule_state(&dag.id).await?;
            let last_logical = last
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc));
            // Without a start date there is nothing to catch up from.
            let start = dag.start().unwrap_or(chrono::DateTime::UNIX_EPOCH);
            let view = ScheduleView {
                cron: &cron,
                start,
                catchup: dag.catchup && dag.start_date.is_some(),
                last_logical,
                active_runs: active.max(0) as usize,
                max_active_runs: dag.max_active_runs.unwrap_or(16) as usize,
            };
            let now =
                chrono::DateTime::from_timestamp_millis(self.clock.now_ms()).unwrap_or_default();
            for tick in due_runs(&view, now, 64) {
                let origin = RunOrigin::Scheduled(tick);
                match create_run(&self.store, self.clock.as_ref(), &dag, &dag.params, origin).await
                {
                    Ok(run_id) => eprintln!("scheduler: run {run_id} of `{}` for {tick}", dag.id),
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// After the DAG files changed: records what each DAG produces and waits on
    /// (`asset_links`), checks the data schedules together (`folder::check_folder`: a refused
    /// DAG gets an import error and is not followed; warnings are printed) and keeps the DAGs
    /// to follow.
    async fn follow_data_schedules(&self, dags: &[Arc<Dag>]) -> Result<(), StoreError> {
        let signature: Vec<(String, String)> = dags
            .iter()
            .map(|d| (d.id.clone(), d.source.hash.clone()))
            .collect();
        let mut watching = self.watching.lock().await;
        if watching.signature == signature && !signature.is_empty() {
            return Ok(());
        }
        for (gone, _) in &watching.signature {
            if !signature.iter().any(|(id, _)| id == gone) {
                self.store.replace_asset_links(gone, &[]).await?;
            }
        }
        for dag in dags {
            self.store
                .replace_asset_links(&dag.id, &asset_links(dag))
                .await?;
        }
        let refs: Vec<&Dag> = dags.iter().map(|d| d.as_ref()).collect();
        let check = amdahl_dags::folder::check_folder(&refs);
        let mut flagged = std::collections::HashSet::new();
        for problem in check.errors.iter().chain(&check.warnings) {
            let d = &problem.diagnostic;
            eprintln!("scheduler: {}", d.short());
        }
        for problem in &check.errors {
            let dag = &dags[problem.dag];
            let path = dag.source.display_path.clone();
            let d = &problem.diagnostic;
            self.store
                .set_import_error(&ImportError {
                    path: path.clone(),
                    dag_id: Some(dag.id.clone()),
                    line: d.line as i64,
                    column: d.column as i64,
                    message: d.message.clone(),
                    problems: 1,
                    details: d.render(&dag.source.text),
                    first_seen_at_ms: self.clock.now_ms(),
                    updated_at_ms: self.clock.now_ms(),
                })
                .await?;
            flagged.insert(path);
        }
        for path in watching.flagged.difference(&flagged) {
            self.store.clear_import_error(path).await?;
        }
        watching.dags = dags
            .iter()
            .enumerate()
            .filter(|(i, d)| d.data_schedule.is_some() && !check.refuses(*i))
            .map(|(_, d)| d.clone())
            .collect();
        watching.flagged = flagged;
        watching.signature = signature;
        watching.seen = None;
        Ok(())
    }

    /// Creates the runs that data schedules want now (see [`crate::assets::asset_step`]).
    /// Costs one query per pass while no event arrived.
    async fn schedule_asset_runs(&self) -> Result<(), StoreError> {
        let mut watching = self.watching.lock().await;
        if watching.dags.is_empty() {
            return Ok(());
        }
        let newest = self.store.newest_asset_event_id().await?;
        if watching.seen == Some(newest) {
            return Ok(());
        }
        let mut settled = true;
        let mut created = false;
        for dag in watching.dags.clone() {
            let Some(schedule) = &dag.data_schedule else {
                continue;
            };
            if self.store.is_paused(&dag.id).await? {
                settled = false;
                continue;
            }
            let keys: Vec<String> = schedule.keys().map(str::to_string).collect();
            let watched = self.store.watched_assets(&dag.id, &keys).await?;
            match crate::assets::asset_step(&watched, schedule.any) {
                AssetStep::Wait => {}
                AssetStep::StartCursors(keys) => {
                    for asset in keys {
                        self.store
                            .start_asset_cursor(&dag.id, &asset, &dag.source.hash)
                            .await?;
                    }
                    settled = false;
                }
                AssetStep::Run(moves) => {
                    let (_, active) = self.store.schedule_state(&dag.id).await?;
                    if active >= i64::from(dag.max_active_runs.unwrap_or(16)) {
                        settled = false;
                        continue;
                    }
                    let events: Vec<String> = moves
                        .iter()
                        .map(|m| format!("{} (up to event {})", m.asset, m.to))
                        .collect();
                    let origin = RunOrigin::Assets(moves);
                    match create_run(&self.store, self.clock.as_ref(), &dag, &dag.params, origin)
                        .await
                    {
                        Ok(run_id) => {
                            created = true;
                            eprintln!(
                                "scheduler: run {run_id} of `{}` for events of {}",
                                dag.id,
                                events.join(", ")
                            );
                        }
                        Err(StoreError::Conflict(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        // Paused or full DAGs and new cursors are looked at again on the next pass.
        watching.seen = settled.then_some(newest);
        if created {
            self.store.signal(Topic::Progress).await;
        }
        Ok(())
    }

    async fn reap_expired_leases(&self) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        for lease in self.store.expired_leases(now).await? {
            let tasks = self.store.tasks(lease.run_id).await?;
            let Some(record) = tasks.iter().find(|t| t.task_id == lease.task_id) else {
                continue;
            };
            let (task_state, retry_at_ms) = after_failure(&task_view(record), now);
            let reason = format!(
                "worker {} stopped renewing its lease",
                lease.owner.as_deref().unwrap_or("(unknown)")
            );
            self.store
                .reap_lease(&ReapLease {
                    run_id: lease.run_id,
                    task_id: lease.task_id.clone(),
                    attempt: lease.attempt,
                    task_state,
                    retry_at_ms,
                    reason,
                    now_ms: now,
                })
                .await?;
        }
        Ok(())
    }
}

/// What a DAG declares about assets: each task's `produces:`, and what its schedule waits on.
fn asset_links(dag: &Dag) -> Vec<AssetLink> {
    let produced = dag.tasks.iter().flat_map(|t| {
        t.produces.iter().map(|asset| AssetLink {
            asset: asset.clone(),
            role: "produces",
            task_id: t.id.clone(),
        })
    });
    let consumed = dag.data_schedule.iter().flat_map(|s| {
        s.keys().map(|key| AssetLink {
            asset: key.to_string(),
            role: "consumes",
            task_id: String::new(),
        })
    });
    produced.chain(consumed).collect()
}

/// Aborts a spawned task when dropped (when [`SchedulerService::run`] returns).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends due notifications until aborted: at once again while there were some, else after a
/// short rest; a database that does not answer is waited out.
async fn deliver_forever(deliverer: Arc<Deliverer>, store: Store, clock: Arc<dyn Clock>) {
    let mut backoff = Backoff::default();
    loop {
        match deliverer.deliver_due(&store, &clock, 256).await {
            Ok(tried) => {
                backoff.reset();
                if tried == 0 {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            Err(e) => {
                let wait = backoff.next_wait();
                eprintln!("scheduler: notifications: {e}; trying again in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
