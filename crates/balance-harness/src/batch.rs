//! A batch of examples as the models consume it.

use tch::{Device, Tensor};

/// Dense features `[B, D]` (float), sparse ids `[B, S]` (int64, one id per categorical feature) and
/// labels `[B, T]` (float, one column per task).
#[derive(Debug)]
pub struct Batch {
    /// Dense features.
    pub dense: Tensor,
    /// Categorical ids.
    pub sparse: Tensor,
    /// Labels.
    pub labels: Tensor,
}

impl Batch {
    /// The number of examples.
    pub fn len(&self) -> i64 {
        self.labels.size().first().copied().unwrap_or(0)
    }

    /// True when the batch holds no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same batch on `device`.
    pub fn to_device(&self, device: Device) -> Batch {
        Batch {
            dense: self.dense.to_device(device),
            sparse: self.sparse.to_device(device),
            labels: self.labels.to_device(device),
        }
    }

    /// Task `t`'s labels as `[B, 1]`.
    pub fn task_labels(&self, t: i64) -> Tensor {
        self.labels.narrow(1, t, 1)
    }
}
