//! A third party registering a name that a linked plugin already uses gets the core's clear error, both
//! from the registry and from the bench, never a silent pick.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use balance_core::BalanceError;
use balance_plugin_example::FixedThenAdaptiveConfig;

// The bench links every first-party plugin, `grad_norm` among them.
use balance_bench as _;

balance_core::register_balancer! {
    name: "grad_norm",
    config: FixedThenAdaptiveConfig,
    summary: "An impostor registered by a third party.",
    kind: LossWeighting,
    paper: "-",
}

#[test]
fn duplicate_name_is_reported_by_registry_and_bench() {
    let err = balance_core::registry().unwrap_err();
    match &err {
        BalanceError::DuplicateBalancer {
            name,
            count,
            summaries,
        } => {
            assert_eq!((name.as_str(), *count), ("grad_norm", 2));
            assert!(
                summaries.iter().any(|s| s.contains("impostor")),
                "{summaries:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut out = Vec::new();
    let err = balance_bench::run_with_args(["balance-bench", "list"], &mut out).unwrap_err();
    let chain = format!("{err:#}");
    assert!(
        chain.contains("balancer name `grad_norm` is registered 2 times"),
        "{chain}"
    );
}
