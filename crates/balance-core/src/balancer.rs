//! The [`LossBalancer`] trait that every balancing method implements, and what it is given and returns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::collective::DataParallel;
use crate::error::{BalanceError, Result, TorchResultExt};
use crate::grad;
use crate::shared::{SharedParts, SharedTarget};

/// A multi-task loss balancer: it drives the backward pass of one training step.
///
/// Every method family fits this one trait:
/// - loss-weighting methods (static, loss normalisation, uncertainty, DWA...) compute weights from
///   [`StepInput::loss_values`] and call [`StepInput::backward_weighted`], the default path (one backward
///   of the weighted sum);
/// - gradient methods (GradNorm, MGDA, PCGrad...) take per-task gradients of a [`SharedTarget`] with the
///   helpers of [`crate::grad`] and either weight the losses or write a combined gradient.
///
/// On return from [`LossBalancer::backward`] every trainable parameter's `.grad` has been accumulated into,
/// exactly as `loss.backward()` would (zero the gradients before the step). Implementations never panic
/// and never let a NaN or negative weight reach the model; [`crate::Balancer`] checks both again and rolls
/// back the balancer's state when a step fails.
pub trait LossBalancer: Send {
    /// The registry name of the method (for example `grad_norm`).
    fn name(&self) -> &str;

    /// The number of tasks this balancer was built for.
    fn num_tasks(&self) -> usize;

    /// The task weights that the next step would apply if nothing changed (one per task).
    fn weights(&self) -> Vec<f64>;

    /// Runs the backward pass for one step and reports what was applied and measured.
    fn backward(&mut self, input: &StepInput<'_>) -> Result<StepReport>;

    /// The balancer's full mutable state, such that [`LossBalancer::load_state`] on a freshly built balancer
    /// with the same config gives the same future behaviour bit for bit.
    fn state(&self) -> Result<BalancerState>;

    /// Restores a state produced by [`LossBalancer::state`] of a balancer of the same method and task count.
    fn load_state(&mut self, state: &BalancerState) -> Result<()>;

    /// Called by the training loop after the last step of each epoch. Methods that work per epoch (DWA)
    /// update their weights here; the default does nothing.
    fn end_epoch(&mut self) -> Result<()> {
        Ok(())
    }

    /// True when the method needs the step's losses evaluated again after the optimiser's update (FAMO).
    /// The training loop then re-runs the forward pass on the same batch, without gradients, and passes
    /// the losses to [`LossBalancer::observe_updated_losses`]. The default is `false`: no extra forward.
    fn needs_updated_losses(&self) -> bool {
        false
    }

    /// The same batch's per-task loss values after the optimiser applied this step's update (all finite,
    /// one per task). Called only when [`LossBalancer::needs_updated_losses`] is true.
    fn observe_updated_losses(&mut self, _losses: &[f64]) -> Result<()> {
        Ok(())
    }

    /// True while the method wants each step's label statistics (methods that measure progress against
    /// the best constant predictor, [`crate::prior`]). The training loop then passes them to
    /// [`LossBalancer::observe_label_stats`] before [`LossBalancer::backward`]. The default is `false`.
    fn needs_label_stats(&self) -> bool {
        false
    }

    /// The step's label statistics, one per task, before its backward. Called only when
    /// [`LossBalancer::needs_label_stats`] is true.
    fn observe_label_stats(&mut self, _stats: &[crate::prior::LabelStats]) -> Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for dyn LossBalancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossBalancer")
            .field("name", &self.name())
            .field("weights", &self.weights())
            .finish()
    }
}

/// Everything a balancer is given for one step.
pub struct StepInput<'a> {
    losses: &'a [Tensor],
    loss_values: &'a [f64],
    parts: &'a SharedParts,
    representation: Option<&'a Tensor>,
    step: u64,
    data_parallel: Option<&'a DataParallel>,
}

impl<'a> StepInput<'a> {
    /// Bundles one step's inputs. `loss_values` are the detached values of `losses` (checked finite by
    /// [`crate::Balancer`]); `representation` is the shared representation of this batch, when the model
    /// has one, still attached to the graph.
    pub fn new(
        losses: &'a [Tensor],
        loss_values: &'a [f64],
        parts: &'a SharedParts,
        representation: Option<&'a Tensor>,
        step: u64,
    ) -> Self {
        Self {
            losses,
            loss_values,
            parts,
            representation,
            step,
            data_parallel: None,
        }
    }

    /// Marks the step as one rank's shard of a data-parallel step (builder style): `loss_values` are then
    /// the global batch's, while `losses` stay this rank's, and gradient statistics must be made global
    /// through [`StepInput::data_parallel`] (as [`crate::TaskGradients`] and [`crate::grad::TaskNorms`] do).
    pub fn with_data_parallel(mut self, data_parallel: Option<&'a DataParallel>) -> Self {
        self.data_parallel = data_parallel;
        self
    }

    /// The data-parallel context of this step, if any.
    pub fn data_parallel(&self) -> Option<&'a DataParallel> {
        self.data_parallel
    }

    /// The per-task scalar losses, attached to the graph.
    pub fn losses(&self) -> &'a [Tensor] {
        self.losses
    }

    /// The per-task loss values, detached, all finite.
    pub fn loss_values(&self) -> &'a [f64] {
        self.loss_values
    }

    /// The number of tasks in this step.
    pub fn num_tasks(&self) -> usize {
        self.losses.len()
    }

    /// The model's parameter groups (shared, last shared layer, task-specific).
    pub fn parts(&self) -> &'a SharedParts {
        self.parts
    }

    /// The shared representation of this batch, if the model exposes one.
    pub fn representation(&self) -> Option<&'a Tensor> {
        self.representation
    }

    /// [`BalanceError::TaskCountMismatch`] unless this step has `expected` losses.
    pub fn expect_tasks(&self, expected: usize) -> Result<()> {
        if self.num_tasks() == expected {
            Ok(())
        } else {
            Err(BalanceError::TaskCountMismatch {
                context: "losses".into(),
                expected,
                actual: self.num_tasks(),
            })
        }
    }

    /// The 0-based index of this step.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The tensors that `target` designates for this step, or [`BalanceError::MissingSharedPart`].
    pub fn target_tensors(&self, target: SharedTarget, balancer: &str) -> Result<Vec<&'a Tensor>> {
        let missing = |part: &str| BalanceError::MissingSharedPart {
            balancer: balancer.to_string(),
            part: part.to_string(),
        };
        match target {
            SharedTarget::AllShared => {
                let params = self.parts.shared();
                if params.is_empty() {
                    return Err(missing("shared parameters"));
                }
                Ok(params.iter().collect())
            }
            SharedTarget::LastSharedLayer => {
                let params = self.parts.last_shared_layer();
                if params.is_empty() {
                    return Err(missing("last shared layer"));
                }
                Ok(params.iter().collect())
            }
            SharedTarget::Representation => self
                .representation
                .map(|r| vec![r])
                .ok_or_else(|| missing("shared representation")),
        }
    }

    /// The default path: checks `weights`, then runs one backward of `sum_i weights[i] * losses[i]`, and
    /// returns the matching report. Nothing reaches the graph unless every weight is finite and `>= 0`.
    pub fn backward_weighted(&self, balancer: &str, weights: Vec<f64>) -> Result<StepReport> {
        check_weights(balancer, self.step, &weights, self.num_tasks())?;
        let total = grad::weighted_sum(self.losses, &weights)?;
        total
            .f_backward()
            .context("backward of the weighted loss")?;
        Ok(StepReport::new(self.loss_values.to_vec(), weights))
    }
}

/// Checks that `weights` has one finite, non-negative entry per task.
pub fn check_weights(balancer: &str, step: u64, weights: &[f64], num_tasks: usize) -> Result<()> {
    if weights.len() != num_tasks {
        return Err(BalanceError::InvalidWeights {
            balancer: balancer.to_string(),
            step,
            reason: format!("{} weights for {num_tasks} tasks", weights.len()),
        });
    }
    if let Some((task, w)) = weights
        .iter()
        .enumerate()
        .find(|(_, w)| !w.is_finite() || **w < 0.0)
    {
        return Err(BalanceError::InvalidWeights {
            balancer: balancer.to_string(),
            step,
            reason: format!("weight of task {task} is {w}, expected a finite value >= 0"),
        });
    }
    Ok(())
}

/// What one step applied and measured: the loss values, the weights, and method-specific series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// The 0-based step index (filled in by [`crate::Balancer`]).
    pub step: u64,
    /// True when the step was skipped because a loss was not finite (nothing was applied).
    pub skipped: bool,
    /// The detached loss values, one per task.
    pub losses: Vec<f64>,
    /// The weights applied, one per task (for combination methods: the effective weights).
    pub weights: Vec<f64>,
    /// Method-specific per-task measurements (for example `grad_norm`, `target`), by name.
    pub extras: BTreeMap<String, Vec<f64>>,
}

impl StepReport {
    /// A report with losses and weights and no extras.
    pub fn new(losses: Vec<f64>, weights: Vec<f64>) -> Self {
        Self {
            step: 0,
            skipped: false,
            losses,
            weights,
            extras: BTreeMap::new(),
        }
    }

    /// Adds a named per-task series (builder style).
    pub fn with_extra(mut self, name: impl Into<String>, values: Vec<f64>) -> Self {
        self.extras.insert(name.into(), values);
        self
    }
}

/// A balancer's state as a serialisable value, tagged with the method it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalancerState {
    /// The registry name of the method that produced the state.
    pub method: String,
    /// The number of tasks.
    pub num_tasks: usize,
    /// Method-specific data.
    pub data: serde_json::Value,
}

impl BalancerState {
    /// Serialises `data` into a state for `method` with `num_tasks` tasks.
    pub fn new<T: Serialize>(method: &str, num_tasks: usize, data: &T) -> Result<Self> {
        let data = serde_json::to_value(data).map_err(|e| BalanceError::StateMismatch {
            balancer: method.to_string(),
            reason: format!("state cannot be serialised: {e}"),
        })?;
        Ok(Self {
            method: method.to_string(),
            num_tasks,
            data,
        })
    }

    /// Checks that this state belongs to `method` with `num_tasks` tasks and deserialises its data.
    pub fn decode<T: for<'de> Deserialize<'de>>(
        &self,
        method: &str,
        num_tasks: usize,
    ) -> Result<T> {
        let mismatch = |reason: String| BalanceError::StateMismatch {
            balancer: method.to_string(),
            reason,
        };
        if self.method != method {
            return Err(mismatch(format!(
                "the state was written by `{}`",
                self.method
            )));
        }
        if self.num_tasks != num_tasks {
            return Err(mismatch(format!(
                "the state is for {} tasks, the balancer has {num_tasks}",
                self.num_tasks
            )));
        }
        serde_json::from_value(self.data.clone())
            .map_err(|e| mismatch(format!("malformed data: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_weights_rejects_negative_nan_and_wrong_length() {
        assert!(check_weights("x", 0, &[1.0, 0.0], 2).is_ok());
        let err = check_weights("x", 3, &[1.0, -0.5], 2).unwrap_err();
        assert!(
            err.to_string().contains("weight of task 1 is -0.5"),
            "{err}"
        );
        let err = check_weights("x", 3, &[f64::NAN, 1.0], 2).unwrap_err();
        assert!(err.to_string().contains("task 0 is NaN"), "{err}");
        let err = check_weights("x", 3, &[1.0], 2).unwrap_err();
        assert!(err.to_string().contains("1 weights for 2 tasks"), "{err}");
    }

    #[test]
    fn state_decode_checks_method_and_task_count() {
        let state = BalancerState::new("static", 2, &vec![1.0, 2.0]).unwrap();
        assert_eq!(
            state.decode::<Vec<f64>>("static", 2).unwrap(),
            vec![1.0, 2.0]
        );
        let err = state.decode::<Vec<f64>>("loss_norm", 2).unwrap_err();
        assert!(err.to_string().contains("written by `static`"), "{err}");
        let err = state.decode::<Vec<f64>>("static", 3).unwrap_err();
        assert!(err.to_string().contains("for 2 tasks"), "{err}");
        let err = state.decode::<String>("static", 2).unwrap_err();
        assert!(err.to_string().contains("malformed data"), "{err}");
    }
}
