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

    /// A checksum of every value's bits and of the rows' order (features, sequences, labels), the same
    /// whatever the order of summation: equal batches give equal checksums, so ranks can tell whether
    /// they hold the same data without sending it. Exact in an `f64` (52 bits of a wrapping integer
    /// sum); another batch collides with probability about 2^-52.
    pub fn checksum(&self) -> Result<f64> {
        let rows = self.len();
        if rows == 0 {
            return Ok(0.0);
        }
        let weights = Tensor::f_arange(rows, (tch::Kind::Int64, self.labels.device()))
            .and_then(|w| w.f_mul_scalar(2))
            .and_then(|w| w.f_add_scalar(1))
            .context("checksum of a batch")?;
        let mut total: u64 = 0;
        let tensors = [&self.dense, &self.sparse, &self.labels]
            .into_iter()
            .chain(&self.sequences);
        for (k, t) in tensors.enumerate() {
            // Floats are summed as their bit patterns; integer sums wrap identically in any order. Each
            // row's sum is weighted by its position, so reordered rows change the checksum.
            let bits = match t.kind() {
                tch::Kind::Float => t.f_view_dtype(tch::Kind::Int),
                tch::Kind::Double => t.f_view_dtype(tch::Kind::Int64),
                _ => Ok(t.shallow_clone()),
            }
            .and_then(|b| b.f_reshape([rows, -1]))
            .and_then(|b| b.f_sum_dim_intlist([1i64].as_slice(), false, tch::Kind::Int64))
            .and_then(|r| r.f_mul(&weights))
            .and_then(|r| r.f_sum(tch::Kind::Int64))
            .and_then(|s| s.f_int64_value(&[]))
            .context("checksum of a batch")?;
            total = total.wrapping_add((bits as u64).wrapping_mul(2 * k as u64 + 1));
        }
        Ok((total & ((1 << 52) - 1)) as f64)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::synthetic::cascade;

    #[test]
    fn the_checksum_tells_the_same_data_from_changed_or_reordered_data() {
        let data = cascade(500, 3);
        let same = cascade(500, 3);
        let sum = data.checksum().unwrap();
        assert_eq!(sum, same.checksum().unwrap());
        assert_ne!(sum, cascade(500, 4).checksum().unwrap(), "other rows");
        // Two rows swapped: the same values in another order.
        let mut order: Vec<i64> = (0..500).collect();
        order.swap(10, 11);
        let swapped = data.map(|t| t.index_select(0, &Tensor::from_slice(&order)));
        assert_ne!(sum, swapped.checksum().unwrap(), "reordered rows");
        // One dense value nudged by one unit in the last place.
        let nudged = data.map(Tensor::copy);
        let first = nudged.dense.double_value(&[0, 0]) as f32;
        let _ = nudged
            .dense
            .get(0)
            .get(0)
            .fill_(f64::from(f32::from_bits(first.to_bits() + 1)));
        assert_ne!(sum, nudged.checksum().unwrap(), "one bit of one value");
        let empty = data.map(|t| t.narrow(0, 0, 0));
        assert_eq!(empty.checksum().unwrap(), 0.0);
    }
}
