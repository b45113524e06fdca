//! `sinkhorn_grad`: Sinkhorn's backward that recomputes the rounds, as one
//! kernel.
//!
//! Input: logits `x` and the output cotangent `dy`, both `[..., n, n]` in
//! contiguous buffers (rows are the last axis). The kernel is parallel over
//! the matrices. Design: each matrix recomputes the forward from `x` into a
//! private scratch array that keeps *every state* — the start and the
//! result of each of the `K` normalizations (`K = 2·iters` for `paper`,
//! `2·iters − 1` for `tilekernels`), `(K + 1)·n²` values — with the
//! reference's operations in its order, so the states are bit for bit the
//! forward's. The backward then walks the states last first, keeping the
//! cotangent in an `n²` scratch array: for `y = z / s` along a line,
//! `dz = (dy − Σ dy·y) / s`, with `s = Σ z + eps` summed again from the
//! kept `z` exactly as the forward summed it (with
//! [`crate::LowerOptions::reciprocal_lines`] both divisions are products
//! with `1 / s`, one reciprocal a line). The `tilekernels` start keeps its
//! softmax in an `n²` array of its own for the last step, rather than
//! computing it again. Nothing but `dx` is written to memory.
//!
//! Rounding: the backward's `dy − Σ dy·y` is a cancellation — a cotangent
//! constant along a line gives exactly 0, since a normalization is scale
//! invariant — so its residue is rounding noise, which a later singular op
//! (`rsqrt`, `log`, a division) magnifies. The kernel therefore rounds the
//! way the reference does: every product of those sums is set to a
//! variable first, so no backend contracts it into a fused multiply-add.
//!
//! Keeping whole states costs `(K + 1)·n²` scratch values per matrix: 656
//! floats (2.6 KiB) for the paper's `n = 4`, 20 rounds (and `n²` more for
//! the softmax). A spec whose
//! scratch would exceed [`SCRATCH_BUDGET_BYTES`] is refused with
//! [`LowerError::Unsupported`] rather than overflowing a backend's stack
//! budget (the CPU backend allows 256 KiB per kernel); keeping only each
//! round's denominators and recomputing forward states per segment
//! (checkpointing) would lift that limit and is not done yet.

use birkhoff_ir::kernel::{BufferId, Index, LocalId, Stmt};
use birkhoff_ir::{DType, SinkhornSpec, SinkhornVariant};

use super::kernel_builder::{
    KernelBuilder, add, at, div, index_coeff, load, load_local, mul, set, store, store_local, sub,
    unary, var,
};
use super::sinkhorn::{Lines, softmax_row};
use crate::builder::ProgramBuilder;
use crate::error::{LowerError, Result};

/// The most scratch bytes one matrix's recomputation may use, half of the
/// CPU backend's per-kernel stack budget.
pub(crate) const SCRATCH_BUDGET_BYTES: usize = 128 << 10;

/// The scratch arrays of one matrix.
#[derive(Clone, Copy)]
struct Scratch {
    /// Every state, `n²` values each, slot `k` at `k·n²`.
    states: LocalId,
    /// The running cotangent, `n²`.
    d: LocalId,
    /// Column sums of a state.
    sums: LocalId,
    /// Column dot products `Σ_i dy·y`.
    dots: LocalId,
    /// The softmax the `tilekernels` start takes, kept for its backward
    /// (unused by `paper`).
    probs: LocalId,
}

/// Appends the kernel computing `dx` (into `out`) from `x` and `dy`, all
/// of `shape`.
///
/// # Errors
/// [`LowerError::Unsupported`] when the states of one matrix exceed
/// [`SCRATCH_BUDGET_BYTES`].
pub(crate) fn lower_sinkhorn_grad(
    pb: &mut ProgramBuilder,
    spec: &SinkhornSpec,
    (x, dy, out): (BufferId, BufferId, BufferId),
    shape: &[usize],
    dtype: DType,
) -> Result<()> {
    let n = shape[shape.len() - 1];
    let nn = n * n;
    let batch: usize = shape.iter().product::<usize>() / nn.max(1);
    let first = usize::from(spec.computed_as() == SinkhornVariant::TileKernels);
    let rounds = spec.iters - first;
    let norms = first + 2 * rounds;
    let width = if dtype == DType::F64 { 8 } else { 4 };
    let values = (norms + 3) * nn + 2 * n;
    if values.saturating_mul(width) > SCRATCH_BUDGET_BYTES {
        return Err(LowerError::Unsupported {
            op: "sinkhorn_grad".to_string(),
            types: format!("{dtype}{shape:?}"),
            reason: format!(
                "recomputing {norms} normalizations of {n}x{n} matrices needs {} scratch bytes per matrix, over the {SCRATCH_BUDGET_BYTES}-byte budget",
                values.saturating_mul(width)
            ),
        });
    }
    if batch == 0 || n == 0 {
        return Ok(());
    }
    let eps = spec.eps.get();
    let mut kb = KernelBuilder::new(pb, "sinkhorn_grad", dtype);
    let sc = Scratch {
        states: kb.local((norms + 1) * nn),
        d: kb.local(nn),
        sums: kb.local(n),
        dots: kb.local(n),
        probs: kb.local(nn),
    };
    let slot = |k: usize| Index::constant(index_coeff(k * nn));
    let body = vec![kb.parallel(batch, |kb, b| {
        let start = Index::var(b, index_coeff(nn));
        let src = |k: Index| load(x, super::kernel_builder::join(&start, &k));
        let mut body = Vec::new();
        // ---- forward: every state into `states` -----------------------
        match spec.computed_as() {
            SinkhornVariant::Paper => body.push(kb.vector(nn, |_, k| {
                let k = Index::var(k, 1);
                vec![store_local(
                    sc.states,
                    k.clone(),
                    unary(birkhoff_ir::Op::Exp, src(k)),
                )]
            })),
            SinkhornVariant::TileKernels => {
                body.push(kb.serial(n, |kb, i| {
                    softmax_row(kb, n, eps, &src, (sc.states, Some(sc.probs)), i)
                }));
                body.extend(col_norm_to(kb, n, eps, sc, &slot(0), &slot(1)));
            }
        }
        if rounds > 0 {
            body.push(kb.serial(rounds, |kb, r| {
                // Round r reads slot first + 2r.
                let a = Index::var(r, index_coeff(2 * nn)).shifted(index_coeff(first * nn));
                let a1 = a.clone().shifted(index_coeff(nn));
                let a2 = a.clone().shifted(index_coeff(2 * nn));
                let mut s = vec![line_norm_to(kb, n, eps, sc.states, (&a, &a1), Lines::Rows)];
                s.extend(col_norm_to(kb, n, eps, sc, &a1, &a2));
                s
            }));
        }
        // ---- backward: last normalization first -------------------------
        body.push(kb.vector(nn, |_, k| {
            let k = Index::var(k, 1);
            vec![store_local(sc.d, k.clone(), load(dy, join_b(&start, &k)))]
        }));
        if rounds > 0 {
            body.push(kb.serial(rounds, |kb, r| {
                // Iteration r undoes round rounds − 1 − r.
                let a = Index::var(r, -index_coeff(2 * nn))
                    .shifted(index_coeff((first + 2 * (rounds - 1)) * nn));
                let a1 = a.clone().shifted(index_coeff(nn));
                let a2 = a.clone().shifted(index_coeff(2 * nn));
                let mut s = col_grad(kb, n, eps, sc, &a1, &a2);
                s.push(line_grad(kb, n, eps, sc, (&a, &a1), Lines::Rows));
                s
            }));
        }
        if first == 1 {
            body.extend(col_grad(kb, n, eps, sc, &slot(0), &slot(1)));
        }
        // ---- the start ---------------------------------------------------
        match spec.computed_as() {
            SinkhornVariant::Paper => body.push(kb.vector(nn, |_, k| {
                let kk = Index::var(k, 1);
                vec![store(
                    out,
                    at(&start, k, 1),
                    mul(load_local(sc.d, kk.clone()), load_local(sc.states, kk)),
                )]
            })),
            SinkhornVariant::TileKernels => {
                // p = softmax(x), kept by the forward.
                let probs = sc.probs;
                let zero = kb.c(0.0);
                body.push(kb.serial(n, |kb, i| {
                    let row = Index::var(i, index_coeff(n));
                    let (t, prod) = (kb.value(), kb.value());
                    vec![
                        set(t, zero.clone()),
                        kb.vector(n, |_, j| {
                            // Not contracted, as in `row_grad`.
                            let p = load_local(probs, at(&row, j, 1));
                            vec![
                                set(prod, mul(p, load_local(sc.d, at(&row, j, 1)))),
                                set(t, add(var(t), var(prod))),
                            ]
                        }),
                        kb.vector(n, |_, j| {
                            let p = load_local(probs, at(&row, j, 1));
                            let g = sub(load_local(sc.d, at(&row, j, 1)), var(t));
                            vec![store(out, join_b(&start, &at(&row, j, 1)), mul(p, g))]
                        }),
                    ]
                }));
            }
        }
        body
    })];
    pb.push(kb.finish(body));
    Ok(())
}

/// `a + b` for indices.
fn join_b(a: &Index, b: &Index) -> Index {
    super::kernel_builder::join(a, b)
}

/// Every line of the state at `dst` := that line of the state at `src`
/// divided by its sum plus `eps` (the forward's row normalization, or its
/// column normalization as reductions, out of place).
fn line_norm_to(
    kb: &mut KernelBuilder,
    n: usize,
    eps: f64,
    st: LocalId,
    (src, dst): (&Index, &Index),
    lines: Lines,
) -> Stmt {
    let eps = (eps != 0.0).then(|| kb.c(eps));
    let zero = kb.c(0.0);
    let (outer, inner) = lines.coeffs(n);
    kb.serial(n, |kb, i| {
        let (zr, yr) = (at(src, i, outer), at(dst, i, outer));
        let s = kb.value();
        let mut body = vec![
            set(s, zero),
            kb.vector(n, |_, j| {
                vec![set(s, add(var(s), load_local(st, at(&zr, j, inner))))]
            }),
        ];
        if let Some(eps) = eps {
            body.push(set(s, add(var(s), eps)));
        }
        let (by, recip) = kb.line_divisor(s);
        body.extend(recip);
        body.push(kb.vector(n, |_, j| {
            vec![store_local(
                st,
                at(&yr, j, inner),
                by.apply(load_local(st, at(&zr, j, inner))),
            )]
        }));
        body
    })
}

/// `sc.sums[j]` := the sum of column `j` of the state at `z` plus `eps`,
/// row by row from the first (the forward's order).
fn col_sums(kb: &mut KernelBuilder, n: usize, eps: f64, sc: Scratch, z: &Index) -> Vec<Stmt> {
    let eps = (eps != 0.0).then(|| kb.c(eps));
    let col = |j| Index::var(j, 1);
    let (st, sums) = (sc.states, sc.sums);
    let mut body = vec![kb.vector(n, |_, j| {
        vec![store_local(sums, col(j), load_local(st, at(z, j, 1)))]
    })];
    if n > 1 {
        body.push(kb.serial(n - 1, |kb, i| {
            let row = at(z, i, index_coeff(n)).shifted(index_coeff(n));
            vec![kb.vector(n, |_, j| {
                vec![store_local(
                    sums,
                    col(j),
                    add(load_local(sums, col(j)), load_local(st, at(&row, j, 1))),
                )]
            })]
        }));
    }
    if let Some(eps) = eps {
        body.push(kb.vector(n, |_, j| {
            vec![store_local(
                sums,
                col(j),
                add(load_local(sums, col(j)), eps),
            )]
        }));
    }
    body
}

/// The state at `dst` := the state at `src` with every column divided by
/// its sum plus `eps` (the forward's `col_normalize`, out of place).
fn col_norm_to(
    kb: &mut KernelBuilder,
    n: usize,
    eps: f64,
    sc: Scratch,
    src: &Index,
    dst: &Index,
) -> Vec<Stmt> {
    if kb.column_reductions {
        return vec![line_norm_to(kb, n, eps, sc.states, (src, dst), Lines::Cols)];
    }
    let mut body = col_sums(kb, n, eps, sc, src);
    body.push(kb.serial(n, |kb, i| {
        let (zr, yr) = (at(src, i, index_coeff(n)), at(dst, i, index_coeff(n)));
        vec![kb.vector(n, |_, j| {
            vec![store_local(
                sc.states,
                at(&yr, j, 1),
                div(
                    load_local(sc.states, at(&zr, j, 1)),
                    load_local(sc.sums, Index::var(j, 1)),
                ),
            )]
        })]
    }));
    body
}

/// `sc.d` := the cotangent of the state at `z`, given that of the state at
/// `y`, its lines normalized: per line `(d − Σ d·y) / (Σ z + eps)`.
fn line_grad(
    kb: &mut KernelBuilder,
    n: usize,
    eps: f64,
    sc: Scratch,
    (z, y): (&Index, &Index),
    lines: Lines,
) -> Stmt {
    let eps = (eps != 0.0).then(|| kb.c(eps));
    let zero = kb.c(0.0);
    let (outer, inner) = lines.coeffs(n);
    kb.serial(n, |kb, i| {
        let row = Index::var(i, outer);
        let (zr, yr) = (join_b(z, &row), join_b(y, &row));
        let (s, t) = (kb.value(), kb.value());
        let mut body = vec![
            set(s, zero.clone()),
            kb.vector(n, |_, j| {
                vec![set(
                    s,
                    add(var(s), load_local(sc.states, at(&zr, j, inner))),
                )]
            }),
        ];
        if let Some(eps) = eps {
            body.push(set(s, add(var(s), eps)));
        }
        body.push(set(t, zero));
        let p = kb.value();
        body.push(kb.vector(n, |_, j| {
            // The product goes through a variable so that no backend
            // contracts it into a fused multiply-add (see the module docs).
            let prod = mul(
                load_local(sc.d, at(&row, j, inner)),
                load_local(sc.states, at(&yr, j, inner)),
            );
            vec![set(p, prod), set(t, add(var(t), var(p)))]
        }));
        let (by, recip) = kb.line_divisor(s);
        body.extend(recip);
        body.push(kb.vector(n, |_, j| {
            let g = sub(load_local(sc.d, at(&row, j, inner)), var(t));
            vec![store_local(sc.d, at(&row, j, inner), by.apply(g))]
        }));
        body
    })
}

/// `sc.d` := the cotangent of the state at `z`, given that of the state at
/// `y = col_normalize(z)`: per column `(d − Σ d·y) / (Σ z + eps)`, both
/// column sums built row by row (or, with
/// [`crate::LowerOptions::column_reductions`], reductions per column).
fn col_grad(
    kb: &mut KernelBuilder,
    n: usize,
    eps: f64,
    sc: Scratch,
    z: &Index,
    y: &Index,
) -> Vec<Stmt> {
    if kb.column_reductions {
        return vec![line_grad(kb, n, eps, sc, (z, y), Lines::Cols)];
    }
    let col = |j| Index::var(j, 1);
    let mut body = col_sums(kb, n, eps, sc, z);
    body.push(kb.vector(n, |_, j| {
        let p = mul(load_local(sc.d, col(j)), load_local(sc.states, at(y, j, 1)));
        vec![store_local(sc.dots, col(j), p)]
    }));
    if n > 1 {
        let p = kb.value();
        body.push(kb.serial(n - 1, |kb, i| {
            let row = Index::var(i, index_coeff(n)).shifted(index_coeff(n));
            let yr = join_b(y, &row);
            vec![kb.vector(n, |_, j| {
                // Not contracted, as in `row_grad`.
                let prod = mul(
                    load_local(sc.d, at(&row, j, 1)),
                    load_local(sc.states, at(&yr, j, 1)),
                );
                vec![
                    set(p, prod),
                    store_local(sc.dots, col(j), add(load_local(sc.dots, col(j)), var(p))),
                ]
            })]
        }));
    }
    body.push(kb.serial(n, |kb, i| {
        let row = Index::var(i, index_coeff(n));
        vec![kb.vector(n, |_, j| {
            let g = sub(
                load_local(sc.d, at(&row, j, 1)),
                load_local(sc.dots, col(j)),
            );
            vec![store_local(
                sc.d,
                at(&row, j, 1),
                div(g, load_local(sc.sums, col(j))),
            )]
        })]
    }));
    body
}
