//! Data-parallel training for balance on PyTorch's own distributed engine, c10d: a [`ProcessGroup`]
//! (TCPStore rendezvous, `ProcessGroupGloo` for CPU tensors, `ProcessGroupNCCL` for CUDA tensors with the
//! `nccl` feature) that implements [`balance_core::Collective`], and [`Launch`], which reads torchrun's
//! environment.
//!
//! The collectives come from the libtorch that tch links, through a small C++ shim compiled by this
//! crate's build script (every C++ exception comes back as a [`DistError`] naming the rank and the
//! operation); every collective is bounded by the group's timeout, so a dead or missing rank is an error,
//! never a hang. What makes training *exact* across ranks is in [`balance_core::collective`] (the
//! balancer's inputs) and in `balance-harness`'s trainer (sharding, gradients, evaluation).

mod error;
mod ffi;
mod group;
mod launch;
pub mod local;

pub use error::{DistError, Result};
pub use group::{nccl_available, GroupOptions, ProcessGroup, Traffic};
pub use launch::{vars, Launch};
pub use local::{
    free_port, launched_by_a_launcher, watch_launcher, Interrupter, LocalJob, WorkerExit,
};
