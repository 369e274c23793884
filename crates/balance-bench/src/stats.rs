//! Small-sample statistics for comparing balancers across seeds: the mean with a Student-t 95 % interval,
//! differences paired by seed id with their two-sided p-value, and Holm's adjustment for many comparisons.
//!
//! The t distribution is computed exactly for every number of degrees of freedom (through the regularized
//! incomplete beta function), so there is no jump where a printed table would end.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A mean with its 95 % confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The sample mean.
    pub mean: f64,
    /// Lower end of the 95 % interval (equal to the mean for one sample).
    pub low: f64,
    /// Upper end.
    pub high: f64,
    /// Number of samples.
    pub n: usize,
}

impl Interval {
    /// True when the interval lies entirely above or below zero (for paired differences).
    pub fn excludes_zero(&self) -> bool {
        self.n > 1 && (self.low > 0.0 || self.high < 0.0)
    }

    /// Half the interval's width (0 for one sample, which has no interval).
    pub fn half_width(&self) -> f64 {
        (self.high - self.low) / 2.0
    }
}

/// A difference paired by seed: its interval and the two-sided p-value of "the mean difference is 0".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// Mean and 95 % interval of the per-seed differences.
    pub diff: Interval,
    /// Two-sided one-sample t-test p-value (`None` with fewer than two pairs).
    pub p_value: Option<f64>,
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom (infinite for `df = 0`).
pub fn t_975(df: usize) -> f64 {
    t_quantile(0.975, df)
}

/// The `q` quantile (`0.5 <= q < 1`) of Student's t with `df` degrees of freedom, by bisection on the
/// exact CDF to a relative 1e-14 (the tests check it against SciPy to 2e-9, the digits published).
pub fn t_quantile(q: f64, df: usize) -> f64 {
    if df == 0 || q >= 1.0 {
        return f64::INFINITY;
    }
    if q <= 0.5 {
        return 0.0;
    }
    let tail = 2.0 * (1.0 - q); // the two-sided p-value at the quantile
    let mut high = 1.0;
    while two_sided_p(high, df) > tail {
        high *= 2.0;
    }
    let mut low = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (low + high);
        if two_sided_p(mid, df) > tail {
            low = mid;
        } else {
            high = mid;
        }
        if high - low <= 1e-14 * high {
            break;
        }
    }
    0.5 * (low + high)
}

/// `P(|T| >= |t|)` for Student's t with `df >= 1` degrees of freedom: `I_{df/(df+t^2)}(df/2, 1/2)`.
pub fn two_sided_p(t: f64, df: usize) -> f64 {
    if df == 0 || t.is_nan() {
        return f64::NAN;
    }
    if t.is_infinite() {
        return 0.0;
    }
    let nu = df as f64;
    regularized_incomplete_beta(nu / (nu + t * t), nu / 2.0, 0.5)
}

/// The regularized incomplete beta function `I_x(a, b)` for `a, b > 0`, `0 <= x <= 1` (continued
/// fraction, modified Lentz; the symmetry `I_x(a,b) = 1 - I_{1-x}(b,a)` keeps it convergent).
pub fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_continued_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_continued_fraction(1.0 - x, b, a) / b
    }
}

fn beta_continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let away_from_zero = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / away_from_zero(1.0 - qab * x / qap);
    let mut h = d;
    // One modified-Lentz step with coefficient `aa`: updates `c` and `d`, returns the factor on `h`.
    let step = |aa: f64, c: &mut f64, d: &mut f64| {
        *d = 1.0 / away_from_zero(1.0 + aa * *d);
        *c = away_from_zero(1.0 + aa / *c);
        *d * *c
    };
    for m in 1..=10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        h *= step(m * (b - m) * x / ((qam + m2) * (a + m2)), &mut c, &mut d);
        let delta = step(
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
            &mut c,
            &mut d,
        );
        h *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, 9 terms; relative error about 1e-15).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1-x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (i, c) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// Mean and 95 % interval of `samples` (`None` when empty or when a sample is not finite).
pub fn interval(samples: &[f64]) -> Option<Interval> {
    let n = samples.len();
    if n == 0 || samples.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let mean = samples.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Some(Interval {
            mean,
            low: mean,
            high: mean,
            n,
        });
    }
    let half = t_975(n - 1) * standard_error(samples, mean);
    Some(Interval {
        mean,
        low: mean - half,
        high: mean + half,
        n,
    })
}

fn standard_error(samples: &[f64], mean: f64) -> f64 {
    let n = samples.len() as f64;
    let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (var / n).sqrt()
}

/// The differences `a - b` of the seeds present in both (pairs by seed id, so a seed missing from one side
/// drops out instead of shifting the pairing), their interval and p-value. `None` without a common seed.
pub fn paired_by_seed(a: &BTreeMap<u64, f64>, b: &BTreeMap<u64, f64>) -> Option<Paired> {
    let d: Vec<f64> = a
        .iter()
        .filter_map(|(seed, x)| b.get(seed).map(|y| x - y))
        .collect();
    let diff = interval(&d)?;
    let p_value = (d.len() > 1).then(|| {
        let se = standard_error(&d, diff.mean);
        match (se > 0.0, diff.mean == 0.0) {
            (true, _) => two_sided_p(diff.mean / se, d.len() - 1),
            // Every pair differs by the same amount: no doubt left about the sign (or none at all).
            (false, true) => 1.0,
            (false, false) => 0.0,
        }
    });
    Some(Paired { diff, p_value })
}

/// Holm's step-down adjustment of `p` (a family of tests; `None` entries are not tests and stay `None`).
/// Controls the family-wise error rate: reject where the adjusted value is below the level.
pub fn holm(p: &[Option<f64>]) -> Vec<Option<f64>> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| p[i].is_some()).collect();
    order.sort_by(|&i, &j| p[i].unwrap_or(1.0).total_cmp(&p[j].unwrap_or(1.0)));
    let m = order.len();
    let mut adjusted = vec![None; p.len()];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        let scaled = ((m - rank) as f64 * p[i].unwrap_or(1.0)).min(1.0);
        running = running.max(scaled);
        adjusted[i] = Some(running);
    }
    adjusted
}

/// The median (`None` when empty).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 0 {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(values: &[f64]) -> BTreeMap<u64, f64> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64, *v))
            .collect()
    }

    #[test]
    fn t_quantiles_match_published_values_for_every_df() {
        // Reference: scipy.stats.t.ppf(0.975, df) (SciPy 1.14), 10 significant digits. For df = 10^7 the
        // Cornish-Fisher expansion z + (z^3 + z) / (4 df) with z = 1.959963985 (the normal 0.975 quantile);
        // its next term is below 1e-14 there.
        let reference = [
            (1, 12.70620474),
            (2, 4.302652730),
            (3, 3.182446305),
            (5, 2.570581836),
            (9, 2.262157163),
            (29, 2.045229642),
            (30, 2.042272456),
            (31, 2.039513446),
            (60, 2.000297822),
            (120, 1.979930405),
            (10_000_000, 1.959964222),
        ];
        for (df, want) in reference {
            let got = t_975(df);
            assert!((got - want).abs() < 2e-9 * want, "df {df}: {got} vs {want}");
        }
        assert_eq!(t_975(0), f64::INFINITY);
        // No jump anywhere: the quantile falls strictly with df.
        assert!((1..200).all(|df| t_975(df + 1) < t_975(df)));
    }

    #[test]
    fn two_sided_p_closed_forms() {
        // df = 1 is Cauchy: p = 1 - 2 atan(t) / pi. df = 2: p = 1 - t / sqrt(t^2 + 2).
        for t in [0.1, 1.0, 3.0, 12.0] {
            let cauchy = 1.0 - 2.0 * f64::atan(t) / std::f64::consts::PI;
            assert!((two_sided_p(t, 1) - cauchy).abs() < 1e-12, "t {t}");
            let df2 = 1.0 - t / (t * t + 2.0).sqrt();
            assert!((two_sided_p(t, 2) - df2).abs() < 1e-12, "t {t}");
        }
        assert_eq!(two_sided_p(0.0, 5), 1.0);
        assert!((two_sided_p(t_975(7), 7) - 0.05).abs() < 1e-12);
    }

    #[test]
    fn interval_by_hand() {
        // mean 2, sample sd 1, n 3: half width = t(0.975, 2) / sqrt(3).
        let i = interval(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(i.mean, 2.0);
        assert!((i.half_width() - 4.302652730 / 3f64.sqrt()).abs() < 1e-8);
        assert!(!i.excludes_zero()); // [-0.48, 4.48]
        assert!(interval(&[1.0, 1.1, 0.9]).unwrap().excludes_zero());
        let one = interval(&[5.0]).unwrap();
        assert_eq!((one.low, one.high), (5.0, 5.0));
        assert!(!one.excludes_zero());
        assert!(interval(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn pairs_by_seed_id_not_position() {
        // Seeds move both a lot, but a is always 0.01 above b: the paired interval is tight around 0.01.
        let a = seeds(&[0.80, 0.90, 0.70]);
        let b = seeds(&[0.79, 0.89, 0.69]);
        let d = paired_by_seed(&a, &b).unwrap();
        assert!((d.diff.mean - 0.01).abs() < 1e-12 && d.diff.half_width() < 1e-9);
        assert!(d.diff.excludes_zero());
        // Seed 1 missing on one side: seeds 0 and 2 still pair with each other, not with their neighbours.
        let mut b_missing = b.clone();
        b_missing.remove(&1);
        let d = paired_by_seed(&a, &b_missing).unwrap();
        assert_eq!(d.diff.n, 2);
        assert!((d.diff.mean - 0.01).abs() < 1e-12);
        assert!(paired_by_seed(&a, &BTreeMap::new()).is_none());
    }

    #[test]
    fn paired_p_value_by_hand() {
        // d = [1, 2, 3]: mean 2, se 1/sqrt(3), t = 2 sqrt(3) with 2 df: p = 1 - t / sqrt(t^2 + 2).
        let d = paired_by_seed(&seeds(&[1.0, 2.0, 3.0]), &seeds(&[0.0, 0.0, 0.0])).unwrap();
        let t = 2.0 * 3f64.sqrt();
        let want = 1.0 - t / (t * t + 2.0).sqrt();
        assert!((d.p_value.unwrap() - want).abs() < 1e-12);
        let one = paired_by_seed(&seeds(&[1.0]), &seeds(&[0.0])).unwrap();
        assert_eq!(one.p_value, None);
        let same = paired_by_seed(&seeds(&[1.0, 1.0]), &seeds(&[1.0, 1.0])).unwrap();
        assert_eq!(same.p_value, Some(1.0));
    }

    #[test]
    fn holm_by_hand() {
        // m = 4 tests: sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, max(0.04, 0.06), max(0.06, 0.06), 0.5.
        let adjusted = holm(&[Some(0.03), None, Some(0.01), Some(0.5), Some(0.02)]);
        let want = [Some(0.06), None, Some(0.04), Some(0.5), Some(0.06)];
        for (got, want) in adjusted.iter().zip(want) {
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-12, "{g} vs {w}"),
                (g, w) => assert_eq!(*g, w),
            }
        }
        assert_eq!(holm(&[Some(0.9), Some(0.8)]), vec![Some(1.0), Some(1.0)]);
    }

    #[test]
    fn median_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
