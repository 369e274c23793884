//! [`DistError`]: what went wrong in a process group, naming the rank and the operation.

use balance_core::BalanceError;

/// A failed collective, rendezvous or launch.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A collective or the rendezvous failed (a peer died or never joined, a timeout, a transport error).
    #[error("rank {rank} of {world}: {op} failed: {message}")]
    Collective {
        /// This process's rank.
        rank: usize,
        /// The group's size.
        world: usize,
        /// The operation (`rendezvous`, `all_reduce`, `broadcast`, `all_gather`, `barrier`).
        op: String,
        /// The transport's message.
        message: String,
    },
    /// A launch variable (torchrun's environment, or an option) is missing or malformed.
    #[error("launch: `{variable}` = {value:?}, expected {expected}")]
    Launch {
        /// The variable or option.
        variable: String,
        /// Its value (empty when missing).
        value: String,
        /// What was expected.
        expected: String,
    },
}

impl DistError {
    /// A [`DistError::Launch`].
    pub fn launch(
        variable: impl Into<String>,
        value: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        DistError::Launch {
            variable: variable.into(),
            value: value.into(),
            expected: expected.into(),
        }
    }
}

impl From<DistError> for BalanceError {
    fn from(e: DistError) -> Self {
        match e {
            DistError::Collective {
                rank,
                world,
                op,
                message,
            } => BalanceError::Collective {
                rank,
                world,
                op,
                message,
            },
            launch @ DistError::Launch { .. } => BalanceError::ConfigSyntax(launch.to_string()),
        }
    }
}

/// Shorthand for results whose error is [`DistError`].
pub type Result<T, E = DistError> = std::result::Result<T, E>;
