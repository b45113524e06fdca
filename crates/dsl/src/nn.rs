//! Composite layers, expanded to primitive ops.
//!
//! Nothing here adds a new op: each function writes the math the way a
//! paper does, so that the optimizer has to discover the structure.

use birkhoff_ir::DType;

use crate::builder::Var;

/// RMSNorm over the last axis: `x · rsqrt(mean(x²) + eps) · weight`
/// (`weight` over the last axis, optional).
#[track_caller]
pub fn rms_norm<'b>(x: Var<'b>, weight: Option<Var<'b>>, eps: f64) -> Var<'b> {
    let last = x.rank().saturating_sub(1);
    let ms = (x * x).mean(&[last], true);
    let y = x * (ms + eps).rsqrt();
    match weight {
        Some(w) => y * w,
        None => y,
    }
}

/// Softmax along `axis`: `exp(x - max) / sum(exp(x - max))`.
#[track_caller]
pub fn softmax(x: Var<'_>, axis: usize) -> Var<'_> {
    let e = (x - x.max_over(&[axis], true)).exp();
    e / e.sum(&[axis], true)
}

/// SiLU (swish): `x · sigmoid(x)`.
#[track_caller]
pub fn silu(x: Var<'_>) -> Var<'_> {
    x * x.sigmoid()
}

/// `x · w` for `x [..., K]` and `w [K, N]`: leading axes of `x` are
/// flattened into rows for one matrix product.
#[track_caller]
pub fn linear<'b>(x: Var<'b>, w: Var<'b>) -> Var<'b> {
    let xs = x.shape();
    let ws = w.shape();
    if xs.is_empty() || ws.len() != 2 {
        x.b.error(format!(
            "linear needs x of rank >= 1 and a rank-2 weight, got {xs:?} and {ws:?}"
        ));
        return x.b.poisoned();
    }
    let k = xs[xs.len() - 1];
    let rows: usize = xs[..xs.len() - 1].iter().product();
    let y = x.reshape(&[rows, k]).matmul(w);
    let mut out = xs[..xs.len() - 1].to_vec();
    out.push(ws[1]);
    y.reshape(&out)
}

/// Multi-head causal self-attention on `q, k, v [T, C]` with `heads`
/// heads of width `C / heads`: per head `softmax(q kᵀ / sqrt(d) + mask) v`,
/// where the mask hides future positions (`j > i`).
#[track_caller]
pub fn causal_attention<'b>(q: Var<'b>, k: Var<'b>, v: Var<'b>, heads: usize) -> Var<'b> {
    let s = q.shape();
    if s.len() != 2 || heads == 0 || !s[1].is_multiple_of(heads) {
        q.b.error(format!(
            "causal_attention needs q [T, C] with C divisible by heads={heads}, got {s:?}"
        ));
        return q.b.poisoned();
    }
    let (t, c) = (s[0], s[1]);
    let d = c / heads;
    let split = |x: Var<'b>| x.reshape(&[t, heads, d]).permute(&[1, 0, 2]); // [H, T, d]
    let (qh, kh, vh) = (split(q), split(k), split(v));
    let scores = qh.matmul(kh.transpose()) * (1.0 / (d as f64).sqrt()); // [H, T, T]
    let b = q.b;
    let row = b.iota(DType::I32, &[t, t], 0);
    let col = b.iota(DType::I32, &[t, t], 1);
    let visible = col.cmp_le(row);
    let masked = visible.select(scores, b.scalar(f64::NEG_INFINITY, scores.dtype()));
    let p = softmax(masked, 2);
    p.matmul(vh).permute(&[1, 0, 2]).reshape(&[t, c])
}
