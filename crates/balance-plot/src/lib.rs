//! Figures for balance benchmark reports, and a self-contained HTML report writer.
//!
//! Pure rendering: plain data in, SVG markup or PNG bytes out, drawn with
//! [`plotters`]. Two kinds of figure:
//!
//! - [`ForestPlot`]: each balancer's paired difference to a baseline with its 95 % interval
//!   ([`forest_svg`], [`forest_png`]);
//! - [`BandPlot`]: series over training steps, a mean line with a shaded band
//!   ([`bands_svg`], [`bands_png`]).
//!
//! Text is laid out (and, in PNGs, rasterised) with DejaVu Sans embedded in the binary, so
//! output never depends on the fonts of the machine it is made on. SVG text names
//! `DejaVu Sans, Verdana, sans-serif`, so a viewer without DejaVu falls back to a sans-serif of
//! similar width.
//!
//! [`html`] writes a single-file `report.html` (inline CSS, inline figures, no network).
//!
//! ```
//! use balance_plot::{forest_svg, ForestPlot, ForestRow};
//!
//! let plot = ForestPlot {
//!     title: "Test loss vs. static weights".into(),
//!     x_label: "Δ test loss (balancer − static)".into(),
//!     higher_is_better: false,
//!     rows: vec![
//!         ForestRow { label: "gradnorm".into(), mean: -0.12, low: -0.2, high: -0.04, significant: true },
//!         ForestRow { label: "uncertainty".into(), mean: 0.01, low: -0.05, high: 0.07, significant: false },
//!     ],
//! };
//! let svg = forest_svg(&plot)?;
//! assert!(svg.starts_with("<svg") && svg.contains("gradnorm"));
//! # Ok::<(), balance_plot::PlotError>(())
//! ```

mod bands;
mod forest;
pub mod html;

pub use bands::{bands_png, bands_svg, Band, BandPlot};
pub use forest::{forest_png, forest_svg, ForestPlot, ForestRow};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::sync::OnceLock;

/// Why a figure could not be drawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlotError {
    /// Nothing to draw: no rows/series, or none with finite values (for a log axis: positive
    /// values). Callers typically put a warning in the report instead of the figure.
    #[error("nothing to plot in \"{0}\": no finite data")]
    NoData(String),
    /// A [`Band`]'s `steps`, `mean`, `low` and `high` differ in length.
    #[error("series \"{label}\": steps, mean, low and high must have one length, got {lens:?}")]
    LengthMismatch {
        /// The series' label.
        label: String,
        /// Lengths of `steps`, `mean`, `low`, `high`.
        lens: [usize; 4],
    },
    /// The embedded font could not be loaded (should not happen).
    #[error("embedded font could not be registered")]
    Font,
    /// The drawing backend failed.
    #[error("drawing failed: {0}")]
    Draw(String),
    /// PNG encoding failed.
    #[error("PNG encoding failed: {0}")]
    Encode(String),
}

/// The font family every text element uses; registered with the embedded DejaVu Sans.
const FAMILY: &str = "DejaVu Sans, Verdana, sans-serif";

/// Registers the embedded fonts with plotters once (under [`FAMILY`] and plotters' default
/// `sans-serif`, which its mesh uses for tick labels unless told otherwise).
fn ensure_fonts() -> Result<(), PlotError> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        [FAMILY, "sans-serif"].iter().all(|name| {
            plotters::style::register_font(name, FontStyle::Normal, dejavu::sans::regular()).is_ok()
                && plotters::style::register_font(name, FontStyle::Bold, dejavu::sans::bold())
                    .is_ok()
        })
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

/// A text style in the embedded font.
fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size).into_font())
}

/// A bold text style in the embedded font.
fn bold(size: f64) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size, FontStyle::Bold).into_font())
}

/// Maps any plotters error to [`PlotError::Draw`].
fn draw_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// Tableau 10: ten clearly distinct colours, in plotting order.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x9c, 0x75, 0x5f),
    RGBColor(0xba, 0xb0, 0xac),
];

/// The `i`-th series colour, cycling only past the palette's length.
fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A figure that can be drawn on any plotters backend.
trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws the whole figure on `root` (already white).
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>;
}

/// Renders `fig` as SVG markup (no XML prolog, so it can be inlined in HTML).
fn render_svg(fig: &impl Figure) -> Result<String, PlotError> {
    ensure_fonts()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, fig.size()).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        fig.draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    Ok(out)
}

/// Renders `fig` as an 8-bit RGB PNG.
fn render_png(fig: &impl Figure) -> Result<Vec<u8>, PlotError> {
    ensure_fonts()?;
    let (w, h) = fig.size();
    let mut rgb = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        fig.draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::High);
    let mut writer = enc
        .write_header()
        .map_err(|e| PlotError::Encode(e.to_string()))?;
    writer
        .write_image_data(&rgb)
        .map_err(|e| PlotError::Encode(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| PlotError::Encode(e.to_string()))?;
    Ok(out)
}

/// Pixel width of `text` in `style` as drawn on `area`.
fn text_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    style: &TextStyle,
) -> Result<u32, PlotError> {
    Ok(area.estimate_text_size(text, style).map_err(draw_err)?.0)
}

/// `text`, shortened with a trailing `…` until it is at most `max_px` wide.
fn fit_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    style: &TextStyle,
    max_px: u32,
) -> Result<String, PlotError> {
    if text_width(area, text, style)? <= max_px {
        return Ok(text.to_string());
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let candidate: String = chars.iter().collect::<String>() + "…";
        if text_width(area, &candidate, style)? <= max_px {
            return Ok(candidate);
        }
    }
    Ok("…".to_string())
}

/// `v` with `decimals` decimals and an explicit `+` when positive.
fn fmt_signed(v: f64, decimals: usize) -> String {
    let s = format!("{v:+.decimals$}");
    // "+0.000" / "-0.000": no sign on a zero.
    if s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

/// Decimals that show three significant digits of a quantity of size `span`.
fn decimals_for(span: f64) -> usize {
    if span > 0.0 && span.is_finite() {
        (2 - span.log10().floor() as i32).clamp(0, 6) as usize
    } else {
        2
    }
}

/// An axis tick label on an axis `span` wide: round ticks without float noise
/// (`0.30000000000000004` → `0.3`, `200.0` → `200`, `1e-17` → `0` when the span is 0.2),
/// scientific only for very small or large values.
fn fmt_tick(v: f64, span: f64) -> String {
    let a = v.abs();
    if a < span.abs() * 1e-9 {
        return "0".to_string();
    }
    if a != 0.0 && !(1e-4..1e6).contains(&a) {
        return format!("{v:e}");
    }
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod testutil {
    use std::collections::HashSet;

    /// Decodes a PNG, returning (width, height, number of distinct colours).
    pub fn decode_png(bytes: &[u8]) -> (u32, u32, usize) {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let px = info.color_type.samples();
        let colours: HashSet<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
        (info.width, info.height, colours.len())
    }

    /// Parses `svg` as XML and returns all its text content, joined by newlines.
    pub fn svg_text(svg: &str) -> String {
        let doc = roxmltree::Document::parse(svg).unwrap();
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        doc.descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn palette_is_distinct_and_cycles() {
        for (i, a) in PALETTE.iter().enumerate() {
            for (j, b) in PALETTE.iter().enumerate().take(i) {
                let d = (a.0 as i32 - b.0 as i32).abs()
                    + (a.1 as i32 - b.1 as i32).abs()
                    + (a.2 as i32 - b.2 as i32).abs();
                assert!(d > 60, "colours {j} and {i} too close ({d})");
            }
        }
        assert_eq!(palette(0), palette(PALETTE.len()));
        assert_ne!(palette(0), palette(1));
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(fmt_signed(0.5, 3), "+0.500");
        assert_eq!(fmt_signed(-0.5, 1), "-0.5");
        assert_eq!(fmt_signed(-0.0001, 2), "0.00");
        assert_eq!(decimals_for(0.22), 3);
        assert_eq!(decimals_for(15.0), 1);
        assert_eq!(fmt_tick(0.1 + 0.2, 1.0), "0.3");
        assert_eq!(fmt_tick(200.0, 1000.0), "200");
        assert_eq!(fmt_tick(-0.0, 1.0), "0");
        assert_eq!(fmt_tick(-1.4e-17, 0.2), "0");
        assert_eq!(fmt_tick(0.01, 0.0), "0.01");
        assert_eq!(fmt_tick(1e-5, 0.0), "1e-5");
    }

    #[test]
    fn embedded_font_registers() {
        ensure_fonts().unwrap();
    }
}
