//! `dwa`: Dynamic Weight Average (Liu, Johns & Davison, "End-to-end multi-task learning with attention",
//! CVPR 2019, the MTAN paper).
//!
//! With `Lbar_i(e)` task `i`'s mean training loss over epoch `e` (the mean of the loss values of every
//! step of the epoch), the weights during epoch `e` are
//!
//! `w_i(e) = T * softmax_i(r_i / temperature)`, `r_i = Lbar_i(e-1) / Lbar_i(e-2)`
//!
//! and `w_i = 1` during the first two epochs (no two means yet). The weights sum to `T`, the number of
//! tasks; a task whose loss falls more slowly than the others' gets more weight. The training loop closes
//! each epoch with [`LossBalancer::end_epoch`]; an epoch without any step is ignored (there is no mean to
//! take). The weights change only at epoch ends.
//!
//! Guards (irrelevant for ordinary losses): the numerator is floored at 0 and the denominator at `1e-12`
//! so negative or zero epoch means cannot give a negative or infinite ratio, and `r_i / temperature` is
//! capped at `f64::MAX`.
//!
//! The state holds the two last epoch means and the current epoch's running sums, so a checkpoint taken
//! in the middle of an epoch resumes exactly. Each step reports the `loss_ratio` `r_i` in use (1 during
//! the first two epochs).
//!
//! ```json
//! {"method": "dwa", "temperature": 2.0}
//! ```

use crate::rule::{Weighted, Weighting, WeightingRule};
use balance_core::{validate, BalanceError, BalancerConfig, LossBalancer, Result};
use serde::{Deserialize, Serialize};

use crate::scaled_softmax;

const DEFAULT_TEMPERATURE: f64 = 2.0;
/// Floor on the older epoch mean, the ratio's denominator.
const DENOMINATOR_FLOOR: f64 = 1e-12;

/// Config of the `dwa` balancer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DwaConfig {
    /// Softmax temperature (> 0, default 2.0); larger is closer to equal weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
}

impl DwaConfig {
    /// The validated rule for `num_tasks` tasks.
    pub fn rule(&self, num_tasks: usize) -> Result<DwaRule> {
        self.validate(num_tasks)?;
        Ok(DwaRule::new(
            self.temperature.unwrap_or(DEFAULT_TEMPERATURE),
            num_tasks,
        ))
    }
}

balance_core::register_balancer! {
    /// The registry name.
    pub const NAME = "dwa";
    config: DwaConfig,
    summary: "Dynamic Weight Average: softmax of each task's epoch-over-epoch loss ratio, summing to T.",
    kind: LossWeighting,
    paper: "Liu, Johns & Davison, CVPR 2019 (MTAN)",
    impl {
        fn validate(&self, num_tasks: usize) -> Result<()> {
            validate::task_count_at_least(NAME, num_tasks, 1)?;
            if let Some(t) = self.temperature {
                validate::positive(NAME, "temperature", t)?;
            }
            Ok(())
        }

        fn build(&self, num_tasks: usize) -> Result<Box<dyn LossBalancer>> {
            Ok(Box::new(Weighted::new(self.rule(num_tasks)?)))
        }
    }
}

/// The ratios `r_i = max(last_i, 0) / max(older_i, 1e-12)`.
pub fn loss_ratios(last: &[f64], older: &[f64]) -> Vec<f64> {
    last.iter()
        .zip(older)
        .map(|(&l, &o)| l.max(0.0) / o.max(DENOMINATOR_FLOOR))
        .collect()
}

/// `T * softmax(r / temperature)` for ratios `r`.
pub fn dwa_weights(ratios: &[f64], temperature: f64) -> Vec<f64> {
    let logits: Vec<f64> = ratios
        .iter()
        .map(|r| (r / temperature).min(f64::MAX))
        .collect();
    scaled_softmax(&logits, ratios.len() as f64)
}

/// The numerical rule of `dwa` over plain `f64` values, with its state.
#[derive(Debug, Clone, PartialEq)]
pub struct DwaRule {
    temperature: f64,
    num_tasks: usize,
    state: DwaState,
}

/// The mutable state of [`DwaRule`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DwaState {
    /// Epochs closed so far (empty epochs not counted).
    pub epochs: u64,
    /// Mean loss of the last closed epoch, `Lbar(e-1)`.
    pub last_mean: Option<Vec<f64>>,
    /// Mean loss of the epoch before it, `Lbar(e-2)`.
    pub older_mean: Option<Vec<f64>>,
    /// Sum of this epoch's loss values so far.
    pub epoch_sum: Vec<f64>,
    /// Steps in this epoch so far.
    pub epoch_steps: u64,
}

impl DwaRule {
    /// A fresh rule.
    pub fn new(temperature: f64, num_tasks: usize) -> Self {
        Self {
            temperature,
            num_tasks,
            state: DwaState {
                epochs: 0,
                last_mean: None,
                older_mean: None,
                epoch_sum: vec![0.0; num_tasks],
                epoch_steps: 0,
            },
        }
    }

    /// The number of tasks.
    pub fn num_tasks(&self) -> usize {
        self.num_tasks
    }

    /// The ratios `r_i` in use (all 1 before two epochs were closed).
    pub fn ratios(&self) -> Vec<f64> {
        match (&self.state.last_mean, &self.state.older_mean) {
            (Some(last), Some(older)) => loss_ratios(last, older),
            _ => vec![1.0; self.num_tasks],
        }
    }

    /// The weights of the current epoch.
    pub fn weights(&self) -> Vec<f64> {
        match (&self.state.last_mean, &self.state.older_mean) {
            (Some(last), Some(older)) => dwa_weights(&loss_ratios(last, older), self.temperature),
            _ => vec![1.0; self.num_tasks],
        }
    }

    /// Adds one step's loss values to the current epoch.
    pub fn observe(&mut self, losses: &[f64]) {
        for (sum, &l) in self.state.epoch_sum.iter_mut().zip(losses) {
            *sum += l;
        }
        self.state.epoch_steps += 1;
    }

    /// Closes the current epoch (ignored if it had no step).
    pub fn end_epoch(&mut self) {
        if self.state.epoch_steps == 0 {
            return;
        }
        let n = self.state.epoch_steps as f64;
        let mean = self.state.epoch_sum.iter().map(|s| s / n).collect();
        self.state.older_mean = self.state.last_mean.replace(mean);
        self.state.epoch_sum = vec![0.0; self.num_tasks];
        self.state.epoch_steps = 0;
        self.state.epochs += 1;
    }

    /// The state, for checkpoints.
    pub fn state(&self) -> &DwaState {
        &self.state
    }

    /// Restores a state of the same task count.
    pub fn set_state(&mut self, state: DwaState) -> Result<()> {
        let n = self.num_tasks;
        let fits_opt = |v: &Option<Vec<f64>>| {
            v.as_ref()
                .is_none_or(|v| v.len() == n && v.iter().all(|x| x.is_finite()))
        };
        let fits = state.epoch_sum.len() == n
            && state.epoch_sum.iter().all(|x| x.is_finite())
            && fits_opt(&state.last_mean)
            && fits_opt(&state.older_mean);
        if !fits {
            return Err(BalanceError::StateMismatch {
                balancer: NAME.into(),
                reason: format!("the state needs finite vectors of {n} entries"),
            });
        }
        self.state = state;
        Ok(())
    }
}

/// The `dwa` balancer.
pub type Dwa = Weighted<DwaRule>;

impl WeightingRule for DwaRule {
    type State = DwaState;

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
        let weights = self.weights();
        self.observe(losses);
        Ok(Weighting::new(weights).with_extra("loss_ratio", self.ratios()))
    }

    fn saved(&self) -> &DwaState {
        self.state()
    }

    fn restore(&mut self, state: DwaState) -> Result<()> {
        self.set_state(state)
    }

    fn end_epoch(&mut self) {
        DwaRule::end_epoch(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use balance_core::BalancerState;
    use proptest::prelude::*;

    fn run_epoch(rule: &mut DwaRule, steps: &[Vec<f64>]) {
        for s in steps {
            rule.observe(s);
        }
        rule.end_epoch();
    }

    #[test]
    fn equal_weights_for_two_epochs_then_hand_computed_values() {
        let mut rule = DwaConfig::default().rule(2).unwrap();
        assert_eq!(rule.weights(), vec![1.0, 1.0]);
        run_epoch(&mut rule, &[vec![2.0, 4.0], vec![4.0, 4.0]]); // means 3, 4
        assert_eq!(rule.weights(), vec![1.0, 1.0]);
        run_epoch(&mut rule, &[vec![1.5, 4.0], vec![1.5, 2.0]]); // means 1.5, 3
                                                                 // r = (0.5, 0.75), T = 2: w = 2 * softmax(0.25, 0.375).
        let e0 = 0.25f64.exp();
        let e1 = 0.375f64.exp();
        let want = [2.0 * e0 / (e0 + e1), 2.0 * e1 / (e0 + e1)];
        let w = rule.weights();
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-15, "{a} vs {b}");
        }
        // w_0 = 2 / (1 + e^{0.125}) = 0.93758...: the slower-falling task 1 gets more.
        assert!((w[0] - 0.937_581_253_252_487_5).abs() < 1e-15, "{w:?}");
        // Third epoch: means (1.5, 1.5) after (1.5, 3): r = (1, 0.5), temperature 2.
        run_epoch(&mut rule, &[vec![1.5, 1.5]]);
        let (e0, e1) = (0.5f64.exp(), 0.25f64.exp());
        assert!((rule.weights()[0] - 2.0 * e0 / (e0 + e1)).abs() < 1e-15);
        assert_eq!(rule.ratios(), vec![1.0, 0.5]);
    }

    #[test]
    fn empty_epochs_are_ignored() {
        let mut rule = DwaConfig::default().rule(2).unwrap();
        run_epoch(&mut rule, &[vec![1.0, 1.0]]);
        rule.end_epoch();
        rule.end_epoch();
        assert_eq!(rule.state().epochs, 1);
        assert_eq!(rule.weights(), vec![1.0, 1.0]);
    }

    #[test]
    fn zero_and_negative_means_are_guarded() {
        let w = dwa_weights(&loss_ratios(&[-1.0, 5.0], &[0.0, 0.0]), 1e-300);
        assert!(w.iter().all(|w| w.is_finite() && *w > 0.0), "{w:?}");
    }

    #[test]
    fn non_positive_temperature_is_rejected() {
        for t in [0.0, -1.0, f64::INFINITY] {
            let m = DwaConfig {
                temperature: Some(t),
            }
            .build(2)
            .unwrap_err()
            .to_string();
            assert!(
                m.contains("field `temperature`") && m.contains("expected a finite number > 0"),
                "{m}"
            );
        }
    }

    #[test]
    fn zero_tasks_and_unknown_fields_are_rejected() {
        let m = DwaConfig::default().build(0).unwrap_err().to_string();
        assert!(m.contains("field `num_tasks` = 0"), "{m}");
        let e = serde_json::from_str::<DwaConfig>(r#"{"temp": 2}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `temp`"), "{e}");
    }

    fn epochs(tasks: usize) -> impl Strategy<Value = Vec<Vec<Vec<f64>>>> {
        prop::collection::vec(
            prop::collection::vec(prop::collection::vec(1e-3f64..1e3, tasks), 0..5),
            0..6,
        )
    }

    proptest! {
        #[test]
        fn weights_are_positive_finite_and_sum_to_t(
            temperature in 1e-3f64..100.0,
            all in epochs(3),
        ) {
            let mut rule = DwaConfig { temperature: Some(temperature) }.rule(3).unwrap();
            for epoch in &all {
                run_epoch(&mut rule, epoch);
                let w = rule.weights();
                prop_assert!(w.iter().all(|w| w.is_finite() && *w > 0.0), "{:?}", w);
                prop_assert!((w.iter().sum::<f64>() - 3.0).abs() < 1e-12, "{:?}", w);
            }
        }

        #[test]
        fn weights_stay_positive_for_any_finite_losses(
            all in prop::collection::vec(prop::collection::vec(prop::collection::vec(-1e300f64..1e300, 2), 1..3), 0..5),
        ) {
            let mut rule = DwaConfig::default().rule(2).unwrap();
            for epoch in &all {
                run_epoch(&mut rule, epoch);
                prop_assert!(rule.weights().iter().all(|w| w.is_finite() && *w > 0.0));
            }
        }

        #[test]
        fn reordering_tasks_reorders_weights(all in epochs(4), rotation in 1usize..4) {
            let perm: Vec<usize> = (0..4).map(|i| (i + rotation) % 4).collect();
            let mut a = DwaConfig::default().rule(4).unwrap();
            let mut b = DwaConfig::default().rule(4).unwrap();
            for epoch in &all {
                let permuted: Vec<Vec<f64>> = epoch.iter().map(|l| perm.iter().map(|&i| l[i]).collect()).collect();
                run_epoch(&mut a, epoch);
                run_epoch(&mut b, &permuted);
                let (wa, wb) = (a.weights(), b.weights());
                for (k, &i) in perm.iter().enumerate() {
                    prop_assert!((wb[k] - wa[i]).abs() <= 1e-12 * wa[i], "{:?} {:?}", wa, wb);
                }
            }
        }

        #[test]
        fn mid_epoch_checkpoint_resumes_exactly(
            prefix in epochs(2),
            partial in prop::collection::vec(prop::collection::vec(1e-3f64..1e3, 2), 0..4),
            suffix in epochs(2),
        ) {
            let mut rule = DwaConfig::default().rule(2).unwrap();
            for epoch in &prefix {
                run_epoch(&mut rule, epoch);
            }
            for l in &partial {
                rule.observe(l);
            }
            let state = BalancerState::new(NAME, 2, rule.state()).unwrap();
            let json = serde_json::to_string(&state).unwrap();
            let back: BalancerState = serde_json::from_str(&json).unwrap();
            let mut fresh = DwaConfig::default().build(2).unwrap();
            fresh.load_state(&back).unwrap();
            prop_assert_eq!(fresh.weights(), rule.weights());
            let mut restored = DwaConfig::default().rule(2).unwrap();
            restored.set_state(back.decode(NAME, 2).unwrap()).unwrap();
            for epoch in &suffix {
                run_epoch(&mut rule, epoch);
                run_epoch(&mut restored, epoch);
                let a: Vec<u64> = rule.weights().iter().map(|x| x.to_bits()).collect();
                let b: Vec<u64> = restored.weights().iter().map(|x| x.to_bits()).collect();
                prop_assert_eq!(a, b);
            }
        }

        #[test]
        fn config_round_trips(temperature in prop::option::of(1e-3f64..1e3)) {
            let boxed: Box<dyn BalancerConfig> = Box::new(DwaConfig { temperature });
            let json = serde_json::to_string(&boxed).unwrap();
            let back: Box<dyn BalancerConfig> = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&boxed).unwrap());
        }
    }
}
