//! `amdahl calibrate`: measures this machine for the placement cost model.
//!
//! The CPU side: memory bandwidth (a copy over every core), DataFusion's throughput per
//! operator kind over an in-memory table (a filtered scan; a grouped aggregate, a join and a
//! sort, each priced as what it adds to the scan), matrix products with the `gemm` crate, and
//! the fixed cost of a query. The GPU side, when one is usable: device memory bandwidth,
//! host↔device bandwidth from pinned and pageable memory, the fixed cost of a copy, the
//! generated kernels' scan and aggregate throughput on the same shapes as the CPU's, cuBLAS
//! sgemm, the fixed cost of a whole small GPU stage, and free device memory. Every figure is a
//! median after a warm-up, over non-zero data.
//!
//! Rates are per input row of each operator (what `estimate` counts), flops for `gemm`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use amdahl_placement::{DeviceProfile, GpuProfile, OpKind, Profile};
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::gpu;
use crate::linalg::{multiply_transposed, uniform};
use crate::session::session_config;

/// How long to measure: `Quick` (about a second, for tests and a first start) or `Full`
/// (tens of seconds, steadier figures).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effort {
    Quick,
    Full,
}

impl Effort {
    fn rows(self) -> usize {
        match self {
            Effort::Quick => 1 << 17,
            Effort::Full => 1 << 23,
        }
    }

    fn copy_bytes(self) -> usize {
        match self {
            Effort::Quick => 16 << 20,
            Effort::Full => 512 << 20,
        }
    }

    fn gemm_n(self) -> usize {
        match self {
            Effort::Quick => 192,
            Effort::Full => 1024,
        }
    }

    fn gpu_link_bytes(self) -> usize {
        match self {
            Effort::Quick => 64 << 20,
            Effort::Full => 1 << 30,
        }
    }

    fn gpu_gemm_n(self) -> usize {
        match self {
            Effort::Quick => 1024,
            Effort::Full => 8192,
        }
    }
}

/// The measured profile and, in words, each figure behind it.
#[derive(Clone, Debug)]
pub struct Calibration {
    pub profile: Profile,
    /// (measure, value with unit), in the order measured.
    pub figures: Vec<(String, String)>,
    /// Why the GPU side is missing or partial, if it is.
    pub gpu_problem: Option<String>,
}

/// The calibration queries over [`sample_table`]'s `t` (and a `d` of [`GROUPS`] keys).
pub const SCAN: &str = "SELECT COUNT(*) AS n, SUM(v) AS s FROM t WHERE b < 0.5 AND a > 100";
pub const AGGREGATE: &str =
    "SELECT g, SUM(v) AS s, COUNT(*) AS n FROM t WHERE b < 0.5 AND a > 100 GROUP BY g";
pub const JOIN: &str =
    "SELECT COUNT(*) AS n, SUM(t.v) AS s FROM t JOIN d ON t.g = d.g WHERE t.b < 0.5 AND t.a > 100";
pub const SORT: &str = "SELECT a, v FROM t WHERE b < 0.5 AND a > 100 ORDER BY v";
/// Groups of the aggregate and rows of the join's build side.
pub const GROUPS: i64 = 1000;

/// The schema of [`sample_table`]: `a` BIGINT, `b` DOUBLE, `g` BIGINT, `v` DOUBLE.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, false),
        Field::new("b", DataType::Float64, false),
        Field::new("g", DataType::Int64, false),
        Field::new("v", DataType::Float64, false),
    ]))
}

/// `rows` rows in batches of 64 Ki: `a` uniform in 0..1M, `b` and `v` uniform in [0, 1),
/// `g` uniform in 0..GROUPS.
pub fn sample_table(rows: usize, seed: u64) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    let mut start = 0usize;
    while start < rows {
        let n = (1 << 16).min(rows - start);
        let unit = |column: u64, i: usize| {
            (uniform(seed ^ column, (start + i) as u64) as f64 * 0.5 + 0.5).clamp(0.0, 1.0)
        };
        let a: Int64Array = (0..n).map(|i| (unit(1, i) * 1e6) as i64).collect();
        let b: Float64Array = (0..n).map(|i| unit(2, i)).collect();
        let g: Int64Array = (0..n)
            .map(|i| ((unit(3, i) * GROUPS as f64) as i64).min(GROUPS - 1))
            .collect();
        let v: Float64Array = (0..n).map(|i| unit(4, i)).collect();
        let columns: Vec<ArrayRef> = vec![Arc::new(a), Arc::new(b), Arc::new(g), Arc::new(v)];
        batches.push(RecordBatch::try_new(schema(), columns).expect("calibration batch"));
        start += n;
    }
    batches
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Median seconds of `reps` runs of `f` after one warm-up run.
fn seconds(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

async fn query_seconds(ctx: &SessionContext, sql: &str, reps: usize) -> Result<f64, String> {
    let run = || async {
        ctx.sql(sql)
            .await
            .map_err(|e| format!("{sql}: {e}"))?
            .collect()
            .await
            .map_err(|e| format!("{sql}: {e}"))
    };
    run().await?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        run().await?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

/// Bytes per second of a copy over `threads` threads, counting bytes read plus written.
fn memory_bandwidth(bytes: usize, threads: usize) -> f64 {
    let src: Vec<u8> = (0..bytes).map(|i| (i * 131 + 7) as u8).collect();
    let mut dst = vec![0u8; bytes];
    let chunk = bytes.div_ceil(threads.max(1));
    let s = seconds(5, || {
        std::thread::scope(|scope| {
            for (d, s) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                scope.spawn(move || d.copy_from_slice(s));
            }
        });
    });
    assert_eq!(dst[bytes / 2], src[bytes / 2]);
    2.0 * bytes as f64 / s
}

/// Measures this machine. The CPU side always; the GPU side when one is usable (otherwise
/// `gpu` is `None` and `gpu_problem` says why).
pub async fn calibrate(effort: Effort) -> Result<Calibration, String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows = effort.rows();
    let reps = 5;
    let mut figures: Vec<(String, String)> = Vec::new();
    let mut note = |what: &str, value: String| figures.push((what.to_string(), value));

    // CPU.
    let bandwidth = memory_bandwidth(effort.copy_bytes(), threads);
    note(
        "CPU memory bandwidth (copy, read + write)",
        format!("{:.1} GB/s", bandwidth / 1e9),
    );
    let batches = sample_table(rows, 0xCA1);
    let partitions: Vec<Vec<RecordBatch>> = {
        let mut parts = vec![Vec::new(); threads];
        for (i, b) in batches.iter().enumerate() {
            parts[i % threads].push(b.clone());
        }
        parts.retain(|p| !p.is_empty());
        parts
    };
    let ctx = SessionContext::new_with_config(session_config(threads));
    let t = MemTable::try_new(schema(), partitions).map_err(|e| e.to_string())?;
    ctx.register_table("t", Arc::new(t))
        .map_err(|e| e.to_string())?;
    let dim_schema = Arc::new(Schema::new(vec![Field::new("g", DataType::Int64, false)]));
    let dim = RecordBatch::try_new(
        dim_schema.clone(),
        vec![Arc::new(Int64Array::from_iter_values(0..GROUPS))],
    )
    .map_err(|e| e.to_string())?;
    let d = MemTable::try_new(dim_schema, vec![vec![dim]]).map_err(|e| e.to_string())?;
    ctx.register_table("d", Arc::new(d))
        .map_err(|e| e.to_string())?;
    // What a stage pays whatever its size: a session, a table, planning and running a query
    // (the scan's, over 64 rows).
    let fixed = {
        let tiny = sample_table(64, 0xF1);
        let mut times = Vec::new();
        for _ in 0..8 {
            let t = Instant::now();
            let ctx = SessionContext::new_with_config(session_config(threads));
            let table =
                MemTable::try_new(schema(), vec![tiny.clone()]).map_err(|e| e.to_string())?;
            ctx.register_table("t", Arc::new(table))
                .map_err(|e| e.to_string())?;
            ctx.sql(SCAN)
                .await
                .map_err(|e| e.to_string())?
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            times.push(t.elapsed().as_secs_f64());
        }
        median(times[2..].to_vec())
    };
    note("CPU fixed cost per stage", format!("{:.2} ms", fixed * 1e3));
    let scan_query = query_seconds(&ctx, SCAN, reps).await?;
    let aggregate = query_seconds(&ctx, AGGREGATE, reps).await?;
    let join = query_seconds(&ctx, JOIN, reps).await?;
    let sort = query_seconds(&ctx, SORT, reps).await?;
    // The scan is what its query takes beyond a query's fixed cost; each other operator is
    // what it adds to the scan it sits on (at least a tenth of its query's time, so noise
    // cannot make an operator free).
    let scan = (scan_query - fixed).max(scan_query / 10.0);
    let extra = |t: f64| (t - scan_query).max(t / 10.0);
    let r = rows as f64;
    let mut cpu_rates = BTreeMap::from([
        (OpKind::Scan, r / scan),
        (OpKind::Aggregate, r / extra(aggregate)),
        (OpKind::Join, r / extra(join)),
        (OpKind::Sort, r / extra(sort)),
    ]);
    let n = effort.gemm_n();
    let a: Vec<f32> = (0..(n * n) as u64).map(|i| uniform(1, i)).collect();
    let b: Vec<f32> = (0..(n * n) as u64).map(|i| uniform(2, i)).collect();
    let gemm = seconds(3, || {
        std::hint::black_box(multiply_transposed(&a, &b, n, n, n, threads));
    });
    cpu_rates.insert(OpKind::Gemm, 2.0 * (n as f64).powi(3) / gemm);
    for (kind, rate) in &cpu_rates {
        note(
            &format!("CPU {} ({threads} threads)", kind.name()),
            rate_text(*kind, *rate),
        );
    }
    let cpu = DeviceProfile {
        memory_bandwidth: bandwidth,
        throughput: cpu_rates,
        fixed_seconds: fixed,
    };

    // GPU.
    let report = gpu::devices();
    let (gpu, gpu_problem) = if report.usable() {
        match calibrate_gpu(effort, &batches, threads, &mut note).await {
            Ok(g) => (Some(g), None),
            Err(e) => (None, Some(format!("the GPU could not be measured: {e}"))),
        }
    } else {
        (None, report.problem.clone())
    };
    if let Some(problem) = &gpu_problem {
        note("GPU", format!("none usable: {problem}"));
    }
    let host = hostname();
    let profile = Profile {
        cpu,
        gpu,
        cluster: None,
        source: Some(format!(
            "measured by amdahl calibrate ({}) on {host}, {threads} CPU threads",
            match effort {
                Effort::Quick => "quick",
                Effort::Full => "full",
            }
        )),
        corrections: Vec::new(),
    };
    Ok(Calibration {
        profile,
        figures,
        gpu_problem,
    })
}

async fn calibrate_gpu(
    effort: Effort,
    batches: &[RecordBatch],
    threads: usize,
    note: &mut impl FnMut(&str, String),
) -> Result<GpuProfile, String> {
    let link = gpu::measure::link(effort.gpu_link_bytes()).map_err(|e| e.to_string())?;
    note(
        "GPU memory bandwidth (copy, read + write)",
        format!("{:.0} GB/s", link.device_copy / 1e9),
    );
    for (what, rate) in [
        ("host → GPU, pinned", link.pinned_to_device),
        ("GPU → host, pinned", link.pinned_to_host),
        ("host → GPU, pageable", link.pageable_to_device),
        ("GPU → host, pageable", link.pageable_to_host),
    ] {
        note(what, format!("{:.1} GB/s", rate / 1e9));
    }
    note(
        "copy latency (4 bytes)",
        format!("{:.1} µs", link.copy_latency * 1e6),
    );
    note(
        "GPU memory free / total",
        format!("{} / {} MiB", link.free_bytes >> 20, link.total_bytes >> 20),
    );
    // The generated kernels on the same shapes as the CPU's queries: plans come from
    // DataFusion over a small Parquet file of the same schema, then run over the in-memory
    // columns; rates use the kernel time alone (copies are priced by the link figures).
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("t.parquet");
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(&file).map_err(|e| e.to_string())?,
        schema(),
        None,
    )
    .map_err(|e| e.to_string())?;
    for b in sample_table(1000, 0xCA2) {
        writer.write(&b).map_err(|e| e.to_string())?;
    }
    writer.close().map_err(|e| e.to_string())?;
    let ctx = SessionContext::new_with_config(session_config(threads));
    ctx.register_parquet(
        "t",
        file.to_str().ok_or("temp path is not UTF-8")?,
        ParquetReadOptions::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut kernel = BTreeMap::new();
    let mut staging = Vec::new();
    for (kind, sql) in [(OpKind::Scan, SCAN), (OpKind::Aggregate, AGGREGATE)] {
        let plan = ctx
            .sql(sql)
            .await
            .map_err(|e| e.to_string())?
            .create_physical_plan()
            .await
            .map_err(|e| e.to_string())?;
        let plan = gpu::translate(&plan).map_err(|e| format!("{sql}: {e}"))?;
        let columns = gpu::cuda::plan_columns(&plan, batches).map_err(|e| e.to_string())?;
        let mut kernel_ms = Vec::new();
        for _ in 0..6 {
            let (_, t) = gpu::cuda::run_batches(&plan, &columns, Instant::now())
                .map_err(|e| format!("{sql}: {e}"))?;
            kernel_ms.push(t.kernel_ms);
            // Packing the columns and staging them in pinned memory, per byte sent.
            staging.push(t.upload_bytes as f64 / ((t.read_ms + t.stage_ms) / 1e3));
        }
        // The first run compiles and loads the kernel (and pins the staging buffer).
        kernel.insert(kind, median(kernel_ms[1..].to_vec()) / 1e3);
        staging.remove(staging.len() - 6);
    }
    let staging = median(staging);
    note(
        "host staging for the GPU (pack + pinned copy)",
        format!("{:.1} GB/s", staging / 1e9),
    );
    let scan = kernel[&OpKind::Scan];
    let aggregate = (kernel[&OpKind::Aggregate] - scan).max(kernel[&OpKind::Aggregate] / 10.0);
    let n = effort.gpu_gemm_n();
    let gemm = gpu::measure::sgemm_flops(n).map_err(|e| e.to_string())?;
    let throughput = BTreeMap::from([
        (OpKind::Scan, rows as f64 / scan),
        (OpKind::Aggregate, rows as f64 / aggregate),
        (OpKind::Gemm, gemm),
    ]);
    for (kind, rate) in &throughput {
        note(&format!("GPU {}", kind.name()), rate_text(*kind, *rate));
    }
    note(
        "GPU join, sort",
        "no GPU implementation (always the CPU)".into(),
    );
    // A whole small stage: pack, pin, copy in, launch, copy out, assemble.
    let plan = gpu::translate(
        &ctx.sql(SCAN)
            .await
            .map_err(|e| e.to_string())?
            .create_physical_plan()
            .await
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let small =
        gpu::cuda::plan_columns(&plan, &sample_table(64, 0xF2)).map_err(|e| e.to_string())?;
    let mut fixed = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        gpu::cuda::run_batches(&plan, &small, t).map_err(|e| e.to_string())?;
        fixed.push(t.elapsed().as_secs_f64());
    }
    let fixed = median(fixed[1..].to_vec());
    note("GPU fixed cost per stage", format!("{:.2} ms", fixed * 1e3));
    let name = gpu::devices()
        .devices
        .first()
        .map_or_else(|| "GPU".to_string(), |d| d.name.clone());
    Ok(GpuProfile {
        name,
        device: DeviceProfile {
            // A stream of reads runs at about a copy's read + write rate.
            memory_bandwidth: link.device_copy,
            throughput,
            fixed_seconds: fixed,
        },
        host_to_device: link.pinned_to_device,
        device_to_host: link.pinned_to_host,
        transfer_latency: link.copy_latency,
        free_bytes: link.free_bytes,
        pageable_host_to_device: Some(link.pageable_to_device),
        pageable_device_to_host: Some(link.pageable_to_host),
        host_staging: Some(staging),
    })
}

fn rate_text(kind: OpKind, rate: f64) -> String {
    match kind {
        OpKind::Gemm => format!("{:.1} GFLOP/s", rate / 1e9),
        _ if rate < 10e6 => format!("{:.2} M rows/s", rate / 1e6),
        _ => format!("{:.0} M rows/s", rate / 1e6),
    }
}

/// This machine's name, for the profile's source and the state store's key.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// A cluster measured from this worker, and each figure behind it in words.
#[derive(Clone, Debug)]
pub struct ClusterCalibration {
    pub profile: amdahl_placement::ClusterProfile,
    pub figures: Vec<(String, String)>,
}

/// A query returning what [`SORT`] returns, unsorted: the cost of results coming back.
const RESULT: &str = "SELECT a, v FROM t WHERE b < 0.5 AND a > 100";

/// Measures `ballista`'s cluster as a place for `sql` stages, from this worker: the calibration
/// table written as Parquet where the cluster can read it (`shared`, the data root in object
/// storage, when there is one; else this machine's disk, which only the in-process cluster
/// reads), then whole stages as a worker runs them (the query handed to the cluster, its
/// result written here): a 64-row query for the fixed cost, the CPU's queries for the rates
/// per kind (a rate is per input row, as on the CPU), and a query returning its rows for the
/// bandwidth of results coming back. The files are removed afterwards.
pub async fn calibrate_cluster(
    ballista: &crate::ballista::Ballista,
    runtime: &crate::runtime::CpuRuntime,
    effort: Effort,
    shared: Option<&amdahl_dags::ObjectLocation>,
) -> Result<ClusterCalibration, String> {
    use crate::stage::{LogSink, TableInput};
    use amdahl_dags::{DatasetFormat, Location};

    let Some(cluster) = ballista.cluster().cloned() else {
        return Err("no Ballista cluster named (--ballista)".into());
    };
    let rows = effort.rows();
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch folder: {e}"))?;
    let write = |name: &str, batches: &[RecordBatch]| -> Result<(), String> {
        let dir = scratch.path().join("tables").join(name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let file = std::fs::File::create(dir.join("part-0.parquet")).map_err(|e| e.to_string())?;
        let mut writer =
            ArrowWriter::try_new(file, batches[0].schema(), None).map_err(|e| e.to_string())?;
        for batch in batches {
            writer.write(batch).map_err(|e| e.to_string())?;
        }
        writer.close().map_err(|e| e.to_string())?;
        Ok(())
    };
    let t_batches = sample_table(rows, 0xC1);
    write("t", &t_batches)?;
    // Rows the result query returns.
    let returned = t_batches
        .iter()
        .map(|batch| {
            let (a, b) = (
                batch.column(0).as_any().downcast_ref::<Int64Array>(),
                batch.column(1).as_any().downcast_ref::<Float64Array>(),
            );
            match (a, b) {
                (Some(a), Some(b)) => a
                    .values()
                    .iter()
                    .zip(b.values())
                    .filter(|(a, b)| **a > 100 && **b < 0.5)
                    .count(),
                _ => 0,
            }
        })
        .sum::<usize>() as f64;
    drop(t_batches);
    write("tiny", &sample_table(64, 0xF1))?;
    let dim_schema = Arc::new(Schema::new(vec![Field::new("g", DataType::Int64, false)]));
    let dim = RecordBatch::try_new(
        dim_schema,
        vec![Arc::new(Int64Array::from_iter_values(0..GROUPS))],
    )
    .map_err(|e| e.to_string())?;
    write("d", &[dim])?;
    let uploaded = match shared {
        Some(root) => {
            let prefix = crate::objects::child(
                root,
                &format!("calibration/{}-{}", hostname(), std::process::id()),
            );
            for name in ["t", "tiny", "d"] {
                crate::objects::upload_dir(
                    &scratch.path().join("tables").join(name),
                    &crate::objects::child(&prefix, name),
                )
                .await?;
            }
            Some(prefix)
        }
        None => None,
    };
    let input = |sql_name: &str, dir: &str| TableInput {
        name: sql_name.to_string(),
        location: match &uploaded {
            Some(prefix) => {
                let mut at = crate::objects::child(prefix, dir);
                at.url.push('/');
                Location::Object(at)
            }
            None => Location::Local(scratch.path().join("tables").join(dir)),
        },
        format: DatasetFormat::Parquet,
        parts: Vec::new(),
    };
    let (log, _lines) = LogSink::channel();
    let out = scratch.path().join("out");
    let measured = async {
        let timed = |query: &'static str, inputs: Vec<TableInput>, reps: usize| {
            cluster_median(ballista, runtime, query, inputs, &out, &log, reps)
        };
        let reps = 3;
        let fixed = timed(SCAN, vec![input("t", "tiny")], 5).await?;
        let t = || vec![input("t", "t")];
        let scan_query = timed(SCAN, t(), reps).await?;
        let aggregate = timed(AGGREGATE, t(), reps).await?;
        let join = timed(JOIN, vec![input("t", "t"), input("d", "d")], reps).await?;
        let sort = timed(SORT, t(), reps).await?;
        let result = timed(RESULT, t(), reps).await?;
        Ok::<_, String>((fixed, scan_query, aggregate, join, sort, result))
    }
    .await
    .map_err(|e| format!("{cluster}: {e}"));
    if let Some(prefix) = &uploaded {
        // Best effort: a calibration that cannot tidy up still measured what it measured.
        let _ = crate::objects::delete_prefix(prefix).await;
    }
    let (fixed, scan_query, aggregate, join, sort, result) = measured?;
    // As on the CPU: the scan is its query beyond the fixed cost, each other operator what it
    // adds to the scan (at least a tenth of its query).
    let scan = (scan_query - fixed).max(scan_query / 10.0);
    let extra = |t: f64| (t - scan_query).max(t / 10.0);
    let r = rows as f64;
    let throughput = BTreeMap::from([
        (OpKind::Scan, r / scan),
        (OpKind::Aggregate, r / extra(aggregate)),
        (OpKind::Join, r / extra(join)),
        // The sort query returns its rows: what it adds beyond returning them unsorted.
        (OpKind::Sort, r / (sort - result).max(sort / 10.0)),
    ]);
    // Bytes as the estimates count them: 8 per value of the four columns.
    let table_bytes = r * 32.0;

    let profile = amdahl_placement::ClusterProfile {
        name: cluster.name().to_string(),
        device: DeviceProfile {
            memory_bandwidth: table_bytes / scan,
            throughput,
            fixed_seconds: fixed,
        },
        result_bandwidth: returned * 16.0 / extra(result),
    };
    let mut figures = vec![
        (
            "cluster".to_string(),
            format!(
                "{cluster}{}",
                if uploaded.is_some() {
                    ", reading from the data root"
                } else {
                    ", reading this machine's files"
                }
            ),
        ),
        (
            "cluster fixed cost per query".to_string(),
            format!("{:.1} ms", fixed * 1e3),
        ),
    ];
    for (kind, rate) in &profile.device.throughput {
        figures.push((format!("cluster {}", kind.name()), rate_text(*kind, *rate)));
    }
    figures.push((
        "cluster results to the worker".to_string(),
        format!("{:.0} MB/s", profile.result_bandwidth / 1e6),
    ));
    Ok(ClusterCalibration { profile, figures })
}

/// Median seconds of `reps` whole stages of `query` on the cluster, after one warm-up.
async fn cluster_median(
    ballista: &crate::ballista::Ballista,
    runtime: &crate::runtime::CpuRuntime,
    query: &str,
    inputs: Vec<crate::stage::TableInput>,
    out: &std::path::Path,
    log: &crate::stage::LogSink,
    reps: usize,
) -> Result<f64, String> {
    let mut times = Vec::with_capacity(reps);
    for rep in 0..=reps {
        let pool = crate::runtime::QueryPool {
            partitions: runtime.threads(),
            env: runtime.datafusion_env(),
            memory: runtime.memory(),
        };
        let started = Instant::now();
        ballista
            .run(query, &inputs, out, pool, log)
            .await
            .map_err(|e| e.to_string())?;
        if rep > 0 {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    Ok(median(times))
}
