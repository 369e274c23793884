//! `balance-bench`, with this crate's balancer linked in.
use balance_plugin_example as _;
fn main() -> std::process::ExitCode {
    balance_bench::main()
}
