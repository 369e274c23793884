//! Every model runs, and what it declares shared is what more than one task's loss actually reaches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use balance_harness::models::esmm::{Esmm, EsmmConfig};
use balance_harness::models::ple::{Ple, PleConfig};
use balance_harness::models::shared_bottom::{SharedBottom, SharedBottomConfig};
use balance_harness::nn::MlpConfig;
use balance_harness::synthetic::{bench_input, cascade};
use balance_harness::{Mmoe, MmoeConfig, MultiTaskModel};
use tch::{nn, Device, Kind, Tensor};

/// libtorch's RNG (initialisation) is process-wide and these tests run in parallel: each takes the lock
/// and seeds before building, so its models are the same in every run (unseeded, a ReLU tower that is
/// dead on the whole probe batch made the reach check flaky).
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn seeded() -> std::sync::MutexGuard<'static, ()> {
    let guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(0);
    guard
}

/// For each parameter, how many tasks' losses give it a non-zero gradient.
fn tasks_reaching(model: &dyn MultiTaskModel, params: &[Tensor]) -> Vec<usize> {
    let batch = cascade(64, 3);
    let out = model.forward_t(&batch, false).unwrap();
    let mut counts = vec![0; params.len()];
    for logits in &out.logits {
        let loss = logits.square().mean(Kind::Float);
        let refs: Vec<&Tensor> = params.iter().collect();
        let grads = Tensor::run_backward(&[&loss], &refs, true, false);
        for (c, g) in counts.iter_mut().zip(&grads) {
            if g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0 {
                *c += 1;
            }
        }
    }
    counts
}

fn check(model: &dyn MultiTaskModel, tasks: usize, shared_exact: bool) {
    let parts = model.shared_parts();
    let out = model.forward_t(&cascade(5, 1), true).unwrap();
    assert_eq!(out.logits.len(), tasks);
    for l in &out.logits {
        assert_eq!(l.size(), vec![5, 1]);
    }
    assert!(out.representation.is_some());
    assert!(!parts.last_shared_layer().is_empty());
    for p in parts.last_shared_layer() {
        assert!(
            parts.shared().iter().any(|s| s.data_ptr() == p.data_ptr()),
            "last shared layer is shared"
        );
    }
    let shared = tasks_reaching(model, parts.shared());
    assert!(
        shared.iter().all(|&c| c == tasks),
        "every shared parameter reaches every task: {shared:?}"
    );
    let specific = tasks_reaching(model, parts.task_specific());
    if shared_exact {
        assert!(
            specific.iter().all(|&c| c == 1),
            "task-specific parameters reach one task: {specific:?}"
        );
    }
}

#[test]
fn mmoe_shared_bottom_and_ple_declare_exactly_what_tasks_share() {
    let _turn = seeded();
    let vs = nn::VarStore::new(Device::Cpu);
    let mmoe = Mmoe::new(
        &vs,
        &bench_input(),
        &MmoeConfig {
            experts: 3,
            expert: MlpConfig::relu(&[16, 8]),
            tower: MlpConfig::relu(&[8]),
        },
        3,
    )
    .unwrap();
    check(&mmoe, 3, true);

    let vs = nn::VarStore::new(Device::Cpu);
    let sb = SharedBottom::new(
        &vs,
        &bench_input(),
        &SharedBottomConfig {
            bottom: MlpConfig::relu(&[32, 16]),
            tower: MlpConfig::relu(&[8]),
        },
        3,
    )
    .unwrap();
    check(&sb, 3, true);
    let last: Vec<Vec<i64>> = sb
        .shared_parts()
        .last_shared_layer()
        .iter()
        .map(Tensor::size)
        .collect();
    assert_eq!(last, vec![vec![16], vec![16, 32]]); // bottom.1.bias, bottom.1.weight

    let vs = nn::VarStore::new(Device::Cpu);
    let config = PleConfig {
        levels: 2,
        shared_experts: 2,
        task_experts: 1,
        expert: MlpConfig::relu(&[16, 8]),
        tower: MlpConfig::relu(&[8]),
    };
    let ple = Ple::new(&vs, &bench_input(), &config, 3).unwrap();
    check(&ple, 3, true);
}

#[test]
fn esmm_shares_embeddings_and_its_ctcvr_is_the_product() {
    let _turn = seeded();
    let vs = nn::VarStore::new(Device::Cpu);
    let esmm = Esmm::new(
        &vs,
        &bench_input(),
        &EsmmConfig {
            tower: MlpConfig::relu(&[16, 8]),
        },
    )
    .unwrap();
    // The CTR tower also reaches the CTCVR loss (pCTCVR = pCTR * pCVR): ESMM's shared part is the
    // embeddings, as in the paper, so only "at least one task" holds for its tower parameters.
    check(&esmm, 2, false);
    let batch = cascade(7, 2);
    let out = esmm.forward_t(&batch, false).unwrap();
    let product = out.logits[0].sigmoid() * esmm.cvr(&batch).unwrap();
    let diff = (out.logits[1].sigmoid() - product)
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-6, "{diff}");
}

#[test]
fn invalid_model_configs_name_the_field() {
    let _turn = seeded();
    let vs = nn::VarStore::new(Device::Cpu);
    let err = SharedBottom::new(
        &vs,
        &bench_input(),
        &SharedBottomConfig {
            bottom: MlpConfig::relu(&[]),
            tower: MlpConfig::relu(&[8]),
        },
        2,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(err, "invalid shared_bottom config: field `bottom.dims` = [], expected at least one hidden layer");
    let config = PleConfig {
        levels: 0,
        shared_experts: 1,
        task_experts: 1,
        expert: MlpConfig::relu(&[8]),
        tower: MlpConfig::relu(&[]),
    };
    let err = Ple::new(&vs, &bench_input(), &config, 2)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "invalid ple config: field `levels` = 0, expected at least 1"
    );
    let err = Esmm::new(
        &vs,
        &bench_input(),
        &EsmmConfig {
            tower: MlpConfig {
                dims: vec![8],
                activation: Default::default(),
                dropout: 1.0,
            },
        },
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "invalid esmm config: field `tower.dropout` = 1, expected a probability in [0, 1)"
    );
}
