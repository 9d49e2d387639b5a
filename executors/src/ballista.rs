//! `engine: ballista`: a `sql` task's query runs on a Ballista cluster (Apache DataFusion's
//! distributed engine) instead of in the worker. The worker plans nothing itself: it registers
//! the task's inputs in a session bound to the cluster's scheduler, which plans and splits the
//! query over its executors; the result streams back and the worker writes it as the task's
//! output like any other. Inputs must be where the cluster can read them: object storage (a
//! shared data root), or local paths for the in-process cluster.
//!
//! The cluster is `--ballista df://HOST:50050` (a running scheduler) or `--ballista standalone`
//! (a scheduler and an executor started in this process on first use, sharing the worker's
//! DataFusion environment: its memory pool and object stores). Ballista support is the
//! `ballista` cargo feature; without it such a task fails saying how to get it.

use std::fmt;

use crate::stage::{LogSink, StageError, StageOutcome, TableInput};

/// Where `engine: ballista` tasks run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cluster {
    /// A scheduler and an executor in this process (trying it out; tests).
    Standalone,
    /// A running scheduler, as `df://host:port` (50050 when no port is given).
    Remote(String),
}

impl Cluster {
    /// `standalone`, or a scheduler's address: `df://host[:port]` (also `http://…`).
    /// The cluster as `--ballista` names it, and as its profile is named.
    pub fn name(&self) -> &str {
        match self {
            Cluster::Standalone => "standalone",
            Cluster::Remote(url) => url,
        }
    }

    pub fn parse(text: &str) -> Result<Cluster, String> {
        let text = text.trim();
        if text == "standalone" {
            return Ok(Cluster::Standalone);
        }
        let url = url::Url::parse(text).map_err(|e| {
            format!(
                "`{text}` is neither `standalone` nor a scheduler address like \
                 df://HOST:50050 ({e})"
            )
        })?;
        if !matches!(url.scheme(), "df" | "http") || url.host_str().is_none_or(str::is_empty) {
            return Err(format!(
                "`{text}` is neither `standalone` nor a scheduler address like df://HOST:50050"
            ));
        }
        Ok(Cluster::Remote(text.to_string()))
    }
}

impl fmt::Display for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cluster::Standalone => f.write_str("the in-process standalone cluster"),
            Cluster::Remote(url) => write!(f, "the cluster at {url}"),
        }
    }
}

/// What a worker knows of Ballista: the cluster, if configured, and (with the feature) the
/// in-process cluster once started.
#[derive(Clone, Default)]
pub struct Ballista {
    cluster: Option<Cluster>,
    #[cfg(feature = "ballista")]
    standalone: std::sync::Arc<tokio::sync::OnceCell<datafusion::prelude::SessionContext>>,
}

impl Ballista {
    pub fn new(cluster: Option<Cluster>) -> Self {
        Ballista {
            cluster,
            #[cfg(feature = "ballista")]
            standalone: Default::default(),
        }
    }

    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// Runs `query` over `inputs` on the cluster, writing its result into `output_dir`.
    // Each build returns from its own branch below.
    #[cfg_attr(not(feature = "ballista"), allow(clippy::needless_return))]
    pub async fn run(
        &self,
        query: &str,
        inputs: &[TableInput],
        output_dir: &std::path::Path,
        pool: crate::runtime::QueryPool,
        log: &LogSink,
    ) -> Result<StageOutcome, StageError> {
        let Some(cluster) = &self.cluster else {
            return Err(StageError::Failed(
                "the task has `engine: ballista`, but this worker knows no Ballista cluster: \
                 start it with `--ballista df://HOST:50050` (a running scheduler) or \
                 `--ballista standalone` (an in-process cluster), or set AMDAHL_BALLISTA"
                    .into(),
            ));
        };
        #[cfg(not(feature = "ballista"))]
        {
            let _ = (cluster, query, inputs, output_dir, pool, log);
            return Err(StageError::Failed(
                "the task has `engine: ballista`, but this amdahl was built without Ballista: \
                 build it with `cargo build --release --features ballista`"
                    .into(),
            ));
        }
        #[cfg(feature = "ballista")]
        return self
            .run_on(cluster, query, inputs, output_dir, pool, log)
            .await;
    }

    #[cfg(feature = "ballista")]
    async fn run_on(
        &self,
        cluster: &Cluster,
        query: &str,
        inputs: &[TableInput],
        output_dir: &std::path::Path,
        pool: crate::runtime::QueryPool,
        log: &LogSink,
    ) -> Result<StageOutcome, StageError> {
        use std::sync::Arc;
        use std::time::Instant;

        use crate::session::{query_only, register_input};
        use crate::stage::StageTimings;
        use crate::storage::{PartWriter, finish_output, ms, reset_dir, stream_into};

        let started = Instant::now();
        let ctx = self.session(cluster, &pool).await.map_err(|e| {
            StageError::Failed(format!("cannot reach {cluster}: {}", e.find_root()))
        })?;
        for input in inputs {
            register_input(&ctx, input).await.map_err(|e| {
                StageError::Failed(format!("table `{}`: {}", input.name, e.find_root()))
            })?;
        }
        let frame = ctx
            .sql_with_options(query, query_only())
            .await
            .map_err(|e| StageError::Failed(format!("query failed to plan: {}", e.find_root())))?;
        let task_ctx = frame.task_ctx();
        let plan = frame
            .create_physical_plan()
            .await
            .map_err(|e| StageError::Failed(format!("query failed to plan: {}", e.find_root())))?;
        // The top of the plan is the job handed to the scheduler (`DistributedQueryExec`).
        log.system(format!("running the query on {cluster} ({})", plan.name()));
        let stream =
            datafusion::physical_plan::execute_stream(plan, Arc::new(task_ctx)).map_err(|e| {
                StageError::Failed(format!(
                    "{cluster} did not run the query: {}",
                    e.find_root()
                ))
            })?;
        reset_dir(output_dir)?;
        let mut writer = PartWriter::create(output_dir, 0, stream.schema())?;
        let (compute, mut io) = stream_into(stream, &mut writer).await?;
        let closing = Instant::now();
        let (rows, bytes) = finish_output(writer, output_dir, log)?;
        io += ms(closing);
        let mut outcome = StageOutcome::on_cpu(Some(rows), Some(bytes)).timed(StageTimings {
            io_ms: io,
            transfer_ms: 0.0,
            compute_ms: compute,
        });
        outcome.device = crate::stage::Device::Cluster;
        outcome.note = Some(format!(
            "ran on Ballista, {cluster}, in {}",
            amdahl_placement::seconds(ms(started) / 1e3)
        ));
        Ok(outcome)
    }

    /// A session of its own (its own tables) bound to the cluster's scheduler.
    #[cfg(feature = "ballista")]
    async fn session(
        &self,
        cluster: &Cluster,
        pool: &crate::runtime::QueryPool,
    ) -> datafusion::error::Result<datafusion::prelude::SessionContext> {
        use std::sync::Arc;

        use ballista::prelude::{SessionConfigExt, SessionContextExt};
        use datafusion::catalog::MemoryCatalogProviderList;
        use datafusion::execution::SessionStateBuilder;
        use datafusion::prelude::{SessionConfig, SessionContext};

        let config = || {
            let mut config = SessionConfig::new_with_ballista()
                .with_target_partitions(pool.partitions.max(1))
                .with_ballista_standalone_parallelism(pool.partitions.max(1));
            config.options_mut().sql_parser.collect_spans = true;
            config
        };
        match cluster {
            Cluster::Remote(url) => {
                let state = SessionStateBuilder::new()
                    .with_config(config())
                    .with_runtime_env(pool.env.clone())
                    .with_default_features()
                    .build();
                SessionContext::remote_with_state(url, state).await
            }
            Cluster::Standalone => {
                let started = self
                    .standalone
                    .get_or_try_init(|| async {
                        let state = SessionStateBuilder::new()
                            .with_config(config())
                            .with_runtime_env(pool.env.clone())
                            .with_default_features()
                            .build();
                        SessionContext::standalone_with_state(state).await
                    })
                    .await?;
                // The cluster's planner and environment, with a catalog of its own so that
                // tasks running at once do not see each other's tables.
                let state = SessionStateBuilder::new_from_existing(started.state())
                    .with_config(
                        started
                            .state()
                            .config()
                            .clone()
                            .with_create_default_catalog_and_schema(true),
                    )
                    .with_catalog_list(Arc::new(MemoryCatalogProviderList::new()))
                    .build();
                Ok(SessionContext::new_with_state(state))
            }
        }
    }
}
