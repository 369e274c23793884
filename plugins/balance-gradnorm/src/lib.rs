//! `grad_norm`: GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018) as the reference recommender
//! framework ships it, computed first-order.
//!
//! Each step, with detached loss values `l`, task weights `w` (initially 1 or `init_weights`) and
//! `n_i = ||grad_W L_i||` the norm of task `i`'s unweighted gradient on the shared part `W`:
//!
//! - `L0` is the first step's losses, or (`init_ema_steps > 0`) an EMA of the losses with decay
//!   `init_ema_decay` over that many first steps, then frozen;
//! - the model is trained on `sum_i w_i L_i` with `w` constant;
//! - `G_i = sqrt(w_i^2 n_i^2 + eps)`; ratio source `l` (or its EMA when `ema_decay` is set); base `L0`, else
//!   the warm-up EMA so far; `r_i = source_i / (base_i + eps)`, `inv_i = r_i / (mean(r) + eps)`,
//!   `target_i = mean(G) * inv_i ^ alpha`, held constant;
//! - `L_grad = sum_i |G_i - target_i|`, whose gradient in `w_i` is, in closed form,
//!   `sign(G_i - target_i) * w_i n_i^2 / G_i`; the weights' own Adam (`lr`, PyTorch's betas) steps on it,
//!   then `w = max(w, eps)` and `w = w * T / (sum(w) + eps)`.
//!
//! The reference framework obtains that gradient with one `create_graph=True` backward per task and a
//! second-order backward; the closed form gives the same weights from first-order passes (proved against
//! libtorch's second-order autograd in `tests/second_order.rs`, and against a PyTorch trajectory in
//! `tests/pytorch_fixture.rs`).
//!
//! ## Which shared part (`shared`)
//!
//! | `shared` | `W` | extra cost per step | pick it when |
//! |---|---|---|---|
//! | `all_shared` (default) | every shared parameter | T backward passes instead of 1 (the model's gradient is assembled from the per-task ones) | you want the reference framework's behaviour |
//! | `last_shared_layer` | the last shared layer's parameters | T backward passes through the towers and one layer, plus the usual one | you want the paper's choice at a fraction of the cost |
//! | `representation` | the shared representation (activations) | T backward passes through the towers, plus the usual one | the model exposes it (MMoE experts, ESMM embeddings); cheapest |
//!
//! ## What it costs
//!
//! `cargo bench -p balance-gradnorm --bench step_cost` on the benchmark MMoE (4 experts `[64, 32]`,
//! towers `[32]`, 8 dense + 4 categorical features, 3 cascading binary tasks, Adam), 2 threads, this
//! project's 2-core CPU machine; step time = zero_grad + forward + losses + balancer backward + Adam step,
//! median of 120 steps with every config interleaved step by step in one process; peak = resident-set
//! high-water growth over 10 steps, each config alone in a child process.
//!
//! | batch | static ms/step | `all_shared` | `last_shared_layer` | `representation` | peak memory (all / last / repr) |
//! |---|---|---|---|---|---|
//! | 256 | 6.63 | 1.74x | 1.39x | 1.27x | 1.14x / 1.05x / 1.07x |
//! | 1024 | 9.29 | 1.81x | 1.32x | 1.21x | 1.11x / 1.06x / 1.05x |
//! | 4096 | 34.20 | 1.73x | 1.37x | 1.24x | 1.15x / 1.15x / 1.08x |
//!
//! The Python reference (create_graph, second order) pays 3.7x to 4.5x. In MMoE the last shared layer is
//! the experts' second layer, so each per-task pass also pays that layer's weight-gradient matmul; the
//! representation (the experts' outputs) stops one layer higher and is the cheapest choice.
//!
//! ```
//! use balance_core::BalancerConfig;
//! use balance_gradnorm::GradNormConfig;
//! let config: GradNormConfig = serde_json::from_str(r#"{"alpha": 1.0, "shared": "last_shared_layer"}"#).unwrap();
//! let balancer = config.build(3).unwrap();
//! assert_eq!(balancer.weights(), vec![1.0, 1.0, 1.0]);
//! ```

pub mod algorithm;
pub mod hyperparams;
pub mod rule;

use balance_core::{BalancerConfig, LossBalancer, Result};

pub use algorithm::GradNorm;
pub use hyperparams::{GradNormConfig, GradNormParams};
pub use rule::{GradNormRule, GradNormState, GradNormUpdate};

/// The registry name.
pub const NAME: &str = "grad_norm";

#[typetag::serde(name = "grad_norm")]
impl BalancerConfig for GradNormConfig {
    fn method(&self) -> &'static str {
        NAME
    }

    fn validate(&self, num_tasks: usize) -> Result<()> {
        self.check(num_tasks).map(|_| ())
    }

    fn build(&self, num_tasks: usize) -> Result<Box<dyn LossBalancer>> {
        Ok(Box::new(GradNorm::new(GradNormRule::new(
            self.check(num_tasks)?,
        ))))
    }

    fn clone_config(&self) -> Box<dyn BalancerConfig> {
        Box::new(self.clone())
    }
}

balance_core::register_balancer! {
    name: NAME,
    config: GradNormConfig,
    summary: "Learn task weights so each task's gradient norm tracks its relative training rate.",
    kind: GradientWeighting,
    paper: "Chen et al., GradNorm, ICML 2018",
}
