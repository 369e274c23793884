//! The pure `f64` rules: each maps the `T x T` Gram matrix `G[i][j] = <g_i, g_j>` (and, where the method
//! needs them, the loss values or its own state) to the combination coefficients `alpha`, so that the
//! shared gradient is `d = sum_i alpha_i g_i`. No tensors here; every property is tested on small
//! matrices, and where a property reads more simply on vectors a flat-vector version is given too.

pub mod aligned;
pub mod cagrad;
pub mod imtl;
pub mod mgda;
pub mod nash;
pub mod pcgrad;

use crate::linalg::{dot, mat_vec};

/// The Gram matrix of row vectors: `G[i][j] = <v_i, v_j>`.
pub fn gram_of(vectors: &[Vec<f64>]) -> Vec<Vec<f64>> {
    vectors
        .iter()
        .map(|a| vectors.iter().map(|b| dot(a, b)).collect())
        .collect()
}

/// `sum_i alpha_i v_i` for row vectors `v_i`.
pub fn combine(vectors: &[Vec<f64>], alpha: &[f64]) -> Vec<f64> {
    let dim = vectors.first().map_or(0, Vec::len);
    let mut out = vec![0.0; dim];
    for (v, &a) in vectors.iter().zip(alpha) {
        for (o, x) in out.iter_mut().zip(v) {
            *o += a * x;
        }
    }
    out
}

/// The task gradients' norms `sqrt(G_ii)` (negative rounding clamped to 0).
pub fn norms(gram: &[Vec<f64>]) -> Vec<f64> {
    (0..gram.len())
        .map(|i| gram[i][i].max(0.0).sqrt())
        .collect()
}

/// The cosine between each task gradient and `d = sum_k alpha_k g_k`, through the Gram matrix (0 where
/// either vector is zero).
pub fn cosines_to_combination(gram: &[Vec<f64>], alpha: &[f64]) -> Vec<f64> {
    let g_alpha = mat_vec(gram, alpha);
    let d_norm = dot(alpha, &g_alpha).max(0.0).sqrt();
    norms(gram)
        .iter()
        .zip(&g_alpha)
        .map(|(&n, &p)| {
            if n > 0.0 && d_norm > 0.0 {
                p / (n * d_norm)
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Strategies for random gradient sets.
    use proptest::prelude::*;

    /// `T` random vectors of dimension `P` (entries in [-1, 1]), `T` in `tasks`.
    pub fn gradients(
        tasks: std::ops::RangeInclusive<usize>,
        dim: usize,
    ) -> impl Strategy<Value = Vec<Vec<f64>>> {
        tasks.prop_flat_map(move |t| {
            prop::collection::vec(prop::collection::vec(-1.0f64..1.0, dim), t)
        })
    }
}
