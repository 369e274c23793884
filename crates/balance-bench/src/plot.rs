//! The report's figures, drawn by `balance-plot`: per (dataset, model, task, metric) a forest plot of
//! every balancer's paired difference to the baseline; per (dataset, model, balancer) the weight and
//! loss trajectories, mean and 95 % band across seeds. Each is written as SVG and PNG.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use balance_plot::{Band, BandPlot, ForestPlot, ForestRow, PlotError};

use crate::label::slug;
use crate::report::{first_seen, Report, RunResult};

/// The heading of the section that holds the weight and loss trajectories.
pub const TRAJECTORIES: &str = "Trajectories";

/// What a figure draws.
#[derive(Debug, Clone, PartialEq)]
pub enum Plot {
    /// Paired differences to the baseline, one row per balancer.
    Forest(ForestPlot),
    /// Series over training steps with bands.
    Bands(BandPlot),
}

impl Plot {
    /// SVG markup.
    pub fn svg(&self) -> Result<String, PlotError> {
        match self {
            Plot::Forest(p) => balance_plot::forest_svg(p),
            Plot::Bands(p) => balance_plot::bands_svg(p),
        }
    }

    /// PNG bytes.
    pub fn png(&self) -> Result<Vec<u8>, PlotError> {
        match self {
            Plot::Forest(p) => balance_plot::forest_png(p),
            Plot::Bands(p) => balance_plot::bands_png(p),
        }
    }
}

/// One figure of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// File name without extension, safe on any file system
    /// (`forest-<dataset>-<model>-<task>-<metric>`, `weights-…-<label>`, `losses-…-<label>`).
    pub stem: String,
    /// The heading of the report section the figure belongs in: its metric's quality section for a
    /// forest plot, [`TRAJECTORIES`] for weight and loss bands.
    pub section: String,
    /// One sentence saying what is drawn.
    pub caption: String,
    /// The figure.
    pub plot: Plot,
}

/// Every figure of `report`, forest plots first (in the order of the quality rows), then the
/// trajectories of each balancer.
pub fn figures(report: &Report) -> Vec<Figure> {
    let mut out = forests(report);
    out.extend(trajectories(report));
    out
}

fn forests(report: &Report) -> Vec<Figure> {
    let baseline = report.baseline.as_deref().unwrap_or("baseline");
    let groups = first_seen(report.quality.iter().map(|q| {
        (
            q.dataset.as_str(),
            q.model.as_str(),
            q.task.as_str(),
            q.metric.as_str(),
        )
    }));
    groups
        .into_iter()
        .filter_map(|(dataset, model, task, metric)| {
            let rows: Vec<_> = report
                .quality
                .iter()
                .filter(|q| {
                    q.dataset == dataset && q.model == model && q.task == task && q.metric == metric
                })
                .collect();
            let higher_is_better = rows.first()?.higher_is_better;
            let seeds = rows
                .iter()
                .filter_map(|q| q.vs_static.map(|d| d.diff.n))
                .max()?;
            let forest_rows: Vec<ForestRow> = rows
                .iter()
                .filter_map(|q| {
                    let d = q.vs_static?.diff;
                    Some(ForestRow {
                        label: q.balancer.clone(),
                        mean: d.mean,
                        low: d.low,
                        high: d.high,
                        significant: q.significant_holm,
                    })
                })
                .collect();
            Some(Figure {
                stem: format!(
                    "forest-{}-{}-{}-{}",
                    slug(dataset),
                    slug(model),
                    slug(task),
                    slug(metric)
                ),
                section: crate::document::quality_heading(metric, higher_is_better),
                caption: format!(
                    "{dataset} / {model}, task {task}: each balancer's {metric} minus `{baseline}`'s, paired by seed, with its 95 % interval; filled marks are significant after Holm's adjustment."
                ),
                plot: Plot::Forest(ForestPlot {
                    title: format!("{dataset} / {model} / {task}: {metric} vs {baseline} ({seeds} seeds)"),
                    x_label: format!("Δ {metric} (balancer − {baseline})"),
                    higher_is_better,
                    rows: forest_rows,
                }),
            })
        })
        .collect()
}

fn trajectories(report: &Report) -> Vec<Figure> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for run in &report.runs {
        let key = (run.dataset.as_str(), run.model.as_str(), run.label.as_str());
        if !seen.insert(key) {
            continue;
        }
        let runs: Vec<&RunResult> = report
            .runs
            .iter()
            .filter(|r| r.dataset == run.dataset && r.model == run.model && r.label == run.label)
            .collect();
        for (kind, what, log_y) in [("weights", "weight", false), ("losses", "loss", true)] {
            let series = |r: &RunResult| -> Vec<Vec<f64>> {
                if kind == "weights" {
                    r.weight_trajectory.clone()
                } else {
                    r.loss_trajectory.clone()
                }
            };
            let bands = bands_across_seeds(&runs, &run.tasks, series);
            out.push(Figure {
                stem: format!(
                    "{kind}-{}-{}-{}",
                    slug(&run.dataset),
                    slug(&run.model),
                    slug(&run.label)
                ),
                section: TRAJECTORIES.into(),
                caption: format!(
                    "{} / {} / {}: training {what} per task over steps, mean across {} seed(s) with its 95 % interval.",
                    run.dataset, run.model, run.label, runs.len()
                ),
                plot: Plot::Bands(BandPlot {
                    title: format!(
                        "{} / {} / {}: task {what}s ({} seeds)",
                        run.dataset,
                        run.model,
                        run.label,
                        runs.len()
                    ),
                    x_label: "step".into(),
                    y_label: if log_y {
                        "training loss (log scale)".into()
                    } else {
                        "applied weight".into()
                    },
                    log_y,
                    series: bands,
                }),
            });
        }
    }
    out
}

/// Per task, the mean and 95 % t interval across `runs` at each recorded step (steps every run
/// reached; one seed gives a band of zero width).
fn bands_across_seeds(
    runs: &[&RunResult],
    tasks: &[String],
    series: impl Fn(&RunResult) -> Vec<Vec<f64>>,
) -> Vec<Band> {
    let per_run: Vec<Vec<Vec<f64>>> = runs.iter().map(|r| series(r)).collect();
    let steps = runs
        .iter()
        .zip(&per_run)
        .map(|(r, s)| r.trajectory_steps.len().min(s.len()))
        .min()
        .unwrap_or(0);
    let step_axis: Vec<f64> = runs
        .first()
        .map(|r| {
            r.trajectory_steps[..steps]
                .iter()
                .map(|&s| s as f64)
                .collect()
        })
        .unwrap_or_default();
    tasks
        .iter()
        .enumerate()
        .map(|(t, task)| {
            let (mut mean, mut low, mut high) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..steps {
                let values: Vec<f64> = per_run
                    .iter()
                    .filter_map(|s| s[i].get(t).copied())
                    .collect();
                match crate::stats::interval(&values) {
                    Some(v) => {
                        mean.push(v.mean);
                        low.push(v.low);
                        high.push(v.high);
                    }
                    None => {
                        mean.push(f64::NAN);
                        low.push(f64::NAN);
                        high.push(f64::NAN);
                    }
                }
            }
            Band {
                label: task.clone(),
                steps: step_axis.clone(),
                mean,
                low,
                high,
            }
        })
        .collect()
}

/// Writes every figure of `report` into `dir` as `<stem>.svg` and `<stem>.png`, each file whole or
/// not at all. A figure with nothing drawable (e.g. every value undefined) is skipped. Returns the
/// files written.
pub fn write_all(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    crate::atomic::create_dir(dir)?;
    let mut written = Vec::new();
    for figure in figures(report) {
        let svg = match figure.plot.svg() {
            Ok(svg) => svg,
            Err(PlotError::NoData(_)) => continue,
            Err(e) => return Err(e).with_context(|| format!("drawing {}", figure.stem)),
        };
        let png = figure
            .plot
            .png()
            .with_context(|| format!("drawing {}", figure.stem))?;
        for (ext, bytes) in [("svg", svg.as_bytes()), ("png", png.as_slice())] {
            let path = dir.join(format!("{}.{ext}", figure.stem));
            crate::atomic::write(&path, bytes)?;
            written.push(path);
        }
    }
    Ok(written)
}
