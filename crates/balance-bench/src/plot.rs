//! SVG plots written without a plotting dependency: per-task metric with 95 % intervals, weight
//! trajectories and loss curves per balancer.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::report::Report;

const W: f64 = 640.0;
const H: f64 = 360.0;
const PAD: f64 = 50.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One named series of points.
pub struct Series {
    /// Legend label.
    pub label: String,
    /// `(x, y)` points.
    pub points: Vec<(f64, f64)>,
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if (hi - lo).abs() < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else {
        let m = (hi - lo) * 0.05;
        (lo - m, hi + m)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn frame(svg: &mut String, title: &str, x: Option<(f64, f64)>, y: (f64, f64), x_label: &str) {
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>"#
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="13">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    let _ = write!(
        svg,
        r#"<line x1="{PAD}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{}" stroke="black"/>"#,
        H - PAD,
        W - PAD,
        H - PAD,
        H - PAD
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let yv = y.0 + f * (y.1 - y.0);
        let py = H - PAD - f * (H - 2.0 * PAD);
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{:.3}</text>"#,
            PAD - 4.0,
            py + 4.0,
            yv
        );
        let Some(x) = x else { continue };
        let xv = x.0 + f * (x.1 - x.0);
        let px = PAD + f * (W - 2.0 * PAD);
        let _ = write!(
            svg,
            r#"<text x="{px}" y="{}" text-anchor="middle">{:.0}</text>"#,
            H - PAD + 14.0,
            xv
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        W / 2.0,
        H - 12.0,
        escape(x_label)
    );
}

/// A line chart of `series`.
pub fn line_chart(title: &str, x_label: &str, series: &[Series]) -> String {
    let x = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let y = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let mut svg = String::new();
    frame(&mut svg, title, Some(x), y, x_label);
    let sx = |v: f64| PAD + (v - x.0) / (x.1 - x.0) * (W - 2.0 * PAD);
    let sy = |v: f64| H - PAD - (v - y.0) / (y.1 - y.0) * (H - 2.0 * PAD);
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            pts.join(" ")
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" fill="{color}">{}</text>"#,
            W - PAD + 4.0 - 90.0,
            PAD + 14.0 * i as f64,
            escape(&s.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// One point with its interval: `(label, mean, low, high)`.
pub type IntervalPoint = (String, f64, f64, f64);

/// A named group of points (one task).
pub type IntervalGroup = (String, Vec<IntervalPoint>);

/// Points with 95 % intervals: one group per task, one point per balancer.
pub fn interval_chart(title: &str, groups: &[IntervalGroup]) -> String {
    let y = bounds(
        groups
            .iter()
            .flat_map(|g| g.1.iter().flat_map(|p| [p.2, p.3])),
    );
    let slots: usize = groups.iter().map(|g| g.1.len() + 1).sum::<usize>().max(1);
    let mut svg = String::new();
    frame(&mut svg, title, None, y, "task / balancer");
    let sy = |v: f64| H - PAD - (v - y.0) / (y.1 - y.0) * (H - 2.0 * PAD);
    let step = (W - 2.0 * PAD) / slots as f64;
    let mut slot = 0.5;
    for (task, points) in groups {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="start" font-weight="bold">{}</text>"#,
            PAD + slot * step,
            PAD - 8.0,
            escape(task)
        );
        for (i, (label, mean, lo, hi)) in points.iter().enumerate() {
            let px = PAD + slot * step;
            let color = COLORS[i % COLORS.len()];
            let _ = write!(
                svg,
                r#"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"/>"#,
                sy(*lo),
                sy(*hi)
            );
            let _ = write!(
                svg,
                r#"<circle cx="{px:.1}" cy="{:.1}" r="3.5" fill="{color}"><title>{}: {mean:.4}</title></circle>"#,
                sy(*mean),
                escape(label)
            );
            if groups.first().map(|g| &g.0) == Some(task) {
                let _ = write!(
                    svg,
                    r#"<text x="{}" y="{}" fill="{color}">{}</text>"#,
                    W - PAD - 86.0,
                    PAD + 14.0 * i as f64,
                    escape(label)
                );
            }
            slot += 1.0;
        }
        slot += 1.0;
    }
    svg.push_str("</svg>\n");
    svg
}

/// Writes, per (dataset, model): `quality-*.svg`, and per balancer (first seed) `weights-*.svg` and
/// `losses-*.svg`.
pub fn write_all(report: &Report, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    crate::atomic::create_dir(dir)?;
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in &report.runs {
        let k = (r.dataset.clone(), r.model.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let write = |name: String, svg: String| -> Result<()> {
        let path = dir.join(name.replace(['/', ' ', '{', '}', '"', ':', ',', '[', ']'], "_"));
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))
    };
    for (dataset, model) in &keys {
        let rows: Vec<_> = report
            .quality
            .iter()
            .filter(|q| &q.dataset == dataset && &q.model == model)
            .collect();
        let mut groups: Vec<IntervalGroup> = Vec::new();
        for q in rows
            .iter()
            .filter(|q| q.metric == "auc" || q.metric == "mse")
        {
            let Some(v) = q.value else { continue };
            let point = (q.balancer.clone(), v.mean, v.low, v.high);
            match groups.iter_mut().find(|g| g.0 == q.task) {
                Some(g) => g.1.push(point),
                None => groups.push((q.task.clone(), vec![point])),
            }
        }
        let metric = rows.first().map_or("metric", |q| q.metric.as_str());
        write(
            format!("quality-{dataset}-{model}.svg"),
            interval_chart(
                &format!("{dataset} / {model}: validation {metric}, mean and 95 % interval"),
                &groups,
            ),
        )?;
        for w in report
            .weights
            .iter()
            .filter(|w| &w.dataset == dataset && &w.model == model)
        {
            let Some(run) = report.runs.iter().find(|r| {
                &r.dataset == dataset && &r.model == model && r.seed == 0 && r.label == w.balancer
            }) else {
                continue;
            };
            let per_task = |traj: &Vec<Vec<f64>>| -> Vec<Series> {
                run.tasks
                    .iter()
                    .enumerate()
                    .map(|(t, name)| Series {
                        label: name.clone(),
                        points: run
                            .trajectory_steps
                            .iter()
                            .zip(traj)
                            .map(|(s, v)| (*s as f64, v.get(t).copied().unwrap_or(f64::NAN)))
                            .collect(),
                    })
                    .collect()
            };
            write(
                format!("weights-{dataset}-{model}-{}.svg", w.balancer),
                line_chart(
                    &format!(
                        "{dataset} / {model} / {}: task weights (seed 0)",
                        w.balancer
                    ),
                    "step",
                    &per_task(&run.weight_trajectory),
                ),
            )?;
            write(
                format!("losses-{dataset}-{model}-{}.svg", w.balancer),
                line_chart(
                    &format!(
                        "{dataset} / {model} / {}: training losses (seed 0)",
                        w.balancer
                    ),
                    "step",
                    &per_task(&run.loss_trajectory),
                ),
            )?;
        }
    }
    Ok(Vec::new())
}
