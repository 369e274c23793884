//! A small two-layer shared network with one linear head per task, in float64, shared by the tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use balance_core::SharedParts;
use std::sync::{Mutex, MutexGuard};
use tch::{Device, Kind, Tensor};

/// libtorch's generator is process-wide and the tests of a binary run in parallel: whoever seeds it holds
/// this lock until its draws are done, so a seed always gives the same tensors.
static TORCH_RNG: Mutex<()> = Mutex::new(());

/// Seeds libtorch's generator and returns the guard that keeps other tests from drawing until dropped.
pub fn seeded(seed: i64) -> MutexGuard<'static, ()> {
    let guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    guard
}

/// Parameters named as in the PyTorch fixture: l1, l2 (shared; l2 is the last shared layer), head{t}.
pub struct Net {
    /// Named parameters, in the fixture's order.
    pub params: Vec<(String, Tensor)>,
    /// Number of tasks (heads).
    pub tasks: usize,
}

impl Net {
    /// Random parameters for `d_in -> h1 -> h2 -> tasks x 1`, from libtorch's seeded generator.
    pub fn random(seed: i64, d_in: i64, h1: i64, h2: i64, tasks: usize) -> Self {
        let _rng = seeded(seed);
        let opts = (Kind::Double, Device::Cpu);
        let mut params = vec![
            (
                "l1.weight".to_string(),
                Tensor::randn([h1, d_in], opts) * 0.5,
            ),
            ("l1.bias".to_string(), Tensor::randn([h1], opts) * 0.1),
            ("l2.weight".to_string(), Tensor::randn([h2, h1], opts) * 0.5),
            ("l2.bias".to_string(), Tensor::randn([h2], opts) * 0.1),
        ];
        for t in 0..tasks {
            params.push((
                format!("head{t}.weight"),
                Tensor::randn([1, h2], opts) * 0.5,
            ));
            params.push((format!("head{t}.bias"), Tensor::randn([1], opts) * 0.1));
        }
        Self::from_params(params, tasks)
    }

    /// Wraps given parameters (they are made leaves that require grad).
    pub fn from_params(params: Vec<(String, Tensor)>, tasks: usize) -> Self {
        let params = params
            .into_iter()
            .map(|(n, t)| (n, t.detach().copy().set_requires_grad(true)))
            .collect();
        Self { params, tasks }
    }

    /// The parameter called `name`.
    pub fn get(&self, name: &str) -> &Tensor {
        &self.params.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// Shared = l1, l2; last shared layer = l2; task-specific = heads.
    pub fn parts(&self) -> SharedParts {
        let pick = |pred: &dyn Fn(&str) -> bool| -> Vec<Tensor> {
            self.params
                .iter()
                .filter(|(n, _)| pred(n))
                .map(|(_, t)| t.shallow_clone())
                .collect()
        };
        SharedParts::new(
            pick(&|n| n.starts_with('l')),
            pick(&|n| n.starts_with("head")),
        )
        .with_last_shared_layer(pick(&|n| n.starts_with("l2.")))
    }

    /// Returns the shared representation z and one output per task.
    pub fn forward(&self, x: &Tensor) -> (Tensor, Vec<Tensor>) {
        let lin = |x: &Tensor, l: &str| {
            x.matmul(&self.get(&format!("{l}.weight")).tr()) + self.get(&format!("{l}.bias"))
        };
        let h = lin(x, "l1").tanh();
        let z = lin(&h, "l2").tanh();
        let outs = (0..self.tasks)
            .map(|t| lin(&z, &format!("head{t}")))
            .collect();
        (z, outs)
    }

    /// MSE, MSE, BCE-with-logits for tasks 0, 1, 2 (MSE for any further task).
    pub fn losses(&self, outs: &[Tensor], ys: &[Tensor]) -> Vec<Tensor> {
        outs.iter()
            .zip(ys)
            .enumerate()
            .map(|(t, (o, y))| {
                if t == 2 {
                    o.binary_cross_entropy_with_logits::<Tensor>(
                        y,
                        None,
                        None,
                        tch::Reduction::Mean,
                    )
                } else {
                    (o - y).square().mean(Kind::Double)
                }
            })
            .collect()
    }

    /// Plain SGD on every parameter, then zeroes the gradients.
    pub fn sgd_step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for (_, p) in &mut self.params {
                let g = p.grad();
                let _ = p.f_sub_(&(g * lr)).unwrap();
                p.zero_grad();
            }
        });
    }

    /// Zeroes every gradient.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }
}
