//! PLE (Tang et al., RecSys 2020): stacked CGC levels of task-specific and shared experts, with gates.
//!
//! Level `k` runs each task's experts on that task's input and the shared experts on the shared input;
//! task `t`'s gate mixes its own and the shared experts; below the last level a shared gate mixes every
//! expert into the next shared input. Towers sit on each task's last mixture.

use balance_core::{SharedParts, TorchResultExt};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::batch::Batch;
use crate::error::{HarnessError, Result};
use crate::input::{InputConfig, InputEncoder};
use crate::models::{check_mlp, ModelOutput, MultiTaskModel};
use crate::nn::{linear, Mlp, MlpConfig, ParallelMlp};

/// `{"levels": 2, "shared_experts": 2, "task_experts": 1, "expert": {"dims": [64, 32]}, "tower": {"dims": [16]}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PleConfig {
    /// CGC levels (`>= 1`).
    pub levels: usize,
    /// Shared experts per level (`>= 1`).
    pub shared_experts: i64,
    /// Experts per task per level (`>= 1`).
    pub task_experts: i64,
    /// Each expert's hidden layers.
    pub expert: MlpConfig,
    /// Each task tower's hidden layers.
    pub tower: MlpConfig,
}

struct Level {
    task_experts: Vec<ParallelMlp>,
    shared_experts: ParallelMlp,
    task_gates: Vec<nn::Linear>,
    shared_gate: Option<nn::Linear>,
}

/// PLE. Variables: `input/`, `level{k}/shared/`, `level{k}/shared_gate/`, `level{k}/task{t}/` below the
/// last level (shared: they reach every task); the last level's `task{t}/`, every `level{k}/gate{t}/`,
/// `tower{t}/`, `head{t}/` (task-specific). Last shared layer: the last level's shared
/// experts' last layer; representation: their outputs `[E, B, H]`.
pub struct Ple {
    input: InputEncoder,
    levels: Vec<Level>,
    towers: Vec<Mlp>,
    heads: Vec<nn::Linear>,
    parts: SharedParts,
}

impl std::fmt::Debug for Ple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ple")
            .field("levels", &self.levels.len())
            .field("tasks", &self.heads.len())
            .finish()
    }
}

fn mix(gate: &Tensor, experts: &Tensor) -> Result<Tensor> {
    // gate [B, E] softmax, experts [E, B, H] -> [B, H]
    let by_example = experts.f_permute([1, 0, 2]).context("gate mixing")?;
    Ok(gate
        .f_softmax(-1, Kind::Float)
        .and_then(|g| g.f_unsqueeze(1))
        .and_then(|g| g.f_bmm(&by_example))
        .and_then(|m| m.f_squeeze_dim(1))
        .context("gate mixing")?)
}

impl Ple {
    /// Builds the model's variables in `vs` for `tasks` tasks.
    pub fn new(
        vs: &nn::VarStore,
        input: &InputConfig,
        config: &PleConfig,
        tasks: usize,
    ) -> Result<Self> {
        check_mlp("ple", "expert", &config.expert, true)?;
        check_mlp("ple", "tower", &config.tower, false)?;
        for (field, value) in [
            ("levels", config.levels as i64),
            ("shared_experts", config.shared_experts),
            ("task_experts", config.task_experts),
        ] {
            if value < 1 {
                return Err(HarnessError::invalid("ple", field, value, "at least 1"));
            }
        }
        if tasks < 1 {
            return Err(HarnessError::invalid(
                "ple",
                "tasks",
                tasks,
                "at least 1 task",
            ));
        }
        let root = vs.root();
        let encoder = InputEncoder::new(&(&root / "input"), input)?;
        let hidden = config.expert.output_dim(encoder.output_dim());
        let all_experts = config.shared_experts + config.task_experts * tasks as i64;
        let mut levels = Vec::new();
        let mut width = encoder.output_dim();
        for k in 0..config.levels {
            let level = &root / format!("level{k}");
            let last = k + 1 == config.levels;
            levels.push(Level {
                task_experts: (0..tasks)
                    .map(|t| {
                        ParallelMlp::new(
                            &(&level / format!("task{t}")),
                            config.task_experts,
                            width,
                            &config.expert,
                        )
                    })
                    .collect(),
                shared_experts: ParallelMlp::new(
                    &(&level / "shared"),
                    config.shared_experts,
                    width,
                    &config.expert,
                ),
                task_gates: (0..tasks)
                    .map(|t| {
                        nn::linear(
                            &level / format!("gate{t}"),
                            width,
                            config.task_experts + config.shared_experts,
                            Default::default(),
                        )
                    })
                    .collect(),
                shared_gate: (!last).then(|| {
                    nn::linear(
                        &level / "shared_gate",
                        width,
                        all_experts,
                        Default::default(),
                    )
                }),
            });
            width = hidden;
        }
        let tower_out = config.tower.output_dim(hidden);
        let towers = (0..tasks)
            .map(|t| Mlp::new(&(&root / format!("tower{t}")), hidden, &config.tower))
            .collect();
        let heads = (0..tasks)
            .map(|t| nn::linear(&root / format!("head{t}"), tower_out, 1, Default::default()))
            .collect();
        // Shared = everything more than one task depends on: below the last level, task experts also feed
        // the shared gate, so only the last level's task experts and gates are task-specific.
        let mut shared_prefixes = vec!["input".to_string()];
        for k in 0..config.levels {
            shared_prefixes.push(format!("level{k}.shared"));
            shared_prefixes.push(format!("level{k}.shared_gate"));
            if k + 1 < config.levels {
                shared_prefixes.extend((0..tasks).map(|t| format!("level{k}.task{t}")));
            }
        }
        let prefixes: Vec<&str> = shared_prefixes.iter().map(String::as_str).collect();
        let last_shared = levels
            .last()
            .map(|l| l.shared_experts.last_layer())
            .unwrap_or_default();
        let parts =
            SharedParts::from_var_store(vs, &prefixes, None).with_last_shared_layer(last_shared);
        Ok(Self {
            input: encoder,
            levels,
            towers,
            heads,
            parts,
        })
    }
}

impl MultiTaskModel for Ple {
    fn num_tasks(&self) -> usize {
        self.heads.len()
    }

    fn forward_t(&self, batch: &Batch, train: bool) -> Result<ModelOutput> {
        let x = self.input.forward(batch)?;
        let tasks = self.heads.len();
        let mut task_inputs: Vec<Tensor> = (0..tasks).map(|_| x.shallow_clone()).collect();
        let mut shared_input = x;
        let mut representation = None;
        for level in &self.levels {
            let shared_out = level.shared_experts.forward_t(&shared_input, train)?; // [Es, B, H]
            let task_outs: Vec<Tensor> = level
                .task_experts
                .iter()
                .zip(&task_inputs)
                .map(|(experts, input)| experts.forward_t(input, train))
                .collect::<Result<_>>()?;
            let next_tasks: Vec<Tensor> = (0..tasks)
                .map(|t| {
                    let pool =
                        Tensor::f_cat(&[&task_outs[t], &shared_out], 0).context("expert pool")?;
                    mix(&linear(&level.task_gates[t], &task_inputs[t])?, &pool)
                })
                .collect::<Result<_>>()?;
            if let Some(gate) = &level.shared_gate {
                let mut all: Vec<&Tensor> = task_outs.iter().collect();
                all.push(&shared_out);
                let pool = Tensor::f_cat(&all, 0).context("expert pool")?;
                shared_input = mix(&linear(gate, &shared_input)?, &pool)?;
            }
            task_inputs = next_tasks;
            representation = Some(shared_out);
        }
        let logits = task_inputs
            .iter()
            .zip(self.towers.iter().zip(&self.heads))
            .map(|(h, (tower, head))| linear(head, &tower.forward_t(h, train)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelOutput {
            logits,
            representation,
        })
    }

    fn shared_parts(&self) -> SharedParts {
        self.parts.clone()
    }
}
