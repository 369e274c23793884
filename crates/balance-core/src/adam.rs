//! [`AdamState`]: Adam over a few `f64` parameters (task weights, log-variances, logits), in exactly
//! PyTorch's order of operations so a balancer's own optimiser is checkpointable and matches
//! `torch.optim.Adam` bit for bit.

use serde::{Deserialize, Serialize};

/// Adam's `beta1` (PyTorch's default).
pub const ADAM_BETA1: f64 = 0.9;
/// Adam's `beta2` (PyTorch's default).
pub const ADAM_BETA2: f64 = 0.999;
/// Adam's epsilon (PyTorch's default).
pub const ADAM_EPS: f64 = 1e-8;

/// Adam's moments and step count for a vector of parameters.
///
/// ```
/// use balance_core::adam::AdamState;
/// let mut params = vec![1.0, -1.0];
/// let mut adam = AdamState::new(2);
/// adam.step(&mut params, &[0.5, -0.5], 0.1);
/// // The first Adam step moves every parameter by about `lr` against its gradient's sign.
/// assert!((params[0] - 0.9).abs() < 1e-6 && (params[1] + 0.9).abs() < 1e-6);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamState {
    /// Steps taken.
    pub step: u64,
    /// First moments.
    pub exp_avg: Vec<f64>,
    /// Second moments.
    pub exp_avg_sq: Vec<f64>,
}

impl AdamState {
    /// Zero moments for `n` parameters.
    pub fn new(n: usize) -> Self {
        Self {
            step: 0,
            exp_avg: vec![0.0; n],
            exp_avg_sq: vec![0.0; n],
        }
    }

    /// One Adam step on `params` with `grads` (`torch.optim.Adam`, single-tensor path, no weight decay).
    pub fn step(&mut self, params: &mut [f64], grads: &[f64], lr: f64) {
        self.step_with_decay(params, grads, lr, 0.0);
    }

    /// One Adam step with PyTorch's L2 `weight_decay` (added to the gradient: `g + weight_decay * p`).
    pub fn step_with_decay(
        &mut self,
        params: &mut [f64],
        grads: &[f64],
        lr: f64,
        weight_decay: f64,
    ) {
        self.step += 1;
        let t = i32::try_from(self.step).unwrap_or(i32::MAX);
        let bias_correction1 = 1.0 - ADAM_BETA1.powi(t);
        let bias_correction2 = 1.0 - ADAM_BETA2.powi(t);
        let step_size = lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.sqrt();
        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.exp_avg)
            .zip(&mut self.exp_avg_sq)
        {
            let g = if weight_decay == 0.0 {
                g
            } else {
                g + weight_decay * *p
            };
            *m += (g - *m) * (1.0 - ADAM_BETA1); // lerp, as PyTorch
            *v = *v * ADAM_BETA2 + (1.0 - ADAM_BETA2) * g * g;
            let denom = v.sqrt() / bias_correction2_sqrt + ADAM_EPS;
            *p -= step_size * (*m / denom);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: `torch.optim.Adam([p], lr=0.1, weight_decay=0.01)` on `p = [1.0, -2.0]` (float64) with
    /// gradients `[0.3, 0.4]` then `[-0.1, 0.2]`, printed with `repr` (torch 2.11, CPU).
    #[test]
    fn matches_torch_adam_with_weight_decay() {
        let mut p = vec![1.0, -2.0];
        let mut adam = AdamState::new(2);
        adam.step_with_decay(&mut p, &[0.3, 0.4], 0.1, 0.01);
        adam.step_with_decay(&mut p, &[-0.1, 0.2], 0.1, 0.01);
        let expected = [TORCH_P0, TORCH_P1];
        for (a, b) in p.iter().zip(expected) {
            assert!((a - b).abs() < 1e-15, "{a} vs {b}");
        }
    }

    const TORCH_P0: f64 = 0.8566788597022081;
    const TORCH_P1: f64 = -2.1923354614762767;
}
