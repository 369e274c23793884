//! Data-parallel `run`: [`Ranks`] joins the group that `torchrun` (or `run --nproc N`) launched, and
//! [`launch_local`] is `--nproc N`, which re-runs this binary as N workers on this machine.
//!
//! Every rank trains every run of the experiment together with the others ([`balance_harness::train`]'s
//! data-parallel trainer); rank 0 alone reads and writes the run store, shows progress, and writes the
//! report. Which runs are already stored, and whether a signal asked to stop, are decided on rank 0 /
//! agreed by all, so the ranks never disagree on what to train next.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use balance::{Collective, DataParallel, ReduceOp};
use balance_dist::{Interrupter, Launch, LocalJob, ProcessGroup};
use tch::Tensor;

use crate::experiment::Experiment;
use crate::store::field_differences;

/// This process's place in a data-parallel run (one rank of one when not launched).
#[derive(Debug, Default)]
pub struct Ranks {
    launch: Option<Launch>,
    group: Option<Arc<ProcessGroup>>,
    nccl: bool,
}

impl Ranks {
    /// A one-process run.
    pub fn single() -> Self {
        Self::default()
    }

    /// Joins the group that the environment describes (torchrun's variables; a group of one when
    /// `WORLD_SIZE=1`, which still runs every collective), or a one-process run when `WORLD_SIZE` is unset. `timeout` bounds the rendezvous and every collective. With `cuda`,
    /// CUDA tensors go through NCCL when this build has it (feature `nccl`), else through Gloo.
    pub fn from_env(timeout: Duration, cuda: bool) -> Result<Self> {
        let Some(launch) = Launch::from_env()? else {
            return Ok(Self::single());
        };
        let options = balance_dist::GroupOptions {
            nccl: cuda && balance_dist::nccl_available(),
            ..launch.group_options(timeout)
        };
        let group = ProcessGroup::new(&options).context("joining the data-parallel group")?;
        Ok(Self {
            launch: Some(launch),
            group: Some(Arc::new(group)),
            nccl: options.nccl,
        })
    }

    /// The backend that carries tensors on `device` in this group (`None` without a group): `nccl` for
    /// CUDA tensors when the group has it, `gloo` otherwise (it stages CUDA tensors through the host).
    pub fn backend(&self, device: tch::Device) -> Option<&'static str> {
        self.group.as_ref()?;
        Some(match device {
            tch::Device::Cuda(_) if self.nccl => "nccl",
            _ => "gloo",
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.group.as_ref().map_or(0, |g| g.rank())
    }

    /// The number of ranks.
    pub fn world(&self) -> usize {
        self.group.as_ref().map_or(1, |g| g.world_size())
    }

    /// True on rank 0, which owns the store, the progress display and the report.
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// The rank on this machine (its GPU index).
    pub fn local_rank(&self) -> usize {
        self.launch.as_ref().map_or(0, |l| l.local_rank)
    }

    /// Threads for this process: `total` split evenly between the ranks of this machine, at least one.
    pub fn threads(&self, total: i32) -> i32 {
        let local = self
            .launch
            .as_ref()
            .map_or(1, |l| l.local_world_size.max(1));
        (total / i32::try_from(local).unwrap_or(i32::MAX)).max(1)
    }

    /// The group, for the trainer (`None` in a one-process run).
    pub fn collective(&self) -> Option<Arc<dyn Collective>> {
        self.group
            .as_ref()
            .map(|g| Arc::clone(g) as Arc<dyn Collective>)
    }

    /// True on every rank when any rank's `local` is true (one all-reduce; `local` alone without a group).
    pub fn any(&self, local: bool) -> Result<bool> {
        let Some(group) = &self.group else {
            return Ok(local);
        };
        let mut flag = Tensor::from_slice(&[i32::from(local)]);
        group.all_reduce(&mut flag, ReduceOp::Max)?;
        Ok(flag.int64_value(&[0]) != 0)
    }

    /// Rank 0's `flags` on every rank (for example which planned runs the store already holds).
    pub fn from_root(&self, flags: &[bool]) -> Result<Vec<bool>> {
        let Some(group) = &self.group else {
            return Ok(flags.to_vec());
        };
        let bytes: Vec<u8> = flags.iter().map(|&f| u8::from(f)).collect();
        let received =
            DataParallel::new(Arc::clone(group) as Arc<dyn Collective>).broadcast_bytes(&bytes)?;
        Ok(received.into_iter().map(|b| b != 0).collect())
    }
}

impl Ranks {
    /// Errors on every rank unless every rank holds rank 0's `experiment`, apart from `threads` (each
    /// machine's own) and `csv` (file paths may differ between machines; the trainer compares the data
    /// themselves by checksum): ranks started with different settings would plan different runs, and
    /// their collectives would not match. A differing rank names the fields; the others name the ranks.
    pub fn check_same_experiment(&self, experiment: &Experiment) -> Result<()> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        let mut mine = serde_json::to_value(experiment).context("serialising the experiment")?;
        if let Some(fields) = mine.as_object_mut() {
            fields.remove("threads");
            fields.remove("csv");
        }
        let bytes = serde_json::to_vec(&mine).context("serialising the experiment")?;
        let dp = DataParallel::new(Arc::clone(group) as Arc<dyn Collective>);
        let root: serde_json::Value = serde_json::from_slice(&dp.broadcast_bytes(&bytes)?)
            .context("reading rank 0's experiment")?;
        let differs = root != mine;
        let mut flags = vec![0i32; self.world()];
        if let Some(flag) = flags.get_mut(self.rank()) {
            *flag = i32::from(differs);
        }
        let mut flags = Tensor::from_slice(&flags);
        group.all_reduce(&mut flags, ReduceOp::Sum)?;
        let differing: Vec<String> = Vec::<i32>::try_from(&flags)
            .context("reading which ranks differ")?
            .iter()
            .enumerate()
            .filter(|(_, &f)| f != 0)
            .map(|(rank, _)| rank.to_string())
            .collect();
        if differing.is_empty() {
            return Ok(());
        }
        if differs {
            anyhow::bail!(
                "rank {} was started with other settings than rank 0 (every rank must run the same command): {}",
                self.rank(),
                field_differences(&root, &mine, ("rank 0", "this rank")).join("; ")
            );
        }
        anyhow::bail!(
            "rank(s) {} were started with other settings than rank 0 (every rank must run the same command; each names the fields on its stderr)",
            differing.join(", ")
        )
    }
}

/// The option that asks for local workers, as `run` spells it.
pub const NPROC_FLAG: &str = "--nproc";

/// `args` without `--nproc N` / `--nproc=N` (what each worker is run with).
pub fn without_nproc(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut skip_value = false;
    for arg in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        let text = arg.to_string_lossy();
        if text == NPROC_FLAG {
            skip_value = true;
        } else if !text.starts_with("--nproc=") {
            out.push(arg.clone());
        }
    }
    out
}

/// `run --nproc N`: re-runs this executable with `args` (program name first, `--nproc` removed) as `nproc`
/// workers on localhost, with torchrun's variables set, and waits for them. Rank 0's exit code is the
/// result (130 after an interrupt); a rank that failed is named on stderr. The workers run in their own
/// process group: every SIGINT/SIGTERM/SIGHUP this process gets (a terminal's Ctrl-C, `kill`, a
/// scheduler's stop) is forwarded to all of them once, so they stop together at a chunk and rank 0
/// writes the partial report (a second signal makes them exit at once). Killed outright, this process
/// leaves no orphans: each worker watches its parent and stops when it is gone.
pub fn launch_local(nproc: usize, args: &[OsString]) -> Result<ExitCode> {
    // A signal before the workers exist is kept and delivered right after they start; whoever takes
    // `PENDING` from true to false delivers it, so it is delivered once.
    static WORKERS: OnceLock<Interrupter> = OnceLock::new();
    static PENDING: AtomicBool = AtomicBool::new(false);
    fn deliver_pending() {
        if let Some(workers) = WORKERS.get() {
            if PENDING.swap(false, Ordering::SeqCst) {
                workers.interrupt();
            }
        }
    }
    ctrlc::set_handler(|| match WORKERS.get() {
        Some(workers) => {
            workers.interrupt();
        }
        None => {
            PENDING.store(true, Ordering::SeqCst);
            deliver_pending();
        }
    })
    .context("installing the launcher's signal handler")?;
    let exe = std::env::current_exe().context("locating this executable to start the workers")?;
    let worker_args = without_nproc(args.get(1..).unwrap_or_default());
    let port = balance_dist::free_port()?;
    let job = LocalJob::spawn(nproc, port, |_| {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(&worker_args);
        cmd
    })?;
    let _ = WORKERS.set(job.interrupter());
    deliver_pending();
    // The workers' own collective timeouts end them when one dies; this bound is only a backstop.
    let exits = job.wait(Duration::from_secs(7 * 24 * 3600));
    let failed: Vec<String> = exits
        .iter()
        .filter(|e| !e.success())
        .map(|e| match e.status.and_then(|s| s.code()) {
            Some(code) => format!("rank {} exited with {code}", e.rank),
            None => format!("rank {} was killed", e.rank),
        })
        .collect();
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("balance-bench --nproc {nproc}: {}", failed.join(", "));
    let root = exits
        .first()
        .and_then(|e| e.status)
        .and_then(|s| s.code())
        .unwrap_or(1);
    Ok(ExitCode::from(
        u8::try_from(root).ok().filter(|&c| c != 0).unwrap_or(1),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nproc_is_removed_in_both_spellings_and_nothing_else() {
        let args: Vec<OsString> = [
            "run",
            "--nproc",
            "2",
            "--seeds",
            "1",
            "--nproc=3",
            "--quiet",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let kept: Vec<String> = without_nproc(&args)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(kept, vec!["run", "--seeds", "1", "--quiet"]);
    }

    #[test]
    fn a_single_process_agrees_with_itself() {
        let ranks = Ranks::single();
        assert_eq!((ranks.rank(), ranks.world()), (0, 1));
        assert!(ranks.any(true).unwrap() && !ranks.any(false).unwrap());
        assert_eq!(ranks.from_root(&[true, false]).unwrap(), vec![true, false]);
        assert_eq!(ranks.threads(4), 4);
    }
}
