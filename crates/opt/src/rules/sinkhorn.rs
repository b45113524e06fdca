//! Sinkhorn-Knopp chains of any length, in either variant.
//!
//! The iteration count is an attribute, not an unrolled pattern: from every
//! `col_norm{eps}` class the matcher walks down through alternating
//! `row_norm{eps}` / `col_norm{eps}` classes — the same `eps` all the way —
//! until it reaches a start:
//!
//! * `paper`: `col(row(exp(x)))` is one round; `k` rounds give
//!   `sinkhorn{paper, k, eps}(x)`;
//! * `tilekernels`: `col(softmax(x, last) + eps)` (no add when `eps = 0`)
//!   is `repeat = 1`; each `col(row(·))` above it adds one.
//!
//! A round with a different `eps`, a normalization over another axis or a
//! missing step ends the walk, so near misses are left alone.

use birkhoff_ir::{FloatAttr, MAX_SINKHORN_ITERS, Op, SinkhornSpec, SinkhornVariant};
use egg::Id;

use super::{Action, Ctx, Rule, args_of, commuted, nodes_where, rewrite_to, shape, splat};
use crate::lang::EG;

/// The Sinkhorn rules.
pub(crate) fn rules() -> Vec<Rule> {
    // col(row(...col(row(exp x)))) = sinkhorn{paper}(x); col(row(...col(softmax x + eps))) = sinkhorn{tilekernels}(x).
    vec![Rule {
        name: "sinkhorn-chain",
        search: sinkhorn_chain,
    }]
}

/// Children of the `op` nodes of class `c`.
fn under(eg: &EG, c: Id, op: &Op) -> Vec<Id> {
    args_of(eg, c, op).map(|a| a[0]).collect()
}

/// Tilekernels starts `x` in class `m`: `softmax(x, last) + eps`, or
/// `softmax(x, last)` when `eps = 0`.
fn tilekernels_starts(eg: &EG, m: Id, eps: f64) -> Vec<Id> {
    let softmax_of = |c: Id| -> Vec<Id> {
        let rank = shape(eg, c).len();
        nodes_where(
            eg,
            c,
            |op| matches!(op, Op::Softmax { axis } if axis + 1 == rank),
        )
        .map(|n| n.children[0])
        .collect()
    };
    let mut out = Vec::new();
    if eps == 0.0 {
        out.extend(softmax_of(m));
    }
    for (s, k) in commuted(eg, m, &Op::Add) {
        if splat(eg, k).is_some_and(|v| v.to_bits() == eps.to_bits()) {
            out.extend(softmax_of(s));
        }
    }
    out
}

fn sinkhorn_chain(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let s = shape(eg, c);
    if s.len() < 2 || s[s.len() - 1] != s[s.len() - 2] {
        return;
    }
    for top in nodes_where(eg, c, |op| matches!(op, Op::ColNorm { .. })) {
        let Op::ColNorm { eps } = top.op else {
            continue;
        };
        let col = Op::ColNorm { eps };
        let row = Op::RowNorm { eps };
        // Breadth-first over the classes under a column normalization,
        // `done` full (row, col) rounds below `c`.
        let mut frontier = vec![top.children[0]];
        let mut done = 0;
        while !frontier.is_empty() && done < MAX_SINKHORN_ITERS {
            let mut next = Vec::new();
            for m in frontier {
                for x in tilekernels_starts(eg, m, eps.get()) {
                    let spec = SinkhornSpec {
                        variant: SinkhornVariant::TileKernels,
                        iters: done + 1,
                        eps,
                    };
                    out.push(rewrite_to(c, Op::Sinkhorn(spec), vec![x]));
                }
                for r in under(eg, m, &row) {
                    for x in under(eg, r, &Op::Exp) {
                        let spec = SinkhornSpec {
                            variant: SinkhornVariant::Paper,
                            iters: done + 1,
                            eps: FloatAttr(eps.get()),
                        };
                        out.push(rewrite_to(c, Op::Sinkhorn(spec), vec![x]));
                    }
                    next.extend(under(eg, r, &col));
                }
            }
            next.sort();
            next.dedup();
            frontier = next;
            done += 1;
        }
    }
}
