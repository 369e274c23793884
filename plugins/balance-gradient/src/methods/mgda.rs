//! `mgda`: MGDA (Sener & Koltun, NeurIPS 2018), the min-norm point of the convex hull of the task
//! gradients ([`crate::math::mgda`]); with `target: representation` it is MGDA-UB.

use balance_core::{Result, SharedTarget, TaskSpecificGradient};
use serde::{Deserialize, Serialize};

use super::{check_common, gradient_method, Combination, Rule};
use crate::math::mgda::{mgda, Normalization};

/// The `mgda` config.
///
/// ```json
/// {"method": "mgda", "normalization": "l2", "target": "representation"}
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MgdaConfig {
    /// Gradient normalisation before the min-norm problem: `none` (default), `l2`, `loss`, `loss+`.
    pub normalization: Normalization,
    /// Where the per-task gradients are taken: `all_shared` (default) or `representation` (MGDA-UB).
    pub target: SharedTarget,
    /// What the task-specific parameters receive: `unweighted` (default) or `weighted`.
    pub task_specific: TaskSpecificGradient,
}

impl MgdaConfig {
    /// Checks every field for `num_tasks` tasks.
    pub fn check(&self, num_tasks: usize) -> Result<()> {
        check_common(NAME, num_tasks, self.target)
    }

    fn rule(&self, _num_tasks: usize) -> MgdaRule {
        MgdaRule {
            normalization: self.normalization,
        }
    }
}

gradient_method! {
    /// The registry name.
    pub const NAME = "mgda";
    config: MgdaConfig,
    summary: "Descend along the min-norm point of the task gradients' convex hull (MGDA / MGDA-UB).",
    paper: "Sener & Koltun, Multi-Task Learning as Multi-Objective Optimization, NeurIPS 2018",
}

/// MGDA's rule (stateless).
#[derive(Debug, Clone)]
pub struct MgdaRule {
    normalization: Normalization,
}

impl Rule for MgdaRule {
    type State = ();

    fn name(&self) -> &'static str {
        NAME
    }

    fn combine(&mut self, gram: &[Vec<f64>], losses: &[f64]) -> Result<Combination> {
        let (alpha, weights, normalizers) = mgda(gram, losses, self.normalization);
        Ok(Combination {
            alpha,
            extras: vec![("simplex_weight", weights), ("normalizer", normalizers)],
        })
    }

    fn state(&self) {}

    fn set_state(&mut self, _state: (), _num_tasks: usize) -> bool {
        true
    }
}
