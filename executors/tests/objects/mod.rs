//! Object storage: SQL stages read datasets at `s3://`, `gs://` and `az://` URLs from real local
//! servers (moto, for S3 and for GCS's XML API, and Azurite, started by the test): a prefix of Parquet files joined with a CSV object gives the
//! answer the same query gives over the same files on disk; what goes wrong is said with the
//! URL, never with a credential.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;

use amdahl_dags::{DatasetFormat, Location, ObjectLocation};
use amdahl_executors::testing::{LocalAzure, LocalGcs, LocalObjects, LocalS3};
use amdahl_executors::{LogSink, StageError, StageOutcome, TableInput, Work};

use super::{executors, read_parquet, stage};

const QUERY: &str = "SELECT r.region_name, COUNT(*) AS n, SUM(f.amount) AS total \
                     FROM facts f JOIN regions r ON r.region_id = f.region_id \
                     GROUP BY r.region_name ORDER BY r.region_name";

/// A Parquet file of `rows` facts from `first` on.
fn facts_file(first: i64, rows: i64) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region_id", DataType::Int64, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    let ids: Vec<i64> = (first..first + rows).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| 1 + i % 4))),
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|i| (i % 97) as f64 * 0.5),
            )),
        ],
    )
    .unwrap();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    bytes
}

async fn run(inputs: Vec<TableInput>, out: &Path) -> Result<StageOutcome, StageError> {
    let (log, _lines) = LogSink::channel();
    executors()
        .execute(
            &stage(
                Work::Sql {
                    query: QUERY.into(),
                },
                inputs,
                Some(out.to_path_buf()),
                out,
            ),
            &log,
        )
        .await
}

fn object(name: &str, location: ObjectLocation, format: DatasetFormat) -> TableInput {
    TableInput {
        name: name.into(),
        location: Location::Object(location),
        format,
        parts: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_reads_datasets_from_s3() {
    sql_reads_datasets_from(&LocalS3::start().unwrap(), "s3").await;
}

/// The same from Azure Blob Storage (`az://container/…`, Azurite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_reads_datasets_from_azure_blob_storage() {
    sql_reads_datasets_from(&LocalAzure::start().unwrap(), "az").await;
}

/// The same from Google Cloud Storage (`gs://bucket/…`, through its XML API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_reads_datasets_from_google_cloud_storage() {
    sql_reads_datasets_from(&LocalGcs::start().unwrap(), "gs").await;
}

async fn sql_reads_datasets_from(s3: &impl LocalObjects, scheme: &str) {
    s3.create_bucket("lake").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local_facts = dir.path().join("facts");
    std::fs::create_dir(&local_facts).unwrap();
    for (i, first) in [0i64, 5_000].into_iter().enumerate() {
        let bytes = facts_file(first, 5_000);
        std::fs::write(local_facts.join(format!("part-{i}.parquet")), &bytes).unwrap();
        s3.put(&format!("{scheme}://lake/facts/part-{i}.parquet"), bytes)
            .await
            .unwrap();
    }
    let regions = std::fs::canonicalize("../dags/examples/data/regions.csv").unwrap();
    s3.put(
        &format!("{scheme}://lake/ref/regions.csv"),
        std::fs::read(&regions).unwrap(),
    )
    .await
    .unwrap();

    let on_disk = dir.path().join("on-disk");
    run(
        vec![
            TableInput::local("facts", &local_facts, DatasetFormat::Parquet),
            TableInput::local("regions", &regions, DatasetFormat::Csv),
        ],
        &on_disk,
    )
    .await
    .unwrap();
    let expected = read_parquet(&on_disk, "region_name").await;
    assert!(expected.contains("| east"), "{expected}");
    // A prefix with and without its trailing `/`, and one object.
    for prefix in [
        format!("{scheme}://lake/facts/"),
        format!("{scheme}://lake/facts"),
    ] {
        let out = dir.path().join(format!("from-s3-{}", prefix.len()));
        let outcome = run(
            vec![
                object("facts", s3.location(&prefix), DatasetFormat::Parquet),
                object(
                    "regions",
                    s3.location(&format!("{scheme}://lake/ref/regions.csv")),
                    DatasetFormat::Csv,
                ),
            ],
            &out,
        )
        .await
        .unwrap_or_else(|e| panic!("{prefix}: {e}"));
        assert_eq!(outcome.rows, Some(4), "{prefix}");
        assert_eq!(
            read_parquet(&out, "region_name").await,
            expected,
            "{prefix}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_storage_errors_name_the_url_never_the_secret() {
    let s3 = LocalS3::start().unwrap();
    s3.create_bucket("lake").unwrap();
    s3.put(
        "s3://lake/ref/regions.csv",
        b"region_id,region_name\n1,east\n".to_vec(),
    )
    .await
    .unwrap();
    let secret = "s3cr3t-never-shown";
    let with_secret = |url: &str| {
        let mut options: BTreeMap<String, String> = s3.options();
        options.insert("secret_access_key".into(), secret.into());
        ObjectLocation {
            url: url.into(),
            options,
        }
    };
    let dir = tempfile::tempdir().unwrap();
    for (url, says) in [
        (
            "s3://lake/missing.parquet",
            "nothing at s3://lake/missing.parquet",
        ),
        ("s3://no-such-bucket/facts/", "s3://no-such-bucket/facts/"),
    ] {
        let error = run(
            vec![
                object("facts", with_secret(url), DatasetFormat::Parquet),
                object(
                    "regions",
                    with_secret("s3://lake/ref/regions.csv"),
                    DatasetFormat::Csv,
                ),
            ],
            &dir.path().join("out"),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(error.contains(says), "{url}: {error}");
        assert!(error.contains("`facts`"), "{url}: {error}");
        assert!(!error.contains(secret), "{url}: {error}");
    }
}

/// A sensor's poke in object storage (`wait: { uri: s3://… }`): an object that is not there
/// yet is a wait, not an error; once it is put, the wait is over; a `uri` ending in `/` waits
/// for anything under that prefix; a server that cannot be reached fails the attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_waits_for_an_object_and_a_prefix_in_s3() {
    let s3 = LocalS3::start().unwrap();
    s3.create_bucket("lake").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let executors = executors();
    let poke = |url: &str| {
        let work = Work::Wait {
            probe: amdahl_executors::wait::Probe::Location(Location::Object(s3.location(url))),
            poke: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(60),
            soft_fail: false,
        };
        let stage = stage(work, vec![], None, dir.path());
        let executors = executors.clone();
        async move {
            let (log, _lines) = LogSink::channel();
            executors.execute(&stage, &log).await
        }
    };
    let marker = "s3://lake/raw/dt=2026-01-02/_SUCCESS";
    let prefix = "s3://lake/raw/dt=2026-01-02/";
    for url in [marker, prefix] {
        let outcome = poke(url).await.unwrap();
        assert!(outcome.waiting, "{url}: nothing there yet");
        assert!(
            outcome
                .note
                .as_deref()
                .is_some_and(|n| n.contains("is not there yet")),
            "{:?}",
            outcome.note
        );
    }
    s3.put(marker, b"".to_vec()).await.unwrap();
    for url in [marker, prefix] {
        let outcome = poke(url).await.unwrap();
        assert!(!outcome.waiting, "{url}: the wait is over");
    }
    // A prefix of another name is not matched by a longer key's beginning.
    assert!(poke("s3://lake/raw/dt=2026-01-0/").await.unwrap().waiting);
    // A server that cannot be reached fails the attempt (it retries as any failure does);
    // a bucket that does not exist reads as "not there" (S3 answers HEAD with a bare 404).
    let mut unreachable = s3.location(marker);
    unreachable
        .options
        .insert("endpoint".into(), "http://127.0.0.1:9".into());
    let work = Work::Wait {
        probe: amdahl_executors::wait::Probe::Location(Location::Object(unreachable)),
        poke: std::time::Duration::from_secs(1),
        timeout: std::time::Duration::from_secs(60),
        soft_fail: false,
    };
    let (log, _lines) = LogSink::channel();
    let error = executors
        .execute(&stage(work, vec![], None, dir.path()), &log)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("s3://lake/raw"), "{error}");
}

/// A prefix with a `_SUCCESS` manifest is read as the files the manifest names: the parts
/// of an upload that died before its manifest (another run's, here) are not read, and a
/// manifest naming them makes them read. With and without the trailing `/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_with_a_manifest_reads_the_files_it_names() {
    let s3 = LocalS3::start().unwrap();
    s3.create_bucket("lake").unwrap();
    let file = |run: i64| format!("run-{run}-attempt-1-part-0.parquet");
    s3.put(
        &format!("s3://lake/revenue/{}", file(1)),
        facts_file(0, 100),
    )
    .await
    .unwrap();
    s3.put(
        &format!("s3://lake/revenue/{}", file(2)),
        facts_file(10_000, 50),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let count = |prefix: &'static str, out: &'static str| {
        let location = s3.location(prefix);
        let out = dir.path().join(out);
        async move {
            let (log, _lines) = LogSink::channel();
            executors()
                .execute(
                    &stage(
                        Work::Sql {
                            query: "SELECT COUNT(*) AS n, MIN(id) AS first, MAX(id) AS last \
                                    FROM revenue"
                                .into(),
                        },
                        vec![object("revenue", location, DatasetFormat::Parquet)],
                        Some(out.clone()),
                        &out,
                    ),
                    &log,
                )
                .await
                .unwrap();
            read_parquet(&out, "n").await
        }
    };
    s3.put(
        "s3://lake/revenue/_SUCCESS",
        format!("{}\t1\n", file(1)).into_bytes(),
    )
    .await
    .unwrap();
    for (prefix, out) in [("s3://lake/revenue/", "a"), ("s3://lake/revenue", "b")] {
        let shown = count(prefix, out).await;
        assert!(
            shown.contains("| 100 | 0     | 99   |"),
            "{prefix}:\n{shown}"
        );
    }
    s3.put(
        "s3://lake/revenue/_SUCCESS",
        format!("{}\t1\n{}\t1\n", file(1), file(2)).into_bytes(),
    )
    .await
    .unwrap();
    let shown = count("s3://lake/revenue/", "c").await;
    assert!(shown.contains("| 150 | 0     | 10049 |"), "{shown}");
    // A manifest naming nothing is an error, said with the URL.
    s3.put("s3://lake/revenue/_SUCCESS", Vec::new())
        .await
        .unwrap();
    let (log, _lines) = LogSink::channel();
    let out = dir.path().join("d");
    let error = executors()
        .execute(
            &stage(
                Work::Sql {
                    query: "SELECT * FROM revenue".into(),
                },
                vec![object(
                    "revenue",
                    s3.location("s3://lake/revenue/"),
                    DatasetFormat::Parquet,
                )],
                Some(out.clone()),
                &out,
            ),
            &log,
        )
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("manifest at s3://lake/revenue/ names no files"),
        "{error}"
    );
}

/// An output published in object storage previews as one on a local disk does: its parts in
/// name order (the manifest left out), the first rows read by ranges, the columns' types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_in_s3_previews_its_first_rows() {
    let s3 = LocalS3::start().unwrap();
    s3.create_bucket("lake").unwrap();
    for (i, first) in [0i64, 5_000].into_iter().enumerate() {
        s3.put(
            &format!("s3://lake/runs/1/t/attempt-1/part-{i}.parquet"),
            facts_file(first, 5_000),
        )
        .await
        .unwrap();
    }
    s3.put(
        "s3://lake/runs/1/t/attempt-1/_SUCCESS",
        b"part-0.parquet\t1\npart-1.parquet\t1\n".to_vec(),
    )
    .await
    .unwrap();
    let output = Location::Object(s3.location("s3://lake/runs/1/t/attempt-1/"));
    let shown = amdahl_planner::preview::preview(&output, 3).await.unwrap();
    assert_eq!(shown.files, 2);
    assert_eq!(
        shown.columns,
        [
            ("id".to_string(), "Int64".to_string()),
            ("region_id".to_string(), "Int64".to_string()),
            ("amount".to_string(), "Float64".to_string())
        ]
    );
    assert_eq!(
        shown.rows,
        [["0", "1", "0.0"], ["1", "2", "0.5"], ["2", "3", "1.0"]]
    );
    let missing = Location::Object(s3.location("s3://lake/runs/1/nothing/"));
    let error = amdahl_planner::preview::preview(&missing, 3)
        .await
        .unwrap_err();
    assert!(error.contains("holds no Parquet file"), "{error}");
}
