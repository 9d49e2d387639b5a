//! The kernel plan IR: typed expressions over input columns, aggregates, the scan's files and
//! the plan's output, and [`Unsupported`], the reason a plan stays on the CPU.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef, SchemaRef};
use datafusion::parquet::arrow::arrow_reader::RowSelection;

/// The type of an IR value. Integers, dates and decimals are all 64- or 128-bit integers on
/// the device; `Text` columns are dictionary-encoded on the host and reach the device as codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Bool,
    /// Any signed or unsigned integer up to 64 bits.
    Int,
    /// Days since 1970-01-01.
    Date,
    /// A scaled integer: the value is `raw / 10^scale`.
    Decimal {
        precision: u8,
        scale: i8,
    },
    Float,
    /// Strings: only equality and `IN` against literals, and grouping.
    Text,
}

impl Ty {
    /// The IR type of an Arrow type, if the GPU handles it.
    pub fn of(data_type: &DataType) -> Option<Ty> {
        Some(match data_type {
            DataType::Boolean => Ty::Bool,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => Ty::Int,
            DataType::Date32 => Ty::Date,
            DataType::Decimal128(precision, scale) if *scale >= 0 => Ty::Decimal {
                precision: *precision,
                scale: *scale,
            },
            DataType::Float32 | DataType::Float64 => Ty::Float,
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => Ty::Text,
            _ => return None,
        })
    }

    /// Whether values need 128 bits (decimals of more than 18 digits).
    pub fn wide(self) -> bool {
        matches!(self, Ty::Decimal { precision, .. } if precision > 18)
    }

    pub fn scale(self) -> i8 {
        match self {
            Ty::Decimal { scale, .. } => scale,
            _ => 0,
        }
    }

    pub(crate) fn integral(self) -> bool {
        matches!(self, Ty::Int | Ty::Decimal { .. })
    }
}

/// A literal value.
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Null,
    Bool(bool),
    /// Integers, dates (days) and decimals (raw scaled value).
    Int(i128),
    Float(f64),
    Text(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
}

/// An expression over the kernel plan's input columns. Every node knows its result type.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Input column `index` of [`KernelPlan::columns`].
    Column {
        index: usize,
        ty: Ty,
    },
    Literal {
        value: Lit,
        ty: Ty,
    },
    /// Both sides have the same type (DataFusion inserts the casts).
    Compare {
        op: CmpOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    IsNull(Box<Expr>),
    IsNotNull(Box<Expr>),
    /// Decimal `Add`/`Sub` rescale both sides to `ty`'s scale; decimal `Mul` multiplies the raw
    /// values (the scales add up). Integer and decimal overflow is an error, as in DataFusion.
    Arith {
        op: ArithOp,
        left: Box<Expr>,
        right: Box<Expr>,
        ty: Ty,
    },
    Negate(Box<Expr>),
    InList {
        expr: Box<Expr>,
        list: Vec<Lit>,
        negated: bool,
    },
    /// Widening casts only: integer → decimal, decimal → decimal of a larger scale, integer
    /// or decimal → float.
    Cast {
        expr: Box<Expr>,
        ty: Ty,
    },
}

impl Expr {
    pub fn ty(&self) -> Ty {
        match self {
            Expr::Column { ty, .. } | Expr::Literal { ty, .. } => *ty,
            Expr::Compare { .. }
            | Expr::And(..)
            | Expr::Or(..)
            | Expr::Not(_)
            | Expr::IsNull(_)
            | Expr::IsNotNull(_)
            | Expr::InList { .. } => Ty::Bool,
            Expr::Arith { ty, .. } | Expr::Cast { ty, .. } => *ty,
            Expr::Negate(inner) => inner.ty(),
        }
    }

    /// Calls `visit` on every input column this expression reads.
    pub fn columns(&self, visit: &mut impl FnMut(usize)) {
        match self {
            Expr::Column { index, .. } => visit(*index),
            Expr::Literal { .. } => {}
            Expr::Compare { left, right, .. }
            | Expr::And(left, right)
            | Expr::Or(left, right)
            | Expr::Arith { left, right, .. } => {
                left.columns(visit);
                right.columns(visit);
            }
            Expr::Not(inner)
            | Expr::IsNull(inner)
            | Expr::IsNotNull(inner)
            | Expr::Negate(inner)
            | Expr::Cast { expr: inner, .. }
            | Expr::InList { expr: inner, .. } => inner.columns(visit),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFunc {
    Sum,
    Count,
    Min,
    Max,
    Avg,
}

impl AggFunc {
    pub fn name(self) -> &'static str {
        match self {
            AggFunc::Sum => "sum",
            AggFunc::Count => "count",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::Avg => "avg",
        }
    }
}

/// One aggregate: `func(arg)` with DataFusion's output type.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    pub func: AggFunc,
    pub arg: Expr,
    /// The Arrow type DataFusion gives the result.
    pub output: DataType,
}

/// A column the scan reads.
#[derive(Clone, Debug, PartialEq)]
pub struct InputColumn {
    pub name: String,
    pub data_type: DataType,
    pub ty: Ty,
}

/// How the aggregated rows are ordered (a few rows, reordered as they are written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderKey {
    /// Index into the aggregate's rows: keys first, then aggregates.
    pub column: usize,
    pub descending: bool,
    pub nulls_first: bool,
}

/// A Parquet file the scan reads: all of it, or the rows a selection keeps (a shard's part,
/// see [`crate::shards`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ScanFile {
    pub path: PathBuf,
    pub rows: Option<RowSelection>,
}

/// A stage the GPU can run from start to end: read Parquet columns, filter, group, aggregate.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelPlan {
    /// What the scan reads.
    pub files: Vec<ScanFile>,
    pub columns: Vec<InputColumn>,
    /// Rows where this is true go on; `None` keeps every row.
    pub filter: Option<Expr>,
    /// Group keys (none: one row of totals).
    pub keys: Vec<Expr>,
    pub aggregates: Vec<Aggregate>,
    /// The stage's output columns: index into keys-then-aggregates, and DataFusion's field.
    pub output: Vec<(usize, FieldRef)>,
    pub order: Vec<OrderKey>,
    pub limit: Option<usize>,
}

impl KernelPlan {
    /// The output schema, exactly DataFusion's.
    pub fn output_schema(&self) -> SchemaRef {
        Arc::new(datafusion::arrow::datatypes::Schema::new(
            self.output
                .iter()
                .map(|(_, field)| field.clone())
                .collect::<Vec<_>>(),
        ))
    }
}

impl fmt::Display for KernelPlan {
    /// One line for a stage's log: what runs on the device.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scan {} column(s) of {} file(s)",
            self.columns.len(),
            self.files.len()
        )?;
        if self.filter.is_some() {
            write!(f, " → filter")?;
        }
        if self.keys.is_empty() {
            write!(f, " → {} total(s)", self.aggregates.len())?;
        } else {
            write!(
                f,
                " → group by {} key(s), {} aggregate(s)",
                self.keys.len(),
                self.aggregates.len()
            )?;
        }
        if !self.order.is_empty() {
            write!(f, " → order")?;
        }
        if let Some(limit) = self.limit {
            write!(f, " → limit {limit}")?;
        }
        Ok(())
    }
}

/// Why a plan cannot run on the GPU: the node and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    pub node: String,
    pub reason: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.node, self.reason)
    }
}

impl std::error::Error for Unsupported {}
