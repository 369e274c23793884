//! Short, stable, unique labels for the balancer configurations of a run.
//!
//! A configuration's label is the one its user gave (`label = "gn-prior"` in a map, or
//! `--balancer gn-prior=CONFIG`), else the method name followed by only the fields that differ from that
//! method's defaults: `uncertainty(form=regression)`, `grad_norm(alpha=0.5, progress=prior)`. Labels are
//! unique within a run and [`slug`] makes one safe as a file name.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use balance::BalancerSpec;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A balancer config with an optional user-chosen label.
///
/// Parses from `LABEL=CONFIG` or a plain config (a name, a JSON list, a JSON map; a map may carry a
/// `label` field).
///
/// ```
/// use balance_bench::label::LabeledSpec;
/// let plain: LabeledSpec = "static".parse().unwrap();
/// assert_eq!(plain.label, None);
/// let named: LabeledSpec = r#"mine={"method":"static"}"#.parse().unwrap();
/// assert_eq!(named.label.as_deref(), Some("mine"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledSpec {
    /// The label the user chose, if any.
    pub label: Option<String>,
    /// The configuration.
    pub spec: BalancerSpec,
}

impl From<BalancerSpec> for LabeledSpec {
    fn from(spec: BalancerSpec) -> Self {
        Self { label: None, spec }
    }
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+')
}

/// Checks a user-chosen label: non-empty, at most 64 characters of `[A-Za-z0-9_.+-]`.
fn check_user_label(label: &str) -> Result<()> {
    if label.is_empty() || label.len() > 64 || !label.chars().all(is_label_char) {
        bail!(
            "invalid balancer label `{label}`: expected 1 to 64 characters of letters, digits, `_`, `-`, `.` or `+`"
        );
    }
    Ok(())
}

impl FromStr for LabeledSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let trimmed = s.trim();
        if let Some((label, config)) = trimmed.split_once('=') {
            if !label.is_empty() && label.chars().all(is_label_char) {
                check_user_label(label)?;
                let spec = config
                    .parse::<BalancerSpec>()
                    .with_context(|| format!("balancer `{label}`"))?;
                return Ok(Self {
                    label: Some(label.to_string()),
                    spec,
                });
            }
        }
        let value: Option<serde_json::Value> = serde_json::from_str(trimmed).ok();
        match value {
            Some(value @ serde_json::Value::Object(_)) => Self::from_value(value),
            _ => Ok(trimmed.parse::<BalancerSpec>()?.into()),
        }
    }
}

impl LabeledSpec {
    /// Reads a config value, taking a map's `label` field out of it.
    pub fn from_value(mut value: serde_json::Value) -> Result<Self> {
        let label = match value.as_object_mut().and_then(|m| m.remove("label")) {
            None => None,
            Some(serde_json::Value::String(label)) => {
                check_user_label(&label)?;
                Some(label)
            }
            Some(other) => bail!("field `label` = {other}, expected a string"),
        };
        Ok(Self {
            label,
            spec: BalancerSpec::from_value(value)?,
        })
    }
}

impl fmt::Display for LabeledSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.label {
            Some(label) => write!(f, "{label}={}", self.spec),
            None => write!(f, "{}", self.spec),
        }
    }
}

impl Serialize for LabeledSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut value = self.spec.to_value().map_err(serde::ser::Error::custom)?;
        if let (Some(label), Some(map)) = (&self.label, value.as_object_mut()) {
            map.insert("label".into(), label.clone().into());
        }
        value.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for LabeledSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Self::from_value(value).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// One configuration of a run with its final label.
#[derive(Debug, Clone, PartialEq)]
pub struct Labeled {
    /// The unique label.
    pub label: String,
    /// The configuration.
    pub spec: BalancerSpec,
}

/// A config value as it reads in a label: strings bare, everything else compact JSON.
fn compact(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The label derived from a config: the method, then `(field=value, ...)` for the fields that differ from
/// the method's defaults (none: the bare method name).
pub fn derive(spec: &BalancerSpec) -> Result<String> {
    let value = spec.to_value()?;
    let defaults = serde_json::to_value(balance::registry()?.default_config(spec.method())?)?;
    let changed: Vec<String> = value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, v)| key.as_str() != "method" && defaults.get(key.as_str()) != Some(*v))
        .map(|(key, v)| format!("{key}={}", compact(v)))
        .collect();
    Ok(if changed.is_empty() {
        spec.method().to_string()
    } else {
        format!("{}({})", spec.method(), changed.join(", "))
    })
}

/// Gives every configuration its label: user labels kept (two equal ones are an error), derived labels
/// suffixed `#2`, `#3`... where they would collide. The same config twice is an error (it would train
/// the same thing twice under two names).
pub fn assign(entries: &[LabeledSpec]) -> Result<Vec<Labeled>> {
    for (i, a) in entries.iter().enumerate() {
        for (j, b) in entries.iter().enumerate().skip(i + 1) {
            if a.spec == b.spec {
                bail!(
                    "balancers {} and {} are the same config `{}`: list each configuration once",
                    i + 1,
                    j + 1,
                    a.spec
                );
            }
            if a.label.is_some() && a.label == b.label {
                bail!(
                    "balancers {} and {} share the label `{}`: labels must be unique",
                    i + 1,
                    j + 1,
                    a.label.as_deref().unwrap_or_default()
                );
            }
        }
    }
    let mut taken: Vec<String> = entries.iter().filter_map(|e| e.label.clone()).collect();
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let label = match &entry.label {
            Some(label) => label.clone(),
            None => {
                let base = derive(&entry.spec)?;
                let mut candidate = base.clone();
                let mut k = 2;
                while taken.contains(&candidate) {
                    candidate = format!("{base}#{k}");
                    k += 1;
                }
                taken.push(candidate.clone());
                candidate
            }
        };
        out.push(Labeled {
            label,
            spec: entry.spec.clone(),
        });
    }
    Ok(out)
}

/// A label made safe as (part of) a file name on every common system: letters, digits and `_ - . + = ,
/// ( ) [ ]` kept, spaces dropped, anything else `_`.
///
/// ```
/// assert_eq!(balance_bench::label::slug("grad_norm(alpha=0.5, progress=prior)"), "grad_norm(alpha=0.5,progress=prior)");
/// assert_eq!(balance_bench::label::slug("a/b#2"), "a_b_2");
/// ```
pub fn slug(label: &str) -> String {
    label
        .chars()
        .filter(|c| *c != ' ')
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.+=,()[]".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> LabeledSpec {
        s.parse().unwrap()
    }

    #[test]
    fn derived_labels_name_only_changed_fields() {
        let labels = assign(&[
            spec("static"),
            spec(r#"{"method":"grad_norm","progress":"prior","alpha":0.5}"#),
            spec("grad_norm"),
            spec("[0.3, 0.7]"),
        ])
        .unwrap();
        let got: Vec<&str> = labels.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(
            got,
            vec![
                "static",
                "grad_norm(alpha=0.5, progress=prior)",
                "grad_norm",
                "static(weights=[0.3,0.7])"
            ]
        );
    }

    #[test]
    fn user_labels_win_and_derived_collisions_get_a_suffix() {
        let labels = assign(&[
            spec(r#"loss_norm={"method":"loss_norm","scale":"prior"}"#),
            spec("loss_norm"),
        ])
        .unwrap();
        assert_eq!(labels[0].label, "loss_norm");
        assert_eq!(labels[1].label, "loss_norm#2");
    }

    #[test]
    fn duplicates_are_errors_that_say_which() {
        let err = assign(&[spec("dwa"), spec(r#"{"method":"dwa"}"#)]).unwrap_err();
        assert!(err.to_string().contains("balancers 1 and 2"), "{err}");
        let err = assign(&[spec("a=dwa"), spec("a=rlw")]).unwrap_err();
        assert!(err.to_string().contains("share the label `a`"), "{err}");
    }

    #[test]
    fn label_in_a_map_round_trips() {
        let s = spec(r#"{"method":"dwa","label":"slow"}"#);
        assert_eq!(s.label.as_deref(), Some("slow"));
        let json = serde_json::to_string(&s).unwrap();
        let back: LabeledSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let bad = LabeledSpec::from_value(serde_json::json!({"method":"dwa","label":"a b"}));
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("invalid balancer label `a b`"));
    }
}
