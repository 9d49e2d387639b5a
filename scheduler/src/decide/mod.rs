//! The scheduling core: a pure function from a run's state and the clock to commands.
//!
//! [`decide`] reads a [`RunView`] (a snapshot taken from the store) and the current time and
//! says what should happen next; the runner around it does the I/O and calls it again. No
//! database, no clock reads, no executors here, so every rule is tested with scenario tables
//! and a fake time.

use std::collections::BTreeMap;

use amdahl_dags::TriggerRule;

use crate::state::{RunState, TaskState};

/// What the core needs to know about one task instance.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskView {
    pub task_id: String,
    pub state: TaskState,
    pub needs: Vec<String>,
    pub priority: i32,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed after the first.
    pub retries: u32,
    pub retry_delay_ms: i64,
    /// Exponential backoff's longest wait; `None`: `retry_delay_ms` before every retry.
    pub max_retry_delay_ms: Option<i64>,
    /// When an `up_for_retry` task may be queued again.
    pub retry_at_ms: Option<i64>,
    pub timeout_ms: Option<i64>,
    /// When the current attempt started, for `running` tasks.
    pub started_at_ms: Option<i64>,
    /// The named pool whose slot the task takes while queued or running.
    pub pool: Option<String>,
    /// When it runs, given how its upstream tasks ended.
    pub trigger: TriggerRule,
    /// Skipped in this run before it starts: its `when:` was false when the run was created.
    pub skip: bool,
    /// What `depends_on_past` waits for.
    pub past: Past,
}

/// The same task in the previous run by logical date, for a task with `depends_on_past`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Past {
    /// The task does not depend on its past (or the run is not scheduled).
    #[default]
    Ignored,
    /// There is no previous run, or it had no such task: nothing to wait for.
    Missing,
    /// The previous run's task is in this state.
    Was(TaskState),
}

impl Past {
    /// Whether the task may run as far as its past goes: the previous run's task succeeded or
    /// was skipped (Airflow's rule). Anything else (still running, failed) holds it back
    /// until that task ends well or is cleared and reruns.
    pub fn allows(self) -> bool {
        match self {
            Past::Ignored | Past::Missing => true,
            Past::Was(state) => matches!(state, TaskState::Success | TaskState::Skipped),
        }
    }
}

/// A run as the core sees it; tasks in the DAG's topological order.
#[derive(Clone, Debug, PartialEq)]
pub struct RunView {
    pub state: RunState,
    pub tasks: Vec<TaskView>,
    /// How many tasks may run at once (`max_active_tasks`).
    pub max_active_tasks: usize,
    pub cancel_requested: bool,
    pub dispatcher: Dispatcher,
    /// Free slots of each named pool, across all runs; a pool that is not listed has none.
    pub pool_free: BTreeMap<String, usize>,
    /// When the run passes its `run_timeout` (its start plus the timeout).
    pub timeout_at_ms: Option<i64>,
}

/// Who starts queued tasks, which decides what `max_active_tasks` limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatcher {
    /// This process: every ready task is queued, and at most `max_active_tasks` are
    /// dispatched (`Command::Dispatch`).
    InProcess,
    /// Workers claim whatever is queued, so queueing is the limit: queued plus running tasks
    /// never exceed `max_active_tasks`; the rest stay `scheduled`. No `Dispatch` commands.
    Workers,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// queued → running for the run.
    StartRun,
    /// scheduled or up_for_retry → queued.
    Queue(String),
    /// scheduled → upstream_failed: an upstream failed and the task's rule needed it not to.
    MarkUpstreamFailed(String),
    /// scheduled → skipped: the task's trigger rule can no longer be met (and no failure
    /// stopped it).
    Skip(String),
    /// queued → running: hand the task to an executor.
    Dispatch(String),
    /// A running task passed its timeout: stop it and record the failure.
    Expire(String),
    /// Stop (if running) and mark cancelled.
    Cancel(String),
    /// The run passed its `run_timeout`: stop the task (if running) and mark it failed.
    TimeOut(String),
    /// The run passed its `run_timeout`: it ends failed, saying so (after the `TimeOut` of
    /// each unfinished task).
    TimeOutRun,
    /// Every task is terminal: the run ends in this state.
    FinishRun(RunState),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub commands: Vec<Command>,
    /// The earliest time something will change without an event (a retry, a timeout).
    pub wake_at_ms: Option<i64>,
}

impl Decision {
    fn wake(&mut self, at: i64) {
        self.wake_at_ms = Some(self.wake_at_ms.map_or(at, |w| w.min(at)));
    }
}

/// Decides the next steps for a run at time `now_ms`.
pub fn decide(run: &RunView, now_ms: i64) -> Decision {
    let mut d = Decision::default();
    if run.state.is_terminal() {
        return d;
    }
    if run.state == RunState::Queued {
        d.commands.push(Command::StartRun);
    }
    if run.cancel_requested {
        for task in run.tasks.iter().filter(|t| !t.state.is_terminal()) {
            d.commands.push(Command::Cancel(task.task_id.clone()));
        }
        d.commands.push(Command::FinishRun(RunState::Cancelled));
        return d;
    }
    if let Some(at) = run.timeout_at_ms {
        if at <= now_ms {
            for task in run.tasks.iter().filter(|t| !t.state.is_terminal()) {
                d.commands.push(Command::TimeOut(task.task_id.clone()));
            }
            d.commands.push(Command::TimeOutRun);
            return d;
        }
        d.wake(at);
    }

    // States after this decision's own changes, so one pass sees a whole cascade.
    let mut states: Vec<TaskState> = run.tasks.iter().map(|t| t.state).collect();
    let positions: std::collections::HashMap<&str, usize> = run
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.task_id.as_str(), i))
        .collect();
    let index = |id: &str| positions.get(id).copied();
    // Tasks that may be queued now, in the DAG's order.
    let mut to_queue: Vec<usize> = Vec::new();
    for (i, task) in run.tasks.iter().enumerate() {
        match task.state {
            TaskState::Scheduled => {
                let upstream: Vec<TaskState> = task
                    .needs
                    .iter()
                    .filter_map(|n| index(n))
                    .map(|j| states[j])
                    .collect();
                let verdict = match judge(task.trigger, &upstream) {
                    _ if task.skip => Verdict::Skip,
                    Verdict::Run if !task.past.allows() => Verdict::Wait,
                    verdict => verdict,
                };
                match verdict {
                    Verdict::Wait => {}
                    Verdict::Run => to_queue.push(i),
                    Verdict::UpstreamFailed => {
                        states[i] = TaskState::UpstreamFailed;
                        d.commands
                            .push(Command::MarkUpstreamFailed(task.task_id.clone()));
                    }
                    Verdict::Skip => {
                        states[i] = TaskState::Skipped;
                        d.commands.push(Command::Skip(task.task_id.clone()));
                    }
                }
            }
            TaskState::UpForRetry => match task.retry_at_ms {
                Some(at) if at > now_ms => d.wake(at),
                _ => to_queue.push(i),
            },
            TaskState::Running => {
                if let (Some(started), Some(timeout)) = (task.started_at_ms, task.timeout_ms) {
                    let deadline = started.saturating_add(timeout);
                    if deadline <= now_ms {
                        d.commands.push(Command::Expire(task.task_id.clone()));
                    } else {
                        d.wake(deadline);
                    }
                }
            }
            _ => {}
        }
    }

    let by_priority = |list: &mut Vec<usize>| {
        // Higher priority first; ties keep the DAG's order.
        list.sort_by_key(|&i| (-i64::from(run.tasks[i].priority), i));
    };
    let limit = run.max_active_tasks.max(1);
    // A task in a pool is queued only into a free slot; the rest wait, best first.
    by_priority(&mut to_queue);
    let mut pool_free = run.pool_free.clone();
    to_queue.retain(|&i| match &run.tasks[i].pool {
        None => true,
        Some(pool) => match pool_free.get_mut(pool) {
            Some(free) if *free > 0 => {
                *free -= 1;
                true
            }
            _ => false,
        },
    });
    to_queue.sort_unstable();
    match run.dispatcher {
        Dispatcher::InProcess => {
            for &i in &to_queue {
                states[i] = TaskState::Queued;
                d.commands
                    .push(Command::Queue(run.tasks[i].task_id.clone()));
            }
        }
        Dispatcher::Workers => {
            let active = states
                .iter()
                .filter(|s| matches!(s, TaskState::Queued | TaskState::Running))
                .count();
            by_priority(&mut to_queue);
            for &i in to_queue.iter().take(limit.saturating_sub(active)) {
                states[i] = TaskState::Queued;
                d.commands
                    .push(Command::Queue(run.tasks[i].task_id.clone()));
            }
        }
    }

    let running = states.iter().filter(|s| **s == TaskState::Running).count();
    let mut ready: Vec<usize> = (0..run.tasks.len())
        .filter(|&i| states[i] == TaskState::Queued)
        .collect();
    by_priority(&mut ready);
    let slots = match run.dispatcher {
        Dispatcher::InProcess => limit.saturating_sub(running),
        Dispatcher::Workers => 0,
    };
    for &i in ready.iter().take(slots) {
        states[i] = TaskState::Running;
        d.commands
            .push(Command::Dispatch(run.tasks[i].task_id.clone()));
    }

    if states.iter().all(|s| s.is_terminal()) {
        d.commands
            .push(Command::FinishRun(final_state(run, &states)));
    }
    d
}

/// How a run whose tasks all ended ends: failed when a task failed, or when a leaf (a task
/// nothing needs) ended `upstream_failed` or `cancelled` (Airflow's leaf rule); successful
/// otherwise. Counting every failed task, not only leaves, keeps a failure failed when a
/// cleanup with `trigger: all_done` after it succeeds: Airflow's rule alone would call such a
/// run a success.
fn final_state(run: &RunView, states: &[TaskState]) -> RunState {
    let needed: std::collections::HashSet<&str> = run
        .tasks
        .iter()
        .flat_map(|t| t.needs.iter().map(String::as_str))
        .collect();
    let failed = run
        .tasks
        .iter()
        .zip(states)
        .any(|(task, state)| match state {
            TaskState::Failed => true,
            TaskState::UpstreamFailed | TaskState::Cancelled => {
                !needed.contains(task.task_id.as_str())
            }
            _ => false,
        });
    if failed {
        RunState::Failed
    } else {
        RunState::Success
    }
}

/// What a scheduled task's trigger rule makes of its upstream tasks' states now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not yet: an upstream task that matters has not ended.
    Wait,
    /// Queue it.
    Run,
    /// The rule cannot be met because something failed: `upstream_failed`.
    UpstreamFailed,
    /// The rule cannot be met and nothing failed that it needed: `skipped`.
    Skip,
}

/// Airflow's trigger rules over the upstream states. "Failed" counts `failed`,
/// `upstream_failed` and `cancelled`; "done" is any end; `up_for_retry` is not done. A task
/// with no upstream runs whatever its rule.
pub fn judge(rule: TriggerRule, upstream: &[TaskState]) -> Verdict {
    use Verdict::*;
    let n = upstream.len();
    if n == 0 || rule == TriggerRule::Always {
        return Run;
    }
    let count = |f: fn(&TaskState) -> bool| upstream.iter().filter(|s| f(s)).count();
    let succeeded = count(|s| *s == TaskState::Success);
    let skipped = count(|s| *s == TaskState::Skipped);
    let failed = count(|s| {
        matches!(
            s,
            TaskState::Failed | TaskState::UpstreamFailed | TaskState::Cancelled
        )
    });
    let all_done = succeeded + skipped + failed == n;
    match rule {
        TriggerRule::Always => Run,
        TriggerRule::AllSuccess => {
            if failed > 0 {
                UpstreamFailed
            } else if skipped > 0 {
                Skip
            } else if all_done {
                Run
            } else {
                Wait
            }
        }
        TriggerRule::AllDone => {
            if all_done {
                Run
            } else {
                Wait
            }
        }
        TriggerRule::AllFailed => {
            if succeeded > 0 || skipped > 0 {
                Skip
            } else if all_done {
                Run
            } else {
                Wait
            }
        }
        TriggerRule::OneFailed => {
            if failed > 0 {
                Run
            } else if all_done {
                Skip
            } else {
                Wait
            }
        }
        TriggerRule::OneSuccess => {
            if succeeded > 0 {
                Run
            } else if !all_done {
                Wait
            } else if skipped == n {
                Skip
            } else {
                UpstreamFailed
            }
        }
        TriggerRule::NoneFailed => {
            if failed > 0 {
                UpstreamFailed
            } else if all_done {
                Run
            } else {
                Wait
            }
        }
        TriggerRule::NoneFailedMinOneSuccess => {
            if failed > 0 {
                UpstreamFailed
            } else if !all_done {
                Wait
            } else if succeeded > 0 {
                Run
            } else {
                Skip
            }
        }
    }
}

/// What a failed attempt leads to: another try after the delay, or failure.
/// How long a task waits before the retry that follows its `attempts`-th attempt: its
/// `retry_delay`, or with exponential backoff `retry_delay × 2^(attempts − 1)` capped at
/// `max_retry_delay`, less up to a tenth of jitter (the same for the same task and attempt,
/// different between tasks, so that many tasks failing together do not retry in step).
pub fn retry_wait_ms(task: &TaskView) -> i64 {
    let Some(cap) = task.max_retry_delay_ms else {
        return task.retry_delay_ms;
    };
    let doublings = task.attempts.saturating_sub(1).min(40);
    let wait = task
        .retry_delay_ms
        .max(0)
        .saturating_mul(1i64 << doublings)
        .min(cap);
    // FNV-1a over the task id and the attempt: a fraction in [0, 1).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in task.task_id.bytes().chain(task.attempts.to_le_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let fraction = (hash % 10_000) as f64 / 10_000.0;
    wait - (wait as f64 * fraction / 10.0) as i64
}

pub fn after_failure(task: &TaskView, now_ms: i64) -> (TaskState, Option<i64>) {
    if task.attempts <= task.retries {
        (
            TaskState::UpForRetry,
            Some(now_ms.saturating_add(retry_wait_ms(task))),
        )
    } else {
        (TaskState::Failed, None)
    }
}

/// When a sensor whose poke found nothing pokes next: `poke` after now, but never after its
/// wait ends (`timeout` from the first poke, `since`), so the last poke is at the deadline;
/// `None` once the wait is over (the task times out).
pub fn next_poke(since_ms: i64, now_ms: i64, poke_ms: i64, timeout_ms: i64) -> Option<i64> {
    let deadline = since_ms.saturating_add(timeout_ms);
    (now_ms < deadline).then(|| now_ms.saturating_add(poke_ms).min(deadline))
}

#[cfg(test)]
mod tests;
