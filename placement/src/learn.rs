//! Learning from runs: each placed attempt leaves what the model predicted for the place it
//! ran on and what it took; per (main kind of work, place) the median of actual ÷ predicted
//! becomes a correction that later predictions are multiplied by. The model's error depends
//! on size too (a small copy stays in cache, a large one pays the staging in full), so the
//! same is kept per size class of the prediction ([`crate::cost::class_of`]), used before the
//! kind's own when a stage's class has samples. Medians shrug off the odd slow attempt (a cold
//! cache, a busy machine); a bound keeps one absurd sample from ruling the model.

use std::collections::BTreeMap;

use crate::cost::{Correction, OpKind, Place, Profile, class_of};

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

/// Per (kind, place), and per (kind, place, size class): the median of actual ÷ model
/// prediction. Learning from the uncorrected predictions makes a correction converge instead
/// of compounding.
pub fn corrections(observations: &[Observation]) -> Vec<Correction> {
    let mut ratios: BTreeMap<(OpKind, Place, Option<i32>), Vec<f64>> = BTreeMap::new();
    for o in observations {
        if o.model.is_finite() && o.model > 0.0 && o.actual.is_finite() && o.actual > 0.0 {
            let ratio = o.actual / o.model;
            ratios
                .entry((o.kind, o.place, None))
                .or_default()
                .push(ratio);
            ratios
                .entry((o.kind, o.place, class_of(o.model)))
                .or_default()
                .push(ratio);
        }
    }
    ratios
        .into_iter()
        .map(|((kind, place, class), mut r)| {
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
                class,
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

/// The corrections in words, one per (kind, place), e.g. `scan on the CPU ×1.80 (12 runs)`,
/// or with size classes `… (12 runs; by size ×0.31 … ×0.80 in 4 classes)`.
pub fn describe(corrections: &[Correction]) -> Vec<String> {
    corrections
        .iter()
        .filter(|c| c.class.is_none())
        .map(|c| {
            let classes: Vec<f64> = corrections
                .iter()
                .filter(|k| k.kind == c.kind && k.place == c.place && k.class.is_some())
                .map(|k| k.factor)
                .collect();
            let by_size = if classes.len() > 1 {
                let lo = classes.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = classes.iter().copied().fold(0.0, f64::max);
                format!("; by size ×{lo:.2} … ×{hi:.2} in {} classes", classes.len())
            } else {
                String::new()
            };
            format!(
                "{} on the {} ×{:.2} ({} run{}{by_size})",
                c.kind.name(),
                c.place.name(),
                c.factor,
                c.samples,
                if c.samples == 1 { "" } else { "s" }
            )
        })
        .collect()
}
