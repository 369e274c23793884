#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The six balancers on a tiny tch model (a shared tanh layer, one linear head per task, float64): one
//! step through `balance_core::Balancer` writes exactly `sum_i alpha_i g_i` into the shared parameters
//! (checked against per-task gradients taken independently with autograd), the coefficients are those of
//! the pure rules on the independently computed Gram matrix, degenerate cases stay finite, and the state
//! does not grow with the number of steps.

use balance_core::rng::SplitMix64;
use balance_core::{Balancer, BalancerSpec, SharedParts, StepReport};
use balance_gradient::linalg::SimplexSolver;
use balance_gradient::math::{self, mgda::Normalization};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

const OPTS: (Kind, Device) = (Kind::Double, Device::Cpu);

/// libtorch's generator is process-wide and the tests of this binary run in parallel: whoever seeds it
/// holds this lock until its draws are done, so a seed always gives the same tensors.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn seeded(seed: i64) -> std::sync::MutexGuard<'static, ()> {
    let guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    guard
}

struct Model {
    w: Tensor,
    b: Tensor,
    heads: Vec<Tensor>,
}

impl Model {
    fn new(seed: i64, tasks: usize) -> Self {
        let _rng = seeded(seed);
        Self {
            w: (Tensor::randn([4, 6], OPTS) * 0.7).set_requires_grad(true),
            b: (Tensor::randn([6], OPTS) * 0.1).set_requires_grad(true),
            heads: (0..tasks)
                .map(|_| Tensor::randn([6, 1], OPTS).set_requires_grad(true))
                .collect(),
        }
    }

    fn parts(&self) -> SharedParts {
        SharedParts::new(
            vec![self.w.shallow_clone(), self.b.shallow_clone()],
            self.heads.iter().map(Tensor::shallow_clone).collect(),
        )
    }

    fn shared(&self) -> Vec<&Tensor> {
        vec![&self.w, &self.b]
    }

    fn zero_grad(&self) {
        for p in self.shared().into_iter().chain(&self.heads) {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// The representation and per-task losses; `twins` makes task 1 a copy of task 0, `dead` makes the
    /// last task's loss independent of the parameters (zero gradient).
    fn forward(&self, step: i64, twins: bool, dead: bool) -> (Tensor, Vec<Tensor>) {
        let _rng = seeded(1000 + step);
        let x = Tensor::randn([16, 4], OPTS);
        let z = (x.matmul(&self.w) + &self.b).tanh();
        let t = self.heads.len();
        let ys: Vec<Tensor> = (0..t).map(|_| Tensor::randn([16, 1], OPTS)).collect();
        let losses = (0..t)
            .map(|i| {
                let k = if twins && i == 1 { 0 } else { i };
                let (head, y) = (&self.heads[k], &ys[k]);
                let loss = (z.matmul(head) - y).square().mean(Kind::Double);
                if dead && i + 1 == t {
                    loss.detach() + self.heads[i].sum(Kind::Double) * 0.0
                } else {
                    loss
                }
            })
            .collect();
        (z, losses)
    }
}

fn flat(tensors: &[Tensor]) -> Vec<f64> {
    tensors
        .iter()
        .flat_map(|t| Vec::<f64>::try_from(t.reshape([-1])).unwrap())
        .collect()
}

fn grads_of(loss: &Tensor, inputs: &[&Tensor]) -> Vec<Tensor> {
    Tensor::run_backward(&[loss], inputs, true, false)
}

fn spec(value: Value) -> BalancerSpec {
    serde_json::from_value(value).unwrap()
}

const METHODS: [&str; 6] = ["pcgrad", "mgda", "imtl", "cagrad", "nashmtl", "aligned_mtl"];

/// The coefficients the pure rule gives on `gram` for the method's default config.
fn expected_alpha(method: &str, gram: &[Vec<f64>], losses: &[f64]) -> Vec<f64> {
    let t = gram.len();
    let clamp = |raw: Vec<f64>| balance_gradient::methods::clamp_non_negative(&raw).0;
    match method {
        "pcgrad" => {
            let mut rng = SplitMix64::new(0);
            let orders: Vec<Vec<usize>> = (0..t).map(|_| rng.permutation(t)).collect();
            math::pcgrad::pcgrad(gram, &orders)
        }
        "mgda" => math::mgda::mgda(gram, losses, Normalization::None).0,
        "imtl" => clamp(math::imtl::imtl(gram).0),
        "cagrad" => math::cagrad::cagrad(gram, 0.4, 1, SimplexSolver::default()).alpha,
        "nashmtl" => math::nash::nash(gram, &[], 1e-8, 100, 1e-10).alpha,
        "aligned_mtl" => clamp(math::aligned::aligned(gram, math::aligned::ScaleMode::Min).alpha),
        other => panic!("{other}"),
    }
}

fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    let scale = b.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * scale)
}

#[test]
fn one_step_writes_the_combination_of_independent_task_gradients() {
    let tasks = 3;
    for method in METHODS {
        for target in ["all_shared", "representation"] {
            for task_specific in ["unweighted", "weighted"] {
                let model = Model::new(7, tasks);
                let parts = model.parts();
                let (z, losses) = model.forward(0, false, false);
                // Independent per-task gradients: of the shared parameters, of the target, of the heads.
                let shared = model.shared();
                let per_task: Vec<Vec<f64>> =
                    losses.iter().map(|l| flat(&grads_of(l, &shared))).collect();
                let target_grads: Vec<Vec<f64>> = match target {
                    "representation" => losses.iter().map(|l| flat(&grads_of(l, &[&z]))).collect(),
                    _ => per_task.clone(),
                };
                let head_grads: Vec<Vec<f64>> = losses
                    .iter()
                    .zip(&model.heads)
                    .map(|(l, h)| flat(&grads_of(l, &[h])))
                    .collect();
                let loss_values: Vec<f64> = losses.iter().map(|l| l.double_value(&[])).collect();

                let config =
                    json!({"method": method, "target": target, "task_specific": task_specific});
                let mut balancer = Balancer::from_spec(&spec(config), &["a", "b", "c"]).unwrap();
                let report: StepReport = balancer.backward(&losses, &parts, Some(&z)).unwrap();
                let alpha = report.weights.clone();
                let label = format!("{method} {target} {task_specific}");
                assert!(
                    alpha.iter().all(|a| a.is_finite() && *a >= 0.0),
                    "{label}: {alpha:?}"
                );

                let want_alpha =
                    expected_alpha(method, &math::gram_of(&target_grads), &loss_values);
                assert!(
                    close(&alpha, &want_alpha, 1e-7),
                    "{label}: {alpha:?} vs {want_alpha:?}"
                );

                let got = flat(&[model.w.grad(), model.b.grad()]);
                let want = math::combine(&per_task, &alpha);
                assert!(got.iter().all(|v| v.is_finite()), "{label}");
                assert!(
                    close(&got, &want, 1e-10),
                    "{label}: shared gradient differs"
                );
                for (i, head) in model.heads.iter().enumerate() {
                    let factor = if task_specific == "weighted" {
                        alpha[i]
                    } else {
                        1.0
                    };
                    let want: Vec<f64> = head_grads[i].iter().map(|g| g * factor).collect();
                    assert!(
                        close(&flat(&[head.grad()]), &want, 1e-12),
                        "{label}: head {i}"
                    );
                }
                for key in ["grad_norm", "cos"] {
                    assert_eq!(report.extras[key].len(), tasks, "{label}: {key}");
                }
            }
        }
    }
}

#[test]
fn last_shared_layer_is_rejected_with_a_clear_error() {
    for method in METHODS {
        let config = json!({"method": method, "target": "last_shared_layer"});
        let err = spec(config).build(2).unwrap_err().to_string();
        assert!(
            err.contains(&format!("`{method}`")) && err.contains("`target` = last_shared_layer"),
            "{err}"
        );
    }
}

#[test]
fn unknown_fields_and_bad_options_are_rejected() {
    assert!(serde_json::from_value::<BalancerSpec>(json!({"method": "mgda", "nope": 1})).is_err());
    let err = spec(json!({"method": "cagrad", "rescale": 3}))
        .build(2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`rescale` = 3"), "{err}");
    let err = spec(json!({"method": "nashmtl", "update_every": 0}))
        .build(2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`update_every` = 0"), "{err}");
    let err = spec(json!({"method": "cagrad", "c": -1.0}))
        .build(2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`c` = -1"), "{err}");
    // Every option as documented parses (JSON and TOML).
    for value in [
        json!({"method": "pcgrad", "seed": 3}),
        json!({"method": "mgda", "normalization": "loss+"}),
        json!({"method": "imtl", "task_specific": "weighted"}),
        json!({"method": "cagrad", "c": 0.5, "rescale": 2, "max_iter": 100}),
        json!({"method": "nashmtl", "update_every": 5, "max_iter": 20, "ridge": 1e-6}),
        json!({"method": "aligned_mtl", "scale_mode": "rmse", "target": "representation"}),
    ] {
        spec(value).build(3).unwrap();
    }
    let toml_spec: BalancerSpec =
        toml::from_str("method = \"aligned_mtl\"\nscale_mode = \"median\"\n").unwrap();
    assert_eq!(toml_spec.method(), "aligned_mtl");
}

#[test]
fn degenerate_steps_give_finite_non_negative_weights() {
    for method in METHODS {
        for (twins, dead) in [(true, false), (false, true), (true, true)] {
            let model = Model::new(3, 3);
            let parts = model.parts();
            let (z, losses) = model.forward(0, twins, dead);
            let mut balancer =
                Balancer::from_spec(&spec(json!({"method": method})), &["a", "b", "c"]).unwrap();
            let report = balancer.backward(&losses, &parts, Some(&z)).unwrap();
            assert!(
                report.weights.iter().all(|w| w.is_finite() && *w >= 0.0),
                "{method} twins={twins} dead={dead}: {:?}",
                report.weights
            );
            let g = flat(&[model.w.grad(), model.b.grad()]);
            assert!(g.iter().all(|v| v.is_finite()), "{method}");
        }
        // A single task.
        let model = Model::new(3, 1);
        let (z, losses) = model.forward(0, false, false);
        let mut balancer = Balancer::from_spec(&spec(json!({"method": method})), &["a"]).unwrap();
        let report = balancer
            .backward(&losses, &model.parts(), Some(&z))
            .unwrap();
        assert!(
            report.weights[0].is_finite() && report.weights[0] >= 0.0,
            "{method} T=1"
        );
    }
}

fn leaves(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.iter().map(leaves).sum(),
        Value::Object(o) => o.values().map(leaves).sum(),
        _ => 1,
    }
}

#[test]
fn state_does_not_grow_and_checkpoints_resume_exactly() {
    for method in METHODS {
        let config = json!({"method": method, "update_every": 1});
        let config = if method == "nashmtl" {
            config
        } else {
            json!({"method": method})
        };
        let model = Model::new(11, 3);
        let parts = model.parts();
        let mut balancer = Balancer::from_spec(&spec(config.clone()), &["a", "b", "c"]).unwrap();
        let mut sizes = Vec::new();
        let mut checkpoint = None;
        let mut resumed_weights = None;
        for step in 0..100 {
            model.zero_grad();
            let (z, losses) = model.forward(step, false, false);
            let report = balancer.backward(&losses, &parts, Some(&z)).unwrap();
            sizes.push(leaves(
                &serde_json::to_value(balancer.checkpoint().unwrap().state).unwrap(),
            ));
            if step == 49 {
                checkpoint = Some(balancer.checkpoint().unwrap());
            }
            if step == 50 {
                resumed_weights = Some(report.weights.clone());
            }
        }
        assert!(
            sizes.iter().all(|&s| s == sizes[0]),
            "{method}: state sizes {sizes:?}"
        );
        // Resume at step 50 in a fresh balancer: same weights.
        let mut fresh = Balancer::from_spec(&spec(config), &["a", "b", "c"]).unwrap();
        fresh.restore(&checkpoint.unwrap()).unwrap();
        model.zero_grad();
        let (z, losses) = model.forward(50, false, false);
        let report = fresh.backward(&losses, &parts, Some(&z)).unwrap();
        assert_eq!(
            Some(report.weights),
            resumed_weights,
            "{method}: resumed weights"
        );
    }
}

#[test]
fn nash_reuses_cached_weights_between_updates() {
    let model = Model::new(5, 2);
    let parts = model.parts();
    let config = json!({"method": "nashmtl", "update_every": 3});
    let mut balancer = Balancer::from_spec(&spec(config), &["a", "b"]).unwrap();
    let mut last = Vec::new();
    for step in 0..6 {
        model.zero_grad();
        let (z, losses) = model.forward(step, false, false);
        let g0 = flat(&grads_of(&losses[0], &[&model.heads[0]]));
        let report = balancer.backward(&losses, &parts, Some(&z)).unwrap();
        let updated = report.extras["updated"][0];
        assert_eq!(
            updated,
            if step % 3 == 0 { 1.0 } else { 0.0 },
            "step {step}"
        );
        if updated == 0.0 {
            assert_eq!(report.weights, last, "step {step}: cached weights");
            // One backward of the weighted sum: the heads get alpha-weighted gradients.
            let want: Vec<f64> = g0.iter().map(|g| g * last[0]).collect();
            assert!(close(&flat(&[model.heads[0].grad()]), &want, 1e-12));
        }
        last = report.weights.clone();
    }
}

#[test]
fn every_config_example_in_the_docs_builds() {
    #[derive(serde::Deserialize)]
    struct File {
        balancer: BalancerSpec,
    }
    let doc = include_str!("../../../docs/methods-gradient.md");
    let mut count = 0;
    for line in doc.lines() {
        if line.starts_with("{\"method\"") {
            spec(serde_json::from_str(line).unwrap()).build(3).unwrap();
            count += 1;
        } else if line.starts_with("balancer = ") {
            let file: File = toml::from_str(line).unwrap();
            file.balancer.build(3).unwrap();
            count += 1;
        }
    }
    assert_eq!(count, 12);
}
