//! Where stage outputs live under the data root, and how they are written.
//!
//! Layout: `<data_root>/runs/<run_id>/<task_id>/part-<n>.parquet`. A folder per task lets
//! generation write partitions in parallel and lets DataFusion read them as one table.
//! Outputs are written to a temporary name and renamed, so a reader never sees half a file.
//!
//! With a shared root in object storage ([`DataRoot::shared`]), an attempt still writes into
//! its local folder; when it succeeded the files are uploaded to
//! `<shared>/runs/<run_id>/<task_id>/attempt-<N>/` (a manifest last) and the local copy goes.
//! The state store records that prefix as the task's output, and downstream tasks, on any
//! machine, read it from there.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

use amdahl_dags::ObjectLocation;

use crate::stage::{LogSink, StageError};

/// Where task outputs go.
#[derive(Clone, Debug)]
pub struct DataRoot {
    /// This machine's folder: attempts write here, and without a shared root outputs are
    /// published and read here.
    pub local: PathBuf,
    /// A prefix in object storage (`s3://bucket/prefix`) that succeeded attempts' outputs are
    /// uploaded to, so workers on other machines can read them.
    pub shared: Option<ObjectLocation>,
}

impl DataRoot {
    /// Outputs on this machine only.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        DataRoot {
            local: path.into(),
            shared: None,
        }
    }

    /// Where an attempt's output is published in the shared root.
    pub fn shared_output(
        &self,
        run_id: i64,
        task_id: &str,
        attempt: u32,
    ) -> Option<ObjectLocation> {
        let root = self.shared.as_ref()?;
        Some(crate::objects::child(
            root,
            &format!("runs/{run_id}/{task_id}/attempt-{attempt}/"),
        ))
    }

    /// Every output of a run in the shared root.
    pub fn shared_run(&self, run_id: i64) -> Option<ObjectLocation> {
        let root = self.shared.as_ref()?;
        Some(crate::objects::child(root, &format!("runs/{run_id}/")))
    }
}

/// The folder a task's output goes to. A mapped task's instance `load[3]` writes to
/// `load/map=3`: a reader of `load` reads every instance's output as one table (DataFusion
/// lists the files of folders whose name holds `=` as the table's own).
pub fn task_output_dir(data_root: &Path, run_id: i64, task_id: &str) -> PathBuf {
    let run = data_root.join("runs").join(run_id.to_string());
    match amdahl_dags::mapping::split_instance(task_id) {
        (task, Some(index)) => run.join(task).join(format!("map={index}")),
        (task, None) => run.join(task),
    }
}

/// Where one attempt of a task writes its output: a hidden folder beside the task's, named
/// by the attempt, published to [`task_output_dir`] only once the attempt succeeded (see
/// [`publish_output`]). A process that dies half-way leaves only this folder, which nothing
/// reads.
pub fn attempt_output_dir(data_root: &Path, run_id: i64, task_id: &str, attempt: u32) -> PathBuf {
    data_root
        .join("runs")
        .join(run_id.to_string())
        .join(format!(".{task_id}.attempt-{attempt}"))
}

/// Makes a succeeded attempt's output the task's: renames its folder to `task_dir`, so a
/// reader sees the whole output or none. An output already there (the task was cleared and
/// ran again) is first moved aside, then removed.
pub fn publish_output(attempt_dir: &Path, task_dir: &Path) -> std::io::Result<()> {
    let aside = attempt_dir.with_extension("replaced");
    if let Some(parent) = task_dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if task_dir.exists() {
        if aside.exists() {
            std::fs::remove_dir_all(&aside)?;
        }
        std::fs::rename(task_dir, &aside)?;
    }
    std::fs::rename(attempt_dir, task_dir)?;
    if aside.exists() {
        std::fs::remove_dir_all(&aside)?;
    }
    Ok(())
}

/// Empties (or creates) an output folder before an attempt writes to it.
pub fn reset_dir(dir: &Path) -> Result<(), StageError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| internal(dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| internal(dir, e))
}

/// Total size of the files in a folder.
/// The bytes of a file, or of the files directly in a folder.
pub use amdahl_planner::estimate::{dir_bytes, path_bytes};

fn internal(path: &Path, e: impl std::fmt::Display) -> StageError {
    StageError::Internal(format!("{}: {e}", path.display()))
}

/// Writes record batches to one Parquet file, atomically.
pub struct PartWriter {
    writer: ArrowWriter<File>,
    temp: PathBuf,
    path: PathBuf,
    rows: u64,
}

impl PartWriter {
    pub fn create(dir: &Path, part: usize, schema: SchemaRef) -> Result<Self, StageError> {
        let path = dir.join(format!("part-{part}.parquet"));
        let temp = dir.join(format!(".part-{part}.parquet.tmp"));
        let file = File::create(&temp).map_err(|e| internal(&temp, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
            .build();
        let writer =
            ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| internal(&temp, e))?;
        Ok(PartWriter {
            writer,
            temp,
            path,
            rows: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StageError> {
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .map_err(|e| internal(&self.temp, e))
    }

    /// Finishes the file and moves it into place; returns the rows written.
    pub fn finish(self) -> Result<u64, StageError> {
        self.writer.close().map_err(|e| internal(&self.temp, e))?;
        std::fs::rename(&self.temp, &self.path).map_err(|e| internal(&self.path, e))?;
        Ok(self.rows)
    }
}

/// Keeps `Arc` out of callers' imports.
pub fn schema_ref(schema: datafusion::arrow::datatypes::Schema) -> SchemaRef {
    Arc::new(schema)
}

/// Writes a result stream into `writer`: (compute, I/O) milliseconds. The engine reads as it
/// computes: waiting for a batch is compute, writing it is I/O.
pub async fn stream_into(
    mut stream: SendableRecordBatchStream,
    writer: &mut PartWriter,
) -> Result<(f64, f64), StageError> {
    let (mut compute, mut io) = (0.0, 0.0);
    loop {
        let asked = Instant::now();
        let Some(batch) = stream.next().await else {
            compute += ms(asked);
            break;
        };
        compute += ms(asked);
        let batch =
            batch.map_err(|e| StageError::Failed(format!("query failed: {}", e.find_root())))?;
        let writing = Instant::now();
        writer.write(&batch)?;
        io += ms(writing);
    }
    Ok((compute, io))
}

/// Closes the output and logs its size: (rows, bytes).
pub fn finish_output(
    writer: PartWriter,
    output_dir: &Path,
    log: &LogSink,
) -> Result<(u64, u64), StageError> {
    let rows = writer.finish()?;
    let bytes = dir_bytes(output_dir);
    log.system(format!(
        "wrote {rows} rows ({bytes} bytes) to {}",
        output_dir.display()
    ));
    Ok((rows, bytes))
}

/// Milliseconds since `since`.
pub fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
