//! Writes sample figures and a report to a folder, to look at: `cargo run -p balance-plot --example demo -- OUT_DIR`.

use balance_plot::html::{Block, Cell, Figure, HtmlReport, Image, Section, Table};
use balance_plot::{
    bands_png, bands_svg, forest_png, forest_svg, Band, BandPlot, ForestPlot, ForestRow,
};
use std::error::Error;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "plot-demo".into()),
    );
    std::fs::create_dir_all(&dir)?;

    let rows = [
        ("grad_norm(progress=prior)", -0.081, -0.12, -0.04, true),
        ("uncertainty", -0.02, -0.05, 0.012, false),
        ("dwa(temperature=2)", 0.004, -0.03, 0.04, false),
        ("pcgrad", -0.05, -0.07, -0.03, true),
        ("lossnorm", 0.06, 0.02, 0.1, true),
        ("rlw", 0.01, -0.02, 0.05, false),
    ];
    let forest = ForestPlot {
        title: "Test loss, paired difference to static weights (8 seeds)".into(),
        x_label: "Δ test loss (balancer − static)".into(),
        higher_is_better: false,
        rows: rows
            .iter()
            .map(|&(label, mean, low, high, significant)| ForestRow {
                label: label.into(),
                mean,
                low,
                high,
                significant,
            })
            .collect(),
    };
    let band = |label: &str, base: f64, drift: f64| {
        let steps: Vec<f64> = (0..=100).map(|i| 10.0 * i as f64).collect();
        let mean: Vec<f64> = steps
            .iter()
            .map(|s| base * (1.0 + drift * (s / 300.0).sin()))
            .collect();
        Band {
            label: label.into(),
            low: mean
                .iter()
                .zip(&steps)
                .map(|(m, s)| m * (0.9 - s / 20000.0))
                .collect(),
            high: mean
                .iter()
                .zip(&steps)
                .map(|(m, s)| m * (1.1 + s / 20000.0))
                .collect(),
            steps,
            mean,
        }
    };
    let mut bands = BandPlot {
        title: "Task weights over training (min..max over 8 seeds)".into(),
        x_label: "step".into(),
        y_label: "weight".into(),
        log_y: false,
        series: vec![
            band("click", 1.0, 0.3),
            band("purchase (rare)", 2.0, -0.4),
            band("dwell_time", 0.5, 0.8),
        ],
    };
    std::fs::write(dir.join("forest.svg"), forest_svg(&forest)?)?;
    std::fs::write(dir.join("forest.png"), forest_png(&forest)?)?;
    std::fs::write(dir.join("bands.svg"), bands_svg(&bands)?)?;
    std::fs::write(dir.join("bands.png"), bands_png(&bands)?)?;
    bands.log_y = true;
    bands.series.push(band("loss-scale", 0.01, 0.9));
    std::fs::write(dir.join("bands_log.png"), bands_png(&bands)?)?;

    let report = HtmlReport {
        title: "balance benchmark".into(),
        sections: vec![
            Section {
                heading: "Summary".into(),
                blocks: vec![
                    Block::Paragraph(
                        "Paired differences of each balancer to static weights over 8 seeds."
                            .into(),
                    ),
                    Block::Warning("8 seeds: intervals are wide.".into()),
                    Block::Table(Table {
                        caption: Some("Δ test loss".into()),
                        header: vec!["balancer".into(), "mean".into(), "95 % interval".into()],
                        rows: rows
                            .iter()
                            .map(|&(label, mean, low, high, sig)| {
                                let m = format!("{mean:+.3}");
                                vec![
                                    label.into(),
                                    if !sig {
                                        Cell::muted(m)
                                    } else if mean < 0.0 {
                                        Cell::good(m)
                                    } else {
                                        Cell::bad(m)
                                    },
                                    format!("[{low:+.3}, {high:+.3}]").into(),
                                ]
                            })
                            .collect(),
                    }),
                ],
            },
            Section {
                heading: "Figures".into(),
                blocks: vec![
                    Block::Figure(Figure {
                        caption: "Forest plot".into(),
                        image: Image::Svg(forest_svg(&forest)?),
                    }),
                    Block::Figure(Figure {
                        caption: "Task weights (log y)".into(),
                        image: Image::Png(bands_png(&bands)?),
                    }),
                ],
            },
        ],
    };
    std::fs::write(dir.join("report.html"), report.to_html())?;
    println!("wrote {}", dir.display());
    Ok(())
}
