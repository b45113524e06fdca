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
    if x.id.is_none() || w.id.is_none() {
        // Their mistakes are recorded already; no follow-on error.
        return x.b.poisoned();
    }
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

/// Multi-head causal self-attention on `q, k, v [T, C]` (or `[B, T, C]`,
/// `B` independent sequences) with `heads` heads of width `C / heads`: per
/// head `softmax(q kᵀ / sqrt(d) + mask) v`, where the mask hides future
/// positions (`j > i`).
#[track_caller]
pub fn causal_attention<'b>(q: Var<'b>, k: Var<'b>, v: Var<'b>, heads: usize) -> Var<'b> {
    if q.id.is_none() || k.id.is_none() || v.id.is_none() {
        return q.b.poisoned();
    }
    let s = q.shape();
    let r = s.len();
    if !(r == 2 || r == 3) || heads == 0 || !s[r - 1].is_multiple_of(heads) {
        q.b.error(format!(
            "causal_attention needs q [T, C] or [B, T, C] with C divisible by heads={heads}, got {s:?}"
        ));
        return q.b.poisoned();
    }
    let (t, c) = (s[r - 2], s[r - 1]);
    let d = c / heads;
    let lead = &s[..r - 2];
    let with_lead = |tail: &[usize]| [lead, tail].concat();
    // [.., T, H, d] -> [.., H, T, d]; the permutation is its own inverse.
    let perm: &[usize] = if r == 2 { &[1, 0, 2] } else { &[0, 2, 1, 3] };
    let split = |x: Var<'b>| x.reshape(&with_lead(&[t, heads, d])).permute(perm);
    let (qh, kh, vh) = (split(q), split(k), split(v));
    let scores = qh.matmul(kh.transpose()) * (1.0 / (d as f64).sqrt()); // [.., H, T, T]
    let b = q.b;
    let row = b.iota(DType::I32, &[t, t], 0);
    let col = b.iota(DType::I32, &[t, t], 1);
    let visible = col.cmp_le(row);
    let masked = visible.select(scores, b.scalar(f64::NEG_INFINITY, scores.dtype()));
    let p = softmax(masked, r);
    p.matmul(vh).permute(perm).reshape(&with_lead(&[t, c]))
}
