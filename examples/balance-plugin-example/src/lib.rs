//! `fixed_then_adaptive`: equal (or given) weights for the first `switch_step` steps, then each loss divided
//! by its mean over those steps.
//!
//! Why: on a cascade of rare tasks, the first steps' losses mostly measure how fast the model learns the
//! base rates; waiting before normalising avoids freezing that transient into the weights. After the
//! switch, `w_i = 1 / max(mean_{t < switch_step} l_i(t), eps)`.
//!
//! This crate is the template for a third-party plugin: it depends only on `balance-core` (and
//! `balance-bench` for its binary), implements [`LossBalancer`], and registers itself with `balance_core::register_balancer!`.

use balance_core::{
    validate, BalanceError, BalancerState, LossBalancer, Result, StepInput, StepReport,
};
use serde::{Deserialize, Serialize};

/// Config: `{"method": "fixed_then_adaptive", "switch_step": 100, "initial_weights": [1.0, 2.0]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FixedThenAdaptiveConfig {
    /// Steps with fixed weights before switching (`>= 1`, default 100).
    pub switch_step: u64,
    /// The fixed weights (default all 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_weights: Option<Vec<f64>>,
    /// Floor on the loss scale (`> 0`, default 1e-12).
    pub eps: f64,
}

impl Default for FixedThenAdaptiveConfig {
    fn default() -> Self {
        Self {
            switch_step: 100,
            initial_weights: None,
            eps: 1e-12,
        }
    }
}

balance_core::register_balancer! {
    /// The registry name.
    pub const NAME = "fixed_then_adaptive";
    config: FixedThenAdaptiveConfig,
    summary: "Fixed weights for a warm-up, then each loss divided by its warm-up mean (example plugin).",
    kind: LossWeighting,
    paper: "-",
    impl {
        fn validate(&self, num_tasks: usize) -> Result<()> {
            validate::task_count_at_least(NAME, num_tasks, 1)?;
            if self.switch_step < 1 {
                return Err(BalanceError::invalid_config(
                    NAME,
                    "switch_step",
                    self.switch_step,
                    "an integer >= 1",
                ));
            }
            validate::positive(NAME, "eps", self.eps)?;
            if let Some(w) = &self.initial_weights {
                validate::task_weights(NAME, "initial_weights", w, num_tasks)?;
            }
            Ok(())
        }

        fn build(&self, num_tasks: usize) -> Result<Box<dyn LossBalancer>> {
            self.validate(num_tasks)?;
            let fixed = self
                .initial_weights
                .clone()
                .unwrap_or_else(|| vec![1.0; num_tasks]);
            Ok(Box::new(FixedThenAdaptive {
                config: self.clone(),
                fixed,
                state: State {
                    steps: 0,
                    loss_sums: vec![0.0; num_tasks],
                },
            }))
        }
    }
}

/// What the balancer carries between steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    steps: u64,
    loss_sums: Vec<f64>,
}

/// The balancer.
#[derive(Debug)]
pub struct FixedThenAdaptive {
    config: FixedThenAdaptiveConfig,
    fixed: Vec<f64>,
    state: State,
}

impl LossBalancer for FixedThenAdaptive {
    fn name(&self) -> &str {
        NAME
    }

    fn num_tasks(&self) -> usize {
        self.fixed.len()
    }

    fn weights(&self) -> Vec<f64> {
        if self.state.steps < self.config.switch_step {
            return self.fixed.clone();
        }
        let n = self.config.switch_step as f64;
        self.state
            .loss_sums
            .iter()
            .map(|s| 1.0 / (s / n).abs().max(self.config.eps))
            .collect()
    }

    fn backward(&mut self, input: &StepInput<'_>) -> Result<StepReport> {
        input.expect_tasks(self.num_tasks())?;
        let weights = self.weights();
        if self.state.steps < self.config.switch_step {
            for (sum, l) in self.state.loss_sums.iter_mut().zip(input.loss_values()) {
                *sum += l;
            }
        }
        self.state.steps += 1;
        input.backward_weighted(NAME, weights)
    }

    fn state(&self) -> Result<BalancerState> {
        BalancerState::new(NAME, self.num_tasks(), &self.state)
    }

    fn load_state(&mut self, state: &BalancerState) -> Result<()> {
        let decoded: State = state.decode(NAME, self.num_tasks())?;
        if decoded.loss_sums.len() != self.num_tasks() {
            return Err(BalanceError::StateMismatch {
                balancer: NAME.into(),
                reason: "wrong number of loss sums".into(),
            });
        }
        self.state = decoded;
        Ok(())
    }
}
