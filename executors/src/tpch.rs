//! `generate: { tpch: <table> }` stages: TPC-H data from the `tpchgen` generators.
//!
//! Large tables are generated as several partitions in parallel, one Parquet file each.
//! Generation is blocking work, so it runs on the CPU pool's blocking threads and checks a
//! cancellation flag between batches (a blocking thread cannot be aborted from outside).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
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

/// The schema of a TPC-H table, without building the generator (whose 300 MB text pool is
/// too heavy for `dags validate`). A test checks it against the generators.
pub fn schema(table: TpchTable) -> SchemaRef {
    use DataType::{Date32, Int32, Int64, Utf8View};
    let money = DataType::Decimal128(15, 2);
    let columns: Vec<(&str, DataType)> = match table {
        TpchTable::Region => vec![
            ("r_regionkey", Int64),
            ("r_name", Utf8View),
            ("r_comment", Utf8View),
        ],
        TpchTable::Nation => vec![
            ("n_nationkey", Int64),
            ("n_name", Utf8View),
            ("n_regionkey", Int64),
            ("n_comment", Utf8View),
        ],
        TpchTable::Supplier => vec![
            ("s_suppkey", Int64),
            ("s_name", Utf8View),
            ("s_address", Utf8View),
            ("s_nationkey", Int64),
            ("s_phone", Utf8View),
            ("s_acctbal", money),
            ("s_comment", Utf8View),
        ],
        TpchTable::Customer => vec![
            ("c_custkey", Int64),
            ("c_name", Utf8View),
            ("c_address", Utf8View),
            ("c_nationkey", Int64),
            ("c_phone", Utf8View),
            ("c_acctbal", money),
            ("c_mktsegment", Utf8View),
            ("c_comment", Utf8View),
        ],
        TpchTable::Part => vec![
            ("p_partkey", Int64),
            ("p_name", Utf8View),
            ("p_mfgr", Utf8View),
            ("p_brand", Utf8View),
            ("p_type", Utf8View),
            ("p_size", Int32),
            ("p_container", Utf8View),
            ("p_retailprice", money),
            ("p_comment", Utf8View),
        ],
        TpchTable::PartSupp => vec![
            ("ps_partkey", Int64),
            ("ps_suppkey", Int64),
            ("ps_availqty", Int32),
            ("ps_supplycost", money),
            ("ps_comment", Utf8View),
        ],
        TpchTable::Orders => vec![
            ("o_orderkey", Int64),
            ("o_custkey", Int64),
            ("o_orderstatus", Utf8View),
            ("o_totalprice", money),
            ("o_orderdate", Date32),
            ("o_orderpriority", Utf8View),
            ("o_clerk", Utf8View),
            ("o_shippriority", Int32),
            ("o_comment", Utf8View),
        ],
        TpchTable::LineItem => vec![
            ("l_orderkey", Int64),
            ("l_partkey", Int64),
            ("l_suppkey", Int64),
            ("l_linenumber", Int32),
            ("l_quantity", money.clone()),
            ("l_extendedprice", money.clone()),
            ("l_discount", money.clone()),
            ("l_tax", money),
            ("l_returnflag", Utf8View),
            ("l_linestatus", Utf8View),
            ("l_shipdate", Date32),
            ("l_commitdate", Date32),
            ("l_receiptdate", Date32),
            ("l_shipinstruct", Utf8View),
            ("l_shipmode", Utf8View),
            ("l_comment", Utf8View),
        ],
    };
    Arc::new(Schema::new(
        columns
            .into_iter()
            .map(|(name, data_type)| Field::new(name, data_type, false))
            .collect::<Vec<_>>(),
    ))
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
