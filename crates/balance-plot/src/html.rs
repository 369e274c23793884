//! A self-contained HTML report: one file, inline CSS, inline figures, no network access.
//!
//! The output is well-formed XHTML (every element closed, all text escaped), so it can be
//! checked with any XML parser.
//!
//! ```
//! use balance_plot::html::{Block, Cell, HtmlReport, Section, Table};
//!
//! let report = HtmlReport {
//!     title: "Benchmark".into(),
//!     sections: vec![Section {
//!         heading: "Results".into(),
//!         blocks: vec![
//!             Block::Paragraph("Paired differences to static weights.".into()),
//!             Block::Table(Table {
//!                 caption: None,
//!                 header: vec!["balancer".into(), "Δ loss".into()],
//!                 rows: vec![vec!["gradnorm".into(), Cell::good("-0.12")]],
//!             }),
//!         ],
//!     }],
//! };
//! let html = report.to_html();
//! assert!(html.starts_with("<!DOCTYPE html>") && html.contains("gradnorm"));
//! ```

use std::fmt::Write as _;

/// A whole report: a title and sections, with a table of contents of the sections.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HtmlReport {
    /// Page title and top heading.
    pub title: String,
    /// The sections, in order.
    pub sections: Vec<Section>,
}

/// One section: a heading (listed in the table of contents) and its blocks.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Section {
    /// Section heading.
    pub heading: String,
    /// Content, in order.
    pub blocks: Vec<Block>,
}

/// A piece of section content.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A paragraph of plain text.
    Paragraph(String),
    /// A bulleted list of plain-text items.
    List(Vec<String>),
    /// A highlighted caveat (e.g. too few seeds, a figure that could not be drawn).
    Warning(String),
    /// A table.
    Table(Table),
    /// A figure with a caption.
    Figure(Figure),
}

/// A table; cells that look like numbers are right-aligned.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// Optional caption above the table.
    pub caption: Option<String>,
    /// Column headings.
    pub header: Vec<String>,
    /// Rows of cells (`"text".into()` for a plain cell).
    pub rows: Vec<Vec<Cell>>,
}

/// A table cell: text and an optional emphasis.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cell {
    /// The cell text (plain; escaped on output).
    pub text: String,
    /// How the cell is highlighted.
    pub emphasis: Emphasis,
}

/// Highlighting of a [`Cell`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emphasis {
    /// Plain.
    #[default]
    None,
    /// Good result (e.g. significantly better): green, bold.
    Good,
    /// Bad result (e.g. significantly worse): red, bold.
    Bad,
    /// De-emphasised (e.g. not significant): grey.
    Muted,
    /// Bold.
    Strong,
}

/// A figure: an image and a caption.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Caption below the image.
    pub caption: String,
    /// The image.
    pub image: Image,
}

/// Figure content, inlined into the page.
#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    /// SVG markup (e.g. from [`crate::forest_svg`]), inlined as is after dropping any
    /// `<?xml …?>` prolog or `<!DOCTYPE …>`; it must be well-formed XML for the page to be.
    Svg(String),
    /// PNG bytes (e.g. from [`crate::forest_png`]), inlined as a base64 `data:` URI.
    Png(Vec<u8>),
}

impl Cell {
    /// A cell with `emphasis`.
    pub fn new(text: impl Into<String>, emphasis: Emphasis) -> Self {
        Self {
            text: text.into(),
            emphasis,
        }
    }
    /// A cell emphasised as [`Emphasis::Good`].
    pub fn good(text: impl Into<String>) -> Self {
        Self::new(text, Emphasis::Good)
    }
    /// A cell emphasised as [`Emphasis::Bad`].
    pub fn bad(text: impl Into<String>) -> Self {
        Self::new(text, Emphasis::Bad)
    }
    /// A cell emphasised as [`Emphasis::Muted`].
    pub fn muted(text: impl Into<String>) -> Self {
        Self::new(text, Emphasis::Muted)
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Self::new(text, Emphasis::None)
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Self::new(text, Emphasis::None)
    }
}

const CSS: &str = r#"
:root { --ink: #1f2328; --muted: #6e7781; --line: #d0d7de; --bg-alt: #f6f8fa;
        --good: #1a7f37; --bad: #cf222e; --warn-bg: #fff8c5; --warn-line: #d4a72c; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 64rem; padding: 1.5rem 1.25rem 4rem;
       font: 15px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif;
       color: var(--ink); background: #fff; }
h1 { font-size: 1.7rem; margin: 0 0 1rem; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 0.8rem; padding-bottom: 0.3rem;
     border-bottom: 1px solid var(--line); }
nav.toc { background: var(--bg-alt); border: 1px solid var(--line); border-radius: 6px;
          padding: 0.6rem 1rem; display: inline-block; min-width: 16rem; }
nav.toc ol { margin: 0.3rem 0 0; padding-left: 1.4rem; }
a { color: #0969da; text-decoration: none; }
a:hover { text-decoration: underline; }
p { margin: 0.6rem 0; }
.warning { background: var(--warn-bg); border-left: 4px solid var(--warn-line);
           padding: 0.5rem 0.8rem; margin: 0.8rem 0; border-radius: 3px; }
.table-wrap { overflow: auto; max-height: 40rem; margin: 0.8rem 0; }
table { border-collapse: collapse; font-size: 0.9rem; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0.3rem 0; }
th, td { border: 1px solid var(--line); padding: 0.3rem 0.6rem; text-align: left;
         vertical-align: top; }
thead th { position: sticky; top: 0; background: var(--bg-alt); }
tbody tr:nth-child(even) { background: #fbfcfd; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.good { color: var(--good); font-weight: 600; }
td.bad { color: var(--bad); font-weight: 600; }
td.muted { color: var(--muted); }
td.strong { font-weight: 600; }
figure { margin: 1rem 0; }
figure svg, figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 0.9rem; margin-top: 0.3rem; }
"#;

impl HtmlReport {
    /// The whole page as one XHTML-compatible string.
    pub fn to_html(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        out.push_str("<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
        out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n");
        let _ = writeln!(out, "<title>{}</title>", escape(&self.title));
        let _ = writeln!(out, "<style>{CSS}</style>\n</head>\n<body>");
        let _ = writeln!(out, "<h1>{}</h1>", escape(&self.title));
        if !self.sections.is_empty() {
            out.push_str("<nav class=\"toc\"><strong>Contents</strong>\n<ol>\n");
            for (i, s) in self.sections.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "<li><a href=\"#sec-{}\">{}</a></li>",
                    i + 1,
                    escape(&s.heading)
                );
            }
            out.push_str("</ol>\n</nav>\n");
        }
        for (i, s) in self.sections.iter().enumerate() {
            let _ = writeln!(
                out,
                "<section id=\"sec-{}\">\n<h2>{}</h2>",
                i + 1,
                escape(&s.heading)
            );
            for b in &s.blocks {
                write_block(&mut out, b);
            }
            out.push_str("</section>\n");
        }
        out.push_str("</body>\n</html>\n");
        out
    }
}

fn write_block(out: &mut String, b: &Block) {
    match b {
        Block::Paragraph(t) => {
            let _ = writeln!(out, "<p>{}</p>", escape(t));
        }
        Block::List(items) => {
            out.push_str("<ul>\n");
            for item in items {
                let _ = writeln!(out, "<li>{}</li>", escape(item));
            }
            out.push_str("</ul>\n");
        }
        Block::Warning(t) => {
            let _ = writeln!(
                out,
                "<div class=\"warning\" role=\"note\"><strong>Warning:</strong> {}</div>",
                escape(t)
            );
        }
        Block::Table(t) => write_table(out, t),
        Block::Figure(f) => {
            out.push_str("<figure>\n");
            match &f.image {
                Image::Svg(svg) => {
                    out.push_str(strip_prolog(svg));
                    out.push('\n');
                }
                Image::Png(bytes) => {
                    let _ = writeln!(
                        out,
                        "<img alt=\"{}\" src=\"data:image/png;base64,{}\"/>",
                        escape(&f.caption),
                        base64(bytes)
                    );
                }
            }
            let _ = writeln!(
                out,
                "<figcaption>{}</figcaption>\n</figure>",
                escape(&f.caption)
            );
        }
    }
}

fn write_table(out: &mut String, t: &Table) {
    out.push_str("<div class=\"table-wrap\">\n<table>\n");
    if let Some(c) = &t.caption {
        let _ = writeln!(out, "<caption>{}</caption>", escape(c));
    }
    if !t.header.is_empty() {
        out.push_str("<thead><tr>");
        for h in &t.header {
            let _ = write!(out, "<th scope=\"col\">{}</th>", escape(h));
        }
        out.push_str("</tr></thead>\n");
    }
    out.push_str("<tbody>\n");
    for row in &t.rows {
        out.push_str("<tr>");
        for cell in row {
            let mut classes = Vec::with_capacity(2);
            if looks_numeric(&cell.text) {
                classes.push("num");
            }
            match cell.emphasis {
                Emphasis::None => {}
                Emphasis::Good => classes.push("good"),
                Emphasis::Bad => classes.push("bad"),
                Emphasis::Muted => classes.push("muted"),
                Emphasis::Strong => classes.push("strong"),
            }
            if classes.is_empty() {
                let _ = write!(out, "<td>{}</td>", escape(&cell.text));
            } else {
                let _ = write!(
                    out,
                    "<td class=\"{}\">{}</td>",
                    classes.join(" "),
                    escape(&cell.text)
                );
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n</div>\n");
}

/// Whether a cell reads as a number (`-0.12`, `+3 %`, `1.2e-3 [0.1, 0.4]`, `NaN`):
/// optional sign, then a digit or a decimal point followed by one.
fn looks_numeric(s: &str) -> bool {
    let s = s.trim();
    let s = s.strip_prefix(['+', '-', '−']).unwrap_or(s);
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_digit() => true,
        Some('.') => chars.next().is_some_and(|c| c.is_ascii_digit()),
        _ => matches!(s, "NaN" | "nan" | "inf" | "∞"),
    }
}

/// `svg` without a leading `<?xml …?>` prolog, `<!DOCTYPE …>` or whitespace.
fn strip_prolog(svg: &str) -> &str {
    let mut s = svg.trim_start();
    loop {
        let end = if s.starts_with("<?xml") {
            s.find("?>").map(|i| i + 2)
        } else if s.starts_with("<!DOCTYPE") {
            s.find('>').map(|i| i + 1)
        } else {
            None
        };
        match end {
            Some(e) => s = s[e..].trim_start(),
            None => return s,
        }
    }
}

/// `s` with `&`, `<`, `>`, `"` and `'` replaced by entities (safe in text and attributes).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 (RFC 4648, with padding).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::{forest_png, forest_svg, ForestPlot, ForestRow};

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn escaping_and_numeric_cells() {
        assert_eq!(
            escape(r#"a<b & "c" 'd'>"#),
            "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;"
        );
        for n in [
            "0.1",
            "-0.12",
            "+3 %",
            ".5",
            "1.2e-3 [0.1, 0.4]",
            "−2",
            "NaN",
        ] {
            assert!(looks_numeric(n), "{n}");
        }
        for t in ["gradnorm", "", "-", ".", "n=3", "+x"] {
            assert!(!looks_numeric(t), "{t}");
        }
    }

    #[test]
    fn prolog_is_stripped() {
        let svg = "<?xml version=\"1.0\"?>\n<!DOCTYPE svg>\n <svg/>";
        assert_eq!(strip_prolog(svg), "<svg/>");
        assert_eq!(strip_prolog("<svg/>"), "<svg/>");
    }

    fn sample() -> HtmlReport {
        let forest = ForestPlot {
            title: "Δ <loss> & co".into(),
            x_label: "Δ".into(),
            higher_is_better: false,
            rows: vec![ForestRow {
                label: "grad_norm(progress=prior)".into(),
                mean: -0.2,
                low: -0.3,
                high: -0.1,
                significant: true,
            }],
        };
        HtmlReport {
            title: "Report <1> & \"friends\"".into(),
            sections: vec![
                Section {
                    heading: "Summary & notes".into(),
                    blocks: vec![
                        Block::Paragraph("a < b && c > d".into()),
                        Block::Warning("only 2 seeds".into()),
                        Block::List(vec!["x < y".into(), "z & w".into()]),
                        Block::Table(Table {
                            caption: Some("Paired <diffs>".into()),
                            header: vec!["balancer".into(), "Δ".into()],
                            rows: vec![
                                vec!["a&b".into(), Cell::good("-0.2")],
                                vec![Cell::muted("c"), "0.01".into()],
                            ],
                        }),
                    ],
                },
                Section {
                    heading: "Figures".into(),
                    blocks: vec![
                        Block::Figure(Figure {
                            caption: "forest (svg)".into(),
                            image: Image::Svg(format!(
                                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}",
                                forest_svg(&forest).unwrap()
                            )),
                        }),
                        Block::Figure(Figure {
                            caption: "forest (png)".into(),
                            image: Image::Png(forest_png(&forest).unwrap()),
                        }),
                    ],
                },
            ],
        }
    }

    #[test]
    fn report_is_well_formed_xhtml() {
        let html = sample().to_html();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(!html.contains("<?xml"));
        for external in [
            "src=\"http",
            "href=\"http",
            "<link",
            "<script",
            "@import",
            "url(",
        ] {
            assert!(!html.contains(external), "external resource: {external}");
        }
        let opts = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        let doc = roxmltree::Document::parse_with_options(&html, opts).unwrap();
        let root = doc.root_element();
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/1999/xhtml")
        );
        let text: String = doc
            .descendants()
            .filter_map(|n| n.text())
            .collect::<Vec<_>>()
            .join("|");
        for want in [
            "Report <1> & \"friends\"",
            "Summary & notes",
            "a < b && c > d",
            "only 2 seeds",
            "Paired <diffs>",
            "a&b",
            "grad_norm(progress=prior)",
            "Δ <loss> & co",
            "x < y",
            "z & w",
        ] {
            assert!(text.contains(want), "missing {want:?}");
        }
        // Table of contents links every section.
        let links: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("a"))
            .filter_map(|n| n.attribute("href"))
            .collect();
        assert_eq!(links, ["#sec-1", "#sec-2"]);
        for id in ["sec-1", "sec-2"] {
            assert!(doc.descendants().any(|n| n.attribute("id") == Some(id)));
        }
        // Inline SVG keeps its namespace; the PNG is a data URI.
        assert!(doc.descendants().any(|n| n.tag_name().name() == "svg"
            && n.tag_name().namespace() == Some("http://www.w3.org/2000/svg")));
        let img = doc.descendants().find(|n| n.has_tag_name("img")).unwrap();
        assert!(img
            .attribute("src")
            .unwrap()
            .starts_with("data:image/png;base64,iVBORw0KGgo"));
        // Cell classes.
        let classes: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("td"))
            .map(|n| n.attribute("class").unwrap_or(""))
            .collect();
        assert_eq!(classes, ["", "num good", "muted", "num"]);
    }

    #[test]
    fn empty_report_is_valid() {
        let html = HtmlReport::default().to_html();
        let opts = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        roxmltree::Document::parse_with_options(&html, opts).unwrap();
        assert!(!html.contains("<nav"));
    }
}
