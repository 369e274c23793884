//! Data-parallel training is exact: 2 ranks (real processes, Gloo on localhost) with a global batch of B
//! follow the trajectory of 1 process with batch B, for every registered balancer (GradNorm on all three
//! shared targets, gradient methods on parameters and on the representation); both ranks hold bit-identical weights every step; and a
//! 2-rank run killed mid-epoch resumes from rank 0's checkpoint to the uninterrupted run's final state
//! bit for bit (and on 3 ranks or 1 process to float tolerance); ranks given different settings stop
//! together with an error naming each one.
//!
//! The batch (199) and the set (1000 rows) are chosen so that every step's shards are unequal (99 and
//! 100 rows) and the epoch ends with a 5-row tail: the shares, not a plain mean, make it exact.
//! The workers are this test binary re-run with `--exact NAME` and `WORKER` set; the parent bounds them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use balance::{Balancer, BalancerSpec};
use balance_dist::{free_port, Launch, LocalJob, ProcessGroup};
use balance_harness::data::{Dataset, Task};
use balance_harness::nn::MlpConfig;
use balance_harness::synthetic::{bench_input, cascade};
use balance_harness::train::{
    EpochReport, Observer, StepEvent, TrainCheckpoint, TrainConfig, Trainer,
};
use balance_harness::{Mmoe, MmoeConfig};
use serde::{Deserialize, Serialize};
use tch::{nn, Device};

const WORKER: &str = "BALANCE_DP_TEST_WORKER";
const OUT: &str = "BALANCE_DP_TEST_OUT";
const TASKS: [&str; 3] = ["response", "conversion", "high_value"];

/// Every registered balancer with its defaults, plus GradNorm on the two other shared targets and two
/// gradient methods on the representation (per-example rows: the Gram matrix is reduced, not the rows).
fn specs() -> Vec<String> {
    let mut specs: Vec<String> = balance::registry()
        .unwrap()
        .names()
        .into_iter()
        .map(str::to_string)
        .collect();
    specs.extend(
        [
            r#"{"method":"grad_norm","shared":"last_shared_layer"}"#,
            r#"{"method":"grad_norm","shared":"representation"}"#,
            r#"{"method":"mgda","target":"representation"}"#,
            r#"{"method":"pcgrad","target":"representation"}"#,
        ]
        .map(String::from),
    );
    specs
}

fn data() -> (Dataset, Dataset) {
    let all = Dataset {
        examples: cascade(1600, 3),
        input: bench_input(),
        tasks: TASKS.iter().map(|t| Task::binary(t)).collect(),
    };
    all.split_at(1000).unwrap()
}

/// The tests' training settings: 2 epochs of 1000 rows in global batches of 199.
fn train_config() -> TrainConfig {
    TrainConfig {
        epochs: 2,
        batch_size: 199,
        seed: 11,
        ..TrainConfig::default()
    }
}

/// An MMoE without dropout (ranks draw their own masks, so dropout is not comparable to one process).
fn trainer(spec: &str, init_seed: i64) -> Trainer<Mmoe> {
    trainer_with(spec, init_seed, train_config())
}

fn trainer_with(spec: &str, init_seed: i64, train: TrainConfig) -> Trainer<Mmoe> {
    // libtorch's RNG is process-wide and the two tests' parents build trainers in parallel: seeding and
    // initialising take turns, so a seed always gives the same model.
    static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(init_seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let config = MmoeConfig {
        experts: 2,
        expert: MlpConfig::relu(&[16, 8]),
        tower: MlpConfig::relu(&[8]),
    };
    let model = Mmoe::new(&vs, &bench_input(), &config, 3).unwrap();
    let balancer = Balancer::from_spec(&spec.parse::<BalancerSpec>().unwrap(), &TASKS).unwrap();
    let tasks = data().0.tasks;
    Trainer::new(
        model,
        vs.trainable_variables(),
        balancer,
        tasks,
        train,
        Device::Cpu,
    )
    .unwrap()
}

/// Every step's loss values and applied weights, and the epochs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Trace {
    losses: Vec<Vec<f64>>,
    weights: Vec<Vec<f64>>,
    epochs: Vec<EpochReport>,
}

impl Observer for Trace {
    fn on_step(&mut self, event: &StepEvent<'_>) {
        self.losses.push(event.report.losses.clone());
        self.weights.push(event.report.weights.clone());
    }
    fn on_epoch(&mut self, report: &EpochReport) {
        self.epochs.push(report.clone());
    }
}

fn group() -> Arc<ProcessGroup> {
    let launch = Launch::from_env()
        .unwrap()
        .expect("a worker has WORLD_SIZE");
    Arc::new(ProcessGroup::new(&launch.group_options(Duration::from_secs(30))).unwrap())
}

fn spec_file(dir: &Path, index: usize, rank: usize) -> PathBuf {
    dir.join(format!("spec{index}.rank{rank}.json"))
}

/// Writes `value` as JSON through a temporary file and a rename (never half a file).
fn write_json<T: Serialize>(path: &Path, value: &T) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, serde_json::to_vec(value).unwrap()).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> T {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// Runs this test as `world` workers writing into a fresh folder; returns the folder. Fails with the
/// workers' stderr when one fails or outlives `deadline`.
fn run_job(test: &str, world: usize, deadline: Duration, env: &[(&str, String)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "balance-dp-{test}-{}-{}",
        std::process::id(),
        free_port().unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let job = LocalJob::spawn(world, free_port().unwrap(), |rank| {
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", test, "--nocapture", "--test-threads", "1"])
            .env(WORKER, "1")
            .env(OUT, &dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("rank{rank}.err"))).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    })
    .unwrap();
    for exit in job.wait(deadline) {
        let log =
            std::fs::read_to_string(dir.join(format!("rank{}.err", exit.rank))).unwrap_or_default();
        assert!(
            exit.success(),
            "rank {} failed ({:?}):\n{log}",
            exit.rank,
            exit.status
        );
    }
    dir
}

fn max_abs_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len(), "step counts differ");
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f64::max)
}

#[test]
fn two_ranks_follow_the_one_process_trajectory_for_every_balancer_family() {
    if std::env::var(WORKER).is_ok() {
        tch::set_num_threads(1);
        let dir = PathBuf::from(std::env::var(OUT).unwrap());
        let group = group();
        let (train, eval) = data();
        for (index, spec) in specs().iter().enumerate() {
            // Rank 1 initialises differently: the broadcast of rank 0's model must win.
            let init = 7 + 1000 * group.rank() as i64;
            let mut trainer = trainer(spec, init).data_parallel(group.clone()).unwrap();
            let mut trace = Trace::default();
            trainer.run(&train, &eval, &mut trace).unwrap();
            write_json(&spec_file(&dir, index, group.rank()), &trace);
            if group.rank() == 0 && spec == "grad_norm" {
                write_json(
                    &dir.join("grad_norm.final.json"),
                    &trainer.checkpoint().unwrap(),
                );
            }
        }
        return;
    }
    let start = Instant::now();
    let dir = run_job(
        "two_ranks_follow_the_one_process_trajectory_for_every_balancer_family",
        2,
        Duration::from_secs(300),
        &[],
    );
    let (train, eval) = data();
    tch::set_num_threads(1);
    let mut report = Vec::new();
    for (index, spec) in specs().iter().enumerate() {
        let rank0: Trace = read_json(&spec_file(&dir, index, 0));
        let rank1: Trace = read_json(&spec_file(&dir, index, 1));
        // Bit-identical weights on both ranks, every step (the run's own check enforces it too).
        assert_eq!(
            rank0.weights, rank1.weights,
            "{spec}: the ranks' weights differ"
        );
        assert_eq!(
            rank0.losses, rank1.losses,
            "{spec}: the ranks' global losses differ"
        );

        let mut single = trainer(spec, 7);
        let mut reference = Trace::default();
        single.run(&train, &eval, &mut reference).unwrap();
        // 10 steps: 5 per epoch of 199 (+ a 5-row tail step).
        assert_eq!(rank0.losses.len(), 12, "{spec}");
        let loss_diff = max_abs_diff(&rank0.losses, &reference.losses);
        let weight_diff = max_abs_diff(&rank0.weights, &reference.weights);
        let metric = |t: &Trace| -> Vec<Vec<f64>> {
            t.epochs
                .iter()
                .map(|e| {
                    e.metrics
                        .iter()
                        .flat_map(|m| [m.auc.unwrap(), m.log_loss.unwrap()])
                        .collect()
                })
                .collect()
        };
        let metric_diff = max_abs_diff(&metric(&rank0), &metric(&reference));
        report.push(format!(
            "{spec}: loss {loss_diff:.1e}, weight {weight_diff:.1e}, metric {metric_diff:.1e}"
        ));
        // Tolerances: float32 models whose batch is summed in two halves instead of one; measured
        // differences are below 1e-6 (see the printed report); 1e-4 leaves room for other BLAS builds.
        assert!(loss_diff < 1e-4, "{spec}: losses differ by {loss_diff:e}");
        assert!(
            weight_diff < 1e-4,
            "{spec}: weights differ by {weight_diff:e}"
        );
        assert!(
            metric_diff < 1e-4,
            "{spec}: metrics differ by {metric_diff:e}"
        );
    }
    eprintln!(
        "2 ranks vs 1 process, max abs differences:\n  {}",
        report.join("\n  ")
    );
    // The uninterrupted 2-rank GradNorm run, for the resume test.
    let _: TrainCheckpoint = read_json(&dir.join("grad_norm.final.json"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(start.elapsed() < Duration::from_secs(300));
}

/// The phases of the resume test's workers (`PHASE`): an uninterrupted run, one killed mid-epoch after
/// rank 0 checkpointed, and the resumption from that checkpoint.
const PHASE: &str = "BALANCE_DP_TEST_PHASE";
const RESUME_SPEC: &str = r#"{"method":"grad_norm","shared":"all_shared"}"#;

#[test]
fn ranks_with_different_settings_stop_together_naming_each_setting() {
    let test = "ranks_with_different_settings_stop_together_naming_each_setting";
    if std::env::var(WORKER).is_ok() {
        let dir = PathBuf::from(std::env::var(OUT).unwrap());
        let group = group();
        let rank = group.rank();
        // Rank 1 was given twice the learning rate and another batch size; the models are the same.
        let mut train = train_config();
        train.adam.lr *= (rank + 1) as f64;
        train.batch_size += rank as i64;
        let err = match trainer_with("static", 3, train).data_parallel(group.clone()) {
            Ok(_) => "no error".to_string(),
            Err(e) => e.to_string(),
        };
        // Same settings, but rank 1 was given one training row fewer.
        let (mut rows, eval) = data();
        if rank == 1 {
            rows = rows.split_at(999).unwrap().0;
        }
        let mut same = trainer("static", 3).data_parallel(group.clone()).unwrap();
        let data_err = match same.run(&rows, &eval, &mut Trace::default()) {
            Ok(()) => "no error".to_string(),
            Err(e) => e.to_string(),
        };
        // As many rows, other values: rank 1's training rows come from another seed.
        let (mut rows, eval) = data();
        if rank == 1 {
            rows.examples = cascade(1000, 4);
        }
        let mut same = trainer("static", 3).data_parallel(group).unwrap();
        let content_err = match same.run(&rows, &eval, &mut Trace::default()) {
            Ok(()) => "no error".to_string(),
            Err(e) => e.to_string(),
        };
        write_json(
            &dir.join(format!("rank{rank}.json")),
            &(err, data_err, content_err),
        );
        return;
    }
    let dir = run_job(test, 2, Duration::from_secs(60), &[]);
    for rank in 0..2 {
        let (err, data_err, content_err): (String, String, String) =
            read_json(&dir.join(format!("rank{rank}.json")));
        assert!(
            content_err.contains("`train data checksum` from")
                && !content_err.contains("eval data checksum"),
            "rank {rank}: {content_err}"
        );
        assert!(
            data_err.contains("`train rows` from 999 to 1000") && !data_err.contains("eval rows"),
            "rank {rank}: {data_err}"
        );
        assert!(
            err.contains(&format!("rank {rank} of 2"))
                && err.contains("settings agree across ranks")
                && err.contains("`batch_size` from 199 to 200")
                && err.contains("`lr` from 0.001 to 0.002")
                && !err.contains("`parameters`"),
            "rank {rank}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_two_rank_run_killed_mid_epoch_resumes_to_the_uninterrupted_result() {
    let test = "a_two_rank_run_killed_mid_epoch_resumes_to_the_uninterrupted_result";
    if std::env::var(WORKER).is_ok() {
        tch::set_num_threads(1);
        let dir = PathBuf::from(std::env::var(OUT).unwrap());
        let group = group();
        let (train, eval) = data();
        let mut trainer = trainer(RESUME_SPEC, 7 + group.rank() as i64)
            .data_parallel(group.clone())
            .unwrap();
        let mut trace = Trace::default();
        match std::env::var(PHASE).unwrap().as_str() {
            "straight" => trainer.run(&train, &eval, &mut trace).unwrap(),
            "killed" => {
                // Step 8 of 12 is in the second epoch; rank 0 checkpoints there, then both go on
                // slowly until the parent kills them.
                trainer.run_steps(&train, &eval, &mut trace, 8).unwrap();
                if group.rank() == 0 {
                    write_json(&dir.join("checkpoint.json"), &trainer.checkpoint().unwrap());
                }
                loop {
                    std::thread::sleep(Duration::from_millis(200));
                    if trainer.run_steps(&train, &eval, &mut trace, 1).unwrap() {
                        panic!("the run finished before it was killed");
                    }
                }
            }
            "resumed" => {
                let from = PathBuf::from(std::env::var("BALANCE_DP_TEST_FROM").unwrap());
                let checkpoint: TrainCheckpoint = read_json(&from.join("checkpoint.json"));
                trainer.restore(&checkpoint).unwrap();
                trainer.run(&train, &eval, &mut trace).unwrap();
            }
            other => panic!("unknown phase {other}"),
        }
        if group.rank() == 0 {
            write_json(&dir.join("final.json"), &trainer.checkpoint().unwrap());
        }
        return;
    }
    let straight = run_job(
        test,
        2,
        Duration::from_secs(120),
        &[(PHASE, "straight".into())],
    );

    // The killed run: wait for rank 0's checkpoint, then kill both ranks mid-epoch.
    let killed = std::env::temp_dir().join(format!("balance-dp-killed-{}", std::process::id()));
    std::fs::create_dir_all(&killed).unwrap();
    let exe = std::env::current_exe().unwrap();
    let job = LocalJob::spawn(2, free_port().unwrap(), |_| {
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", test, "--nocapture", "--test-threads", "1"])
            .env(WORKER, "1")
            .env(OUT, &killed)
            .env(PHASE, "killed")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !killed.join("checkpoint.json").exists() {
        assert!(Instant::now() < deadline, "no checkpoint within 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300)); // a step or so past the checkpoint
    drop(job); // SIGKILL to both ranks
    let checkpoint: TrainCheckpoint = read_json(&killed.join("checkpoint.json"));
    assert_eq!(
        (checkpoint.epoch, checkpoint.global_step),
        (1, 8),
        "mid-epoch"
    );

    let resume_on = |world: usize| {
        run_job(
            test,
            world,
            Duration::from_secs(120),
            &[
                (PHASE, "resumed".into()),
                ("BALANCE_DP_TEST_FROM", killed.display().to_string()),
            ],
        )
    };
    let resumed = resume_on(2);
    let a: TrainCheckpoint = read_json(&straight.join("final.json"));
    let b: TrainCheckpoint = read_json(&resumed.join("final.json"));
    assert_eq!(a.global_step, 12);
    assert_eq!(
        a, b,
        "the resumed run ends bit-identical to the uninterrupted one"
    );

    // The 2-rank checkpoint also resumes in one process: from there a one-process trajectory, equal to
    // the 2-rank one to float tolerance (as in the test above).
    tch::set_num_threads(1);
    let (train, eval) = data();
    let mut single = trainer(RESUME_SPEC, 999);
    single.restore(&checkpoint).unwrap();
    single.run(&train, &eval, &mut Trace::default()).unwrap();
    let c = single.checkpoint().unwrap();
    assert_eq!(c.global_step, 12);
    let last = |t: &TrainCheckpoint| -> Vec<f64> {
        let epoch = t.history.last().unwrap();
        epoch
            .metrics
            .iter()
            .map(|m| m.auc.unwrap())
            .chain(epoch.weights.iter().copied())
            .collect()
    };
    let diff = max_abs_diff(&[last(&a)], &[last(&c)]);
    assert!(diff < 1e-4, "1-process resumption differs by {diff:e}");

    // And on 3 ranks (shards of 66/66/67 rows): the checkpoint holds the global state, not a rank's.
    let three = resume_on(3);
    let d: TrainCheckpoint = read_json(&three.join("final.json"));
    assert_eq!(d.global_step, 12);
    let diff = max_abs_diff(&[last(&a)], &[last(&d)]);
    assert!(diff < 1e-4, "3-rank resumption differs by {diff:e}");
    for dir in [straight, killed, resumed, three] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
