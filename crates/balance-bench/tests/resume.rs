//! `run --out DIR` keeps finished runs in DIR/runs: a rerun resumes (same report), a signal stops a run
//! cleanly (exit 130, no half-written file), and other settings are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_balance-bench");

fn bench(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "balance-bench-resume-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `run` on tiny settings into `out`, with `seeds` and `epochs`.
fn tiny_args<'a>(out: &'a Path, seeds: &'a str, epochs: &'a str) -> Vec<&'a str> {
    run_args(out, "1500", seeds, epochs)
}

/// `run` of `static` and `loss_norm` on MMoE into `out`, with `rows` training rows, `seeds` and `epochs`.
fn run_args<'a>(out: &'a Path, rows: &'a str, seeds: &'a str, epochs: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--model",
        "mmoe",
        "--balancer",
        "loss_norm",
        "--rows",
        rows,
        "--holdout-rows",
        "2000",
        "--seeds",
        seeds,
        "--epochs",
        epochs,
        "--batch-size",
        "256",
        "--threads",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

/// The files of `dir/runs` whose names end with `suffix`, sorted.
fn stored(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("runs"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A run's JSON without its wall-clock fields (two separate processes never time alike).
fn untimed(run: &serde_json::Value) -> serde_json::Value {
    let mut run = run.clone();
    let map = run.as_object_mut().unwrap();
    map.remove("train_seconds").unwrap();
    map.remove("median_step_ms").unwrap();
    run
}

#[test]
fn a_resumed_run_reports_what_an_uninterrupted_one_does() {
    let dir = scratch("equal");
    let (one, two) = (dir.join("one"), dir.join("two"));
    let out = bench(&tiny_args(&one, "2", "1"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = bench(&tiny_args(&two, "2", "1"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = report(&two);

    // An interrupted run leaves no file for the run it was training: drop one seed-1 run.
    let seed1 = stored(&two, "-seed1.json");
    assert_eq!(seed1.len(), 2, "{seed1:?}");
    std::fs::remove_file(&seed1[1]).unwrap();
    let kept = stored(&two, "-seed0.json")[0].clone();
    let kept_bytes = std::fs::read(&kept).unwrap();
    let kept_mtime = std::fs::metadata(&kept).unwrap().modified().unwrap();

    let out = bench(&tiny_args(&two, "2", "1"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (a, b) = (report(&one), report(&two));
    assert_eq!(a["quality"], b["quality"]);
    let (runs_a, runs_b) = (a["runs"].as_array().unwrap(), b["runs"].as_array().unwrap());
    assert_eq!(runs_a.len(), 4);
    assert_eq!(
        runs_a.iter().map(untimed).collect::<Vec<_>>(),
        runs_b.iter().map(untimed).collect::<Vec<_>>()
    );
    // The kept runs were not retrained: their files are untouched and their report entries, timings
    // included, are those of the first pass; only the dropped run is new.
    assert_eq!(std::fs::read(&kept).unwrap(), kept_bytes);
    assert_eq!(
        std::fs::metadata(&kept).unwrap().modified().unwrap(),
        kept_mtime
    );
    let retrained: Vec<usize> = (0..4)
        .filter(|&i| before["runs"][i] != b["runs"][i])
        .collect();
    assert!(retrained.len() <= 1, "{retrained:?}");
    assert!(seed1[1].exists());
    // Stored memory probes are reused too (a new probe would measure another peak).
    let peaks = |r: &serde_json::Value| -> Vec<serde_json::Value> {
        r["cost"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["peak_mib"].clone())
            .collect()
    };
    assert_eq!(peaks(&before), peaks(&b));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Waits for `child` until `deadline`; kills it and fails the test past it.
fn wait_until(child: &mut std::process::Child, deadline: Instant) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("balance-bench did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigint_stops_cleanly_and_a_rerun_completes() {
    let dir = scratch("sigint");
    let out_dir = dir.join("out");
    let args = run_args(&out_dir, "20000", "4", "3");
    let stderr_path = dir.join("stderr.txt");
    let mut child = Command::new(BIN)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored(&out_dir, "-seed0.json").is_empty() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no run was stored in time: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = wait_until(&mut child, Instant::now() + Duration::from_secs(30));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("of 8 runs finished")
            && stderr.contains("rerun the same command to resume"),
        "{stderr}"
    );
    let mut finished = 0;
    for entry in walk(&out_dir) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !(name.starts_with('.') && name.ends_with(".tmp")),
            "temporary left: {}",
            entry.display()
        );
        if entry.parent().unwrap().ends_with("runs") {
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&entry).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", entry.display()));
            finished += usize::from(name.contains("-seed"));
            assert!(json.is_object());
        }
    }
    assert!(
        (1..8).contains(&finished),
        "{finished} runs stored: {stderr}"
    );
    assert!(
        stderr.contains(&format!("{finished} of 8 runs finished")),
        "{stderr}"
    );

    let out = bench(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(report(&out_dir)["runs"].as_array().unwrap().len(), 8);
    assert_eq!(stored(&out_dir, ".json").len(), 8 + 2 + 1); // runs, probes, settings
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_signal_exits_at_once_with_130() {
    let dir = scratch("twice");
    let out_dir = dir.join("out");
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--model",
            "mmoe",
            "--rows",
            "20000",
            "--holdout-rows",
            "2000",
            "--seeds",
            "1",
            "--epochs",
            "50",
            "--threads",
            "1",
            "--quiet",
            "--out",
        ])
        .arg(&out_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out_dir.join("runs/settings.json").exists() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run did not start in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300)); // training, not data loading
    let pid = child.id().to_string();
    let kill = Command::new("sh")
        .args(["-c", &format!("kill -INT {pid}; kill -INT {pid}")])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = wait_until(&mut child, Instant::now() + Duration::from_secs(30));
    let stderr = text(&child.wait_with_output().unwrap().stderr);
    // Not a crash (libtorch's destructors under a running main thread end in SIGSEGV): code 130.
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stored(&out_dir, "-seed0.json").is_empty(), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn other_settings_in_the_same_out_are_refused_by_name() {
    let dir = scratch("settings");
    let out = bench(&tiny_args(&dir, "1", "1"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = bench(&tiny_args(&dir, "1", "2"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("`epochs`: stored 1, requested 2")
            && stderr.contains("choose another --out")
            && stderr.contains("delete"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
