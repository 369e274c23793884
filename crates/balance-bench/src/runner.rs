//! Runs an [`Experiment`]: every (dataset, model, seed, balancer), recording metrics, weights and timings.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use balance::{Balancer, BalancerSpec};
use balance_harness::data::{census, csv_schema, Dataset, TaskKind};
use balance_harness::models::esmm::{Esmm, EsmmConfig};
use balance_harness::models::ple::{Ple, PleConfig};
use balance_harness::models::shared_bottom::{SharedBottom, SharedBottomConfig};
use balance_harness::nn::MlpConfig;
use balance_harness::optim::AdamConfig;
use balance_harness::synthetic;
use balance_harness::train::{EpochReport, Observer, StepEvent, TrainConfig, Trainer};
use balance_harness::{Mmoe, MmoeConfig, MultiTaskModel};
use tch::{nn, Device, Tensor};

use crate::distributed::Ranks;
use crate::experiment::{parse_device, DatasetKind, Experiment, ModelKind};
use crate::label::Labeled;
use crate::report::{DataSummary, MemoryResult, Report, RunResult, SeriesMeans, TaskSummary};
use crate::store::RunStore;

/// Steps between two recorded points of the weight and loss trajectories.
const TRAJECTORY_EVERY: u64 = 4;

/// Training steps per chunk: the runner checks for an interruption between chunks.
pub const CHUNK_STEPS: u64 = 50;

/// The size of an experiment, announced once before its first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Runs of the whole experiment.
    pub runs: u64,
    /// Runs found in the run store (done before this process began).
    pub stored_runs: u64,
    /// Training steps of the whole experiment (sum over runs of epochs × steps per epoch).
    pub steps: u64,
    /// Training steps of the stored runs.
    pub stored_steps: u64,
}

/// Where training is: one step of one run.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    /// Dataset name.
    pub dataset: &'a str,
    /// Model name.
    pub model: &'a str,
    /// The balancer's label.
    pub label: &'a str,
    /// The seed.
    pub seed: u64,
    /// The run's place in the experiment, from 1.
    pub run: u64,
    /// Runs of the experiment.
    pub runs: u64,
    /// The epoch, from 1.
    pub epoch: usize,
    /// Epochs per run.
    pub epochs: usize,
    /// The step within the epoch, from 1.
    pub step: u64,
    /// Steps per epoch.
    pub steps_per_epoch: u64,
}

/// Told how training advances (for progress display).
pub trait Progress {
    /// Announces the experiment's size, before the first step.
    fn start(&mut self, plan: &Plan);
    /// One training step finished.
    fn step(&mut self, at: &At<'_>);
    /// A run finished (and was stored, with `--out`) after `seconds`; `at` is its last step.
    fn finished(&mut self, at: &At<'_>, seconds: f64);
}

/// Steps per epoch of a training set of `rows` examples in batches of `batch_size`: the last, smaller
/// batch is a step too (as in `Trainer::run_steps`).
pub fn steps_per_epoch(rows: i64, batch_size: i64) -> u64 {
    if rows <= 0 || batch_size <= 0 {
        return 0;
    }
    (rows as u64).div_ceil(batch_size as u64)
}

/// How [`run`] ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every run finished.
    Finished(Report),
    /// A signal stopped it: the report of the runs that had finished (none: no report), how many of how
    /// many. The unfinished run was discarded.
    Interrupted {
        /// The report of the finished runs (stored ones included), if any.
        partial: Option<Report>,
        /// Runs finished.
        finished: usize,
        /// Runs of the experiment.
        total: usize,
    },
}

/// Where Census-Income is cached: `$BALANCE_CACHE_DIR/census`, else `$XDG_CACHE_HOME/balance/census`,
/// else `~/.cache/balance/census` (the Makefile sets `BALANCE_CACHE_DIR` to the workspace's `.cache`).
pub fn census_cache_dir() -> Result<std::path::PathBuf> {
    Ok(census::default_cache_dir()?)
}

/// Builds the dataset pair (train, eval). Synthetic: `rows` training and `holdout_rows` held-out examples
/// from one teacher. Census-Income: its train and test files. CSV: the schema's split.
pub fn load_dataset(kind: DatasetKind, experiment: &Experiment) -> Result<(Dataset, Dataset)> {
    let (rows, holdout) = (experiment.rows, experiment.holdout_rows);
    match kind {
        DatasetKind::Cascade => Ok(synthetic::cascade_scenario_split(rows, holdout, 11)),
        DatasetKind::Esmm => Ok(synthetic::esmm_scenario_split(rows, holdout, 11)),
        DatasetKind::MmoeSynthetic => Ok(synthetic::mmoe_synthetic_split(rows, holdout, 0.5, 11)?),
        DatasetKind::Csv => {
            let source = experiment
                .csv
                .as_ref()
                .context("the `csv` dataset needs --csv and --schema")?;
            let schema = csv_schema::Schema::from_file(&source.schema)?;
            Ok(csv_schema::load(&source.data, &schema)?)
        }
        DatasetKind::Census => {
            let (train, test) = crate::census_fetch::ensure(&census_cache_dir()?)
                .context("fetching Census-Income")?;
            census::load(&train, &test, &experiment.census_tasks).context("loading Census-Income")
        }
    }
}

/// The first `n` tasks of a dataset (ESMM trains on the first two stages of a cascade).
fn first_tasks(data: &Dataset, n: usize) -> Result<Dataset> {
    Ok(Dataset {
        examples: balance_harness::Batch {
            labels: data
                .examples
                .labels
                .f_narrow(1, 0, n as i64)
                .with_context(|| format!("the labels of the first {n} tasks"))?,
            ..data.examples.map(Tensor::shallow_clone)
        },
        input: data.input.clone(),
        tasks: data.tasks[..n].to_vec(),
    })
}

fn build_model(
    kind: ModelKind,
    vs: &nn::VarStore,
    data: &Dataset,
) -> Result<Box<dyn MultiTaskModel>> {
    let input = &data.input;
    let tasks = data.tasks.len();
    Ok(match kind {
        ModelKind::Mmoe => Box::new(Mmoe::new(vs, input, &MmoeConfig::bench(), tasks)?),
        ModelKind::Esmm => Box::new(Esmm::new(
            vs,
            input,
            &EsmmConfig {
                tower: MlpConfig::relu(&[64, 32]),
            },
        )?),
        ModelKind::SharedBottom => Box::new(SharedBottom::new(
            vs,
            input,
            &SharedBottomConfig {
                bottom: MlpConfig::relu(&[128, 32]),
                tower: MlpConfig::relu(&[16]),
            },
            tasks,
        )?),
        ModelKind::Ple => Box::new(Ple::new(
            vs,
            input,
            &PleConfig {
                levels: 2,
                shared_experts: 2,
                task_experts: 1,
                expert: MlpConfig::relu(&[64, 32]),
                tower: MlpConfig::relu(&[16]),
            },
            tasks,
        )?),
    })
}

/// Records step times and trajectories.
#[derive(Default)]
struct Recorder {
    step_seconds: Vec<f64>,
    trajectory_steps: Vec<u64>,
    weights: Vec<Vec<f64>>,
    losses: Vec<Vec<f64>>,
    epochs: Vec<EpochReport>,
    /// The weights applied since the epoch began.
    epoch_weights: SeriesMeans,
    /// Mean weights applied over the last finished epoch.
    last_epoch_weights: Vec<f64>,
    /// The method's step extras, averaged over all steps.
    extras: SeriesMeans,
}

impl Observer for Recorder {
    fn on_step(&mut self, event: &StepEvent<'_>) {
        self.step_seconds.push(event.seconds);
        self.epoch_weights
            .add_series("weights", &event.report.weights);
        self.extras.add(&event.report.extras);
        if event.global_step % TRAJECTORY_EVERY == 0 {
            self.trajectory_steps.push(event.global_step);
            self.weights.push(event.report.weights.clone());
            self.losses.push(event.report.losses.clone());
        }
    }

    fn on_epoch(&mut self, report: &EpochReport) {
        self.epochs.push(report.clone());
        let finished = std::mem::take(&mut self.epoch_weights);
        if let Some(mean) = finished.means().remove("weights") {
            self.last_epoch_weights = mean;
        }
    }
}

/// Forwards each step to the recorder and to the progress display.
struct Tee<'a, 'b> {
    recorder: Recorder,
    progress: &'a mut dyn Progress,
    at: At<'b>,
}

impl Observer for Tee<'_, '_> {
    fn on_step(&mut self, event: &StepEvent<'_>) {
        self.recorder.on_step(event);
        let epoch_start = event.epoch as u64 * self.at.steps_per_epoch;
        self.at.epoch = event.epoch + 1;
        self.at.step = event.global_step.saturating_sub(epoch_start) + 1;
        self.progress.step(&self.at);
    }

    fn on_epoch(&mut self, report: &EpochReport) {
        self.recorder.on_epoch(report);
    }
}

struct Boxed(Box<dyn MultiTaskModel>);

impl MultiTaskModel for Boxed {
    fn num_tasks(&self) -> usize {
        self.0.num_tasks()
    }
    fn forward_t(
        &self,
        batch: &balance_harness::Batch,
        train: bool,
    ) -> balance_harness::Result<balance_harness::ModelOutput> {
        self.0.forward_t(batch, train)
    }
    fn shared_parts(&self) -> balance::SharedParts {
        self.0.shared_parts()
    }
}

/// Resident-set figures of this process, in MiB (Linux; `None` elsewhere).
fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// A trainer for one (model, balancer, seed) on `train`.
fn build_trainer(
    experiment: &Experiment,
    device: Device,
    model_kind: ModelKind,
    train: &Dataset,
    spec: &BalancerSpec,
    seed: u64,
    ranks: &Ranks,
) -> Result<Trainer<Boxed>> {
    tch::manual_seed(seed as i64);
    let vs = nn::VarStore::new(device);
    let model = build_model(model_kind, &vs, train)?;
    let names: Vec<&str> = train.tasks.iter().map(|t| t.name.as_str()).collect();
    let balancer = Balancer::from_spec(spec, &names)
        .with_context(|| format!("building balancer {spec} for {} tasks", names.len()))?;
    let config = TrainConfig {
        epochs: experiment.epochs,
        batch_size: experiment.batch_size,
        seed,
        adam: AdamConfig {
            lr: experiment.lr,
            max_grad_norm: experiment.max_grad_norm,
            ..AdamConfig::default()
        },
        ..TrainConfig::default()
    };
    let trainer = Trainer::new(
        Boxed(model),
        vs.trainable_variables(),
        balancer,
        train.tasks.clone(),
        config,
        device,
    )?;
    Ok(match ranks.collective() {
        Some(group) => trainer.data_parallel(group)?,
        None => trainer,
    })
}

/// What a memory probe child process is told to run.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct MemoryProbe {
    /// The experiment (its settings and data source).
    pub experiment: Experiment,
    /// The dataset.
    pub dataset: DatasetKind,
    /// The model.
    pub model: ModelKind,
    /// The balancer.
    pub balancer: BalancerSpec,
}

/// Steps a memory probe trains for (the peak is reached within the first steps).
const PROBE_STEPS: u64 = 20;

/// Child side of the memory measurement: builds the run (data loading may peak higher than training, so
/// the resident-set high-water mark is then reset with Linux `clear_refs`), and reports its growth over the
/// first `PROBE_STEPS` training steps, in MiB: activations, gradients, optimizer and balancer state.
pub fn probe_memory(probe: &MemoryProbe) -> Result<f64> {
    let e = &probe.experiment;
    tch::set_num_threads(e.threads);
    let device = parse_device(&e.device)?;
    let (train, eval) = model_data(probe.model, load_dataset(probe.dataset, e)?)?;
    let mut trainer = build_trainer(
        e,
        device,
        probe.model,
        &train,
        &probe.balancer,
        0,
        &Ranks::single(),
    )?;
    let mut quiet = balance_harness::train::NoObserver;
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the peak resident set")?;
    let before = status_mib("VmRSS:").context("reading /proc/self/status")?;
    trainer.run_steps(&train, &eval, &mut quiet, PROBE_STEPS)?;
    let peak = status_mib("VmHWM:").context("reading /proc/self/status")?;
    Ok(peak - before)
}

/// Runs a probe in a child process of this executable (`__probe-memory`); `None` where that fails.
fn measure_memory(probe: &MemoryProbe) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe)
        .arg(crate::PROBE_COMMAND)
        .arg(serde_json::to_string(probe).ok()?)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Runs one (dataset, model, seed, balancer) in chunks of [`CHUNK_STEPS`], checking `interrupt` before
/// each; `None` when it was set (the unfinished run is dropped).
#[allow(clippy::too_many_arguments)]
fn run_one(
    experiment: &Experiment,
    device: Device,
    model_kind: ModelKind,
    (train, eval): (&Dataset, &Dataset),
    balancer: &Labeled,
    at: At<'_>,
    progress: &mut dyn Progress,
    interrupt: &AtomicBool,
    ranks: &Ranks,
) -> Result<Option<RunResult>> {
    let spec = &balancer.spec;
    let mut trainer = build_trainer(experiment, device, model_kind, train, spec, at.seed, ranks)?;
    let mut tee = Tee {
        recorder: Recorder::default(),
        progress,
        at,
    };
    let start = Instant::now();
    while !trainer.finished() {
        // Agreed by all ranks, so that they stop at the same chunk.
        if ranks.any(interrupt.load(Ordering::SeqCst))? {
            return Ok(None);
        }
        trainer.run_steps(train, eval, &mut tee, CHUNK_STEPS)?;
    }
    let train_seconds = start.elapsed().as_secs_f64();
    let Tee {
        recorder,
        progress,
        at,
    } = tee;
    progress.finished(&at, train_seconds);
    let final_epoch = recorder
        .epochs
        .last()
        .cloned()
        .context("the run finished no epoch")?;
    let extras_mean = recorder.extras.means();
    Ok(Some(RunResult {
        extras_mean,
        dataset: at.dataset.into(),
        model: at.model.into(),
        balancer: spec.to_string(),
        label: balancer.label.clone(),
        method: spec.method().into(),
        seed: at.seed,
        tasks: train.tasks.iter().map(|t| t.name.clone()).collect(),
        metrics: final_epoch.metrics,
        initial_weights: recorder.weights.first().cloned().unwrap_or_default(),
        final_weights: recorder.last_epoch_weights.clone(),
        median_step_ms: crate::stats::median(&recorder.step_seconds).unwrap_or(f64::NAN) * 1e3,
        train_seconds,
        trajectory_steps: recorder.trajectory_steps,
        weight_trajectory: recorder.weights,
        loss_trajectory: recorder.losses,
    }))
}

/// The tasks a model trains on: ESMM takes the first two (binary) tasks, other models all of them.
fn model_data(model: ModelKind, (train, eval): (Dataset, Dataset)) -> Result<(Dataset, Dataset)> {
    if model != ModelKind::Esmm {
        return Ok((train, eval));
    }
    if train.tasks.len() < 2
        || train
            .tasks
            .iter()
            .take(2)
            .any(|t| t.kind != TaskKind::Binary)
    {
        bail!(
            "model `esmm` needs two binary tasks; the dataset has {:?}",
            train.tasks
        );
    }
    Ok((first_tasks(&train, 2)?, first_tasks(&eval, 2)?))
}

/// Summarises the data of one (dataset, model): rows, tasks, positive rates.
pub fn summarise(
    dataset: DatasetKind,
    model: ModelKind,
    train: &Dataset,
    eval: &Dataset,
) -> Result<DataSummary> {
    let column_sums = |data: &Dataset| -> Result<Vec<f64>> {
        let sums = data
            .examples
            .labels
            .f_to_kind(tch::Kind::Double)?
            .f_sum_dim_intlist(0, false, tch::Kind::Double)?;
        Ok(Vec::<f64>::try_from(&sums)?)
    };
    let rows = |data: &Dataset| data.examples.labels.size().first().copied().unwrap_or(0) as u64;
    let (train_rows, eval_rows) = (rows(train), rows(eval));
    let (train_sums, eval_sums) = (column_sums(train)?, column_sums(eval)?);
    let tasks = train
        .tasks
        .iter()
        .enumerate()
        .map(|(t, task)| {
            let binary = task.kind == TaskKind::Binary;
            let rate = |sum: f64, n: u64| (binary && n > 0).then(|| sum / n as f64);
            TaskSummary {
                name: task.name.clone(),
                kind: if binary { "binary" } else { "regression" }.into(),
                train_positive_rate: rate(train_sums[t], train_rows),
                eval_positives: binary.then(|| eval_sums[t].round() as u64),
                eval_positive_rate: rate(eval_sums[t], eval_rows),
            }
        })
        .collect();
    Ok(DataSummary {
        dataset: dataset.name().into(),
        model: model.name().into(),
        train_rows,
        eval_rows,
        tasks,
    })
}

/// One planned run, in report order.
struct Planned {
    /// Index into the loaded datasets.
    data: usize,
    model: ModelKind,
    /// Index into the balancers.
    balancer: usize,
    seed: u64,
    /// Training steps of the run.
    steps: u64,
}

/// Runs the whole experiment: every run in this process (so step-time ratios share one process), then
/// one memory probe per (dataset, model, balancer) in a child process each.
///
/// With a `store`, runs and probes found there are reused (not retrained) and new ones are stored as
/// they finish; the report is the same as that of one uninterrupted run. `interrupt` is read between
/// training chunks, runs and probes: once set, the run in progress is dropped and the outcome is
/// [`Outcome::Interrupted`].
///
/// Data-parallel (`ranks` of more than one): every rank calls it with the same experiment (checked: a
/// rank with other settings is an error on all); rank 0 alone
/// has the `store` (which runs are stored is broadcast from it), memory is not probed (a per-process
/// figure), and rank 0's report is the whole experiment's (the other ranks' lack the stored runs).
pub fn run(
    experiment: &Experiment,
    store: Option<&RunStore>,
    progress: &mut dyn Progress,
    interrupt: &AtomicBool,
    ranks: &Ranks,
) -> Result<Outcome> {
    experiment.check()?;
    if experiment.ranks != ranks.world() {
        bail!(
            "invalid experiment: field `ranks` = {}, expected the world size {} of `ranks` (Experiment::set_ranks)",
            experiment.ranks,
            ranks.world()
        );
    }
    ranks.check_same_experiment(experiment)?;
    tch::set_num_threads(ranks.threads(experiment.threads));
    let device = match parse_device(&experiment.device)? {
        Device::Cuda(_) if ranks.world() > 1 => {
            let gpus = tch::Cuda::device_count();
            let local = ranks.local_rank();
            if i64::try_from(local).map_or(true, |l| l >= gpus) {
                bail!(
                    "rank {} (local rank {local}) would train on cuda:{local}, but libtorch sees {gpus} GPU(s) on this machine: start at most {gpus} ranks per machine, or use --device cpu",
                    ranks.rank()
                );
            }
            Device::Cuda(local)
        }
        device => device,
    };
    let balancers = experiment.resolved_balancers()?;
    let stopped = || interrupt.load(Ordering::SeqCst);
    if ranks.world() > 1 && experiment.datasets.contains(&DatasetKind::Census) {
        // Rank 0 fetches Census-Income once; the other ranks of its machine then find it cached.
        let fetched = if ranks.is_root() {
            crate::census_fetch::ensure(&census_cache_dir()?).map(|_| ())
        } else {
            Ok(())
        };
        if ranks.any(fetched.is_err())? {
            fetched.context("fetching Census-Income on rank 0")?;
            bail!("rank 0 could not fetch Census-Income (its error is on rank 0's stderr)");
        }
    }
    let mut loaded = Vec::new();
    for &dataset in &experiment.datasets {
        if ranks.any(stopped())? {
            return Ok(Outcome::Interrupted {
                partial: None,
                finished: 0,
                total: experiment.datasets.len()
                    * experiment.models.len()
                    * experiment.seeds
                    * balancers.len(),
            });
        }
        loaded.push((dataset, load_dataset(dataset, experiment)?));
    }
    let mut plan = Vec::new();
    for (d, (_, (train, _))) in loaded.iter().enumerate() {
        let steps = experiment.epochs as u64 * steps_per_epoch(train.len(), experiment.batch_size);
        for &model in &experiment.models {
            for seed in 0..experiment.seeds as u64 {
                for balancer in 0..balancers.len() {
                    plan.push(Planned {
                        data: d,
                        model,
                        balancer,
                        seed,
                        steps,
                    });
                }
            }
        }
    }
    let mut results: Vec<Option<RunResult>> = Vec::with_capacity(plan.len());
    for p in &plan {
        let dataset = loaded[p.data].0.name();
        results.push(match store {
            Some(store) => {
                store.load_run(dataset, p.model.name(), &balancers[p.balancer], p.seed)?
            }
            None => None,
        });
    }
    let stored = ranks.from_root(&results.iter().map(Option::is_some).collect::<Vec<_>>())?;
    let stored_steps = plan
        .iter()
        .zip(&stored)
        .filter(|(_, s)| **s)
        .map(|(p, _)| p.steps)
        .sum();
    progress.start(&Plan {
        runs: plan.len() as u64,
        stored_runs: stored.iter().filter(|s| **s).count() as u64,
        steps: plan.iter().map(|p| p.steps).sum(),
        stored_steps,
    });

    let mut memory: Vec<MemoryResult> = Vec::new();
    let mut data = Vec::new();
    let mut interrupted = false;
    let mut next = 0;
    'groups: for (dataset, (all_train, all_eval)) in &loaded {
        let dataset = *dataset;
        for &model in &experiment.models {
            let (train, eval) = model_data(
                model,
                (
                    first_tasks(all_train, all_train.tasks.len())?,
                    first_tasks(all_eval, all_eval.tasks.len())?,
                ),
            )
            .with_context(|| format!("dataset `{}`", dataset.name()))?;
            data.push(summarise(dataset, model, &train, &eval)?);
            let group_end = next + experiment.seeds * balancers.len();
            while next < group_end {
                let (p, index) = (&plan[next], next);
                next += 1;
                if stored[index] {
                    continue;
                }
                if ranks.any(stopped())? {
                    interrupted = true;
                    break 'groups;
                }
                let spec = &balancers[p.balancer];
                let at = At {
                    dataset: dataset.name(),
                    model: model.name(),
                    label: &spec.label,
                    seed: p.seed,
                    run: next as u64,
                    runs: plan.len() as u64,
                    epoch: 1,
                    epochs: experiment.epochs,
                    step: 0,
                    steps_per_epoch: steps_per_epoch(train.len(), experiment.batch_size),
                };
                let result = run_one(
                    experiment,
                    device,
                    model,
                    (&train, &eval),
                    spec,
                    at,
                    progress,
                    interrupt,
                    ranks,
                )
                .with_context(|| {
                    format!(
                        "{} / {} / {} / seed {}",
                        dataset.name(),
                        model.name(),
                        spec.label,
                        p.seed
                    )
                })?;
                let Some(result) = result else {
                    interrupted = true;
                    break 'groups;
                };
                if let Some(store) = store {
                    store.save_run(&result)?;
                }
                results[index] = Some(result);
            }
            for spec in &balancers {
                let (d, m) = (dataset.name(), model.name());
                if ranks.world() > 1 {
                    // Peak memory is a per-process figure of a one-process run: not probed here.
                    memory.push((d.to_string(), m.to_string(), spec.label.clone(), None));
                    continue;
                }
                let stored = match store {
                    Some(store) => store.load_memory(d, m, spec)?,
                    None => None,
                };
                let peak = match stored {
                    Some(peak) => Some(peak),
                    None => {
                        if stopped() {
                            interrupted = true;
                            break 'groups;
                        }
                        let measured = measure_memory(&MemoryProbe {
                            experiment: experiment.clone(),
                            dataset,
                            model,
                            balancer: spec.spec.clone(),
                        });
                        if stopped() {
                            // The signal may have reached the probe child too: its figure is not kept.
                            interrupted = true;
                            break 'groups;
                        }
                        if let (Some(store), Some(peak)) = (store, measured) {
                            store.save_memory(d, m, spec, peak)?;
                        }
                        measured
                    }
                };
                memory.push((d.to_string(), m.to_string(), spec.label.clone(), peak));
            }
        }
    }
    let total = results.len();
    let runs: Vec<RunResult> = results.into_iter().flatten().collect();
    let finished = runs.len();
    let report = (!runs.is_empty()).then(|| {
        Report::new(
            experiment.clone(),
            device_name(device, ranks),
            &balancers,
            data,
            runs,
            &memory,
        )
    });
    Ok(match report {
        Some(report) if !interrupted => Outcome::Finished(report),
        partial => Outcome::Interrupted {
            partial,
            finished,
            total,
        },
    })
}

/// Where the runs trained, for the report: the device, and for a launched group its size and the backend
/// that carried the tensors (`x 2 data-parallel ranks over gloo`).
fn device_name(device: Device, ranks: &Ranks) -> String {
    let world = ranks.world();
    let one = match device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(n) if world > 1 => format!("cuda (rank 0 on cuda:{n})"),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}"),
    };
    let Some(backend) = ranks.backend(device) else {
        return one;
    };
    let plural = if world == 1 { "rank" } else { "ranks" };
    format!("{one} x {world} data-parallel {plural} over {backend}")
}
