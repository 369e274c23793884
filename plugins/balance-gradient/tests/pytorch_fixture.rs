#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The pure rules against tests/fixtures/gradient_reference.json, made by
//! tests/fixtures/make_gradient_fixture.py: independent torch float64 implementations working on the flat
//! gradient vectors (LibMTL's / the official formulas; MGDA and CAGrad by long projected-gradient loops,
//! Nash-MTL by Newton). Random gradient sets with T in {2, 3, 5} and P = 20; the combined direction
//! `d = sum_i alpha_i g_i` is compared (observed worst: 4e-10 relative for Nash-MTL on an
//! ill-conditioned set, 1e-13 for the rest; the tolerances leave some room).

use balance_gradient::linalg::SimplexSolver;
use balance_gradient::math::{
    aligned::{aligned, ScaleMode},
    cagrad::cagrad,
    combine, gram_of, imtl,
    mgda::{mgda, Normalization},
    nash::{nash, DEFAULT_RIDGE},
    pcgrad::pcgrad,
};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/gradient_reference.json")).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).unwrap()
}

fn relative_error(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    got.iter()
        .zip(want)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

#[test]
fn combined_directions_match_the_torch_reference() {
    let fx = fixture();
    let mut checked = 0;
    for problem in fx["problems"].as_array().unwrap() {
        let grads: Vec<Vec<f64>> = serde_json::from_value(problem["grads"].clone()).unwrap();
        let losses = floats(&problem["losses"]);
        let gram = gram_of(&grads);
        let t = grads.len();
        for case in problem["cases"].as_array().unwrap() {
            let method = case["method"].as_str().unwrap();
            let want = floats(&case["d"]);
            let (alpha, tolerance, label) = match method {
                "pcgrad" => {
                    let orders: Vec<Vec<usize>> =
                        serde_json::from_value(case["orders"].clone()).unwrap();
                    (pcgrad(&gram, &orders), 1e-12, "pcgrad".to_string())
                }
                "mgda" => {
                    let mode: Normalization =
                        serde_json::from_value(case["normalization"].clone()).unwrap();
                    let (alpha, _, _) = mgda(&gram, &losses, mode);
                    (alpha, 1e-11, format!("mgda {}", mode.as_str()))
                }
                "imtl" => (imtl::imtl(&gram).0, 1e-11, "imtl".to_string()),
                "cagrad" => {
                    let c = case["c"].as_f64().unwrap();
                    let rescale = case["rescale"].as_u64().unwrap() as u8;
                    let s = cagrad(&gram, c, rescale, SimplexSolver::default());
                    (s.alpha, 1e-9, format!("cagrad c={c} rescale={rescale}"))
                }
                "nashmtl" => {
                    let s = nash(&gram, &[], DEFAULT_RIDGE, 100, 1e-12);
                    assert!(s.converged, "{s:?}");
                    (s.alpha, 1e-8, "nashmtl".to_string())
                }
                "aligned_mtl" => {
                    let mode: ScaleMode =
                        serde_json::from_value(case["scale_mode"].clone()).unwrap();
                    (
                        aligned(&gram, mode).alpha,
                        1e-11,
                        format!("aligned_mtl {}", mode.as_str()),
                    )
                }
                other => panic!("unknown method {other}"),
            };
            let got = combine(&grads, &alpha);
            let err = relative_error(&got, &want);
            assert!(
                err < tolerance,
                "T={t} {label}: relative error {err:e} (tolerance {tolerance:e})\n got {got:?}\nwant {want:?}"
            );
            if let Some(want_alpha) = case.get("alpha") {
                let err = relative_error(&alpha, &floats(want_alpha));
                assert!(
                    err < tolerance,
                    "T={t} {label}: alpha relative error {err:e}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * 13);
}
