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

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

/// Compare multi-task loss balancers side by side.
#[derive(Debug, Parser)]
#[command(name = "balance-bench", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
/// (0 on success, 1 on error, 2 on bad usage).
pub fn main() -> ExitCode {
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
    match run(cli, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
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
        Command::List { format } => list(format, out),
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
