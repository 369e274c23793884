//! The best constant predictor's loss per task, the "prior": what a model that learned nothing beyond
//! the label rate would score. Methods that measure progress as a loss ratio can take it as their base,
//! so "progress" means learning beyond the base rate rather than the first steps' fall from `ln 2` to the
//! label entropy.
//!
//! The training loop hands each step's [`LabelStats`] to balancers that ask for them
//! ([`crate::LossBalancer::needs_label_stats`]); a [`PriorEstimate`] pools them over a warm-up and then
//! freezes. For mean BCE on 0/1 labels the prior is the entropy of the label rate; for MSE, the labels'
//! variance (the loss of predicting their mean).
//!
//! ```
//! use balance_core::prior::{LabelStats, PriorEstimate};
//! let mut prior = PriorEstimate::new(2, 10);
//! prior.observe(&[
//!     LabelStats::binary(1000, 100),
//!     LabelStats::regression(1000, 0.0, 4000.0),
//! ])?;
//! let losses = prior.losses().unwrap();
//! assert!((losses[0] - 0.3251).abs() < 1e-3); // H(0.1) in nats
//! assert!((losses[1] - 4.0).abs() < 1e-12); // variance
//! # Ok::<(), balance_core::BalanceError>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{BalanceError, Result};

/// One task's label statistics over some examples: the sufficient statistics of the best constant
/// predictor under the task's loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LabelStats {
    /// 0/1 labels under binary cross-entropy.
    Binary {
        /// Examples.
        count: u64,
        /// Positive labels among them.
        positives: u64,
    },
    /// Real-valued labels under squared error.
    Regression {
        /// Examples.
        count: u64,
        /// Sum of the labels.
        sum: f64,
        /// Sum of the squared labels.
        sum_sq: f64,
    },
}

impl LabelStats {
    /// Statistics of `count` binary labels of which `positives` are 1.
    pub fn binary(count: u64, positives: u64) -> Self {
        Self::Binary { count, positives }
    }

    /// Statistics of `count` real labels with the given sum and sum of squares.
    pub fn regression(count: u64, sum: f64, sum_sq: f64) -> Self {
        Self::Regression { count, sum, sum_sq }
    }

    /// The examples counted.
    pub fn count(&self) -> u64 {
        match *self {
            Self::Binary { count, .. } | Self::Regression { count, .. } => count,
        }
    }

    /// Pools `other` into `self`; an error when the kinds differ or a count is inconsistent.
    pub fn merge(&mut self, other: &LabelStats, task: usize) -> Result<()> {
        match (self, other) {
            (
                Self::Binary { count, positives },
                Self::Binary {
                    count: c,
                    positives: p,
                },
            ) => {
                *count += c;
                *positives += p;
                Ok(())
            }
            (
                Self::Regression { count, sum, sum_sq },
                Self::Regression {
                    count: c,
                    sum: s,
                    sum_sq: q,
                },
            ) => {
                *count += c;
                *sum += s;
                *sum_sq += q;
                Ok(())
            }
            (mine, theirs) => Err(BalanceError::LabelStats(format!(
                "task {task} changed kind: {mine:?} then {theirs:?}"
            ))),
        }
    }

    /// Checks the statistics: positives within the count, finite sums.
    pub fn check(&self, task: usize) -> Result<()> {
        let bad = |why: String| Err(BalanceError::LabelStats(format!("task {task}: {why}")));
        match *self {
            Self::Binary { count, positives } if positives > count => {
                bad(format!("{positives} positives among {count} examples"))
            }
            Self::Regression { sum, sum_sq, .. } if !(sum.is_finite() && sum_sq.is_finite()) => {
                bad(format!(
                    "sum {sum}, sum of squares {sum_sq}, expected finite values"
                ))
            }
            _ => Ok(()),
        }
    }

    /// The loss of the best constant predictor, `None` before any example. Binary: the entropy (nats) of
    /// the rate `(positives + 0.5) / (count + 1)`, kept away from 0 and 1 so that a warm-up without a
    /// positive still gives a finite, positive base. Regression: the population variance, floored at 0.
    pub fn constant_predictor_loss(&self) -> Option<f64> {
        match *self {
            _ if self.count() == 0 => None,
            Self::Binary { count, positives } => {
                let p = (positives as f64 + 0.5) / (count as f64 + 1.0);
                Some(-(p * p.ln()) - (1.0 - p) * (1.0 - p).ln())
            }
            Self::Regression { count, sum, sum_sq } => {
                let n = count as f64;
                let mean = sum / n;
                Some((sum_sq / n - mean * mean).max(0.0))
            }
        }
    }
}

/// Per-task label statistics pooled over the first `steps` steps, then frozen: the estimate of each
/// task's prior loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorEstimate {
    pooled: Vec<Option<LabelStats>>,
    steps_seen: u64,
    steps: u64,
}

impl PriorEstimate {
    /// An empty estimate for `num_tasks` tasks that pools `steps` steps (at least 1).
    pub fn new(num_tasks: usize, steps: u64) -> Self {
        Self {
            pooled: vec![None; num_tasks],
            steps_seen: 0,
            steps: steps.max(1),
        }
    }

    /// True once `steps` steps were pooled: later statistics are ignored.
    pub fn is_frozen(&self) -> bool {
        self.steps_seen >= self.steps
    }

    /// Steps pooled so far.
    pub fn steps_seen(&self) -> u64 {
        self.steps_seen
    }

    /// Pools one step's statistics (one per task); ignored once frozen. On error nothing changes.
    pub fn observe(&mut self, stats: &[LabelStats]) -> Result<()> {
        if stats.len() != self.pooled.len() {
            return Err(BalanceError::TaskCountMismatch {
                context: "label statistics".into(),
                expected: self.pooled.len(),
                actual: stats.len(),
            });
        }
        if self.is_frozen() {
            return Ok(());
        }
        let mut pooled = self.pooled.clone();
        for (task, (acc, s)) in pooled.iter_mut().zip(stats).enumerate() {
            s.check(task)?;
            match acc {
                None => *acc = Some(*s),
                Some(acc) => acc.merge(s, task)?,
            }
        }
        self.pooled = pooled;
        self.steps_seen += 1;
        Ok(())
    }

    /// The prior loss of every task, `None` until each task has seen an example.
    pub fn losses(&self) -> Option<Vec<f64>> {
        self.pooled
            .iter()
            .map(|s| s.as_ref().and_then(LabelStats::constant_predictor_loss))
            .collect()
    }

    /// The number of tasks.
    pub fn num_tasks(&self) -> usize {
        self.pooled.len()
    }
}

/// Where a method's prior losses come from: given in its config, or estimated from the warm-up steps'
/// labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorSource {
    /// The user's values (`prior_loss` in the config), one per task.
    Given(Vec<f64>),
    /// Estimated from the labels of the first steps.
    Estimated(PriorEstimate),
}

impl PriorSource {
    /// Given values when present, else an estimate over `steps` warm-up steps.
    pub fn new(given: Option<Vec<f64>>, num_tasks: usize, steps: u64) -> Self {
        match given {
            Some(values) => Self::Given(values),
            None => Self::Estimated(PriorEstimate::new(num_tasks, steps)),
        }
    }

    /// True when label statistics are still wanted.
    pub fn needs_label_stats(&self) -> bool {
        matches!(self, Self::Estimated(e) if !e.is_frozen())
    }

    /// Pools one step's statistics into an estimate (a no-op for given values).
    pub fn observe(&mut self, stats: &[LabelStats]) -> Result<()> {
        match self {
            Self::Given(_) => Ok(()),
            Self::Estimated(e) => e.observe(stats),
        }
    }

    /// The prior losses, or an error for `balancer` that says how to provide them.
    pub fn losses(&self, balancer: &str) -> Result<Vec<f64>> {
        match self {
            Self::Given(values) => Ok(values.clone()),
            Self::Estimated(e) => e.losses().ok_or_else(|| {
                BalanceError::LabelStats(format!(
                    "`{balancer}` measures progress against the prior but has seen no labels: call \
                     Balancer::observe_label_stats before each step (the harness's Trainer does), or \
                     give `prior_loss` in the config"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entropy(p: f64) -> f64 {
        -(p * p.ln()) - (1.0 - p) * (1.0 - p).ln()
    }

    #[test]
    fn binary_prior_is_the_entropy_of_the_pooled_rate() {
        let mut e = PriorEstimate::new(1, 3);
        assert_eq!(e.losses(), None);
        // Three batches of 1000 with 4, 6 and 5 positives: rate (15 + 0.5) / 3001.
        for p in [4, 6, 5] {
            e.observe(&[LabelStats::binary(1000, p)]).unwrap();
        }
        assert!(e.is_frozen());
        let expected = entropy(15.5 / 3001.0);
        assert!((e.losses().unwrap()[0] - expected).abs() < 1e-15);
        // Frozen: a fourth batch changes nothing.
        e.observe(&[LabelStats::binary(1000, 900)]).unwrap();
        assert!((e.losses().unwrap()[0] - expected).abs() < 1e-15);
    }

    #[test]
    fn no_positive_yet_still_gives_a_positive_finite_prior() {
        let mut e = PriorEstimate::new(1, 5);
        e.observe(&[LabelStats::binary(1024, 0)]).unwrap();
        let l = e.losses().unwrap()[0];
        assert!(l > 0.0 && l.is_finite(), "{l}");
    }

    #[test]
    fn regression_prior_is_the_variance() {
        // Labels 1, 2, 3, 4 in two batches: variance 1.25.
        let mut e = PriorEstimate::new(1, 2);
        e.observe(&[LabelStats::regression(2, 3.0, 5.0)]).unwrap();
        e.observe(&[LabelStats::regression(2, 7.0, 25.0)]).unwrap();
        assert!((e.losses().unwrap()[0] - 1.25).abs() < 1e-15);
    }

    #[test]
    fn bad_statistics_are_errors_and_change_nothing() {
        let mut e = PriorEstimate::new(2, 5);
        let err = e
            .observe(&[LabelStats::binary(10, 11), LabelStats::binary(10, 1)])
            .unwrap_err();
        assert!(err.to_string().contains("11 positives among 10"), "{err}");
        assert_eq!(e.steps_seen(), 0);
        e.observe(&[LabelStats::binary(10, 1), LabelStats::binary(10, 1)])
            .unwrap();
        let err = e
            .observe(&[
                LabelStats::binary(10, 1),
                LabelStats::regression(10, 1.0, 1.0),
            ])
            .unwrap_err();
        assert!(err.to_string().contains("changed kind"), "{err}");
        let err = e.observe(&[LabelStats::binary(10, 1)]).unwrap_err();
        assert!(err.to_string().contains("label statistics"), "{err}");
        assert_eq!(e.steps_seen(), 1);
    }

    #[test]
    fn missing_prior_error_says_how_to_give_one() {
        let source = PriorSource::new(None, 2, 10);
        let err = source.losses("grad_norm").unwrap_err().to_string();
        assert!(
            err.contains("observe_label_stats") && err.contains("prior_loss"),
            "{err}"
        );
        assert_eq!(
            PriorSource::new(Some(vec![0.5, 0.1]), 2, 10)
                .losses("x")
                .unwrap(),
            vec![0.5, 0.1]
        );
    }

    proptest! {
        /// Known label rates: the estimate converges to H(p) (pooled counts, so exact up to the +0.5
        /// smoothing, which is below 1/count).
        #[test]
        fn estimate_matches_known_rates(p in 0.001f64..0.999, batches in 1u64..20) {
            let mut e = PriorEstimate::new(1, batches);
            let per = 10_000u64;
            let positives = (p * per as f64).round() as u64;
            for _ in 0..batches {
                e.observe(&[LabelStats::binary(per, positives)]).unwrap();
            }
            let rate = positives as f64 / per as f64;
            let got = e.losses().unwrap()[0];
            let slack = (entropy(rate.clamp(1e-4, 1.0 - 1e-4)) - got).abs();
            prop_assert!(got > 0.0 && got.is_finite());
            // d H / d p = ln((1-p)/p); the smoothing moves p by at most 1/count.
            let bound = ((1.0 - rate.max(1e-4)) / rate.max(1e-4)).ln().abs() * 1.0 / (per * batches) as f64 + 1e-6;
            prop_assert!(slack <= bound.max(1e-3), "got {} for rate {}", got, rate);
        }
    }
}
