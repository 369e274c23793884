//! Two (or three) real processes on localhost, Gloo over c10d: the collectives' values, and what happens
//! when a rank dies or never joins (an error naming the rank within the timeout, never a hang).
//!
//! Each test re-runs this test binary as its workers (`--exact NAME`), marked by `WORKER` in the
//! environment; the parent bounds them with a deadline and kills what is left.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use balance_core::ReduceOp;
use balance_dist::{free_port, Launch, LocalJob, ProcessGroup};
use tch::Tensor;

const WORKER: &str = "BALANCE_DIST_TEST_WORKER";
const LOG_DIR: &str = "BALANCE_DIST_TEST_LOGS";

/// Runs `test` as `world` workers (only the ranks in `ranks`) and returns each worker's stderr and exit.
fn run_workers(
    test: &str,
    world: usize,
    ranks: &[usize],
    deadline: Duration,
) -> Vec<(usize, bool, String)> {
    let logs = std::env::temp_dir().join(format!("balance-dist-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    let exe = std::env::current_exe().unwrap();
    let port = free_port().unwrap();
    let job = LocalJob::spawn(world, port, |rank| {
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", test, "--nocapture", "--test-threads", "1"])
            .env(WORKER, "1")
            .env(LOG_DIR, &logs)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(logs.join(format!("rank{rank}.err"))).unwrap());
        if !ranks.contains(&rank) {
            cmd.env("BALANCE_DIST_TEST_ABSENT", "1");
        }
        cmd
    })
    .unwrap();
    let exits = job.wait(deadline);
    let out = exits
        .iter()
        .map(|e| {
            let log: PathBuf = logs.join(format!("rank{}.err", e.rank));
            (
                e.rank,
                e.success(),
                std::fs::read_to_string(log).unwrap_or_default(),
            )
        })
        .collect();
    let _ = std::fs::remove_dir_all(&logs);
    out
}

fn worker_group(timeout: Duration) -> Option<ProcessGroup> {
    std::env::var(WORKER).ok()?;
    if std::env::var("BALANCE_DIST_TEST_ABSENT").is_ok() {
        std::thread::sleep(Duration::from_secs(8));
        std::process::exit(3);
    }
    let launch = Launch::from_env().unwrap().unwrap();
    match ProcessGroup::new(&launch.group_options(timeout)) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("WORKER ERROR: {e}");
            std::process::exit(2);
        }
    }
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(tch::Kind::Double).reshape([-1])).unwrap()
}

#[test]
fn collectives_give_the_values_of_an_independent_computation() {
    if let Some(group) = worker_group(Duration::from_secs(20)) {
        let r = group.rank() as f64;
        let w = group.world_size() as f64;
        // Rank r holds [r + 1, 10 (r + 1)]; by hand: sum = [w(w+1)/2, 10 w(w+1)/2].
        let mine = || Tensor::from_slice(&[r + 1.0, 10.0 * (r + 1.0)]);
        let tri = w * (w + 1.0) / 2.0;
        let mut t = mine();
        group.all_reduce(&mut t, ReduceOp::Sum).unwrap();
        assert_eq!(values(&t), vec![tri, 10.0 * tri]);
        let mut t = mine();
        group.all_reduce(&mut t, ReduceOp::Average).unwrap();
        assert_eq!(values(&t), vec![tri / w, 10.0 * tri / w]);
        let mut t = mine();
        group.all_reduce(&mut t, ReduceOp::Max).unwrap();
        assert_eq!(values(&t), vec![w, 10.0 * w]);
        let mut t = Tensor::from_slice(&[r as f32 - 5.0]);
        group.all_reduce(&mut t, ReduceOp::Min).unwrap();
        assert_eq!(values(&t), vec![-5.0]);
        // A non-contiguous view is reduced in place too (the transpose of a 2 x 3 matrix).
        let base = Tensor::from_slice(&[1.0f32, 2., 3., 4., 5., 6.]).reshape([2, 3]);
        let mut view = base.tr();
        group.all_reduce(&mut view, ReduceOp::Sum).unwrap();
        assert_eq!(
            values(&base),
            vec![w, 2. * w, 3. * w, 4. * w, 5. * w, 6. * w]
        );
        // Broadcast from the last rank; all_gather in rank order; barrier.
        let mut b = Tensor::from_slice(&[r * 7.0, -r]);
        group.broadcast(&mut b, group.world_size() - 1).unwrap();
        assert_eq!(values(&b), vec![(w - 1.0) * 7.0, -(w - 1.0)]);
        let gathered = group
            .all_gather(&Tensor::from_slice(&[r as i64, 100]))
            .unwrap();
        let got: Vec<Vec<f64>> = gathered.iter().map(values).collect();
        let want: Vec<Vec<f64>> = (0..group.world_size())
            .map(|k| vec![k as f64, 100.0])
            .collect();
        assert_eq!(got, want);
        group.barrier().unwrap();
        // 7 collectives and a barrier so far; payload: 3 x 2 f64 + 1 f32 + 6 f32 + 2 f64 + 2 i64.
        let traffic = group.traffic();
        assert_eq!(traffic.calls, 8);
        assert_eq!(traffic.bytes, 3 * 16 + 4 + 24 + 16 + 16);
        return;
    }
    for world in [2, 3] {
        let out = run_workers(
            "collectives_give_the_values_of_an_independent_computation",
            world,
            &(0..world).collect::<Vec<_>>(),
            Duration::from_secs(60),
        );
        for (rank, ok, log) in &out {
            assert!(ok, "world {world}, rank {rank} failed:\n{log}");
        }
    }
}

/// This process's threads whose name starts with `prefix` (Linux `/proc/self/task`).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|t| {
            t.as_ref().is_ok_and(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
            })
        })
        .count()
}

#[test]
fn large_collectives_start_no_openmp_pool_on_c10d_threads() {
    // Threads inherit their creator's name: an OpenMP pool started by a parallel kernel on c10d's worker
    // thread shows up as one more `pt_gloo_runloop`. With a second pool, libgomp stops spinning between
    // parallel regions and the training thread's kernels wait on futexes (Gloo's allgather did this).
    if let Some(group) = worker_group(Duration::from_secs(30)) {
        tch::set_num_threads(2);
        let big = Tensor::ones([1 << 21], (tch::Kind::Float, tch::Device::Cpu));
        // The training thread's own pool exists first, as in training.
        let _ = (&big * 2.0).sum(tch::Kind::Float);
        let before = threads_named("pt_gloo");
        let gathered = group.all_gather(&big).unwrap();
        assert_eq!(gathered.len(), 2);
        let mut sum = big.copy();
        group.all_reduce(&mut sum, ReduceOp::Sum).unwrap();
        let mut root = big.copy();
        group.broadcast(&mut root, 0).unwrap();
        let after = threads_named("pt_gloo");
        assert_eq!(
            after,
            before,
            "c10d's threads started {} more",
            after - before
        );
        return;
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("one core: OpenMP would start no pool anyway; nothing to check");
        return;
    }
    let out = run_workers(
        "large_collectives_start_no_openmp_pool_on_c10d_threads",
        2,
        &[0, 1],
        Duration::from_secs(60),
    );
    for (rank, ok, log) in &out {
        assert!(ok, "rank {rank} failed:\n{log}");
    }
}

#[test]
fn a_rank_that_never_joins_is_an_error_within_the_timeout() {
    if let Some(group) = worker_group(Duration::from_secs(3)) {
        // Not reached by rank 0 (its rendezvous fails); a present rank would block here.
        let _ = group.barrier();
        return;
    }
    let start = Instant::now();
    let out = run_workers(
        "a_rank_that_never_joins_is_an_error_within_the_timeout",
        2,
        &[0],
        Duration::from_secs(20),
    );
    let elapsed = start.elapsed();
    let (_, ok, log) = &out[0];
    eprintln!("rank 0 without rank 1:\n{log}");
    assert!(!ok, "rank 0 should fail without rank 1");
    assert!(
        log.contains("WORKER ERROR: rank 0 of 2: rendezvous at 127.0.0.1")
            && log.contains("no heartbeat from rank 1"),
        "rank 0's error names itself, the rendezvous and the missing rank:\n{log}"
    );
    assert!(elapsed < Duration::from_secs(20), "bounded: {elapsed:?}");
}

#[test]
fn a_rank_that_dies_mid_run_stops_the_others_with_an_error() {
    if let Some(group) = worker_group(Duration::from_secs(3)) {
        let mut t = Tensor::from_slice(&[1.0f32]);
        group.all_reduce(&mut t, ReduceOp::Sum).unwrap();
        if group.rank() == 1 {
            std::process::exit(7); // dies after one good step, without leaving the group
        }
        let err = group.all_reduce(&mut t, ReduceOp::Sum).unwrap_err();
        eprintln!("SURVIVOR ERROR: {err}");
        std::process::exit(9);
    }
    let start = Instant::now();
    let out = run_workers(
        "a_rank_that_dies_mid_run_stops_the_others_with_an_error",
        2,
        &[0, 1],
        Duration::from_secs(30),
    );
    let (_, _, log) = &out[0];
    eprintln!("rank 0 after rank 1 died:\n{log}");
    assert!(
        log.contains("SURVIVOR ERROR: rank 0 of 2: all_reduce failed:")
            && log.contains("no heartbeat from rank 1"),
        "rank 0's error names itself, the op and the dead rank:\n{log}"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_rank_that_hangs_is_reported_alive_but_stuck_at_the_timeout() {
    if let Some(group) = worker_group(Duration::from_secs(2)) {
        let mut t = Tensor::from_slice(&[1.0f32]);
        group.all_reduce(&mut t, ReduceOp::Sum).unwrap();
        if group.rank() == 1 {
            // Alive (its heartbeat thread runs) but not calling the next collective.
            std::thread::sleep(Duration::from_secs(5));
            std::process::exit(0);
        }
        let err = group.all_reduce(&mut t, ReduceOp::Sum).unwrap_err();
        eprintln!("SURVIVOR ERROR: {err}");
        std::process::exit(9);
    }
    let start = Instant::now();
    let out = run_workers(
        "a_rank_that_hangs_is_reported_alive_but_stuck_at_the_timeout",
        2,
        &[0, 1],
        Duration::from_secs(30),
    );
    let (_, _, log) = &out[0];
    assert!(
        log.contains("SURVIVOR ERROR: rank 0 of 2: all_reduce failed:")
            && log.contains("every rank's heartbeat is alive"),
        "rank 0's error says the peer is alive but stuck:\n{log}"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
}
