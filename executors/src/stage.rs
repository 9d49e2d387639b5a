//! The executor contract: what a stage receives, what it must produce, how it fails.
//!
//! The scheduler hands an executor a [`Stage`]: one attempt of one task with its templates
//! already rendered, the tables it may read, and where to write its output. The executor
//! returns a [`StageOutcome`] or a [`StageError`]. Executors never touch the state store; the
//! scheduler records what they report.

use std::future::Future;
use std::path::PathBuf;

use tokio::sync::mpsc;

use amdahl_dags::{Activation, DevicePreference, Metric, TpchTable};
use amdahl_planner::route::route;
pub use amdahl_planner::route::{Ask, Route, Routed};

/// What a stage does, with its templates rendered.
#[derive(Clone, Debug)]
pub enum Work {
    Sql {
        query: String,
    },
    Shell {
        command: String,
    },
    Tpch {
        table: TpchTable,
        scale_factor: f64,
    },
    /// Random vectors: `rows` rows of `dim` floats (columns `id`, `vector`).
    Vectors {
        rows: u64,
        dim: u32,
        seed: u64,
    },
    /// Nothing: the stage succeeds at once, without a process or a thread.
    Empty,
    /// One poke of a sensor (see [`crate::wait`]): the outcome says whether the wait is over.
    Wait {
        probe: crate::wait::Probe,
        /// Time between pokes and the longest wait from the first (the runner reads them).
        poke: std::time::Duration,
        timeout: std::time::Duration,
        soft_fail: bool,
    },
    /// The expansion of a mapped task (`map:`): read its values, at most `max` of them; the
    /// runner creates an instance per value (see [`StageOutcome::mapped`]).
    Map {
        over: MapOver,
        max: usize,
    },
    /// Nearest neighbours of each `queries` row among the `base` rows (tables by name).
    Knn {
        base: String,
        queries: String,
        column: String,
        k: u32,
        metric: Metric,
    },
    /// `left · rightᵀ` over the rows' vectors.
    Matmul {
        left: String,
        right: String,
        column: String,
    },
    /// An MLP over each row's vector; `model` is resolved (absolute or from the DAG folder).
    Score {
        input: String,
        column: String,
        model: PathBuf,
        activation: Activation,
    },
}

/// Where a mapped task's values come from, rendered for the run.
#[derive(Clone, Debug, PartialEq)]
pub enum MapOver {
    /// A query over the stage's inputs returning one column.
    Sql(String),
    /// A list already read (a list param).
    Values(Vec<serde_json::Value>),
}

impl Work {
    pub fn kind(&self) -> &'static str {
        match self {
            Work::Sql { .. } => "sql",
            Work::Shell { .. } => "shell",
            Work::Tpch { .. } | Work::Vectors { .. } => "generate",
            Work::Empty => "empty",
            Work::Wait { .. } => "wait",
            Work::Map { .. } => "map",
            Work::Knn { .. } => "knn",
            Work::Matmul { .. } => "matmul",
            Work::Score { .. } => "score",
        }
    }
}

pub use amdahl_planner::TableInput;

/// One attempt of one task, ready to execute.
#[derive(Clone, Debug)]
pub struct Stage {
    pub dag_id: String,
    pub run_id: i64,
    pub task_id: String,
    pub attempt: u32,
    pub work: Work,
    pub inputs: Vec<TableInput>,
    /// For data-producing work: the folder to write Parquet files into. The executor must
    /// leave it holding exactly the output of this attempt (stale files removed).
    pub output_dir: Option<PathBuf>,
    /// Working directory for shell commands: the DAG file's folder.
    pub work_dir: PathBuf,
    /// Where the task asked to run: `gpu` makes a stage that can run on a GPU do so, and one
    /// that cannot say why in [`StageOutcome::note`] and its log.
    pub device: DevicePreference,
    /// For `device: auto`: where placement decided it runs and why (`None`: no decision was
    /// made, and a usable GPU takes inputs from [`crate::gpu::AUTO_GPU_BYTES`] on).
    pub placement: Option<amdahl_placement::Placement>,
    /// Where this attempt runs, decided once from the fields above (see [`Stage::routed`]);
    /// the runner sets it before the stage is executed and records it. `None`: decided when
    /// the stage is executed (a stage built by hand, as tests and benchmarks do).
    pub route: Option<Routed>,
    /// `sql` stages: the parts the largest input is split into (1: not split); see
    /// [`crate::shards`].
    pub shards: u32,
    /// `sql` stages: what runs the query (see [`crate::ballista`]).
    pub engine: amdahl_dags::Engine,
    /// `shell` stages: the DAG's secrets as (environment variable, value), resolved on this
    /// worker. Their values are masked in whatever the attempt stores (see [`Stage::mask`]).
    pub secrets: Vec<(String, String)>,
    /// The task's `when: { sql }`, rendered: decided over `inputs` before the work runs; false
    /// skips the task (see [`StageOutcome::skipped`]).
    pub condition: Option<String>,
    /// The task's `output:`, rendered for the run: where the result is also written once the
    /// attempt succeeded (see [`crate::export`]); the runner does it, before publication.
    pub export: Option<crate::export::Export>,
}

impl Stage {
    /// The stage's route: the one it carries, or the planner's decision for it in this
    /// process now (the GPU's state read here, input sizes only if the decision needs them).
    pub fn routed(&self) -> Routed {
        if let Some(routed) = &self.route {
            return routed.clone();
        }
        let ask = self.ask();
        // Only a kind with a GPU path asks about the GPU: an `empty` or `shell` stage (the
        // hot path of wide runs) routes without copying the GPU's state.
        let problem = ask
            .gpu_path
            .then(crate::gpu::health::unusable_reason)
            .flatten();
        route(&ask, problem.as_deref(), || {
            self.inputs
                .iter()
                .filter_map(|i| i.path().map(amdahl_planner::estimate::path_bytes))
                .sum()
        })
    }

    /// What the task asked for, as the route decision reads it.
    pub fn ask(&self) -> Ask<'_> {
        Ask {
            kind: self.work.kind(),
            gpu_path: matches!(
                self.work,
                Work::Sql { .. } | Work::Knn { .. } | Work::Matmul { .. } | Work::Score { .. }
            ),
            sql: matches!(self.work, Work::Sql { .. }),
            device: self.device,
            engine: self.engine,
            shards: self.shards,
            placement: self.placement.as_ref(),
        }
    }

    /// What this attempt runs after templating, as the attempt records it: the query (after
    /// its `when.sql`, when it has one), the command (secrets masked), the settings of the
    /// other kinds; `None` for `empty`.
    pub fn rendered(&self) -> Option<String> {
        let work = match &self.work {
            Work::Sql { query } => query.trim_end().to_string(),
            Work::Shell { command } => self.mask(command.trim_end()),
            Work::Tpch {
                table,
                scale_factor,
            } => format!(
                "generate TPC-H `{}` at scale factor {scale_factor}",
                table.name()
            ),
            Work::Vectors { rows, dim, seed } => {
                format!("generate {rows} random vectors of {dim} floats (seed {seed})")
            }
            Work::Empty => return None,
            Work::Map { over, max } => match over {
                MapOver::Sql(query) => {
                    format!("-- map over (at most {max} values)\n{}", query.trim_end())
                }
                MapOver::Values(values) => format!(
                    "map over {} values (at most {max}): {}",
                    values.len(),
                    serde_json::Value::Array(values.clone())
                ),
            },
            Work::Wait {
                probe,
                poke,
                timeout,
                soft_fail,
            } => format!(
                "wait for {probe}: a poke every {}, for at most {}{}",
                amdahl_dags::model::format_duration(*poke),
                amdahl_dags::model::format_duration(*timeout),
                if *soft_fail { " (soft_fail)" } else { "" }
            ),
            Work::Knn {
                base,
                queries,
                column,
                k,
                metric,
            } => format!(
                "knn: the {k} nearest rows of `{base}` to each row of `{queries}` by `{column}` \
                 ({})",
                metric.name()
            ),
            Work::Matmul {
                left,
                right,
                column,
            } => format!("matmul: `{left}` · `{right}`ᵀ over `{column}`"),
            Work::Score {
                input,
                column,
                model,
                activation,
            } => format!(
                "score `{input}` by `{column}` with {} ({})",
                model.display(),
                activation.name()
            ),
        };
        Some(match &self.condition {
            Some(condition) => format!("-- when.sql\n{}\n\n{work}", condition.trim_end()),
            None => work,
        })
    }

    /// `text` with every secret value of the stage replaced by `***`.
    pub fn mask(&self, text: &str) -> String {
        mask(text, self.secrets.iter().map(|(_, value)| value.as_str()))
    }
}

/// Secret values in a text replaced by `***` (see [`amdahl_dags::mask`]).
pub use amdahl_dags::mask;

/// Which device a stage ran on: placement's [`amdahl_placement::Place`], one enum from the
/// route to the store (which writes it as `cpu`, `gpu` or `cluster`).
pub use amdahl_placement::Place as Device;

/// What a successful stage reports.
#[derive(Clone, Debug, PartialEq)]
pub struct StageOutcome {
    pub device: Device,
    /// Rows and bytes written, for data-producing stages.
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    /// Why the stage ran on `device` when the task asked for another (no usable GPU, a plan
    /// the GPU cannot run, a GPU failure rerun on the CPU). The executor logs it too.
    pub note: Option<String>,
    /// Where the stage's time went, when the executor measured it.
    pub timings: Option<StageTimings>,
    /// The task's `when: { sql }` was false: the stage did nothing, and the task is
    /// `skipped` (the note says why).
    pub skipped: bool,
    /// A sensor's poke found nothing yet: the task waits for its next poke (the note says
    /// what it looked for).
    pub waiting: bool,
    /// A mapped task's expansion: its values, one instance each (none: the task is skipped).
    pub mapped: Option<Vec<serde_json::Value>>,
    /// The physical plan a query ran (DataFusion's, then the GPU kernel plan when it ran
    /// there), for the attempt's record.
    pub plan: Option<String>,
}

/// Milliseconds a stage spent on each kind of work (the rest of its time is overhead:
/// planning, compiling, waiting). Reading that a query engine interleaves with its operators
/// counts as compute.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StageTimings {
    /// Reading inputs and writing outputs.
    pub io_ms: f64,
    /// Copies between host and device, staging in pinned memory included.
    pub transfer_ms: f64,
    pub compute_ms: f64,
}

impl StageOutcome {
    pub fn on_cpu(rows: Option<u64>, bytes: Option<u64>) -> Self {
        StageOutcome {
            device: Device::Cpu,
            rows,
            bytes,
            note: None,
            timings: None,
            skipped: false,
            waiting: false,
            mapped: None,
            plan: None,
        }
    }

    /// The same outcome with its timings.
    pub fn timed(mut self, timings: StageTimings) -> Self {
        self.timings = Some(timings);
        self
    }
}

/// Why a stage did not succeed. Timeouts and cancellation are the caller's doing: it drops the
/// future returned by [`Executor::execute`], and every executor MUST stop its work when that
/// happens (kill the process group, abort the query, stop generating).
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The user's work failed (bad SQL at run time, non-zero exit, unreadable input).
    #[error("{0}")]
    Failed(String),
    /// The stage needs more memory than the worker's budget (`--memory`) leaves it; the
    /// message says how much, for what, and what to do.
    #[error("{0}")]
    OutOfMemory(String),
    /// The executor itself could not run (I/O on the data root, runtime gone).
    #[error("executor error: {0}")]
    Internal(String),
}

/// Which stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Lines the executor writes about the stage (plans, row counts).
    System,
}

impl LogStream {
    pub fn name(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::System => "system",
        }
    }
}

#[derive(Clone, Debug)]
pub struct LogLine {
    pub stream: LogStream,
    pub text: String,
}

/// Where an executor writes a stage's log lines. Sending never blocks; lines sent after the
/// receiver is gone are dropped.
#[derive(Clone, Debug)]
pub struct LogSink {
    sender: mpsc::UnboundedSender<LogLine>,
}

impl LogSink {
    pub fn channel() -> (LogSink, mpsc::UnboundedReceiver<LogLine>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (LogSink { sender }, receiver)
    }

    pub fn line(&self, stream: LogStream, text: impl Into<String>) {
        let _ = self.sender.send(LogLine {
            stream,
            text: text.into(),
        });
    }

    pub fn system(&self, text: impl Into<String>) {
        self.line(LogStream::System, text);
    }
}

/// Runs stages of some kind of work.
///
/// Implementations MUST:
/// - run heavy work off the caller's async runtime (the scheduler's loop must stay responsive);
/// - stop all work when the returned future is dropped (this is how timeouts and cancellation
///   reach the executor);
/// - write data output only into `stage.output_dir`, replacing what an earlier attempt left;
/// - report user errors as [`StageError::Failed`] with a message a user can act on.
pub trait Executor {
    fn execute(
        &self,
        stage: &Stage,
        log: &LogSink,
    ) -> impl Future<Output = Result<StageOutcome, StageError>> + Send;
}
