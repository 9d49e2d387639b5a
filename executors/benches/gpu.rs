//! The GPU benchmark: the machine's ceilings first, then the Q6 shape (filter + aggregate) at
//! 1 MB … 8 GB of input against those ceilings and against DataFusion on every core, then
//! `knn` (1M × 128 base, 10k queries) on the GPU and on the CPU. Prints markdown tables.
//!
//!   cargo bench -p amdahl-executors --bench gpu
//!   AMDAHL_BENCH_MAX_MB=1024 AMDAHL_BENCH_KNN_BASE=100000 cargo bench -p amdahl-executors --bench gpu
//!
//! On a machine without a usable GPU it says so and measures the CPU side only. Inputs are
//! made in memory (the same arrays for both sides), so neither side reads files.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, Date32Array, Decimal128Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use amdahl_dags::Metric;
use amdahl_executors::dense::{self, Matrix};
use amdahl_executors::gpu::{self, cuda, translate};
use amdahl_executors::sql::session_config;

const Q6: &str = "SELECT SUM(l_extendedprice * l_discount) AS revenue FROM lineitem \
                  WHERE l_shipdate >= DATE '1994-01-01' AND l_shipdate < DATE '1995-01-01' \
                  AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24";
/// Bytes per row of the four Q6 columns on the device (three decimals as i64, a date as i32).
const Q6_ROW_BYTES: usize = 8 * 3 + 4;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn schema() -> SchemaRef {
    let money = DataType::Decimal128(15, 2);
    Arc::new(Schema::new(vec![
        Field::new("l_quantity", money.clone(), false),
        Field::new("l_extendedprice", money.clone(), false),
        Field::new("l_discount", money, false),
        Field::new("l_shipdate", DataType::Date32, false),
    ]))
}

/// `rows` lineitem-like rows in TPC-H's value ranges, in batches of 1M rows.
fn q6_batches(rows: usize) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    let mut i = 0u64;
    let mut start = 0;
    while start < rows {
        let n = (1 << 20).min(rows - start);
        let mut next = |m: u64| {
            i += 1;
            (dense::uniform(7, i) as f64 * 0.5 + 0.5) * m as f64
        };
        let quantity: Vec<i128> = (0..n).map(|_| (next(50) as i128 + 1) * 100).collect();
        let price: Vec<i128> = (0..n).map(|_| next(10_000_000) as i128 + 90_000).collect();
        let discount: Vec<i128> = (0..n).map(|_| next(11) as i128).collect();
        let date: Vec<i32> = (0..n).map(|_| 8_036 + next(2_526) as i32).collect();
        let decimal = |v: Vec<i128>| -> ArrayRef {
            Arc::new(
                Decimal128Array::from(v)
                    .with_precision_and_scale(15, 2)
                    .expect("decimal(15, 2)"),
            )
        };
        batches.push(
            RecordBatch::try_new(
                schema(),
                vec![
                    decimal(quantity),
                    decimal(price),
                    decimal(discount),
                    Arc::new(Date32Array::from(date)),
                ],
            )
            .expect("batch"),
        );
        start += n;
    }
    batches
}

fn main() {
    let report = gpu::devices();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("# Amdahl GPU benchmark\n");
    match &report.problem {
        None => {
            for d in &report.devices {
                println!(
                    "device {}: {} ({} MiB, {}, {} SMs)",
                    d.ordinal,
                    d.name,
                    d.total_bytes >> 20,
                    d.arch(),
                    d.multiprocessors
                );
            }
        }
        Some(problem) => println!("no usable GPU ({problem}): CPU side only"),
    }
    println!("CPU threads: {threads}\n");
    let usable = report.usable();
    let ceilings = if usable { ceilings() } else { None };
    q6_sweep(usable, ceilings, threads);
    knn_bench(usable, threads);
}

/// (device copy GB/s counting read + write, pinned host→device GB/s).
fn ceilings() -> Option<(f64, f64)> {
    let ctx = cudarc::driver::CudaContext::new(0).ok()?;
    let stream = ctx.default_stream();
    let bytes: usize = 1 << 30;
    let src = stream.alloc_zeros::<u8>(bytes).ok()?;
    let mut dst = stream.alloc_zeros::<u8>(bytes).ok()?;
    let mut copy = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        stream.memcpy_dtod(&src, &mut dst).ok()?;
        stream.synchronize().ok()?;
        copy.push(t.elapsed().as_secs_f64());
    }
    let copy_gbs = 2.0 * bytes as f64 / median(copy[1..].to_vec()) / 1e9;
    let mut pinned = unsafe { ctx.alloc_pinned::<u8>(bytes) }.ok()?;
    pinned.as_mut_slice().ok()?.fill(1);
    let mut h2d = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        stream.memcpy_htod(&pinned, &mut dst).ok()?;
        stream.synchronize().ok()?;
        h2d.push(t.elapsed().as_secs_f64());
    }
    let h2d_gbs = bytes as f64 / median(h2d[1..].to_vec()) / 1e9;
    println!("## Ceilings (1 GiB, median of 5)\n");
    println!("| measure | GB/s |\n|---|---|");
    println!("| device copy (read + write) | {copy_gbs:.0} |");
    println!("| pinned host → device | {h2d_gbs:.1} |\n");
    Some((copy_gbs, h2d_gbs))
}

fn q6_sweep(usable: bool, ceilings: Option<(f64, f64)>, threads: usize) {
    let max_mb = env_usize("AMDAHL_BENCH_MAX_MB", 8192);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // The kernel plan comes from DataFusion's plan over a small Parquet file of the same
    // schema; the sweep then runs it over in-memory columns.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("lineitem.parquet");
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&file).expect("file"), schema(), None)
            .expect("writer");
    for b in q6_batches(1000) {
        writer.write(&b).expect("write");
    }
    writer.close().expect("close");
    let plan_ctx = SessionContext::new_with_config(session_config(threads));
    let kernel = rt.block_on(async {
        plan_ctx
            .register_parquet(
                "lineitem",
                file.to_str().expect("utf-8 path"),
                ParquetReadOptions::default(),
            )
            .await
            .expect("register");
        let plan = plan_ctx
            .sql(Q6)
            .await
            .expect("plan")
            .create_physical_plan()
            .await
            .expect("physical plan");
        translate(&plan).expect("Q6 translates")
    });
    println!("## Q6 (filter + aggregate), in memory\n");
    println!(
        "| input | rows | GPU kernel ms | kernel GB/s | ÷ copy | upload ms | upload GB/s | ÷ pinned | pin ms | GPU end to end ms | CPU (DataFusion, {threads} threads) ms | CPU ÷ GPU | same answer |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut mb = 1;
    while mb <= max_mb {
        let rows = mb * (1 << 20) / Q6_ROW_BYTES;
        let batches = q6_batches(rows);
        let columns: Vec<(Vec<ArrayRef>, usize)> = batches
            .iter()
            .map(|b| (b.columns().to_vec(), b.num_rows()))
            .collect();
        let ctx = SessionContext::new_with_config(session_config(threads));
        ctx.register_table(
            "lineitem",
            Arc::new(MemTable::try_new(schema(), vec![batches]).expect("table")),
        )
        .expect("register");
        let mut cpu = Vec::new();
        let mut cpu_answer = String::new();
        for _ in 0..3 {
            let t = Instant::now();
            let out = rt
                .block_on(async { ctx.sql(Q6).await?.collect().await })
                .expect("cpu q6");
            cpu.push(t.elapsed().as_secs_f64() * 1e3);
            cpu_answer = datafusion::arrow::util::pretty::pretty_format_batches(&out)
                .expect("format")
                .to_string();
        }
        let cpu_ms = median(cpu);
        if usable {
            let mut runs = Vec::new();
            let mut gpu_answer = String::new();
            for _ in 0..4 {
                let started = Instant::now();
                match cuda::run_batches(&kernel, &columns, started) {
                    Ok((batch, t)) => {
                        let total =
                            started.elapsed().as_secs_f64() * 1e3 - t.read_ms - t.compile_ms;
                        runs.push((t, total));
                        gpu_answer =
                            datafusion::arrow::util::pretty::pretty_format_batches(&[batch])
                                .expect("format")
                                .to_string();
                    }
                    Err(e) => {
                        println!("| {mb} MB | {rows} | GPU failed: {e} |");
                        break;
                    }
                }
            }
            if runs.len() < 2 {
                mb *= 4;
                continue;
            }
            // The first run compiles the kernel: the rest are the warm figures.
            let warm = &runs[1..];
            let kernel_ms = median(warm.iter().map(|(t, _)| t.kernel_ms).collect());
            let upload_ms = median(warm.iter().map(|(t, _)| t.upload_ms).collect());
            let stage_ms = median(warm.iter().map(|(t, _)| t.stage_ms).collect());
            let total_ms = median(warm.iter().map(|(_, total)| *total).collect());
            let bytes = warm[0].0.upload_bytes as f64;
            let kernel_gbs = bytes / (kernel_ms / 1e3) / 1e9;
            let upload_gbs = bytes / (upload_ms / 1e3) / 1e9;
            let (copy, pinned) = ceilings.unwrap_or((f64::NAN, f64::NAN));
            println!(
                "| {mb} MB | {rows} | {kernel_ms:.3} | {kernel_gbs:.0} | {:.0} % | {upload_ms:.2} | {upload_gbs:.1} | {:.0} % | {stage_ms:.1} | {total_ms:.2} | {cpu_ms:.1} | {:.1}× | {} |",
                100.0 * kernel_gbs / copy,
                100.0 * upload_gbs / pinned,
                cpu_ms / total_ms,
                if gpu_answer == cpu_answer {
                    "yes"
                } else {
                    "NO"
                }
            );
        } else {
            println!("| {mb} MB | {rows} | – | – | – | – | – | – | – | – | {cpu_ms:.1} | – | – |");
        }
        mb *= 4;
    }
    println!(
        "\nkernel GB/s: input bytes ÷ kernel time; ÷ copy: of the device copy ceiling (which \
         counts reads and writes). GPU end to end: pin + upload + kernel + download + result, \
         warm (kernel compiled), from columns in memory like the CPU side.\n"
    );
}

fn knn_bench(usable: bool, threads: usize) {
    let rows = env_usize("AMDAHL_BENCH_KNN_BASE", 1_000_000);
    let queries = env_usize("AMDAHL_BENCH_KNN_QUERIES", 10_000);
    let dim = 128;
    let k = 10;
    let make = |n: usize, seed: u64| {
        Matrix::new(
            n,
            dim,
            (0..(n * dim) as u64)
                .map(|i| dense::uniform(seed, i))
                .collect(),
        )
    };
    let base = make(rows, 11);
    let q = make(queries, 12);
    println!("## knn: {rows} × {dim} base, {queries} queries, k = {k}, cosine\n");
    println!("| side | ms | ÷ GPU |\n|---|---|---|");
    let gpu_ms = if usable {
        let mut times = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            match gpu::dense::knn(&base, &q, k, Metric::Cosine) {
                Ok(_) => times.push(t.elapsed().as_secs_f64() * 1e3),
                Err(e) => {
                    println!("| GPU | failed: {e} | |");
                    break;
                }
            }
        }
        (times.len() == 3).then(|| median(times[1..].to_vec()))
    } else {
        None
    };
    if let Some(ms) = gpu_ms {
        println!("| GPU (cuBLAS + top-k kernel, from host memory) | {ms:.0} | 1 |");
    }
    let t = Instant::now();
    let _ = dense::knn(&base, &q, k, Metric::Cosine, threads);
    let cpu_ms = t.elapsed().as_secs_f64() * 1e3;
    match gpu_ms {
        Some(g) => println!(
            "| CPU (gemm crate, {threads} threads) | {cpu_ms:.0} | {:.1}× |",
            cpu_ms / g
        ),
        None => println!("| CPU (gemm crate, {threads} threads) | {cpu_ms:.0} | – |"),
    }
}
