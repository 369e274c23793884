//! The registry and the config forms, across every linked plugin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use balance::{registry, BalanceError, BalancerKind, BalancerSpec};

/// Every first-party plugin, with its kind. Adding a plugin to the facade means adding it here.
const FIRST_PARTY: &[(&str, BalancerKind)] = &[
    ("aligned_mtl", BalancerKind::GradientCombination),
    ("cagrad", BalancerKind::GradientCombination),
    ("dwa", BalancerKind::LossWeighting),
    ("famo", BalancerKind::LossWeighting),
    ("gls", BalancerKind::LossWeighting),
    ("grad_norm", BalancerKind::GradientWeighting),
    ("imtl", BalancerKind::GradientCombination),
    ("loss_norm", BalancerKind::LossWeighting),
    ("mgda", BalancerKind::GradientCombination),
    ("nashmtl", BalancerKind::GradientCombination),
    ("pcgrad", BalancerKind::GradientCombination),
    ("rlw", BalancerKind::LossWeighting),
    ("static", BalancerKind::LossWeighting),
    ("uncertainty", BalancerKind::LossWeighting),
];

#[test]
fn every_first_party_plugin_is_registered() {
    let reg = registry().unwrap();
    for (name, kind) in FIRST_PARTY {
        let entry = reg
            .get(name)
            .unwrap_or_else(|e| panic!("{name} missing: {e}"));
        assert_eq!(entry.kind, *kind, "{name}");
        assert!(
            !entry.summary.is_empty() && !entry.paper.is_empty(),
            "{name}"
        );
    }
}

#[test]
fn registry_is_sorted_and_each_default_config_names_its_entry() {
    let reg = registry().unwrap();
    let names = reg.names();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    for entry in reg.entries() {
        assert_eq!((entry.default_config)().method(), entry.name);
    }
}

#[test]
fn default_config_of_every_balancer_round_trips_in_json_and_toml() {
    for name in registry().unwrap().names() {
        let spec = BalancerSpec::from_name(name).unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            serde_json::from_str::<BalancerSpec>(&json).unwrap(),
            spec,
            "{json}"
        );

        #[derive(serde::Serialize, serde::Deserialize)]
        struct Doc {
            balancer: BalancerSpec,
        }
        let toml_text = toml::to_string(&Doc {
            balancer: spec.clone(),
        })
        .unwrap();
        let back: Doc = toml::from_str(&toml_text).unwrap();
        assert_eq!(back.balancer, spec, "{toml_text}");
    }
}

#[test]
fn the_three_forms_in_json() {
    let list: BalancerSpec = serde_json::from_str("[0.3, 0.7]").unwrap();
    assert_eq!(
        list.to_value().unwrap(),
        serde_json::json!({"method": "static", "weights": [0.3, 0.7]})
    );
    assert_eq!(list.build(2).unwrap().weights(), vec![0.3, 0.7]);

    let name: BalancerSpec = serde_json::from_str(r#""loss_norm""#).unwrap();
    assert_eq!(name, BalancerSpec::from_name("loss_norm").unwrap());

    let map: BalancerSpec =
        serde_json::from_str(r#"{"method": "loss_norm", "scale": "ema", "decay": 0.5}"#).unwrap();
    assert_eq!(
        map.to_value().unwrap(),
        serde_json::json!({"method": "loss_norm", "scale": "ema", "decay": 0.5})
    );
}

#[test]
fn the_three_forms_in_toml_including_a_mixed_list() {
    #[derive(serde::Deserialize)]
    struct Experiment {
        balancers: Vec<BalancerSpec>,
    }
    let exp: Experiment = toml::from_str(
        r#"balancers = [[1.0, 2.0], "static", { method = "loss_norm", scale = "initial", warmup_steps = 4 }]"#,
    )
    .unwrap();
    let methods: Vec<_> = exp.balancers.iter().map(BalancerSpec::method).collect();
    assert_eq!(methods, vec!["static", "static", "loss_norm"]);
}

#[test]
fn from_str_accepts_bare_names_and_json() {
    assert_eq!("static".parse::<BalancerSpec>().unwrap().method(), "static");
    assert_eq!("[1, 2]".parse::<BalancerSpec>().unwrap().method(), "static");
    let spec: BalancerSpec = r#"{"method":"loss_norm","scale":"ema"}"#.parse().unwrap();
    assert_eq!(spec.method(), "loss_norm");
}

#[test]
fn unknown_name_lists_known_and_suggests() {
    let err = BalancerSpec::from_name("lossnorm").unwrap_err();
    match &err {
        BalanceError::UnknownBalancer {
            known, suggestion, ..
        } => {
            assert_eq!(suggestion.as_deref(), Some("loss_norm"));
            assert_eq!(known, &registry().unwrap().names());
        }
        other => panic!("unexpected {other:?}"),
    }
    let err = serde_json::from_str::<BalancerSpec>(r#"{"method": "statc"}"#).unwrap_err();
    assert!(err.to_string().contains("did you mean `static`?"), "{err}");
}

#[test]
fn unknown_field_missing_method_and_wrong_shape_are_clear_errors() {
    let err = serde_json::from_str::<BalancerSpec>(r#"{"method": "loss_norm", "decai": 0.5}"#)
        .unwrap_err();
    assert!(err.to_string().contains("unknown field `decai`"), "{err}");
    let err = serde_json::from_str::<BalancerSpec>(r#"{"scale": "ema"}"#).unwrap_err();
    let known = registry().unwrap().names().join(", ");
    assert!(
        err.to_string()
            .contains(&format!("missing field `method` (one of: {known}")),
        "{err}"
    );
    let err = serde_json::from_str::<BalancerSpec>("42").unwrap_err();
    assert!(
        err.to_string()
            .contains("expected a balancer name, a list of static weights"),
        "{err}"
    );
    let err = serde_json::from_str::<BalancerSpec>(r#"["a"]"#).unwrap_err();
    assert!(err.to_string().contains("`static`"), "{err}");
}

#[test]
fn invalid_values_are_caught_when_building_and_name_the_field() {
    let spec: BalancerSpec = serde_json::from_str("[0.3, -0.7]").unwrap();
    let err = spec.build(2).unwrap_err().to_string();
    assert!(err.contains("field `weights[1]` = -0.7"), "{err}");
    let spec: BalancerSpec = serde_json::from_str("[0.3, 0.7]").unwrap();
    let err = spec.build(3).unwrap_err().to_string();
    assert!(err.contains("one weight per task (3), got 2"), "{err}");
}
