//! The six balancers: one config struct and one [`Rule`] per method, all driven by
//! [`GradientBalancer`], which takes the per-task gradients, hands their Gram matrix to the rule and
//! writes the combination.

pub mod aligned;
pub mod cagrad;
pub mod imtl;
pub mod mgda;
pub mod nash;
pub mod pcgrad;

use balance_core::{
    check_weights, validate, BalanceError, BalancerState, LossBalancer, Result, SharedTarget,
    StepInput, StepReport, TaskGradients, TaskSpecificGradient,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::linalg::all_finite;
use crate::math::{cosines_to_combination, norms};

/// What a rule decides for one step.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Take the per-task gradients and combine them ([`Rule::combine`]).
    Combine,
    /// Skip the per-task gradients: one backward of `sum_i w_i L_i` with these weights (Nash-MTL's cheap
    /// steps between updates).
    Weighted(Vec<f64>),
}

/// The coefficients a rule chose and what it measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Combination {
    /// The coefficients applied (finite, `>= 0`).
    pub alpha: Vec<f64>,
    /// Method-specific report series.
    pub extras: Vec<(&'static str, Vec<f64>)>,
}

/// A gradient-combination method as a function of the Gram matrix (and loss values, and its own state).
pub trait Rule: Send {
    /// Its checkpointable state.
    type State: Serialize + DeserializeOwned;

    /// The registry name.
    fn name(&self) -> &'static str;

    /// What to do this step (called first; the default always combines).
    fn plan(&mut self, _num_tasks: usize) -> Plan {
        Plan::Combine
    }

    /// The coefficients for Gram matrix `gram` (finite, checked) and loss values `losses`.
    fn combine(&mut self, gram: &[Vec<f64>], losses: &[f64]) -> Result<Combination>;

    /// The state.
    fn state(&self) -> Self::State;

    /// Restores a state of [`Rule::state`]; `false` when it does not fit `num_tasks`.
    fn set_state(&mut self, state: Self::State, num_tasks: usize) -> bool;
}

/// A rule wrapped as a [`LossBalancer`] with the common options.
#[derive(Debug, Clone)]
pub struct GradientBalancer<R: Rule> {
    rule: R,
    num_tasks: usize,
    target: SharedTarget,
    task_specific: TaskSpecificGradient,
    last: Vec<f64>,
}

#[derive(Serialize, Deserialize)]
struct Saved<S> {
    last: Vec<f64>,
    rule: S,
}

impl<R: Rule> GradientBalancer<R> {
    /// Wraps `rule` for `num_tasks` tasks.
    pub fn new(
        rule: R,
        num_tasks: usize,
        target: SharedTarget,
        task_specific: TaskSpecificGradient,
    ) -> Self {
        Self {
            rule,
            num_tasks,
            target,
            task_specific,
            last: vec![1.0; num_tasks],
        }
    }

    /// The rule.
    pub fn rule(&self) -> &R {
        &self.rule
    }
}

/// Clamps negative coefficients to 0 and rescales the rest so their sum equals the raw sum (the
/// method's scale). Returns the clamped coefficients and a per-task flag (1.0 where clamped). All zero
/// when no coefficient is positive.
pub fn clamp_non_negative(raw: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let flags: Vec<f64> = raw.iter().map(|&a| f64::from(u8::from(a < 0.0))).collect();
    let clamped: Vec<f64> = raw.iter().map(|&a| a.max(0.0)).collect();
    let raw_sum: f64 = raw.iter().sum();
    let clamped_sum: f64 = clamped.iter().sum();
    if clamped_sum <= 0.0 || raw_sum <= 0.0 {
        return (vec![0.0; raw.len()], flags);
    }
    let factor = raw_sum / clamped_sum;
    (clamped.iter().map(|a| a * factor).collect(), flags)
}

/// The error for a non-finite Gram matrix or coefficient.
pub(crate) fn non_finite(name: &str, step: u64, what: &str) -> BalanceError {
    BalanceError::InvalidWeights {
        balancer: name.to_string(),
        step,
        reason: format!("{what} is not finite"),
    }
}

impl<R: Rule> LossBalancer for GradientBalancer<R> {
    fn name(&self) -> &str {
        self.rule.name()
    }

    fn num_tasks(&self) -> usize {
        self.num_tasks
    }

    fn weights(&self) -> Vec<f64> {
        self.last.clone()
    }

    fn backward(&mut self, input: &StepInput<'_>) -> Result<StepReport> {
        input.expect_tasks(self.num_tasks)?;
        let name = self.rule.name();
        if let Plan::Weighted(weights) = self.rule.plan(self.num_tasks) {
            let report = input.backward_weighted(name, weights.clone())?;
            self.last = weights;
            return Ok(report.with_extra("updated", vec![0.0]));
        }
        let grads = TaskGradients::compute(input, self.target, name)?;
        let gram = grads.gram()?;
        if !all_finite(&gram) {
            return Err(non_finite(
                name,
                input.step(),
                "the Gram matrix of the task gradients",
            ));
        }
        let combination = self.rule.combine(&gram, input.loss_values())?;
        let alpha = combination.alpha;
        if alpha.iter().any(|a| !a.is_finite()) {
            return Err(non_finite(name, input.step(), "a combination coefficient"));
        }
        check_weights(name, input.step(), &alpha, self.num_tasks)?;
        let grad_norm = norms(&gram);
        let cos = cosines_to_combination(&gram, &alpha);
        grads.apply(&alpha, self.task_specific)?;
        self.last = alpha.clone();
        let mut report = StepReport::new(input.loss_values().to_vec(), alpha)
            .with_extra("grad_norm", grad_norm)
            .with_extra("cos", cos);
        for (key, values) in combination.extras {
            report = report.with_extra(key, values);
        }
        Ok(report)
    }

    fn state(&self) -> Result<BalancerState> {
        BalancerState::new(
            self.rule.name(),
            self.num_tasks,
            &Saved {
                last: self.last.clone(),
                rule: self.rule.state(),
            },
        )
    }

    fn load_state(&mut self, state: &BalancerState) -> Result<()> {
        let name = self.rule.name();
        let saved: Saved<R::State> = state.decode(name, self.num_tasks)?;
        let fits = saved.last.len() == self.num_tasks
            && saved.last.iter().all(|w| w.is_finite() && *w >= 0.0);
        if !fits || !self.rule.set_state(saved.rule, self.num_tasks) {
            return Err(BalanceError::StateMismatch {
                balancer: name.to_string(),
                reason: format!(
                    "state vectors do not have {} finite entries",
                    self.num_tasks
                ),
            });
        }
        self.last = saved.last;
        Ok(())
    }
}

/// The options every gradient-combination config shares, checked.
pub(crate) fn check_common(name: &str, num_tasks: usize, target: SharedTarget) -> Result<()> {
    validate::task_count_at_least(name, num_tasks, 1)?;
    balance_core::combine::check_combinable(name, target)
}

/// Registers a gradient-combination method (through [`balance_core::register_balancer!`], so its name
/// is written once): the config's `validate` is its `check`, and `build` wraps its `rule` in a
/// [`GradientBalancer`] with the config's `target` and `task_specific`.
macro_rules! gradient_method {
    (
        $(#[$meta:meta])*
        pub const $const_name:ident = $name:tt;
        config: $config:ty,
        summary: $summary:expr,
        paper: $paper:expr $(,)?
    ) => {
        balance_core::register_balancer! {
            $(#[$meta])*
            pub const $const_name = $name;
            config: $config,
            summary: $summary,
            kind: GradientCombination,
            paper: $paper,
            impl {
                fn validate(&self, num_tasks: usize) -> balance_core::Result<()> {
                    self.check(num_tasks)
                }

                fn build(
                    &self,
                    num_tasks: usize,
                ) -> balance_core::Result<Box<dyn balance_core::LossBalancer>> {
                    self.check(num_tasks)?;
                    Ok(Box::new($crate::methods::GradientBalancer::new(
                        self.rule(num_tasks),
                        num_tasks,
                        self.target,
                        self.task_specific,
                    )))
                }
            }
        }
    };
}
pub(crate) use gradient_method;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamping_keeps_the_sum_and_flags_negatives() {
        let (alpha, flags) = clamp_non_negative(&[1.5, -0.5, 0.0]);
        assert_eq!(alpha, vec![1.0, 0.0, 0.0]);
        assert_eq!(flags, vec![0.0, 1.0, 0.0]);
        let (alpha, _) = clamp_non_negative(&[0.25, 0.75]);
        assert_eq!(alpha, vec![0.25, 0.75]);
        let (alpha, _) = clamp_non_negative(&[-1.0, 0.0]);
        assert_eq!(alpha, vec![0.0, 0.0]);
    }
}
