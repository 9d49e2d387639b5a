//! Scenario tables for the scheduling core and the trigger rules, with a fake clock.

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
        max_retry_delay_ms: None,
        retry_at_ms: None,
        timeout_ms: None,
        started_at_ms: None,
        pool: None,
        trigger: TriggerRule::AllSuccess,
        skip: false,
        past: Past::Ignored,
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
        timeout_at_ms: None,
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
        (
            "a run before its run_timeout sets a wake-up",
            RunView {
                timeout_at_ms: Some(60_000),
                ..run(vec![task("a", Running, &[]), task("b", Scheduled, &["a"])])
            },
            59_999,
            vec![],
            Some(60_000),
        ),
        (
            "a run past its run_timeout fails what is left, then itself",
            RunView {
                timeout_at_ms: Some(60_000),
                ..run(vec![
                    task("a", Success, &[]),
                    task("b", Running, &["a"]),
                    task("c", UpForRetry, &[]),
                    task("d", Scheduled, &["b"]),
                ])
            },
            60_000,
            vec![
                TimeOut("b".into()),
                TimeOut("c".into()),
                TimeOut("d".into()),
                TimeOutRun,
            ],
            None,
        ),
        (
            "a cancel asked before the run_timeout passed still cancels",
            RunView {
                timeout_at_ms: Some(60_000),
                cancel_requested: true,
                ..run(vec![task("a", Running, &[])])
            },
            70_000,
            vec![Cancel("a".into()), FinishRun(RunState::Cancelled)],
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

#[test]
fn a_false_condition_skips_the_task_at_once_and_downstream_follows_its_rules() {
    let mut guarded = task("refresh", Scheduled, &["extract"]);
    guarded.skip = true;
    let view = run(vec![
        task("extract", Running, &[]),
        guarded,
        task("publish", Scheduled, &["refresh"]),
        with_rule(
            task("tidy", Scheduled, &["refresh"]),
            TriggerRule::NoneFailed,
        ),
    ]);
    // Skipped without waiting for its upstream; `publish` (all_success) is skipped with it;
    // `tidy` (none_failed) runs after a skip.
    assert_eq!(
        decide(&view, 0).commands,
        vec![
            Skip("refresh".into()),
            Skip("publish".into()),
            Queue("tidy".into()),
            Dispatch("tidy".into()),
        ]
    );
}

#[test]
fn exponential_backoff_doubles_to_its_cap_with_a_tenth_of_jitter() {
    let waits = |id: &str, cap: Option<i64>| -> Vec<i64> {
        (1..=8)
            .map(|attempts| {
                let t = TaskView {
                    attempts,
                    retries: 10,
                    retry_delay_ms: 1_000,
                    max_retry_delay_ms: cap,
                    ..task(id, Running, &[])
                };
                let (state, at) = after_failure(&t, 0);
                assert_eq!(state, UpForRetry);
                at.unwrap()
            })
            .collect()
    };
    // Constant: the same delay every time.
    assert_eq!(waits("a", None), vec![1_000; 8]);
    let bases = [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000];
    let a = waits("a", Some(30_000));
    for (wait, base) in a.iter().zip(bases) {
        assert!(*wait <= base && *wait >= base - base / 10, "{a:?}");
    }
    // The jitter is the same for the same task and attempt, and differs between tasks.
    assert_eq!(a, waits("a", Some(30_000)));
    assert_ne!(a, waits("b", Some(30_000)));
}

/// `depends_on_past`: a task runs once the same task of the previous run succeeded or was
/// skipped, or when there is none; its trigger rule still decides first.
#[test]
fn the_past_holds_a_task_back_until_it_ended_well() {
    let cases: Vec<(Past, bool)> = vec![
        (Past::Ignored, true),
        (Past::Missing, true),
        (Past::Was(Success), true),
        (Past::Was(Skipped), true),
        (Past::Was(Scheduled), false),
        (Past::Was(Queued), false),
        (Past::Was(Running), false),
        (Past::Was(UpForRetry), false),
        (Past::Was(Failed), false),
        (Past::Was(UpstreamFailed), false),
        (Past::Was(Cancelled), false),
    ];
    for (past, runs) in cases {
        let mut t = task("a", Scheduled, &[]);
        t.past = past;
        let d = decide(&run(vec![t]), 0);
        let expected = if runs {
            vec![Queue("a".into()), Dispatch("a".into())]
        } else {
            vec![]
        };
        assert_eq!(d.commands, expected, "{past:?}");
        assert_eq!(past.allows(), runs, "{past:?}");
    }
    // A failed upstream still fails it, whatever its past.
    let mut b = task("b", Scheduled, &["a"]);
    b.past = Past::Was(Running);
    let d = decide(&run(vec![task("a", Failed, &[]), b]), 0);
    assert_eq!(
        d.commands,
        vec![MarkUpstreamFailed("b".into()), FinishRun(RunState::Failed)]
    );
}

#[test]
fn a_sensor_pokes_until_its_deadline_then_times_out() {
    // First poke at 0, every 60 s, for at most 150 s.
    assert_eq!(next_poke(0, 0, 60_000, 150_000), Some(60_000));
    assert_eq!(next_poke(0, 60_000, 60_000, 150_000), Some(120_000));
    // The last poke is at the deadline, not after it.
    assert_eq!(next_poke(0, 120_000, 60_000, 150_000), Some(150_000));
    assert_eq!(next_poke(0, 150_000, 60_000, 150_000), None);
    assert_eq!(next_poke(0, 200_000, 60_000, 150_000), None);
    // A 7-day wait from a late start does not overflow.
    assert_eq!(
        next_poke(i64::MAX - 5, i64::MAX - 4, 60_000, 604_800_000),
        Some(i64::MAX)
    );
}
