//! `static`: fixed task weights (equal weights by default).
//!
//! The weighted loss is `sum_i w_i * L_i` with `w` fixed for the whole run. Users write the weights as a
//! bare list (`[0.3, 0.7]`), as `{"method": "static", "weights": [0.3, 0.7]}`, or just `"static"` for
//! equal weights (all 1). Weights must be finite, `>= 0`, one per task and not all zero; they are applied
//! exactly as written (no normalisation).

use balance_core::{
    validate, BalancerConfig, BalancerState, LossBalancer, Result, StepInput, StepReport,
};
use serde::{Deserialize, Serialize};

/// Config of the `static` balancer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// One weight per task; `None` means equal weights of 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
}

impl StaticConfig {
    /// Fixed weights.
    pub fn with_weights(weights: Vec<f64>) -> Self {
        Self {
            weights: Some(weights),
        }
    }

    /// The weights for `num_tasks` tasks, validated.
    pub fn resolved_weights(&self, num_tasks: usize) -> Result<Vec<f64>> {
        self.validate(num_tasks)?;
        Ok(self.weights.clone().unwrap_or_else(|| vec![1.0; num_tasks]))
    }
}

balance_core::register_balancer! {
    /// The registry name.
    pub const NAME = "static";
    config: StaticConfig,
    summary: "Fixed task weights (equal by default): the hand-tuned baseline.",
    kind: LossWeighting,
    paper: "-",
    impl {
        fn validate(&self, num_tasks: usize) -> Result<()> {
            validate::task_count_at_least(NAME, num_tasks, 1)?;
            match &self.weights {
                Some(w) => validate::task_weights(NAME, "weights", w, num_tasks),
                None => Ok(()),
            }
        }

        fn build(&self, num_tasks: usize) -> Result<Box<dyn LossBalancer>> {
            Ok(Box::new(StaticWeights {
                weights: self.resolved_weights(num_tasks)?,
            }))
        }
    }
}

/// The `static` balancer: applies its weights unchanged every step. It has no mutable state.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticWeights {
    weights: Vec<f64>,
}

impl LossBalancer for StaticWeights {
    fn name(&self) -> &str {
        NAME
    }

    fn num_tasks(&self) -> usize {
        self.weights.len()
    }

    fn weights(&self) -> Vec<f64> {
        self.weights.clone()
    }

    fn backward(&mut self, input: &StepInput<'_>) -> Result<StepReport> {
        input.expect_tasks(self.weights.len())?;
        input.backward_weighted(NAME, self.weights.clone())
    }

    fn state(&self) -> Result<BalancerState> {
        BalancerState::new(NAME, self.weights.len(), &())
    }

    fn load_state(&mut self, state: &BalancerState) -> Result<()> {
        state.decode::<()>(NAME, self.weights.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(config: StaticConfig, tasks: usize) -> String {
        config.build(tasks).unwrap_err().to_string()
    }

    #[test]
    fn default_is_equal_weights() {
        let b = StaticConfig::default().build(3).unwrap();
        assert_eq!(b.weights(), vec![1.0, 1.0, 1.0]);
    }

    #[test]
    fn wrong_length_names_the_field() {
        let m = message(StaticConfig::with_weights(vec![1.0]), 2);
        assert!(
            m.contains("field `weights`") && m.contains("one weight per task (2), got 1"),
            "{m}"
        );
    }

    #[test]
    fn negative_weight_names_the_entry() {
        let m = message(StaticConfig::with_weights(vec![1.0, -0.1]), 2);
        assert!(m.contains("field `weights[1]` = -0.1"), "{m}");
    }

    #[test]
    fn non_finite_weight_names_the_entry() {
        let m = message(StaticConfig::with_weights(vec![f64::INFINITY, 1.0]), 2);
        assert!(m.contains("field `weights[0]` = inf"), "{m}");
    }

    #[test]
    fn all_zero_weights_are_rejected() {
        let m = message(StaticConfig::with_weights(vec![0.0, 0.0]), 2);
        assert!(m.contains("at least one weight > 0"), "{m}");
    }

    #[test]
    fn zero_tasks_are_rejected() {
        let m = message(StaticConfig::default(), 0);
        assert!(m.contains("field `num_tasks` = 0"), "{m}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let err = serde_json::from_str::<StaticConfig>(r#"{"weights": [1.0], "wieghts": 2}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `wieghts`"), "{err}");
    }

    proptest! {
        #[test]
        fn weights_are_exactly_the_configured_ones(
            weights in prop::collection::vec(0.0f64..1e6, 1..8)
                .prop_filter("not all zero", |w| w.iter().any(|&x| x > 0.0))
        ) {
            let b = StaticConfig::with_weights(weights.clone()).build(weights.len()).unwrap();
            prop_assert_eq!(b.weights(), weights);
        }

        #[test]
        fn reordering_tasks_reorders_weights(
            weights in prop::collection::vec(0.01f64..100.0, 2..8),
            seed in any::<u64>(),
        ) {
            let mut order: Vec<usize> = (0..weights.len()).collect();
            // A seeded Fisher-Yates shuffle.
            let mut s = seed;
            for i in (1..order.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let permuted: Vec<f64> = order.iter().map(|&i| weights[i]).collect();
            let a = StaticConfig::with_weights(weights.clone()).build(weights.len()).unwrap().weights();
            let b = StaticConfig::with_weights(permuted).build(weights.len()).unwrap().weights();
            for (k, &i) in order.iter().enumerate() {
                prop_assert_eq!(b[k], a[i]);
            }
        }

        #[test]
        fn config_round_trips(weights in prop::option::of(prop::collection::vec(0.0f64..1e3, 1..6))) {
            let config: Box<dyn BalancerConfig> = Box::new(StaticConfig { weights });
            let json = serde_json::to_string(&config).unwrap();
            let back: Box<dyn BalancerConfig> = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&config).unwrap());
        }
    }
}
