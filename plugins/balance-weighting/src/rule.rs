//! [`Weighted`]: the one [`LossBalancer`] of this crate, driving any [`WeightingRule`] (a pure `f64` rule
//! with its state), as `balance-gradient`'s `GradientBalancer` drives its gradient rules.

use balance_core::{BalanceError, BalancerState, LossBalancer, Result, StepInput, StepReport};
use serde::{de::DeserializeOwned, Serialize};

/// What a rule decides for one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Weighting {
    /// One weight per task, applied as `sum_i w_i L_i`.
    pub weights: Vec<f64>,
    /// Method-specific report series.
    pub extras: Vec<(&'static str, Vec<f64>)>,
}

impl Weighting {
    /// The weights, no extras.
    pub fn new(weights: Vec<f64>) -> Self {
        Self {
            weights,
            extras: Vec::new(),
        }
    }

    /// Adds a report series.
    pub fn with_extra(mut self, key: &'static str, values: Vec<f64>) -> Self {
        self.extras.push((key, values));
        self
    }
}

/// A loss-weighting method as a function of the detached loss values and its own state.
pub trait WeightingRule: Send {
    /// Its checkpointable state.
    type State: Serialize + DeserializeOwned;

    /// The registry name.
    fn name(&self) -> &'static str;

    /// The number of tasks.
    fn tasks(&self) -> usize;

    /// The weights the next step would apply before seeing its losses (what the balancer reports).
    fn current_weights(&self) -> Vec<f64>;

    /// This step's weights from its loss values (one per task, already checked finite); the rule may
    /// update its state here (the driver restores it when the step fails).
    fn step(&mut self, losses: &[f64]) -> Result<Weighting>;

    /// The state.
    fn saved(&self) -> &Self::State;

    /// Restores a state of [`WeightingRule::saved`]; an error when it does not fit the rule.
    fn restore(&mut self, state: Self::State) -> Result<()>;

    /// End of an epoch (DWA).
    fn end_epoch(&mut self) {}

    /// True when the method needs the losses after the optimiser's update (FAMO).
    fn needs_updated_losses(&self) -> bool {
        false
    }

    /// The losses of the same batch after the update (only called when
    /// [`WeightingRule::needs_updated_losses`]); one per task.
    fn observe_updated_losses(&mut self, _losses: &[f64]) -> Result<()> {
        Ok(())
    }
}

/// A [`WeightingRule`] as a [`LossBalancer`]: checks the task count, applies the rule's weights with one
/// weighted backward, and checkpoints the rule's state under its name.
#[derive(Debug, Clone, PartialEq)]
pub struct Weighted<R> {
    rule: R,
}

impl<R: WeightingRule> Weighted<R> {
    /// Wraps `rule`.
    pub fn new(rule: R) -> Self {
        Self { rule }
    }

    /// The rule.
    pub fn rule(&self) -> &R {
        &self.rule
    }
}

impl<R: WeightingRule> LossBalancer for Weighted<R> {
    fn name(&self) -> &str {
        self.rule.name()
    }

    fn num_tasks(&self) -> usize {
        self.rule.tasks()
    }

    fn weights(&self) -> Vec<f64> {
        self.rule.current_weights()
    }

    fn backward(&mut self, input: &StepInput<'_>) -> Result<StepReport> {
        input.expect_tasks(self.rule.tasks())?;
        let Weighting { weights, extras } = self.rule.step(input.loss_values())?;
        let mut report = input.backward_weighted(self.rule.name(), weights)?;
        for (key, values) in extras {
            report = report.with_extra(key, values);
        }
        Ok(report)
    }

    fn state(&self) -> Result<BalancerState> {
        BalancerState::new(self.rule.name(), self.rule.tasks(), self.rule.saved())
    }

    fn load_state(&mut self, state: &BalancerState) -> Result<()> {
        let decoded = state.decode(self.rule.name(), self.rule.tasks())?;
        self.rule.restore(decoded)
    }

    fn end_epoch(&mut self) -> Result<()> {
        self.rule.end_epoch();
        Ok(())
    }

    fn needs_updated_losses(&self) -> bool {
        self.rule.needs_updated_losses()
    }

    fn observe_updated_losses(&mut self, losses: &[f64]) -> Result<()> {
        if losses.len() != self.rule.tasks() {
            return Err(BalanceError::TaskCountMismatch {
                context: "updated losses".into(),
                expected: self.rule.tasks(),
                actual: losses.len(),
            });
        }
        self.rule.observe_updated_losses(losses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use balance_core::SharedParts;
    use tch::Tensor;

    /// Weights `1 + steps` each; counts steps, epochs and updated losses.
    #[derive(Debug, Clone, PartialEq)]
    struct Counting {
        state: (u64, u64, u64),
    }

    impl WeightingRule for Counting {
        type State = (u64, u64, u64);

        fn name(&self) -> &'static str {
            "counting"
        }
        fn tasks(&self) -> usize {
            2
        }
        fn current_weights(&self) -> Vec<f64> {
            vec![1.0 + self.state.0 as f64; 2]
        }
        fn step(&mut self, _losses: &[f64]) -> Result<Weighting> {
            let w = self.current_weights();
            self.state.0 += 1;
            Ok(Weighting::new(w).with_extra("steps", vec![self.state.0 as f64]))
        }
        fn saved(&self) -> &Self::State {
            &self.state
        }
        fn restore(&mut self, state: Self::State) -> Result<()> {
            self.state = state;
            Ok(())
        }
        fn end_epoch(&mut self) {
            self.state.1 += 1;
        }
        fn needs_updated_losses(&self) -> bool {
            true
        }
        fn observe_updated_losses(&mut self, _losses: &[f64]) -> Result<()> {
            self.state.2 += 1;
            Ok(())
        }
    }

    #[test]
    fn the_wrapper_applies_the_rule_reports_its_extras_and_forwards_the_hooks() {
        let mut b = Weighted::new(Counting { state: (0, 0, 0) });
        let parts = SharedParts::new(vec![], vec![]);
        let values = [0.5, 2.0];
        for step in 0..2u64 {
            let leaves: Vec<Tensor> = values
                .iter()
                .map(|&l| Tensor::from(l).set_requires_grad(true))
                .collect();
            let report = b
                .backward(&StepInput::new(&leaves, &values, &parts, None, step))
                .unwrap();
            let w = 1.0 + step as f64;
            assert_eq!(report.weights, vec![w, w]);
            assert_eq!(leaves[1].grad().double_value(&[]), w);
            assert_eq!(report.extras["steps"], vec![step as f64 + 1.0]);
        }
        assert_eq!(b.weights(), vec![3.0, 3.0]);
        b.end_epoch().unwrap();
        assert!(b.needs_updated_losses());
        b.observe_updated_losses(&[1.0, 1.0]).unwrap();
        let err = b.observe_updated_losses(&[1.0]).unwrap_err();
        assert!(
            matches!(
                err,
                BalanceError::TaskCountMismatch {
                    expected: 2,
                    actual: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        let state = b.state().unwrap();
        assert_eq!(state.method, "counting");
        let mut fresh = Weighted::new(Counting { state: (0, 0, 0) });
        fresh.load_state(&state).unwrap();
        assert_eq!(fresh.rule().state, (2, 1, 1));
        let wrong = BalancerState::new("other", 2, &(0u64, 0u64, 0u64)).unwrap();
        assert!(fresh.load_state(&wrong).is_err());
        assert_eq!(fresh.name(), "counting");
        assert_eq!(fresh.num_tasks(), 2);
    }
}
