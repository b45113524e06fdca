//! Recognition of semantic ops written in primitives: softmax, row and
//! column normalization, RMSNorm, and the reordering that exposes an RMS
//! factor applied after a projection.
//!
//! Each rule adds the semantic op to the class of the expression it
//! computes; the primitive spelling stays as an alternative, and
//! extraction keeps whichever is cheaper in context. Matchers accept the
//! spellings canonicalization leaves (either operand order of commutative
//! ops, eps present or absent, mean as `× 1/N` or `/ N`).

use birkhoff_ir::{FloatAttr, Op};
use egg::Id;

use super::{
    Action, Ctx, Rule, args_of, broadcast_sources, commuted, nodes_where, rewrite_to, same, shape,
    splat, tensor,
};
use crate::lang::EG;

/// The recognition rules.
pub(crate) fn rules() -> Vec<Rule> {
    vec![
        // matmul(x, w) · r = matmul(x · r, w) for a per-row factor r [..., M, 1].
        Rule {
            name: "scale-before-matmul",
            search: scale_before_matmul,
        },
        // exp(x - max(x)) / sum(exp(x - max(x))) = softmax(x), with or without the max.
        Rule {
            name: "softmax",
            search: softmax,
        },
        // x / (sum(x, last) + eps) = row_norm(x); over axis rank-2, col_norm(x).
        Rule {
            name: "row-col-norm",
            search: row_col_norm,
        },
        // x · rsqrt(sum(x·x, last) / N + eps) = rms_norm(x).
        Rule {
            name: "rms-norm",
            search: rms_norm,
        },
        // 1 / (1 + exp(-z)) = sigmoid(z), with recip or a division.
        Rule {
            name: "sigmoid",
            search: sigmoid,
        },
        // (h + b) · s = h · s + (b · s) for a per-column bias and scale:
        // a linear layer's bias before the mHC scale α.
        Rule {
            name: "scale-over-bias",
            search: scale_over_bias,
        },
        // sum(broadcast a ⊙ broadcast b, over shared axes) = a (batched)
        // matrix product of a and b, in any axis order (einsum's export).
        Rule {
            name: "contraction",
            search: super::contraction::contraction,
        },
    ]
    .into_iter()
    // Log-domain Sinkhorn: log-softmaxes back to normalizations.
    .chain(super::log_domain::rules())
    .collect()
}

fn sigmoid(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    if !is_float(eg, c) {
        return;
    }
    // The denominator d of `recip(d)` or `1 / d`.
    let mut dens: Vec<Id> = args_of(eg, c, &Op::Recip).map(|a| a[0]).collect();
    dens.extend(
        args_of(eg, c, &Op::Div)
            .filter(|a| splat(eg, a[0]) == Some(1.0))
            .map(|a| a[1]),
    );
    for d in dens {
        for (one, e) in commuted(eg, d, &Op::Add) {
            if splat(eg, one) != Some(1.0) {
                continue;
            }
            for u in args_of(eg, e, &Op::Exp).map(|a| a[0]) {
                for z in args_of(eg, u, &Op::Neg).map(|a| a[0]) {
                    out.push(rewrite_to(c, Op::Sigmoid, vec![z]));
                }
            }
        }
    }
}

/// `d` itself and the sources of its broadcasts: where a keepdims
/// reduction shows up under an elementwise op.
fn reduced(eg: &EG, d: Id) -> Vec<Id> {
    let mut v = broadcast_sources(eg, d);
    v.push(d);
    v
}

/// The classes `x` such that `s` holds `op(x)` for a keepdims reduction
/// over exactly `[axis]`; returns `(x, axis)`.
fn keepdims_reductions(eg: &EG, s: Id, max: bool) -> Vec<(Id, usize)> {
    nodes_where(eg, s, |op| match op {
        Op::ReduceSum {
            axes,
            keepdims: true,
        } if !max => axes.len() == 1,
        Op::ReduceMax {
            axes,
            keepdims: true,
        } if max => axes.len() == 1,
        _ => false,
    })
    .map(|n| match &n.op {
        Op::ReduceSum { axes, .. } | Op::ReduceMax { axes, .. } => (n.children[0], axes[0]),
        _ => unreachable!("filtered above"),
    })
    .collect()
}

/// A `[T, w]` operand that is the same on every row: a splat, or the
/// broadcast of a scalar, `[w]` or `[1, w]` value. Returns how to make its
/// `[w]` row: a constant, or a class and whether it needs a reshape
/// (`[1, w]`) or a broadcast (a scalar).
#[derive(Clone, Copy)]
enum Row {
    Splat(f64),
    Value(Id),
}

fn row_of(eg: &EG, c: Id, w: usize) -> Option<Row> {
    if let Some(v) = splat(eg, c) {
        return Some(Row::Splat(v));
    }
    broadcast_sources(eg, c)
        .into_iter()
        .find_map(|s| match shape(eg, s) {
            [] | [1] | [1, 1] => Some(Row::Value(s)),
            [n] | [1, n] if *n == w => Some(Row::Value(s)),
            _ => None,
        })
}

/// The `[w]` class of a row (added to the e-graph).
fn row_class(
    eg: &mut EG,
    r: Row,
    ty: &birkhoff_ir::TensorType,
    lo: usize,
    hi: usize,
) -> Option<Id> {
    let w = hi - lo;
    let row_ty = birkhoff_ir::TensorType::new(ty.dtype, vec![w]);
    match r {
        Row::Splat(v) => Some(eg.add(crate::lang::ENode {
            op: Op::Const(birkhoff_ir::Literal::splat(row_ty, v)),
            children: vec![],
        })),
        Row::Value(s) => {
            let n: usize = shape(eg, s).iter().product();
            let flat = crate::lang::add_checked(eg, Op::Reshape { shape: vec![n] }, vec![s])?;
            if n == 1 {
                crate::lang::add_checked(eg, Op::Broadcast { shape: vec![w] }, vec![flat])
            } else if lo == 0 && hi == n {
                Some(flat)
            } else {
                crate::lang::add_checked(
                    eg,
                    Op::Slice {
                        start: vec![lo],
                        end: vec![hi],
                    },
                    vec![flat],
                )
            }
        }
    }
}

/// `c = (h + b) · s`, or `c = slice(h + b) · s` (columns `[lo, hi)`),
/// with `b` and `s` the same on every row: `c = h' · s + broadcast(b' ·
/// s)`, `h'`/`b'` the (sliced) terms. The bias is scaled on the
/// weights' side, so the matchers see a scale then a bias, as the paper
/// writes them (`α · (x̃ φ) + b`). Not bit-exact: `α·h + α·b` rounds
/// once more than `α·(h + b)`, within an ulp of the result.
fn scale_over_bias(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let Some(ty) = tensor(eg, c)
        .filter(|t| t.dtype.is_float() && t.rank() == 2)
        .cloned()
    else {
        return;
    };
    let (t, w) = (ty.shape[0], ty.shape[1]);
    for (u, f) in commuted(eg, c, &Op::Mul) {
        let Some(scale) = row_of(eg, f, w) else {
            continue;
        };
        // `u` is the sum itself, or columns [lo, hi) of one.
        let mut sums: Vec<(Id, usize)> = vec![(u, 0)];
        for n in nodes_where(eg, u, |op| matches!(op, Op::Slice { .. })) {
            if let Op::Slice { start, end } = &n.op
                && start[0] == 0
                && end[0] == t
            {
                sums.push((n.children[0], start[1]));
            }
        }
        for (sum, lo) in sums {
            let full = shape(eg, sum).get(1).copied().unwrap_or(0);
            for (h, b) in commuted(eg, sum, &Op::Add) {
                let Some(bias) = row_of(eg, b, full) else {
                    continue;
                };
                let ty = ty.clone();
                out.push(Action::custom(move |eg| {
                    let go = |eg: &mut EG| -> Option<Id> {
                        let h = if lo == 0 && full == w {
                            h
                        } else {
                            crate::lang::add_checked(
                                eg,
                                Op::Slice {
                                    start: vec![0, lo],
                                    end: vec![t, lo + w],
                                },
                                vec![h],
                            )?
                        };
                        let hs = crate::lang::add_checked(eg, Op::Mul, vec![h, f])?;
                        let b_row = row_class(eg, bias, &ty, lo, lo + w)?;
                        let s_row = row_class(eg, scale, &ty, 0, w)?;
                        let bs = crate::lang::add_checked(eg, Op::Mul, vec![b_row, s_row])?;
                        let term = crate::lang::add_checked(
                            eg,
                            Op::Broadcast {
                                shape: ty.shape.clone(),
                            },
                            vec![bs],
                        )?;
                        crate::lang::add_checked(eg, Op::Add, vec![hs, term])
                    };
                    go(eg).map(|n| (c, n)).into_iter().collect()
                }));
            }
        }
    }
}

fn is_float(eg: &EG, c: Id) -> bool {
    tensor(eg, c).is_some_and(|t| t.dtype.is_float())
}

fn scale_before_matmul(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let out_shape = shape(eg, c);
    let r = out_shape.len();
    if r < 2 {
        return;
    }
    for (mm, b) in commuted(eg, c, &Op::Mul) {
        for m in args_of(eg, mm, &Op::MatMul) {
            let (x, w) = (m[0], m[1]);
            // The factor, broadcast or (for a product of one column) not.
            for f in reduced(eg, b) {
                let fs = shape(eg, f);
                // A per-row factor: the product's shape with the last dim 1.
                if fs.len() != r || fs[r - 1] != 1 || fs[..r - 1] != out_shape[..r - 1] {
                    continue;
                }
                let xs = shape(eg, x).to_vec();
                out.push(Action::custom(move |eg| {
                    let fb =
                        match crate::lang::add_checked(eg, Op::Broadcast { shape: xs }, vec![f]) {
                            Some(id) => id,
                            None => return vec![],
                        };
                    let scaled = crate::lang::add_checked(eg, Op::Mul, vec![x, fb]);
                    scaled
                        .and_then(|s| crate::lang::add_checked(eg, Op::MatMul, vec![s, w]))
                        .map(|new| (c, new))
                        .into_iter()
                        .collect()
                }));
            }
        }
    }
}

fn softmax(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    if !is_float(eg, c) {
        return;
    }
    for a in args_of(eg, c, &Op::Div) {
        let (e, d) = (a[0], a[1]);
        for s in reduced(eg, d) {
            for (e2, axis) in keepdims_reductions(eg, s, false) {
                if !same(eg, e, e2) {
                    continue;
                }
                for u in args_of(eg, e, &Op::Exp).map(|a| a[0]) {
                    // Without the max subtraction: softmax(u).
                    out.push(rewrite_to(c, Op::Softmax { axis }, vec![u]));
                    // With it: u = x - broadcast(max(x, axis)).
                    for sub in args_of(eg, u, &Op::Sub) {
                        let (x, bm) = (sub[0], sub[1]);
                        for m in reduced(eg, bm) {
                            if keepdims_reductions(eg, m, true)
                                .iter()
                                .any(|&(x2, ax)| ax == axis && same(eg, x, x2))
                            {
                                out.push(rewrite_to(c, Op::Softmax { axis }, vec![x]));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `(q, eps)` for every way class `v` is `q + eps` with a constant splat
/// `eps >= 0`, plus `(v, 0)` itself.
fn plus_eps(eg: &EG, v: Id) -> Vec<(Id, f64)> {
    let mut out = vec![(v, 0.0)];
    for (q, k) in commuted(eg, v, &Op::Add) {
        if let Some(eps) = splat(eg, k).filter(|e| e.is_finite() && *e >= 0.0) {
            out.push((q, eps));
        }
    }
    out
}

fn row_col_norm(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    if !is_float(eg, c) {
        return;
    }
    let rank = shape(eg, c).len();
    for a in args_of(eg, c, &Op::Div) {
        let (x, d) = (a[0], a[1]);
        for z in reduced(eg, d) {
            for (q, eps) in plus_eps(eg, z) {
                for (x2, axis) in keepdims_reductions(eg, q, false) {
                    if !same(eg, x, x2) {
                        continue;
                    }
                    let eps = FloatAttr(eps);
                    if axis + 1 == rank {
                        out.push(rewrite_to(c, Op::RowNorm { eps }, vec![x]));
                    } else if rank >= 2 && axis + 2 == rank {
                        out.push(rewrite_to(c, Op::ColNorm { eps }, vec![x]));
                    }
                }
            }
        }
    }
}

fn rms_norm(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let Some(ty) = tensor(eg, c).filter(|t| t.dtype.is_float() && t.rank() >= 1) else {
        return;
    };
    let last = ty.rank() - 1;
    let n = ty.shape[last] as f64;
    let (inv_n, dtype) = (ty.dtype.round(1.0 / n), ty.dtype);
    for (x, b) in commuted(eg, c, &Op::Mul) {
        for r in reduced(eg, b) {
            for v in args_of(eg, r, &Op::Rsqrt).map(|a| a[0]) {
                for (ms, eps) in plus_eps(eg, v) {
                    // ms = s · (1/N) or s / N.
                    let mut sums: Vec<Id> = commuted(eg, ms, &Op::Mul)
                        .filter(|&(_, k)| splat(eg, k) == Some(inv_n))
                        .map(|(s, _)| s)
                        .collect();
                    sums.extend(
                        args_of(eg, ms, &Op::Div)
                            .filter(|a| splat(eg, a[1]) == Some(dtype.round(n)))
                            .map(|a| a[0]),
                    );
                    for s in sums {
                        for (sq, axis) in keepdims_reductions(eg, s, false) {
                            let squares_x = args_of(eg, sq, &Op::Mul)
                                .any(|m| same(eg, m[0], x) && same(eg, m[1], x));
                            if axis == last && squares_x {
                                out.push(rewrite_to(
                                    c,
                                    Op::RmsNorm {
                                        eps: FloatAttr(eps),
                                    },
                                    vec![x],
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
}
