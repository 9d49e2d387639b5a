//! Placement: where each stage of a DAG runs, chosen from measured costs for the whole DAG.
//!
//! [`cost`] holds machine profiles and the roofline model of a stage on a device and of a copy
//! between host and device; [`assign`] chooses CPU or GPU for every stage at once by a minimum
//! cut (exact), with the per-stage greedy choice and brute force beside it for comparison.
//! Nothing here measures or runs anything: profiles come from calibration (or a file), stage
//! sizes from the planner.

pub mod assign;
pub mod cost;
pub mod describe;
pub mod learn;
pub mod shares;

pub use assign::{Assignment, Graph, Priced, brute_force, edge_cost, greedy, min_cut, price};
pub use cost::{
    ClusterProfile, Correction, DeviceProfile, GpuProfile, GpuTime, OpKind, Pin, Place, Profile,
    StageWork, cluster_time, cpu_time, crossover_bytes, gpu_time, main_kind, roofline, to_device,
    to_host,
};
pub use describe::{Placement, seconds, why};
pub use learn::{Observation, learned};
pub use shares::{Lane, Shares, lanes, lanes_from, share};

#[cfg(test)]
mod tests;
