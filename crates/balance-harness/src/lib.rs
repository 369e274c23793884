//! Training harness of the balance toolkit: everything needed to train a multi-task model with any
//! balancer and measure it.
//!
//! - [`input`]: dense features, categorical ids and id sequences embedded from one fused table
//!   (ids are checked against their vocabularies).
//! - [`models`]: MMoE, ESMM, Shared-Bottom and PLE, each describing which parameters it shares.
//! - [`data`]: datasets in memory; the synthetic scenarios of [`synthetic`], Census-Income (KDD)
//!   ([`data::census`], files verified by sha256 in a cache folder) and your own CSV or Parquet through a
//!   schema ([`data::csv_schema`]).
//! - [`optim`]: Adam over one flat parameter buffer, whose state checkpoints exactly.
//! - [`train`]: a seeded trainer with per-epoch evaluation ([`metrics`]: exact AUC, log loss, MSE), early
//!   stopping, an observer hook and bit-exact checkpoint/resume.
//!
//! The library spawns no process and opens no network connection: fetching Census-Income is the
//! `balance-bench` binary's job.

pub mod batch;
pub mod data;
pub mod error;
pub mod input;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod optim;
pub mod synthetic;
pub mod train;

pub use batch::Batch;
pub use error::{HarnessError, Result};
pub use input::{InputConfig, InputEncoder};
pub use models::{mmoe::Mmoe, mmoe::MmoeConfig, ModelOutput, MultiTaskModel};
