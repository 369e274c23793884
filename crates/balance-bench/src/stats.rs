//! Small-sample statistics for comparing balancers across seeds: mean with a Student-t 95 % interval,
//! and the same for differences paired by seed.

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

    /// Half the interval's width.
    pub fn half_width(&self) -> f64 {
        (self.high - self.low) / 2.0
    }
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom (table for 1..=30, normal beyond).
pub fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        _ => 1.96,
    }
}

/// Mean and 95 % interval of `samples` (`None` when empty).
pub fn interval(samples: &[f64]) -> Option<Interval> {
    let n = samples.len();
    if n == 0 {
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
    let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t_975(n - 1) * (var / n as f64).sqrt();
    Some(Interval {
        mean,
        low: mean - half,
        high: mean + half,
        n,
    })
}

/// Mean and 95 % interval of `a[i] - b[i]` (pairs by index, e.g. by seed).
pub fn paired_difference(a: &[f64], b: &[f64]) -> Option<Interval> {
    if a.len() != b.len() {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    interval(&d)
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

    #[test]
    fn interval_by_hand() {
        // mean 2, sample sd 1, n 3: half width = 4.303 / sqrt(3).
        let i = interval(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(i.mean, 2.0);
        assert!((i.half_width() - 4.303 / 3f64.sqrt()).abs() < 1e-12);
        assert!(!i.excludes_zero()); // [-0.48, 4.48]
        assert!(interval(&[1.0, 1.1, 0.9]).unwrap().excludes_zero());
        let one = interval(&[5.0]).unwrap();
        assert_eq!((one.low, one.high), (5.0, 5.0));
        assert!(!one.excludes_zero());
    }

    #[test]
    fn paired_differences_cancel_shared_seed_effects() {
        // Seeds move both a lot, but b is always 0.01 below a: the paired interval is tight around 0.01.
        let a = [0.80, 0.90, 0.70];
        let b = [0.79, 0.89, 0.69];
        let d = paired_difference(&a, &b).unwrap();
        assert!((d.mean - 0.01).abs() < 1e-12 && d.half_width() < 1e-9);
        assert!(d.excludes_zero());
        assert!(paired_difference(&a, &b[..2]).is_none());
    }

    #[test]
    fn median_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
