//! `loss_norm`: divide each task's loss by a detached estimate of its scale, so tasks whose losses differ
//! in scale (an MSE in the thousands beside a BCE near 0.3) contribute comparably.
//!
//! With `s_i` the scale estimate of task `i`, the weight is `w_i = 1 / max(|s_i|, eps)`, so the weighted
//! loss `w_i * L_i` is about 1 where the scale was measured. Multiplying a task's loss by `c > 0` divides
//! its weight by `c`: the weighted loss, and so the training, does not depend on the loss's units.
//!
//! Two scale estimates (`scale`):
//! - `"initial"` (default): the mean of the first `warmup_steps` loss values (default 1: the first loss),
//!   then frozen: `s_i = (1/K) * sum_{t<K} l_i(t)`. Before the warm-up ends, the mean so far.
//! - `"ema"`: a running exponential average, `s_i(0) = l_i(0)`, `s_i(t) = decay * s_i(t-1) + (1 - decay) * l_i(t)`
//!   (default `decay` 0.9). The weights track the loss, so each weighted loss stays near 1 all run long.
//!
//! - `"prior"`: the loss of the best constant predictor (`balance_core::prior`): the entropy of the
//!   task's label rate for BCE, the label variance for MSE, pooled from the labels of the first
//!   `prior_steps` steps (default 50) or given as `prior_loss`. Each weighted loss is then the task's
//!   Normalized Entropy (for BCE), so a rare task whose loss is small because its base rate is small
//!   counts as much as a common one; the weights do not follow the loss as the model learns.
//!
//! Each step's weights use the estimate updated with that step's loss values.
//!
//! ```json
//! {"method": "loss_norm", "scale": "initial", "warmup_steps": 10}
//! {"method": "loss_norm", "scale": "ema", "decay": 0.99}
//! {"method": "loss_norm", "scale": "prior", "prior_steps": 20}
//! ```

use balance_core::prior::{LabelStats, PriorSource};
use balance_core::{
    validate, BalanceError, BalancerConfig, BalancerState, LossBalancer, Result, StepInput,
    StepReport,
};
use serde::{Deserialize, Serialize};

/// The registry name.
pub const NAME: &str = "loss_norm";

const DEFAULT_WARMUP_STEPS: u64 = 1;
const DEFAULT_DECAY: f64 = 0.9;
const DEFAULT_EPS: f64 = 1e-12;
const DEFAULT_PRIOR_STEPS: u64 = 50;

/// Which scale estimate divides each loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleKind {
    /// The mean loss over the first `warmup_steps` steps, then frozen.
    #[default]
    Initial,
    /// A running exponential moving average of the loss.
    Ema,
    /// The best constant predictor's loss (label entropy for BCE, label variance for MSE).
    Prior,
}

/// Config of the `loss_norm` balancer. `warmup_steps` applies to `scale = "initial"` only and `decay` to
/// `scale = "ema"` only; setting one for the other scale is an error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossNormConfig {
    /// The scale estimate.
    #[serde(default)]
    pub scale: ScaleKind,
    /// Steps averaged for the initial scale (>= 1, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u64>,
    /// EMA decay in [0, 1) (default 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decay: Option<f64>,
    /// Floor on `|s_i|` (> 0, default 1e-12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    /// Warm-up steps whose labels estimate the prior (`scale = "prior"`, >= 1, default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_steps: Option<u64>,
    /// The prior loss of each task, given instead of estimated (`scale = "prior"`, each finite > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_loss: Option<Vec<f64>>,
}

impl LossNormConfig {
    /// Scale by the mean of the first `warmup_steps` losses.
    pub fn initial(warmup_steps: u64) -> Self {
        Self {
            scale: ScaleKind::Initial,
            warmup_steps: Some(warmup_steps),
            ..Self::default()
        }
    }

    /// Scale by an EMA of the loss with `decay`.
    pub fn ema(decay: f64) -> Self {
        Self {
            scale: ScaleKind::Ema,
            decay: Some(decay),
            ..Self::default()
        }
    }

    /// The validated numerical rule for `num_tasks` tasks.
    pub fn rule(&self, num_tasks: usize) -> Result<LossNormRule> {
        self.validate(num_tasks)?;
        let estimate = match self.scale {
            ScaleKind::Initial => ScaleEstimate::Initial {
                warmup_steps: self.warmup_steps.unwrap_or(DEFAULT_WARMUP_STEPS),
            },
            ScaleKind::Ema => ScaleEstimate::Ema {
                decay: self.decay.unwrap_or(DEFAULT_DECAY),
            },
            ScaleKind::Prior => ScaleEstimate::Prior,
        };
        let mut rule = LossNormRule::new(estimate, self.eps.unwrap_or(DEFAULT_EPS), num_tasks);
        if self.scale == ScaleKind::Prior {
            rule.state.prior = Some(PriorSource::new(
                self.prior_loss.clone(),
                num_tasks,
                self.prior_steps.unwrap_or(DEFAULT_PRIOR_STEPS),
            ));
        }
        Ok(rule)
    }
}

#[typetag::serde(name = "loss_norm")]
impl BalancerConfig for LossNormConfig {
    fn method(&self) -> &'static str {
        NAME
    }

    fn validate(&self, num_tasks: usize) -> Result<()> {
        validate::task_count_at_least(NAME, num_tasks, 1)?;
        if let Some(eps) = self.eps {
            validate::positive(NAME, "eps", eps)?;
        }
        if self.scale != ScaleKind::Prior {
            let only_prior = "no such field unless scale = \"prior\"";
            if let Some(steps) = self.prior_steps {
                return Err(BalanceError::invalid_config(
                    NAME,
                    "prior_steps",
                    steps,
                    only_prior,
                ));
            }
            if let Some(values) = &self.prior_loss {
                return Err(BalanceError::invalid_config(
                    NAME,
                    "prior_loss",
                    format!("{values:?}"),
                    only_prior,
                ));
            }
        }
        match self.scale {
            ScaleKind::Prior => {
                let not_prior = "no such field with scale = \"prior\"";
                if let Some(steps) = self.warmup_steps {
                    return Err(BalanceError::invalid_config(
                        NAME,
                        "warmup_steps",
                        steps,
                        not_prior,
                    ));
                }
                if let Some(decay) = self.decay {
                    return Err(BalanceError::invalid_config(
                        NAME, "decay", decay, not_prior,
                    ));
                }
                if self.prior_steps == Some(0) {
                    return Err(BalanceError::invalid_config(
                        NAME,
                        "prior_steps",
                        0,
                        "an integer >= 1",
                    ));
                }
                if let Some(values) = &self.prior_loss {
                    validate::prior_losses(NAME, "prior_loss", values, num_tasks)?;
                }
            }
            ScaleKind::Initial => {
                if let Some(decay) = self.decay {
                    return Err(BalanceError::invalid_config(
                        NAME,
                        "decay",
                        decay,
                        "no decay with scale = \"initial\" (it applies to scale = \"ema\")",
                    ));
                }
                if self.warmup_steps == Some(0) {
                    return Err(BalanceError::invalid_config(
                        NAME,
                        "warmup_steps",
                        0,
                        "an integer >= 1",
                    ));
                }
            }
            ScaleKind::Ema => {
                if let Some(steps) = self.warmup_steps {
                    return Err(BalanceError::invalid_config(
                        NAME,
                        "warmup_steps",
                        steps,
                        "no warmup_steps with scale = \"ema\" (it applies to scale = \"initial\")",
                    ));
                }
                if let Some(decay) = self.decay {
                    validate::unit_interval_open(NAME, "decay", decay)?;
                }
            }
        }
        Ok(())
    }

    fn build(&self, num_tasks: usize) -> Result<Box<dyn LossBalancer>> {
        Ok(Box::new(LossNorm {
            rule: self.rule(num_tasks)?,
        }))
    }

    fn clone_config(&self) -> Box<dyn BalancerConfig> {
        Box::new(self.clone())
    }
}

/// A validated scale estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScaleEstimate {
    /// Mean of the first `warmup_steps` losses, then frozen.
    Initial {
        /// Steps averaged (>= 1).
        warmup_steps: u64,
    },
    /// EMA with `decay` in [0, 1).
    Ema {
        /// The decay.
        decay: f64,
    },
    /// The prior losses (given or estimated; the state holds them).
    Prior,
}

/// The numerical rule of `loss_norm` over plain `f64` values (no autograd), with its state.
#[derive(Debug, Clone, PartialEq)]
pub struct LossNormRule {
    estimate: ScaleEstimate,
    eps: f64,
    state: LossNormState,
}

/// The mutable state of [`LossNormRule`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossNormState {
    /// Steps observed so far.
    pub seen: u64,
    /// Sum of the loss values during the warm-up (`initial` only).
    pub warmup_sum: Vec<f64>,
    /// The current scale estimate (`None` before the first step).
    pub scale: Option<Vec<f64>>,
    /// The prior losses, given or being estimated (`scale = "prior"` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<PriorSource>,
}

impl LossNormRule {
    /// A fresh rule for `num_tasks` tasks.
    pub fn new(estimate: ScaleEstimate, eps: f64, num_tasks: usize) -> Self {
        Self {
            estimate,
            eps,
            state: LossNormState {
                seen: 0,
                warmup_sum: vec![0.0; num_tasks],
                scale: None,
                prior: None,
            },
        }
    }

    /// The number of tasks.
    pub fn num_tasks(&self) -> usize {
        self.state.warmup_sum.len()
    }

    /// True while the prior is being estimated and wants this step's labels.
    pub fn needs_label_stats(&self) -> bool {
        self.state
            .prior
            .as_ref()
            .is_some_and(PriorSource::needs_label_stats)
    }

    /// Pools one step's label statistics into the prior estimate (no-op without one).
    pub fn observe_label_stats(&mut self, stats: &[LabelStats]) -> Result<()> {
        match &mut self.state.prior {
            Some(prior) => prior.observe(stats),
            None => Ok(()),
        }
    }

    /// The prior losses with `scale = "prior"` (`Ok(None)` otherwise); an error while none is known.
    pub fn prior_losses(&self) -> Result<Option<Vec<f64>>> {
        self.state
            .prior
            .as_ref()
            .map(|prior| prior.losses(NAME))
            .transpose()
    }

    /// Folds this step's loss values into the scale estimate and returns this step's weights. With
    /// `scale = "prior"` the scale is the prior ([`LossNormRule::prior_losses`]; the balancer checks it is
    /// known before calling this; until then the step's losses stand in).
    pub fn update(&mut self, losses: &[f64]) -> Vec<f64> {
        let prior = self.prior_losses().ok().flatten();
        let scale = match (self.estimate, self.state.scale.take()) {
            (ScaleEstimate::Prior, _) => prior.unwrap_or_else(|| losses.to_vec()),
            (ScaleEstimate::Initial { warmup_steps }, _) if self.state.seen < warmup_steps => {
                for (sum, &l) in self.state.warmup_sum.iter_mut().zip(losses) {
                    *sum += l;
                }
                let n = (self.state.seen + 1) as f64;
                self.state.warmup_sum.iter().map(|s| s / n).collect()
            }
            (ScaleEstimate::Initial { .. }, Some(scale)) => scale,
            (ScaleEstimate::Ema { decay }, Some(scale)) => scale
                .iter()
                .zip(losses)
                .map(|(s, l)| decay * s + (1.0 - decay) * l)
                .collect(),
            (_, None) => losses.to_vec(),
        };
        self.state.seen += 1;
        self.state.scale = Some(scale);
        self.weights()
    }

    /// The weights from the current estimate (all 1 before the first step).
    pub fn weights(&self) -> Vec<f64> {
        match &self.state.scale {
            None => vec![1.0; self.num_tasks()],
            Some(scale) => scale
                .iter()
                .map(|s| {
                    let w = 1.0 / s.abs().max(self.eps);
                    if w.is_finite() {
                        w
                    } else {
                        0.0
                    }
                })
                .collect(),
        }
    }

    /// The current scale estimate, if any step was seen.
    pub fn scale(&self) -> Option<&[f64]> {
        self.state.scale.as_deref()
    }

    /// The state, for checkpoints.
    pub fn state(&self) -> &LossNormState {
        &self.state
    }

    /// Restores a state of the same task count.
    pub fn set_state(&mut self, state: LossNormState) -> Result<()> {
        let n = self.num_tasks();
        let fits = state.warmup_sum.len() == n
            && state.scale.as_ref().is_none_or(|s| s.len() == n)
            && state.prior.is_some() == (self.estimate == ScaleEstimate::Prior);
        if !fits {
            return Err(BalanceError::StateMismatch {
                balancer: NAME.into(),
                reason: format!("vectors of the state do not have {n} entries"),
            });
        }
        self.state = state;
        Ok(())
    }
}

/// The `loss_norm` balancer.
#[derive(Debug, Clone)]
pub struct LossNorm {
    rule: LossNormRule,
}

impl LossBalancer for LossNorm {
    fn name(&self) -> &str {
        NAME
    }

    fn num_tasks(&self) -> usize {
        self.rule.num_tasks()
    }

    fn weights(&self) -> Vec<f64> {
        self.rule.weights()
    }

    fn backward(&mut self, input: &StepInput<'_>) -> Result<StepReport> {
        input.expect_tasks(self.num_tasks())?;
        self.rule.prior_losses()?; // with scale = "prior": an error until the prior is known
        let weights = self.rule.update(input.loss_values());
        let scale = self.rule.scale().map(<[f64]>::to_vec).unwrap_or_default();
        Ok(input
            .backward_weighted(NAME, weights)?
            .with_extra("scale", scale))
    }

    fn needs_label_stats(&self) -> bool {
        self.rule.needs_label_stats()
    }

    fn observe_label_stats(&mut self, stats: &[LabelStats]) -> Result<()> {
        self.rule.observe_label_stats(stats)
    }

    fn state(&self) -> Result<BalancerState> {
        BalancerState::new(NAME, self.num_tasks(), self.rule.state())
    }

    fn load_state(&mut self, state: &BalancerState) -> Result<()> {
        let decoded = state.decode(NAME, self.num_tasks())?;
        self.rule.set_state(decoded)
    }
}

balance_core::register_balancer! {
    name: NAME,
    config: LossNormConfig,
    summary: "Divide each loss by a detached scale (initial loss, running EMA or the label prior) so scales compare.",
    kind: LossWeighting,
    paper: "- (industry practice; cf. Chen et al., GradNorm, ICML 2018, loss ratios)",
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn error(config: LossNormConfig) -> String {
        config.build(2).unwrap_err().to_string()
    }

    #[test]
    fn initial_scale_is_first_loss_by_default() {
        let mut rule = LossNormConfig::default().rule(2).unwrap();
        assert_eq!(rule.weights(), vec![1.0, 1.0]);
        assert_eq!(rule.update(&[2.0, 0.5]), vec![0.5, 2.0]);
        assert_eq!(rule.update(&[100.0, 100.0]), vec![0.5, 2.0]);
    }

    #[test]
    fn initial_scale_averages_the_warmup_then_freezes() {
        let mut rule = LossNormConfig::initial(2).rule(1).unwrap();
        assert_eq!(rule.update(&[4.0]), vec![0.25]);
        assert_eq!(rule.update(&[2.0]), vec![1.0 / 3.0]); // mean(4, 2) = 3
        assert_eq!(rule.update(&[1000.0]), vec![1.0 / 3.0]);
    }

    #[test]
    fn ema_scale_follows_the_closed_form() {
        let mut rule = LossNormConfig::ema(0.5).rule(1).unwrap();
        assert_eq!(rule.update(&[8.0]), vec![1.0 / 8.0]);
        assert_eq!(rule.update(&[4.0]), vec![1.0 / 6.0]); // 0.5*8 + 0.5*4
        assert_eq!(rule.update(&[2.0]), vec![1.0 / 4.0]); // 0.5*6 + 0.5*2
    }

    #[test]
    fn zero_loss_is_floored_by_eps() {
        let mut rule = LossNormConfig::default().rule(1).unwrap();
        assert_eq!(rule.update(&[0.0]), vec![1e12]);
    }

    fn prior(prior_steps: Option<u64>, prior_loss: Option<Vec<f64>>) -> LossNormConfig {
        LossNormConfig {
            scale: ScaleKind::Prior,
            prior_steps,
            prior_loss,
            ..Default::default()
        }
    }

    fn entropy(p: f64) -> f64 {
        -(p * p.ln()) - (1.0 - p) * (1.0 - p).ln()
    }

    #[test]
    fn prior_scale_is_the_label_entropy_pooled_over_the_warmup() {
        let mut rule = prior(Some(2), None).rule(2).unwrap();
        assert!(rule.needs_label_stats());
        assert!(rule.prior_losses().is_err());
        rule.observe_label_stats(&[LabelStats::binary(1000, 299), LabelStats::binary(1000, 4)])
            .unwrap();
        rule.observe_label_stats(&[LabelStats::binary(1000, 301), LabelStats::binary(1000, 6)])
            .unwrap();
        assert!(!rule.needs_label_stats());
        let expected = [entropy(600.5 / 2001.0), entropy(10.5 / 2001.0)];
        let w = rule.update(&[0.69, 0.69]);
        for t in 0..2 {
            assert!((w[t] - 1.0 / expected[t]).abs() < 1e-9, "{w:?}");
        }
        // The losses do not move the weights.
        assert_eq!(rule.update(&[0.1, 0.01]), w);
    }

    #[test]
    fn given_prior_needs_no_labels_and_missing_prior_is_a_clear_error() {
        let mut rule = prior(None, Some(vec![0.5, 0.25])).rule(2).unwrap();
        assert!(!rule.needs_label_stats());
        assert_eq!(rule.update(&[3.0, 3.0]), vec![2.0, 4.0]);
        let m = prior(None, None)
            .rule(2)
            .unwrap()
            .prior_losses()
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("observe_label_stats") && m.contains("prior_loss"),
            "{m}"
        );
    }

    #[test]
    fn prior_fields_are_checked() {
        let m = error(prior(Some(0), None));
        assert!(
            m.contains("field `prior_steps` = 0, expected an integer >= 1"),
            "{m}"
        );
        let m = error(prior(None, Some(vec![0.5, -1.0])));
        assert!(m.contains("field `prior_loss[1]` = -1"), "{m}");
        let m = error(LossNormConfig {
            prior_steps: Some(5),
            ..Default::default()
        });
        assert!(
            m.contains("field `prior_steps` = 5, expected no such field unless scale = \"prior\""),
            "{m}"
        );
        let m = error(LossNormConfig {
            decay: Some(0.9),
            ..prior(None, None)
        });
        assert!(
            m.contains("field `decay` = 0.9, expected no such field with scale = \"prior\""),
            "{m}"
        );
        let c: LossNormConfig =
            serde_json::from_str(r#"{"scale": "prior", "prior_steps": 3}"#).unwrap();
        assert_eq!(c, prior(Some(3), None));
    }

    #[test]
    fn prior_state_round_trips() {
        let mut rule = prior(Some(3), None).rule(1).unwrap();
        rule.observe_label_stats(&[LabelStats::binary(100, 7)])
            .unwrap();
        let mut restored = prior(Some(3), None).rule(1).unwrap();
        let json = serde_json::to_string(rule.state()).unwrap();
        restored
            .set_state(serde_json::from_str(&json).unwrap())
            .unwrap();
        assert_eq!(restored, rule);
        // A state without a prior does not fit a prior rule.
        let plain = LossNormConfig::default().rule(1).unwrap();
        assert!(restored.set_state(plain.state().clone()).is_err());
    }

    proptest! {
        /// Scale invariance: multiplying a task's loss and its prior by c > 0 leaves its weighted loss
        /// `w_i L_i` unchanged.
        #[test]
        fn prior_scale_is_unit_free(
            prior_loss in proptest::collection::vec(0.01f64..5.0, 2..5),
            loss_factor in 0.1f64..3.0,
            c in 0.001f64..1000.0,
        ) {
            let n = prior_loss.len();
            let losses: Vec<f64> = prior_loss.iter().map(|p| p * loss_factor).collect();
            let mut plain = prior(None, Some(prior_loss.clone())).rule(n).unwrap();
            let scaled_prior: Vec<f64> = prior_loss.iter().map(|p| p * c).collect();
            let mut scaled = prior(None, Some(scaled_prior)).rule(n).unwrap();
            let w = plain.update(&losses);
            let scaled_losses: Vec<f64> = losses.iter().map(|l| l * c).collect();
            let ws = scaled.update(&scaled_losses);
            for i in 0..n {
                let (a, b) = (w[i] * losses[i], ws[i] * scaled_losses[i]);
                prop_assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{} vs {}", a, b);
                prop_assert!(w[i].is_finite() && w[i] > 0.0);
            }
        }
    }

    #[test]
    fn decay_of_one_is_rejected() {
        let m = error(LossNormConfig::ema(1.0));
        assert!(
            m.contains("field `decay` = 1, expected a number in [0, 1)"),
            "{m}"
        );
    }

    #[test]
    fn zero_warmup_is_rejected() {
        let m = error(LossNormConfig::initial(0));
        assert!(
            m.contains("field `warmup_steps` = 0, expected an integer >= 1"),
            "{m}"
        );
    }

    #[test]
    fn non_positive_eps_is_rejected() {
        let m = error(LossNormConfig {
            eps: Some(0.0),
            ..LossNormConfig::default()
        });
        assert!(m.contains("field `eps` = 0"), "{m}");
    }

    #[test]
    fn options_of_the_other_scale_are_rejected() {
        let m = error(LossNormConfig {
            decay: Some(0.5),
            ..LossNormConfig::initial(3)
        });
        assert!(
            m.contains("field `decay` = 0.5") && m.contains("scale = \"ema\""),
            "{m}"
        );
        let m = error(LossNormConfig {
            warmup_steps: Some(3),
            ..LossNormConfig::ema(0.5)
        });
        assert!(m.contains("field `warmup_steps` = 3"), "{m}");
    }

    #[test]
    fn unknown_field_and_unknown_scale_are_rejected() {
        let e = serde_json::from_str::<LossNormConfig>(r#"{"scael": "ema"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `scael`"), "{e}");
        let e = serde_json::from_str::<LossNormConfig>(r#"{"scale": "median"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant `median`"), "{e}");
    }

    fn configs() -> impl Strategy<Value = LossNormConfig> {
        prop_oneof![
            (1u64..5).prop_map(LossNormConfig::initial),
            (0.0f64..0.999).prop_map(LossNormConfig::ema),
        ]
    }

    fn loss_sequences(tasks: usize) -> impl Strategy<Value = Vec<Vec<f64>>> {
        prop::collection::vec(prop::collection::vec(1e-3f64..1e3, tasks), 1..12)
    }

    proptest! {
        #[test]
        fn weights_are_finite_and_non_negative_for_any_finite_losses(
            config in configs(),
            steps in prop::collection::vec(prop::collection::vec(-1e300f64..1e300, 3), 1..10),
        ) {
            let mut rule = config.rule(3).unwrap();
            for losses in &steps {
                for w in rule.update(losses) {
                    prop_assert!(w.is_finite() && w >= 0.0, "weight {}", w);
                }
            }
        }

        #[test]
        fn invariant_to_scaling_a_task_loss(
            config in configs(),
            steps in loss_sequences(3),
            task in 0usize..3,
            c in 1e-3f64..1e3,
        ) {
            let mut plain = config.rule(3).unwrap();
            let mut scaled = config.rule(3).unwrap();
            for losses in &steps {
                let mut scaled_losses = losses.clone();
                scaled_losses[task] *= c;
                let w = plain.update(losses);
                let ws = scaled.update(&scaled_losses);
                for i in 0..3 {
                    // The weighted losses w_i * L_i agree (relative 1e-12: the rule is exact up to rounding).
                    let a = w[i] * losses[i];
                    let b = ws[i] * scaled_losses[i];
                    prop_assert!((a - b).abs() <= 1e-12 * a.abs().max(b.abs()), "task {}: {} vs {}", i, a, b);
                }
            }
        }

        #[test]
        fn reordering_tasks_reorders_weights(
            config in configs(),
            steps in loss_sequences(4),
            rotation in 1usize..4,
        ) {
            let perm: Vec<usize> = (0..4).map(|i| (i + rotation) % 4).collect();
            let mut a = config.rule(4).unwrap();
            let mut b = config.rule(4).unwrap();
            for losses in &steps {
                let permuted: Vec<f64> = perm.iter().map(|&i| losses[i]).collect();
                let wa = a.update(losses);
                let wb = b.update(&permuted);
                for (k, &i) in perm.iter().enumerate() {
                    prop_assert_eq!(wb[k], wa[i]);
                }
            }
        }

        #[test]
        fn restored_state_gives_identical_next_weights(
            config in configs(),
            prefix in loss_sequences(2),
            suffix in loss_sequences(2),
        ) {
            let mut original = config.build(2).unwrap();
            let mut rule = config.rule(2).unwrap();
            for losses in &prefix {
                rule.update(losses);
            }
            // Through the serialised form, as a checkpoint file would.
            let state = BalancerState::new(NAME, 2, rule.state()).unwrap();
            let json = serde_json::to_string(&state).unwrap();
            let mut restored = config.rule(2).unwrap();
            restored.set_state(serde_json::from_str::<BalancerState>(&json).unwrap().decode(NAME, 2).unwrap()).unwrap();
            original.load_state(&state).unwrap();
            prop_assert_eq!(original.weights(), rule.weights());
            for losses in &suffix {
                let a = rule.update(losses);
                let b = restored.update(losses);
                prop_assert_eq!(a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), b.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            }
        }

        #[test]
        fn config_round_trips(config in configs(), eps in prop::option::of(1e-15f64..1e-3)) {
            let config = LossNormConfig { eps, ..config };
            let boxed: Box<dyn BalancerConfig> = Box::new(config);
            let json = serde_json::to_string(&boxed).unwrap();
            let back: Box<dyn BalancerConfig> = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&boxed).unwrap());
        }
    }
}
