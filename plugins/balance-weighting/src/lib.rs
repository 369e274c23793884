//! Loss-weighting balancers: `uncertainty`, `dwa`, `rlw`, `gls` and `famo`.
//!
//! All five compute one weight per task from the detached loss values (and their own small state) and
//! apply them with one backward of `sum_i w_i L_i` ([`balance_core::StepInput::backward_weighted`]); none
//! needs per-task gradients or the model's shared parts. They live in one crate because they share that
//! shape and its helpers (a stable softmax scaled to the task count, Adam on a few `f64`s, seeded draws):
//! one module per method, each with its config and a pure `f64` rule (no tensors, a [`WeightingRule`]);
//! [`Weighted`] turns any rule into the balancer (one weighted backward, checkpoints, hooks).
//!
//! Where a method normalises its weights (`dwa`, `rlw`, `famo`), they sum to the number of tasks `T`, the
//! total of the equal-weights `static` baseline, so learning rates tuned for that baseline carry over.
//! Every weight is finite and `> 0`. See `docs/methods-loss-weighting.md` for formulas and options.
//!
//! ```
//! use balance_core::{registry, BalancerSpec};
//! use balance_weighting::dwa::DwaConfig;
//! use balance_core::BalancerConfig;
//!
//! // Through the registry, by name (this crate's registrations are linked by naming the crate).
//! let spec: BalancerSpec = r#"{"method": "dwa", "temperature": 2.0}"#.parse().unwrap();
//! let dwa = spec.build(3).unwrap();
//! assert_eq!(dwa.weights(), vec![1.0; 3]); // equal weights during the first two epochs
//! assert!(registry().unwrap().names().contains(&"famo"));
//!
//! // Or from the config struct.
//! let same = DwaConfig { temperature: Some(2.0) }.build(3).unwrap();
//! assert_eq!(same.name(), "dwa");
//! ```

pub mod dwa;
pub mod famo;
pub mod gls;
pub mod rlw;
pub mod rule;
pub mod uncertainty;

pub use dwa::DwaConfig;
pub use famo::FamoConfig;
pub use gls::GlsConfig;
pub use rlw::RlwConfig;
pub use rule::{Weighted, Weighting, WeightingRule};
pub use uncertainty::UncertaintyConfig;

/// `scale * softmax(logits)`, computed stably (the maximum is subtracted first, as PyTorch does). Each
/// entry is floored at `f64::MIN_POSITIVE` so that no weight underflows to 0; the logits must be finite.
pub fn scaled_softmax(logits: &[f64], scale: f64) -> Vec<f64> {
    softmax(logits)
        .into_iter()
        .map(|p| (scale * p).max(f64::MIN_POSITIVE))
        .collect()
}

/// `softmax(logits)` without flooring (stable, as PyTorch's).
pub(crate) fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_softmax_sums_to_scale_and_never_underflows() {
        let w = scaled_softmax(&[0.0, 1.0, 2.0], 3.0);
        assert!((w.iter().sum::<f64>() - 3.0).abs() < 1e-14);
        assert!(w[0] < w[1] && w[1] < w[2]);
        let w = scaled_softmax(&[0.0, 1e6], 2.0);
        assert_eq!(w, vec![f64::MIN_POSITIVE, 2.0]);
        assert_eq!(softmax(&[3.0, 3.0]), vec![0.5, 0.5]);
    }
}
