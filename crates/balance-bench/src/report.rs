//! The comparison report: raw runs, and the per-task, cost and weight summaries computed from them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use balance_harness::train::TaskMetrics;

use crate::experiment::Experiment;
use crate::stats::{interval, median, paired_difference, Interval};

/// One (dataset, model, balancer, seed) run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Dataset name.
    pub dataset: String,
    /// Model name.
    pub model: String,
    /// The balancer's full config (canonical JSON map form).
    pub balancer: String,
    /// The balancer's registry name.
    pub method: String,
    /// The seed.
    pub seed: u64,
    /// Task names.
    pub tasks: Vec<String>,
    /// Validation metrics after the last epoch.
    pub metrics: Vec<TaskMetrics>,
    /// Weights applied at the first step.
    pub initial_weights: Vec<f64>,
    /// Mean of the weights applied over the last epoch (for RLW: about 1 each by construction).
    pub final_weights: Vec<f64>,
    /// Median wall time of a training step, in milliseconds.
    pub median_step_ms: f64,
    /// Wall time of the whole run (training and evaluation), in seconds.
    pub train_seconds: f64,
    /// Steps at which the trajectories were recorded.
    pub trajectory_steps: Vec<u64>,
    /// Applied weights at those steps.
    pub weight_trajectory: Vec<Vec<f64>>,
    /// Loss values at those steps.
    pub loss_trajectory: Vec<Vec<f64>>,
    /// Each method-specific series of the step reports (`StepReport::extras`, e.g. a gradient method's
    /// `cos` or `clamped`), averaged element-wise over every step of the run.
    #[serde(default)]
    pub extras_mean: BTreeMap<String, Vec<f64>>,
}

/// One task's quality under one balancer, across seeds.
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
    /// `auc` (binary tasks) or `mse` (regression).
    pub metric: String,
    /// Mean and 95 % interval across seeds.
    pub value: Interval,
    /// Difference to `static` paired by seed (absent for the baseline itself).
    pub vs_static: Option<Interval>,
    /// True when `vs_static`'s interval excludes zero.
    pub significant: bool,
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

/// The whole report (the JSON export is this struct; schema in `docs/bench-report.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Report format version.
    pub version: u32,
    /// The experiment that produced it.
    pub experiment: Experiment,
    /// Where it ran.
    pub device: String,
    /// Per-task quality.
    pub quality: Vec<QualityRow>,
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

/// Each extra series averaged element-wise over the runs.
fn mean_extras(runs: &[&RunResult]) -> BTreeMap<String, Vec<f64>> {
    let mut means = SeriesMeans::default();
    runs.iter().for_each(|run| means.add(&run.extras_mean));
    means.means()
}

/// A short label for a balancer: its method, or the full config when one method appears with several
/// configs.
fn labels(runs: &[RunResult]) -> impl Fn(&RunResult) -> String + '_ {
    move |run| {
        let configs: std::collections::BTreeSet<&str> = runs
            .iter()
            .filter(|r| r.method == run.method)
            .map(|r| r.balancer.as_str())
            .collect();
        if configs.len() > 1 {
            run.balancer.clone()
        } else {
            run.method.clone()
        }
    }
}

fn metric_of(m: &TaskMetrics) -> Option<(&'static str, f64)> {
    m.auc.map(|a| ("auc", a)).or(m.mse.map(|e| ("mse", e)))
}

impl Report {
    /// Summarises `runs`.
    /// `memory` holds one `(dataset, model, balancer config, peak MiB)` per configuration.
    pub fn new(
        experiment: Experiment,
        device: String,
        runs: Vec<RunResult>,
        memory: &[(String, String, String, Option<f64>)],
    ) -> Self {
        let label = labels(&runs);
        let mut groups: Vec<(String, String)> = Vec::new();
        for r in &runs {
            let key = (r.dataset.clone(), r.model.clone());
            if !groups.contains(&key) {
                groups.push(key);
            }
        }
        let mut quality = Vec::new();
        let mut cost = Vec::new();
        let mut weights = Vec::new();
        for (dataset, model) in &groups {
            let in_group: Vec<&RunResult> = runs
                .iter()
                .filter(|r| &r.dataset == dataset && &r.model == model)
                .collect();
            let mut balancers: Vec<String> = Vec::new();
            for r in &in_group {
                if !balancers.contains(&r.balancer) {
                    balancers.push(r.balancer.clone());
                }
            }
            let of = |b: &str| -> Vec<&RunResult> {
                let mut v: Vec<&RunResult> = in_group
                    .iter()
                    .copied()
                    .filter(|r| r.balancer == b)
                    .collect();
                v.sort_by_key(|r| r.seed);
                v
            };
            let baseline = in_group
                .iter()
                .find(|r| r.method == "static")
                .map(|r| r.balancer.clone());
            let baseline_runs = baseline.as_deref().map(of).unwrap_or_default();
            let baseline_ms = median(
                &baseline_runs
                    .iter()
                    .map(|r| r.median_step_ms)
                    .collect::<Vec<_>>(),
            );
            let peak_of = |b: &str| {
                memory
                    .iter()
                    .find(|m| &m.0 == dataset && &m.1 == model && m.2 == b)
                    .and_then(|m| m.3)
            };
            let baseline_peak = baseline.as_deref().and_then(peak_of);
            for b in &balancers {
                let rs = of(b);
                let Some(first) = rs.first() else { continue };
                let name = label(first);
                for (t, task) in first.tasks.iter().enumerate() {
                    let values: Vec<(&str, f64)> = rs
                        .iter()
                        .filter_map(|r| r.metrics.get(t).and_then(metric_of))
                        .collect();
                    let Some(&(metric, _)) = values.first() else {
                        continue;
                    };
                    let samples: Vec<f64> = values.iter().map(|v| v.1).collect();
                    let Some(value) = interval(&samples) else {
                        continue;
                    };
                    let vs_static = if Some(b) == baseline.as_ref() {
                        None
                    } else {
                        let base: Vec<f64> = baseline_runs
                            .iter()
                            .filter_map(|r| r.metrics.get(t).and_then(metric_of))
                            .map(|v| v.1)
                            .collect();
                        paired_difference(&samples, &base)
                    };
                    quality.push(QualityRow {
                        dataset: dataset.clone(),
                        model: model.clone(),
                        balancer: name.clone(),
                        task: task.clone(),
                        metric: metric.into(),
                        value,
                        significant: vs_static.is_some_and(|d| d.excludes_zero()),
                        vs_static,
                    });
                }
                let step_ms = median(&rs.iter().map(|r| r.median_step_ms).collect::<Vec<_>>())
                    .unwrap_or(f64::NAN);
                let peak_mib = peak_of(b);
                cost.push(CostRow {
                    dataset: dataset.clone(),
                    model: model.clone(),
                    balancer: name.clone(),
                    step_ms,
                    ratio_vs_static: baseline_ms.map_or(f64::NAN, |base| step_ms / base),
                    peak_mib,
                    memory_ratio_vs_static: peak_mib.zip(baseline_peak).map(|(p, b)| p / b),
                });
                let mean_of = |pick: &dyn Fn(&RunResult) -> &Vec<f64>| -> Vec<f64> {
                    let n = first.tasks.len();
                    (0..n)
                        .map(|t| {
                            rs.iter()
                                .map(|r| pick(r).get(t).copied().unwrap_or(f64::NAN))
                                .sum::<f64>()
                                / rs.len() as f64
                        })
                        .collect()
                };
                weights.push(WeightRow {
                    dataset: dataset.clone(),
                    model: model.clone(),
                    balancer: name,
                    tasks: first.tasks.clone(),
                    initial: mean_of(&|r| &r.initial_weights),
                    last: mean_of(&|r| &r.final_weights),
                    extras: mean_extras(&rs),
                });
            }
        }
        drop(label);
        Self {
            version: 1,
            experiment,
            device,
            quality,
            cost,
            weights,
            runs,
        }
    }
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
}
