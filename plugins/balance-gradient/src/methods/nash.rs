//! `nashmtl`: Nash-MTL (Navon et al., ICML 2022), the Nash bargaining solution of the tasks
//! ([`crate::math::nash`]).
//!
//! Every `update_every` steps the weights are solved afresh (warm-started from the previous ones) and the
//! per-task gradients are combined; on the steps in between the cached weights are used as plain loss
//! weights, one ordinary backward of `sum_i alpha_i L_i`, exactly as the official implementation does
//! (so on those steps the task-specific parameters get alpha-weighted gradients whatever
//! `task_specific` says).

use balance_core::{validate, BalanceError, Result, SharedTarget, TaskSpecificGradient};
use serde::{Deserialize, Serialize};

use super::{check_common, gradient_method, Combination, Plan, Rule};
use crate::math::nash::{nash, DEFAULT_RIDGE};

/// Default Newton iteration cap.
pub const DEFAULT_MAX_ITER: usize = 100;

/// Tolerance on `|alpha_i (G_n alpha)_i - 1|`.
pub const TOLERANCE: f64 = 1e-10;

/// The `nashmtl` config.
///
/// ```json
/// {"method": "nashmtl", "update_every": 1, "max_iter": 100, "task_specific": "weighted"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NashMtlConfig {
    /// Solve for new weights every this many steps (`>= 1`, default 1); in between, the cached weights
    /// weight the losses (one backward, no per-task gradients).
    pub update_every: u64,
    /// Newton iteration cap per solve (`>= 1`, default 100).
    pub max_iter: usize,
    /// Ridge added to the normalised Gram matrix (finite, `> 0`, default 1e-8).
    pub ridge: f64,
    /// Where the per-task gradients are taken: `all_shared` (default) or `representation`.
    pub target: SharedTarget,
    /// What the task-specific parameters receive: `unweighted` (default) or `weighted` (the official
    /// code's behaviour).
    pub task_specific: TaskSpecificGradient,
}

impl Default for NashMtlConfig {
    fn default() -> Self {
        Self {
            update_every: 1,
            max_iter: DEFAULT_MAX_ITER,
            ridge: DEFAULT_RIDGE,
            target: SharedTarget::AllShared,
            task_specific: TaskSpecificGradient::Unweighted,
        }
    }
}

impl NashMtlConfig {
    /// Checks every field for `num_tasks` tasks.
    pub fn check(&self, num_tasks: usize) -> Result<()> {
        check_common(NAME, num_tasks, self.target)?;
        validate::positive(NAME, "ridge", self.ridge)?;
        if self.update_every == 0 {
            return Err(BalanceError::invalid_config(
                NAME,
                "update_every",
                self.update_every,
                "an integer >= 1",
            ));
        }
        if self.max_iter == 0 {
            return Err(BalanceError::invalid_config(
                NAME,
                "max_iter",
                self.max_iter,
                "an integer >= 1",
            ));
        }
        Ok(())
    }

    fn rule(&self, num_tasks: usize) -> NashRule {
        NashRule {
            update_every: self.update_every,
            max_iter: self.max_iter,
            ridge: self.ridge,
            state: NashState {
                alpha: vec![1.0; num_tasks],
                steps: 0,
            },
        }
    }
}

gradient_method! {
    /// The registry name.
    pub const NAME = "nashmtl";
    config: NashMtlConfig,
    summary: "Combine task gradients with the Nash bargaining solution G alpha = 1/alpha (Nash-MTL).",
    paper: "Navon et al., Multi-Task Learning as a Bargaining Game, ICML 2022",
}

/// Nash-MTL's state: the last solution and the step counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NashState {
    /// The last weights (warm start and cached weights).
    pub alpha: Vec<f64>,
    /// Steps taken.
    pub steps: u64,
}

/// Nash-MTL's rule.
#[derive(Debug, Clone)]
pub struct NashRule {
    update_every: u64,
    max_iter: usize,
    ridge: f64,
    state: NashState,
}

impl Rule for NashRule {
    type State = NashState;

    fn name(&self) -> &'static str {
        NAME
    }

    fn plan(&mut self, _num_tasks: usize) -> Plan {
        let update = self.state.steps % self.update_every == 0;
        self.state.steps += 1;
        if update {
            Plan::Combine
        } else {
            Plan::Weighted(self.state.alpha.clone())
        }
    }

    fn combine(&mut self, gram: &[Vec<f64>], _losses: &[f64]) -> Result<Combination> {
        let s = nash(
            gram,
            &self.state.alpha,
            self.ridge,
            self.max_iter,
            TOLERANCE,
        );
        if s.alpha.iter().all(|a| a.is_finite() && *a > 0.0) {
            self.state.alpha = s.alpha.clone();
        }
        Ok(Combination {
            alpha: s.alpha,
            extras: vec![
                ("updated", vec![1.0]),
                ("newton_iterations", vec![s.iterations as f64]),
                ("residual", vec![s.residual]),
                ("converged", vec![f64::from(u8::from(s.converged))]),
            ],
        })
    }

    fn state(&self) -> NashState {
        self.state.clone()
    }

    fn set_state(&mut self, state: NashState, num_tasks: usize) -> bool {
        if state.alpha.len() != num_tasks || state.alpha.iter().any(|a| !a.is_finite() || *a <= 0.0)
        {
            return false;
        }
        self.state = state;
        true
    }
}
