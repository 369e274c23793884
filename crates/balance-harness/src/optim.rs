//! Adam over one flat parameter buffer, with state the project owns (so a checkpoint restores it exactly).
//!
//! Every trainable variable becomes a view of one flat tensor, so a step is a handful of tensor operations
//! whatever the number of parameters, and the optimizer's state is two flat tensors and a step count.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{HarnessError, Result};

/// Adam's hyper-parameters (PyTorch's `torch.optim.Adam`, L2 weight decay added to the gradient).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamConfig {
    /// Learning rate (`> 0`).
    pub lr: f64,
    /// L2 weight decay (`>= 0`).
    pub weight_decay: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Clip the global gradient norm to this value before the step (PyTorch's `clip_grad_norm_`:
    /// gradients times `min(1, max / (norm + 1e-6))`); `None` (the default) does not clip. `> 0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm: None,
        }
    }
}

impl AdamConfig {
    /// Checks every field.
    pub fn check(&self) -> Result<()> {
        let bad = |field: &str, value: f64, expected: &str| {
            Err(HarnessError::invalid("adam", field, value, expected))
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", self.lr, "a finite number > 0");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", self.weight_decay, "a finite number >= 0");
        }
        for (field, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return bad(field, beta, "a number in [0, 1)");
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("eps", self.eps, "a finite number > 0");
        }
        if let Some(max) = self.max_grad_norm {
            if !(max.is_finite() && max > 0.0) {
                return bad("max_grad_norm", max, "a finite number > 0");
            }
        }
        Ok(())
    }
}

/// The optimizer's and the parameters' values, bit for bit (`f32` bits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlatAdamState {
    /// Steps taken.
    pub step: u64,
    /// The flat parameters.
    pub params: Vec<u32>,
    /// First moments.
    pub exp_avg: Vec<u32>,
    /// Second moments.
    pub exp_avg_sq: Vec<u32>,
}

/// Adam over a flat buffer that the model's variables are views of.
#[derive(Debug)]
pub struct FlatAdam {
    params: Vec<Tensor>,
    flat: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: u64,
    config: AdamConfig,
    /// The last [`FlatAdam::local_indices`]: its parameters' `(offset, length)` and the indices.
    local_indices: Option<(Vec<(i64, i64)>, Tensor)>,
}

fn to_bits(t: &Tensor, what: &str) -> Result<Vec<u32>> {
    let v = t
        .f_to_device(tch::Device::Cpu)
        .and_then(Vec::<f32>::try_from)
        .map_err(|e| HarnessError::Optimizer(format!("reading {what}: {e}")))?;
    Ok(v.into_iter().map(f32::to_bits).collect())
}

fn from_bits(bits: &[u32], like: &Tensor, what: &str) -> Result<Tensor> {
    if bits.len() as i64 != like.numel() as i64 {
        return Err(HarnessError::invalid(
            "checkpoint",
            what,
            format!("{} values", bits.len()),
            format!("{} values (the model's parameter count)", like.numel()),
        ));
    }
    let v: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
    Tensor::from_slice(&v)
        .f_to_device(like.device())
        .map_err(|e| {
            HarnessError::Optimizer(format!("moving the checkpoint's {what} to the device: {e}"))
        })
}

/// Errors unless every parameter is a float32 tensor on the device of the first one.
fn check_params(params: &[Tensor]) -> Result<()> {
    let Some(first) = params.first() else {
        return Err(HarnessError::invalid(
            "adam",
            "params",
            0,
            "at least one parameter",
        ));
    };
    let device = first.device();
    for (i, p) in params.iter().enumerate() {
        let kind = p.f_kind().map_err(|e| {
            HarnessError::invalid("adam", format!("params[{i}]"), e, "a defined tensor")
        })?;
        if kind != Kind::Float {
            return Err(HarnessError::invalid(
                "adam",
                format!("params[{i}]"),
                format!("a {kind:?} tensor of shape {:?}", p.size()),
                "a float32 (Kind::Float) tensor: the optimizer's state is float32",
            ));
        }
        if p.device() != device {
            return Err(HarnessError::invalid(
                "adam",
                format!("params[{i}]"),
                format!("a tensor on {:?}", p.device()),
                format!("every parameter on one device (params[0] is on {device:?})"),
            ));
        }
    }
    Ok(())
}

impl FlatAdam {
    /// Re-homes `params` (float32 leaves, all on one device) into one flat buffer and creates the optimizer.
    /// Errors when `params` is empty, when one is not float32 or when they are not all on one device.
    pub fn new(params: Vec<Tensor>, config: AdamConfig) -> Result<Self> {
        config.check()?;
        check_params(&params)?;
        let flat = tch::no_grad(|| {
            let pieces = params
                .iter()
                .map(|p| p.f_detach().and_then(|d| d.f_reshape([-1])))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Tensor::f_cat(&pieces, 0)
        })
        .map_err(|e| HarnessError::Optimizer(format!("building the flat parameter buffer: {e}")))?;
        let mut offset = 0i64;
        let mut params = params;
        for (i, p) in params.iter_mut().enumerate() {
            let n = p.numel() as i64;
            flat.f_narrow(0, offset, n)
                .and_then(|v| v.f_view(p.size().as_slice()))
                .and_then(|view| p.f_set_data(&view))
                .map_err(|e| {
                    HarnessError::Optimizer(format!(
                        "making params[{i}] a view of the flat buffer: {e}"
                    ))
                })?;
            offset += n;
        }
        let zeros = || {
            flat.f_zeros_like()
                .map_err(|e| HarnessError::Optimizer(format!("allocating Adam's moments: {e}")))
        };
        Ok(Self {
            exp_avg: zeros()?,
            exp_avg_sq: zeros()?,
            params,
            flat,
            step: 0,
            config,
            local_indices: None,
        })
    }

    /// The positions in the flat gradient outside `excluded` (tensors that share this optimizer's
    /// parameters' storage, matched by address), as an int64 index tensor on the parameters' device;
    /// `None` when none of `excluded` is one of its parameters. Cached while `excluded` stays the same
    /// (it does, step after step), so a step pays no host synchronisation for it.
    pub fn local_indices(&mut self, excluded: &[Tensor]) -> Result<Option<Tensor>> {
        let base = self.flat.data_ptr() as usize;
        let len = self.len();
        let mut spans: Vec<(i64, i64)> = excluded
            .iter()
            .filter_map(|t| {
                let offset = (t.data_ptr() as usize).checked_sub(base)? / 4;
                let offset = i64::try_from(offset).ok()?;
                let n = t.numel() as i64;
                (t.kind() == tch::Kind::Float && offset + n <= len).then_some((offset, n))
            })
            .collect();
        spans.sort_unstable();
        spans.dedup();
        if spans.is_empty() {
            return Ok(None);
        }
        if let Some((cached, indices)) = &self.local_indices {
            if *cached == spans {
                return Ok(Some(indices.shallow_clone()));
            }
        }
        let indices = (|| -> std::result::Result<Tensor, tch::TchError> {
            let mask = Tensor::f_ones([len], (tch::Kind::Bool, self.flat.device()))?;
            for &(offset, n) in &spans {
                let _ = mask.f_narrow(0, offset, n)?.f_fill_(0)?;
            }
            mask.f_nonzero()?.f_reshape([-1])
        })()
        .map_err(|e| HarnessError::Optimizer(format!("indexing the local gradients: {e}")))?;
        self.local_indices = Some((spans, indices.shallow_clone()));
        Ok(Some(indices))
    }

    /// The number of scalar parameters.
    pub fn len(&self) -> i64 {
        self.flat.numel() as i64
    }

    /// True when there is no parameter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Zeroes every parameter's gradient.
    pub fn zero_grad(&mut self) -> Result<()> {
        for p in &mut self.params {
            let mut grad = p
                .f_grad()
                .map_err(|e| HarnessError::Optimizer(format!("reading a gradient: {e}")))?;
            if grad.defined() {
                let _ = grad
                    .f_detach_()
                    .and_then(|mut g| g.f_zero_())
                    .map_err(|e| HarnessError::Optimizer(format!("zeroing a gradient: {e}")))?;
            }
        }
        Ok(())
    }

    /// One Adam step from the parameters' gradients (an absent gradient counts as zero).
    pub fn step(&mut self) -> Result<()> {
        self.step_with(|_| Ok(()))
    }

    /// One Adam step after `reduce` has transformed the flat gradient in place (data-parallel training
    /// all-reduces it across ranks there: one collective per step, before clipping and weight decay).
    pub fn step_with(&mut self, reduce: impl FnOnce(&mut Tensor) -> Result<()>) -> Result<()> {
        let grads = self
            .params
            .iter()
            .map(|p| {
                let g = p.f_grad()?;
                if g.defined() {
                    g.f_reshape([-1])
                } else {
                    p.f_zeros_like().and_then(|z| z.f_reshape([-1]))
                }
            })
            .collect::<std::result::Result<Vec<_>, tch::TchError>>()
            .map_err(|e| HarnessError::Optimizer(format!("reading the gradients: {e}")))?;
        // Checked here, not left to libtorch: tch 0.24's fallible ops that take a Scalar (lerp_,
        // mul_scalar...) panic instead of returning the error (the Scalar's Drop reads it first).
        let numel: usize = grads.iter().map(Tensor::numel).sum();
        if numel != self.flat.numel() || self.exp_avg.numel() != self.flat.numel() {
            return Err(HarnessError::Optimizer(format!(
                "{numel} gradient values and {} first moments for {} parameters",
                self.exp_avg.numel(),
                self.flat.numel()
            )));
        }
        let mut g = tch::no_grad(|| Tensor::f_cat(&grads, 0))
            .map_err(|e| HarnessError::Optimizer(format!("flattening the gradients: {e}")))?;
        reduce(&mut g)?;
        let c = self.config;
        self.step += 1;
        let t = i32::try_from(self.step).unwrap_or(i32::MAX);
        let bias_correction1 = 1.0 - c.beta1.powi(t);
        let bias_correction2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let update = tch::no_grad(|| -> std::result::Result<(), tch::TchError> {
            if let Some(max) = c.max_grad_norm {
                // No host sync: the coefficient stays a tensor.
                let coef = g
                    .f_norm()?
                    .f_add_scalar(1e-6)?
                    .f_reciprocal()?
                    .f_mul_scalar(max)?
                    .f_clamp_max(1.0)?;
                g = g.f_mul(&coef)?;
            }
            if c.weight_decay > 0.0 {
                g = g.f_add(&self.flat.f_mul_scalar(c.weight_decay)?)?;
            }
            let _ = self.exp_avg.f_lerp_(&g, 1.0 - c.beta1)?;
            let _ = self.exp_avg_sq.f_mul_scalar_(c.beta2)?;
            let _ = self
                .exp_avg_sq
                .f_addcmul_(&g.f_mul_scalar(1.0 - c.beta2)?, &g)?;
            let denom = self
                .exp_avg_sq
                .f_sqrt()?
                .f_div_scalar(bias_correction2_sqrt)?
                .f_add_scalar(c.eps)?;
            let step = self.exp_avg.f_mul_scalar(-c.lr / bias_correction1)?;
            let _ = self.flat.f_addcdiv_(&step, &denom)?;
            Ok(())
        });
        update.map_err(|e| HarnessError::Optimizer(format!("Adam step: {e}")))?;
        Ok(())
    }

    /// Runs `f` on the flat parameters and both moment buffers, in place (data-parallel training
    /// broadcasts rank 0's there, so every rank starts from the same model and optimizer).
    pub fn for_each_buffer(&mut self, mut f: impl FnMut(&mut Tensor) -> Result<()>) -> Result<()> {
        tch::no_grad(|| {
            f(&mut self.flat)?;
            f(&mut self.exp_avg)?;
            f(&mut self.exp_avg_sq)
        })
    }

    /// The parameters and moments, bit for bit.
    pub fn state(&self) -> Result<FlatAdamState> {
        Ok(FlatAdamState {
            step: self.step,
            params: to_bits(&self.flat, "the parameters")?,
            exp_avg: to_bits(&self.exp_avg, "the first moments")?,
            exp_avg_sq: to_bits(&self.exp_avg_sq, "the second moments")?,
        })
    }

    /// Restores parameters and moments written by [`FlatAdam::state`] for the same model.
    pub fn load_state(&mut self, state: &FlatAdamState) -> Result<()> {
        let params = from_bits(&state.params, &self.flat, "params")?;
        let exp_avg = from_bits(&state.exp_avg, &self.flat, "exp_avg")?;
        let exp_avg_sq = from_bits(&state.exp_avg_sq, &self.flat, "exp_avg_sq")?;
        tch::no_grad(|| {
            self.flat.f_copy_(&params)?;
            self.exp_avg.f_copy_(&exp_avg)?;
            self.exp_avg_sq.f_copy_(&exp_avg_sq)
        })
        .map_err(|e| HarnessError::Optimizer(format!("restoring the optimizer state: {e}")))?;
        self.step = state.step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, nn::Module, nn::OptimizerConfig, Device};

    #[test]
    fn the_local_indices_leave_out_exactly_the_given_parameters() {
        let opts = (Kind::Float, Device::Cpu);
        let params = [
            Tensor::zeros([2, 3], opts).set_requires_grad(true),
            Tensor::zeros([4], opts).set_requires_grad(true),
            Tensor::zeros([1], opts).set_requires_grad(true),
        ];
        let handles = params.iter().map(Tensor::shallow_clone).collect();
        let mut adam = FlatAdam::new(handles, AdamConfig::default()).unwrap();
        let indices = |adam: &mut FlatAdam, excluded: &[&Tensor]| -> Option<Vec<i64>> {
            let excluded: Vec<Tensor> = excluded.iter().map(|t| t.shallow_clone()).collect();
            adam.local_indices(&excluded)
                .unwrap()
                .map(|t| Vec::<i64>::try_from(&t).unwrap())
        };
        // The parameters are views of the flat buffer now: the second one spans entries 6..10.
        let outside_second: Vec<i64> = (0..11).filter(|i| !(6..10).contains(i)).collect();
        assert_eq!(
            indices(&mut adam, &[&params[1]]),
            Some(outside_second.clone())
        );
        // Cached for the same parameters (the same tensor comes back).
        let first = adam
            .local_indices(&[params[1].shallow_clone()])
            .unwrap()
            .unwrap();
        let again = adam
            .local_indices(&[params[1].shallow_clone()])
            .unwrap()
            .unwrap();
        assert_eq!(first.data_ptr(), again.data_ptr());
        // A tensor that is not a parameter, or nothing, leaves everything local.
        assert_eq!(indices(&mut adam, &[&Tensor::zeros([4], opts)]), None);
        assert_eq!(indices(&mut adam, &[]), None);
        assert_eq!(
            indices(&mut adam, &[&params[2], &params[0]]),
            Some(vec![6, 7, 8, 9])
        );
    }

    #[test]
    fn matches_libtorch_adam_and_updates_the_model_in_place() {
        // The same model trained with tch's (libtorch's) Adam and with FlatAdam gives the same parameters.
        // Two copies of one model (copied, not re-seeded: other tests of this binary draw from libtorch's
        // process-wide RNG in parallel, so a seed does not make two initialisations equal).
        let make = || {
            let vs = nn::VarStore::new(Device::Cpu);
            let lin = nn::linear(vs.root() / "l", 3, 2, Default::default());
            (vs, lin)
        };
        let (vs_ref, lin_ref) = make();
        let (mut vs, lin) = make();
        vs.copy(&vs_ref).unwrap();
        let mut reference = nn::Adam::default().build(&vs_ref, 0.01).unwrap();
        let mut flat = FlatAdam::new(
            vs.trainable_variables(),
            AdamConfig {
                lr: 0.01,
                ..Default::default()
            },
        )
        .unwrap();
        let x = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 1.5, 0.0, -0.5]).view([2, 3]);
        for _ in 0..5 {
            reference.zero_grad();
            lin_ref.forward(&x).square().sum(Kind::Float).backward();
            reference.step();
            flat.zero_grad().unwrap();
            lin.forward(&x).square().sum(Kind::Float).backward();
            flat.step().unwrap();
        }
        let diff = (&lin.ws - &lin_ref.ws).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{diff}");
        let diff = (lin.bs.as_ref().unwrap() - lin_ref.bs.as_ref().unwrap())
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-6, "{diff}");
    }

    #[test]
    fn state_restores_bit_for_bit() {
        let w = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let mut opt = FlatAdam::new(vec![w.shallow_clone()], AdamConfig::default()).unwrap();
        (&w * &w).sum(Kind::Float).backward();
        opt.step().unwrap();
        let state = opt.state().unwrap();
        let json = serde_json::to_string(&state).unwrap();
        let w2 = Tensor::from_slice(&[9.0f32, 9.0]).set_requires_grad(true);
        let mut opt2 = FlatAdam::new(vec![w2.shallow_clone()], AdamConfig::default()).unwrap();
        opt2.load_state(&serde_json::from_str(&json).unwrap())
            .unwrap();
        assert_eq!(opt2.state().unwrap(), state);
        assert!(w2.equal(&w));
        let err = FlatAdam::new(
            vec![Tensor::zeros([3], (Kind::Float, Device::Cpu)).set_requires_grad(true)],
            AdamConfig::default(),
        )
        .unwrap()
        .load_state(&state)
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("field `params` = 2 values, expected 3 values"),
            "{err}"
        );
    }

    #[test]
    fn new_rejects_no_params_other_dtypes_and_mixed_devices() {
        let err = FlatAdam::new(vec![], AdamConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least one parameter"), "{err}");
        let f = Tensor::zeros([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let d = Tensor::zeros([3], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let err = FlatAdam::new(vec![f.shallow_clone(), d], AdamConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`params[1]` = a Double tensor of shape [3]") && err.contains("float32"),
            "{err}"
        );
        if tch::Cuda::is_available() {
            let g = Tensor::zeros([2], (Kind::Float, Device::Cuda(0))).set_requires_grad(true);
            let err = FlatAdam::new(vec![f, g], AdamConfig::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("one device"), "{err}");
        }
    }

    #[test]
    fn state_problems_are_optimizer_errors() {
        let w = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let mut opt = FlatAdam::new(vec![w.shallow_clone()], AdamConfig::default()).unwrap();
        (&w * &w).sum(Kind::Float).backward();
        opt.zero_grad().unwrap();
        assert_eq!(Vec::<f32>::try_from(w.grad()).unwrap(), [0.0, 0.0]);
        let state = opt.state().unwrap();
        // Moments that no longer fit the buffer cannot be restored: an optimizer error, not a batch one.
        opt.exp_avg = Tensor::zeros([5], (Kind::Float, Device::Cpu));
        let err = opt.load_state(&state).unwrap_err();
        assert!(matches!(err, HarnessError::Optimizer(_)), "{err:?}");
        assert!(
            err.to_string().contains("restoring the optimizer state"),
            "{err}"
        );
        // A step with them is an error too, not a panic inside libtorch.
        let err = opt.step().unwrap_err();
        assert!(
            matches!(&err, HarnessError::Optimizer(m) if m.contains("5 first moments for 2 parameters")),
            "{err:?}"
        );
    }

    /// After one step Adam's first moment is `(1 - beta1) g`, so it shows the gradient the step used.
    #[test]
    fn max_grad_norm_clips_the_global_norm_and_keeps_the_direction() {
        let first_moment = |max: Option<f64>, scale: f32| {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let a = vs.root().var("a", &[2], nn::Init::Const(1.0));
            let b = vs.root().var("b", &[1], nn::Init::Const(1.0));
            let mut opt = FlatAdam::new(
                vs.trainable_variables(),
                AdamConfig {
                    max_grad_norm: max,
                    ..Default::default()
                },
            )
            .unwrap();
            // Gradient (3, 0, 4) * scale: norm 5 * scale.
            let w = Tensor::from_slice(&[3.0f32 * scale, 0.0]);
            ((&a * &w).sum(Kind::Float) + (&b * f64::from(4.0 * scale)).sum(Kind::Float))
                .backward();
            opt.step().unwrap();
            let state = opt.state().unwrap();
            state
                .exp_avg
                .iter()
                .map(|&x| f64::from(f32::from_bits(x)) / 0.1)
                .collect::<Vec<_>>()
        };
        // Norm 50 clipped to 2: (3, 0, 4) * 2 / 5 (up to the 1e-6 in the denominator).
        let clipped = first_moment(Some(2.0), 10.0);
        let norm_of: f64 = clipped.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm_of - 2.0).abs() < 1e-5, "{clipped:?}");
        assert!((clipped[0] / clipped[2] - 0.75).abs() < 1e-6 && clipped[1] == 0.0);
        // Norm 5 under the limit of 10: unchanged.
        let kept = first_moment(Some(10.0), 1.0);
        for (got, want) in kept.iter().zip([3.0, 0.0, 4.0]) {
            assert!((got - want).abs() < 1e-5, "{kept:?}");
        }
        let err = AdamConfig {
            max_grad_norm: Some(0.0),
            ..Default::default()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(err.contains("field `max_grad_norm` = 0"), "{err}");
    }

    #[test]
    fn invalid_config_names_the_field() {
        let err = AdamConfig {
            beta2: 1.0,
            ..Default::default()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "invalid adam config: field `beta2` = 1, expected a number in [0, 1)"
        );
    }
}
