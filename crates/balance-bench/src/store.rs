//! The run store: with `--out DIR`, every finished run and memory probe is kept in `DIR/runs`, so a rerun
//! of the same command skips them and resumes where an interrupted one stopped.
//!
//! Layout (every file written whole through [`crate::atomic`]):
//!
//! - `settings.json`: the experiment minus the fields that only select *which* runs happen (datasets,
//!   models, balancers, seeds). Runs made under other settings are never mixed in: a different file is an
//!   error naming the fields.
//! - `<dataset>-<model>-<slug(label)>-seed<k>.json`: one [`RunResult`].
//! - `<dataset>-<model>-<slug(label)>-memory.json`: one memory probe's peak ([`StoredMemory`]).
//!
//! A stored run or probe is reused only under the balancer config it was made with.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::experiment::Experiment;
use crate::label::{slug, Labeled};
use crate::report::RunResult;

/// The experiment fields that select which runs happen; they are not part of the settings fingerprint.
pub const SELECTION_FIELDS: [&str; 4] = ["datasets", "models", "balancers", "seeds"];

/// The name of the settings fingerprint file in the store.
pub const SETTINGS_FILE: &str = "settings.json";

/// One memory probe as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMemory {
    /// Dataset name.
    pub dataset: String,
    /// Model name.
    pub model: String,
    /// The configuration's label.
    pub label: String,
    /// The balancer's full config (as in [`RunResult::balancer`]).
    pub balancer: String,
    /// Peak growth of the resident set, in MiB.
    pub peak_mib: f64,
}

/// The settings fingerprint of an experiment: its JSON form minus [`SELECTION_FIELDS`].
pub fn settings(experiment: &Experiment) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(experiment).context("serialising the experiment")?;
    if let Some(map) = value.as_object_mut() {
        for field in SELECTION_FIELDS {
            map.remove(field);
        }
    }
    Ok(value)
}

/// The fields whose values differ between two fingerprints, as `` `field`: stored X, requested Y ``
/// (`none` for an absent field), in field order.
fn differences(stored: &serde_json::Value, requested: &serde_json::Value) -> Vec<String> {
    field_differences(stored, requested, ("stored", "requested"))
}

/// The fields whose values differ between two JSON objects, as `` `field`: A x, B y `` with `names`
/// `(A, B)` (`none` for an absent field), in field order.
pub fn field_differences(
    a: &serde_json::Value,
    b: &serde_json::Value,
    names: (&str, &str),
) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (old, new) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    let mut fields: Vec<&String> = old.keys().chain(new.keys()).collect();
    fields.sort();
    fields.dedup();
    let show = |v: Option<&serde_json::Value>| v.map_or("none".to_string(), |v| v.to_string());
    fields
        .into_iter()
        .filter(|f| old.get(*f) != new.get(*f))
        .map(|f| {
            format!(
                "`{f}`: {} {}, {} {}",
                names.0,
                show(old.get(f)),
                names.1,
                show(new.get(f))
            )
        })
        .collect()
}

/// The store of one output folder (`DIR/runs`).
#[derive(Debug, Clone)]
pub struct RunStore {
    dir: PathBuf,
}

impl RunStore {
    /// Opens (creating it if need be) the store under `out` for `experiment` with its resolved
    /// `balancers`: checks the settings fingerprint against the stored one (writing it when there is
    /// none), that no two labels share a file name, and removes temporaries a killed write left behind.
    pub fn open(out: &Path, experiment: &Experiment, balancers: &[Labeled]) -> Result<Self> {
        let dir = out.join("runs");
        crate::atomic::create_dir(&dir)?;
        let store = Self { dir };
        store.check_slugs(balancers)?;
        store.remove_temporaries()?;
        let requested = settings(experiment)?;
        let path = store.dir.join(SETTINGS_FILE);
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let stored: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            let diff = differences(&stored, &requested);
            if !diff.is_empty() {
                bail!(
                    "{} holds runs made with other settings ({}); choose another --out, or delete {} to start over",
                    store.dir.display(),
                    diff.join("; "),
                    store.dir.display()
                );
            }
        } else {
            if store.has_results()? {
                bail!(
                    "{} holds runs but no {SETTINGS_FILE}, so their settings are unknown; choose another --out, or delete {} to start over",
                    store.dir.display(),
                    store.dir.display()
                );
            }
            let text = serde_json::to_string_pretty(&requested)?;
            crate::atomic::write(&path, text.as_bytes())?;
        }
        Ok(store)
    }

    /// The store's folder (`DIR/runs`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Two labels whose slugs are equal would share files.
    fn check_slugs(&self, balancers: &[Labeled]) -> Result<()> {
        for (i, a) in balancers.iter().enumerate() {
            if let Some(b) = balancers[i + 1..]
                .iter()
                .find(|b| slug(&b.label) == slug(&a.label))
            {
                bail!(
                    "balancer labels `{}` and `{}` have the same file name `{}` in {}: give one of them another label",
                    a.label,
                    b.label,
                    slug(&a.label),
                    self.dir.display()
                );
            }
        }
        Ok(())
    }

    /// The `.NAME.tmp` files of writes that never finished (a process killed mid-write).
    fn remove_temporaries(&self) -> Result<()> {
        for entry in self.entries()? {
            let name = entry.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp")) {
                std::fs::remove_file(&entry)
                    .with_context(|| format!("removing {}", entry.display()))?;
            }
        }
        Ok(())
    }

    fn has_results(&self) -> Result<bool> {
        Ok(self.entries()?.iter().any(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name().is_some_and(|n| n != SETTINGS_FILE)
        }))
    }

    fn entries(&self) -> Result<Vec<PathBuf>> {
        let read = std::fs::read_dir(&self.dir)
            .with_context(|| format!("listing {}", self.dir.display()))?;
        let mut paths = Vec::new();
        for entry in read {
            paths.push(
                entry
                    .with_context(|| format!("listing {}", self.dir.display()))?
                    .path(),
            );
        }
        Ok(paths)
    }

    /// The file of one run.
    pub fn run_path(&self, dataset: &str, model: &str, label: &str, seed: u64) -> PathBuf {
        self.dir
            .join(format!("{dataset}-{model}-{}-seed{seed}.json", slug(label)))
    }

    /// The file of one memory probe.
    pub fn memory_path(&self, dataset: &str, model: &str, label: &str) -> PathBuf {
        self.dir
            .join(format!("{dataset}-{model}-{}-memory.json", slug(label)))
    }

    /// The stored run of (dataset, model, balancer, seed), if any; an error when it was made with another
    /// config under that label, or is not what its name says.
    pub fn load_run(
        &self,
        dataset: &str,
        model: &str,
        balancer: &Labeled,
        seed: u64,
    ) -> Result<Option<RunResult>> {
        let path = self.run_path(dataset, model, &balancer.label, seed);
        let Some(run) = read_json::<RunResult>(&path)? else {
            return Ok(None);
        };
        check_config(&path, &balancer.label, &run.balancer, balancer)?;
        if run.dataset != dataset
            || run.model != model
            || run.label != balancer.label
            || run.seed != seed
        {
            bail!(
                "{} holds run {}/{}/{} seed {}, not {dataset}/{model}/{} seed {seed}; delete it",
                path.display(),
                run.dataset,
                run.model,
                run.label,
                run.seed,
                balancer.label
            );
        }
        Ok(Some(run))
    }

    /// Stores a finished run (whole, or not at all).
    pub fn save_run(&self, run: &RunResult) -> Result<()> {
        let path = self.run_path(&run.dataset, &run.model, &run.label, run.seed);
        write_json(&path, run)
    }

    /// The stored memory probe of (dataset, model, balancer), if any (checked like [`Self::load_run`]).
    pub fn load_memory(
        &self,
        dataset: &str,
        model: &str,
        balancer: &Labeled,
    ) -> Result<Option<f64>> {
        let path = self.memory_path(dataset, model, &balancer.label);
        let Some(memory) = read_json::<StoredMemory>(&path)? else {
            return Ok(None);
        };
        check_config(&path, &balancer.label, &memory.balancer, balancer)?;
        Ok(Some(memory.peak_mib))
    }

    /// Stores a memory probe's peak.
    pub fn save_memory(
        &self,
        dataset: &str,
        model: &str,
        balancer: &Labeled,
        peak_mib: f64,
    ) -> Result<()> {
        let memory = StoredMemory {
            dataset: dataset.into(),
            model: model.into(),
            label: balancer.label.clone(),
            balancer: balancer.spec.to_string(),
            peak_mib,
        };
        write_json(&self.memory_path(dataset, model, &balancer.label), &memory)
    }
}

/// A stored result is reused only under the config it was made with.
fn check_config(path: &Path, label: &str, stored: &str, requested: &Labeled) -> Result<()> {
    let requested = requested.spec.to_string();
    if stored != requested {
        bail!(
            "{} was made by balancer `{label}` with config {stored}, but `{label}` is now {requested}; give the new config another label, choose another --out, or delete {}",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_str(&text).map(Some).with_context(|| {
        format!(
            "{} is not a stored result (delete it to redo it)",
            path.display()
        )
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    crate::atomic::write_with(path, |out| {
        serde_json::to_writer_pretty(&mut *out, value)?;
        Ok(out.write_all(b"\n")?)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::label::LabeledSpec;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn labeled(label: &str, config: &str) -> Labeled {
        let spec: LabeledSpec = config.parse().unwrap();
        Labeled {
            label: label.into(),
            spec: spec.spec,
        }
    }

    fn run(balancer: &Labeled, seed: u64) -> RunResult {
        RunResult {
            dataset: "cascade".into(),
            model: "mmoe".into(),
            balancer: balancer.spec.to_string(),
            label: balancer.label.clone(),
            method: balancer.spec.method().into(),
            seed,
            tasks: vec!["a".into()],
            metrics: Vec::new(),
            initial_weights: vec![1.0],
            final_weights: vec![1.0],
            median_step_ms: 1.5,
            train_seconds: 2.25,
            trajectory_steps: vec![0],
            weight_trajectory: vec![vec![1.0]],
            loss_trajectory: vec![vec![0.5]],
            extras_mean: Default::default(),
        }
    }

    #[test]
    fn fingerprint_ignores_which_runs_and_names_what_changed() {
        let base = Experiment::default();
        let more = Experiment {
            seeds: 7,
            models: vec![crate::experiment::ModelKind::Ple],
            ..base.clone()
        };
        assert_eq!(settings(&base).unwrap(), settings(&more).unwrap());
        let longer = Experiment {
            epochs: 5,
            max_grad_norm: Some(1.0),
            ..base.clone()
        };
        let diff = differences(&settings(&base).unwrap(), &settings(&longer).unwrap());
        assert_eq!(
            diff,
            vec![
                "`epochs`: stored 3, requested 5".to_string(),
                "`max_grad_norm`: stored none, requested 1.0".to_string()
            ]
        );
    }

    #[test]
    fn runs_round_trip_and_other_settings_are_refused() {
        let out = scratch("roundtrip");
        let exp = Experiment::default();
        let balancers = [labeled("static", "static")];
        let store = RunStore::open(&out, &exp, &balancers).unwrap();
        let b = &balancers[0];
        assert_eq!(store.load_run("cascade", "mmoe", b, 1).unwrap(), None);
        store.save_run(&run(b, 1)).unwrap();
        assert!(out.join("runs/cascade-mmoe-static-seed1.json").exists());
        assert_eq!(
            store.load_run("cascade", "mmoe", b, 1).unwrap(),
            Some(run(b, 1))
        );
        store.save_memory("cascade", "mmoe", b, 12.5).unwrap();
        assert_eq!(store.load_memory("cascade", "mmoe", b).unwrap(), Some(12.5));

        // Same settings, more seeds: the store opens and keeps its runs.
        let more = Experiment {
            seeds: 9,
            ..exp.clone()
        };
        let again = RunStore::open(&out, &more, &balancers).unwrap();
        assert!(again.load_run("cascade", "mmoe", b, 1).unwrap().is_some());

        let other = Experiment {
            epochs: 4,
            ..exp.clone()
        };
        let err = RunStore::open(&out, &other, &balancers)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`epochs`: stored 3, requested 4")
                && err.contains("choose another --out")
                && err.contains("delete"),
            "{err}"
        );
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn a_stored_run_of_another_config_is_an_error_naming_both() {
        let out = scratch("config");
        let exp = Experiment::default();
        let old = labeled("mine", "loss_norm");
        let store = RunStore::open(&out, &exp, std::slice::from_ref(&old)).unwrap();
        store.save_run(&run(&old, 0)).unwrap();
        let new = labeled("mine", "grad_norm");
        let err = store
            .load_run("cascade", "mmoe", &new, 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("balancer `mine`")
                && err.contains(&old.spec.to_string())
                && err.contains(&new.spec.to_string()),
            "{err}"
        );
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn leftover_temporaries_are_removed_and_colliding_slugs_refused() {
        let out = scratch("tmp");
        let exp = Experiment::default();
        let balancers = [labeled("static", "static")];
        let store = RunStore::open(&out, &exp, &balancers).unwrap();
        let tmp = crate::atomic::temporary(&store.run_path("cascade", "mmoe", "static", 0));
        std::fs::write(&tmp, "{\"half").unwrap();
        RunStore::open(&out, &exp, &balancers).unwrap();
        assert!(!tmp.exists());
        let clash = [labeled("a_b", "static"), labeled("a/b", "loss_norm")];
        let err = RunStore::open(&out, &exp, &clash).unwrap_err().to_string();
        assert!(err.contains("same file name `a_b`"), "{err}");
        std::fs::remove_dir_all(&out).unwrap();
    }
}
