//! `generate: { tpch: <table> }` stages: TPC-H data from the `tpchgen` generators.
//!
//! Large tables are generated as several partitions in parallel, one Parquet file each.
//! Generation is blocking work, so it runs on the CPU pool's blocking threads and checks a
//! cancellation flag between batches (a blocking thread cannot be aborted from outside).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow,
    RecordBatchIterator, RegionArrow, SupplierArrow,
};

use amdahl_dags::TpchTable;

use crate::runtime::CpuRuntime;
use crate::stage::{Executor, LogSink, Stage, StageError, StageOutcome, Work};
use crate::storage::{PartWriter, dir_bytes, reset_dir};

pub use amdahl_planner::schemas::tpch as schema;

/// Runs `generate: { tpch: … }` stages.
#[derive(Clone)]
pub struct TpchExecutor {
    runtime: CpuRuntime,
}

impl TpchExecutor {
    pub fn new(runtime: CpuRuntime) -> Self {
        TpchExecutor { runtime }
    }
}

/// Sets its flag when dropped, telling generator threads to stop.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Executor for TpchExecutor {
    async fn execute(&self, stage: &Stage, log: &LogSink) -> Result<StageOutcome, StageError> {
        let Work::Tpch {
            table,
            scale_factor,
        } = stage.work
        else {
            return Err(StageError::Internal(format!(
                "TpchExecutor got {} work",
                stage.work.kind()
            )));
        };
        let Some(output_dir) = stage.output_dir.clone() else {
            return Err(StageError::Internal(
                "generate stage without an output folder".into(),
            ));
        };
        let parts = partitions(table, scale_factor, self.runtime.threads());
        log.system(format!(
            "generating TPC-H {} at scale factor {scale_factor} in {parts} partition(s)",
            table.name()
        ));
        let started = std::time::Instant::now();
        let cancelled = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancelled.clone());
        let dir = output_dir.clone();
        let rows = self
            .runtime
            .spawn_blocking(move || generate(table, scale_factor, parts, &dir, &cancelled))
            .await
            .map_err(|e| StageError::Internal(format!("generator ended abnormally: {e}")))??;
        let bytes = dir_bytes(&output_dir);
        log.system(format!(
            "wrote {rows} rows ({bytes} bytes) to {}",
            output_dir.display()
        ));
        // Generating and writing are interleaved: all of it counts as compute.
        Ok(
            StageOutcome::on_cpu(Some(rows), Some(bytes)).timed(crate::StageTimings {
                compute_ms: started.elapsed().as_secs_f64() * 1e3,
                ..Default::default()
            }),
        )
    }
}

/// How many files to generate in parallel: one for the small fixed tables and tiny scales.
fn partitions(table: TpchTable, scale_factor: f64, threads: usize) -> usize {
    match table {
        TpchTable::Nation | TpchTable::Region => 1,
        _ if scale_factor < 0.05 => 1,
        _ => threads.clamp(1, 64),
    }
}

fn generate(
    table: TpchTable,
    scale_factor: f64,
    parts: usize,
    dir: &Path,
    cancelled: &AtomicBool,
) -> Result<u64, StageError> {
    reset_dir(dir)?;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (1..=parts)
            .map(|part| {
                let dir: PathBuf = dir.to_path_buf();
                scope
                    .spawn(move || generate_part(table, scale_factor, part, parts, &dir, cancelled))
            })
            .collect();
        let mut total = 0;
        for worker in workers {
            total += worker
                .join()
                .map_err(|_| StageError::Internal("a generator thread panicked".into()))??;
        }
        Ok(total)
    })
}

fn generate_part(
    table: TpchTable,
    scale_factor: f64,
    part: usize,
    parts: usize,
    dir: &Path,
    cancelled: &AtomicBool,
) -> Result<u64, StageError> {
    let mut batches = batches(table, scale_factor, part as i32, parts as i32);
    let mut writer = PartWriter::create(dir, part - 1, batches.schema().clone())?;
    for batch in batches.by_ref() {
        if cancelled.load(Ordering::Relaxed) {
            return Err(StageError::Failed("generation cancelled".into()));
        }
        writer.write(&batch)?;
    }
    writer.finish()
}

fn batches(table: TpchTable, sf: f64, part: i32, parts: i32) -> Box<dyn RecordBatchIterator> {
    match table {
        TpchTable::Region => Box::new(RegionArrow::new(RegionGenerator::new(sf, part, parts))),
        TpchTable::Nation => Box::new(NationArrow::new(NationGenerator::new(sf, part, parts))),
        TpchTable::Supplier => {
            Box::new(SupplierArrow::new(SupplierGenerator::new(sf, part, parts)))
        }
        TpchTable::Customer => {
            Box::new(CustomerArrow::new(CustomerGenerator::new(sf, part, parts)))
        }
        TpchTable::Part => Box::new(PartArrow::new(PartGenerator::new(sf, part, parts))),
        TpchTable::PartSupp => {
            Box::new(PartSuppArrow::new(PartSuppGenerator::new(sf, part, parts)))
        }
        TpchTable::Orders => Box::new(OrderArrow::new(OrderGenerator::new(sf, part, parts))),
        TpchTable::LineItem => {
            Box::new(LineItemArrow::new(LineItemGenerator::new(sf, part, parts)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_schemas_match_the_generators() {
        for name in TpchTable::NAMES {
            let table = TpchTable::parse(name).unwrap();
            let generated = batches(table, 0.001, 1, 1);
            assert_eq!(
                generated.schema().as_ref(),
                schema(table).as_ref(),
                "schema of {name}"
            );
        }
    }

    #[test]
    fn tiny_tables_use_one_partition() {
        assert_eq!(partitions(TpchTable::Nation, 10.0, 8), 1);
        assert_eq!(partitions(TpchTable::LineItem, 0.01, 8), 1);
        assert_eq!(partitions(TpchTable::LineItem, 1.0, 8), 8);
    }
}
