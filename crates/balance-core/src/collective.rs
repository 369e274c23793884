//! Data-parallel training: the [`Collective`] operations a process group offers (implemented over c10d
//! by `balance-dist`), and [`DataParallel`], which makes a [`crate::Balancer`]'s inputs global.
//!
//! Each rank computes its losses and gradients on its shard of the global batch. A balancer must see the
//! global batch's values, not the local ones, or the ranks' weights drift apart (and differ from a
//! one-process run). With rank `r` holding `n_r` of the global batch's `N` examples, its *share* is
//! `s_r = n_r / N`, and for mean losses:
//! - global loss values and parameter gradients are `sum_r s_r x_r` (one all-reduce of pre-scaled values);
//! - gradients with respect to a shared *representation* are per-example rows, so the global Gram matrix is
//!   `sum_r s_r^2 G_r` and a norm is `sqrt(sum_r s_r^2 ||g_r||^2)`;
//! - label statistics (counts, sums) add up.
//!
//! Every rank then computes the same weights; [`DataParallel::check_agreement`] verifies it (every step
//! in debug builds, every [`DEFAULT_CHECK_EVERY`]-th in release builds).

use std::sync::Arc;

use tch::{Kind, Tensor};

use crate::error::{BalanceError, Result, TorchResultExt};
use crate::prior::LabelStats;

/// How [`Collective::all_reduce`] combines the ranks' tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum.
    Sum,
    /// Element-wise mean (the sum divided by the world size).
    Average,
    /// Element-wise maximum.
    Max,
    /// Element-wise minimum.
    Min,
}

/// The collective operations of a process group of `world_size` ranks. Every call is a collective: all
/// ranks make it, in the same order, with tensors of the same shape and kind; each returns an error
/// (never hangs past the group's timeout) when a rank is gone.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..world_size`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn world_size(&self) -> usize;
    /// Replaces `tensor` on every rank by the combination of all ranks' tensors.
    fn all_reduce(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<()>;
    /// Replaces `tensor` on every rank by rank `root`'s.
    fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<()>;
    /// Every rank's `tensor` (same shape on all ranks), in rank order.
    fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
}

impl std::fmt::Debug for dyn Collective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collective")
            .field("rank", &self.rank())
            .field("world_size", &self.world_size())
            .finish()
    }
}

/// A [`Collective`] plus this rank's share of the current global batch: what a [`crate::Balancer`] needs
/// to turn local values into global ones.
#[derive(Clone)]
pub struct DataParallel {
    collective: Arc<dyn Collective>,
    share: f64,
    check_every: u64,
}

/// Steps between two cross-rank weight checks by default: every step in debug builds (tests), every 64th
/// in release builds (a collective costs about a third of a millisecond on localhost Gloo, and diverged
/// states stay diverged, so a periodic check still catches drift within 64 steps).
pub const DEFAULT_CHECK_EVERY: u64 = if cfg!(debug_assertions) { 1 } else { 64 };

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("rank", &self.rank())
            .field("world_size", &self.world_size())
            .field("share", &self.share)
            .finish()
    }
}

impl DataParallel {
    /// Data parallelism over `collective`, with equal shards (share `1 / world_size`) until
    /// [`DataParallel::set_shard`] says otherwise, and the cross-rank weight check every
    /// [`DEFAULT_CHECK_EVERY`] steps.
    pub fn new(collective: Arc<dyn Collective>) -> Self {
        let share = 1.0 / collective.world_size().max(1) as f64;
        Self {
            collective,
            share,
            check_every: DEFAULT_CHECK_EVERY,
        }
    }

    /// Checks that every rank holds the same weights on every `steps`-th step (builder style; `0` turns
    /// the check off; `1` checks every step). Each check is one all-reduce of `4T` numbers.
    pub fn with_agreement_check_every(mut self, steps: u64) -> Self {
        self.check_every = steps;
        self
    }

    /// The group.
    pub fn collective(&self) -> &Arc<dyn Collective> {
        &self.collective
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.collective.rank()
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.collective.world_size()
    }

    /// This rank's share `n_r / N` of the current global batch.
    pub fn share(&self) -> f64 {
        self.share
    }

    /// Sets this rank's part of the current global batch: `local` of `global` examples (`local <= global`,
    /// `global >= 1`; the shares of all ranks must sum to 1).
    pub fn set_shard(&mut self, local: u64, global: u64) -> Result<()> {
        if global == 0 || local > global {
            return Err(self.error(
                "set_shard",
                format!("local {local} of global {global} examples; expected 1 <= global and local <= global"),
            ));
        }
        self.share = local as f64 / global as f64;
        Ok(())
    }

    fn error(&self, op: &str, message: String) -> BalanceError {
        BalanceError::Collective {
            rank: self.rank(),
            world: self.world_size(),
            op: op.into(),
            message,
        }
    }

    fn reduce_f64(&self, values: &[f64], scale: f64, op: ReduceOp) -> Result<Vec<f64>> {
        let mut t = Tensor::from_slice(values)
            .f_mul_scalar(scale)
            .context("scaling values for an all-reduce")?;
        self.collective.all_reduce(&mut t, op)?;
        Vec::<f64>::try_from(&t).context("reading an all-reduced value")
    }

    /// The global batch's mean of per-rank means: `sum_r s_r v_r` (loss values).
    pub fn global_mean(&self, values: &[f64]) -> Result<Vec<f64>> {
        self.reduce_f64(values, self.share, ReduceOp::Sum)
    }

    /// Replaces `rows` (per-rank mean gradients of parameters, any shape) by the global batch's:
    /// `sum_r s_r rows_r`, in place, in one all-reduce.
    pub fn global_mean_tensor(&self, rows: &mut Tensor) -> Result<()> {
        let _ = rows
            .f_mul_scalar_(self.share)
            .context("scaling a tensor for an all-reduce")?;
        self.collective.all_reduce(rows, ReduceOp::Sum)
    }

    /// The global Gram matrix (or squared norms) of per-example gradients, such as gradients with respect
    /// to a shared representation, from this rank's `local` one: `sum_r s_r^2 local_r`, in place.
    pub fn global_per_example_gram(&self, local: &mut Tensor) -> Result<()> {
        let _ = local
            .f_mul_scalar_(self.share * self.share)
            .context("scaling a Gram matrix for an all-reduce")?;
        self.collective.all_reduce(local, ReduceOp::Sum)
    }

    /// The global batch's label statistics: counts and sums added over ranks (exact for counts below 2^53).
    pub fn global_label_stats(&self, stats: &[LabelStats]) -> Result<Vec<LabelStats>> {
        let flat: Vec<f64> = stats
            .iter()
            .flat_map(|s| match *s {
                LabelStats::Binary { count, positives } => [count as f64, positives as f64, 0.0],
                LabelStats::Regression { count, sum, sum_sq } => [count as f64, sum, sum_sq],
            })
            .collect();
        let summed = self.reduce_f64(&flat, 1.0, ReduceOp::Sum)?;
        Ok(stats
            .iter()
            .zip(summed.chunks(3))
            .map(|(s, v)| match s {
                LabelStats::Binary { .. } => {
                    LabelStats::binary(v[0].round() as u64, v[1].round() as u64)
                }
                LabelStats::Regression { .. } => {
                    LabelStats::regression(v[0].round() as u64, v[1], v[2])
                }
            })
            .collect())
    }

    /// Errors unless every rank holds bit-identical `values` (for example the weights): one all-reduce of
    /// `[v, -v]` under max gives each entry's max and minus its min. Runs on the steps that
    /// [`DataParallel::with_agreement_check_every`] selects (the same on every rank).
    pub fn check_agreement(&self, what: &str, step: u64, values: &[f64]) -> Result<()> {
        if self.check_every == 0 || step % self.check_every != 0 || self.world_size() < 2 {
            return Ok(());
        }
        let both: Vec<f64> = values
            .iter()
            .copied()
            .chain(values.iter().map(|v| -v))
            .collect();
        let reduced = self.reduce_f64(&both, 1.0, ReduceOp::Max)?;
        let (max, neg_min) = reduced.split_at(values.len());
        let spread = max
            .iter()
            .zip(neg_min)
            .map(|(hi, neg_lo)| hi + neg_lo)
            .fold(0.0f64, f64::max);
        if spread != 0.0 || spread.is_nan() {
            return Err(self.error(
                &format!("{what} agree across ranks"),
                format!(
                    "at step {step} they differ by up to {spread:e} (max minus min over ranks): the \
                     ranks' balancer inputs were not global or their states diverged"
                ),
            ));
        }
        Ok(())
    }

    /// Gives every rank rank 0's values of `params` (in place; one broadcast per tensor), so that all
    /// ranks start from the same model.
    pub fn broadcast_parameters(&self, params: &[Tensor]) -> Result<()> {
        tch::no_grad(|| {
            for p in params {
                let mut p = p.shallow_clone();
                self.collective.broadcast(&mut p, 0)?;
            }
            Ok(())
        })
    }

    /// Replaces every parameter's `.grad` by the global batch's gradient, `sum_r s_r grad_r`, in one
    /// all-reduce of a flat buffer (a parameter without `.grad` counts as zero and gets one). Call it
    /// after [`crate::Balancer::backward`] and before the optimizer's step.
    pub fn all_reduce_gradients(&self, params: &[Tensor]) -> Result<()> {
        let buffer = tch::no_grad(|| -> Result<Option<Tensor>> {
            let flat: Vec<Tensor> = params
                .iter()
                .map(|p| {
                    let g = p.grad();
                    if g.defined() {
                        g.f_reshape([-1])
                    } else {
                        p.f_zeros_like().and_then(|z| z.f_reshape([-1]))
                    }
                })
                .collect::<std::result::Result<_, _>>()
                .context("flattening the gradients")?;
            if flat.is_empty() {
                return Ok(None);
            }
            let mut buffer = Tensor::f_cat(&flat, 0).context("flattening the gradients")?;
            self.global_mean_tensor(&mut buffer)?;
            Ok(Some(buffer))
        })?;
        let Some(buffer) = buffer else {
            return Ok(());
        };
        let mut offset = 0i64;
        for p in params {
            let n = p.numel() as i64;
            let piece = buffer
                .f_narrow(0, offset, n)
                .and_then(|v| v.f_view(p.size().as_slice()))
                .context("writing the reduced gradients")?;
            let mut g = p.grad();
            if g.defined() {
                tch::no_grad(|| g.f_copy_(&piece)).context("writing the reduced gradients")?;
            } else {
                crate::grad::accumulate_param_grads(&[p], &[Some(piece)])?;
            }
            offset += n;
        }
        Ok(())
    }

    /// Rank 0's `bytes` on every rank (two broadcasts: the length, then the bytes).
    pub fn broadcast_bytes(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        let mut len = Tensor::from_slice(&[bytes.len() as i64]);
        self.collective.broadcast(&mut len, 0)?;
        let n = len
            .f_int64_value(&[0])
            .context("reading a broadcast length")?;
        let mut data = if self.rank() == 0 {
            Tensor::from_slice(bytes)
        } else {
            Tensor::f_zeros([n], (Kind::Uint8, tch::Device::Cpu)).context("broadcast buffer")?
        };
        if n > 0 {
            self.collective.broadcast(&mut data, 0)?;
        }
        Vec::<u8>::try_from(&data).context("reading broadcast bytes")
    }
}
