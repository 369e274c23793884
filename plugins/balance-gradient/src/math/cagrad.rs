//! CAGrad (Liu et al., NeurIPS 2021) as LibMTL and the official code compute it, through the Gram
//! matrix `G`:
//!
//! - `g0_norm = sqrt(mean(G) + 1e-8)` (the norm of the average gradient), `c = calpha g0_norm + 1e-8`;
//! - `w = argmin_{w in simplex} w^T G b + c sqrt(w^T G w + 1e-8)` with `b = 1/T` (convex; solved here by
//!   accelerated projected gradient with backtracking to a tight tolerance instead of SciPy's SLSQP);
//! - `lambda = c / (|g_w| + 1e-8)`, `d = mean(g) + lambda g_w`, divided by `1` (`rescale = 0`),
//!   `1 + calpha^2` (`1`, default) or `1 + calpha` (`2`).
//!
//! So `alpha_i = (1/T + lambda w_i) / scale`, all `>= 0`.

use crate::linalg::{dot, mat_vec, minimize_on_simplex, polish_on_face, SimplexSolver};

/// The result of one CAGrad solve.
#[derive(Debug, Clone, PartialEq)]
pub struct CaGradSolution {
    /// The combination coefficients of the task gradients.
    pub alpha: Vec<f64>,
    /// The simplex weights `w` of the worst-case direction.
    pub w: Vec<f64>,
    /// `lambda = c / (|g_w| + 1e-8)`.
    pub lambda: f64,
    /// Solver iterations.
    pub iterations: usize,
}

/// The objective `w^T G b + c sqrt(w^T G w + 1e-8)` with `b = 1/T`.
pub fn objective(gram: &[Vec<f64>], c: f64, w: &[f64]) -> f64 {
    let t = gram.len() as f64;
    let gw = mat_vec(gram, w);
    gw.iter().sum::<f64>() / t + c * (dot(w, &gw) + 1e-8).max(0.0).sqrt()
}

/// The rescaling divisor for `rescale` in {0, 1, 2}.
pub fn rescale_divisor(calpha: f64, rescale: u8) -> f64 {
    match rescale {
        0 => 1.0,
        2 => 1.0 + calpha,
        _ => 1.0 + calpha * calpha,
    }
}

/// Solves CAGrad for the Gram matrix with `calpha` (the paper's `c`) and `rescale`.
pub fn cagrad(
    gram: &[Vec<f64>],
    calpha: f64,
    rescale: u8,
    solver: SimplexSolver,
) -> CaGradSolution {
    let t = gram.len();
    let tf = t as f64;
    let mean = gram.iter().flatten().sum::<f64>() / (tf * tf).max(1.0);
    let g0_norm = (mean + 1e-8).max(0.0).sqrt();
    let c = calpha * g0_norm + 1e-8;
    let gb: Vec<f64> = (0..t).map(|i| gram[i].iter().sum::<f64>() / tf).collect();
    let f_grad = |w: &[f64]| {
        let gw = mat_vec(gram, w);
        let root = (dot(w, &gw) + 1e-8).max(1e-300).sqrt();
        let f = dot(w, &gb) + c * root;
        let g = gb.iter().zip(&gw).map(|(b, v)| b + c * v / root).collect();
        (f, g)
    };
    let (w, iterations) = minimize_on_simplex(f_grad, &vec![1.0 / tf; t], solver);
    let grad_hess = |w: &[f64]| {
        let gw = mat_vec(gram, w);
        let root = (dot(w, &gw) + 1e-8).max(1e-300).sqrt();
        let g = gb.iter().zip(&gw).map(|(b, v)| b + c * v / root).collect();
        let h = (0..t)
            .map(|i| {
                (0..t)
                    .map(|j| c * (gram[i][j] / root - gw[i] * gw[j] / (root * root * root)))
                    .collect()
            })
            .collect();
        (g, h)
    };
    let before = objective(gram, c, &w);
    let w = match polish_on_face(grad_hess, &w, 50) {
        Some(p) if objective(gram, c, &p) <= before + 1e-12 * before.abs() + 1e-15 => p,
        _ => w,
    };
    let gw_norm = quad_norm(gram, &w);
    let lambda = c / (gw_norm + 1e-8);
    let divisor = rescale_divisor(calpha, rescale);
    let alpha = w
        .iter()
        .map(|wi| (1.0 / tf + lambda * wi) / divisor)
        .collect();
    CaGradSolution {
        alpha,
        w,
        lambda,
        iterations,
    }
}

fn quad_norm(gram: &[Vec<f64>], w: &[f64]) -> f64 {
    dot(w, &mat_vec(gram, w)).max(0.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::project_simplex;
    use crate::math::{gram_of, testing::gradients};
    use proptest::prelude::*;

    #[test]
    fn zero_calpha_is_the_mean_gradient() {
        let gram = vec![vec![1.0, -0.5], vec![-0.5, 2.0]];
        let s = cagrad(&gram, 0.0, 1, SimplexSolver::default());
        // c = 1e-8: lambda * w is ~1e-8 / |g_w|.
        for a in &s.alpha {
            assert!((a - 0.5).abs() < 1e-7, "{:?}", s.alpha);
        }
    }

    #[test]
    fn degenerate_inputs_are_finite() {
        let zero = cagrad(
            &[vec![0.0, 0.0], vec![0.0, 0.0]],
            0.4,
            1,
            SimplexSolver::default(),
        );
        assert!(zero.alpha.iter().all(|a| a.is_finite() && *a >= 0.0));
        let one = cagrad(&[vec![3.0]], 0.4, 1, SimplexSolver::default());
        assert!(one.alpha[0].is_finite());
    }

    proptest! {
        #[test]
        fn solution_beats_random_simplex_points(
            g in gradients(2..=6, 6),
            z in prop::collection::vec(prop::collection::vec(0.0f64..1.0, 6), 8),
            calpha in 0.0f64..1.0,
        ) {
            let gram = gram_of(&g);
            let t = gram.len();
            let s = cagrad(&gram, calpha, 1, SimplexSolver::default());
            let mean = gram.iter().flatten().sum::<f64>() / (t * t) as f64;
            let c = calpha * (mean + 1e-8).sqrt() + 1e-8;
            let best = objective(&gram, c, &s.w);
            for point in z.iter().map(|p| project_simplex(&p[..t])).chain((0..t).map(|i| {
                (0..t).map(|k| if k == i { 1.0 } else { 0.0 }).collect()
            })) {
                prop_assert!(best <= objective(&gram, c, &point) + 1e-10, "{} vs {}", best, objective(&gram, c, &point));
            }
            prop_assert!(s.alpha.iter().all(|a| a.is_finite() && *a >= 0.0));
        }
    }
}
