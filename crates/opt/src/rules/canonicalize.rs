//! Canonicalization: one spelling for each piece of math the recognizers
//! look for, plus folding of movement chains.
//!
//! Division by a computed value stays a division (normalizations are
//! `x / (sum + eps)`); inverse square roots become `rsqrt`; division by a
//! constant becomes multiplication by its reciprocal (mean as sum × 1/N).
//! These hold in real arithmetic and differ by at most an ulp in floating
//! point, inside `docs/design.md` §3's op-family tolerances; nothing here reorders a
//! sum.

use birkhoff_ir::{DType, Literal, Op, TensorType};
use egg::Id;

use super::{Action, Ctx, Rule, commuted, nodes_where, rewrite_to, splat, union};

/// The canonicalization rules.
pub(crate) fn rules() -> Vec<Rule> {
    vec![
        // a * recip(b) = a / b, also with the recip under a broadcast.
        Rule {
            name: "mul-recip-to-div",
            search: mul_recip_to_div,
        },
        // a / sqrt(b) = a * rsqrt(b), also with the sqrt under a broadcast.
        Rule {
            name: "div-sqrt-to-mul-rsqrt",
            search: div_sqrt_to_mul_rsqrt,
        },
        // recip(sqrt(b)) = rsqrt(b).
        Rule {
            name: "recip-sqrt-to-rsqrt",
            search: recip_sqrt_to_rsqrt,
        },
        // a / k = a * (1/k) for a constant splat k with a normal 1/k (mean as sum × 1/N).
        Rule {
            name: "div-const-to-mul",
            search: div_const_to_mul,
        },
        // reshape(reshape(x)) = reshape(x); reshape to the same shape = x.
        Rule {
            name: "fold-reshape",
            search: fold_reshape,
        },
        // permute(permute(x, p), q) = permute(x, p∘q); the identity permute = x.
        Rule {
            name: "fold-permute",
            search: fold_permute,
        },
        // (a·b)ᵀ = bᵀ·aᵀ, transposing the last two axes.
        Rule {
            name: "transpose-of-matmul",
            search: transpose_of_matmul,
        },
        // broadcast(broadcast(x)) = broadcast(x); broadcast to the same shape = x.
        Rule {
            name: "fold-broadcast",
            search: fold_broadcast,
        },
        // broadcast or reshape of a constant splat is a constant splat.
        Rule {
            name: "fold-splat-movement",
            search: fold_splat_movement,
        },
        // pow(x, 2) = x * x.
        Rule {
            name: "pow-two-to-mul",
            search: pow_two_to_mul,
        },
        // pow(v, ±0.5) = sqrt(v) / rsqrt(v) for v a sum of squares (plus positives); pow(x, -1) = recip(x).
        Rule {
            name: "pow-to-root",
            search: pow_to_root,
        },
        // op(reshape(p), broadcast(g)) = reshape(op(p, broadcast(g'))) when the reshape splits p's last axis (α·mat(h) + b).
        Rule {
            name: "elementwise-before-split",
            search: elementwise_before_split,
        },
        // reshape(reduce(x, axes), keepdims shape) = reduce(x, axes, keepdims) (x.sum(-1)[..., None]).
        Rule {
            name: "reshape-to-keepdims",
            search: reshape_to_keepdims,
        },
        // x + x = x * 2 (2·σ written σ + σ).
        Rule {
            name: "add-self-to-mul-two",
            search: add_self_to_mul_two,
        },
    ]
}

fn pow_two_to_mul(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    for args in super::args_of(eg, c, &Op::Pow) {
        if splat(eg, args[1]) == Some(2.0) {
            out.push(rewrite_to(c, Op::Mul, vec![args[0], args[0]]));
        }
    }
}

fn pow_to_root(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    for args in super::args_of(eg, c, &Op::Pow) {
        let (x, e) = (args[0], splat(eg, args[1]));
        let op = match e {
            Some(-1.0) => Op::Recip,
            // pow and the roots disagree only at -0 and -inf (pow(-0, 0.5)
            // is +0, sqrt(-0) is -0), which a non-negative value never is.
            Some(0.5) if super::non_negative(eg, x) => Op::Sqrt,
            Some(-0.5) if super::non_negative(eg, x) => Op::Rsqrt,
            _ => continue,
        };
        out.push(rewrite_to(c, op, vec![x]));
    }
}

/// `[T, W]` to `[T, d1, …, dk]` with `d1⋯dk = W`: a reshape that splits
/// the last axis, as `mat(·)` turns a row of `n²` mixes into `n × n`.
fn splits_last_axis(from: &[usize], to: &[usize]) -> bool {
    from.len() == 2
        && to.len() > 2
        && to[0] == from[0]
        && to[1..].iter().product::<usize>() == from[1]
}

fn elementwise_before_split(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let Some(ty) = super::tensor(eg, c).filter(|t| t.dtype.is_float()).cloned() else {
        return;
    };
    let to = ty.shape.clone();
    for op in [Op::Mul, Op::Add, Op::Sub, Op::Div] {
        for args in super::args_of(eg, c, &op) {
            for (side, (r, f)) in [(args[0], args[1]), (args[1], args[0])]
                .into_iter()
                .enumerate()
            {
                for p in super::reshape_sources(eg, r) {
                    let from = super::shape(eg, p).to_vec();
                    if !splits_last_axis(&from, &to) {
                        continue;
                    }
                    // f as a function of the split axes only: a splat, or a
                    // broadcast of g whose dims over them are all 1 or all
                    // full (and 1 over the leading axis, if it has one).
                    let split = &to[1..];
                    let flat: Option<Vec<usize>> = if super::splat(eg, f).is_some() {
                        Some(vec![])
                    } else {
                        None
                    };
                    let mut operands: Vec<(Id, Vec<usize>)> = Vec::new();
                    if let Some(v) = flat {
                        operands.push((f, v));
                    }
                    for g in super::broadcast_sources(eg, f) {
                        let gs = super::shape(eg, g).to_vec();
                        if gs.len() > to.len() || (gs.len() == to.len() && gs[0] != 1) {
                            continue;
                        }
                        let tail: Vec<usize> =
                            gs.iter().rev().take(split.len()).rev().copied().collect();
                        let pad = split.len() - tail.len();
                        let all_one = tail.iter().all(|&d| d == 1);
                        let full = pad == 0 && tail == split;
                        if all_one {
                            operands.push((g, vec![1]));
                        } else if full {
                            operands.push((g, vec![from[1]]));
                        }
                    }
                    let op = op.clone();
                    let to = to.clone();
                    let from = from.clone();
                    let dtype = ty.dtype;
                    for (g, g_flat) in operands {
                        let op = op.clone();
                        let to = to.clone();
                        let from = from.clone();
                        out.push(Action::custom(move |eg| {
                            let operand = if g_flat.is_empty() {
                                let v = super::splat(eg, g).expect("a splat class");
                                super::build::splat(eg, TensorType::new(dtype, from.clone()), v)
                            } else {
                                let Some(b) = super::build::reshape(eg, g, &g_flat)
                                    .and_then(|gf| super::build::broadcast(eg, gf, &from))
                                else {
                                    return vec![];
                                };
                                b
                            };
                            let children = if side == 0 {
                                vec![p, operand]
                            } else {
                                vec![operand, p]
                            };
                            crate::lang::add_checked(eg, op, children)
                                .and_then(|y| super::build::reshape(eg, y, &to))
                                .map(|y| (c, y))
                                .into_iter()
                                .collect()
                        }));
                    }
                }
            }
        }
    }
}

fn reshape_to_keepdims(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let to = super::shape(eg, c).to_vec();
    for r in super::reshape_sources(eg, c) {
        for n in nodes_where(eg, r, |op| {
            matches!(
                op,
                Op::ReduceSum {
                    keepdims: false,
                    ..
                } | Op::ReduceMax {
                    keepdims: false,
                    ..
                }
            )
        }) {
            let x = n.children[0];
            let (Op::ReduceSum { axes, .. } | Op::ReduceMax { axes, .. }) = &n.op else {
                continue;
            };
            // The keepdims shape: x's, with 1 on the reduced axes.
            let kept: Vec<usize> = super::shape(eg, x)
                .iter()
                .enumerate()
                .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
                .collect();
            if kept != to {
                continue;
            }
            let op = match &n.op {
                Op::ReduceSum { axes, .. } => Op::ReduceSum {
                    axes: axes.clone(),
                    keepdims: true,
                },
                Op::ReduceMax { axes, .. } => Op::ReduceMax {
                    axes: axes.clone(),
                    keepdims: true,
                },
                _ => continue,
            };
            out.push(rewrite_to(c, op, vec![x]));
        }
    }
}

fn add_self_to_mul_two(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let Some(ty) = super::tensor(eg, c).filter(|t| t.dtype.is_float()).cloned() else {
        return;
    };
    for args in super::args_of(eg, c, &Op::Add) {
        if super::same(eg, args[0], args[1]) {
            let x = args[0];
            let ty = ty.clone();
            out.push(Action::custom(move |eg| {
                let two = eg.add(crate::lang::ENode {
                    op: Op::Const(Literal::splat(ty, 2.0)),
                    children: vec![],
                });
                crate::lang::add_checked(eg, Op::Mul, vec![x, two])
                    .map(|m| (c, m))
                    .into_iter()
                    .collect()
            }));
        }
    }
}

fn mul_recip_to_div(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    for (a, r) in commuted(eg, c, &Op::Mul) {
        for n in nodes_where(eg, r, |op| *op == Op::Recip) {
            out.push(rewrite_to(c, Op::Div, vec![a, n.children[0]]));
        }
        // a * broadcast(recip(b)) = a / broadcast(b): the reciprocal of a
        // keepdims reduction is usually taken before it is stretched, and
        // broadcast commutes with every elementwise op exactly.
        for src in super::broadcast_sources(eg, r) {
            for n in nodes_where(eg, src, |op| *op == Op::Recip) {
                let (b, shape) = (n.children[0], super::shape(eg, r).to_vec());
                out.push(Action::custom(move |eg| {
                    crate::lang::add_checked(eg, Op::Broadcast { shape }, vec![b])
                        .and_then(|bb| crate::lang::add_checked(eg, Op::Div, vec![a, bb]))
                        .map(|d| (c, d))
                        .into_iter()
                        .collect()
                }));
            }
        }
    }
}

fn div_sqrt_to_mul_rsqrt(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    for args in super::args_of(eg, c, &Op::Div) {
        let (a, s) = (args[0], args[1]);
        // The sqrt itself, or under a broadcast (a keepdims factor): then
        // the rsqrt is broadcast the same way.
        let mut found: Vec<(Id, Option<Vec<usize>>)> = nodes_where(eg, s, |op| *op == Op::Sqrt)
            .map(|n| (n.children[0], None))
            .collect();
        for src in super::broadcast_sources(eg, s) {
            let shape = super::shape(eg, s).to_vec();
            found.extend(
                nodes_where(eg, src, |op| *op == Op::Sqrt)
                    .map(|n| (n.children[0], Some(shape.clone()))),
            );
        }
        for (b, shape) in found {
            out.push(Action::custom(move |eg| {
                let mut r = eg.add(crate::lang::ENode {
                    op: Op::Rsqrt,
                    children: vec![b],
                });
                if let Some(shape) = shape {
                    match crate::lang::add_checked(eg, Op::Broadcast { shape }, vec![r]) {
                        Some(rb) => r = rb,
                        None => return vec![],
                    }
                }
                crate::lang::add_checked(eg, Op::Mul, vec![a, r])
                    .map(|m| (c, m))
                    .into_iter()
                    .collect()
            }));
        }
    }
}

fn recip_sqrt_to_rsqrt(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    for args in super::args_of(eg, c, &Op::Recip) {
        for n in nodes_where(eg, args[0], |op| *op == Op::Sqrt) {
            out.push(rewrite_to(c, Op::Rsqrt, vec![n.children[0]]));
        }
    }
}

fn div_const_to_mul(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    for args in super::args_of(eg, c, &Op::Div) {
        let (a, k) = (args[0], args[1]);
        let (Some(v), Some(ty)) = (splat(eg, k), super::tensor(eg, k)) else {
            continue;
        };
        if !v.is_finite() || v == 0.0 || !ty.dtype.is_float() {
            continue;
        }
        // The reciprocal must be a normal number of the dtype: for a tiny k
        // it overflows to infinity (x / k finite, x · inf not), for a huge k
        // it is subnormal and loses the one-ulp bound.
        let inv = ty.dtype.round(1.0 / v);
        let normal = match ty.dtype {
            DType::F64 => inv.is_normal(),
            _ => (inv as f32).is_normal(),
        };
        if !normal {
            continue;
        }
        let ty = ty.clone();
        out.push(Action::custom(move |eg| {
            let inv = eg.add(crate::lang::ENode {
                op: Op::Const(Literal::splat(ty, inv)),
                children: vec![],
            });
            crate::lang::add_checked(eg, Op::Mul, vec![a, inv])
                .map(|m| (c, m))
                .into_iter()
                .collect()
        }));
    }
}

fn fold_reshape(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let target = super::shape(eg, c).to_vec();
    for n in nodes_where(eg, c, |op| matches!(op, Op::Reshape { .. })) {
        let x = n.children[0];
        if super::shape(eg, x) == target {
            out.push(union(c, x));
        }
        for inner in super::reshape_sources(eg, x) {
            out.push(rewrite_to(
                c,
                Op::Reshape {
                    shape: target.clone(),
                },
                vec![inner],
            ));
        }
    }
}

fn fold_permute(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    for n in nodes_where(eg, c, |op| matches!(op, Op::Permute { .. })) {
        let Op::Permute { perm: q } = &n.op else {
            continue;
        };
        let x = n.children[0];
        if q.iter().enumerate().all(|(i, &p)| i == p) {
            out.push(union(c, x));
        }
        for inner in nodes_where(eg, x, |op| matches!(op, Op::Permute { .. })) {
            let Op::Permute { perm: p } = &inner.op else {
                continue;
            };
            // Result axis k of permute(y, q) is y's axis q[k] = x's axis p[q[k]].
            let composed: Vec<usize> = q.iter().map(|&k| p[k]).collect();
            let src = inner.children[0];
            if composed.iter().enumerate().all(|(i, &p)| i == p) {
                out.push(union(c, src));
            } else {
                out.push(rewrite_to(c, Op::Permute { perm: composed }, vec![src]));
            }
        }
    }
}

fn transpose_of_matmul(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let rank = super::shape(eg, c).len();
    if rank < 2 {
        return;
    }
    let mut swap: Vec<usize> = (0..rank).collect();
    swap.swap(rank - 2, rank - 1);
    for n in nodes_where(
        eg,
        c,
        |op| matches!(op, Op::Permute { perm } if *perm == swap),
    ) {
        for args in super::args_of(eg, n.children[0], &Op::MatMul) {
            let (a, b) = (args[0], args[1]);
            let perm = swap.clone();
            out.push(Action::custom(move |eg| {
                let t = |eg: &mut super::EG, x| {
                    crate::lang::add_checked(eg, Op::Permute { perm: perm.clone() }, vec![x])
                };
                let Some((bt, at)) = t(eg, b).zip(t(eg, a)) else {
                    return vec![];
                };
                crate::lang::add_checked(eg, Op::MatMul, vec![bt, at])
                    .map(|m| (c, m))
                    .into_iter()
                    .collect()
            }));
        }
    }
}

fn fold_broadcast(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let target = super::shape(eg, c).to_vec();
    for x in super::broadcast_sources(eg, c) {
        if super::shape(eg, x) == target {
            out.push(union(c, x));
        }
        for inner in super::broadcast_sources(eg, x) {
            // A right-aligned broadcast of a right-aligned broadcast is one.
            out.push(rewrite_to(
                c,
                Op::Broadcast {
                    shape: target.clone(),
                },
                vec![inner],
            ));
        }
    }
}

fn fold_splat_movement(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let (Some(v), Some(ty)) = (splat(eg, c), super::tensor(eg, c)) else {
        return;
    };
    let is_const = nodes_where(eg, c, |op| matches!(op, Op::Const(_)))
        .next()
        .is_some();
    if !is_const {
        out.push(rewrite_to(
            c,
            Op::Const(Literal::splat(ty.clone(), v)),
            vec![],
        ));
    }
}
