//! The plugin replays the PyTorch reference trajectories of fixtures/gradnorm_reference.json, produced by
//! fixtures/make_gradnorm_fixture.py (GradNorm as the reference recommender framework runs it:
//! create_graph=True and a second-order backward, torch 2.11.0, float64): same network, batches and SGD, every step's weights compared.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use balance_core::{Balancer, BalancerConfig};
use balance_gradnorm::GradNormConfig;
use common::Net;
use serde_json::Value;
use tch::{Kind, Tensor};

fn tensor(values: &Value, shape: &[i64]) -> Tensor {
    let v: Vec<f64> = serde_json::from_value(values.clone()).unwrap();
    Tensor::from_slice(&v).reshape(shape)
}

fn fixture() -> Value {
    let text = include_str!("fixtures/gradnorm_reference.json");
    serde_json::from_str(text).unwrap()
}

fn config_of(run: &Value) -> GradNormConfig {
    let mut cfg = run["config"].clone();
    let obj = cfg.as_object_mut().unwrap();
    obj.remove("name");
    obj.retain(|_, v| !v.is_null());
    serde_json::from_value(cfg).unwrap()
}

#[test]
fn weight_trajectories_match_pytorch_second_order_reference() {
    let fx = fixture();
    let tasks = fx["tasks"].as_u64().unwrap() as usize;
    let batch = fx["batch"].as_i64().unwrap();
    let d_in = fx["d_in"].as_i64().unwrap();
    let model_lr = fx["model_lr"].as_f64().unwrap();
    let names: Vec<String> = (0..tasks).map(|t| format!("task{t}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();

    for run in fx["runs"].as_array().unwrap() {
        let run_name = run["config"]["name"].as_str().unwrap();
        let params = fx["params"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(n, p)| {
                let shape: Vec<i64> = serde_json::from_value(p["shape"].clone()).unwrap();
                (n.clone(), tensor(&p["values"], &shape))
            })
            .collect();
        let mut net = Net::from_params(params, tasks);
        let parts = net.parts();
        let config = config_of(run);
        let mut balancer = Balancer::new(config.build(tasks).unwrap(), &name_refs).unwrap();

        let expected = run["applied_weights"].as_array().unwrap();
        let mut worst = 0.0f64;
        for (step, b) in fx["batches"].as_array().unwrap().iter().enumerate() {
            let x = tensor(&b["x"], &[batch, d_in]);
            let ys: Vec<Tensor> = (0..tasks)
                .map(|t| tensor(&b["y"][t], &[batch, 1]))
                .collect();
            let (z, outs) = net.forward(&x);
            let losses = net.losses(&outs, &ys);
            let report = balancer.backward(&losses, &parts, Some(&z)).unwrap();
            net.sgd_step(model_lr);

            let want: Vec<f64> = serde_json::from_value(expected[step].clone()).unwrap();
            let want_losses: Vec<f64> =
                serde_json::from_value(run["losses"][step].clone()).unwrap();
            let want_g: Vec<f64> = serde_json::from_value(run["grad_norms"][step].clone()).unwrap();
            for t in 0..tasks {
                let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-6);
                worst = worst.max(rel(report.weights[t], want[t]));
                assert!(
                    rel(report.losses[t], want_losses[t]) < 1e-9,
                    "{run_name} step {step} loss {t}"
                );
                assert!(
                    rel(report.extras["grad_norm"][t], want_g[t]) < 1e-9,
                    "{run_name} step {step} G {t}"
                );
                assert!(
                    rel(report.weights[t], want[t]) < 1e-9,
                    "{run_name} step {step} task {t}: {} vs PyTorch {}",
                    report.weights[t],
                    want[t]
                );
            }
        }
        let want_final: Vec<f64> = serde_json::from_value(run["final_weights"].clone()).unwrap();
        for (got, want) in balancer.weights().iter().zip(&want_final) {
            // Absolute for weights at the eps floor, relative otherwise.
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1e-6),
                "{run_name} final {got} vs {want}"
            );
        }
        eprintln!("{run_name}: worst relative weight difference {worst:.2e}");
        let _ = Kind::Double;
    }
}
