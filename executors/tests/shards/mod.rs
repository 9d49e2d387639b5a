//! `shards: N`: a query split into row ranges of its largest input gives exactly the answer
//! of the whole query (DataFusion's own aggregate halves combine the parts), on Parquet split
//! inside files and row groups and on CSV split by file; parts of a GPU-runnable aggregate
//! run as partial-aggregate kernels (here through the host emulation of the generated CUDA).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::physical_plan::collect;

use amdahl_dags::DatasetFormat;
use amdahl_executors::gpu::cuda::emulation;
use amdahl_executors::gpu::translate_partial;
use amdahl_executors::shards::{self, to_schema};
use amdahl_executors::{LogSink, Stage, TableInput, Work};

use super::kernel::{lineitem, tpch_query};
use super::{executors, read_parquet, stage};

/// `rows` rows from `first` on: ids, a few groups, a join key, decimals, floats, dates, with
/// nulls here and there.
fn facts(first: i64, rows: usize) -> RecordBatch {
    let ids: Vec<i64> = (first..first + rows as i64).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("grp", DataType::Utf8, true),
        Field::new("k", DataType::Int32, false),
        Field::new("price", DataType::Decimal128(12, 2), true),
        Field::new("qty", DataType::Float64, true),
        Field::new("day", DataType::Date32, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(StringArray::from(
            ids.iter()
                .map(|i| (i % 13 != 0).then(|| format!("g{}", i % 5)))
                .collect::<Vec<_>>(),
        )),
        Arc::new(Int32Array::from(
            ids.iter().map(|i| (i * 7 % 11) as i32).collect::<Vec<_>>(),
        )),
        Arc::new(
            Decimal128Array::from(
                ids.iter()
                    .map(|i| (i % 17 != 0).then_some(((i * 7919) % 100_000 - 20_000) as i128))
                    .collect::<Vec<_>>(),
            )
            .with_precision_and_scale(12, 2)
            .unwrap(),
        ),
        Arc::new(Float64Array::from(
            ids.iter()
                .map(|i| (i % 19 != 0).then_some((i % 10) as f64 * 0.5))
                .collect::<Vec<_>>(),
        )),
        Arc::new(Date32Array::from(
            ids.iter()
                .map(|i| 18_000 + (i % 400) as i32)
                .collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

fn write_parquet(path: &Path, batch: &RecordBatch, row_group: usize) {
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group))
        .build();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

/// Three Parquet files of 5,000, 3,000 and 1,234 rows in row groups of 700, a small `dims`
/// table, and the facts again as three CSV files.
fn tables(dir: &Path) -> Vec<TableInput> {
    let facts_dir = dir.join("facts");
    let csv_dir = dir.join("facts_csv");
    std::fs::create_dir_all(&facts_dir).unwrap();
    std::fs::create_dir_all(&csv_dir).unwrap();
    let mut first = 0;
    for (i, rows) in [5000usize, 3000, 1234].into_iter().enumerate() {
        let batch = facts(first, rows);
        write_parquet(&facts_dir.join(format!("part-{i}.parquet")), &batch, 700);
        let mut csv = datafusion::arrow::csv::Writer::new(
            std::fs::File::create(csv_dir.join(format!("part-{i}.csv"))).unwrap(),
        );
        csv.write(&batch.project(&[0, 1, 2, 4]).unwrap()).unwrap();
        first += rows as i64;
    }
    let dims = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("name", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int32Array::from((0..11).collect::<Vec<i32>>())),
            Arc::new(StringArray::from(
                (0..11).map(|k| format!("n{}", k % 4)).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    let dims_path = dir.join("dims.parquet");
    write_parquet(&dims_path, &dims, 1000);
    let input = |name: &str, path: PathBuf, format| TableInput {
        name: name.into(),
        location: amdahl_dags::Location::Local(path),
        format,
        parts: Vec::new(),
    };
    vec![
        input("facts", facts_dir, DatasetFormat::Parquet),
        input("dims", dims_path, DatasetFormat::Parquet),
        input("facts_csv", csv_dir, DatasetFormat::Csv),
    ]
}

/// Queries, and whether their largest input splits (else they run whole, saying why).
const QUERIES: &[(&str, bool)] = &[
    (
        "SELECT grp, count(*) AS c, sum(price) AS s, avg(price) AS a, min(day) AS mn, \
         max(id) AS mx, count(qty) AS q FROM facts WHERE qty > 1 GROUP BY grp",
        true,
    ),
    (
        "SELECT count(*) AS c, sum(id) AS s, avg(price) AS a, min(price) AS mn FROM facts",
        true,
    ),
    (
        "SELECT grp, sum(price) AS s FROM facts GROUP BY grp HAVING count(*) > 1700 \
         ORDER BY grp",
        true,
    ),
    ("SELECT id, price, day FROM facts WHERE id % 97 = 0", true),
    (
        "SELECT id, price FROM facts WHERE price IS NOT NULL ORDER BY price DESC, id LIMIT 12",
        true,
    ),
    (
        "SELECT d.name, sum(f.price) AS s, count(*) AS c FROM facts f JOIN dims d ON f.k = d.k \
         GROUP BY d.name",
        true,
    ),
    (
        "SELECT count(DISTINCT k) AS ks, count(DISTINCT grp) AS gs FROM facts",
        true,
    ),
    (
        "SELECT grp, count(*) AS c FROM (SELECT grp, k FROM facts GROUP BY grp, k) AS t \
         GROUP BY grp",
        true,
    ),
    (
        "SELECT d.name, count(f.id) AS c FROM dims d LEFT JOIN facts f ON f.k = d.k \
         GROUP BY d.name",
        true,
    ),
    (
        "SELECT grp, round(avg(qty), 9) AS a, count(*) AS c FROM facts_csv GROUP BY grp",
        true,
    ),
    // The filter runs in the parts, the window over their rows.
    (
        "SELECT id, row_number() OVER (ORDER BY id) AS r FROM facts WHERE id < 40",
        true,
    ),
    (
        "SELECT d.name, count(f.id) AS c, count(*) AS n FROM facts f FULL JOIN dims d \
         ON f.k = d.k + 3 GROUP BY d.name",
        false,
    ),
];

async fn run(
    query: &str,
    inputs: &[TableInput],
    out: &Path,
    shards: u32,
) -> amdahl_executors::StageOutcome {
    let mut stage: Stage = stage(
        Work::Sql {
            query: query.into(),
        },
        inputs.to_vec(),
        Some(out.to_path_buf()),
        out,
    );
    stage.shards = shards;
    stage.device = amdahl_dags::DevicePreference::Cpu;
    let (log, _lines) = LogSink::channel();
    executors()
        .execute(&stage, &log)
        .await
        .unwrap_or_else(|e| panic!("{query} with {shards} shard(s): {e}"))
}

/// The output's rows in a fixed order (every column sorts them).
async fn rows(dir: &Path) -> String {
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_parquet(
        "out",
        &format!("{}/", dir.display()),
        datafusion::prelude::ParquetReadOptions::default(),
    )
    .await
    .unwrap();
    let columns: Vec<String> = ctx
        .table("out")
        .await
        .unwrap()
        .schema()
        .fields()
        .iter()
        .map(|f| format!("\"{}\"", f.name()))
        .collect();
    read_parquet(dir, &columns.join(", ")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_queries_answer_what_the_whole_query_does() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = tables(dir.path());
    for (i, (query, splits)) in QUERIES.iter().enumerate() {
        let whole = dir.path().join(format!("whole-{i}"));
        let outcome = run(query, &inputs, &whole, 1).await;
        assert!(outcome.note.is_none(), "{query}: {:?}", outcome.note);
        let expected = rows(&whole).await;
        assert!(
            expected.lines().count() > 4,
            "{query} returned nothing:\n{expected}"
        );
        for n in [2, 4, 7] {
            let split = dir.path().join(format!("split-{i}-{n}"));
            let outcome = run(query, &inputs, &split, n).await;
            let note = outcome.note.clone().unwrap_or_default();
            if *splits {
                // CSV splits by whole files (three here, one holding more than half).
                let parts = if query.contains("facts_csv") {
                    n.min(2)
                } else {
                    n
                };
                assert!(
                    note.starts_with(&format!(
                        "split `{}` into {parts} part(s); on the CPU ",
                        if query.contains("facts_csv") {
                            "facts_csv"
                        } else if query.contains("dims d LEFT") {
                            "dims"
                        } else {
                            "facts"
                        }
                    )),
                    "{query} with {n} shards: {note}"
                );
            } else {
                assert!(
                    note.contains("runs whole") && note.contains("Full join keeps rows"),
                    "{query}: {note}"
                );
            }
            assert_eq!(
                rows(&split).await,
                expected,
                "{query} split into {n} differs from the whole query ({note})"
            );
            assert_eq!(outcome.rows, Some(expected.lines().count() as u64 - 4));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_returning_query_writes_one_file_per_part() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = tables(dir.path());
    let out = dir.path().join("out");
    let outcome = run("SELECT id FROM facts WHERE id % 2 = 0", &inputs, &out, 5).await;
    let files = std::fs::read_dir(&out).unwrap().count();
    assert_eq!(files, 5, "{:?}", outcome.note);
    assert_eq!(outcome.rows, Some(9234 / 2));
}

/// The parts of a plan cover every row exactly once, whatever the row groups: a single file
/// of one row group splits too, and there are never more parts than rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_cover_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single.parquet");
    write_parquet(&single, &facts(0, 1001), 5000);
    let tiny = dir.path().join("tiny.parquet");
    write_parquet(&tiny, &facts(0, 3), 5000);
    for (path, rows) in [(single, 1001u64), (tiny, 3)] {
        let inputs = vec![TableInput {
            name: "t".into(),
            location: amdahl_dags::Location::Local(path),
            format: DatasetFormat::Parquet,
            parts: Vec::new(),
        }];
        let ctx = shards::session(2, Default::default());
        amdahl_executors::sql::register_input(&ctx, &inputs[0])
            .await
            .unwrap();
        let plan = ctx
            .sql("SELECT count(*) AS c, sum(id) AS s FROM t")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let split = shards::find(&plan, &inputs).unwrap();
        assert!(split.combines);
        for n in [1, 2, 3, 8] {
            let parts = split.parts(n);
            assert_eq!(parts.len(), n.min(rows as usize), "{rows} rows in {n}");
            assert_eq!(parts.iter().map(|p| p.rows.unwrap()).sum::<u64>(), rows);
            let mut outputs = Vec::new();
            let mut counted = 0i64;
            for part in &parts {
                let output = datafusion::physical_plan::collect_partitioned(
                    split.part_plan(part).unwrap(),
                    ctx.task_ctx(),
                )
                .await
                .unwrap();
                for batch in output.iter().flatten() {
                    let count = batch
                        .column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap();
                    counted += count.iter().flatten().sum::<i64>();
                }
                outputs.push(output);
            }
            assert_eq!(counted, rows as i64, "{n} parts");
            let combined = collect(
                split.combining_plan(&plan, outputs).unwrap(),
                ctx.task_ctx(),
            )
            .await
            .unwrap();
            let text = pretty_format_batches(&combined).unwrap().to_string();
            let sum = (rows * (rows - 1) / 2).to_string();
            assert!(
                text.contains(&format!("| {rows} ")) && text.contains(&sum),
                "{text}"
            );
        }
    }
}

/// GPU parts: each part's partial aggregate as the generated kernel (run by the host
/// emulation), combined by DataFusion's final half: TPC-H Q1 and Q6 equal the whole query
/// (avg included: its state is a count and a sum).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_parts_run_partial_aggregate_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let lineitem = lineitem(dir.path(), 0.01).await;
    let inputs = vec![TableInput {
        name: "lineitem".into(),
        location: amdahl_dags::Location::Local(lineitem),
        format: DatasetFormat::Parquet,
        parts: Vec::new(),
    }];
    for task in ["q1_pricing_summary", "q6_forecast_revenue"] {
        let sql = tpch_query(task);
        let ctx = shards::session(2, Default::default());
        amdahl_executors::sql::register_input(&ctx, &inputs[0])
            .await
            .unwrap();
        let plan = ctx
            .sql(&sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let expected = pretty_format_batches(&collect(plan.clone(), ctx.task_ctx()).await.unwrap())
            .unwrap()
            .to_string();
        let split = shards::find(&plan, &inputs).unwrap();
        let mut outputs = Vec::new();
        for (i, part) in split.parts(3).iter().enumerate() {
            let part_plan = split.part_plan(part).unwrap();
            let kernel = translate_partial(&part_plan).unwrap_or_else(|e| panic!("{task}: {e}"));
            let scratch = tempfile::tempdir().unwrap();
            let batch = emulation::run(&kernel, scratch.path(), 3)
                .unwrap_or_else(|e| panic!("{task} part {i}: {e}"));
            let batch = to_schema(batch, &part_plan.schema()).unwrap();
            // The part's state: one row per group (DataFusion's would be one per partition).
            assert!(batch.num_rows() >= 1, "{task} part {i}");
            outputs.push(vec![vec![batch]]);
        }
        let combined = collect(
            split.combining_plan(&plan, outputs).unwrap(),
            ctx.task_ctx(),
        )
        .await
        .unwrap();
        assert_eq!(
            pretty_format_batches(&combined).unwrap().to_string(),
            expected,
            "{task}"
        );
    }
}

/// On a GPU, through the executor: `shards: 4` with predictions that make both lanes equally
/// fast, so two parts run as kernels on the device and two on DataFusion; the combined answer
/// equals the whole query's (TPC-H Q1 and Q6 over SF 0.1) and the stage reports the GPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a CUDA device"]
async fn parts_shared_between_the_cpu_and_a_real_gpu_combine_exactly() {
    let report = amdahl_executors::gpu::devices();
    assert!(report.usable(), "no usable GPU: {:?}", report.problem);
    let dir = tempfile::tempdir().unwrap();
    let lineitem = lineitem(dir.path(), 0.1).await;
    let inputs = vec![TableInput {
        name: "lineitem".into(),
        location: amdahl_dags::Location::Local(lineitem),
        format: DatasetFormat::Parquet,
        parts: Vec::new(),
    }];
    for task in ["q1_pricing_summary", "q6_forecast_revenue"] {
        let sql = tpch_query(task);
        let whole = dir.path().join(format!("{task}-whole"));
        run(&sql, &inputs, &whole, 1).await;
        let split = dir.path().join(format!("{task}-split"));
        let mut shared = stage(
            Work::Sql { query: sql.clone() },
            inputs.clone(),
            Some(split.clone()),
            &split,
        );
        shared.shards = 4;
        shared.device = amdahl_dags::DevicePreference::Auto;
        shared.placement = Some(amdahl_placement::Placement {
            place: amdahl_placement::Place::Gpu,
            cpu_seconds: 1.0,
            gpu_seconds: Some(1.0),
            cluster_seconds: None,
            reason: "equal lanes (test)".into(),
            kind: None,
            cpu_factor: 1.0,
            gpu_factor: 1.0,
            cpu_fixed_seconds: 0.0,
            gpu_fixed_seconds: 0.0,
        });
        let (log, _lines) = LogSink::channel();
        let outcome = executors()
            .execute(&shared, &log)
            .await
            .unwrap_or_else(|e| panic!("{task}: {e}"));
        let note = outcome.note.clone().unwrap_or_default();
        println!("{task}: {note}");
        assert_eq!(
            outcome.device,
            amdahl_executors::Device::Gpu,
            "{task}: {note}"
        );
        assert!(
            note.contains("on the CPU 2 took") && note.contains("on the GPU 2 took"),
            "{task}: {note}"
        );
        assert!(
            outcome.timings.is_some_and(|t| t.transfer_ms > 0.0),
            "{task}: the GPU parts' copies are timed"
        );
        assert_eq!(rows(&split).await, rows(&whole).await, "{task}");
    }
}
