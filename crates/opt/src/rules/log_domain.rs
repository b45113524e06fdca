//! Sinkhorn in the log domain: `z ← z − logsumexp(z)` along rows and
//! columns in turn, then `exp` (what `log_softmax` loops compute). Three
//! identities bring it back to the normalizations the Sinkhorn matcher
//! knows:
//!
//! * `z − lse(z, axis) = log(softmax(z, axis))`, with `lse` written
//!   `max + log(Σ exp(z − max))` (either order), `log(Σ exp(z))`, or the
//!   max subtracted first (`(z − max) − log(Σ exp(z − max))`);
//! * `softmax(log(y), axis) = y / Σ_axis y` for `y ≥ 0` (a row or column
//!   normalization without eps);
//! * `exp(log(y)) = y` for `y ≥ 0`.
//!
//! So `exp` of `k` rounds of log-softmaxes is `k` rounds of
//! normalizations of the first softmax: a Sinkhorn chain.

use birkhoff_ir::{FloatAttr, Op};
use egg::Id;

use super::{
    Action, Ctx, Rule, args_of, broadcast_sources, commuted, nodes_where, non_negative, rewrite_to,
    same, shape,
};
use crate::lang::{EG, add_checked};

/// The log-domain rules (run with recognition).
pub(crate) fn rules() -> Vec<Rule> {
    vec![
        // z - lse(z, axis) = log(softmax(z, axis)).
        Rule {
            name: "log-softmax",
            search: log_softmax,
        },
        // softmax(log y, axis) = y / sum(y, axis) for y >= 0.
        Rule {
            name: "softmax-of-log",
            search: softmax_of_log,
        },
        // exp(log y) = y for y >= 0.
        Rule {
            name: "exp-of-log",
            search: exp_of_log,
        },
    ]
}

/// `(x, axis)` for every keepdims reduction `op(x, [axis])` in class `s`.
fn reduction_over(eg: &EG, s: Id, max: bool) -> Vec<(Id, usize)> {
    nodes_where(eg, s, |op| match op {
        Op::ReduceSum {
            axes,
            keepdims: true,
        } => !max && axes.len() == 1,
        Op::ReduceMax {
            axes,
            keepdims: true,
        } => max && axes.len() == 1,
        _ => false,
    })
    .filter_map(|n| match &n.op {
        Op::ReduceSum { axes, .. } | Op::ReduceMax { axes, .. } => Some((n.children[0], axes[0])),
        _ => None,
    })
    .collect()
}

/// `c` and the sources of its broadcasts.
fn with_sources(eg: &EG, c: Id) -> Vec<Id> {
    let mut v = broadcast_sources(eg, c);
    v.push(c);
    v
}

/// The `(z, axis)` for which class `s` is `Σ_axis exp(z)`, keepdims.
fn sum_of_exp(eg: &EG, s: Id) -> Vec<(Id, usize)> {
    reduction_over(eg, s, false)
        .into_iter()
        .flat_map(|(e, axis)| args_of(eg, e, &Op::Exp).map(move |a| (a[0], axis)))
        .collect()
}

/// The `(z, axis)` for which class `l` is `lse(z, axis)`: `log(Σ exp(z))`,
/// or `m + log(Σ exp(z − m))` with `m = max(z, axis)` (either order).
fn logsumexp(eg: &EG, l: Id) -> Vec<(Id, usize)> {
    let mut out: Vec<(Id, usize)> = args_of(eg, l, &Op::Log)
        .flat_map(|a| sum_of_exp(eg, a[0]))
        .collect();
    for (m, lg) in commuted(eg, l, &Op::Add) {
        for (z, axis) in reduction_over(eg, m, true) {
            for s in args_of(eg, lg, &Op::Log).map(|a| a[0]) {
                for (u, ax) in sum_of_exp(eg, s) {
                    // u = z - broadcast(m).
                    let shifted = args_of(eg, u, &Op::Sub).any(|d| {
                        same(eg, d[0], z) && with_sources(eg, d[1]).iter().any(|&b| same(eg, b, m))
                    });
                    if ax == axis && shifted {
                        out.push((z, axis));
                    }
                }
            }
        }
    }
    out
}

fn log_softmax(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    for d in args_of(eg, c, &Op::Sub) {
        let (z, b) = (d[0], d[1]);
        for l in with_sources(eg, b) {
            for (z2, axis) in logsumexp(eg, l) {
                if !same(eg, z, z2) {
                    continue;
                }
                // With the max subtracted first, z = x − max(x, axis):
                // softmax(z) = softmax(x). Only the max: a general shift
                // would also see the previous round's own lse (constant
                // along this axis when the matrix is 1×1) and fold every
                // round into the first.
                let mut sources = vec![z];
                sources.extend(max_shifted(eg, z, axis));
                for x in sources {
                    out.push(Action::custom(move |eg| {
                        add_checked(eg, Op::Softmax { axis }, vec![x])
                            .and_then(|s| add_checked(eg, Op::Log, vec![s]))
                            .map(|lg| (c, lg))
                            .into_iter()
                            .collect()
                    }));
                }
            }
        }
    }
}

/// The `x` of every `x − broadcast(max(x, axis))` in class `z`.
fn max_shifted(eg: &EG, z: Id, axis: usize) -> Vec<Id> {
    args_of(eg, z, &Op::Sub)
        .filter(|d| {
            with_sources(eg, d[1]).iter().any(|&m| {
                reduction_over(eg, m, true)
                    .iter()
                    .any(|&(x, ax)| ax == axis && same(eg, x, d[0]))
            })
        })
        .map(|d| d[0])
        .collect()
}

fn softmax_of_log(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let rank = shape(eg, c).len();
    for n in nodes_where(eg, c, |op| matches!(op, Op::Softmax { .. })) {
        let Op::Softmax { axis } = n.op else {
            continue;
        };
        let norm = if axis + 1 == rank {
            Op::RowNorm {
                eps: FloatAttr(0.0),
            }
        } else if rank >= 2 && axis + 2 == rank {
            Op::ColNorm {
                eps: FloatAttr(0.0),
            }
        } else {
            continue;
        };
        for y in args_of(eg, n.children[0], &Op::Log).map(|a| a[0]) {
            if non_negative(eg, y) {
                out.push(rewrite_to(c, norm.clone(), vec![y]));
            }
        }
    }
}

fn exp_of_log(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    for a in args_of(eg, c, &Op::Exp) {
        for y in args_of(eg, a[0], &Op::Log).map(|l| l[0]) {
            if non_negative(eg, y) {
                out.push(super::union(c, y));
            }
        }
    }
}
