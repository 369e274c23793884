//! Nash-MTL (Navon et al., ICML 2022): the Nash bargaining solution `G_n alpha = 1 / alpha`
//! (elementwise), `alpha > 0`, with `G_n = G / ||G||_F` as the official code normalises.
//!
//! `alpha` is the unique minimiser of the strictly convex `f(alpha) = 1/2 alpha^T G_n alpha -
//! sum_i ln alpha_i`, whose gradient `G_n alpha - 1/alpha` vanishes exactly at the solution; it is found
//! by damped Newton (Hessian `G_n + diag(1/alpha^2)`, positive definite) with a fraction-to-the-boundary
//! rule and Armijo backtracking, warm-started from the previous solution. When `G` is singular the
//! solution may not exist (`g_1 = -g_2`, a zero gradient: `f` is unbounded below), so a small ridge
//! `G_n + ridge I` is used (default [`DEFAULT_RIDGE`]); it bounds every `alpha_i` by `1/sqrt(ridge)`.
//! An all-zero `G` gives `alpha = 1`.

use crate::linalg::{dot, mat_vec, solve};

/// The ridge added to `G_n` (relative to `||G_n||_F = 1`).
pub const DEFAULT_RIDGE: f64 = 1e-8;

/// The result of one Nash-MTL solve.
#[derive(Debug, Clone, PartialEq)]
pub struct NashSolution {
    /// The bargaining weights (all `> 0`).
    pub alpha: Vec<f64>,
    /// Newton iterations used.
    pub iterations: usize,
    /// `max_i |alpha_i ((G_n + ridge I) alpha)_i - 1|` at the returned point.
    pub residual: f64,
    /// Whether the residual reached the tolerance.
    pub converged: bool,
}

/// `G / ||G||_F` (`None` when `G` is all zero).
pub fn normalised(gram: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let frob = gram.iter().flatten().map(|v| v * v).sum::<f64>().sqrt();
    (frob > 0.0 && frob.is_finite()).then(|| {
        gram.iter()
            .map(|row| row.iter().map(|v| v / frob).collect())
            .collect()
    })
}

/// `max_i |alpha_i (M alpha)_i - 1|`.
pub fn residual(m: &[Vec<f64>], alpha: &[f64]) -> f64 {
    mat_vec(m, alpha)
        .iter()
        .zip(alpha)
        .fold(0.0f64, |r, (ma, a)| r.max((a * ma - 1.0).abs()))
}

/// Solves `(G_n + ridge I) alpha = 1 / alpha` from `warm` (used when finite and positive, else ones),
/// to `|alpha_i (M alpha)_i - 1| <= tol`, in at most `max_iter` Newton steps.
pub fn nash(
    gram: &[Vec<f64>],
    warm: &[f64],
    ridge: f64,
    max_iter: usize,
    tol: f64,
) -> NashSolution {
    let t = gram.len();
    let Some(mut m) = normalised(gram) else {
        return NashSolution {
            alpha: vec![1.0; t],
            iterations: 0,
            residual: 0.0,
            converged: true,
        };
    };
    for (i, row) in m.iter_mut().enumerate() {
        row[i] += ridge;
    }
    let f = |a: &[f64]| 0.5 * dot(a, &mat_vec(&m, a)) - a.iter().map(|v| v.ln()).sum::<f64>();
    let mut alpha: Vec<f64> = if warm.len() == t && warm.iter().all(|v| v.is_finite() && *v > 0.0) {
        warm.to_vec()
    } else {
        vec![1.0; t]
    };
    let mut iterations = 0;
    let mut res = residual(&m, &alpha);
    while res > tol && iterations < max_iter {
        iterations += 1;
        let ma = mat_vec(&m, &alpha);
        let grad: Vec<f64> = ma.iter().zip(&alpha).map(|(v, a)| v - 1.0 / a).collect();
        let hessian: Vec<Vec<f64>> = (0..t)
            .map(|i| {
                (0..t)
                    .map(|j| {
                        m[i][j]
                            + if i == j {
                                1.0 / (alpha[i] * alpha[i])
                            } else {
                                0.0
                            }
                    })
                    .collect()
            })
            .collect();
        let neg: Vec<f64> = grad.iter().map(|g| -g).collect();
        let Some(step) = solve(&hessian, &neg, 1e-300) else {
            break;
        };
        let slope = dot(&grad, &step);
        if slope >= 0.0 {
            break;
        }
        let mut s = 1.0f64;
        for (a, d) in alpha.iter().zip(&step) {
            if *d < 0.0 {
                s = s.min(0.99 * -a / d);
            }
        }
        let f0 = f(&alpha);
        let mut accepted = None;
        for _ in 0..60 {
            let candidate: Vec<f64> = alpha.iter().zip(&step).map(|(a, d)| a + s * d).collect();
            if candidate.iter().all(|v| *v > 0.0) {
                // Armijo, or (near the optimum, where rounding hides the decrease of f) a smaller residual.
                let candidate_res = residual(&m, &candidate);
                if f(&candidate) <= f0 + 1e-4 * s * slope || candidate_res < res {
                    accepted = Some((candidate, candidate_res));
                    break;
                }
            }
            s *= 0.5;
        }
        let Some((next, next_res)) = accepted else {
            break;
        };
        alpha = next;
        res = next_res;
    }
    NashSolution {
        converged: res <= tol,
        alpha,
        iterations,
        residual: res,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::{gram_of, testing::gradients};
    use proptest::prelude::*;

    #[test]
    fn orthogonal_gradients_by_hand() {
        // G = diag(1, 4): ||G||_F = sqrt(17); alpha_i^2 G_n,ii = 1.
        let s = nash(&[vec![1.0, 0.0], vec![0.0, 4.0]], &[], 0.0, 100, 1e-13);
        let frob = 17f64.sqrt();
        assert!((s.alpha[0] - frob.sqrt()).abs() < 1e-10, "{s:?}");
        assert!((s.alpha[1] - (frob / 4.0).sqrt()).abs() < 1e-10, "{s:?}");
    }

    #[test]
    fn degenerate_inputs_are_finite_and_positive() {
        for gram in [
            vec![vec![0.0, 0.0], vec![0.0, 0.0]],
            vec![vec![1.0, -1.0], vec![-1.0, 1.0]],
            vec![vec![1.0, 1.0], vec![1.0, 1.0]],
            vec![vec![0.0, 0.0], vec![0.0, 1.0]],
            vec![vec![2.0]],
        ] {
            let s = nash(&gram, &[], DEFAULT_RIDGE, 200, 1e-12);
            assert!(
                s.alpha.iter().all(|a| a.is_finite() && *a > 0.0),
                "{gram:?}: {s:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn optimality_condition_holds(g in gradients(2..=6, 10), warm in prop::collection::vec(0.1f64..3.0, 6)) {
            let gram = gram_of(&g);
            let t = gram.len();
            let gn = normalised(&gram).unwrap();
            for start in [&[][..], &warm[..t]] {
                let s = nash(&gram, start, 0.0, 200, 1e-12);
                prop_assert!(s.converged, "{:?}", s);
                prop_assert!(residual(&gn, &s.alpha) < 1e-8);
                prop_assert!(s.alpha.iter().all(|a| *a > 0.0));
            }
        }
    }
}
