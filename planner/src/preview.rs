//! The first rows of a task's published output, for the task page, the API and `amdahl tasks
//! preview`: its columns, at most [`MAX_ROWS`] rows read from the start of its Parquet files
//! (local or in object storage; DataFusion stops reading once it has them), and the row count
//! from the files' footers. Bounded in time ([`TIME_LIMIT`]) and cell width ([`MAX_CELL`]).

use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;

use amdahl_dags::{DatasetFormat, Location};

use crate::session::{TableInput, register_input, session_config};

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
    /// Rows in the whole output.
    pub total_rows: u64,
}

/// The first `limit` rows (at most [`MAX_ROWS`]) of the Parquet output at `location`.
pub async fn preview(location: &Location, limit: usize) -> Result<Preview, String> {
    tokio::time::timeout(TIME_LIMIT, read(location, limit.min(MAX_ROWS)))
        .await
        .map_err(|_| {
            format!(
                "reading the start of {location} took more than {}s",
                TIME_LIMIT.as_secs()
            )
        })?
}

async fn read(location: &Location, limit: usize) -> Result<Preview, String> {
    let ctx = SessionContext::new_with_config(session_config(1));
    let input = TableInput {
        name: "output".into(),
        location: location.clone(),
        format: DatasetFormat::Parquet,
    };
    register_input(&ctx, &input)
        .await
        .map_err(|e| format!("cannot read {location}: {}", e.find_root()))?;
    let failed = |e: datafusion::error::DataFusionError| {
        format!("cannot read {location}: {}", e.find_root())
    };
    let frame = ctx
        .sql(&format!("SELECT * FROM output LIMIT {limit}"))
        .await
        .map_err(failed)?;
    let columns = frame
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect();
    let batches = frame.collect().await.map_err(failed)?;
    let mut rows = Vec::new();
    for batch in &batches {
        rows.extend(text_rows(batch)?);
    }
    // From the files' footers (DataFusion answers a bare count from their statistics).
    let counted = ctx
        .sql("SELECT COUNT(*) FROM output")
        .await
        .map_err(failed)?
        .collect()
        .await
        .map_err(failed)?;
    let total_rows = single_count(&counted).unwrap_or(rows.len() as u64);
    Ok(Preview {
        columns,
        rows,
        total_rows,
    })
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
    async fn the_first_rows_of_a_parquet_folder_and_its_count() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new();
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
        let shown = preview(&Location::Local(dir.path().to_path_buf()), 2)
            .await
            .unwrap();
        assert_eq!(
            shown.columns,
            [
                ("id".to_string(), "Int64".to_string()),
                ("note".to_string(), "Utf8View".to_string())
            ]
        );
        assert_eq!(shown.total_rows, 3);
        assert_eq!(shown.rows.len(), 2);
        assert_eq!(shown.rows[0][0], "1");
        assert_eq!(shown.rows[0][1], format!("{}…", "x".repeat(MAX_CELL)));
        assert_eq!(shown.rows[1], ["2", "NULL"]);
        let missing = preview(&Location::Local(dir.path().join("nope")), 10).await;
        assert!(missing.is_err());
    }
}
