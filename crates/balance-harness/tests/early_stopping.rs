//! Early stopping fires after `patience` epochs without improvement, and its config is validated.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use balance_core::{Balancer, BalancerConfig};
use balance_harness::data::{Dataset, Task};
use balance_harness::optim::AdamConfig;
use balance_harness::synthetic::{bench_input, cascade};
use balance_harness::train::{EarlyStopping, NoObserver, TrainConfig, Trainer};
use balance_harness::{Mmoe, MmoeConfig};
use balance_static::StaticConfig;
use tch::{nn, Device};

fn data() -> (Dataset, Dataset) {
    Dataset {
        examples: cascade(1200, 4),
        input: bench_input(),
        tasks: vec![Task::binary("a"), Task::binary("b"), Task::binary("c")],
    }
    .split_at(900)
    .unwrap()
}

fn trainer(config: TrainConfig) -> balance_harness::Result<Trainer<Mmoe>> {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Mmoe::new(&vs, &bench_input(), &MmoeConfig::bench(), 3)?;
    let balancer =
        Balancer::new(StaticConfig::default().build(3).unwrap(), &["a", "b", "c"]).unwrap();
    Trainer::new(
        model,
        vs.trainable_variables(),
        balancer,
        data().0.tasks,
        config,
        Device::Cpu,
    )
}

#[test]
fn stops_after_patience_epochs_without_improvement() {
    // A learning rate below float resolution: parameters, and so the validation AUC, never change.
    let config = TrainConfig {
        epochs: 6,
        batch_size: 300,
        adam: AdamConfig {
            lr: 1e-30,
            ..AdamConfig::default()
        },
        early_stopping: Some(EarlyStopping {
            task: "b".into(),
            patience: 2,
        }),
        ..TrainConfig::default()
    };
    let (train, eval) = data();
    let mut t = trainer(config).unwrap();
    t.run(&train, &eval, &mut NoObserver).unwrap();
    // Epoch 0 sets the best score; epochs 1 and 2 do not beat it; patience 2 stops after epoch 2.
    assert_eq!(t.history().len(), 3);
    assert!(t.finished());
    assert_eq!(t.history()[0].metrics[1].auc, t.history()[2].metrics[1].auc);
}

#[test]
fn unknown_early_stopping_task_is_named() {
    let config = TrainConfig {
        early_stopping: Some(EarlyStopping {
            task: "ctr".into(),
            patience: 1,
        }),
        ..TrainConfig::default()
    };
    let err = trainer(config).unwrap_err().to_string();
    assert_eq!(err, "invalid train config: field `early_stopping.task` = ctr, expected one of the tasks: a, b, c");
}

#[test]
fn datasets_with_other_tasks_or_no_rows_are_named_errors() {
    let (train, eval) = data();
    let mut t = trainer(TrainConfig::default()).unwrap();
    let other = Dataset {
        tasks: vec![Task::binary("a"), Task::binary("b"), Task::binary("x")],
        ..train.split_at(900).unwrap().0
    };
    let err = t
        .run(&train, &other, &mut NoObserver)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("eval dataset tasks")
            && err.contains("[a, b, x]")
            && err.contains("[a, b, c]"),
        "{err}"
    );
    let (_, empty) = train.split_at(900).unwrap();
    let err = t.run(&empty, &eval, &mut NoObserver).unwrap_err();
    assert!(
        matches!(err, balance_harness::HarnessError::BadData(_)),
        "{err:?}"
    );
}
