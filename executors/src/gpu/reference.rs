//! The host reference for kernel plans: evaluates a [`KernelPlan`] row by row on the CPU.
//!
//! It defines what the GPU kernels must compute, in the plainest code that can, with
//! DataFusion's semantics spelled out: SQL three-valued logic, floats compared in IEEE total
//! order (NaN above every number, as Arrow does), decimals as exact scaled integers with
//! checked arithmetic, `avg` of a decimal truncated to the output scale. It is tested against
//! DataFusion on the same files; the GPU kernels are tested against it and against DataFusion.
//! It is slow on purpose (no vectorisation): it is a reference, not an executor.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs::File;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_empty_array};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, UInt8Type, UInt16Type, UInt32Type,
};
use datafusion::common::ScalarValue;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::plan::{AggFunc, ArithOp, CmpOp, Expr, KernelPlan, Lit, Ty};

/// One value while evaluating. Integers, dates and decimals (raw scaled) are `Int`; strings
/// are codes into the run's dictionary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Text(u32),
}

/// Strings seen so far, each with a code (the host dictionary-encodes text columns).
#[derive(Default)]
pub struct Dictionary {
    codes: HashMap<String, u32>,
    strings: Vec<String>,
}

impl Dictionary {
    pub fn code(&mut self, text: &str) -> u32 {
        if let Some(&code) = self.codes.get(text) {
            return code;
        }
        let code = self.strings.len() as u32;
        self.codes.insert(text.to_string(), code);
        self.strings.push(text.to_string());
        code
    }

    /// The code of a literal: a string no row holds gets a code no row has.
    pub fn lookup(&self, text: &str) -> u32 {
        self.codes.get(text).copied().unwrap_or(u32::MAX)
    }

    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    pub fn text(&self, code: u32) -> &str {
        &self.strings[code as usize]
    }
}

/// Runs `plan` over its files and returns its output, in DataFusion's schema.
pub fn execute(plan: &KernelPlan) -> Result<RecordBatch, String> {
    let mut dictionary = Dictionary::default();
    let mut groups: HashMap<Vec<Key>, usize> = HashMap::new();
    let mut states: Vec<(Vec<Value>, Vec<Acc>)> = Vec::new();
    if plan.keys.is_empty() {
        groups.insert(Vec::new(), 0);
        states.push((Vec::new(), plan.aggregates.iter().map(Acc::new).collect()));
    }
    for (batch, num_rows) in read(plan)? {
        let columns = batch
            .iter()
            .map(|array| values(array, &mut dictionary))
            .collect::<Result<Vec<_>, _>>()?;
        let mut row = vec![Value::Null; columns.len()];
        for i in 0..num_rows {
            for (slot, column) in row.iter_mut().zip(&columns) {
                *slot = column[i];
            }
            if let Some(filter) = &plan.filter
                && eval(filter, &row, &dictionary)? != Value::Bool(true)
            {
                continue;
            }
            let key_values = plan
                .keys
                .iter()
                .map(|k| eval(k, &row, &dictionary))
                .collect::<Result<Vec<_>, _>>()?;
            let key: Vec<Key> = key_values.iter().map(|v| Key::of(*v)).collect();
            let next = states.len();
            let slot = *groups.entry(key).or_insert(next);
            if slot == next {
                states.push((key_values, plan.aggregates.iter().map(Acc::new).collect()));
            }
            for (acc, aggregate) in states[slot].1.iter_mut().zip(&plan.aggregates) {
                acc.update(eval(&aggregate.arg, &row, &dictionary)?)?;
            }
        }
    }
    // Rows of keys-then-aggregates.
    let mut rows: Vec<Vec<Value>> = Vec::with_capacity(states.len());
    for (keys, accs) in states {
        let mut row = keys;
        for (acc, aggregate) in accs.into_iter().zip(&plan.aggregates) {
            row.push(acc.finish(aggregate.func, aggregate.arg.ty(), &aggregate.output)?);
        }
        rows.push(row);
    }
    assemble(plan, rows, &dictionary)
}

/// The output batch from rows of keys-then-aggregates: ordered, limited, in DataFusion's schema.
pub(crate) fn assemble(
    plan: &KernelPlan,
    mut rows: Vec<Vec<Value>>,
    dictionary: &Dictionary,
) -> Result<RecordBatch, String> {
    if !plan.order.is_empty() {
        rows.sort_by(|a, b| {
            for key in &plan.order {
                let (x, y) = (a[key.column], b[key.column]);
                let mut ordering = order_values(x, y, key.nulls_first, dictionary);
                // Descending reverses values, not where the nulls go.
                if key.descending && x != Value::Null && y != Value::Null {
                    ordering = ordering.reverse();
                }
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
            Ordering::Equal
        });
    }
    if let Some(limit) = plan.limit {
        rows.truncate(limit);
    }
    let schema = plan.output_schema();
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(plan.output.len());
    for (source, field) in &plan.output {
        let data_type = field.data_type();
        let array = if rows.is_empty() {
            new_empty_array(data_type)
        } else {
            let scalars = rows
                .iter()
                .map(|row| scalar(row[*source], data_type, dictionary))
                .collect::<Result<Vec<_>, _>>()?;
            ScalarValue::iter_to_array(scalars).map_err(|e| e.to_string())?
        };
        arrays.push(array);
    }
    RecordBatch::try_new(schema, arrays).map_err(|e| e.to_string())
}

/// Reads the plan's columns from its Parquet files: per batch, the columns in the plan's
/// order and the row count.
pub(crate) fn read(plan: &KernelPlan) -> Result<Vec<(Vec<ArrayRef>, usize)>, String> {
    let mut batches = Vec::new();
    for scan in &plan.files {
        let path = &scan.path;
        let failed = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", path.display());
        let file = File::open(path).map_err(|e| failed(&e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| failed(&e))?;
        let mask = ProjectionMask::columns(
            builder.parquet_schema(),
            plan.columns.iter().map(|c| c.name.as_str()),
        );
        let mut builder = builder.with_projection(mask);
        if let Some(rows) = &scan.rows {
            builder = builder.with_row_selection(rows.clone());
        }
        let reader = builder.build().map_err(|e| failed(&e))?;
        for batch in reader {
            let batch = batch.map_err(|e| failed(&e))?;
            // The reader returns columns in file order; put them in the plan's order.
            let schema = batch.schema();
            let columns = plan
                .columns
                .iter()
                .map(|c| {
                    schema
                        .index_of(&c.name)
                        .map(|i| batch.column(i).clone())
                        .map_err(|e| failed(&e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            batches.push((columns, batch.num_rows()));
        }
    }
    Ok(batches)
}

/// An Arrow column as values.
fn values(array: &ArrayRef, dictionary: &mut Dictionary) -> Result<Vec<Value>, String> {
    fn prim<T: datafusion::arrow::datatypes::ArrowPrimitiveType>(
        array: &ArrayRef,
        f: impl Fn(T::Native) -> Value,
    ) -> Vec<Value> {
        array
            .as_primitive::<T>()
            .iter()
            .map(|v| v.map_or(Value::Null, &f))
            .collect()
    }
    Ok(match array.data_type() {
        DataType::Boolean => array
            .as_boolean()
            .iter()
            .map(|v| v.map_or(Value::Null, Value::Bool))
            .collect(),
        DataType::Int8 => prim::<Int8Type>(array, |v| Value::Int(v.into())),
        DataType::Int16 => prim::<Int16Type>(array, |v| Value::Int(v.into())),
        DataType::Int32 => prim::<Int32Type>(array, |v| Value::Int(v.into())),
        DataType::Int64 => prim::<Int64Type>(array, |v| Value::Int(v.into())),
        DataType::UInt8 => prim::<UInt8Type>(array, |v| Value::Int(v.into())),
        DataType::UInt16 => prim::<UInt16Type>(array, |v| Value::Int(v.into())),
        DataType::UInt32 => prim::<UInt32Type>(array, |v| Value::Int(v.into())),
        DataType::Date32 => prim::<Date32Type>(array, |v| Value::Int(v.into())),
        DataType::Decimal128(..) => prim::<Decimal128Type>(array, Value::Int),
        DataType::Float32 => prim::<Float32Type>(array, |v| Value::Float(v.into())),
        DataType::Float64 => prim::<Float64Type>(array, Value::Float),
        DataType::Utf8 => array
            .as_string::<i32>()
            .iter()
            .map(|v| v.map_or(Value::Null, |s| Value::Text(dictionary.code(s))))
            .collect(),
        DataType::LargeUtf8 => array
            .as_string::<i64>()
            .iter()
            .map(|v| v.map_or(Value::Null, |s| Value::Text(dictionary.code(s))))
            .collect(),
        DataType::Utf8View => array
            .as_string_view()
            .iter()
            .map(|v| v.map_or(Value::Null, |s| Value::Text(dictionary.code(s))))
            .collect(),
        other => return Err(format!("column type {other} is not handled")),
    })
}

/// A group key part (keys are never floats).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Null,
    Bool(bool),
    Int(i128),
    Text(u32),
    Float(u64),
}

impl Key {
    fn of(value: Value) -> Key {
        match value {
            Value::Null => Key::Null,
            Value::Bool(b) => Key::Bool(b),
            Value::Int(i) => Key::Int(i),
            Value::Text(t) => Key::Text(t),
            Value::Float(f) => Key::Float(f.to_bits()),
        }
    }
}

fn pow10(exp: i8) -> i128 {
    10i128.pow(exp as u32)
}

fn overflow() -> String {
    "arithmetic overflow".to_string()
}

/// Evaluates `expr` on one row of input values.
pub fn eval(expr: &Expr, row: &[Value], dictionary: &Dictionary) -> Result<Value, String> {
    Ok(match expr {
        Expr::Column { index, .. } => row[*index],
        Expr::Literal { value, .. } => literal(value, dictionary),
        Expr::Compare { op, left, right } => {
            let (l, r) = (eval(left, row, dictionary)?, eval(right, row, dictionary)?);
            match compare(l, r) {
                None => Value::Null,
                Some(ordering) => Value::Bool(match op {
                    CmpOp::Eq => ordering == Ordering::Equal,
                    CmpOp::NotEq => ordering != Ordering::Equal,
                    CmpOp::Lt => ordering == Ordering::Less,
                    CmpOp::LtEq => ordering != Ordering::Greater,
                    CmpOp::Gt => ordering == Ordering::Greater,
                    CmpOp::GtEq => ordering != Ordering::Less,
                }),
            }
        }
        Expr::And(left, right) => {
            match (eval(left, row, dictionary)?, eval(right, row, dictionary)?) {
                (Value::Bool(false), _) | (_, Value::Bool(false)) => Value::Bool(false),
                (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                _ => Value::Null,
            }
        }
        Expr::Or(left, right) => {
            match (eval(left, row, dictionary)?, eval(right, row, dictionary)?) {
                (Value::Bool(true), _) | (_, Value::Bool(true)) => Value::Bool(true),
                (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                _ => Value::Null,
            }
        }
        Expr::Not(inner) => match eval(inner, row, dictionary)? {
            Value::Bool(b) => Value::Bool(!b),
            _ => Value::Null,
        },
        Expr::IsNull(inner) => Value::Bool(eval(inner, row, dictionary)? == Value::Null),
        Expr::IsNotNull(inner) => Value::Bool(eval(inner, row, dictionary)? != Value::Null),
        Expr::Arith {
            op,
            left,
            right,
            ty,
        } => {
            let (l, r) = (eval(left, row, dictionary)?, eval(right, row, dictionary)?);
            match (l, r) {
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                (Value::Float(a), Value::Float(b)) => Value::Float(match op {
                    ArithOp::Add => a + b,
                    ArithOp::Sub => a - b,
                    ArithOp::Mul => a * b,
                }),
                (Value::Int(a), Value::Int(b)) => {
                    let (a, b) = match op {
                        ArithOp::Add | ArithOp::Sub => (
                            a.checked_mul(pow10(ty.scale() - left.ty().scale()))
                                .ok_or_else(overflow)?,
                            b.checked_mul(pow10(ty.scale() - right.ty().scale()))
                                .ok_or_else(overflow)?,
                        ),
                        ArithOp::Mul => (a, b),
                    };
                    let result = match op {
                        ArithOp::Add => a.checked_add(b),
                        ArithOp::Sub => a.checked_sub(b),
                        ArithOp::Mul => a.checked_mul(b),
                    }
                    .ok_or_else(overflow)?;
                    if *ty == Ty::Int && i64::try_from(result).is_err() {
                        return Err(overflow());
                    }
                    Value::Int(result)
                }
                (l, r) => return Err(format!("arithmetic on {l:?} and {r:?}")),
            }
        }
        Expr::Negate(inner) => match eval(inner, row, dictionary)? {
            Value::Int(i) => Value::Int(i.checked_neg().ok_or_else(overflow)?),
            Value::Float(f) => Value::Float(-f),
            other => other,
        },
        Expr::InList {
            expr,
            list,
            negated,
        } => {
            let value = eval(expr, row, dictionary)?;
            if value == Value::Null {
                Value::Null
            } else {
                let mut saw_null = false;
                let mut found = false;
                for item in list {
                    match compare(value, literal(item, dictionary)) {
                        Some(Ordering::Equal) => found = true,
                        None => saw_null = true,
                        _ => {}
                    }
                }
                if found {
                    Value::Bool(!negated)
                } else if saw_null {
                    Value::Null
                } else {
                    Value::Bool(*negated)
                }
            }
        }
        Expr::Cast { expr, ty } => {
            let from = expr.ty();
            match (eval(expr, row, dictionary)?, ty) {
                (Value::Null, _) => Value::Null,
                (Value::Int(i), Ty::Float) => {
                    Value::Float(i as f64 / 10f64.powi(from.scale() as i32))
                }
                (Value::Int(i), Ty::Decimal { scale, .. }) => Value::Int(
                    i.checked_mul(pow10(scale - from.scale()))
                        .ok_or_else(overflow)?,
                ),
                (value, _) => value,
            }
        }
    })
}

fn literal(value: &Lit, dictionary: &Dictionary) -> Value {
    match value {
        Lit::Null => Value::Null,
        Lit::Bool(b) => Value::Bool(*b),
        Lit::Int(i) => Value::Int(*i),
        Lit::Float(f) => Value::Float(*f),
        Lit::Text(t) => Value::Text(dictionary.lookup(t)),
    }
}

/// SQL comparison: `None` when either side is null. Floats as DataFusion compares them:
/// `-0.0` made `+0.0`, then IEEE total order (NaN equals NaN and is above every number).
/// Strings by code (equality only, which the translation guarantees).
fn compare(l: Value, r: Value) -> Option<Ordering> {
    match (l, r) {
        (Value::Float(a), Value::Float(b)) => Some((a + 0.0).total_cmp(&(b + 0.0))),
        _ => order(l, r),
    }
}

/// Order as Arrow's min/max kernels see it: floats in plain total order (`-0.0 < +0.0`).
pub(crate) fn order(l: Value, r: Value) -> Option<Ordering> {
    match (l, r) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(&b)),
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(&b)),
        (Value::Float(a), Value::Float(b)) => Some(a.total_cmp(&b)),
        (Value::Text(a), Value::Text(b)) => Some(a.cmp(&b)),
        _ => None,
    }
}

/// Ordering of result rows: strings by their text, nulls where asked.
fn order_values(a: Value, b: Value, nulls_first: bool, dictionary: &Dictionary) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => {
            if nulls_first {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (_, Value::Null) => {
            if nulls_first {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (Value::Text(x), Value::Text(y)) => dictionary.text(x).cmp(dictionary.text(y)),
        _ => order(a, b).unwrap_or(Ordering::Equal),
    }
}

/// One aggregate's running state.
pub(crate) enum Acc {
    Count(i64),
    /// Sum and count of non-null values (`avg` and `sum` both use it).
    Sum {
        int: i128,
        float: f64,
        count: i64,
    },
    Extreme {
        best: Value,
        max: bool,
    },
}

impl Acc {
    pub(crate) fn new(aggregate: &super::plan::Aggregate) -> Acc {
        match aggregate.func {
            AggFunc::Count => Acc::Count(0),
            AggFunc::Sum | AggFunc::Avg => Acc::Sum {
                int: 0,
                float: 0.0,
                count: 0,
            },
            AggFunc::Min => Acc::Extreme {
                best: Value::Null,
                max: false,
            },
            AggFunc::Max => Acc::Extreme {
                best: Value::Null,
                max: true,
            },
        }
    }

    fn update(&mut self, value: Value) -> Result<(), String> {
        if value == Value::Null {
            return Ok(());
        }
        match self {
            Acc::Count(n) => *n += 1,
            Acc::Sum { int, float, count } => {
                match value {
                    Value::Int(i) => *int = int.checked_add(i).ok_or_else(overflow)?,
                    Value::Float(f) => *float += f,
                    other => return Err(format!("summing {other:?}")),
                }
                *count += 1;
            }
            Acc::Extreme { best, max } => {
                let better = match order(value, *best) {
                    None => true,
                    Some(ordering) => {
                        if *max {
                            ordering == Ordering::Greater
                        } else {
                            ordering == Ordering::Less
                        }
                    }
                };
                if better {
                    *best = value;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn finish(self, func: AggFunc, arg: Ty, output: &DataType) -> Result<Value, String> {
        Ok(match self {
            Acc::Count(n) => Value::Int(n.into()),
            Acc::Extreme { best, .. } => best,
            Acc::Sum { count: 0, .. } => Value::Null,
            Acc::Sum { int, float, count } => match (func, arg) {
                (AggFunc::Sum, Ty::Float) => Value::Float(float),
                (AggFunc::Sum, _) => Value::Int(int),
                (AggFunc::Avg, Ty::Float) => Value::Float(float / count as f64),
                (AggFunc::Avg, Ty::Int) => Value::Float(int as f64 / count as f64),
                (AggFunc::Avg, _) => {
                    let DataType::Decimal128(_, scale) = output else {
                        return Err(format!("avg returning {output}"));
                    };
                    let scaled = int
                        .checked_mul(pow10(*scale - arg.scale()))
                        .ok_or_else(overflow)?;
                    Value::Int(scaled / count as i128)
                }
                _ => return Err(format!("{} finishing as a sum", func.name())),
            },
        })
    }
}

/// A value as a scalar of the output column's Arrow type.
fn scalar(
    value: Value,
    data_type: &DataType,
    dictionary: &Dictionary,
) -> Result<ScalarValue, String> {
    if value == Value::Null {
        return ScalarValue::try_from(data_type).map_err(|e| e.to_string());
    }
    let int = |v: Value| match v {
        Value::Int(i) => Ok(i),
        other => Err(format!("{other:?} as {data_type}")),
    };
    let narrow = |v: Value| -> Result<i64, String> {
        i64::try_from(int(v)?).map_err(|_| format!("{value:?} does not fit {data_type}"))
    };
    Ok(match data_type {
        DataType::Boolean => match value {
            Value::Bool(b) => ScalarValue::Boolean(Some(b)),
            other => return Err(format!("{other:?} as boolean")),
        },
        DataType::Int8 => ScalarValue::Int8(Some(narrow(value)? as i8)),
        DataType::Int16 => ScalarValue::Int16(Some(narrow(value)? as i16)),
        DataType::Int32 => ScalarValue::Int32(Some(narrow(value)? as i32)),
        DataType::Int64 => ScalarValue::Int64(Some(narrow(value)?)),
        DataType::UInt8 => ScalarValue::UInt8(Some(narrow(value)? as u8)),
        DataType::UInt16 => ScalarValue::UInt16(Some(narrow(value)? as u16)),
        DataType::UInt32 => ScalarValue::UInt32(Some(narrow(value)? as u32)),
        DataType::Date32 => ScalarValue::Date32(Some(narrow(value)? as i32)),
        DataType::Decimal128(p, s) => ScalarValue::Decimal128(Some(int(value)?), *p, *s),
        DataType::Float64 | DataType::Float32 => {
            let Value::Float(f) = value else {
                return Err(format!("{value:?} as {data_type}"));
            };
            if matches!(data_type, DataType::Float32) {
                ScalarValue::Float32(Some(f as f32))
            } else {
                ScalarValue::Float64(Some(f))
            }
        }
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
            let Value::Text(code) = value else {
                return Err(format!("{value:?} as {data_type}"));
            };
            let text = Some(dictionary.text(code).to_string());
            match data_type {
                DataType::Utf8 => ScalarValue::Utf8(text),
                DataType::LargeUtf8 => ScalarValue::LargeUtf8(text),
                _ => ScalarValue::Utf8View(text),
            }
        }
        other => return Err(format!("output type {other} is not handled")),
    })
}
