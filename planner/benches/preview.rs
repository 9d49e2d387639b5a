//! How long a task page's output preview takes, and how much it reads, on a large output: an
//! output folder of `AMDAHL_BENCH_PREVIEW_GB` GB (default 10) of Parquet parts, as a big task
//! publishes it. One part is written with DataFusion and copied; then
//! `planner::preview::preview` (the first 100 rows) runs 10 times, after one warm-up,
//! and the table gives its wall time and the bytes it read through system calls (`rchar` of
//! /proc/self/io: page-cache hits count too, so this is what the reader asked for, not only
//! what came from the disk).
//!
//! Run: `cargo bench --workspace --features ballista --bench preview` (AMDAHL_BENCH_PREVIEW_GB=1 for a
//! quick one; AMDAHL_BENCH_DIR to write somewhere else than the temp folder).

use std::time::Instant;

use amdahl_dags::Location;
use amdahl_planner::preview::preview;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::SessionContext;

fn read_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("rchar: "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let gb: f64 = std::env::var("AMDAHL_BENCH_PREVIEW_GB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let base = std::env::var("AMDAHL_BENCH_DIR").map_or_else(|_| std::env::temp_dir(), Into::into);
    let dir = tempfile::tempdir_in(base).expect("a scratch folder");
    let seed = dir.path().join("seed");
    // Parts of about a million rows of two integers, a float and a 16-character text.
    let ctx = SessionContext::new();
    ctx.sql(
        "SELECT value AS id, value * 7 % 1000 AS bucket, CAST(value AS DOUBLE) / 3 AS amount, \
         substr(md5(CAST(value AS VARCHAR)), 1, 16) AS tag FROM generate_series(1, 4000000)",
    )
    .await
    .expect("the seed query plans")
    .write_parquet(
        &format!("{}/", seed.display()),
        DataFrameWriteOptions::new().with_single_file_output(false),
        None,
    )
    .await
    .expect("the seed part is written");
    let part = std::fs::read_dir(&seed)
        .expect("the seed folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .max_by_key(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .expect("a Parquet part");
    let part_bytes = std::fs::metadata(&part).expect("its size").len();
    let output = dir.path().join("output");
    std::fs::create_dir(&output).expect("the output folder");
    let parts = ((gb * 1e9) / part_bytes as f64).ceil().max(1.0) as usize;
    for i in 0..parts {
        std::fs::copy(&part, output.join(format!("part-{i}.parquet"))).expect("a copy");
    }
    let total = part_bytes * parts as u64;
    let location = Location::Local(output.clone());
    preview(&location, 100).await.expect("a preview");
    let mut times = Vec::new();
    let mut reads = Vec::new();
    for _ in 0..10 {
        let (before, started) = (read_bytes(), Instant::now());
        let shown = preview(&location, 100).await.expect("a preview");
        times.push(started.elapsed().as_secs_f64() * 1e3);
        reads.push(read_bytes() - before);
        assert_eq!(shown.rows.len(), 100);
    }
    times.sort_by(f64::total_cmp);
    reads.sort_unstable();
    println!("output preview (the first 100 rows), 10 runs after one warm-up");
    println!(
        "{:>10} {:>6} {:>9} {:>9} {:>9} {:>12}",
        "OUTPUT", "FILES", "MIN ms", "MEDIAN ms", "MAX ms", "READ / RUN"
    );
    println!(
        "{:>10} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.3} MB",
        format!("{:.2} GB", total as f64 / 1e9),
        parts,
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        reads[reads.len() / 2] as f64 / 1e6
    );
}
