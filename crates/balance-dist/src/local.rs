//! [`LocalJob`]: N worker processes on this machine, launched the way torchrun launches them (the same
//! environment variables), for `balance-bench run --nproc N` and for tests.
//!
//! Signals, as torchrun handles them: the workers run in a process group of their own, so a terminal's
//! Ctrl-C reaches the launcher only, which forwards it once through [`Interrupter`] (a worker that got
//! it twice would take the second as "exit now"). A worker can [`watch_launcher`] so that it stops instead
//! of training on as an orphan when its launcher is killed outright.

use std::net::TcpListener;
#[cfg(unix)]
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::error::{DistError, Result};
use crate::launch::vars;

/// A free TCP port on localhost (bound and released; another process could take it in between, which a
/// rendezvous then reports as an error, never a hang).
pub fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| {
            DistError::launch(
                "master_port",
                "0 (any free port)",
                format!("a bindable localhost port ({e})"),
            )
        })
}

/// What one worker did.
#[derive(Debug)]
pub struct WorkerExit {
    /// Its rank.
    pub rank: usize,
    /// Its exit status; `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
}

impl WorkerExit {
    /// True when it exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Running worker processes, one per rank.
#[derive(Debug)]
pub struct LocalJob {
    children: Vec<(usize, Child)>,
    interrupter: Interrupter,
}

/// Sends an interrupt (SIGINT) to every running worker of a [`LocalJob`] at once: their process group.
/// `Copy`, so a signal handler can hold it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Interrupter {
    /// The workers' process group id (the first worker's pid); `None` before a worker started, or off Unix.
    group: Option<u32>,
}

impl Interrupter {
    /// Sends SIGINT to the job's workers; false when there is nothing to send it to (no worker left, or
    /// not Unix).
    pub fn interrupt(&self) -> bool {
        #[cfg(unix)]
        if let Some(group) = self.group.and_then(|g| i32::try_from(g).ok()) {
            use nix::sys::signal::{killpg, Signal};
            return killpg(nix::unistd::Pid::from_raw(group), Signal::SIGINT).is_ok();
        }
        false
    }
}

impl LocalJob {
    /// Spawns `world_size` workers: `command(rank)` gives each its program and arguments, and gets
    /// `MASTER_ADDR=127.0.0.1`, `MASTER_PORT=port`, `RANK`, `WORLD_SIZE`, `LOCAL_RANK` and
    /// `LOCAL_WORLD_SIZE` added. A spawn failure kills the workers already started.
    pub fn spawn(world_size: usize, port: u16, command: impl Fn(usize) -> Command) -> Result<Self> {
        if world_size == 0 {
            return Err(DistError::launch("nproc", "0", "at least 1"));
        }
        let mut job = Self {
            children: Vec::with_capacity(world_size),
            interrupter: Interrupter::default(),
        };
        for rank in 0..world_size {
            let mut cmd = command(rank);
            cmd.env(vars::MASTER_ADDR, "127.0.0.1")
                .env(vars::MASTER_PORT, port.to_string())
                .env(vars::RANK, rank.to_string())
                .env(vars::WORLD_SIZE, world_size.to_string())
                .env(vars::LOCAL_RANK, rank.to_string())
                .env(vars::LOCAL_WORLD_SIZE, world_size.to_string())
                .env(vars::LAUNCHER_PID, std::process::id().to_string())
                .env_remove(vars::AGENT_STORE)
                .env_remove(vars::RUN_ID);
            // One new process group for the job, led by the first worker (0: the new process's own pid).
            #[cfg(unix)]
            cmd.process_group(
                job.interrupter
                    .group
                    .and_then(|leader| i32::try_from(leader).ok())
                    .unwrap_or(0),
            );
            match cmd.spawn() {
                Ok(child) => {
                    job.interrupter.group.get_or_insert(child.id());
                    job.children.push((rank, child));
                }
                Err(e) => {
                    job.kill();
                    return Err(DistError::launch(
                        "worker",
                        format!("{:?}", cmd.get_program()),
                        format!("a program that starts ({e})"),
                    ));
                }
            }
        }
        Ok(job)
    }

    /// What interrupts every worker of this job, usable after [`LocalJob::wait`] took the job (from a
    /// signal handler).
    pub fn interrupter(&self) -> Interrupter {
        self.interrupter
    }

    /// Waits for every worker; those still running at `deadline` (from now) are killed and reported
    /// with no status. The workers' own timeouts normally end them first.
    pub fn wait(mut self, deadline: Duration) -> Vec<WorkerExit> {
        let end = Instant::now() + deadline;
        let mut exits: Vec<WorkerExit> = Vec::with_capacity(self.children.len());
        while !self.children.is_empty() {
            let mut still = Vec::with_capacity(self.children.len());
            for (rank, mut child) in std::mem::take(&mut self.children) {
                match child.try_wait() {
                    Ok(Some(status)) => exits.push(WorkerExit {
                        rank,
                        status: Some(status),
                    }),
                    Ok(None) if Instant::now() < end => still.push((rank, child)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        exits.push(WorkerExit { rank, status: None });
                    }
                }
            }
            self.children = still;
            if !self.children.is_empty() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        exits.sort_by_key(|e| e.rank);
        exits
    }

    fn kill(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

/// True when this process's parent is a launcher that owns it: the [`LocalJob`] whose pid
/// [`vars::LAUNCHER_PID`] names, or torchrun's agent ([`vars::RUN_ID`] set). A rank started by hand
/// (a shell's `&`, `nohup`) has a parent that may exit long before it, and is not watched.
pub fn launched_by_a_launcher(get: impl Fn(&str) -> Option<String>, parent: u32) -> bool {
    get(vars::RUN_ID).is_some()
        || get(vars::LAUNCHER_PID).and_then(|p| p.parse().ok()) == Some(parent)
}

/// Calls `on_gone` once, from a background thread, when this process's launcher exits (the process is
/// then re-parented): a worker whose launcher was killed outright stops instead of training on as an
/// orphan. Checks every `every`. Watches only when [`launched_by_a_launcher`] (returns whether it
/// does); does nothing off Unix.
pub fn watch_launcher(every: Duration, on_gone: impl FnOnce() + Send + 'static) -> Result<bool> {
    #[cfg(unix)]
    {
        let parent = std::os::unix::process::parent_id();
        if parent > 1 && launched_by_a_launcher(|k| std::env::var(k).ok(), parent) {
            std::thread::Builder::new()
                .name("balance-parent-watch".into())
                .spawn(move || loop {
                    std::thread::sleep(every);
                    if std::os::unix::process::parent_id() != parent {
                        on_gone();
                        return;
                    }
                })
                .map_err(|e| {
                    DistError::launch(
                        "parent watch",
                        "a background thread",
                        format!("a thread that starts ({e})"),
                    )
                })?;
            return Ok(true);
        }
    }
    #[cfg(not(unix))]
    let _ = (every, on_gone);
    Ok(false)
}

impl Drop for LocalJob {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// Workers that exit with 7 on SIGINT and otherwise wait forever.
    fn sleepers(world: usize) -> LocalJob {
        LocalJob::spawn(world, 1, |_| {
            let mut cmd = Command::new("/bin/sh");
            cmd.args(["-c", "trap 'exit 7' INT; while :; do sleep 0.1; done"]);
            cmd
        })
        .unwrap()
    }

    #[test]
    fn one_interrupt_reaches_every_worker_of_the_job_and_nothing_else() {
        let job = sleepers(3);
        let interrupter = job.interrupter();
        std::thread::sleep(Duration::from_millis(300)); // let the shells install their traps
        assert!(interrupter.interrupt());
        let exits = job.wait(Duration::from_secs(20));
        let codes: Vec<Option<i32>> = exits
            .iter()
            .map(|e| e.status.and_then(|s| s.code()))
            .collect();
        assert_eq!(
            codes,
            vec![Some(7); 3],
            "every worker got SIGINT once: {exits:?}"
        );
        // This test process is outside the job's group: it is still here to check. With the job gone,
        // there is nothing left to interrupt.
        assert!(!interrupter.interrupt());
    }

    #[test]
    fn only_a_launcher_that_owns_the_worker_is_watched() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(launched_by_a_launcher(
            env(&[("BALANCE_LAUNCHER_PID", "41")]),
            41
        ));
        // Started by one launcher, now the child of another process: not its launcher.
        assert!(!launched_by_a_launcher(
            env(&[("BALANCE_LAUNCHER_PID", "41")]),
            42
        ));
        assert!(launched_by_a_launcher(
            env(&[("TORCHELASTIC_RUN_ID", "none")]),
            7
        ));
        // By hand (RANK and WORLD_SIZE only): never watched.
        assert!(!launched_by_a_launcher(
            env(&[("RANK", "0"), ("WORLD_SIZE", "2")]),
            7
        ));
    }

    #[test]
    fn the_workers_lead_a_process_group_of_their_own() {
        let job = sleepers(2);
        let leader = job.children[0].1.id();
        let group_of = |pid: u32| -> u32 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            // pid (comm) state ppid pgrp ...: the fields after the closing parenthesis.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            rest.split(' ').nth(2).unwrap().parse().unwrap()
        };
        for (_, child) in &job.children {
            assert_eq!(group_of(child.id()), leader);
        }
        assert_ne!(group_of(std::process::id()), leader);
        drop(job); // kills them
    }
}
