//! Amdahl's executors: where stage work actually happens.
//!
//! The contract is in [`stage`]: a [`Stage`] (one attempt of one task, templates rendered) goes
//! in, a [`StageOutcome`] or [`StageError`] comes out, log lines go to a [`LogSink`]. The
//! implementations are [`SqlExecutor`] (DataFusion on the CPU pool), [`TpchExecutor`] (TPC-H
//! generation) and [`ShellExecutor`]; [`Executors`] dispatches a stage to the right one.
//! [`DenseExecutor`] runs `knn`, `matmul`, `score` and generated vectors. [`gpu`] finds the
//! CUDA devices this process can use (without panicking where there are none).
//!
//! Executors carry out a stage's route ([`Stage::routed`], decided by `amdahl_planner::route`)
//! and never decide placement themselves. [`calibrate`] measures this machine into a placement
//! profile (it runs work, so it lives here). `check`, `estimate`, `objects`, `place` and
//! `session` are the planner's, re-exported.
//!
//! Executors never read or write the state store; they do not decide retries or timeouts
//! (the scheduler drops the future to stop them). Heavy work runs on the [`CpuRuntime`],
//! never on the caller's runtime.

pub mod ballista;
pub mod budget;
pub mod calibrate;
pub mod dense;
pub mod export;
pub mod gpu;
pub mod linalg;
pub mod policy;
pub mod runtime;
pub mod shards;
pub mod shell;
pub mod sql;
pub mod stage;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tpch;
pub mod wait;

pub use amdahl_planner::{check, estimate, objects, place, session};
pub use dense::DenseExecutor;
pub use runtime::CpuRuntime;
pub use shell::ShellExecutor;
pub use sql::SqlExecutor;
pub use stage::{
    Device, Executor, LogLine, LogSink, LogStream, MapOver, Route, Routed, Stage, StageError,
    StageOutcome, StageTimings, TableInput, Work,
};
pub use tpch::TpchExecutor;

/// All executors of this process, sharing one CPU pool.
#[derive(Clone)]
pub struct Executors {
    sql: SqlExecutor,
    dense: DenseExecutor,
    tpch: TpchExecutor,
    shell: ShellExecutor,
    policy: policy::Policy,
}

impl Executors {
    pub fn new(runtime: CpuRuntime) -> Self {
        Executors {
            sql: SqlExecutor::new(runtime.clone()),
            dense: DenseExecutor::new(runtime.clone()),
            tpch: TpchExecutor::new(runtime),
            shell: ShellExecutor,
            policy: policy::Policy::default(),
        }
    }

    /// What this deployment lets tasks do (checked before every stage).
    pub fn with_policy(mut self, policy: policy::Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Where `engine: ballista` tasks run (none: they fail saying how to configure one).
    pub fn with_ballista(mut self, ballista: ballista::Ballista) -> Self {
        self.sql = self.sql.with_ballista(ballista);
        self
    }

    /// Runs `stage` on the executor for its kind of work.
    pub async fn execute(&self, stage: &Stage, log: &LogSink) -> Result<StageOutcome, StageError> {
        self.policy.check(stage)?;
        if let Some(condition) = &stage.condition {
            if !self
                .sql
                .condition(condition, &stage.inputs, log, "when.sql")
                .await?
            {
                let why = "skipped: `when.sql` was false (false, NULL or no row)";
                log.system(why);
                let (mut rows, mut bytes) = (None, None);
                if let (Work::Sql { query }, Some(dir)) = (&stage.work, &stage.output_dir) {
                    let (r, b) = self.sql.write_empty(query, &stage.inputs, dir, log).await?;
                    (rows, bytes) = (Some(r), Some(b));
                }
                return Ok(StageOutcome {
                    note: Some(why.into()),
                    skipped: true,
                    ..StageOutcome::on_cpu(rows, bytes)
                });
            }
            log.system("`when.sql` was true: the task runs");
        }
        // A kind with no GPU path asked for one: its route says so, and so does its attempt.
        let cpu_only = match stage.routed().route {
            Route::Cpu { note: Some(note) } => {
                log.system(&note);
                Some(note)
            }
            _ => None,
        };
        let mut outcome = match stage.work {
            Work::Sql { .. } => self.sql.execute(stage, log).await,
            Work::Tpch { .. } => self.tpch.execute(stage, log).await,
            Work::Shell { .. } => match self.shell.execute(stage, log).await {
                // `produces_data: true`: what the command wrote is the task's output.
                Ok(outcome) => match &stage.output_dir {
                    Some(dir) => {
                        let (rows, bytes) = self.sql.adopt_output(dir, log).await?;
                        Ok(StageOutcome {
                            rows: Some(rows),
                            bytes: Some(bytes),
                            ..outcome
                        })
                    }
                    None => Ok(outcome),
                },
                Err(e) => Err(e),
            },
            Work::Empty => Ok(StageOutcome::on_cpu(None, None)),
            Work::Map { ref over, max } => {
                let values = match over {
                    MapOver::Sql(query) => self.sql.values(query, &stage.inputs, log, max).await?,
                    MapOver::Values(values) => {
                        amdahl_dags::mapping::check_count(values.len(), max)
                            .map_err(StageError::Failed)?;
                        values.clone()
                    }
                };
                log.system(&match values.len() {
                    0 => "mapped over an empty list: the task is skipped".to_string(),
                    n => format!("mapped over {n} values: {n} instances"),
                });
                let empty = values.is_empty();
                Ok(StageOutcome {
                    rows: Some(values.len() as u64),
                    mapped: Some(values),
                    skipped: empty,
                    note: empty.then(|| "mapped over an empty list".to_string()),
                    ..StageOutcome::on_cpu(None, None)
                })
            }
            Work::Wait { ref probe, .. } => wait::poke(probe, &self.sql, &stage.inputs, log).await,
            Work::Knn { .. } | Work::Matmul { .. } | Work::Score { .. } | Work::Vectors { .. } => {
                self.dense.execute(stage, log).await
            }
        }?;
        if cpu_only.is_some() {
            outcome.note = cpu_only;
        }
        Ok(outcome)
    }
}
