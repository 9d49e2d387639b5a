//! The benchmark's Q6 input: four lineitem-like columns (quantity, price, discount, ship date)
//! in TPC-H's value ranges, made in memory from a fixed random sequence, so every run and
//! both devices see the same rows.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Date32Array, Decimal128Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use amdahl_executors::dense;

pub fn schema() -> SchemaRef {
    let money = DataType::Decimal128(15, 2);
    Arc::new(Schema::new(vec![
        Field::new("l_quantity", money.clone(), false),
        Field::new("l_extendedprice", money.clone(), false),
        Field::new("l_discount", money, false),
        Field::new("l_shipdate", DataType::Date32, false),
    ]))
}

/// `rows` lineitem-like rows in TPC-H's value ranges, in batches of 1M rows, made on every
/// core (each batch from its own stretch of the random sequence, so the result is the same
/// whatever the number of cores).
pub fn q6_batches(rows: usize) -> Vec<RecordBatch> {
    let starts: Vec<usize> = (0..rows).step_by(1 << 20).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = starts.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = starts
            .chunks(per)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&start| q6_batch(start, (1 << 20).min(rows - start)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("generator thread"))
            .collect()
    })
}

/// Rows `start .. start + n` of the Q6 table.
fn q6_batch(start: usize, n: usize) -> RecordBatch {
    let mut i = 4 * start as u64;
    let mut next = |m: u64| {
        i += 1;
        (dense::uniform(7, i) as f64 * 0.5 + 0.5) * m as f64
    };
    let quantity: Vec<i128> = (0..n).map(|_| (next(50) as i128 + 1) * 100).collect();
    let price: Vec<i128> = (0..n).map(|_| next(10_000_000) as i128 + 90_000).collect();
    let discount: Vec<i128> = (0..n).map(|_| next(11) as i128).collect();
    let date: Vec<i32> = (0..n).map(|_| 8_036 + next(2_526) as i32).collect();
    let decimal = |v: Vec<i128>| -> ArrayRef {
        Arc::new(
            Decimal128Array::from(v)
                .with_precision_and_scale(15, 2)
                .expect("decimal(15, 2)"),
        )
    };
    RecordBatch::try_new(
        schema(),
        vec![
            decimal(quantity),
            decimal(price),
            decimal(discount),
            Arc::new(Date32Array::from(date)),
        ],
    )
    .expect("batch")
}
