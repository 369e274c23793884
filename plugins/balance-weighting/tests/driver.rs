//! Every method of the crate, built by name from the registry, drives real backward passes through the
//! `Balancer` driver: the parameter's gradient is the reported weights' combination of the task gradients,
//! the hooks (end of epoch, updated losses) run, and a checkpoint restores the same future weights.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use balance_core::{registry, Balancer, BalancerKind, BalancerSpec, SharedParts};
use tch::{Kind, Tensor};

/// Names the crate so that it is linked and its registrations are collected.
fn link_plugins() {
    let _ = balance_weighting::scaled_softmax(&[0.0], 1.0);
}

const METHODS: [&str; 5] = ["uncertainty", "dwa", "rlw", "gls", "famo"];

/// Task `i`'s loss on parameter `p`: `(sum_j a_ij p_j - y_i)^2 + 0.1`, `a` and `y` varying with the step.
fn losses(p: &Tensor, step: usize) -> (Vec<Tensor>, Vec<Vec<f64>>) {
    let mut out = Vec::new();
    let mut grads = Vec::new();
    let pv = Vec::<f64>::try_from(p.detach()).unwrap();
    for i in 0..3 {
        let a: Vec<f64> = (0..2)
            .map(|j| 0.3 + ((i * 7 + j * 3 + step) % 5) as f64 * 0.4)
            .collect();
        let y = 1.0 + i as f64;
        let at = Tensor::from_slice(&a);
        let r = (&at * p).sum(Kind::Double) - y;
        out.push(&r * &r + 0.1);
        let rv = a[0] * pv[0] + a[1] * pv[1] - y;
        grads.push(a.iter().map(|a| 2.0 * rv * a).collect());
    }
    (out, grads)
}

fn run(
    balancer: &mut Balancer,
    p: &mut Tensor,
    parts: &SharedParts,
    steps: std::ops::Range<usize>,
) -> Vec<Vec<f64>> {
    let mut applied = Vec::new();
    for step in steps {
        p.zero_grad();
        let (ls, grads) = losses(p, step);
        let report = balancer.backward(&ls, parts, None).unwrap();
        let g = Vec::<f64>::try_from(p.grad()).unwrap();
        for j in 0..2 {
            let want: f64 = (0..3).map(|i| report.weights[i] * grads[i][j]).sum();
            assert!(
                (g[j] - want).abs() <= 1e-10 * want.abs().max(1.0),
                "{}: {g:?} vs {want}",
                balancer.name()
            );
        }
        assert!(report.weights.iter().all(|w| w.is_finite() && *w > 0.0));
        tch::no_grad(|| {
            let update = p.grad() * 0.01;
            let _ = p.g_sub_(&update);
        });
        if balancer.needs_updated_losses() {
            let (after, _) = tch::no_grad(|| losses(p, step));
            balancer.observe_updated_losses(&after).unwrap();
        }
        if step % 4 == 3 {
            balancer.end_epoch().unwrap();
        }
        applied.push(report.weights);
    }
    applied
}

#[test]
fn every_method_is_registered_as_loss_weighting() {
    link_plugins();
    let reg = registry().unwrap();
    for name in METHODS {
        let entry = reg.get(name).unwrap();
        assert_eq!(entry.kind, BalancerKind::LossWeighting, "{name}");
        assert_eq!((entry.default_config)().method(), name);
    }
}

#[test]
fn every_method_drives_backward_and_resumes_from_a_checkpoint() {
    link_plugins();
    for name in METHODS {
        let spec: BalancerSpec = name.parse().unwrap();
        let mut p = Tensor::from_slice(&[0.5f64, -0.25]).set_requires_grad(true);
        let parts = SharedParts::new(vec![p.shallow_clone()], vec![]);
        let mut balancer = Balancer::from_spec(&spec, &["a", "b", "c"]).unwrap();
        assert_eq!(balancer.needs_updated_losses(), name == "famo");
        run(&mut balancer, &mut p, &parts, 0..10);
        let json = serde_json::to_string(&balancer.checkpoint().unwrap()).unwrap();
        let p_saved = p.detach().copy();

        let later = run(&mut balancer, &mut p, &parts, 10..20);
        let weights_after = balancer.weights();

        let mut q = p_saved.set_requires_grad(true);
        let parts_q = SharedParts::new(vec![q.shallow_clone()], vec![]);
        let mut restored = Balancer::from_spec(&spec, &["a", "b", "c"]).unwrap();
        restored
            .restore(&serde_json::from_str(&json).unwrap())
            .unwrap();
        let again = run(&mut restored, &mut q, &parts_q, 10..20);
        assert_eq!(later, again, "{name}");
        assert_eq!(weights_after, restored.weights(), "{name}");
        if name == "dwa" {
            // Five epochs closed: the weights moved away from 1 and sum to T.
            assert!(later.last().unwrap().iter().any(|w| (w - 1.0).abs() > 1e-6));
        }
    }
}
