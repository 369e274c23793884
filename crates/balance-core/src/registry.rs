//! The registry in which every balancer plugin announces itself with [`inventory`].

use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::config::BalancerConfig;
use crate::error::{BalanceError, Result};

/// What family a balancer belongs to, which tells what it costs per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BalancerKind {
    /// Weights computed from the loss values only: one backward per step.
    LossWeighting,
    /// Weights computed from per-task gradients of a shared part (GradNorm).
    GradientWeighting,
    /// A combined gradient written directly from per-task gradients (MGDA, PCGrad...).
    GradientCombination,
}

impl fmt::Display for BalancerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BalancerKind::LossWeighting => "loss-weighting",
            BalancerKind::GradientWeighting => "gradient-weighting",
            BalancerKind::GradientCombination => "gradient-combination",
        })
    }
}

/// Registers a balancer, naming it once: the `method` tag of its config (typetag), its
/// [`BalancerConfig::method`], an optional `const` for the plugin's own use, and its
/// [`BalancerRegistration`] all come from the one string literal.
///
/// Full form: the macro writes `impl BalancerConfig for <config>` from the `validate` and `build` (and
/// any other method) you give in `impl { ... }`, adding `method` and `clone_config` (the config must be
/// `Clone`, `Default`, `Serialize` and `Deserialize`; the crate must depend on `typetag`):
///
/// ```
/// use balance_core::{BalancerState, LossBalancer, Result, StepInput, StepReport};
/// #[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
/// pub struct MyConfig;
/// # struct Equal(usize);
/// # impl LossBalancer for Equal {
/// #     fn name(&self) -> &str { NAME }
/// #     fn num_tasks(&self) -> usize { self.0 }
/// #     fn weights(&self) -> Vec<f64> { vec![1.0; self.0] }
/// #     fn backward(&mut self, input: &StepInput<'_>) -> Result<StepReport> {
/// #         input.backward_weighted(NAME, self.weights())
/// #     }
/// #     fn state(&self) -> Result<BalancerState> { BalancerState::new(NAME, self.0, &()) }
/// #     fn load_state(&mut self, state: &BalancerState) -> Result<()> { state.decode(NAME, self.0) }
/// # }
///
/// balance_core::register_balancer! {
///     /// The registry name.
///     pub const NAME = "my_method";
///     config: MyConfig,
///     summary: "What it does, in one line.",
///     kind: LossWeighting,
///     paper: "Author et al., Venue Year",
///     impl {
///         fn validate(&self, _num_tasks: usize) -> Result<()> {
///             Ok(())
///         }
///         fn build(&self, num_tasks: usize) -> Result<Box<dyn LossBalancer>> {
///             Ok(Box::new(Equal(num_tasks)))
///         }
///     }
/// }
///
/// let registry = balance_core::registry().unwrap();
/// assert_eq!(registry.get("my_method").unwrap().summary, "What it does, in one line.");
/// assert_eq!(registry.default_config("my_method").unwrap().method(), NAME);
/// ```
///
/// Registration-only form, for a crate that writes its `impl BalancerConfig` itself (with
/// `#[typetag::serde(name = "...")]`): `register_balancer! { name: NAME, config: MyConfig, summary: ...,
/// kind: ..., paper: ... }` submits the [`BalancerRegistration`] only (its default config is
/// `<MyConfig as Default>::default()`); keep its name, the typetag name and `method` equal yourself.
#[macro_export]
macro_rules! register_balancer {
    (
        $(#[$meta:meta])*
        $vis:vis const $const_name:ident = $name:tt;
        config: $config:ty,
        summary: $summary:expr,
        kind: $kind:ident,
        paper: $paper:expr,
        impl { $($body:tt)* }
    ) => {
        $(#[$meta])*
        $vis const $const_name: &str = $name;

        #[typetag::serde(name = $name)]
        impl $crate::BalancerConfig for $config {
            fn method(&self) -> &'static str {
                $name
            }

            fn clone_config(&self) -> ::std::boxed::Box<dyn $crate::BalancerConfig> {
                ::std::boxed::Box::new(::std::clone::Clone::clone(self))
            }

            $($body)*
        }

        $crate::register_balancer! {
            name: $name,
            config: $config,
            summary: $summary,
            kind: $kind,
            paper: $paper
        }
    };
    (
        name: $name:expr,
        config: $config:ty,
        summary: $summary:expr,
        kind: $kind:ident,
        paper: $paper:expr $(,)?
    ) => {
        $crate::inventory::submit! {
            $crate::BalancerRegistration {
                name: $name,
                summary: $summary,
                kind: $crate::BalancerKind::$kind,
                paper: $paper,
                default_config: || {
                    ::std::boxed::Box::new(<$config as ::std::default::Default>::default())
                },
            }
        }
    };
}

/// One balancer's entry in the registry; plugins submit one with [`register_balancer!`].
pub struct BalancerRegistration {
    /// The registry name, also the `method` tag of its config (snake_case).
    pub name: &'static str,
    /// One line saying what the method does.
    pub summary: &'static str,
    /// The method family.
    pub kind: BalancerKind,
    /// The paper (authors, venue, year), or `-` for folk methods.
    pub paper: &'static str,
    /// The config with every option at its default.
    pub default_config: fn() -> Box<dyn BalancerConfig>,
}

impl fmt::Debug for BalancerRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancerRegistration")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

inventory::collect!(BalancerRegistration);

/// Every registered balancer, sorted by name, with unique names.
#[derive(Debug)]
pub struct Registry {
    entries: Vec<&'static BalancerRegistration>,
}

impl Registry {
    /// Builds a registry from registrations; two entries with one name are a
    /// [`BalanceError::DuplicateBalancer`], never a silent pick.
    pub fn from_registrations(
        registrations: impl IntoIterator<Item = &'static BalancerRegistration>,
    ) -> Result<Self> {
        let mut entries: Vec<_> = registrations.into_iter().collect();
        entries.sort_by(|a, b| a.name.cmp(b.name).then(a.summary.cmp(b.summary)));
        if let Some(pair) = entries.windows(2).find(|w| w[0].name == w[1].name) {
            let name = pair[0].name;
            let clashing: Vec<_> = entries.iter().filter(|e| e.name == name).collect();
            return Err(BalanceError::DuplicateBalancer {
                name: name.to_string(),
                count: clashing.len(),
                summaries: clashing.iter().map(|e| e.summary.to_string()).collect(),
            });
        }
        Ok(Self { entries })
    }

    /// The registrations, sorted by name.
    pub fn entries(&self) -> &[&'static BalancerRegistration] {
        &self.entries
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.name).collect()
    }

    /// The registration called `name`, or [`BalanceError::UnknownBalancer`] listing the known names and
    /// suggesting the closest one.
    pub fn get(&self, name: &str) -> Result<&'static BalancerRegistration> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .copied()
            .ok_or_else(|| self.unknown(name))
    }

    /// The default config of the balancer called `name`.
    pub fn default_config(&self, name: &str) -> Result<Box<dyn BalancerConfig>> {
        Ok((self.get(name)?.default_config)())
    }

    fn unknown(&self, name: &str) -> BalanceError {
        let known: Vec<String> = self.names().iter().map(|s| s.to_string()).collect();
        let suggestion = closest(name, &known);
        BalanceError::UnknownBalancer {
            name: name.to_string(),
            known,
            suggestion,
        }
    }
}

/// The process-wide registry of every linked plugin, built once.
///
/// Fails with [`BalanceError::DuplicateBalancer`] when two linked plugins claim one name.
pub fn registry() -> Result<&'static Registry> {
    static REGISTRY: OnceLock<Result<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| Registry::from_registrations(inventory::iter::<BalancerRegistration>))
        .as_ref()
        .map_err(Clone::clone)
}

/// The known name closest to `name` in edit distance (ignoring case, `-` and `_`), if close enough.
fn closest(name: &str, known: &[String]) -> Option<String> {
    let normalise = |s: &str| s.to_lowercase().replace(['-', '_'], "");
    let target = normalise(name);
    known
        .iter()
        .map(|k| (edit_distance(&target, &normalise(k)), k))
        .filter(|(d, k)| *d <= (k.len().max(name.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LossBalancer, Result};

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct Dummy;

    #[typetag::serde(name = "registry_test_dummy")]
    impl BalancerConfig for Dummy {
        fn method(&self) -> &'static str {
            "registry_test_dummy"
        }
        fn validate(&self, _: usize) -> Result<()> {
            Ok(())
        }
        fn build(&self, _: usize) -> Result<Box<dyn LossBalancer>> {
            Err(BalanceError::ConfigSyntax("dummy".into()))
        }
        fn clone_config(&self) -> Box<dyn BalancerConfig> {
            Box::new(self.clone())
        }
    }

    static A: BalancerRegistration = BalancerRegistration {
        name: "grad_norm",
        summary: "first",
        kind: BalancerKind::GradientWeighting,
        paper: "-",
        default_config: || Box::new(Dummy),
    };
    static A_AGAIN: BalancerRegistration = BalancerRegistration {
        name: "grad_norm",
        summary: "second",
        kind: BalancerKind::LossWeighting,
        paper: "-",
        default_config: || Box::new(Dummy),
    };
    static B: BalancerRegistration = BalancerRegistration {
        name: "static",
        summary: "fixed",
        kind: BalancerKind::LossWeighting,
        paper: "-",
        default_config: || Box::new(Dummy),
    };

    #[test]
    fn entries_are_sorted_and_found_by_name() {
        let reg = Registry::from_registrations([&B, &A]).unwrap();
        assert_eq!(reg.names(), vec!["grad_norm", "static"]);
        assert_eq!(reg.get("static").unwrap().summary, "fixed");
    }

    #[test]
    fn duplicate_names_are_an_error_naming_both() {
        let err = Registry::from_registrations([&A, &B, &A_AGAIN]).unwrap_err();
        assert_eq!(
            err,
            BalanceError::DuplicateBalancer {
                name: "grad_norm".into(),
                count: 2,
                summaries: vec!["first".into(), "second".into()],
            }
        );
    }

    #[test]
    fn unknown_name_lists_known_and_suggests_closest() {
        let reg = Registry::from_registrations([&A, &B]).unwrap();
        let err = reg.get("gradnorm").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown balancer `gradnorm` (did you mean `grad_norm`?); known balancers: grad_norm, static"
        );
        let err = reg.get("mgda").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown balancer `mgda`; known balancers: grad_norm, static"
        );
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
