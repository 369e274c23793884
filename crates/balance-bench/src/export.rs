//! Report exporters behind one trait: JSON (the whole report), Markdown (the tables), CSV (quality rows),
//! HTML (one self-contained page with tables and plots); [`write_all`] writes every one into a folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use balance_plot::html::{Block, Figure, Image, Section};
use balance_plot::PlotError;

use crate::report::Report;
use crate::{document, plot};

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

/// One self-contained page: the Markdown's sections with the forest plots beside each quality table and
/// the trajectories at the end, inline SVG, no network access.
#[derive(Debug, Default)]
pub struct Html;

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
    vec![
        Box::new(Json),
        Box::new(Markdown),
        Box::new(Csv),
        Box::new(Html),
    ]
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
        out.write_all(document::to_markdown(&document::document(report)).as_bytes())?;
        Ok(())
    }
}

impl Exporter for Html {
    fn extension(&self) -> &'static str {
        "html"
    }

    fn write(&self, report: &Report, out: &mut dyn Write) -> Result<()> {
        let mut doc = document::document(report);
        for figure in plot::figures(report) {
            let svg = match figure.plot.svg() {
                Ok(svg) => svg,
                Err(PlotError::NoData(_)) => continue,
                Err(e) => return Err(e).with_context(|| format!("drawing {}", figure.stem)),
            };
            let block = Block::Figure(Figure {
                caption: figure.caption,
                image: Image::Svg(svg),
            });
            match doc
                .sections
                .iter_mut()
                .find(|s| s.heading == figure.section)
            {
                Some(section) => section.blocks.push(block),
                None => doc.sections.push(Section {
                    heading: figure.section,
                    blocks: vec![block],
                }),
            }
        }
        out.write_all(doc.to_html().as_bytes())?;
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
