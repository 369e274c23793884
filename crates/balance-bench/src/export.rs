//! Report exporters behind one trait: JSON (the whole report), Markdown (the tables), CSV (quality rows),
//! HTML (one self-contained page with tables and plots); [`write_all`] writes every one into a folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::report::{QualityRow, Report};
use crate::stats::Interval;

/// Writes a report in one format.
pub trait Exporter {
    /// The file extension (without the dot).
    fn extension(&self) -> &'static str;
    /// Writes `report` to `out`.
    fn write(&self, report: &Report, out: &mut dyn Write) -> Result<()>;
}

/// The whole report as one JSON object.
#[derive(Debug, Default)]
pub struct Json;

/// Markdown: data, verdict, resolution, quality per metric, cost, weights.
#[derive(Debug, Default)]
pub struct Markdown;

/// One CSV row per (dataset, model, balancer, task, metric).
#[derive(Debug, Default)]
pub struct Csv;

impl Markdown {
    /// Writes the Markdown report (convenience for the CLI).
    pub fn write_to(&self, report: &Report, out: &mut dyn Write) -> Result<()> {
        Exporter::write(self, report, out)
    }
}

/// Every exporter.
pub fn all() -> Vec<Box<dyn Exporter>> {
    vec![Box::new(Json), Box::new(Markdown), Box::new(Csv)]
}

/// Writes `report.<ext>` for every exporter and the plots (`plots/`) into `dir`, each file whole or
/// not at all (written beside, then renamed). Returns the files written.
pub fn write_all(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    crate::atomic::create_dir(dir)?;
    let mut written = Vec::new();
    for exporter in all() {
        let path = dir.join(format!("report.{}", exporter.extension()));
        crate::atomic::write_with(&path, |out| exporter.write(report, out))?;
        written.push(path);
    }
    written.extend(crate::plot::write_all(report, &dir.join("plots"))?);
    Ok(written)
}

fn fmt_weights(w: &[f64]) -> String {
    let parts: Vec<String> = w.iter().map(|x| format!("{x:.3}")).collect();
    format!("[{}]", parts.join(", "))
}

/// `0.8041 [0.8038, 0.8044]`, or `undefined`.
pub fn fmt_interval(value: Option<Interval>) -> String {
    value.map_or("undefined".into(), |v| {
        format!("{:.4} [{:.4}, {:.4}]", v.mean, v.low, v.high)
    })
}

/// A p-value: 3 significant digits, `<1e-6` below.
pub fn fmt_p(p: Option<f64>) -> String {
    match p {
        None => String::new(),
        Some(p) if p < 1e-6 => "<1e-6".into(),
        Some(p) => format!("{p:.3}"),
    }
}

/// The difference to the baseline: `+0.0012 [+0.0005, +0.0019] *†`, `baseline`, or `undefined`.
pub fn fmt_vs_static(q: &QualityRow, baseline: bool) -> String {
    match &q.vs_static {
        None if baseline => "baseline".into(),
        None => "undefined".into(),
        Some(d) => format!(
            "{:+.4} [{:+.4}, {:+.4}]{}{}",
            d.diff.mean,
            d.diff.low,
            d.diff.high,
            if q.significant { " *" } else { "" },
            if q.significant_holm { "†" } else { "" }
        ),
    }
}

/// One sentence on what the run trained and evaluated on, per (dataset, model).
pub fn data_sentences(report: &Report) -> Vec<String> {
    report
        .data
        .iter()
        .map(|d| {
            let tasks: Vec<String> = d
                .tasks
                .iter()
                .map(|t| match (t.train_positive_rate, t.eval_positives) {
                    (Some(rate), Some(pos)) => format!(
                        "{} ({:.2} % positive in training, {pos} held-out positives)",
                        t.name,
                        rate * 100.0
                    ),
                    _ => format!("{} ({})", t.name, t.kind),
                })
                .collect();
            format!(
                "{} / {}: {} training rows, {} held-out rows; tasks {}.",
                d.dataset,
                d.model,
                d.train_rows,
                d.eval_rows,
                tasks.join(", ")
            )
        })
        .collect()
}

/// The run's settings in one line.
pub fn settings_sentence(report: &Report) -> String {
    let e = &report.experiment;
    format!(
        "{} seed(s), {} epoch(s), batch {}, lr {}{}, on {}; baseline `{}`.",
        e.seeds,
        e.epochs,
        e.batch_size,
        e.lr,
        e.max_grad_norm
            .map_or(String::new(), |m| format!(", gradient norm clipped at {m}")),
        report.device,
        report.baseline.as_deref().unwrap_or("none")
    )
}

/// The metrics of the report in first-seen order.
pub fn metric_names(report: &Report) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for q in &report.quality {
        if !names.contains(&q.metric.as_str()) {
            names.push(&q.metric);
        }
    }
    names
}

/// What the quality tables' marks mean.
pub const SIGNIFICANCE_LEGEND: &str = "Differences to the baseline are paired by seed (mean and 95 % t interval of the per-seed differences); * marks an interval that excludes 0 (one test on its own), † a Holm-adjusted p-value below 0.05 over the test's family (every balancer and task of one dataset, model and metric).";

impl Exporter for Json {
    fn extension(&self) -> &'static str {
        "json"
    }

    fn write(&self, report: &Report, out: &mut dyn Write) -> Result<()> {
        serde_json::to_writer_pretty(&mut *out, report)?;
        writeln!(out)?;
        Ok(())
    }
}

impl Exporter for Markdown {
    fn extension(&self) -> &'static str {
        "md"
    }

    fn write(&self, report: &Report, out: &mut dyn Write) -> Result<()> {
        writeln!(
            out,
            "# balance-bench report\n\n{}\n",
            settings_sentence(report)
        )?;
        writeln!(out, "## Data\n")?;
        for line in data_sentences(report) {
            writeln!(out, "- {line}")?;
        }
        write_verdicts(report, out)?;
        write_resolution(report, out)?;
        for metric in metric_names(report) {
            write_quality(report, metric, out)?;
        }
        write_cost_and_weights(report, out)
    }
}

fn write_verdicts(report: &Report, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "\n## Verdict against the baseline\n\nPer dataset and model, on each task's primary metric (AUC, or MSE for regression), with Holm-adjusted significance: *improves* = some task better beyond noise and none worse (Pareto against the baseline), *hurts* = some worse and none better, *trade-off* = both.\n")?;
    writeln!(
        out,
        "| dataset | model | balancer | verdict | better beyond noise | worse beyond noise |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    let mut rows: Vec<_> = report.verdicts.iter().collect();
    rows.sort_by_key(|v| (v.dataset.clone(), v.model.clone(), v.verdict as u8));
    for v in rows {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            v.dataset,
            v.model,
            v.balancer,
            v.verdict.as_str(),
            v.improved.join("; "),
            v.hurt.join("; ")
        )?;
    }
    Ok(())
}

fn write_resolution(report: &Report, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "\n## Resolution\n\nThe smallest difference to the baseline this run can tell from noise, per task: the median over balancers of the paired 95 % half-width. Smaller differences are not answered by this run.\n")?;
    writeln!(
        out,
        "| dataset | model | task | metric | held-out rows | held-out positives | seeds | resolvable difference | note |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    for r in &report.resolution {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.dataset,
            r.model,
            r.task,
            r.metric,
            r.eval_rows,
            r.eval_positives.map_or("n/a".into(), |p| p.to_string()),
            r.seeds,
            r.resolvable.map_or("n/a".into(), |w| format!("±{w:.4}")),
            r.warning.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

fn write_quality(report: &Report, metric: &str, out: &mut dyn Write) -> Result<()> {
    let rows: Vec<&QualityRow> = report
        .quality
        .iter()
        .filter(|q| q.metric == metric)
        .collect();
    let direction = if rows.first().is_some_and(|q| q.higher_is_better) {
        "higher is better"
    } else {
        "lower is better"
    };
    writeln!(
        out,
        "\n## Quality: {metric} ({direction})\n\n{SIGNIFICANCE_LEGEND}"
    )?;
    for f in report.test_families.iter().filter(|f| f.metric == metric) {
        writeln!(
            out,
            "Holm family {} / {} / {metric}: {} tests.",
            f.dataset, f.model, f.tests
        )?;
    }
    writeln!(
        out,
        "\n| dataset | model | balancer | task | mean [95 % CI] | vs baseline [95 % CI] | p | p (Holm) |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    for q in rows {
        let baseline = report.baseline.as_deref() == Some(q.balancer.as_str());
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            q.dataset,
            q.model,
            q.balancer,
            q.task,
            fmt_interval(q.value),
            fmt_vs_static(q, baseline),
            fmt_p(q.vs_static.and_then(|d| d.p_value)),
            fmt_p(q.p_holm)
        )?;
    }
    Ok(())
}

fn write_cost_and_weights(report: &Report, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "\n## Cost\n\nMedian step time of the runs in this process; peak resident-set growth over the first 20 steps, each configuration alone in a child process; ratios to the baseline.\n")?;
    writeln!(
        out,
        "| dataset | model | balancer | ms/step | time ratio | peak MiB | memory ratio |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    let opt =
        |v: Option<f64>, suffix: &str| v.map_or("n/a".to_string(), |x| format!("{x:.2}{suffix}"));
    for c in &report.cost {
        writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.2}x | {} | {} |",
            c.dataset,
            c.model,
            c.balancer,
            c.step_ms,
            c.ratio_vs_static,
            opt(c.peak_mib, ""),
            opt(c.memory_ratio_vs_static, "x")
        )?;
    }
    writeln!(out, "\n## Weights\n\nMean over seeds: applied at the first step, and mean applied over the last epoch.\n")?;
    writeln!(
        out,
        "| dataset | model | balancer | tasks | first step | end |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for w in &report.weights {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            w.dataset,
            w.model,
            w.balancer,
            w.tasks.join(", "),
            fmt_weights(&w.initial),
            fmt_weights(&w.last)
        )?;
    }
    if report.weights.iter().any(|w| !w.extras.is_empty()) {
        writeln!(out, "\n## Method measurements\n\nEach method's own step extras, mean over steps and seeds; per task unless one value.\n")?;
        writeln!(out, "| dataset | model | balancer | measure | value |")?;
        writeln!(out, "|---|---|---|---|---|")?;
        for w in &report.weights {
            for (name, values) in &w.extras {
                writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    w.dataset,
                    w.model,
                    w.balancer,
                    name,
                    fmt_weights(values)
                )?;
            }
        }
    }
    Ok(())
}

impl Exporter for Csv {
    fn extension(&self) -> &'static str {
        "csv"
    }

    fn write(&self, report: &Report, out: &mut dyn Write) -> Result<()> {
        let mut w = csv::Writer::from_writer(out);
        w.write_record([
            "dataset",
            "model",
            "balancer",
            "task",
            "metric",
            "higher_is_better",
            "mean",
            "ci_low",
            "ci_high",
            "seeds",
            "vs_static_mean",
            "vs_static_low",
            "vs_static_high",
            "p_value",
            "p_holm",
            "significant",
            "significant_holm",
        ])?;
        let num = |v: Option<f64>| v.map_or(String::new(), |x| x.to_string());
        for q in &report.quality {
            let d = q.vs_static.map(|d| d.diff);
            w.write_record([
                q.dataset.clone(),
                q.model.clone(),
                q.balancer.clone(),
                q.task.clone(),
                q.metric.clone(),
                q.higher_is_better.to_string(),
                num(q.value.map(|v| v.mean)),
                num(q.value.map(|v| v.low)),
                num(q.value.map(|v| v.high)),
                q.value.map_or(0, |v| v.n).to_string(),
                num(d.map(|d| d.mean)),
                num(d.map(|d| d.low)),
                num(d.map(|d| d.high)),
                num(q.vs_static.and_then(|d| d.p_value)),
                num(q.p_holm),
                q.significant.to_string(),
                q.significant_holm.to_string(),
            ])?;
        }
        w.flush()?;
        Ok(())
    }
}
