//! [`Balancer`]: what a training loop drives. It wraps any [`LossBalancer`] with the checks that hold for
//! every method (task count, finite losses, valid weights), counts steps, and checkpoints.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::balancer::{check_weights, BalancerState, LossBalancer, StepInput, StepReport};
use crate::collective::DataParallel;
use crate::config::BalancerSpec;
use crate::error::{BalanceError, Result, TorchResultExt};
use crate::shared::SharedParts;

/// What to do when a task loss is NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonFinitePolicy {
    /// Return [`BalanceError::NonFiniteLoss`] (the default).
    #[default]
    Error,
    /// Skip the step: no backward, no state change; the report says `skipped`.
    SkipStep,
}

/// A balancer ready for a training loop.
///
/// ```no_run
/// # fn demo(losses: Vec<tch::Tensor>, parts: balance_core::SharedParts,
/// #         spec: balance_core::BalancerSpec) -> balance_core::Result<()> {
/// use balance_core::Balancer;
/// let mut balancer = Balancer::from_spec(&spec, &["ctr", "cvr"])?;
/// // per step: opt.zero_grad(); forward; then
/// let report = balancer.backward(&losses, &parts, None)?;
/// if !report.skipped { /* opt.step() */ }
/// # Ok(()) }
/// ```
pub struct Balancer {
    inner: Box<dyn LossBalancer>,
    task_names: Vec<String>,
    policy: NonFinitePolicy,
    step: u64,
    skipped_steps: u64,
    data_parallel: Option<DataParallel>,
}

/// Everything needed to resume a [`Balancer`] exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalancerCheckpoint {
    /// Format version of this struct.
    pub version: u32,
    /// Steps taken so far (including skipped ones).
    pub step: u64,
    /// Steps skipped because of a non-finite loss.
    pub skipped_steps: u64,
    /// The task names, in order.
    pub task_names: Vec<String>,
    /// The wrapped balancer's state.
    pub state: BalancerState,
}

const CHECKPOINT_VERSION: u32 = 1;

impl Balancer {
    /// Wraps `inner`; `task_names` gives one name per task (used in errors and reports).
    pub fn new(inner: Box<dyn LossBalancer>, task_names: &[&str]) -> Result<Self> {
        if task_names.len() != inner.num_tasks() {
            return Err(BalanceError::TaskCountMismatch {
                context: "task names".into(),
                expected: inner.num_tasks(),
                actual: task_names.len(),
            });
        }
        Ok(Self {
            inner,
            task_names: task_names.iter().map(|s| s.to_string()).collect(),
            policy: NonFinitePolicy::default(),
            step: 0,
            skipped_steps: 0,
            data_parallel: None,
        })
    }

    /// Builds the balancer that `spec` describes for the named tasks.
    pub fn from_spec(spec: &BalancerSpec, task_names: &[&str]) -> Result<Self> {
        Self::new(spec.build(task_names.len())?, task_names)
    }

    /// Sets what happens on a non-finite loss (builder style).
    pub fn with_non_finite_policy(mut self, policy: NonFinitePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Makes the balancer data-parallel (builder style): loss values, label statistics and the gradient
    /// statistics of gradient methods become the global batch's (see [`crate::collective`]), and the
    /// ranks check that they hold bit-identical weights (every step in debug builds). Call
    /// [`Balancer::set_shard`] before a step whose shards are not equal.
    pub fn with_data_parallel(mut self, data_parallel: DataParallel) -> Self {
        self.data_parallel = Some(data_parallel);
        self
    }

    /// The data-parallel context, when there is one.
    pub fn data_parallel(&self) -> Option<&DataParallel> {
        self.data_parallel.as_ref()
    }

    /// Sets this rank's part of the next step's global batch: `local` of `global` examples. Does nothing
    /// for a balancer that is not data-parallel.
    pub fn set_shard(&mut self, local: u64, global: u64) -> Result<()> {
        match &mut self.data_parallel {
            Some(dp) => dp.set_shard(local, global),
            None => Ok(()),
        }
    }

    /// Gives every rank rank 0's state (step counters and the method's state), so that all ranks start
    /// from the same balancer. Does nothing for a balancer that is not data-parallel.
    pub fn sync_from_rank0(&mut self) -> Result<()> {
        let Some(dp) = self.data_parallel.clone() else {
            return Ok(());
        };
        let json =
            serde_json::to_vec(&self.checkpoint()?).map_err(|e| BalanceError::StateMismatch {
                balancer: self.inner.name().to_string(),
                reason: format!("state cannot be serialised: {e}"),
            })?;
        let received = dp.broadcast_bytes(&json)?;
        let checkpoint: BalancerCheckpoint =
            serde_json::from_slice(&received).map_err(|e| BalanceError::StateMismatch {
                balancer: self.inner.name().to_string(),
                reason: format!("rank 0's state does not decode: {e}"),
            })?;
        self.restore(&checkpoint)
    }

    /// The wrapped balancer's registry name.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// The task names.
    pub fn task_names(&self) -> &[String] {
        &self.task_names
    }

    /// The current weights (one per task).
    pub fn weights(&self) -> Vec<f64> {
        self.inner.weights()
    }

    /// Steps taken so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Steps skipped because a loss was not finite.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped_steps
    }

    /// Runs one step's backward pass: checks `losses` (one finite scalar per task), lets the balancer set
    /// the gradients, and checks its weights. On any error the balancer's state is as before the call and
    /// the gradients must not be applied.
    pub fn backward(
        &mut self,
        losses: &[Tensor],
        parts: &SharedParts,
        representation: Option<&Tensor>,
    ) -> Result<StepReport> {
        let values = self.global(self.checked_values(losses, "losses")?)?;
        let step = self.step;
        if let Some(err) = self.first_non_finite(&values, step) {
            if self.policy == NonFinitePolicy::Error {
                return Err(err);
            }
            self.step += 1;
            self.skipped_steps += 1;
            let mut report = StepReport::new(values, self.inner.weights());
            report.step = step;
            report.skipped = true;
            return Ok(report);
        }
        let data_parallel = self.data_parallel.clone();
        if let Some(dp) = &data_parallel {
            let _ = dp.take_global_gradients(); // this step's marks only
        }
        let input = StepInput::new(losses, &values, parts, representation, step)
            .with_data_parallel(data_parallel.as_ref());
        let mut report = self.guarded(|inner| {
            let report = inner.backward(&input)?;
            check_weights(inner.name(), step, &report.weights, inner.num_tasks())?;
            Ok(report)
        })?;
        if let Some(dp) = &self.data_parallel {
            let mut both = report.weights.clone();
            both.extend(self.inner.weights());
            dp.check_agreement("applied and next weights", step, &both)?;
        }
        report.step = step;
        self.step += 1;
        Ok(report)
    }

    /// The global batch's mean of `values` when data-parallel, else `values`.
    fn global(&self, values: Vec<f64>) -> Result<Vec<f64>> {
        match &self.data_parallel {
            Some(dp) => dp.global_mean(&values),
            None => Ok(values),
        }
    }

    /// Ends an epoch: lets per-epoch methods (DWA) update their weights. The balancer's state is rolled
    /// back if the update fails or leaves an invalid weight.
    pub fn end_epoch(&mut self) -> Result<()> {
        self.guarded(|inner| inner.end_epoch())
    }

    /// True when the method needs the losses re-evaluated after each optimiser update (FAMO); see
    /// [`Balancer::observe_updated_losses`].
    pub fn needs_updated_losses(&self) -> bool {
        self.inner.needs_updated_losses()
    }

    /// Passes the same batch's losses, evaluated after the optimiser's update, to the method. A non-finite
    /// loss is an error under [`NonFinitePolicy::Error`]; under [`NonFinitePolicy::SkipStep`] the update is
    /// ignored (the method keeps its state). Call it only after a step that was not skipped.
    pub fn observe_updated_losses(&mut self, losses: &[Tensor]) -> Result<()> {
        let values = self.global(self.checked_values(losses, "updated losses")?)?;
        if let Some(err) = self.first_non_finite(&values, self.step.saturating_sub(1)) {
            return match self.policy {
                NonFinitePolicy::Error => Err(err),
                NonFinitePolicy::SkipStep => Ok(()),
            };
        }
        self.guarded(|inner| inner.observe_updated_losses(&values))
    }

    /// True while the method wants each step's label statistics; see [`Balancer::observe_label_stats`].
    pub fn needs_label_stats(&self) -> bool {
        self.inner.needs_label_stats()
    }

    /// Passes this step's label statistics (one per task, [`crate::prior::LabelStats`]) to the method,
    /// before [`Balancer::backward`]. Needed only while [`Balancer::needs_label_stats`] is true; the
    /// balancer's state is rolled back on error.
    pub fn observe_label_stats(&mut self, stats: &[crate::prior::LabelStats]) -> Result<()> {
        let num_tasks = self.inner.num_tasks();
        if stats.len() != num_tasks {
            return Err(BalanceError::TaskCountMismatch {
                context: "label statistics".into(),
                expected: num_tasks,
                actual: stats.len(),
            });
        }
        let global;
        let stats = match &self.data_parallel {
            Some(dp) => {
                global = dp.global_label_stats(stats)?;
                &global[..]
            }
            None => stats,
        };
        self.guarded(|inner| inner.observe_label_stats(stats))
    }

    /// Runs `update` on the inner balancer; on failure, or if its weights become invalid, restores the
    /// state it had before.
    fn guarded<T>(&mut self, update: impl FnOnce(&mut dyn LossBalancer) -> Result<T>) -> Result<T> {
        let snapshot = self.inner.state()?;
        let num_tasks = self.inner.num_tasks();
        let step = self.step;
        let outcome = update(self.inner.as_mut()).and_then(|value| {
            check_weights(self.inner.name(), step, &self.inner.weights(), num_tasks)?;
            Ok(value)
        });
        match outcome {
            Err(error) => Err(match self.inner.load_state(&snapshot) {
                Ok(()) => error,
                Err(rollback) => BalanceError::RollbackFailed {
                    error: Box::new(error),
                    rollback: Box::new(rollback),
                },
            }),
            ok => ok,
        }
    }

    /// One value per task (else [`BalanceError::TaskCountMismatch`] naming `context`), each read from a
    /// scalar loss.
    fn checked_values(&self, losses: &[Tensor], context: &str) -> Result<Vec<f64>> {
        let num_tasks = self.inner.num_tasks();
        if losses.len() != num_tasks {
            return Err(BalanceError::TaskCountMismatch {
                context: context.into(),
                expected: num_tasks,
                actual: losses.len(),
            });
        }
        self.loss_values(losses)
    }

    /// [`BalanceError::NonFiniteLoss`] for the first task whose value is NaN or infinite.
    fn first_non_finite(&self, values: &[f64], step: u64) -> Option<BalanceError> {
        values
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
            .map(|(task, &value)| BalanceError::NonFiniteLoss {
                task: self.task_names[task].clone(),
                step,
                value,
            })
    }

    fn loss_values(&self, losses: &[Tensor]) -> Result<Vec<f64>> {
        losses
            .iter()
            .zip(&self.task_names)
            .map(|(loss, name)| {
                if loss.numel() != 1 {
                    return Err(BalanceError::NonScalarLoss {
                        task: name.clone(),
                        shape: loss.size(),
                    });
                }
                loss.f_double_value(&[])
                    .context(&format!("reading the loss of task `{name}`"))
            })
            .collect()
    }

    /// Everything needed to resume exactly; serialise it with serde (JSON keeps every `f64` exact).
    pub fn checkpoint(&self) -> Result<BalancerCheckpoint> {
        Ok(BalancerCheckpoint {
            version: CHECKPOINT_VERSION,
            step: self.step,
            skipped_steps: self.skipped_steps,
            task_names: self.task_names.clone(),
            state: self.inner.state()?,
        })
    }

    /// Restores a checkpoint written by a balancer with the same config and tasks.
    pub fn restore(&mut self, checkpoint: &BalancerCheckpoint) -> Result<()> {
        let mismatch = |reason: String| BalanceError::StateMismatch {
            balancer: self.inner.name().to_string(),
            reason,
        };
        if checkpoint.version != CHECKPOINT_VERSION {
            return Err(mismatch(format!(
                "checkpoint format version {} (this build reads {CHECKPOINT_VERSION})",
                checkpoint.version
            )));
        }
        if checkpoint.task_names != self.task_names {
            return Err(mismatch(format!(
                "checkpoint tasks {:?}, balancer tasks {:?}",
                checkpoint.task_names, self.task_names
            )));
        }
        self.inner.load_state(&checkpoint.state)?;
        self.step = checkpoint.step;
        self.skipped_steps = checkpoint.skipped_steps;
        Ok(())
    }
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("name", &self.inner.name())
            .field("tasks", &self.task_names)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A balancer whose `backward` always fails and whose `load_state` fails when told to.
    struct Failing {
        restore_fails: bool,
    }

    impl LossBalancer for Failing {
        fn name(&self) -> &str {
            "failing"
        }
        fn num_tasks(&self) -> usize {
            2
        }
        fn weights(&self) -> Vec<f64> {
            vec![1.0, 1.0]
        }
        fn backward(&mut self, _input: &StepInput<'_>) -> Result<StepReport> {
            Err(BalanceError::ConfigSyntax("the original failure".into()))
        }
        fn state(&self) -> Result<BalancerState> {
            BalancerState::new("failing", 2, &())
        }
        fn load_state(&mut self, _state: &BalancerState) -> Result<()> {
            if self.restore_fails {
                Err(BalanceError::StateMismatch {
                    balancer: "failing".into(),
                    reason: "cannot restore".into(),
                })
            } else {
                Ok(())
            }
        }
    }

    fn losses() -> Vec<Tensor> {
        vec![Tensor::from(1.0f64), Tensor::from(2.0f64)]
    }

    #[test]
    fn a_failed_update_reports_its_own_error_and_a_failed_rollback_keeps_it() {
        let parts = SharedParts::new(vec![], vec![]);
        let mut ok = Balancer::new(
            Box::new(Failing {
                restore_fails: false,
            }),
            &["a", "b"],
        )
        .unwrap();
        let err = ok.backward(&losses(), &parts, None).unwrap_err();
        assert!(matches!(err, BalanceError::ConfigSyntax(_)), "{err:?}");

        let mut bad = Balancer::new(
            Box::new(Failing {
                restore_fails: true,
            }),
            &["a", "b"],
        )
        .unwrap();
        let err = bad.backward(&losses(), &parts, None).unwrap_err();
        match &err {
            BalanceError::RollbackFailed { error, rollback } => {
                assert!(matches!(**error, BalanceError::ConfigSyntax(_)), "{err:?}");
                assert!(
                    matches!(**rollback, BalanceError::StateMismatch { .. }),
                    "{err:?}"
                );
            }
            other => panic!("expected RollbackFailed, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("the original failure") && text.contains("cannot restore"),
            "{text}"
        );
    }
}
