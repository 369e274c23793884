//! Multi-task models. Each tells the balancer what it shares.

pub mod mmoe;

use balance_core::SharedParts;
use tch::Tensor;

use crate::batch::Batch;
use crate::error::Result;

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
