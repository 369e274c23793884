//! Report exporters behind one trait: JSON (the whole report), Markdown (the tables), CSV (quality rows).

use std::io::Write;

use anyhow::Result;

use crate::report::Report;

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

/// Markdown tables: quality, cost, weights.
#[derive(Debug, Default)]
pub struct Markdown;

/// One CSV row per (dataset, model, balancer, task).
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

fn fmt_weights(w: &[f64]) -> String {
    let parts: Vec<String> = w.iter().map(|x| format!("{x:.3}")).collect();
    format!("[{}]", parts.join(", "))
}

impl Exporter for Markdown {
    fn extension(&self) -> &'static str {
        "md"
    }

    fn write(&self, report: &Report, out: &mut dyn Write) -> Result<()> {
        let e = &report.experiment;
        writeln!(
            out,
            "# balance-bench report\n\n{} seed(s), {} epoch(s), batch {}, {} training rows for synthetic datasets, lr {}, on {}.\n",
            e.seeds, e.epochs, e.batch_size, e.rows, e.lr, report.device
        )?;
        writeln!(out, "## Quality per task (mean and 95 % interval across seeds; difference to `static` paired by seed, * when the interval excludes 0)\n")?;
        writeln!(
            out,
            "| dataset | model | balancer | task | metric | mean [95 % CI] | vs static [95 % CI] |"
        )?;
        writeln!(out, "|---|---|---|---|---|---|---|")?;
        for q in &report.quality {
            let vs = match &q.vs_static {
                None => "baseline".to_string(),
                Some(d) => format!(
                    "{:+.4} [{:+.4}, {:+.4}]{}",
                    d.mean,
                    d.low,
                    d.high,
                    if q.significant { " *" } else { "" }
                ),
            };
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.4} [{:.4}, {:.4}] | {} |",
                q.dataset,
                q.model,
                q.balancer,
                q.task,
                q.metric,
                q.value.mean,
                q.value.low,
                q.value.high,
                vs
            )?;
        }
        writeln!(out, "\n## Cost (median step time, runs in this process; peak resident-set growth over the first 20 steps, each configuration alone in a child process; ratios to `static`)\n")?;
        writeln!(
            out,
            "| dataset | model | balancer | ms/step | time ratio | peak MiB | memory ratio |"
        )?;
        writeln!(out, "|---|---|---|---|---|---|---|")?;
        let opt = |v: Option<f64>, suffix: &str| {
            v.map_or("n/a".to_string(), |x| format!("{x:.2}{suffix}"))
        };
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
        writeln!(out, "\n## Weights (mean over seeds: applied at the first step -> mean applied over the last epoch)\n")?;
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
            writeln!(out, "\n## Method measurements (each method's own step extras, mean over steps and seeds; per task unless one value)\n")?;
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
            "mean",
            "ci_low",
            "ci_high",
            "seeds",
            "vs_static_mean",
            "vs_static_low",
            "vs_static_high",
            "significant",
        ])?;
        for q in &report.quality {
            let (m, lo, hi) = q
                .vs_static
                .map_or((String::new(), String::new(), String::new()), |d| {
                    (d.mean.to_string(), d.low.to_string(), d.high.to_string())
                });
            w.write_record([
                q.dataset.clone(),
                q.model.clone(),
                q.balancer.clone(),
                q.task.clone(),
                q.metric.clone(),
                q.value.mean.to_string(),
                q.value.low.to_string(),
                q.value.high.to_string(),
                q.value.n.to_string(),
                m,
                lo,
                hi,
                q.significant.to_string(),
            ])?;
        }
        w.flush()?;
        Ok(())
    }
}
