//! `imtl`: IMTL-G (Liu et al., ICLR 2021), the combination with equal projections on every task's
//! direction ([`crate::math::imtl`]); negative coefficients are clamped (see the crate docs).

use balance_core::{Result, SharedTarget, TaskSpecificGradient};
use serde::{Deserialize, Serialize};

use super::{check_common, clamp_non_negative, gradient_method, Combination, Rule};

/// The `imtl` config.
///
/// ```json
/// {"method": "imtl", "target": "all_shared", "task_specific": "unweighted"}
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImtlConfig {
    /// Where the per-task gradients are taken: `all_shared` (default) or `representation`.
    pub target: SharedTarget,
    /// What the task-specific parameters receive: `unweighted` (default) or `weighted`.
    pub task_specific: TaskSpecificGradient,
}

impl ImtlConfig {
    /// Checks every field for `num_tasks` tasks.
    pub fn check(&self, num_tasks: usize) -> Result<()> {
        check_common(NAME, num_tasks, self.target)
    }

    fn rule(&self, _num_tasks: usize) -> ImtlRule {
        ImtlRule
    }
}

gradient_method! {
    /// The registry name.
    pub const NAME = "imtl";
    config: ImtlConfig,
    summary: "Combine task gradients so the update projects equally on every task's direction (IMTL-G).",
    paper: "Liu et al., Towards Impartial Multi-task Learning, ICLR 2021",
}

/// IMTL-G's rule (stateless).
#[derive(Debug, Clone)]
pub struct ImtlRule;

impl Rule for ImtlRule {
    type State = ();

    fn name(&self) -> &'static str {
        NAME
    }

    fn combine(&mut self, gram: &[Vec<f64>], _losses: &[f64]) -> Result<Combination> {
        let (raw, singular) = crate::math::imtl::imtl(gram);
        let (alpha, clamped) = clamp_non_negative(&raw);
        Ok(Combination {
            alpha,
            extras: vec![
                ("raw_alpha", raw),
                ("clamped", clamped),
                ("singular", vec![f64::from(u8::from(singular))]),
            ],
        })
    }

    fn state(&self) {}

    fn set_state(&mut self, _state: (), _num_tasks: usize) -> bool {
        true
    }
}
