//! [`DistError`]: what went wrong in a process group, naming the rank and the operation.

use balance_core::BalanceError;

/// A failed collective, rendezvous or launch.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A collective or the rendezvous failed (a peer died or never joined, a timeout, a transport error):
    /// a [`BalanceError::Collective`], which names this rank, the operation and what the heartbeats say
    /// about the others.
    #[error(transparent)]
    Collective(BalanceError),
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

impl DistError {
    /// A [`DistError::Collective`] for `op` on `rank` of `world`.
    pub fn collective(
        rank: usize,
        world: usize,
        op: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        DistError::Collective(BalanceError::Collective {
            rank,
            world,
            op: op.into(),
            message: message.into(),
        })
    }
}

impl From<DistError> for BalanceError {
    fn from(e: DistError) -> Self {
        match e {
            DistError::Collective(inner) => inner,
            launch @ DistError::Launch { .. } => BalanceError::ConfigSyntax(launch.to_string()),
        }
    }
}

/// Shorthand for results whose error is [`DistError`].
pub type Result<T, E = DistError> = std::result::Result<T, E>;
