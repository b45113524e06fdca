//! The reference implementations of the semantic and fused ops, which the
//! interpreter runs.
//!
//! Each function is written from `docs/design.md` §2 directly, loop by loop, on
//! row-major `f64` buffers. `store` rounds a stored result and `accumulate` an
//! accumulator step, as the interpreter's precision mode asks (identity in
//! the f64 oracle for f32 values). Sums run in index order, as the
//! primitive ops they replace do. The products of a dot product are
//! accumulator steps, as in `matmul`, not stores: bf16 products are not
//! rounded to bf16.

use crate::op::{PreMixGates, PreMixSpec, SinkhornSpec, SinkhornVariant};

/// Rounding hooks of the current precision mode.
pub(crate) struct Rounding<'a> {
    /// Rounds a stored value.
    pub store: &'a dyn Fn(f64) -> f64,
    /// Rounds an accumulator after a step.
    pub accumulate: &'a dyn Fn(f64) -> f64,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Divides each line along `axis` by its sum plus `eps`.
pub(crate) fn normalize(
    x: &[f64],
    shape: &[usize],
    axis: usize,
    eps: f64,
    r: &Rounding<'_>,
) -> Vec<f64> {
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = x.to_vec();
    for base in line_starts(shape, axis) {
        let mut s = x[base];
        for k in 1..len {
            s = (r.accumulate)(s + x[base + k * inner]);
        }
        let z = (r.store)(s + eps);
        for k in 0..len {
            out[base + k * inner] = (r.store)(x[base + k * inner] / z);
        }
    }
    out
}

/// The flat index of the first element of every line along `axis`.
fn line_starts(shape: &[usize], axis: usize) -> impl Iterator<Item = usize> + use<> {
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    (0..outer).flat_map(move |o| (0..inner).map(move |i| o * len * inner + i))
}

/// Softmax along `axis`, with the maximum subtracted first.
pub(crate) fn softmax(x: &[f64], shape: &[usize], axis: usize, r: &Rounding<'_>) -> Vec<f64> {
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = vec![0.0; x.len()];
    for base in line_starts(shape, axis) {
        let at = |k: usize| base + k * inner;
        let m = (0..len).map(|k| x[at(k)]).fold(f64::NEG_INFINITY, |a, b| {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.max(b)
            }
        });
        let mut s = 0.0;
        for k in 0..len {
            let e = (r.store)((r.store)(x[at(k)] - m).exp());
            out[at(k)] = e;
            s = if k == 0 { e } else { (r.accumulate)(s + e) };
        }
        for k in 0..len {
            out[at(k)] = (r.store)(out[at(k)] / s);
        }
    }
    out
}

/// `x · rsqrt(mean(x², last axis) + eps)`.
pub(crate) fn rms_norm(x: &[f64], shape: &[usize], eps: f64, r: &Rounding<'_>) -> Vec<f64> {
    let n = shape[shape.len() - 1];
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(n) {
        let f = rms_factor(row, eps, r);
        out.extend(row.iter().map(|&v| (r.store)(v * f)));
    }
    out
}

/// `rsqrt(Σ v² / len + eps)` of one row.
fn rms_factor(row: &[f64], eps: f64, r: &Rounding<'_>) -> f64 {
    let mut ss = 0.0;
    for (k, &v) in row.iter().enumerate() {
        let sq = (r.store)(v * v);
        ss = if k == 0 { sq } else { (r.accumulate)(ss + sq) };
    }
    let ms = (r.store)(ss / row.len() as f64);
    (r.store)(1.0 / (r.store)(ms + eps).sqrt())
}

/// Sinkhorn on every trailing `n × n` matrix of `x`.
pub(crate) fn sinkhorn(x: &[f64], n: usize, spec: &SinkhornSpec, r: &Rounding<'_>) -> Vec<f64> {
    let eps = spec.eps.get();
    let mut out = Vec::with_capacity(x.len());
    for m in x.chunks(n * n) {
        let sq = [n, n];
        let mut y = match spec.computed_as() {
            SinkhornVariant::Paper => m.iter().map(|&v| (r.store)(v.exp())).collect(),
            SinkhornVariant::TileKernels => {
                let s = softmax(m, &sq, 1, r);
                if eps == 0.0 {
                    s
                } else {
                    s.into_iter().map(|v| (r.store)(v + eps)).collect()
                }
            }
        };
        let rounds = match spec.computed_as() {
            SinkhornVariant::Paper => spec.iters,
            SinkhornVariant::TileKernels => {
                y = normalize(&y, &sq, 0, eps, r);
                spec.iters - 1
            }
        };
        for _ in 0..rounds {
            y = normalize(&y, &sq, 1, eps, r);
            y = normalize(&y, &sq, 0, eps, r);
        }
        out.extend(y);
    }
    out
}

/// The vector-Jacobian product of [`sinkhorn`] on every trailing `n × n`
/// matrix: `dx` for logits `x` and output cotangent `dy`.
///
/// The forward rounds are recomputed from `x` with the very operations of
/// [`sinkhorn`] (so the states are bit for bit the forward's); then `dy`
/// is carried back through each normalization, last first.
/// For `y = z / s` along a line with `s = Σ z + eps`:
/// `dz = (dy − Σ dy·y) / s`. The start: `paper` `y = exp(x)` gives
/// `dx = dy·y`; `tilekernels` `y = p + eps` with `p = softmax(x)` gives
/// `dx = p·(dy − Σ dy·p)` along rows, `p` recomputed as the forward does.
pub(crate) fn sinkhorn_grad(
    x: &[f64],
    dy: &[f64],
    n: usize,
    spec: &SinkhornSpec,
    r: &Rounding<'_>,
) -> Vec<f64> {
    let eps = spec.eps.get();
    let sq = [n, n];
    let mut out = Vec::with_capacity(x.len());
    for (m, g) in x.chunks(n * n).zip(dy.chunks(n * n)) {
        // states[0] is the start; states[k] the result of normalization k.
        let (start, first_axes): (Vec<f64>, &[usize]) = match spec.computed_as() {
            SinkhornVariant::Paper => (m.iter().map(|&v| (r.store)(v.exp())).collect(), &[]),
            SinkhornVariant::TileKernels => {
                let s = softmax(m, &sq, 1, r);
                let s = if eps == 0.0 {
                    s
                } else {
                    s.into_iter().map(|v| (r.store)(v + eps)).collect()
                };
                (s, &[0])
            }
        };
        let rounds = match spec.computed_as() {
            SinkhornVariant::Paper => spec.iters,
            SinkhornVariant::TileKernels => spec.iters - 1,
        };
        let axes: Vec<usize> = first_axes
            .iter()
            .copied()
            .chain((0..rounds).flat_map(|_| [1, 0]))
            .collect();
        // Checkpoints: every `seg`-th state, so memory is O(√K·n²) rather
        // than O(K·n²) at up to 2·10⁴ normalizations; each segment is
        // recomputed from its checkpoint (deterministically, so bit for bit
        // the forward's states) when the backward reaches it.
        let seg = (axes.len() as f64).sqrt().ceil().max(1.0) as usize;
        let mut checkpoints = vec![start.clone()];
        let mut cur = start;
        for (k, &axis) in axes.iter().enumerate() {
            cur = normalize(&cur, &sq, axis, eps, r);
            if (k + 1) % seg == 0 && k + 1 < axes.len() {
                checkpoints.push(cur.clone());
            }
        }
        let mut d = g.to_vec();
        for (c, base) in checkpoints.iter().enumerate().rev() {
            let (lo, hi) = (c * seg, ((c + 1) * seg).min(axes.len()));
            // states[i] is state lo + i.
            let mut states = vec![base.clone()];
            for &axis in &axes[lo..hi] {
                let next = normalize(&states[states.len() - 1], &sq, axis, eps, r);
                states.push(next);
            }
            for k in (lo..hi).rev() {
                let (z, y) = (&states[k - lo], &states[k - lo + 1]);
                d = normalize_grad(z, y, &d, n, axes[k], eps, r);
            }
        }
        match spec.computed_as() {
            SinkhornVariant::Paper => {
                out.extend(
                    d.iter()
                        .zip(&checkpoints[0])
                        .map(|(&g, &y)| (r.store)(g * y)),
                );
            }
            SinkhornVariant::TileKernels => {
                let p = softmax(m, &sq, 1, r);
                for i in 0..n {
                    let (pr, dr) = (&p[i * n..][..n], &d[i * n..][..n]);
                    let t = dot(pr, dr, r);
                    out.extend(
                        pr.iter()
                            .zip(dr)
                            .map(|(&p, &g)| (r.store)(p * (r.store)(g - t))),
                    );
                }
            }
        }
    }
    out
}

/// `Σ a·b` in index order, products and sums as accumulator steps.
fn dot(a: &[f64], b: &[f64], r: &Rounding<'_>) -> f64 {
    let mut s = (r.accumulate)(a[0] * b[0]);
    for k in 1..a.len() {
        s = (r.accumulate)(s + (r.accumulate)(a[k] * b[k]));
    }
    (r.store)(s)
}

/// The cotangent of `z` for `y = normalize(z)` along `axis` (0: columns,
/// 1: rows) of an `n × n` matrix, given `y`'s cotangent `dy`: per line,
/// `(dy − Σ dy·y) / (Σ z + eps)`, the sum of `z` taken as the forward did.
fn normalize_grad(
    z: &[f64],
    y: &[f64],
    dy: &[f64],
    n: usize,
    axis: usize,
    eps: f64,
    r: &Rounding<'_>,
) -> Vec<f64> {
    // Element k of line l, for rows (axis 1) and columns (axis 0).
    let at = |l: usize, k: usize| if axis == 1 { l * n + k } else { k * n + l };
    let mut out = vec![0.0; n * n];
    for l in 0..n {
        let mut s = z[at(l, 0)];
        for k in 1..n {
            s = (r.accumulate)(s + z[at(l, k)]);
        }
        let s = (r.store)(s + eps);
        let mut t = (r.accumulate)(dy[at(l, 0)] * y[at(l, 0)]);
        for k in 1..n {
            t = (r.accumulate)(t + (r.accumulate)(dy[at(l, k)] * y[at(l, k)]));
        }
        let t = (r.store)(t);
        for k in 0..n {
            out[at(l, k)] = (r.store)((r.store)(dy[at(l, k)] - t) / s);
        }
    }
    out
}

/// Where a pre-mix's `m` projections come from.
#[derive(Clone, Copy)]
pub(crate) enum ProjectionSource<'a> {
    /// `fn [m, nC]`: the pre-mix computes `x·fnᵀ` itself.
    Weights(&'a [f64]),
    /// `mixes [T, m]`: `x·fnᵀ` computed already (`mhc_project`).
    Mixes(&'a [f64]),
}

/// One token's `n·C` row `xt` against every row of `weights [m, nC]`.
fn project_row(xt: &[f64], weights: &[f64], r: &Rounding<'_>) -> impl Iterator<Item = f64> {
    weights.chunks(xt.len()).map(move |row| {
        let mut d = (r.accumulate)(xt[0] * row[0]);
        for j in 1..xt.len() {
            d = (r.accumulate)(d + (r.accumulate)(xt[j] * row[j]));
        }
        d
    })
}

/// `mhc_project`: `x [T,n,C]` times `weightsᵀ` (`weights [m, nC]`).
pub(crate) fn project(x: &[f64], weights: &[f64], t: usize, r: &Rounding<'_>) -> Vec<f64> {
    let k = x.len() / t;
    (0..t)
        .flat_map(|tok| project_row(&x[tok * k..][..k], weights, r).map(|d| (r.store)(d)))
        .collect()
}

/// The pre-mix of `docs/design.md` §2 for `x [T,n,C]`; returns the concatenation of
/// `layer_input [T,C]`, `post_mix [T,n]` and `comb_mix [T,n,n]`.
#[allow(
    clippy::too_many_arguments,
    reason = "mirrors the op's four operands and its shape"
)]
pub(crate) fn pre_mix(
    x: &[f64],
    proj: ProjectionSource<'_>,
    scale: &[f64],
    base: &[f64],
    (t, n, c): (usize, usize, usize),
    norm_eps: f64,
    gates: &PreMixGates,
    r: &Rounding<'_>,
) -> Vec<f64> {
    let k = n * c;
    let m = n * (n + 2);
    let (mut li, mut post, mut comb) = (
        Vec::with_capacity(t * c),
        Vec::with_capacity(t * n),
        Vec::with_capacity(t * n * n),
    );
    for tok in 0..t {
        let xt = &x[tok * k..][..k];
        let f = rms_factor(xt, norm_eps, r);
        let mixes: Vec<f64> = match proj {
            ProjectionSource::Weights(w) => {
                project_row(xt, w, r).map(|d| (r.store)(d * f)).collect()
            }
            ProjectionSource::Mixes(given) => given[tok * m..][..m]
                .iter()
                .map(|&d| (r.store)(d * f))
                .collect(),
        };
        let seg = |j: usize| {
            if j < n {
                0
            } else if j < 2 * n {
                1
            } else {
                2
            }
        };
        let (pre, po, cm): (Vec<f64>, Vec<f64>, Vec<f64>) = match gates {
            PreMixGates::Constrained {
                pre_eps,
                post_mult,
                sinkhorn: spec,
            } => {
                let (pre_eps, post_mult) = (pre_eps.get(), post_mult.get());
                let z: Vec<f64> = (0..m)
                    .map(|j| (r.store)((r.store)(mixes[j] * scale[seg(j)]) + base[j]))
                    .collect();
                (
                    z[..n]
                        .iter()
                        .map(|&v| (r.store)((r.store)(sigmoid(v)) + pre_eps))
                        .collect(),
                    z[n..2 * n]
                        .iter()
                        .map(|&v| (r.store)((r.store)(sigmoid(v)) * post_mult))
                        .collect(),
                    sinkhorn(&z[2 * n..], n, spec, r),
                )
            }
            PreMixGates::Unconstrained => {
                let g = |j: usize| {
                    (r.store)((r.store)(scale[seg(j)] * (r.store)(mixes[j].tanh())) + base[j])
                };
                (
                    (0..n).map(g).collect(),
                    (n..2 * n).map(g).collect(),
                    (2 * n..m).map(g).collect(),
                )
            }
        };
        for cc in 0..c {
            let mut s = (r.accumulate)(pre[0] * xt[cc]);
            for i in 1..n {
                s = (r.accumulate)(s + (r.accumulate)(pre[i] * xt[i * c + cc]));
            }
            li.push((r.store)(s));
        }
        post.extend(po);
        comb.extend(cm);
    }
    li.extend(post);
    li.extend(comb);
    li
}

/// The post-mix: `out[t,j,c] = post[t,j]·f[t,c] + Σ_i comb[t,i,j]·x[t,i,c]`.
pub(crate) fn post_mix(
    f: &[f64],
    x: &[f64],
    post: &[f64],
    comb: &[f64],
    (t, n, c): (usize, usize, usize),
    r: &Rounding<'_>,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(t * n * c);
    for tok in 0..t {
        let xt = &x[tok * n * c..][..n * c];
        let ct = &comb[tok * n * n..][..n * n];
        for j in 0..n {
            for cc in 0..c {
                let mut s = (r.accumulate)(ct[j] * xt[cc]);
                for i in 1..n {
                    s = (r.accumulate)(s + (r.accumulate)(ct[i * n + j] * xt[i * c + cc]));
                }
                let p = (r.store)(post[tok * n + j] * f[tok * c + cc]);
                out.push((r.store)((r.store)(s) + p));
            }
        }
    }
    out
}

/// The vector-Jacobian product of [`post_mix`] for the cotangent `g` of its
/// result: the tuple `(d_f [T,C], d_x [T,n,C], d_post [T,n], d_comb [T,n,n])`,
/// concatenated in that order, with
/// `d_f[t,c] = Σ_j post[t,j]·g[t,j,c]`, `d_x[t,i,c] = Σ_j comb[t,i,j]·g[t,j,c]`,
/// `d_post[t,j] = Σ_c g[t,j,c]·f[t,c]`, `d_comb[t,i,j] = Σ_c x[t,i,c]·g[t,j,c]`.
///
/// Each is a dot product summed in index order from its first term, as the
/// batched `matmul`s of its expansion into primitives sum.
pub(crate) fn post_mix_grad(
    [f, x, post, comb, g]: [&[f64]; 5],
    (t, n, c): (usize, usize, usize),
    r: &Rounding<'_>,
) -> Vec<f64> {
    let (mut d_f, mut d_x) = (Vec::with_capacity(t * c), Vec::with_capacity(t * n * c));
    let (mut d_post, mut d_comb) = (Vec::with_capacity(t * n), Vec::with_capacity(t * n * n));
    // `Σ_k term(k)` over `k < len`; an empty sum (C or n of 0) is 0, as
    // an empty `matmul` contraction is.
    let sum = |len: usize, term: &dyn Fn(usize) -> f64| {
        if len == 0 {
            return 0.0;
        }
        let mut s = (r.accumulate)(term(0));
        for k in 1..len {
            s = (r.accumulate)(s + (r.accumulate)(term(k)));
        }
        (r.store)(s)
    };
    for tok in 0..t {
        let ft = &f[tok * c..][..c];
        let xt = &x[tok * n * c..][..n * c];
        let pt = &post[tok * n..][..n];
        let ct = &comb[tok * n * n..][..n * n];
        let gt = &g[tok * n * c..][..n * c];
        d_f.extend((0..c).map(|cc| sum(n, &|j| pt[j] * gt[j * c + cc])));
        for i in 0..n {
            d_x.extend((0..c).map(|cc| sum(n, &|j| ct[i * n + j] * gt[j * c + cc])));
        }
        d_post.extend((0..n).map(|j| sum(c, &|cc| gt[j * c + cc] * ft[cc])));
        for i in 0..n {
            d_comb.extend((0..n).map(|j| sum(c, &|cc| xt[i * c + cc] * gt[j * c + cc])));
        }
    }
    d_f.extend(d_x);
    d_f.extend(d_post);
    d_f.extend(d_comb);
    d_f
}

/// The vector-Jacobian product of the constrained [`pre_mix`] (`mhc_pre`)
/// for the cotangents `d_li [T,C]`, `d_post [T,n]`, `d_comb [T,n,n]` of its
/// results: the tuple `(d_x [T,n,C], d_fn [m,nC], d_scale [3], d_base [m])`,
/// concatenated in that order.
///
/// Per token the forward is recomputed from `x` (RMS factor `f`, the dot
/// products `dot_r` with the rows of `fn`, `mixes = dot·f`, the logits
/// `z = mixes·scale[seg] + base`, the gates), then, with `σ' = σ(z)·σ(−z)`
/// (not `σ(1 − σ)`: for large `z`, `1 − σ` of a rounded `σ` keeps few of
/// its bits):
/// `dz` is `(Σ_c d_li[c]·x[i,c])·σ'` for the pre gates, `d_post·post_mult·σ'`
/// for the post gates and [`sinkhorn_grad`] of the comb logits;
/// `d_scale[seg] += dz·mixes`, `d_base += dz`; the projection's cotangent
/// is `g = dz·scale[seg]·f`, so `d_fn += g ⊗ x` and
/// `d_x = pre ⊗ d_li + g·fn − (Σ_r dz_r·scale·dot_r)·f³·x / (nC)`.
pub(crate) fn pre_mix_grad(
    [x, proj, scale, base, d_li, d_post, d_comb]: [&[f64]; 7],
    (t, n, c): (usize, usize, usize),
    attrs: &PreMixSpec,
    r: &Rounding<'_>,
) -> Vec<f64> {
    let norm_eps = attrs.norm_eps.get();
    let (pre_eps, post_mult) = (attrs.pre_eps.get(), attrs.post_mult.get());
    let spec = &attrs.sinkhorn;
    let k = n * c;
    let m = n * (n + 2);
    let nn = n * n;
    let seg = |j: usize| {
        if j < n {
            0
        } else if j < 2 * n {
            1
        } else {
            2
        }
    };
    // `Σ_k term(k)` in index order from zero.
    let sum = |len: usize, term: &dyn Fn(usize) -> f64| {
        let mut s = 0.0;
        for q in 0..len {
            s = (r.accumulate)(s + (r.accumulate)(term(q)));
        }
        (r.store)(s)
    };
    let mut d_x = Vec::with_capacity(t * k);
    let mut d_fn = vec![0.0; m * k];
    let mut d_scale = [0.0; 3];
    let mut d_base = vec![0.0; m];
    for tok in 0..t {
        let xt = &x[tok * k..][..k];
        let lt = &d_li[tok * c..][..c];
        let f = rms_factor(xt, norm_eps, r);
        let dots: Vec<f64> = (0..m)
            .map(|q| sum(k, &|j| xt[j] * proj[q * k + j]))
            .collect();
        let mixes: Vec<f64> = dots.iter().map(|&d| (r.store)(d * f)).collect();
        let z: Vec<f64> = (0..m)
            .map(|q| (r.store)((r.store)(mixes[q] * scale[seg(q)]) + base[q]))
            .collect();
        let sig: Vec<f64> = z[..2 * n].iter().map(|&v| (r.store)(sigmoid(v))).collect();
        // σ'(z) = σ(z)·σ(−z).
        let dsig: Vec<f64> = z[..2 * n]
            .iter()
            .zip(&sig)
            .map(|(&v, &s)| (r.store)(s * (r.store)(sigmoid(-v))))
            .collect();
        let pre: Vec<f64> = sig[..n].iter().map(|&s| (r.store)(s + pre_eps)).collect();
        let mut dz = Vec::with_capacity(m);
        for i in 0..n {
            let d_pre = sum(c, &|cc| lt[cc] * xt[i * c + cc]);
            dz.push((r.store)(d_pre * dsig[i]));
        }
        for i in 0..n {
            let d = (r.store)(d_post[tok * n + i] * post_mult);
            dz.push((r.store)(d * dsig[n + i]));
        }
        dz.extend(sinkhorn_grad(
            &z[2 * n..],
            &d_comb[tok * nn..][..nn],
            n,
            spec,
            r,
        ));
        let d_mix: Vec<f64> = (0..m).map(|q| (r.store)(dz[q] * scale[seg(q)])).collect();
        for q in 0..m {
            d_scale[seg(q)] = (r.accumulate)(d_scale[seg(q)] + (r.accumulate)(dz[q] * mixes[q]));
            d_base[q] = (r.accumulate)(d_base[q] + dz[q]);
        }
        let g: Vec<f64> = d_mix.iter().map(|&d| (r.store)(d * f)).collect();
        let d_f = sum(m, &|q| d_mix[q] * dots[q]);
        let coef = (r.store)(-d_f * f * f * f / k as f64);
        for j in 0..k {
            let (i, cc) = (j / c, j % c);
            let back = sum(m, &|q| g[q] * proj[q * k + j]);
            let direct = (r.store)(pre[i] * lt[cc]);
            d_x.push((r.store)(
                (r.store)(direct + (r.store)(coef * xt[j])) + back,
            ));
            for q in 0..m {
                d_fn[q * k + j] = (r.accumulate)(d_fn[q * k + j] + (r.accumulate)(g[q] * xt[j]));
            }
        }
    }
    d_x.extend(d_fn.into_iter().map(|v| (r.store)(v)));
    d_x.extend(d_scale.into_iter().map(|v| (r.store)(v)));
    d_x.extend(d_base.into_iter().map(|v| (r.store)(v)));
    d_x
}
