//! `engine: ballista`: a `sql` stage whose query runs on a Ballista cluster. With the
//! `ballista` feature, against the in-process standalone cluster: TPC-H queries over local
//! Parquet files and over the same files in a real S3-compatible server give what DataFusion
//! in the worker gives, and two stages at once each see their own tables. Without a cluster
//! (or without the feature) the stage fails saying how to get one.

use std::path::Path;

use amdahl_dags::Engine;
use amdahl_executors::ballista::{Ballista, Cluster};
use amdahl_executors::{
    CpuRuntime, Executors, LogSink, StageError, StageOutcome, TableInput, Work,
};

use super::stage;

fn executors_on(cluster: Option<Cluster>) -> Executors {
    Executors::new(CpuRuntime::new(2).unwrap()).with_ballista(Ballista::new(cluster))
}

async fn run(
    executors: &Executors,
    engine: Engine,
    query: &str,
    inputs: Vec<TableInput>,
    out: &Path,
) -> Result<StageOutcome, StageError> {
    let mut stage = stage(
        Work::Sql {
            query: query.into(),
        },
        inputs,
        Some(out.to_path_buf()),
        out,
    );
    stage.engine = engine;
    let (log, _lines) = LogSink::channel();
    executors.execute(&stage, &log).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ballista_stage_without_a_cluster_says_how_to_configure_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = run(
        &executors_on(None),
        Engine::Ballista,
        "SELECT 1 AS one",
        vec![],
        &dir.path().join("out"),
    )
    .await
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("this worker knows no Ballista cluster")
            && message.contains("--ballista df://HOST:50050"),
        "{message}"
    );
}

#[cfg(not(feature = "ballista"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_feature_a_ballista_stage_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let message = run(
        &executors_on(Some(Cluster::Standalone)),
        Engine::Ballista,
        "SELECT 1 AS one",
        vec![],
        &dir.path().join("out"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(message.contains("--features ballista"), "{message}");
}

#[test]
fn cluster_addresses_are_checked() {
    assert_eq!(Cluster::parse("standalone"), Ok(Cluster::Standalone));
    assert_eq!(
        Cluster::parse("df://scheduler:50050"),
        Ok(Cluster::Remote("df://scheduler:50050".into()))
    );
    for bad in ["", "scheduler:50050", "ftp://x:1", "df://"] {
        let err = Cluster::parse(bad).unwrap_err();
        assert!(err.contains("df://HOST:50050"), "{bad}: {err}");
    }
}

#[cfg(feature = "ballista")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_on_a_standalone_cluster_answer_what_datafusion_does() {
    use amdahl_dags::{DatasetFormat, Location};
    use amdahl_executors::testing::{LocalObjects, LocalS3};

    use super::{kernel, read_parquet};

    let dir = tempfile::tempdir().unwrap();
    let lineitem = kernel::lineitem(dir.path(), 0.01).await;
    let local = TableInput::local("lineitem", &lineitem, DatasetFormat::Parquet);
    let q1 = "SELECT l_returnflag, l_linestatus, SUM(l_quantity) AS sum_qty, \
              SUM(l_extendedprice * (1 - l_discount)) AS sum_disc_price, \
              AVG(l_discount) AS avg_disc, COUNT(*) AS count_order FROM lineitem \
              WHERE l_shipdate <= DATE '1998-09-02' \
              GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus";
    let join = "SELECT a.l_linenumber, COUNT(*) AS n, SUM(b.l_quantity) AS q \
                FROM lineitem a JOIN lineitem b ON a.l_orderkey = b.l_orderkey \
                AND a.l_linenumber = b.l_linenumber GROUP BY a.l_linenumber \
                ORDER BY a.l_linenumber";
    let worker = super::executors();
    let cluster = executors_on(Some(Cluster::Standalone));
    for (name, query, order) in [
        ("q1", q1, "l_returnflag, l_linestatus"),
        ("join", join, "l_linenumber"),
    ] {
        let here = dir.path().join(format!("{name}-datafusion"));
        let there = dir.path().join(format!("{name}-ballista"));
        run(
            &worker,
            Engine::DataFusion,
            query,
            vec![local.clone()],
            &here,
        )
        .await
        .unwrap();
        let outcome = run(
            &cluster,
            Engine::Ballista,
            query,
            vec![local.clone()],
            &there,
        )
        .await
        .unwrap_or_else(|e| panic!("{name} on Ballista: {e}"));
        let note = outcome.note.unwrap_or_default();
        assert!(
            note.starts_with("ran on Ballista, the in-process standalone cluster"),
            "{note}"
        );
        assert_eq!(
            read_parquet(&there, order).await,
            read_parquet(&here, order).await,
            "{name}"
        );
    }

    // The same files in a bucket: the cluster reads them through the worker's object stores.
    let s3 = LocalS3::start().unwrap();
    s3.create_bucket("lake").unwrap();
    for entry in std::fs::read_dir(&lineitem).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        s3.put(
            &format!("s3://lake/lineitem/{name}"),
            std::fs::read(&path).unwrap(),
        )
        .await
        .unwrap();
    }
    let remote = TableInput {
        name: "lineitem".into(),
        location: Location::Object(s3.location("s3://lake/lineitem/")),
        format: DatasetFormat::Parquet,
        parts: Vec::new(),
    };
    let from_s3 = dir.path().join("q1-ballista-s3");
    run(&cluster, Engine::Ballista, q1, vec![remote], &from_s3)
        .await
        .unwrap_or_else(|e| panic!("Q1 on Ballista from S3: {e}"));
    assert_eq!(
        read_parquet(&from_s3, "l_returnflag, l_linestatus").await,
        read_parquet(
            &dir.path().join("q1-datafusion"),
            "l_returnflag, l_linestatus"
        )
        .await
    );

    // Two stages at once on one cluster, each with its own `t`.
    let small = dir.path().join("small");
    run(
        &worker,
        Engine::DataFusion,
        "SELECT * FROM lineitem WHERE l_linenumber = 1",
        vec![local.clone()],
        &small,
    )
    .await
    .unwrap();
    let count = "SELECT COUNT(*) AS n FROM t";
    let (count_all, count_small) = (dir.path().join("count-all"), dir.path().join("count-small"));
    let (a, b) = tokio::join!(
        run(
            &cluster,
            Engine::Ballista,
            count,
            vec![TableInput::local("t", &lineitem, DatasetFormat::Parquet)],
            &count_all,
        ),
        run(
            &cluster,
            Engine::Ballista,
            count,
            vec![TableInput::local("t", &small, DatasetFormat::Parquet)],
            &count_small,
        ),
    );
    a.unwrap();
    b.unwrap();
    let all = read_parquet(&count_all, "n").await;
    let some = read_parquet(&count_small, "n").await;
    assert_ne!(all, some, "each stage saw its own table");
    assert!(all.contains("60175"), "{all}");
}

/// The cluster as a third place: `amdahl calibrate --ballista` measures it as whole stages
/// (finite, positive rates for every kind a query does; a fixed cost per query), and a
/// `device: auto` query that placement put on the cluster runs there (the outcome says the
/// cluster), while one placed on the CPU stays in the worker.
#[cfg(feature = "ballista")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_is_measured_and_a_query_placed_there_runs_there() {
    use amdahl_dags::DatasetFormat;
    use amdahl_executors::Device;
    use amdahl_executors::calibrate::{Effort, calibrate_cluster};
    use amdahl_placement::{OpKind, Place, Placement};

    let ballista = Ballista::new(Some(Cluster::Standalone));
    let runtime = CpuRuntime::new(2).unwrap();
    let measured = calibrate_cluster(&ballista, &runtime, Effort::Quick, None)
        .await
        .unwrap();
    let profile = &measured.profile;
    assert_eq!(profile.name, "standalone");
    assert!(profile.device.fixed_seconds > 0.0 && profile.device.fixed_seconds < 10.0);
    for kind in [OpKind::Scan, OpKind::Aggregate, OpKind::Join, OpKind::Sort] {
        let rate = profile.device.throughput[&kind];
        assert!(rate.is_finite() && rate > 0.0, "{kind:?}: {rate}");
    }
    assert!(profile.result_bandwidth.is_finite() && profile.result_bandwidth > 0.0);
    assert!(
        measured
            .figures
            .iter()
            .any(|(what, _)| what == "cluster fixed cost per query"),
        "{:?}",
        measured.figures
    );

    let dir = tempfile::tempdir().unwrap();
    let lineitem = super::kernel::lineitem(dir.path(), 0.01).await;
    let executors = executors_on(Some(Cluster::Standalone));
    for (place, device) in [(Place::Cluster, Device::Cluster), (Place::Cpu, Device::Cpu)] {
        let out = dir.path().join(format!("{place:?}"));
        let mut stage = stage(
            Work::Sql {
                query: "SELECT COUNT(*) AS n FROM lineitem".into(),
            },
            vec![TableInput::local(
                "lineitem",
                &lineitem,
                DatasetFormat::Parquet,
            )],
            Some(out.clone()),
            &out,
        );
        stage.placement = Some(Placement {
            place,
            cpu_seconds: 1.0,
            gpu_seconds: None,
            cluster_seconds: Some(0.5),
            reason: "placement chose it".into(),
            kind: Some(OpKind::Scan),
            cpu_factor: 1.0,
            gpu_factor: 1.0,
            cpu_fixed_seconds: 0.0,
            gpu_fixed_seconds: 0.0,
        });
        let (log, _lines) = LogSink::channel();
        let outcome = executors.execute(&stage, &log).await.unwrap();
        assert_eq!(outcome.device, device, "{place:?}");
        assert!(super::read_parquet(&out, "n").await.contains("60175"));
    }
}
