//! `gls`: Geometric Loss Strategy (Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++: multi-stream
//! feature aggregation and geometric loss strategy for multi-task learning", CVPR Workshops 2019).
//!
//! The objective is the geometric mean of the task losses, `G = (prod_i L_i)^(1/T)`. The balancer applies
//! its exact gradient as loss weights: `dG/dL_i = G / (T L_i)`, so one backward of `sum_i w_i L_i` with
//!
//! `w_i = G / (T L_i)`, `G = exp(mean_i ln L_i)`
//!
//! gives the model the gradient of `G`. The weights are not normalised (they are the gradient of `G`; for
//! equal losses each is `1/T`). Losses are clamped below at `eps` (default `1e-8`) before the logarithm,
//! so a zero or negative loss gives a large finite weight instead of an infinite one (PyTorch's clamp
//! would give such a task no gradient at all; here every task keeps a positive weight). A weight beyond
//! `f64::MAX` saturates there. The method is stateless; each step reports the `geometric_mean` `G`
//! (repeated once per task, as extras are per-task series).
//!
//! ```json
//! {"method": "gls", "eps": 1e-8}
//! ```

use crate::rule::{Weighted, Weighting, WeightingRule};
use balance_core::{validate, LossBalancer, Result};
use serde::{Deserialize, Serialize};

const DEFAULT_EPS: f64 = 1e-8;

/// Config of the `gls` balancer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlsConfig {
    /// Lower clamp of each loss (> 0, default 1e-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
}

balance_core::register_balancer! {
    /// The registry name.
    pub const NAME = "gls";
    config: GlsConfig,
    summary: "Geometric Loss Strategy: minimise the geometric mean of the losses, via w_i = G / (T L_i).",
    kind: LossWeighting,
    paper: "Chennupati et al., CVPR Workshops 2019 (MultiNet++)",
    impl {
        fn validate(&self, num_tasks: usize) -> Result<()> {
            validate::task_count_at_least(NAME, num_tasks, 1)?;
            if let Some(eps) = self.eps {
                validate::positive(NAME, "eps", eps)?;
            }
            Ok(())
        }

        fn build(&self, num_tasks: usize) -> Result<Box<dyn LossBalancer>> {
            self.validate(num_tasks)?;
            Ok(Box::new(Weighted::new(GlsRule {
                num_tasks,
                eps: self.eps.unwrap_or(DEFAULT_EPS),
            })))
        }
    }
}

/// The geometric mean `G = exp(mean ln max(L_i, eps))` of the clamped losses.
pub fn geometric_mean(losses: &[f64], eps: f64) -> f64 {
    let n = losses.len() as f64;
    (losses.iter().map(|l| l.max(eps).ln()).sum::<f64>() / n).exp()
}

/// The weights `G / (T max(L_i, eps))` (the gradient of `G`) and `G`.
pub fn gls_weights(losses: &[f64], eps: f64) -> (Vec<f64>, f64) {
    let g = geometric_mean(losses, eps);
    let t = losses.len() as f64;
    let weights = losses
        .iter()
        .map(|l| (g / (t * l.max(eps))).clamp(f64::MIN_POSITIVE, f64::MAX))
        .collect();
    (weights, g)
}

/// The rule of `gls` (stateless).
#[derive(Debug, Clone, PartialEq)]
pub struct GlsRule {
    num_tasks: usize,
    eps: f64,
}

/// The `gls` balancer.
pub type Gls = Weighted<GlsRule>;

impl WeightingRule for GlsRule {
    type State = ();

    fn name(&self) -> &'static str {
        NAME
    }

    fn tasks(&self) -> usize {
        self.num_tasks
    }

    /// Before any loss is seen, the weights of equal losses: `1/T` each.
    fn current_weights(&self) -> Vec<f64> {
        vec![1.0 / self.num_tasks as f64; self.num_tasks]
    }

    fn step(&mut self, losses: &[f64]) -> Result<Weighting> {
        let (weights, g) = gls_weights(losses, self.eps);
        Ok(Weighting::new(weights).with_extra("geometric_mean", vec![g; self.num_tasks]))
    }

    fn saved(&self) -> &() {
        &()
    }

    fn restore(&mut self, (): ()) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use balance_core::BalancerConfig;
    use balance_core::BalancerState;
    use proptest::prelude::*;
    use tch::{Kind, Tensor};

    fn autograd_weights(losses: &[f64]) -> (Vec<f64>, f64) {
        let l = Tensor::from_slice(losses).set_requires_grad(true);
        let g = l
            .prod(Kind::Double)
            .pow_tensor_scalar(1.0 / losses.len() as f64);
        g.backward();
        (Vec::<f64>::try_from(l.grad()).unwrap(), g.double_value(&[]))
    }

    #[test]
    fn weights_are_the_autograd_gradient_of_the_geometric_mean() {
        for losses in [
            vec![0.5, 2.0, 8.0],
            vec![1e-3, 40.0],
            vec![3.0],
            vec![0.7; 4],
        ] {
            let (want, want_g) = autograd_weights(&losses);
            let (got, g) = gls_weights(&losses, DEFAULT_EPS);
            assert!((g - want_g).abs() <= 1e-13 * want_g, "{g} vs {want_g}");
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-13 * b.abs(), "{got:?} vs {want:?}");
            }
        }
        // Hand check: L = (1, 4), G = 2, w = (2 / 2, 2 / 8).
        assert_eq!(gls_weights(&[1.0, 4.0], 1e-8), (vec![1.0, 0.25], 2.0));
    }

    #[test]
    fn losses_below_eps_are_clamped() {
        let (w, g) = gls_weights(&[0.0, -3.0, 1e-8], 1e-8);
        assert!((g - 1e-8).abs() < 1e-20, "{g}");
        assert!(w.iter().all(|&w| (w - 1.0 / 3.0).abs() < 1e-14), "{w:?}");
    }

    #[test]
    fn non_positive_eps_is_rejected() {
        let m = GlsConfig { eps: Some(0.0) }
            .build(2)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("field `eps` = 0, expected a finite number > 0"),
            "{m}"
        );
    }

    #[test]
    fn zero_tasks_and_unknown_fields_are_rejected() {
        let m = GlsConfig::default().build(0).unwrap_err().to_string();
        assert!(m.contains("field `num_tasks` = 0"), "{m}");
        let e = serde_json::from_str::<GlsConfig>(r#"{"epsilon": 1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `epsilon`"), "{e}");
    }

    #[test]
    fn state_round_trips_and_is_empty() {
        let b = GlsConfig::default().build(2).unwrap();
        let json = serde_json::to_string(&b.state().unwrap()).unwrap();
        let mut fresh = GlsConfig::default().build(2).unwrap();
        fresh
            .load_state(&serde_json::from_str(&json).unwrap())
            .unwrap();
        assert_eq!(fresh.weights(), vec![0.5, 0.5]);
        assert!(fresh
            .load_state(&BalancerState::new("dwa", 2, &()).unwrap())
            .is_err());
    }

    proptest! {
        #[test]
        fn weights_are_positive_and_finite_for_any_finite_losses(
            losses in prop::collection::vec(-1e300f64..1e300, 1..8),
            eps in 1e-300f64..1.0,
        ) {
            let (w, g) = gls_weights(&losses, eps);
            prop_assert!(g.is_finite() && g > 0.0);
            prop_assert!(w.iter().all(|w| w.is_finite() && *w > 0.0), "{:?}", w);
        }

        #[test]
        fn matches_autograd(losses in prop::collection::vec(1e-3f64..1e3, 1..6)) {
            let (want, _) = autograd_weights(&losses);
            let (got, _) = gls_weights(&losses, DEFAULT_EPS);
            for (a, b) in got.iter().zip(&want) {
                prop_assert!((a - b).abs() <= 1e-12 * b.abs(), "{:?} vs {:?}", got, want);
            }
        }

        #[test]
        fn weighted_losses_sum_to_the_geometric_mean(losses in prop::collection::vec(1e-6f64..1e6, 1..8)) {
            // Euler: G is homogeneous of degree 1, so sum_i L_i dG/dL_i = G.
            let (w, g) = gls_weights(&losses, DEFAULT_EPS);
            let s: f64 = w.iter().zip(&losses).map(|(w, l)| w * l).sum();
            prop_assert!((s - g).abs() <= 1e-12 * g, "{} vs {}", s, g);
        }

        #[test]
        fn reordering_tasks_reorders_weights(
            losses in prop::collection::vec(1e-3f64..1e3, 4),
            rotation in 1usize..4,
        ) {
            let perm: Vec<usize> = (0..4).map(|i| (i + rotation) % 4).collect();
            let permuted: Vec<f64> = perm.iter().map(|&i| losses[i]).collect();
            let (wa, _) = gls_weights(&losses, DEFAULT_EPS);
            let (wb, _) = gls_weights(&permuted, DEFAULT_EPS);
            for (k, &i) in perm.iter().enumerate() {
                prop_assert!((wb[k] - wa[i]).abs() <= 1e-12 * wa[i]);
            }
        }

        #[test]
        fn config_round_trips(eps in prop::option::of(1e-12f64..1.0)) {
            let boxed: Box<dyn BalancerConfig> = Box::new(GlsConfig { eps });
            let json = serde_json::to_string(&boxed).unwrap();
            let back: Box<dyn BalancerConfig> = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&boxed).unwrap());
        }
    }
}
