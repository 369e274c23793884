//! Building blocks: activations and multi-layer perceptrons, including `E` parallel MLPs run as one
//! batched matrix product (the MMoE experts).

use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Tensor};

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
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
            Activation::Silu => x.silu(),
        }
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
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for layer in &self.layers {
            h = self.config.activation.apply(&layer.forward(&h));
            if self.config.dropout > 0.0 {
                h = h.dropout(self.config.dropout, train);
            }
        }
        h
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
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let b = x.size()[0];
        let mut h = x.shallow_clone();
        for (i, (w, bias)) in self.weights.iter().zip(&self.biases).enumerate() {
            let pre = if i == 0 {
                let (d, out) = (w.size()[1], w.size()[2]);
                let side_by_side = w.permute([1, 0, 2]).reshape([d, self.count * out]);
                let y = x
                    .matmul(&side_by_side)
                    .view([b, self.count, out])
                    .permute([1, 0, 2]);
                y + bias
            } else {
                bias.baddbmm(&h, w, 1.0, 1.0)
            };
            h = self.config.activation.apply(&pre);
            if self.config.dropout > 0.0 {
                h = h.dropout(self.config.dropout, train);
            }
        }
        h
    }

    /// The parameters of the last layer (weight, bias).
    pub fn last_layer(&self) -> Vec<Tensor> {
        match (self.weights.last(), self.biases.last()) {
            (Some(w), Some(b)) => vec![w.shallow_clone(), b.shallow_clone()],
            _ => Vec::new(),
        }
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
        let out = experts.forward_t(&x, false);
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
