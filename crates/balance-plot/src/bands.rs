//! Band plots: series over steps, each a mean line with a shaded band.

use crate::{
    bold, draw_err, fit_text, fmt_tick, font, palette, render_png, render_svg, text_width, Figure,
    PlotError,
};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One series (e.g. one task's weight) across seeds: a mean line and a shaded band over steps.
///
/// What the band is (min..max, mean ± sd, …) is the caller's choice. The four vectors must
/// have one length. Points with a non-finite step or mean (on a log axis: mean ≤ 0) break the
/// line; the band is drawn where `low` and `high` are finite too.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Legend label.
    pub label: String,
    /// X positions (training steps), ascending.
    pub steps: Vec<f64>,
    /// The line.
    pub mean: Vec<f64>,
    /// Lower edge of the band.
    pub low: Vec<f64>,
    /// Upper edge of the band.
    pub high: Vec<f64>,
}

/// Series over steps, 800 × 450 pixels, legend to the right of the data area.
///
/// The x axis spans the first to the last step; the y axis covers every mean and band value,
/// padded. With no drawable point the renderers return [`PlotError::NoData`].
#[derive(Debug, Clone, PartialEq)]
pub struct BandPlot {
    /// Figure title.
    pub title: String,
    /// X-axis label, e.g. `step`.
    pub x_label: String,
    /// Y-axis label.
    pub y_label: String,
    /// Logarithmic y axis (non-positive values are left out; band edges ≤ 0 are clamped).
    pub log_y: bool,
    /// The series; colours follow the order (Tableau 10, cycling past ten).
    pub series: Vec<Band>,
}

/// Renders `p` as SVG markup (no XML prolog).
pub fn bands_svg(p: &BandPlot) -> Result<String, PlotError> {
    render_svg(&Prepared::new(p)?)
}

/// Renders `p` as a PNG image.
pub fn bands_png(p: &BandPlot) -> Result<Vec<u8>, PlotError> {
    render_png(&Prepared::new(p)?)
}

const SIZE: (u32, u32) = (800, 450);

/// Runs of consecutive drawable points of one series.
struct Runs {
    /// Line segments: (step, mean).
    lines: Vec<Vec<(f64, f64)>>,
    /// Band segments: (step, low, high).
    bands: Vec<Vec<(f64, f64, f64)>>,
}

/// A validated plot with its drawable runs and axis ranges.
struct Prepared<'a> {
    plot: &'a BandPlot,
    runs: Vec<Runs>,
    x: (f64, f64),
    y: (f64, f64),
}

impl<'a> Prepared<'a> {
    fn new(plot: &'a BandPlot) -> Result<Self, PlotError> {
        let ok = |v: f64| v.is_finite() && (!plot.log_y || v > 0.0);
        let mut runs = Vec::with_capacity(plot.series.len());
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for s in &plot.series {
            let lens = [s.steps.len(), s.mean.len(), s.low.len(), s.high.len()];
            if lens.iter().any(|&l| l != lens[0]) {
                return Err(PlotError::LengthMismatch {
                    label: s.label.clone(),
                    lens,
                });
            }
            let mut r = Runs {
                lines: vec![Vec::new()],
                bands: vec![Vec::new()],
            };
            for i in 0..s.steps.len() {
                let (x, m, lo, hi) = (s.steps[i], s.mean[i], s.low[i], s.high[i]);
                let line_ok = x.is_finite() && ok(m);
                let band_ok = line_ok && lo.is_finite() && ok(hi);
                push_or_break(&mut r.lines, line_ok.then_some((x, m)));
                push_or_break(&mut r.bands, band_ok.then_some((x, lo, hi)));
                if line_ok {
                    xs.push(x);
                    ys.push(m);
                }
                if band_ok {
                    ys.push(hi);
                    if ok(lo) {
                        ys.push(lo);
                    }
                }
            }
            r.lines.retain(|l| !l.is_empty());
            r.bands.retain(|b| b.len() > 1);
            runs.push(r);
        }
        let (Some(x), Some(y)) = (min_max(&xs), min_max(&ys)) else {
            return Err(PlotError::NoData(plot.title.clone()));
        };
        let x = if x.1 > x.0 { x } else { (x.0, x.0 + 1.0) };
        let y = if plot.log_y {
            let (lo, hi) = if y.1 > y.0 { y } else { (y.0 / 2.0, y.0 * 2.0) };
            let pad = (hi / lo).powf(0.04);
            (lo / pad, hi * pad)
        } else {
            let span = y.1 - y.0;
            let pad = if span > 0.0 {
                0.05 * span
            } else {
                0.1 * y.0.abs().max(1.0)
            };
            (y.0 - pad, y.1 + pad)
        };
        Ok(Self { plot, runs, x, y })
    }
}

/// Appends `p` to the last run, or starts a new run when `p` is `None`.
fn push_or_break<T>(runs: &mut Vec<Vec<T>>, p: Option<T>) {
    match (p, runs.last_mut()) {
        (Some(p), Some(last)) => last.push(p),
        (Some(p), None) => runs.push(vec![p]),
        (None, Some(last)) if last.is_empty() => {}
        (None, _) => runs.push(Vec::new()),
    }
}

fn min_max(v: &[f64]) -> Option<(f64, f64)> {
    let lo = v.iter().copied().reduce(f64::min)?;
    let hi = v.iter().copied().reduce(f64::max)?;
    Some((lo, hi))
}

impl Figure for Prepared<'_> {
    fn size(&self) -> (u32, u32) {
        SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        // Legend column on the right, as wide as the longest label (within bounds).
        let legend_font = font(13.0);
        let mut widest = 0;
        for s in &self.plot.series {
            widest = widest.max(text_width(root, &s.label, &legend_font)?);
        }
        let legend_w = (widest + 48).clamp(90, SIZE.0 * 2 / 5);
        let (plot_area, legend) = root.split_horizontally(SIZE.0 - legend_w);
        if self.plot.log_y {
            self.draw_chart(&plot_area, (self.y.0..self.y.1).log_scale())?;
        } else {
            self.draw_chart(&plot_area, self.y.0..self.y.1)?;
        }

        // Legend: a swatch (band colour behind the line colour) and the label per series.
        let style = legend_font.pos(Pos::new(HPos::Left, VPos::Center));
        for (i, s) in self.plot.series.iter().enumerate() {
            let colour = palette(i);
            let y = 52 + 22 * i as i32;
            if y > SIZE.1 as i32 - 12 {
                break;
            }
            legend
                .draw(&Rectangle::new(
                    [(4, y - 6), (28, y + 6)],
                    colour.mix(0.2).filled(),
                ))
                .map_err(draw_err)?;
            legend
                .draw(&PathElement::new(
                    vec![(4, y), (28, y)],
                    colour.stroke_width(3),
                ))
                .map_err(draw_err)?;
            let label = fit_text(root, &s.label, &legend_font, legend_w - 44)?;
            legend
                .draw_text(&label, &style, (34, y))
                .map_err(draw_err)?;
        }
        Ok(())
    }
}

impl Prepared<'_> {
    /// The title, axes and series on `area`, with y coordinates `y_coord`.
    fn draw_chart<DB, Y>(&self, area: &DrawingArea<DB, Shift>, y_coord: Y) -> Result<(), PlotError>
    where
        DB: DrawingBackend,
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(area)
            .caption(self.plot.title.as_str(), bold(18.0))
            .margin(12)
            .margin_right(16)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(self.x.0..self.x.1, y_coord)
            .map_err(draw_err)?;
        let x_span = self.x.1 - self.x.0;
        // A log axis has no ticks near zero to clean up.
        let y_span = if self.plot.log_y {
            0.0
        } else {
            self.y.1 - self.y.0
        };
        chart
            .configure_mesh()
            .x_desc(self.plot.x_label.as_str())
            .y_desc(self.plot.y_label.as_str())
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&|v| fmt_tick(*v, x_span))
            .y_label_formatter(&|v| fmt_tick(*v, y_span))
            .axis_desc_style(font(14.0))
            .label_style(font(12.0))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(0xe4, 0xe4, 0xe4))
            .draw()
            .map_err(draw_err)?;

        let y_min = self.y.0;
        for (i, r) in self.runs.iter().enumerate() {
            let fill = palette(i).mix(0.18).filled();
            chart
                .draw_series(r.bands.iter().map(|b| {
                    let upper = b.iter().map(|&(x, _, hi)| (x, hi));
                    let lower = b.iter().rev().map(|&(x, lo, _)| (x, lo.max(y_min)));
                    Polygon::new(upper.chain(lower).collect::<Vec<_>>(), fill)
                }))
                .map_err(draw_err)?;
        }
        for (i, r) in self.runs.iter().enumerate() {
            let colour = palette(i);
            for line in &r.lines {
                if let [only] = line.as_slice() {
                    chart
                        .draw_series(std::iter::once(Circle::new(*only, 3, colour.filled())))
                        .map_err(draw_err)?;
                } else {
                    chart
                        .draw_series(LineSeries::new(
                            line.iter().copied(),
                            colour.stroke_width(2),
                        ))
                        .map_err(draw_err)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::testutil::{decode_png, svg_text};

    fn band(label: &str, scale: f64) -> Band {
        let steps: Vec<f64> = (0..50).map(|i| 100.0 + 10.0 * i as f64).collect();
        let mean: Vec<f64> = steps.iter().map(|s| scale * (1.0 + s / 500.0)).collect();
        Band {
            label: label.into(),
            low: mean.iter().map(|m| m * 0.8).collect(),
            high: mean.iter().map(|m| m * 1.2).collect(),
            steps,
            mean,
        }
    }

    fn plot(log_y: bool) -> BandPlot {
        BandPlot {
            title: "Task weights <seeds> & bands".into(),
            x_label: "step".into(),
            y_label: "weight".into(),
            log_y,
            series: vec![band("task_a", 1.0), band("b<&>", 3.0), band("c", 0.01)],
        }
    }

    #[test]
    fn ranges_start_at_first_step_and_cover_bands() {
        let p = plot(false);
        let prep = Prepared::new(&p).unwrap();
        assert_eq!(prep.x, (100.0, 590.0));
        let max_high = p.series[1].high.iter().copied().fold(0.0, f64::max);
        let min_low = p.series[2].low.iter().copied().fold(1.0, f64::min);
        assert!(prep.y.1 > max_high && prep.y.0 < min_low, "{:?}", prep.y);
    }

    #[test]
    fn non_finite_points_break_lines() {
        let mut p = plot(true);
        p.series[0].mean[10] = f64::NAN;
        p.series[0].mean[20] = -1.0; // not drawable on a log axis
        p.series[0].high[30] = f64::INFINITY;
        let prep = Prepared::new(&p).unwrap();
        assert_eq!(prep.runs[0].lines.len(), 3);
        assert_eq!(prep.runs[0].bands.len(), 4);
        assert!(prep.y.0 > 0.0);
        let svg = bands_svg(&p).unwrap();
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn svg_is_xml_with_escaped_labels() {
        for log_y in [false, true] {
            let svg = bands_svg(&plot(log_y)).unwrap();
            assert!(svg.contains("b&lt;&amp;&gt;"));
            let text = svg_text(&svg);
            for want in [
                "task_a",
                "b<&>",
                "Task weights <seeds> & bands",
                "step",
                "weight",
            ] {
                assert!(text.contains(want), "missing {want:?}");
            }
        }
    }

    #[test]
    fn png_decodes_with_size_and_content() {
        for log_y in [false, true] {
            let (w, h, colours) = decode_png(&bands_png(&plot(log_y)).unwrap());
            assert_eq!((w, h), SIZE);
            assert!(colours > 2, "only {colours} colours");
        }
    }

    #[test]
    fn length_mismatch_and_no_data_are_errors() {
        let mut p = plot(false);
        p.series[1].low.pop();
        assert!(matches!(
            bands_svg(&p),
            Err(PlotError::LengthMismatch { ref label, lens: [50, 50, 49, 50] }) if label == "b<&>"
        ));
        p.series.clear();
        assert!(matches!(bands_png(&p), Err(PlotError::NoData(_))));
        let mut p = plot(true);
        for s in &mut p.series {
            s.mean.iter_mut().for_each(|m| *m = 0.0);
        }
        assert!(matches!(bands_svg(&p), Err(PlotError::NoData(_))));
    }
}
