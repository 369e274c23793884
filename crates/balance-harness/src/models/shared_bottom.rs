//! Shared-Bottom: one shared MLP under one tower per task (Caruana, 1997).

use balance_core::SharedParts;
use serde::{Deserialize, Serialize};
use tch::nn;

use crate::batch::Batch;
use crate::error::{HarnessError, Result};
use crate::input::{InputConfig, InputEncoder};
use crate::models::{check_mlp, ModelOutput, MultiTaskModel};
use crate::nn::{linear, Mlp, MlpConfig};

/// `{"bottom": {"dims": [128, 32]}, "tower": {"dims": [16]}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedBottomConfig {
    /// The shared MLP (at least one layer).
    pub bottom: MlpConfig,
    /// Each task's tower (a final linear layer to one output is added).
    pub tower: MlpConfig,
}

/// Shared-Bottom. Variables: `input/`, `bottom/<layer>/`, `tower{t}/`, `head{t}/`. Shared: embeddings and
/// the bottom; last shared layer: the bottom's last layer; representation: the bottom's output.
#[derive(Debug)]
pub struct SharedBottom {
    input: InputEncoder,
    bottom: Mlp,
    towers: Vec<Mlp>,
    heads: Vec<nn::Linear>,
    parts: SharedParts,
}

impl SharedBottom {
    /// Builds the model's variables in `vs` for `tasks` tasks.
    pub fn new(
        vs: &nn::VarStore,
        input: &InputConfig,
        config: &SharedBottomConfig,
        tasks: usize,
    ) -> Result<Self> {
        check_mlp("shared_bottom", "bottom", &config.bottom, true)?;
        check_mlp("shared_bottom", "tower", &config.tower, false)?;
        if tasks < 1 {
            return Err(HarnessError::invalid(
                "shared_bottom",
                "tasks",
                tasks,
                "at least 1 task",
            ));
        }
        let root = vs.root();
        let encoder = InputEncoder::new(&(&root / "input"), input)?;
        let bottom = Mlp::new(&(&root / "bottom"), encoder.output_dim(), &config.bottom);
        let width = config.bottom.output_dim(encoder.output_dim());
        let tower_out = config.tower.output_dim(width);
        let towers = (0..tasks)
            .map(|t| Mlp::new(&(&root / format!("tower{t}")), width, &config.tower))
            .collect();
        let heads = (0..tasks)
            .map(|t| nn::linear(&root / format!("head{t}"), tower_out, 1, Default::default()))
            .collect();
        let last = format!("bottom.{}", config.bottom.dims.len() - 1);
        let parts = SharedParts::from_var_store(vs, &["input", "bottom"], Some(&last));
        Ok(Self {
            input: encoder,
            bottom,
            towers,
            heads,
            parts,
        })
    }
}

impl MultiTaskModel for SharedBottom {
    fn num_tasks(&self) -> usize {
        self.heads.len()
    }

    fn forward_t(&self, batch: &Batch, train: bool) -> Result<ModelOutput> {
        let x = self.input.forward(batch)?;
        let shared = self.bottom.forward_t(&x, train)?;
        let logits = self
            .towers
            .iter()
            .zip(&self.heads)
            .map(|(tower, head)| linear(head, &tower.forward_t(&shared, train)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelOutput {
            logits,
            representation: Some(shared),
        })
    }

    fn shared_parts(&self) -> SharedParts {
        self.parts.clone()
    }
}
