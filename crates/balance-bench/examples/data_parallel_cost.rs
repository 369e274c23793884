//! What data parallelism costs and buys on this machine: the same global batch on `cascade` MMoE,
//! 1 process x 2 threads (the baseline, measured by this process) against 2 ranks x 1 thread (this binary
//! re-run as two Gloo workers on localhost), samples per second per balancer, and the collective payload
//! per step that exactness costs (bytes handed to all-reduce / broadcast, from the group's counters).
//!
//! `cargo run --release -p balance-bench --example data_parallel_cost [BATCH]` (BATCH defaults to 1024;
//! the figures in docs/distributed.md came from it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use balance::{Balancer, BalancerSpec};
use balance_dist::{free_port, Launch, LocalJob, ProcessGroup};
use balance_harness::data::{Dataset, Task};
use balance_harness::synthetic::{bench_input, cascade};
use balance_harness::train::{NoObserver, TrainConfig, Trainer};
use balance_harness::{Mmoe, MmoeConfig};
use tch::{nn, Device};

const SPECS: [&str; 7] = [
    "static",
    "uncertainty",
    "grad_norm",
    r#"{"method":"grad_norm","shared":"representation"}"#,
    "pcgrad",
    "mgda",
    "nashmtl",
];
const WARMUP: u64 = 5;
const MEASURED: u64 = 40;
const OUT: &str = "BALANCE_DP_COST_OUT";

/// The global batch: the first argument, else 1024.
fn batch() -> i64 {
    std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024)
}

fn data() -> Result<(Dataset, Dataset)> {
    let batch = batch();
    let all = Dataset {
        examples: cascade(50 * batch as usize + 2048, 5),
        input: bench_input(),
        tasks: ["response", "conversion", "high_value"]
            .map(Task::binary)
            .to_vec(),
    };
    Ok(all.split_at(50 * batch)?)
}

fn trainer(spec: &str) -> Result<Trainer<Mmoe>> {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Mmoe::new(&vs, &bench_input(), &MmoeConfig::bench(), 3)?;
    let names = ["response", "conversion", "high_value"];
    let balancer = Balancer::from_spec(&spec.parse::<BalancerSpec>()?, &names)?;
    let config = TrainConfig {
        batch_size: batch(),
        ..TrainConfig::default()
    };
    let tasks = data()?.0.tasks;
    Ok(Trainer::new(
        model,
        vs.trainable_variables(),
        balancer,
        tasks,
        config,
        Device::Cpu,
    )?)
}

/// Samples per second over `MEASURED` steps after `WARMUP` (one epoch is 50 steps: no evaluation).
fn samples_per_second(trainer: &mut Trainer<Mmoe>, train: &Dataset, eval: &Dataset) -> Result<f64> {
    trainer.run_steps(train, eval, &mut NoObserver, WARMUP)?;
    let start = Instant::now();
    trainer.run_steps(train, eval, &mut NoObserver, MEASURED)?;
    Ok((MEASURED as i64 * batch()) as f64 / start.elapsed().as_secs_f64())
}

fn worker(out: PathBuf) -> Result<()> {
    tch::set_num_threads(1);
    let launch = Launch::from_env()?.context("a worker has WORLD_SIZE")?;
    let group = Arc::new(ProcessGroup::new(
        &launch.group_options(Duration::from_secs(120)),
    )?);
    let (train, eval) = data()?;
    let mut lines = Vec::new();
    for spec in SPECS {
        let mut t = trainer(spec)?.data_parallel(group.clone())?;
        t.run_steps(&train, &eval, &mut NoObserver, WARMUP)?;
        let before = group.traffic();
        let start = Instant::now();
        t.run_steps(&train, &eval, &mut NoObserver, MEASURED)?;
        let rate = (MEASURED as i64 * batch()) as f64 / start.elapsed().as_secs_f64();
        let after = group.traffic();
        lines.push(serde_json::json!({
            "spec": spec,
            "samples_per_s": rate,
            "bytes_per_step": (after.bytes - before.bytes) as f64 / MEASURED as f64,
            "calls_per_step": (after.calls - before.calls) as f64 / MEASURED as f64,
        }));
    }
    if group.rank() == 0 {
        std::fs::write(out, serde_json::to_vec(&lines)?)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    if let Some(out) = std::env::var_os(OUT) {
        return worker(PathBuf::from(out));
    }
    let (train, eval) = data()?;
    tch::set_num_threads(2);
    let mut baseline = Vec::new();
    for spec in SPECS {
        baseline.push(samples_per_second(&mut trainer(spec)?, &train, &eval)?);
    }
    let out = std::env::temp_dir().join(format!("balance-dp-cost-{}.json", std::process::id()));
    let exe = std::env::current_exe()?;
    let job = LocalJob::spawn(2, free_port()?, |_| {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(std::env::args().skip(1)).env(OUT, &out);
        cmd
    })?;
    for exit in job.wait(Duration::from_secs(1800)) {
        anyhow::ensure!(
            exit.success(),
            "rank {} failed: {:?}",
            exit.rank,
            exit.status
        );
    }
    let ranks: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&out)?)?;
    let _ = std::fs::remove_file(&out);
    let static_bytes = ranks[0]["bytes_per_step"].as_f64().unwrap_or(f64::NAN);
    println!("global batch {}, cascade MMoE", batch());
    println!(
        "(the flat gradient: {} float32 values per step)",
        static_bytes / 4.0
    );
    println!("| balancer | 1 x 2 threads, samples/s | 2 ranks x 1 thread, samples/s | ratio | collectives/step | bytes/step | bytes vs static |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for ((spec, base), r) in SPECS.iter().zip(&baseline).zip(&ranks) {
        let rate = r["samples_per_s"].as_f64().unwrap_or(f64::NAN);
        let bytes = r["bytes_per_step"].as_f64().unwrap_or(f64::NAN);
        println!(
            "| `{spec}` | {base:.0} | {rate:.0} | {:.2}x | {:.0} | {:.0} | {:.2}x |",
            rate / base,
            r["calls_per_step"].as_f64().unwrap_or(f64::NAN),
            bytes,
            bytes / static_bytes
        );
    }
    Ok(())
}
