//! The first rows of a task's published output, for the task page, the API and `amdahl tasks
//! preview`: its columns and at most [`MAX_ROWS`] rows, read from the start of its Parquet
//! files in name order (local or in object storage): each file's footer and page index, then
//! only the pages that hold those rows, never whole files. Bounded in time ([`TIME_LIMIT`])
//! and cell width ([`MAX_CELL`]). The whole output's row count and size are the ones recorded
//! when it was published.

use std::time::Duration;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{
    PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader,
};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use amdahl_dags::Location;

/// Most rows a preview returns.
pub const MAX_ROWS: usize = 1000;
/// Most characters of a cell; longer ones end in `…`.
pub const MAX_CELL: usize = 200;
/// How long a preview may take.
pub const TIME_LIMIT: Duration = Duration::from_secs(10);

/// The start of an output.
#[derive(Clone, Debug, PartialEq)]
pub struct Preview {
    /// Each column's name and Arrow type.
    pub columns: Vec<(String, String)>,
    /// Cells as text (NULL as `NULL`).
    pub rows: Vec<Vec<String>>,
    /// Parquet files in the output.
    pub files: usize,
}

/// The first `limit` rows (at most [`MAX_ROWS`]) of the Parquet output at `location` (a file
/// or a folder of parts, read in name order).
pub async fn preview(location: &Location, limit: usize) -> Result<Preview, String> {
    tokio::time::timeout(TIME_LIMIT, read(location, limit.clamp(1, MAX_ROWS)))
        .await
        .map_err(|_| {
            format!(
                "reading the start of {location} took more than {}s",
                TIME_LIMIT.as_secs()
            )
        })?
}

/// The output's store and its Parquet files, in name order (names starting with `.` or `_`
/// left out, as readers of a published output leave them).
async fn parts(location: &Location) -> Result<(Arc<dyn ObjectStore>, Vec<ObjectPath>), String> {
    let (store, prefix): (Arc<dyn ObjectStore>, ObjectPath) = match location {
        Location::Local(path) => {
            let path = path
                .canonicalize()
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let prefix = ObjectPath::from_filesystem_path(&path).map_err(|e| e.to_string())?;
            (Arc::new(LocalFileSystem::new()), prefix)
        }
        Location::Object(object) => {
            let (store, _, key) = crate::objects::store(object)?;
            (store, key)
        }
    };
    // A single file is its own only part.
    if store.head(&prefix).await.is_ok() {
        return Ok((store, vec![prefix]));
    }
    let mut found: Vec<ObjectPath> = store
        .list(Some(&prefix))
        .filter_map(|meta| async move { meta.ok().map(|m| m.location) })
        .filter(|path| {
            let name = path.filename().unwrap_or_default();
            std::future::ready(
                name.ends_with(".parquet") && !name.starts_with('.') && !name.starts_with('_'),
            )
        })
        .collect()
        .await;
    found.sort();
    if found.is_empty() {
        return Err(format!("{location} holds no Parquet file"));
    }
    Ok((store, found))
}

async fn read(location: &Location, limit: usize) -> Result<Preview, String> {
    let (store, files) = parts(location).await?;
    let mut columns = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for file in &files {
        if rows.len() >= limit {
            break;
        }
        let failed =
            |e: datafusion::parquet::errors::ParquetError| format!("cannot read {file}: {e}");
        let size = store
            .head(file)
            .await
            .map_err(|e| format!("cannot read {file}: {e}"))?
            .size;
        let reader = Part {
            store: store.clone(),
            path: file.clone(),
            size,
        };
        // The page index lets the reader fetch only the pages that hold the first rows, not
        // whole column chunks.
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options)
            .await
            .map_err(failed)?;
        if columns.is_empty() {
            columns = builder
                .schema()
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().to_string()))
                .collect();
        }
        let wanted = limit - rows.len();
        let mut stream = builder
            .with_limit(wanted)
            .with_batch_size(wanted)
            .build()
            .map_err(failed)?;
        while let Some(batch) = stream.next().await {
            rows.extend(text_rows(&batch.map_err(failed)?)?);
            if rows.len() >= limit {
                break;
            }
        }
    }
    rows.truncate(limit);
    Ok(Preview {
        columns,
        rows,
        files: files.len(),
    })
}

/// One Parquet file of an output, read by ranges from its store.
struct Part {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
}

impl AsyncFileReader for Part {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<bytes::Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_page_index_policy(PageIndexPolicy::Optional)
                .with_prefetch_hint(Some(64 << 10))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// The answer of a `SELECT count(*)`: one row, one 64-bit integer.
pub fn single_count(batches: &[RecordBatch]) -> Option<u64> {
    batches.first().filter(|b| b.num_rows() == 1).and_then(|b| {
        b.column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .map(|c| c.value(0).max(0) as u64)
    })
}

/// A batch's rows as text, each cell at most [`MAX_CELL`] characters.
fn text_rows(batch: &RecordBatch) -> Result<Vec<Vec<String>>, String> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot show a column: {e}"))?;
    Ok((0..batch.num_rows())
        .map(|row| {
            formatters
                .iter()
                .map(|f| {
                    let text = f.value(row).to_string();
                    match text.char_indices().nth(MAX_CELL) {
                        Some((cut, _)) => format!("{}…", &text[..cut]),
                        None => text,
                    }
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_rows_of_a_parquet_folder() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        let long = "x".repeat(MAX_CELL + 5);
        let frame = ctx
            .sql(&format!(
                "SELECT id, CASE WHEN id = 2 THEN NULL ELSE '{long}' END AS note \
                 FROM (VALUES (1), (2), (3)) AS t(id) ORDER BY id"
            ))
            .await
            .unwrap();
        frame
            .write_parquet(
                &format!("{}/", dir.path().display()),
                datafusion::dataframe::DataFrameWriteOptions::new(),
                None,
            )
            .await
            .unwrap();
        std::fs::write(dir.path().join("_SUCCESS"), "a manifest, not data").unwrap();
        let shown = preview(&Location::Local(dir.path().to_path_buf()), 2)
            .await
            .unwrap();
        assert_eq!(
            shown.columns,
            [
                ("id".to_string(), "Int64".to_string()),
                ("note".to_string(), "Utf8".to_string())
            ]
        );
        assert_eq!(shown.files, 1);
        assert_eq!(shown.rows.len(), 2);
        assert_eq!(shown.rows[0][0], "1");
        assert_eq!(shown.rows[0][1], format!("{}…", "x".repeat(MAX_CELL)));
        assert_eq!(shown.rows[1], ["2", "NULL"]);
        let missing = preview(&Location::Local(dir.path().join("nope")), 10).await;
        assert!(missing.is_err());
    }
}
