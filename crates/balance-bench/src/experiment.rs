//! What to compare: datasets, models, balancers, seeds and training settings, from flags or a TOML file.

use balance::BalancerSpec;

use crate::label::{Labeled, LabeledSpec};
use balance_harness::data::census::CensusTask;
use serde::{Deserialize, Serialize};

/// A dataset the bench can train on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// Response -> conversion -> high-value (30 %, 3 %, 0.5 %), synthetic.
    Cascade,
    /// Impression -> click -> conversion, synthetic.
    Esmm,
    /// The MMoE paper's two correlated regression tasks (correlation 0.5).
    MmoeSynthetic,
    /// Census-Income (KDD), fetched on first use into `.cache/census`; tasks from `census_tasks`.
    Census,
    /// Your own CSV file and schema (`csv` in the experiment, or `--csv` and `--schema`).
    Csv,
}

impl DatasetKind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Cascade => "cascade",
            DatasetKind::Esmm => "esmm",
            DatasetKind::MmoeSynthetic => "mmoe-synthetic",
            DatasetKind::Census => "census",
            DatasetKind::Csv => "csv",
        }
    }
}

/// A model the bench can train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// MMoE: 4 experts `[64, 32]`, towers `[32]`.
    Mmoe,
    /// ESMM: CTR and CVR towers `[64, 32]` over shared embeddings (the first two tasks).
    Esmm,
    /// Shared-Bottom: bottom `[128, 32]`, towers `[16]`.
    #[value(name = "shared_bottom")]
    SharedBottom,
    /// PLE: 2 levels, 2 shared and 1 task expert `[64, 32]` each, towers `[16]`.
    Ple,
}

impl ModelKind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Mmoe => "mmoe",
            ModelKind::Esmm => "esmm",
            ModelKind::SharedBottom => "shared_bottom",
            ModelKind::Ple => "ple",
        }
    }
}

/// A CSV file and the schema that maps its columns (see `balance_harness::data::csv_schema`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSource {
    /// The data file (with a header row).
    pub data: std::path::PathBuf,
    /// The schema file (TOML or JSON).
    pub schema: std::path::PathBuf,
}

/// Seeds per configuration by default: 10 resolve the rare task's paired AUC difference to about
/// ±0.004 on `cascade` MMoE (the reasoning is in `docs/benchmarks.md`).
pub const DEFAULT_SEEDS: usize = 10;

/// Held-out rows of the synthetic datasets by default (the reasoning is in `docs/benchmarks.md`).
pub const DEFAULT_HOLDOUT_ROWS: usize = 200_000;

/// A full experiment. Every field has a default: the embedded default comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Experiment {
    /// Datasets to train on.
    pub datasets: Vec<DatasetKind>,
    /// Models to train.
    pub models: Vec<ModelKind>,
    /// Balancers to compare (empty: every registered balancer with its defaults). `static` is always
    /// added as the baseline when missing.
    pub balancers: Vec<LabeledSpec>,
    /// Seeds per (dataset, model, balancer); seeds change initialisation, shuffling and dropout.
    pub seeds: usize,
    /// Epochs per run (default 3: DWA keeps equal weights for two epochs, so a shorter run cannot show it).
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: i64,
    /// Training rows of the synthetic datasets.
    pub rows: usize,
    /// Held-out rows of the synthetic datasets, drawn from the same teacher on a stream of their own (the
    /// training rows do not depend on it). Evaluation is a forward pass, so a large held-out set is cheap
    /// and is what resolves a rare task (see `docs/benchmarks.md`).
    pub holdout_rows: usize,
    /// Census-Income tasks (default: income and never-married, the MMoE paper's first group).
    pub census_tasks: Vec<CensusTask>,
    /// The CSV file and its schema, for the `csv` dataset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvSource>,
    /// Adam learning rate of the model.
    pub lr: f64,
    /// Clip the model's global gradient norm to this value before each step (`None`: no clipping).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
    /// libtorch intra-op threads of the whole run, split evenly between the data-parallel ranks of one
    /// machine (at least one each).
    pub threads: i32,
    /// `auto` (a GPU when libtorch sees one), `cpu`, `cuda` (`cuda:0`) or `cuda:N` (data-parallel ranks
    /// take `cuda:LOCAL_RANK`).
    pub device: String,
    /// Data-parallel ranks that train each run together (`batch_size` is then the global batch). Set by
    /// the launch (`torchrun`, or `run --nproc N`); a file may state it, and it must then match.
    #[serde(skip_serializing_if = "is_one")]
    pub ranks: usize,
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl Experiment {
    /// Takes the launch's world size as `ranks`: an experiment that does not state it (1) gets it, one
    /// that states another is an error naming the field.
    pub fn set_ranks(&mut self, world: usize) -> anyhow::Result<()> {
        if self.ranks != 1 && self.ranks != world {
            anyhow::bail!(
                "invalid experiment: field `ranks` = {}, expected the launch's world size {world} (set by torchrun or --nproc)",
                self.ranks
            );
        }
        self.ranks = world;
        Ok(())
    }
}

impl Default for Experiment {
    fn default() -> Self {
        Self {
            datasets: vec![DatasetKind::Cascade],
            models: vec![ModelKind::Mmoe],
            balancers: Vec::new(),
            seeds: DEFAULT_SEEDS,
            epochs: 3,
            batch_size: 1024,
            rows: 60_000,
            holdout_rows: DEFAULT_HOLDOUT_ROWS,
            census_tasks: vec![CensusTask::Income, CensusTask::NeverMarried],
            csv: None,
            lr: 2e-3,
            max_grad_norm: None,
            threads: 2,
            device: "auto".into(),
            ranks: 1,
        }
    }
}

impl Experiment {
    /// Checks the settings; the error names the field.
    pub fn check(&self) -> anyhow::Result<()> {
        let bad = |field: &str, value: String, expected: &str| {
            anyhow::bail!("invalid experiment: field `{field}` = {value}, expected {expected}")
        };
        if self.datasets.is_empty() {
            return bad("datasets", "[]".into(), "at least one dataset");
        }
        if self.models.is_empty() {
            return bad("models", "[]".into(), "at least one model");
        }
        if self.seeds < 1 {
            return bad("seeds", self.seeds.to_string(), "at least 1");
        }
        if self.epochs < 1 {
            return bad("epochs", self.epochs.to_string(), "at least 1");
        }
        if let Some(max) = self.max_grad_norm {
            if !(max.is_finite() && max > 0.0) {
                return bad("max_grad_norm", max.to_string(), "a finite number > 0");
            }
        }
        if self.batch_size < 1 {
            return bad("batch_size", self.batch_size.to_string(), "at least 1");
        }
        if self.rows < 8 {
            return bad("rows", self.rows.to_string(), "at least 8");
        }
        if self.holdout_rows < 8 {
            return bad("holdout_rows", self.holdout_rows.to_string(), "at least 8");
        }
        if self.datasets.contains(&DatasetKind::Census) && self.census_tasks.is_empty() {
            return bad(
                "census_tasks",
                "[]".into(),
                "at least one of \"income\", \"never_married\", \"education\"",
            );
        }
        if self.datasets.contains(&DatasetKind::Csv) && self.csv.is_none() {
            return bad(
                "csv",
                "none".into(),
                "a data file and a schema for the `csv` dataset (--csv FILE --schema FILE)",
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", self.lr.to_string(), "a finite number > 0");
        }
        if self.threads < 1 {
            return bad("threads", self.threads.to_string(), "at least 1");
        }
        if self.ranks < 1 {
            return bad("ranks", self.ranks.to_string(), "at least 1");
        }
        if self.batch_size < self.ranks as i64 {
            return bad(
                "batch_size",
                self.batch_size.to_string(),
                &format!(
                    "at least the {} data-parallel ranks (it is the global batch)",
                    self.ranks
                ),
            );
        }
        if let tch::Device::Cuda(index) = parse_device(&self.device)? {
            // Data-parallel ranks take cuda:LOCAL_RANK instead (checked where the ranks are known).
            let gpus = tch::Cuda::device_count();
            if self.ranks == 1 && i64::try_from(index).map_or(true, |i| i >= gpus) {
                return bad(
                    "device",
                    format!("{:?}", self.device),
                    &format!("a GPU that libtorch sees (it sees {gpus}), or \"cpu\" / \"auto\""),
                );
            }
        }
        self.resolved_balancers()?;
        Ok(())
    }

    /// The balancers to run with their unique labels (see [`crate::label`]), `static` first (the first
    /// static config is the baseline; the default one is added when there is none).
    pub fn resolved_balancers(&self) -> anyhow::Result<Vec<Labeled>> {
        let mut specs: Vec<LabeledSpec> = if self.balancers.is_empty() {
            balance::registry()?
                .names()
                .into_iter()
                .map(|name| BalancerSpec::from_name(name).map(LabeledSpec::from))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            self.balancers.clone()
        };
        match specs.iter().position(|s| s.spec.method() == "static") {
            Some(0) => {}
            Some(i) => {
                let baseline = specs.remove(i);
                specs.insert(0, baseline);
            }
            None => specs.insert(0, BalancerSpec::from_name("static")?.into()),
        }
        crate::label::assign(&specs)
    }
}

/// Reads `auto`, `cpu` or `cuda:N`.
pub fn parse_device(text: &str) -> anyhow::Result<tch::Device> {
    match text {
        "auto" => Ok(tch::Device::cuda_if_available()),
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => Ok(tch::Device::Cuda(0)),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(tch::Device::Cuda(n)),
            _ => anyhow::bail!("invalid experiment: field `device` = {other:?}, expected \"auto\", \"cpu\", \"cuda\" or \"cuda:N\""),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_experiment_with_every_config_form() {
        let exp: Experiment = toml::from_str(
            r#"
            datasets = ["cascade", "mmoe-synthetic"]
            models = ["mmoe", "shared_bottom"]
            balancers = [[1.0, 2.0, 3.0], "loss_norm", { method = "loss_norm", scale = "ema" }]
            seeds = 2
            "#,
        )
        .unwrap();
        exp.check().unwrap();
        let methods: Vec<_> = exp
            .resolved_balancers()
            .unwrap()
            .iter()
            .map(|b| b.spec.method())
            .collect();
        assert_eq!(methods, vec!["static", "loss_norm", "loss_norm"]);
    }

    #[test]
    fn ranks_come_from_the_launch_and_a_stated_other_value_is_named() {
        let mut exp = Experiment::default();
        exp.set_ranks(2).unwrap();
        assert_eq!(exp.ranks, 2);
        let mut stated = Experiment {
            ranks: 3,
            ..Default::default()
        };
        let err = stated.set_ranks(2).unwrap_err().to_string();
        assert!(
            err.contains("field `ranks` = 3") && err.contains("world size 2"),
            "{err}"
        );
    }

    #[test]
    fn static_baseline_is_added_first() {
        let exp = Experiment {
            balancers: vec!["loss_norm".parse().unwrap()],
            ..Default::default()
        };
        let methods: Vec<_> = exp
            .resolved_balancers()
            .unwrap()
            .iter()
            .map(|b| b.spec.method())
            .collect();
        assert_eq!(methods, vec!["static", "loss_norm"]);
    }

    #[test]
    fn bad_fields_are_named() {
        let err = toml::from_str::<Experiment>("sedes = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `sedes`"), "{err}");
        let err = Experiment {
            device: "gpu".into(),
            ..Default::default()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(err.contains("field `device` = \"gpu\""), "{err}");
        // `cuda` is `cuda:0`; a GPU libtorch does not see is refused before training, with the count.
        assert_eq!(parse_device("cuda").unwrap(), tch::Device::Cuda(0));
        let gpus = tch::Cuda::device_count();
        let beyond = Experiment {
            device: format!("cuda:{gpus}"),
            ..Default::default()
        };
        let err = beyond.check().unwrap_err().to_string();
        assert!(
            err.contains(&format!("field `device` = \"cuda:{gpus}\""))
                && err.contains(&format!("it sees {gpus}")),
            "{err}"
        );
        // As 2 data-parallel ranks the index is not this field's (each rank takes cuda:LOCAL_RANK).
        let mut ranked = beyond.clone();
        ranked.ranks = 2;
        ranked.check().unwrap();
        let err = Experiment {
            seeds: 0,
            ..Default::default()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("field `seeds` = 0, expected at least 1"),
            "{err}"
        );
        let err = Experiment {
            max_grad_norm: Some(-1.0),
            ..Default::default()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("field `max_grad_norm` = -1, expected a finite number > 0"),
            "{err}"
        );
        let exp: Experiment = toml::from_str("max_grad_norm = 1.0").unwrap();
        assert_eq!(exp.max_grad_norm, Some(1.0));
    }
}
