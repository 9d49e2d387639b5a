//! The worker: claims queued tasks, holds their leases, runs them, reports fenced ends.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinSet;

use amdahl_dags::{Dag, RunContext};
use amdahl_executors::storage::DataRoot;

use crate::attempt::{
    AttemptEnd, AttemptEnv, WaitPolicy, after_poke, execute_attempt, finish_of, instance_context,
    log_failure, place_stage, prepare_stage, published_outputs, route_stage,
};
use crate::reports::{Follow, Reports};
use amdahl_scheduler::decide::after_failure;
use amdahl_scheduler::runs::task_view;
use amdahl_scheduler::service::{Moved, advance_with, load_pinned, lone_ready};
use amdahl_scheduler::state::{AttemptState, TaskState};
use amdahl_scheduler::store::{
    AfterEnd, Backoff, Claim, ClaimRequest, FollowOn, NextClaim, RunRecord, StoreError, Topic,
    WorkerInfo,
};

/// A worker decides a run itself after one of its tasks ends (instead of leaving that to a
/// scheduler) only when the DAG has at most this many tasks: the decision reads every task of
/// the run, so for wide runs the scheduler's coalesced passes cost less than one decision per
/// finished task. After a task with no downstream tasks it first counts what is left
/// undecided, and decides only when that may change something (the run's last task ends it).
pub const HAND_OFF_MAX_TASKS: usize = 500;

/// A worker's light slots unless told otherwise (`amdahl worker --light-slots`).
pub const DEFAULT_LIGHT_SLOTS: usize = 256;

/// Who a worker is and what it has.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// This worker's identity in leases, attempts and the `workers` table.
    pub owner: String,
    pub host: String,
    /// Tasks that compute, at once.
    pub slots: usize,
    /// Tasks of the light kinds (`empty`, sensors' pokes) at once, beyond `slots`: they use
    /// no CPU, so a wide run of them is not held to the number of cores.
    pub light_slots: usize,
    pub lease: Duration,
    /// Whether this worker takes tasks that asked for `device: gpu`.
    pub has_gpu: bool,
    pub memory_bytes: u64,
}

/// Claims and executes queued tasks.
pub struct Worker {
    pub env: AttemptEnv,
    pub data_root: DataRoot,
    pub config: WorkerConfig,
    pub poll: Duration,
    /// DAG versions already loaded, by version id.
    dags: Mutex<HashMap<i64, Arc<Dag>>>,
    /// Runs seen lately, by id: what an attempt reads of a run (version, params, logical
    /// date) never changes, so a chain of tasks reads it once.
    runs: std::sync::Mutex<HashMap<i64, Arc<RunRecord>>>,
    /// Whether the loss of the GPU was logged.
    gpu_loss_told: std::sync::atomic::AtomicBool,
    /// Hand-offs that may claim a follow-on task which the main loop has not taken in yet
    /// (see [`Worker::hand_off`], and an end's write that decides, [`Follow`]): while any
    /// is, a renewal that finds a held task with no stage does not give its lease up, since
    /// it may be that follow-on.
    handing_off: Arc<std::sync::atomic::AtomicUsize>,
}

impl Worker {
    pub fn new(env: AttemptEnv, data_root: DataRoot, mut config: WorkerConfig) -> Self {
        config.slots = config.slots.max(1);
        config.light_slots = config.light_slots.max(1);
        Worker {
            env,
            data_root,
            config,
            poll: Duration::from_millis(100),
            dags: Mutex::new(HashMap::new()),
            runs: std::sync::Mutex::new(HashMap::new()),
            gpu_loss_told: std::sync::atomic::AtomicBool::new(false),
            handing_off: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    /// Whether this worker takes `device: gpu` tasks now: it was started with a GPU and the
    /// GPU has not been lost since (a lasting CUDA error; see `amdahl_executors::gpu::health`).
    fn has_gpu(&self) -> bool {
        self.config.has_gpu && amdahl_executors::gpu::health::lost().is_none()
    }

    async fn advertise(&self, started_at_ms: i64) -> Result<(), StoreError> {
        if self.config.has_gpu
            && let Some(reason) = amdahl_executors::gpu::health::lost()
            && !self
                .gpu_loss_told
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            eprintln!(
                "worker {}: the GPU is lost ({reason}); no longer advertising it or taking device: gpu tasks",
                self.config.owner
            );
        }
        let c = &self.config;
        self.env
            .store
            .register_worker(&WorkerInfo {
                worker_id: c.owner.clone(),
                host: c.host.clone(),
                slots: c.slots as i64,
                gpus: i64::from(self.has_gpu()),
                memory_bytes: c.memory_bytes.min(i64::MAX as u64) as i64,
                started_at_ms,
                heartbeat_at_ms: self.env.clock.now_ms(),
            })
            .await
    }

    /// Runs until `shutdown` resolves; stages still running then are stopped, and their leases
    /// run out so that a scheduler retries them elsewhere.
    pub async fn run(
        self: Arc<Self>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StoreError> {
        tokio::pin!(shutdown);
        let mut running = JoinSet::new();
        let lease_ms = self.config.lease.as_millis() as i64;
        let mut renew = tokio::time::interval(self.config.lease / 3);
        let started_at_ms = self.env.clock.now_ms();
        let mut queued = self
            .env
            .store
            .subscribe_when_reachable(Topic::Queued, &format!("worker {}", self.config.owner))
            .await?;
        let (reports, report_writer) = Reports::start(self.env.store.clone());
        // Ends that leave the deciding to a scheduler wake it, coalesced: a burst of ends
        // makes one signal, not one per task.
        let progress = Arc::new(tokio::sync::Notify::new());
        let signaller = {
            let (store, progress) = (self.env.store.clone(), progress.clone());
            tokio::spawn(async move {
                loop {
                    progress.notified().await;
                    store.signal(Topic::Progress).await;
                }
            })
        };
        let _stop = AbortOnDrop(vec![report_writer.abort_handle(), signaller.abort_handle()]);
        // The stage of each claimed task, to stop it if the task is cancelled.
        let mut stages: HashMap<(i64, String), tokio::task::AbortHandle> = HashMap::new();
        // The stages in light slots, by their id in `running`.
        let mut light: std::collections::HashSet<tokio::task::Id> =
            std::collections::HashSet::new();
        // While the database is unreachable the worker claims nothing new, keeps its stages
        // running, and tries again after a growing wait; its leases are renewed as soon as
        // it answers again (or, if that took longer than a lease, its tasks were reaped and
        // their stages stop).
        let (mut claim_backoff, mut claim_after) =
            (Backoff::default(), tokio::time::Instant::now());
        let mut renew_backoff = Backoff::default();
        // Tasks that hand-offs claimed, each to start in the slot its ended task left.
        let (follow_ons, mut follow_on) = tokio::sync::mpsc::unbounded_channel::<Claim>();
        // Starts a claimed task's attempt in a slot of its weight.
        let start =
            |claim: Claim,
             running: &mut JoinSet<AttemptDone>,
             light: &mut std::collections::HashSet<tokio::task::Id>,
             stages: &mut HashMap<(i64, String), tokio::task::AbortHandle>| {
                let is_light = claim.light;
                let worker = self.clone();
                let key = (claim.run_id, claim.task_id.clone());
                let (reports, progress) = (reports.clone(), progress.clone());
                let follow_ons = follow_ons.clone();
                let stage = running.spawn(async move {
                    worker
                        .attempt(claim, &reports, &progress, &follow_ons)
                        .await
                });
                if is_light {
                    light.insert(stage.id());
                }
                stages.insert(key, stage);
            };
        // Whether queued tasks may wait for this worker's free slots: a claim takes what it
        // can, and the next one waits for a reason to look again (a wake-up, the poll, a slot
        // freed up, a failed claim). A slot that a hand-off passed on to the next task of its
        // chain is no such reason: a claim then would only find nothing. The poll is kept on
        // a clock of its own, so that other events (renewals, ends) do not keep putting it off.
        let (mut look, mut poll_at) = (true, tokio::time::Instant::now());
        loop {
            let mut free = self
                .config
                .slots
                .saturating_sub(running.len() - light.len());
            let mut light_free = self.config.light_slots.saturating_sub(light.len());
            look |= tokio::time::Instant::now() >= poll_at;
            if look && free + light_free > 0 && tokio::time::Instant::now() >= claim_after {
                // Whatever was queued before this claim, it sees: wake-ups already here are
                // spent on it.
                queued.drain();
                let claimed = self
                    .env
                    .store
                    .claim_tasks(&ClaimRequest {
                        owner: &self.config.owner,
                        has_gpu: self.has_gpu(),
                        limit: free as i64,
                        light_limit: light_free as i64,
                        lease_ms,
                        now_ms: self.env.clock.now_ms(),
                    })
                    .await;
                match claimed {
                    Ok(claims) => {
                        look = false;
                        poll_at = tokio::time::Instant::now() + self.poll;
                        claim_backoff.reset();
                        for claim in claims {
                            if claim.light {
                                light_free -= 1;
                            } else {
                                free -= 1;
                            }
                            start(claim, &mut running, &mut light, &mut stages);
                        }
                    }
                    Err(e) if e.is_transient() => {
                        let wait = claim_backoff.next_wait();
                        eprintln!(
                            "worker {}: database unavailable ({e}); claiming again in {wait:?}",
                            self.config.owner
                        );
                        claim_after = tokio::time::Instant::now() + wait;
                    }
                    Err(e) => return Err(e),
                }
            }
            let now = tokio::time::Instant::now();
            let claim_wait = if claim_after > now {
                claim_after - now
            } else {
                poll_at.saturating_duration_since(now)
            };
            tokio::select! {
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    // Take every stage that has ended before claiming again, so one claim
                    // fills all the slots that freed up (short tasks end in bursts).
                    let mut done = Some(done);
                    while let Some(ended) = done {
                        match ended {
                            Ok((id, (key, passed_on))) => {
                                light.remove(&id);
                                stages.remove(&key);
                                look |= !passed_on;
                            }
                            // A stage that panicked reported nothing: forgetting it lets the
                            // next renewal give up its lease, so the task is retried.
                            Err(e) => {
                                look = true;
                                eprintln!("worker {}: a stage ended abnormally: {e}", self.config.owner);
                                light.remove(&e.id());
                                stages.retain(|_, stage| stage.id() != e.id());
                            }
                        }
                        done = running.try_join_next_with_id();
                    }
                }
                // A task a hand-off claimed takes the slot its ended task left (which may not
                // be joined yet: for that moment one more stage runs than the slots).
                Some(claim) = follow_on.recv() => {
                    start(claim, &mut running, &mut light, &mut stages);
                    self.handing_off
                        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
                // With every slot busy, new work can wait for a slot to free up.
                _ = queued.wait(claim_wait), if free + light_free > 0 => look = true,
                _ = renew.tick() => {
                    match self.renew(&mut stages, lease_ms, started_at_ms).await {
                        Ok(()) => renew_backoff.reset(),
                        Err(e) if e.is_transient() => {
                            // The renew interval is the backoff's floor; this only spaces
                            // the messages.
                            let _ = renew_backoff.next_wait();
                            eprintln!(
                                "worker {}: cannot renew leases, database unavailable ({e})",
                                self.config.owner
                            );
                        }
                        Err(e) => return Err(e),
                    }
                }
                _ = &mut shutdown => {
                    running.abort_all();
                    return Ok(());
                }
            }
        }
    }

    /// Extends this worker's leases and says it is alive. A task no longer held (cancelled,
    /// or reaped while the database was out of reach) has its stage stopped. A task still
    /// held whose stage already ended never got its end recorded (the database failed
    /// during the attempt): its lease is given up, so a scheduler retries it at once rather
    /// than this worker holding it forever.
    async fn renew(
        &self,
        stages: &mut HashMap<(i64, String), tokio::task::AbortHandle>,
        lease_ms: i64,
        started_at_ms: i64,
    ) -> Result<(), StoreError> {
        let store = &self.env.store;
        let held = store
            .extend_leases(&self.config.owner, lease_ms, self.env.clock.now_ms())
            .await?;
        // Read after the leases: a follow-on claimed before them is counted here until the
        // main loop (which runs this) has given it a stage.
        let handing_off = self.handing_off.load(std::sync::atomic::Ordering::SeqCst) > 0;
        for (run_id, task_id) in &held {
            if !handing_off && !stages.contains_key(&(*run_id, task_id.clone())) {
                eprintln!(
                    "worker {}: run {run_id} task {task_id}: its end could not be recorded; giving up its lease",
                    self.config.owner
                );
                store
                    .give_up_lease(&self.config.owner, *run_id, task_id)
                    .await?;
            }
        }
        stages.retain(|key, stage| {
            let keep = held.contains(key);
            if !keep {
                stage.abort();
            }
            keep
        });
        self.advertise(started_at_ms).await
    }

    /// Runs one claimed attempt; returns its (run, task) key and whether its slot was passed
    /// on: the task its hand-off claimed goes to the main loop through `follow_ons`.
    async fn attempt(
        self: &Arc<Self>,
        claim: Claim,
        reports: &Reports,
        progress: &tokio::sync::Notify,
        follow_ons: &tokio::sync::mpsc::UnboundedSender<Claim>,
    ) -> AttemptDone {
        let mut passed_on = false;
        let handed_off = match self.attempt_inner(&claim, reports, follow_ons).await {
            Ok(ended) => {
                let claimed = ended.after.as_ref().is_some_and(|a| a.claimed.is_some());
                let decided = match ended.hand_off {
                    // The end's write decided the run and sent the task it claimed on.
                    Some(_) if claimed => {
                        passed_on = true;
                        true
                    }
                    // The decision is not stopped with the stage: once the end is recorded a
                    // renewal no longer holds the task and stops its stage, which must not
                    // lose a task the decision claimed.
                    Some(downstream) => {
                        let (worker, ended_claim) = (self.clone(), claim.clone());
                        let follow_ons = follow_ons.clone();
                        let handing = tokio::spawn(async move {
                            let (decided, next) =
                                worker.hand_off(&ended_claim, downstream, ended.after).await;
                            // Sent to a worker that stopped, it is reaped when its lease ends.
                            let passed_on = next.is_some_and(|next| follow_ons.send(next).is_ok());
                            (decided, passed_on)
                        });
                        let decided;
                        (decided, passed_on) = handing.await.unwrap_or((false, false));
                        decided
                    }
                    None => false,
                };
                // Assets a task produced may start other DAGs' runs: a scheduler looks now.
                decided && !ended.produced
            }
            Err(e) => {
                eprintln!(
                    "worker {}: run {} task {} attempt {}: {e}",
                    self.config.owner, claim.run_id, claim.task_id, claim.attempt
                );
                false
            }
        };
        if !handed_off {
            progress.notify_one();
        }
        ((claim.run_id, claim.task_id), passed_on)
    }

    /// Decides the run right after one of its tasks ended, as a scheduler would (Airflow calls
    /// this the mini scheduler), without a round of signals through a scheduler. When the
    /// decision readies one task (a chain's next link) that can take the slot the ended task
    /// frees, it is claimed in the statement that would have queued it and returned, for the
    /// main loop to start at once; other ready tasks are queued. Returns whether the decision
    /// worked (if not, a scheduler is signalled to make it), and the claimed task.
    async fn hand_off(
        &self,
        ended: &Claim,
        downstream: bool,
        after: Option<AfterEnd>,
    ) -> (bool, Option<Claim>) {
        let (store, run_id) = (&self.env.store, ended.run_id);
        let mut moved = Moved::default();
        let next = NextClaim {
            owner: &self.config.owner,
            has_gpu: self.has_gpu(),
            light: ended.light,
            lease_ms: self.config.lease.as_millis() as i64,
        };
        // Counted before the claim can be made; the main loop uncounts it once it has
        // started the claimed task, or this does below if nothing was claimed.
        self.handing_off
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let decided = async {
            if !downstream {
                // Other tasks still running and none waiting: nothing to decide yet.
                let (waiting, unfinished) = store.undecided_tasks(run_id).await?;
                if waiting == 0 && unfinished > 0 {
                    return Ok(());
                }
            }
            // The run and its tasks: read with the end, or now, at once on two connections.
            let (run, tasks) = match after {
                Some(after) => (after.run, after.tasks),
                None => {
                    let (runs, tasks) =
                        tokio::join!(store.service_runs(Some(run_id)), store.tasks(run_id));
                    (runs?.into_iter().next(), tasks?)
                }
            };
            if let Some(run) = run {
                let clock = self.env.clock.as_ref();
                advance_with(store, clock, run, tasks, Some(&next), &mut moved).await?;
            }
            Ok::<(), StoreError>(())
        }
        .await;
        if moved.claimed.is_none() {
            self.handing_off
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
        if let Err(e) = decided {
            eprintln!("worker {}: deciding run {run_id}: {e}", self.config.owner);
            return (false, moved.claimed);
        }
        // Other workers and waiters hear about it without holding up this worker.
        if moved.queued > 0 {
            store.signal_soon(Topic::Queued);
        }
        if moved.finished {
            store.signal_soon(Topic::Progress);
        }
        (true, moved.claimed)
    }

    /// The hand-off an end's write makes where the store can (see [`Follow`]): the run
    /// decided as [`advance_with`] would, and the one task it readies claimed into the slot
    /// (of weight `light`) that the ended task frees.
    fn follow(
        &self,
        light: bool,
        follow_ons: &tokio::sync::mpsc::UnboundedSender<Claim>,
    ) -> Follow {
        let clock = self.env.clock.clone();
        Follow {
            on: FollowOn {
                owner: self.config.owner.clone(),
                has_gpu: self.has_gpu(),
                light,
                lease_ms: self.config.lease.as_millis() as i64,
                choose: Box::new(move |run, tasks| {
                    let now = clock.now_ms();
                    // A decision that panicked must not take the report writer down with it:
                    // the hand-off then decides on its own task, as without this.
                    let decided = std::panic::AssertUnwindSafe(|| lone_ready(run, tasks, now));
                    let ready = std::panic::catch_unwind(decided).ok().flatten();
                    ready.map(|task| (task, now))
                }),
            },
            handing_off: self.handing_off.clone(),
            follow_ons: follow_ons.clone(),
        }
    }

    async fn dag(&self, version_id: i64) -> Result<Arc<Dag>, String> {
        let mut dags = self.dags.lock().await;
        if let Some(dag) = dags.get(&version_id) {
            return Ok(dag.clone());
        }
        let dag = Arc::new(load_pinned(&self.env.store, version_id).await?);
        dags.insert(version_id, dag.clone());
        Ok(dag)
    }

    async fn run_record(&self, run_id: i64) -> Result<Arc<RunRecord>, StoreError> {
        if let Some(run) = self.lock_runs().get(&run_id) {
            return Ok(run.clone());
        }
        let run = Arc::new(
            self.env
                .store
                .run(run_id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))?,
        );
        let mut runs = self.lock_runs();
        if runs.len() >= 1_024 {
            runs.clear();
        }
        runs.insert(run_id, run.clone());
        Ok(run)
    }

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<RunRecord>>> {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs the attempt and reports it; returns what should follow (see [`Ended`]).
    async fn attempt_inner(
        &self,
        claim: &Claim,
        reports: &Reports,
        follow_ons: &tokio::sync::mpsc::UnboundedSender<Claim>,
    ) -> Result<Ended, StoreError> {
        let store = &self.env.store;
        let run = self.run_record(claim.run_id).await?;
        let loaded = self.dag(run.dag_version_id).await;
        let produces: Vec<String> = loaded
            .as_ref()
            .ok()
            .and_then(|dag| dag.task(&claim.task_id))
            .map(|t| t.produces.clone())
            .unwrap_or_default();
        let params = serde_json::from_str(&run.params_json).unwrap_or_default();
        // (The size check comes first: the downstream search reads every task.)
        // (A mapped task's instance hands off as its task: `load[3]` as `load`.)
        let base = amdahl_dags::mapping::split_instance(&claim.task_id).0;
        let hand_off = loaded
            .as_ref()
            .ok()
            .filter(|dag| dag.tasks.len() <= HAND_OFF_MAX_TASKS)
            .map(|dag| {
                dag.tasks.iter().any(|t| {
                    t.needs.iter().any(|n| n == base) || (t.map.is_some() && t.id == claim.task_id)
                })
            });
        // The context is built once: preparing the stage and placing it render with it (an
        // instance of a mapped task reads its value from the store here).
        let context = match &loaded {
            Ok(dag) => {
                let context = RunContext::new(dag, run.id, run.logical_date.clone(), params);
                instance_context(store, dag, &context, &claim.task_id).await
            }
            Err(e) => Err(e.clone()),
        };
        let (prepared, timeout) = match (&loaded, &context) {
            (Ok(dag), Ok(context)) => (
                published_outputs(store, run.id, &self.data_root)
                    .await
                    .and_then(|published| {
                        prepare_stage(
                            dag,
                            context,
                            &claim.task_id,
                            claim.attempt,
                            &self.data_root,
                            &published,
                        )
                    }),
                dag.task(&claim.task_id).and_then(|t| t.timeout),
            ),
            (_, Err(e)) => (Err(e.clone()), None),
            (Err(e), _) => (Err(e.clone()), None),
        };
        let prepared = match (prepared, &loaded, &context) {
            (Ok(stage), Ok(dag), Ok(context)) if self.env.profile.is_some() => {
                Ok(place_stage(&self.env, dag, context, stage, claim.attempt_id).await)
            }
            (prepared, _, _) => prepared,
        };
        let mut prepared = prepared;
        let wait = WaitPolicy::of(&prepared);
        let rendered = prepared
            .as_ref()
            .ok()
            .and_then(amdahl_executors::Stage::rendered);
        let route = route_stage(&mut prepared);
        let execution = execute_attempt(&self.env, prepared, claim.attempt_id, &self.data_root);
        let (attempt_state, result) = match timeout {
            Some(limit) => match tokio::time::timeout(limit, execution).await {
                Ok(done) => outcome(done),
                Err(_) => (
                    AttemptState::TimedOut,
                    Err(format!(
                        "timed out after {}",
                        amdahl_dags::model::format_duration(limit)
                    )),
                ),
            },
            None => outcome(execution.await),
        };
        let now = self.env.clock.now_ms();
        let record = || async {
            store
                .task(claim.run_id, &claim.task_id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("task {}", claim.task_id)))
        };
        let (attempt_state, task_state, retry_at_ms, result) = match (result, wait) {
            // A sensor's poke that found nothing: wait for the next, or end the wait.
            (Ok((outcome, output)), Some(wait)) if outcome.waiting => {
                let (a, t, at, result) = after_poke(&wait, &record().await?, outcome, now);
                (a, t, at, result.map(|outcome| (outcome, output)))
            }
            (Ok(done), _) => (
                attempt_state,
                crate::attempt::ended_well(&done.0),
                None,
                Ok(done),
            ),
            (Err(e), _) => {
                let (t, at) = after_failure(&task_view(&record().await?), now);
                (attempt_state, t, at, Err(e))
            }
        };
        let end = AttemptEnd {
            run_id: claim.run_id,
            task_id: &claim.task_id,
            attempt_id: claim.attempt_id,
            attempt: claim.attempt,
            attempt_state,
            task_state,
            retry_at_ms,
            now,
            route,
            rendered,
            produces: &produces,
        };
        let finish = finish_of(&end, result);
        log_failure(store, &finish).await?;
        let produced = finish.task_state == TaskState::Success && !finish.produces.is_empty();
        // A task with downstream tasks is followed by a decision that reads the run: it may
        // come back with the end, and the decision be made in the end's write.
        let read = hand_off == Some(true);
        let follow = read.then(|| self.follow(claim.light, follow_ons));
        let (recorded, after) = reports.record(finish, read, follow).await?;
        if recorded {
            Ok(Ended {
                hand_off,
                produced,
                after,
            })
        } else {
            Err(StoreError::Conflict(
                "the task was cancelled, or its lease lost, before the attempt ended; its report was refused".into(),
            ))
        }
    }
}

/// What an attempt's stage returns to the main loop: its (run, task) key, and whether a task
/// its hand-off claimed took over its slot.
type AttemptDone = ((i64, String), bool);

/// What follows an attempt whose end was recorded.
struct Ended {
    /// Whether this worker decides the run now (see [`HAND_OFF_MAX_TASKS`]), and if so
    /// whether the task has downstream tasks.
    hand_off: Option<bool>,
    /// It succeeded and produced assets.
    produced: bool,
    /// The run as the end left it, where it was read with the end.
    after: Option<AfterEnd>,
}

/// Aborts its tasks when dropped, however the worker loop ends.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

type Outcome = (
    AttemptState,
    Result<(amdahl_executors::StageOutcome, Option<String>), String>,
);

fn outcome(
    (result, output_dir): (
        Result<amdahl_executors::StageOutcome, amdahl_executors::StageError>,
        Option<String>,
    ),
) -> Outcome {
    match result {
        Ok(stage) => (AttemptState::Success, Ok((stage, output_dir))),
        Err(e) => (AttemptState::Failed, Err(e.to_string())),
    }
}
