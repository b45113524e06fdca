//! The fused mHC kernels (`docs/design.md` §2): the pre-mix of `mhc_pre` and
//! `hc_pre`, and the post-mix `mhc_post`.
//!
//! Input: contiguous row-major operands of one float dtype —
//! `x [T,n,C]`, `fn [m,nC]`, `scale [3]`, `base [m]` with `m = n(n+2)` for
//! the pre-mix, `f [T,C]`, `x [T,n,C]`, `post [T,n]`, `comb [T,n,n]` for
//! the post-mix — and result buffers of the op's result types.
//!
//! **Pre-mix.** Every token is independent, so the kernel is one parallel
//! loop over tokens. Per token:
//!
//! 1. *PreMixProjection.* With [`PreMixProjection::InKernel`], one vector sweep over
//!    the token's `n·C` row updates `m + 1` accumulators — the `m` dot
//!    products with the rows of `fn` and the sum of squares — reading each
//!    element of `x` from memory once. With [`PreMixProjection::Gemm`], a
//!    matrix product `x · fnᵀ` into a `[T, m]` temporary runs first (as
//!    its own kernel, where the runtime's blocked GEMM reuses each tile of
//!    `fn` across tokens; `bf16` operands are widened to `f32` copies
//!    first unless the backend's product reads `bf16`), and the sweep only
//!    sums squares — or, where the product sums each row's squares as it
//!    streams the row ([`crate::GemmSupport::row_sumsq`], the GPU), there
//!    is no sweep and the kernel reads the sums.
//! 2. *Epilogue* on `m` scalars in a scratch array: the RMS factor, the
//!    split with `scale` and `base`, the gates (sigmoid or tanh), and for
//!    mHC the Sinkhorn projection of `comb` in scratch
//!    ([`super::sinkhorn::project`]). `post_mix` and `comb_mix` are
//!    written here.
//! 3. *apply_mix*: a second vector sweep over the (now cache-hot) row,
//!    `layer_input[c] = Σ_i pre_i · x[i, c]` with the `n` gates in
//!    variables.
//!
//! **Post-mix.** Parallel over tokens; the token's `n²` mixing weights and
//! `n` post gates go to variables, then one vector sweep over `C` reads
//! the `n` residual rows and `f` once and writes the `n` output rows.
//!
//! Every result is computed with the reference's operations in its order
//! (dot products and the sum of squares start from zero instead of from
//! their first term, which can change nothing but the sign of a zero). Values stay in the compute type
//! between steps: `bf16` operands are widened to `f32` on load, and only
//! the results (and nothing in between) are rounded to `bf16`.

use birkhoff_ir::kernel::{BufferId, Gemm, Index, LocalId, Matrix, Stmt, VarId};
use birkhoff_ir::{DType, Op, PreMixGates, TensorType};

use super::kernel_builder::{
    KernelBuilder, add, at, div, index_coeff, load, load_local, mul, set, store, store_local,
    unary, var,
};
use super::sinkhorn::{Scratch, project};
use crate::builder::ProgramBuilder;
use crate::{GemmSupport, LowerOptions, PreMixProjection};

/// Buffers and sizes of a pre-mix.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreMix {
    /// `x [T,n,C]`.
    pub x: BufferId,
    /// `fn [m,nC]`.
    pub proj: BufferId,
    /// `scale [3]`.
    pub scale: BufferId,
    /// `base [m]`.
    pub base: BufferId,
    /// `layer_input [T,C]`.
    pub layer_input: BufferId,
    /// `post_mix [T,n]`.
    pub post: BufferId,
    /// `comb_mix [T,n,n]`.
    pub comb: BufferId,
    /// `(T, n, C)`.
    pub dims: (usize, usize, usize),
    /// The operands' dtype.
    pub dtype: DType,
    /// Only `layer_input` is read: the post gates and the residual mix
    /// (its Sinkhorn projection) are neither computed nor stored. A
    /// replayed pre-mix is read only for its layer input.
    pub layer_input_only: bool,
}

/// The operands and result of a projection `x · weightsᵀ`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Project {
    /// `x [T,n,C]`.
    pub x: BufferId,
    /// `weights [rows, nC]`.
    pub weights: BufferId,
    /// `out [T, rows]` (`f32` for `bf16` operands).
    pub out: BufferId,
    /// `(T, n, C)`.
    pub dims: (usize, usize, usize),
    /// The number of rows of `weights`.
    pub rows: usize,
    /// The operands' dtype.
    pub dtype: DType,
}

/// Appends the kernels of an `mhc_project` (named `what`): the matrix
/// product `mhc_pre` runs for its projection, exactly (the same call, so
/// the same bits), into the op's result.
pub(crate) fn lower_project(pb: &mut ProgramBuilder, what: &str, p: &Project, gemm: GemmSupport) {
    // The result holds only the products, so the product's sums of squares
    // are not asked for; `mhc_pre_projected` sums them itself.
    let support = GemmSupport {
        row_sumsq: false,
        ..gemm
    };
    gemm_projection(pb, what, p, support, Some(p.out));
}

/// Appends the kernels of an `mhc_pre` / `hc_pre` (named `what`).
pub(crate) fn lower_pre_mix(
    pb: &mut ProgramBuilder,
    what: &str,
    p: &PreMix,
    norm_eps: f64,
    gates: &PreMixGates,
    opts: &LowerOptions,
) {
    let (_, n, _) = p.dims;
    let proj = (opts.projection == PreMixProjection::Gemm).then(|| {
        let project = Project {
            x: p.x,
            weights: p.proj,
            out: p.proj,
            dims: p.dims,
            rows: n * (n + 2),
            dtype: p.dtype,
        };
        gemm_projection(pb, what, &project, opts.gemm, None)
    });
    pre_mix_kernel(
        pb,
        what,
        p,
        norm_eps,
        gates,
        proj,
        opts.scalar_kernels_apart,
    );
}

/// Appends the kernel of an `mhc_pre_projected` (named `what`): the
/// per-token kernel of a GEMM-projected `mhc_pre`, with `p.proj` the
/// projection's result `[T, m]`.
pub(crate) fn lower_pre_mix_projected(
    pb: &mut ProgramBuilder,
    what: &str,
    p: &PreMix,
    norm_eps: f64,
    gates: &PreMixGates,
    apart: bool,
) {
    let proj = Some((p.proj, None));
    pre_mix_kernel(pb, what, p, norm_eps, gates, proj, apart);
}

/// The per-token pre-mix kernel. `proj` is the projection's result and,
/// when the product summed them, each token's sum of squares; `None`
/// computes the projection in the kernel from the weights `p.proj`.
///
/// With `apart` ([`LowerOptions::scalar_kernels_apart`]), a projected
/// pre-mix whose gates include the Sinkhorn projection is two kernels: the
/// gates (`{what}_gates`, storing the pre gates to a `[T, n]` temporary in
/// the compute type) and the sweep that applies them.
fn pre_mix_kernel(
    pb: &mut ProgramBuilder,
    what: &str,
    p: &PreMix,
    norm_eps: f64,
    gates: &PreMixGates,
    proj: Option<(BufferId, Option<BufferId>)>,
    apart: bool,
) {
    let (t, n, c) = p.dims;
    let (m, k) = (n * (n + 2), n * c);
    let sinkhorn = matches!(gates, PreMixGates::Constrained { .. }) && !p.layer_input_only;
    let handed = (apart && sinkhorn && proj.is_some()).then(|| {
        let dt = if p.dtype == DType::Bf16 {
            DType::F32
        } else {
            p.dtype
        };
        pb.temp(format!("{what}_pre_gates"), TensorType::new(dt, [t, n]))
    });
    let name = match handed {
        Some(_) => format!("{what}_gates"),
        None => what.to_string(),
    };
    let mut kb = KernelBuilder::new(pb, &name, p.dtype);
    let mixes = kb.local(m);
    let sc = sinkhorn.then(|| Scratch::new(&mut kb, n));
    let body = vec![kb.parallel(t, |kb, tok| {
        let row = Index::var(tok, index_coeff(k));
        let (ss, f) = (kb.value(), kb.value());
        let mut body = vec![set(ss, kb.c(0.0))];
        match proj {
            None => {
                // One sweep: m dot products and the sum of squares.
                let dots: Vec<VarId> = (0..m).map(|_| kb.value()).collect();
                body.extend(dots.iter().map(|&d| set(d, kb.c(0.0))));
                let xv = kb.value();
                body.push(kb.vector(k, |_, j| {
                    let mut b = vec![
                        set(xv, load(p.x, at(&row, j, 1))),
                        set(ss, add(var(ss), mul(var(xv), var(xv)))),
                    ];
                    b.extend(dots.iter().enumerate().map(|(r, &d)| {
                        let w = load(p.proj, Index::var(j, 1).shifted(index_coeff(r * k)));
                        set(d, add(var(d), mul(var(xv), w)))
                    }));
                    b
                }));
                body.push(rms_factor(kb, f, ss, k, norm_eps));
                body.extend(dots.iter().enumerate().map(|(r, &d)| {
                    store_local(mixes, Index::constant(index_coeff(r)), mul(var(d), var(f)))
                }));
            }
            Some((tmp, sumsq)) => {
                match sumsq {
                    // The matrix product summed the squares already.
                    Some(sq) => body.push(set(ss, load(sq, Index::var(tok, 1)))),
                    None => {
                        let xv = kb.value();
                        body.push(kb.vector(k, |_, j| {
                            vec![
                                set(xv, load(p.x, at(&row, j, 1))),
                                set(ss, add(var(ss), mul(var(xv), var(xv)))),
                            ]
                        }));
                    }
                }
                body.push(rms_factor(kb, f, ss, k, norm_eps));
                let trow = Index::var(tok, index_coeff(m));
                body.push(kb.vector(m, |_, r| {
                    vec![store_local(
                        mixes,
                        Index::var(r, 1),
                        mul(load(tmp, at(&trow, r, 1)), var(f)),
                    )]
                }));
            }
        }
        let pre = epilogue(kb, p, &mut body, (tok, handed), mixes, gates, sc);
        if handed.is_none() {
            body.push(apply_mix(kb, p, tok, &pre));
        }
        body
    })];
    pb.push(kb.finish(body));
    if let Some(g) = handed {
        let mut kb = KernelBuilder::new(pb, what, p.dtype);
        let body = vec![kb.parallel(t, |kb, tok| {
            let pre: Vec<VarId> = (0..n).map(|_| kb.value()).collect();
            let row = Index::var(tok, index_coeff(n));
            let mut body: Vec<Stmt> = pre
                .iter()
                .enumerate()
                .map(|(i, &v)| set(v, load(g, row.clone().shifted(index_coeff(i)))))
                .collect();
            body.push(apply_mix(kb, p, tok, &pre));
            body
        })];
        pb.push(kb.finish(body));
    }
}

/// Appends the kernels computing `mixes [T, m] = x · fnᵀ` with the
/// runtime's matrix product into `out` (a new temporary if `None`) and
/// returns the buffer holding it, and the one holding each token's sum of
/// squares when the product computes it.
///
/// The product is `f32` for `bf16` operands: the reference does not round
/// a dot product before scaling it either. A routine that cannot read
/// `bf16` gets `f32` copies of the operands, widened (exactly) by a copy
/// kernel first.
pub(crate) fn gemm_projection(
    pb: &mut ProgramBuilder,
    what: &str,
    p: &Project,
    support: GemmSupport,
    out: Option<BufferId>,
) -> (BufferId, Option<BufferId>) {
    let (t, n, c) = p.dims;
    let (m, k) = (p.rows, n * c);
    let (x, proj) = if p.dtype == DType::Bf16 && !support.bf16_operands {
        let wide = |pb: &mut ProgramBuilder, name: &str, rows| {
            pb.temp(
                format!("{what}_{name}_f32"),
                TensorType::new(DType::F32, [rows, k]),
            )
        };
        let (xw, fw) = (wide(pb, "x", t), wide(pb, "fn", m));
        let mut kb = KernelBuilder::new(pb, &format!("{what}_widen"), p.dtype);
        let copy = |kb: &mut KernelBuilder, from: BufferId, to: BufferId, rows: usize| {
            kb.parallel(rows, |kb, r| {
                let row = Index::var(r, index_coeff(k));
                vec![kb.vector(k, |_, j| {
                    vec![store(to, at(&row, j, 1), load(from, at(&row, j, 1)))]
                })]
            })
        };
        let body = vec![copy(&mut kb, p.x, xw, t), copy(&mut kb, p.weights, fw, m)];
        pb.push(kb.finish(body));
        (xw, fw)
    } else {
        (p.x, p.weights)
    };
    let dt = if p.dtype == DType::Bf16 {
        DType::F32
    } else {
        p.dtype
    };
    let tmp = out.unwrap_or_else(|| pb.temp(format!("{what}_mixes"), TensorType::new(dt, [t, m])));
    let sumsq = support
        .row_sumsq
        .then(|| pb.temp(format!("{what}_sumsq"), TensorType::new(dt, [t])));
    let splits = support.k_splits(t, k);
    // Split: part s of the product covers columns s·k/S.. of x and of fn,
    // into its own slice of a [S, T, m] temporary (and [S, T] sums).
    let (parts, part_sq) = if splits > 1 {
        let parts = pb.temp(
            format!("{what}_mix_parts"),
            TensorType::new(dt, [splits, t, m]),
        );
        let sq = sumsq.map(|_| {
            pb.temp(
                format!("{what}_sumsq_parts"),
                TensorType::new(dt, [splits, t]),
            )
        });
        (parts, sq)
    } else {
        (tmp, sumsq)
    };
    let part = k / splits;
    let kb = KernelBuilder::new(pb, &format!("{what}_proj"), dt);
    // One part has no batch to stride over.
    let matrix = |buf, row_stride, col_stride, batch_stride: usize| Matrix {
        buf,
        offset: 0,
        row_stride,
        col_stride,
        batch_stride: if splits > 1 { batch_stride } else { 0 },
    };
    // mixes[T×m] = x[T×nC] · fnᵀ, fnᵀ read in place (column stride nC).
    let body = vec![Stmt::Gemm(Gemm {
        m: t,
        n: m,
        k: part,
        batch: splits,
        a: matrix(x, k, 1, part),
        b: matrix(proj, 1, k, part),
        c: matrix(parts, m, 1, t * m),
        accumulate: false,
        row_sumsq: part_sq.map(|sq| matrix(sq, 1, 1, t)),
    })];
    pb.push(kb.finish(body));
    if splits > 1 {
        sum_parts(pb, what, dt, (t, m, splits), (parts, part_sq), (tmp, sumsq));
    }
    (tmp, sumsq)
}

/// The kernel summing a split projection's parts, in order:
/// `out[t, r] = Σ_s parts[s, t, r]` and `sumsq[t] = Σ_s sq_parts[s, t]`.
fn sum_parts(
    pb: &mut ProgramBuilder,
    what: &str,
    dt: DType,
    (t, m, splits): (usize, usize, usize),
    (parts, part_sq): (BufferId, Option<BufferId>),
    (out, sumsq): (BufferId, Option<BufferId>),
) {
    let mut kb = KernelBuilder::new(pb, &format!("{what}_proj_sum"), dt);
    let body = vec![kb.parallel(t, |kb, tok| {
        let total = |row: Index, stride: usize| {
            (1..splits).fold(load(parts, row.clone()), |acc, s| {
                add(
                    acc,
                    load(parts, row.clone().shifted(index_coeff(s * stride))),
                )
            })
        };
        let row = Index::var(tok, index_coeff(m));
        let mut body = Vec::new();
        // The sum of squares first: the consumer reads it before the
        // mixes, and with nothing stored between the two loops over the
        // mixes, fusion can merge them and forward the sums.
        if let (Some(sq), Some(out_sq)) = (part_sq, sumsq) {
            let at_tok = Index::var(tok, 1);
            let sum = (1..splits).fold(load(sq, at_tok.clone()), |acc, s| {
                add(acc, load(sq, at_tok.clone().shifted(index_coeff(s * t))))
            });
            body.push(store(out_sq, at_tok, sum));
        }
        body.push(kb.vector(m, |_, r| {
            vec![store(out, at(&row, r, 1), total(at(&row, r, 1), t * m))]
        }));
        body
    })];
    pb.push(kb.finish(body));
}

/// `f = rsqrt(ss / len + eps)`.
fn rms_factor(kb: &KernelBuilder, f: VarId, ss: VarId, len: usize, eps: f64) -> Stmt {
    set(
        f,
        unary(Op::Rsqrt, add(div(var(ss), kb.c(len as f64)), kb.c(eps))),
    )
}

/// The split, gates and projection of one token whose `m` mixes are in
/// the scratch array `mixes`: writes `post_mix` and `comb_mix` and returns
/// the variables holding the `n` pre gates — or, for Sinkhorn gates with
/// a buffer `pre_to` (`[T, n]`), stores them there in a vector loop, as
/// every other gate is, and returns no variables.
fn epilogue(
    kb: &mut KernelBuilder,
    p: &PreMix,
    body: &mut Vec<Stmt>,
    (tok, pre_to): (VarId, Option<BufferId>),
    mixes: LocalId,
    gates: &PreMixGates,
    sc: Option<Scratch>,
) -> Vec<VarId> {
    let (_, n, _) = p.dims;
    let nn = n * n;
    let scale: Vec<VarId> = (0..3).map(|_| kb.value()).collect();
    body.extend(
        scale
            .iter()
            .enumerate()
            .map(|(i, &s)| set(s, load(p.scale, Index::constant(index_coeff(i))))),
    );
    // Mix `r` and its bias (`r` indexes both `mixes` and `base`).
    let mix = |r: Index| load_local(mixes, r);
    let base = |r: Index| load(p.base, r);
    let mut pre: Vec<VarId> = (0..n).map(|_| kb.value()).collect();
    let post_row = Index::var(tok, index_coeff(n));
    let comb_row = Index::var(tok, index_coeff(nn));
    match gates {
        PreMixGates::Constrained {
            pre_eps,
            post_mult,
            sinkhorn,
        } => {
            // z = mixes · scale[seg] + base
            let z = |seg: usize, r: Index| add(mul(mix(r.clone()), var(scale[seg])), base(r));
            // A sigmoid is never -0, so adding a zero pre_eps is the identity.
            let pre_eps = (pre_eps.get() != 0.0).then(|| kb.c(pre_eps.get()));
            let pre_gate = |r: Index| {
                let gate = unary(Op::Sigmoid, z(0, r));
                match &pre_eps {
                    Some(e) => add(gate, e.clone()),
                    None => gate,
                }
            };
            if let Some(g) = pre_to {
                body.push(kb.vector(n, |_, j| {
                    vec![store(g, at(&post_row, j, 1), pre_gate(Index::var(j, 1)))]
                }));
                pre.clear();
            } else {
                body.extend(
                    pre.iter()
                        .enumerate()
                        .map(|(i, &v)| set(v, pre_gate(Index::constant(index_coeff(i))))),
                );
            }
            if p.layer_input_only {
                return pre;
            }
            let post_mult = kb.c(post_mult.get());
            body.push(kb.vector(n, |_, j| {
                let zj = z(1, Index::var(j, 1).shifted(index_coeff(n)));
                vec![store(
                    p.post,
                    at(&post_row, j, 1),
                    mul(unary(Op::Sigmoid, zj), post_mult),
                )]
            }));
            let sc = sc.expect("mhc_pre declares Sinkhorn scratch");
            // The logits are computed where the projection reads them
            // (twice for tilekernels' max and exp: the same value).
            let logits = |r: Index| z(2, r.shifted(index_coeff(2 * n)));
            body.extend(project(kb, sinkhorn, n, &logits, sc));
            body.push(kb.vector(nn, |_, r| {
                vec![store(
                    p.comb,
                    at(&comb_row, r, 1),
                    load_local(sc.mat, Index::var(r, 1)),
                )]
            }));
        }
        PreMixGates::Unconstrained => {
            // g = scale[seg] · tanh(mixes) + base
            let g = |seg: usize, r: Index| {
                add(
                    mul(var(scale[seg]), unary(Op::Tanh, mix(r.clone()))),
                    base(r),
                )
            };
            body.extend(
                pre.iter()
                    .enumerate()
                    .map(|(i, &v)| set(v, g(0, Index::constant(index_coeff(i))))),
            );
            if p.layer_input_only {
                return pre;
            }
            body.push(kb.vector(n, |_, j| {
                vec![store(
                    p.post,
                    at(&post_row, j, 1),
                    g(1, Index::var(j, 1).shifted(index_coeff(n))),
                )]
            }));
            body.push(kb.vector(nn, |_, r| {
                vec![store(
                    p.comb,
                    at(&comb_row, r, 1),
                    g(2, Index::var(r, 1).shifted(index_coeff(2 * n))),
                )]
            }));
        }
    }
    pre
}

/// `layer_input[tok, c] = Σ_i pre_i · x[tok, i, c]`, summed from `i = 0`.
fn apply_mix(kb: &mut KernelBuilder, p: &PreMix, tok: VarId, pre: &[VarId]) -> Stmt {
    let (_, _, c) = p.dims;
    let row = Index::var(tok, index_coeff(pre.len() * c));
    let li_row = Index::var(tok, index_coeff(c));
    kb.vector(c, |_, cc| {
        let term = |i: usize| {
            mul(
                var(pre[i]),
                load(p.x, at(&row, cc, 1).shifted(index_coeff(i * c))),
            )
        };
        let sum = (1..pre.len()).fold(term(0), |s, i| add(s, term(i)));
        vec![store(p.layer_input, at(&li_row, cc, 1), sum)]
    })
}

/// Buffers and sizes of a post-mix.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PostMix {
    /// `layer_output [T,C]`.
    pub f: BufferId,
    /// `residual [T,n,C]`.
    pub x: BufferId,
    /// `post_mix [T,n]`.
    pub post: BufferId,
    /// `comb_mix [T,n,n]`.
    pub comb: BufferId,
    /// `residual_out [T,n,C]`.
    pub out: BufferId,
    /// `(T, n, C)`.
    pub dims: (usize, usize, usize),
    /// The operands' dtype.
    pub dtype: DType,
}

/// Appends the kernel of an `mhc_post`:
/// `out[t,j,c] = Σ_i comb[t,i,j]·x[t,i,c] + post[t,j]·f[t,c]`.
pub(crate) fn lower_post_mix(pb: &mut ProgramBuilder, p: &PostMix) {
    let (t, n, c) = p.dims;
    let (k, nn) = (n * c, n * n);
    let mut kb = KernelBuilder::new(pb, "mhc_post", p.dtype);
    let body = vec![kb.parallel(t, |kb, tok| {
        let comb: Vec<VarId> = (0..nn).map(|_| kb.value()).collect();
        let post: Vec<VarId> = (0..n).map(|_| kb.value()).collect();
        let comb_row = Index::var(tok, index_coeff(nn));
        let post_row = Index::var(tok, index_coeff(n));
        let mut body: Vec<Stmt> = comb
            .iter()
            .enumerate()
            .map(|(r, &v)| set(v, load(p.comb, comb_row.clone().shifted(index_coeff(r)))))
            .collect();
        body.extend(
            post.iter()
                .enumerate()
                .map(|(j, &v)| set(v, load(p.post, post_row.clone().shifted(index_coeff(j))))),
        );
        let xs: Vec<VarId> = (0..n).map(|_| kb.value()).collect();
        let fv = kb.value();
        let row = Index::var(tok, index_coeff(k));
        let f_row = Index::var(tok, index_coeff(c));
        body.push(kb.vector(c, |_, cc| {
            let mut b: Vec<Stmt> = xs
                .iter()
                .enumerate()
                .map(|(i, &v)| set(v, load(p.x, at(&row, cc, 1).shifted(index_coeff(i * c)))))
                .collect();
            b.push(set(fv, load(p.f, at(&f_row, cc, 1))));
            b.extend((0..n).map(|j| {
                let term = |i: usize| mul(var(comb[i * n + j]), var(xs[i]));
                let mixed = (1..n).fold(term(0), |s, i| add(s, term(i)));
                let value = add(mixed, mul(var(post[j]), var(fv)));
                store(p.out, at(&row, cc, 1).shifted(index_coeff(j * c)), value)
            }));
            b
        }));
        body
    })];
    pb.push(kb.finish(body));
}
