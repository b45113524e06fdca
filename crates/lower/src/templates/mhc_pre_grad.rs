//! `mhc_pre_grad`: the pre-mix's backward, as five kernels.
//!
//! Input: contiguous row-major operands of one float dtype — `x [T,n,C]`,
//! `fn [m,nC]`, `scale [3]`, `base [m]` (`m = n(n+2)`) and the cotangents
//! `d_li [T,C]`, `d_post [T,n]`, `d_comb [T,n,n]` of `mhc_pre`'s results —
//! and result buffers `d_x [T,n,C]`, `d_fn [m,nC]`, `d_scale [3]`,
//! `d_base [m]`.
//!
//! Design (`k = nC`, temporaries in the compute type):
//!
//! 1. `mhc_pre_grad_fwd`, parallel over tokens: one vector sweep over the
//!    token's row computes the sum of squares and the `m` dot products
//!    with the rows of `fn` (as the in-kernel projection of `mhc_pre`);
//!    it stores the dots `[T,m]`, the RMS factor `f [T]` and the comb
//!    logits `z = dot·f·scale₂ + base [T,n,n]`.
//! 2. `sinkhorn_grad` on the logits and `d_comb` (the `sinkhorn_grad`
//!    template): the logits' cotangent `[T,n,n]`.
//! 3. `mhc_pre_grad`, parallel over tokens: `d_pre_i = Σ_c d_li[c]·x[i,c]`
//!    (a sweep over `C`), the gates' cotangents `dz` (`σ' = σ(1 − σ)`),
//!    the projection's cotangent `g_r = dz_r·scale·f` and the RMS factor's
//!    `Σ_r dz_r·scale·dot_r`; then `d_x = pre ⊗ d_li − (Σ…)·f³·x / k +
//!    Σ_r g_r·fn[r]` in one vector sweep per stream (the `g·fn` product
//!    fused, `m` terms per element). It stores `g`, `dz` and `dz·mixes`
//!    `[T,m]` for the reductions over tokens.
//! 4. `mhc_pre_grad_fn`, parallel over the `m` rows of `fn`:
//!    `d_fn[r] = Σ_t g[t,r]·x[t]` (vector sweeps over `k`, accumulated in
//!    order over `t`), `d_base[r] = Σ_t dz[t,r]` and the per-row partial
//!    `Σ_t dz[t,r]·mixes[t,r]` of `d_scale`.
//! 5. `mhc_pre_grad_scale`: `d_scale[s]`, the sum of its segment's
//!    partials.
//!
//! For `f32` and `f64` the three products with `fn` — the recomputed
//! projection `x·fnᵀ`, `g·fn` (accumulated into `d_x` after step 3) and
//! `d_fn = gᵀ·x` — are the runtime's blocked matrix product
//! (`Stmt::Gemm`), and steps 1, 3 and 4 keep only their per-token and
//! per-row parts; step 4's sums over tokens are then vector loops, which a
//! backend may split into partial sums. The projection is `mhc_pre`'s own
//! (`super::mhc::gemm_projection`: split along its inner dimension and
//! summing each row's squares where the backend does, so step 1 then
//! streams nothing). For `bf16` it is that product too where the backend
//! reads `bf16` operands (the GPU); `g·fn` stays a loop in step 3, as does
//! the projection on other backends, so `bf16` operands need no widened
//! copies; `d_fn = gᵀ·x` is a product as well where the backend's routine
//! reads an `f32` `g` beside a `bf16` `x` and rounds a `bf16` result
//! ([`GemmSupport`]: the GPU), else a loop in step 4 (which then reads
//! `x` once per row of `fn`).
//!
//! Rounding: the forward is recomputed with `mhc_pre`'s operations in its
//! order; the backward's sums start from zero and run in index order (a
//! backend may reassociate the vector reductions). `bf16` operands are
//! widened to `f32` on load; `d_fn` of a `bf16` op is accumulated in an
//! `f32` temporary, so only the results are rounded to `bf16`.

use birkhoff_ir::kernel::{BufferId, Expr, Gemm, Index, Matrix, Stmt, VarId};
use birkhoff_ir::{DType, Op, PreMixSpec, TensorType};

use super::kernel_builder::{
    KernelBuilder, add, at, div, index_coeff, join, load, mul, set, store, unary, var,
};
use super::mhc::{Project, gemm_projection};
use super::sinkhorn_grad::lower_sinkhorn_grad;
use crate::GemmSupport;
use crate::builder::ProgramBuilder;
use crate::error::Result;

/// Buffers, sizes and attributes of a pre-mix backward.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreMixGrad {
    /// `x [T,n,C]`.
    pub x: BufferId,
    /// `fn [m,nC]`.
    pub proj: BufferId,
    /// `scale [3]`.
    pub scale: BufferId,
    /// `base [m]`.
    pub base: BufferId,
    /// The cotangents `d_li [T,C]`, `d_post [T,n]`, `d_comb [T,n,n]`.
    pub cots: [BufferId; 3],
    /// Results: `d_x [T,n,C]`, `d_fn [m,nC]`, `d_scale [3]`, `d_base [m]`.
    pub grads: [BufferId; 4],
    /// `(T, n, C)`.
    pub dims: (usize, usize, usize),
    /// The operands' dtype.
    pub dtype: DType,
    /// The op's attributes.
    pub attrs: PreMixSpec,
}

/// The gate segment of mix `r`.
fn seg(r: usize, n: usize) -> usize {
    if r < n {
        0
    } else if r < 2 * n {
        1
    } else {
        2
    }
}

/// `σ'(z) = σ(z)·σ(−z)` for the value `s = σ(z)`: not `σ(1 − σ)`, whose
/// `1 − σ` of a rounded `σ` keeps few bits for large `z`.
fn dsig(s: VarId, z: Expr) -> Expr {
    mul(var(s), unary(Op::Sigmoid, unary(Op::Neg, z)))
}

/// Appends the kernels of an `mhc_pre_grad`.
///
/// # Errors
/// As [`lower_sinkhorn_grad`] for the Sinkhorn backward.
pub(crate) fn lower_pre_mix_grad(
    pb: &mut ProgramBuilder,
    p: &PreMixGrad,
    support: GemmSupport,
) -> Result<()> {
    let (t, n, c) = p.dims;
    let (m, k, nn) = (n * (n + 2), n * c, n * n);
    let [d_li, d_post, d_comb] = p.cots;
    let [d_x, d_fn, d_scale, d_base] = p.grads;
    let dt = if p.dtype == DType::Bf16 {
        DType::F32
    } else {
        p.dtype
    };
    let temp = |pb: &mut ProgramBuilder, name: &str, shape: &[usize]| {
        pb.temp(
            format!("mhc_pre_grad_{name}"),
            TensorType::new(dt, shape.to_vec()),
        )
    };
    let dots = temp(pb, "dots", &[t, m]);
    let fac = temp(pb, "rms", &[t]);
    let logits = temp(pb, "logits", &[t, n, n]);
    let d_logits = temp(pb, "d_logits", &[t, n, n]);
    let g_buf = temp(pb, "g", &[t, m]);
    let dz_buf = temp(pb, "dz", &[t, m]);
    let dzm_buf = temp(pb, "dz_mixes", &[t, m]);
    let partial = temp(pb, "d_scale_rows", &[m]);
    // f32 and f64 take the runtime's matrix product for the three products
    // with fn (the projection, g·fn and gᵀ·x): blocked and vectorized, far
    // faster than m dot products per token in a sweep. bf16 keeps the loops
    // for the first two, which read bf16 directly instead of widening
    // copies; its d_fn = gᵀ·x is a product too where the backend's routine
    // takes an f32 `g` with a bf16 `x` and rounds a bf16 result (the GPU),
    // so no kernel streams x once per row of fn.
    let gemm = p.dtype != DType::Bf16;
    let dfn_gemm = gemm || (support.bf16_operands && support.bf16_results);
    // The projection is the pre-mix's own (split and summing squares as
    // the backend's product allows) wherever the product reads the
    // operands as they are.
    let proj_gemm = gemm || support.bf16_operands;
    let acc = if dt == p.dtype || dfn_gemm {
        d_fn
    } else {
        temp(pb, "d_fn", &[m, k])
    };
    // dots[T×m] = x[T×k] · fnᵀ, with each row's sum of squares where the
    // product gives it.
    let sumsq = if proj_gemm {
        let project = Project {
            x: p.x,
            weights: p.proj,
            out: dots,
            dims: p.dims,
            rows: m,
            dtype: p.dtype,
        };
        gemm_projection(pb, "mhc_pre_grad", &project, support, Some(dots)).1
    } else {
        None
    };

    // ---- 1: the forward up to the logits ---------------------------------
    let mut kb = KernelBuilder::new(pb, "mhc_pre_grad_fwd", p.dtype);
    let body = vec![kb.parallel(t, |kb, tok| {
        let row = Index::var(tok, index_coeff(k));
        let (ss, f, xv) = (kb.value(), kb.value(), kb.value());
        let dv: Vec<VarId> = (0..m).map(|_| kb.value()).collect();
        let mut body = vec![set(ss, kb.c(0.0))];
        if !proj_gemm {
            body.extend(dv.iter().map(|&d| set(d, kb.c(0.0))));
        }
        match sumsq {
            Some(sq) => body.push(set(ss, load(sq, Index::var(tok, 1)))),
            None => body.push(kb.vector(k, |_, j| {
                let mut b = vec![
                    set(xv, load(p.x, at(&row, j, 1))),
                    set(ss, add(var(ss), mul(var(xv), var(xv)))),
                ];
                if !proj_gemm {
                    b.extend(dv.iter().enumerate().map(|(r, &d)| {
                        let w = load(p.proj, Index::var(j, 1).shifted(index_coeff(r * k)));
                        set(d, add(var(d), mul(var(xv), w)))
                    }));
                }
                b
            })),
        }
        body.push(set(
            f,
            unary(
                Op::Rsqrt,
                add(div(var(ss), kb.c(k as f64)), kb.c(p.attrs.norm_eps.get())),
            ),
        ));
        body.push(store(fac, Index::var(tok, 1), var(f)));
        let drow = Index::var(tok, index_coeff(m));
        let lrow = Index::var(tok, index_coeff(nn));
        let s2 = load(p.scale, Index::constant(2));
        if proj_gemm {
            // The comb logits straight from the product's dots, one vector
            // loop (a backend may spread it over a token's lanes).
            let comb = drow.shifted(index_coeff(2 * n));
            let base = Index::constant(index_coeff(2 * n));
            body.push(kb.vector(nn, |_, q| {
                let z = add(
                    mul(mul(load(dots, at(&comb, q, 1)), var(f)), s2.clone()),
                    load(p.base, at(&base, q, 1)),
                );
                vec![store(logits, at(&lrow, q, 1), z)]
            }));
            return body;
        }
        for (r, &d) in dv.iter().enumerate() {
            body.push(store(dots, drow.clone().shifted(index_coeff(r)), var(d)));
            if r >= 2 * n {
                let z = add(
                    mul(mul(var(d), var(f)), s2.clone()),
                    load(p.base, Index::constant(index_coeff(r))),
                );
                body.push(store(
                    logits,
                    lrow.clone().shifted(index_coeff(r - 2 * n)),
                    z,
                ));
            }
        }
        body
    })];
    pb.push(kb.finish(body));

    // ---- 2: the Sinkhorn backward ------------------------------------------
    lower_sinkhorn_grad(
        pb,
        &p.attrs.sinkhorn,
        (logits, d_comb, d_logits),
        &[t, n, n],
        p.dtype,
    )?;

    // ---- 3: the gates, the RMS factor and d_x ------------------------------
    let mut kb = KernelBuilder::new(pb, "mhc_pre_grad", p.dtype);
    let body = vec![kb.parallel(t, |kb, tok| {
        let row = Index::var(tok, index_coeff(k));
        let li_row = Index::var(tok, index_coeff(c));
        let drow = Index::var(tok, index_coeff(m));
        let f = kb.value();
        let scale: Vec<VarId> = (0..3).map(|_| kb.value()).collect();
        let mut body = vec![set(f, load(fac, Index::var(tok, 1)))];
        body.extend(
            scale
                .iter()
                .enumerate()
                .map(|(i, &s)| set(s, load(p.scale, Index::constant(index_coeff(i))))),
        );
        // d_pre_i = Σ_c d_li[c]·x[i,c].
        let dp: Vec<VarId> = (0..n).map(|_| kb.value()).collect();
        body.extend(dp.iter().map(|&a| set(a, kb.c(0.0))));
        let lv = kb.value();
        body.push(kb.vector(c, |_, cc| {
            let mut b = vec![set(lv, load(d_li, at(&li_row, cc, 1)))];
            b.extend(dp.iter().enumerate().map(|(i, &a)| {
                let xe = load(p.x, at(&row, cc, 1).shifted(index_coeff(i * c)));
                set(a, add(var(a), mul(var(lv), xe)))
            }));
            b
        }));
        // Per mix r: dz_r, g_r = dz_r·scale·f, and the sum Σ_r d_mix·dot.
        let (dfac, dot, mix, sg, dz, dmix) = (
            kb.value(),
            kb.value(),
            kb.value(),
            kb.value(),
            kb.value(),
            kb.value(),
        );
        let gv: Vec<VarId> = (0..m).map(|_| kb.value()).collect();
        let pre: Vec<VarId> = (0..n).map(|_| kb.value()).collect();
        body.push(set(dfac, kb.c(0.0)));
        let (pre_eps, post_mult) = (p.attrs.pre_eps.get(), p.attrs.post_mult.get());
        let post_mult = kb.c(post_mult);
        let pre_eps = (pre_eps != 0.0).then(|| kb.c(pre_eps));
        for r in 0..m {
            let s = scale[seg(r, n)];
            body.push(set(dot, load(dots, drow.clone().shifted(index_coeff(r)))));
            body.push(set(mix, mul(var(dot), var(f))));
            let z = add(
                mul(var(mix), var(s)),
                load(p.base, Index::constant(index_coeff(r))),
            );
            if r < 2 * n {
                body.push(set(sg, unary(Op::Sigmoid, z.clone())));
            }
            if r < n {
                let gate = match &pre_eps {
                    Some(e) => add(var(sg), e.clone()),
                    None => var(sg),
                };
                body.push(set(pre[r], gate));
                body.push(set(dz, mul(var(dp[r]), dsig(sg, z))));
            } else if r < 2 * n {
                let d = mul(
                    load(
                        d_post,
                        Index::var(tok, index_coeff(n)).shifted(index_coeff(r - n)),
                    ),
                    post_mult.clone(),
                );
                body.push(set(dz, mul(d, dsig(sg, z))));
            } else {
                let q = Index::var(tok, index_coeff(nn)).shifted(index_coeff(r - 2 * n));
                body.push(set(dz, load(d_logits, q)));
            }
            let at_r = drow.clone().shifted(index_coeff(r));
            body.push(store(dz_buf, at_r.clone(), var(dz)));
            body.push(store(dzm_buf, at_r.clone(), mul(var(dz), var(mix))));
            body.push(set(dmix, mul(var(dz), var(s))));
            body.push(set(gv[r], mul(var(dmix), var(f))));
            body.push(store(g_buf, at_r, var(gv[r])));
            body.push(set(dfac, add(var(dfac), mul(var(dmix), var(dot)))));
        }
        // coef = −Σ·f³ / k: the RMS factor's share of d_x per unit of x.
        let coef = kb.value();
        body.push(set(
            coef,
            div(
                mul(mul(mul(var(dfac), var(f)), var(f)), var(f)),
                kb.c(-(k as f64)),
            ),
        ));
        for (i, &pr) in pre.iter().enumerate() {
            body.push(kb.vector(c, |_, cc| {
                let j = at(&row, cc, 1).shifted(index_coeff(i * c));
                let direct = mul(var(pr), load(d_li, at(&li_row, cc, 1)));
                let rms = mul(var(coef), load(p.x, j.clone()));
                let back =
                    gv.iter()
                        .enumerate()
                        .filter(|_| !gemm)
                        .fold(None, |s: Option<_>, (r, &g)| {
                            let w = load(
                                p.proj,
                                Index::var(cc, 1).shifted(index_coeff(r * k + i * c)),
                            );
                            let term = mul(var(g), w);
                            Some(match s {
                                None => term,
                                Some(s) => add(s, term),
                            })
                        });
                let v = add(direct, rms);
                let v = match back {
                    Some(b) => add(v, b),
                    None => v,
                };
                vec![store(d_x, j, v)]
            }));
        }
        body
    })];
    pb.push(kb.finish(body));
    if gemm {
        // d_x[T×k] += g[T×m] · fn[m×k].
        push_gemm(
            pb,
            "mhc_pre_grad_dx",
            dt,
            (t, k, m),
            [mat(g_buf, m, 1), mat(p.proj, k, 1), mat(d_x, k, 1)],
            true,
        );
        push_dfn(pb, support, dt, (m, k, t), [g_buf, p.x, d_fn]);
    }

    if dfn_gemm && !gemm {
        // g in f32, x in bf16, d_fn rounded to bf16 once.
        push_dfn(pb, support, dt, (m, k, t), [g_buf, p.x, d_fn]);
    }

    // ---- 4: the reductions over tokens, per row of fn ----------------------
    if dfn_gemm {
        // Only d_base and the d_scale partials are left: a vector loop over
        // the tokens, which a backend may split into partial sums (a GPU
        // spreads it over a block) instead of one serial chain of T adds.
        let mut kb = KernelBuilder::new(pb, "mhc_pre_grad_fn", p.dtype);
        let zero = kb.c(0.0);
        let body = vec![kb.parallel(m, |kb, r| {
            let (db, ds) = (kb.value(), kb.value());
            vec![
                set(db, zero.clone()),
                set(ds, zero.clone()),
                kb.vector(t, |_, tok| {
                    let tr = join(&Index::var(tok, index_coeff(m)), &Index::var(r, 1));
                    vec![
                        set(db, add(var(db), load(dz_buf, tr.clone()))),
                        set(ds, add(var(ds), load(dzm_buf, tr))),
                    ]
                }),
                store(d_base, Index::var(r, 1), var(db)),
                store(partial, Index::var(r, 1), var(ds)),
            ]
        })];
        pb.push(kb.finish(body));
        return lower_d_scale(pb, p, partial, d_scale, m, n);
    }
    let mut kb = KernelBuilder::new(pb, "mhc_pre_grad_fn", p.dtype);
    let zero = kb.c(0.0);
    let body = vec![kb.parallel(m, |kb, r| {
        let frow = Index::var(r, index_coeff(k));
        let (gr, db, ds) = (kb.value(), kb.value(), kb.value());
        let mut body = Vec::new();
        if !gemm {
            body.push(kb.vector(k, |_, j| vec![store(acc, at(&frow, j, 1), zero.clone())]));
        }
        body.push(set(db, zero.clone()));
        body.push(set(ds, zero.clone()));
        body.push(kb.serial(t, |kb, tok| {
            let tr = join(&Index::var(tok, index_coeff(m)), &Index::var(r, 1));
            let xrow = Index::var(tok, index_coeff(k));
            let mut b = vec![
                set(db, add(var(db), load(dz_buf, tr.clone()))),
                set(ds, add(var(ds), load(dzm_buf, tr.clone()))),
            ];
            if !gemm {
                b.push(set(gr, load(g_buf, tr)));
                b.push(kb.vector(k, |_, j| {
                    let a = at(&frow, j, 1);
                    let v = add(
                        load(acc, a.clone()),
                        mul(var(gr), load(p.x, at(&xrow, j, 1))),
                    );
                    vec![store(acc, a, v)]
                }));
            }
            b
        }));
        if !gemm && acc != d_fn {
            body.push(kb.vector(k, |_, j| {
                vec![store(d_fn, at(&frow, j, 1), load(acc, at(&frow, j, 1)))]
            }));
        }
        body.push(store(d_base, Index::var(r, 1), var(db)));
        body.push(store(partial, Index::var(r, 1), var(ds)));
        body
    })];
    pb.push(kb.finish(body));

    lower_d_scale(pb, p, partial, d_scale, m, n)
}

/// Step 5: `d_scale[s]`, the sum of its segment's per-row partials.
fn lower_d_scale(
    pb: &mut ProgramBuilder,
    p: &PreMixGrad,
    partial: BufferId,
    d_scale: BufferId,
    m: usize,
    n: usize,
) -> Result<()> {
    let mut kb = KernelBuilder::new(pb, "mhc_pre_grad_scale", p.dtype);
    let body = vec![kb.parallel(1, |kb, _| {
        (0..3)
            .map(|s| {
                let sum = (0..m)
                    .filter(|&r| seg(r, n) == s)
                    .map(|r| load(partial, Index::constant(index_coeff(r))))
                    .fold(kb.c(0.0), add);
                store(d_scale, Index::constant(index_coeff(s)), sum)
            })
            .collect()
    })];
    pb.push(kb.finish(body));
    Ok(())
}

/// A row-major or transposed view of a whole buffer for a matrix product.
fn mat(buf: BufferId, row_stride: usize, col_stride: usize) -> Matrix {
    Matrix {
        buf,
        offset: 0,
        row_stride,
        col_stride,
        batch_stride: 0,
    }
}

/// Pushes the kernels computing `d_fn[m×k] = gᵀ[m×T] · x[T×k]`, `gᵀ` read
/// in place. Where the backend wants more blocks than the product's
/// columns give ([`GemmSupport::wide_splits`]; `f32` sums only), the
/// tokens are split into parts, a batch of products into an `f32`
/// `[S, m, k]` temporary, and a kernel sums the parts in order.
fn push_dfn(
    pb: &mut ProgramBuilder,
    support: GemmSupport,
    dt: DType,
    (m, k, t): (usize, usize, usize),
    [g, x, d_fn]: [BufferId; 3],
) {
    let splits = if dt == DType::F32 {
        support.wide_splits(k, t)
    } else {
        1
    };
    if splits == 1 {
        push_gemm(
            pb,
            "mhc_pre_grad_dfn",
            dt,
            (m, k, t),
            [mat(g, 1, m), mat(x, k, 1), mat(d_fn, k, 1)],
            false,
        );
        return;
    }
    let part = t / splits;
    let parts = pb.temp(
        "mhc_pre_grad_dfn_parts",
        TensorType::new(dt, [splits, m, k]),
    );
    let kb = KernelBuilder::new(pb, "mhc_pre_grad_dfn", dt);
    let batched = |buf, row_stride, col_stride, batch_stride| Matrix {
        buf,
        offset: 0,
        row_stride,
        col_stride,
        batch_stride,
    };
    let body = vec![Stmt::Gemm(Gemm {
        m,
        n: k,
        k: part,
        batch: splits,
        a: batched(g, 1, m, part * m),
        b: batched(x, k, 1, part * k),
        c: batched(parts, k, 1, m * k),
        accumulate: false,
        row_sumsq: None,
    })];
    pb.push(kb.finish(body));
    // A thread per element: rows × columns, the columns a serial loop the
    // GPU spreads over its grid.
    let mut kb = KernelBuilder::new(pb, "mhc_pre_grad_dfn_sum", dt);
    let body = vec![kb.parallel(m, |kb, r| {
        vec![kb.serial(k, |_, j| {
            let at_rj = Index::var(r, index_coeff(k)).plus(j, 1);
            let sum = (1..splits).fold(load(parts, at_rj.clone()), |acc, s| {
                add(
                    acc,
                    load(parts, at_rj.clone().shifted(index_coeff(s * m * k))),
                )
            });
            vec![store(d_fn, at_rj, sum)]
        })]
    })];
    pb.push(kb.finish(body));
}

/// Pushes a kernel computing `c = a·b` (`c += a·b` if `accumulate`) for
/// `(rows, cols, inner)` = the product's `(m, n, k)`.
fn push_gemm(
    pb: &mut ProgramBuilder,
    name: &str,
    dt: DType,
    (rows, cols, inner): (usize, usize, usize),
    [a, b, c]: [Matrix; 3],
    accumulate: bool,
) {
    let kb = KernelBuilder::new(pb, name, dt);
    let body = vec![Stmt::Gemm(Gemm {
        m: rows,
        n: cols,
        k: inner,
        batch: 1,
        a,
        b,
        c,
        accumulate,
        row_sumsq: None,
    })];
    pb.push(kb.finish(body));
}
