//! The GPU benchmark, in markdown tables: the machine's calibration (its ceilings) first; then
//! the placement sweep (filter + aggregate, group-by and knn from 1 KB up, timed on the CPU and
//! on the GPU in several runs, beside the model's predictions, placement's choice and its
//! regret, the model learning from each run as a worker does);
//! then the Q6 shape at 1 MB … 8 GB of input against the ceilings and against DataFusion on
//! every core; then `knn` (1M × 128 base, 10k queries) on the GPU and on the CPU.
//!
//!   cargo bench -p amdahl-executors --bench gpu
//!   AMDAHL_BENCH_MAX_MB=1024 AMDAHL_BENCH_KNN_BASE=100000 cargo bench -p amdahl-executors --bench gpu
//!   AMDAHL_BENCH_PARTS=q6 AMDAHL_BENCH_MIN_MB=2048 cargo bench -p amdahl-executors --bench gpu
//!
//! On a machine without a usable GPU it says so and measures the CPU side only. Inputs are
//! made in memory (the same arrays for both sides), so neither side reads files.

#[path = "gpu/data.rs"]
mod data;

use std::sync::Arc;
use std::time::Instant;

use datafusion::datasource::MemTable;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use amdahl_dags::Metric;
use amdahl_executors::calibrate::{self, Effort, calibrate};
use amdahl_executors::dense::{self, Matrix};
use amdahl_executors::gpu::{self, cuda, translate};
use amdahl_executors::sql::session_config;
use amdahl_placement::cost::{cpu_model, gpu_model};
use amdahl_placement::{
    Observation, OpKind, Pin, Place, Profile, StageWork, cpu_time, gpu_time, learned, main_kind,
};

use data::{q6_batches, schema};

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
    let profile = calibration();
    let ceilings = profile
        .as_ref()
        .and_then(|p| p.gpu.as_ref())
        .map(|gpu| (gpu.device.memory_bandwidth / 1e9, gpu.host_to_device / 1e9));
    // AMDAHL_BENCH_PARTS (e.g. `sweep,q6`) runs some parts only.
    let parts = std::env::var("AMDAHL_BENCH_PARTS").unwrap_or_else(|_| "sweep,q6,knn".into());
    let part = |name: &str| parts.split(',').any(|p| p.trim() == name);
    if let Some(profile) = &profile
        && part("sweep")
    {
        placement_sweep(profile, usable, threads);
    }
    if part("q6") {
        q6_sweep(usable, ceilings, threads);
    }
    if part("knn") {
        knn_bench(usable, threads);
    }
}

/// Calibrates the machine (`amdahl calibrate`'s measurements) and prints the figures; writes
/// the profile as JSON to `AMDAHL_BENCH_PROFILE_OUT` when set.
fn calibration() -> Option<Profile> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let calibration = match rt.block_on(calibrate(Effort::Full)) {
        Ok(c) => c,
        Err(e) => {
            println!("calibration failed: {e}\n");
            return None;
        }
    };
    println!("## Calibration (amdahl calibrate's measurements)\n");
    println!("| measure | value |\n|---|---|");
    for (what, value) in &calibration.figures {
        println!("| {what} | {value} |");
    }
    println!();
    if let Ok(path) = std::env::var("AMDAHL_BENCH_PROFILE_OUT") {
        let json = serde_json::to_string_pretty(&calibration.profile).expect("profile JSON");
        if let Err(e) = std::fs::write(&path, json) {
            println!("could not write {path}: {e}\n");
        }
    }
    Some(calibration.profile)
}

/// One point of the placement sweep: the stage as the model sees it and what each side took
/// in each run (seconds).
struct Point {
    kind: &'static str,
    bytes: u64,
    stage: StageWork,
    cpu: Vec<f64>,
    gpu: Option<Vec<f64>>,
}

/// A point as one run saw it: the predictions of the model as learned so far, and the times.
struct Seen {
    predicted_cpu: f64,
    predicted_gpu: Option<f64>,
    actual_cpu: f64,
    actual_gpu: Option<f64>,
}

impl Seen {
    fn choice(&self) -> Place {
        match self.predicted_gpu {
            Some(g) if g < self.predicted_cpu => Place::Gpu,
            _ => Place::Cpu,
        }
    }

    fn actual(&self, place: Place) -> Option<f64> {
        match place {
            Place::Cpu => Some(self.actual_cpu),
            Place::Gpu => self.actual_gpu,
            Place::Cluster => None,
        }
    }

    fn predicted(&self, place: Place) -> Option<f64> {
        match place {
            Place::Cpu => Some(self.predicted_cpu),
            Place::Gpu => self.predicted_gpu,
            Place::Cluster => None,
        }
    }

    /// chosen ÷ best − 1 (0 when placement chose the faster side).
    fn regret(&self) -> Option<f64> {
        let best = self
            .actual_gpu
            .map_or(self.actual_cpu, |g| g.min(self.actual_cpu));
        self.actual(self.choice()).map(|chosen| chosen / best - 1.0)
    }
}

fn stage_work(id: &str, bytes: u64, output: u64, work: &[(OpKind, f64)]) -> StageWork {
    StageWork {
        id: id.into(),
        storage_bytes: bytes,
        output_bytes: output,
        touched_bytes: bytes,
        work: work.iter().copied().collect(),
        gpu_support: Ok(()),
        cluster_support: Err("not measured here".into()),
        device_bytes: bytes,
        pin: Pin::Free,
    }
}

/// Times `f` once to warm it up (the GPU side compiles its kernel on the first call, once per
/// process in a worker), then `runs` times, each run the median of `reps` calls. `None` (and a
/// line saying why) when a call fails.
fn timed_runs(
    what: &str,
    runs: usize,
    reps: usize,
    mut f: impl FnMut() -> Result<(), String>,
) -> Option<Vec<f64>> {
    let mut call = || {
        let t = Instant::now();
        f().map(|()| t.elapsed().as_secs_f64())
    };
    let fail = |e: String| println!("{what}: failed: {e}");
    if let Err(e) = call() {
        fail(e);
        return None;
    }
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            match call() {
                Ok(t) => times.push(t),
                Err(e) => {
                    fail(e);
                    return None;
                }
            }
        }
        out.push(median(times));
    }
    Some(out)
}

/// Placement against reality, run after run: each stage kind at input sizes from 1 KB up,
/// timed on the CPU and on the GPU in `AMDAHL_BENCH_RUNS` runs (4 by default); run k's
/// predictions come from the calibrated model corrected by what runs 1 … k−1 taught it.
fn placement_sweep(profile: &Profile, usable: bool, threads: usize) {
    let max_mb = env_usize("AMDAHL_BENCH_MAX_MB", 8192);
    let runs = env_usize("AMDAHL_BENCH_RUNS", 4).max(1);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut points: Vec<Point> = Vec::new();
    // SQL shapes over the calibration table (a, b, g, v: 32 bytes a row).
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("t.parquet");
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(&file).expect("file"),
        calibrate::schema(),
        None,
    )
    .expect("writer");
    for b in calibrate::sample_table(1000, 3) {
        writer.write(&b).expect("write");
    }
    writer.close().expect("close");
    // (stage kind, its SQL, units of work per input row by operator)
    type Shape = (&'static str, &'static str, Vec<(OpKind, f64)>);
    let kernels: Vec<Shape> = vec![
        (
            "filter + aggregate",
            calibrate::SCAN,
            vec![(OpKind::Scan, 1.0)],
        ),
        (
            "group-by (1000 groups)",
            calibrate::AGGREGATE,
            vec![(OpKind::Scan, 1.0), (OpKind::Aggregate, 1.0)],
        ),
    ];
    let plan_ctx = SessionContext::new_with_config(session_config(threads));
    rt.block_on(plan_ctx.register_parquet(
        "t",
        file.to_str().expect("utf-8 path"),
        ParquetReadOptions::default(),
    ))
    .expect("register");
    let row_bytes = 32u64;
    for (kind, sql, per_row) in &kernels {
        let kernel = rt.block_on(async {
            let plan = plan_ctx.sql(sql).await?.create_physical_plan().await?;
            Ok::<_, datafusion::error::DataFusionError>(translate(&plan).expect("translates"))
        });
        let kernel = kernel.expect("plan");
        let mut bytes = 1u64 << 10;
        while bytes <= (max_mb as u64) << 20 {
            let rows = (bytes / row_bytes).max(1) as usize;
            let batches = calibrate::sample_table(rows, bytes);
            let work: Vec<(OpKind, f64)> =
                per_row.iter().map(|(k, r)| (*k, r * rows as f64)).collect();
            let stage = stage_work(kind, rows as u64 * row_bytes, 64, &work);
            let ctx = SessionContext::new_with_config(session_config(threads));
            let mut parts = vec![Vec::new(); threads];
            for (i, b) in batches.iter().enumerate() {
                parts[i % threads].push(b.clone());
            }
            parts.retain(|p| !p.is_empty());
            ctx.register_table(
                "t",
                Arc::new(MemTable::try_new(calibrate::schema(), parts).expect("table")),
            )
            .expect("register");
            let reps = if bytes < 64 << 20 { 5 } else { 1 };
            let what = format!("{kind} at {}", human_bytes(bytes));
            let cpu = timed_runs(&format!("{what} on the CPU"), runs, reps, || {
                rt.block_on(async { ctx.sql(sql).await?.collect().await })
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .expect("the CPU side runs");
            let gpu = if usable {
                let columns = cuda::plan_columns(&kernel, &batches).expect("plan columns");
                timed_runs(&format!("{what} on the GPU"), runs, reps, || {
                    cuda::run_batches(&kernel, &columns, Instant::now())
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
            } else {
                None
            };
            points.push(Point {
                kind,
                bytes,
                stage,
                cpu,
                gpu,
            });
            bytes *= 8;
        }
    }
    // knn: a base of n × 128 floats against 1000 queries, k = 10, cosine.
    let dim = 128;
    let queries = 1000;
    let q = Matrix::new(
        queries,
        dim,
        (0..(queries * dim) as u64)
            .map(|i| dense::uniform(5, i))
            .collect(),
    );
    let mut n = 64usize;
    while n * dim * 4 <= max_mb << 20 && n <= 4 << 20 {
        let base = Matrix::new(
            n,
            dim,
            (0..(n * dim) as u64)
                .map(|i| dense::uniform(6, i))
                .collect(),
        );
        let bytes = ((n + queries) * dim * 4) as u64;
        let flops = 2.0 * (n * queries * dim) as f64;
        let stage = stage_work(
            "knn",
            bytes,
            (queries * 10 * 12) as u64,
            &[(OpKind::Gemm, flops)],
        );
        let reps = if bytes < 64 << 20 { 3 } else { 1 };
        let what = format!("knn over {n} rows");
        let cpu = timed_runs(&format!("{what} on the CPU"), runs, reps, || {
            std::hint::black_box(dense::knn(&base, &q, 10, Metric::Cosine, threads));
            Ok(())
        })
        .expect("the CPU side runs");
        let gpu = if usable {
            timed_runs(&format!("{what} on the GPU"), runs, reps, || {
                gpu::dense::knn(&base, &q, 10, Metric::Cosine)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        } else {
            None
        };
        points.push(Point {
            kind: "knn (1000 queries, 128-d)",
            bytes,
            stage,
            cpu,
            gpu,
        });
        n *= 8;
    }
    print_sweep(profile, &points, runs);
}

/// Each run's view of the points. With `observe_both`, every run teaches the model both
/// sides' times (as a benchmark, or tasks pinned each way, would); without, only the side
/// placement chose (as a worker learns from the attempts it runs).
/// Also the model the last run predicted with.
fn replay(
    profile: &Profile,
    points: &[Point],
    runs: usize,
    observe_both: bool,
) -> (Vec<Vec<Seen>>, Profile) {
    let mut observations: Vec<Observation> = Vec::new();
    let mut out = Vec::with_capacity(runs);
    let mut taught = profile.clone();
    for run in 0..runs {
        taught = learned(profile, &observations);
        let seen: Vec<Seen> = points
            .iter()
            .map(|p| Seen {
                predicted_cpu: cpu_time(&taught, &p.stage),
                predicted_gpu: gpu_time(&taught, &p.stage).ok().map(|g| g.total()),
                actual_cpu: p.cpu[run],
                actual_gpu: p.gpu.as_ref().map(|g| g[run]),
            })
            .collect();
        for (p, s) in points.iter().zip(&seen) {
            let Some(kind) = main_kind(&profile.cpu, &p.stage) else {
                continue;
            };
            let mut observe = |place: Place| {
                let model = match place {
                    Place::Cpu => Some(cpu_model(profile, &p.stage)),
                    Place::Gpu => gpu_model(profile, &p.stage).ok().map(|g| g.total()),
                    Place::Cluster => None,
                };
                if let (Some(model), Some(actual)) = (model, s.actual(place)) {
                    observations.push(Observation {
                        kind,
                        place,
                        model,
                        actual,
                    });
                }
            };
            if observe_both {
                observe(Place::Cpu);
                observe(Place::Gpu);
            } else {
                observe(s.choice());
            }
        }
        out.push(seen);
    }
    (out, taught)
}

/// Median |predicted ÷ actual − 1| over the pairs (`None` without any).
fn error(pairs: impl Iterator<Item = (f64, f64)>) -> Option<f64> {
    let errors: Vec<f64> = pairs.map(|(p, a)| (p / a - 1.0).abs()).collect();
    (!errors.is_empty()).then(|| median(errors))
}

fn percent(x: Option<f64>) -> String {
    x.map_or("–".into(), |x| format!("{:.1} %", 100.0 * x))
}

fn print_table(title: &str, points: &[Point], seen: &[Seen]) {
    let ms = |s: f64| format!("{:.3}", s * 1e3);
    let opt = |s: Option<f64>| s.map_or("–".to_string(), ms);
    println!("## {title}\n");
    println!(
        "| stage | input | CPU predicted ms | CPU actual ms | GPU predicted ms | GPU actual ms | placement | faster | regret |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (p, s) in points.iter().zip(seen) {
        let faster = match s.actual_gpu {
            Some(g) if g < s.actual_cpu => "gpu",
            _ => "cpu",
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {faster} | {} |",
            p.kind,
            human_bytes(p.bytes),
            ms(s.predicted_cpu),
            ms(s.actual_cpu),
            opt(s.predicted_gpu),
            opt(s.actual_gpu),
            s.choice().name().to_lowercase(),
            percent(s.regret())
        );
    }
    println!();
    // Crossovers per stage kind: the first size the GPU wins, predicted and measured.
    let mut kinds: Vec<&str> = points.iter().map(|p| p.kind).collect();
    kinds.dedup();
    for kind in kinds {
        let of: Vec<(&Point, &Seen)> = points
            .iter()
            .zip(seen)
            .filter(|(p, _)| p.kind == kind)
            .collect();
        let first = |wins: &dyn Fn(&Seen) -> bool| {
            of.iter()
                .find(|(_, s)| wins(s))
                .map_or("none".to_string(), |(p, _)| human_bytes(p.bytes))
        };
        println!(
            "crossover, {kind}: predicted {}, measured {} (on this sweep's ×8 grid)",
            first(&|s| s.predicted_gpu.is_some_and(|g| g < s.predicted_cpu)),
            first(&|s| s.actual_gpu.is_some_and(|g| g < s.actual_cpu)),
        );
    }
    println!();
}

fn print_sweep(profile: &Profile, points: &[Point], runs: usize) {
    let (both, taught) = replay(profile, points, runs, true);
    let (chosen, _) = replay(profile, points, runs, false);
    print_table(
        "Placement sweep, run 1: the calibrated model vs actual",
        points,
        &both[0],
    );
    if runs > 1 {
        print_table(
            &format!(
                "Placement sweep, run {runs}: the model corrected by runs 1 … {} (both sides observed)",
                runs - 1
            ),
            points,
            &both[runs - 1],
        );
    }
    println!("## Learning, run after run\n");
    println!(
        "Median \\|predicted ÷ actual − 1\\| and regret (chosen ÷ best − 1) per run. \"Both sides\": every \
         run teaches the model the CPU's and the GPU's times; \"chosen side\": only the side placement \
         chose (what a worker learns from its own attempts), the error measured on that side.\n"
    );
    println!(
        "| run | learned from | error CPU | error GPU | error, all | median regret | worst regret | chosen side: error | median regret | worst regret |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for run in 0..runs {
        let b = &both[run];
        let c = &chosen[run];
        let regrets = |seen: &[Seen]| -> (Option<f64>, Option<f64>) {
            let r: Vec<f64> = seen.iter().filter_map(Seen::regret).collect();
            (
                (!r.is_empty()).then(|| median(r.clone())),
                r.iter().copied().reduce(f64::max),
            )
        };
        let (b_median, b_worst) = regrets(b);
        let (c_median, c_worst) = regrets(c);
        let sides = |seen: &[Seen], place: Place| -> Vec<(f64, f64)> {
            seen.iter()
                .filter_map(|s| Some((s.predicted(place)?, s.actual(place)?)))
                .collect()
        };
        let mut all = sides(b, Place::Cpu);
        all.extend(sides(b, Place::Gpu));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            run + 1,
            match run {
                0 => "calibration only".to_string(),
                1 => "run 1".to_string(),
                _ => format!("runs 1 … {run}"),
            },
            percent(error(sides(b, Place::Cpu).into_iter())),
            percent(error(sides(b, Place::Gpu).into_iter())),
            percent(error(all.into_iter())),
            percent(b_median),
            percent(b_worst),
            percent(error(c.iter().filter_map(|s| {
                let place = s.choice();
                Some((s.predicted(place)?, s.actual(place)?))
            }))),
            percent(c_median),
            percent(c_worst),
        );
    }
    let words = amdahl_placement::learn::describe(&taught.corrections);
    if !words.is_empty() {
        println!("\nlearned after {} run(s): {}", runs - 1, words.join(", "));
    }
    println!();
}

fn human_bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else if b >= 1 << 10 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
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
    // AMDAHL_BENCH_MIN_MB starts the sweep higher (for the largest sizes alone).
    let mut mb = env_usize("AMDAHL_BENCH_MIN_MB", 1).max(1);
    while mb <= max_mb {
        let rows = mb * (1 << 20) / Q6_ROW_BYTES;
        let batches = q6_batches(rows);
        let columns = cuda::plan_columns(&kernel, &batches).expect("plan columns");
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
