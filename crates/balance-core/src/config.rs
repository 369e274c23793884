//! Balancer configs: the [`BalancerConfig`] trait plugins implement, and [`BalancerSpec`], the value users
//! write in JSON or TOML in any of the three familiar forms.

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::balancer::LossBalancer;
use crate::error::{BalanceError, Result};
use crate::registry::registry;

/// A balancer's configuration. Each plugin's config struct implements it with
/// `#[typetag::serde(name = "<registry name>")]`, so `Box<dyn BalancerConfig>` (de)serialises as a map
/// whose `method` field names the balancer.
#[typetag::serde(tag = "method")]
pub trait BalancerConfig: fmt::Debug + Send + Sync {
    /// The registry name (equal to the typetag name).
    fn method(&self) -> &'static str;

    /// Checks every field for `num_tasks` tasks; the error names the field, the value and what is expected.
    fn validate(&self, num_tasks: usize) -> Result<()>;

    /// Validates, then builds a fresh balancer for `num_tasks` tasks.
    fn build(&self, num_tasks: usize) -> Result<Box<dyn LossBalancer>>;

    /// A boxed copy.
    fn clone_config(&self) -> Box<dyn BalancerConfig>;
}

impl Clone for Box<dyn BalancerConfig> {
    fn clone(&self) -> Self {
        self.clone_config()
    }
}

/// A balancer choice as users write it, in JSON, TOML or on a command line:
///
/// - a list of numbers: static weights, `[0.3, 0.7]`;
/// - a bare name: that balancer with its defaults, `"loss_norm"`;
/// - a map with `method` and options: `{"method": "loss_norm", "scale": "ema", "decay": 0.99}`.
///
/// Unknown names list the registered ones; unknown fields are rejected. It always serialises to the map
/// form, which reads back to an equal spec.
///
/// See the `balance` facade crate for runnable examples (they need the plugins linked).
#[derive(Debug, Clone)]
pub struct BalancerSpec(Box<dyn BalancerConfig>);

impl BalancerSpec {
    /// Wraps a config.
    pub fn new(config: Box<dyn BalancerConfig>) -> Self {
        Self(config)
    }

    /// The default config of the registered balancer called `name`.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(Self(registry()?.default_config(name)?))
    }

    /// Static weights (the list form).
    pub fn static_weights(weights: &[f64]) -> Result<Self> {
        Self::from_value(serde_json::json!(weights))
    }

    /// Reads any of the three forms from a JSON value.
    pub fn from_value(value: serde_json::Value) -> Result<Self> {
        match value {
            serde_json::Value::String(name) => Self::from_name(&name),
            serde_json::Value::Array(weights) => Self::from_map(serde_json::json!({
                "method": "static",
                "weights": weights,
            })),
            map @ serde_json::Value::Object(_) => Self::from_map(map),
            other => Err(BalanceError::ConfigSyntax(format!(
                "expected a balancer name, a list of static weights, or a map with `method`; got `{other}`"
            ))),
        }
    }

    fn from_map(map: serde_json::Value) -> Result<Self> {
        let method = match map.get("method") {
            Some(serde_json::Value::String(m)) => m.clone(),
            Some(other) => {
                return Err(BalanceError::ConfigSyntax(format!(
                    "field `method` must be a balancer name, got `{other}`"
                )))
            }
            None => {
                return Err(BalanceError::ConfigSyntax(format!(
                    "missing field `method` (one of: {})",
                    registry()?.names().join(", ")
                )))
            }
        };
        registry()?.get(&method)?;
        let config: Box<dyn BalancerConfig> = serde_json::from_value(map)
            .map_err(|e| BalanceError::ConfigSyntax(format!("`{method}`: {e}")))?;
        Ok(Self(config))
    }

    /// The registry name of the configured balancer.
    pub fn method(&self) -> &'static str {
        self.0.method()
    }

    /// The config itself.
    pub fn config(&self) -> &dyn BalancerConfig {
        self.0.as_ref()
    }

    /// Validates for `num_tasks` tasks and builds a fresh balancer.
    pub fn build(&self, num_tasks: usize) -> Result<Box<dyn LossBalancer>> {
        self.0.validate(num_tasks)?;
        self.0.build(num_tasks)
    }

    /// The canonical map form as a JSON value.
    pub fn to_value(&self) -> Result<serde_json::Value> {
        serde_json::to_value(&self.0).map_err(|e| BalanceError::ConfigSyntax(e.to_string()))
    }
}

impl PartialEq for BalancerSpec {
    fn eq(&self, other: &Self) -> bool {
        matches!((self.to_value(), other.to_value()), (Ok(a), Ok(b)) if a == b)
    }
}

impl fmt::Display for BalancerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_value() {
            Ok(v) => write!(f, "{v}"),
            Err(_) => f.write_str(self.method()),
        }
    }
}

impl FromStr for BalancerSpec {
    type Err = BalanceError;

    /// Parses JSON (`[0.3, 0.7]`, `{"method": ...}`, `"name"`) or a bare name (`grad_norm`).
    fn from_str(s: &str) -> Result<Self> {
        let trimmed = s.trim();
        let looks_like_name = !trimmed.is_empty()
            && trimmed
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if looks_like_name {
            return Self::from_name(trimmed);
        }
        let value: serde_json::Value = serde_json::from_str(trimmed).map_err(|e| {
            BalanceError::ConfigSyntax(format!("`{trimmed}` is not valid JSON: {e}"))
        })?;
        Self::from_value(value)
    }
}

impl Serialize for BalancerSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for BalancerSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Self::from_value(value).map_err(D::Error::custom)
    }
}
