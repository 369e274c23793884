//! Datasets held in memory as tensors, and the sources that produce them.

pub mod census;
pub mod csv_schema;
mod encode;
pub mod parquet_rows;

use balance_core::TorchResultExt;
use tch::{Kind, Tensor};

use crate::batch::Batch;
use crate::error::Result;
use crate::input::InputConfig;

/// `values` (row-major) as a `[rows, cols]` tensor; `what` names it in the error.
pub(crate) fn matrix<T: tch::kind::Element>(
    values: &[T],
    rows: usize,
    cols: usize,
    what: &str,
) -> Result<Tensor> {
    Ok(Tensor::from_slice(values)
        .f_view([rows as i64, cols as i64])
        .context(what)?)
}

/// What kind of label a task has, which decides its loss and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// 0/1 labels: BCE on logits; AUC and log loss.
    Binary,
    /// Real-valued labels: MSE.
    Regression,
}

/// A named task.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Task {
    /// The task's name.
    pub name: String,
    /// Its label kind.
    pub kind: TaskKind,
}

impl Task {
    /// A binary task.
    pub fn binary(name: &str) -> Self {
        Self {
            name: name.to_string(),
            kind: TaskKind::Binary,
        }
    }

    /// A regression task.
    pub fn regression(name: &str) -> Self {
        Self {
            name: name.to_string(),
            kind: TaskKind::Regression,
        }
    }
}

/// Examples in memory: dense features `[N, D]` (float32), categorical ids `[N, S]` (int64, each column
/// within its vocabulary), labels `[N, T]` (float32), with the input description and the tasks.
#[derive(Debug)]
pub struct Dataset {
    /// All examples.
    pub examples: Batch,
    /// The features, as the models' input encoder needs them.
    pub input: InputConfig,
    /// One entry per label column.
    pub tasks: Vec<Task>,
}

impl Dataset {
    /// The number of examples.
    pub fn len(&self) -> i64 {
        self.examples.len()
    }

    /// True when there is no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The examples at `indices` (an int64 tensor), as one batch.
    pub fn gather(&self, indices: &Tensor) -> Result<Batch> {
        self.examples
            .try_map("gathering examples", |t| t.f_index_select(0, indices))
    }

    /// Splits into the first `n` examples and the rest (views, no copy): train and held-out sets drawn
    /// from one generator.
    pub fn split_at(&self, n: i64) -> Result<(Dataset, Dataset)> {
        let n = n.clamp(0, self.len());
        let part = |start: i64, len: i64| -> Result<Dataset> {
            Ok(Dataset {
                examples: self
                    .examples
                    .try_map("splitting a dataset", |t| t.f_narrow(0, start, len))?,
                input: self.input.clone(),
                tasks: self.tasks.clone(),
            })
        };
        Ok((part(0, n)?, part(n, self.len() - n)?))
    }

    /// The positive rate (binary) or mean (regression) of each task's labels.
    pub fn label_means(&self) -> Result<Vec<f64>> {
        (0..self.tasks.len() as i64)
            .map(|t| {
                let labels = self.examples.task_labels(t)?;
                Ok(labels
                    .f_mean(Kind::Double)
                    .and_then(|m| m.f_double_value(&[]))
                    .context("label mean")?)
            })
            .collect()
    }
}
