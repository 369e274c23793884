//! The machinery of gradient balancers (MGDA, PCGrad, CAGrad, IMTL-G, Nash-MTL, Aligned-MTL): take each
//! task's gradient of a shared target, reduce them to their small `T x T` Gram matrix, let the method
//! pick combination coefficients `alpha` from it, and write `sum_i alpha_i g_i` as the shared part's
//! gradient.
//!
//! Every such method returns a linear combination of the task gradients, so the method itself is a
//! function `Gram -> alpha` over `f64` (cheap, exact, testable without tensors) and the tensor work is
//! shared here: `T` backward passes for the per-task gradients, one matrix product for the Gram matrix
//! (one host synchronisation), one for the combination, written in place. Nothing is kept between steps.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::balancer::StepInput;
use crate::collective::{wire_kind, DataParallel};
use crate::error::{BalanceError, Result, TorchResultExt};
use crate::grad;
use crate::shared::SharedTarget;

/// What each task-specific parameter (a tower, a gate) receives from a gradient method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskSpecificGradient {
    /// Its own task's gradient, unweighted (LibMTL's convention: a task's head always learns, even when
    /// the method gives the task a zero coefficient on the shared part).
    #[default]
    Unweighted,
    /// Its task's gradient times the task's coefficient, i.e. exactly `grad(sum_i alpha_i L_i)` (the
    /// MGDA and Nash-MTL reference codes).
    Weighted,
}

impl TaskSpecificGradient {
    /// The snake_case name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskSpecificGradient::Unweighted => "unweighted",
            TaskSpecificGradient::Weighted => "weighted",
        }
    }
}

/// A [`SharedTarget`] that a combination method can write to: all shared parameters or the shared
/// representation. The last shared layer alone is not enough (the layers below it would get no
/// gradient), so [`check_combinable`] rejects it with a clear error.
pub fn check_combinable(method: &str, target: SharedTarget) -> Result<()> {
    if target == SharedTarget::LastSharedLayer {
        return Err(BalanceError::invalid_config(
            method,
            "target",
            target.as_str(),
            "`all_shared` or `representation` (a gradient method replaces the whole shared gradient, \
             so it needs every shared parameter or the representation they all feed)",
        ));
    }
    Ok(())
}

/// One step's per-task gradients: of the shared target (flattened into a `T x P` matrix, in `f64`) and
/// of the task-specific parameters.
pub struct TaskGradients<'a> {
    data_parallel: Option<&'a DataParallel>,
    target: SharedTarget,
    target_tensors: Vec<&'a Tensor>,
    /// `[T, P]`: row `i` is task `i`'s gradient of the target, flattened (zeros where it has none).
    matrix: Tensor,
    task_params: Vec<&'a Tensor>,
    /// `[task][param]`: each task's gradient of each task-specific parameter (`None` when it has none).
    task_grads: Vec<Vec<Option<Tensor>>>,
}

impl std::fmt::Debug for TaskGradients<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskGradients")
            .field("target", &self.target)
            .field("matrix", &self.matrix.size())
            .finish_non_exhaustive()
    }
}

impl<'a> TaskGradients<'a> {
    /// Takes every task's gradient of `target` and of the task-specific parameters (`T` backward passes
    /// that keep the graph). `method` names the balancer in errors.
    pub fn compute(input: &StepInput<'a>, target: SharedTarget, method: &str) -> Result<Self> {
        check_combinable(method, target)?;
        let target_tensors = input.target_tensors(target, method)?;
        let task_params: Vec<&'a Tensor> = input.parts().task_specific().iter().collect();
        let inputs: Vec<&Tensor> = target_tensors
            .iter()
            .chain(task_params.iter())
            .copied()
            .collect();
        let mut rows = Vec::with_capacity(input.num_tasks());
        let mut task_grads = Vec::with_capacity(input.num_tasks());
        for loss in input.losses() {
            let mut grads = grad::sparse_gradients(loss, &inputs, true)?;
            let specific = grads.split_off(target_tensors.len());
            rows.push(grad::flatten(&grads, &target_tensors)?);
            task_grads.push(specific);
        }
        let mut matrix = Tensor::f_stack(&rows, 0).context("stacking task gradients")?;
        let data_parallel = input.data_parallel();
        if let Some(dp) = data_parallel {
            // Parameter gradients of mean losses: the global batch's are the share-weighted sum. The
            // representation's are per-example rows and stay local (only their Gram matrix is global).
            if target != SharedTarget::Representation {
                dp.global_mean_rows(&mut matrix, wire_kind(&target_tensors))?;
            }
        }
        Ok(Self {
            data_parallel,
            target,
            target_tensors,
            matrix,
            task_params,
            task_grads,
        })
    }

    /// The number of tasks.
    pub fn num_tasks(&self) -> usize {
        self.task_grads.len()
    }

    /// The target these gradients are of.
    pub fn target(&self) -> SharedTarget {
        self.target
    }

    /// The `T x P` matrix of flattened task gradients (row per task, `f64`); when data-parallel, the
    /// global batch's for parameter targets and this rank's rows for the representation.
    pub fn matrix(&self) -> &Tensor {
        &self.matrix
    }

    /// The Gram matrix `G[i][j] = <g_i, g_j>` (one host synchronisation), of the global batch when the
    /// step is data-parallel.
    pub fn gram(&self) -> Result<Vec<Vec<f64>>> {
        let t = self.num_tasks();
        let mut gram = self
            .matrix
            .f_matmul(&self.matrix.tr())
            .and_then(|g| g.f_reshape([-1]))
            .and_then(|g| g.f_to_device(tch::Device::Cpu))
            .context("Gram matrix of the task gradients")?;
        if let (Some(dp), SharedTarget::Representation) = (self.data_parallel, self.target) {
            dp.global_per_example_gram(&mut gram)?;
        }
        let flat = Vec::<f64>::try_from(&gram).context("reading the Gram matrix")?;
        Ok(flat.chunks(t).map(<[f64]>::to_vec).collect())
    }

    /// Writes `sum_i coefficients[i] * g_i` as the target's gradient (in place into the shared parameters'
    /// `.grad`, or back-propagated from the representation) and gives each task-specific parameter its
    /// gradient per `task_specific`. Call it once, as the step's last backward work.
    pub fn apply(self, coefficients: &[f64], task_specific: TaskSpecificGradient) -> Result<()> {
        if coefficients.len() != self.num_tasks() {
            return Err(BalanceError::TaskCountMismatch {
                context: "combination coefficients".into(),
                expected: self.num_tasks(),
                actual: coefficients.len(),
            });
        }
        self.apply_task_specific(coefficients, task_specific)?;
        let alpha = Tensor::from_slice(coefficients)
            .f_to_device(self.matrix.device())
            .and_then(|a| a.f_unsqueeze(0))
            .context("combination coefficients")?;
        let combined = alpha
            .f_matmul(&self.matrix)
            .and_then(|c| c.f_squeeze_dim(0))
            .context("combining task gradients")?;
        let pieces = unflatten(&combined, &self.target_tensors)?;
        match self.target {
            SharedTarget::Representation => grad::backward_with(&self.target_tensors, &pieces),
            _ => {
                let pieces: Vec<Option<Tensor>> = pieces.into_iter().map(Some).collect();
                grad::accumulate_param_grads(&self.target_tensors, &pieces)?;
                if let Some(dp) = self.data_parallel {
                    // The combination of all-reduced task gradients is the global batch's already.
                    dp.mark_global_gradients(&self.target_tensors);
                }
                Ok(())
            }
        }
    }

    fn apply_task_specific(&self, coefficients: &[f64], mode: TaskSpecificGradient) -> Result<()> {
        let mut summed: Vec<Option<Tensor>> = Vec::with_capacity(self.task_params.len());
        for k in 0..self.task_params.len() {
            let mut acc: Option<Tensor> = None;
            for (task, grads) in self.task_grads.iter().enumerate() {
                let Some(g) = &grads[k] else { continue };
                let term = match mode {
                    TaskSpecificGradient::Unweighted => g.shallow_clone(),
                    TaskSpecificGradient::Weighted => g
                        .f_mul_scalar(coefficients[task])
                        .context("weighting a task gradient")?,
                };
                acc = Some(match acc {
                    None => term,
                    Some(a) => a.f_add(&term).context("summing task gradients")?,
                });
            }
            summed.push(acc);
        }
        grad::accumulate_param_grads(&self.task_params, &summed)
    }
}

/// Splits a flat `f64` vector into tensors shaped (and typed) like `like`.
fn unflatten(flat: &Tensor, like: &[&Tensor]) -> Result<Vec<Tensor>> {
    let mut offset = 0i64;
    like.iter()
        .map(|t| {
            let n = t.numel() as i64;
            let piece = flat
                .f_narrow(0, offset, n)
                .and_then(|p| p.f_reshape(t.size()))
                .and_then(|p| p.f_to_kind(t.kind()))
                .context("shaping the combined gradient")?;
            offset += n;
            Ok(piece)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::SharedParts;
    use tch::Kind;

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap()
    }

    /// Two tasks over a shared `w` and one head each: `L1 = sum(w * a) * h1`, `L2 = sum(w^2) * h2`.
    /// By hand: `dL1/dw = a h1`, `dL2/dw = 2 w h2`, `dL1/dh1 = sum(w a)`, `dL2/dh2 = sum(w^2)`.
    #[test]
    fn gram_and_combination_match_hand_computed_gradients() {
        let w = Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true);
        let h1 = Tensor::from_slice(&[3.0f64]).set_requires_grad(true);
        let h2 = Tensor::from_slice(&[0.5f64]).set_requires_grad(true);
        let a = Tensor::from_slice(&[1.0f64, -1.0]);
        let l1 = ((&w * &a).sum(Kind::Double) * &h1).sum(Kind::Double);
        let l2 = ((&w * &w).sum(Kind::Double) * &h2).sum(Kind::Double);
        let parts = SharedParts::new(
            vec![w.shallow_clone()],
            vec![h1.shallow_clone(), h2.shallow_clone()],
        );
        let losses = [l1, l2];
        let values_now = [0.0, 0.0];
        let input = StepInput::new(&losses, &values_now, &parts, None, 0);
        let grads = TaskGradients::compute(&input, SharedTarget::AllShared, "t").unwrap();
        // g1 = [3, -3], g2 = [1, 2].
        let gram = grads.gram().unwrap();
        assert_eq!(gram, vec![vec![18.0, -3.0], vec![-3.0, 5.0]]);
        grads
            .apply(&[0.5, 2.0], TaskSpecificGradient::Unweighted)
            .unwrap();
        assert_eq!(values(&w.grad()), vec![0.5 * 3.0 + 2.0, 0.5 * -3.0 + 4.0]);
        assert_eq!(values(&h1.grad()), vec![-1.0]);
        assert_eq!(values(&h2.grad()), vec![5.0]);
    }

    #[test]
    fn weighted_task_specific_and_representation_targets() {
        let w = Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true);
        let h1 = Tensor::from_slice(&[3.0f64]).set_requires_grad(true);
        let h2 = Tensor::from_slice(&[0.5f64]).set_requires_grad(true);
        let z = &w * 2.0; // representation; dz/dw = 2
        let l1 = (z.sum(Kind::Double) * &h1).sum(Kind::Double); // dL1/dz = [3, 3]
        let l2 = ((&z * &z).sum(Kind::Double) * &h2).sum(Kind::Double); // dL2/dz = z = [2, 4]
        let parts = SharedParts::new(
            vec![w.shallow_clone()],
            vec![h1.shallow_clone(), h2.shallow_clone()],
        );
        let losses = [l1, l2];
        let values_now = [0.0, 0.0];
        let input = StepInput::new(&losses, &values_now, &parts, Some(&z), 0);
        let grads = TaskGradients::compute(&input, SharedTarget::Representation, "t").unwrap();
        assert_eq!(
            grads.gram().unwrap(),
            vec![vec![18.0, 18.0], vec![18.0, 20.0]]
        );
        grads
            .apply(&[1.0, 0.5], TaskSpecificGradient::Weighted)
            .unwrap();
        // dz = [3 + 1, 3 + 2] -> dw = 2 dz.
        assert_eq!(values(&w.grad()), vec![8.0, 10.0]);
        assert_eq!(values(&h1.grad()), vec![6.0]); // sum(z) * 1
        assert_eq!(values(&h2.grad()), vec![0.5 * 20.0]); // sum(z^2) * 0.5
    }

    #[test]
    fn last_shared_layer_is_rejected_with_the_field_named() {
        let err = check_combinable("mgda", SharedTarget::LastSharedLayer).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`target` = last_shared_layer") && msg.contains("all_shared"),
            "{msg}"
        );
        assert!(check_combinable("mgda", SharedTarget::Representation).is_ok());
    }
}
