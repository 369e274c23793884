//! `famo`: Fast Adaptive Multitask Optimization (Liu, Liu, Stone & Liu, "FAMO: Fast adaptive multitask
//! optimization", NeurIPS 2023), reproducing the authors' reference implementation in `f64`.
//!
//! FAMO keeps task logits `xi` (starting at 0) with `z = softmax(xi)`. With `D_i = L_i - m_i + 1e-8`
//! (`m_i` = `min_losses`, default 0) the model minimises `sum_i z_i ln(D_i) / c`, `c = sum_j z_j / D_j`
//! (detached), whose gradient is `sum_i z_i / (c D_i) grad L_i`. The balancer applies those as loss
//! weights, times `T`:
//!
//! `w_i = T z_i / (c D_i)`, which sum to `T` (the equal-weights total).
//!
//! After the optimiser's update the training loop evaluates the same batch's losses again, without
//! gradients ([`LossBalancer::needs_updated_losses`] is true: one extra forward per step), and passes them
//! to [`LossBalancer::observe_updated_losses`], which updates the logits:
//!
//! `delta_i = ln(D_i(before)) - ln(D_i(after))`, `d_i = z_i (delta_i - sum_j z_j delta_j)` (the softmax
//! vector-Jacobian product), then one Adam step on `xi` with gradient `d`, learning rate `w_lr` (0.025) and
//! PyTorch's L2 weight decay `gamma` (0.01).
//!
//! A loss below its `min_losses` entry makes `ln(D)` undefined: the step fails with an error naming the
//! task (the balancer keeps its state) instead of producing NaN. Each weight is floored at
//! `f64::MIN_POSITIVE`. The state holds the logits, their Adam moments and the last step's losses; each
//! step reports the `logit` `xi` it used. [`LossBalancer::weights`] gives the weights the current logits
//! would apply to the last step's losses (`1` before any step).
//!
//! ```json
//! {"method": "famo", "gamma": 0.01, "w_lr": 0.025, "min_losses": [0.0, 0.0]}
//! ```

use crate::rule::{Weighted, Weighting, WeightingRule};
use balance_core::adam::AdamState;
use balance_core::{validate, BalanceError, BalancerConfig, LossBalancer, Result};
use serde::{Deserialize, Serialize};

use crate::softmax;

/// The constant added to `L - min_loss` before the logarithm (as in the reference code).
pub const FAMO_EPS: f64 = 1e-8;

const DEFAULT_GAMMA: f64 = 0.01;
const DEFAULT_W_LR: f64 = 0.025;

/// Config of the `famo` balancer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamoConfig {
    /// Adam weight decay of the logits (>= 0, default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// Adam learning rate of the logits (> 0, default 0.025).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w_lr: Option<f64>,
    /// A lower bound of each task's loss, one per task, finite (default all 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_losses: Option<Vec<f64>>,
}

impl FamoConfig {
    /// The validated rule for `num_tasks` tasks.
    pub fn rule(&self, num_tasks: usize) -> Result<FamoRule> {
        self.validate(num_tasks)?;
        Ok(FamoRule::new(
            self.gamma.unwrap_or(DEFAULT_GAMMA),
            self.w_lr.unwrap_or(DEFAULT_W_LR),
            self.min_losses
                .clone()
                .unwrap_or_else(|| vec![0.0; num_tasks]),
        ))
    }
}

balance_core::register_balancer! {
    /// The registry name.
    pub const NAME = "famo";
    config: FamoConfig,
    summary: "FAMO: logits learned from each task's log-loss decrease weigh the losses (one extra forward).",
    kind: LossWeighting,
    paper: "Liu, Liu, Stone & Liu, NeurIPS 2023 (FAMO)",
    impl {
        fn validate(&self, num_tasks: usize) -> Result<()> {
            validate::task_count_at_least(NAME, num_tasks, 1)?;
            if let Some(gamma) = self.gamma {
                validate::non_negative(NAME, "gamma", gamma)?;
            }
            if let Some(lr) = self.w_lr {
                validate::positive(NAME, "w_lr", lr)?;
            }
            if let Some(m) = &self.min_losses {
                if m.len() != num_tasks {
                    return Err(BalanceError::invalid_config(
                        NAME,
                        "min_losses",
                        format!("{m:?}"),
                        format!("one value per task ({num_tasks}), got {}", m.len()),
                    ));
                }
                if let Some((i, v)) = m.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                    return Err(BalanceError::invalid_config(
                        NAME,
                        format!("min_losses[{i}]"),
                        v,
                        "a finite number",
                    ));
                }
            }
            Ok(())
        }

        fn build(&self, num_tasks: usize) -> Result<Box<dyn LossBalancer>> {
            Ok(Box::new(Weighted::new(self.rule(num_tasks)?)))
        }
    }
}

/// `w_i = T z_i / (c D_i)` with `z = softmax(logits)`, `D_i = L_i - m_i + 1e-8`, `c = sum_j z_j / D_j`.
/// Every `D_i` must be `> 0`.
pub fn famo_weights(logits: &[f64], losses: &[f64], min_losses: &[f64]) -> Vec<f64> {
    let z = softmax(logits);
    let q: Vec<f64> = z
        .iter()
        .zip(losses)
        .zip(min_losses)
        .map(|((z, l), m)| z / (l - m + FAMO_EPS))
        .collect();
    let c: f64 = q.iter().sum();
    let t = logits.len() as f64;
    q.iter()
        .map(|q| (t * (q / c)).max(f64::MIN_POSITIVE))
        .collect()
}

/// The logits' gradient `d_i = z_i (delta_i - sum_j z_j delta_j)`, `delta_i = ln D_i(prev) - ln D_i(curr)`.
pub fn logit_gradient(logits: &[f64], prev: &[f64], curr: &[f64], min_losses: &[f64]) -> Vec<f64> {
    let z = softmax(logits);
    let delta: Vec<f64> = prev
        .iter()
        .zip(curr)
        .zip(min_losses)
        .map(|((p, c), m)| (p - m + FAMO_EPS).ln() - (c - m + FAMO_EPS).ln())
        .collect();
    let dot: f64 = z.iter().zip(&delta).map(|(z, d)| z * d).sum();
    z.iter().zip(&delta).map(|(z, d)| z * (d - dot)).collect()
}

/// The numerical rule of `famo` over plain `f64` values, with its state.
#[derive(Debug, Clone, PartialEq)]
pub struct FamoRule {
    gamma: f64,
    w_lr: f64,
    min_losses: Vec<f64>,
    state: FamoState,
}

/// The mutable state of [`FamoRule`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamoState {
    /// The task logits `xi`.
    pub logits: Vec<f64>,
    /// Adam's moments for the logits.
    pub adam: AdamState,
    /// The losses of the last step (`None` before the first step).
    pub prev_losses: Option<Vec<f64>>,
}

impl FamoRule {
    /// A fresh rule (logits 0).
    pub fn new(gamma: f64, w_lr: f64, min_losses: Vec<f64>) -> Self {
        let n = min_losses.len();
        Self {
            gamma,
            w_lr,
            min_losses,
            state: FamoState {
                logits: vec![0.0; n],
                adam: AdamState::new(n),
                prev_losses: None,
            },
        }
    }

    /// The number of tasks.
    pub fn num_tasks(&self) -> usize {
        self.min_losses.len()
    }

    /// The current logits.
    pub fn logits(&self) -> &[f64] {
        &self.state.logits
    }

    /// The error for a loss below its lower bound, if any.
    fn check_losses(&self, losses: &[f64], which: &str) -> Result<()> {
        let bad = losses
            .iter()
            .zip(&self.min_losses)
            .enumerate()
            .find(|(_, (l, m))| l < m);
        match bad {
            None => Ok(()),
            Some((i, (l, m))) => Err(BalanceError::invalid_config(
                NAME,
                format!("min_losses[{i}]"),
                m,
                format!(
                    "a lower bound of task {i}'s loss, but its {which} loss is {l} (FAMO takes ln(L - min_loss + 1e-8))"
                ),
            )),
        }
    }

    /// This step's weights for `losses`; remembers the losses for the update. Fails if a loss is below
    /// its `min_losses` entry.
    pub fn weights_for(&mut self, losses: &[f64]) -> Result<Vec<f64>> {
        self.check_losses(losses, "current")?;
        let weights = famo_weights(&self.state.logits, losses, &self.min_losses);
        self.state.prev_losses = Some(losses.to_vec());
        Ok(weights)
    }

    /// The weights the current logits give the last step's losses (all 1 before any step).
    pub fn weights(&self) -> Vec<f64> {
        match &self.state.prev_losses {
            Some(prev) => famo_weights(&self.state.logits, prev, &self.min_losses),
            None => vec![1.0; self.num_tasks()],
        }
    }

    /// The update with the same batch's losses after the optimiser step.
    pub fn update(&mut self, curr: &[f64]) -> Result<()> {
        let prev = self
            .state
            .prev_losses
            .clone()
            .ok_or_else(|| BalanceError::StateMismatch {
                balancer: NAME.into(),
                reason: "updated losses were observed before any step".into(),
            })?;
        self.check_losses(curr, "updated")?;
        let d = logit_gradient(&self.state.logits, &prev, curr, &self.min_losses);
        self.state
            .adam
            .step_with_decay(&mut self.state.logits, &d, self.w_lr, self.gamma);
        Ok(())
    }

    /// The state, for checkpoints.
    pub fn state(&self) -> &FamoState {
        &self.state
    }

    /// Restores a state of the same task count.
    pub fn set_state(&mut self, state: FamoState) -> Result<()> {
        let n = self.num_tasks();
        let fits = state.logits.len() == n
            && state.logits.iter().all(|x| x.is_finite())
            && state.adam.exp_avg.len() == n
            && state.adam.exp_avg_sq.len() == n
            && state.prev_losses.as_ref().is_none_or(|p| p.len() == n);
        if !fits {
            return Err(BalanceError::StateMismatch {
                balancer: NAME.into(),
                reason: format!("the state needs {n} finite logits, Adam moments and losses"),
            });
        }
        if let Some(prev) = &state.prev_losses {
            self.check_losses(prev, "saved")?;
        }
        self.state = state;
        Ok(())
    }
}

/// The `famo` balancer.
pub type Famo = Weighted<FamoRule>;

impl WeightingRule for FamoRule {
    type State = FamoState;

    fn name(&self) -> &'static str {
        NAME
    }

    fn tasks(&self) -> usize {
        self.num_tasks()
    }

    fn current_weights(&self) -> Vec<f64> {
        self.weights()
    }

    fn step(&mut self, losses: &[f64]) -> Result<Weighting> {
        let logits = self.logits().to_vec();
        Ok(Weighting::new(self.weights_for(losses)?).with_extra("logit", logits))
    }

    fn saved(&self) -> &FamoState {
        self.state()
    }

    fn restore(&mut self, state: FamoState) -> Result<()> {
        self.set_state(state)
    }

    fn needs_updated_losses(&self) -> bool {
        true
    }

    fn observe_updated_losses(&mut self, losses: &[f64]) -> Result<()> {
        self.update(losses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use balance_core::BalancerState;
    use proptest::prelude::*;

    fn error(config: FamoConfig) -> String {
        config.build(2).unwrap_err().to_string()
    }

    #[test]
    fn first_step_weights_are_inverse_losses_normalised_to_t() {
        // z uniform: w_i = T (1/D_i) / sum_j (1/D_j).
        let mut rule = FamoConfig::default().rule(2).unwrap();
        assert_eq!(rule.weights(), vec![1.0, 1.0]);
        let w = rule.weights_for(&[1.0, 3.0]).unwrap();
        let (d0, d1) = (1.0 + FAMO_EPS, 3.0 + FAMO_EPS);
        let want = [
            2.0 / d0 / (1.0 / d0 + 1.0 / d1),
            2.0 / d1 / (1.0 / d0 + 1.0 / d1),
        ];
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-15, "{w:?}");
        }
        assert_eq!(rule.weights(), w);
    }

    #[test]
    fn a_task_that_improves_less_gains_logit() {
        let mut rule = FamoConfig::default().rule(2).unwrap();
        rule.weights_for(&[1.0, 1.0]).unwrap();
        rule.update(&[0.5, 0.99]).unwrap(); // task 0 improved much more
        let xi = rule.logits();
        assert!(xi[1] > xi[0], "{xi:?}");
        // First Adam step: each logit moves by about w_lr.
        assert!((xi[1] - DEFAULT_W_LR).abs() < 1e-6, "{xi:?}");
    }

    #[test]
    fn loss_below_min_loss_is_a_clear_error() {
        let config = FamoConfig {
            min_losses: Some(vec![0.5, 0.0]),
            ..FamoConfig::default()
        };
        let mut rule = config.rule(2).unwrap();
        let m = rule.weights_for(&[0.2, 1.0]).unwrap_err().to_string();
        assert!(
            m.contains("field `min_losses[0]` = 0.5") && m.contains("current loss is 0.2"),
            "{m}"
        );
        rule.weights_for(&[1.0, 1.0]).unwrap();
        let m = rule.update(&[1.0, -0.1]).unwrap_err().to_string();
        assert!(
            m.contains("min_losses[1]") && m.contains("updated loss is -0.1"),
            "{m}"
        );
    }

    #[test]
    fn update_before_any_step_is_an_error() {
        let mut rule = FamoConfig::default().rule(2).unwrap();
        let m = rule.update(&[1.0, 1.0]).unwrap_err().to_string();
        assert!(m.contains("before any step"), "{m}");
    }

    #[test]
    fn negative_gamma_is_rejected() {
        let m = error(FamoConfig {
            gamma: Some(-0.1),
            ..FamoConfig::default()
        });
        assert!(
            m.contains("field `gamma` = -0.1, expected a finite number >= 0"),
            "{m}"
        );
    }

    #[test]
    fn non_positive_w_lr_is_rejected() {
        let m = error(FamoConfig {
            w_lr: Some(0.0),
            ..FamoConfig::default()
        });
        assert!(
            m.contains("field `w_lr` = 0, expected a finite number > 0"),
            "{m}"
        );
    }

    #[test]
    fn wrong_length_or_non_finite_min_losses_are_rejected() {
        let m = error(FamoConfig {
            min_losses: Some(vec![0.0]),
            ..FamoConfig::default()
        });
        assert!(
            m.contains("field `min_losses`") && m.contains("one value per task (2), got 1"),
            "{m}"
        );
        let m = error(FamoConfig {
            min_losses: Some(vec![0.0, f64::NEG_INFINITY]),
            ..FamoConfig::default()
        });
        assert!(m.contains("field `min_losses[1]` = -inf"), "{m}");
    }

    #[test]
    fn zero_tasks_and_unknown_fields_are_rejected() {
        let m = FamoConfig::default().build(0).unwrap_err().to_string();
        assert!(m.contains("field `num_tasks` = 0"), "{m}");
        let e = serde_json::from_str::<FamoConfig>(r#"{"lr": 0.1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `lr`"), "{e}");
    }

    fn configs() -> impl Strategy<Value = FamoConfig> {
        (0.0f64..0.1, 1e-3f64..0.5).prop_map(|(gamma, w_lr)| FamoConfig {
            gamma: Some(gamma),
            w_lr: Some(w_lr),
            min_losses: None,
        })
    }

    /// Pairs (losses, updated losses), all >= 0.
    fn trajectories(tasks: usize) -> impl Strategy<Value = Vec<(Vec<f64>, Vec<f64>)>> {
        prop::collection::vec(
            (
                prop::collection::vec(0.0f64..1e3, tasks),
                prop::collection::vec(0.0f64..1e3, tasks),
            ),
            1..30,
        )
    }

    proptest! {
        #[test]
        fn weights_are_positive_finite_and_sum_to_t(config in configs(), steps in trajectories(3)) {
            let mut rule = config.rule(3).unwrap();
            for (l, u) in &steps {
                let w = rule.weights_for(l).unwrap();
                prop_assert!(w.iter().all(|w| w.is_finite() && *w > 0.0), "{:?}", w);
                prop_assert!((w.iter().sum::<f64>() - 3.0).abs() < 1e-9, "{:?}", w);
                rule.update(u).unwrap();
                prop_assert!(rule.logits().iter().all(|x| x.is_finite()));
            }
        }

        #[test]
        fn reordering_tasks_reorders_weights(config in configs(), steps in trajectories(4), rotation in 1usize..4) {
            let perm: Vec<usize> = (0..4).map(|i| (i + rotation) % 4).collect();
            let mut a = config.rule(4).unwrap();
            let mut b = config.rule(4).unwrap();
            for (l, u) in &steps {
                let pl: Vec<f64> = perm.iter().map(|&i| l[i]).collect();
                let pu: Vec<f64> = perm.iter().map(|&i| u[i]).collect();
                let wa = a.weights_for(l).unwrap();
                let wb = b.weights_for(&pl).unwrap();
                for (k, &i) in perm.iter().enumerate() {
                    prop_assert!((wb[k] - wa[i]).abs() <= 1e-9 * wa[i].max(1e-6), "{:?} {:?}", wa, wb);
                }
                a.update(u).unwrap();
                b.update(&pu).unwrap();
            }
        }

        #[test]
        fn restored_state_gives_identical_future_weights(
            config in configs(),
            prefix in trajectories(2),
            suffix in trajectories(2),
        ) {
            let mut rule = config.rule(2).unwrap();
            for (l, u) in &prefix {
                rule.weights_for(l).unwrap();
                rule.update(u).unwrap();
            }
            let state = BalancerState::new(NAME, 2, rule.state()).unwrap();
            let json = serde_json::to_string(&state).unwrap();
            let back: BalancerState = serde_json::from_str(&json).unwrap();
            let mut fresh = config.build(2).unwrap();
            fresh.load_state(&back).unwrap();
            prop_assert_eq!(fresh.weights(), rule.weights());
            let mut restored = config.rule(2).unwrap();
            restored.set_state(back.decode(NAME, 2).unwrap()).unwrap();
            for (l, u) in &suffix {
                let a: Vec<u64> = rule.weights_for(l).unwrap().iter().map(|x| x.to_bits()).collect();
                let b: Vec<u64> = restored.weights_for(l).unwrap().iter().map(|x| x.to_bits()).collect();
                prop_assert_eq!(a, b);
                rule.update(u).unwrap();
                restored.update(u).unwrap();
            }
        }

        #[test]
        fn config_round_trips(config in configs(), m in prop::option::of(prop::collection::vec(-1.0f64..1.0, 2))) {
            let boxed: Box<dyn BalancerConfig> = Box::new(FamoConfig { min_losses: m, ..config });
            let json = serde_json::to_string(&boxed).unwrap();
            let back: Box<dyn BalancerConfig> = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&boxed).unwrap());
        }
    }
}
