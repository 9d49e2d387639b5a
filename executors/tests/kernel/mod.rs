//! Kernel plans: DataFusion physical plans translated into the GPU's IR, evaluated by the host
//! reference, and compared with DataFusion itself on the same files (TPC-H lineitem, and fresh
//! random tables with nulls, NaNs, negative zeros and infinities).

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::ScalarValue;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};

use amdahl_dags::TpchTable;
use amdahl_executors::gpu::cuda::{self, emulation};
use amdahl_executors::gpu::{reference as host, translate};
use amdahl_executors::sql::session_config;
use amdahl_executors::{LogSink, Work};

use super::{executors, stage};

async fn context(partitions: usize, tables: &[(&str, &Path)]) -> SessionContext {
    let ctx = SessionContext::new_with_config(session_config(partitions));
    for (name, path) in tables {
        let mut location = path.display().to_string();
        if path.is_dir() {
            location.push('/');
        }
        ctx.register_parquet(*name, &location, ParquetReadOptions::default())
            .await
            .unwrap();
    }
    ctx
}

async fn physical(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
    ctx.sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap()
}

async fn datafusion_rows(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

pub(crate) async fn lineitem(dir: &Path, scale_factor: f64) -> std::path::PathBuf {
    let out = dir.join("lineitem");
    let (log, _lines) = LogSink::channel();
    executors()
        .execute(
            &stage(
                Work::Tpch {
                    table: TpchTable::LineItem,
                    scale_factor,
                },
                vec![],
                Some(out.clone()),
                dir,
            ),
            &log,
        )
        .await
        .unwrap();
    out
}

pub(crate) fn tpch_query(id: &str) -> String {
    // From the crate (cargo test) or from the repository root (the GPU bundle's run.sh).
    let path = ["../dags/examples/tpch.yaml", "dags/examples/tpch.yaml"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("dags/examples/tpch.yaml");
    let dag = amdahl_dags::load_file(path).unwrap();
    match &dag.task(id).unwrap().kind {
        amdahl_dags::TaskKind::Sql(sql) => sql.text.clone(),
        _ => panic!("{id} is sql"),
    }
}

/// Q1 and Q6 translate whole (one and several partitions, so partial/final aggregates and
/// single ones), and the host reference gives exactly DataFusion's rows: decimals to the last
/// digit, the same schema, the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_q1_and_q6_translate_whole_and_match_datafusion_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let lineitem = lineitem(dir.path(), 0.02).await;
    for partitions in [1, 3] {
        let ctx = context(partitions, &[("lineitem", &lineitem)]).await;
        for (task, shape) in [
            (
                "q1_pricing_summary",
                "scan 7 column(s) of 1 file(s) → filter → group by 2 key(s), 8 aggregate(s) → order",
            ),
            (
                "q6_forecast_revenue",
                "scan 4 column(s) of 1 file(s) → filter → 1 total(s)",
            ),
        ] {
            let sql = tpch_query(task);
            let plan = physical(&ctx, &sql).await;
            let kernel = translate(&plan).unwrap_or_else(|e| {
                panic!(
                    "{task} with {partitions} partition(s) did not translate: {e}\n{}",
                    datafusion::physical_plan::displayable(plan.as_ref()).indent(true)
                )
            });
            assert_eq!(kernel.to_string(), shape, "{task}");
            let ours = host::execute(&kernel).unwrap();
            let expected = datafusion_rows(&ctx, &sql).await;
            assert_eq!(ours.schema(), expected[0].schema(), "{task} schema");
            assert_eq!(
                pretty_format_batches(&[ours]).unwrap().to_string(),
                pretty_format_batches(&expected).unwrap().to_string(),
                "{task} with {partitions} partition(s)"
            );
        }
    }
}

/// Plans outside the GPU's shape are refused with the node and a reason a user can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_plans_name_the_node_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let table = random_table(dir.path(), 500, 1);
    let csv = dir.path().join("t.csv");
    std::fs::write(&csv, "a,b\n1,2\n3,4\n").unwrap();
    let ctx = context(2, &[("t", &table), ("u", &table)]).await;
    ctx.register_csv("c", csv.to_str().unwrap(), CsvReadOptions::new())
        .await
        .unwrap();
    for (sql, expected) in [
        (
            "SELECT t.i, count(*) FROM t JOIN u ON t.i = u.i GROUP BY t.i",
            "reads 2 inputs (joins and unions run on the CPU)",
        ),
        ("SELECT i, d FROM t WHERE i > 3", "no aggregate"),
        (
            "SELECT sum(d) FROM t WHERE upper(s) = 'A'",
            "FilterExec: the expression `upper(s@",
        ),
        (
            "SELECT count(DISTINCT i) FROM t",
            "DISTINCT and nested aggregates",
        ),
        (
            "SELECT f, count(*) FROM t GROUP BY f",
            "grouping by a float",
        ),
        ("SELECT count(*) FROM t WHERE s < 'b'", "ordering strings"),
        (
            "SELECT s, max(f) FROM t GROUP BY s",
            "min/max of floats per group (DataFusion's answer with NaN depends on row order)",
        ),
        (
            "SELECT sum(a) FROM c",
            "csv input (the GPU reads only Parquet files)",
        ),
        (
            "SELECT stddev(f) FROM t",
            "the aggregate `stddev` (the GPU has sum, count, min, max, avg)",
        ),
        (
            "SELECT i, sum(d) * 2 FROM t GROUP BY i",
            "computed from aggregated values",
        ),
    ] {
        let plan = physical(&ctx, sql).await;
        let refused = translate(&plan).expect_err(sql).to_string();
        assert!(
            refused.contains(expected),
            "{sql}: `{refused}` should say `{expected}`"
        );
    }
}

/// Fresh random tables (the seed is printed; `AMDAHL_TEST_SEED` replays one) with nulls in
/// every column, NaN, ±0.0 and ±∞ among the floats, and queries over every expression and
/// aggregate the IR has: the host reference equals DataFusion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_tables_match_datafusion() {
    let seed = std::env::var("AMDAHL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("AMDAHL_TEST_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    // Sizes that are not multiples of any batch or block size.
    for (n, rows) in [1, 7, 1000, 20_011].into_iter().enumerate() {
        let table = random_table(dir.path(), rows, seed.wrapping_add(n as u64));
        let ctx = context(2, &[("t", &table)]).await;
        for sql in RANDOM_QUERIES {
            let plan = physical(&ctx, sql).await;
            let kernel = translate(&plan).unwrap_or_else(|e| panic!("{sql}: {e}"));
            let ours = host::execute(&kernel).unwrap_or_else(|e| panic!("{sql}: {e}"));
            let expected = datafusion_rows(&ctx, sql).await;
            same_rows(
                &ours,
                &expected,
                &format!("{sql} ({rows} rows, seed {seed})"),
            );
        }
    }
}

const RANDOM_QUERIES: &[&str] = &[
    "SELECT count(*), count(i), sum(i), min(i), max(i), avg(i) FROM t",
    "SELECT sum(d), min(d), max(d), avg(d), count(d) FROM t WHERE d BETWEEN -50.5 AND 70.25",
    "SELECT sum(f), min(f), max(f), avg(f), count(f) FROM t",
    "SELECT s, count(*), sum(d), max(d), min(i), sum(f) FROM t GROUP BY s ORDER BY s",
    "SELECT s, day, count(*), sum(big) FROM t WHERE flag GROUP BY s, day ORDER BY s DESC, day",
    "SELECT i, count(*) FROM t WHERE i IN (1, 3, 5, NULL) OR i IS NULL GROUP BY i ORDER BY i",
    "SELECT count(*) FROM t WHERE i NOT IN (2, 4) AND NOT (f < 0.0)",
    "SELECT count(*), sum(i * 3 - big) FROM t WHERE f = f AND f > -1e300",
    "SELECT count(*) FROM t WHERE f <> 0.0 OR f IS NULL",
    "SELECT count(*) FROM t WHERE f = -0.0 OR f > 'NaN'::double OR f >= 'Infinity'::double",
    "SELECT count(*) FROM t WHERE day >= DATE '1995-06-01' AND day < DATE '1996-01-01'",
    "SELECT s, sum(d * (1 - d)), sum(-d + i) FROM t WHERE s IN ('a', 'c') AND d IS NOT NULL \
     GROUP BY s ORDER BY s",
    "SELECT flag, count(*), min(day), max(day) FROM t GROUP BY flag ORDER BY flag NULLS FIRST",
    "SELECT count(*) FROM t WHERE s = 'zz' OR s <> 'b'",
    "SELECT sum(f * 2.5 + i), count(*) FROM t WHERE i BETWEEN 0 AND 5",
    "SELECT i, max(d) FROM t GROUP BY i ORDER BY i DESC NULLS LAST LIMIT 3",
];

/// Compares rows: exact for everything but float sums and averages, which may differ in the
/// last bits because DataFusion adds partitions in another order.
fn same_rows(ours: &RecordBatch, expected: &[RecordBatch], what: &str) {
    let expected = datafusion::arrow::compute::concat_batches(&ours.schema(), expected).unwrap();
    assert_eq!(ours.schema(), expected.schema(), "{what}: schema");
    assert_eq!(ours.num_rows(), expected.num_rows(), "{what}: row count");
    // Group rows may come in any order when the query has no ORDER BY: match them by the
    // non-float columns' text.
    let row_text = |batch: &RecordBatch, row: usize| -> String {
        (0..batch.num_columns())
            .filter(|&c| !matches!(batch.schema().field(c).data_type(), DataType::Float64))
            .map(|c| {
                ScalarValue::try_from_array(batch.column(c), row)
                    .unwrap()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("|")
    };
    for row in 0..ours.num_rows() {
        let key = row_text(ours, row);
        let other = (0..expected.num_rows())
            .find(|&r| row_text(&expected, r) == key)
            .unwrap_or_else(|| panic!("{what}: our row {key} is not in DataFusion's"));
        for c in 0..ours.num_columns() {
            let a = ScalarValue::try_from_array(ours.column(c), row).unwrap();
            let b = ScalarValue::try_from_array(expected.column(c), other).unwrap();
            match (&a, &b) {
                (ScalarValue::Float64(Some(x)), ScalarValue::Float64(Some(y))) => {
                    let close = x == y
                        || (x.is_nan() && y.is_nan())
                        || (x - y).abs() <= 1e-9 * x.abs().max(y.abs());
                    assert!(close, "{what}: column {c}: {x} vs DataFusion's {y}");
                }
                _ => assert_eq!(a, b, "{what}: column {c} of row {key}"),
            }
        }
    }
    // Ordered queries: the order must be DataFusion's too.
    let keys = |batch: &RecordBatch| {
        (0..batch.num_rows())
            .map(|r| row_text(batch, r))
            .collect::<Vec<_>>()
    };
    if what.contains("ORDER BY") {
        assert_eq!(keys(ours), keys(&expected), "{what}: order");
    }
}

/// SplitMix64: small, fast, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One in `n` values is null.
    fn null(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

fn random_table(dir: &Path, rows: usize, seed: u64) -> std::path::PathBuf {
    let mut rng = Rng(seed);
    let i: Int32Array = (0..rows)
        .map(|_| (!rng.null(9)).then(|| rng.below(8) as i32 - 1))
        .collect();
    let big: Int64Array = (0..rows)
        .map(|_| (!rng.null(11)).then(|| rng.next() as i64 >> 20))
        .collect();
    let specials = [f64::NAN, -0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY];
    let f: Float64Array = (0..rows)
        .map(|_| {
            if rng.null(10) {
                None
            } else if rng.null(8) {
                Some(specials[rng.below(specials.len() as u64) as usize])
            } else {
                Some((rng.next() as i64 >> 11) as f64 / (1u64 << 40) as f64)
            }
        })
        .collect();
    let d = (0..rows)
        .map(|_| (!rng.null(7)).then(|| rng.below(40_000) as i128 - 20_000))
        .collect::<Decimal128Array>()
        .with_precision_and_scale(12, 2)
        .unwrap();
    let day: Date32Array = (0..rows)
        .map(|_| (!rng.null(13)).then(|| 9_000 + rng.below(1_000) as i32))
        .collect();
    let words = ["a", "b", "c", "d", "zebra"];
    let s: StringArray = (0..rows)
        .map(|_| (!rng.null(6)).then(|| words[rng.below(words.len() as u64) as usize]))
        .collect();
    let flag: BooleanArray = (0..rows)
        .map(|_| (!rng.null(5)).then(|| rng.below(2) == 0))
        .collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("i", Arc::new(i)),
        ("big", Arc::new(big)),
        ("f", Arc::new(f)),
        ("d", Arc::new(d)),
        ("day", Arc::new(day)),
        ("s", Arc::new(s)),
        ("flag", Arc::new(flag)),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    let path = dir.join(format!("random-{rows}-{seed}.parquet"));
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
    // Several row groups and batches, so the reader's batching is exercised too.
    for start in (0..rows).step_by(4096) {
        writer
            .write(&batch.slice(start, 4096.min(rows - start)))
            .unwrap();
        writer.flush().unwrap();
    }
    writer.close().unwrap();
    path
}

/// The generated CUDA kernel itself, compiled by the host's C++ compiler with CUDA's built-ins
/// as one-thread equivalents and run as three blocks in turn (so block accumulators merge, and
/// 128-bit sums carry across blocks): Q1 and Q6 equal DataFusion exactly, and the random
/// tables' queries agree with DataFusion like the host reference does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_kernels_compute_what_datafusion_does() {
    let dir = tempfile::tempdir().unwrap();
    let lineitem = lineitem(dir.path(), 0.01).await;
    let ctx = context(2, &[("lineitem", &lineitem)]).await;
    for task in ["q1_pricing_summary", "q6_forecast_revenue"] {
        let sql = tpch_query(task);
        let kernel = translate(&physical(&ctx, &sql).await).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let ours =
            emulation::run(&kernel, scratch.path(), 3).unwrap_or_else(|e| panic!("{task}: {e}"));
        let expected = datafusion_rows(&ctx, &sql).await;
        assert_eq!(
            pretty_format_batches(&[ours]).unwrap().to_string(),
            pretty_format_batches(&expected).unwrap().to_string(),
            "{task}"
        );
    }
    let seed = 0x5EED;
    for rows in [1, 1000, 4099] {
        let table = random_table(dir.path(), rows, seed + rows as u64);
        let ctx = context(2, &[("t", &table)]).await;
        for sql in RANDOM_QUERIES {
            let kernel = translate(&physical(&ctx, sql).await).unwrap();
            let scratch = tempfile::tempdir().unwrap();
            match emulation::run(&kernel, scratch.path(), 3) {
                Ok(ours) => {
                    let expected = datafusion_rows(&ctx, sql).await;
                    same_rows(&ours, &expected, &format!("{sql} ({rows} rows, emulated)"));
                }
                // Group keys computed from columns are refused before any kernel is written.
                Err(cuda::GpuError::Unsupported(why)) => {
                    assert!(why.contains("group keys"), "{sql}: {why}")
                }
                Err(e) => panic!("{sql} ({rows} rows): {e}"),
            }
        }
    }
}

/// NVRTC accepts every kernel Amdahl writes (TPC-H Q1 and Q6, each random query shape, the
/// dense kernels for every k class) for Hopper and Ampere. NVRTC needs no device, so this runs
/// wherever the CUDA toolkit is installed; every failure is listed, not just the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NVRTC (the CUDA toolkit's runtime compiler)"]
async fn nvrtc_compiles_every_generated_kernel() {
    use amdahl_executors::gpu::dense;
    let dir = tempfile::tempdir().unwrap();
    let mut sources: Vec<(String, String, &str)> = Vec::new();
    let lineitem = lineitem(dir.path(), 0.01).await;
    let ctx = context(2, &[("lineitem", &lineitem)]).await;
    for task in ["q1_pricing_summary", "q6_forecast_revenue"] {
        let kernel = translate(&physical(&ctx, &tpch_query(task)).await).unwrap();
        sources.push((task.into(), cuda::source(&kernel).unwrap(), "amdahl_plan"));
    }
    let table = random_table(dir.path(), 1000, 0x5EED);
    let ctx = context(2, &[("t", &table)]).await;
    for sql in RANDOM_QUERIES {
        let kernel = translate(&physical(&ctx, sql).await).unwrap();
        match cuda::source(&kernel) {
            Ok(source) => sources.push((sql.to_string(), source, "amdahl_plan")),
            Err(cuda::GpuError::Unsupported(why)) => {
                assert!(why.contains("group keys"), "{sql}: {why}")
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
    sources.push(("bias".into(), dense::BIAS_SOURCE.into(), "amdahl_bias"));
    sources.push(("rows".into(), dense::ROWS_SOURCE.into(), "amdahl_rows"));
    for k in [1, 10, dense::MAX_GPU_K] {
        sources.push((format!("top-{k}"), dense::topk_source(k), "amdahl_topk"));
    }
    let mut failures = Vec::new();
    for arch in ["sm_90", "sm_80"] {
        for (what, source, entry) in &sources {
            match cuda::compile_ptx(source, arch) {
                Ok(ptx) => {
                    if !ptx.to_src().contains(&format!(".entry {entry}")) {
                        failures.push(format!("{what} ({arch}): no entry {entry} in the PTX"));
                    }
                }
                Err(e) => failures.push(format!("{what} ({arch}): {e}\n{source}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} kernels failed:\n{}",
        failures.len(),
        2 * sources.len(),
        failures.join("\n\n")
    );
}

/// On a GPU: Q1 and Q6 run entirely on the device and equal DataFusion exactly; random
/// tables of sizes that are not multiples of the block size, with nulls and NaNs, agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a CUDA device"]
async fn gpu_kernels_match_datafusion() {
    let report = amdahl_executors::gpu::devices();
    assert!(report.usable(), "no usable GPU: {:?}", report.problem);
    println!("{:?}", report.devices);
    // Every failure is collected and listed at the end, not just the first.
    let mut failures: Vec<String> = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let lineitem = lineitem(dir.path(), 0.1).await;
    let ctx = context(4, &[("lineitem", &lineitem)]).await;
    for task in ["q1_pricing_summary", "q6_forecast_revenue"] {
        let sql = tpch_query(task);
        let kernel = translate(&physical(&ctx, &sql).await).unwrap();
        let expected = datafusion_rows(&ctx, &sql).await;
        match cuda::run_timed(&kernel) {
            Ok((ours, timings)) => {
                println!("{task}: {timings:?}");
                let ours = pretty_format_batches(&[ours]).unwrap().to_string();
                let expected = pretty_format_batches(&expected).unwrap().to_string();
                if ours != expected {
                    failures.push(format!("{task}: GPU\n{ours}\nDataFusion\n{expected}"));
                }
            }
            Err(e) => failures.push(format!("{task}: {e}")),
        }
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    for rows in [1, 255, 257, 100_003, 1_000_001] {
        let table = random_table(dir.path(), rows, seed ^ rows as u64);
        let ctx = context(4, &[("t", &table)]).await;
        for sql in RANDOM_QUERIES {
            let kernel = translate(&physical(&ctx, sql).await).unwrap();
            let what = format!("{sql} ({rows} rows, GPU)");
            match cuda::run(&kernel) {
                Ok(ours) => {
                    let expected = datafusion_rows(&ctx, sql).await;
                    let ours = AssertUnwindSafe(&ours);
                    let expected = AssertUnwindSafe(&expected);
                    if let Err(panic) =
                        std::panic::catch_unwind(|| same_rows(&ours, &expected, &what))
                    {
                        failures.push(panic_text(panic));
                    }
                }
                Err(cuda::GpuError::Unsupported(why)) if why.contains("group keys") => {}
                Err(e) => failures.push(format!("{what}: {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// A SQL stage over `table` that the GPU can run whole, asked for the GPU.
fn gpu_sql_stage(table: &Path, out: &Path) -> amdahl_executors::Stage {
    let mut on_gpu = stage(
        Work::Sql {
            query: "SELECT count(*) AS n, sum(i) AS s, min(i) AS lo, max(i) AS hi FROM t".into(),
        },
        vec![amdahl_executors::TableInput::local(
            "t",
            table,
            amdahl_dags::DatasetFormat::Parquet,
        )],
        Some(out.to_path_buf()),
        out.parent().unwrap(),
    );
    on_gpu.device = amdahl_dags::DevicePreference::Gpu;
    on_gpu
}

/// GPU faults on a real device, out of memory: with all but 1 MiB of the device's memory
/// taken, a GPU stage falls back to the CPU, gives the right answer and its note names the
/// error; an out-of-memory error does not lose the GPU, and once the memory is free again the
/// same stage runs on the GPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a CUDA device"]
async fn out_of_device_memory_falls_back_and_keeps_the_gpu() {
    use amdahl_executors::gpu::{self, health};
    let report = gpu::devices();
    assert!(report.usable(), "no usable GPU: {:?}", report.problem);
    let dir = tempfile::tempdir().unwrap();
    let table = random_table(dir.path(), 2_000_000, 7);
    let ctx = cudarc::driver::CudaContext::new(0).unwrap();
    let (free, _) = ctx.mem_get_info().unwrap();
    let hog = ctx
        .default_stream()
        .alloc_zeros::<u8>(free.saturating_sub(1 << 20))
        .unwrap();
    let (log, _lines) = LogSink::channel();
    let starved = dir.path().join("starved");
    let outcome = executors()
        .execute(&gpu_sql_stage(&table, &starved), &log)
        .await
        .unwrap();
    let note = outcome.note.clone().unwrap_or_default();
    assert_eq!(outcome.device, amdahl_executors::Device::Cpu, "{note}");
    assert!(note.contains("CUDA_ERROR_OUT_OF_MEMORY"), "{note}");
    assert_eq!(health::lost(), None, "out of memory does not lose the GPU");
    drop(hog);
    let fed = dir.path().join("fed");
    let outcome = executors()
        .execute(&gpu_sql_stage(&table, &fed), &log)
        .await
        .unwrap();
    assert_eq!(
        outcome.device,
        amdahl_executors::Device::Gpu,
        "{:?}",
        outcome.note
    );
    assert_eq!(
        super::read_parquet(&starved, "n").await,
        super::read_parquet(&fed, "n").await
    );
}

/// GPU faults on a real device, a failing kernel: a kernel that writes through a null
/// pointer leaves the process's context unusable (an illegal address, a sticky error). The
/// driver's error is recognised as lasting; the next GPU stage meets it, runs on the CPU with
/// the right answer, and marks the GPU lost; the one after goes straight to the CPU and says
/// the GPU was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a CUDA device"]
async fn a_faulting_kernel_loses_the_gpu_and_stages_run_on_the_cpu() {
    use amdahl_executors::gpu::{self, health};
    use cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg};
    let report = gpu::devices();
    assert!(report.usable(), "no usable GPU: {:?}", report.problem);
    let dir = tempfile::tempdir().unwrap();
    let table = random_table(dir.path(), 100_000, 11);
    // The right answer, from the CPU, before anything breaks.
    let (log, _lines) = LogSink::channel();
    let expected_dir = dir.path().join("cpu");
    let mut on_cpu = gpu_sql_stage(&table, &expected_dir);
    on_cpu.device = amdahl_dags::DevicePreference::Cpu;
    executors().execute(&on_cpu, &log).await.unwrap();

    let ptx = cuda::compile_ptx(
        "extern \"C\" __global__ void boom(int *p) { p[threadIdx.x] = 1; }",
        &report.devices[0].arch(),
    )
    .unwrap();
    let ctx = CudaContext::new(0).unwrap();
    let stream = ctx.default_stream();
    let boom = ctx.load_module(ptx).unwrap().load_function("boom").unwrap();
    let null: u64 = 0;
    let mut launch = stream.launch_builder(&boom);
    launch.arg(&null);
    // SAFETY: deliberately not: the kernel writes through a null device pointer, which the
    // driver catches as an illegal address.
    let launched = unsafe { launch.launch(LaunchConfig::for_num_elems(32)) };
    let fault = launched
        .and_then(|_| stream.synchronize())
        .expect_err("writing through a null pointer faults");
    let fault = format!("{fault:?}");
    assert!(health::is_lasting(&fault), "{fault}");

    let first = dir.path().join("first");
    let outcome = executors()
        .execute(&gpu_sql_stage(&table, &first), &log)
        .await
        .unwrap();
    assert_eq!(outcome.device, amdahl_executors::Device::Cpu);
    assert!(
        health::lost().is_some(),
        "the stage met the poisoned context: {:?}",
        outcome.note
    );
    assert!(!gpu::usable());
    let second = dir.path().join("second");
    let outcome = executors()
        .execute(&gpu_sql_stage(&table, &second), &log)
        .await
        .unwrap();
    let note = outcome.note.unwrap_or_default();
    assert!(
        note.contains("the GPU was lost earlier in this process"),
        "{note}"
    );
    let expected = super::read_parquet(&expected_dir, "n").await;
    assert_eq!(super::read_parquet(&first, "n").await, expected);
    assert_eq!(super::read_parquet(&second, "n").await, expected);
}
