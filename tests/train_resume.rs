//! The harness trains deterministically, and a run stopped mid-epoch and resumed from its checkpoint ends
//! bit-identical to an uninterrupted one (parameters, Adam moments, balancer state, metrics).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use balance::{Balancer, BalancerSpec};
use balance_harness::data::{Dataset, Task};
use balance_harness::nn::{Activation, MlpConfig};
use balance_harness::synthetic::{bench_input, cascade};
use balance_harness::train::{NoObserver, TrainCheckpoint, TrainConfig, Trainer};
use balance_harness::{Mmoe, MmoeConfig};
use tch::{nn, Device};

/// libtorch's RNG (initialisation, dropout) is process-wide: these tests take turns.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn train_and_eval() -> (Dataset, Dataset) {
    dataset(6000, 1).split_at(4000).unwrap()
}

fn dataset(rows: usize, seed: u64) -> Dataset {
    Dataset {
        examples: cascade(rows, seed),
        input: bench_input(),
        tasks: vec![
            Task::binary("response"),
            Task::binary("conversion"),
            Task::binary("high_value"),
        ],
    }
}

fn trainer(spec: &str, init_seed: i64) -> Trainer<Mmoe> {
    tch::manual_seed(init_seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let config = MmoeConfig {
        experts: 2,
        expert: MlpConfig::relu(&[16, 8]),
        tower: MlpConfig {
            dims: vec![8],
            activation: Activation::Relu,
            dropout: 0.2,
        },
    };
    let model = Mmoe::new(&vs, &bench_input(), &config, 3).unwrap();
    let balancer = Balancer::from_spec(
        &spec.parse::<BalancerSpec>().unwrap(),
        &["response", "conversion", "high_value"],
    )
    .unwrap();
    let tasks = dataset(1, 0).tasks;
    let train = TrainConfig {
        epochs: 3,
        batch_size: 256,
        seed: 42,
        ..TrainConfig::default()
    };
    Trainer::new(
        model,
        vs.trainable_variables(),
        balancer,
        tasks,
        train,
        Device::Cpu,
    )
    .unwrap()
}

fn bits(t: &Trainer<Mmoe>) -> TrainCheckpoint {
    t.checkpoint().unwrap()
}

#[test]
fn two_runs_with_one_seed_are_identical_and_learn() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (train, eval) = train_and_eval();
    let mut a = trainer("grad_norm", 7);
    let mut b = trainer("grad_norm", 7);
    a.run(&train, &eval, &mut NoObserver).unwrap();
    b.run(&train, &eval, &mut NoObserver).unwrap();
    assert_eq!(a.history(), b.history());
    assert_eq!(bits(&a), bits(&b));
    let auc = a.history()[1].metrics[0].auc.unwrap();
    assert!(auc > 0.6, "response AUC after 2 epochs: {auc}");
}

#[test]
fn resume_mid_epoch_is_bit_identical_for_every_balancer() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (train, eval) = dataset(2500, 1).split_at(2000).unwrap();
    // Every registered balancer (DWA, FAMO and the gradient methods included), plus the representation
    // variants of two gradient methods.
    let mut specs: Vec<String> = balance::registry()
        .unwrap()
        .names()
        .into_iter()
        .map(str::to_string)
        .collect();
    specs.push(r#"{"method":"grad_norm","shared":"representation"}"#.into());
    specs.push(r#"{"method":"mgda","target":"representation"}"#.into());
    for spec in &specs {
        let spec = spec.as_str();
        let mut straight = trainer(spec, 7);
        straight.run(&train, &eval, &mut NoObserver).unwrap();

        let mut first = trainer(spec, 7);
        // 8 steps per epoch: stop in the middle of the third (DWA's first weighted epoch).
        assert!(!first.run_steps(&train, &eval, &mut NoObserver, 19).unwrap());
        let json = serde_json::to_string(&first.checkpoint().unwrap()).unwrap();
        drop(first);

        // A fresh process would build the model from another initialisation; the checkpoint overrides it.
        let mut resumed = trainer(spec, 999);
        resumed
            .restore(&serde_json::from_str(&json).unwrap())
            .unwrap();
        resumed.run(&train, &eval, &mut NoObserver).unwrap();

        assert_eq!(resumed.history(), straight.history(), "{spec}");
        assert_eq!(bits(&resumed), bits(&straight), "{spec}");
    }
}
