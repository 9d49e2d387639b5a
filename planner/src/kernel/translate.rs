//! From a DataFusion physical plan to a [`KernelPlan`]: the walk up the chain of nodes and the
//! translation of each physical expression, refusing with the node and the reason.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CastExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, Literal, NegativeExpr,
    NotExpr, TryCastExpr,
};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
#[allow(deprecated)] // Still in plans DataFusion 55 makes; passed through.
use datafusion::physical_plan::coalesce_batches::CoalesceBatchesExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

use super::ir::*;

pub(super) fn unsupported(node: &str, reason: impl Into<String>) -> Unsupported {
    Unsupported {
        node: node.to_string(),
        reason: reason.into(),
    }
}

/// Turns a physical plan into a kernel plan, or says which node stops it.
pub fn translate(plan: &Arc<dyn ExecutionPlan>) -> Result<KernelPlan, Unsupported> {
    walk(plan, false)
}

/// Turns the part of a plan that one shard runs (up to and including a partial aggregate,
/// see [`crate::shards`]) into a kernel plan whose output is the partial aggregate's rows:
/// the group keys and each aggregate's state (`avg` as its count and sum), in DataFusion's
/// order. The count of an `avg` comes out as `Int64`; DataFusion's state holds `UInt64`, so
/// the caller casts the batch to the node's schema.
pub fn translate_partial(plan: &Arc<dyn ExecutionPlan>) -> Result<KernelPlan, Unsupported> {
    walk(plan, true)
}

fn walk(plan: &Arc<dyn ExecutionPlan>, partial: bool) -> Result<KernelPlan, Unsupported> {
    // The plan is a chain: collect it from the top down, then build from the scan up.
    let mut chain = vec![plan.clone()];
    loop {
        let node = chain.last().expect("chain starts non-empty");
        let children = node.children();
        match children.len() {
            0 => break,
            1 => {
                let child = children[0].clone();
                chain.push(child);
            }
            n => {
                return Err(unsupported(
                    node.name(),
                    format!("reads {n} inputs (joins and unions run on the CPU)"),
                ));
            }
        }
    }
    chain.reverse();
    let mut nodes = chain.iter();
    let scan = nodes.next().expect("chain starts non-empty");
    let mut state = Builder::scan(scan)?;
    for node in nodes {
        state.apply(node)?;
    }
    state.finish(partial)
}

/// Where the walk up the chain is: before the aggregate, rows are expressions over the input
/// columns; after it, rows are the aggregate's output rows.
struct Builder {
    files: Vec<ScanFile>,
    columns: Vec<InputColumn>,
    filter: Option<Expr>,
    /// Before the aggregate: the current row, one expression per column of the node's output.
    row: Vec<Expr>,
    aggregated: Option<Aggregated>,
}

struct Aggregated {
    keys: Vec<Expr>,
    aggregates: Vec<Aggregate>,
    /// The node's output columns: index into keys-then-aggregates, and field.
    output: Vec<(usize, FieldRef)>,
    order: Vec<OrderKey>,
    limit: Option<usize>,
    /// A partial aggregate waiting for its final half.
    partial: bool,
    /// A partial aggregate's output: the keys, then each aggregate's state fields.
    partial_schema: Option<SchemaRef>,
}

impl Builder {
    fn scan(node: &Arc<dyn ExecutionPlan>) -> Result<Builder, Unsupported> {
        let name = node.name();
        let Some(source) = node.downcast_ref::<DataSourceExec>() else {
            return Err(unsupported(name, "the GPU reads only Parquet files"));
        };
        let Some(config) = source.data_source().downcast_ref::<FileScanConfig>() else {
            return Err(unsupported(name, "the GPU reads only Parquet files"));
        };
        let file_type = config.file_source().file_type();
        if file_type != "parquet" {
            return Err(unsupported(
                name,
                format!("{file_type} input (the GPU reads only Parquet files)"),
            ));
        }
        if config.limit.is_some() {
            return Err(unsupported(name, "a LIMIT pushed into the scan"));
        }
        if config.object_store_url.as_str() != "file:///" {
            return Err(unsupported(
                name,
                format!(
                    "input in object storage ({}; the GPU reads local Parquet files)",
                    config.object_store_url.as_str()
                ),
            ));
        }
        // A file DataFusion split into byte ranges is read whole, once: its ranges are all in
        // the plan. A shard's part is a row selection, read as it is.
        let mut files: Vec<ScanFile> = Vec::new();
        for group in &config.file_groups {
            for file in group.iter() {
                let path = PathBuf::from(format!("/{}", file.object_meta.location));
                let rows = file
                    .extension::<ParquetRowSelection>()
                    .map(|s| s.selection().clone());
                let scan = ScanFile { path, rows };
                if scan.rows.is_some() || !files.contains(&scan) {
                    files.push(scan);
                }
            }
        }
        let file_schema = config.file_schema();
        let mut columns = Vec::new();
        let mut row = Vec::new();
        for field in node.schema().fields() {
            if file_schema.field_with_name(field.name()).is_err() {
                return Err(unsupported(
                    name,
                    format!("column `{}` is computed in the scan", field.name()),
                ));
            }
            let Some(ty) = Ty::of(field.data_type()) else {
                return Err(unsupported(
                    name,
                    format!(
                        "column `{}` has type {} (the GPU handles integers, dates, decimals, \
                         floats, booleans and strings)",
                        field.name(),
                        field.data_type()
                    ),
                ));
            };
            row.push(Expr::Column {
                index: columns.len(),
                ty,
            });
            columns.push(InputColumn {
                name: field.name().clone(),
                data_type: field.data_type().clone(),
                ty,
            });
        }
        Ok(Builder {
            files,
            columns,
            filter: None,
            row,
            aggregated: None,
        })
    }

    fn apply(&mut self, node: &Arc<dyn ExecutionPlan>) -> Result<(), Unsupported> {
        let name = node.name();
        let any: &dyn ExecutionPlan = node.as_ref();
        #[allow(deprecated)]
        let batching = any.is::<CoalesceBatchesExec>();
        if batching || any.is::<CoalescePartitionsExec>() || any.is::<RepartitionExec>() {
            // Partitioning and batching: the GPU sees all rows at once.
            return Ok(());
        }
        if let Some(aggregated) = &mut self.aggregated {
            return aggregated.apply(node);
        }
        if let Some(filter) = any.downcast_ref::<FilterExec>() {
            let predicate = expr(filter.predicate(), &self.row, name)?;
            if predicate.ty() != Ty::Bool {
                return Err(unsupported(name, "the predicate is not a boolean"));
            }
            self.filter = Some(match self.filter.take() {
                Some(earlier) => Expr::And(Box::new(earlier), Box::new(predicate)),
                None => predicate,
            });
            if let Some(projection) = filter.projection() {
                self.row = projection.iter().map(|&i| self.row[i].clone()).collect();
            }
            return Ok(());
        }
        if let Some(projection) = any.downcast_ref::<ProjectionExec>() {
            self.row = projection
                .expr()
                .iter()
                .map(|p| expr(&p.expr, &self.row, name))
                .collect::<Result<_, _>>()?;
            return Ok(());
        }
        if let Some(aggregate) = any.downcast_ref::<AggregateExec>() {
            return self.aggregate(aggregate, name);
        }
        Err(unsupported(
            name,
            "not one of scan, filter, projection, aggregate, sort, limit",
        ))
    }

    fn aggregate(&mut self, node: &AggregateExec, name: &str) -> Result<(), Unsupported> {
        let partial = match node.mode() {
            AggregateMode::Partial => true,
            AggregateMode::Single | AggregateMode::SinglePartitioned => false,
            other => {
                return Err(unsupported(
                    name,
                    format!("a {other:?} aggregate without its partial half"),
                ));
            }
        };
        let group_by = node.group_expr();
        if !group_by.is_single() {
            return Err(unsupported(name, "GROUPING SETS, CUBE and ROLLUP"));
        }
        if node.filter_expr().iter().any(Option::is_some) {
            return Err(unsupported(name, "aggregates with FILTER (WHERE …)"));
        }
        let mut keys = Vec::new();
        for (key, _) in group_by.expr() {
            let key = expr(key, &self.row, name)?;
            match key.ty() {
                Ty::Int | Ty::Date | Ty::Decimal { .. } | Ty::Text | Ty::Bool => keys.push(key),
                Ty::Float => return Err(unsupported(name, "grouping by a float")),
            }
        }
        let mut aggregates = Vec::new();
        for aggregate in node.aggr_expr() {
            if aggregate.is_distinct() {
                return Err(unsupported(name, "DISTINCT aggregates"));
            }
            if !aggregate.order_bys().is_empty() {
                return Err(unsupported(name, "ordered aggregates"));
            }
            let func = match aggregate.fun().name() {
                "sum" => AggFunc::Sum,
                "count" => AggFunc::Count,
                "min" => AggFunc::Min,
                "max" => AggFunc::Max,
                "avg" => AggFunc::Avg,
                other => {
                    return Err(unsupported(
                        name,
                        format!("the aggregate `{other}` (the GPU has sum, count, min, max, avg)"),
                    ));
                }
            };
            let args = aggregate.expressions();
            let [arg] = args.as_slice() else {
                return Err(unsupported(
                    name,
                    format!("`{}` with {} arguments", func.name(), args.len()),
                ));
            };
            let arg = expr(arg, &self.row, name)?;
            if !keys.is_empty()
                && arg.ty() == Ty::Float
                && matches!(func, AggFunc::Min | AggFunc::Max)
            {
                // DataFusion's grouped float min/max keeps whichever of NaN and a number it
                // saw last, so its answer depends on row order: nothing to agree with.
                return Err(unsupported(
                    name,
                    "min/max of floats per group (DataFusion's answer with NaN depends on row order)",
                ));
            }
            let output = aggregate.field().data_type().clone();
            check_aggregate(func, &arg, &output).map_err(|reason| unsupported(name, reason))?;
            aggregates.push(Aggregate { func, arg, output });
        }
        // The aggregate's own output: keys, then aggregates, as DataFusion names them.
        let schema = node.schema();
        let width = keys.len() + aggregates.len();
        if schema.fields().len() != width && !partial {
            return Err(unsupported(name, "an aggregate with extra output columns"));
        }
        let output = if partial {
            Vec::new()
        } else {
            final_output(&schema, width)
        };
        self.aggregated = Some(Aggregated {
            keys,
            aggregates,
            output,
            order: Vec::new(),
            limit: None,
            partial,
            partial_schema: partial.then_some(schema),
        });
        Ok(())
    }

    fn finish(self, want_partial: bool) -> Result<KernelPlan, Unsupported> {
        let Some(aggregated) = self.aggregated else {
            return Err(unsupported(
                "plan",
                "no aggregate (the GPU runs filter + aggregate stages; row-returning stages \
                 run on the CPU)",
            ));
        };
        if aggregated.partial != want_partial {
            return Err(unsupported(
                "AggregateExec",
                if want_partial {
                    "a shard's part must end in a partial aggregate"
                } else {
                    "a partial aggregate without its final half"
                },
            ));
        }
        let aggregated = if want_partial {
            aggregated.into_states()?
        } else {
            aggregated
        };
        Ok(KernelPlan {
            files: self.files,
            columns: self.columns,
            filter: self.filter,
            keys: aggregated.keys,
            aggregates: aggregated.aggregates,
            output: aggregated.output,
            order: aggregated.order,
            limit: aggregated.limit,
        })
    }
}

impl Aggregated {
    /// A partial aggregate as a kernel plan's output: every aggregate becomes the aggregates
    /// that compute its state (`avg`: count, then sum), and the output is the keys, then the
    /// states, named and typed as DataFusion's partial aggregate does (but an `avg`'s count
    /// as `Int64`).
    fn into_states(self) -> Result<Aggregated, Unsupported> {
        let name = "AggregateExec";
        let schema = self
            .partial_schema
            .clone()
            .ok_or_else(|| unsupported(name, "a partial aggregate without its schema"))?;
        let fields = schema.fields();
        let mut aggregates = Vec::new();
        for aggregate in &self.aggregates {
            match aggregate.func {
                AggFunc::Avg => {
                    let sum_type = fields
                        .get(self.keys.len() + aggregates.len() + 1)
                        .map(|f| f.data_type().clone())
                        .ok_or_else(|| unsupported(name, "an avg without its state"))?;
                    check_aggregate(AggFunc::Sum, &aggregate.arg, &sum_type)
                        .map_err(|reason| unsupported(name, reason))?;
                    aggregates.push(Aggregate {
                        func: AggFunc::Count,
                        arg: aggregate.arg.clone(),
                        output: DataType::Int64,
                    });
                    aggregates.push(Aggregate {
                        func: AggFunc::Sum,
                        arg: aggregate.arg.clone(),
                        output: sum_type,
                    });
                }
                _ => aggregates.push(aggregate.clone()),
            }
        }
        let width = self.keys.len() + aggregates.len();
        if fields.len() != width {
            return Err(unsupported(
                name,
                format!(
                    "a partial aggregate of {} columns, the GPU makes {width}",
                    fields.len()
                ),
            ));
        }
        let output = fields
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let data_type = if i >= self.keys.len() {
                    aggregates[i - self.keys.len()].output.clone()
                } else {
                    field.data_type().clone()
                };
                (
                    i,
                    Arc::new(field.as_ref().clone().with_data_type(data_type)),
                )
            })
            .collect();
        Ok(Aggregated {
            aggregates,
            output,
            partial: false,
            partial_schema: None,
            ..self
        })
    }
}

fn final_output(schema: &SchemaRef, width: usize) -> Vec<(usize, FieldRef)> {
    schema
        .fields()
        .iter()
        .take(width)
        .cloned()
        .enumerate()
        .collect()
}

impl Aggregated {
    /// Nodes above the aggregate: its final half, renames, sort and limit of its rows.
    fn apply(&mut self, node: &Arc<dyn ExecutionPlan>) -> Result<(), Unsupported> {
        let name = node.name();
        let any: &dyn ExecutionPlan = node.as_ref();
        if let Some(aggregate) = any.downcast_ref::<AggregateExec>() {
            if !self.partial
                || !matches!(
                    aggregate.mode(),
                    AggregateMode::Final | AggregateMode::FinalPartitioned
                )
            {
                return Err(unsupported(
                    name,
                    "a second aggregate (DISTINCT and nested aggregates run on the CPU)",
                ));
            }
            let width = self.keys.len() + self.aggregates.len();
            if aggregate.schema().fields().len() != width {
                return Err(unsupported(name, "an aggregate with extra output columns"));
            }
            self.output = final_output(&aggregate.schema(), width);
            self.partial = false;
            return Ok(());
        }
        if self.partial {
            return Err(unsupported(name, "between the two halves of an aggregate"));
        }
        if let Some(projection) = any.downcast_ref::<ProjectionExec>() {
            let mut output = Vec::new();
            for p in projection.expr() {
                let Some(column) = p.expr.downcast_ref::<Column>() else {
                    return Err(unsupported(
                        name,
                        format!("`{}` computed from aggregated values", p.expr),
                    ));
                };
                let (source, field) = &self.output[column.index()];
                let field = field.as_ref().clone().with_name(&p.alias);
                output.push((*source, Arc::new(field)));
            }
            // Sort keys refer to the previous output's positions; map them through.
            self.output = output;
            return Ok(());
        }
        let (ordering, fetch) = if let Some(sort) = any.downcast_ref::<SortExec>() {
            (Some(sort.expr()), sort.fetch())
        } else if let Some(merge) = any.downcast_ref::<SortPreservingMergeExec>() {
            (Some(merge.expr()), merge.fetch())
        } else if let Some(limit) = any.downcast_ref::<GlobalLimitExec>() {
            if limit.skip() > 0 {
                return Err(unsupported(name, "OFFSET"));
            }
            (None, limit.fetch())
        } else if let Some(limit) = any.downcast_ref::<LocalLimitExec>() {
            (None, Some(limit.fetch()))
        } else {
            return Err(unsupported(
                name,
                "not a sort, limit or rename of the aggregated rows",
            ));
        };
        if let Some(ordering) = ordering {
            let mut order = Vec::new();
            for sort in ordering.iter() {
                let Some(column) = sort.expr.downcast_ref::<Column>() else {
                    return Err(unsupported(
                        name,
                        format!("ordering by `{}`, not a column", sort.expr),
                    ));
                };
                order.push(OrderKey {
                    column: self.output[column.index()].0,
                    descending: sort.options.descending,
                    nulls_first: sort.options.nulls_first,
                });
            }
            // A merge of sorted partitions repeats the sort (with the limit, a top-k): the
            // same order is the same rows; another order after a limit is not.
            if self.limit.is_some() && order != self.order {
                return Err(unsupported(name, "a new order after a LIMIT"));
            }
            self.order = order;
        }
        if let Some(fetch) = fetch {
            self.limit = Some(self.limit.map_or(fetch, |l| l.min(fetch)));
        }
        Ok(())
    }
}

fn check_aggregate(func: AggFunc, arg: &Expr, output: &DataType) -> Result<(), String> {
    let ty = arg.ty();
    let fits = match (func, ty) {
        (AggFunc::Count, _) => matches!(output, DataType::Int64),
        (_, Ty::Text | Ty::Bool) => false,
        (AggFunc::Min | AggFunc::Max, _) => Ty::of(output) == Some(ty),
        (AggFunc::Sum, Ty::Int) => matches!(output, DataType::Int64),
        (AggFunc::Sum, Ty::Float) => matches!(output, DataType::Float64),
        (AggFunc::Sum, Ty::Decimal { scale, .. }) => {
            matches!(output, DataType::Decimal128(_, s) if *s == scale)
        }
        (AggFunc::Avg, Ty::Int | Ty::Float) => matches!(output, DataType::Float64),
        (AggFunc::Avg, Ty::Decimal { scale, .. }) => {
            matches!(output, DataType::Decimal128(_, s) if *s >= scale)
        }
        (AggFunc::Sum | AggFunc::Avg, Ty::Date) => false,
    };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "{}({}) returning {output}",
            func.name(),
            describe(ty)
        ))
    }
}

fn describe(ty: Ty) -> String {
    match ty {
        Ty::Bool => "boolean".into(),
        Ty::Int => "integer".into(),
        Ty::Date => "date".into(),
        Ty::Decimal { precision, scale } => format!("decimal({precision}, {scale})"),
        Ty::Float => "float".into(),
        Ty::Text => "string".into(),
    }
}

/// Translates one physical expression; `row` gives the expression each input column stands
/// for (the projections below, substituted in).
fn expr(e: &Arc<dyn PhysicalExpr>, row: &[Expr], node: &str) -> Result<Expr, Unsupported> {
    let any: &dyn PhysicalExpr = e.as_ref();
    if let Some(column) = any.downcast_ref::<Column>() {
        return row
            .get(column.index())
            .cloned()
            .ok_or_else(|| unsupported(node, format!("column {column} is out of range")));
    }
    if let Some(literal) = any.downcast_ref::<Literal>() {
        return literal_expr(literal.value()).map_err(|reason| unsupported(node, reason));
    }
    if let Some(binary) = any.downcast_ref::<BinaryExpr>() {
        let left = expr(binary.left(), row, node)?;
        let right = expr(binary.right(), row, node)?;
        return binary_expr(*binary.op(), left, right)
            .map_err(|reason| unsupported(node, format!("`{e}`: {reason}")));
    }
    if let Some(not) = any.downcast_ref::<NotExpr>() {
        let inner = expr(not.arg(), row, node)?;
        return Ok(Expr::Not(Box::new(inner)));
    }
    if let Some(is_null) = any.downcast_ref::<IsNullExpr>() {
        return Ok(Expr::IsNull(Box::new(expr(is_null.arg(), row, node)?)));
    }
    if let Some(is_not_null) = any.downcast_ref::<IsNotNullExpr>() {
        return Ok(Expr::IsNotNull(Box::new(expr(
            is_not_null.arg(),
            row,
            node,
        )?)));
    }
    if let Some(negative) = any.downcast_ref::<NegativeExpr>() {
        let inner = expr(negative.arg(), row, node)?;
        return match inner.ty() {
            Ty::Int | Ty::Decimal { .. } | Ty::Float => Ok(Expr::Negate(Box::new(inner))),
            ty => Err(unsupported(node, format!("negating a {}", describe(ty)))),
        };
    }
    if let Some(in_list) = any.downcast_ref::<InListExpr>() {
        let inner = expr(in_list.expr(), row, node)?;
        if inner.ty() == Ty::Float {
            return Err(unsupported(node, format!("`{e}`: IN lists of floats")));
        }
        let mut list = Vec::new();
        for item in in_list.list() {
            match expr(item, row, node)? {
                Expr::Literal { value, ty } if ty == inner.ty() || value == Lit::Null => {
                    list.push(value)
                }
                _ => {
                    return Err(unsupported(
                        node,
                        format!("`{e}`: IN lists must hold literals of the column's type"),
                    ));
                }
            }
        }
        return Ok(Expr::InList {
            expr: Box::new(inner),
            list,
            negated: in_list.negated(),
        });
    }
    let cast = if let Some(cast) = any.downcast_ref::<CastExpr>() {
        Some((cast.expr(), cast.cast_type()))
    } else {
        any.downcast_ref::<TryCastExpr>()
            .map(|cast| (cast.expr(), cast.cast_type()))
    };
    if let Some((inner, to)) = cast {
        let inner = expr(inner, row, node)?;
        return cast_expr(inner, to)
            .map_err(|reason| unsupported(node, format!("`{e}`: {reason}")));
    }
    Err(unsupported(
        node,
        format!("the expression `{e}` (functions and CASE run on the CPU)"),
    ))
}

fn literal_expr(value: &ScalarValue) -> Result<Expr, String> {
    let (value, ty) = match value {
        ScalarValue::Boolean(v) => (v.map_or(Lit::Null, Lit::Bool), Ty::Bool),
        ScalarValue::Int8(v) => (v.map_or(Lit::Null, |v| Lit::Int(v.into())), Ty::Int),
        ScalarValue::Int16(v) => (v.map_or(Lit::Null, |v| Lit::Int(v.into())), Ty::Int),
        ScalarValue::Int32(v) => (v.map_or(Lit::Null, |v| Lit::Int(v.into())), Ty::Int),
        ScalarValue::Int64(v) => (v.map_or(Lit::Null, |v| Lit::Int(v.into())), Ty::Int),
        ScalarValue::UInt8(v) => (v.map_or(Lit::Null, |v| Lit::Int(v.into())), Ty::Int),
        ScalarValue::UInt16(v) => (v.map_or(Lit::Null, |v| Lit::Int(v.into())), Ty::Int),
        ScalarValue::UInt32(v) => (v.map_or(Lit::Null, |v| Lit::Int(v.into())), Ty::Int),
        ScalarValue::Date32(v) => (v.map_or(Lit::Null, |v| Lit::Int(v.into())), Ty::Date),
        ScalarValue::Decimal128(v, precision, scale) if *scale >= 0 => (
            v.map_or(Lit::Null, Lit::Int),
            Ty::Decimal {
                precision: *precision,
                scale: *scale,
            },
        ),
        ScalarValue::Float32(v) => (v.map_or(Lit::Null, |v| Lit::Float(v.into())), Ty::Float),
        ScalarValue::Float64(v) => (v.map_or(Lit::Null, Lit::Float), Ty::Float),
        ScalarValue::Utf8(v) | ScalarValue::Utf8View(v) | ScalarValue::LargeUtf8(v) => (
            v.as_ref().map_or(Lit::Null, |v| Lit::Text(v.clone())),
            Ty::Text,
        ),
        other => return Err(format!("the literal {other} of type {}", other.data_type())),
    };
    Ok(Expr::Literal { value, ty })
}

fn binary_expr(op: Operator, left: Expr, right: Expr) -> Result<Expr, String> {
    let (l, r) = (left.ty(), right.ty());
    let compare = |op| {
        if l != r && !(l.integral() && r.integral() && l.scale() == r.scale()) {
            return Err(format!(
                "comparing a {} with a {}",
                describe(l),
                describe(r)
            ));
        }
        if l == Ty::Text && !matches!(op, CmpOp::Eq | CmpOp::NotEq) {
            return Err("ordering strings (only = and <> on strings)".into());
        }
        Ok(Expr::Compare {
            op,
            left: Box::new(left.clone()),
            right: Box::new(right.clone()),
        })
    };
    let logic = |make: fn(Box<Expr>, Box<Expr>) -> Expr| {
        if l != Ty::Bool || r != Ty::Bool {
            return Err("AND/OR of non-booleans".to_string());
        }
        Ok(make(Box::new(left.clone()), Box::new(right.clone())))
    };
    let arith = |op| {
        let ty = arith_type(op, l, r)?;
        Ok(Expr::Arith {
            op,
            left: Box::new(left.clone()),
            right: Box::new(right.clone()),
            ty,
        })
    };
    match op {
        Operator::Eq => compare(CmpOp::Eq),
        Operator::NotEq => compare(CmpOp::NotEq),
        Operator::Lt => compare(CmpOp::Lt),
        Operator::LtEq => compare(CmpOp::LtEq),
        Operator::Gt => compare(CmpOp::Gt),
        Operator::GtEq => compare(CmpOp::GtEq),
        Operator::And => logic(Expr::And),
        Operator::Or => logic(Expr::Or),
        Operator::Plus => arith(ArithOp::Add),
        Operator::Minus => arith(ArithOp::Sub),
        Operator::Multiply => arith(ArithOp::Mul),
        other => Err(format!("the operator {other}")),
    }
}

/// The result type of arithmetic, as Arrow's kernels compute it.
fn arith_type(op: ArithOp, l: Ty, r: Ty) -> Result<Ty, String> {
    match (l, r) {
        (Ty::Int, Ty::Int) => Ok(Ty::Int),
        (Ty::Float, Ty::Float) => Ok(Ty::Float),
        (
            Ty::Decimal {
                precision: p1,
                scale: s1,
            },
            Ty::Decimal {
                precision: p2,
                scale: s2,
            },
        ) => {
            let (precision, scale) = match op {
                ArithOp::Add | ArithOp::Sub => {
                    let scale = s1.max(s2);
                    let whole = (p1 as i16 - s1 as i16).max(p2 as i16 - s2 as i16);
                    ((whole + scale as i16 + 1).min(38) as u8, scale)
                }
                ArithOp::Mul => ((p1 as u16 + p2 as u16 + 1).min(38) as u8, s1 + s2),
            };
            if scale > 38 {
                return Err("a decimal scale above 38".into());
            }
            Ok(Ty::Decimal { precision, scale })
        }
        _ => Err(format!(
            "arithmetic on a {} and a {}",
            describe(l),
            describe(r)
        )),
    }
}

fn cast_expr(inner: Expr, to: &DataType) -> Result<Expr, String> {
    let from = inner.ty();
    let Some(ty) = Ty::of(to) else {
        return Err(format!("a cast to {to}"));
    };
    let widening = match (from, ty) {
        // Integer widths are not tracked: only a cast to the widest cannot overflow.
        (Ty::Int, Ty::Int) => matches!(to, DataType::Int64),
        (a, b) if a == b => true,
        (Ty::Int, Ty::Float | Ty::Decimal { .. }) => true,
        (Ty::Decimal { scale: s1, .. }, Ty::Decimal { scale: s2, .. }) => s2 >= s1,
        (Ty::Decimal { .. }, Ty::Float) => true,
        _ => false,
    };
    if !widening {
        return Err(format!("a cast from {} to {to}", describe(from)));
    }
    if from == ty {
        return Ok(inner);
    }
    Ok(Expr::Cast {
        expr: Box::new(inner),
        ty,
    })
}
