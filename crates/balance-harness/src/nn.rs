//! Building blocks: activations and multi-layer perceptrons, including `E` parallel MLPs run as one
//! batched matrix product (the MMoE experts).

use balance_core::TorchResultExt;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

use crate::error::Result;

/// Activation between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(x, 0)`.
    #[default]
    Relu,
    /// Hyperbolic tangent.
    Tanh,
    /// `x * sigmoid(x)`.
    Silu,
}

impl Activation {
    /// Applies the activation.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => x.f_relu(),
            Activation::Tanh => x.f_tanh(),
            Activation::Silu => x.f_silu(),
        }
        .context("activation")
        .map_err(Into::into)
    }
}

/// Hidden layers of an MLP, as users write them: `{"dims": [64, 32], "activation": "relu", "dropout": 0.1}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Output width of each hidden layer.
    pub dims: Vec<i64>,
    /// Activation after each hidden layer.
    #[serde(default)]
    pub activation: Activation,
    /// Dropout probability after each hidden layer (training only).
    #[serde(default)]
    pub dropout: f64,
}

impl MlpConfig {
    /// Hidden layers `dims` with ReLU and no dropout.
    pub fn relu(dims: &[i64]) -> Self {
        Self {
            dims: dims.to_vec(),
            activation: Activation::Relu,
            dropout: 0.0,
        }
    }

    /// The output width for input width `input`.
    pub fn output_dim(&self, input: i64) -> i64 {
        self.dims.last().copied().unwrap_or(input)
    }
}

/// A stack of linear layers, each followed by the activation (and dropout when training).
#[derive(Debug)]
pub struct Mlp {
    layers: Vec<nn::Linear>,
    config: MlpConfig,
}

impl Mlp {
    /// Creates the layers under `path` (`path/0`, `path/1`...).
    pub fn new(path: &nn::Path, input: i64, config: &MlpConfig) -> Self {
        let mut layers = Vec::with_capacity(config.dims.len());
        let mut width = input;
        for (i, &dim) in config.dims.iter().enumerate() {
            layers.push(nn::linear(path / i, width, dim, Default::default()));
            width = dim;
        }
        Self {
            layers,
            config: config.clone(),
        }
    }

    /// Runs the stack.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.shallow_clone();
        for layer in &self.layers {
            h = self.config.activation.apply(&linear(layer, &h)?)?;
            h = dropout(&h, self.config.dropout, train)?;
        }
        Ok(h)
    }
}

/// `E` MLPs with the same shape, run together with batched matrix products: input `[B, D]`, output
/// `[E, B, H]`. One `bmm` per layer instead of `E` small matmuls.
#[derive(Debug)]
pub struct ParallelMlp {
    weights: Vec<Tensor>,
    biases: Vec<Tensor>,
    config: MlpConfig,
    count: i64,
}

impl ParallelMlp {
    /// Creates `count` MLPs under `path` (`path/<layer>/weight` of shape `[E, in, out]`), each initialised
    /// like `nn::linear` (uniform in `±1/sqrt(in)`).
    pub fn new(path: &nn::Path, count: i64, input: i64, config: &MlpConfig) -> Self {
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        let mut width = input;
        for (i, &dim) in config.dims.iter().enumerate() {
            let bound = 1.0 / (width as f64).sqrt();
            let layer = path / i;
            let init = nn::Init::Uniform {
                lo: -bound,
                up: bound,
            };
            weights.push(layer.var("weight", &[count, width, dim], init));
            biases.push(layer.var("bias", &[count, 1, dim], init));
            width = dim;
        }
        Self {
            weights,
            biases,
            config: config.clone(),
            count,
        }
    }

    /// Runs every MLP on `x` (`[B, D]`), giving `[E, B, H]`.
    ///
    /// The first layer, whose input every MLP shares, is one matrix product against the `E` weight
    /// matrices side by side (`[B, D] x [D, E * H]`): cheaper in both directions than a batched product
    /// over `E` copies of the input. The later layers are batched products.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let b = x.size().first().copied().unwrap_or(0);
        let mut h = x.shallow_clone();
        for (i, (w, bias)) in self.weights.iter().zip(&self.biases).enumerate() {
            let pre = if i == 0 {
                // The first layer of all experts as one side-by-side matrix product: [B, d] x [d, E*out].
                let (d, out) = (w.size()[1], w.size()[2]);
                w.f_permute([1, 0, 2])
                    .and_then(|sbs| sbs.f_reshape([d, self.count * out]))
                    .and_then(|sbs| x.f_matmul(&sbs))
                    .and_then(|y| y.f_view([b, self.count, out]))
                    .and_then(|y| y.f_permute([1, 0, 2]))
                    .and_then(|y| y.f_add(bias))
            } else {
                bias.f_baddbmm(&h, w, 1.0, 1.0)
            }
            .context("expert layer")?;
            h = self.config.activation.apply(&pre)?;
            h = dropout(&h, self.config.dropout, train)?;
        }
        Ok(h)
    }

    /// The parameters of the last layer (weight, bias).
    pub fn last_layer(&self) -> Vec<Tensor> {
        match (self.weights.last(), self.biases.last()) {
            (Some(w), Some(b)) => vec![w.shallow_clone(), b.shallow_clone()],
            _ => Vec::new(),
        }
    }
}

/// `x W^T + b` for a tch linear layer, as a fallible call.
pub(crate) fn linear(layer: &nn::Linear, x: &Tensor) -> Result<Tensor> {
    x.f_linear(&layer.ws, layer.bs.as_ref())
        .context("linear layer")
        .map_err(Into::into)
}

/// Dropout with probability `p` when training (`p == 0` is a no-op).
pub(crate) fn dropout(x: &Tensor, p: f64, train: bool) -> Result<Tensor> {
    if p > 0.0 && train {
        x.f_dropout(p, train).context("dropout").map_err(Into::into)
    } else {
        Ok(x.shallow_clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn parallel_mlp_equals_each_expert_run_alone() {
        let vs = nn::VarStore::new(Device::Cpu);
        let experts = ParallelMlp::new(&vs.root(), 3, 5, &MlpConfig::relu(&[4, 2]));
        let x = Tensor::randn([7, 5], (Kind::Float, Device::Cpu));
        let out = experts.forward_t(&x, false).unwrap();
        assert_eq!(out.size(), vec![3, 7, 2]);
        for e in 0..3 {
            let mut h = x.shallow_clone();
            for (w, b) in experts.weights.iter().zip(&experts.biases) {
                h = (h.matmul(&w.get(e)) + b.get(e)).relu();
            }
            let diff = (out.get(e) - h).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "expert {e}: {diff}");
        }
    }
}
