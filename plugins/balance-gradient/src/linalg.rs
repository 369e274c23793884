//! Small dense linear algebra over `f64` for `T x T` problems (`T` is the number of tasks, a handful):
//! Gaussian elimination with partial pivoting, the symmetric eigendecomposition by cyclic Jacobi
//! rotations, Euclidean projection onto the probability simplex, and an accelerated projected-gradient
//! minimiser on the simplex.

/// A dense square matrix as rows.
pub type Matrix = Vec<Vec<f64>>;

/// `<a, b>`.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `M x`.
pub fn mat_vec(m: &[Vec<f64>], x: &[f64]) -> Vec<f64> {
    m.iter().map(|row| dot(row, x)).collect()
}

/// `x^T M x`.
pub fn quad(m: &[Vec<f64>], x: &[f64]) -> f64 {
    dot(x, &mat_vec(m, x))
}

/// True when every entry is finite.
pub fn all_finite(m: &[Vec<f64>]) -> bool {
    m.iter().flatten().all(|v| v.is_finite())
}

/// The largest absolute entry (0 for an empty matrix).
pub fn max_abs(m: &[Vec<f64>]) -> f64 {
    m.iter().flatten().fold(0.0, |acc, v| acc.max(v.abs()))
}

/// Solves `A x = b` by Gaussian elimination with partial pivoting. `None` when a pivot is below
/// `rel_tol * max|A|` (singular to working precision) or the result is not finite.
pub fn solve(a: &[Vec<f64>], b: &[f64], rel_tol: f64) -> Option<Vec<f64>> {
    let n = b.len();
    if a.len() != n || a.iter().any(|row| row.len() != n) {
        return None;
    }
    let scale = max_abs(a);
    if n == 0 {
        return Some(Vec::new());
    }
    if scale == 0.0 || !scale.is_finite() {
        return None;
    }
    let mut m: Vec<Vec<f64>> = a
        .iter()
        .zip(b)
        .map(|(row, &bi)| {
            let mut r = row.clone();
            r.push(bi);
            r
        })
        .collect();
    for col in 0..n {
        let pivot_row = (col..n).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[pivot_row][col].abs() <= rel_tol * scale {
            return None;
        }
        m.swap(col, pivot_row);
        let pivot = m[col].clone();
        for row in m.iter_mut().skip(col + 1) {
            let factor = row[col] / pivot[col];
            if factor != 0.0 {
                for (r, p) in row.iter_mut().zip(&pivot).skip(col) {
                    *r -= factor * p;
                }
            }
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|j| m[i][j] * x[j]).sum();
        x[i] = (m[i][n] - s) / m[i][i];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// The eigendecomposition of a symmetric matrix by cyclic Jacobi rotations: `(values, vectors)` with
/// `vectors[k]` the unit eigenvector of `values[k]`, in no particular order. Accurate to a few ulps of
/// `max|M|`; the input is symmetrised first (`(M + M^T) / 2`).
pub fn symmetric_eigen(m: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = m.len();
    let mut a: Matrix = (0..n)
        .map(|i| (0..n).map(|j| 0.5 * (m[i][j] + m[j][i])).collect())
        .collect();
    let mut v: Matrix = (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        let diag: f64 = (0..n).map(|i| a[i][i] * a[i][i]).sum();
        if off <= f64::EPSILON * f64::EPSILON * diag || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q] == 0.0 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let akp = row[p];
                    let akq = row[q];
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let row_p = a[p].clone();
                let row_q = a[q].clone();
                a[p] = row_p
                    .iter()
                    .zip(&row_q)
                    .map(|(x, y)| c * x - s * y)
                    .collect();
                a[q] = row_p
                    .iter()
                    .zip(&row_q)
                    .map(|(x, y)| s * x + c * y)
                    .collect();
                for row in v.iter_mut() {
                    let vp = row[p];
                    let vq = row[q];
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
    }
    let values = (0..n).map(|i| a[i][i]).collect();
    let vectors = (0..n).map(|k| (0..n).map(|i| v[i][k]).collect()).collect();
    (values, vectors)
}

/// The Euclidean projection of `y` onto the probability simplex `{x >= 0, sum x = 1}` (sort-based).
pub fn project_simplex(y: &[f64]) -> Vec<f64> {
    let n = y.len();
    if n == 0 {
        return Vec::new();
    }
    let mut u = y.to_vec();
    u.sort_by(|a, b| b.total_cmp(a));
    let mut cumulative = 0.0;
    let mut theta = 0.0;
    for (k, &uk) in u.iter().enumerate() {
        cumulative += uk;
        let t = (cumulative - 1.0) / (k as f64 + 1.0);
        if uk - t > 0.0 {
            theta = t;
        }
    }
    y.iter().map(|&v| (v - theta).max(0.0)).collect()
}

/// Settings of [`minimize_on_simplex`].
#[derive(Debug, Clone, Copy)]
pub struct SimplexSolver {
    /// Iteration cap.
    pub max_iter: usize,
    /// Stop when the projected-gradient step moves the point by less than this (in max norm).
    pub tol: f64,
}

impl Default for SimplexSolver {
    fn default() -> Self {
        Self {
            max_iter: 20_000,
            tol: 1e-13,
        }
    }
}

/// Minimises a smooth convex `f` over the probability simplex by accelerated projected gradient (FISTA)
/// with backtracking on the step size and a monotone restart, from `x0` (projected first). `f_grad`
/// returns `(f(x), grad f(x))`. Returns the best point found and the number of iterations.
pub fn minimize_on_simplex(
    f_grad: impl Fn(&[f64]) -> (f64, Vec<f64>),
    x0: &[f64],
    solver: SimplexSolver,
) -> (Vec<f64>, usize) {
    let mut x = project_simplex(x0);
    let (mut fx, _) = f_grad(&x);
    let mut y = x.clone();
    let mut t = 1.0f64;
    let mut step = 1.0f64;
    let mut restarted = false;
    for iter in 0..solver.max_iter {
        let (fy, gy) = f_grad(&y);
        // Backtracking: the quadratic upper bound must hold at the projected step.
        let mut candidate;
        let mut f_candidate;
        let mut tries = 0;
        loop {
            let moved: Vec<f64> = y.iter().zip(&gy).map(|(a, g)| a - step * g).collect();
            candidate = project_simplex(&moved);
            f_candidate = f_grad(&candidate).0;
            let diff: Vec<f64> = candidate.iter().zip(&y).map(|(a, b)| a - b).collect();
            let bound = fy + dot(&gy, &diff) + dot(&diff, &diff) / (2.0 * step);
            tries += 1;
            if f_candidate <= bound + 1e-15 * fy.abs().max(1e-300) || tries > 60 {
                break;
            }
            step *= 0.5;
        }
        let moved = candidate
            .iter()
            .zip(&x)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        // A step that does not move (or does not descend) only proves convergence when it was taken from
        // x itself: from the extrapolated y, the projection can land back on x's vertex while x is not
        // optimal. So the first such step restarts (drops the momentum, steps from x); a second one in a
        // row means no step from x decreases f any more in floating point (x is within ~sqrt(eps) of
        // the minimiser; [`polish_on_face`] takes it further with gradients only).
        if f_candidate > fx || moved <= solver.tol {
            if restarted {
                return (if f_candidate < fx { candidate } else { x }, iter + 1);
            }
            y = x.clone();
            t = 1.0;
            restarted = true;
            continue;
        }
        restarted = false;
        let t_next = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
        let momentum = (t - 1.0) / t_next;
        y = candidate
            .iter()
            .zip(&x)
            .map(|(c, p)| c + momentum * (c - p))
            .collect();
        x = candidate;
        fx = f_candidate;
        t = t_next;
        step *= 1.5;
    }
    (x, solver.max_iter)
}

/// Newton's method on the face of the simplex that `w` lies on (its support `w_i > 0`), for a convex `f`
/// given by `grad_hess(w) = (grad f(w), Hessian)`: equality-constrained Newton steps
/// `[[H_SS, 1], [1^T, 0]] [dw; nu] = [-grad_S; 0]` until they stop moving. Accurate to rounding where
/// function values only resolve `w` to `~sqrt(eps)`. Returns `None` (keep `w`) when the system is
/// singular, a step leaves the face, or the result fails the KKT conditions (`grad_i >= mu - tol` off
/// the support, `mu` the common gradient on it).
pub fn polish_on_face(
    grad_hess: impl Fn(&[f64]) -> (Vec<f64>, Matrix),
    w: &[f64],
    max_iter: usize,
) -> Option<Vec<f64>> {
    let support: Vec<usize> = (0..w.len()).filter(|&i| w[i] > 0.0).collect();
    let s = support.len();
    if s == 0 {
        return None;
    }
    let mut x = w.to_vec();
    for _ in 0..max_iter {
        let (g, h) = grad_hess(&x);
        let mut system = vec![vec![0.0; s + 1]; s + 1];
        let mut rhs = vec![0.0; s + 1];
        for (r, &i) in support.iter().enumerate() {
            for (c, &j) in support.iter().enumerate() {
                system[r][c] = h[i][j];
            }
            system[r][s] = 1.0;
            system[s][r] = 1.0;
            rhs[r] = -g[i];
        }
        let step = solve(&system, &rhs, 1e-14)?;
        let mut largest = 0.0f64;
        for (r, &i) in support.iter().enumerate() {
            x[i] += step[r];
            largest = largest.max(step[r].abs());
            if x[i] <= 0.0 {
                return None;
            }
        }
        if largest <= 4.0 * f64::EPSILON {
            break;
        }
    }
    let sum: f64 = x.iter().sum();
    x.iter_mut().for_each(|v| *v /= sum);
    let (g, _) = grad_hess(&x);
    let mu = support.iter().map(|&i| g[i]).sum::<f64>() / s as f64;
    let scale = g.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
    let kkt = support.iter().all(|&i| (g[i] - mu).abs() <= 1e-9 * scale)
        && (0..w.len()).all(|i| w[i] > 0.0 || g[i] >= mu - 1e-9 * scale);
    (kkt && x.iter().all(|v| v.is_finite())).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn random_matrix(values: &[f64], n: usize) -> Matrix {
        (0..n)
            .map(|i| values[i * n..(i + 1) * n].to_vec())
            .collect()
    }

    #[test]
    fn solve_matches_a_known_system_and_rejects_singular() {
        let a = vec![vec![2.0, 1.0], vec![1.0, 3.0]];
        let x = solve(&a, &[3.0, 5.0], 1e-14).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-15 && (x[1] - 1.4).abs() < 1e-15);
        assert!(solve(&[vec![1.0, 2.0], vec![2.0, 4.0]], &[1.0, 2.0], 1e-12).is_none());
    }

    #[test]
    fn projection_onto_simplex_examples() {
        assert_eq!(project_simplex(&[0.2, 0.3, 0.5]), vec![0.2, 0.3, 0.5]);
        assert_eq!(project_simplex(&[2.0, 0.0]), vec![1.0, 0.0]);
        let p = project_simplex(&[1.0, 1.0]);
        assert!((p[0] - 0.5).abs() < 1e-15 && (p[1] - 0.5).abs() < 1e-15);
    }

    proptest! {
        #[test]
        fn solve_residual_is_small(values in prop::collection::vec(-1.0f64..1.0, 16), b in prop::collection::vec(-1.0f64..1.0, 4)) {
            let mut a = random_matrix(&values, 4);
            for (i, row) in a.iter_mut().enumerate() { row[i] += 4.0; }
            let x = solve(&a, &b, 1e-14).unwrap();
            for (row, bi) in a.iter().zip(&b) {
                prop_assert!((dot(row, &x) - bi).abs() < 1e-12);
            }
        }

        #[test]
        fn jacobi_reconstructs_the_matrix(values in prop::collection::vec(-1.0f64..1.0, 25)) {
            let n = 5;
            let r = random_matrix(&values, n);
            let m: Matrix = (0..n).map(|i| (0..n).map(|j| r[i][j] + r[j][i]).collect()).collect();
            let (vals, vecs) = symmetric_eigen(&m);
            for i in 0..n {
                for j in 0..n {
                    let rebuilt: f64 = (0..n).map(|k| vals[k] * vecs[k][i] * vecs[k][j]).sum();
                    prop_assert!((rebuilt - m[i][j]).abs() < 1e-12, "{} vs {}", rebuilt, m[i][j]);
                    let orth = dot(&vecs[i], &vecs[j]);
                    let want = if i == j { 1.0 } else { 0.0 };
                    prop_assert!((orth - want).abs() < 1e-12);
                }
            }
        }

        #[test]
        fn projection_is_on_the_simplex_and_closest(y in prop::collection::vec(-2.0f64..2.0, 1..7), z in prop::collection::vec(0.0f64..1.0, 7)) {
            let p = project_simplex(&y);
            prop_assert!(p.iter().all(|&v| v >= 0.0));
            prop_assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            // Any other simplex point is no closer.
            let other = project_simplex(&z[..y.len()]);
            let d = |a: &[f64]| a.iter().zip(&y).map(|(x, t)| (x - t).powi(2)).sum::<f64>();
            prop_assert!(d(&p) <= d(&other) + 1e-12);
        }
    }
}
