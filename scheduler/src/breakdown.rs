//! Where a run's time went, per task and in total: waiting to start (scheduling and queueing,
//! from the moment its upstreams were done), reading and writing data, host↔device copies,
//! compute, and the rest of an attempt (planning, overhead). By Amdahl's law, making compute
//! free would still leave everything else: the speed-up ceiling of faster devices is the total
//! ÷ the non-compute time.

use std::collections::HashMap;

use crate::store::{AttemptRecord, TaskRecord};

/// Milliseconds in each part.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parts {
    pub waiting: f64,
    pub io: f64,
    pub transfer: f64,
    pub compute: f64,
    pub other: f64,
}

impl Parts {
    pub fn total(&self) -> f64 {
        self.waiting + self.io + self.transfer + self.compute + self.other
    }

    fn add(&mut self, other: &Parts) {
        self.waiting += other.waiting;
        self.io += other.io;
        self.transfer += other.transfer;
        self.compute += other.compute;
        self.other += other.other;
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Breakdown {
    /// Tasks that ran, in the run's order, with their last attempt's parts.
    pub tasks: Vec<(String, Parts)>,
    pub total: Parts,
    /// Total ÷ non-compute time; `None` when nothing was measured or nothing else remains.
    pub ceiling: Option<f64>,
}

/// The breakdown of a run that started at `run_start_ms` from its stored records. An attempt
/// that did not say where its time went counts wholly as `other`.
pub fn breakdown(run_start_ms: i64, tasks: &[TaskRecord], attempts: &[AttemptRecord]) -> Breakdown {
    let finished: HashMap<&str, i64> = tasks
        .iter()
        .filter_map(|t| Some((t.task_id.as_str(), t.finished_at_ms?)))
        .collect();
    // The last attempt of each task is the one that counted.
    let mut last: HashMap<&str, &AttemptRecord> = HashMap::new();
    for a in attempts {
        let entry = last.entry(a.task_id.as_str()).or_insert(a);
        if a.attempt > entry.attempt {
            *entry = a;
        }
    }
    let run_start = run_start_ms;
    let mut out = Vec::new();
    let mut total = Parts::default();
    for task in tasks {
        let Some(attempt) = last.get(task.task_id.as_str()) else {
            continue;
        };
        let Some(end) = attempt.finished_at_ms else {
            continue;
        };
        let ready = task
            .needs
            .iter()
            .filter_map(|n| finished.get(n.as_str()).copied())
            .max()
            .unwrap_or(run_start)
            .max(run_start);
        let ms = |us: Option<i64>| us.map_or(0.0, |us| us as f64 / 1e3);
        let duration = (end - attempt.started_at_ms).max(0) as f64;
        let (io, transfer, compute) = (
            ms(attempt.io_us),
            ms(attempt.transfer_us),
            ms(attempt.compute_us),
        );
        let parts = Parts {
            waiting: (attempt.started_at_ms - ready).max(0) as f64,
            io,
            transfer,
            compute,
            other: (duration - io - transfer - compute).max(0.0),
        };
        total.add(&parts);
        out.push((task.task_id.clone(), parts));
    }
    let rest = total.total() - total.compute;
    let ceiling = (total.compute > 0.0 && rest > 0.0).then(|| total.total() / rest);
    Breakdown {
        tasks: out,
        total,
        ceiling,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{AttemptState, TaskState};

    fn task(id: &str, needs: &[&str], finished: i64) -> TaskRecord {
        TaskRecord {
            task_id: id.into(),
            kind: "sql".into(),
            state: TaskState::Success,
            needs: needs.iter().map(|n| n.to_string()).collect(),
            priority: 0,
            retries: 0,
            retry_delay_ms: 0,
            max_retry_delay_ms: None,
            timeout_ms: None,
            attempts: 1,
            retry_at_ms: None,
            device: Some(amdahl_placement::Place::Cpu),
            output_path: None,
            rows_out: None,
            bytes_out: None,
            error: None,
            started_at_ms: None,
            finished_at_ms: Some(finished),
            pool: None,
            trigger: amdahl_dags::TriggerRule::AllSuccess,
            skip_note: None,
            depends_on_past: false,
            pokes: 0,
            waiting_since_ms: None,
            map_index: None,
            map_value: None,
        }
    }

    fn attempt(task: &str, n: i64, start: i64, end: i64, parts: [Option<i64>; 3]) -> AttemptRecord {
        AttemptRecord {
            id: 0,
            task_id: task.into(),
            attempt: n,
            state: AttemptState::Success,
            device: Some(amdahl_placement::Place::Cpu),
            device_note: None,
            error: None,
            rows_out: None,
            bytes_out: None,
            started_at_ms: start,
            finished_at_ms: Some(end),
            predicted_cpu_us: None,
            predicted_gpu_us: None,
            io_us: parts[0],
            transfer_us: parts[1],
            compute_us: parts[2],
            route: None,
            rendered: None,
            plan: None,
            started_at_us: None,
            finished_at_us: None,
        }
    }

    #[test]
    fn waiting_counts_from_the_upstreams_and_the_ceiling_follows_amdahl() {
        let tasks = vec![task("a", &[], 1_100), task("b", &["a"], 1_400)];
        let attempts = vec![
            // a: starts 10 ms after the run; 100 ms of which 60 compute, 20 I/O.
            attempt(
                "a",
                1,
                1_000 + 10,
                1_110,
                [Some(20_000), None, Some(60_000)],
            ),
            // b: a failed first attempt, then one that waited 50 ms after a finished.
            attempt("b", 1, 1_120, 1_130, [None, None, None]),
            attempt(
                "b",
                2,
                1_150,
                1_400,
                [Some(50_000), Some(50_000), Some(100_000)],
            ),
        ];
        let b = breakdown(1_000, &tasks, &attempts);
        assert_eq!(b.tasks.len(), 2);
        assert_eq!(
            b.tasks[0].1,
            Parts {
                waiting: 10.0,
                io: 20.0,
                transfer: 0.0,
                compute: 60.0,
                other: 20.0
            }
        );
        assert_eq!(b.tasks[1].1.waiting, 50.0);
        assert_eq!(b.tasks[1].1.other, 50.0);
        assert_eq!(b.total.compute, 160.0);
        assert_eq!(b.total.total(), 110.0 + 300.0);
        let ceiling = b.ceiling.unwrap();
        assert!((ceiling - 410.0 / 250.0).abs() < 1e-9, "{ceiling}");
    }

    #[test]
    fn nothing_measured_has_no_ceiling() {
        let tasks = vec![task("a", &[], 50)];
        let attempts = vec![attempt("a", 1, 0, 50, [None, None, None])];
        let b = breakdown(0, &tasks, &attempts);
        assert_eq!(b.total.other, 50.0);
        assert_eq!(b.ceiling, None);
    }
}
