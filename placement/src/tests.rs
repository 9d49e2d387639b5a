//! Deterministic tests with synthetic profiles.

use std::collections::BTreeMap;

use crate::*;

/// A laptop-ish CPU and an H100-ish GPU: bandwidths in bytes/s, throughputs in rows/s (flop/s
/// for gemm).
fn profile() -> Profile {
    let cpu = DeviceProfile {
        memory_bandwidth: 20e9,
        throughput: BTreeMap::from([
            (OpKind::Scan, 2e9),
            (OpKind::Aggregate, 5e8),
            (OpKind::Join, 1e8),
            (OpKind::Sort, 1e8),
            (OpKind::Gemm, 1e11),
        ]),
        fixed_seconds: 1e-4,
    };
    let gpu = GpuProfile {
        name: "synthetic".into(),
        device: DeviceProfile {
            memory_bandwidth: 2e12,
            throughput: BTreeMap::from([
                (OpKind::Scan, 1e11),
                (OpKind::Aggregate, 5e10),
                (OpKind::Join, 1e10),
                (OpKind::Sort, 1e10),
                (OpKind::Gemm, 5e13),
            ]),
            fixed_seconds: 2e-3,
        },
        host_to_device: 25e9,
        device_to_host: 25e9,
        transfer_latency: 1e-5,
        free_bytes: 64 << 30,
        pageable_host_to_device: None,
        pageable_device_to_host: None,
        host_staging: None,
    };
    Profile {
        cpu,
        gpu: Some(gpu),
        cluster: None,
        source: None,
        corrections: Vec::new(),
    }
}

/// [`profile`] with a cluster of many CPUs behind it: ten times the CPU's rates, but 0.5 s of
/// fixed cost per query and results back at 1 GB/s.
fn with_cluster() -> Profile {
    let mut p = profile();
    let mut device = p.cpu.clone();
    device.memory_bandwidth *= 10.0;
    for rate in device.throughput.values_mut() {
        *rate *= 10.0;
    }
    device.fixed_seconds = 0.5;
    p.cluster = Some(ClusterProfile {
        name: "df://scheduler:50050".into(),
        device,
        result_bandwidth: 1e9,
    });
    p
}

fn stage(id: &str, bytes: u64, work: &[(OpKind, f64)]) -> StageWork {
    StageWork {
        id: id.into(),
        storage_bytes: bytes,
        output_bytes: bytes / 10,
        touched_bytes: bytes,
        work: work.iter().copied().collect(),
        gpu_support: Ok(()),
        cluster_support: Ok(()),
        device_bytes: bytes,
        pin: Pin::Free,
    }
}

/// A bandwidth-bound stage (a scan of 8-byte rows, reading everything from storage, writing
/// nothing): per byte it costs the slower of memory and scan throughput on the CPU, and on the
/// GPU the copy plus the slower of the two there. The crossover is where the GPU's extra fixed
/// costs are paid back: (f_gpu + latency − f_cpu) ÷ (per byte on the CPU − per byte on the GPU).
#[test]
fn the_crossover_of_a_bandwidth_bound_stage_is_the_analytic_one() {
    let p = profile();
    let gpu = p.gpu.clone().unwrap();
    let per_byte = |d: &DeviceProfile| {
        (1.0 / d.memory_bandwidth).max(1.0 / (d.throughput[&OpKind::Scan] * 8.0))
    };
    let per_byte_cpu = per_byte(&p.cpu);
    let per_byte_gpu = 1.0 / gpu.host_to_device + per_byte(&gpu.device);
    let fixed = gpu.device.fixed_seconds + gpu.transfer_latency - p.cpu.fixed_seconds;
    let analytic = fixed / (per_byte_cpu - per_byte_gpu);
    let found = crossover_bytes(&p, OpKind::Scan, 8.0).expect("the GPU wins at some size") as f64;
    assert!(
        (found - analytic).abs() <= 1.0 + analytic * 1e-9,
        "crossover {found} vs analytic {analytic}"
    );
    // With CPU memory faster than the link, the GPU never wins a pure scan.
    let mut fast_cpu = p.clone();
    fast_cpu.cpu.memory_bandwidth = 30e9;
    fast_cpu.cpu.throughput.insert(OpKind::Scan, 1e10);
    assert_eq!(crossover_bytes(&fast_cpu, OpKind::Scan, 8.0), None);
}

#[test]
fn pins_unsupported_stages_and_memory_limits_are_respected() {
    let p = profile();
    let big = 1u64 << 32;
    let mut pinned_cpu = stage("pinned_cpu", big, &[(OpKind::Join, 1e9)]);
    pinned_cpu.pin = Pin::Cpu;
    let mut unsupported = stage("udf", big, &[(OpKind::Join, 1e9)]);
    unsupported.gpu_support = Err("ScalarFunctionExpr: the expression `my_udf(x)`".into());
    let mut too_big = stage("huge", big, &[(OpKind::Join, 1e9)]);
    too_big.device_bytes = 128 << 30;
    let mut pinned_gpu = stage("tiny", 10, &[(OpKind::Scan, 1.0)]);
    pinned_gpu.pin = Pin::Gpu;
    let free = stage("join", big, &[(OpKind::Join, 1e9)]);
    let graph = Graph {
        stages: vec![pinned_cpu, unsupported, too_big, pinned_gpu, free],
        edges: vec![],
    };
    let chosen = min_cut(&p, &graph);
    assert_eq!(
        chosen.places,
        [Place::Cpu, Place::Cpu, Place::Cpu, Place::Gpu, Place::Gpu],
        "pins, support and memory decide; the free join goes to the faster GPU"
    );
    let priced = price(&p, &graph);
    assert_eq!(
        priced[2].gpu.as_ref().unwrap_err(),
        "needs 131072 MiB of device memory, 65536 MiB free"
    );
    // No GPU at all: everything on the CPU, and a GPU pin makes the DAG impossible.
    let cpu_only = Profile {
        gpu: None,
        ..profile()
    };
    let chosen = min_cut(&cpu_only, &graph);
    assert!(chosen.places[..3].iter().all(|p| *p == Place::Cpu));
    assert!(
        chosen.total.is_infinite(),
        "a GPU pin on a GPU-less machine"
    );
}

/// A chain built to trap per-stage choice: a load that is cheap on the CPU, then joins that
/// are cheaper on the GPU only when their 8 GB input is already there (with the copy in, they
/// are dearer). Greedy keeps the load on the CPU and then every join with it; the cut pays
/// one copy and runs every join on the GPU.
#[test]
fn greedy_loses_to_the_minimum_cut_on_a_ping_pong_dag() {
    let p = profile();
    let bytes = 8u64 << 30;
    let mut first = stage("load", 1 << 20, &[(OpKind::Scan, 1.0)]);
    first.output_bytes = bytes;
    let mut stages = vec![first];
    for i in 1..=8 {
        let mut s = stage(&format!("join{i}"), 0, &[(OpKind::Join, 5e7)]);
        s.touched_bytes = bytes;
        s.output_bytes = bytes;
        s.device_bytes = bytes;
        stages.push(s);
    }
    let edges = (0..stages.len() - 1)
        .map(|i| (i, i + 1, stages[i].output_bytes))
        .collect();
    let graph = Graph { stages, edges };
    let cut = min_cut(&p, &graph);
    let greedy = greedy(&p, &graph);
    let best = brute_force(&p, &graph);
    assert!((cut.total - best.total).abs() < 1e-9, "{cut:?} vs {best:?}");
    assert!(
        greedy.places.iter().all(|p| *p == Place::Cpu),
        "greedy never moves the data: {:?}",
        greedy.places
    );
    assert!(
        cut.places[1..].iter().all(|p| *p == Place::Gpu),
        "{:?}",
        cut.places
    );
    assert!(
        greedy.total > cut.total + 0.5,
        "greedy {:.3} s vs min cut {:.3} s",
        greedy.total,
        cut.total
    );
}

/// SplitMix64 for the random DAGs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random DAG of 1 to `max_stages` stages of the given kinds, inputs up to 2^`bytes_bits`
/// bytes, random pins and unsupported stages; with `cluster`, pins to and stages unsupported
/// by a cluster too.
fn random_graph(
    rng: &mut Rng,
    max_stages: u64,
    kinds: &[OpKind],
    bytes_bits: u64,
    cluster: bool,
) -> Graph {
    let n = 1 + rng.below(max_stages) as usize;
    let stages: Vec<StageWork> = (0..n)
        .map(|i| {
            let bytes = 1u64 << rng.below(bytes_bits);
            let kind = kinds[rng.below(kinds.len() as u64) as usize];
            let mut s = stage(&format!("s{i}"), bytes, &[(kind, (bytes / 8) as f64)]);
            s.storage_bytes = if rng.below(2) == 0 { 0 } else { bytes };
            s.output_bytes = 1u64 << rng.below(34);
            s.pin = match rng.below(if cluster { 12 } else { 10 }) {
                0 => Pin::Cpu,
                1 => Pin::Gpu,
                2 if cluster => Pin::Cluster,
                _ => Pin::Free,
            };
            if rng.below(8) == 0 {
                s.gpu_support = Err("unsupported".into());
            }
            if cluster && rng.below(6) == 0 {
                s.cluster_support = Err("not a query".into());
            }
            s
        })
        .collect();
    let mut edges = Vec::new();
    for v in 1..n {
        for (u, upstream) in stages[..v].iter().enumerate() {
            if rng.below(3) == 0 {
                edges.push((u, v, upstream.output_bytes >> rng.below(3)));
            }
        }
    }
    Graph { stages, edges }
}

/// The minimum cut of `graph` costs what the best of every assignment costs, and the greedy
/// choice no less; returns the cut, or `None` when no assignment is possible (then neither
/// is the cut).
fn assert_cut_is_best(p: &Profile, graph: &Graph, seed: u64) -> Option<Assignment> {
    let cut = min_cut(p, graph);
    let best = brute_force(p, graph);
    if best.total.is_infinite() {
        assert!(cut.total.is_infinite(), "seed {seed}");
        return None;
    }
    assert!(
        (cut.total - best.total).abs() <= 1e-9 * best.total.max(1.0),
        "seed {seed}: cut {} vs brute force {}",
        cut.total,
        best.total
    );
    let greedy = greedy(p, graph);
    assert!(
        greedy.total >= best.total - 1e-9 * best.total.max(1.0),
        "seed {seed}"
    );
    Some(cut)
}

#[test]
fn the_minimum_cut_equals_brute_force_on_random_small_dags() {
    let p = profile();
    let kinds = OpKind::ALL;
    for seed in 0..300 {
        let graph = random_graph(&mut Rng(seed), 10, &kinds, 36, false);
        assert_cut_is_best(&p, &graph, seed);
    }
}

/// A measured GPU profile holds rates only for what calibration ran on the device; other work
/// in a GPU stage (sorting the aggregated rows, done on the host) costs what it costs on the
/// CPU, not an infinite time.
#[test]
fn work_without_a_gpu_rate_is_priced_at_the_cpu_rate() {
    let mut measured = profile();
    let gpu = measured.gpu.as_mut().unwrap();
    gpu.device.throughput.remove(&OpKind::Sort);
    let work = stage("q", 1 << 20, &[(OpKind::Scan, 1e5), (OpKind::Sort, 1e6)]);
    let with_rate = gpu_time(&profile(), &work).unwrap().compute;
    let without = gpu_time(&measured, &work).unwrap().compute;
    assert!(without.is_finite());
    // The sort now takes 1e6 / 1e8 s (the CPU's rate) instead of 1e6 / 1e10 s.
    let expected = with_rate - 1e6 / 1e10 + 1e6 / 1e8;
    assert!(
        (without - expected).abs() < 1e-12,
        "{without} vs {expected}"
    );
}

/// Learning: the model is off by a different factor at different sizes; after runs of two
/// sizes each size is predicted at what it took (its size class's median), a size never seen
/// gets the kind's median, the other place and kinds are untouched, and learning again from
/// the corrected predictions (÷ the factor they included) gives the same corrections instead
/// of compounding them.
#[test]
fn learning_corrects_each_size_class_and_converges() {
    let base = profile();
    let small = stage("small", 1 << 20, &[(OpKind::Scan, 1e4)]);
    let large = stage("large", 1 << 32, &[(OpKind::Scan, 4e7)]);
    let (small_model, large_model) = (cpu_time(&base, &small), cpu_time(&base, &large));
    assert_ne!(
        cost::class_of(small_model),
        cost::class_of(large_model),
        "{small_model} s and {large_model} s should fall in different classes"
    );
    // Small stages take 3× the model (fixed costs), large ones half (the CPU streams faster
    // than calibration said); one odd slow run among the small ones.
    let mut observations = Vec::new();
    for (model, actual) in [
        (small_model, 3.0 * small_model),
        (small_model, 3.1 * small_model),
        (small_model, 40.0 * small_model),
        (large_model, 0.5 * large_model),
        (large_model, 0.52 * large_model),
    ] {
        observations.push(Observation {
            kind: OpKind::Scan,
            place: Place::Cpu,
            model,
            actual,
        });
    }
    let taught = learned(&base, &observations);
    let close = |a: f64, b: f64| (a / b - 1.0).abs() < 1e-9;
    assert!(close(cpu_time(&taught, &small), 3.1 * small_model));
    assert!(close(cpu_time(&taught, &large), 0.51 * large_model));
    // A size between the two: the kind's median over all five runs (3.0 × its model).
    let middle = stage("middle", 1 << 26, &[(OpKind::Scan, 6e5)]);
    let middle_model = cpu_time(&base, &middle);
    assert!(
        ![small_model, large_model]
            .iter()
            .any(|m| cost::class_of(*m) == cost::class_of(middle_model))
    );
    assert!(close(cpu_time(&taught, &middle), 3.0 * middle_model));
    // The GPU and other kinds learned nothing.
    assert_eq!(gpu_time(&taught, &small), gpu_time(&base, &small));
    let join = stage("join", 1 << 20, &[(OpKind::Join, 1e4)]);
    assert_eq!(cpu_time(&taught, &join), cpu_time(&base, &join));
    // The factors a prediction includes, and learning from corrected predictions.
    let (factor, gpu_factor) = cost::factors(&taught, &small);
    assert!(close(factor, 3.1) && gpu_factor == 1.0);
    let again: Vec<Observation> = observations
        .iter()
        .map(|o| {
            let predicted = o.model * taught.factor(Some(o.kind), o.place, o.model);
            let factor = taught.factor(Some(o.kind), o.place, o.model);
            Observation {
                model: predicted / factor,
                ..*o
            }
        })
        .collect();
    assert_eq!(learned(&taught, &again).corrections, taught.corrections);
    // One absurd sample is bounded; the description names the kind's factor and the classes.
    let absurd = learned(
        &base,
        &[Observation {
            kind: OpKind::Scan,
            place: Place::Gpu,
            model: 1e-6,
            actual: 1e3,
        }],
    );
    assert!(absurd.corrections.iter().all(|c| c.factor == learn::BOUND));
    assert_eq!(
        learn::describe(&taught.corrections),
        vec!["scan on the CPU ×3.00 (5 runs; by size ×0.51 … ×3.10 in 2 classes)".to_string()]
    );
}

/// With a cluster the assignment is over three places; the cut stays exact (edges only care
/// whether a stage is on the GPU), checked against every assignment of small random DAGs.
#[test]
fn with_a_cluster_the_minimum_cut_equals_brute_force_over_three_places() {
    let p = with_cluster();
    let kinds = [OpKind::Scan, OpKind::Aggregate, OpKind::Join, OpKind::Sort];
    let mut clustered = 0;
    for seed in 0..300 {
        let graph = random_graph(&mut Rng(seed), 7, &kinds, 38, true);
        let Some(cut) = assert_cut_is_best(&p, &graph, seed) else {
            continue;
        };
        for (stage, place) in graph.stages.iter().zip(&cut.places) {
            if *place == Place::Cluster {
                clustered += 1;
                assert!(stage.cluster_support.is_ok(), "seed {seed}");
                assert!(matches!(stage.pin, Pin::Free | Pin::Cluster), "seed {seed}");
            }
            if stage.pin == Pin::Cluster {
                assert_eq!(*place, Place::Cluster, "seed {seed}");
            }
        }
    }
    assert!(clustered > 50, "the cluster won only {clustered} stages");
}

/// The cluster is a place only when the profile has one: without it, nothing but an
/// `engine: ballista` stage goes there (priced as this CPU); with it, a large join that the
/// CPU takes minutes over goes to the cluster, a small query (which the cluster's fixed cost
/// would dominate) stays, and `device: cpu` keeps a stage on this worker whatever it costs.
#[test]
fn the_cluster_is_chosen_only_when_configured_and_cheaper() {
    let big = stage("big", 64 << 30, &[(OpKind::Join, 8e9)]);
    let small = stage("small", 1 << 20, &[(OpKind::Scan, 1e5)]);
    let mut pinned_cpu = big.clone();
    pinned_cpu.id = "pinned_cpu".into();
    pinned_cpu.pin = Pin::Cpu;
    let mut ballista = small.clone();
    ballista.id = "ballista".into();
    ballista.pin = Pin::Cluster;
    let mut shell = big.clone();
    shell.id = "shell".into();
    shell.gpu_support = Err("a shell command".into());
    shell.cluster_support = Err("a shell command".into());
    let graph = Graph {
        stages: vec![big, small, pinned_cpu, ballista, shell],
        edges: vec![],
    };
    let mut no_gpu = profile();
    no_gpu.gpu = None;
    let alone = min_cut(&no_gpu, &graph);
    assert_eq!(
        alone.places,
        [
            Place::Cpu,
            Place::Cpu,
            Place::Cpu,
            Place::Cluster,
            Place::Cpu
        ]
    );
    let priced = price(&no_gpu, &graph);
    assert_eq!(priced[3].cluster, Ok(priced[1].cpu), "priced as this CPU");

    let mut configured = with_cluster();
    configured.gpu = None;
    let chosen = min_cut(&configured, &graph);
    assert_eq!(
        chosen.places,
        [
            Place::Cluster,
            Place::Cpu,
            Place::Cpu,
            Place::Cluster,
            Place::Cpu
        ]
    );
    let priced = price(&configured, &graph);
    assert!(why(&priced[0], Place::Cluster).contains("faster than the CPU"));
    assert!(priced[1].cluster.as_ref().unwrap() > &0.5);
    assert_eq!(
        priced[4].cluster,
        Err("a shell command".to_string()),
        "what cannot run there says why"
    );
}
