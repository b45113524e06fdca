//! AdamW as a compiled graph, the learning-rate schedule and the weight
//! decay rule.
//!
//! One graph updates every parameter. For parameter `k` it takes `p.k`,
//! `g.k` (the gradient), `m.k` and `v.k` (the moments, always `f32`), and
//! four `f32` scalars shared by all parameters: `lr`, `bc1 = 1/(1-β1^t)`,
//! `bc2 = 1/(1-β2^t)` (the bias corrections for update number `t`, from 1)
//! and `clip` (the gradient scale from global-norm clipping, 1 when off).
//! It returns `p.k`, `m.k`, `v.k` updated, in that order per parameter:
//!
//! ```text
//! g  = clip · g
//! m' = β1 m + (1-β1) g
//! v' = β2 v + (1-β2) g²
//! p' = p · (1 - lr·wd) - lr · (m'·bc1) / (sqrt(v'·bc2) + eps)
//! ```
//!
//! The decay term (decoupled, as in Loshchilov & Hutter and PyTorch's
//! `AdamW`: scaled by `lr`, not by the Adam denominator) is there only for
//! parameters [`decays`] selects. β1, β2, eps and wd are constants of the
//! graph. A parameter stored in another float dtype is computed in `f32`
//! and rounded back.

use birkhoff::dsl::Builder;
use birkhoff::ir::{DType, Graph, TensorType};

use super::{TrainError, TrainOptions};

/// Whether AdamW applies weight decay to a parameter of this shape: only
/// to matrices and higher-rank tensors (embeddings, projections, the mHC
/// `fn` projection), never to vectors or scalars — gains, biases, norm
/// weights and the mHC gate `scale` and `base` — whose decay would pull a
/// gain toward 0 or a gate away from the mixing it starts at.
pub fn decays(shape: &[usize]) -> bool {
    shape.len() >= 2
}

/// The learning rate for update number `step` (0-based): linear warm-up
/// from `lr/warmup` to `lr` over the first `warmup` updates, then a
/// half-cosine from `lr` down to `min_lr_ratio·lr`, reached at update
/// `steps - 1` and held after it.
pub fn lr_at(opts: &TrainOptions, step: usize) -> f64 {
    let peak = opts.lr;
    if step < opts.warmup {
        return peak * (step + 1) as f64 / opts.warmup as f64;
    }
    let floor = opts.min_lr_ratio * peak;
    let span = opts.steps.saturating_sub(opts.warmup + 1);
    let progress = if span == 0 {
        1.0
    } else {
        ((step - opts.warmup) as f64 / span as f64).min(1.0)
    };
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// The bias corrections `(1/(1-β1^t), 1/(1-β2^t))` for update number
/// `step` (0-based, so `t = step + 1`).
pub fn bias_corrections(opts: &TrainOptions, step: usize) -> (f64, f64) {
    let t = i32::try_from(step + 1).unwrap_or(i32::MAX);
    (
        1.0 / (1.0 - opts.beta1.powi(t)),
        1.0 / (1.0 - opts.beta2.powi(t)),
    )
}

/// The gradient scale of global-norm clipping: `max_norm / norm` when the
/// norm exceeds `max_norm`, else 1.
pub fn clip_scale(grad_clip: Option<f64>, norm: f64) -> f64 {
    match grad_clip {
        Some(c) if norm > c => c / norm,
        _ => 1.0,
    }
}

/// Builds the AdamW update graph for parameters `(name, type)` (see the
/// module docs for its inputs and outputs).
pub fn adamw_graph(
    params: &[(String, TensorType)],
    opts: &TrainOptions,
) -> Result<Graph, TrainError> {
    let b = Builder::new("adamw");
    let f = DType::F32;
    let lr = b.input("lr", f, &[]);
    let bc1 = b.input("bc1", f, &[]);
    let bc2 = b.input("bc2", f, &[]);
    let clip = b.input("clip", f, &[]);
    for (name, ty) in params {
        let shape = &ty.shape;
        let mut p = b.input(&format!("p.{name}"), ty.dtype, shape);
        let mut g = b.input(&format!("g.{name}"), ty.dtype, shape);
        let m = b.input(&format!("m.{name}"), f, shape);
        let v = b.input(&format!("v.{name}"), f, shape);
        if ty.dtype != f {
            p = p.cast(f);
            g = g.cast(f);
        }
        let g = g * clip;
        let m2 = m * opts.beta1 + g * (1.0 - opts.beta1);
        let v2 = v * opts.beta2 + g * g * (1.0 - opts.beta2);
        let step = (m2 * bc1) / ((v2 * bc2).sqrt() + opts.adam_eps);
        let kept = if decays(shape) && opts.weight_decay != 0.0 {
            p * (1.0 - lr * opts.weight_decay)
        } else {
            p
        };
        let mut p2 = kept - lr * step;
        if ty.dtype != f {
            p2 = p2.cast(ty.dtype);
        }
        b.output(&format!("p.{name}"), p2);
        b.output(&format!("m.{name}"), m2);
        b.output(&format!("v.{name}"), v2);
    }
    Ok(b.build()?)
}
