//! `balance-bench`: compare registered loss balancers side by side.
//!
//! The command-line interface is a library function, so a third-party plugin author ships a bench that
//! knows their balancer with a three-line binary:
//!
//! ```no_run
//! use my_plugin as _; // links the plugin so its registration is present
//! # mod my_plugin {}
//! fn main() -> std::process::ExitCode {
//!     balance_bench::main()
//! }
//! ```

pub mod atomic;
pub mod census_fetch;
pub mod compare;
pub mod distributed;
pub mod document;
pub mod experiment;
pub mod export;
pub mod interrupt;
pub mod label;
pub mod plot;
pub mod report;
pub mod runner;
pub mod stats;
pub mod store;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::experiment::{DatasetKind, Experiment, ModelKind};
use crate::report::Report;

/// Compare multi-task loss balancers side by side. Without a subcommand: the default comparison
/// (`cascade` scenario, MMoE, every registered balancer, 10 seeds, 200,000 held-out rows).
#[derive(Debug, Parser)]
#[command(name = "balance-bench", version, about)]
pub struct Cli {
    /// What to do (default: the default comparison).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every registered balancer with its kind, summary and paper.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Run a comparison (flags override the experiment file, which overrides the defaults).
    Run(Box<RunArgs>),
    /// Download Census-Income (KDD) into the cache folder and check its sha256 (the `census` dataset
    /// also does this on first use).
    FetchCensus {
        /// The folder (default: `$BALANCE_CACHE_DIR/census`, else `$XDG_CACHE_HOME/balance/census`,
        /// else `~/.cache/balance/census`).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Compare two JSON reports: what got better or worse, and whether beyond noise.
    Compare {
        /// The older report.
        old: PathBuf,
        /// The newer report.
        new: PathBuf,
    },
}

/// Options of `run`.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// An experiment file (TOML) with any of: datasets, models, balancers, seeds, epochs, batch_size,
    /// rows, lr, threads, device.
    #[arg(long)]
    pub experiment: Option<PathBuf>,
    /// Dataset (repeatable).
    #[arg(long = "dataset", value_enum)]
    pub datasets: Vec<DatasetKind>,
    /// Model (repeatable).
    #[arg(long = "model", value_enum)]
    pub models: Vec<ModelKind>,
    /// Balancer: a name, a JSON list of static weights, or a JSON map with `method` (and optionally
    /// `label`), optionally prefixed `LABEL=` (repeatable).
    #[arg(long = "balancer")]
    pub balancers: Vec<label::LabeledSpec>,
    /// Seeds per configuration.
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Epochs per run.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Examples per step.
    #[arg(long)]
    pub batch_size: Option<i64>,
    /// Training rows of synthetic datasets.
    #[arg(long)]
    pub rows: Option<usize>,
    /// Held-out rows of synthetic datasets (their own stream; the training rows do not change).
    #[arg(long)]
    pub holdout_rows: Option<usize>,
    /// Census-Income task (repeatable): income, never_married, education.
    #[arg(long = "census-task")]
    pub census_tasks: Vec<balance_harness::data::census::CensusTask>,
    /// Your own data: a CSV file with a header row, or a Parquet file (`*.parquet` or `PAR1` magic;
    /// LIST columns feed sequence features) (with --schema; selects the `csv` dataset). Alias: --data.
    #[arg(long, alias = "data", requires = "schema")]
    pub csv: Option<PathBuf>,
    /// The schema (TOML or JSON) mapping the file's columns to features and tasks.
    #[arg(long, requires = "csv")]
    pub schema: Option<PathBuf>,
    /// Model learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Clip the model's global gradient norm to this value before each Adam step (Nash-MTL's reference
    /// training uses 1.0); off by default.
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    /// libtorch threads.
    #[arg(long)]
    pub threads: Option<i32>,
    /// `auto`, `cpu`, `cuda` (`cuda:0`) or `cuda:N`; data-parallel ranks on CUDA take `cuda:LOCAL_RANK`.
    #[arg(long)]
    pub device: Option<String>,
    /// Write report.json, report.md, report.csv, report.html and plots/ (SVG and PNG) into this folder,
    /// and keep every finished run in DIR/runs: rerunning the same command (e.g. after Ctrl-C) resumes,
    /// skipping stored runs.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// No progress bar and no progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Train each run data-parallel on N local worker processes (this binary re-run with torchrun's
    /// variables; `--threads` is split between them; `--batch-size` is the global batch). Under
    /// `torchrun --no-python balance-bench run ...` the ranks come from torchrun instead.
    #[arg(long, value_name = "N")]
    pub nproc: Option<usize>,
    /// Seconds that the data-parallel rendezvous and every collective may take before the run stops with
    /// an error naming the rank (a rank that died or never joined).
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub dist_timeout: u64,
}

impl RunArgs {
    /// The experiment: defaults, then the file, then the flags.
    pub fn experiment(&self) -> Result<Experiment> {
        let mut e = match &self.experiment {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing experiment file {}", path.display()))?
            }
            None => Experiment::default(),
        };
        if !self.datasets.is_empty() {
            e.datasets = self.datasets.clone();
        }
        if let (Some(data), Some(schema)) = (&self.csv, &self.schema) {
            e.csv = Some(experiment::CsvSource {
                data: data.clone(),
                schema: schema.clone(),
            });
            if self.datasets.is_empty() {
                e.datasets = vec![DatasetKind::Csv];
            }
        }
        if !self.models.is_empty() {
            e.models = self.models.clone();
        }
        if !self.balancers.is_empty() {
            e.balancers = self.balancers.clone();
        }
        if !self.census_tasks.is_empty() {
            e.census_tasks = self.census_tasks.clone();
        }
        e.seeds = self.seeds.unwrap_or(e.seeds);
        e.epochs = self.epochs.unwrap_or(e.epochs);
        e.batch_size = self.batch_size.unwrap_or(e.batch_size);
        e.rows = self.rows.unwrap_or(e.rows);
        e.holdout_rows = self.holdout_rows.unwrap_or(e.holdout_rows);
        e.lr = self.lr.unwrap_or(e.lr);
        if self.max_grad_norm.is_some() {
            e.max_grad_norm = self.max_grad_norm;
        }
        e.threads = self.threads.unwrap_or(e.threads);
        if let Some(d) = &self.device {
            e.device = d.clone();
        }
        e.check()?;
        Ok(e)
    }
}

/// Output formats of `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// An aligned text table.
    Table,
    /// A JSON array of objects (`name`, `kind`, `summary`, `paper`, `default_config`).
    Json,
}

/// Runs the CLI on the process arguments, prints errors with their cause chain, and returns the exit code
/// (0 on success, 1 on error, 2 on bad usage, 130 when a signal interrupted `run`).
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(PROBE_COMMAND) {
        return probe_child(args.get(2).map(String::as_str).unwrap_or(""));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Some(Command::Run(args)) = &cli.command {
        if let (Some(nproc), None) = (args.nproc, std::env::var_os(balance_dist::vars::WORLD_SIZE))
        {
            let raw: Vec<OsString> = std::env::args_os().collect();
            // Bad settings are reported once, here, rather than by every worker.
            let launched =
                preflight(args, nproc).and_then(|()| distributed::launch_local(nproc, &raw));
            return match launched {
                Ok(code) => code,
                Err(err) => {
                    eprintln!("error: {err:#}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    match run(cli, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(interrupted) = err.downcast_ref::<interrupt::Interrupted>() {
                if !interrupt::is_quiet() {
                    eprintln!("{interrupted}");
                }
                return ExitCode::from(interrupt::EXIT_CODE);
            }
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The hidden first argument that turns this process into a memory probe child (see `runner`).
pub const PROBE_COMMAND: &str = "__probe-memory";

fn probe_child(json: &str) -> ExitCode {
    let result = serde_json::from_str::<runner::MemoryProbe>(json)
        .map_err(anyhow::Error::from)
        .and_then(|probe| runner::probe_memory(&probe));
    match result {
        Ok(mib) => {
            println!("{mib}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("memory probe failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses `args` (the first one is the program name) and runs the command, writing to `out`.
pub fn run_with_args<I, T>(args: I, out: &mut dyn Write) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run(Cli::try_parse_from(args)?, out)
}

/// Runs a parsed command, writing its report to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<()> {
    match cli.command {
        Some(Command::List { format }) => list(format, out),
        Some(Command::Run(args)) => compare_balancers(&args, out),
        Some(Command::FetchCensus { cache_dir }) => {
            let dir = match cache_dir {
                Some(dir) => dir,
                None => balance_harness::data::census::default_cache_dir()?,
            };
            let (train, test) = census_fetch::ensure(&dir)?;
            writeln!(out, "{}\n{}", train.display(), test.display())?;
            Ok(())
        }
        Some(Command::Compare { old, new }) => {
            let read = |p: &Path| -> Result<Report> {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                let not_a_report = || format!("{} is not a balance-bench JSON report", p.display());
                let value: serde_json::Value =
                    serde_json::from_str(&text).with_context(not_a_report)?;
                match value.get("version").and_then(serde_json::Value::as_u64) {
                    Some(v) if v != u64::from(report::REPORT_VERSION) => anyhow::bail!(
                        "{} is a version-{v} report; this balance-bench reads version {} (rerun the comparison, or compare with the binary that wrote it)",
                        p.display(),
                        report::REPORT_VERSION
                    ),
                    _ => serde_json::from_value(value).with_context(not_a_report),
                }
            };
            compare::write(&read(&old)?, &read(&new)?, out)
        }
        None => compare_balancers(&RunArgs::default(), out),
    }
}

/// How progress shows on stderr: a bar on a terminal, one line per finished run elsewhere, nothing with
/// `--quiet`.
enum Shown {
    Quiet,
    Bar(indicatif::ProgressBar),
    Lines,
}

impl Shown {
    fn new(quiet: bool) -> Self {
        if quiet {
            return Self::Quiet;
        }
        if !std::io::stderr().is_terminal() {
            return Self::Lines;
        }
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:20} {percent:>3}% ETA {eta:>4} {wide_msg}",
        ) {
            bar.set_style(style);
        }
        Self::Bar(bar)
    }

    fn clear(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

fn run_name(at: &runner::At<'_>) -> String {
    format!("{}/{}/{} seed {}", at.dataset, at.model, at.label, at.seed)
}

impl runner::Progress for Shown {
    fn start(&mut self, plan: &runner::Plan) {
        let resuming = format!(
            "resuming: {} of {} runs found in the run store",
            plan.stored_runs, plan.runs
        );
        match self {
            Self::Quiet => {}
            Self::Bar(bar) => {
                bar.set_length(plan.steps);
                bar.set_position(plan.stored_steps);
                bar.reset_eta();
                if plan.stored_runs > 0 {
                    bar.println(resuming);
                }
            }
            Self::Lines => {
                if plan.stored_runs > 0 {
                    eprintln!("{resuming}");
                }
            }
        }
    }

    fn step(&mut self, at: &runner::At<'_>) {
        if let Self::Bar(bar) = self {
            bar.inc(1);
            // Most general first: a narrow terminal cuts the end of the message.
            bar.set_message(format!(
                "run {}/{} · epoch {}/{} step {}/{} · {}",
                at.run,
                at.runs,
                at.epoch,
                at.epochs,
                at.step,
                at.steps_per_epoch,
                run_name(at)
            ));
        }
    }

    fn finished(&mut self, at: &runner::At<'_>, seconds: f64) {
        if let Self::Lines = self {
            eprintln!(
                "[{}/{}] {} done in {seconds:.1} s",
                at.run,
                at.runs,
                run_name(at)
            );
        }
    }
}

/// What `run --nproc N` checks before it starts any worker: N itself, and the experiment as N ranks would
/// see it (for example a global batch smaller than N).
fn preflight(args: &RunArgs, nproc: usize) -> Result<()> {
    if nproc == 0 {
        anyhow::bail!("invalid value for `--nproc`: 0, expected at least 1 worker");
    }
    let mut experiment = args.experiment()?;
    experiment.set_ranks(nproc)?;
    experiment.check()?;
    if let tch::Device::Cuda(_) = experiment::parse_device(&experiment.device)? {
        let gpus = tch::Cuda::device_count();
        if i64::try_from(nproc).map_or(true, |n| n > gpus) {
            anyhow::bail!(
                "invalid value for `--nproc`: {nproc} with device {:?}, expected at most the {gpus} GPUs libtorch sees (each rank takes its own, cuda:LOCAL_RANK)",
                experiment.device
            );
        }
    }
    Ok(())
}

/// `run`: trains (or, with `--out`, resumes) the comparison and writes its report. Installs the
/// process's SIGINT/SIGTERM handler ([`interrupt::install`]): a signal stops it between training chunks
/// with a partial report and an [`interrupt::Interrupted`] error.
fn compare_balancers(args: &RunArgs, out: &mut dyn Write) -> Result<()> {
    let mut experiment = args.experiment()?;
    let launched = std::env::var_os(balance_dist::vars::WORLD_SIZE).is_some();
    if let Some(n) = args.nproc.filter(|_| !launched) {
        anyhow::bail!(
            "--nproc {n}: local workers are started by the balance-bench binary (it re-runs itself); from a library call, launch the ranks yourself (torchrun's variables)"
        );
    }
    let cuda = matches!(
        experiment::parse_device(&experiment.device)?,
        tch::Device::Cuda(_)
    );
    let ranks =
        distributed::Ranks::from_env(std::time::Duration::from_secs(args.dist_timeout), cuda)?;
    if let Some(n) = args.nproc.filter(|&n| n != ranks.world()) {
        anyhow::bail!(
            "--nproc {n}, but this worker was launched as one of {} ranks",
            ranks.world()
        );
    }
    experiment.set_ranks(ranks.world())?;
    let store = match (&args.out, ranks.is_root()) {
        (Some(dir), true) => Some(store::RunStore::open(
            dir,
            &experiment,
            &experiment.resolved_balancers()?,
        )?),
        _ => None,
    };
    if !ranks.is_root() {
        interrupt::quiet();
    }
    interrupt::install()?;
    if launched {
        // A worker of a launcher that was killed outright (`--nproc`, torchrun's agent) stops like an
        // interrupted run instead of training on as an orphan; ranks started by hand are not watched.
        balance_dist::watch_launcher(std::time::Duration::from_millis(250), || {
            interrupt::request("the launcher is gone")
        })?;
    }
    let mut progress = Shown::new(args.quiet || !ranks.is_root());
    let outcome = runner::run(
        &experiment,
        store.as_ref(),
        &mut progress,
        interrupt::flag(),
        &ranks,
    );
    progress.clear();
    let (report, interrupted) = match outcome? {
        runner::Outcome::Finished(report) => (Some(report), None),
        runner::Outcome::Interrupted {
            partial,
            finished,
            total,
        } => (
            partial,
            Some(interrupt::Interrupted {
                finished,
                total,
                store: store.as_ref().map(|s| s.dir().to_path_buf()),
            }),
        ),
    };
    if let Some(report) = report.filter(|_| ranks.is_root()) {
        export::Markdown.write_to(&report, out)?;
        if let Some(dir) = &args.out {
            let written = export::write_all(&report, dir)?;
            writeln!(out, "\nwrote {} files to {}", written.len(), dir.display())?;
        }
    }
    match interrupted {
        Some(interrupted) => Err(interrupted.into()),
        None => Ok(()),
    }
}

fn list(format: ListFormat, out: &mut dyn Write) -> Result<()> {
    let registry = balance::registry().context("reading the balancer registry")?;
    match format {
        ListFormat::Table => {
            let rows: Vec<[String; 4]> = registry
                .entries()
                .iter()
                .map(|e| {
                    [
                        e.name.to_string(),
                        e.kind.to_string(),
                        e.summary.to_string(),
                        e.paper.to_string(),
                    ]
                })
                .collect();
            write_table(out, &["NAME", "KIND", "SUMMARY", "PAPER"], &rows)?;
        }
        ListFormat::Json => {
            let items: Vec<serde_json::Value> = registry
                .entries()
                .iter()
                .map(|e| {
                    let config = serde_json::to_value((e.default_config)()).with_context(|| {
                        format!("serialising the default config of `{}`", e.name)
                    })?;
                    Ok(serde_json::json!({
                        "name": e.name,
                        "kind": e.kind,
                        "summary": e.summary,
                        "paper": e.paper,
                        "default_config": config,
                    }))
                })
                .collect::<Result<_>>()?;
            serde_json::to_writer_pretty(&mut *out, &items)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// Writes rows as a left-aligned table with a header, columns separated by two spaces.
fn write_table<const N: usize>(
    out: &mut dyn Write,
    header: &[&str; N],
    rows: &[[String; N]],
) -> Result<()> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            &["A", "LONGER"],
            &[["xyz".into(), "1".into()], ["q".into(), "22".into()]],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A    LONGER\nxyz  1\nq    22\n"
        );
    }
}
