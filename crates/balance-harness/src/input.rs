//! Turning a [`Batch`]'s dense features and categorical ids into one input vector per example.

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::batch::Batch;
use crate::error::{HarnessError, Result};

/// The input features: `dense` numeric columns and one categorical column per entry of `vocab_sizes`,
/// each embedded in `embedding_dim` dimensions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Number of dense features.
    pub dense: i64,
    /// Vocabulary size of each categorical feature.
    pub vocab_sizes: Vec<i64>,
    /// Embedding width (shared by every categorical feature).
    pub embedding_dim: i64,
}

impl InputConfig {
    /// Width of the encoded input: `dense + len(vocab_sizes) * embedding_dim`.
    pub fn output_dim(&self) -> i64 {
        self.dense + self.vocab_sizes.len() as i64 * self.embedding_dim
    }

    /// Checks every field.
    pub fn check(&self) -> Result<()> {
        if self.dense < 0 {
            return Err(HarnessError::invalid(
                "input",
                "dense",
                self.dense,
                "a count >= 0",
            ));
        }
        if let Some((i, v)) = self.vocab_sizes.iter().enumerate().find(|(_, v)| **v < 1) {
            return Err(HarnessError::invalid(
                "input",
                format!("vocab_sizes[{i}]"),
                v,
                "a size >= 1",
            ));
        }
        if !self.vocab_sizes.is_empty() && self.embedding_dim < 1 {
            return Err(HarnessError::invalid(
                "input",
                "embedding_dim",
                self.embedding_dim,
                "a width >= 1",
            ));
        }
        if self.output_dim() == 0 {
            return Err(HarnessError::invalid(
                "input",
                "dense",
                self.dense,
                "at least one feature",
            ));
        }
        Ok(())
    }
}

/// Embeds categorical ids (all features in one table, offset per feature: one lookup per batch) and
/// concatenates them after the dense features.
#[derive(Debug)]
pub struct InputEncoder {
    table: Option<Tensor>,
    offsets: Tensor,
    config: InputConfig,
}

impl InputEncoder {
    /// Creates the embedding table under `path/table`.
    pub fn new(path: &nn::Path, config: &InputConfig) -> Result<Self> {
        config.check()?;
        let total: i64 = config.vocab_sizes.iter().sum();
        let table = (total > 0).then(|| {
            path.var(
                "table",
                &[total, config.embedding_dim],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.05,
                },
            )
        });
        let mut offsets = Vec::with_capacity(config.vocab_sizes.len());
        let mut acc = 0i64;
        for v in &config.vocab_sizes {
            offsets.push(acc);
            acc += v;
        }
        Ok(Self {
            table,
            offsets: Tensor::from_slice(&offsets).to_device(path.device()),
            config: config.clone(),
        })
    }

    /// The width of the encoded input.
    pub fn output_dim(&self) -> i64 {
        self.config.output_dim()
    }

    /// Encodes a batch as `[B, output_dim]`.
    pub fn forward(&self, batch: &Batch) -> Result<Tensor> {
        let features = self.config.vocab_sizes.len() as i64;
        let b = batch.len();
        let mut parts = Vec::with_capacity(2);
        if self.config.dense > 0 {
            if batch.dense.size() != [b, self.config.dense] {
                return Err(HarnessError::BadBatch(format!(
                    "dense features have shape {:?}, expected [{b}, {}]",
                    batch.dense.size(),
                    self.config.dense
                )));
            }
            parts.push(batch.dense.to_kind(Kind::Float));
        }
        if let Some(table) = &self.table {
            if batch.sparse.size() != [b, features] {
                return Err(HarnessError::BadBatch(format!(
                    "categorical ids have shape {:?}, expected [{b}, {features}]",
                    batch.sparse.size()
                )));
            }
            let ids = &batch.sparse + &self.offsets;
            let embedded = Tensor::embedding(table, &ids, -1, false, false);
            parts.push(embedded.reshape([b, features * self.config.embedding_dim]));
        }
        Ok(Tensor::cat(&parts, 1))
    }
}
