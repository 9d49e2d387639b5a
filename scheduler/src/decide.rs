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
    /// When an `up_for_retry` task may be queued again.
    pub retry_at_ms: Option<i64>,
    pub timeout_ms: Option<i64>,
    /// When the current attempt started, for `running` tasks.
    pub started_at_ms: Option<i64>,
    /// The named pool whose slot the task takes while queued or running.
    pub pool: Option<String>,
    /// When it runs, given how its upstream tasks ended.
    pub trigger: TriggerRule,
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
                match judge(task.trigger, &upstream) {
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
pub fn after_failure(task: &TaskView, now_ms: i64) -> (TaskState, Option<i64>) {
    if task.attempts <= task.retries {
        (
            TaskState::UpForRetry,
            Some(now_ms.saturating_add(task.retry_delay_ms)),
        )
    } else {
        (TaskState::Failed, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Command::*;
    use TaskState::*;

    fn task(id: &str, state: TaskState, needs: &[&str]) -> TaskView {
        TaskView {
            task_id: id.into(),
            state,
            needs: needs.iter().map(|s| s.to_string()).collect(),
            priority: 0,
            attempts: 0,
            retries: 0,
            retry_delay_ms: 1_000,
            retry_at_ms: None,
            timeout_ms: None,
            started_at_ms: None,
            pool: None,
            trigger: TriggerRule::AllSuccess,
        }
    }

    fn pooled(id: &str, state: TaskState, pool: &str, priority: i32) -> TaskView {
        TaskView {
            pool: Some(pool.into()),
            priority,
            ..task(id, state, &[])
        }
    }

    fn run(tasks: Vec<TaskView>) -> RunView {
        RunView {
            state: RunState::Running,
            tasks,
            max_active_tasks: 16,
            cancel_requested: false,
            dispatcher: Dispatcher::InProcess,
            pool_free: BTreeMap::new(),
        }
    }

    /// (name, run, now, expected commands, expected wake-up)
    #[test]
    fn scenarios() {
        let mut retrying = task("a", UpForRetry, &[]);
        retrying.retry_at_ms = Some(5_000);
        let mut slow = task("a", Running, &[]);
        slow.started_at_ms = Some(1_000);
        slow.timeout_ms = Some(2_000);
        let mut high = task("c", Scheduled, &[]);
        high.priority = 10;
        let limited = RunView {
            max_active_tasks: 1,
            ..run(vec![
                task("a", Scheduled, &[]),
                task("b", Scheduled, &[]),
                high,
            ])
        };
        type Scenario = (&'static str, RunView, i64, Vec<Command>, Option<i64>);
        let cases: Vec<Scenario> = vec![
            (
                "a new run starts and dispatches its roots",
                RunView {
                    state: RunState::Queued,
                    ..run(vec![
                        task("a", Scheduled, &[]),
                        task("b", Scheduled, &["a"]),
                    ])
                },
                0,
                vec![StartRun, Queue("a".into()), Dispatch("a".into())],
                None,
            ),
            (
                "a task waits for a running upstream",
                run(vec![task("a", Running, &[]), task("b", Scheduled, &["a"])]),
                0,
                vec![],
                None,
            ),
            (
                "success releases the downstream",
                run(vec![task("a", Success, &[]), task("b", Scheduled, &["a"])]),
                0,
                vec![Queue("b".into()), Dispatch("b".into())],
                None,
            ),
            (
                "failure cascades as upstream_failed and ends the run failed",
                run(vec![
                    task("a", Failed, &[]),
                    task("b", Scheduled, &["a"]),
                    task("c", Scheduled, &["b"]),
                ]),
                0,
                vec![
                    MarkUpstreamFailed("b".into()),
                    MarkUpstreamFailed("c".into()),
                    FinishRun(RunState::Failed),
                ],
                None,
            ),
            (
                "a retry waits for its delay",
                run(vec![retrying.clone()]),
                4_999,
                vec![],
                Some(5_000),
            ),
            (
                "a retry is queued once its delay passed",
                run(vec![retrying]),
                5_000,
                vec![Queue("a".into()), Dispatch("a".into())],
                None,
            ),
            (
                "a task before its timeout sets a wake-up",
                run(vec![slow.clone()]),
                2_999,
                vec![],
                Some(3_000),
            ),
            (
                "a task past its timeout expires",
                run(vec![slow]),
                3_000,
                vec![Expire("a".into())],
                None,
            ),
            (
                "max_active_tasks limits dispatch and priority picks first",
                limited,
                0,
                vec![
                    Queue("a".into()),
                    Queue("b".into()),
                    Queue("c".into()),
                    Dispatch("c".into()),
                ],
                None,
            ),
            (
                "all success finishes the run",
                run(vec![task("a", Success, &[]), task("b", Skipped, &[])]),
                0,
                vec![FinishRun(RunState::Success)],
                None,
            ),
            (
                "cancel stops everything left",
                RunView {
                    cancel_requested: true,
                    ..run(vec![
                        task("a", Success, &[]),
                        task("b", Running, &[]),
                        task("c", Scheduled, &["b"]),
                    ])
                },
                0,
                vec![
                    Cancel("b".into()),
                    Cancel("c".into()),
                    FinishRun(RunState::Cancelled),
                ],
                None,
            ),
        ];
        for (name, view, now, commands, wake) in cases {
            let d = decide(&view, now);
            assert_eq!(d.commands, commands, "{name}");
            assert_eq!(d.wake_at_ms, wake, "{name}");
        }
    }

    #[test]
    fn retries_run_out() {
        let mut t = task("a", Running, &[]);
        t.retries = 2;
        t.retry_delay_ms = 10_000;
        t.attempts = 1;
        assert_eq!(after_failure(&t, 100), (UpForRetry, Some(10_100)));
        t.attempts = 3;
        assert_eq!(after_failure(&t, 100), (Failed, None));
    }

    /// With workers claiming, queueing is what `max_active_tasks` limits.
    #[test]
    fn workers_see_at_most_max_active_tasks_queued_or_running() {
        let mut urgent = task("c", Scheduled, &[]);
        urgent.priority = 5;
        let view = |tasks| RunView {
            max_active_tasks: 2,
            dispatcher: Dispatcher::Workers,
            ..run(tasks)
        };
        let fresh = view(vec![
            task("a", Scheduled, &[]),
            task("b", Scheduled, &[]),
            urgent,
        ]);
        assert_eq!(
            decide(&fresh, 0).commands,
            vec![Queue("c".into()), Queue("a".into())]
        );
        let busy = view(vec![
            task("a", Running, &[]),
            task("b", Scheduled, &[]),
            task("c", Queued, &[]),
        ]);
        assert_eq!(decide(&busy, 0).commands, vec![]);
        let freed = view(vec![
            task("a", Success, &[]),
            task("b", Scheduled, &[]),
            task("c", Running, &[]),
        ]);
        assert_eq!(decide(&freed, 0).commands, vec![Queue("b".into())]);
    }

    /// A pool's free slots (counted across runs by the store) go to the best tasks first;
    /// a pool nobody created has no slots; tasks outside pools are not held back.
    #[test]
    fn pools_hand_out_their_free_slots_by_priority() {
        for dispatcher in [Dispatcher::InProcess, Dispatcher::Workers] {
            let view = RunView {
                dispatcher,
                pool_free: BTreeMap::from([("db".to_string(), 1), ("gpu".to_string(), 0)]),
                ..run(vec![
                    pooled("low", Scheduled, "db", 0),
                    pooled("high", Scheduled, "db", 9),
                    pooled("full", Scheduled, "gpu", 0),
                    pooled("nowhere", Scheduled, "missing", 0),
                    task("free", Scheduled, &[]),
                ])
            };
            let queued: Vec<Command> = decide(&view, 0)
                .commands
                .into_iter()
                .filter(|c| matches!(c, Queue(_)))
                .collect();
            let mut names: Vec<String> = queued
                .into_iter()
                .filter_map(|c| match c {
                    Queue(id) => Some(id),
                    _ => None,
                })
                .collect();
            names.sort();
            assert_eq!(names, ["free", "high"], "{dispatcher:?}");
        }
        // When `high` holds the slot, `low` waits; once it finishes, `low` goes.
        let busy = RunView {
            dispatcher: Dispatcher::Workers,
            pool_free: BTreeMap::from([("db".to_string(), 0)]),
            ..run(vec![
                pooled("low", Scheduled, "db", 0),
                pooled("high", Running, "db", 9),
            ])
        };
        assert_eq!(decide(&busy, 0).commands, vec![]);
        let freed = RunView {
            pool_free: BTreeMap::from([("db".to_string(), 1)]),
            ..busy
        };
        let mut freed = freed;
        freed.tasks[1].state = Success;
        assert_eq!(decide(&freed, 0).commands, vec![Queue("low".into())]);
    }

    #[test]
    fn a_finished_run_decides_nothing() {
        let view = RunView {
            state: RunState::Success,
            ..run(vec![task("a", Success, &[])])
        };
        assert_eq!(decide(&view, 0), Decision::default());
    }

    /// Every trigger rule against every upstream state alone, and the mixes that tell the
    /// rules apart. Letters: S success, F failed, U upstream_failed, K skipped, C cancelled,
    /// R running, Q queued, W scheduled (waiting), Y up_for_retry.
    #[test]
    fn trigger_rules_scenario_table() {
        use TriggerRule as T;
        use Verdict::{Run as Go, Skip as Sk, UpstreamFailed as Uf, Wait as Wt};
        fn states(code: &str) -> Vec<TaskState> {
            code.chars()
                .map(|c| match c {
                    'S' => Success,
                    'F' => Failed,
                    'U' => UpstreamFailed,
                    'K' => Skipped,
                    'C' => Cancelled,
                    'R' => Running,
                    'Q' => Queued,
                    'W' => Scheduled,
                    'Y' => UpForRetry,
                    other => panic!("no state `{other}`"),
                })
                .collect()
        }
        // Columns: upstreams, then the verdict of all_success, all_done, all_failed,
        // one_failed, one_success, none_failed, none_failed_min_one_success, always.
        #[rustfmt::skip]
        let table: &[(&str, [Verdict; 8])] = &[
            ("",    [Go, Go, Go, Go, Go, Go, Go, Go]),
            ("S",   [Go, Go, Sk, Sk, Go, Go, Go, Go]),
            ("F",   [Uf, Go, Go, Go, Uf, Uf, Uf, Go]),
            ("U",   [Uf, Go, Go, Go, Uf, Uf, Uf, Go]),
            ("C",   [Uf, Go, Go, Go, Uf, Uf, Uf, Go]),
            ("K",   [Sk, Go, Sk, Sk, Sk, Go, Sk, Go]),
            ("R",   [Wt, Wt, Wt, Wt, Wt, Wt, Wt, Go]),
            ("Q",   [Wt, Wt, Wt, Wt, Wt, Wt, Wt, Go]),
            ("W",   [Wt, Wt, Wt, Wt, Wt, Wt, Wt, Go]),
            ("Y",   [Wt, Wt, Wt, Wt, Wt, Wt, Wt, Go]),
            ("SS",  [Go, Go, Sk, Sk, Go, Go, Go, Go]),
            ("SF",  [Uf, Go, Sk, Go, Go, Uf, Uf, Go]),
            ("SK",  [Sk, Go, Sk, Sk, Go, Go, Go, Go]),
            ("SR",  [Wt, Wt, Sk, Wt, Go, Wt, Wt, Go]),
            ("FR",  [Uf, Wt, Wt, Go, Wt, Uf, Uf, Go]),
            ("FF",  [Uf, Go, Go, Go, Uf, Uf, Uf, Go]),
            ("FU",  [Uf, Go, Go, Go, Uf, Uf, Uf, Go]),
            ("FK",  [Uf, Go, Sk, Go, Uf, Uf, Uf, Go]),
            ("KK",  [Sk, Go, Sk, Sk, Sk, Go, Sk, Go]),
            ("KR",  [Sk, Wt, Sk, Wt, Wt, Wt, Wt, Go]),
            ("KY",  [Sk, Wt, Sk, Wt, Wt, Wt, Wt, Go]),
            ("SSY", [Wt, Wt, Sk, Wt, Go, Wt, Wt, Go]),
            ("FFR", [Uf, Wt, Wt, Go, Wt, Uf, Uf, Go]),
            ("SFK", [Uf, Go, Sk, Go, Go, Uf, Uf, Go]),
        ];
        for (upstream, verdicts) in table {
            for (rule, expected) in TriggerRule::ALL.into_iter().zip(verdicts) {
                assert_eq!(
                    judge(rule, &states(upstream)),
                    *expected,
                    "{rule} over upstream `{upstream}`"
                );
            }
        }
        // Every state appears alone above, under every rule.
        assert_eq!(T::ALL.len(), 8);
    }

    fn with_rule(mut t: TaskView, rule: TriggerRule) -> TaskView {
        t.trigger = rule;
        t
    }

    #[test]
    fn a_cleanup_after_a_failure_runs_and_the_run_still_fails() {
        // extract fails; load is upstream_failed; cleanup (all_done) runs; alert (one_failed)
        // runs; report (all_success after load) is upstream_failed.
        let view = run(vec![
            task("extract", Failed, &[]),
            task("load", Scheduled, &["extract"]),
            with_rule(
                task("cleanup", Scheduled, &["extract", "load"]),
                TriggerRule::AllDone,
            ),
            with_rule(
                task("alert", Scheduled, &["extract"]),
                TriggerRule::OneFailed,
            ),
            task("report", Scheduled, &["load"]),
        ]);
        let d = decide(&view, 0);
        assert_eq!(
            d.commands,
            vec![
                MarkUpstreamFailed("load".into()),
                MarkUpstreamFailed("report".into()),
                Queue("cleanup".into()),
                Queue("alert".into()),
                Dispatch("cleanup".into()),
                Dispatch("alert".into()),
            ]
        );
        // Once the cleanup and the alert succeeded, the run ends failed all the same.
        let done = run(vec![
            task("extract", Failed, &[]),
            task("load", UpstreamFailed, &["extract"]),
            with_rule(
                task("cleanup", Success, &["extract", "load"]),
                TriggerRule::AllDone,
            ),
            with_rule(task("alert", Success, &["extract"]), TriggerRule::OneFailed),
            task("report", UpstreamFailed, &["load"]),
        ]);
        assert_eq!(decide(&done, 0).commands, vec![FinishRun(RunState::Failed)]);
    }

    #[test]
    fn skips_propagate_and_a_run_of_skips_succeeds() {
        let view = run(vec![
            task("a", Success, &[]),
            with_rule(
                task("on_failure", Scheduled, &["a"]),
                TriggerRule::OneFailed,
            ),
            task("after", Scheduled, &["on_failure"]),
            with_rule(
                task("joined", Scheduled, &["a", "after"]),
                TriggerRule::NoneFailed,
            ),
        ]);
        let d = decide(&view, 0);
        assert_eq!(
            d.commands,
            vec![
                Skip("on_failure".into()),
                Skip("after".into()),
                Queue("joined".into()),
                Dispatch("joined".into()),
            ]
        );
        let done = run(vec![
            task("a", Success, &[]),
            with_rule(task("on_failure", Skipped, &["a"]), TriggerRule::OneFailed),
            task("after", Skipped, &["on_failure"]),
            with_rule(
                task("joined", Success, &["a", "after"]),
                TriggerRule::NoneFailed,
            ),
        ]);
        assert_eq!(
            decide(&done, 0).commands,
            vec![FinishRun(RunState::Success)]
        );
    }

    #[test]
    fn one_failed_and_always_do_not_wait_for_every_upstream() {
        let view = run(vec![
            task("a", Failed, &[]),
            task("b", Running, &[]),
            with_rule(task("page", Scheduled, &["a", "b"]), TriggerRule::OneFailed),
            with_rule(task("audit", Scheduled, &["b"]), TriggerRule::Always),
            with_rule(task("tidy", Scheduled, &["a", "b"]), TriggerRule::AllDone),
        ]);
        let d = decide(&view, 0);
        assert_eq!(
            d.commands,
            vec![
                Queue("page".into()),
                Queue("audit".into()),
                Dispatch("page".into()),
                Dispatch("audit".into()),
            ]
        );
    }

    #[test]
    fn a_leaf_that_was_upstream_failed_fails_the_run() {
        // Nothing failed on its own (an upstream was cancelled), yet a leaf could not run.
        let done = run(vec![
            task("a", Cancelled, &[]),
            task("b", UpstreamFailed, &["a"]),
        ]);
        assert_eq!(decide(&done, 0).commands, vec![FinishRun(RunState::Failed)]);
        let ok = run(vec![
            task("a", Success, &[]),
            with_rule(task("b", Skipped, &["a"]), TriggerRule::AllFailed),
        ]);
        assert_eq!(decide(&ok, 0).commands, vec![FinishRun(RunState::Success)]);
    }
}
