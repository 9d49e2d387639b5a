//! Dense stages end to end: generated vectors written to Parquet, `knn`, `matmul` and `score`
//! run through the executors, their Parquet outputs read back and checked against plain
//! definitions computed here; bad inputs fail with messages that say what is wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float32Type, Int32Type, Int64Type};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use amdahl_dags::{Activation, DatasetFormat, Metric};
use amdahl_executors::budget::Budget;
use amdahl_executors::dense::{Forward, Matrix, read_vectors};
use amdahl_executors::{LogSink, StageError, StageOutcome, TableInput, Work};

use super::{executors, stage};

fn table(name: &str, path: &Path) -> TableInput {
    TableInput {
        name: name.into(),
        location: amdahl_dags::Location::Local(path.to_path_buf()),
        format: DatasetFormat::Parquet,
        parts: Vec::new(),
    }
}

async fn run(work: Work, inputs: Vec<TableInput>, out: &Path) -> Result<StageOutcome, StageError> {
    let (log, _lines) = LogSink::channel();
    executors()
        .execute(&stage(work, inputs, Some(out.to_path_buf()), out), &log)
        .await
}

async fn vectors(dir: &Path, name: &str, rows: u64, dim: u32, seed: u64) -> PathBuf {
    let out = dir.join(name);
    let outcome = run(Work::Vectors { rows, dim, seed }, vec![], &out)
        .await
        .unwrap();
    assert_eq!(outcome.rows, Some(rows));
    out
}

fn batches(dir: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(dir.join("part-0.parquet")).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_vectors_are_reproducible_and_in_range() {
    let dir = tempfile::tempdir().unwrap();
    let a = read_vectors(
        &table("a", &vectors(dir.path(), "a", 1001, 7, 5).await),
        "vector",
        &mut Budget::unbounded("test"),
    )
    .unwrap();
    let b = read_vectors(
        &table("b", &vectors(dir.path(), "b", 1001, 7, 5).await),
        "vector",
        &mut Budget::unbounded("test"),
    )
    .unwrap();
    let c = read_vectors(
        &table("c", &vectors(dir.path(), "c", 1001, 7, 6).await),
        "vector",
        &mut Budget::unbounded("test"),
    )
    .unwrap();
    assert_eq!((a.rows, a.dim), (1001, 7));
    assert_eq!(a, b, "same seed, same vectors");
    assert_ne!(a, c, "another seed, other vectors");
    assert!(a.data.iter().all(|x| (-1.0..1.0).contains(x)));
    let mean = a.data.iter().sum::<f32>() / a.data.len() as f32;
    assert!(mean.abs() < 0.05, "uniform around 0: mean {mean}");
}

/// `knn` over a base of several blocks' worth of rows equals brute force for each metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knn_finds_what_brute_force_finds() {
    let dir = tempfile::tempdir().unwrap();
    let base_dir = vectors(dir.path(), "base", 3000, 16, 1).await;
    let query_dir = vectors(dir.path(), "queries", 300, 16, 2).await;
    let base = read_vectors(
        &table("base", &base_dir),
        "vector",
        &mut Budget::unbounded("test"),
    )
    .unwrap();
    let queries = read_vectors(
        &table("queries", &query_dir),
        "vector",
        &mut Budget::unbounded("test"),
    )
    .unwrap();
    for metric in [Metric::Dot, Metric::Cosine, Metric::L2] {
        let out = dir.path().join(format!("knn-{}", metric.name()));
        let outcome = run(
            Work::Knn {
                base: "base".into(),
                queries: "queries".into(),
                column: "vector".into(),
                k: 7,
                metric,
            },
            vec![table("base", &base_dir), table("queries", &query_dir)],
            &out,
        )
        .await
        .unwrap();
        assert_eq!(outcome.rows, Some(300 * 7));
        let mut found: HashMap<(i64, i32), (i64, f32)> = HashMap::new();
        for batch in batches(&out) {
            let q = batch.column(0).as_primitive::<Int64Type>();
            let r = batch.column(1).as_primitive::<Int32Type>();
            let n = batch.column(2).as_primitive::<Int64Type>();
            let s = batch.column(3).as_primitive::<Float32Type>();
            for i in 0..batch.num_rows() {
                found.insert((q.value(i), r.value(i)), (n.value(i), s.value(i)));
            }
        }
        let score = |q: &[f32], b: &[f32]| match metric {
            Metric::Dot => dot(q, b),
            Metric::Cosine => dot(q, b) / (dot(q, q).sqrt() * dot(b, b).sqrt()),
            Metric::L2 => -dot(q, q) - dot(b, b) + 2.0 * dot(q, b),
        };
        for qi in 0..queries.rows {
            let mut all: Vec<(f32, usize)> = (0..base.rows)
                .map(|bi| (score(queries.row(qi), base.row(bi)), bi))
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for rank in 1..=7 {
                let (neighbour, reported) = found[&(qi as i64, rank)];
                let (best, _) = all[rank as usize - 1];
                let mine = score(queries.row(qi), base.row(neighbour as usize));
                // Near-ties may swap under float rounding: the neighbour's own score must be
                // the rank's score.
                assert!(
                    (mine - best).abs() <= 1e-4 * (1.0 + best.abs()),
                    "{metric:?} query {qi} rank {rank}: neighbour {neighbour} scores {mine}, the best {best}"
                );
                let expected = match metric {
                    Metric::L2 => (-mine).max(0.0).sqrt(),
                    _ => mine,
                };
                assert!(
                    (reported - expected).abs() <= 1e-3 * (1.0 + expected.abs()),
                    "{metric:?}: reported {reported}, expected {expected}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matmul_equals_the_definition() {
    let dir = tempfile::tempdir().unwrap();
    let left_dir = vectors(dir.path(), "left", 9000, 12, 3).await;
    let right_dir = vectors(dir.path(), "right", 5, 12, 4).await;
    let left = read_vectors(
        &table("left", &left_dir),
        "vector",
        &mut Budget::unbounded("test"),
    )
    .unwrap();
    let right = read_vectors(
        &table("right", &right_dir),
        "vector",
        &mut Budget::unbounded("test"),
    )
    .unwrap();
    let out = dir.path().join("product");
    let outcome = run(
        Work::Matmul {
            left: "left".into(),
            right: "right".into(),
            column: "vector".into(),
        },
        vec![table("left", &left_dir), table("right", &right_dir)],
        &out,
    )
    .await
    .unwrap();
    assert_eq!(outcome.rows, Some(9000));
    let product = read_vectors(
        &table("product", &out),
        "vector",
        &mut Budget::unbounded("test"),
    )
    .unwrap();
    assert_eq!((product.rows, product.dim), (9000, 5));
    for i in [0, 1, 4095, 8191, 8192, 8999] {
        for j in 0..5 {
            let want = dot(left.row(i), right.row(j));
            let got = product.row(i)[j];
            assert!((got - want).abs() < 1e-4, "({i}, {j}): {got} vs {want}");
        }
    }
}

/// Writes a 3 → 4 → 2 MLP (and a 3 → 1 one) as safetensors files.
/// (weight, bias, outputs, inputs) of one layer.
type TestLayer = (Vec<f32>, Vec<f32>, usize, usize);

fn models(dir: &Path) -> (PathBuf, PathBuf, Vec<TestLayer>) {
    let layers = vec![
        (
            (0..12)
                .map(|i| (i as f32 - 6.0) / 5.0)
                .collect::<Vec<f32>>(),
            vec![0.1, -0.2, 0.3, 0.0],
            4,
            3,
        ),
        (
            (0..8).map(|i| (i as f32 * 0.7).sin()).collect::<Vec<f32>>(),
            vec![0.5, -0.5],
            2,
            4,
        ),
    ];
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let write = |path: &Path, tensors: Vec<(String, Vec<usize>, Vec<u8>)>| {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(name, shape, data)| {
                (
                    name.clone(),
                    safetensors::tensor::TensorView::new(
                        safetensors::Dtype::F32,
                        shape.clone(),
                        data,
                    )
                    .unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    };
    let two = dir.join("two.safetensors");
    // Named so that text order would put `layer10` first: natural order must not.
    write(
        &two,
        vec![
            ("layer2.weight".into(), vec![4, 3], bytes(&layers[0].0)),
            ("layer2.bias".into(), vec![4], bytes(&layers[0].1)),
            ("layer10.weight".into(), vec![2, 4], bytes(&layers[1].0)),
            ("layer10.bias".into(), vec![2], bytes(&layers[1].1)),
        ],
    );
    let one = dir.join("one.safetensors");
    write(
        &one,
        vec![("out.weight".into(), vec![1, 3], bytes(&[1.0, -2.0, 0.5]))],
    );
    (two, one, layers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_runs_the_mlp_of_a_safetensors_file() {
    let dir = tempfile::tempdir().unwrap();
    let input_dir = vectors(dir.path(), "input", 1000, 3, 9).await;
    let input = read_vectors(
        &table("input", &input_dir),
        "vector",
        &mut Budget::unbounded("test"),
    )
    .unwrap();
    let (two, one, layers) = models(dir.path());
    let out = dir.path().join("scores");
    run(
        Work::Score {
            input: "input".into(),
            column: "vector".into(),
            model: two,
            activation: Activation::Tanh,
        },
        vec![table("input", &input_dir)],
        &out,
    )
    .await
    .unwrap();
    let scores = read_vectors(
        &table("scores", &out),
        "score",
        &mut Budget::unbounded("test"),
    )
    .unwrap();
    assert_eq!((scores.rows, scores.dim), (1000, 2));
    for i in [0, 1, 500, 999] {
        let mut h: Vec<f32> = input.row(i).to_vec();
        for (n, (w, b, outs, ins)) in layers.iter().enumerate() {
            h = (0..*outs)
                .map(|o| {
                    let x = dot(&w[o * ins..(o + 1) * ins], &h) + b[o];
                    if n == 0 { x.tanh() } else { x }
                })
                .collect();
        }
        for (got, want) in scores.row(i).iter().zip(&h) {
            assert!((got - want).abs() < 1e-4, "row {i}: {got} vs {want}");
        }
    }
    // One output: a plain float column named `score`.
    let out = dir.path().join("single");
    run(
        Work::Score {
            input: "input".into(),
            column: "vector".into(),
            model: one,
            activation: Activation::Relu,
        },
        vec![table("input", &input_dir)],
        &out,
    )
    .await
    .unwrap();
    let batch = &batches(&out)[0];
    let score = batch.column(1).as_primitive::<Float32Type>();
    let x = input.row(0);
    assert!((score.value(0) - (x[0] - 2.0 * x[1] + 0.5 * x[2])).abs() < 1e-5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_dense_inputs_fail_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let a = vectors(dir.path(), "a", 10, 4, 1).await;
    let b = vectors(dir.path(), "b", 10, 5, 1).await;
    let (two, _, _) = models(dir.path());
    let knn = |column: &str| Work::Knn {
        base: "a".into(),
        queries: "b".into(),
        column: column.into(),
        k: 3,
        metric: Metric::Cosine,
    };
    let inputs = vec![table("a", &a), table("b", &b)];
    let out = dir.path().join("out");
    let cases: Vec<(Work, Vec<TableInput>, &str)> = vec![
        (
            knn("vector"),
            inputs.clone(),
            "`a` vectors have 4 values but `b` vectors have 5",
        ),
        (
            knn("embedding"),
            inputs.clone(),
            "table `a`: no column `embedding` (columns: id, vector)",
        ),
        (
            knn("id"),
            inputs.clone(),
            "column `id` is Int64, not a list of floats",
        ),
        (
            Work::Score {
                input: "a".into(),
                column: "vector".into(),
                model: two,
                activation: Activation::Relu,
            },
            vec![table("a", &a)],
            "the model takes 3 inputs but `a` vectors have 4",
        ),
        (
            Work::Score {
                input: "a".into(),
                column: "vector".into(),
                model: dir.path().join("missing.safetensors"),
                activation: Activation::Relu,
            },
            vec![table("a", &a)],
            "cannot read",
        ),
        (
            knn("vector"),
            vec![
                table("a", &a),
                TableInput {
                    name: "b".into(),
                    location: amdahl_dags::Location::Local(a.join("part-0.parquet")),
                    format: DatasetFormat::Csv,
                    parts: Vec::new(),
                },
            ],
            "table `b` is CSV; vector columns must come from Parquet",
        ),
    ];
    for (work, inputs, expected) in cases {
        let error = run(work, inputs, &out).await.expect_err(expected);
        assert!(
            matches!(error, StageError::Failed(_)) && error.to_string().contains(expected),
            "`{error}` should say `{expected}`"
        );
    }
    // A matrix with no rows is a matrix, not an error.
    let empty = Matrix::new(0, 3, Vec::new());
    assert_eq!(empty.rows, 0);
}

/// The GPU top-k kernel, compiled by the host's C++ compiler with one OS thread per CUDA
/// thread and a barrier for `__syncthreads`, merged over two base blocks: it keeps exactly the
/// best `k` by the CPU's order (larger first, then smaller index, NaN last), for similarity and
/// for L2 keys, with ties and NaNs among the scores.
#[test]
fn the_gpu_top_k_kernel_keeps_the_best_k() {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for (k, l2) in [(10, false), (20, true), (1, false)] {
        let (qn, bn) = (3, 1000);
        // Coarse values make ties; a few NaNs.
        let scores: Vec<f32> = (0..qn * bn)
            .map(|_| match next() % 50 {
                0 => f32::NAN,
                v => (v % 17) as f32 / 4.0 - 2.0,
            })
            .collect();
        let qnorm: Vec<f32> = (0..qn).map(|i| 1.0 + i as f32).collect();
        let bnorm: Vec<f32> = (0..bn).map(|j| (j % 7) as f32 / 3.0).collect();
        let key = |q: usize, j: usize| {
            let dot = scores[q * bn + j];
            if l2 {
                -(qnorm[q] + bnorm[j] - 2.0 * dot).max(0.0)
            } else {
                dot
            }
        };
        // Two blocks: columns 0..700, then 700..1000 merged into the first block's lists.
        let split = 700;
        let block = |lo: usize, hi: usize| -> Vec<f32> {
            (0..qn)
                .flat_map(|q| (lo..hi).map(move |j| (q, j)))
                .map(|(q, j)| scores[q * bn + j])
                .collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let empty = (vec![0f32; qn * k], vec![-1i64; qn * k]);
        let first = amdahl_executors::gpu::dense::emulation::topk(
            dir.path(),
            k,
            &block(0, split),
            (qn, split, 0),
            l2,
            &qnorm,
            &bnorm,
            (&empty.0, &empty.1),
        )
        .unwrap();
        let (keys, ids) = amdahl_executors::gpu::dense::emulation::topk(
            dir.path(),
            k,
            &block(split, bn),
            (qn, bn - split, split),
            l2,
            &qnorm,
            &bnorm,
            (&first.0, &first.1),
        )
        .unwrap();
        for q in 0..qn {
            let mut all: Vec<(f32, usize)> = (0..bn).map(|j| (key(q, j), j)).collect();
            all.sort_by(|a, b| match (a.0.is_nan(), b.0.is_nan()) {
                (false, true) => std::cmp::Ordering::Less,
                (true, false) => std::cmp::Ordering::Greater,
                (true, true) => a.1.cmp(&b.1),
                _ => b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)),
            });
            let want: Vec<i64> = all.iter().take(k).map(|x| x.1 as i64).collect();
            assert_eq!(
                &ids[q * k..(q + 1) * k],
                &want[..],
                "k {k}, l2 {l2}, query {q}"
            );
            for (i, &(score, _)) in all.iter().take(k).enumerate() {
                let got = keys[q * k + i];
                assert!(
                    got == score || (got.is_nan() && score.is_nan()),
                    "{got} vs {score}"
                );
            }
        }
    }
}

/// On a GPU: `knn`, `matmul` and `score` agree with the CPU path on fresh random inputs of
/// sizes that are not multiples of any block size.
#[test]
#[ignore = "needs a CUDA device"]
fn gpu_dense_stages_match_the_cpu() {
    use amdahl_executors::dense;
    use amdahl_executors::gpu::dense as gpu;
    let report = amdahl_executors::gpu::devices();
    assert!(report.usable(), "no usable GPU: {:?}", report.problem);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    let matrix = |rows: usize, dim: usize, s: u64| {
        Matrix::new(
            rows,
            dim,
            (0..(rows * dim) as u64)
                .map(|i| dense::uniform(seed ^ s, i))
                .collect(),
        )
    };
    // Each check runs on its own; every failure is listed at the end, not just the first.
    let mut failures: Vec<String> = Vec::new();
    let mut check = |what: String, body: &dyn Fn()| {
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{what}: {text}"));
        }
    };
    for (rows, queries, dim, k) in [(1, 1, 1, 1), (1000, 33, 17, 10), (70_001, 1025, 129, 32)] {
        let base = matrix(rows, dim, 1);
        let q = matrix(queries, dim, 2);
        for metric in [Metric::Dot, Metric::Cosine, Metric::L2] {
            check(format!("knn {metric:?} {rows}×{dim} k {k}"), &|| {
                let on_gpu = gpu::knn(&base, &q, k, metric).unwrap();
                let on_cpu = dense::knn(&base, &q, k, metric, 4);
                assert_eq!(on_gpu.len(), on_cpu.len());
                for (qi, (g, c)) in on_gpu.iter().zip(&on_cpu).enumerate() {
                    assert_eq!(g.len(), c.len());
                    for (a, b) in g.iter().zip(c) {
                        assert!(
                            (a.score - b.score).abs() <= 1e-3 * (1.0 + b.score.abs()),
                            "{metric:?} {rows}×{dim} query {qi}: {a:?} vs {b:?}"
                        );
                    }
                }
            });
        }
        check(format!("matmul {queries}×{rows}×{dim}"), &|| {
            let product =
                gpu::multiply_transposed(&q.data, &base.data, queries, rows, dim).unwrap();
            let expected = dense::multiply_transposed(&q.data, &base.data, queries, rows, dim, 4);
            assert_eq!(product.len(), expected.len());
            for (a, b) in product.iter().zip(&expected) {
                assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{a} vs {b}");
            }
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let (two, _, _) = models(dir.path());
    for activation in [Activation::Relu, Activation::Tanh, Activation::Sigmoid] {
        check(format!("score {activation:?}"), &|| {
            let mlp = dense::Mlp::load(&two, activation).unwrap();
            let input = matrix(10_007, 3, 3);
            let g = gpu::mlp_forward(&mlp, &input.data, input.rows).unwrap();
            let c = mlp.forward(&input.data, input.rows, 4);
            assert_eq!(g.len(), c.len());
            for (a, b) in g.iter().zip(&c) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{activation:?}: {a} vs {b}"
                );
            }
        });
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// On a GPU: a matmul placed on the GPU leaves its output in device memory, and a knn placed
/// on the GPU after it reads that output from there (its log says so) and answers like the
/// CPU does from the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a CUDA device"]
async fn a_gpu_stage_reads_the_previous_gpu_output_from_device_memory() {
    let report = amdahl_executors::gpu::devices();
    assert!(report.usable(), "no usable GPU: {:?}", report.problem);
    let dir = tempfile::tempdir().unwrap();
    let docs = vectors(dir.path(), "docs", 20_000, 64, 1).await;
    let basis = vectors(dir.path(), "basis", 48, 64, 2).await;
    let questions = vectors(dir.path(), "questions", 100, 48, 3).await;
    let on = |work: Work, inputs: Vec<TableInput>, out: PathBuf, device| {
        let mut s = stage(work, inputs, Some(out.clone()), &out);
        s.device = device;
        s
    };
    let product = dir.path().join("product");
    let (log, mut lines) = LogSink::channel();
    let projected = executors()
        .execute(
            &on(
                Work::Matmul {
                    left: "docs".into(),
                    right: "basis".into(),
                    column: "vector".into(),
                },
                vec![table("docs", &docs), table("basis", &basis)],
                product.clone(),
                amdahl_dags::DevicePreference::Gpu,
            ),
            &log,
        )
        .await
        .unwrap();
    assert_eq!(projected.device.name(), "gpu", "{:?}", projected.note);
    let knn_work = || Work::Knn {
        base: "product".into(),
        queries: "questions".into(),
        column: "vector".into(),
        k: 5,
        metric: Metric::L2,
    };
    let inputs = || vec![table("product", &product), table("questions", &questions)];
    let near = executors()
        .execute(
            &on(
                knn_work(),
                inputs(),
                dir.path().join("near-gpu"),
                amdahl_dags::DevicePreference::Gpu,
            ),
            &log,
        )
        .await
        .unwrap();
    assert_eq!(near.device.name(), "gpu", "{:?}", near.note);
    drop(log);
    let mut text = Vec::new();
    while let Some(line) = lines.recv().await {
        text.push(line.text);
    }
    assert!(
        text.iter()
            .any(|l| l.starts_with("reads `product` (20000 × 48) from device memory")),
        "{text:#?}"
    );
    run(knn_work(), inputs(), &dir.path().join("near-cpu"))
        .await
        .unwrap();
    let read = |d: &str| -> Vec<(i64, f32)> {
        batches(&dir.path().join(d))
            .iter()
            .flat_map(|b| {
                let n = b.column(2).as_primitive::<Int64Type>().clone();
                let s = b.column(3).as_primitive::<Float32Type>().clone();
                (0..b.num_rows())
                    .map(move |i| (n.value(i), s.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    for ((_, g), (_, c)) in read("near-gpu").iter().zip(read("near-cpu").iter()) {
        assert!((g - c).abs() <= 1e-3 * (1.0 + c.abs()), "{g} vs {c}");
    }
}
