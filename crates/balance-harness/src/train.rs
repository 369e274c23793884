//! The training loop: seeded epochs over a [`Dataset`], any [`Balancer`], [`FlatAdam`], evaluation each
//! epoch, early stopping, an [`Observer`] hook, and checkpoints that resume bit for bit.
//!
//! With [`Trainer::data_parallel`] the same loop runs on every rank of a process group, exactly as one
//! process would with the same global batch: every rank starts from rank 0's parameters, optimizer and
//! balancer; each step's global batch (the same slice of the same seeded permutation on every rank) is cut
//! into contiguous shards, one per rank (sizes differ by at most one); the balancer sees the global
//! batch's values ([`balance_core::collective`]); the flat gradient is all-reduced, weighted by each
//! rank's share, in one collective before the optimizer step; evaluation shards the held-out set and
//! gathers the predictions, so the metrics are those of the whole set. A global batch smaller than the
//! world size (an epoch's last, when the batch size leaves fewer examples than ranks) is skipped on every
//! rank. Dropout masks differ per rank (rank 0 draws the one-process masks).

use std::sync::Arc;
use std::time::Instant;

use balance_core::rng::SplitMix64;
use balance_core::{
    Balancer, BalancerCheckpoint, Collective, DataParallel, LabelStats, SharedParts, StepReport,
    TorchResultExt,
};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor};

use crate::batch::Batch;
use crate::data::{Dataset, Task, TaskKind};
use crate::error::{HarnessError, Result};
use crate::metrics;
use crate::models::{ModelOutput, MultiTaskModel};
use crate::optim::{AdamConfig, FlatAdam, FlatAdamState};

/// Early stopping on one task's validation metric (AUC for binary tasks, MSE for regression).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// The task whose metric is watched.
    pub task: String,
    /// Epochs without improvement before stopping (`>= 1`).
    pub patience: usize,
}

/// How to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Passes over the training data (`>= 1`).
    pub epochs: usize,
    /// Examples per step (`>= 1`).
    pub batch_size: i64,
    /// Seed of the shuffling and of dropout.
    pub seed: u64,
    /// The model's optimizer.
    pub adam: AdamConfig,
    /// Examples per forward pass during evaluation.
    pub eval_batch_size: i64,
    /// Optional early stopping.
    pub early_stopping: Option<EarlyStopping>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            batch_size: 1024,
            seed: 0,
            adam: AdamConfig::default(),
            eval_batch_size: 8192,
            early_stopping: None,
        }
    }
}

impl TrainConfig {
    /// Checks every field against the tasks.
    pub fn check(&self, tasks: &[Task]) -> Result<()> {
        if self.epochs < 1 {
            return Err(HarnessError::invalid(
                "train",
                "epochs",
                self.epochs,
                "at least 1",
            ));
        }
        if self.batch_size < 1 {
            return Err(HarnessError::invalid(
                "train",
                "batch_size",
                self.batch_size,
                "at least 1",
            ));
        }
        if self.eval_batch_size < 1 {
            return Err(HarnessError::invalid(
                "train",
                "eval_batch_size",
                self.eval_batch_size,
                "at least 1",
            ));
        }
        self.adam.check()?;
        if let Some(es) = &self.early_stopping {
            if !tasks.iter().any(|t| t.name == es.task) {
                let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
                return Err(HarnessError::invalid(
                    "train",
                    "early_stopping.task",
                    &es.task,
                    format!("one of the tasks: {}", names.join(", ")),
                ));
            }
            if es.patience < 1 {
                return Err(HarnessError::invalid(
                    "train",
                    "early_stopping.patience",
                    es.patience,
                    "at least 1",
                ));
            }
        }
        Ok(())
    }
}

/// One task's validation metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    /// The task.
    pub task: String,
    /// AUC (binary tasks with both classes present), ranked on the logits.
    pub auc: Option<f64>,
    /// Log loss (binary tasks), from the logits.
    pub log_loss: Option<f64>,
    /// Average precision, the area under the precision-recall curve (binary tasks with a positive).
    #[serde(default)]
    pub average_precision: Option<f64>,
    /// Normalized Entropy: log loss over the entropy of the set's base rate; 1 is the best constant
    /// predictor, lower is better (binary tasks with both classes present).
    #[serde(default)]
    pub normalized_entropy: Option<f64>,
    /// Mean squared error (regression tasks).
    pub mse: Option<f64>,
    /// Positive labels in the evaluated set (binary tasks).
    #[serde(default)]
    pub positives: Option<u64>,
    /// Examples in the evaluated set.
    #[serde(default)]
    pub examples: u64,
}

impl TaskMetrics {
    /// The early-stopping score: AUC (higher is better) or minus MSE.
    fn score(&self) -> Option<f64> {
        self.auc.or(self.mse.map(|m| -m))
    }
}

/// What one epoch did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// The epoch (0-based).
    pub epoch: usize,
    /// Mean training loss per task over the epoch's steps.
    pub train_loss: Vec<f64>,
    /// Validation metrics per task.
    pub metrics: Vec<TaskMetrics>,
    /// Balancer weights at the end of the epoch.
    pub weights: Vec<f64>,
}

/// One training step as the observer sees it.
#[derive(Debug)]
pub struct StepEvent<'a> {
    /// The epoch (0-based).
    pub epoch: usize,
    /// Steps taken before this one, over the whole run.
    pub global_step: u64,
    /// What the balancer applied and measured.
    pub report: &'a StepReport,
    /// Wall time of the step in seconds (forward, balancer backward, optimizer).
    pub seconds: f64,
}

/// Receives every step and epoch; the bench records losses, weights and timings through it.
pub trait Observer {
    /// After each training step.
    fn on_step(&mut self, _event: &StepEvent<'_>) {}
    /// After each epoch's evaluation.
    fn on_epoch(&mut self, _report: &EpochReport) {}
}

/// An observer that does nothing.
#[derive(Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// Everything needed to resume a run exactly: parameters, optimizer, balancer, position in the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainCheckpoint {
    /// The epoch in progress.
    pub epoch: usize,
    /// Examples of that epoch already consumed.
    pub position: i64,
    /// Steps taken.
    pub global_step: u64,
    /// Running sums of the epoch's training losses and their count.
    pub epoch_loss_sums: Vec<f64>,
    /// Steps counted in `epoch_loss_sums`.
    pub epoch_steps: u64,
    /// Parameters and Adam moments.
    pub optimizer: FlatAdamState,
    /// The balancer.
    pub balancer: BalancerCheckpoint,
    /// Finished epochs.
    pub history: Vec<EpochReport>,
    /// Best early-stopping score so far and epochs since it.
    pub best_score: Option<f64>,
    /// Epochs since the best score.
    pub epochs_since_best: usize,
    /// True once early stopping fired.
    pub stopped: bool,
}

/// Trains a model with a balancer.
pub struct Trainer<M: MultiTaskModel> {
    model: M,
    optimizer: FlatAdam,
    balancer: Balancer,
    parts: SharedParts,
    tasks: Vec<Task>,
    config: TrainConfig,
    device: Device,
    state: Progress,
    /// Whether the ranks compared their datasets' checksums (once per trainer; row counts every call).
    data_compared: bool,
}

impl<M: MultiTaskModel> std::fmt::Debug for Trainer<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("balancer", &self.balancer)
            .field("epoch", &self.state.epoch)
            .field("global_step", &self.state.global_step)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
struct Progress {
    epoch: usize,
    position: i64,
    global_step: u64,
    epoch_loss_sums: Vec<f64>,
    epoch_steps: u64,
    history: Vec<EpochReport>,
    best_score: Option<f64>,
    epochs_since_best: usize,
    stopped: bool,
}

/// Stream constant of the shuffling (one permutation per epoch).
const SHUFFLE_STREAM: u64 = 0x5348_5546_464C_4531; // "SHUFFLE1"
/// Stream constant of dropout and other libtorch randomness (one `manual_seed` per step).
const DROPOUT_STREAM: u64 = 0x4452_4F50_4F55_5431; // "DROPOUT1"

/// The `index`-th 64-bit draw of `stream` under `seed`: the stream's key is SplitMix64's first output
/// from `seed ^ stream`, and draw `index` is the output of a SplitMix64 started `index` increments past the
/// key. Neighbouring seeds get unrelated keys, so seed `s + 1` does not replay seed `s` shifted by a step
/// (as `seed + step` did), and the shuffling and dropout streams of one seed are unrelated too. Pure in its
/// arguments, so a resumed run draws the same values.
fn stream_draw(seed: u64, stream: u64, index: u64) -> u64 {
    let key = SplitMix64::new(seed ^ stream).next_u64();
    SplitMix64::new(key.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15))).next_u64()
}

/// The libtorch seed (dropout masks) of step `global_step` on `rank` (rank 0 draws a one-process run's).
fn dropout_seed(seed: u64, rank: usize, global_step: u64) -> i64 {
    let stream = DROPOUT_STREAM ^ (rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (stream_draw(seed, stream, global_step) & (i64::MAX as u64)) as i64
}

/// Rank `rank`'s contiguous part `(start, len)` of `total` items cut into `world` parts whose sizes
/// differ by at most one.
fn shard(total: i64, rank: usize, world: usize) -> (i64, i64) {
    let world = world.max(1) as i64;
    let rank = rank as i64;
    let start = total * rank / world;
    (start, total * (rank + 1) / world - start)
}

/// A permutation of `0..n` for `epoch`, from the run's seed alone (so a resumed run sees the same order).
fn epoch_order(n: i64, seed: u64, epoch: usize) -> Tensor {
    let mut rng = SplitMix64::new(stream_draw(seed, SHUFFLE_STREAM, epoch as u64));
    let mut order: Vec<i64> = (0..n).collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    Tensor::from_slice(&order)
}

/// All-reduces the entries of the flat gradient `g` at `local` (every entry without indices) to the
/// global batch's mean; one collective, none when nothing is local.
fn reduce_local(dp: &DataParallel, g: &mut Tensor, local: Option<&Tensor>) -> Result<()> {
    let Some(local) = local else {
        return Ok(dp.global_mean_tensor(g)?);
    };
    if local.numel() == 0 {
        return Ok(());
    }
    let mut part = g
        .f_index_select(0, local)
        .map_err(|e| HarnessError::Optimizer(format!("selecting the local gradients: {e}")))?;
    dp.global_mean_tensor(&mut part)?;
    let _ = g
        .f_index_copy_(0, local, &part)
        .map_err(|e| HarnessError::Optimizer(format!("writing the reduced gradients: {e}")))?;
    Ok(())
}

/// Each task's loss on a batch: BCE on logits for binary tasks, MSE for regression, mean over the batch.
pub fn task_losses(tasks: &[Task], output: &ModelOutput, batch: &Batch) -> Result<Vec<Tensor>> {
    tasks
        .iter()
        .zip(&output.logits)
        .enumerate()
        .map(|(t, (task, logits))| {
            let labels = batch.task_labels(t as i64)?;
            let loss = match task.kind {
                TaskKind::Binary => logits.f_binary_cross_entropy_with_logits::<Tensor>(
                    &labels,
                    None,
                    None,
                    Reduction::Mean,
                ),
                TaskKind::Regression => logits.f_mse_loss(&labels, Reduction::Mean),
            };
            Ok(loss.context(&format!("loss of task `{}`", task.name))?)
        })
        .collect()
}

/// Each task's label statistics in `batch` (for balancers that measure progress against the prior,
/// `balance_core::prior`): positives of a binary task, sum and sum of squares of a regression task. The
/// losses of [`task_losses`] are mean BCE and mean MSE, whose best constant predictors these describe.
pub fn label_stats(tasks: &[Task], batch: &Batch) -> Result<Vec<LabelStats>> {
    let count = batch.len().max(0) as u64;
    tasks
        .iter()
        .enumerate()
        .map(|(t, task)| {
            let labels = batch
                .task_labels(t as i64)?
                .f_to_kind(Kind::Double)
                .context("label statistics")?;
            let sum = labels
                .f_sum(Kind::Double)
                .and_then(|s| s.f_double_value(&[]))
                .context("label statistics")?;
            Ok(match task.kind {
                TaskKind::Binary => LabelStats::binary(count, sum.round().max(0.0) as u64),
                TaskKind::Regression => {
                    let sum_sq = labels
                        .f_square()
                        .and_then(|q| q.f_sum(Kind::Double))
                        .and_then(|s| s.f_double_value(&[]))
                        .context("label statistics")?;
                    LabelStats::regression(count, sum, sum_sq)
                }
            })
        })
        .collect()
}

impl<M: MultiTaskModel> Trainer<M> {
    /// A trainer for `model`, whose trainable variables are `params` (they are moved into one flat buffer
    /// for the optimizer), on `device`.
    pub fn new(
        model: M,
        params: Vec<Tensor>,
        balancer: Balancer,
        tasks: Vec<Task>,
        config: TrainConfig,
        device: Device,
    ) -> Result<Self> {
        config.check(&tasks)?;
        if tasks.len() != model.num_tasks() || tasks.len() != balancer.task_names().len() {
            return Err(HarnessError::invalid(
                "train",
                "tasks",
                tasks.len(),
                format!(
                    "{} tasks (model) and {} (balancer)",
                    model.num_tasks(),
                    balancer.task_names().len()
                ),
            ));
        }
        let optimizer = FlatAdam::new(params, config.adam)?;
        let parts = model.shared_parts();
        Ok(Self {
            model,
            optimizer,
            balancer,
            parts,
            state: Progress {
                epoch_loss_sums: vec![0.0; tasks.len()],
                ..Progress::default()
            },
            tasks,
            config,
            device,
            data_compared: false,
        })
    }

    /// Makes this trainer one rank of a data-parallel run over `collective` (see the module docs):
    /// every rank calls it, with the same model, balancer config, tasks, train config and data. Rank 0's
    /// parameters, optimizer state and balancer state are broadcast here. `batch_size` is the global batch
    /// and must be at least the world size.
    ///
    /// Under `torchrun`, one line turns a one-process trainer into a rank:
    ///
    /// ```no_run
    /// # use balance_harness::{train::Trainer, Mmoe};
    /// # fn demo(trainer: Trainer<Mmoe>, train: &balance_harness::data::Dataset,
    /// #         eval: &balance_harness::data::Dataset) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::{sync::Arc, time::Duration};
    /// use balance_dist::{Launch, ProcessGroup};
    ///
    /// let launch = Launch::from_env()?.ok_or("not launched by torchrun")?;
    /// let group = Arc::new(ProcessGroup::new(&launch.group_options(Duration::from_secs(300)))?);
    /// let mut trainer = trainer.data_parallel(group)?;
    /// trainer.run(train, eval, &mut balance_harness::train::NoObserver)?; // every rank; metrics are global
    /// if launch.rank == 0 {
    ///     std::fs::write("checkpoint.json", serde_json::to_vec(&trainer.checkpoint()?)?)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn data_parallel(mut self, collective: Arc<dyn Collective>) -> Result<Self> {
        let world = collective.world_size();
        if self.config.batch_size < world as i64 {
            return Err(HarnessError::invalid(
                "train",
                "batch_size",
                self.config.batch_size,
                format!("at least the world size {world} (the batch is the global one, split across ranks)"),
            ));
        }
        let dp = DataParallel::new(collective);
        // Ranks that would train different models or schedules fail here together, not later on a
        // mismatched collective (or, worse, silently with different learning rates).
        let adam = &self.config.adam;
        dp.check_same_settings(&[
            ("parameters", self.optimizer.len() as f64),
            ("tasks", self.tasks.len() as f64),
            ("batch_size", self.config.batch_size as f64),
            ("epochs", self.config.epochs as f64),
            ("seed", self.config.seed as f64),
            ("lr", adam.lr),
            ("weight_decay", adam.weight_decay),
            ("beta1", adam.beta1),
            ("beta2", adam.beta2),
            ("eps", adam.eps),
            ("max_grad_norm", adam.max_grad_norm.unwrap_or(-1.0)),
            ("eval_batch_size", self.config.eval_batch_size as f64),
        ])?;
        self.balancer = self.balancer.with_data_parallel(dp);
        self.sync_from_rank0()?;
        Ok(self)
    }

    /// The process group, when data-parallel (the balancer's).
    fn group(&self) -> Option<Arc<dyn Collective>> {
        self.balancer
            .data_parallel()
            .map(|dp| Arc::clone(dp.collective()))
    }

    /// Every rank takes rank 0's parameters, optimizer moments and balancer state.
    fn sync_from_rank0(&mut self) -> Result<()> {
        let Some(group) = self.group() else {
            return Ok(());
        };
        self.optimizer
            .for_each_buffer(|t| Ok(group.broadcast(t, 0)?))?;
        self.balancer.sync_from_rank0()?;
        Ok(())
    }

    /// This process's rank and the world size (`(0, 1)` when not data-parallel).
    pub fn rank_and_world(&self) -> (usize, usize) {
        self.balancer
            .data_parallel()
            .map_or((0, 1), |dp| (dp.rank(), dp.world_size()))
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The balancer.
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// Finished epochs.
    pub fn history(&self) -> &[EpochReport] {
        &self.state.history
    }

    /// True when every epoch ran or early stopping fired.
    pub fn finished(&self) -> bool {
        self.state.stopped || self.state.epoch >= self.config.epochs
    }

    /// Trains to the end.
    pub fn run(
        &mut self,
        train: &Dataset,
        eval: &Dataset,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        self.run_steps(train, eval, observer, u64::MAX).map(|_| ())
    }

    /// Trains for at most `max_steps` more steps (stopping mid-epoch if need be); returns whether the run
    /// is finished.
    pub fn run_steps(
        &mut self,
        train: &Dataset,
        eval: &Dataset,
        observer: &mut dyn Observer,
        max_steps: u64,
    ) -> Result<bool> {
        let names = |tasks: &[Task]| {
            let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
            format!("[{}]", names.join(", "))
        };
        for (which, data) in [("train", train), ("eval", eval)] {
            if data.tasks != self.tasks {
                return Err(HarnessError::invalid(
                    "train",
                    format!("{which} dataset tasks"),
                    names(&data.tasks),
                    format!(
                        "the trainer's tasks {} (same names and kinds)",
                        names(&self.tasks)
                    ),
                ));
            }
        }
        if train.is_empty() {
            return Err(HarnessError::BadData(
                "the training set is empty (no example to train on)".into(),
            ));
        }
        if let Some(dp) = self.balancer.data_parallel() {
            // Every rank slices the same permutation of the same rows: other data means other shards.
            // The rows' values once per trainer (a pass over the data), their counts every call; one
            // collective either way.
            let mut settings = vec![
                ("train rows", train.len() as f64),
                ("eval rows", eval.len() as f64),
            ];
            if !self.data_compared {
                settings.push(("train data checksum", train.examples.checksum()?));
                settings.push(("eval data checksum", eval.examples.checksum()?));
            }
            dp.check_same_settings(&settings)?;
            self.data_compared = true;
        }
        let mut budget = max_steps;
        while !self.finished() && budget > 0 {
            let order = epoch_order(train.len(), self.config.seed, self.state.epoch);
            while self.state.position < train.len() && budget > 0 {
                let size = self
                    .config
                    .batch_size
                    .min(train.len() - self.state.position);
                let (rank, world) = self.rank_and_world();
                if size < world as i64 {
                    // Too few examples left for every rank to get one: skipped on every rank.
                    self.state.position += size;
                    continue;
                }
                let (offset, local) = shard(size, rank, world);
                let indices = order
                    .f_narrow(0, self.state.position + offset, local)
                    .context("selecting the batch's examples")?;
                let batch = train.gather(&indices)?.to_device(self.device)?;
                self.balancer.set_shard(local as u64, size as u64)?;
                let start = Instant::now();
                let report = self.step(&batch)?;
                let seconds = start.elapsed().as_secs_f64();
                observer.on_step(&StepEvent {
                    epoch: self.state.epoch,
                    global_step: self.state.global_step,
                    report: &report,
                    seconds,
                });
                self.state.position += size;
                self.state.global_step += 1;
                budget -= 1;
            }
            if self.state.position >= train.len() {
                self.finish_epoch(eval, observer)?;
            }
        }
        Ok(self.finished())
    }

    fn step(&mut self, batch: &Batch) -> Result<StepReport> {
        let step_seed = dropout_seed(
            self.config.seed,
            self.rank_and_world().0,
            self.state.global_step,
        );
        tch::manual_seed(step_seed);
        self.optimizer.zero_grad()?;
        let output = self.model.forward_t(batch, true)?;
        let losses = task_losses(&self.tasks, &output, batch)?;
        if self.balancer.needs_label_stats() {
            self.balancer
                .observe_label_stats(&label_stats(&self.tasks, batch)?)?;
        }
        let report =
            self.balancer
                .backward(&losses, &self.parts, output.representation.as_ref())?;
        if !report.skipped {
            match self.balancer.data_parallel() {
                // The global batch's gradient: each rank's mean gradient weighted by its share. The
                // gradients the balancer left global (gradient methods on parameters) are left out: the
                // gradients were zeroed above, so the marks are this step's alone.
                Some(dp) => {
                    let local = self.optimizer.local_indices(&dp.take_global_gradients())?;
                    self.optimizer
                        .step_with(|g| reduce_local(dp, g, local.as_ref()))?
                }
                None => self.optimizer.step()?,
            }
            if self.balancer.needs_updated_losses() {
                // The same batch after the update, with the same dropout masks (same seed), no graph.
                tch::manual_seed(step_seed);
                let updated = tch::no_grad(|| {
                    self.model
                        .forward_t(batch, true)
                        .and_then(|output| task_losses(&self.tasks, &output, batch))
                })?;
                self.balancer.observe_updated_losses(&updated)?;
            }
            for (sum, l) in self.state.epoch_loss_sums.iter_mut().zip(&report.losses) {
                *sum += l;
            }
            self.state.epoch_steps += 1;
        }
        Ok(report)
    }

    fn finish_epoch(&mut self, eval: &Dataset, observer: &mut dyn Observer) -> Result<()> {
        let metrics = self.evaluate(eval)?;
        let steps = self.state.epoch_steps.max(1) as f64;
        let report = EpochReport {
            epoch: self.state.epoch,
            train_loss: self
                .state
                .epoch_loss_sums
                .iter()
                .map(|s| s / steps)
                .collect(),
            metrics,
            weights: self.balancer.weights(),
        };
        if let Some(es) = &self.config.early_stopping {
            let score = report
                .metrics
                .iter()
                .find(|m| m.task == es.task)
                .and_then(TaskMetrics::score);
            match (score, self.state.best_score) {
                (Some(s), Some(best)) if s <= best => {
                    self.state.epochs_since_best += 1;
                    if self.state.epochs_since_best >= es.patience {
                        self.state.stopped = true;
                    }
                }
                (Some(s), _) => {
                    self.state.best_score = Some(s);
                    self.state.epochs_since_best = 0;
                }
                (None, _) => {}
            }
        }
        observer.on_epoch(&report);
        self.state.history.push(report);
        self.balancer.end_epoch()?;
        self.state.epoch += 1;
        self.state.position = 0;
        self.state.epoch_loss_sums = vec![0.0; self.tasks.len()];
        self.state.epoch_steps = 0;
        Ok(())
    }

    /// Per-task metrics of the model on `data` (no dropout, no gradients). When data-parallel, every rank
    /// must call it: each predicts its shard and the predictions are gathered, so every rank returns the
    /// metrics of the whole set.
    pub fn evaluate(&self, data: &Dataset) -> Result<Vec<TaskMetrics>> {
        let (rank, world) = self.rank_and_world();
        let (first, count) = shard(data.len(), rank, world);
        let (mut outputs, mut labels) = self.predict(data, first, count)?;
        if let Some(group) = self.group() {
            // Outputs and labels in one all-gather.
            outputs.append(&mut labels);
            labels = gather_shards(group.as_ref(), &outputs, data.len())?;
            outputs = labels.drain(..self.tasks.len()).collect();
        }
        Ok(self.metrics_of(&outputs, &labels))
    }

    /// Per task, the model's outputs (logits for binary tasks) and the labels of rows
    /// `first..first + count` of `data`.
    fn predict(&self, data: &Dataset, first: i64, count: i64) -> Result<(PerTask, PerTask)> {
        let tasks = self.tasks.len();
        let mut outputs: Vec<Vec<f32>> = vec![Vec::new(); tasks];
        let mut labels: Vec<Vec<f32>> = vec![Vec::new(); tasks];
        let end = first + count;
        let mut start = first;
        while start < end {
            let size = self.config.eval_batch_size.min(end - start);
            let indices = Tensor::arange_start(start, start + size, (Kind::Int64, Device::Cpu));
            let batch = data.gather(&indices)?.to_device(self.device)?;
            let output = tch::no_grad(|| self.model.forward_t(&batch, false))?;
            for t in 0..self.tasks.len() {
                // Binary tasks keep their logits: ranking metrics need no sigmoid (whose f32 values
                // saturate into ties) and the log loss is computed from them in f64.
                let out = output.logits[t].shallow_clone();
                let to_vec = |x: &Tensor| {
                    Vec::<f32>::try_from(
                        x.to_device(Device::Cpu).to_kind(Kind::Float).reshape([-1]),
                    )
                    .map_err(|e| HarnessError::BadBatch(format!("reading model outputs: {e}")))
                };
                outputs[t].extend(to_vec(&out)?);
                labels[t].extend(to_vec(&batch.task_labels(t as i64)?)?);
            }
            start += size;
        }
        Ok((outputs, labels))
    }

    fn metrics_of(&self, outputs: &[Vec<f32>], labels: &[Vec<f32>]) -> Vec<TaskMetrics> {
        self.tasks
            .iter()
            .enumerate()
            .map(|(t, task)| match task.kind {
                TaskKind::Binary => TaskMetrics {
                    task: task.name.clone(),
                    auc: metrics::auc(&outputs[t], &labels[t]),
                    log_loss: Some(metrics::log_loss_from_logits(&outputs[t], &labels[t])),
                    average_precision: metrics::average_precision(&outputs[t], &labels[t]),
                    normalized_entropy: metrics::normalized_entropy(&outputs[t], &labels[t]),
                    positives: Some(metrics::positives(&labels[t])),
                    examples: labels[t].len() as u64,
                    mse: None,
                },
                TaskKind::Regression => TaskMetrics {
                    task: task.name.clone(),
                    auc: None,
                    log_loss: None,
                    average_precision: None,
                    normalized_entropy: None,
                    mse: Some(metrics::mse(&outputs[t], &labels[t])),
                    positives: None,
                    examples: labels[t].len() as u64,
                },
            })
            .collect()
    }

    /// Everything needed to resume exactly.
    pub fn checkpoint(&self) -> Result<TrainCheckpoint> {
        let s = &self.state;
        Ok(TrainCheckpoint {
            epoch: s.epoch,
            position: s.position,
            global_step: s.global_step,
            epoch_loss_sums: s.epoch_loss_sums.clone(),
            epoch_steps: s.epoch_steps,
            optimizer: self.optimizer.state()?,
            balancer: self.balancer.checkpoint()?,
            history: s.history.clone(),
            best_score: s.best_score,
            epochs_since_best: s.epochs_since_best,
            stopped: s.stopped,
        })
    }

    /// Restores a checkpoint of a run with the same model, balancer config, tasks and train config.
    pub fn restore(&mut self, checkpoint: &TrainCheckpoint) -> Result<()> {
        if checkpoint.epoch_loss_sums.len() != self.tasks.len() {
            return Err(HarnessError::invalid(
                "checkpoint",
                "epoch_loss_sums",
                checkpoint.epoch_loss_sums.len(),
                format!("{} tasks", self.tasks.len()),
            ));
        }
        self.balancer.restore(&checkpoint.balancer)?;
        self.optimizer.load_state(&checkpoint.optimizer)?;
        self.state = Progress {
            epoch: checkpoint.epoch,
            position: checkpoint.position,
            global_step: checkpoint.global_step,
            epoch_loss_sums: checkpoint.epoch_loss_sums.clone(),
            epoch_steps: checkpoint.epoch_steps,
            history: checkpoint.history.clone(),
            best_score: checkpoint.best_score,
            epochs_since_best: checkpoint.epochs_since_best,
            stopped: checkpoint.stopped,
        };
        self.sync_from_rank0()
    }
}

/// One `f32` series per task (model outputs or labels).
type PerTask = Vec<Vec<f32>>;

/// Every rank's series `values` (its shard of `total` rows, [`shard`]), each concatenated in rank order:
/// one all-gather of the shards padded to the largest.
fn gather_shards(group: &dyn Collective, values: &[Vec<f32>], total: i64) -> Result<Vec<Vec<f32>>> {
    let world = group.world_size();
    let widest = (0..world)
        .map(|r| shard(total, r, world).1)
        .max()
        .unwrap_or(0);
    let series = values.len() as i64;
    let mut padded = vec![0f32; (series * widest) as usize];
    for (t, v) in values.iter().enumerate() {
        let row = t * widest as usize;
        padded[row..row + v.len()].copy_from_slice(v);
    }
    let mine = Tensor::from_slice(&padded)
        .f_reshape([series, widest])
        .context("gathering predictions")?;
    let parts = group.all_gather(&mine)?;
    let mut out: Vec<Vec<f32>> = vec![Vec::with_capacity(total as usize); values.len()];
    for (r, part) in parts.iter().enumerate() {
        let len = shard(total, r, world).1 as usize;
        let flat =
            Vec::<f32>::try_from(part.reshape([-1])).context("reading gathered predictions")?;
        for (t, o) in out.iter_mut().enumerate() {
            let row = t * widest as usize;
            o.extend_from_slice(&flat[row..row + len]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(n: i64, seed: u64, epoch: usize) -> Vec<i64> {
        Vec::<i64>::try_from(epoch_order(n, seed, epoch)).unwrap()
    }

    #[test]
    fn neighbouring_seeds_do_not_replay_each_other_shifted_by_a_step() {
        // The old derivation seeded step k of seed s with s + k, so seed s + 1 at step k drew the masks of
        // seed s at step k + 1.
        for seed in 0..8u64 {
            let next: Vec<i64> = (0..16).map(|k| dropout_seed(seed + 1, 0, k)).collect();
            let shifted: Vec<i64> = (1..17).map(|k| dropout_seed(seed, 0, k)).collect();
            assert!(
                next.iter().zip(&shifted).all(|(a, b)| a != b),
                "seed {}: {next:?} vs {shifted:?}",
                seed + 1
            );
            for epoch in 0..4 {
                assert_ne!(order(64, seed + 1, epoch), order(64, seed, epoch + 1));
                assert_ne!(order(64, seed + 1, epoch), order(64, seed, epoch));
            }
        }
    }

    #[test]
    fn shards_are_contiguous_cover_everything_and_differ_by_at_most_one() {
        for total in [0i64, 1, 5, 7, 64, 1001] {
            for world in 1..=5usize {
                let parts: Vec<(i64, i64)> = (0..world).map(|r| shard(total, r, world)).collect();
                let mut next = 0;
                for &(start, len) in &parts {
                    assert_eq!(start, next, "{total} over {world}: {parts:?}");
                    next += len;
                }
                assert_eq!(next, total);
                let lens: Vec<i64> = parts.iter().map(|p| p.1).collect();
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
            }
        }
        assert_eq!(shard(10, 0, 1), (0, 10));
    }

    #[test]
    fn shuffling_and_dropout_streams_differ_and_are_pure() {
        for seed in [0u64, 1, 42, u64::MAX] {
            for i in 0..8 {
                assert_ne!(
                    stream_draw(seed, SHUFFLE_STREAM, i),
                    stream_draw(seed, DROPOUT_STREAM, i)
                );
                assert_eq!(dropout_seed(seed, 0, i), dropout_seed(seed, 0, i));
                assert!(dropout_seed(seed, 0, i) >= 0);
                assert_ne!(dropout_seed(seed, 0, i), dropout_seed(seed, 1, i));
            }
            assert_eq!(order(100, seed, 3), order(100, seed, 3));
            let mut sorted = order(100, seed, 3);
            sorted.sort_unstable();
            assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        }
    }
}
