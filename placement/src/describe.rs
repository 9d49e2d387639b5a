//! Placement decisions in words, for `amdahl explain`, task logs and `runs show`.

use crate::assign::Priced;
use crate::cost::{OpKind, Place};

/// Why a stage priced `p` goes to `place` (copies from CPU upstreams already in `p.gpu`).
pub fn why(p: &Priced, place: Place) -> String {
    match (&p.gpu, place) {
        (_, Place::Cluster) => {
            let (cpu, gpu) = (p.on(Place::Cpu), p.on(Place::Gpu));
            if cpu.min(gpu).is_infinite() {
                "`engine: ballista`".into()
            } else {
                let than = if cpu <= gpu { "the CPU" } else { "the GPU" };
                format!("{:.1}× faster than {than}", cpu.min(gpu) / p.on(place))
            }
        }
        (Err(reason), _) if p.cpu.is_infinite() => format!("cannot run: {reason}"),
        (Err(reason), _) => match &p.cluster {
            Ok(cluster) if p.cpu <= *cluster => format!(
                "{:.1}× faster than the cluster; GPU not possible: {reason}",
                cluster / p.cpu
            ),
            _ => format!("GPU not possible: {reason}"),
        },
        (Ok(_), Place::Gpu) if p.cpu.is_infinite() => "pinned (device: gpu)".into(),
        (Ok(g), Place::Gpu) => {
            if g.total() <= p.cpu {
                format!("{:.1}× faster than the CPU", p.cpu / g.total())
            } else {
                "its input is already on the GPU".into()
            }
        }
        (Ok(g), Place::Cpu) => {
            if p.cpu <= g.total() {
                format!("{:.1}× faster than the GPU", g.total() / p.cpu)
            } else {
                "moving its input to the GPU costs more than it saves".into()
            }
        }
    }
}

/// A duration for people: µs, ms or s; `∞` for an impossible one.
pub fn seconds(s: f64) -> String {
    if !s.is_finite() {
        "∞".into()
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

/// Where one task runs, decided just before it runs (by the executors, with the whole DAG priced), and what
/// the decision rests on.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    pub place: Place,
    /// Predicted seconds on the CPU (infinite when it cannot run there).
    pub cpu_seconds: f64,
    /// Predicted seconds on the GPU, copies in and out included; `None` when it cannot run
    /// there.
    pub gpu_seconds: Option<f64>,
    /// Predicted seconds on the profile's cluster; `None` when it cannot run there (or there
    /// is none).
    pub cluster_seconds: Option<f64>,
    /// One line: the prediction and why.
    pub reason: String,
    /// The stage's main kind of work, and the learned factors the predictions include (for
    /// learning from this attempt: the model's own prediction is the predicted ÷ factor).
    pub kind: Option<OpKind>,
    pub cpu_factor: f64,
    pub gpu_factor: f64,
    /// Each device's fixed cost per stage (in the predictions above), paid again by every
    /// shard of a split task (see [`crate::shares`]).
    pub cpu_fixed_seconds: f64,
    pub gpu_fixed_seconds: f64,
}
