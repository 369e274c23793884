//! Autograd helpers shared by balancers: weighted sums, per-task gradients, writing gradients.

use tch::Tensor;

use crate::error::{BalanceError, Result, TorchResultExt};

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

/// Gradients of the scalar `loss` with respect to `inputs`, keeping the graph for further passes.
/// An input that `loss` does not depend on gets a zero gradient of its shape.
pub fn gradients(loss: &Tensor, inputs: &[&Tensor], keep_graph: bool) -> Result<Vec<Tensor>> {
    let grads =
        Tensor::f_run_backward(&[loss], inputs, keep_graph, false).context("per-task gradient")?;
    grads
        .into_iter()
        .zip(inputs)
        .map(|(g, input)| {
            if g.defined() {
                Ok(g)
            } else {
                input.f_zeros_like().context("zero gradient")
            }
        })
        .collect()
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

/// The Euclidean norm of a list of gradient tensors taken as one flat vector.
pub fn global_norm(grads: &[Tensor]) -> Result<f64> {
    let mut sum_sq = 0.0;
    for g in grads {
        let s = g
            .f_square()
            .and_then(|t| t.f_sum(tch::Kind::Double))
            .and_then(|t| t.f_double_value(&[]))
            .context("gradient norm")?;
        sum_sq += s;
    }
    Ok(sum_sq.sqrt())
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
        assert!((global_norm(&[w.grad()]).unwrap() - 200f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn weighted_sum_rejects_length_mismatch() {
        let l = Tensor::from_slice(&[1.0f64]).sum(Kind::Double);
        assert!(weighted_sum(&[l], &[1.0, 2.0]).is_err());
    }
}
