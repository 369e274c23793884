//! Autograd helpers shared by balancers: weighted sums, per-task gradients, writing gradients.

use tch::{Kind, Tensor};

use crate::balancer::StepInput;
use crate::collective::{wire_kind, DataParallel};
use crate::error::{BalanceError, Result, TorchResultExt};
use crate::shared::SharedTarget;

/// `sum_i weights[i] * losses[i]` as a graph-attached scalar (weights are constants).
pub fn weighted_sum(losses: &[Tensor], weights: &[f64]) -> Result<Tensor> {
    if losses.len() != weights.len() || losses.is_empty() {
        return Err(BalanceError::TaskCountMismatch {
            context: "weighted sum (weights vs losses)".into(),
            expected: losses.len(),
            actual: weights.len(),
        });
    }
    let mut total: Option<Tensor> = None;
    for (loss, &w) in losses.iter().zip(weights) {
        let term = loss.f_mul_scalar(w).context("weighting a loss")?;
        total = Some(match total {
            None => term,
            Some(acc) => acc.f_add(&term).context("summing weighted losses")?,
        });
    }
    total.ok_or_else(|| BalanceError::TaskCountMismatch {
        context: "weighted sum".into(),
        expected: 1,
        actual: 0,
    })
}

/// Gradients of the scalar `loss` with respect to `inputs`, keeping the graph when `keep_graph`.
/// An input that `loss` does not depend on gets a zero gradient of its shape.
pub fn gradients(loss: &Tensor, inputs: &[&Tensor], keep_graph: bool) -> Result<Vec<Tensor>> {
    sparse_gradients(loss, inputs, keep_graph)?
        .into_iter()
        .zip(inputs)
        .map(|(g, input)| match g {
            Some(g) => Ok(g),
            None => input.f_zeros_like().context("zero gradient"),
        })
        .collect()
}

/// Like [`gradients`], but `None` where `loss` does not depend on the input (no zeros allocated):
/// the cheap form when most inputs belong to other tasks.
pub fn sparse_gradients(
    loss: &Tensor,
    inputs: &[&Tensor],
    keep_graph: bool,
) -> Result<Vec<Option<Tensor>>> {
    let grads =
        Tensor::f_run_backward(&[loss], inputs, keep_graph, false).context("per-task gradient")?;
    Ok(grads
        .into_iter()
        .map(|g| g.defined().then_some(g))
        .collect())
}

/// Adds `grads[k]` to the `.grad` of leaf parameter `params[k]` (skipping `None`): in place where `.grad`
/// exists, through one small backward pass where it does not yet (the first step).
pub fn accumulate_param_grads(params: &[&Tensor], grads: &[Option<Tensor>]) -> Result<()> {
    if params.len() != grads.len() {
        return Err(BalanceError::TaskCountMismatch {
            context: "gradients to accumulate (params vs gradients)".into(),
            expected: params.len(),
            actual: grads.len(),
        });
    }
    let mut pending_params = Vec::new();
    let mut pending_grads = Vec::new();
    for (param, grad) in params.iter().zip(grads) {
        let Some(grad) = grad else { continue };
        let mut existing = param.grad();
        if existing.defined() {
            tch::no_grad(|| existing.f_add_(grad))
                .map(|_| ())
                .context("accumulating a gradient")?;
        } else {
            pending_params.push(*param);
            pending_grads.push(grad.shallow_clone());
        }
    }
    backward_with(&pending_params, &pending_grads)
}

/// Accumulates `grads[k]` into `targets[k]`'s gradient through the graph: for parameters this adds to
/// `.grad`; for an intermediate tensor (a shared representation) it back-propagates `grads[k]` to the
/// parameters below it. One backward pass for all targets; it releases the graph, so make it the step's
/// last backward.
pub fn backward_with(targets: &[&Tensor], grads: &[Tensor]) -> Result<()> {
    if targets.len() != grads.len() {
        return Err(BalanceError::TaskCountMismatch {
            context: "gradients to write (targets vs gradients)".into(),
            expected: targets.len(),
            actual: grads.len(),
        });
    }
    let mut surrogate: Option<Tensor> = None;
    for (target, g) in targets.iter().zip(grads) {
        let term = target
            .f_mul(&g.detach())
            .and_then(|t| t.f_sum(t.kind()))
            .context("gradient surrogate")?;
        surrogate = Some(match surrogate {
            None => term,
            Some(acc) => acc.f_add(&term).context("gradient surrogate")?,
        });
    }
    match surrogate {
        None => Ok(()),
        Some(s) => s.f_backward().context("writing gradients"),
    }
}

/// The Euclidean norm of a list of gradient tensors taken as one flat vector (`None` counts as zero).
/// One host synchronisation, whatever the number of tensors.
pub fn global_norm<'a>(grads: impl IntoIterator<Item = Option<&'a Tensor>>) -> Result<f64> {
    let norms = grads
        .into_iter()
        .flatten()
        .map(|g| g.f_norm().and_then(|n| n.f_to_kind(tch::Kind::Double)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("gradient norm")?;
    if norms.is_empty() {
        return Ok(0.0);
    }
    Tensor::f_stack(&norms, 0)
        .and_then(|n| n.f_norm())
        .and_then(|n| n.f_double_value(&[]))
        .context("gradient norm")
}

/// Concatenates one task's gradients (zeros where `None`) into one flat `f64` vector shaped like the
/// concatenation of `like`.
pub fn flatten(grads: &[Option<Tensor>], like: &[&Tensor]) -> Result<Tensor> {
    let pieces = grads
        .iter()
        .zip(like)
        .map(|(g, t)| match g {
            Some(g) => g.f_to_kind(Kind::Double).and_then(|g| g.f_reshape([-1])),
            None => Tensor::f_zeros([t.numel() as i64], (Kind::Double, t.device())),
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("flattening task gradients")?;
    Tensor::f_cat(&pieces, 0).context("flattening task gradients")
}

/// Each task's gradient norm on a shared target, collected task by task ([`TaskNorms::push`]) and made
/// global when the step is data-parallel: the norm of the global batch's gradient, never a mean of local
/// norms. For parameter targets the per-task gradients are all-reduced (one collective of `T x P`, in the gradients' kind); for
/// the representation, the squared norms (one collective of `T` numbers).
#[derive(Debug)]
pub struct TaskNorms<'a> {
    data_parallel: Option<&'a DataParallel>,
    per_example: bool,
    norms: Vec<f64>,
    rows: Vec<Tensor>,
    wire: Kind,
}

impl<'a> TaskNorms<'a> {
    /// Norms of `target` for `input`'s step.
    pub fn new(input: &StepInput<'a>, target: SharedTarget) -> Self {
        Self {
            data_parallel: input.data_parallel(),
            per_example: target == SharedTarget::Representation,
            norms: Vec::new(),
            rows: Vec::new(),
            wire: Kind::Float,
        }
    }

    /// Adds the next task's gradients of the target tensors `like` (`None` where it has none).
    pub fn push(&mut self, grads: &[Option<Tensor>], like: &[&Tensor]) -> Result<()> {
        match self.data_parallel {
            None => self
                .norms
                .push(global_norm(grads.iter().map(Option::as_ref))?),
            Some(_) if self.per_example => {
                let norm = global_norm(grads.iter().map(Option::as_ref))?;
                self.norms.push(norm * norm);
            }
            Some(_) => {
                if wire_kind(like) == Kind::Double {
                    self.wire = Kind::Double;
                }
                self.rows.push(flatten(grads, like)?);
            }
        }
        Ok(())
    }

    /// The norms, one per pushed task.
    pub fn finish(self) -> Result<Vec<f64>> {
        let Some(dp) = self.data_parallel else {
            return Ok(self.norms);
        };
        let mut norms = if self.per_example {
            let mut squares = Tensor::from_slice(&self.norms);
            dp.global_per_example_gram(&mut squares)?;
            squares.f_sqrt().context("gradient norm")?
        } else {
            let mut rows = Tensor::f_stack(&self.rows, 0).context("stacking task gradients")?;
            dp.global_mean_rows(&mut rows, self.wire)?;
            rows.f_norm_scalaropt_dim(2, [1i64].as_slice(), false)
                .context("gradient norm")?
        };
        norms = norms
            .f_to_device(tch::Device::Cpu)
            .context("gradient norm")?;
        Vec::<f64>::try_from(&norms).context("reading gradient norms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn weighted_sum_and_gradients_match_hand_computation() {
        let x = Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true);
        let l1 = (&x * &x).sum(Kind::Double); // d/dx = 2x = [2, 4]
        let l2 = x.sum(Kind::Double); // d/dx = [1, 1]
        let total = weighted_sum(&[l1.shallow_clone(), l2.shallow_clone()], &[0.5, 3.0]).unwrap();
        assert_eq!(total.double_value(&[]), 0.5 * 5.0 + 3.0 * 3.0);
        let g1 = gradients(&l1, &[&x], true).unwrap();
        assert_eq!(Vec::<f64>::try_from(&g1[0]).unwrap(), vec![2.0, 4.0]);
        total.backward();
        assert_eq!(Vec::<f64>::try_from(x.grad()).unwrap(), vec![4.0, 5.0]);
    }

    #[test]
    fn unused_input_gets_zero_gradient() {
        let x = Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true);
        let y = Tensor::from_slice(&[3.0f64]).set_requires_grad(true);
        let loss = x.sum(Kind::Double);
        let g = gradients(&loss, &[&x, &y], false).unwrap();
        assert_eq!(Vec::<f64>::try_from(&g[1]).unwrap(), vec![0.0]);
    }

    #[test]
    fn backward_with_accumulates_into_params_and_through_intermediates() {
        let w = Tensor::from_slice(&[2.0f64, 3.0]).set_requires_grad(true);
        let z = &w * 10.0; // intermediate
        backward_with(&[&z], &[Tensor::from_slice(&[1.0f64, -1.0])]).unwrap();
        assert_eq!(Vec::<f64>::try_from(w.grad()).unwrap(), vec![10.0, -10.0]);
        assert!((global_norm([Some(&w.grad()), None]).unwrap() - 200f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn weighted_sum_rejects_length_mismatch() {
        let l = Tensor::from_slice(&[1.0f64]).sum(Kind::Double);
        assert!(weighted_sum(&[l], &[1.0, 2.0]).is_err());
    }
}

#[cfg(test)]
mod accumulate_tests {
    use super::*;

    #[test]
    fn accumulate_adds_in_place_or_through_a_backward_and_skips_none() {
        let a = Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[3.0f64]).set_requires_grad(true);
        let c = Tensor::from_slice(&[4.0f64]).set_requires_grad(true);
        // First: no .grad yet, written through the surrogate backward.
        let g = |v: &[f64]| Some(Tensor::from_slice(v));
        accumulate_param_grads(&[&a, &b, &c], &[g(&[1.0, 1.0]), g(&[2.0]), None]).unwrap();
        assert_eq!(Vec::<f64>::try_from(a.grad()).unwrap(), vec![1.0, 1.0]);
        assert_eq!(Vec::<f64>::try_from(b.grad()).unwrap(), vec![2.0]);
        assert!(!c.grad().defined());
        // Then in place.
        accumulate_param_grads(&[&a, &b, &c], &[g(&[0.5, -1.0]), None, g(&[3.0])]).unwrap();
        assert_eq!(Vec::<f64>::try_from(a.grad()).unwrap(), vec![1.5, 0.0]);
        assert_eq!(Vec::<f64>::try_from(b.grad()).unwrap(), vec![2.0]);
        assert_eq!(Vec::<f64>::try_from(c.grad()).unwrap(), vec![3.0]);
    }
}
