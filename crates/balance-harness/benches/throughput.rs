//! Training throughput of the harness (MMoE of GUIDE section 5, static weights, FlatAdam) against the
//! eager-PyTorch peer (benches/peer_mmoe.py) run right after it on the same machine.
//!
//! `cargo bench -p balance-harness --bench throughput` (needs the project's venv for the peer; without it
//! only the harness figures are printed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Instant;

use balance_core::{Balancer, BalancerConfig};
use balance_harness::data::Task;
use balance_harness::optim::{AdamConfig, FlatAdam};
use balance_harness::synthetic::{bench_input, cascade};
use balance_harness::train::task_losses;
use balance_harness::{Batch, Mmoe, MmoeConfig, MultiTaskModel};
use balance_static::StaticConfig;
use tch::{nn, Device};

const STEPS: usize = 60;
const TASKS: [&str; 3] = ["a", "b", "c"];

fn median_step_ms(batch: i64) -> f64 {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Mmoe::new(&vs, &bench_input(), &MmoeConfig::bench(), 3).unwrap();
    let parts = model.shared_parts();
    let mut opt = FlatAdam::new(vs.trainable_variables(), AdamConfig::default()).unwrap();
    let mut balancer = Balancer::new(StaticConfig::default().build(3).unwrap(), &TASKS).unwrap();
    let data: Batch = cascade(batch as usize, 1);
    let mut step = || {
        opt.zero_grad();
        let out = model.forward_t(&data, true).unwrap();
        let losses = task_losses(&TASKS.map(Task::binary), &out, &data).unwrap();
        balancer.backward(&losses, &parts, None).unwrap();
        opt.step().unwrap();
    };
    for _ in 0..10 {
        step();
    }
    let mut times: Vec<f64> = (0..STEPS)
        .map(|_| {
            let t = Instant::now();
            step();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn peer() -> Vec<(i64, f64)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    let script = root.join("crates/balance-harness/benches/peer_mmoe.py");
    let Ok(out) = std::process::Command::new(python)
        .arg(script)
        .arg(STEPS.to_string())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect()
}

fn main() {
    // Under `cargo test` (no `--bench` flag) only check that the harness steps, on a tiny batch.
    if !std::env::args().any(|a| a == "--bench") {
        println!("smoke: {:.2} ms/step at batch 64", median_step_ms(64));
        return;
    }
    tch::set_num_threads(2);
    let ours: Vec<(i64, f64)> = [256, 1024, 4096]
        .iter()
        .map(|&b| (b, median_step_ms(b)))
        .collect();
    let theirs = peer();
    println!("MMoE (GUIDE section 5), static weights, Adam, 2 threads; median of {STEPS} steps");
    println!("| batch | harness ms/step | harness samples/s | PyTorch eager ms/step | PyTorch samples/s | speed-up |");
    println!("|---|---|---|---|---|---|");
    for (batch, ms) in ours {
        let peer_ms = theirs.iter().find(|(b, _)| *b == batch).map(|p| p.1);
        let rate = |ms: f64| batch as f64 / ms * 1e3;
        match peer_ms {
            Some(p) => println!(
                "| {batch} | {ms:.2} | {:.0} | {p:.2} | {:.0} | {:.2}x |",
                rate(ms),
                rate(p),
                p / ms
            ),
            None => println!("| {batch} | {ms:.2} | {:.0} | (no venv) | | |", rate(ms)),
        }
    }
}
