//! Training harness of the balance toolkit: inputs, multi-task models that describe what they share, and
//! seeded synthetic data.
//!
//! This crate is at an early stage: it has the MMoE model and the synthetic cascade batches that GradNorm's
//! step-cost benchmark uses. Training loops, metrics, the other models and real data are yet to come.

pub mod batch;
pub mod data;
pub mod error;
pub mod input;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod optim;
pub mod synthetic;
pub mod train;

pub use batch::Batch;
pub use error::{HarnessError, Result};
pub use input::{InputConfig, InputEncoder};
pub use models::{mmoe::Mmoe, mmoe::MmoeConfig, ModelOutput, MultiTaskModel};
