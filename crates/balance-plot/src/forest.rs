//! Forest plots: one row per balancer, its paired difference to the baseline with a 95 % interval.

use crate::{
    bold, decimals_for, draw_err, fit_text, fmt_signed, fmt_tick, font, render_png, render_svg,
    text_width, Figure, PlotError,
};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One balancer's paired difference to the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct ForestRow {
    /// Row label, e.g. `grad_norm(progress=prior)`; long labels get a wider label area.
    pub label: String,
    /// Mean paired difference (balancer − baseline).
    pub mean: f64,
    /// Lower end of the 95 % interval.
    pub low: f64,
    /// Upper end of the 95 % interval.
    pub high: f64,
    /// Whether the difference is significant (drawn filled and coloured; otherwise hollow grey).
    pub significant: bool,
}

/// A forest plot: rows sorted best first, a zero line, whiskers for the 95 % intervals.
///
/// Size is 800 × (120 + 28 · rows) pixels. Rows whose `mean`, `low` or `high` is not finite
/// are skipped; with no row left the renderers return [`PlotError::NoData`].
#[derive(Debug, Clone, PartialEq)]
pub struct ForestPlot {
    /// Figure title.
    pub title: String,
    /// X-axis label, e.g. `Δ test loss (balancer − static)`.
    pub x_label: String,
    /// Whether a larger difference is better: decides the row order (best on top) and the
    /// colour of significant rows (better / worse).
    pub higher_is_better: bool,
    /// The rows, in any order.
    pub rows: Vec<ForestRow>,
}

/// Renders `p` as SVG markup (no XML prolog).
pub fn forest_svg(p: &ForestPlot) -> Result<String, PlotError> {
    render_svg(&Prepared::new(p)?)
}

/// Renders `p` as a PNG image.
pub fn forest_png(p: &ForestPlot) -> Result<Vec<u8>, PlotError> {
    render_png(&Prepared::new(p)?)
}

/// Okabe–Ito blue: significantly better.
const BETTER: RGBColor = RGBColor(0x00, 0x72, 0xb2);
/// Okabe–Ito vermillion: significantly worse.
const WORSE: RGBColor = RGBColor(0xd5, 0x5e, 0x00);
/// Not significant.
const MUTED: RGBColor = RGBColor(0x99, 0x99, 0x99);
/// Text and the zero line.
const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);

const WIDTH: u32 = 800;
const ROW_PX: u32 = 28;
const TOP_PX: u32 = 70;
const BOTTOM_PX: u32 = 50;
const LABEL_PT: f64 = 14.0;

/// A validated plot: finite rows, sorted best first.
struct Prepared<'a> {
    plot: &'a ForestPlot,
    rows: Vec<&'a ForestRow>,
}

impl<'a> Prepared<'a> {
    fn new(plot: &'a ForestPlot) -> Result<Self, PlotError> {
        let mut rows = sorted_rows(plot);
        if rows.is_empty() {
            return Err(PlotError::NoData(plot.title.clone()));
        }
        rows.shrink_to_fit();
        Ok(Self { plot, rows })
    }

    fn colour(&self, r: &ForestRow) -> RGBColor {
        if !r.significant {
            MUTED
        } else if (r.mean > 0.0) == self.plot.higher_is_better {
            BETTER
        } else {
            WORSE
        }
    }
}

/// The finite rows of `p`, best first.
fn sorted_rows(p: &ForestPlot) -> Vec<&ForestRow> {
    let mut rows: Vec<&ForestRow> = p
        .rows
        .iter()
        .filter(|r| r.mean.is_finite() && r.low.is_finite() && r.high.is_finite())
        .collect();
    if p.higher_is_better {
        rows.sort_by(|a, b| b.mean.total_cmp(&a.mean));
    } else {
        rows.sort_by(|a, b| a.mean.total_cmp(&b.mean));
    }
    rows
}

/// The x range: every interval and 0, padded by 6 % on each side.
fn x_range(rows: &[&ForestRow]) -> (f64, f64) {
    let lo = rows.iter().map(|r| r.low.min(r.high)).fold(0.0, f64::min);
    let hi = rows.iter().map(|r| r.low.max(r.high)).fold(0.0, f64::max);
    let span = hi - lo;
    if span <= 0.0 {
        return (-1.0, 1.0);
    }
    (lo - 0.06 * span, hi + 0.06 * span)
}

impl Figure for Prepared<'_> {
    fn size(&self) -> (u32, u32) {
        (WIDTH, 120 + ROW_PX * self.rows.len() as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let n = self.rows.len();
        let label_font = font(LABEL_PT);
        let label_bold = bold(LABEL_PT);
        let value_font = font(12.0);

        // Label areas sized by the longest text (bold is widest), within bounds.
        let mut left = 0;
        let mut right = 0;
        let (x0, x1) = x_range(&self.rows);
        let dec = decimals_for(x1 - x0);
        let values: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                format!(
                    "{} [{}, {}]",
                    fmt_signed(r.mean, dec),
                    fmt_signed(r.low.min(r.high), dec),
                    fmt_signed(r.low.max(r.high), dec)
                )
            })
            .collect();
        for (r, v) in self.rows.iter().zip(&values) {
            left = left.max(text_width(root, &r.label, &label_bold)?);
            right = right.max(text_width(root, v, &value_font)?);
        }
        let left = (left + 20).clamp(60, WIDTH * 2 / 5);
        let right = (right + 16).clamp(40, WIDTH / 4);

        // Title and key above the data area.
        root.draw_text(
            &self.plot.title,
            &bold(18.0).pos(Pos::new(HPos::Left, VPos::Top)),
            (12, 10),
        )
        .map_err(draw_err)?;
        self.draw_key(root, 12, 44)?;

        let mut chart = ChartBuilder::on(root)
            .margin_top(TOP_PX)
            .margin_left(left)
            .margin_right(right)
            .x_label_area_size(BOTTOM_PX - 5)
            .build_cartesian_2d(x0..x1, -0.5..(n as f64 - 0.5))
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_labels(8)
            .x_label_formatter(&|v| fmt_tick(*v, x1 - x0))
            .x_desc(self.plot.x_label.as_str())
            .axis_desc_style(font(14.0))
            .label_style(font(12.0))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(0xe4, 0xe4, 0xe4))
            .draw()
            .map_err(draw_err)?;

        // Zebra stripes to guide the eye from label to whisker.
        chart
            .draw_series((0..n).filter(|i| i % 2 == 1).map(|i| {
                let y = (n - 1 - i) as f64;
                Rectangle::new(
                    [(x0, y - 0.5), (x1, y + 0.5)],
                    RGBColor(0xf4, 0xf4, 0xf4).filled(),
                )
            }))
            .map_err(draw_err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, -0.5), (0.0, n as f64 - 0.5)],
                INK.stroke_width(1),
            )))
            .map_err(draw_err)?;

        for (i, (r, value)) in self.rows.iter().zip(&values).enumerate() {
            let y = (n - 1 - i) as f64;
            let colour = self.colour(r);
            let line = colour.stroke_width(if r.significant { 2 } else { 1 });
            let (lo, hi) = (r.low.min(r.high), r.low.max(r.high));
            chart
                .draw_series([
                    PathElement::new(vec![(lo, y), (hi, y)], line),
                    PathElement::new(vec![(lo, y - 0.2), (lo, y + 0.2)], line),
                    PathElement::new(vec![(hi, y - 0.2), (hi, y + 0.2)], line),
                ])
                .map_err(draw_err)?;
            if r.significant {
                chart
                    .draw_series(std::iter::once(Circle::new(
                        (r.mean, y),
                        5,
                        colour.filled(),
                    )))
                    .map_err(draw_err)?;
            } else {
                chart
                    .draw_series([
                        Circle::new((r.mean, y), 5, WHITE.filled()),
                        Circle::new((r.mean, y), 5, colour.stroke_width(2)),
                    ])
                    .map_err(draw_err)?;
            }

            let (px_left, py) = chart.backend_coord(&(x0, y));
            let (px_right, _) = chart.backend_coord(&(x1, y));
            let (style, ink) = if r.significant {
                (&label_bold, INK)
            } else {
                (&label_font, RGBColor(0x55, 0x55, 0x55))
            };
            let label = fit_text(root, &r.label, style, left - 16)?;
            root.draw_text(
                &label,
                &style.color(&ink).pos(Pos::new(HPos::Right, VPos::Center)),
                (px_left - 10, py),
            )
            .map_err(draw_err)?;
            let value = fit_text(root, value, &value_font, right - 10)?;
            root.draw_text(
                &value,
                &value_font
                    .color(&ink)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
                (px_right + 8, py),
            )
            .map_err(draw_err)?;
        }
        Ok(())
    }
}

impl Prepared<'_> {
    /// The key: marker meanings and which direction is better, in one line at (`x`, `y`).
    fn draw_key<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        mut x: i32,
        y: i32,
    ) -> Result<(), PlotError> {
        let style = font(12.0).pos(Pos::new(HPos::Left, VPos::Center));
        let items = [
            (BETTER, true, "significantly better"),
            (WORSE, true, "significantly worse"),
            (MUTED, false, "not significant"),
        ];
        for (colour, filled, text) in items {
            if filled {
                root.draw(&Circle::new((x + 5, y), 5, colour.filled()))
                    .map_err(draw_err)?;
            } else {
                root.draw(&Circle::new((x + 5, y), 5, colour.stroke_width(2)))
                    .map_err(draw_err)?;
            }
            root.draw_text(text, &style, (x + 15, y))
                .map_err(draw_err)?;
            x += 15 + text_width(root, text, &style)? as i32 + 18;
        }
        let hint = if self.plot.higher_is_better {
            "whiskers: 95 % interval · higher is better"
        } else {
            "whiskers: 95 % interval · lower is better"
        };
        root.draw_text(hint, &style.color(&RGBColor(0x55, 0x55, 0x55)), (x, y))
            .map_err(draw_err)?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::testutil::{decode_png, svg_text};

    fn row(label: &str, mean: f64, significant: bool) -> ForestRow {
        ForestRow {
            label: label.into(),
            mean,
            low: mean - 0.1,
            high: mean + 0.1,
            significant,
        }
    }

    fn plot(higher_is_better: bool) -> ForestPlot {
        ForestPlot {
            title: "Δ loss <vs> static & co".into(),
            x_label: "Δ test loss".into(),
            higher_is_better,
            rows: vec![
                row("uncertainty", 0.05, false),
                row("grad_norm(progress=prior)", -0.3, true),
                row("a<b & c", 0.4, true),
                ForestRow {
                    label: "broken".into(),
                    mean: f64::NAN,
                    low: 0.0,
                    high: 1.0,
                    significant: true,
                },
                ForestRow {
                    label: "unbounded".into(),
                    mean: 0.1,
                    low: f64::NEG_INFINITY,
                    high: 1.0,
                    significant: false,
                },
            ],
        }
    }

    fn labels(p: &ForestPlot) -> Vec<&str> {
        sorted_rows(p).iter().map(|r| r.label.as_str()).collect()
    }

    #[test]
    fn sorted_best_first_and_non_finite_skipped() {
        assert_eq!(
            labels(&plot(true)),
            ["a<b & c", "uncertainty", "grad_norm(progress=prior)"]
        );
        assert_eq!(
            labels(&plot(false)),
            ["grad_norm(progress=prior)", "uncertainty", "a<b & c"]
        );
    }

    #[test]
    fn zero_always_in_range() {
        let p = plot(true);
        let pos: Vec<&ForestRow> = p.rows[2..3].iter().collect();
        let (lo, hi) = x_range(&pos);
        assert!(lo < 0.0 && hi > 0.5, "{lo}..{hi}");
        let neg: Vec<&ForestRow> = p.rows[1..2].iter().collect();
        let (lo, hi) = x_range(&neg);
        assert!(lo < -0.4 && hi > 0.0, "{lo}..{hi}");
    }

    #[test]
    fn svg_is_xml_with_escaped_labels() {
        let svg = forest_svg(&plot(true)).unwrap();
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(svg.contains("a&lt;b &amp; c"));
        let text = svg_text(&svg);
        for want in [
            "a<b & c",
            "grad_norm(progress=prior)",
            "uncertainty",
            "Δ loss <vs> static & co",
            "Δ test loss",
            "significantly better",
        ] {
            assert!(text.contains(want), "missing {want:?} in {text}");
        }
        assert!(!text.contains("broken") && !text.contains("unbounded"));
        let height = roxmltree::Document::parse(&svg)
            .unwrap()
            .root_element()
            .attribute("height")
            .unwrap()
            .to_string();
        assert_eq!(height, (120 + 28 * 3).to_string());
    }

    #[test]
    fn png_decodes_with_size_and_content() {
        let bytes = forest_png(&plot(false)).unwrap();
        let (w, h, colours) = decode_png(&bytes);
        assert_eq!((w, h), (800, 120 + 28 * 3));
        assert!(colours > 2, "only {colours} colours");
    }

    #[test]
    fn empty_or_all_non_finite_is_no_data() {
        let mut p = plot(true);
        p.rows.retain(|r| !r.mean.is_finite());
        assert!(matches!(forest_svg(&p), Err(PlotError::NoData(_))));
        p.rows.clear();
        assert!(matches!(forest_png(&p), Err(PlotError::NoData(_))));
    }

    #[test]
    fn significant_rows_are_coloured_by_direction() {
        let p = plot(false);
        let prepared = Prepared::new(&p).unwrap();
        assert_eq!(prepared.colour(&p.rows[1]), BETTER); // lower and significant
        assert_eq!(prepared.colour(&p.rows[2]), WORSE); // higher and significant
        assert_eq!(prepared.colour(&p.rows[0]), MUTED);
    }
}
