//! MGDA (Sener & Koltun, NeurIPS 2018): the min-norm point of the convex hull of the task gradients,
//! `alpha = argmin_{alpha in simplex} alpha^T G alpha`.
//!
//! For `T <= 12` the solution is exact: every support `S` is tried, the KKT system on it
//! (`G_SS a = mu 1`, `1^T a = 1`) is solved, and among the feasible KKT points (`a >= 0`,
//! `(G a)_i >= mu` off the support) the one with the smallest objective is kept. Larger `T`, or the
//! (numerically) infeasible case, use accelerated projected gradient on the simplex.

use serde::{Deserialize, Serialize};

use crate::linalg::{minimize_on_simplex, polish_on_face, quad, solve, SimplexSolver};

/// The largest `T` solved by enumerating supports (`2^T - 1` small systems).
pub const EXACT_MAX_TASKS: usize = 12;

/// How gradients are scaled before the min-norm problem (LibMTL's `mgda_gn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Normalization {
    /// No scaling (default).
    #[default]
    #[serde(rename = "none")]
    None,
    /// Each gradient divided by its norm.
    #[serde(rename = "l2")]
    L2,
    /// Each gradient divided by its loss value.
    #[serde(rename = "loss")]
    Loss,
    /// Each gradient divided by loss times norm.
    #[serde(rename = "loss+")]
    LossPlus,
}

impl Normalization {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Normalization::None => "none",
            Normalization::L2 => "l2",
            Normalization::Loss => "loss",
            Normalization::LossPlus => "loss+",
        }
    }
}

/// Floor of the normalisers (a zero gradient or loss would divide by zero; LibMTL has no floor).
pub const NORMALIZER_FLOOR: f64 = 1e-8;

/// The normalisers `n_i` of [`Normalization`], floored at [`NORMALIZER_FLOOR`].
pub fn normalizers(gram: &[Vec<f64>], losses: &[f64], mode: Normalization) -> Vec<f64> {
    (0..gram.len())
        .map(|i| {
            let norm = gram[i][i].max(0.0).sqrt();
            let n = match mode {
                Normalization::None => 1.0,
                Normalization::L2 => norm,
                Normalization::Loss => losses[i],
                Normalization::LossPlus => losses[i] * norm,
            };
            n.max(NORMALIZER_FLOOR)
        })
        .collect()
}

/// The min-norm point's coefficients on the simplex (exact for `T <= 12`).
pub fn min_norm(gram: &[Vec<f64>]) -> Vec<f64> {
    let t = gram.len();
    if t == 0 {
        return Vec::new();
    }
    if t == 1 {
        return vec![1.0];
    }
    if t <= EXACT_MAX_TASKS {
        if let Some(a) = min_norm_exact(gram) {
            return a;
        }
    }
    min_norm_iterative(gram, &vec![1.0 / t as f64; t], SimplexSolver::default())
}

/// Enumerates supports and solves each KKT system; `None` if no candidate is feasible.
pub fn min_norm_exact(gram: &[Vec<f64>]) -> Option<Vec<f64>> {
    let t = gram.len();
    let scale = (0..t).fold(0.0f64, |m, i| m.max(gram[i][i].abs()));
    if scale == 0.0 {
        return Some(vec![1.0 / t as f64; t]);
    }
    let tol = 1e-10 * scale;
    let mut best: Option<(f64, Vec<f64>)> = None;
    for mask in 1u32..(1u32 << t) {
        let support: Vec<usize> = (0..t).filter(|&i| mask & (1 << i) != 0).collect();
        let s = support.len();
        // [[G_SS, -1], [1^T, 0]] [a; mu] = [0; 1]
        let mut system = vec![vec![0.0; s + 1]; s + 1];
        for (r, &i) in support.iter().enumerate() {
            for (c, &j) in support.iter().enumerate() {
                system[r][c] = gram[i][j];
            }
            system[r][s] = -scale;
            system[s][r] = scale;
        }
        let mut rhs = vec![0.0; s + 1];
        rhs[s] = scale;
        let Some(sol) = solve(&system, &rhs, 1e-13) else {
            continue;
        };
        if sol[..s].iter().any(|&a| a < -1e-12) {
            continue;
        }
        let mut alpha = vec![0.0; t];
        for (r, &i) in support.iter().enumerate() {
            alpha[i] = sol[r].max(0.0);
        }
        let sum: f64 = alpha.iter().sum();
        if sum <= 0.0 {
            continue;
        }
        alpha.iter_mut().for_each(|a| *a /= sum);
        let g_alpha = crate::linalg::mat_vec(gram, &alpha);
        let objective = crate::linalg::dot(&alpha, &g_alpha);
        if g_alpha.iter().any(|&v| v < objective - tol) {
            continue;
        }
        if best.as_ref().is_none_or(|(f, _)| objective < *f) {
            best = Some((objective, alpha));
        }
    }
    best.map(|(_, a)| a)
}

/// Accelerated projected gradient on `alpha^T G alpha` from `start`.
pub fn min_norm_iterative(gram: &[Vec<f64>], start: &[f64], solver: SimplexSolver) -> Vec<f64> {
    let f_grad = |a: &[f64]| {
        let g = crate::linalg::mat_vec(gram, a);
        (
            crate::linalg::dot(a, &g),
            g.iter().map(|v| 2.0 * v).collect(),
        )
    };
    let (w, _) = minimize_on_simplex(f_grad, start, solver);
    let grad_hess = |a: &[f64]| {
        let g = crate::linalg::mat_vec(gram, a)
            .iter()
            .map(|v| 2.0 * v)
            .collect();
        let h = gram
            .iter()
            .map(|row| row.iter().map(|v| 2.0 * v).collect())
            .collect();
        (g, h)
    };
    match polish_on_face(grad_hess, &w, 5) {
        Some(p)
            if objective(gram, &p) <= objective(gram, &w) + 1e-13 * objective(gram, &w).abs() =>
        {
            p
        }
        _ => w,
    }
}

/// MGDA with normalisation: the min-norm point of the normalised gradients `g_i / n_i`, mapped back to
/// coefficients of the original gradients (`alpha_i = a_i / n_i`). Returns `(alpha, a, n)`.
pub fn mgda(
    gram: &[Vec<f64>],
    losses: &[f64],
    mode: Normalization,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = normalizers(gram, losses, mode);
    let t = gram.len();
    let scaled: Vec<Vec<f64>> = (0..t)
        .map(|i| (0..t).map(|j| gram[i][j] / (n[i] * n[j])).collect())
        .collect();
    let a = min_norm(&scaled);
    let alpha = a.iter().zip(&n).map(|(a, n)| a / n).collect();
    (alpha, a, n)
}

/// The objective `alpha^T G alpha`.
pub fn objective(gram: &[Vec<f64>], alpha: &[f64]) -> f64 {
    quad(gram, alpha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::{mat_vec, project_simplex};
    use crate::math::{gram_of, testing::gradients};
    use proptest::prelude::*;

    #[test]
    fn two_tasks_closed_form() {
        // g1 = (1, 0), g2 = (0, 2): min-norm weights (4/5, 1/5).
        let gram = vec![vec![1.0, 0.0], vec![0.0, 4.0]];
        let a = min_norm(&gram);
        assert!(
            (a[0] - 0.8).abs() < 1e-14 && (a[1] - 0.2).abs() < 1e-14,
            "{a:?}"
        );
    }

    #[test]
    fn degenerate_inputs_give_finite_weights() {
        assert_eq!(min_norm(&[vec![0.0]]), vec![1.0]);
        let zero = min_norm(&[vec![0.0, 0.0], vec![0.0, 0.0]]);
        assert_eq!(zero, vec![0.5, 0.5]);
        let same = min_norm(&[vec![2.0, 2.0], vec![2.0, 2.0]]);
        assert!(
            same.iter().all(|v| v.is_finite()) && (same.iter().sum::<f64>() - 1.0).abs() < 1e-12
        );
        // One zero gradient: the min-norm point is that gradient, norm 0.
        let with_zero = min_norm(&[vec![1.0, 0.0], vec![0.0, 0.0]]);
        assert!(objective(&[vec![1.0, 0.0], vec![0.0, 0.0]], &with_zero) < 1e-14);
        let (alpha, _, _) = mgda(
            &[vec![0.0, 0.0], vec![0.0, 1.0]],
            &[0.0, 1.0],
            Normalization::LossPlus,
        );
        assert!(alpha.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn more_than_twelve_tasks_use_the_iterative_solver_and_satisfy_kkt() {
        let mut rng = balance_core::rng::SplitMix64::new(5);
        let g: Vec<Vec<f64>> = (0..16)
            .map(|_| (0..10).map(|_| rng.normal() + 0.3).collect())
            .collect();
        let gram = gram_of(&g);
        let a = min_norm(&gram);
        let f = objective(&gram, &a);
        let ga = mat_vec(&gram, &a);
        assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-12 && a.iter().all(|&v| v >= 0.0));
        for i in 0..a.len() {
            assert!(ga[i] >= f - 1e-9, "KKT {i}: {} < {f}", ga[i]);
            if a[i] > 1e-9 {
                assert!((ga[i] - f).abs() < 1e-9, "support {i}");
            }
        }
    }

    #[test]
    fn iterative_solver_does_not_stop_on_a_vertex_reached_by_momentum() {
        // Found by proptest in CI: FISTA's extrapolated point left the simplex, its projection fell back on
        // the vertex (1, 0) and the solver took "did not move" for convergence. The two-task closed form
        // a1 = (G22 - G12) / (G11 + G22 - 2 G12) puts the optimum inside, at a1 = 0.99772015...
        let g = vec![
            vec![
                0.49085325796476376,
                -0.6037547331334426,
                0.0,
                -0.10588128861730216,
                0.43780964675735184,
                -0.12036963070811846,
            ],
            vec![
                0.47507182317495883,
                -0.4709086625451376,
                0.4036516817207044,
                0.4756615510755374,
                0.964262677643352,
                0.576493796115157,
            ],
        ];
        let gram = gram_of(&g);
        let closed = (gram[1][1] - gram[0][1]) / (gram[0][0] + gram[1][1] - 2.0 * gram[0][1]);
        let iterative = min_norm_iterative(&gram, &[0.5, 0.5], SimplexSolver::default());
        assert!(
            (iterative[0] - closed).abs() < 1e-12,
            "{iterative:?} vs {closed}"
        );
        assert!(
            closed < 0.999,
            "the optimum must be interior for this test to mean anything"
        );
    }

    proptest! {
        #[test]
        fn min_norm_satisfies_kkt_and_beats_random_points(
            g in gradients(2..=6, 4),
            w in prop::collection::vec(0.0f64..1.0, 6),
        ) {
            let gram = gram_of(&g);
            let a = min_norm(&gram);
            let f = objective(&gram, &a);
            let tol = 1e-9 * (1.0 + gram.iter().map(|r| r.iter().fold(0.0f64, |m, v| m.max(v.abs()))).fold(0.0, f64::max));
            prop_assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            prop_assert!(a.iter().all(|&v| v >= 0.0));
            let ga = mat_vec(&gram, &a);
            for i in 0..a.len() {
                prop_assert!(ga[i] >= f - tol, "KKT: (G a)_{} = {} < {}", i, ga[i], f);
                if a[i] > 1e-9 {
                    prop_assert!((ga[i] - f).abs() < tol, "support {}: {} vs {}", i, ga[i], f);
                }
            }
            let other = project_simplex(&w[..a.len()]);
            prop_assert!(f <= objective(&gram, &other) + tol);
        }

        #[test]
        fn iterative_solver_agrees_with_the_exact_one(g in gradients(2..=5, 6)) {
            let gram = gram_of(&g);
            let exact = min_norm(&gram);
            let t = gram.len();
            let iterative = min_norm_iterative(&gram, &vec![1.0 / t as f64; t], SimplexSolver::default());
            prop_assert!(objective(&gram, &iterative) <= objective(&gram, &exact) + 1e-10);
        }

        #[test]
        fn normalised_alpha_combines_the_original_gradients(g in gradients(2..=4, 5), l in prop::collection::vec(0.1f64..3.0, 4)) {
            let gram = gram_of(&g);
            let losses = &l[..gram.len()];
            for mode in [Normalization::L2, Normalization::Loss, Normalization::LossPlus] {
                let (alpha, a, n) = mgda(&gram, losses, mode);
                for i in 0..alpha.len() {
                    prop_assert!((alpha[i] * n[i] - a[i]).abs() < 1e-12);
                }
            }
        }
    }
}
