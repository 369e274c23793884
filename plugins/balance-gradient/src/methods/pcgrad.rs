//! `pcgrad`: PCGrad (Yu et al., NeurIPS 2020) in LibMTL's formulation ([`crate::math::pcgrad`]).

use balance_core::rng::SplitMix64;
use balance_core::{Result, SharedTarget, TaskSpecificGradient};
use serde::{Deserialize, Serialize};

use super::{check_common, gradient_method, Combination, Rule};

/// The default seed of the projection order.
pub const DEFAULT_SEED: u64 = 0;

/// The `pcgrad` config.
///
/// ```json
/// {"method": "pcgrad", "seed": 0, "target": "all_shared", "task_specific": "unweighted"}
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PcGradConfig {
    /// Seed of the random projection order (SplitMix64; its state is the balancer's state).
    pub seed: u64,
    /// Where the per-task gradients are taken: `all_shared` (default) or `representation`.
    pub target: SharedTarget,
    /// What the task-specific parameters receive: `unweighted` (default) or `weighted`.
    pub task_specific: TaskSpecificGradient,
}

impl PcGradConfig {
    /// Checks every field for `num_tasks` tasks.
    pub fn check(&self, num_tasks: usize) -> Result<()> {
        check_common(NAME, num_tasks, self.target)
    }

    fn rule(&self, _num_tasks: usize) -> PcGradRule {
        PcGradRule {
            rng: SplitMix64::new(self.seed),
        }
    }
}

gradient_method! {
    /// The registry name.
    pub const NAME = "pcgrad";
    config: PcGradConfig,
    summary: "Project each task gradient off the others' conflicting directions, then sum (PCGrad).",
    paper: "Yu et al., Gradient Surgery for Multi-Task Learning, NeurIPS 2020",
}

/// PCGrad's rule: draws `T` orders (one permutation per task) each step.
#[derive(Debug, Clone)]
pub struct PcGradRule {
    rng: SplitMix64,
}

impl Rule for PcGradRule {
    type State = SplitMix64;

    fn name(&self) -> &'static str {
        NAME
    }

    fn combine(&mut self, gram: &[Vec<f64>], _losses: &[f64]) -> Result<Combination> {
        let t = gram.len();
        let orders: Vec<Vec<usize>> = (0..t).map(|_| self.rng.permutation(t)).collect();
        let alpha = crate::math::pcgrad::pcgrad(gram, &orders);
        let conflicts = (0..t)
            .map(|i| {
                let negative = (0..t).filter(|&j| gram[i][j] < 0.0).count();
                negative as f64
            })
            .collect();
        Ok(Combination {
            alpha,
            extras: vec![("conflicts", conflicts)],
        })
    }

    fn state(&self) -> SplitMix64 {
        self.rng.clone()
    }

    fn set_state(&mut self, state: SplitMix64, _num_tasks: usize) -> bool {
        self.rng = state;
        true
    }
}
