//! Step cost of GradNorm against static weights on the benchmark MMoE (4 experts `[64, 32]`, towers `[32]`,
//! 3 cascading binary tasks), in one process.
//!
//! `cargo bench -p balance-gradnorm --bench step_cost` (2 threads; batches 256, 1024, 4096).
//! Times: configs interleaved step by step in this process, median ms per step (zero_grad, forward, losses,
//! balancer backward, Adam step). Peak memory: each config runs alone in a child process of this binary,
//! which reports its resident-set high-water mark growth over the steps (VmHWM after minus VmRSS before).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Instant;

use balance_core::{Balancer, BalancerConfig, SharedTarget};
use balance_gradnorm::GradNormConfig;
use balance_harness::data::Task;
use balance_harness::synthetic::{bench_input, cascade};
use balance_harness::train::task_losses;
use balance_harness::{Batch, Mmoe, MmoeConfig, MultiTaskModel};
use balance_static::StaticConfig;
use tch::nn::{self, OptimizerConfig};
use tch::Device;

const BATCHES: [i64; 3] = [256, 1024, 4096];
const STEPS: usize = 120;
const WARMUP_STEPS: usize = 5;
const MEMORY_STEPS: usize = 10;
const TASKS: [&str; 3] = ["response", "conversion", "high_value"];

fn configs() -> Vec<(&'static str, Box<dyn BalancerConfig>)> {
    let gn = |shared| {
        Box::new(GradNormConfig {
            shared,
            ..Default::default()
        }) as Box<dyn BalancerConfig>
    };
    vec![
        ("static", Box::new(StaticConfig::default())),
        ("grad_norm all_shared", gn(SharedTarget::AllShared)),
        (
            "grad_norm last_shared_layer",
            gn(SharedTarget::LastSharedLayer),
        ),
        ("grad_norm representation", gn(SharedTarget::Representation)),
    ]
}

struct Run {
    model: Mmoe,
    _vs: nn::VarStore,
    opt: nn::Optimizer,
    balancer: Balancer,
    parts: balance_core::SharedParts,
    batches: Vec<Batch>,
    next: usize,
}

impl Run {
    fn new(config: &dyn BalancerConfig, batch: i64, pool: &Batch) -> Run {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Mmoe::new(&vs, &bench_input(), &MmoeConfig::bench(), 3).unwrap();
        let opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
        let balancer = Balancer::new(config.build(3).unwrap(), &TASKS).unwrap();
        let parts = model.shared_parts();
        let n = pool.len() / batch;
        let batches = (0..n)
            .map(|i| pool.map(|t| t.narrow(0, i * batch, batch)))
            .collect();
        Run {
            model,
            _vs: vs,
            opt,
            balancer,
            parts,
            batches,
            next: 0,
        }
    }

    fn step(&mut self) {
        let batch = &self.batches[self.next % self.batches.len()];
        self.next += 1;
        self.opt.zero_grad();
        let out = self.model.forward_t(batch, true).unwrap();
        let losses = task_losses(&TASKS.map(Task::binary), &out, batch).unwrap();
        self.balancer
            .backward(&losses, &self.parts, out.representation.as_ref())
            .unwrap();
        self.opt.step();
    }
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Child mode: run one config and print the peak resident growth in KiB.
fn child(config_index: usize, batch: i64) {
    let pool = cascade(4 * batch as usize, 11);
    let configs = configs();
    let mut run = Run::new(configs[config_index].1.as_ref(), batch, &pool);
    let before = status_kib("VmRSS:");
    for _ in 0..MEMORY_STEPS {
        run.step();
    }
    let peak = status_kib("VmHWM:");
    println!("{}", peak.saturating_sub(before));
}

fn peak_growth_kib(config_index: usize, batch: i64) -> f64 {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--child", &config_index.to_string(), &batch.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(f64::NAN)
}

/// Under `cargo test` (no `--bench` flag) only check that every config steps, on a tiny batch.
fn smoke() {
    let pool = cascade(256, 1);
    for (name, config) in configs() {
        let mut run = Run::new(config.as_ref(), 64, &pool);
        run.step();
        run.step();
        println!("smoke: {name} steps");
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench" || a == "--child") {
        smoke();
        return;
    }
    tch::set_num_threads(2);
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        child(
            args[pos + 1].parse().unwrap(),
            args[pos + 2].parse().unwrap(),
        );
        return;
    }
    let configs = configs();
    println!("MMoE (4 experts [64, 32], towers [32], 8 dense + 4 x 1000-id features, 3 tasks), 2 threads, CPU");
    println!("median ms/step over {STEPS} steps, configs interleaved step by step; ratio = config / static in this process");
    println!("peak = resident high-water growth over {MEMORY_STEPS} steps, each config alone in a child process\n");
    println!("| batch | config | ms/step | time ratio | peak growth MiB | memory ratio |");
    println!("|---|---|---|---|---|---|");
    for &batch in &BATCHES {
        let pool = cascade(8 * batch as usize, 11);
        let mut runs: Vec<Run> = configs
            .iter()
            .map(|(_, c)| Run::new(c.as_ref(), batch, &pool))
            .collect();
        for run in &mut runs {
            for _ in 0..WARMUP_STEPS {
                run.step();
            }
        }
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
        // Round robin, one step per config at a time, so machine noise hits every config alike.
        for _ in 0..STEPS {
            for (i, run) in runs.iter_mut().enumerate() {
                let start = Instant::now();
                run.step();
                times[i].push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        let medians: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
        let memory: Vec<f64> = (0..configs.len())
            .map(|i| peak_growth_kib(i, batch))
            .collect();
        for (i, (name, _)) in configs.iter().enumerate() {
            println!(
                "| {batch} | {name} | {:.2} | {:.2}x | {:.1} | {:.2}x |",
                medians[i],
                medians[i] / medians[0],
                memory[i] / 1024.0,
                memory[i] / memory[0]
            );
        }
    }
}
