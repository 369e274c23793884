//! What a model tells a balancer about its structure: which parameters are shared between tasks.

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Tensor};

/// Which shared part of the model a gradient method takes per-task gradients on.
///
/// Cost grows from the last shared layer to all shared parameters; the shared representation costs
/// one backward through the towers only, but needs a model that exposes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharedTarget {
    /// Every shared trainable parameter (the reference framework's choice).
    #[default]
    AllShared,
    /// Only the parameters of the last shared layer (the GradNorm paper's choice).
    LastSharedLayer,
    /// The shared representation (the output of the shared part for this batch).
    Representation,
}

impl SharedTarget {
    /// All variants, in the order above.
    pub const ALL: [SharedTarget; 3] = [
        SharedTarget::AllShared,
        SharedTarget::LastSharedLayer,
        SharedTarget::Representation,
    ];

    /// The snake_case name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            SharedTarget::AllShared => "all_shared",
            SharedTarget::LastSharedLayer => "last_shared_layer",
            SharedTarget::Representation => "representation",
        }
    }
}

/// The model's trainable parameters split into what tasks share and what belongs to one task.
///
/// Built once per model; the tensors are shallow handles to the model's variables.
#[derive(Debug, Default)]
pub struct SharedParts {
    shared: Vec<Tensor>,
    last_shared_layer: Vec<Tensor>,
    task_specific: Vec<Tensor>,
}

impl Clone for SharedParts {
    /// Shallow: the clone designates the same variables.
    fn clone(&self) -> Self {
        let copy = |v: &[Tensor]| v.iter().map(Tensor::shallow_clone).collect();
        Self {
            shared: copy(&self.shared),
            last_shared_layer: copy(&self.last_shared_layer),
            task_specific: copy(&self.task_specific),
        }
    }
}

impl SharedParts {
    /// Parts from explicit lists: the shared parameters and the task-specific ones.
    pub fn new(shared: Vec<Tensor>, task_specific: Vec<Tensor>) -> Self {
        Self {
            shared,
            last_shared_layer: Vec::new(),
            task_specific,
        }
    }

    /// Names the parameters of the last shared layer (a subset of the shared ones).
    pub fn with_last_shared_layer(mut self, params: Vec<Tensor>) -> Self {
        self.last_shared_layer = params;
        self
    }

    /// Splits a [`VarStore`]'s trainable variables by name: a variable is shared when its path starts with
    /// one of `shared_prefixes`; the last shared layer is the variables under `last_layer_prefix`.
    /// As in the reference framework, when no variable matches, every trainable variable is shared.
    /// Variables are ordered by name, so the split is deterministic.
    pub fn from_var_store(
        vs: &VarStore,
        shared_prefixes: &[&str],
        last_layer_prefix: Option<&str>,
    ) -> Self {
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let is_shared = |name: &str| shared_prefixes.iter().any(|p| has_path_prefix(name, p));
        let any_shared = named.iter().any(|(n, _)| is_shared(n));
        let mut parts = SharedParts::default();
        for (name, tensor) in named {
            if let Some(prefix) = last_layer_prefix {
                if has_path_prefix(&name, prefix) {
                    parts.last_shared_layer.push(tensor.shallow_clone());
                }
            }
            if !any_shared || is_shared(&name) {
                parts.shared.push(tensor);
            } else {
                parts.task_specific.push(tensor);
            }
        }
        parts
    }

    /// The shared trainable parameters.
    pub fn shared(&self) -> &[Tensor] {
        &self.shared
    }

    /// The parameters of the last shared layer (empty when the model did not name it).
    pub fn last_shared_layer(&self) -> &[Tensor] {
        &self.last_shared_layer
    }

    /// The trainable parameters that belong to a single task (towers, gates...).
    pub fn task_specific(&self) -> &[Tensor] {
        &self.task_specific
    }

    /// Every trainable parameter: shared first, then task-specific.
    pub fn all(&self) -> impl Iterator<Item = &Tensor> {
        self.shared.iter().chain(self.task_specific.iter())
    }
}

/// True when `name` is `prefix` or lies under it in tch's `.`-separated variable paths.
fn has_path_prefix(name: &str, prefix: &str) -> bool {
    name == prefix
        || name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    #[test]
    fn path_prefix_respects_segments() {
        assert!(has_path_prefix("bottom.0.weight", "bottom"));
        assert!(has_path_prefix("bottom", "bottom"));
        assert!(!has_path_prefix("bottomless.weight", "bottom"));
    }

    #[test]
    fn var_store_split_by_prefix_and_fallback_to_all() {
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let _bottom = nn::linear(&root / "bottom" / "l1", 4, 3, Default::default());
        let _last = nn::linear(&root / "bottom" / "l2", 3, 3, Default::default());
        let _tower = nn::linear(&root / "tower_a", 3, 1, Default::default());

        let parts = SharedParts::from_var_store(&vs, &["bottom"], Some("bottom.l2"));
        assert_eq!(parts.shared().len(), 4);
        assert_eq!(parts.task_specific().len(), 2);
        assert_eq!(parts.last_shared_layer().len(), 2);
        assert_eq!(parts.all().count(), 6);

        let fallback = SharedParts::from_var_store(&vs, &["nothing_matches"], None);
        assert_eq!(fallback.shared().len(), 6);
        assert!(fallback.task_specific().is_empty());
        assert!(fallback.last_shared_layer().is_empty());
    }
}
