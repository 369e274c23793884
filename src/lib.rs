//! **balance**: adaptive loss balancing for multi-task models, on libtorch through `tch`.
//!
//! This facade re-exports [`balance_core`] and links every first-party plugin, so their registrations are
//! always present in [`registry()`]. Depend on it to train with any registered balancer:
//!
//! ```
//! use balance::{registry, BalancerSpec};
//!
//! // Every first-party balancer is registered.
//! let names = registry().unwrap().names();
//! assert!(names.contains(&"static") && names.contains(&"loss_norm"));
//!
//! // The three config forms users know.
//! let fixed: BalancerSpec = serde_json::from_str("[0.3, 0.7]").unwrap();
//! let named: BalancerSpec = "loss_norm".parse().unwrap();
//! let full: BalancerSpec =
//!     serde_json::from_str(r#"{"method": "loss_norm", "scale": "ema", "decay": 0.99}"#).unwrap();
//! assert_eq!((fixed.method(), named.method(), full.method()), ("static", "loss_norm", "loss_norm"));
//!
//! // A typo gets the list of known names and a suggestion.
//! let err = "los_norm".parse::<BalancerSpec>().unwrap_err();
//! assert!(err.to_string().contains("did you mean `loss_norm`?"));
//! ```
//!
//! Train your own tch model with GradNorm (the model names its shared layers; GradNorm does the rest):
//!
//! ```
//! use balance::{Balancer, BalancerSpec, SharedParts};
//! use tch::{nn, nn::Module, nn::OptimizerConfig, Device, Kind, Tensor};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let shared = nn::seq().add(nn::linear(vs.root() / "shared" / "l1", 4, 16, Default::default()))
//!     .add_fn(|x| x.relu()).add(nn::linear(vs.root() / "shared" / "l2", 16, 8, Default::default()));
//! let heads = [nn::linear(vs.root() / "ctr", 8, 1, Default::default()),
//!              nn::linear(vs.root() / "cvr", 8, 1, Default::default())];
//! let parts = SharedParts::from_var_store(&vs, &["shared"], Some("shared.l2"));
//! let spec: BalancerSpec = r#"{"method": "grad_norm", "alpha": 1.5}"#.parse().unwrap();
//! let mut balancer = Balancer::from_spec(&spec, &["ctr", "cvr"]).unwrap();
//! let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
//! for _ in 0..5 {
//!     let (x, y) = (Tensor::randn([32, 4], (Kind::Float, Device::Cpu)), Tensor::rand([32, 1], (Kind::Float, Device::Cpu)).round());
//!     let z = shared.forward(&x);
//!     let losses: Vec<Tensor> = heads.iter().map(|h| h.forward(&z).binary_cross_entropy_with_logits::<Tensor>(&y, None, None, tch::Reduction::Mean)).collect();
//!     opt.zero_grad();
//!     balancer.backward(&losses, &parts, Some(&z)).unwrap(); // sets every gradient
//!     opt.step();
//! }
//! assert!((balancer.weights().iter().sum::<f64>() - 2.0).abs() < 1e-6); // GradNorm keeps sum(w) = T
//! ```
//!
//! One training step with a balancer (a toy two-task model):
//!
//! ```
//! use balance::{Balancer, BalancerSpec, SharedParts};
//! use tch::{nn, nn::Module, nn::OptimizerConfig, Device, Kind, Tensor};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let trunk = nn::linear(vs.root() / "trunk", 4, 8, Default::default());
//! let heads = [nn::linear(vs.root() / "a", 8, 1, Default::default()),
//!              nn::linear(vs.root() / "b", 8, 1, Default::default())];
//! let parts = SharedParts::from_var_store(&vs, &["trunk"], Some("trunk"));
//! let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
//! let mut balancer = Balancer::from_spec(&"loss_norm".parse::<BalancerSpec>().unwrap(), &["a", "b"]).unwrap();
//!
//! let x = Tensor::randn([16, 4], (Kind::Float, Device::Cpu));
//! let hidden = trunk.forward(&x).relu();
//! let losses: Vec<Tensor> = heads.iter().map(|h| h.forward(&hidden).square().mean(Kind::Float)).collect();
//! opt.zero_grad();
//! let report = balancer.backward(&losses, &parts, Some(&hidden)).unwrap();
//! opt.step();
//! assert_eq!(report.weights.len(), 2);
//! ```
//!
//! The same loop, data-parallel (`balance-dist` joins the ranks; under `torchrun` use
//! `Launch::from_env()`). Four additions: the balancer gets the group, rank 0's parameters and balancer
//! state are broadcast once, each rank trains on its shard of the global batch, and the gradients are
//! all-reduced before the optimizer's step. The balancer's inputs (losses, GradNorm's norms, Gram
//! matrices) are then the global batch's, so every rank computes the same weights. Here a group of one
//! rank, so that the example runs anywhere:
//!
//! ```
//! use std::sync::Arc;
//! use balance::{Balancer, BalancerSpec, DataParallel, SharedParts};
//! use balance_dist::{free_port, GroupOptions, ProcessGroup};
//! use tch::{nn, nn::Module, nn::OptimizerConfig, Device, Kind, Tensor};
//!
//! let group = Arc::new(ProcessGroup::new(&GroupOptions::new("127.0.0.1", free_port()?, 0, 1))?);
//! let dp = DataParallel::new(group.clone());                                  // (1) the group
//! let vs = nn::VarStore::new(Device::Cpu);
//! let trunk = nn::linear(vs.root() / "trunk", 4, 8, Default::default());
//! let heads = [nn::linear(vs.root() / "a", 8, 1, Default::default()),
//!              nn::linear(vs.root() / "b", 8, 1, Default::default())];
//! let parts = SharedParts::from_var_store(&vs, &["trunk"], Some("trunk"));
//! let params = vs.trainable_variables();
//! let spec: BalancerSpec = r#"{"method": "grad_norm", "shared": "all_shared"}"#.parse()?;
//! let mut balancer = Balancer::from_spec(&spec, &["a", "b"])?.with_data_parallel(dp.clone());
//! dp.broadcast_parameters(&params)?;                                          // (2) rank 0's start
//! balancer.sync_from_rank0()?;
//! let mut opt = nn::Adam::default().build(&vs, 1e-3)?;
//! let global = Tensor::randn([64, 4], (Kind::Float, Device::Cpu));
//! let rows = 64 / group.world_size() as i64;
//! for _ in 0..3 {
//!     let x = global.narrow(0, rows * group.rank() as i64, rows);             // (3) this rank's shard
//!     let hidden = trunk.forward(&x).relu();
//!     let losses: Vec<Tensor> = heads.iter().map(|h| h.forward(&hidden).square().mean(Kind::Float)).collect();
//!     opt.zero_grad();
//!     balancer.backward(&losses, &parts, Some(&hidden))?;
//!     dp.all_reduce_gradients(&params)?;                                      // (4) global gradient
//!     opt.step();
//! }
//! assert_eq!(balancer.step(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use balance_core::*;

/// The first-party plugins, linked here so their registrations are always present.
pub mod plugins {
    pub use balance_gradient as gradient;
    pub use balance_gradnorm as grad_norm;
    pub use balance_lossnorm as loss_norm;
    pub use balance_static as static_weights;
    pub use balance_weighting as weighting;
}
