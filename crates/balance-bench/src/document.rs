//! The report as a document: titled sections of paragraphs, lists and tables, built once and rendered
//! as Markdown (stdout and `report.md`) or as HTML (`report.html`, where the figures are added inline).

use std::fmt::Write as _;

use balance_plot::html::{Block, Cell, Emphasis, HtmlReport, Section, Table};

use crate::report::{first_seen, QualityRow, Report, Verdict};
use crate::stats::Interval;

/// The document's title.
pub const TITLE: &str = "balance-bench report";

/// What the quality tables' marks mean.
pub const SIGNIFICANCE_LEGEND: &str = "Differences to the baseline are paired by seed (mean and 95 % t interval of the per-seed differences); * marks an interval that excludes 0 (one test on its own), † a Holm-adjusted p-value below 0.05 over the test's family (every balancer and task of one dataset, model and metric).";

/// Heading of the quality section of `metric`.
pub fn quality_heading(metric: &str, higher_is_better: bool) -> String {
    let direction = if higher_is_better {
        "higher is better"
    } else {
        "lower is better"
    };
    format!("Quality: {metric} ({direction})")
}

/// Every section of the report, in reading order: settings, data, verdict, resolution, quality per
/// metric, cost, weights and (when any method reports them) its own measurements.
pub fn document(report: &Report) -> HtmlReport {
    let mut sections = vec![
        Section {
            heading: "Settings".into(),
            blocks: vec![Block::Paragraph(settings_sentence(report))],
        },
        Section {
            heading: "Data".into(),
            blocks: vec![Block::List(data_sentences(report))],
        },
        verdicts(report),
        resolution(report),
    ];
    for metric in metric_names(report) {
        sections.push(quality(report, metric));
    }
    sections.push(cost(report));
    sections.push(weights(report));
    if report.weights.iter().any(|w| !w.extras.is_empty()) {
        sections.push(measurements(report));
    }
    HtmlReport {
        title: TITLE.into(),
        sections,
    }
}

/// The document as Markdown (figures are left out: Markdown readers find them in `plots/`).
pub fn to_markdown(doc: &HtmlReport) -> String {
    let mut out = format!("# {}\n", doc.title);
    for section in &doc.sections {
        let _ = write!(out, "\n## {}\n", section.heading);
        for block in &section.blocks {
            out.push('\n');
            match block {
                Block::Paragraph(text) => {
                    let _ = writeln!(out, "{text}");
                }
                Block::Warning(text) => {
                    let _ = writeln!(out, "> **Warning:** {text}");
                }
                Block::List(items) => {
                    for item in items {
                        let _ = writeln!(out, "- {item}");
                    }
                }
                Block::Table(table) => markdown_table(&mut out, table),
                Block::Figure(_) => {}
            }
        }
    }
    out
}

fn markdown_table(out: &mut String, table: &Table) {
    if let Some(caption) = &table.caption {
        let _ = writeln!(out, "**{caption}**\n");
    }
    let cell = |text: &str| text.replace('|', "\\|");
    let header: Vec<String> = table.header.iter().map(|h| cell(h)).collect();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(table.header.len()));
    for row in &table.rows {
        let cells: Vec<String> = row.iter().map(|c| cell(&c.text)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
}

fn table(header: &[&str], rows: Vec<Vec<Cell>>) -> Block {
    Block::Table(Table {
        caption: None,
        header: header.iter().map(|h| h.to_string()).collect(),
        rows,
    })
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

/// The metrics of the report in first-seen order.
pub fn metric_names(report: &Report) -> Vec<&str> {
    first_seen(report.quality.iter().map(|q| q.metric.as_str()))
}

/// `0.8041 [0.8038, 0.8044]`, or `undefined`.
pub fn fmt_interval(value: Option<Interval>) -> String {
    value.map_or("undefined".into(), |v| {
        format!("{:.4} [{:.4}, {:.4}]", v.mean, v.low, v.high)
    })
}

/// A p-value: 3 decimals, two significant digits below 0.001, `<1e-6` below that.
pub fn fmt_p(p: Option<f64>) -> String {
    match p {
        None => String::new(),
        Some(p) if p < 1e-6 => "<1e-6".into(),
        Some(p) if p < 1e-3 => format!("{p:.1e}"),
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

fn fmt_values(values: &[f64]) -> String {
    let parts: Vec<String> = values.iter().map(|x| format!("{x:.3}")).collect();
    format!("[{}]", parts.join(", "))
}

/// How a difference to the baseline is highlighted: good or bad beyond noise (Holm), else muted.
fn emphasis_of(q: &QualityRow) -> Emphasis {
    match (q.vs_static.is_some(), q.significant_holm, q.improves()) {
        (false, _, _) => Emphasis::None,
        (true, true, true) => Emphasis::Good,
        (true, true, false) => Emphasis::Bad,
        (true, false, _) => Emphasis::Muted,
    }
}

fn verdicts(report: &Report) -> Section {
    let mut rows: Vec<_> = report.verdicts.iter().collect();
    rows.sort_by_key(|v| (v.dataset.clone(), v.model.clone(), v.verdict as u8));
    let rows = rows
        .into_iter()
        .map(|v| {
            let emphasis = match v.verdict {
                Verdict::Improves => Emphasis::Good,
                Verdict::Hurts => Emphasis::Bad,
                Verdict::TradeOff => Emphasis::Strong,
                Verdict::NoResolvedDifference => Emphasis::Muted,
            };
            vec![
                v.dataset.as_str().into(),
                v.model.as_str().into(),
                v.balancer.as_str().into(),
                Cell::new(v.verdict.as_str(), emphasis),
                v.improved.join("; ").into(),
                v.hurt.join("; ").into(),
            ]
        })
        .collect();
    Section {
        heading: "Verdict against the baseline".into(),
        blocks: vec![
            Block::Paragraph("Per dataset and model, on each task's primary metric (AUC, or MSE for regression), with Holm-adjusted significance: *improves* = some task better beyond noise and none worse (Pareto against the baseline), *hurts* = some worse and none better, *trade-off* = both.".into()),
            table(
                &["dataset", "model", "balancer", "verdict", "better beyond noise", "worse beyond noise"],
                rows,
            ),
        ],
    }
}

fn resolution(report: &Report) -> Section {
    let mut blocks = vec![Block::Paragraph("The smallest difference to the baseline this run can tell from noise, per task: the median over balancers of the paired 95 % half-width. Smaller differences are not answered by this run.".into())];
    let rows = report
        .resolution
        .iter()
        .map(|r| {
            vec![
                r.dataset.as_str().into(),
                r.model.as_str().into(),
                r.task.as_str().into(),
                r.metric.as_str().into(),
                r.eval_rows.to_string().into(),
                r.eval_positives
                    .map_or("n/a".into(), |p| p.to_string())
                    .into(),
                r.seeds.to_string().into(),
                r.resolvable
                    .map_or("n/a".into(), |w| format!("±{w:.4}"))
                    .into(),
                Cell::new(
                    r.warning.clone().unwrap_or_default(),
                    if r.warning.is_some() {
                        Emphasis::Bad
                    } else {
                        Emphasis::None
                    },
                ),
            ]
        })
        .collect();
    blocks.push(table(
        &[
            "dataset",
            "model",
            "task",
            "metric",
            "held-out rows",
            "held-out positives",
            "seeds",
            "resolvable difference",
            "note",
        ],
        rows,
    ));
    Section {
        heading: "Resolution".into(),
        blocks,
    }
}

fn quality(report: &Report, metric: &str) -> Section {
    let rows: Vec<&QualityRow> = report
        .quality
        .iter()
        .filter(|q| q.metric == metric)
        .collect();
    let higher_is_better = rows.first().is_some_and(|q| q.higher_is_better);
    let families: Vec<String> = report
        .test_families
        .iter()
        .filter(|f| f.metric == metric)
        .map(|f| format!("{} / {} / {metric}: {} tests", f.dataset, f.model, f.tests))
        .collect();
    let mut blocks = vec![Block::Paragraph(SIGNIFICANCE_LEGEND.into())];
    if !families.is_empty() {
        blocks.push(Block::Paragraph(format!(
            "Holm families: {}.",
            families.join("; ")
        )));
    }
    let cells = rows
        .into_iter()
        .map(|q| {
            let baseline = report.baseline.as_deref() == Some(q.balancer.as_str());
            vec![
                q.dataset.as_str().into(),
                q.model.as_str().into(),
                q.balancer.as_str().into(),
                q.task.as_str().into(),
                fmt_interval(q.value).into(),
                Cell::new(fmt_vs_static(q, baseline), emphasis_of(q)),
                fmt_p(q.vs_static.and_then(|d| d.p_value)).into(),
                fmt_p(q.p_holm).into(),
            ]
        })
        .collect();
    blocks.push(table(
        &[
            "dataset",
            "model",
            "balancer",
            "task",
            "mean [95 % CI]",
            "vs baseline [95 % CI]",
            "p",
            "p (Holm)",
        ],
        cells,
    ));
    Section {
        heading: quality_heading(metric, higher_is_better),
        blocks,
    }
}

fn cost(report: &Report) -> Section {
    let opt =
        |v: Option<f64>, suffix: &str| v.map_or("n/a".to_string(), |x| format!("{x:.2}{suffix}"));
    let rows = report
        .cost
        .iter()
        .map(|c| {
            vec![
                c.dataset.as_str().into(),
                c.model.as_str().into(),
                c.balancer.as_str().into(),
                format!("{:.2}", c.step_ms).into(),
                format!("{:.2}x", c.ratio_vs_static).into(),
                opt(c.peak_mib, "").into(),
                opt(c.memory_ratio_vs_static, "x").into(),
            ]
        })
        .collect();
    Section {
        heading: "Cost".into(),
        blocks: vec![
            Block::Paragraph("Median step time of the runs in this process; peak resident-set growth over the first 20 steps, each configuration alone in a child process; ratios to the baseline.".into()),
            table(
                &["dataset", "model", "balancer", "ms/step", "time ratio", "peak MiB", "memory ratio"],
                rows,
            ),
        ],
    }
}

fn weights(report: &Report) -> Section {
    let rows = report
        .weights
        .iter()
        .map(|w| {
            vec![
                w.dataset.as_str().into(),
                w.model.as_str().into(),
                w.balancer.as_str().into(),
                w.tasks.join(", ").into(),
                fmt_values(&w.initial).into(),
                fmt_values(&w.last).into(),
            ]
        })
        .collect();
    Section {
        heading: "Weights".into(),
        blocks: vec![
            Block::Paragraph(
                "Mean over seeds: applied at the first step, and mean applied over the last epoch."
                    .into(),
            ),
            table(
                &["dataset", "model", "balancer", "tasks", "first step", "end"],
                rows,
            ),
        ],
    }
}

fn measurements(report: &Report) -> Section {
    let rows = report
        .weights
        .iter()
        .flat_map(|w| {
            w.extras.iter().map(move |(name, values)| {
                vec![
                    w.dataset.as_str().into(),
                    w.model.as_str().into(),
                    w.balancer.as_str().into(),
                    name.as_str().into(),
                    fmt_values(values).into(),
                ]
            })
        })
        .collect();
    Section {
        heading: "Method measurements".into(),
        blocks: vec![
            Block::Paragraph("Each method's own step extras, mean over steps and seeds; per task unless one value.".into()),
            table(&["dataset", "model", "balancer", "measure", "value"], rows),
        ],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn p_values_keep_their_magnitude() {
        assert_eq!(fmt_p(None), "");
        assert_eq!(fmt_p(Some(0.04321)), "0.043");
        assert_eq!(fmt_p(Some(0.000_123)), "1.2e-4");
        assert_eq!(fmt_p(Some(1e-9)), "<1e-6");
    }

    #[test]
    fn markdown_tables_escape_pipes_and_lists_render_as_bullets() {
        let doc = HtmlReport {
            title: "t".into(),
            sections: vec![Section {
                heading: "S".into(),
                blocks: vec![
                    Block::List(vec!["one".into(), "two".into()]),
                    Block::Warning("careful".into()),
                    table(&["a", "b|c"], vec![vec!["x|y".into(), "2".into()]]),
                ],
            }],
        };
        assert_eq!(
            to_markdown(&doc),
            "# t\n\n## S\n\n- one\n- two\n\n> **Warning:** careful\n\n| a | b\\|c |\n|---|---|\n| x\\|y | 2 |\n"
        );
    }
}
