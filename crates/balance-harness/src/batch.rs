//! A batch of examples as the models consume it.

use balance_core::TorchResultExt;
use tch::{Device, Tensor};

use crate::error::Result;

/// Dense features `[B, D]` (float), sparse ids `[B, S]` (int64, one id per categorical feature), one
/// `[B, L]` id tensor per sequence feature (int64, `-1` pads) and labels `[B, T]` (float, one column per
/// task).
#[derive(Debug)]
pub struct Batch {
    /// Dense features.
    pub dense: Tensor,
    /// Categorical ids.
    pub sparse: Tensor,
    /// Sequence features, each `[B, L]` with `-1` as padding.
    pub sequences: Vec<Tensor>,
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

    /// The batch with `f` applied to every tensor (rows selected, moved...).
    pub fn map(&self, f: impl Fn(&Tensor) -> Tensor) -> Batch {
        Batch {
            dense: f(&self.dense),
            sparse: f(&self.sparse),
            sequences: self.sequences.iter().map(&f).collect(),
            labels: f(&self.labels),
        }
    }

    /// Applies a fallible libtorch operation to every tensor; `what` names it in the error.
    pub fn try_map(
        &self,
        what: &str,
        f: impl Fn(&Tensor) -> std::result::Result<Tensor, tch::TchError>,
    ) -> Result<Batch> {
        let mut apply = |t: &Tensor| f(t).context(what);
        Ok(Batch {
            dense: apply(&self.dense)?,
            sparse: apply(&self.sparse)?,
            sequences: self
                .sequences
                .iter()
                .map(&mut apply)
                .collect::<std::result::Result<_, _>>()?,
            labels: apply(&self.labels)?,
        })
    }

    /// The same batch on `device`.
    pub fn to_device(&self, device: Device) -> Result<Batch> {
        self.try_map("moving a batch to the device", |t| t.f_to_device(device))
    }

    /// Task `t`'s labels as `[B, 1]`.
    pub fn task_labels(&self, t: i64) -> Result<Tensor> {
        Ok(self
            .labels
            .f_narrow(1, t, 1)
            .context(&format!("labels of task {t}"))?)
    }
}
