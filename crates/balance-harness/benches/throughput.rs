//! Training throughput of the harness (the benchmark MMoE: 8 dense + 4 categorical features of vocabulary
//! 1,000 embedded in 16, 4 experts `[64, 32]`, towers `[32]`, 3 cascading binary tasks; static weights,
//! FlatAdam) against the
//! eager-PyTorch peer (benches/peer_mmoe.py), interleaved round by round on the same machine so that both
//! see the same load.
//!
//! `cargo bench -p balance-harness --bench throughput` (needs the project's venv for the peer; without it
//! only the harness figures are printed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Instant;

use balance_core::{Balancer, BalancerConfig};
use balance_harness::data::Task;
use balance_harness::optim::{AdamConfig, FlatAdam};
use balance_harness::synthetic::{bench_input, cascade};
use balance_harness::train::task_losses;
use balance_harness::{Batch, Mmoe, MmoeConfig, MultiTaskModel};
use balance_static::StaticConfig;
use tch::{nn, Device};

/// Rounds per batch size; each round times `ROUND_STEPS` of our steps, then as many of the peer's.
const ROUNDS: usize = 8;
const ROUND_STEPS: usize = 10;
const TASKS: [&str; 3] = ["a", "b", "c"];

/// Our training step on a fixed batch: forward, static-weights backward, Adam.
fn our_step(batch: i64) -> impl FnMut() -> f64 {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Mmoe::new(&vs, &bench_input(), &MmoeConfig::bench(), 3).unwrap();
    let parts = model.shared_parts();
    let mut opt = FlatAdam::new(vs.trainable_variables(), AdamConfig::default()).unwrap();
    let mut balancer = Balancer::new(StaticConfig::default().build(3).unwrap(), &TASKS).unwrap();
    let data: Batch = cascade(batch as usize, 1);
    let mut step = move || {
        let t = Instant::now();
        opt.zero_grad().unwrap();
        let out = model.forward_t(&data, true).unwrap();
        let losses = task_losses(&TASKS.map(Task::binary), &out, &data).unwrap();
        balancer.backward(&losses, &parts, None).unwrap();
        opt.step().unwrap();
        let _keep_alive = &vs;
        t.elapsed().as_secs_f64() * 1e3
    };
    for _ in 0..10 {
        step();
    }
    step
}

/// The eager-PyTorch peer in `serve` mode: `<batch> <steps>` in, step times in ms out.
struct Peer {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn start() -> Option<Self> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut child = Command::new(root.join(".venv/bin/python"))
            .arg(root.join("crates/balance-harness/benches/peer_mmoe.py"))
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let stdout = BufReader::new(child.stdout.take()?);
        Some(Self { child, stdout })
    }

    fn steps(&mut self, batch: i64, n: usize) -> Vec<f64> {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{batch} {n}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // Under `cargo test` (no `--bench` flag) only check that the harness steps, on a tiny batch.
    if !std::env::args().any(|a| a == "--bench") {
        let mut step = our_step(64);
        println!(
            "smoke: {:.2} ms/step at batch 64",
            median((0..5).map(|_| step()).collect())
        );
        return;
    }
    tch::set_num_threads(2);
    let mut peer = Peer::start();
    println!(
        "Benchmark MMoE (4 experts [64, 32], towers [32], 3 tasks), static weights, Adam, 2 threads; medians of {} steps each, taken in {ROUNDS} \
         interleaved rounds of {ROUND_STEPS} (ours, then the peer's)",
        ROUNDS * ROUND_STEPS
    );
    println!("| batch | harness ms/step | harness samples/s | PyTorch eager ms/step | PyTorch samples/s | speed-up |");
    println!("|---|---|---|---|---|---|");
    for batch in [256i64, 1024, 4096] {
        let mut step = our_step(batch);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            ours.extend((0..ROUND_STEPS).map(|_| step()));
            if let Some(p) = peer.as_mut() {
                theirs.extend(p.steps(batch, ROUND_STEPS));
            }
        }
        let ms = median(ours);
        let rate = |ms: f64| batch as f64 / ms * 1e3;
        if theirs.is_empty() {
            println!("| {batch} | {ms:.2} | {:.0} | (no venv) | | |", rate(ms));
        } else {
            let p = median(theirs);
            println!(
                "| {batch} | {ms:.2} | {:.0} | {p:.2} | {:.0} | {:.2}x |",
                rate(ms),
                rate(p),
                p / ms
            );
        }
    }
    if let Some(mut p) = peer {
        drop(p.child.stdin.take());
        let _ = p.child.wait();
    }
}
