//! mHC and HC in primitive ops, exactly per `docs/design.md` §2.
//!
//! Shapes: `x [T, n, C]` is the widened residual stream, `m = n(n+2)` the
//! number of mixing coefficients per token, `fn [m, n·C]`, `scale [3]`,
//! `base [m]`.

use crate::builder::Var;
use crate::var::concat;

pub use birkhoff_ir::SinkhornVariant;

/// Settings of one Sinkhorn projection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SinkhornConfig {
    /// Which iteration.
    pub variant: SinkhornVariant,
    /// `paper`: rounds of (row, column) normalization; `tilekernels`: the
    /// `repeat` count (one column normalization plus `iters - 1` rounds).
    pub iters: usize,
    /// Added to every normalizing denominator (and, for `tilekernels`, to
    /// the softmax output).
    pub eps: f64,
}

/// TileKernels' projection, 20 repeats, its eps (1e-6): the zoo's default.
impl Default for SinkhornConfig {
    fn default() -> Self {
        let variant = SinkhornVariant::TileKernels;
        SinkhornConfig {
            variant,
            iters: 20,
            eps: variant.default_eps(),
        }
    }
}

/// Settings of an mHC pre-mix.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MhcConfig {
    /// Added to the mean square before the rsqrt.
    pub norm_eps: f64,
    /// Added to `sigmoid` of the pre gates.
    pub pre_eps: f64,
    /// Multiplies `sigmoid` of the post gates (the paper's 2).
    pub post_mult: f64,
    /// The projection of the residual mixing matrix.
    pub sinkhorn: SinkhornConfig,
}

/// DeepSeek's settings, the zoo's defaults: `norm_eps = pre_eps = 1e-6`,
/// `post_mult = 2`, [`SinkhornConfig::default`].
impl Default for MhcConfig {
    fn default() -> Self {
        MhcConfig {
            norm_eps: 1e-6,
            pre_eps: 1e-6,
            post_mult: 2.0,
            sinkhorn: SinkhornConfig::default(),
        }
    }
}

/// The weights of one mHC / HC connection.
#[derive(Clone, Copy, Debug)]
pub struct MixParams<'b> {
    /// `fn [m, n·C]`.
    pub proj: Var<'b>,
    /// `scale [3]`.
    pub scale: Var<'b>,
    /// `base [m]`.
    pub base: Var<'b>,
}

/// `x / (sum(x, axis) + eps)`; no add when `eps == 0`.
#[track_caller]
fn normalize(x: Var<'_>, axis: usize, eps: f64) -> Var<'_> {
    let s = x.sum(&[axis], true);
    x / if eps == 0.0 { s } else { s + eps }
}

/// Sinkhorn-Knopp on `comb [T, n, n]`: rows are the last axis.
#[track_caller]
pub fn sinkhorn<'b>(comb: Var<'b>, cfg: &SinkhornConfig) -> Var<'b> {
    let (row, col) = (2, 1);
    let eps = cfg.eps;
    match cfg.variant {
        SinkhornVariant::Paper => {
            let mut m = comb.exp();
            for _ in 0..cfg.iters {
                m = normalize(m, row, eps);
                m = normalize(m, col, eps);
            }
            m
        }
        SinkhornVariant::TileKernels => {
            let mut m = crate::nn::softmax(comb, row);
            if eps != 0.0 {
                m = m + eps;
            }
            m = normalize(m, col, eps);
            for _ in 1..cfg.iters {
                m = normalize(m, row, eps);
                m = normalize(m, col, eps);
            }
            m
        }
    }
}

/// `mixes[t, k] = (Σ_j x[t,j] fn[k,j]) · rsqrt(Σ_j x[t,j]² / (n·C) + norm_eps)`
/// over the flattened `j`; `[T, m]`.
#[track_caller]
pub fn pre_norm_fn<'b>(x: Var<'b>, proj: Var<'b>, norm_eps: f64) -> Var<'b> {
    if x.id.is_none() || proj.id.is_none() {
        return x.b.poisoned();
    }
    let s = x.shape();
    if s.len() != 3 {
        x.b.error(format!("the residual stream must be [T, n, C], got {s:?}"));
        return x.b.poisoned();
    }
    let (t, k) = (s[0], s[1] * s[2]);
    let xf = x.reshape(&[t, k]);
    let dots = xf.matmul(proj.transpose());
    let ms = (xf * xf).sum(&[1], true) * (1.0 / k as f64);
    dots * (ms + norm_eps).rsqrt()
}

/// `layer_input[t, c] = Σ_i pre[t, i] · x[t, i, c]`.
#[track_caller]
pub fn apply_mix<'b>(pre: Var<'b>, x: Var<'b>) -> Var<'b> {
    let s = x.shape();
    let (t, n, c) = (
        s.first().copied().unwrap_or(0),
        s.get(1).copied().unwrap_or(0),
        s.get(2).copied().unwrap_or(0),
    );
    pre.reshape(&[t, 1, n]).matmul(x).reshape(&[t, c])
}

/// The mHC pre-mix: returns `(layer_input [T, C], post_mix [T, n], comb_mix [T, n, n])`.
#[track_caller]
pub fn mhc_pre<'b>(x: Var<'b>, p: &MixParams<'b>, cfg: &MhcConfig) -> (Var<'b>, Var<'b>, Var<'b>) {
    let s = x.shape();
    let (t, n) = (
        s.first().copied().unwrap_or(0),
        s.get(1).copied().unwrap_or(0),
    );
    let m = n * (n + 2);
    let mixes = pre_norm_fn(x, p.proj, cfg.norm_eps);
    // z = mixes ⊙ [scale0 ×n, scale1 ×n, scale2 ×n²] + base
    let sc = |i: usize, len: usize| p.scale.slice(&[i], &[i + 1]).broadcast_to(&[len]);
    let scale_vec =
        concat(&[sc(0, n), sc(1, n), sc(2, n * n)], 0).unwrap_or_else(|| x.b.poisoned());
    let z = mixes * scale_vec + p.base;
    let pre = z.slice(&[0, 0], &[t, n]).sigmoid() + cfg.pre_eps;
    let post = z.slice(&[0, n], &[t, 2 * n]).sigmoid() * cfg.post_mult;
    let comb = z.slice(&[0, 2 * n], &[t, m]).reshape(&[t, n, n]);
    let comb = sinkhorn(comb, &cfg.sinkhorn);
    (apply_mix(pre, x), post, comb)
}

/// The unconstrained HC pre-mix (tanh gates, no projection): returns
/// `(layer_input, post_mix, comb_mix)` like [`mhc_pre`].
#[track_caller]
pub fn hc_pre<'b>(x: Var<'b>, p: &MixParams<'b>, norm_eps: f64) -> (Var<'b>, Var<'b>, Var<'b>) {
    let s = x.shape();
    let (t, n) = (
        s.first().copied().unwrap_or(0),
        s.get(1).copied().unwrap_or(0),
    );
    let m = n * (n + 2);
    let mixes = pre_norm_fn(x, p.proj, norm_eps);
    let gate = |i: usize, lo: usize, hi: usize| {
        let scale = p.scale.slice(&[i], &[i + 1]).reshape(&[]);
        scale * mixes.slice(&[0, lo], &[t, hi]).tanh() + p.base.slice(&[lo], &[hi])
    };
    let pre = gate(0, 0, n);
    let post = gate(1, n, 2 * n);
    let comb = gate(2, 2 * n, m).reshape(&[t, n, n]);
    (apply_mix(pre, x), post, comb)
}

/// The post-mix: `x_next[t, j, c] = post[t, j] · f_out[t, c] + Σ_i comb[t, i, j] · x[t, i, c]`.
#[track_caller]
pub fn mhc_post<'b>(f_out: Var<'b>, x: Var<'b>, post: Var<'b>, comb: Var<'b>) -> Var<'b> {
    let s = x.shape();
    let (t, n, c) = (
        s.first().copied().unwrap_or(0),
        s.get(1).copied().unwrap_or(0),
        s.get(2).copied().unwrap_or(0),
    );
    let mixed = comb.transpose().matmul(x);
    mixed + post.reshape(&[t, n, 1]) * f_out.reshape(&[t, 1, c])
}
