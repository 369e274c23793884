//! The `balance-bench` binary: see the `balance_bench` library for the CLI.

fn main() -> std::process::ExitCode {
    balance_bench::main()
}
