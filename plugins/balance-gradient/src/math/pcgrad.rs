//! PCGrad (Yu et al., NeurIPS 2020) in LibMTL's formulation: `pc_i` starts at `g_i`; for each `i`, over
//! the tasks `j` in a random order (all tasks, `i` included), when `<pc_i, g_j> < 0` the conflicting
//! component is removed, `pc_i -= <pc_i, g_j> / |g_j|^2 g_j`. The result is `sum_i pc_i`.
//!
//! In coefficient space `pc_i = sum_k C_ik g_k` with `C = I` at the start, every inner product goes
//! through the Gram matrix, and the result is `alpha_k = sum_i C_ik` (each `>= 1`: a projection only
//! adds a non-negative multiple of `g_j`). LibMTL divides by `|g_j|^2 + 1e-8`; here the division is
//! exact (`<pc_i, g_j> < 0` implies `g_j != 0`), so the result does not depend on the gradients' scale.

use crate::linalg::dot;

/// The coefficient matrix `C` (`pc_i = sum_k C[i][k] g_k`) for the given orders (`orders[i]` is the
/// order of `j` for task `i`; each a permutation of `0..T`).
pub fn coefficient_matrix(gram: &[Vec<f64>], orders: &[Vec<usize>]) -> Vec<Vec<f64>> {
    let t = gram.len();
    let mut c: Vec<Vec<f64>> = (0..t)
        .map(|i| (0..t).map(|k| if i == k { 1.0 } else { 0.0 }).collect())
        .collect();
    for (i, order) in orders.iter().enumerate().take(t) {
        for &j in order {
            project_step(gram, &mut c[i], j);
        }
    }
    c
}

/// One projection step in coefficient space: with `pc = sum_k row[k] g_k`, when `<pc, g_j> < 0` removes
/// the component along `g_j`. Returns `<pc, g_j>` before the step.
pub fn project_step(gram: &[Vec<f64>], row: &mut [f64], j: usize) -> f64 {
    let inner: f64 = row.iter().zip(gram).map(|(c, g)| c * g[j]).sum();
    if inner < 0.0 && gram[j][j] > 0.0 {
        row[j] -= inner / gram[j][j];
    }
    inner
}

/// `alpha_k = sum_i C[i][k]`: the combination coefficients of `sum_i pc_i`.
pub fn pcgrad(gram: &[Vec<f64>], orders: &[Vec<usize>]) -> Vec<f64> {
    let c = coefficient_matrix(gram, orders);
    (0..gram.len())
        .map(|k| c.iter().map(|row| row[k]).sum())
        .collect()
}

/// The same on flat vectors: returns the projected gradients `pc_i` (their sum is PCGrad's direction).
pub fn pcgrad_flat(grads: &[Vec<f64>], orders: &[Vec<usize>]) -> Vec<Vec<f64>> {
    let mut pc: Vec<Vec<f64>> = grads.to_vec();
    for (i, order) in orders.iter().enumerate().take(grads.len()) {
        for &j in order {
            let inner = dot(&pc[i], &grads[j]);
            let norm2 = dot(&grads[j], &grads[j]);
            if inner < 0.0 && norm2 > 0.0 {
                let f = inner / norm2;
                for (p, g) in pc[i].iter_mut().zip(&grads[j]) {
                    *p -= f * g;
                }
            }
        }
    }
    pc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::{combine, gram_of, testing::gradients};
    use balance_core::rng::SplitMix64;
    use proptest::prelude::*;

    fn orders(t: usize, seed: u64) -> Vec<Vec<usize>> {
        let mut rng = SplitMix64::new(seed);
        (0..t).map(|_| rng.permutation(t)).collect()
    }

    #[test]
    fn two_conflicting_gradients_by_hand() {
        // g1 = (1, 0), g2 = (-1, 1): <g1, g2> = -1.
        // pc1 = g1 + 1/2 g2 = (0.5, 0.5); pc2 = g2 + 1 g1 = (0, 1).
        let g = vec![vec![1.0, 0.0], vec![-1.0, 1.0]];
        let alpha = pcgrad(&gram_of(&g), &[vec![0, 1], vec![1, 0]]);
        assert_eq!(alpha, vec![2.0, 1.5]);
    }

    #[test]
    fn degenerate_inputs() {
        let zero = pcgrad(&[vec![0.0, 0.0], vec![0.0, 1.0]], &[vec![0, 1], vec![1, 0]]);
        assert_eq!(zero, vec![1.0, 1.0]);
        assert_eq!(pcgrad(&[vec![4.0]], &[vec![0]]), vec![1.0]);
    }

    proptest! {
        #[test]
        fn coefficients_match_the_flat_vector_version(g in gradients(1..=6, 5), seed in any::<u64>()) {
            let t = g.len();
            let ord = orders(t, seed);
            let alpha = pcgrad(&gram_of(&g), &ord);
            let direct: Vec<f64> = combine(&pcgrad_flat(&g, &ord), &vec![1.0; t]);
            let via = combine(&g, &alpha);
            for (a, b) in direct.iter().zip(&via) {
                prop_assert!((a - b).abs() < 1e-10, "{:?} vs {:?}", direct, via);
            }
            prop_assert!(alpha.iter().all(|&a| a >= 1.0));
        }

        #[test]
        fn two_tasks_leave_no_conflict(g in gradients(2..=2, 4), seed in any::<u64>()) {
            let pc = pcgrad_flat(&g, &orders(2, seed));
            for (i, p) in pc.iter().enumerate() {
                for (j, gj) in g.iter().enumerate() {
                    prop_assert!(dot(p, gj) >= -1e-12, "<pc_{}, g_{}> = {}", i, j, dot(p, gj));
                }
            }
        }

        #[test]
        fn each_projection_removes_its_conflict(g in gradients(2..=6, 4), seed in any::<u64>()) {
            let t = g.len();
            let gram = gram_of(&g);
            for (i, order) in orders(t, seed).iter().enumerate() {
                let mut c: Vec<f64> = (0..t).map(|k| if k == i { 1.0 } else { 0.0 }).collect();
                for &j in order {
                    project_step(&gram, &mut c, j);
                    let col: Vec<f64> = (0..t).map(|k| gram[k][j]).collect();
                    let after = dot(&c, &col);
                    prop_assert!(after >= -1e-12, "after projecting on g_{}: {}", j, after);
                }
            }
        }
    }
}
