//! Choosing CPU or GPU for every stage of a DAG at once.
//!
//! With two places and a transfer cost on each edge whose ends are placed apart, the
//! assignment of least total time is a minimum s–t cut (Stone, 1977): the source stands for the
//! CPU and the sink for the GPU; a stage's edge from the source costs its GPU time (cut when it
//! goes to the GPU), its edge to the sink its CPU time; an upstream → downstream edge costs the
//! host → device copy of the upstream's output, cut exactly when the upstream runs on the CPU
//! and the downstream on the GPU. (A GPU stage writes its output to storage anyway, so a GPU →
//! CPU edge costs nothing more; a GPU → GPU edge reads from device memory.) Pins and stages that
//! cannot go to the GPU get an infinite edge. The cut is found with Dinic's algorithm; this is
//! exact, and the tests check it against every assignment of small random DAGs.
//!
//! A cluster (see [`crate::cost::ClusterProfile`]) is a third place that keeps this exact: it
//! reads its inputs from storage and its output is written to storage like a CPU stage's, so
//! an edge costs the same whether its upstream ran on the CPU or the cluster. Only whether a
//! stage is on the GPU matters to the edges; off the GPU each stage takes the cheaper of the
//! CPU and the cluster, and the cut decides GPU or not with that price.

use std::collections::VecDeque;

use crate::cost::{
    GpuTime, Pin, Place, Profile, StageWork, cluster_time, cpu_time, gpu_time, to_device,
};

/// A DAG for placement: its stages and its data edges (upstream, downstream, bytes the
/// downstream reads of the upstream's output) by index.
#[derive(Clone, Debug)]
pub struct Graph {
    pub stages: Vec<StageWork>,
    pub edges: Vec<(usize, usize, u64)>,
}

/// The prices of one stage on each place.
#[derive(Clone, Debug, PartialEq)]
pub struct Priced {
    pub cpu: f64,
    /// The GPU time, or why the stage cannot go there.
    pub gpu: Result<GpuTime, String>,
    /// The cluster's time, or why the stage cannot go there.
    pub cluster: Result<f64, String>,
}

impl Priced {
    /// The stage's time on `place` (infinite where it cannot run).
    pub fn on(&self, place: Place) -> f64 {
        match place {
            Place::Cpu => self.cpu,
            Place::Gpu => self.gpu.as_ref().map_or(f64::INFINITY, GpuTime::total),
            Place::Cluster => *self.cluster.as_ref().unwrap_or(&f64::INFINITY),
        }
    }

    /// The cheaper place off the GPU (the CPU on a tie) and its time.
    pub fn off_gpu(&self) -> (Place, f64) {
        match self.cluster {
            Ok(cluster) if cluster < self.cpu => (Place::Cluster, cluster),
            _ => (Place::Cpu, self.cpu),
        }
    }
}

/// An assignment and its predicted total time.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    pub places: Vec<Place>,
    pub total: f64,
}

/// Large enough to never be cut, small enough to add up without overflow.
const NEVER: f64 = 1e30;

pub fn price(profile: &Profile, graph: &Graph) -> Vec<Priced> {
    graph
        .stages
        .iter()
        .map(|stage| Priced {
            cpu: match stage.pin {
                Pin::Free | Pin::Cpu => cpu_time(profile, stage),
                Pin::Gpu | Pin::Cluster => f64::INFINITY,
            },
            gpu: match stage.pin {
                Pin::Cpu => Err("pinned to the CPU (`device: cpu`)".into()),
                Pin::Cluster => Err("runs on the cluster (`engine: ballista`)".into()),
                Pin::Free | Pin::Gpu => gpu_time(profile, stage),
            },
            cluster: match stage.pin {
                Pin::Free => cluster_time(profile, stage),
                Pin::Cpu => Err("pinned to this worker's CPU (`device: cpu`)".into()),
                Pin::Gpu => Err("pinned to the GPU (`device: gpu`)".into()),
                // Without a measured cluster it is priced as this CPU.
                Pin::Cluster => stage.cluster_support.clone().map(|()| {
                    cluster_time(profile, stage).unwrap_or_else(|_| cpu_time(profile, stage))
                }),
            },
        })
        .collect()
}

/// The cost of an edge cut into the GPU (from the CPU or the cluster, through storage): copying
/// what the downstream reads to the device.
pub fn edge_cost(profile: &Profile, bytes: u64) -> f64 {
    profile
        .gpu
        .as_ref()
        .map_or(0.0, |gpu| to_device(gpu, bytes))
}

/// The total predicted time of an assignment (infinite when it breaks a pin or a limit).
pub fn total(profile: &Profile, graph: &Graph, priced: &[Priced], places: &[Place]) -> f64 {
    let mut sum = 0.0;
    for (p, place) in priced.iter().zip(places) {
        sum += p.on(*place);
    }
    for &(u, v, bytes) in &graph.edges {
        if places[u] != Place::Gpu && places[v] == Place::Gpu {
            sum += edge_cost(profile, bytes);
        }
    }
    sum
}

/// The assignment of least total time, exactly (minimum cut).
pub fn min_cut(profile: &Profile, graph: &Graph) -> Assignment {
    let priced = price(profile, graph);
    let n = graph.stages.len();
    let (source, sink) = (n, n + 1);
    let mut flow = Network::new(n + 2);
    let finite = |x: f64| if x.is_finite() { x.min(NEVER) } else { NEVER };
    for (i, p) in priced.iter().enumerate() {
        let gpu = p.gpu.as_ref().map_or(f64::INFINITY, GpuTime::total);
        flow.add(source, i, finite(gpu));
        flow.add(i, sink, finite(p.off_gpu().1));
    }
    for &(u, v, bytes) in &graph.edges {
        flow.add(u, v, finite(edge_cost(profile, bytes)));
    }
    flow.max_flow(source, sink);
    let cpu_side = flow.reachable(source);
    let places: Vec<Place> = (0..n)
        .map(|i| {
            if cpu_side[i] {
                priced[i].off_gpu().0
            } else {
                Place::Gpu
            }
        })
        .collect();
    let total = total(profile, graph, &priced, &places);
    Assignment { places, total }
}

/// Each stage on its cheapest place given where its upstreams already went (in the order of
/// `graph.stages`, which must be topological): the per-task choice most schedulers make.
pub fn greedy(profile: &Profile, graph: &Graph) -> Assignment {
    let priced = price(profile, graph);
    let mut places: Vec<Place> = Vec::with_capacity(graph.stages.len());
    for (i, p) in priced.iter().enumerate() {
        let copies: f64 = graph
            .edges
            .iter()
            .filter(|&&(u, v, _)| v == i && places[u] != Place::Gpu)
            .map(|&(_, _, bytes)| edge_cost(profile, bytes))
            .sum();
        let gpu = p.gpu.as_ref().map_or(f64::INFINITY, |g| g.total() + copies);
        let (off, off_seconds) = p.off_gpu();
        places.push(if gpu < off_seconds { Place::Gpu } else { off });
    }
    let total = total(profile, graph, &priced, &places);
    Assignment { places, total }
}

/// Every assignment over the CPU, the GPU and (when the profile has one) the cluster tried, for
/// tests and tiny DAGs: the least total.
pub fn brute_force(profile: &Profile, graph: &Graph) -> Assignment {
    let priced = price(profile, graph);
    let n = graph.stages.len();
    let choices: &[Place] = if profile.cluster.is_some() {
        &[Place::Cpu, Place::Gpu, Place::Cluster]
    } else {
        &[Place::Cpu, Place::Gpu]
    };
    let count = (choices.len() as u64).checked_pow(n as u32);
    assert!(
        count.is_some_and(|c| c <= 1 << 20),
        "brute force over {n} stages"
    );
    let mut best: Option<Assignment> = None;
    for code in 0..count.unwrap_or(0) {
        let mut rest = code;
        let places: Vec<Place> = (0..n)
            .map(|_| {
                let place = choices[(rest % choices.len() as u64) as usize];
                rest /= choices.len() as u64;
                place
            })
            .collect();
        let total = total(profile, graph, &priced, &places);
        if best.as_ref().is_none_or(|b| total < b.total) {
            best = Some(Assignment { places, total });
        }
    }
    best.expect("at least one assignment")
}

/// A flow network with `f64` capacities (Dinic's algorithm).
struct Network {
    /// Per node: edge indices.
    adjacent: Vec<Vec<usize>>,
    /// Edges as (to, residual capacity); edge `e ^ 1` is its reverse.
    edges: Vec<(usize, f64)>,
}

const EPS: f64 = 1e-12;

impl Network {
    fn new(nodes: usize) -> Self {
        Network {
            adjacent: vec![Vec::new(); nodes],
            edges: Vec::new(),
        }
    }

    fn add(&mut self, from: usize, to: usize, capacity: f64) {
        self.adjacent[from].push(self.edges.len());
        self.edges.push((to, capacity));
        self.adjacent[to].push(self.edges.len());
        self.edges.push((from, 0.0));
    }

    fn levels(&self, source: usize) -> Vec<Option<usize>> {
        let mut level = vec![None; self.adjacent.len()];
        level[source] = Some(0);
        let mut queue = VecDeque::from([source]);
        while let Some(node) = queue.pop_front() {
            for &e in &self.adjacent[node] {
                let (to, cap) = self.edges[e];
                if cap > EPS && level[to].is_none() {
                    level[to] = Some(level[node].expect("queued nodes have levels") + 1);
                    queue.push_back(to);
                }
            }
        }
        level
    }

    fn push(
        &mut self,
        node: usize,
        sink: usize,
        limit: f64,
        level: &[Option<usize>],
        next: &mut [usize],
    ) -> f64 {
        if node == sink {
            return limit;
        }
        while next[node] < self.adjacent[node].len() {
            let e = self.adjacent[node][next[node]];
            let (to, cap) = self.edges[e];
            if cap > EPS && level[to] == level[node].map(|l| l + 1) {
                let pushed = self.push(to, sink, limit.min(cap), level, next);
                if pushed > EPS {
                    self.edges[e].1 -= pushed;
                    self.edges[e ^ 1].1 += pushed;
                    return pushed;
                }
            }
            next[node] += 1;
        }
        0.0
    }

    fn max_flow(&mut self, source: usize, sink: usize) -> f64 {
        let mut total = 0.0;
        loop {
            let level = self.levels(source);
            if level[sink].is_none() {
                return total;
            }
            let mut next = vec![0; self.adjacent.len()];
            loop {
                let pushed = self.push(source, sink, f64::INFINITY, &level, &mut next);
                if pushed <= EPS {
                    break;
                }
                total += pushed;
            }
        }
    }

    /// Nodes reachable from `source` in the residual network: the source side of the cut.
    fn reachable(&self, source: usize) -> Vec<bool> {
        self.levels(source).iter().map(Option::is_some).collect()
    }
}
