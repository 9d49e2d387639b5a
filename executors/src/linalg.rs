//! The arithmetic of the dense stages on the CPU: row-major `f32` matrices, `A · Bᵀ` by the
//! `gemm` crate (packed, SIMD micro-kernels, all cores), `knn` in bounded blocks with a heap per
//! query, MLPs from safetensors files, and the generator of random vectors. No I/O but the
//! model file; [`crate::dense`] reads tables and writes outputs.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use amdahl_dags::{Activation, Metric};

/// A row-major matrix: `rows` vectors of `dim` floats.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn new(rows: usize, dim: usize, data: Vec<f32>) -> Matrix {
        assert_eq!(data.len(), rows * dim, "matrix data length");
        Matrix { rows, dim, data }
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// `a · bᵀ` for row-major `a` (m×k) and `b` (n×k): an m×n row-major result.
pub fn multiply_transposed(
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    threads: usize,
) -> Vec<f32> {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), n * k);
    let mut out = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return out;
    }
    let parallelism = if threads > 1 && m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the pointers and strides describe `out` (m×n, row-major), `a` (m×k, row-major)
    // and bᵀ (k×n: element (l, j) is b[j*k + l]), all in bounds by the asserts above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    out
}

/// One neighbour of a query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Neighbour {
    pub index: u64,
    pub score: f32,
}

/// Heap entry ordered so that the *worst* kept neighbour is at the top.
#[derive(Clone, Copy)]
struct Kept {
    /// Larger is better (distances are negated).
    key: f32,
    index: u64,
}

impl Kept {
    /// Whether `self` is better than `other`: larger key, then smaller index; NaN is worst.
    fn better(&self, other: &Kept) -> bool {
        match (self.key.is_nan(), other.key.is_nan()) {
            (false, true) => true,
            (true, _) => false,
            _ => match self.key.partial_cmp(&other.key) {
                Some(Ordering::Greater) => true,
                Some(Ordering::Less) => false,
                _ => self.index < other.index,
            },
        }
    }
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Kept {}
impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Kept {
    /// The heap's greatest is the worst.
    fn cmp(&self, other: &Self) -> Ordering {
        if self.index == other.index && self.key.to_bits() == other.key.to_bits() {
            Ordering::Equal
        } else if self.better(other) {
            Ordering::Less
        } else {
            Ordering::Greater
        }
    }
}

/// Queries per block and base rows per block: a block of scores is at most 64 MB.
const QUERY_BLOCK: usize = 256;
const BASE_BLOCK: usize = 65_536;

/// The `k` nearest base rows of each query (best first). Cosine normalises both sides; L2
/// reports the Euclidean distance (smallest first); dot and cosine report the similarity.
pub fn knn(
    base: &Matrix,
    queries: &Matrix,
    k: usize,
    metric: Metric,
    threads: usize,
) -> Vec<Vec<Neighbour>> {
    knn_in_blocks(base, queries, k, metric, threads, (QUERY_BLOCK, BASE_BLOCK))
}

/// [`knn`] with the block sizes (queries, base rows) given.
fn knn_in_blocks(
    base: &Matrix,
    queries: &Matrix,
    k: usize,
    metric: Metric,
    threads: usize,
    (query_block, base_block): (usize, usize),
) -> Vec<Vec<Neighbour>> {
    assert_eq!(base.dim, queries.dim, "vector lengths");
    let dim = base.dim;
    let (base_data, query_data);
    let (base_m, query_m) = if metric == Metric::Cosine {
        base_data = normalised(base);
        query_data = normalised(queries);
        (&base_data[..], &query_data[..])
    } else {
        (&base.data[..], &queries.data[..])
    };
    let base_norms: Vec<f32> = if metric == Metric::L2 {
        (0..base.rows).map(|i| squared_norm(base.row(i))).collect()
    } else {
        Vec::new()
    };
    let k = k.min(base.rows);
    let mut results = Vec::with_capacity(queries.rows);
    for q0 in (0..queries.rows).step_by(query_block) {
        let qn = query_block.min(queries.rows - q0);
        let q_block = &query_m[q0 * dim..(q0 + qn) * dim];
        let query_norms: Vec<f32> = (0..qn)
            .map(|i| squared_norm(&q_block[i * dim..(i + 1) * dim]))
            .collect();
        let mut heaps: Vec<BinaryHeap<Kept>> =
            (0..qn).map(|_| BinaryHeap::with_capacity(k + 1)).collect();
        for b0 in (0..base.rows).step_by(base_block) {
            let bn = base_block.min(base.rows - b0);
            let b_block = &base_m[b0 * dim..(b0 + bn) * dim];
            let scores = multiply_transposed(q_block, b_block, qn, bn, dim, threads);
            for (qi, heap) in heaps.iter_mut().enumerate() {
                let row = &scores[qi * bn..(qi + 1) * bn];
                for (bj, &dot) in row.iter().enumerate() {
                    let key = match metric {
                        Metric::Dot | Metric::Cosine => dot,
                        // Larger is better: the negated squared distance.
                        Metric::L2 => -(query_norms[qi] + base_norms[b0 + bj] - 2.0 * dot).max(0.0),
                    };
                    let candidate = Kept {
                        key,
                        index: (b0 + bj) as u64,
                    };
                    if heap.len() < k {
                        heap.push(candidate);
                    } else if let Some(worst) = heap.peek()
                        && candidate.better(worst)
                    {
                        heap.pop();
                        heap.push(candidate);
                    }
                }
            }
        }
        for heap in heaps {
            let mut kept = heap.into_vec();
            kept.sort_by(|a, b| {
                if a.better(b) {
                    Ordering::Less
                } else if b.better(a) {
                    Ordering::Greater
                } else {
                    Ordering::Equal
                }
            });
            results.push(
                kept.into_iter()
                    .map(|n| Neighbour {
                        index: n.index,
                        score: match metric {
                            Metric::L2 => (-n.key).sqrt(),
                            _ => n.key,
                        },
                    })
                    .collect(),
            );
        }
    }
    results
}

fn squared_norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum()
}

/// Rows scaled to unit length (a zero row stays zero).
fn normalised(m: &Matrix) -> Vec<f32> {
    let mut out = m.data.clone();
    for row in out.chunks_mut(m.dim.max(1)) {
        let norm = squared_norm(row).sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|x| *x /= norm);
        }
    }
    out
}

pub(crate) use amdahl_planner::model::natural;
pub use amdahl_planner::model::{Layer, Mlp};

/// Running a model on vectors (the model itself, read and checked, is the planner's).
pub trait Forward {
    /// Runs the network on `rows` input vectors (row-major); returns rows × outputs.
    fn forward(&self, input: &[f32], rows: usize, threads: usize) -> Vec<f32>;
}

impl Forward for Mlp {
    fn forward(&self, input: &[f32], rows: usize, threads: usize) -> Vec<f32> {
        forward(self, input, rows, threads)
    }
}

/// Runs the network on `rows` input vectors (row-major); returns rows × outputs.
pub fn forward(mlp: &Mlp, input: &[f32], rows: usize, threads: usize) -> Vec<f32> {
    let mut current = input.to_vec();
    let last = mlp.layers.len() - 1;
    for (i, layer) in mlp.layers.iter().enumerate() {
        let mut next = multiply_transposed(
            &current,
            &layer.weight,
            rows,
            layer.outputs,
            layer.inputs,
            threads,
        );
        for row in next.chunks_mut(layer.outputs.max(1)) {
            for (x, b) in row.iter_mut().zip(&layer.bias) {
                *x += b;
                if i != last {
                    *x = match mlp.activation {
                        Activation::Relu => x.max(0.0),
                        Activation::Tanh => x.tanh(),
                        Activation::Sigmoid => 1.0 / (1.0 + (-*x).exp()),
                    };
                }
            }
        }
        current = next;
    }
    current
}

/// Element `index` of the generated vectors of `seed`: uniform in [-1, 1) (SplitMix64 of the
/// pair, so any part can be made alone and the same seed always gives the same data).
pub fn uniform(seed: u64, index: u64) -> f32 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // 24 random bits: exact in f32.
    ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|l| a[i * k + l] * b[j * k + l]).sum();
            }
        }
        out
    }

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn gemm_equals_the_definition_on_odd_shapes() {
        for (m, n, k) in [(1, 1, 1), (3, 5, 7), (33, 17, 129), (70, 65, 3)] {
            let a = pseudo(m * k, 1);
            let b = pseudo(n * k, 2);
            let fast = multiply_transposed(&a, &b, m, n, k, 2);
            let slow = naive(&a, &b, m, n, k);
            for (x, y) in fast.iter().zip(&slow) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                    "{m}×{n}×{k}: {x} vs {y}"
                );
            }
        }
    }

    #[test]
    fn knn_equals_brute_force_for_every_metric() {
        let (rows, queries, dim) = (300, 37, 9);
        let base = Matrix::new(rows, dim, pseudo(rows * dim, 3));
        let q = Matrix::new(queries, dim, pseudo(queries * dim, 4));
        for (metric, blocks) in [
            (Metric::Dot, (7, 50)),
            (Metric::Cosine, (256, 65_536)),
            (Metric::L2, (10, 31)),
        ] {
            // Small blocks: the best of each base block must merge across blocks.
            let found = knn_in_blocks(&base, &q, 5, metric, 2, blocks);
            for (qi, list) in found.iter().enumerate() {
                let mut all: Vec<(f32, usize)> = (0..rows)
                    .map(|bi| {
                        let (x, y) = (q.row(qi), base.row(bi));
                        let dot: f32 = x.iter().zip(y).map(|(a, b)| a * b).sum();
                        let score = match metric {
                            Metric::Dot => dot,
                            Metric::Cosine => {
                                dot / (squared_norm(x).sqrt() * squared_norm(y).sqrt())
                            }
                            Metric::L2 => {
                                -x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum::<f32>()
                            }
                        };
                        (score, bi)
                    })
                    .collect();
                all.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
                let expected: Vec<usize> = all.iter().take(5).map(|x| x.1).collect();
                let got: Vec<usize> = list.iter().map(|n| n.index as usize).collect();
                // Float rounding may swap near-ties: compare scores, not only indices.
                for (r, (g, e)) in got.iter().zip(&expected).enumerate() {
                    let score_of = |i: usize| all.iter().find(|x| x.1 == i).unwrap().0;
                    assert!(
                        g == e || (score_of(*g) - score_of(*e)).abs() < 1e-5,
                        "{metric:?} query {qi} rank {r}: {got:?} vs {expected:?}"
                    );
                }
                if metric == Metric::L2 {
                    let want = (-all[0].0).sqrt();
                    assert!(
                        (list[0].score - want).abs() < 1e-4,
                        "distance {} vs {want}",
                        list[0].score
                    );
                }
            }
        }
    }

    #[test]
    fn knn_with_k_above_the_base_returns_the_whole_base_in_order() {
        let base = Matrix::new(3, 1, vec![1.0, 3.0, 2.0]);
        let q = Matrix::new(1, 1, vec![1.0]);
        let found = knn(&base, &q, 10, Metric::Dot, 1);
        let order: Vec<u64> = found[0].iter().map(|n| n.index).collect();
        assert_eq!(order, [1, 2, 0]);
    }

    #[test]
    fn natural_order_puts_2_before_10() {
        let mut names = vec!["layer10", "layer2", "layer1", "out"];
        names.sort_by_key(|a| natural(a));
        assert_eq!(names, ["layer1", "layer2", "layer10", "out"]);
    }
}
