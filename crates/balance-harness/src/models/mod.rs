//! Multi-task models. Each tells the balancer what it shares.

pub mod esmm;
pub mod mmoe;
pub mod ple;
pub mod shared_bottom;

use balance_core::SharedParts;
use tch::Tensor;

use crate::batch::Batch;
use crate::error::{HarnessError, Result};
use crate::nn::MlpConfig;

/// What a forward pass returns: one logit column `[B, 1]` per task and, when the model has one, the
/// shared representation (still attached to the graph).
#[derive(Debug)]
pub struct ModelOutput {
    /// Per-task outputs (logits for binary tasks, predictions for regression).
    pub logits: Vec<Tensor>,
    /// The shared representation of this batch.
    pub representation: Option<Tensor>,
}

/// A multi-task model the harness can train with any balancer.
pub trait MultiTaskModel {
    /// The number of tasks (heads).
    fn num_tasks(&self) -> usize;

    /// Runs the model; `train` enables dropout.
    fn forward_t(&self, batch: &Batch, train: bool) -> Result<ModelOutput>;

    /// Its trainable parameters split into shared (with the last shared layer) and task-specific.
    fn shared_parts(&self) -> SharedParts;
}

/// Checks an MLP config: widths `>= 1`, dropout in `[0, 1)`, and at least one layer when `required`.
pub(crate) fn check_mlp(
    component: &'static str,
    field: &str,
    mlp: &MlpConfig,
    required: bool,
) -> Result<()> {
    if required && mlp.dims.is_empty() {
        return Err(HarnessError::invalid(
            component,
            format!("{field}.dims"),
            "[]",
            "at least one hidden layer",
        ));
    }
    if let Some((i, d)) = mlp.dims.iter().enumerate().find(|(_, d)| **d < 1) {
        return Err(HarnessError::invalid(
            component,
            format!("{field}.dims[{i}]"),
            d,
            "a width >= 1",
        ));
    }
    if !(0.0..1.0).contains(&mlp.dropout) {
        return Err(HarnessError::invalid(
            component,
            format!("{field}.dropout"),
            mlp.dropout,
            "a probability in [0, 1)",
        ));
    }
    Ok(())
}
