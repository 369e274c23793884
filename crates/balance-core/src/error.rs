//! The one error type of the toolkit: every failure says what went wrong and where.

use thiserror::Error;

/// Everything that can go wrong while configuring, running or restoring a balancer.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum BalanceError {
    /// A balancer name that no registered plugin provides.
    #[error("unknown balancer `{name}`{}; known balancers: {}", did_you_mean(.suggestion), .known.join(", "))]
    UnknownBalancer {
        /// The name that was asked for.
        name: String,
        /// Every registered name, sorted.
        known: Vec<String>,
        /// The closest known name, when one is close enough to be a likely typo.
        suggestion: Option<String>,
    },

    /// Two plugins registered the same balancer name.
    #[error("balancer name `{name}` is registered {count} times (summaries: {}); rename one of the plugins", .summaries.join(" | "))]
    DuplicateBalancer {
        /// The contested name.
        name: String,
        /// How many registrations carry it.
        count: usize,
        /// Their one-line summaries, to tell the plugins apart.
        summaries: Vec<String>,
    },

    /// A config field holds a value outside what the balancer accepts.
    #[error("invalid config for `{method}`: field `{field}` = {value}, expected {expected}")]
    InvalidConfig {
        /// The balancer the config is for.
        method: String,
        /// The offending field.
        field: String,
        /// The value found, as written.
        value: String,
        /// What the field accepts.
        expected: String,
    },

    /// A config that cannot be read at all (wrong shape, unknown field, bad syntax).
    #[error("cannot read balancer config: {0}")]
    ConfigSyntax(String),

    /// The number of tasks does not match what the balancer was built for.
    #[error(
        "task count mismatch in {context}: got {actual}, the balancer was built for {expected}"
    )]
    TaskCountMismatch {
        /// Where the mismatch was found (for example `losses`).
        context: String,
        /// The balancer's number of tasks.
        expected: usize,
        /// The number found.
        actual: usize,
    },

    /// A task loss was NaN or infinite.
    #[error("non-finite loss for task `{task}` at step {step}: {value}")]
    NonFiniteLoss {
        /// The task's name (or index when tasks are unnamed).
        task: String,
        /// The balancer step at which it happened (0-based).
        step: u64,
        /// The loss value.
        value: f64,
    },

    /// A balancer produced weights that must not reach the model; its state was rolled back.
    #[error("balancer `{balancer}` produced an invalid weight at step {step}: {reason}; its state was rolled back")]
    InvalidWeights {
        /// The balancer's name.
        balancer: String,
        /// The step (0-based).
        step: u64,
        /// What was wrong (which task, which value).
        reason: String,
    },

    /// A saved state does not belong to, or does not fit, this balancer.
    #[error("state does not match balancer `{balancer}`: {reason}")]
    StateMismatch {
        /// The balancer the state was offered to.
        balancer: String,
        /// Why it does not fit.
        reason: String,
    },

    /// The balancer needs a part of the model that the model did not describe.
    #[error("balancer `{balancer}` needs the model's {part}, which the model did not provide")]
    MissingSharedPart {
        /// The balancer's name.
        balancer: String,
        /// The missing part (for example `shared representation`).
        part: String,
    },

    /// A task loss was not a scalar (one element).
    #[error("the loss of task `{task}` is not a scalar: shape {shape:?}, expected one element")]
    NonScalarLoss {
        /// The task's name.
        task: String,
        /// The loss tensor's shape.
        shape: Vec<i64>,
    },

    /// An update failed and restoring the state from before it failed too: `error` is what went wrong
    /// first, `rollback` why the restore failed; the balancer's state is unknown, do not keep using it.
    #[error("{error}; restoring the balancer's earlier state then failed as well ({rollback}), so its state is unknown")]
    RollbackFailed {
        /// The original error.
        error: Box<BalanceError>,
        /// Why the rollback failed.
        rollback: Box<BalanceError>,
    },

    /// Label statistics that are inconsistent, or that a balancer needs and was not given.
    #[error("label statistics: {0}")]
    LabelStats(String),

    /// A collective of a data-parallel group failed (a rank died or never joined, a timeout, a transport
    /// error) or the ranks disagree (the weights drifted apart).
    #[error("rank {rank} of {world}: {op} failed: {message}")]
    Collective {
        /// This process's rank.
        rank: usize,
        /// The group's size.
        world: usize,
        /// The collective or check (`all_reduce`, `broadcast`, `weights agree across ranks`...).
        op: String,
        /// What went wrong (the transport's message names the peer when it knows it).
        message: String,
    },

    /// A libtorch operation failed.
    #[error("libtorch error during {context}: {message}")]
    Torch {
        /// What the balancer was doing.
        context: String,
        /// libtorch's message.
        message: String,
    },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

impl BalanceError {
    /// Wraps a libtorch error with what was being done when it happened.
    pub fn torch(context: impl Into<String>, err: tch::TchError) -> Self {
        BalanceError::Torch {
            context: context.into(),
            message: err.to_string(),
        }
    }

    /// Builds an [`BalanceError::InvalidConfig`].
    pub fn invalid_config(
        method: impl Into<String>,
        field: impl Into<String>,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        BalanceError::InvalidConfig {
            method: method.into(),
            field: field.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// Shorthand for results whose error is [`BalanceError`].
pub type Result<T, E = BalanceError> = std::result::Result<T, E>;

/// Extension for turning libtorch results into [`BalanceError::Torch`] with context.
pub trait TorchResultExt<T> {
    /// Attaches `context` to a libtorch error.
    fn context(self, context: &str) -> Result<T>;
}

impl<T> TorchResultExt<T> for std::result::Result<T, tch::TchError> {
    fn context(self, context: &str) -> Result<T> {
        self.map_err(|e| BalanceError::torch(context, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_balancer_lists_known_names_and_suggests() {
        let err = BalanceError::UnknownBalancer {
            name: "gradnorm".into(),
            known: vec!["grad_norm".into(), "static".into()],
            suggestion: Some("grad_norm".into()),
        };
        assert_eq!(
            err.to_string(),
            "unknown balancer `gradnorm` (did you mean `grad_norm`?); known balancers: grad_norm, static"
        );
    }

    #[test]
    fn invalid_config_names_field_value_and_expectation() {
        let err = BalanceError::invalid_config("static", "weights[1]", -1.0, "a finite value >= 0");
        assert_eq!(
            err.to_string(),
            "invalid config for `static`: field `weights[1]` = -1, expected a finite value >= 0"
        );
    }
}
