//! `uncertainty`: homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, "Multi-task learning using
//! uncertainty to weigh losses for scene geometry and semantics", CVPR 2018).
//!
//! Each task has a learnable log-variance `s_i = ln(sigma_i^2)`. The objective is
//!
//! `Total = sum_i c_i exp(-s_i) L_i + r_i(s_i)`
//!
//! with `c_i = 1` for the `classification` form (`L / sigma^2`) and `c_i = 1/2` for the `regression`
//! form (`L / (2 sigma^2)`). The regulariser (`regularizer`):
//! - `"log1p"` (default; Liebel & Körner, "Auxiliary tasks in multi-task learning", 2018):
//!   `r_i = c_i ln(1 + sigma_i^2) = c_i ln(1 + e^{s_i})` (the regression form's factor 1/2 mirrors the
//!   paper's `log sigma = s/2`). Every term is `>= 0` when the losses are, so the total never goes
//!   negative and `s` cannot run off to `-inf` when a loss reaches 0.
//! - `"log"` (the paper): `r_i = ln(sigma_i) = s_i / 2`. The total can go negative, and a task whose loss
//!   reaches 0 keeps pushing its `s_i` down (its weight up).
//!
//! The weight applied to the model is `w_i = c_i exp(-s_i)` (not normalised). After the backward the
//! balancer updates `s` with its own Adam (`lr`, PyTorch defaults otherwise) on the closed-form gradient
//! `dTotal/ds_i = -c_i exp(-s_i) L_i + r_i'(s_i)`, with `r' = c_i sigmoid(s_i)` (`log1p`) or `1/2` (`log`).
//! Each `s_i` is then clamped to `[-50, 50]` so that every weight stays finite and `> 0`.
//!
//! Each step reports the weights and the `log_variance` it applied (before the update).
//!
//! ```json
//! {"method": "uncertainty", "form": "regression", "regularizer": "log", "lr": 0.01, "init": 0.0}
//! {"method": "uncertainty", "form": ["classification", "regression"]}
//! ```

use crate::rule::{Weighted, Weighting, WeightingRule};
use balance_core::adam::AdamState;
use balance_core::{validate, BalanceError, BalancerConfig, LossBalancer, Result};
use serde::{Deserialize, Serialize};

/// Bound on `|s_i|`: the log-variances are clamped to `[-LOG_VARIANCE_BOUND, LOG_VARIANCE_BOUND]`.
pub const LOG_VARIANCE_BOUND: f64 = 50.0;

const DEFAULT_LR: f64 = 0.01;
const DEFAULT_INIT: f64 = 0.0;

/// The likelihood form of a task, which sets the factor `c_i` of its loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// `L / sigma^2` (`c = 1`).
    #[default]
    Classification,
    /// `L / (2 sigma^2)` (`c = 1/2`).
    Regression,
}

impl Form {
    /// The factor `c` of the loss.
    pub fn factor(self) -> f64 {
        match self {
            Form::Classification => 1.0,
            Form::Regression => 0.5,
        }
    }
}

/// One form for every task, or a list with one form per task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Forms {
    /// The same form for every task.
    All(Form),
    /// One form per task.
    PerTask(Vec<Form>),
}

impl Default for Forms {
    fn default() -> Self {
        Forms::All(Form::Classification)
    }
}

impl<'de> Deserialize<'de> for Forms {
    /// Reads `"classification"`, `"regression"` or a list of them, with an error naming the bad entry.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let parse = |s: &str| match s {
            "classification" => Ok(Form::Classification),
            "regression" => Ok(Form::Regression),
            other => Err(D::Error::custom(format!(
                "unknown form `{other}`, expected `classification` or `regression`"
            ))),
        };
        match Raw::deserialize(d).map_err(|_| {
            D::Error::custom(
                "`form` must be \"classification\", \"regression\" or a list of them, one per task",
            )
        })? {
            Raw::One(s) => Ok(Forms::All(parse(&s)?)),
            Raw::Many(list) => list
                .iter()
                .map(|s| parse(s))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Forms::PerTask),
        }
    }
}

/// The regulariser `r(s)` on each log-variance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Regularizer {
    /// `c ln(1 + e^s)` (Liebel & Körner 2018): the total is `>= 0` when the losses are.
    #[default]
    Log1p,
    /// `s / 2` (Kendall et al. 2018): the total can be negative.
    Log,
}

/// Config of the `uncertainty` balancer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UncertaintyConfig {
    /// `"classification"` (default) or `"regression"`, or a list with one per task.
    #[serde(default)]
    pub form: Forms,
    /// `"log1p"` (default) or `"log"`.
    #[serde(default)]
    pub regularizer: Regularizer,
    /// Adam learning rate of the log-variances (> 0, default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Initial log-variance of every task, in `[-50, 50]` (default 0: weights `c_i`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<f64>,
}

impl UncertaintyConfig {
    /// The validated rule for `num_tasks` tasks.
    pub fn rule(&self, num_tasks: usize) -> Result<UncertaintyRule> {
        self.validate(num_tasks)?;
        let factors = match &self.form {
            Forms::All(form) => vec![form.factor(); num_tasks],
            Forms::PerTask(forms) => forms.iter().map(|f| f.factor()).collect(),
        };
        Ok(UncertaintyRule::new(
            factors,
            self.regularizer,
            self.lr.unwrap_or(DEFAULT_LR),
            self.init.unwrap_or(DEFAULT_INIT),
        ))
    }
}

balance_core::register_balancer! {
    /// The registry name.
    pub const NAME = "uncertainty";
    config: UncertaintyConfig,
    summary: "Learned per-task log-variances weigh each loss by c*exp(-s) (homoscedastic uncertainty).",
    kind: LossWeighting,
    paper: "Kendall, Gal & Cipolla, CVPR 2018 (log1p regulariser: Liebel & Körner, 2018)",
    impl {
        fn validate(&self, num_tasks: usize) -> Result<()> {
            validate::task_count_at_least(NAME, num_tasks, 1)?;
            if let Some(lr) = self.lr {
                validate::positive(NAME, "lr", lr)?;
            }
            if let Some(init) = self.init {
                if !(init.is_finite() && init.abs() <= LOG_VARIANCE_BOUND) {
                    return Err(BalanceError::invalid_config(
                        NAME,
                        "init",
                        init,
                        "a number in [-50, 50]",
                    ));
                }
            }
            if let Forms::PerTask(forms) = &self.form {
                if forms.len() != num_tasks {
                    return Err(BalanceError::invalid_config(
                        NAME,
                        "form",
                        format!("{forms:?}"),
                        format!(
                            "one form for all tasks or one per task ({num_tasks}), got {}",
                            forms.len()
                        ),
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

/// `ln(1 + e^s)`, stable for any `s`.
pub fn softplus(s: f64) -> f64 {
    s.max(0.0) + (-s.abs()).exp().ln_1p()
}

/// `1 / (1 + e^{-s})`, stable for any `s`.
pub fn sigmoid(s: f64) -> f64 {
    if s >= 0.0 {
        1.0 / (1.0 + (-s).exp())
    } else {
        let e = s.exp();
        e / (1.0 + e)
    }
}

/// The objective `sum_i c_i exp(-s_i) L_i + r_i(s_i)`.
pub fn total(factors: &[f64], regularizer: Regularizer, s: &[f64], losses: &[f64]) -> f64 {
    factors
        .iter()
        .zip(s)
        .zip(losses)
        .map(|((&c, &s), &l)| {
            let r = match regularizer {
                Regularizer::Log1p => c * softplus(s),
                Regularizer::Log => 0.5 * s,
            };
            c * (-s).exp() * l + r
        })
        .sum()
}

/// The closed-form gradient `dTotal/ds_i = -c_i exp(-s_i) L_i + r_i'(s_i)`.
pub fn gradient(factors: &[f64], regularizer: Regularizer, s: &[f64], losses: &[f64]) -> Vec<f64> {
    factors
        .iter()
        .zip(s)
        .zip(losses)
        .map(|((&c, &s), &l)| {
            let dr = match regularizer {
                Regularizer::Log1p => c * sigmoid(s),
                Regularizer::Log => 0.5,
            };
            -c * (-s).exp() * l + dr
        })
        .collect()
}

/// The numerical rule of `uncertainty` over plain `f64` values, with its state.
#[derive(Debug, Clone, PartialEq)]
pub struct UncertaintyRule {
    factors: Vec<f64>,
    regularizer: Regularizer,
    lr: f64,
    state: UncertaintyState,
}

/// The mutable state of [`UncertaintyRule`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UncertaintyState {
    /// The log-variances `s_i`.
    pub log_variance: Vec<f64>,
    /// Adam's moments for `s`.
    pub adam: AdamState,
}

impl UncertaintyRule {
    /// A fresh rule with factors `c_i`, every `s_i = init`.
    pub fn new(factors: Vec<f64>, regularizer: Regularizer, lr: f64, init: f64) -> Self {
        let n = factors.len();
        Self {
            factors,
            regularizer,
            lr,
            state: UncertaintyState {
                log_variance: vec![init; n],
                adam: AdamState::new(n),
            },
        }
    }

    /// The number of tasks.
    pub fn num_tasks(&self) -> usize {
        self.factors.len()
    }

    /// The factors `c_i`.
    pub fn factors(&self) -> &[f64] {
        &self.factors
    }

    /// The current log-variances.
    pub fn log_variance(&self) -> &[f64] {
        &self.state.log_variance
    }

    /// The weights `c_i exp(-s_i)` from the current log-variances.
    pub fn weights(&self) -> Vec<f64> {
        self.factors
            .iter()
            .zip(&self.state.log_variance)
            .map(|(c, s)| c * (-s).exp())
            .collect()
    }

    /// The objective at the current log-variances.
    pub fn total(&self, losses: &[f64]) -> f64 {
        total(
            &self.factors,
            self.regularizer,
            &self.state.log_variance,
            losses,
        )
    }

    /// Returns this step's weights, then takes one Adam step on `s` with this step's losses.
    pub fn update(&mut self, losses: &[f64]) -> Vec<f64> {
        let weights = self.weights();
        let grad = gradient(
            &self.factors,
            self.regularizer,
            &self.state.log_variance,
            losses,
        );
        self.state
            .adam
            .step(&mut self.state.log_variance, &grad, self.lr);
        for s in &mut self.state.log_variance {
            *s = s.clamp(-LOG_VARIANCE_BOUND, LOG_VARIANCE_BOUND);
        }
        weights
    }

    /// The state, for checkpoints.
    pub fn state(&self) -> &UncertaintyState {
        &self.state
    }

    /// Restores a state of the same task count.
    pub fn set_state(&mut self, state: UncertaintyState) -> Result<()> {
        let n = self.num_tasks();
        let fits = state.log_variance.len() == n
            && state.adam.exp_avg.len() == n
            && state.adam.exp_avg_sq.len() == n
            && state
                .log_variance
                .iter()
                .all(|s| s.is_finite() && s.abs() <= LOG_VARIANCE_BOUND);
        if !fits {
            return Err(BalanceError::StateMismatch {
                balancer: NAME.into(),
                reason: format!(
                    "the state needs {n} log-variances in [-50, 50] and {n} Adam moments"
                ),
            });
        }
        self.state = state;
        Ok(())
    }
}

/// The `uncertainty` balancer.
pub type Uncertainty = Weighted<UncertaintyRule>;

impl WeightingRule for UncertaintyRule {
    type State = UncertaintyState;

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
        let applied_s = self.log_variance().to_vec();
        let weights = self.weights();
        self.update(losses);
        Ok(Weighting::new(weights).with_extra("log_variance", applied_s))
    }

    fn saved(&self) -> &UncertaintyState {
        self.state()
    }

    fn restore(&mut self, state: UncertaintyState) -> Result<()> {
        self.set_state(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use balance_core::BalancerState;
    use proptest::prelude::*;
    use tch::{Kind, Tensor};

    fn error(config: UncertaintyConfig) -> String {
        config.build(2).unwrap_err().to_string()
    }

    #[test]
    fn defaults_give_unit_weights_and_log1p_classification() {
        let config: UncertaintyConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, UncertaintyConfig::default());
        let rule = config.rule(2).unwrap();
        assert_eq!(rule.weights(), vec![1.0, 1.0]);
        // Total at s = 0 with log1p: L + ln 2 per task.
        let t = rule.total(&[1.0, 3.0]);
        assert!((t - (4.0 + 2.0 * 2f64.ln())).abs() < 1e-15);
    }

    #[test]
    fn per_task_forms_set_the_factors() {
        let config: UncertaintyConfig =
            serde_json::from_str(r#"{"form": ["classification", "regression"]}"#).unwrap();
        let rule = config.rule(2).unwrap();
        assert_eq!(rule.factors(), &[1.0, 0.5]);
        assert_eq!(rule.weights(), vec![1.0, 0.5]);
        let config: UncertaintyConfig =
            serde_json::from_str(r#"{"form": "regression", "init": 1.0}"#).unwrap();
        let w = config.rule(3).unwrap().weights();
        assert!(w.iter().all(|&w| (w - 0.5 * (-1f64).exp()).abs() < 1e-16));
    }

    #[test]
    fn first_step_moves_s_by_lr_against_the_gradient() {
        // log regulariser at s = 0, L = 2: dT/ds = -2 + 0.5 < 0, so s rises by lr: weight falls.
        let config = UncertaintyConfig {
            regularizer: Regularizer::Log,
            lr: Some(0.1),
            ..UncertaintyConfig::default()
        };
        let mut rule = config.rule(1).unwrap();
        assert_eq!(rule.update(&[2.0]), vec![1.0]);
        assert!((rule.log_variance()[0] - 0.1).abs() < 1e-9);
    }

    #[test]
    fn log1p_stationary_point_is_where_weighted_loss_meets_sigmoid() {
        // With log1p, dT/ds = 0 where exp(-s) L = sigmoid(s) = 1 / (1 + e^{-s}); with x = e^{-s}:
        // L x^2 + L x - 1 = 0, so x = (sqrt(L^2 + 4L) - L) / (2L).
        let mut rule = UncertaintyConfig {
            lr: Some(0.05),
            ..UncertaintyConfig::default()
        }
        .rule(1)
        .unwrap();
        for _ in 0..3000 {
            rule.update(&[5.0]);
        }
        let x = ((25.0f64 + 20.0).sqrt() - 5.0) / 10.0;
        assert!(
            (rule.log_variance()[0] + x.ln()).abs() < 1e-3,
            "{:?}",
            rule.log_variance()
        );
    }

    #[test]
    fn non_positive_lr_is_rejected() {
        let m = error(UncertaintyConfig {
            lr: Some(0.0),
            ..UncertaintyConfig::default()
        });
        assert!(
            m.contains("field `lr` = 0, expected a finite number > 0"),
            "{m}"
        );
    }

    #[test]
    fn out_of_range_init_is_rejected() {
        let m = error(UncertaintyConfig {
            init: Some(60.0),
            ..UncertaintyConfig::default()
        });
        assert!(
            m.contains("field `init` = 60, expected a number in [-50, 50]"),
            "{m}"
        );
        let m = error(UncertaintyConfig {
            init: Some(f64::NAN),
            ..UncertaintyConfig::default()
        });
        assert!(m.contains("field `init` = NaN"), "{m}");
    }

    #[test]
    fn wrong_number_of_forms_is_rejected() {
        let m = error(UncertaintyConfig {
            form: Forms::PerTask(vec![Form::Regression]),
            ..UncertaintyConfig::default()
        });
        assert!(
            m.contains("field `form`") && m.contains("one per task (2), got 1"),
            "{m}"
        );
    }

    #[test]
    fn zero_tasks_unknown_fields_and_unknown_variants_are_rejected() {
        let m = UncertaintyConfig::default()
            .build(0)
            .unwrap_err()
            .to_string();
        assert!(m.contains("field `num_tasks` = 0"), "{m}");
        let e = serde_json::from_str::<UncertaintyConfig>(r#"{"regulariser": "log"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `regulariser`"), "{e}");
        let e = serde_json::from_str::<UncertaintyConfig>(r#"{"regularizer": "l2"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant `l2`"), "{e}");
        let e = serde_json::from_str::<UncertaintyConfig>(r#"{"form": ["regression", "ranking"]}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown form `ranking`"), "{e}");
        let e = serde_json::from_str::<UncertaintyConfig>(r#"{"form": 3}"#).unwrap_err();
        assert!(e.to_string().contains("`form` must be"), "{e}");
    }

    /// The closed-form gradient and the total agree with tch autograd of the same objective.
    fn autograd_check(forms: &[Form], regularizer: Regularizer, s: &[f64], losses: &[f64]) {
        let factors: Vec<f64> = forms.iter().map(|f| f.factor()).collect();
        let st = Tensor::from_slice(s).set_requires_grad(true);
        let c = Tensor::from_slice(&factors);
        let l = Tensor::from_slice(losses);
        let r = match regularizer {
            Regularizer::Log1p => &c * st.exp().log1p(),
            Regularizer::Log => &st * 0.5,
        };
        let total_t = (&c * (-&st).exp() * &l + r).sum(Kind::Double);
        total_t.backward();
        let auto: Vec<f64> = Vec::<f64>::try_from(st.grad()).unwrap();
        let closed = gradient(&factors, regularizer, s, losses);
        for (a, b) in auto.iter().zip(&closed) {
            assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "{a} vs {b}");
        }
        let t = total(&factors, regularizer, s, losses);
        let ta = total_t.double_value(&[]);
        assert!((t - ta).abs() <= 1e-12 * ta.abs().max(1.0), "{t} vs {ta}");
    }

    #[test]
    fn closed_form_gradient_matches_tch_autograd() {
        let forms = [Form::Classification, Form::Regression, Form::Regression];
        for reg in [Regularizer::Log1p, Regularizer::Log] {
            autograd_check(&forms, reg, &[0.0, -1.3, 2.2], &[0.7, 4.0, 0.01]);
            autograd_check(&forms, reg, &[10.0, -10.0, 0.5], &[0.0, 123.0, 1.0]);
        }
    }

    fn configs() -> impl Strategy<Value = UncertaintyConfig> {
        (
            prop_oneof![Just(Form::Classification), Just(Form::Regression)],
            prop_oneof![Just(Regularizer::Log1p), Just(Regularizer::Log)],
            1e-4f64..0.5,
            -5.0f64..5.0,
        )
            .prop_map(|(form, regularizer, lr, init)| UncertaintyConfig {
                form: Forms::All(form),
                regularizer,
                lr: Some(lr),
                init: Some(init),
            })
    }

    fn loss_sequences(tasks: usize) -> impl Strategy<Value = Vec<Vec<f64>>> {
        prop::collection::vec(prop::collection::vec(0.0f64..1e3, tasks), 1..30)
    }

    proptest! {
        #[test]
        fn weights_stay_positive_and_finite(
            config in configs(),
            steps in prop::collection::vec(prop::collection::vec(-1e6f64..1e6, 3), 1..40),
        ) {
            let mut rule = config.rule(3).unwrap();
            for losses in &steps {
                for w in rule.update(losses).into_iter().chain(rule.weights()) {
                    prop_assert!(w.is_finite() && w > 0.0, "weight {}", w);
                }
            }
        }

        #[test]
        fn log1p_total_is_non_negative_for_non_negative_losses(
            forms in prop::collection::vec(prop_oneof![Just(Form::Classification), Just(Form::Regression)], 1..6),
            s in prop::collection::vec(-50.0f64..50.0, 6),
            losses in prop::collection::vec(0.0f64..1e6, 6),
        ) {
            let n = forms.len();
            let factors: Vec<f64> = forms.iter().map(|f| f.factor()).collect();
            let t = total(&factors, Regularizer::Log1p, &s[..n], &losses[..n]);
            prop_assert!(t >= 0.0, "total {}", t);
        }

        #[test]
        fn closed_form_gradient_matches_autograd_anywhere(
            s in prop::collection::vec(-20.0f64..20.0, 3),
            losses in prop::collection::vec(0.0f64..100.0, 3),
            log1p in any::<bool>(),
        ) {
            let reg = if log1p { Regularizer::Log1p } else { Regularizer::Log };
            autograd_check(&[Form::Regression, Form::Classification, Form::Regression], reg, &s, &losses);
        }

        #[test]
        fn reordering_tasks_reorders_weights(
            config in configs(),
            steps in loss_sequences(4),
            rotation in 1usize..4,
        ) {
            let perm: Vec<usize> = (0..4).map(|i| (i + rotation) % 4).collect();
            let mut a = config.rule(4).unwrap();
            let mut b = config.rule(4).unwrap();
            for losses in &steps {
                let permuted: Vec<f64> = perm.iter().map(|&i| losses[i]).collect();
                let wa = a.update(losses);
                let wb = b.update(&permuted);
                for (k, &i) in perm.iter().enumerate() {
                    prop_assert_eq!(wb[k], wa[i]);
                }
            }
        }

        #[test]
        fn restored_state_gives_identical_future_weights(
            config in configs(),
            prefix in loss_sequences(2),
            suffix in loss_sequences(2),
        ) {
            let mut rule = config.rule(2).unwrap();
            for losses in &prefix {
                rule.update(losses);
            }
            let state = BalancerState::new(NAME, 2, rule.state()).unwrap();
            let json = serde_json::to_string(&state).unwrap();
            let back: BalancerState = serde_json::from_str(&json).unwrap();
            let mut fresh = config.build(2).unwrap();
            fresh.load_state(&back).unwrap();
            prop_assert_eq!(fresh.weights(), rule.weights());
            let mut restored = config.rule(2).unwrap();
            restored.set_state(back.decode(NAME, 2).unwrap()).unwrap();
            for losses in &suffix {
                let a: Vec<u64> = rule.update(losses).iter().map(|x| x.to_bits()).collect();
                let b: Vec<u64> = restored.update(losses).iter().map(|x| x.to_bits()).collect();
                prop_assert_eq!(a, b);
            }
        }

        #[test]
        fn config_round_trips(config in configs()) {
            let boxed: Box<dyn BalancerConfig> = Box::new(config);
            let json = serde_json::to_string(&boxed).unwrap();
            let back: Box<dyn BalancerConfig> = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&boxed).unwrap());
        }
    }
}
