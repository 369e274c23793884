//! The `grad_norm` balancer: per-task gradient norms on the chosen shared part, the model's backward with
//! the current weights, then the closed-form weight update of [`crate::rule`].

use balance_core::{
    check_weights, grad, BalanceError, BalancerState, LossBalancer, Result, SharedTarget,
    StepInput, StepReport, TorchResultExt,
};
use tch::Tensor;

use crate::rule::{GradNormRule, GradNormState};
use crate::NAME;

/// GradNorm (Chen et al., ICML 2018), first-order.
#[derive(Debug, Clone)]
pub struct GradNorm {
    rule: GradNormRule,
}

impl GradNorm {
    /// Wraps a checked rule.
    pub fn new(rule: GradNormRule) -> Self {
        Self { rule }
    }

    /// The numerical rule (weights, state).
    pub fn rule(&self) -> &GradNormRule {
        &self.rule
    }

    /// `W` = every shared parameter. One backward per task over every parameter (shared and
    /// task-specific); the model's gradient `sum_i w_i g_i` is assembled from those same per-task
    /// gradients, so no extra backward is paid. Returns `n_i = ||grad_W L_i||` (of the global batch when
    /// data-parallel).
    fn all_shared_pass(&self, input: &StepInput<'_>, weights: &[f64]) -> Result<Vec<f64>> {
        let shared = input.target_tensors(SharedTarget::AllShared, NAME)?;
        let num_shared = shared.len();
        let params: Vec<&Tensor> = shared
            .into_iter()
            .chain(input.parts().task_specific().iter())
            .collect();
        let losses = input.losses();
        let mut norms = grad::TaskNorms::new(input, SharedTarget::AllShared);
        let mut combined: Vec<Option<Tensor>> = (0..params.len()).map(|_| None).collect();
        for (i, (loss, &w)) in losses.iter().zip(weights).enumerate() {
            let keep_graph = i + 1 < losses.len();
            let grads = grad::sparse_gradients(loss, &params, keep_graph)?;
            norms.push(&grads[..num_shared], &params[..num_shared])?;
            for (acc, g) in combined.iter_mut().zip(grads) {
                let Some(g) = g else { continue };
                let weighted = g.f_mul_scalar(w).context("weighting a task gradient")?;
                *acc = Some(match acc.take() {
                    None => weighted,
                    Some(sum) => sum.f_add(&weighted).context("summing task gradients")?,
                });
            }
        }
        grad::accumulate_param_grads(&params, &combined)?;
        norms.finish()
    }

    /// `W` = the last shared layer or the shared representation: per-task gradients of the small target
    /// (a backward through the towers and at most one layer), then one ordinary weighted backward.
    fn partial_pass(
        &self,
        input: &StepInput<'_>,
        weights: &[f64],
        target: SharedTarget,
    ) -> Result<Vec<f64>> {
        let targets = input.target_tensors(target, NAME)?;
        let mut norms = grad::TaskNorms::new(input, target);
        for loss in input.losses() {
            norms.push(&grad::sparse_gradients(loss, &targets, true)?, &targets)?;
        }
        let norms = norms.finish()?;
        grad::weighted_sum(input.losses(), weights)?
            .f_backward()
            .context("backward of the weighted loss")?;
        Ok(norms)
    }
}

impl LossBalancer for GradNorm {
    fn name(&self) -> &str {
        NAME
    }

    fn num_tasks(&self) -> usize {
        self.rule.params().num_tasks
    }

    fn weights(&self) -> Vec<f64> {
        self.rule.weights().to_vec()
    }

    fn backward(&mut self, input: &StepInput<'_>) -> Result<StepReport> {
        input.expect_tasks(self.num_tasks())?;
        self.rule.prior_losses()?; // with progress = "prior": an error until the prior is known
        let weights = self.weights();
        check_weights(NAME, input.step(), &weights, self.num_tasks())?;
        let target = self.rule.params().shared;
        let norms = match target {
            SharedTarget::AllShared => self.all_shared_pass(input, &weights)?,
            SharedTarget::LastSharedLayer | SharedTarget::Representation => {
                self.partial_pass(input, &weights, target)?
            }
        };
        if let Some((task, n)) = norms.iter().enumerate().find(|(_, n)| !n.is_finite()) {
            return Err(BalanceError::InvalidWeights {
                balancer: NAME.into(),
                step: input.step(),
                reason: format!("gradient norm of task {task} is {n}; weights not updated"),
            });
        }
        let update = self.rule.step(input.loss_values(), &norms);
        Ok(
            StepReport::new(input.loss_values().to_vec(), update.applied_weights)
                .with_extra("task_grad_norm", update.task_grad_norms)
                .with_extra("grad_norm", update.grad_norms)
                .with_extra("target", update.targets)
                .with_extra("loss_ratio", update.loss_ratios)
                .with_extra("inverse_rate", update.inverse_rates)
                .with_extra("weight_grad", update.weight_grads)
                .with_extra("next_weight", update.new_weights),
        )
    }

    fn needs_label_stats(&self) -> bool {
        self.rule.needs_label_stats()
    }

    fn observe_label_stats(&mut self, stats: &[balance_core::LabelStats]) -> Result<()> {
        self.rule.observe_label_stats(stats)
    }

    fn state(&self) -> Result<BalancerState> {
        BalancerState::new(NAME, self.num_tasks(), self.rule.state())
    }

    fn load_state(&mut self, state: &BalancerState) -> Result<()> {
        let decoded: GradNormState = state.decode(NAME, self.num_tasks())?;
        if self.rule.set_state(decoded) {
            Ok(())
        } else {
            Err(BalanceError::StateMismatch {
                balancer: NAME.into(),
                reason: format!("state vectors do not have {} entries", self.num_tasks()),
            })
        }
    }
}
