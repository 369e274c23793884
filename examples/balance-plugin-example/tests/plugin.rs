//! The example plugin works in the bench exactly like a first-party one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use balance_core::{Balancer, BalancerCheckpoint, BalancerSpec, SharedParts};
use tch::{Kind, Tensor};

// Link the plugin so its registration is present (a crate nothing references is not linked).
use balance_plugin_example as _;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_balance-plugin-example"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn listed_next_to_the_first_party_balancers() {
    let out = bench(&["list"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in ["fixed_then_adaptive", "grad_norm", "loss_norm", "static"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{stdout}"
        );
    }
}

#[test]
fn runs_in_a_tiny_comparison() {
    let out = bench(&[
        "run",
        "--balancer",
        r#"{"method": "fixed_then_adaptive", "switch_step": 3}"#,
        "--model",
        "mmoe",
        "--rows",
        "1200",
        "--holdout-rows",
        "5000",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "256",
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| cascade | mmoe | fixed_then_adaptive(switch_step=3) | high_value | 0."),
        "{stdout}"
    );
}

#[test]
fn config_and_state_round_trip() {
    let spec: BalancerSpec =
        r#"{"method": "fixed_then_adaptive", "switch_step": 2, "initial_weights": [1.0, 3.0]}"#
            .parse()
            .unwrap();
    let back: BalancerSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(back, spec);

    let p = Tensor::ones([2], (Kind::Double, tch::Device::Cpu)).set_requires_grad(true);
    let parts = SharedParts::new(vec![p.shallow_clone()], vec![]);
    let losses = |v: [f64; 2]| vec![p.get(0) * v[0], p.get(1) * v[1]];
    let mut a = Balancer::from_spec(&spec, &["x", "y"]).unwrap();
    assert_eq!(
        a.backward(&losses([2.0, 4.0]), &parts, None)
            .unwrap()
            .weights,
        vec![1.0, 3.0]
    );
    let json = serde_json::to_string(&a.checkpoint().unwrap()).unwrap();
    let mut b = Balancer::from_spec(&spec, &["x", "y"]).unwrap();
    b.restore(&serde_json::from_str::<BalancerCheckpoint>(&json).unwrap())
        .unwrap();
    for bal in [&mut a, &mut b] {
        assert_eq!(
            bal.backward(&losses([6.0, 8.0]), &parts, None)
                .unwrap()
                .weights,
            vec![1.0, 3.0]
        );
        // After the switch: 1 / mean of the two warm-up losses.
        assert_eq!(
            bal.backward(&losses([1.0, 1.0]), &parts, None)
                .unwrap()
                .weights,
            vec![0.25, 1.0 / 6.0]
        );
    }
}
