//! Aligned-MTL (Senushkin et al., CVPR 2023), the official `ProcrustesSolver` on the Gram matrix `M`:
//! eigenpairs `(lambda, V)` of `M`; `tol = max(lambda) * T * eps`; the `r` eigenpairs above `tol`,
//! sorted descending; `scale` = `sqrt(lambda_min)` (`min`, default), `sqrt(median lambda)` (`median`)
//! or `sqrt(mean lambda)` (`rmse`) over those; `B = scale V_r diag(1/sqrt(lambda_r)) V_r^T`; with equal
//! preferences the combination is `alpha = B 1`.
//!
//! `eps` is `f32::EPSILON`, as in the official code (`torch.finfo().eps` of the default float dtype):
//! the Gram matrix of `f32` gradients carries relative noise of that order, and eigenvalues below it
//! would make `sqrt(lambda_min)` noise. The aligned task gradients `B`-combinations are orthogonal with
//! equal norms on the range of `M`: `B^T M B = scale^2 P_r` (`P_r` the projector on the kept
//! eigenvectors). Raw coefficients may be negative (the balancer clamps them). `M = 0` gives `alpha = 1`.

use serde::{Deserialize, Serialize};

use crate::linalg::symmetric_eigen;

/// How the aligned gradients are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleMode {
    /// `sqrt` of the smallest kept eigenvalue (default, the paper's).
    #[default]
    Min,
    /// `sqrt` of the median kept eigenvalue (`torch.median`: the lower middle for an even count).
    Median,
    /// `sqrt` of the mean kept eigenvalue.
    Rmse,
}

impl ScaleMode {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleMode::Min => "min",
            ScaleMode::Median => "median",
            ScaleMode::Rmse => "rmse",
        }
    }
}

/// The result of the Procrustes step.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignedSolution {
    /// `B 1` (may have negative entries).
    pub alpha: Vec<f64>,
    /// The `T x T` matrix `B` (symmetric).
    pub b: Vec<Vec<f64>>,
    /// The kept eigenvalues, descending.
    pub eigenvalues: Vec<f64>,
    /// Their unit eigenvectors, in the same order.
    pub eigenvectors: Vec<Vec<f64>>,
    /// The scale applied.
    pub scale: f64,
}

/// The Aligned-MTL coefficients for Gram matrix `gram`.
pub fn aligned(gram: &[Vec<f64>], mode: ScaleMode) -> AlignedSolution {
    let t = gram.len();
    let (values, vectors) = symmetric_eigen(gram);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let tol = max * t as f64 * f64::from(f32::EPSILON);
    let mut kept: Vec<(f64, &Vec<f64>)> = values
        .iter()
        .copied()
        .zip(&vectors)
        .filter(|(l, _)| *l > tol && *l > 0.0)
        .collect();
    kept.sort_by(|a, b| b.0.total_cmp(&a.0));
    if kept.is_empty() {
        let identity = (0..t)
            .map(|i| (0..t).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
            .collect();
        return AlignedSolution {
            alpha: vec![1.0; t],
            b: identity,
            eigenvalues: Vec::new(),
            eigenvectors: Vec::new(),
            scale: 1.0,
        };
    }
    let lambdas: Vec<f64> = kept.iter().map(|(l, _)| *l).collect();
    let r = lambdas.len();
    let scale_sq = match mode {
        ScaleMode::Min => lambdas[r - 1],
        // torch.median of the descending list: the lower of the two middle values.
        ScaleMode::Median => lambdas[r / 2],
        ScaleMode::Rmse => lambdas.iter().sum::<f64>() / r as f64,
    };
    let scale = scale_sq.sqrt();
    let b: Vec<Vec<f64>> = (0..t)
        .map(|i| {
            (0..t)
                .map(|j| {
                    kept.iter()
                        .map(|(l, v)| v[i] * v[j] / l.sqrt())
                        .sum::<f64>()
                        * scale
                })
                .collect()
        })
        .collect();
    let alpha = b.iter().map(|row| row.iter().sum()).collect();
    AlignedSolution {
        alpha,
        b,
        eigenvalues: lambdas,
        eigenvectors: kept.iter().map(|(_, v)| (*v).clone()).collect(),
        scale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::{dot, mat_vec};
    use crate::math::{gram_of, testing::gradients};
    use proptest::prelude::*;

    #[test]
    fn orthogonal_gradients_are_rescaled_to_the_smallest_norm() {
        // g1 = (3, 0), g2 = (0, 1): B = diag(1/3, 1) -> alpha = (1/3, 1): both aligned gradients have norm 1.
        let s = aligned(&[vec![9.0, 0.0], vec![0.0, 1.0]], ScaleMode::Min);
        assert!(
            (s.alpha[0] - 1.0 / 3.0).abs() < 1e-14 && (s.alpha[1] - 1.0).abs() < 1e-14,
            "{s:?}"
        );
        let s = aligned(&[vec![9.0, 0.0], vec![0.0, 1.0]], ScaleMode::Rmse);
        assert!((s.scale - 5f64.sqrt()).abs() < 1e-14);
    }

    #[test]
    fn degenerate_inputs() {
        assert_eq!(
            aligned(&[vec![0.0, 0.0], vec![0.0, 0.0]], ScaleMode::Min).alpha,
            vec![1.0, 1.0]
        );
        let same = aligned(&[vec![4.0, 4.0], vec![4.0, 4.0]], ScaleMode::Min);
        // Rank 1: v = (1, 1)/sqrt 2, lambda = 8, scale = sqrt 8: B = v v^T, alpha = (1, 1).
        assert!(
            (same.alpha[0] - 1.0).abs() < 1e-12 && (same.alpha[1] - 1.0).abs() < 1e-12,
            "{same:?}"
        );
        assert!((aligned(&[vec![4.0]], ScaleMode::Min).alpha[0] - 1.0).abs() < 1e-15);
    }

    proptest! {
        #[test]
        fn aligned_gradients_are_orthogonal_with_equal_norms(g in gradients(2..=6, 4), mode in prop_oneof![Just(ScaleMode::Min), Just(ScaleMode::Median), Just(ScaleMode::Rmse)]) {
            // P = 4 < T up to 6: rank-deficient cases included.
            let gram = gram_of(&g);
            let t = gram.len();
            let s = aligned(&gram, mode);
            // A = B^T M B: the Gram matrix of the aligned task gradients G B.
            let a: Vec<Vec<f64>> = (0..t)
                .map(|i| {
                    let bi: Vec<f64> = (0..t).map(|k| s.b[k][i]).collect();
                    (0..t)
                        .map(|j| {
                            let bj: Vec<f64> = (0..t).map(|k| s.b[k][j]).collect();
                            dot(&bi, &mat_vec(&gram, &bj))
                        })
                        .collect()
                })
                .collect();
            let s2 = s.scale * s.scale;
            let tol = 1e-9 * (1.0 + s2);
            // A = scale^2 V_r V_r^T: on the range the aligned components are orthogonal, norm `scale`.
            for i in 0..t {
                for j in 0..t {
                    let projector: f64 = s.eigenvectors.iter().map(|v| v[i] * v[j]).sum();
                    prop_assert!((a[i][j] - s2 * projector).abs() < tol, "A[{}][{}] = {} vs {}", i, j, a[i][j], s2 * projector);
                }
            }
            for (k, vk) in s.eigenvectors.iter().enumerate() {
                for (l, vl) in s.eigenvectors.iter().enumerate() {
                    let entry = dot(vk, &mat_vec(&a, vl));
                    let want = if k == l { s2 } else { 0.0 };
                    prop_assert!((entry - want).abs() < tol);
                }
            }
            prop_assert!(s.alpha.iter().all(|v| v.is_finite()));
        }
    }
}
