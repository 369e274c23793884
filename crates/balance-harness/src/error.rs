//! Errors of the harness.

use thiserror::Error;

/// What can go wrong while building or running a model.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// A config field holds a value outside what is accepted.
    #[error("invalid {component} config: field `{field}` = {value}, expected {expected}")]
    InvalidConfig {
        /// The component (for example `mmoe`).
        component: &'static str,
        /// The field.
        field: String,
        /// The value found.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// The balancer failed (its state was rolled back).
    #[error(transparent)]
    Balance(#[from] balance_core::BalanceError),
    /// A data file could not be read or holds a bad value (the message names file, line, column, value).
    #[error("bad data: {0}")]
    BadData(String),
    /// A data file that should be there is not (the message names it and how to get it).
    #[error("missing data: {0}")]
    MissingData(String),
    /// The optimizer could not build, update, read or restore its state (the message says which).
    #[error("optimizer: {0}")]
    Optimizer(String),
    /// A categorical or sequence id outside its feature's vocabulary (it would read another feature's
    /// embedding rows, or none).
    #[error("{feature}: id {id} in row {row} is outside the vocabulary, expected {expected}")]
    IdOutOfRange {
        /// The feature (for example `categorical feature 2`).
        feature: String,
        /// The row of the batch.
        row: i64,
        /// The id found.
        id: i64,
        /// The accepted ids.
        expected: String,
    },
    /// A batch does not fit the model.
    #[error("batch does not fit the model: {0}")]
    BadBatch(String),
}

impl HarnessError {
    /// Builds an [`HarnessError::InvalidConfig`].
    pub fn invalid(
        component: &'static str,
        field: impl Into<String>,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Self::InvalidConfig {
            component,
            field: field.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// Shorthand for harness results.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
