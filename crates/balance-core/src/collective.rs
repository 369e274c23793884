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

use std::sync::{Arc, Mutex};

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

/// The kind in which gradients of `tensors` cross the wire: `f64` if any of them is `f64`, else `f32`
/// (half-precision gradients are summed in `f32`, never narrower than they were taken).
pub fn wire_kind(tensors: &[&Tensor]) -> Kind {
    if tensors.iter().any(|t| t.kind() == Kind::Double) {
        Kind::Double
    } else {
        Kind::Float
    }
}

/// A [`Collective`] plus this rank's share of the current global batch: what a [`crate::Balancer`] needs
/// to turn local values into global ones.
#[derive(Clone)]
pub struct DataParallel {
    collective: Arc<dyn Collective>,
    share: f64,
    check_every: u64,
    /// Parameters whose `.grad` this step's balancer left global (shared by clones: the driver hands a
    /// clone to the method).
    global_gradients: Arc<Mutex<Vec<Tensor>>>,
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
            global_gradients: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Records that `params`' `.grad` are already the global batch's this step (a combination of
    /// all-reduced per-task gradients, written into freshly zeroed gradients), so that a trainer can
    /// leave them out of its gradient all-reduce. Only a trainer that zeroes the gradients before each
    /// step may act on it ([`DataParallel::take_global_gradients`]); [`DataParallel::all_reduce_gradients`]
    /// reduces everything.
    pub fn mark_global_gradients(&self, params: &[&Tensor]) {
        let mut marked = self
            .global_gradients
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        marked.extend(params.iter().map(|p| p.shallow_clone()));
    }

    /// The parameters marked by [`DataParallel::mark_global_gradients`] since the last call, which
    /// clears them (the balancer driver clears them at the start of every step too).
    pub fn take_global_gradients(&self) -> Vec<Tensor> {
        std::mem::take(
            &mut *self
                .global_gradients
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
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

    /// [`DataParallel::global_mean_tensor`] for per-task gradient `rows` held in a wider kind than the
    /// gradients they were taken from (the `f64` task matrix of an `f32` model): the values travel as
    /// `wire` (see [`wire_kind`]) and come back in `rows`' kind. Each rank's values are exact in `wire`,
    /// so only the sum is rounded, as it is for the model's own gradient; the payload halves for `f32`.
    pub fn global_mean_rows(&self, rows: &mut Tensor, wire: Kind) -> Result<()> {
        let kind = rows.kind();
        if kind == wire {
            return self.global_mean_tensor(rows);
        }
        let mut packed = rows
            .f_to_kind(wire)
            .context("packing task gradients for an all-reduce")?;
        self.global_mean_tensor(&mut packed)?;
        *rows = packed
            .f_to_kind(kind)
            .context("unpacking all-reduced task gradients")?;
        Ok(())
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

    /// Each value's smallest and largest across ranks: one all-reduce of `[v, -v]` under max.
    fn ranges(&self, values: &[f64]) -> Result<Vec<(f64, f64)>> {
        let both: Vec<f64> = values
            .iter()
            .copied()
            .chain(values.iter().map(|v| -v))
            .collect();
        let reduced = self.reduce_f64(&both, 1.0, ReduceOp::Max)?;
        let (max, neg_min) = reduced.split_at(values.len());
        Ok(neg_min.iter().zip(max).map(|(nl, hi)| (-nl, *hi)).collect())
    }

    /// Errors unless every rank holds bit-identical `values` (for example the weights): one all-reduce of
    /// `[v, -v]` under max gives each entry's max and minus its min. Runs on the steps that
    /// [`DataParallel::with_agreement_check_every`] selects (the same on every rank).
    pub fn check_agreement(&self, what: &str, step: u64, values: &[f64]) -> Result<()> {
        if self.check_every == 0 || step % self.check_every != 0 || self.world_size() < 2 {
            return Ok(());
        }
        let spread = self
            .ranges(values)?
            .iter()
            .map(|(lo, hi)| hi - lo)
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

    /// Errors on every rank unless every rank holds the same value of each named setting (the batch size,
    /// the parameter count: what must match before ranks can train together); the error names each
    /// differing setting with its smallest and largest value. One all-reduce of `2n` numbers, whatever
    /// the check schedule; settings must be the same *list* on every rank.
    pub fn check_same_settings(&self, settings: &[(&str, f64)]) -> Result<()> {
        if self.world_size() < 2 || settings.is_empty() {
            return Ok(());
        }
        let values: Vec<f64> = settings.iter().map(|&(_, v)| v).collect();
        let differing: Vec<String> = settings
            .iter()
            .zip(self.ranges(&values)?)
            .filter(|(_, (lo, hi))| lo != hi)
            .map(|((name, _), (lo, hi))| format!("`{name}` from {lo} to {hi}"))
            .collect();
        if differing.is_empty() {
            return Ok(());
        }
        Err(self.error(
            "settings agree across ranks",
            format!(
                "{} (every rank must train the same model with the same settings)",
                differing.join(", ")
            ),
        ))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::Mutex;

    use super::*;

    /// Rank 0 of two, whose peer holds `peer_factor` times this rank's tensor; records the kind and
    /// length of every all-reduced tensor (what a real group would send).
    struct Mirror {
        peer_factor: f64,
        sent: Mutex<Vec<(Kind, usize)>>,
    }

    impl Mirror {
        fn new(peer_factor: f64) -> Arc<Self> {
            Arc::new(Self {
                peer_factor,
                sent: Mutex::new(Vec::new()),
            })
        }
    }

    impl Collective for Mirror {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn all_reduce(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<()> {
            self.sent
                .lock()
                .unwrap()
                .push((tensor.kind(), tensor.numel()));
            let peer = &*tensor * self.peer_factor;
            let combined = match op {
                ReduceOp::Sum => &*tensor + peer,
                ReduceOp::Average => (&*tensor + peer) / 2.0,
                ReduceOp::Max => tensor.maximum(&peer),
                ReduceOp::Min => tensor.minimum(&peer),
            };
            tensor.copy_(&combined);
            Ok(())
        }
        fn broadcast(&self, _tensor: &mut Tensor, _root: usize) -> Result<()> {
            Ok(())
        }
        fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>> {
            Ok(vec![tensor.copy(), tensor * self.peer_factor])
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
    }

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(&t.to_kind(Kind::Double).reshape([-1])).unwrap()
    }

    #[test]
    fn global_mean_weights_each_rank_by_its_share() {
        // This rank holds 1 of 4 examples: it sends v / 4; the peer (1 of 4 too, here) sends the same.
        let mut dp = DataParallel::new(Mirror::new(1.0));
        dp.set_shard(1, 4).unwrap();
        assert_eq!(dp.global_mean(&[1.0, -2.0]).unwrap(), vec![0.5, -1.0]);
        // Equal halves where the peer's means are 3x this rank's: (v + 3v) / 2.
        let dp = DataParallel::new(Mirror::new(3.0));
        assert_eq!(dp.global_mean(&[1.0, -2.0]).unwrap(), vec![2.0, -4.0]);
    }

    #[test]
    fn task_rows_travel_in_the_gradients_kind_and_come_back_in_their_own() {
        let mirror = Mirror::new(1.0);
        let dp = DataParallel::new(mirror.clone());
        let exact = [0.1f32, -3.5, 7.25e-3, 1e-20];
        let mut rows = Tensor::from_slice(&exact)
            .to_kind(Kind::Double)
            .reshape([2, 2]);
        dp.global_mean_rows(&mut rows, Kind::Float).unwrap();
        assert_eq!(rows.kind(), Kind::Double);
        assert_eq!(rows.size(), vec![2, 2]);
        // Two equal halves: the mean is each rank's value, exactly (f32 values survive f32 arithmetic).
        let expected: Vec<f64> = exact.iter().map(|&v| f64::from(v)).collect();
        assert_eq!(values(&rows), expected);
        let mut wide = Tensor::from_slice(&[0.1f64, 0.2]);
        dp.global_mean_rows(&mut wide, Kind::Double).unwrap();
        assert_eq!(values(&wide), vec![0.1, 0.2]);
        assert_eq!(
            *mirror.sent.lock().unwrap(),
            vec![(Kind::Float, 4), (Kind::Double, 2)]
        );
    }

    #[test]
    fn the_wire_kind_is_never_narrower_than_a_gradient() {
        let f32_t = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu));
        let f64_t = Tensor::zeros([2], (Kind::Double, tch::Device::Cpu));
        let f16_t = Tensor::zeros([2], (Kind::Half, tch::Device::Cpu));
        assert_eq!(wire_kind(&[&f32_t]), Kind::Float);
        assert_eq!(wire_kind(&[&f16_t]), Kind::Float);
        assert_eq!(wire_kind(&[&f32_t, &f64_t]), Kind::Double);
        assert_eq!(wire_kind(&[]), Kind::Float);
    }

    #[test]
    fn label_statistics_add_up_over_ranks() {
        let dp = DataParallel::new(Mirror::new(1.0));
        let global = dp
            .global_label_stats(&[
                LabelStats::binary(10, 3),
                LabelStats::regression(4, 2.0, 5.0),
            ])
            .unwrap();
        assert_eq!(
            global,
            vec![
                LabelStats::binary(20, 6),
                LabelStats::regression(8, 4.0, 10.0)
            ]
        );
    }

    #[test]
    fn agreement_passes_on_equal_weights_and_names_the_spread_otherwise() {
        let same = DataParallel::new(Mirror::new(1.0)).with_agreement_check_every(1);
        same.check_agreement("weights", 0, &[0.5, 2.0]).unwrap();
        let drifted = DataParallel::new(Mirror::new(1.5)).with_agreement_check_every(1);
        let err = drifted
            .check_agreement("weights", 3, &[0.5, 2.0])
            .unwrap_err()
            .to_string();
        assert!(err.contains("weights agree across ranks"), "{err}");
        assert!(err.contains("at step 3") && err.contains("1e0"), "{err}");
        // Off-schedule steps are not checked (no collective at all).
        let every_4th = DataParallel::new(Mirror::new(1.5)).with_agreement_check_every(4);
        every_4th.check_agreement("weights", 3, &[0.5]).unwrap();
    }

    #[test]
    fn settings_that_differ_across_ranks_are_named_with_their_range() {
        let same = DataParallel::new(Mirror::new(1.0));
        same.check_same_settings(&[("batch_size", 256.0), ("parameters", 1e5)])
            .unwrap();
        // The peer's values are twice this rank's: both settings differ, each with its range.
        let err = DataParallel::new(Mirror::new(2.0))
            .check_same_settings(&[("batch_size", 256.0), ("lr", 0.001)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("settings agree across ranks"), "{err}");
        assert!(
            err.contains("`batch_size` from 256 to 512")
                && err.contains("`lr` from 0.001 to 0.002"),
            "{err}"
        );
        // Zero differs from nothing (its double is itself): no false alarm.
        DataParallel::new(Mirror::new(2.0))
            .check_same_settings(&[("weight_decay", 0.0)])
            .unwrap();
    }

    #[test]
    fn a_shard_larger_than_its_batch_is_refused_with_both_numbers() {
        let mut dp = DataParallel::new(Mirror::new(1.0));
        let err = dp.set_shard(5, 4).unwrap_err().to_string();
        assert!(err.contains("local 5 of global 4"), "{err}");
        assert!(dp.set_shard(0, 0).is_err());
        dp.set_shard(2, 4).unwrap();
        assert_eq!(dp.share(), 0.5);
    }
}
