//! ESMM (Ma et al., SIGIR 2018): CTR and CVR towers over shared embeddings; `pCTCVR = pCTR * pCVR`.
//!
//! The two tasks the balancer sees are `ctr` (label: click) and `ctcvr` (label: click and conversion), both
//! over all impressions, so CVR is learnt without the sample-selection bias of training on clicks only.
//! The model's second output is the logit of `pCTCVR`, computed stably from the two towers' logits, so the
//! harness's ordinary BCE-on-logits is exactly the paper's CTCVR loss. [`Esmm::cvr`] gives `pCVR`.

use balance_core::{SharedParts, TorchResultExt};
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

use crate::batch::Batch;
use crate::error::Result;
use crate::input::{InputConfig, InputEncoder};
use crate::models::{check_mlp, ModelOutput, MultiTaskModel};
use crate::nn::{linear, Mlp, MlpConfig};

/// `{"tower": {"dims": [64, 32]}}`: the shape of both the CTR and the CVR tower.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EsmmConfig {
    /// Each tower's hidden layers (a final linear layer to one logit is added).
    pub tower: MlpConfig,
}

/// ESMM. Variables: `input/` (shared embeddings), `ctr/`, `ctr_head/`, `cvr/`, `cvr_head/`.
/// Shared: the embeddings (also the last shared layer); representation: the encoded input.
#[derive(Debug)]
pub struct Esmm {
    input: InputEncoder,
    ctr: (Mlp, nn::Linear),
    cvr: (Mlp, nn::Linear),
    parts: SharedParts,
}

/// `logit(sigmoid(a) * sigmoid(b))`, stable for large |a|, |b|.
pub fn product_logit(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    // log p with p = pCTR * pCVR; log(1 - p) = log(-expm1(log p)), clamped away from log p = 0.
    let log_p = a
        .f_log_sigmoid()
        .and_then(|la| b.f_log_sigmoid().and_then(|lb| la.f_add(&lb)))
        .context("pCTCVR")?;
    let log_one_minus_p = log_p
        .f_clamp_max(-1e-7)
        .and_then(|l| l.f_expm1())
        .and_then(|e| e.f_neg())
        .and_then(|e| e.f_log())
        .context("pCTCVR")?;
    Ok(log_p.f_sub(&log_one_minus_p).context("pCTCVR")?)
}

impl Esmm {
    /// Builds the model's variables in `vs` (always 2 tasks: `ctr`, `ctcvr`).
    pub fn new(vs: &nn::VarStore, input: &InputConfig, config: &EsmmConfig) -> Result<Self> {
        check_mlp("esmm", "tower", &config.tower, false)?;
        let root = vs.root();
        let encoder = InputEncoder::new(&(&root / "input"), input)?;
        let d = encoder.output_dim();
        let out = config.tower.output_dim(d);
        let tower = |name: &str| {
            (
                Mlp::new(&(&root / name), d, &config.tower),
                nn::linear(&root / format!("{name}_head"), out, 1, Default::default()),
            )
        };
        let (ctr, cvr) = (tower("ctr"), tower("cvr"));
        let parts = SharedParts::from_var_store(vs, &["input"], Some("input"));
        Ok(Self {
            input: encoder,
            ctr,
            cvr,
            parts,
        })
    }

    /// `pCVR` for a batch (no gradients, no dropout).
    pub fn cvr(&self, batch: &Batch) -> Result<Tensor> {
        tch::no_grad(|| {
            let x = self.input.forward(batch)?;
            let logit = linear(&self.cvr.1, &self.cvr.0.forward_t(&x, false)?)?;
            Ok(logit.f_sigmoid().context("pCVR")?)
        })
    }
}

impl MultiTaskModel for Esmm {
    fn num_tasks(&self) -> usize {
        2
    }

    fn forward_t(&self, batch: &Batch, train: bool) -> Result<ModelOutput> {
        let x = self.input.forward(batch)?;
        let ctr = linear(&self.ctr.1, &self.ctr.0.forward_t(&x, train)?)?;
        let cvr = linear(&self.cvr.1, &self.cvr.0.forward_t(&x, train)?)?;
        let ctcvr = product_logit(&ctr, &cvr)?;
        Ok(ModelOutput {
            logits: vec![ctr, ctcvr],
            representation: Some(x),
        })
    }

    fn shared_parts(&self) -> SharedParts {
        self.parts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn product_logit_is_the_logit_of_the_product() {
        let a = Tensor::from_slice(&[-3.0f64, 0.0, 2.0, 30.0, -30.0]);
        let b = Tensor::from_slice(&[1.0f64, 0.5, -2.0, 30.0, 5.0]);
        let got = Vec::<f64>::try_from(product_logit(&a, &b).unwrap().sigmoid()).unwrap();
        let want = Vec::<f64>::try_from(a.sigmoid() * b.sigmoid()).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6 * w.max(1e-12) + 1e-12, "{g} vs {w}");
        }
        assert!(
            product_logit(&a, &b)
                .unwrap()
                .isfinite()
                .all()
                .int64_value(&[])
                == 1
        );
        let _ = Kind::Double;
    }
}
