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

pub use balance_core::*;

/// The first-party plugins, linked here so their registrations are always present.
pub mod plugins {
    pub use balance_gradnorm as grad_norm;
    pub use balance_lossnorm as loss_norm;
    pub use balance_static as static_weights;
}
