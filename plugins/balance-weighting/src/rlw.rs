//! `rlw`: Random Loss Weighting (Lin, Ye, Xu, Shi & Zhang, "Reasonable effectiveness of random weighting:
//! a litmus test for multi-task learning", TMLR 2022).
//!
//! Every step draws fresh weights
//!
//! `w = T * softmax(z)`, `z_i ~ N(0, 1)` independently,
//!
//! so the weights sum to `T` (the number of tasks) and each has mean 1 over draws. The draws come from a
//! [`SplitMix64`] seeded by `seed` (default 0); the generator's state is the balancer's whole state, so a
//! checkpoint resumes the same sequence of weights.
//!
//! Convention: [`LossBalancer::weights`] returns the weights that the next step will apply (it draws
//! them from a copy of the generator), so what `weights()` shows is exactly what the next `backward`
//! uses. Each step's report carries the weights it applied.
//!
//! ```json
//! {"method": "rlw", "seed": 42}
//! ```

use crate::rule::{Weighted, Weighting, WeightingRule};
use balance_core::rng::SplitMix64;
use balance_core::{validate, BalancerConfig, LossBalancer, Result};
use serde::{Deserialize, Serialize};

use crate::scaled_softmax;

/// Config of the `rlw` balancer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlwConfig {
    /// Seed of the weights' generator (any `u64`, default 0).
    #[serde(default)]
    pub seed: u64,
}

impl RlwConfig {
    /// The validated rule for `num_tasks` tasks.
    pub fn rule(&self, num_tasks: usize) -> Result<RlwRule> {
        self.validate(num_tasks)?;
        Ok(RlwRule {
            num_tasks,
            rng: SplitMix64::new(self.seed),
        })
    }
}

balance_core::register_balancer! {
    /// The registry name.
    pub const NAME = "rlw";
    config: RlwConfig,
    summary: "Random Loss Weighting: fresh weights T*softmax(z), z ~ N(0, 1), every step (seeded).",
    kind: LossWeighting,
    paper: "Lin et al., TMLR 2022 (Reasonable effectiveness of random weighting)",
    impl {
        fn validate(&self, num_tasks: usize) -> Result<()> {
            validate::task_count_at_least(NAME, num_tasks, 1)
        }

        fn build(&self, num_tasks: usize) -> Result<Box<dyn LossBalancer>> {
            Ok(Box::new(Weighted::new(self.rule(num_tasks)?)))
        }
    }
}

/// `T * softmax(z)` with `z` drawn from `rng` (`T` standard normals).
pub fn draw_weights(rng: &mut SplitMix64, num_tasks: usize) -> Vec<f64> {
    let z: Vec<f64> = (0..num_tasks).map(|_| rng.normal()).collect();
    scaled_softmax(&z, num_tasks as f64)
}

/// The numerical rule of `rlw`: the generator and the task count.
#[derive(Debug, Clone, PartialEq)]
pub struct RlwRule {
    num_tasks: usize,
    rng: SplitMix64,
}

impl RlwRule {
    /// The number of tasks.
    pub fn num_tasks(&self) -> usize {
        self.num_tasks
    }

    /// The weights the next call to [`RlwRule::next_weights`] will return (the generator is not advanced).
    pub fn peek(&self) -> Vec<f64> {
        draw_weights(&mut self.rng.clone(), self.num_tasks)
    }

    /// Draws this step's weights, advancing the generator.
    pub fn next_weights(&mut self) -> Vec<f64> {
        draw_weights(&mut self.rng, self.num_tasks)
    }

    /// The generator, for checkpoints.
    pub fn state(&self) -> &SplitMix64 {
        &self.rng
    }

    /// Restores a generator state.
    pub fn set_state(&mut self, rng: SplitMix64) {
        self.rng = rng;
    }
}

/// The `rlw` balancer.
pub type Rlw = Weighted<RlwRule>;

impl WeightingRule for RlwRule {
    type State = SplitMix64;

    fn name(&self) -> &'static str {
        NAME
    }

    fn tasks(&self) -> usize {
        self.num_tasks()
    }

    fn current_weights(&self) -> Vec<f64> {
        self.peek()
    }

    fn step(&mut self, _losses: &[f64]) -> Result<Weighting> {
        Ok(Weighting::new(self.next_weights()))
    }

    fn saved(&self) -> &SplitMix64 {
        self.state()
    }

    fn restore(&mut self, state: SplitMix64) -> Result<()> {
        self.set_state(state);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use balance_core::{BalancerState, StepInput};
    use proptest::prelude::*;

    #[test]
    fn weights_shown_are_the_next_applied() {
        let mut rule = RlwConfig { seed: 3 }.rule(4).unwrap();
        for _ in 0..10 {
            let shown = rule.peek();
            assert_eq!(rule.next_weights(), shown);
        }
    }

    #[test]
    fn draws_match_softmax_of_the_generators_normals() {
        let mut rng = SplitMix64::new(11);
        let z: Vec<f64> = (0..3).map(|_| rng.normal()).collect();
        let sum: f64 = z.iter().map(|x| x.exp()).sum();
        let want: Vec<f64> = z.iter().map(|x| 3.0 * x.exp() / sum).collect();
        let got = RlwConfig { seed: 11 }.rule(3).unwrap().next_weights();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-14, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn mean_weight_is_one_over_many_draws() {
        let mut rule = RlwConfig::default().rule(3).unwrap();
        let n = 200_000;
        let mut sums = [0.0; 3];
        for _ in 0..n {
            for (s, w) in sums.iter_mut().zip(rule.next_weights()) {
                *s += w;
            }
        }
        for s in sums {
            let mean = s / n as f64;
            assert!((mean - 1.0).abs() < 0.01, "mean weight {mean}");
        }
    }

    #[test]
    fn different_seeds_differ() {
        let a = RlwConfig { seed: 1 }.rule(3).unwrap().next_weights();
        let b = RlwConfig { seed: 2 }.rule(3).unwrap().next_weights();
        assert_ne!(a, b);
    }

    #[test]
    fn zero_tasks_and_unknown_fields_are_rejected() {
        let m = RlwConfig::default().build(0).unwrap_err().to_string();
        assert!(m.contains("field `num_tasks` = 0"), "{m}");
        let e = serde_json::from_str::<RlwConfig>(r#"{"sead": 1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `sead`"), "{e}");
        let e = serde_json::from_str::<RlwConfig>(r#"{"seed": -1}"#).unwrap_err();
        assert!(e.to_string().contains("invalid value"), "{e}");
    }

    proptest! {
        #[test]
        fn weights_are_positive_finite_and_sum_to_t(seed in any::<u64>(), tasks in 1usize..10) {
            let mut rule = RlwConfig { seed }.rule(tasks).unwrap();
            for _ in 0..20 {
                let w = rule.next_weights();
                prop_assert!(w.iter().all(|w| w.is_finite() && *w > 0.0), "{:?}", w);
                prop_assert!((w.iter().sum::<f64>() - tasks as f64).abs() < 1e-12, "{:?}", w);
            }
        }

        #[test]
        fn same_seed_same_sequence(seed in any::<u64>()) {
            let mut a = RlwConfig { seed }.rule(3).unwrap();
            let mut b = RlwConfig { seed }.rule(3).unwrap();
            for _ in 0..20 {
                prop_assert_eq!(a.next_weights(), b.next_weights());
            }
        }

        #[test]
        fn weights_do_not_depend_on_the_losses(
            seed in any::<u64>(),
            losses in prop::collection::vec(0.0f64..1e3, 3),
            rotation in 1usize..3,
        ) {
            // What holds for RLW: the applied weights depend on the seed only. Permuting the losses does not
            // permute the weights (equivariance holds only in distribution: the draws are i.i.d.).
            let permuted: Vec<f64> = (0..3).map(|i| losses[(i + rotation) % 3]).collect();
            let parts = balance_core::SharedParts::new(vec![], vec![]);
            let mut applied = Vec::new();
            for values in [&losses, &permuted] {
                let leaves: Vec<tch::Tensor> = values
                    .iter()
                    .map(|&l| tch::Tensor::from(l).set_requires_grad(true))
                    .collect();
                let mut b = RlwConfig { seed }.build(3).unwrap();
                let report = b.backward(&StepInput::new(&leaves, values, &parts, None, 0)).unwrap();
                for (leaf, w) in leaves.iter().zip(&report.weights) {
                    prop_assert_eq!(leaf.grad().double_value(&[]), *w);
                }
                applied.push(report.weights);
            }
            prop_assert_eq!(&applied[0], &applied[1]);
            prop_assert_eq!(&applied[0], &RlwConfig { seed }.rule(3).unwrap().next_weights());
        }

        #[test]
        fn restored_state_gives_identical_future_weights(seed in any::<u64>(), prefix in 0usize..20) {
            let mut rule = RlwConfig { seed }.rule(3).unwrap();
            for _ in 0..prefix {
                rule.next_weights();
            }
            let state = BalancerState::new(NAME, 3, rule.state()).unwrap();
            let json = serde_json::to_string(&state).unwrap();
            let back: BalancerState = serde_json::from_str(&json).unwrap();
            let mut fresh = RlwConfig { seed }.build(3).unwrap();
            fresh.load_state(&back).unwrap();
            prop_assert_eq!(fresh.weights(), rule.peek());
            let mut restored = RlwConfig { seed }.rule(3).unwrap();
            restored.set_state(back.decode(NAME, 3).unwrap());
            for _ in 0..10 {
                prop_assert_eq!(restored.next_weights(), rule.next_weights());
            }
        }

        #[test]
        fn config_round_trips(seed in any::<u64>()) {
            let boxed: Box<dyn BalancerConfig> = Box::new(RlwConfig { seed });
            let json = serde_json::to_string(&boxed).unwrap();
            let back: Box<dyn BalancerConfig> = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&boxed).unwrap());
        }
    }
}
