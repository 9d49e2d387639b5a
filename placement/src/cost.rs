//! Profiles of machines and the roofline cost of a stage on a device.
//!
//! A stage's time on a device is the larger of its bytes ÷ the device's memory bandwidth and
//! its work ÷ the device's throughput for that kind of work, plus the device's fixed cost per
//! stage (launch, allocation). On a GPU it also pays the copy of what it reads from storage to
//! the device and the copy of its output back (outputs are always written to storage); what it
//! reads from a GPU stage of the same worker is already there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Kinds of work a stage does, each with its own throughput per device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Rows scanned and filtered.
    Scan,
    /// Rows aggregated.
    Aggregate,
    /// Rows joined (build + probe).
    Join,
    /// Rows sorted.
    Sort,
    /// Floating-point operations of matrix products.
    Gemm,
}

impl OpKind {
    pub const ALL: [OpKind; 5] = [
        OpKind::Scan,
        OpKind::Aggregate,
        OpKind::Join,
        OpKind::Sort,
        OpKind::Gemm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Scan => "scan",
            OpKind::Aggregate => "aggregate",
            OpKind::Join => "join",
            OpKind::Sort => "sort",
            OpKind::Gemm => "gemm",
        }
    }
}

/// What one device can do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceProfile {
    /// Bytes per second the device streams through memory.
    pub memory_bandwidth: f64,
    /// Units of work per second, per kind (rows, or flops for `gemm`).
    pub throughput: BTreeMap<OpKind, f64>,
    /// Seconds every stage pays on this device (launch, allocation, compilation when cached).
    pub fixed_seconds: f64,
}

/// A GPU: the device and its link to the host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuProfile {
    pub name: String,
    pub device: DeviceProfile,
    /// Host → device bytes per second (from pinned memory).
    pub host_to_device: f64,
    /// Device → host bytes per second.
    pub device_to_host: f64,
    /// Seconds every copy pays whatever its size.
    pub transfer_latency: f64,
    /// Device memory a stage may use.
    pub free_bytes: u64,
    /// Host → device bytes per second from ordinary (pageable) memory, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pageable_host_to_device: Option<f64>,
    /// Device → host bytes per second into pageable memory, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pageable_device_to_host: Option<f64>,
    /// Bytes per second the host prepares for a copy to the device (columns packed into the
    /// device's layout, then into pinned memory), when measured: a cost every byte sent pays
    /// beside the link itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_staging: Option<f64>,
}

/// A distributed SQL engine (a Ballista cluster) as a place: what its executors do together,
/// measured from this worker (`amdahl calibrate --ballista …`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterProfile {
    /// The cluster as workers name it: `standalone` or a scheduler's address.
    pub name: String,
    /// Its executors together: bytes per second they read from storage (`memory_bandwidth`),
    /// rows per second by kind, and what every query pays (planning, scheduling the job,
    /// starting its tasks).
    pub device: DeviceProfile,
    /// Bytes per second of results streamed back to the worker, which writes the output.
    pub result_bandwidth: f64,
}

/// A worker machine: its CPU and, if it has a usable one, its GPU; and the cluster it may hand
/// queries to, when one was measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub cpu: DeviceProfile,
    pub gpu: Option<GpuProfile>,
    /// A cluster placement may choose for `sql` stages; `None`: stages stay on this worker
    /// (an `engine: ballista` task is then priced as this CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterProfile>,
    /// Where the figures come from ("measured by amdahl calibrate on … at …", a spec sheet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Learned from runs: predicted times of stages whose main work is `kind` on `place` are
    /// multiplied by `factor` (see [`crate::learn`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub corrections: Vec<Correction>,
}

/// What observed times taught the model about one kind of work on one place: for every stage
/// of that kind (`class` `None`), or for those whose uncorrected prediction falls in one size
/// class (see [`class_of`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Correction {
    pub kind: OpKind,
    pub place: Place,
    /// Median of actual ÷ predicted over the samples.
    pub factor: f64,
    pub samples: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<i32>,
}

/// The size class of an uncorrected prediction: its half-decade (⌊2·log₁₀ seconds⌋), so
/// 1–3.16 ms is one class and 3.16–10 ms the next. The model's error is not the same at every
/// size (caches, staging, fixed costs), so learning keeps a correction per class beside the
/// one for the whole kind.
pub fn class_of(model_seconds: f64) -> Option<i32> {
    (model_seconds.is_finite() && model_seconds > 0.0)
        .then(|| (2.0 * model_seconds.log10()).floor() as i32)
}

impl Profile {
    /// The learned factor for a stage whose main work is `kind`, predicted by the model alone
    /// at `model_seconds` on `place`: the correction of its size class when runs taught one,
    /// else the kind's, else 1.
    pub fn factor(&self, kind: Option<OpKind>, place: Place, model_seconds: f64) -> f64 {
        let Some(kind) = kind else {
            return 1.0;
        };
        let class = class_of(model_seconds);
        let of = |class: Option<i32>| {
            self.corrections
                .iter()
                .find(|c| c.kind == kind && c.place == place && c.class == class)
        };
        class
            .and_then(|c| of(Some(c)))
            .or_else(|| of(None))
            .map_or(1.0, |c| c.factor)
    }
}

/// The kind of work that takes a stage longest on `device` (its compute terms compared);
/// `None` for a stage with no work.
pub fn main_kind(device: &DeviceProfile, stage: &StageWork) -> Option<OpKind> {
    stage
        .work
        .iter()
        .map(|(kind, amount)| {
            let rate = device.throughput.get(kind).copied().unwrap_or(0.0);
            let seconds = if rate > 0.0 {
                amount / rate
            } else {
                f64::INFINITY
            };
            (*kind, seconds)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(kind, _)| kind)
}

/// Where a stage may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// This worker's CPU.
    Cpu,
    /// This worker's GPU.
    Gpu,
    /// The cluster of the profile (a `sql` stage's query handed to Ballista).
    Cluster,
}

impl Place {
    /// How the state store writes it (`cpu`, `gpu`, `cluster`): the only text form of a
    /// device outside of messages.
    pub fn code(self) -> &'static str {
        match self {
            Place::Cpu => "cpu",
            Place::Gpu => "gpu",
            Place::Cluster => "cluster",
        }
    }

    /// The place a stored [`Place::code`] names.
    pub fn from_code(code: &str) -> Option<Place> {
        [Place::Cpu, Place::Gpu, Place::Cluster]
            .into_iter()
            .find(|p| p.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Place::Cpu => "CPU",
            Place::Gpu => "GPU",
            Place::Cluster => "cluster",
        }
    }
}

/// What the DAG says about a stage's place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    Free,
    /// `device: cpu`: this worker's CPU.
    Cpu,
    /// `device: gpu`.
    Gpu,
    /// `engine: ballista`: the cluster.
    Cluster,
}

/// A stage as the cost model sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct StageWork {
    pub id: String,
    /// Bytes it reads from storage (datasets, or outputs of CPU stages are counted on edges).
    pub storage_bytes: u64,
    /// Bytes it writes.
    pub output_bytes: u64,
    /// Bytes it streams through memory while working (at least what it reads).
    pub touched_bytes: u64,
    /// Work by kind.
    pub work: BTreeMap<OpKind, f64>,
    /// `Err(reason)` when the stage has no GPU implementation for its shape.
    pub gpu_support: Result<(), String>,
    /// `Err(reason)` when a cluster cannot run it (only single `sql` queries can).
    pub cluster_support: Result<(), String>,
    /// Device memory it needs on a GPU.
    pub device_bytes: u64,
    pub pin: Pin,
}

/// A stage's predicted time on the GPU, in parts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuTime {
    pub transfer_in: f64,
    pub compute: f64,
    pub transfer_out: f64,
}

impl GpuTime {
    pub fn total(&self) -> f64 {
        self.transfer_in + self.compute + self.transfer_out
    }
}

/// Roofline time of `work` touching `bytes` on `device`.
pub fn roofline(device: &DeviceProfile, bytes: u64, work: &BTreeMap<OpKind, f64>) -> f64 {
    let memory = bytes as f64 / device.memory_bandwidth;
    let compute: f64 = work
        .iter()
        .map(|(kind, amount)| match device.throughput.get(kind) {
            Some(rate) if *rate > 0.0 => amount / rate,
            _ => f64::INFINITY,
        })
        .sum();
    memory.max(compute) + device.fixed_seconds
}

/// Seconds to copy `bytes` to the GPU: preparing them on the host, then the link.
pub fn to_device(gpu: &GpuProfile, bytes: u64) -> f64 {
    if bytes == 0 {
        0.0
    } else {
        let staging = gpu
            .host_staging
            .filter(|rate| *rate > 0.0)
            .map_or(0.0, |rate| bytes as f64 / rate);
        gpu.transfer_latency + bytes as f64 / gpu.host_to_device + staging
    }
}

/// Seconds to copy `bytes` back to the host.
pub fn to_host(gpu: &GpuProfile, bytes: u64) -> f64 {
    if bytes == 0 {
        0.0
    } else {
        gpu.transfer_latency + bytes as f64 / gpu.device_to_host
    }
}

/// The stage on the CPU by the calibrated model alone (no learned correction).
pub fn cpu_model(profile: &Profile, stage: &StageWork) -> f64 {
    roofline(&profile.cpu, stage.touched_bytes, &stage.work)
}

/// The stage on the CPU.
pub fn cpu_time(profile: &Profile, stage: &StageWork) -> f64 {
    let model = cpu_model(profile, stage);
    model * profile.factor(main_kind(&profile.cpu, stage), Place::Cpu, model)
}

/// The stage on the GPU by the calibrated model alone (no learned correction), reading
/// `storage_bytes` from the host, or why it cannot go there.
pub fn gpu_model(profile: &Profile, stage: &StageWork) -> Result<GpuTime, String> {
    let Some(gpu) = &profile.gpu else {
        return Err("this machine has no usable GPU".into());
    };
    stage.gpu_support.clone()?;
    if stage.device_bytes > gpu.free_bytes {
        return Err(format!(
            "needs {} MiB of device memory, {} MiB free",
            stage.device_bytes >> 20,
            gpu.free_bytes >> 20
        ));
    }
    // Work the GPU profile has no rate for (a measured profile holds only what calibration
    // runs on the device) is what the GPU path does on the host, such as sorting the few
    // aggregated rows: it is priced at the CPU's rate.
    let mut device = gpu.device.clone();
    for (kind, rate) in &profile.cpu.throughput {
        device.throughput.entry(*kind).or_insert(*rate);
    }
    Ok(GpuTime {
        transfer_in: to_device(gpu, stage.storage_bytes),
        compute: roofline(&device, stage.touched_bytes, &stage.work),
        transfer_out: to_host(gpu, stage.output_bytes),
    })
}

/// The stage on the GPU, or why it cannot go there.
pub fn gpu_time(profile: &Profile, stage: &StageWork) -> Result<GpuTime, String> {
    let model = gpu_model(profile, stage)?;
    let factor = profile.factor(main_kind(&profile.cpu, stage), Place::Gpu, model.total());
    Ok(GpuTime {
        transfer_in: model.transfer_in * factor,
        compute: model.compute * factor,
        transfer_out: model.transfer_out * factor,
    })
}

/// The stage on the profile's cluster by the calibrated model alone, or why it cannot go
/// there: its fixed cost, the roofline of its work on the executors (reading its inputs from
/// storage), and its result streamed back to the worker.
pub fn cluster_model(profile: &Profile, stage: &StageWork) -> Result<f64, String> {
    let Some(cluster) = &profile.cluster else {
        return Err("no cluster is configured for placement".into());
    };
    stage.cluster_support.clone()?;
    let result = if cluster.result_bandwidth > 0.0 {
        stage.output_bytes as f64 / cluster.result_bandwidth
    } else {
        0.0
    };
    Ok(roofline(&cluster.device, stage.touched_bytes, &stage.work) + result)
}

/// The stage on the profile's cluster, or why it cannot go there.
pub fn cluster_time(profile: &Profile, stage: &StageWork) -> Result<f64, String> {
    let model = cluster_model(profile, stage)?;
    Ok(model * profile.factor(main_kind(&profile.cpu, stage), Place::Cluster, model))
}

/// The learned factors [`cpu_time`] and [`gpu_time`] include for `stage` (CPU, GPU); 1 where
/// nothing was learned or the stage cannot run there.
pub fn factors(profile: &Profile, stage: &StageWork) -> (f64, f64) {
    let kind = main_kind(&profile.cpu, stage);
    let cpu = profile.factor(kind, Place::Cpu, cpu_model(profile, stage));
    let gpu =
        gpu_model(profile, stage).map_or(1.0, |g| profile.factor(kind, Place::Gpu, g.total()));
    (cpu, gpu)
}

/// The input size from which a bandwidth-bound stage of `kind` (one unit of work per
/// `bytes_per_unit` bytes, reading all of it from storage, writing nothing) is faster on the
/// GPU: found by bisection on the model. `None` when it never is (within 1 PB).
pub fn crossover_bytes(profile: &Profile, kind: OpKind, bytes_per_unit: f64) -> Option<u64> {
    let stage = |bytes: u64| StageWork {
        id: "probe".into(),
        storage_bytes: bytes,
        output_bytes: 0,
        touched_bytes: bytes,
        work: BTreeMap::from([(kind, bytes as f64 / bytes_per_unit)]),
        gpu_support: Ok(()),
        cluster_support: Err("a probe".into()),
        device_bytes: 0,
        pin: Pin::Free,
    };
    let gpu_wins = |bytes: u64| {
        gpu_time(profile, &stage(bytes)).is_ok_and(|g| g.total() < cpu_time(profile, &stage(bytes)))
    };
    let (mut lo, mut hi) = (1u64, 1u64 << 50);
    if !gpu_wins(hi) {
        return None;
    }
    if gpu_wins(lo) {
        return Some(lo);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if gpu_wins(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}
