//! The DataFusion session every SQL plan is made in: settings, the statements allowed, and
//! inputs registered as tables (execution, sharded execution, validation, estimates).

use std::path::{Path, PathBuf};

use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionConfig};

use amdahl_dags::{DatasetFormat, Location};

/// Session settings shared by execution and validate-time planning.
pub fn session_config(target_partitions: usize) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_target_partitions(target_partitions.max(1))
        .with_information_schema(false);
    config.options_mut().sql_parser.collect_spans = true;
    config
}

/// Statements a `sql` task may hold: queries only, no DDL, DML or `SET`.
pub fn query_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Registers an input under its name (an object storage input: its store too).
pub async fn register_input(
    ctx: &SessionContext,
    input: &TableInput,
) -> datafusion::error::Result<()> {
    let path = match &input.location {
        Location::Local(path) => path_string(path),
        Location::Object(object) => crate::objects::register(ctx, object)
            .await
            .map_err(DataFusionError::Execution)?,
    };
    match input.format {
        DatasetFormat::Parquet => {
            ctx.register_parquet(&input.name, &path, ParquetReadOptions::default())
                .await
        }
        DatasetFormat::Csv => {
            ctx.register_csv(&input.name, &path, CsvReadOptions::new().has_header(true))
                .await
        }
    }
}

/// DataFusion treats a path ending in `/` as a folder of files.
fn path_string(path: &Path) -> String {
    let mut text = path.display().to_string();
    if path.is_dir() && !text.ends_with('/') {
        text.push('/');
    }
    text
}

/// A table a SQL stage can read: an upstream task's output or a declared dataset.
#[derive(Clone, Debug)]
pub struct TableInput {
    /// The name SQL uses.
    pub name: String,
    /// A file, or a folder of files of the same format, here or in object storage.
    pub location: Location,
    pub format: DatasetFormat,
}

impl TableInput {
    /// A table in a local file or folder.
    pub fn local(name: impl Into<String>, path: impl Into<PathBuf>, format: DatasetFormat) -> Self {
        TableInput {
            name: name.into(),
            location: Location::Local(path.into()),
            format,
        }
    }

    /// Its local path, when it is on this machine.
    pub fn path(&self) -> Option<&Path> {
        self.location.local()
    }
}

impl TableInput {
    /// A dataset as a run reads it (a templated `uri` rendered for the run).
    pub fn for_run(
        dataset: &amdahl_dags::Dataset,
        context: &amdahl_dags::RunContext,
        base_dir: &std::path::Path,
    ) -> Result<Self, String> {
        Ok(TableInput {
            name: dataset.name.clone(),
            location: dataset.location_for(context, base_dir)?,
            format: dataset.format,
        })
    }
}

impl From<&amdahl_dags::Dataset> for TableInput {
    fn from(dataset: &amdahl_dags::Dataset) -> Self {
        TableInput {
            name: dataset.name.clone(),
            location: dataset.location.clone(),
            format: dataset.format,
        }
    }
}
