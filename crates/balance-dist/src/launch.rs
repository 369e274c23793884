//! [`Launch`]: where this process sits in a data-parallel job, read from the variables that `torchrun`
//! (and `balance-bench run --nproc N`) set.

use std::time::Duration;

use crate::error::{DistError, Result};
use crate::group::GroupOptions;

/// This process's place in a job: torchrun's `MASTER_ADDR`, `MASTER_PORT`, `RANK`, `WORLD_SIZE`,
/// `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, and torchelastic's agent store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The store host.
    pub master_addr: String,
    /// The store port.
    pub master_port: u16,
    /// The global rank.
    pub rank: usize,
    /// The number of ranks.
    pub world_size: usize,
    /// The rank on this machine (selects the GPU: `cuda:LOCAL_RANK`).
    pub local_rank: usize,
    /// Ranks on this machine.
    pub local_world_size: usize,
    /// True when torchelastic's agent already hosts the store (`TORCHELASTIC_USE_AGENT_STORE=True`): then
    /// every rank, rank 0 included, connects as a client.
    pub agent_store: bool,
    /// torchelastic's restart count (`TORCHELASTIC_RESTART_COUNT`), which namespaces the store's keys so a
    /// restarted job does not read the previous attempt's.
    pub restart_count: u64,
}

/// The variable names, for messages and for launchers that set them.
pub mod vars {
    /// The store host.
    pub const MASTER_ADDR: &str = "MASTER_ADDR";
    /// The store port.
    pub const MASTER_PORT: &str = "MASTER_PORT";
    /// The global rank.
    pub const RANK: &str = "RANK";
    /// The number of ranks.
    pub const WORLD_SIZE: &str = "WORLD_SIZE";
    /// The rank on this machine.
    pub const LOCAL_RANK: &str = "LOCAL_RANK";
    /// Ranks on this machine.
    pub const LOCAL_WORLD_SIZE: &str = "LOCAL_WORLD_SIZE";
    /// `True` when torchelastic's agent hosts the store.
    pub const AGENT_STORE: &str = "TORCHELASTIC_USE_AGENT_STORE";
    /// torchelastic's restart count.
    pub const RESTART_COUNT: &str = "TORCHELASTIC_RESTART_COUNT";
    /// torchelastic's run id: set for every worker that torchrun's agent started.
    pub const RUN_ID: &str = "TORCHELASTIC_RUN_ID";
    /// The pid of the [`crate::LocalJob`] process that started this worker (balance's own launcher).
    pub const LAUNCHER_PID: &str = "BALANCE_LAUNCHER_PID";
}

impl Launch {
    /// Reads the process environment; `None` when `WORLD_SIZE` is unset (a plain one-process run).
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `get` (testable without touching the environment).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let Some(world) = get(vars::WORLD_SIZE) else {
            return Ok(None);
        };
        let number = |name: &str, value: &str, expected: &str| -> Result<u64> {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| DistError::launch(name, value, expected))
        };
        let world_size = number(vars::WORLD_SIZE, &world, "a whole number >= 1")? as usize;
        if world_size == 0 {
            return Err(DistError::launch(
                vars::WORLD_SIZE,
                world,
                "a whole number >= 1",
            ));
        }
        let required = |name: &str| {
            get(name).ok_or_else(|| {
                DistError::launch(
                    name,
                    "",
                    format!("set whenever {} is (torchrun sets both)", vars::WORLD_SIZE),
                )
            })
        };
        let rank_text = required(vars::RANK)?;
        let rank = number(vars::RANK, &rank_text, "a whole number")? as usize;
        if rank >= world_size {
            return Err(DistError::launch(
                vars::RANK,
                rank_text,
                format!("below {}={world_size}", vars::WORLD_SIZE),
            ));
        }
        let master_addr = get(vars::MASTER_ADDR).unwrap_or_else(|| "127.0.0.1".into());
        let port_text = required(vars::MASTER_PORT)?;
        let master_port = port_text.trim().parse::<u16>().map_err(|_| {
            DistError::launch(vars::MASTER_PORT, &port_text, "a TCP port (0-65535)")
        })?;
        let local_rank = match get(vars::LOCAL_RANK) {
            Some(v) => number(vars::LOCAL_RANK, &v, "a whole number")? as usize,
            None => rank,
        };
        let local_world_size = match get(vars::LOCAL_WORLD_SIZE) {
            Some(v) => number(vars::LOCAL_WORLD_SIZE, &v, "a whole number")? as usize,
            None => world_size,
        };
        let agent_store = get(vars::AGENT_STORE)
            .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1"));
        let restart_count = match get(vars::RESTART_COUNT) {
            Some(v) => number(vars::RESTART_COUNT, &v, "a whole number")?,
            None => 0,
        };
        Ok(Some(Self {
            master_addr,
            master_port,
            rank,
            world_size,
            local_rank,
            local_world_size,
            agent_store,
            restart_count,
        }))
    }

    /// The options to join this launch's group with `timeout`.
    pub fn group_options(&self, timeout: Duration) -> GroupOptions {
        GroupOptions {
            hosts_store: self.rank == 0 && !self.agent_store,
            prefix: format!("balance/attempt_{}", self.restart_count),
            ..GroupOptions::new(
                self.master_addr.clone(),
                self.master_port,
                self.rank,
                self.world_size,
            )
            .with_timeout(timeout)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<Launch>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn torchrun_variables_are_read_and_the_agent_store_is_joined_as_a_client() {
        let launch = read(&[
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29400"),
            ("RANK", "0"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "0"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "3"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(launch.world_size, 4);
        assert_eq!(launch.local_world_size, 2);
        let options = launch.group_options(Duration::from_secs(5));
        assert!(!options.hosts_store, "the agent hosts the store");
        assert_eq!(options.prefix, "balance/attempt_3");
        assert_eq!(options.master_addr, "10.0.0.1");
        assert_eq!(options.master_port, 29400);

        let plain = read(&[("MASTER_PORT", "1234"), ("RANK", "0"), ("WORLD_SIZE", "2")])
            .unwrap()
            .unwrap();
        assert!(plain.group_options(Duration::from_secs(5)).hosts_store);
        assert_eq!(plain.master_addr, "127.0.0.1");
        assert_eq!(plain.local_rank, 0);
    }

    #[test]
    fn no_world_size_is_a_single_process_and_bad_values_name_the_variable() {
        assert_eq!(read(&[("RANK", "1")]).unwrap(), None);
        let err = read(&[("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_PORT", "1")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("`RANK` = \"2\", expected below WORLD_SIZE=2"),
            "{err}"
        );
        let err = read(&[("WORLD_SIZE", "two")]).unwrap_err();
        assert!(err.to_string().contains("`WORLD_SIZE` = \"two\""), "{err}");
        let err = read(&[("WORLD_SIZE", "2"), ("RANK", "0")]).unwrap_err();
        assert!(err.to_string().contains("`MASTER_PORT`"), "{err}");
        let err =
            read(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "70000")]).unwrap_err();
        assert!(err.to_string().contains("a TCP port"), "{err}");
    }
}
