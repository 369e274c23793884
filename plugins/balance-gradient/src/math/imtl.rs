//! IMTL-G (Liu et al., ICLR 2021), LibMTL's closed form: with unit vectors `u_i = g_i / |g_i|`,
//! `D = [g_1 - g_j]_{j >= 2}`, `U = [u_1 - u_j]_{j >= 2}`, `alpha_{2..T} = (g_1 U^T)(D U^T)^{-1}` and
//! `alpha_1 = 1 - sum_{j >= 2} alpha_j`. The combination `d = sum_i alpha_i g_i` has equal projections
//! `<d, u_i>` on every task's direction. All inner products go through the Gram matrix:
//! `<g_a, u_b> = G_ab / |g_b|`.
//!
//! Raw coefficients can be negative (the balancer clamps them; see the crate docs). Degenerate inputs:
//! norms are floored at [`NORM_FLOOR`] (a zero gradient has no direction; LibMTL divides by zero), and
//! when `D U^T` is singular (identical gradients, `T = 1`) the equal split `alpha_i = 1 / T` is
//! returned, which satisfies the equal-projection condition whenever the gradients coincide.

use crate::linalg::solve;

/// Floor of the gradient norms.
pub const NORM_FLOOR: f64 = 1e-12;

/// The raw IMTL-G coefficients (they sum to 1; some may be negative). The flag is true when the
/// singular fallback (equal split) was used.
pub fn imtl(gram: &[Vec<f64>]) -> (Vec<f64>, bool) {
    let t = gram.len();
    if t <= 1 {
        return (vec![1.0; t], false);
    }
    let n: Vec<f64> = (0..t)
        .map(|i| gram[i][i].max(0.0).sqrt().max(NORM_FLOOR))
        .collect();
    // <g_a, u_b>
    let gu = |a: usize, b: usize| gram[a][b] / n[b];
    // a_j = <g_1, u_1 - u_j>, M_jk = <g_1 - g_j, u_1 - u_k>, j, k >= 2.
    let a: Vec<f64> = (1..t).map(|j| gu(0, 0) - gu(0, j)).collect();
    let m: Vec<Vec<f64>> = (1..t)
        .map(|j| {
            (1..t)
                .map(|k| gu(0, 0) - gu(0, k) - gu(j, 0) + gu(j, k))
                .collect()
        })
        .collect();
    // x = a^T M^{-1}  <=>  M^T x = a.
    let mt: Vec<Vec<f64>> = (0..t - 1)
        .map(|r| (0..t - 1).map(|c| m[c][r]).collect())
        .collect();
    match solve(&mt, &a, 1e-12) {
        Some(x) => {
            let mut alpha = Vec::with_capacity(t);
            alpha.push(1.0 - x.iter().sum::<f64>());
            alpha.extend(x);
            (alpha, false)
        }
        None => (vec![1.0 / t as f64; t], true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::mat_vec;
    use crate::math::{gram_of, testing::gradients};
    use proptest::prelude::*;

    #[test]
    fn orthogonal_pair_by_hand() {
        // g1 = (1, 0), g2 = (0, 3): d = a g1 + (1-a) g2 with a = 3 (1 - a) -> a = 3/4.
        let (alpha, fallback) = imtl(&[vec![1.0, 0.0], vec![0.0, 9.0]]);
        assert!(!fallback);
        assert!((alpha[0] - 0.75).abs() < 1e-15 && (alpha[1] - 0.25).abs() < 1e-15);
    }

    #[test]
    fn degenerate_inputs_are_finite() {
        assert_eq!(imtl(&[vec![2.0]]), (vec![1.0], false));
        let (same, fallback) = imtl(&[vec![1.0, 1.0], vec![1.0, 1.0]]);
        assert!(fallback && same == vec![0.5, 0.5]);
        let (zero, _) = imtl(&[vec![0.0, 0.0], vec![0.0, 1.0]]);
        assert!(zero.iter().all(|v| v.is_finite()));
    }

    proptest! {
        #[test]
        fn projections_on_every_task_direction_are_equal(g in gradients(2..=6, 8)) {
            let gram = gram_of(&g);
            let (alpha, fallback) = imtl(&gram);
            prop_assume!(!fallback);
            prop_assert!((alpha.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            let ga = mat_vec(&gram, &alpha);
            let proj: Vec<f64> = (0..alpha.len()).map(|i| ga[i] / gram[i][i].sqrt()).collect();
            let scale = 1.0 + proj.iter().fold(0.0f64, |m, v| m.max(v.abs()))
                + alpha.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for p in &proj {
                prop_assert!((p - proj[0]).abs() < 1e-8 * scale, "{:?}", proj);
            }
        }
    }
}
