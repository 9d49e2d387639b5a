//! Placement of `device: auto` tasks during a run: the whole DAG priced with the outputs
//! produced so far.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;

use amdahl_dags::{RunContext, load_file};
use amdahl_executors::calibrate::{sample_table, schema};
use amdahl_executors::estimate::Produced;
use amdahl_executors::place::place_task;
use amdahl_placement::{DeviceProfile, GpuProfile, OpKind, Place, Profile};

/// A machine whose GPU scans 100× faster than its CPU behind a 10 GB/s link: small inputs
/// stay on the CPU (the copy and the GPU's fixed cost dominate), large ones go to the GPU.
fn profile() -> Profile {
    let rates = |scale: f64| {
        BTreeMap::from([
            (OpKind::Scan, 1e8 * scale),
            (OpKind::Aggregate, 1e8 * scale),
            (OpKind::Join, 1e7 * scale),
            (OpKind::Sort, 1e7 * scale),
            (OpKind::Gemm, 1e11 * scale),
        ])
    };
    Profile {
        cpu: DeviceProfile {
            memory_bandwidth: 2e10,
            throughput: rates(1.0),
            fixed_seconds: 1e-3,
        },
        gpu: Some(GpuProfile {
            name: "synthetic".into(),
            device: DeviceProfile {
                memory_bandwidth: 2e12,
                throughput: rates(100.0),
                fixed_seconds: 5e-3,
            },
            host_to_device: 1e10,
            device_to_host: 1e10,
            transfer_latency: 1e-5,
            free_bytes: 64 << 30,
            pageable_host_to_device: None,
            pageable_device_to_host: None,
            host_staging: None,
        }),
        cluster: None,
        source: None,
        corrections: Vec::new(),
    }
}

fn write_parquet(dir: &Path, batches: &[RecordBatch]) {
    std::fs::create_dir_all(dir).unwrap();
    let file = std::fs::File::create(dir.join("part-0.parquet")).unwrap();
    let mut writer = ArrowWriter::try_new(file, schema(), None).unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.close().unwrap();
}

fn context() -> RunContext {
    RunContext {
        dag_id: "placed".into(),
        run_id: 1,
        logical_date: "2026-01-01T00:00:00Z".into(),
        params: Default::default(),
        ds: "2026-01-01".into(),
        data_interval_end: "2026-01-01T00:00:00Z".into(),
        item: None,
    }
}

/// The group-by reads the filter's output: before the filter has run its size is a guess; once
/// it has, its real size decides, so a filter that kept almost nothing sends the group-by to
/// the CPU and one that kept everything sends it to the GPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_size_of_an_upstream_output_decides() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("t"), &sample_table(2_000_000, 1));
    let dag_file = dir.path().join("placed.yaml");
    std::fs::write(
        &dag_file,
        "dag: placed\n\
         datasets:\n  t: { uri: \"t\", format: parquet }\n\
         tasks:\n\
         \x20 kept:\n    sql: SELECT a, b, g, v FROM t WHERE b < 0.5\n\
         \x20 totals:\n    needs: [kept]\n    sql: SELECT g, SUM(v) AS s, COUNT(*) AS n FROM kept GROUP BY g\n",
    )
    .unwrap();
    let dag = load_file(&dag_file).unwrap();
    let profile = profile();

    let guessed = place_task(&dag, &context(), "totals", &HashMap::new(), &profile)
        .await
        .unwrap();
    assert!(
        guessed.reason.starts_with("placement chose the "),
        "{}",
        guessed.reason
    );

    let small = dir.path().join("kept-small");
    write_parquet(&small, &sample_table(10, 2));
    let produced = |dir: &Path, place| {
        HashMap::from([(
            "kept".to_string(),
            Produced {
                dir: dir.to_path_buf(),
                place: Some(place),
            },
        )])
    };
    let tiny = place_task(
        &dag,
        &context(),
        "totals",
        &produced(&small, Place::Cpu),
        &profile,
    )
    .await
    .unwrap();
    assert_eq!(tiny.place, Place::Cpu, "{}", tiny.reason);

    let large = dir.path().join("kept-large");
    write_parquet(&large, &sample_table(4_000_000, 3));
    let big = place_task(
        &dag,
        &context(),
        "totals",
        &produced(&large, Place::Cpu),
        &profile,
    )
    .await
    .unwrap();
    assert_eq!(big.place, Place::Gpu, "{}", big.reason);
    assert!(big.gpu_seconds.unwrap() < big.cpu_seconds, "{big:?}");
    // The GPU's price includes copying in the columns of the CPU-made input that the query
    // reads (`g` and `v`): 4M rows × 16 bytes at 10 GB/s.
    assert!(big.gpu_seconds.unwrap() > 0.0064, "{big:?}");
    assert!(tiny.cpu_seconds < big.cpu_seconds);

    // The same large input made on the GPU (still in device memory) costs no copy.
    let resident = place_task(
        &dag,
        &context(),
        "totals",
        &produced(&large, Place::Gpu),
        &profile,
    )
    .await
    .unwrap();
    assert_eq!(resident.place, Place::Gpu);
    assert!(resident.gpu_seconds.unwrap() < big.gpu_seconds.unwrap());
}
