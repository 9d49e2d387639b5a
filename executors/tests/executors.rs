//! The executors' integration tests: real DataFusion over real files, real TPC-H data, real
//! processes. SQL validation cases are golden files: `sql_cases/*.yaml` → `*.expected`
//! (`UPDATE_EXPECT=1` rewrites them).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::MemTable;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use tpchgen::generators::LineItemGenerator;
use tpchgen_arrow::{LineItemArrow, RecordBatchIterator};

mod ballista;
mod calibrate;
mod dense;
mod kernel;
mod objects;
mod place;
mod shards;

use amdahl_dags::{DatasetFormat, TaskKind, TpchTable, load_file};
use amdahl_executors::{
    CpuRuntime, Executors, LogSink, LogStream, Stage, StageError, TableInput, Work,
};

fn stage(
    work: Work,
    inputs: Vec<TableInput>,
    output_dir: Option<PathBuf>,
    work_dir: &Path,
) -> Stage {
    Stage {
        dag_id: "test".into(),
        run_id: 1,
        task_id: "t".into(),
        attempt: 1,
        work,
        inputs,
        output_dir,
        work_dir: work_dir.to_path_buf(),
        device: amdahl_dags::DevicePreference::Auto,
        placement: None,
        route: None,
        secrets: Vec::new(),
        condition: None,
        export: None,
        shards: 1,
        engine: amdahl_dags::Engine::DataFusion,
    }
}

fn executors() -> Executors {
    Executors::new(CpuRuntime::new(2).unwrap())
}

async fn read_parquet(dir: &Path, order_by: &str) -> String {
    let ctx = SessionContext::new();
    ctx.register_parquet(
        "out",
        &format!("{}/", dir.display()),
        ParquetReadOptions::default(),
    )
    .await
    .unwrap();
    let batches = ctx
        .sql(&format!("SELECT * FROM out ORDER BY {order_by}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_validation_golden_cases() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir("tests/sql_cases")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    let mut failures = Vec::new();
    for case in cases {
        let dag = load_file(&case).unwrap_or_else(|e| panic!("{}", e.render()));
        let diagnostics = amdahl_executors::check::check_sql(&dag).await;
        let actual = if diagnostics.is_empty() {
            "ok\n".to_string()
        } else {
            diagnostics.render(&dag.source.text)
        };
        let expected_path = case.with_extension("expected");
        if std::env::var("UPDATE_EXPECT").as_deref() == Ok("1") {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}\n--- expected\n{expected}\n--- actual\n{actual}",
                expected_path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The example pipeline's Q1 and Q6, run through the executors (generate → Parquet → SQL →
/// Parquet), give exactly DataFusion's answer over the generator's batches in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_q1_and_q6_match_datafusion_on_the_same_data() {
    let dag = load_file(Path::new("../dags/examples/tpch.yaml")).unwrap();
    let query = |id: &str| match &dag.task(id).unwrap().kind {
        TaskKind::Sql(sql) => sql.text.clone(),
        _ => panic!("{id} is sql"),
    };
    let dir = tempfile::tempdir().unwrap();
    let exec = executors();
    let (log, _lines) = LogSink::channel();
    let lineitem_dir = dir.path().join("lineitem");
    let generated = exec
        .execute(
            &stage(
                Work::Tpch {
                    table: TpchTable::LineItem,
                    scale_factor: 0.05,
                },
                vec![],
                Some(lineitem_dir.clone()),
                dir.path(),
            ),
            &log,
        )
        .await
        .unwrap();
    assert!(
        std::fs::read_dir(&lineitem_dir).unwrap().count() >= 2,
        "generated in parallel partitions"
    );

    // The reference: DataFusion over the generator's batches, never written to disk.
    let reference = SessionContext::new();
    let batches: Vec<_> = LineItemArrow::new(LineItemGenerator::new(0.05, 1, 1)).collect();
    let schema = LineItemArrow::new(LineItemGenerator::new(0.05, 1, 1))
        .schema()
        .clone();
    let reference_rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(
        generated.rows,
        Some(reference_rows as u64),
        "partitioned generation yields every row once"
    );
    reference
        .register_table(
            "lineitem",
            Arc::new(MemTable::try_new(schema, vec![batches]).unwrap()),
        )
        .unwrap();

    for (task, order_by) in [
        ("q1_pricing_summary", "l_returnflag, l_linestatus"),
        ("q6_forecast_revenue", "revenue"),
    ] {
        let out = dir.path().join(task);
        let input = TableInput {
            name: "lineitem".into(),
            location: amdahl_dags::Location::Local(lineitem_dir.clone()),
            format: DatasetFormat::Parquet,
            parts: Vec::new(),
        };
        let outcome = exec
            .execute(
                &stage(
                    Work::Sql { query: query(task) },
                    vec![input],
                    Some(out.clone()),
                    dir.path(),
                ),
                &log,
            )
            .await
            .unwrap();
        assert!(outcome.rows.unwrap() >= 1);
        let ours = read_parquet(&out, order_by).await;
        let expected_batches = reference
            .sql(&query(task))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let expected = pretty_format_batches(&expected_batches)
            .unwrap()
            .to_string();
        assert_eq!(ours, expected, "{task}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_a_csv_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let input = TableInput {
        name: "regions".into(),
        location: amdahl_dags::Location::Local(
            std::fs::canonicalize("../dags/examples/data/regions.csv").unwrap(),
        ),
        format: DatasetFormat::Csv,
        parts: Vec::new(),
    };
    let (log, mut lines) = LogSink::channel();
    let out = dir.path().join("o");
    let outcome = executors()
        .execute(
            &stage(
                Work::Sql {
                    query: "SELECT region_name FROM regions WHERE region_id > 2".into(),
                },
                vec![input],
                Some(out.clone()),
                dir.path(),
            ),
            &log,
        )
        .await
        .unwrap();
    assert_eq!(outcome.rows, Some(2));
    assert!(outcome.bytes.unwrap() > 0);
    assert_eq!(
        read_parquet(&out, "region_name").await,
        "+-------------+\n| region_name |\n+-------------+\n| east        |\n| west        |\n+-------------+"
    );
    drop(log);
    let mut system = Vec::new();
    while let Some(line) = lines.recv().await {
        system.push(line.text);
    }
    assert!(
        system.iter().any(|l| l.contains("wrote 2 rows")),
        "{system:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_query_reports_the_engine_error() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _lines) = LogSink::channel();
    let result = executors()
        .execute(
            &stage(
                Work::Sql {
                    query: "SELECT * FROM nowhere".into(),
                },
                vec![],
                Some(dir.path().join("o")),
                dir.path(),
            ),
            &log,
        )
        .await;
    match result {
        Err(StageError::Failed(message)) => assert!(message.contains("nowhere"), "{message}"),
        other => panic!("expected a user error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_output_is_the_log_and_exit_codes_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut lines) = LogSink::channel();
    let input = TableInput {
        name: "up".into(),
        location: amdahl_dags::Location::Local(dir.path().join("up")),
        format: DatasetFormat::Parquet,
        parts: Vec::new(),
    };
    let ok = executors()
        .execute(
            &stage(
                Work::Shell { command: "echo out; echo err >&2; printf 'no newline'; echo; pwd; echo $AMDAHL_INPUT_UP".into() },
                vec![input],
                None,
                dir.path(),
            ),
            &log,
        )
        .await
        .unwrap();
    assert_eq!((ok.rows, ok.bytes), (None, None));
    let failed = executors()
        .execute(
            &stage(
                Work::Shell {
                    command: "exit 7".into(),
                },
                vec![],
                None,
                dir.path(),
            ),
            &log,
        )
        .await;
    assert!(
        matches!(&failed, Err(StageError::Failed(m)) if m.contains("status 7")),
        "{failed:?}"
    );
    drop(log);
    let mut got = Vec::new();
    while let Some(line) = lines.recv().await {
        got.push((line.stream, line.text));
    }
    let here = std::fs::canonicalize(dir.path())
        .unwrap()
        .display()
        .to_string();
    assert!(got.contains(&(LogStream::Stdout, "out".into())));
    assert!(got.contains(&(LogStream::Stderr, "err".into())));
    assert!(got.contains(&(LogStream::Stdout, "no newline".into())));
    assert!(
        got.iter()
            .any(|(_, l)| *l == here
                || l.ends_with(dir.path().file_name().unwrap().to_str().unwrap())),
        "{got:?}"
    );
    assert!(got.contains(&(
        LogStream::Stdout,
        dir.path().join("up").display().to_string()
    )));
}

/// Dropping a shell stage (what a timeout does) kills its whole process group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_shell_stage_kills_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("survived");
    let (log, _lines) = LogSink::channel();
    let exec = executors();
    let command = format!("(sleep 2; touch {}) & sleep 30", flag.display());
    let st = stage(Work::Shell { command }, vec![], None, dir.path());
    let result = tokio::time::timeout(Duration::from_millis(500), exec.execute(&st, &log)).await;
    assert!(result.is_err(), "timed out");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !flag.exists(),
        "the background child was killed with the group"
    );
}

/// Mutated versions of the example DAGs that still load are planned without a panic,
/// whatever their SQL became.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_sql_plans_or_fails_but_never_panics() {
    let sources: Vec<Vec<u8>> = [
        "../dags/examples/tpch.yaml",
        "../dags/examples/csv_sales.yaml",
    ]
    .iter()
    .map(|p| std::fs::read(p).unwrap())
    .collect();
    let base = std::fs::canonicalize("../dags/examples").unwrap();
    let mut mutator = amdahl_dags::testing::Mutator::new(0x9e37_79b9_7f4a_7c15);
    let mut planned = 0;
    for round in 0..400 {
        let bytes = mutator.mutate(&sources[round % sources.len()]);
        if let Ok(dag) = amdahl_dags::load_bytes("mutated.yaml", &base, &bytes) {
            amdahl_executors::check::check_sql(&dag).await;
            planned += 1;
        }
    }
    assert!(
        planned > 50,
        "enough mutations reached the planner: {planned}"
    );
}

/// What a stage holds outside DataFusion's operators comes out of the same budget: a dense
/// stage's vectors (claimed before they are read, released when the stage ends, so two runs
/// in a row fit where one does) and a split query's part outputs held until they are
/// combined. A stage that cannot fit fails saying what needed how much, and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_stages_and_split_parts_hold_memory_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let input = |name: &str, path: PathBuf| TableInput {
        name: name.into(),
        location: amdahl_dags::Location::Local(path),
        format: DatasetFormat::Parquet,
        parts: Vec::new(),
    };
    let run = |exec: Executors, work: Work, inputs: Vec<TableInput>, out: &str, shards: u32| {
        let mut stage = stage(work, inputs, Some(dir.path().join(out)), dir.path());
        stage.shards = shards;
        async move {
            let (log, _lines) = LogSink::channel();
            exec.execute(&stage, &log).await
        }
    };
    let vectors = |rows, seed| Work::Vectors {
        rows,
        dim: 32,
        seed,
    };
    run(executors(), vectors(20_000, 1), vec![], "base", 1)
        .await
        .unwrap();
    run(executors(), vectors(100, 2), vec![], "queries", 1)
        .await
        .unwrap();
    let knn = Work::Knn {
        base: "base".into(),
        queries: "queries".into(),
        column: "vector".into(),
        k: 5,
        metric: amdahl_dags::Metric::L2,
    };
    let tables = vec![
        input("base", dir.path().join("base")),
        input("queries", dir.path().join("queries")),
    ];
    // 20,000 × 32 floats are 2.4 MiB.
    let small = Executors::new(CpuRuntime::with_memory(1, Some(2 << 20)).unwrap());
    match run(small, knn.clone(), tables.clone(), "knn-small", 1).await {
        Err(StageError::OutOfMemory(message)) => assert!(
            message.starts_with(
                "reading `base` (20000 × 32 floats) needs 3 MiB, more than this worker's memory \
                 budget (--memory 2 MiB) has left: give the worker more (--memory)"
            ),
            "{message}"
        ),
        other => panic!("expected the budget to be exceeded, got {other:?}"),
    }
    let enough = Executors::new(CpuRuntime::with_memory(1, Some(4 << 20)).unwrap());
    let free = run(executors(), knn.clone(), tables.clone(), "knn-free", 1)
        .await
        .unwrap();
    for out in ["knn-1", "knn-2"] {
        let bounded = run(enough.clone(), knn.clone(), tables.clone(), out, 1)
            .await
            .unwrap();
        assert_eq!(bounded.rows, free.rows);
        assert_eq!(
            read_parquet(&dir.path().join(out), "query, rank").await,
            read_parquet(&dir.path().join("knn-free"), "query, rank").await
        );
    }

    // A global sort split in two: each part sorts (spilling within the budget) and its rows
    // are held until the parts are merged, about 58 MB for these columns.
    let lineitem = kernel::lineitem(dir.path(), 0.1).await;
    let sort = Work::Sql {
        query: "SELECT l_orderkey, l_partkey, l_suppkey, l_linenumber, l_quantity, \
                l_extendedprice, l_discount, l_tax FROM lineitem ORDER BY l_partkey, l_orderkey"
            .into(),
    };
    let bounded = Executors::new(CpuRuntime::with_memory(1, Some(32 << 20)).unwrap());
    match run(
        bounded,
        sort,
        vec![input("lineitem", lineitem)],
        "sorted",
        2,
    )
    .await
    {
        Err(StageError::OutOfMemory(message)) => assert!(
            message.contains("output until the parts are combined needs")
                && message.contains("this worker's memory budget (--memory 32 MiB)"),
            "{message}"
        ),
        other => panic!("expected the budget to be exceeded, got {other:?}"),
    }
}

/// Under a memory budget, a sort bigger than the budget spills to disk and gives the same
/// rows as without one; a hash join whose build side cannot fit (it does not spill) fails
/// with a message that names the budget and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_budget_spills_or_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let lineitem = kernel::lineitem(dir.path(), 0.1).await;
    let input = TableInput {
        name: "lineitem".into(),
        location: amdahl_dags::Location::Local(lineitem),
        format: DatasetFormat::Parquet,
        parts: Vec::new(),
    };
    // DataFusion sets 10 MB aside per partition to merge a sort's spill files: one partition
    // and 32 MiB leave 22 for sorting.
    let budget = 32 << 20;
    let bounded = Executors::new(CpuRuntime::with_memory(1, Some(budget)).unwrap());
    let run = |exec: &Executors, query: &str, out: &str| {
        let stage = stage(
            Work::Sql {
                query: query.into(),
            },
            vec![input.clone()],
            Some(dir.path().join(out)),
            dir.path(),
        );
        let exec = exec.clone();
        async move {
            let (log, _lines) = LogSink::channel();
            exec.execute(&stage, &log).await
        }
    };
    // The numeric columns of every row, sorted: about 58 MB through a 32 MiB budget.
    let sort = "SELECT l_orderkey, l_partkey, l_suppkey, l_linenumber, l_quantity, l_extendedprice, \
                l_discount, l_tax FROM lineitem ORDER BY l_partkey, l_orderkey, l_linenumber";
    let free = run(&executors(), sort, "free").await.unwrap();
    let spilled = run(&bounded, sort, "spilled").await.unwrap();
    assert!(free.rows.unwrap() > 500_000, "{:?}", free.rows);
    assert_eq!(spilled.rows, free.rows);
    let first_rows = |out: &str| {
        let out = dir.path().join(out);
        async move { read_parquet(&out, "l_partkey, l_orderkey, l_linenumber LIMIT 5").await }
    };
    assert_eq!(first_rows("spilled").await, first_rows("free").await);
    // A join on the comments: its build side holds every row's comment and the columns used
    // above the join (tens of MB), and a hash join does not spill.
    let join = "SELECT count(*) AS n, max(a.l_shipinstruct || a.l_shipmode), max(b.l_shipinstruct || b.l_shipmode), \
                max(a.l_extendedprice + a.l_tax), max(b.l_extendedprice + b.l_tax) \
                FROM lineitem a JOIN lineitem b ON a.l_comment = b.l_comment";
    match run(&bounded, join, "join").await {
        Err(StageError::Failed(message)) => {
            assert!(
                message.starts_with(
                    "the query needs more memory than this worker's memory budget (--memory 32 MiB) allows"
                ),
                "{message}"
            );
            assert!(message.contains("Resources exhausted"), "{message}");
        }
        other => panic!("expected the budget to be exceeded, got {other:?}"),
    }
}

/// GPU fault injection: after a lasting CUDA error (an uncorrectable ECC error, injected
/// through the call the GPU paths make when they meet one) a stage that asked for the GPU
/// runs on the CPU, gives the right answer, and its note says the GPU was lost and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_gpu_is_lost_gpu_stages_run_on_the_cpu_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("numbers");
    SessionContext::new()
        .sql("SELECT CAST(column1 AS BIGINT) AS x FROM (VALUES (1), (2), (3), (4))")
        .await
        .unwrap()
        .write_parquet(
            data.to_str().unwrap(),
            datafusion::dataframe::DataFrameWriteOptions::new(),
            None,
        )
        .await
        .unwrap();
    amdahl_executors::gpu::health::mark_lost(
        "DriverError(CUDA_ERROR_ECC_UNCORRECTABLE, \"uncorrectable ECC error encountered\") (injected)",
    );
    assert!(!amdahl_executors::gpu::usable());
    let mut on_gpu = stage(
        Work::Sql {
            query: "SELECT sum(x) AS s FROM numbers WHERE x > 1".into(),
        },
        vec![TableInput {
            name: "numbers".into(),
            location: amdahl_dags::Location::Local(data),
            format: DatasetFormat::Parquet,
            parts: Vec::new(),
        }],
        Some(dir.path().join("out")),
        dir.path(),
    );
    on_gpu.device = amdahl_dags::DevicePreference::Gpu;
    let (log, _lines) = LogSink::channel();
    let outcome = executors().execute(&on_gpu, &log).await.unwrap();
    assert_eq!(outcome.device, amdahl_executors::Device::Cpu);
    let note = outcome.note.unwrap_or_default();
    assert!(
        note.contains("no GPU is usable here (the GPU was lost earlier in this process: DriverError(CUDA_ERROR_ECC_UNCORRECTABLE"),
        "{note}"
    );
    assert_eq!(
        read_parquet(&dir.path().join("out"), "s").await,
        "+---+\n| s |\n+---+\n| 9 |\n+---+"
    );
}
