//! MMoE (Ma et al., KDD 2018): shared experts, one softmax gate per task over the input, one tower per task.

use balance_core::{SharedParts, TorchResultExt};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::batch::Batch;
use crate::error::{HarnessError, Result};
use crate::input::{InputConfig, InputEncoder};
use crate::models::{check_mlp, ModelOutput, MultiTaskModel};
use crate::nn::{linear, Mlp, MlpConfig, ParallelMlp};

/// MMoE's shape: `{"experts": 4, "expert": {"dims": [64, 32]}, "tower": {"dims": [32]}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmoeConfig {
    /// Number of experts.
    pub experts: i64,
    /// Each expert's hidden layers.
    pub expert: MlpConfig,
    /// Each task tower's hidden layers (a final linear layer to one output is added).
    pub tower: MlpConfig,
}

impl MmoeConfig {
    /// The benchmark MMoE (the model of the throughput and step-cost benches, and of the eager-PyTorch peer
    /// they compare against): 4 experts with hidden layers `[64, 32]` (ReLU), towers `[32]`.
    pub fn bench() -> Self {
        Self {
            experts: 4,
            expert: MlpConfig::relu(&[64, 32]),
            tower: MlpConfig::relu(&[32]),
        }
    }

    /// Checks every field.
    pub fn check(&self) -> Result<()> {
        if self.experts < 1 {
            return Err(HarnessError::invalid(
                "mmoe",
                "experts",
                self.experts,
                "at least 1 expert",
            ));
        }
        check_mlp("mmoe", "expert", &self.expert, true)?;
        check_mlp("mmoe", "tower", &self.tower, false)?;
        Ok(())
    }
}

/// An MMoE model. Variables: `input/` (embeddings), `experts/`, `gate{t}/`, `tower{t}/`, `head{t}/`.
/// Shared: the embeddings and the experts; last shared layer: the experts' last layer; representation:
/// the experts' outputs `[E, B, H]`.
#[derive(Debug)]
pub struct Mmoe {
    input: InputEncoder,
    experts: ParallelMlp,
    gates: Vec<nn::Linear>,
    towers: Vec<Mlp>,
    heads: Vec<nn::Linear>,
    parts: SharedParts,
}

impl Mmoe {
    /// Builds the model's variables in `vs` for `tasks` tasks.
    pub fn new(
        vs: &nn::VarStore,
        input: &InputConfig,
        config: &MmoeConfig,
        tasks: usize,
    ) -> Result<Self> {
        config.check()?;
        if tasks < 1 {
            return Err(HarnessError::invalid(
                "mmoe",
                "tasks",
                tasks,
                "at least 1 task",
            ));
        }
        let root = vs.root();
        let encoder = InputEncoder::new(&(&root / "input"), input)?;
        let d = encoder.output_dim();
        let experts = ParallelMlp::new(&(&root / "experts"), config.experts, d, &config.expert);
        let expert_out = config.expert.output_dim(d);
        let tower_out = config.tower.output_dim(expert_out);
        let mut gates = Vec::new();
        let mut towers = Vec::new();
        let mut heads = Vec::new();
        for t in 0..tasks {
            gates.push(nn::linear(
                &root / format!("gate{t}"),
                d,
                config.experts,
                Default::default(),
            ));
            towers.push(Mlp::new(
                &(&root / format!("tower{t}")),
                expert_out,
                &config.tower,
            ));
            heads.push(nn::linear(
                &root / format!("head{t}"),
                tower_out,
                1,
                Default::default(),
            ));
        }
        let parts = SharedParts::from_var_store(vs, &["input", "experts"], None)
            .with_last_shared_layer(experts.last_layer());
        Ok(Self {
            input: encoder,
            experts,
            gates,
            towers,
            heads,
            parts,
        })
    }
}

impl Mmoe {
    /// Every task's softmax gate over the experts, computed as one product with the gates' weights
    /// stacked: `[B, d] x [d, T*E] -> [B, T, E]`.
    fn gate_weights(&self, x: &Tensor) -> Result<Tensor> {
        let tasks = self.gates.len() as i64;
        let weights: Vec<&Tensor> = self.gates.iter().map(|g| &g.ws).collect();
        let biases: Option<Vec<&Tensor>> = self.gates.iter().map(|g| g.bs.as_ref()).collect();
        let weight = Tensor::f_cat(&weights, 0).context("stacking the gates")?;
        let bias = biases
            .map(|b| Tensor::f_cat(&b, 0))
            .transpose()
            .context("stacking the gates")?;
        let experts = weight.size()[0] / tasks.max(1);
        x.f_linear(&weight, bias.as_ref())
            .and_then(|logits| logits.f_view([-1, tasks, experts]))
            .and_then(|logits| logits.f_softmax(-1, Kind::Float))
            .context("gates")
            .map_err(Into::into)
    }
}

impl MultiTaskModel for Mmoe {
    fn num_tasks(&self) -> usize {
        self.heads.len()
    }

    fn forward_t(&self, batch: &Batch, train: bool) -> Result<ModelOutput> {
        let x = self.input.forward(batch)?;
        let experts = self.experts.forward_t(&x, train)?; // [E, B, H]
        let gates = self.gate_weights(&x)?; // [B, T, E]
                                            // Every task's mixture in one batched product: [B, T, E] x [B, E, H] -> [B, T, H].
        let mixed = experts
            .f_permute([1, 0, 2])
            .and_then(|by_example| gates.f_bmm(&by_example))
            .context("mixing the experts")?;
        let logits = self
            .towers
            .iter()
            .zip(&self.heads)
            .enumerate()
            .map(|(t, (tower, head))| {
                let task_input = mixed.f_select(1, t as i64).context("task mixture")?;
                linear(head, &tower.forward_t(&task_input, train)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelOutput {
            logits,
            representation: Some(experts),
        })
    }

    fn shared_parts(&self) -> SharedParts {
        self.parts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{bench_input, cascade};
    use tch::Device;

    fn bench_mmoe(vs: &nn::VarStore) -> Mmoe {
        let config = MmoeConfig {
            experts: 4,
            expert: MlpConfig::relu(&[64, 32]),
            tower: MlpConfig::relu(&[32]),
        };
        Mmoe::new(vs, &bench_input(), &config, 3).unwrap()
    }

    #[test]
    fn forward_shapes_and_shared_parts() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = bench_mmoe(&vs);
        let out = model.forward_t(&cascade(10, 1), true).unwrap();
        assert_eq!(out.logits.len(), 3);
        assert_eq!(out.logits[0].size(), vec![10, 1]);
        assert_eq!(out.representation.unwrap().size(), vec![4, 10, 32]);
        let parts = model.shared_parts();
        // Shared: the embedding table and the experts' two layers (weight, bias).
        assert_eq!(parts.shared().len(), 5);
        assert_eq!(parts.last_shared_layer().len(), 2);
        assert_eq!(parts.last_shared_layer()[0].size(), vec![4, 64, 32]);
        // Per task: gate (2), tower layer (2), head (2).
        assert_eq!(parts.task_specific().len(), 18);
    }

    #[test]
    fn invalid_config_names_the_field() {
        let vs = nn::VarStore::new(Device::Cpu);
        let config = MmoeConfig {
            experts: 0,
            expert: MlpConfig::relu(&[8]),
            tower: MlpConfig::relu(&[]),
        };
        let err = Mmoe::new(&vs, &bench_input(), &config, 2)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid mmoe config: field `experts` = 0, expected at least 1 expert"
        );
        let config = MmoeConfig {
            experts: 2,
            expert: MlpConfig::relu(&[8, 0]),
            tower: MlpConfig::relu(&[]),
        };
        let err = Mmoe::new(&vs, &bench_input(), &config, 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `expert.dims[1]` = 0"), "{err}");
    }
}
