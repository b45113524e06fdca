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
