//! The `Balancer` driver with real tensors, over every registered balancer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use balance::{
    registry, BalanceError, Balancer, BalancerCheckpoint, BalancerSpec, NonFinitePolicy,
    SharedParts,
};
use proptest::prelude::*;
use tch::{Kind, Tensor};

/// A tiny "model": one parameter per task, `loss_i = p_i * v_i` with `p_i = 1`, so the loss value is
/// `v_i` and the gradient `d/dp_i` of the weighted sum is exactly `w_i * v_i`.
struct Toy {
    p: Tensor,
    parts: SharedParts,
}

impl Toy {
    fn new(tasks: usize) -> Self {
        let p =
            Tensor::ones([tasks as i64], (Kind::Double, tch::Device::Cpu)).set_requires_grad(true);
        let parts = SharedParts::new(vec![p.shallow_clone()], vec![])
            .with_last_shared_layer(vec![p.shallow_clone()]);
        Self { p, parts }
    }

    fn losses(&self, values: &[f64]) -> Vec<Tensor> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| self.p.get(i as i64) * v)
            .collect()
    }

    fn step(
        &mut self,
        balancer: &mut Balancer,
        values: &[f64],
    ) -> balance::Result<balance::StepReport> {
        self.p.zero_grad();
        let losses = self.losses(values);
        let report = balancer.backward(&losses, &self.parts, None)?;
        // Exercise the hooks as the trainer does: the updated losses after a step (a little lower), and an
        // epoch boundary every third step.
        if balancer.needs_updated_losses() && !report.skipped {
            let lower: Vec<f64> = values.iter().map(|v| v * 0.9).collect();
            balancer.observe_updated_losses(&self.losses(&lower))?;
        }
        if balancer.step() % 3 == 0 {
            balancer.end_epoch()?;
        }
        Ok(report)
    }

    fn grad(&self) -> Vec<f64> {
        Vec::<f64>::try_from(self.p.grad()).unwrap()
    }
}

fn task_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("task{i}")).collect()
}

fn build(spec: &BalancerSpec, n: usize) -> Balancer {
    let names = task_names(n);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    Balancer::from_spec(spec, &refs).unwrap()
}

#[test]
fn gradients_are_the_weighted_sum_for_static_weights() {
    let mut toy = Toy::new(2);
    let mut b = build(&BalancerSpec::static_weights(&[0.25, 2.0]).unwrap(), 2);
    let report = toy.step(&mut b, &[4.0, 3.0]).unwrap();
    assert_eq!(report.weights, vec![0.25, 2.0]);
    assert_eq!(report.losses, vec![4.0, 3.0]);
    assert_eq!(toy.grad(), vec![1.0, 6.0]);
    assert_eq!(b.step(), 1);
}

#[test]
fn non_finite_loss_is_an_error_naming_task_step_value_and_leaves_state_alone() {
    let mut toy = Toy::new(2);
    let mut b = build(&BalancerSpec::from_name("loss_norm").unwrap(), 2);
    toy.step(&mut b, &[2.0, 4.0]).unwrap();
    let before = b.checkpoint().unwrap();
    let err = toy.step(&mut b, &[f64::NAN, 1.0]).unwrap_err();
    assert!(
        matches!(&err, BalanceError::NonFiniteLoss { task, step: 1, value } if task == "task0" && value.is_nan()),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "non-finite loss for task `task0` at step 1: NaN"
    );
    assert_eq!(b.checkpoint().unwrap(), before);
}

#[test]
fn skip_policy_skips_without_touching_state_or_gradients() {
    let mut toy = Toy::new(2);
    let mut b = build(&BalancerSpec::from_name("loss_norm").unwrap(), 2)
        .with_non_finite_policy(NonFinitePolicy::SkipStep);
    toy.step(&mut b, &[2.0, 4.0]).unwrap();
    let weights = b.weights();
    let report = toy.step(&mut b, &[1.0, f64::INFINITY]).unwrap();
    assert!(report.skipped);
    assert_eq!(report.step, 1);
    assert!(!toy.p.grad().defined() || toy.grad() == vec![0.0, 0.0]);
    assert_eq!(b.weights(), weights);
    assert_eq!((b.step(), b.skipped_steps()), (2, 1));
    let next = toy.step(&mut b, &[1.0, 1.0]).unwrap();
    assert_eq!(next.weights, vec![0.5, 0.25]);
}

#[test]
fn task_count_mismatch_is_an_error() {
    let mut toy = Toy::new(3);
    let mut b = build(&BalancerSpec::from_name("static").unwrap(), 2);
    let losses = toy.losses(&[1.0, 2.0, 3.0]);
    let err = b.backward(&losses, &toy.parts, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "task count mismatch in losses: got 3, the balancer was built for 2"
    );
    toy.p.zero_grad();
}

#[test]
fn non_scalar_loss_is_an_error_naming_the_task() {
    let toy = Toy::new(2);
    let mut b = build(&BalancerSpec::from_name("static").unwrap(), 2);
    let losses = vec![toy.p.shallow_clone() * 1.0, toy.p.get(0) * 1.0];
    let err = b.backward(&losses, &toy.parts, None).unwrap_err();
    assert!(
        matches!(&err, BalanceError::NonScalarLoss { task, shape } if task == "task0" && shape == &[2]),
        "{err:?}"
    );
    assert!(err.to_string().contains("not a scalar"), "{err}");
}

#[test]
fn checkpoint_from_another_balancer_or_tasks_is_rejected() {
    let a = build(&BalancerSpec::from_name("static").unwrap(), 2);
    let mut b = build(&BalancerSpec::from_name("loss_norm").unwrap(), 2);
    let err = b.restore(&a.checkpoint().unwrap()).unwrap_err().to_string();
    assert!(
        err.contains(
            "state does not match balancer `loss_norm`: the state was written by `static`"
        ),
        "{err}"
    );
    let mut c =
        Balancer::from_spec(&BalancerSpec::from_name("static").unwrap(), &["x", "y"]).unwrap();
    let err = c.restore(&a.checkpoint().unwrap()).unwrap_err().to_string();
    assert!(err.contains("checkpoint tasks"), "{err}");
}

fn every_registered_spec() -> Vec<BalancerSpec> {
    registry()
        .unwrap()
        .names()
        .into_iter()
        .map(|n| BalancerSpec::from_name(n).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any finite non-negative losses (what BCE and MSE produce): every registered balancer's weights are
    /// finite and >= 0, and the gradient it writes is the weighted sum's.
    #[test]
    fn every_balancer_gives_finite_non_negative_weights(
        steps in prop::collection::vec(prop::collection::vec(0f64..1e6, 3), 1..8),
    ) {
        for spec in every_registered_spec() {
            let mut toy = Toy::new(3);
            let mut b = build(&spec, 3);
            for values in &steps {
                let report = toy.step(&mut b, values).unwrap();
                for (i, w) in report.weights.iter().enumerate() {
                    prop_assert!(w.is_finite() && *w >= 0.0, "{}: weight {}", spec.method(), w);
                    let expected = w * values[i];
                    let got = toy.grad()[i];
                    prop_assert!((got - expected).abs() <= 1e-9 * expected.abs().max(1.0), "{}: grad {} vs {}", spec.method(), got, expected);
                }
            }
        }
    }

    /// Negative losses (a custom loss can be negative): a balancer either works as above or refuses with
    /// an error; a NaN or negative weight never reaches the gradient.
    #[test]
    fn negative_losses_give_valid_weights_or_a_clear_error(
        steps in prop::collection::vec(prop::collection::vec(-1e6f64..1e6, 3), 1..8),
    ) {
        for spec in every_registered_spec() {
            let mut toy = Toy::new(3);
            let mut b = build(&spec, 3);
            for values in &steps {
                match toy.step(&mut b, values) {
                    Ok(report) => {
                        for w in &report.weights {
                            prop_assert!(w.is_finite() && *w >= 0.0, "{}: weight {}", spec.method(), w);
                        }
                        for g in toy.grad() {
                            prop_assert!(g.is_finite(), "{}: gradient {}", spec.method(), g);
                        }
                    }
                    Err(err) => {
                        let msg = err.to_string();
                        prop_assert!(!msg.is_empty() && !msg.contains("NaN"), "{}: {}", spec.method(), msg);
                        break;
                    }
                }
            }
        }
    }

    /// A checkpoint written mid-run and restored into a fresh balancer (through JSON, as a file would be)
    /// gives bit-identical weights from then on, for every registered balancer.
    #[test]
    fn every_balancer_restores_exactly(
        prefix in prop::collection::vec(prop::collection::vec(1e-3f64..1e3, 2), 0..6),
        suffix in prop::collection::vec(prop::collection::vec(1e-3f64..1e3, 2), 1..6),
    ) {
        for spec in every_registered_spec() {
            let mut toy = Toy::new(2);
            let mut original = build(&spec, 2);
            for values in &prefix {
                toy.step(&mut original, values).unwrap();
            }
            let json = serde_json::to_string(&original.checkpoint().unwrap()).unwrap();
            let mut restored = build(&spec, 2);
            restored.restore(&serde_json::from_str::<BalancerCheckpoint>(&json).unwrap()).unwrap();
            prop_assert_eq!(restored.step(), original.step());
            for values in &suffix {
                let a = toy.step(&mut original, values).unwrap();
                let b = toy.step(&mut restored, values).unwrap();
                let bits = |w: &[f64]| w.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&a.weights), bits(&b.weights), "{}", spec.method());
            }
        }
    }
}

/// A deliberately broken balancer: its weight for task 0 becomes NaN from its third step on.
struct Broken {
    steps: u64,
}

impl balance::LossBalancer for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn num_tasks(&self) -> usize {
        2
    }
    fn weights(&self) -> Vec<f64> {
        vec![if self.steps >= 3 { f64::NAN } else { 1.0 }, 1.0]
    }
    fn backward(&mut self, input: &balance::StepInput<'_>) -> balance::Result<balance::StepReport> {
        self.steps += 1;
        input.backward_weighted("broken", self.weights())
    }
    fn state(&self) -> balance::Result<balance::BalancerState> {
        balance::BalancerState::new("broken", 2, &self.steps)
    }
    fn load_state(&mut self, state: &balance::BalancerState) -> balance::Result<()> {
        self.steps = state.decode("broken", 2)?;
        Ok(())
    }
}

#[test]
fn a_nan_weight_never_reaches_the_model_and_the_state_rolls_back() {
    let mut toy = Toy::new(2);
    let mut b = Balancer::new(Box::new(Broken { steps: 0 }), &["a", "b"]).unwrap();
    toy.step(&mut b, &[1.0, 1.0]).unwrap();
    toy.step(&mut b, &[1.0, 1.0]).unwrap();
    let before = b.checkpoint().unwrap();
    let err = toy.step(&mut b, &[1.0, 1.0]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "balancer `broken` produced an invalid weight at step 2: weight of task 0 is NaN, expected a finite value >= 0; its state was rolled back"
    );
    // No gradient was written: backward_weighted checks before the backward pass.
    assert!(!toy.p.grad().defined() || toy.grad() == vec![0.0, 0.0]);
    assert_eq!(b.checkpoint().unwrap(), before);
    assert_eq!(b.step(), 2);
}
