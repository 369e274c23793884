//! The comparison report: raw runs, and what is computed from them: the data actually used, quality per
//! task and metric against the `static` baseline (paired by seed, raw and Holm-adjusted), how small a
//! difference the run can resolve, a verdict per (dataset, model), cost and weight summaries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use balance_harness::train::TaskMetrics;

use crate::experiment::Experiment;
use crate::label::Labeled;
use crate::stats::{holm, interval, median, paired_by_seed, Interval, Paired};

/// One (dataset, model, balancer, seed) run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Dataset name.
    pub dataset: String,
    /// Model name.
    pub model: String,
    /// The balancer's full config (canonical JSON map form).
    pub balancer: String,
    /// The configuration's label in its run (see [`crate::label`]).
    #[serde(default)]
    pub label: String,
    /// The balancer's registry name.
    pub method: String,
    /// The seed.
    pub seed: u64,
    /// Task names.
    pub tasks: Vec<String>,
    /// Validation metrics after the last epoch.
    pub metrics: Vec<TaskMetrics>,
    /// Weights applied at the first step.
    #[serde(deserialize_with = "nan_as_null::vec")]
    pub initial_weights: Vec<f64>,
    /// Mean of the weights applied over the last epoch (for RLW: about 1 each by construction).
    #[serde(deserialize_with = "nan_as_null::vec")]
    pub final_weights: Vec<f64>,
    /// Median wall time of a training step, in milliseconds.
    #[serde(deserialize_with = "nan_as_null::number")]
    pub median_step_ms: f64,
    /// Wall time of the whole run (training and evaluation), in seconds.
    #[serde(deserialize_with = "nan_as_null::number")]
    pub train_seconds: f64,
    /// Steps at which the trajectories were recorded.
    pub trajectory_steps: Vec<u64>,
    /// Applied weights at those steps.
    #[serde(deserialize_with = "nan_as_null::rows")]
    pub weight_trajectory: Vec<Vec<f64>>,
    /// Loss values at those steps.
    #[serde(deserialize_with = "nan_as_null::rows")]
    pub loss_trajectory: Vec<Vec<f64>>,
    /// Each method-specific series of the step reports (`StepReport::extras`, e.g. a gradient method's
    /// `cos` or `clamped`), averaged element-wise over every step of the run.
    #[serde(default, deserialize_with = "nan_as_null::named")]
    pub extras_mean: BTreeMap<String, Vec<f64>>,
}

/// JSON has no NaN: `serde_json` writes a non-finite number as `null`. These read such a `null` back as
/// NaN, so a stored run whose step time or an extra was undefined still restores.
mod nan_as_null {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer};

    fn value(v: Option<f64>) -> f64 {
        v.unwrap_or(f64::NAN)
    }

    pub fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(value(Option::deserialize(d)?))
    }

    pub fn vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let v: Vec<Option<f64>> = Deserialize::deserialize(d)?;
        Ok(v.into_iter().map(value).collect())
    }

    pub fn rows<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f64>>, D::Error> {
        let v: Vec<Vec<Option<f64>>> = Deserialize::deserialize(d)?;
        Ok(v.into_iter()
            .map(|row| row.into_iter().map(value).collect())
            .collect())
    }

    pub fn named<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<f64>>, D::Error> {
        let v: BTreeMap<String, Vec<Option<f64>>> = Deserialize::deserialize(d)?;
        Ok(v.into_iter()
            .map(|(k, row)| (k, row.into_iter().map(value).collect()))
            .collect())
    }
}

/// The held-out half-width of a rare task's AUC difference the bench aims at (issue 13: a user can tell a
/// 0.005 AUC change from noise); a run whose resolution is wider says so.
pub const AUC_RESOLUTION_TARGET: f64 = 0.005;

/// One task of a dataset as the runs saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// Task name.
    pub name: String,
    /// `binary` or `regression`.
    pub kind: String,
    /// Positive rate of the training split (binary tasks).
    pub train_positive_rate: Option<f64>,
    /// Positive labels in the held-out split (binary tasks).
    pub eval_positives: Option<u64>,
    /// Positive rate of the held-out split (binary tasks).
    pub eval_positive_rate: Option<f64>,
}

/// The data one (dataset, model) pair trained and was evaluated on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    /// Dataset name.
    pub dataset: String,
    /// Model name.
    pub model: String,
    /// Training rows.
    pub train_rows: u64,
    /// Held-out rows (every metric is computed on them).
    pub eval_rows: u64,
    /// The tasks, in model order.
    pub tasks: Vec<TaskSummary>,
}

/// A metric the report reads from [`TaskMetrics`].
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Its name in every export.
    pub name: &'static str,
    /// True when larger values are better.
    pub higher_is_better: bool,
    /// Reads it (`None`: undefined for that run, e.g. AUC without a positive).
    pub read: fn(&TaskMetrics) -> Option<f64>,
}

/// Binary tasks' metrics, the primary one (AUC, the verdict's) first.
pub const BINARY_METRICS: [Metric; 4] = [
    Metric {
        name: "auc",
        higher_is_better: true,
        read: |m| m.auc,
    },
    Metric {
        name: "average_precision",
        higher_is_better: true,
        read: |m| m.average_precision,
    },
    Metric {
        name: "normalized_entropy",
        higher_is_better: false,
        read: |m| m.normalized_entropy,
    },
    Metric {
        name: "log_loss",
        higher_is_better: false,
        read: |m| m.log_loss,
    },
];

/// Regression tasks' metric.
pub const REGRESSION_METRICS: [Metric; 1] = [Metric {
    name: "mse",
    higher_is_better: false,
    read: |m| m.mse,
}];

/// The metrics of a task, primary first: regression when the run reports an MSE.
pub fn metrics_of(sample: &TaskMetrics) -> &'static [Metric] {
    if sample.mse.is_some() {
        &REGRESSION_METRICS
    } else {
        &BINARY_METRICS
    }
}

/// One task's quality on one metric under one balancer, across seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityRow {
    /// Dataset name.
    pub dataset: String,
    /// Model name.
    pub model: String,
    /// Balancer label.
    pub balancer: String,
    /// Task name.
    pub task: String,
    /// `auc`, `average_precision`, `normalized_entropy`, `log_loss` (binary tasks) or `mse`.
    pub metric: String,
    /// True when larger is better (AUC, average precision).
    pub higher_is_better: bool,
    /// Mean and 95 % interval across the seeds where the metric is defined (`None`: undefined in every
    /// seed, e.g. no held-out positive).
    pub value: Option<Interval>,
    /// Difference to the baseline paired by seed id, with its p-value (absent for the baseline).
    pub vs_static: Option<Paired>,
    /// `vs_static`'s p-value after Holm's adjustment over its family (see [`TestFamily`]).
    pub p_holm: Option<f64>,
    /// True when `vs_static`'s 95 % interval excludes zero (one test on its own).
    pub significant: bool,
    /// True when the Holm-adjusted p-value is below 0.05 (family-wise error rate 5 %).
    pub significant_holm: bool,
}

impl QualityRow {
    /// True when the difference to the baseline is an improvement in this metric's direction.
    pub fn improves(&self) -> bool {
        self.vs_static
            .is_some_and(|d| (d.diff.mean > 0.0) == self.higher_is_better && d.diff.mean != 0.0)
    }
}

/// One family of tests for Holm's adjustment: every (balancer, task) difference to the baseline on one
/// metric of one (dataset, model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestFamily {
    /// Dataset name.
    pub dataset: String,
    /// Model name.
    pub model: String,
    /// Metric name.
    pub metric: String,
    /// Number of tests in the family.
    pub tests: usize,
}

/// How small a difference one (dataset, model, task) can resolve on its primary metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolutionRow {
    /// Dataset name.
    pub dataset: String,
    /// Model name.
    pub model: String,
    /// Task name.
    pub task: String,
    /// The primary metric (`auc` or `mse`).
    pub metric: String,
    /// Held-out examples.
    pub eval_rows: u64,
    /// Held-out positives (binary tasks).
    pub eval_positives: Option<u64>,
    /// Seeds per configuration.
    pub seeds: usize,
    /// Median over the balancers of the paired 95 % half-width against the baseline: differences
    /// smaller than this are typically inside the noise (`None` with fewer than two seeds).
    pub resolvable: Option<f64>,
    /// Why the run may be too small to answer for this task (`None`: it is not).
    pub warning: Option<String>,
}

/// What a balancer does against the baseline on one (dataset, model), judged on the primary metric of
/// every task with Holm-adjusted significance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Improves at least one task beyond noise and hurts none (Pareto against the baseline).
    Improves,
    /// Hurts at least one task beyond noise and improves none.
    Hurts,
    /// Improves some tasks and hurts others beyond noise.
    TradeOff,
    /// No task moves beyond noise.
    NoResolvedDifference,
}

impl Verdict {
    /// The wording of the exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Improves => "improves",
            Verdict::Hurts => "hurts",
            Verdict::TradeOff => "trade-off",
            Verdict::NoResolvedDifference => "no resolved difference",
        }
    }
}

/// One balancer's verdict on one (dataset, model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictRow {
    /// Dataset name.
    pub dataset: String,
    /// Model name.
    pub model: String,
    /// Balancer label.
    pub balancer: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Tasks improved beyond noise (Holm), with the metric: `high_value auc +0.0123`.
    pub improved: Vec<String>,
    /// Tasks hurt beyond noise (Holm).
    pub hurt: Vec<String>,
}

/// A configuration of the run: its label, method and full config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalancerEntry {
    /// The label every table uses.
    pub label: String,
    /// The registry name.
    pub method: String,
    /// The full config (canonical map form, defaults filled in).
    pub config: serde_json::Value,
}

/// What one balancer costs per step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostRow {
    /// Dataset name.
    pub dataset: String,
    /// Model name.
    pub model: String,
    /// Balancer label.
    pub balancer: String,
    /// Median over seeds of each run's median step time, in milliseconds.
    pub step_ms: f64,
    /// `step_ms` over the static baseline's, measured in the same process.
    pub ratio_vs_static: f64,
    /// Growth of the resident-set high-water mark over the first training steps, measured alone in a
    /// child process (seed 0), in MiB; `None` where it could not be measured.
    pub peak_mib: Option<f64>,
    /// `peak_mib` over the static baseline's.
    pub memory_ratio_vs_static: Option<f64>,
}

/// Where one balancer's weights started and ended (means over seeds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightRow {
    /// Dataset name.
    pub dataset: String,
    /// Model name.
    pub model: String,
    /// Balancer label.
    pub balancer: String,
    /// Task names.
    pub tasks: Vec<String>,
    /// Mean first-step weights.
    pub initial: Vec<f64>,
    /// Mean (over seeds) of the weights applied over the last epoch.
    pub last: Vec<f64>,
    /// The method's own measurements (`StepReport::extras`), each averaged over steps and seeds.
    #[serde(default)]
    pub extras: BTreeMap<String, Vec<f64>>,
}

/// The report format version (2: labels, data summaries, several metrics, Holm, resolution, verdicts).
pub const REPORT_VERSION: u32 = 2;

/// The whole report (the JSON export is this struct; schema in `docs/bench-report.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Report format version ([`REPORT_VERSION`]).
    pub version: u32,
    /// The experiment that produced it.
    pub experiment: Experiment,
    /// Where it ran.
    pub device: String,
    /// The baseline's label (the first `static` config).
    pub baseline: Option<String>,
    /// Every configuration, in run order.
    pub balancers: Vec<BalancerEntry>,
    /// The data each (dataset, model) used.
    pub data: Vec<DataSummary>,
    /// Per-task quality, one row per metric.
    pub quality: Vec<QualityRow>,
    /// The families of Holm's adjustment and their sizes.
    pub test_families: Vec<TestFamily>,
    /// The smallest resolvable difference per task.
    pub resolution: Vec<ResolutionRow>,
    /// What each balancer does, per (dataset, model).
    pub verdicts: Vec<VerdictRow>,
    /// Per-step cost.
    pub cost: Vec<CostRow>,
    /// Weight movement.
    pub weights: Vec<WeightRow>,
    /// Every run.
    pub runs: Vec<RunResult>,
}

/// Element-wise means of named series (a method's step extras), each over the samples that had the
/// length of its first sample.
#[derive(Debug, Default)]
pub(crate) struct SeriesMeans {
    sums: BTreeMap<String, (Vec<f64>, usize)>,
}

impl SeriesMeans {
    /// Adds one sample of every series in `series`.
    pub(crate) fn add(&mut self, series: &BTreeMap<String, Vec<f64>>) {
        for (name, values) in series {
            self.add_series(name, values);
        }
    }

    /// Adds one sample of the series `name`.
    pub(crate) fn add_series(&mut self, name: &str, values: &[f64]) {
        let (sum, n) = self
            .sums
            .entry(name.to_string())
            .or_insert_with(|| (vec![0.0; values.len()], 0));
        if sum.len() == values.len() {
            sum.iter_mut().zip(values).for_each(|(s, v)| *s += v);
            *n += 1;
        }
    }

    /// The means.
    pub(crate) fn means(&self) -> BTreeMap<String, Vec<f64>> {
        self.sums
            .iter()
            .map(|(name, (sum, n))| (name.clone(), sum.iter().map(|s| s / *n as f64).collect()))
            .collect()
    }
}

/// The distinct `items` in the order they first appear.
pub(crate) fn first_seen<T: PartialEq>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// One memory probe's result: `(dataset, model, balancer label, peak MiB)`.
pub type MemoryResult = (String, String, String, Option<f64>);

/// The runs of one (dataset, model), by balancer label.
struct Group<'a> {
    dataset: &'a str,
    model: &'a str,
    runs: Vec<&'a RunResult>,
}

impl<'a> Group<'a> {
    fn of(&self, label: &str) -> Vec<&'a RunResult> {
        let mut v: Vec<&RunResult> = self
            .runs
            .iter()
            .copied()
            .filter(|r| r.label == label)
            .collect();
        v.sort_by_key(|r| r.seed);
        v
    }
}

/// A metric of task `t` by seed, over the runs where it is defined.
fn by_seed(runs: &[&RunResult], t: usize, metric: &Metric) -> BTreeMap<u64, f64> {
    runs.iter()
        .filter_map(|r| {
            let value = r.metrics.get(t).and_then(metric.read)?;
            value.is_finite().then_some((r.seed, value))
        })
        .collect()
}

impl Report {
    /// Summarises `runs` of the configurations `balancers` (baseline first) on `data`.
    pub fn new(
        experiment: Experiment,
        device: String,
        balancers: &[Labeled],
        data: Vec<DataSummary>,
        runs: Vec<RunResult>,
        memory: &[MemoryResult],
    ) -> Self {
        let baseline = balancers
            .iter()
            .find(|b| b.spec.method() == "static")
            .map(|b| b.label.clone());
        let entries = balancers
            .iter()
            .map(|b| BalancerEntry {
                label: b.label.clone(),
                method: b.spec.method().into(),
                config: b.spec.to_value().unwrap_or(serde_json::Value::Null),
            })
            .collect();
        let keys = first_seen(runs.iter().map(|r| (r.dataset.as_str(), r.model.as_str())));
        let mut quality = Vec::new();
        let mut families = Vec::new();
        let mut resolution = Vec::new();
        let mut verdicts = Vec::new();
        let mut cost = Vec::new();
        let mut weights = Vec::new();
        for &(dataset, model) in &keys {
            let group = Group {
                dataset,
                model,
                runs: runs
                    .iter()
                    .filter(|r| r.dataset == dataset && r.model == model)
                    .collect(),
            };
            let labels: Vec<&str> = balancers
                .iter()
                .map(|b| b.label.as_str())
                .filter(|l| !group.of(l).is_empty())
                .collect();
            let summary = data
                .iter()
                .find(|d| d.dataset == dataset && d.model == model);
            let start = quality.len();
            quality_rows(&group, &labels, baseline.as_deref(), &mut quality);
            adjust_by_family(&mut quality[start..], &mut families, dataset, model);
            resolution.extend(resolution_rows(
                &group,
                &quality[start..],
                summary,
                experiment.seeds,
            ));
            verdicts.extend(verdict_rows(
                &group,
                &labels,
                baseline.as_deref(),
                &quality[start..],
            ));
            cost_and_weight_rows(
                &group,
                &labels,
                baseline.as_deref(),
                memory,
                &mut cost,
                &mut weights,
            );
        }
        Self {
            version: REPORT_VERSION,
            experiment,
            device,
            baseline,
            balancers: entries,
            data,
            quality,
            test_families: families,
            resolution,
            verdicts,
            cost,
            weights,
            runs,
        }
    }
}

/// One row per (balancer, task, metric) of a group, in balancer, task, metric order.
fn quality_rows(
    group: &Group<'_>,
    labels: &[&str],
    baseline: Option<&str>,
    quality: &mut Vec<QualityRow>,
) {
    let baseline_runs = baseline.map(|b| group.of(b)).unwrap_or_default();
    for &label in labels {
        let rs = group.of(label);
        let Some(first) = rs.first() else { continue };
        for (t, task) in first.tasks.iter().enumerate() {
            let Some(sample) = first.metrics.get(t) else {
                continue;
            };
            for metric in metrics_of(sample) {
                let values = by_seed(&rs, t, metric);
                let samples: Vec<f64> = values.values().copied().collect();
                let vs_static = if Some(label) == baseline {
                    None
                } else {
                    paired_by_seed(&values, &by_seed(&baseline_runs, t, metric))
                };
                quality.push(QualityRow {
                    dataset: group.dataset.into(),
                    model: group.model.into(),
                    balancer: label.into(),
                    task: task.clone(),
                    metric: metric.name.into(),
                    higher_is_better: metric.higher_is_better,
                    value: interval(&samples),
                    significant: vs_static.is_some_and(|d| d.diff.excludes_zero()),
                    vs_static,
                    p_holm: None,
                    significant_holm: false,
                });
            }
        }
    }
}

/// Holm's adjustment within each metric of one group's rows; records the families.
fn adjust_by_family(
    rows: &mut [QualityRow],
    families: &mut Vec<TestFamily>,
    dataset: &str,
    model: &str,
) {
    for metric in first_seen(rows.iter().map(|r| r.metric.clone())) {
        let members: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].metric == metric)
            .collect();
        let p: Vec<Option<f64>> = members
            .iter()
            .map(|&i| rows[i].vs_static.and_then(|d| d.p_value))
            .collect();
        let adjusted = holm(&p);
        for (&i, adj) in members.iter().zip(adjusted) {
            rows[i].p_holm = adj;
            rows[i].significant_holm = adj.is_some_and(|p| p < 0.05);
        }
        families.push(TestFamily {
            dataset: dataset.into(),
            model: model.into(),
            metric,
            tests: p.iter().filter(|p| p.is_some()).count(),
        });
    }
}

/// The resolution of each task of a group on its primary metric.
fn resolution_rows(
    group: &Group<'_>,
    rows: &[QualityRow],
    summary: Option<&DataSummary>,
    seeds: usize,
) -> Vec<ResolutionRow> {
    let Some(first) = group.runs.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (t, task) in first.tasks.iter().enumerate() {
        let Some(primary) = first.metrics.get(t).map(|m| metrics_of(m)[0]) else {
            continue;
        };
        let widths: Vec<f64> = rows
            .iter()
            .filter(|r| &r.task == task && r.metric == primary.name)
            .filter_map(|r| r.vs_static)
            .filter(|d| d.diff.n > 1)
            .map(|d| d.diff.half_width())
            .collect();
        let resolvable = median(&widths);
        let eval_positives = summary
            .and_then(|s| s.tasks.iter().find(|x| &x.name == task))
            .and_then(|x| x.eval_positives)
            .or(first.metrics[t].positives);
        let eval_rows = summary.map_or(first.metrics[t].examples, |s| s.eval_rows);
        let warning = if seeds < 2 {
            Some("one seed: no interval, nothing can be resolved".to_string())
        } else if eval_positives == Some(0) {
            Some("no held-out positive: AUC is undefined".to_string())
        } else {
            match resolvable {
                Some(w) if primary.name == "auc" && w > AUC_RESOLUTION_TARGET => Some(format!(
                    "AUC differences below {w:.4} are inside the noise (target {AUC_RESOLUTION_TARGET}): more seeds narrow it"
                )),
                _ => None,
            }
        };
        out.push(ResolutionRow {
            dataset: group.dataset.into(),
            model: group.model.into(),
            task: task.clone(),
            metric: primary.name.into(),
            eval_rows,
            eval_positives,
            seeds,
            resolvable,
            warning,
        });
    }
    out
}

/// Each non-baseline balancer's verdict on a group, from the primary metric of every task.
fn verdict_rows(
    group: &Group<'_>,
    labels: &[&str],
    baseline: Option<&str>,
    rows: &[QualityRow],
) -> Vec<VerdictRow> {
    let Some(first) = group.runs.first() else {
        return Vec::new();
    };
    let primary = |t: usize| first.metrics.get(t).map(|m| metrics_of(m)[0].name);
    let mut out = Vec::new();
    for &label in labels.iter().filter(|l| Some(**l) != baseline) {
        let (mut improved, mut hurt) = (Vec::new(), Vec::new());
        for (t, task) in first.tasks.iter().enumerate() {
            let Some(row) = rows.iter().find(|r| {
                r.balancer == label && &r.task == task && Some(r.metric.as_str()) == primary(t)
            }) else {
                continue;
            };
            let (Some(d), true) = (row.vs_static, row.significant_holm) else {
                continue;
            };
            let text = format!("{task} {} {:+.4}", row.metric, d.diff.mean);
            if row.improves() {
                improved.push(text);
            } else {
                hurt.push(text);
            }
        }
        let verdict = match (improved.is_empty(), hurt.is_empty()) {
            (false, true) => Verdict::Improves,
            (true, false) => Verdict::Hurts,
            (false, false) => Verdict::TradeOff,
            (true, true) => Verdict::NoResolvedDifference,
        };
        out.push(VerdictRow {
            dataset: group.dataset.into(),
            model: group.model.into(),
            balancer: label.into(),
            verdict,
            improved,
            hurt,
        });
    }
    out
}

/// Cost and weight rows of a group.
fn cost_and_weight_rows(
    group: &Group<'_>,
    labels: &[&str],
    baseline: Option<&str>,
    memory: &[MemoryResult],
    cost: &mut Vec<CostRow>,
    weights: &mut Vec<WeightRow>,
) {
    let peak_of = |label: &str| {
        memory
            .iter()
            .find(|m| m.0 == group.dataset && m.1 == group.model && m.2 == label)
            .and_then(|m| m.3)
    };
    let step_ms_of = |label: &str| {
        median(
            &group
                .of(label)
                .iter()
                .map(|r| r.median_step_ms)
                .collect::<Vec<_>>(),
        )
    };
    let baseline_ms = baseline.and_then(step_ms_of);
    let baseline_peak = baseline.and_then(peak_of);
    for &label in labels {
        let rs = group.of(label);
        let Some(first) = rs.first() else { continue };
        let step_ms = step_ms_of(label).unwrap_or(f64::NAN);
        let peak_mib = peak_of(label);
        cost.push(CostRow {
            dataset: group.dataset.into(),
            model: group.model.into(),
            balancer: label.into(),
            step_ms,
            ratio_vs_static: baseline_ms.map_or(f64::NAN, |base| step_ms / base),
            peak_mib,
            memory_ratio_vs_static: peak_mib.zip(baseline_peak).map(|(p, b)| p / b),
        });
        let mean_of = |pick: &dyn Fn(&RunResult) -> &Vec<f64>| -> Vec<f64> {
            (0..first.tasks.len())
                .map(|t| {
                    rs.iter()
                        .map(|r| pick(r).get(t).copied().unwrap_or(f64::NAN))
                        .sum::<f64>()
                        / rs.len() as f64
                })
                .collect()
        };
        weights.push(WeightRow {
            dataset: group.dataset.into(),
            model: group.model.into(),
            balancer: label.into(),
            tasks: first.tasks.clone(),
            initial: mean_of(&|r| &r.initial_weights),
            last: mean_of(&|r| &r.final_weights),
            extras: mean_extras(&rs),
        });
    }
}

/// Each extra series averaged element-wise over the runs.
fn mean_extras(runs: &[&RunResult]) -> BTreeMap<String, Vec<f64>> {
    let mut means = SeriesMeans::default();
    runs.iter().for_each(|run| means.add(&run.extras_mean));
    means.means()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_means_are_element_wise_and_skip_samples_of_another_length() {
        let mut means = SeriesMeans::default();
        means.add_series("w", &[1.0, 2.0]);
        means.add_series("w", &[3.0, 6.0]);
        means.add_series("w", &[100.0]); // another length: ignored
        means.add(&BTreeMap::from([("x".to_string(), vec![5.0])]));
        let got = means.means();
        assert_eq!(got["w"], vec![2.0, 4.0]);
        assert_eq!(got["x"], vec![5.0]);
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_run_with_undefined_numbers_restores_them_as_nan() {
        let run = RunResult {
            dataset: "cascade".into(),
            model: "mmoe".into(),
            balancer: "{\"method\":\"static\"}".into(),
            label: "static".into(),
            method: "static".into(),
            seed: 0,
            tasks: vec!["a".into()],
            metrics: Vec::new(),
            initial_weights: vec![1.0],
            final_weights: vec![f64::NAN],
            median_step_ms: f64::NAN,
            train_seconds: 1.5,
            trajectory_steps: vec![0],
            weight_trajectory: vec![vec![f64::NAN]],
            loss_trajectory: vec![vec![0.5]],
            extras_mean: BTreeMap::from([("cos".to_string(), vec![f64::NAN, 0.25])]),
        };
        let json = serde_json::to_string(&run).unwrap();
        assert!(json.contains("\"median_step_ms\":null"), "{json}");
        let back: RunResult = serde_json::from_str(&json).unwrap();
        assert!(back.median_step_ms.is_nan() && back.final_weights[0].is_nan());
        assert!(back.weight_trajectory[0][0].is_nan());
        assert!(back.extras_mean["cos"][0].is_nan() && back.extras_mean["cos"][1] == 0.25);
        assert_eq!(
            (back.train_seconds, back.loss_trajectory),
            (1.5, vec![vec![0.5]])
        );
    }
}
