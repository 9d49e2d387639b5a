//! Packing a plan's Arrow columns into one contiguous array per column in its device type:
//! strings become dictionary codes, null masks one byte per row (absent for columns without
//! nulls), and integer-like columns note their value range for the group slots.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, UInt8Type, UInt16Type, UInt32Type,
};

use super::GpuError;
use crate::gpu::plan::KernelPlan;
use crate::gpu::reference::Dictionary;

/// A column's values in their device type.
pub(super) enum Packed {
    I32(Vec<i32>),
    I64(Vec<i64>),
    F64(Vec<f64>),
    U32(Vec<u32>),
    U8(Vec<u8>),
}

impl Packed {
    pub(super) fn bytes(&self) -> usize {
        match self {
            Packed::I32(v) => v.len() * 4,
            Packed::I64(v) => v.len() * 8,
            Packed::F64(v) => v.len() * 8,
            Packed::U32(v) => v.len() * 4,
            Packed::U8(v) => v.len(),
        }
    }

    pub(super) fn c_type(&self) -> &'static str {
        match self {
            Packed::I32(_) => "int",
            Packed::I64(_) => "long long",
            Packed::F64(_) => "double",
            Packed::U32(_) => "unsigned int",
            Packed::U8(_) => "unsigned char",
        }
    }
}

pub(super) struct Column {
    pub(super) values: Packed,
    /// One byte per row (1 = present); `None` when the column has no nulls.
    pub(super) valid: Option<Vec<u8>>,
    pub(super) len: usize,
    /// For integer-like columns: the smallest and largest value present.
    pub(super) range: Option<(i64, i64)>,
}

/// Reads the plan's columns and packs each into one array of its device type.
pub(super) fn pack(
    plan: &KernelPlan,
    batches: &[(Vec<ArrayRef>, usize)],
    dictionary: &mut Dictionary,
) -> Result<Vec<Column>, GpuError> {
    let mut columns = Vec::with_capacity(plan.columns.len());
    for (index, input) in plan.columns.iter().enumerate() {
        let arrays: Vec<&ArrayRef> = batches.iter().map(|(b, _)| &b[index]).collect();
        let len: usize = arrays.iter().map(|a| a.len()).sum();
        let nulls: usize = arrays.iter().map(|a| a.null_count()).sum();
        let valid = (nulls > 0).then(|| {
            let mut mask = Vec::with_capacity(len);
            for a in &arrays {
                mask.extend((0..a.len()).map(|i| a.is_valid(i) as u8));
            }
            mask
        });
        let values = pack_values(&input.data_type, &arrays, dictionary)?;
        let range = match &values {
            Packed::I32(v) => min_max(v.iter().map(|&x| x as i64), valid.as_deref()),
            Packed::I64(v) => min_max(v.iter().copied(), valid.as_deref()),
            Packed::U32(v) => min_max(v.iter().map(|&x| x as i64), valid.as_deref()),
            Packed::U8(v) => min_max(v.iter().map(|&x| x as i64), valid.as_deref()),
            Packed::F64(_) => None,
        };
        columns.push(Column {
            values,
            valid,
            len,
            range,
        });
    }
    Ok(columns)
}

fn min_max(values: impl Iterator<Item = i64>, valid: Option<&[u8]>) -> Option<(i64, i64)> {
    let mut range: Option<(i64, i64)> = None;
    for (i, v) in values.enumerate() {
        if valid.is_some_and(|m| m[i] == 0) {
            continue;
        }
        range = Some(range.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))));
    }
    range
}

fn pack_values(
    data_type: &DataType,
    arrays: &[&ArrayRef],
    dictionary: &mut Dictionary,
) -> Result<Packed, GpuError> {
    macro_rules! prim {
        ($t:ty, $variant:ident, $conv:expr) => {{
            let mut out = Vec::new();
            for a in arrays {
                out.extend(a.as_primitive::<$t>().values().iter().map($conv));
            }
            Packed::$variant(out)
        }};
    }
    Ok(match data_type {
        DataType::Int8 => prim!(Int8Type, I32, |&v| v as i32),
        DataType::Int16 => prim!(Int16Type, I32, |&v| v as i32),
        DataType::Int32 => prim!(Int32Type, I32, |&v| v),
        DataType::UInt8 => prim!(UInt8Type, I32, |&v| v as i32),
        DataType::UInt16 => prim!(UInt16Type, I32, |&v| v as i32),
        DataType::Date32 => prim!(Date32Type, I32, |&v| v),
        DataType::Int64 => prim!(Int64Type, I64, |&v| v),
        DataType::UInt32 => prim!(UInt32Type, I64, |&v| v as i64),
        DataType::Decimal128(precision, _) if *precision <= 18 => {
            // At most 18 digits: every value fits 64 bits.
            prim!(Decimal128Type, I64, |&v| v as i64)
        }
        DataType::Decimal128(precision, _) => {
            return Err(GpuError::Unsupported(format!(
                "decimal columns of {precision} digits (the GPU reads up to 18)"
            )));
        }
        DataType::Float32 => prim!(Float32Type, F64, |&v| v as f64),
        DataType::Float64 => prim!(Float64Type, F64, |&v| v),
        DataType::Boolean => {
            let mut out = Vec::new();
            for a in arrays {
                let a = a.as_boolean();
                out.extend((0..a.len()).map(|i| a.value(i) as u8));
            }
            Packed::U8(out)
        }
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
            let mut out = Vec::new();
            for a in arrays {
                let code = |s: Option<&str>, d: &mut Dictionary| s.map_or(0, |s| d.code(s));
                match a.data_type() {
                    DataType::Utf8 => {
                        out.extend(a.as_string::<i32>().iter().map(|s| code(s, dictionary)))
                    }
                    DataType::LargeUtf8 => {
                        out.extend(a.as_string::<i64>().iter().map(|s| code(s, dictionary)))
                    }
                    _ => out.extend(a.as_string_view().iter().map(|s| code(s, dictionary))),
                }
            }
            Packed::U32(out)
        }
        other => {
            return Err(GpuError::Unsupported(format!("columns of type {other}")));
        }
    })
}
