//! The `famo` plugin replays the reference trajectories of fixtures/famo_reference.json, produced by
//! fixtures/make_famo_fixture.py (the authors' FAMO class, torch 2.11.0, float64): same losses and updated
//! losses, every step's weights (T times the reference's gradient of the weighted loss with respect to each
//! loss) and logits compared, through the `Balancer` driver with leaf loss tensors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use balance_core::{Balancer, BalancerConfig, SharedParts};
use balance_weighting::FamoConfig;
use serde_json::Value;
use tch::Tensor;

fn floats(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn weights_and_logits_match_the_reference_implementation() {
    let fx: Value = serde_json::from_str(include_str!("fixtures/famo_reference.json")).unwrap();
    let tasks = fx["tasks"].as_u64().unwrap() as usize;
    let parts = SharedParts::new(vec![], vec![]);
    let names: Vec<String> = (0..tasks).map(|t| format!("task{t}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let runs = fx["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        let cfg = &run["config"];
        let config = FamoConfig {
            gamma: cfg["gamma"].as_f64(),
            w_lr: cfg["w_lr"].as_f64(),
            min_losses: (!cfg["min_losses"].is_null()).then(|| floats(&cfg["min_losses"])),
        };
        let mut balancer = Balancer::new(config.build(tasks).unwrap(), &name_refs).unwrap();
        assert!(balancer.needs_updated_losses());
        let steps = run["losses"].as_array().unwrap();
        assert_eq!(steps.len(), 20);
        let mut worst = 0.0f64;
        for (step, losses) in steps.iter().enumerate() {
            let losses = floats(losses);
            let updated = floats(&run["updated_losses"][step]);
            let want = floats(&run["weights"][step]);
            let want_logits = floats(&run["logits"][step]);

            let leaves: Vec<Tensor> = losses
                .iter()
                .map(|&l| Tensor::from(l).set_requires_grad(true))
                .collect();
            let report = balancer.backward(&leaves, &parts, None).unwrap();
            for t in 0..tasks {
                let w = report.weights[t];
                worst = worst.max(rel(w, tasks as f64 * want[t]));
                // The loss tensors received exactly the reported weights as gradients.
                assert_eq!(
                    leaves[t].grad().double_value(&[]),
                    w,
                    "step {step} task {t}"
                );
                let logit = report.extras["logit"][t];
                assert!(
                    (logit - want_logits[t]).abs() <= 1e-12 * want_logits[t].abs().max(1e-3),
                    "step {step} logit {t}: {logit} vs {}",
                    want_logits[t]
                );
            }
            assert!((report.weights.iter().sum::<f64>() - tasks as f64).abs() < 1e-12);
            let updated_t: Vec<Tensor> = updated.iter().map(|&l| Tensor::from(l)).collect();
            balancer.observe_updated_losses(&updated_t).unwrap();
        }
        let state = balancer.checkpoint().unwrap().state;
        let logits = floats(&state.data["logits"]);
        for (a, b) in logits.iter().zip(floats(&run["final_logits"])) {
            assert!(
                (a - b).abs() <= 1e-12 * b.abs().max(1e-3),
                "final logits {a} vs {b}"
            );
        }
        assert!(
            worst < 1e-12,
            "{}: worst relative error {worst}",
            cfg["name"]
        );
    }
}

#[test]
fn a_loss_below_min_loss_fails_the_step_and_keeps_the_state() {
    let config = FamoConfig {
        min_losses: Some(vec![0.5, 0.0]),
        ..FamoConfig::default()
    };
    let mut balancer = Balancer::new(config.build(2).unwrap(), &["a", "b"]).unwrap();
    let parts = SharedParts::new(vec![], vec![]);
    let before = balancer.checkpoint().unwrap();
    let leaves = [Tensor::from(0.25f64), Tensor::from(1.0f64)];
    let err = balancer.backward(&leaves, &parts, None).unwrap_err();
    assert!(err.to_string().contains("min_losses[0]"), "{err}");
    assert_eq!(balancer.checkpoint().unwrap(), before);
}
