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

/// Registers an input under its name (an object storage input: its store too). A prefix in
/// object storage with a `_SUCCESS` manifest is read as the files the manifest names, and
/// nothing else under it (see [`crate::objects::manifest_urls`]).
pub async fn register_input(
    ctx: &SessionContext,
    input: &TableInput,
) -> datafusion::error::Result<()> {
    if !input.parts.is_empty() {
        let mut files = Vec::new();
        for part in std::iter::once(&input.location).chain(&input.parts) {
            files.extend(object_files(ctx, part).await?);
        }
        return register_files(ctx, input, &files).await;
    }
    let path = match &input.location {
        Location::Local(path) => path_string(path),
        Location::Object(_) => {
            let files = object_files(ctx, &input.location).await?;
            match files.as_slice() {
                // The object, a prefix without a manifest (DataFusion lists it), or the one
                // file a manifest names.
                [path] => path.clone(),
                _ => return register_files(ctx, input, &files).await,
            }
        }
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

/// The URLs one part of a table stands for: the files its manifest names, or the object or
/// prefix itself. Registers its store.
async fn object_files(
    ctx: &SessionContext,
    part: &Location,
) -> datafusion::error::Result<Vec<String>> {
    let Location::Object(object) = part else {
        return Err(DataFusionError::Execution(format!(
            "{part}: a table read in parts is read from object storage"
        )));
    };
    let path = crate::objects::register(ctx, object)
        .await
        .map_err(DataFusionError::Execution)?;
    let prefix = amdahl_dags::ObjectLocation {
        url: path.clone(),
        options: object.options.clone(),
    };
    Ok(crate::objects::manifest_urls(&prefix)
        .await
        .map_err(DataFusionError::Execution)?
        .unwrap_or_else(|| vec![path]))
}

/// Registers the table `input.name` as exactly `files` (URLs of one store, already
/// registered), read with the options `register_parquet`/`register_csv` would use.
async fn register_files(
    ctx: &SessionContext,
    input: &TableInput,
    files: &[String],
) -> datafusion::error::Result<()> {
    use datafusion::datasource::file_format::options::ReadOptions;
    use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
    if files.is_empty() {
        return Err(DataFusionError::Execution(format!(
            "the manifest at {} names no files",
            input.location
        )));
    }
    let urls = files
        .iter()
        .map(ListingTableUrl::parse)
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let (config, table_options) = (ctx.copied_config(), ctx.copied_table_options());
    let options = match input.format {
        DatasetFormat::Parquet => {
            ParquetReadOptions::default().to_listing_options(&config, table_options)
        }
        DatasetFormat::Csv => CsvReadOptions::new()
            .has_header(true)
            .to_listing_options(&config, table_options),
    }
    // The manifest names each file: its extension is not checked again.
    .with_file_extension("");
    let table = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .infer_schema(&ctx.state())
        .await?;
    ctx.register_table(
        &input.name,
        std::sync::Arc::new(ListingTable::try_new(table)?),
    )?;
    Ok(())
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
    /// Further locations read as part of the same table, after `location`: the outputs of a
    /// mapped task's instances in object storage, one prefix each. Empty for every other
    /// input; only SQL stages are given inputs with parts (see `runner::attempt`).
    pub parts: Vec<Location>,
}

impl TableInput {
    /// A table in a local file or folder.
    pub fn local(name: impl Into<String>, path: impl Into<PathBuf>, format: DatasetFormat) -> Self {
        TableInput {
            name: name.into(),
            location: Location::Local(path.into()),
            format,
            parts: Vec::new(),
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
            parts: Vec::new(),
        })
    }
}

impl From<&amdahl_dags::Dataset> for TableInput {
    fn from(dataset: &amdahl_dags::Dataset) -> Self {
        TableInput {
            name: dataset.name.clone(),
            location: dataset.location.clone(),
            format: dataset.format,
            parts: Vec::new(),
        }
    }
}
