//! The core of the balance toolkit: the [`LossBalancer`] trait, the plugin [`registry()`], the config
//! forms users write ([`BalancerSpec`]), the runtime wrapper [`Balancer`] and the [`BalanceError`] type.
//!
//! Plugins depend on this crate only; users usually depend on the `balance` facade, which re-exports this
//! crate and links every first-party plugin.

pub mod adam;
pub mod balancer;
pub mod collective;
pub mod combine;
pub mod config;
pub mod driver;
pub mod error;
pub mod grad;
pub mod prior;
pub mod registry;
pub mod rng;
pub mod shared;
pub mod validate;

pub use balancer::{check_weights, BalancerState, LossBalancer, StepInput, StepReport};
pub use collective::{Collective, DataParallel, ReduceOp};
pub use combine::{TaskGradients, TaskSpecificGradient};
pub use config::{BalancerConfig, BalancerSpec};
pub use driver::{Balancer, BalancerCheckpoint, NonFinitePolicy};
pub use error::{BalanceError, Result, TorchResultExt};
pub use prior::{LabelStats, PriorEstimate, PriorSource};
pub use registry::{registry, BalancerKind, BalancerRegistration, Registry};
pub use shared::{SharedParts, SharedTarget};

// Re-exported so plugins can `balance_core::inventory::submit!` without naming inventory themselves.
pub use inventory;
