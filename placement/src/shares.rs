//! Shards: one task's input split into parts that the CPU and the GPU work through side by
//! side, sized so that both finish at about the same time.
//!
//! A [`Lane`] is a device taking parts one after another. A part costs the lane a fixed time
//! (the device's cost per stage, paid again by every part) plus the part's share of what the
//! whole input would take there beyond that fixed cost. [`share`] hands the parts out largest
//! first, each to the lane that would finish it earliest (the "longest processing time first"
//! rule for machines of different speeds): with equal parts and two lanes this is the best
//! split there is, and in general the last lane finishes at most one part after the best.

use crate::cost::Place;
use crate::describe::Placement;

/// A device that takes parts one after another.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lane {
    pub place: Place,
    /// Paid by every part.
    pub per_part_seconds: f64,
    /// The whole input beyond the fixed cost; a part pays its fraction of this.
    pub whole_seconds: f64,
}

impl Lane {
    /// What a part holding `fraction` of the input costs on this lane.
    pub fn part_seconds(&self, fraction: f64) -> f64 {
        self.per_part_seconds + fraction * self.whole_seconds
    }
}

/// The lanes a placed task's shards can use: the CPU always, the GPU when the task can run
/// there. The prediction's fixed costs are paid per part, the rest shared out.
pub fn lanes(placement: &Placement) -> Vec<Lane> {
    lanes_from(
        (placement.cpu_seconds, placement.cpu_fixed_seconds),
        placement
            .gpu_seconds
            .map(|gpu| (gpu, placement.gpu_fixed_seconds)),
    )
}

/// Lanes from whole-input predictions: (total seconds, fixed seconds per stage) on the CPU
/// and, when the task can run there, on the GPU.
pub fn lanes_from(cpu: (f64, f64), gpu: Option<(f64, f64)>) -> Vec<Lane> {
    let lane = |place, (total, fixed): (f64, f64)| Lane {
        place,
        per_part_seconds: fixed.min(total),
        whole_seconds: (total - fixed).max(0.0),
    };
    let mut lanes = Vec::new();
    if cpu.0.is_finite() {
        lanes.push(lane(Place::Cpu, cpu));
    }
    if let Some(gpu) = gpu.filter(|(total, _)| total.is_finite()) {
        lanes.push(lane(Place::Gpu, gpu));
    }
    lanes
}

/// Which lane takes each part, and when each lane is predicted to finish.
#[derive(Clone, Debug, PartialEq)]
pub struct Shares {
    /// Per part (in the order given): the index of its lane.
    pub lane_of: Vec<usize>,
    /// Per lane: the predicted seconds of its parts together.
    pub finish: Vec<f64>,
}

impl Shares {
    /// The predicted time of the whole task: the last lane to finish.
    pub fn makespan(&self) -> f64 {
        self.finish.iter().copied().fold(0.0, f64::max)
    }

    /// How many parts each lane takes.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.finish.len()];
        for &lane in &self.lane_of {
            counts[lane] += 1;
        }
        counts
    }
}

/// Gives each part (its size in bytes) to one of `lanes` so that the lanes finish at about
/// the same time. With no lanes every part goes to lane 0 (the caller's only choice).
pub fn share(parts: &[u64], lanes: &[Lane]) -> Shares {
    let total: u64 = parts.iter().sum();
    let fraction = |bytes: u64| {
        if total == 0 {
            1.0 / parts.len().max(1) as f64
        } else {
            bytes as f64 / total as f64
        }
    };
    let mut finish = vec![0.0; lanes.len().max(1)];
    let mut lane_of = vec![0; parts.len()];
    if lanes.is_empty() {
        return Shares { lane_of, finish };
    }
    let mut order: Vec<usize> = (0..parts.len()).collect();
    // Largest first; equal sizes keep their order, so the result is deterministic.
    order.sort_by(|&a, &b| parts[b].cmp(&parts[a]).then(a.cmp(&b)));
    for part in order {
        let f = fraction(parts[part]);
        let (best, done) = lanes
            .iter()
            .enumerate()
            .map(|(i, lane)| (i, finish[i] + lane.part_seconds(f)))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
            .expect("lanes is not empty");
        lane_of[part] = best;
        finish[best] = done;
    }
    Shares { lane_of, finish }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(place: Place, per_part: f64, whole: f64) -> Lane {
        Lane {
            place,
            per_part_seconds: per_part,
            whole_seconds: whole,
        }
    }

    /// The best makespan over every way of giving the parts to the lanes.
    fn best(parts: &[u64], lanes: &[Lane]) -> f64 {
        let total: u64 = parts.iter().sum();
        let mut best = f64::INFINITY;
        let ways = lanes.len().pow(parts.len() as u32);
        for mut code in 0..ways {
            let mut finish = vec![0.0; lanes.len()];
            for &bytes in parts {
                let l = code % lanes.len();
                code /= lanes.len();
                finish[l] += lanes[l].part_seconds(bytes as f64 / total as f64);
            }
            best = best.min(finish.iter().copied().fold(0.0, f64::max));
        }
        best
    }

    #[test]
    fn a_gpu_three_times_faster_takes_three_parts_in_four() {
        let lanes = [lane(Place::Cpu, 0.0, 3.0), lane(Place::Gpu, 0.0, 1.0)];
        let shares = share(&[100; 8], &lanes);
        assert_eq!(shares.counts(), vec![2, 6]);
        assert!((shares.finish[0] - 0.75).abs() < 1e-12, "{shares:?}");
        assert!((shares.finish[1] - 0.75).abs() < 1e-12, "{shares:?}");
    }

    #[test]
    fn a_fixed_cost_per_part_keeps_small_parts_off_the_slow_starter() {
        // The GPU is ten times faster over the whole input but pays 1 s per part: with ten
        // parts of 0.1 s CPU work each, the CPU does them all.
        let lanes = [lane(Place::Cpu, 0.0, 1.0), lane(Place::Gpu, 1.0, 0.1)];
        let shares = share(&[10; 10], &lanes);
        assert_eq!(shares.counts(), vec![10, 0]);
    }

    #[test]
    fn equal_parts_on_two_lanes_get_the_best_split() {
        for cpu in [0.5, 1.0, 2.0, 7.0] {
            for gpu_fixed in [0.0, 0.05, 0.3] {
                for n in 1..=9 {
                    let lanes = [
                        lane(Place::Cpu, 0.01, cpu),
                        lane(Place::Gpu, gpu_fixed, 1.0),
                    ];
                    let parts = vec![64; n];
                    let got = share(&parts, &lanes).makespan();
                    let want = best(&parts, &lanes);
                    assert!(
                        (got - want).abs() < 1e-9,
                        "cpu {cpu}, gpu fixed {gpu_fixed}, {n} parts: {got} vs best {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn unequal_parts_finish_within_one_part_of_the_best() {
        let mut seed = 7u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let n = 1 + (next() % 7) as usize;
            let parts: Vec<u64> = (0..n).map(|_| 1 + next() % 1000).collect();
            let lanes = [
                lane(
                    Place::Cpu,
                    (next() % 10) as f64 / 100.0,
                    1.0 + (next() % 40) as f64 / 10.0,
                ),
                lane(Place::Gpu, (next() % 10) as f64 / 100.0, 1.0),
            ];
            let got = share(&parts, &lanes).makespan();
            let total: u64 = parts.iter().sum();
            let largest = lanes
                .iter()
                .map(|l| l.part_seconds(*parts.iter().max().unwrap() as f64 / total as f64))
                .fold(0.0, f64::max);
            let want = best(&parts, &lanes);
            assert!(
                got >= want - 1e-9 && got <= want + largest + 1e-9,
                "{parts:?}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn lanes_come_from_the_placement() {
        let placement = Placement {
            place: Place::Gpu,
            cpu_seconds: 4.0,
            gpu_seconds: Some(1.5),
            cluster_seconds: None,
            reason: String::new(),
            kind: None,
            cpu_factor: 1.0,
            gpu_factor: 1.0,
            cpu_fixed_seconds: 0.001,
            gpu_fixed_seconds: 0.5,
        };
        let lanes = lanes(&placement);
        assert_eq!(lanes.len(), 2);
        assert_eq!(lanes[1].part_seconds(1.0), 1.5);
        assert_eq!(lanes[1].part_seconds(0.5), 1.0);
        let cpu_only = Placement {
            gpu_seconds: None,
            cluster_seconds: None,
            ..placement
        };
        assert_eq!(self::lanes(&cpu_only).len(), 1);
    }

    #[test]
    fn no_lanes_or_no_parts_are_not_a_panic() {
        assert_eq!(share(&[1, 2], &[]).lane_of, vec![0, 0]);
        assert_eq!(share(&[], &[lane(Place::Cpu, 0.0, 1.0)]).makespan(), 0.0);
        let zero = share(&[0, 0], &[lane(Place::Cpu, 0.0, 1.0)]);
        assert_eq!(zero.counts(), vec![2]);
    }
}
