//! `compare OLD.json NEW.json`: what moved between two reports, per metric, and whether beyond noise.
//!
//! The rule, as implemented: the two reports are independent runs, so a change `new - old` of a row's
//! mean counts as beyond noise when `|new - old| > sqrt(h_old^2 + h_new^2)`, where each `h` is that report's
//! 95 % half-width (`t(n - 1) * se`). Since `t >= 1.96`, this is at least as strict as a z test of two
//! independent means at the 5 % level (stricter with few seeds). Both rows need two or more seeds and a
//! defined value. Better or worse follows the metric's direction (AUC and average precision up, normalized
//! entropy, log loss and MSE down). No adjustment for the number of rows compared: read the count.

use std::io::Write;

use anyhow::Result;

use crate::report::{QualityRow, Report};

/// One matched (dataset, model, balancer, task, metric) and how it moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `dataset / model / balancer / task`.
    pub key: String,
    /// The metric.
    pub metric: String,
    /// Old mean.
    pub old: f64,
    /// New mean.
    pub new: f64,
    /// True when the change exceeds the combined 95 % half-widths (module docs).
    pub beyond_noise: bool,
    /// True when the change is an improvement in the metric's direction.
    pub better: bool,
}

fn same_row(o: &QualityRow, n: &QualityRow) -> bool {
    o.dataset == n.dataset
        && o.model == n.model
        && o.balancer == n.balancer
        && o.task == n.task
        && o.metric == n.metric
}

/// Matches the quality rows of two reports (rows with an undefined value on either side are skipped).
pub fn changes(old: &Report, new: &Report) -> Vec<Change> {
    let mut out = Vec::new();
    for n in &new.quality {
        let Some(o) = old.quality.iter().find(|o| same_row(o, n)) else {
            continue;
        };
        let (Some(ov), Some(nv)) = (o.value, n.value) else {
            continue;
        };
        let noise = (ov.half_width().powi(2) + nv.half_width().powi(2)).sqrt();
        let delta = nv.mean - ov.mean;
        out.push(Change {
            key: format!("{} / {} / {} / {}", n.dataset, n.model, n.balancer, n.task),
            metric: n.metric.clone(),
            old: ov.mean,
            new: nv.mean,
            beyond_noise: ov.n > 1 && nv.n > 1 && noise.is_finite() && delta.abs() > noise,
            better: delta != 0.0 && (delta > 0.0) == n.higher_is_better,
        });
    }
    out
}

/// Writes the comparison as a Markdown table and a count.
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
        "\n{} compared: {better} better, {worse} worse beyond noise, {} within noise (each row tested on its own at 5 %: about 1 in 20 unchanged rows crosses by chance)",
        changes.len(),
        changes.len() - better - worse
    )?;
    Ok(())
}
