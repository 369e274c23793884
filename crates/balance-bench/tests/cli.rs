//! End-to-end tests of the `balance-bench` binary on tiny settings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_balance-bench"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("balance-bench-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const TINY: &[&str] = &[
    "--rows",
    "1500",
    "--holdout-rows",
    "5000",
    "--seeds",
    "2",
    "--epochs",
    "1",
    "--batch-size",
    "256",
    "--quiet",
];

#[test]
fn list_shows_every_first_party_balancer() {
    let out = bench(&["list"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    for name in ["static", "loss_norm", "grad_norm"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{stdout}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&bench(&["list", "--format", "json"]).stdout).unwrap();
    assert!(json
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["name"] == "grad_norm" && b["kind"] == "gradient-weighting"));
}

#[test]
fn run_writes_every_export_and_compare_reads_them() {
    let dir = scratch("run");
    let out_dir = dir.join("report");
    let mut args = vec![
        "run",
        "--model",
        "mmoe",
        "--balancer",
        "grad_norm",
        "--out",
        out_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(TINY);
    let out = bench(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("## Quality: auc (higher is better)")
            && stdout.contains("| cascade | mmoe | grad_norm | high_value | 0."),
        "{stdout}"
    );
    for file in ["report.json", "report.md", "report.csv"] {
        let path = out_dir.join(file);
        assert!(
            std::fs::metadata(&path)
                .map(|m| m.len() > 0)
                .unwrap_or(false),
            "{} missing",
            path.display()
        );
    }
    assert_exports_parse(&out_dir);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["runs"].as_array().unwrap().len(), 4); // (static, grad_norm) x 2 seeds
                                                             // GradNorm's own per-step measurements reach the report, averaged over steps and seeds.
    let grad_norm_row = report["weights"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["balancer"] == "grad_norm")
        .unwrap();
    let norms = grad_norm_row["extras"]["grad_norm"].as_array().unwrap();
    assert_eq!(norms.len(), 3);
    assert!(norms.iter().all(|n| n.as_f64().unwrap() > 0.0), "{norms:?}");
    let markdown = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(
        markdown.contains("| cascade | mmoe | grad_norm | grad_norm | ["),
        "{markdown}"
    );
    let csv = std::fs::read_to_string(out_dir.join("report.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 3 * 4); // header + 2 balancers x 3 tasks x 4 metrics

    let json = out_dir.join("report.json");
    let out = bench(&["compare", json.to_str().unwrap(), json.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("24 compared: 0 better, 0 worse beyond noise, 24 within noise"),
        "{}",
        text(&out.stdout)
    );
}

/// Every export in `dir` parses: the HTML as XML with its figures inline and no network reference, every
/// SVG as XML, every PNG as an image of plausible size; one forest plot per (task, metric) and weight
/// and loss bands per balancer.
fn assert_exports_parse(dir: &std::path::Path) {
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&html, options).unwrap();
    let svgs = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "svg")
        .count();
    assert_eq!(svgs, 3 * 4 + 2 * 2, "inline figures in report.html"); // forests + bands
    for external in ["src=\"http", "href=\"http", "<script", "<link"] {
        assert!(!html.contains(external), "{external} in report.html");
    }
    assert!(html.contains("Verdict against the baseline") && html.contains("grad_norm"));
    let plots: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("plots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let named = |prefix: &str, ext: &str| {
        plots
            .iter()
            .filter(|p| {
                let name = p.file_name().unwrap().to_str().unwrap();
                name.starts_with(prefix) && name.ends_with(ext)
            })
            .count()
    };
    assert_eq!(named("forest-cascade-mmoe-", ".svg"), 3 * 4);
    assert_eq!(named("forest-cascade-mmoe-", ".png"), 3 * 4);
    assert_eq!(named("weights-cascade-mmoe-grad_norm", ".png"), 1);
    assert_eq!(named("losses-cascade-mmoe-static", ".svg"), 1);
    for path in &plots {
        let bytes = std::fs::read(path).unwrap();
        match path.extension().and_then(|e| e.to_str()) {
            Some("svg") => {
                roxmltree::Document::parse(std::str::from_utf8(&bytes).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            Some("png") => {
                let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
                    .read_info()
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let mut buf = vec![0; reader.output_buffer_size().unwrap()];
                let info = reader.next_frame(&mut buf).unwrap();
                assert!(
                    info.width >= 600 && info.height >= 100,
                    "{}",
                    path.display()
                );
            }
            other => panic!("unexpected file {} ({other:?})", path.display()),
        }
    }
}

#[test]
fn experiment_file_is_read() {
    let dir = scratch("exp");
    let file = dir.join("exp.toml");
    std::fs::write(&file, "datasets = [\"mmoe-synthetic\"]\nmodels = [\"shared_bottom\"]\nbalancers = [\"loss_norm\"]\n").unwrap();
    let mut args = vec!["run", "--experiment", file.to_str().unwrap()];
    args.extend_from_slice(TINY);
    let out = bench(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("## Quality: mse (lower is better)")
            && text(&out.stdout)
                .contains("| mmoe-synthetic | shared_bottom | loss_norm | task1 | "),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn unknown_balancer_is_a_usage_error_listing_the_known_ones() {
    let out = bench(&["run", "--balancer", "gradnorm"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let known = balance::registry().unwrap().names().join(", ");
    assert!(
        stderr.contains(&format!(
            "unknown balancer `gradnorm` (did you mean `grad_norm`?); known balancers: {known}"
        )),
        "{stderr}"
    );
    assert!(known.contains("grad_norm, imtl, loss_norm"), "{known}");
}

#[test]
fn bad_experiment_file_names_the_file_and_the_field() {
    let dir = scratch("bad");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "seeds = 3\nepochz = 2\n").unwrap();
    let out = bench(&["run", "--experiment", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "error: parsing experiment file {}",
            file.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `epochz`"), "{stderr}");
    let out = bench(&["compare", file.to_str().unwrap(), file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not a balance-bench JSON report"),
        "{}",
        text(&out.stderr)
    );
    let old = dir.join("old.json");
    std::fs::write(&old, r#"{"version": 1, "quality": []}"#).unwrap();
    let out = bench(&["compare", old.to_str().unwrap(), old.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is a version-1 report; this balance-bench reads version 2"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn esmm_on_regression_data_is_a_clear_error() {
    let mut args = vec!["run", "--dataset", "mmoe-synthetic", "--model", "esmm"];
    args.extend_from_slice(TINY);
    let out = bench(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("model `esmm` needs two binary tasks"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn csv_with_schema_runs_and_a_bad_csv_names_line_column_and_value() {
    let dir = scratch("csv");
    let schema = dir.join("schema.toml");
    std::fs::write(
        &schema,
        "[[features]]\ncolumn = \"x\"\nkind = \"dense\"\n[[features]]\ncolumn = \"c\"\nkind = \"sparse\"\n\
         [[tasks]]\nname = \"a\"\ncolumn = \"ya\"\nkind = \"binary\"\n[[tasks]]\nname = \"b\"\ncolumn = \"yb\"\nkind = \"binary\"\n",
    )
    .unwrap();
    let mut rows = String::from("x,c,ya,yb\n");
    for i in 0..400 {
        let x = (i % 17) as f64 / 17.0;
        rows.push_str(&format!(
            "{x},k{},{},{}\n",
            i % 5,
            u8::from(x > 0.5),
            u8::from(i % 5 == 0)
        ));
    }
    let data = dir.join("data.csv");
    std::fs::write(&data, rows).unwrap();
    let mut args = vec![
        "run",
        "--csv",
        data.to_str().unwrap(),
        "--schema",
        schema.to_str().unwrap(),
        "--model",
        "mmoe",
    ];
    args.extend_from_slice(TINY);
    let out = bench(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("| csv | mmoe | static | a | "),
        "{}",
        text(&out.stdout)
    );

    std::fs::write(&data, "x,c,ya,yb\n0.1,k,1,0\nnan?,k,0,1\n0.3,k,1,1\n").unwrap();
    let out = bench(&[
        "run",
        "--csv",
        data.to_str().unwrap(),
        "--schema",
        schema.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("data.csv, line 3, column `x`: value \"nan?\", expected a finite number"),
        "{stderr}"
    );
}

#[test]
fn data_alias_takes_a_parquet_path_and_names_a_file_that_is_not_parquet() {
    let dir = scratch("parquet");
    let schema = dir.join("schema.toml");
    std::fs::write(
        &schema,
        "[[features]]\ncolumn = \"x\"\nkind = \"dense\"\n[[tasks]]\nname = \"a\"\ncolumn = \"y\"\nkind = \"binary\"\n",
    )
    .unwrap();
    let data = dir.join("data.parquet");
    std::fs::write(&data, "x,y\n0.1,1\n0.2,0\n").unwrap();
    let out = bench(&[
        "run",
        "--data",
        data.to_str().unwrap(),
        "--schema",
        schema.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("data.parquet: not a Parquet file"),
        "{stderr}"
    );
}

#[test]
fn labels_are_short_unique_and_name_the_files_while_the_json_keeps_the_config() {
    let dir = scratch("labels");
    let out_dir = dir.join("report");
    let mut args = vec![
        "run",
        "--model",
        "shared_bottom",
        "--balancer",
        r#"{"method":"loss_norm","scale":"ema","decay":0.99}"#,
        "--balancer",
        "hand=[1.0, 2.0, 0.5]",
        "--balancer",
        "loss_norm=rlw",
        "--balancer",
        "loss_norm",
        "--out",
        out_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(TINY);
    let out = bench(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
            .unwrap();
    let labels: Vec<(&str, &str)> = report["balancers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["label"].as_str().unwrap(),
                b["config"]["method"].as_str().unwrap(),
            )
        })
        .collect();
    // The listed static weights are the baseline (first); a user label wins, and the derived
    // `loss_norm` that collides with it gets `#2`.
    assert_eq!(
        labels,
        [
            ("hand", "static"),
            ("loss_norm(decay=0.99, scale=ema)", "loss_norm"),
            ("loss_norm", "rlw"),
            ("loss_norm#2", "loss_norm"),
        ]
    );
    assert_eq!(report["baseline"], "hand");
    assert_eq!(report["balancers"][0]["config"]["weights"][1], 2.0);
    assert_eq!(report["balancers"][1]["config"]["decay"], 0.99);
    assert!(out_dir
        .join("plots/weights-cascade-shared_bottom-loss_norm(decay=0.99,scale=ema).png")
        .exists());
    assert!(out_dir
        .join("plots/weights-cascade-shared_bottom-loss_norm_2.svg")
        .exists());
    let markdown = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(markdown.contains("| cascade | shared_bottom | loss_norm(decay=0.99, scale=ema) | "));

    for (a, b, want) in [
        (
            "x=loss_norm",
            "x=grad_norm",
            "share the label `x`: labels must be unique",
        ),
        (
            "loss_norm",
            r#"{"method":"loss_norm","scale":"initial"}"#,
            "are the same config",
        ),
    ] {
        let out = bench(&["run", "--balancer", a, "--balancer", b, "--quiet"]);
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(want), "{}", text(&out.stderr));
    }
}
