//! Learning from runs: each placed attempt leaves what the model predicted for the place it
//! ran on and what it took; per (main kind of work, place) the median of actual ÷ predicted
//! becomes a correction that later predictions are multiplied by. Medians shrug off the odd
//! slow attempt (a cold cache, a busy machine); a bound keeps one absurd sample from
//! ruling the model.

use std::collections::BTreeMap;

use crate::cost::{Correction, OpKind, Place, Profile};

/// One placed attempt: its main kind of work, where it ran, what the model predicted for it
/// there before any correction, and what it took (seconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    pub kind: OpKind,
    pub place: Place,
    pub model: f64,
    pub actual: f64,
}

/// Corrections stay within [1/BOUND, BOUND].
pub const BOUND: f64 = 100.0;

/// Per (kind, place): the median of actual ÷ model prediction. Learning from the uncorrected
/// predictions makes a correction converge instead of compounding.
pub fn corrections(observations: &[Observation]) -> Vec<Correction> {
    let mut ratios: BTreeMap<(OpKind, Place), Vec<f64>> = BTreeMap::new();
    for o in observations {
        if o.model.is_finite() && o.model > 0.0 && o.actual.is_finite() && o.actual > 0.0 {
            ratios
                .entry((o.kind, o.place))
                .or_default()
                .push(o.actual / o.model);
        }
    }
    ratios
        .into_iter()
        .map(|((kind, place), mut r)| {
            r.sort_by(|a, b| a.total_cmp(b));
            let median = if r.len() % 2 == 1 {
                r[r.len() / 2]
            } else {
                (r[r.len() / 2 - 1] + r[r.len() / 2]) / 2.0
            };
            Correction {
                kind,
                place,
                factor: median.clamp(1.0 / BOUND, BOUND),
                samples: r.len(),
            }
        })
        .collect()
}

/// `profile` with the corrections learned from `observations` (replacing its own).
pub fn learned(profile: &Profile, observations: &[Observation]) -> Profile {
    let mut out = profile.clone();
    out.corrections = corrections(observations);
    out
}

/// The corrections in words, e.g. `scan on the CPU ×1.80 (12 runs)`.
pub fn describe(corrections: &[Correction]) -> Vec<String> {
    corrections
        .iter()
        .map(|c| {
            format!(
                "{} on the {} ×{:.2} ({} run{})",
                c.kind.name(),
                match c.place {
                    Place::Cpu => "CPU",
                    Place::Gpu => "GPU",
                },
                c.factor,
                c.samples,
                if c.samples == 1 { "" } else { "s" }
            )
        })
        .collect()
}
