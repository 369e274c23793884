//! The GradNorm config as users write it, checked once into [`GradNormParams`].

use balance_core::{validate, BalanceError, Result, SharedTarget};
use serde::{Deserialize, Serialize};

use crate::NAME;

/// Default asymmetry `alpha` (the paper's and the reference framework's 1.5).
pub const DEFAULT_ALPHA: f64 = 1.5;
/// Default learning rate of the weights' Adam.
pub const DEFAULT_LR: f64 = 0.025;
/// Default decay of the warm-up EMA that estimates the initial losses.
pub const DEFAULT_INIT_EMA_DECAY: f64 = 0.9;
/// Default epsilon (norms, ratios, the weight floor, the renormalisation).
pub const DEFAULT_EPS: f64 = 1e-8;
/// Default warm-up steps whose labels estimate the prior (`progress = "prior"`).
pub const DEFAULT_PRIOR_STEPS: u64 = 50;

/// What a task's training progress `r_i` is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    /// `L_i(t) / L_i(0)`: the reference behaviour (the paper, the reference framework).
    #[default]
    InitialLoss,
    /// `L_i(t) / P_i`, with `P_i` the loss of the best constant predictor (the entropy of the label
    /// rate for BCE, the label variance for MSE), so progress means learning beyond the base rate. A
    /// rare task's BCE falls from `ln 2` to the base-rate entropy in the first steps; against `L_i(0)`
    /// that reads as fast learning although nothing beyond the rate was learned.
    Prior,
}

/// The `grad_norm` config. Every field is optional in JSON/TOML and defaults as the reference framework's.
///
/// ```json
/// {"method": "grad_norm", "alpha": 1.5, "lr": 0.025, "shared": "last_shared_layer"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GradNormConfig {
    /// Asymmetry: how hard tasks that train slower are pushed (`>= 0`, default 1.5).
    pub alpha: f64,
    /// Learning rate of the weights' own Adam (`> 0`, default 0.025).
    pub lr: f64,
    /// Initial weights, one per task (finite, `>= 0`, not all zero; default all 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_weights: Option<Vec<f64>>,
    /// When set, loss ratios use an EMA of the losses with this decay (in [0, 1)) instead of the raw values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f64>,
    /// When `> 0`, the initial losses `L0` are an EMA over this many first steps instead of the first step.
    pub init_ema_steps: i64,
    /// Decay of that warm-up EMA (in [0, 1), default 0.9).
    pub init_ema_decay: f64,
    /// Epsilon (`> 0`, default 1e-8).
    pub eps: f64,
    /// Where the gradient norms `G_i` are taken: `all_shared` (default, the reference framework),
    /// `last_shared_layer` (the paper) or `representation`.
    pub shared: SharedTarget,
    /// The base of the loss ratios: `initial_loss` (default) or `prior`.
    pub progress: Progress,
    /// With `progress = "prior"`: warm-up steps whose labels are pooled to estimate the prior (`>= 1`,
    /// default 50), then frozen. Ignored when `prior_loss` is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior_steps: Option<u64>,
    /// With `progress = "prior"`: the prior loss of each task, given (finite, `> 0`) instead of estimated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior_loss: Option<Vec<f64>>,
}

impl Default for GradNormConfig {
    fn default() -> Self {
        Self {
            alpha: DEFAULT_ALPHA,
            lr: DEFAULT_LR,
            init_weights: None,
            ema_decay: None,
            init_ema_steps: 0,
            init_ema_decay: DEFAULT_INIT_EMA_DECAY,
            eps: DEFAULT_EPS,
            shared: SharedTarget::AllShared,
            progress: Progress::InitialLoss,
            prior_steps: None,
            prior_loss: None,
        }
    }
}

/// Checked GradNorm parameters for a known number of tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct GradNormParams {
    /// Number of tasks (`> 1`).
    pub num_tasks: usize,
    /// Asymmetry.
    pub alpha: f64,
    /// Adam learning rate of the weights.
    pub lr: f64,
    /// Initial weights (length `num_tasks`).
    pub init_weights: Vec<f64>,
    /// Optional EMA decay of the ratio source.
    pub ema_decay: Option<f64>,
    /// Warm-up steps of the `L0` EMA (0: `L0` is the first step's losses).
    pub init_ema_steps: u64,
    /// Decay of the warm-up EMA.
    pub init_ema_decay: f64,
    /// Epsilon.
    pub eps: f64,
    /// Where `G_i` is taken.
    pub shared: SharedTarget,
    /// The base of the loss ratios.
    pub progress: Progress,
    /// Warm-up steps of the prior estimate.
    pub prior_steps: u64,
    /// The given prior losses (`progress = "prior"` only).
    pub prior_loss: Option<Vec<f64>>,
}

impl GradNormConfig {
    /// Checks every field for `num_tasks` tasks (one place for all validation).
    pub fn check(&self, num_tasks: usize) -> Result<GradNormParams> {
        if num_tasks < 2 {
            return Err(BalanceError::invalid_config(
                NAME,
                "num_tasks",
                num_tasks,
                "more than 1 task (GradNorm balances tasks against each other)",
            ));
        }
        validate::non_negative(NAME, "alpha", self.alpha)?;
        validate::positive(NAME, "lr", self.lr)?;
        validate::positive(NAME, "eps", self.eps)?;
        if let Some(decay) = self.ema_decay {
            validate::unit_interval_open(NAME, "ema_decay", decay)?;
        }
        validate::unit_interval_open(NAME, "init_ema_decay", self.init_ema_decay)?;
        let init_ema_steps = u64::try_from(self.init_ema_steps).map_err(|_| {
            BalanceError::invalid_config(
                NAME,
                "init_ema_steps",
                self.init_ema_steps,
                "an integer >= 0",
            )
        })?;
        let init_weights = match &self.init_weights {
            Some(w) => {
                validate::task_weights(NAME, "init_weights", w, num_tasks)?;
                w.clone()
            }
            None => vec![1.0; num_tasks],
        };
        if self.progress == Progress::InitialLoss {
            if let Some(steps) = self.prior_steps {
                return Err(BalanceError::invalid_config(
                    NAME,
                    "prior_steps",
                    steps,
                    "no prior_steps with progress = \"initial_loss\" (it applies to progress = \"prior\")",
                ));
            }
            if self.prior_loss.is_some() {
                return Err(BalanceError::invalid_config(
                    NAME,
                    "prior_loss",
                    format!("{:?}", self.prior_loss),
                    "no prior_loss with progress = \"initial_loss\" (it applies to progress = \"prior\")",
                ));
            }
        }
        let prior_steps = self.prior_steps.unwrap_or(DEFAULT_PRIOR_STEPS);
        if prior_steps < 1 {
            return Err(BalanceError::invalid_config(
                NAME,
                "prior_steps",
                prior_steps,
                "an integer >= 1",
            ));
        }
        if let Some(prior) = &self.prior_loss {
            validate::prior_losses(NAME, "prior_loss", prior, num_tasks)?;
        }
        Ok(GradNormParams {
            num_tasks,
            alpha: self.alpha,
            lr: self.lr,
            init_weights,
            ema_decay: self.ema_decay,
            init_ema_steps,
            init_ema_decay: self.init_ema_decay,
            eps: self.eps,
            shared: self.shared,
            progress: self.progress,
            prior_steps,
            prior_loss: self.prior_loss.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(config: GradNormConfig, tasks: usize) -> String {
        config.check(tasks).unwrap_err().to_string()
    }

    #[test]
    fn one_task_is_rejected() {
        assert_eq!(
            message(GradNormConfig::default(), 1),
            "invalid config for `grad_norm`: field `num_tasks` = 1, expected more than 1 task (GradNorm balances tasks against each other)"
        );
    }

    #[test]
    fn ema_decay_of_one_is_rejected() {
        let config = GradNormConfig {
            ema_decay: Some(1.0),
            ..Default::default()
        };
        assert_eq!(
            message(config, 2),
            "invalid config for `grad_norm`: field `ema_decay` = 1, expected a number in [0, 1)"
        );
    }

    #[test]
    fn init_ema_decay_out_of_range_is_rejected() {
        let config = GradNormConfig {
            init_ema_decay: -0.1,
            ..Default::default()
        };
        assert!(message(config, 2)
            .contains("field `init_ema_decay` = -0.1, expected a number in [0, 1)"));
    }

    #[test]
    fn negative_init_ema_steps_is_rejected() {
        let config = GradNormConfig {
            init_ema_steps: -3,
            ..Default::default()
        };
        assert_eq!(
            message(config, 2),
            "invalid config for `grad_norm`: field `init_ema_steps` = -3, expected an integer >= 0"
        );
    }

    #[test]
    fn wrong_init_weights_length_is_rejected() {
        let config = GradNormConfig {
            init_weights: Some(vec![1.0, 1.0, 1.0]),
            ..Default::default()
        };
        let m = message(config, 2);
        assert!(
            m.contains("field `init_weights`") && m.contains("one weight per task (2), got 3"),
            "{m}"
        );
    }

    #[test]
    fn negative_init_weight_is_rejected() {
        let config = GradNormConfig {
            init_weights: Some(vec![1.0, -1.0]),
            ..Default::default()
        };
        assert!(message(config, 2).contains("field `init_weights[1]` = -1"));
    }

    #[test]
    fn non_positive_lr_eps_and_negative_alpha_are_rejected() {
        let m = message(
            GradNormConfig {
                lr: 0.0,
                ..Default::default()
            },
            2,
        );
        assert!(
            m.contains("field `lr` = 0, expected a finite number > 0"),
            "{m}"
        );
        let m = message(
            GradNormConfig {
                eps: -1.0,
                ..Default::default()
            },
            2,
        );
        assert!(m.contains("field `eps` = -1"), "{m}");
        let m = message(
            GradNormConfig {
                alpha: -0.5,
                ..Default::default()
            },
            2,
        );
        assert!(
            m.contains("field `alpha` = -0.5, expected a finite number >= 0"),
            "{m}"
        );
    }

    #[test]
    fn prior_options_are_checked() {
        let m = message(
            GradNormConfig {
                prior_steps: Some(10),
                ..Default::default()
            },
            2,
        );
        assert!(m.contains("field `prior_steps` = 10, expected no prior_steps with progress = \"initial_loss\""), "{m}");
        let prior = |prior_steps, prior_loss| GradNormConfig {
            progress: Progress::Prior,
            prior_steps,
            prior_loss,
            ..Default::default()
        };
        let m = message(prior(Some(0), None), 2);
        assert!(
            m.contains("field `prior_steps` = 0, expected an integer >= 1"),
            "{m}"
        );
        let m = message(prior(None, Some(vec![0.5, 0.0])), 2);
        assert!(m.contains("field `prior_loss[1]` = 0"), "{m}");
        let m = message(prior(None, Some(vec![0.5])), 2);
        assert!(
            m.contains("field `prior_loss`") && m.contains("one value per task (2), got 1"),
            "{m}"
        );
        let p = prior(None, None).check(2).unwrap();
        assert_eq!(
            (p.progress, p.prior_steps),
            (Progress::Prior, DEFAULT_PRIOR_STEPS)
        );
        let c: GradNormConfig =
            serde_json::from_str(r#"{"progress": "prior", "prior_loss": [0.6, 0.03]}"#).unwrap();
        assert_eq!(c.check(2).unwrap().prior_loss, Some(vec![0.6, 0.03]));
    }

    #[test]
    fn unknown_field_is_rejected() {
        let e = serde_json::from_str::<GradNormConfig>(r#"{"alpah": 1.0}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `alpah`"), "{e}");
    }

    #[test]
    fn defaults_fill_missing_fields() {
        let c: GradNormConfig =
            serde_json::from_str(r#"{"alpha": 0.5, "shared": "representation"}"#).unwrap();
        assert_eq!(c.alpha, 0.5);
        assert_eq!(c.lr, DEFAULT_LR);
        assert_eq!(c.shared, SharedTarget::Representation);
        let p = c.check(3).unwrap();
        assert_eq!(p.init_weights, vec![1.0; 3]);
        assert_eq!(p.init_ema_steps, 0);
    }
}
