//! `cagrad`: CAGrad (Liu et al., NeurIPS 2021), the average gradient corrected towards the worst-case
//! task within a ball ([`crate::math::cagrad`]).

use balance_core::{validate, BalanceError, Result, SharedTarget, TaskSpecificGradient};
use serde::{Deserialize, Serialize};

use super::{check_common, gradient_method, Combination, Rule};
use crate::linalg::SimplexSolver;

/// Default radius `c` (LibMTL's and the paper's 0.4).
pub const DEFAULT_C: f64 = 0.4;

/// The `cagrad` config.
///
/// ```json
/// {"method": "cagrad", "c": 0.4, "rescale": 1}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaGradConfig {
    /// The radius `c` of the ball around the average gradient (finite, `>= 0`, default 0.4).
    pub c: f64,
    /// Rescaling of the direction: 0 none, 1 `/(1 + c^2)` (default), 2 `/(1 + c)`.
    pub rescale: u8,
    /// Iteration cap of the inner simplex solver (`>= 1`, default 20000).
    pub max_iter: usize,
    /// Where the per-task gradients are taken: `all_shared` (default) or `representation`.
    pub target: SharedTarget,
    /// What the task-specific parameters receive: `unweighted` (default) or `weighted`.
    pub task_specific: TaskSpecificGradient,
}

impl Default for CaGradConfig {
    fn default() -> Self {
        Self {
            c: DEFAULT_C,
            rescale: 1,
            max_iter: SimplexSolver::default().max_iter,
            target: SharedTarget::AllShared,
            task_specific: TaskSpecificGradient::Unweighted,
        }
    }
}

impl CaGradConfig {
    /// Checks every field for `num_tasks` tasks.
    pub fn check(&self, num_tasks: usize) -> Result<()> {
        check_common(NAME, num_tasks, self.target)?;
        validate::non_negative(NAME, "c", self.c)?;
        if self.rescale > 2 {
            return Err(BalanceError::invalid_config(
                NAME,
                "rescale",
                self.rescale,
                "0, 1 or 2",
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

    fn rule(&self, _num_tasks: usize) -> CaGradRule {
        CaGradRule {
            c: self.c,
            rescale: self.rescale,
            solver: SimplexSolver {
                max_iter: self.max_iter,
                ..SimplexSolver::default()
            },
        }
    }
}

gradient_method! {
    /// The registry name.
    pub const NAME = "cagrad";
    config: CaGradConfig,
    summary: "Move along the average gradient, corrected to improve the worst task within a ball (CAGrad).",
    paper: "Liu et al., Conflict-Averse Gradient Descent for Multi-task Learning, NeurIPS 2021",
}

/// CAGrad's rule (stateless).
#[derive(Debug, Clone)]
pub struct CaGradRule {
    c: f64,
    rescale: u8,
    solver: SimplexSolver,
}

impl Rule for CaGradRule {
    type State = ();

    fn name(&self) -> &'static str {
        NAME
    }

    fn combine(&mut self, gram: &[Vec<f64>], _losses: &[f64]) -> Result<Combination> {
        let s = crate::math::cagrad::cagrad(gram, self.c, self.rescale, self.solver);
        Ok(Combination {
            alpha: s.alpha,
            extras: vec![
                ("worst_case_weight", s.w),
                ("lambda", vec![s.lambda]),
                ("solver_iterations", vec![s.iterations as f64]),
            ],
        })
    }

    fn state(&self) {}

    fn set_state(&mut self, _state: (), _num_tasks: usize) -> bool {
        true
    }
}
