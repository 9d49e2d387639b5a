//! The output schemas of the task kinds that are not SQL, known without running them: what
//! validation plans downstream queries against and estimates size outputs by.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use amdahl_dags::TpchTable;

/// Whether a column type holds vectors the dense stages read.
pub fn is_vector(data_type: &DataType) -> bool {
    match data_type {
        DataType::FixedSizeList(item, _) | DataType::List(item) | DataType::LargeList(item) => {
            matches!(item.data_type(), DataType::Float32 | DataType::Float64)
        }
        _ => false,
    }
}

/// A column of `dim` 32-bit floats per row, as the dense stages write vectors.
pub fn vector_field(name: &str, dim: usize) -> Field {
    Field::new(
        name,
        DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float32, false)),
            dim as i32,
        ),
        false,
    )
}

/// The schema of `generate: { vectors }`: `id` and `vector`.
pub fn generated_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        vector_field("vector", dim),
    ]))
}

/// The output schemas of the dense kinds (the scalar ones; vector widths come at run time).
pub fn knn_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("query", DataType::Int64, false),
        Field::new("rank", DataType::Int32, false),
        Field::new("neighbour", DataType::Int64, false),
        Field::new("score", DataType::Float32, false),
    ]))
}

/// The schema of a matmul or score output: `row`, then the vector (or, for one value per
/// row, a plain `Float32` column).
pub fn vectors_schema(name: &str, dim: usize) -> SchemaRef {
    let value = if dim == 1 {
        Field::new(name, DataType::Float32, false)
    } else {
        vector_field(name, dim)
    };
    Arc::new(Schema::new(vec![
        Field::new("row", DataType::Int64, false),
        value,
    ]))
}

/// The schema of a TPC-H table, without building the generator (whose 300 MB text pool is
/// too heavy for `dags validate`). A test checks it against the generators.
pub fn tpch(table: TpchTable) -> SchemaRef {
    use DataType::{Date32, Int32, Int64, Utf8View};
    let money = DataType::Decimal128(15, 2);
    let columns: Vec<(&str, DataType)> = match table {
        TpchTable::Region => vec![
            ("r_regionkey", Int64),
            ("r_name", Utf8View),
            ("r_comment", Utf8View),
        ],
        TpchTable::Nation => vec![
            ("n_nationkey", Int64),
            ("n_name", Utf8View),
            ("n_regionkey", Int64),
            ("n_comment", Utf8View),
        ],
        TpchTable::Supplier => vec![
            ("s_suppkey", Int64),
            ("s_name", Utf8View),
            ("s_address", Utf8View),
            ("s_nationkey", Int64),
            ("s_phone", Utf8View),
            ("s_acctbal", money),
            ("s_comment", Utf8View),
        ],
        TpchTable::Customer => vec![
            ("c_custkey", Int64),
            ("c_name", Utf8View),
            ("c_address", Utf8View),
            ("c_nationkey", Int64),
            ("c_phone", Utf8View),
            ("c_acctbal", money),
            ("c_mktsegment", Utf8View),
            ("c_comment", Utf8View),
        ],
        TpchTable::Part => vec![
            ("p_partkey", Int64),
            ("p_name", Utf8View),
            ("p_mfgr", Utf8View),
            ("p_brand", Utf8View),
            ("p_type", Utf8View),
            ("p_size", Int32),
            ("p_container", Utf8View),
            ("p_retailprice", money),
            ("p_comment", Utf8View),
        ],
        TpchTable::PartSupp => vec![
            ("ps_partkey", Int64),
            ("ps_suppkey", Int64),
            ("ps_availqty", Int32),
            ("ps_supplycost", money),
            ("ps_comment", Utf8View),
        ],
        TpchTable::Orders => vec![
            ("o_orderkey", Int64),
            ("o_custkey", Int64),
            ("o_orderstatus", Utf8View),
            ("o_totalprice", money),
            ("o_orderdate", Date32),
            ("o_orderpriority", Utf8View),
            ("o_clerk", Utf8View),
            ("o_shippriority", Int32),
            ("o_comment", Utf8View),
        ],
        TpchTable::LineItem => vec![
            ("l_orderkey", Int64),
            ("l_partkey", Int64),
            ("l_suppkey", Int64),
            ("l_linenumber", Int32),
            ("l_quantity", money.clone()),
            ("l_extendedprice", money.clone()),
            ("l_discount", money.clone()),
            ("l_tax", money),
            ("l_returnflag", Utf8View),
            ("l_linestatus", Utf8View),
            ("l_shipdate", Date32),
            ("l_commitdate", Date32),
            ("l_receiptdate", Date32),
            ("l_shipinstruct", Utf8View),
            ("l_shipmode", Utf8View),
            ("l_comment", Utf8View),
        ],
    };
    Arc::new(Schema::new(
        columns
            .into_iter()
            .map(|(name, data_type)| Field::new(name, data_type, false))
            .collect::<Vec<_>>(),
    ))
}
