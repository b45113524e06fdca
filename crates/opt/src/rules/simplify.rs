//! Algebraic simplification, sound for IEEE arithmetic.
//!
//! Only identities that hold bit for bit on every input (NaN, ±0 and ±Inf
//! included) are used: `x · 1 = x`, `x / 1 = x`, `x + (−0) = x`,
//! `x − (+0) = x`, `−(−x) = x`. (`x + 0 = x` is *not* one: `−0 + 0 = +0`.)
//! Elementwise ops on constant splats are folded with the interpreter's
//! own scalar functions, rounded to the result type, so folding computes
//! exactly what the unfolded graph does in the reference interpreter.

use birkhoff_ir::{Literal, Op, eval_binary, eval_unary};
use egg::Id;

use super::{Action, Ctx, Rule, args_of, commuted, nodes_where, rewrite_to, splat, tensor, union};

/// The simplification rules.
pub(crate) fn rules() -> Vec<Rule> {
    vec![
        // x * 1 = x (either operand order).
        Rule {
            name: "mul-one",
            search: mul_one,
        },
        // x / 1 = x.
        Rule {
            name: "div-one",
            search: div_one,
        },
        // x + (-0) = x, x - (+0) = x.
        Rule {
            name: "add-signed-zero",
            search: add_signed_zero,
        },
        // -(-x) = x.
        Rule {
            name: "neg-neg",
            search: neg_neg,
        },
        // op(splat a, splat b) = splat(op(a, b)).
        Rule {
            name: "fold-splat-constants",
            search: fold_splats,
        },
    ]
}

fn mul_one(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    for (x, k) in commuted(ctx.eg, c, &Op::Mul) {
        if splat(ctx.eg, k) == Some(1.0) {
            out.push(union(c, x));
        }
    }
}

fn div_one(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    for a in args_of(ctx.eg, c, &Op::Div) {
        if splat(ctx.eg, a[1]) == Some(1.0) {
            out.push(union(c, a[0]));
        }
    }
}

fn add_signed_zero(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let is = |k: Id, negative: bool| {
        splat(ctx.eg, k).is_some_and(|v| v == 0.0 && v.is_sign_negative() == negative)
    };
    for (x, k) in commuted(ctx.eg, c, &Op::Add) {
        if is(k, true) {
            out.push(union(c, x));
        }
    }
    for a in args_of(ctx.eg, c, &Op::Sub) {
        if is(a[1], false) {
            out.push(union(c, a[0]));
        }
    }
}

fn neg_neg(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    for a in args_of(ctx.eg, c, &Op::Neg) {
        for inner in nodes_where(ctx.eg, a[0], |op| *op == Op::Neg) {
            out.push(union(c, inner.children[0]));
        }
    }
}

fn fold_splats(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    if splat(eg, c).is_some() {
        return;
    }
    let Some(ty) = tensor(eg, c) else { return };
    for n in &eg[c].nodes {
        if !(n.op.is_unary() || n.op.is_binary()) {
            continue;
        }
        let Some(vals) = n
            .children
            .iter()
            .map(|&k| splat(eg, k))
            .collect::<Option<Vec<f64>>>()
        else {
            continue;
        };
        let Some(operand) = tensor(eg, n.children[0]) else {
            continue;
        };
        let v = if n.op.is_unary() {
            eval_unary(&n.op, operand.dtype, vals[0])
        } else {
            eval_binary(&n.op, operand.dtype, vals[0], vals[1])
        };
        out.push(rewrite_to(
            c,
            Op::Const(Literal::splat(ty.clone(), v)),
            vec![],
        ));
    }
}
