//! [`LocalJob`]: N worker processes on this machine, launched the way torchrun launches them (the same
//! environment variables), for `balance-bench run --nproc N` and for tests.

use std::net::TcpListener;
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
        };
        for rank in 0..world_size {
            let mut cmd = command(rank);
            cmd.env(vars::MASTER_ADDR, "127.0.0.1")
                .env(vars::MASTER_PORT, port.to_string())
                .env(vars::RANK, rank.to_string())
                .env(vars::WORLD_SIZE, world_size.to_string())
                .env(vars::LOCAL_RANK, rank.to_string())
                .env(vars::LOCAL_WORLD_SIZE, world_size.to_string())
                .env_remove(vars::AGENT_STORE);
            match cmd.spawn() {
                Ok(child) => job.children.push((rank, child)),
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

impl Drop for LocalJob {
    fn drop(&mut self) {
        self.kill();
    }
}
