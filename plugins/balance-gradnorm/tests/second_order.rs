//! The closed-form weight gradient equals libtorch's second-order autograd gradient (create_graph=True,
//! as the reference framework computes it), on 20 random networks for each choice of `W`; and the model's
//! gradient assembled from per-task gradients equals a plain weighted backward.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use balance_core::{Balancer, BalancerConfig, SharedTarget};
use balance_gradnorm::{GradNormConfig, GradNormRule};
use common::Net;
use tch::{Device, Kind, Tensor};

const TASKS: usize = 3;

fn batch(seed: i64) -> (Tensor, Vec<Tensor>) {
    let _rng = common::seeded(1000 + seed);
    let opts = (Kind::Double, Device::Cpu);
    let x = Tensor::randn([12, 5], opts);
    let y0 = Tensor::randn([12, 1], opts);
    let y1 = Tensor::randn([12, 1], opts) * 10.0;
    let y2 = Tensor::randn([12, 1], opts).gt(0.0).to_kind(Kind::Double);
    (x, vec![y0, y1, y2])
}

/// `d L_grad / d w` by double backward: G_i = sqrt(||grad_W (w_i L_i)||^2 + eps) with create_graph.
fn second_order_weight_grad(
    losses: &[Tensor],
    w: &[f64],
    targets: &[f64],
    wrt: &[&Tensor],
    eps: f64,
) -> Vec<f64> {
    let w = Tensor::from_slice(w).set_requires_grad(true);
    let mut l_grad = Tensor::zeros([], (Kind::Double, Device::Cpu));
    for (i, loss) in losses.iter().enumerate() {
        let weighted = w.get(i as i64) * loss;
        let grads = Tensor::run_backward(&[&weighted], wrt, true, true);
        let sum_sq = grads
            .iter()
            .map(|g| g.square().sum(Kind::Double))
            .fold(Tensor::zeros([], (Kind::Double, Device::Cpu)), |a, b| a + b);
        let g_i = (sum_sq + eps).sqrt();
        l_grad += (g_i - targets[i]).abs();
    }
    let dw = Tensor::run_backward(&[&l_grad], &[&w], true, false);
    Vec::<f64>::try_from(&dw[0]).unwrap()
}

#[test]
fn closed_form_equals_second_order_autograd_on_20_random_networks() {
    for target in SharedTarget::ALL {
        let mut worst = 0.0f64;
        for seed in 0..20 {
            let net = Net::random(seed, 5, 7, 4, TASKS);
            let (x, ys) = batch(seed);
            let (z, outs) = net.forward(&x);
            let losses = net.losses(&outs, &ys);
            let parts = net.parts();
            let wrt: Vec<&Tensor> = match target {
                SharedTarget::AllShared => parts.shared().iter().collect(),
                SharedTarget::LastSharedLayer => parts.last_shared_layer().iter().collect(),
                SharedTarget::Representation => vec![&z],
            };
            // First order: n_i = ||grad_W L_i||, then the rule's closed form.
            let norms: Vec<f64> = losses
                .iter()
                .map(|l| {
                    let g = balance_core::grad::gradients(l, &wrt, true).unwrap();
                    balance_core::grad::global_norm(g.iter().map(Some)).unwrap()
                })
                .collect();
            let init: Vec<f64> = {
                let _rng = common::seeded(seed);
                Vec::<f64>::try_from(Tensor::rand([3], (Kind::Double, Device::Cpu)) * 1.5 + 0.25)
                    .unwrap()
            };
            let config = GradNormConfig {
                init_weights: Some(init.clone()),
                alpha: 0.5 + seed as f64 * 0.1,
                ..Default::default()
            };
            let mut rule = GradNormRule::new(config.check(TASKS).unwrap());
            let values: Vec<f64> = losses.iter().map(|l| l.double_value(&[])).collect();
            // Perturb the base so ratios differ from 1 and targets are not all equal.
            rule.step(&values.iter().map(|v| v * 1.3).collect::<Vec<_>>(), &norms);
            let mut fresh = GradNormRule::new(config.check(TASKS).unwrap());
            let mut state = rule.state().clone();
            state.weights = init.clone();
            assert!(fresh.set_state(state));
            let update = fresh.step(&values, &norms);

            let reference = second_order_weight_grad(&losses, &init, &update.targets, &wrt, 1e-8);
            for (a, b) in update.weight_grads.iter().zip(&reference) {
                let rel = (a - b).abs() / b.abs().max(1e-12);
                worst = worst.max(rel);
                assert!(
                    rel < 1e-10,
                    "{target:?} seed {seed}: closed form {a} vs second order {b}"
                );
            }
        }
        eprintln!("{}: worst relative difference {worst:.2e}", target.as_str());
    }
}

#[test]
fn model_gradient_is_the_weighted_sum_for_every_target() {
    for target in SharedTarget::ALL {
        let mut net = Net::random(7, 5, 7, 4, TASKS);
        let (x, ys) = batch(7);
        let config = GradNormConfig {
            shared: target,
            init_weights: Some(vec![0.5, 1.0, 1.5]),
            ..Default::default()
        };
        let mut balancer = Balancer::new(config.build(TASKS).unwrap(), &["a", "b", "c"]).unwrap();
        let parts = net.parts();

        // Two steps: the first writes `.grad` through a backward, the second adds in place.
        let mut applied = Vec::new();
        for _ in 0..2 {
            net.zero_grad();
            let (z, outs) = net.forward(&x);
            let losses = net.losses(&outs, &ys);
            applied = balancer
                .backward(&losses, &parts, Some(&z))
                .unwrap()
                .weights;
        }
        let got: Vec<Tensor> = net.params.iter().map(|(_, p)| p.grad().copy()).collect();
        net.zero_grad();

        let (_, outs) = net.forward(&x);
        let losses = net.losses(&outs, &ys);
        let total = &losses[0] * applied[0] + &losses[1] * applied[1] + &losses[2] * applied[2];
        total.backward();
        for ((name, p), g) in net.params.iter().zip(&got) {
            let diff = (p.grad() - g).abs().max().double_value(&[]);
            assert!(diff < 1e-12, "{target:?} {name}: max difference {diff}");
        }
    }
}

#[test]
fn representation_target_without_representation_is_a_clear_error() {
    let net = Net::random(1, 5, 7, 4, TASKS);
    let (x, ys) = batch(1);
    let config = GradNormConfig {
        shared: SharedTarget::Representation,
        ..Default::default()
    };
    let mut balancer = Balancer::new(config.build(TASKS).unwrap(), &["a", "b", "c"]).unwrap();
    let (_, outs) = net.forward(&x);
    let losses = net.losses(&outs, &ys);
    let err = balancer.backward(&losses, &net.parts(), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "balancer `grad_norm` needs the model's shared representation, which the model did not provide"
    );
    assert_eq!(balancer.weights(), vec![1.0; 3]);
}
