//! `aligned_mtl`: Aligned-MTL (Senushkin et al., CVPR 2023), the task gradients' principal components
//! aligned to equal norms ([`crate::math::aligned`]); negative coefficients are clamped (see the crate
//! docs).

use balance_core::{Result, SharedTarget, TaskSpecificGradient};
use serde::{Deserialize, Serialize};

use super::{check_common, clamp_non_negative, gradient_method, Combination, Rule};
use crate::math::aligned::{aligned, ScaleMode};

/// The `aligned_mtl` config.
///
/// ```json
/// {"method": "aligned_mtl", "scale_mode": "min", "target": "representation"}
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlignedMtlConfig {
    /// Scale of the aligned gradients: `min` (default), `median` or `rmse`.
    pub scale_mode: ScaleMode,
    /// Where the per-task gradients are taken: `all_shared` (default) or `representation`
    /// (Aligned-MTL-UB).
    pub target: SharedTarget,
    /// What the task-specific parameters receive: `unweighted` (default) or `weighted`.
    pub task_specific: TaskSpecificGradient,
}

impl AlignedMtlConfig {
    /// Checks every field for `num_tasks` tasks.
    pub fn check(&self, num_tasks: usize) -> Result<()> {
        check_common(NAME, num_tasks, self.target)
    }

    fn rule(&self, _num_tasks: usize) -> AlignedRule {
        AlignedRule {
            scale_mode: self.scale_mode,
        }
    }
}

gradient_method! {
    /// The registry name.
    pub const NAME = "aligned_mtl";
    config: AlignedMtlConfig,
    summary: "Align the task gradients' principal components to equal norms, then sum (Aligned-MTL).",
    paper: "Senushkin et al., Independent Component Alignment for Multi-Task Learning, CVPR 2023",
}

/// Aligned-MTL's rule (stateless).
#[derive(Debug, Clone)]
pub struct AlignedRule {
    scale_mode: ScaleMode,
}

impl Rule for AlignedRule {
    type State = ();

    fn name(&self) -> &'static str {
        NAME
    }

    fn combine(&mut self, gram: &[Vec<f64>], _losses: &[f64]) -> Result<Combination> {
        let s = aligned(gram, self.scale_mode);
        let (alpha, clamped) = clamp_non_negative(&s.alpha);
        Ok(Combination {
            alpha,
            extras: vec![
                ("raw_alpha", s.alpha),
                ("clamped", clamped),
                ("rank", vec![s.eigenvalues.len() as f64]),
                ("scale", vec![s.scale]),
            ],
        })
    }

    fn state(&self) {}

    fn set_state(&mut self, _state: (), _num_tasks: usize) -> bool {
        true
    }
}
