//! Gradient-combination balancers: PCGrad, MGDA, IMTL-G, CAGrad, Nash-MTL, Aligned-MTL.
//!
//! Every method here writes `d = sum_i alpha_i g_i` as the shared gradient, where `g_i` is task `i`'s
//! gradient of all shared parameters (`target: all_shared`, default) or of the shared representation
//! (`target: representation`; `last_shared_layer` is rejected, see
//! [`balance_core::combine::check_combinable`]). Each method is a pure `f64` function of the `T x T` Gram
//! matrix `G = [<g_i, g_j>]` (plus loss values and state) in [`math`], wrapped as a
//! [`balance_core::LossBalancer`] in [`methods`]. Cost per step: `T` backward passes, one Gram matrix, one
//! small solve, one combination.
//!
//! | registry name | method | state |
//! |---|---|---|
//! | `pcgrad` | PCGrad (Yu et al. 2020), LibMTL's formulation | the order's SplitMix64 |
//! | `mgda` | MGDA / MGDA-UB (Sener & Koltun 2018), exact min-norm solver | none |
//! | `imtl` | IMTL-G (Liu et al. 2021) | none |
//! | `cagrad` | CAGrad (Liu et al. 2021) | none |
//! | `nashmtl` | Nash-MTL (Navon et al. 2022) | last weights, step counter |
//! | `aligned_mtl` | Aligned-MTL (Senushkin et al. 2023) | none |
//!
//! The reported weights are the coefficients `alpha` (finite and `>= 0`; the driver rejects anything
//! else). IMTL-G and Aligned-MTL can produce negative coefficients; the balancers clamp them to 0 and
//! rescale the rest to the raw coefficients' sum, reporting `raw_alpha` and a per-task `clamped` flag.
//! This is a deviation from the papers, documented in `docs/methods-gradient.md`. The task-specific
//! parameters get their own task's gradient unweighted (`task_specific: unweighted`, LibMTL) or weighted
//! by `alpha` (`weighted`). Every report carries `grad_norm` (`|g_i|`) and `cos` (the cosine of `g_i`
//! with `d`), plus method-specific series.
//!
//! ```
//! use balance_core::{BalancerConfig, BalancerSpec};
//! use balance_gradient::MgdaConfig;
//! let config: MgdaConfig = serde_json::from_str(r#"{"normalization": "l2"}"#).unwrap();
//! let balancer = config.build(3).unwrap();
//! assert_eq!(balancer.name(), "mgda");
//! // Exact min-norm weights straight from a Gram matrix: g1 = (1, 0), g2 = (0, 2).
//! let alpha = balance_gradient::math::mgda::min_norm(&[vec![1.0, 0.0], vec![0.0, 4.0]]);
//! assert!((alpha[0] - 0.8).abs() < 1e-12);
//! // The registry knows every method by name.
//! let spec: BalancerSpec = serde_json::from_str(r#"{"method": "cagrad", "c": 0.5}"#).unwrap();
//! assert_eq!(spec.method(), "cagrad");
//! ```

pub mod linalg;
pub mod math;
pub mod methods;

pub use methods::aligned::AlignedMtlConfig;
pub use methods::cagrad::CaGradConfig;
pub use methods::imtl::ImtlConfig;
pub use methods::mgda::MgdaConfig;
pub use methods::nash::NashMtlConfig;
pub use methods::pcgrad::PcGradConfig;
pub use methods::{GradientBalancer, Plan, Rule};
