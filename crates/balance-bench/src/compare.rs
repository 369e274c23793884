//! `compare OLD.json NEW.json`: what moved between two reports, and whether beyond noise.

use std::io::Write;

use anyhow::Result;

use crate::report::Report;

/// One matched (dataset, model, balancer, task) and how it moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `dataset / model / balancer / task`.
    pub key: String,
    /// The metric (`auc` or `mse`).
    pub metric: String,
    /// Old mean.
    pub old: f64,
    /// New mean.
    pub new: f64,
    /// True when the change is larger than 1.96 combined standard errors (from both intervals).
    pub beyond_noise: bool,
    /// True when the change is an improvement (AUC up, MSE down).
    pub better: bool,
}

/// Matches the quality rows of two reports.
pub fn changes(old: &Report, new: &Report) -> Vec<Change> {
    let mut out = Vec::new();
    for n in &new.quality {
        let Some(o) = old.quality.iter().find(|o| {
            o.dataset == n.dataset
                && o.model == n.model
                && o.balancer == n.balancer
                && o.task == n.task
                && o.metric == n.metric
        }) else {
            continue;
        };
        // The intervals' half widths are t * se; 1.96 * sqrt(se_old^2 + se_new^2) with se ~ half / 1.96
        // (conservative for few seeds, whose t quantile is larger).
        let noise = (o.value.half_width().powi(2) + n.value.half_width().powi(2)).sqrt();
        let delta = n.value.mean - o.value.mean;
        out.push(Change {
            key: format!("{} / {} / {} / {}", n.dataset, n.model, n.balancer, n.task),
            metric: n.metric.clone(),
            old: o.value.mean,
            new: n.value.mean,
            beyond_noise: delta.abs() > noise
                && noise.is_finite()
                && (o.value.n > 1 || n.value.n > 1),
            better: if n.metric == "mse" {
                delta < 0.0
            } else {
                delta > 0.0
            },
        });
    }
    out
}

/// Writes the comparison as a Markdown table.
pub fn write(old: &Report, new: &Report, out: &mut dyn Write) -> Result<()> {
    let changes = changes(old, new);
    writeln!(
        out,
        "| dataset / model / balancer / task | metric | old | new | change | verdict |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for c in &changes {
        let verdict = match (c.beyond_noise, c.better) {
            (false, _) => "within noise",
            (true, true) => "better",
            (true, false) => "worse",
        };
        writeln!(
            out,
            "| {} | {} | {:.4} | {:.4} | {:+.4} | {} |",
            c.key,
            c.metric,
            c.old,
            c.new,
            c.new - c.old,
            verdict
        )?;
    }
    let better = changes
        .iter()
        .filter(|c| c.beyond_noise && c.better)
        .count();
    let worse = changes
        .iter()
        .filter(|c| c.beyond_noise && !c.better)
        .count();
    writeln!(
        out,
        "\n{} compared: {better} better, {worse} worse beyond noise, {} within noise",
        changes.len(),
        changes.len() - better - worse
    )?;
    Ok(())
}
