//! How a plan's accumulators are laid out (per group slot: a row count and each aggregate's
//! words), their initial values, and how the words that come back become rows of keys and
//! aggregates.

use super::GpuError;
use super::pack::Column;
use crate::gpu::plan::{AggFunc, Expr, KernelPlan, Ty};
use crate::gpu::reference::{Acc, Dictionary, Value};

/// How the accumulators are laid out: per group slot, a row count and each aggregate's words.
pub(super) struct Layout {
    /// Per key: (column, smallest value, number of values including the null slot).
    pub(super) keys: Vec<(usize, i64, u64)>,
    slots: u64,
    /// Per aggregate: its first word within a slot.
    pub(super) offsets: Vec<usize>,
    /// Words per slot.
    pub(super) stride: usize,
    pub(super) kinds: Vec<Word>,
}

/// What one accumulator word holds, and how blocks combine into it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Word {
    /// A count or the low half of a 128-bit sum: added.
    Add,
    /// The high half of a 128-bit sum: added with the carry of the word before.
    High,
    /// A double: added as a double.
    AddF64,
    Min,
    Max,
}

/// Direct aggregation only: all key slots together at most this many.
const MAX_SLOTS: u64 = 1 << 20;
/// Per-block accumulators live in shared memory when they fit in this much.
const SHARED_BYTES: usize = 32 * 1024;

impl Layout {
    pub(super) fn new(
        plan: &KernelPlan,
        columns: &[Column],
        dictionary: &Dictionary,
    ) -> Result<Layout, GpuError> {
        let mut keys = Vec::new();
        let mut slots: u64 = 1;
        for key in &plan.keys {
            let Expr::Column { index, ty } = key else {
                return Err(GpuError::Unsupported(
                    "group keys computed from columns (the GPU groups by columns)".into(),
                ));
            };
            let column = &columns[*index];
            let (lo, count) = match ty {
                Ty::Text => (0, dictionary.len() as u64 + 1),
                Ty::Bool => (0, 3),
                _ => match column.range {
                    Some((lo, hi)) => (lo, (hi as i128 - lo as i128 + 2) as u64),
                    None => (0, 1),
                },
            };
            keys.push((*index, lo, count));
            slots = slots.saturating_mul(count);
        }
        if slots > MAX_SLOTS {
            return Err(GpuError::Unsupported(format!(
                "group keys spanning {slots} slots (direct aggregation holds {MAX_SLOTS}; hash \
                 aggregation is not built yet)"
            )));
        }
        let mut kinds = vec![Word::Add]; // the slot's row count
        let mut offsets = Vec::new();
        for aggregate in &plan.aggregates {
            offsets.push(kinds.len());
            let float = aggregate.arg.ty() == Ty::Float;
            match aggregate.func {
                AggFunc::Count => kinds.push(Word::Add),
                AggFunc::Sum | AggFunc::Avg if float => kinds.extend([Word::AddF64, Word::Add]),
                AggFunc::Sum | AggFunc::Avg => kinds.extend([Word::Add, Word::High, Word::Add]),
                AggFunc::Min => kinds.extend([Word::Min, Word::Add]),
                AggFunc::Max => kinds.extend([Word::Max, Word::Add]),
            }
        }
        Ok(Layout {
            keys,
            slots,
            offsets,
            stride: kinds.len(),
            kinds,
        })
    }

    pub(super) fn words(&self) -> usize {
        self.slots as usize * self.stride
    }

    pub(super) fn shared(&self) -> bool {
        self.words() * 8 <= SHARED_BYTES
    }

    pub(super) fn shared_bytes(&self) -> u32 {
        if self.shared() {
            (self.words() * 8) as u32
        } else {
            0
        }
    }

    fn identity(kind: Word) -> u64 {
        match kind {
            Word::Min => i64::MAX as u64,
            Word::Max => i64::MIN as u64,
            _ => 0,
        }
    }

    pub(super) fn initial(&self) -> Vec<u64> {
        (0..self.words())
            .map(|w| Self::identity(self.kinds[w % self.stride]))
            .collect()
    }

    /// The accumulators as rows of keys-then-aggregates, for slots that saw rows.
    pub(super) fn rows(
        &self,
        plan: &KernelPlan,
        words: &[u64],
    ) -> Result<Vec<Vec<Value>>, GpuError> {
        let mut rows = Vec::new();
        for slot in 0..self.slots as usize {
            let base = slot * self.stride;
            let seen = words[base];
            if seen == 0 && !plan.keys.is_empty() {
                continue;
            }
            let mut row = Vec::with_capacity(plan.keys.len() + plan.aggregates.len());
            // Keys: the slot index in mixed radix, last key fastest.
            let mut rest = slot as u64;
            let mut keys = vec![Value::Null; self.keys.len()];
            for (k, (_, lo, count)) in self.keys.iter().enumerate().rev() {
                let digit = rest % count;
                rest /= count;
                keys[k] = if digit == count - 1 {
                    Value::Null
                } else {
                    match plan.keys[k].ty() {
                        Ty::Text => Value::Text(digit as u32),
                        Ty::Bool => Value::Bool(digit == 1),
                        _ => Value::Int((*lo as i128) + digit as i128),
                    }
                };
            }
            row.extend(keys);
            for (aggregate, &offset) in plan.aggregates.iter().zip(&self.offsets) {
                let w = &words[base + offset..];
                let float = aggregate.arg.ty() == Ty::Float;
                let acc = match aggregate.func {
                    AggFunc::Count => Acc::Count(w[0] as i64),
                    AggFunc::Sum | AggFunc::Avg if float => Acc::Sum {
                        int: 0,
                        float: f64::from_bits(w[0]),
                        count: w[1] as i64,
                    },
                    AggFunc::Sum | AggFunc::Avg => Acc::Sum {
                        int: ((w[1] as u128) << 64 | w[0] as u128) as i128,
                        float: 0.0,
                        count: w[2] as i64,
                    },
                    AggFunc::Min | AggFunc::Max => Acc::Extreme {
                        best: if w[1] == 0 {
                            Value::Null
                        } else if float {
                            Value::Float(from_ordered(w[0] as i64))
                        } else {
                            Value::Int(w[0] as i64 as i128)
                        },
                        max: aggregate.func == AggFunc::Max,
                    },
                };
                row.push(
                    acc.finish(aggregate.func, aggregate.arg.ty(), &aggregate.output)
                        .map_err(GpuError::Input)?,
                );
            }
            rows.push(row);
        }
        Ok(rows)
    }
}

/// Inverse of the kernel's `ordered()`: total-order key back to the double.
fn from_ordered(key: i64) -> f64 {
    let bits = key ^ ((((key >> 63) as u64) >> 1) as i64);
    f64::from_bits(bits as u64)
}
