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
//!
//! With `eps = 0` the two variants are one function (the paper's first row
//! normalization of `exp(x)` is a softmax, and `sinkhorn` computes it as
//! one), so such chains are always named `paper`, whichever way they were
//! written. And then a constant shift along the first-normalized axis —
//! `exp(x − max(x))` with the max over the rows or the whole matrix, or any
//! per-row constant — changes nothing: `sinkhorn(x − c) = sinkhorn(x)`.

use std::collections::HashSet;

use birkhoff_ir::{FloatAttr, MAX_SINKHORN_ITERS, Op, SinkhornSpec, SinkhornVariant};
use egg::Id;

use super::{Action, Ctx, Rule, args_of, commuted, nodes_where, rewrite_to, shape, splat};
use crate::lang::{EG, add_checked};

/// The Sinkhorn rules.
pub(crate) fn rules() -> Vec<Rule> {
    vec![
        // col(row(...col(row(exp x)))) = sinkhorn{paper}(x); col(row(...col(softmax x + eps))) = sinkhorn{tilekernels}(x).
        Rule {
            name: "sinkhorn-chain",
            search: sinkhorn_chain,
        },
        // The same chains with rows and columns swapped (columns first, as the
        // paper writes them on H_res): permute(sinkhorn(permute(x))), exact.
        Rule {
            name: "sinkhorn-chain-columns-first",
            search: sinkhorn_chain_columns_first,
        },
    ]
}

/// Children of the `op` nodes of class `c`.
fn under(eg: &EG, c: Id, op: &Op) -> Vec<Id> {
    args_of(eg, c, op).map(|a| a[0]).collect()
}

/// Which way a chain runs: the zoo's (rows first: the softmax over the
/// last axis, the top a column normalization), or transposed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Orientation {
    RowsFirst,
    ColumnsFirst,
}

/// Tilekernels starts `x` in class `m`: `softmax(x, axis) + eps`, or
/// `softmax(x, axis)` when `eps = 0`, with `axis` the first-normalized one.
fn tilekernels_starts(eg: &EG, m: Id, eps: f64, orientation: Orientation) -> Vec<Id> {
    let softmax_of = |c: Id| -> Vec<Id> {
        let rank = shape(eg, c).len();
        let first = match orientation {
            Orientation::RowsFirst => rank - 1,
            Orientation::ColumnsFirst => rank - 2,
        };
        nodes_where(
            eg,
            c,
            |op| matches!(op, Op::Softmax { axis } if *axis == first),
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
    chain(ctx, c, Orientation::RowsFirst, out);
}

fn sinkhorn_chain_columns_first(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    chain(ctx, c, Orientation::ColumnsFirst, out);
}

/// The permutation swapping the last two of `rank` axes.
fn swap_last_two(rank: usize) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..rank).collect();
    perm.swap(rank - 2, rank - 1);
    perm
}

/// Walks the chain under class `c` (its top normalization is the second
/// axis of `orientation`) and adds a Sinkhorn for every start found:
/// `sinkhorn(x)` for a rows-first chain, `permute(sinkhorn(permute(x)))`
/// for a columns-first one (a Sinkhorn of the transpose, transposed back:
/// the same normalizations in the same order).
fn chain(ctx: &Ctx<'_>, c: Id, orientation: Orientation, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let s = shape(eg, c);
    if s.len() < 2 || s[s.len() - 1] != s[s.len() - 2] {
        return;
    }
    let rank = s.len();
    let is_top = |op: &Op| match orientation {
        Orientation::RowsFirst => matches!(op, Op::ColNorm { .. }),
        Orientation::ColumnsFirst => matches!(op, Op::RowNorm { .. }),
    };
    for top in nodes_where(eg, c, is_top) {
        let (Op::ColNorm { eps } | Op::RowNorm { eps }) = top.op else {
            continue;
        };
        let (second, first) = match orientation {
            Orientation::RowsFirst => (Op::ColNorm { eps }, Op::RowNorm { eps }),
            Orientation::ColumnsFirst => (Op::RowNorm { eps }, Op::ColNorm { eps }),
        };
        let found = |x: Id, spec: SinkhornSpec| -> Action {
            match orientation {
                Orientation::RowsFirst => rewrite_to(c, Op::Sinkhorn(spec), vec![x]),
                Orientation::ColumnsFirst => {
                    let perm = swap_last_two(rank);
                    Action::custom(move |eg| {
                        let p = Op::Permute { perm: perm.clone() };
                        let Some(sk) = add_checked(eg, p.clone(), vec![x])
                            .and_then(|xt| add_checked(eg, Op::Sinkhorn(spec), vec![xt]))
                        else {
                            return vec![];
                        };
                        // c = sinkhorn(xᵀ)ᵀ, and so sinkhorn(xᵀ) = cᵀ: every
                        // Sinkhorn found for c lands in one class.
                        let back = add_checked(eg, p.clone(), vec![sk]);
                        let ct = add_checked(eg, p, vec![c]);
                        back.map(|b| (c, b))
                            .into_iter()
                            .chain(ct.map(|t| (sk, t)))
                            .collect()
                    })
                }
            }
        };
        // A start x − c with c constant along the first axis is also a
        // start x: always under the softmax (it cancels the shift), and
        // under a bare exp when eps = 0 (the first normalization does).
        let first_axis = match orientation {
            Orientation::RowsFirst => rank - 1,
            Orientation::ColumnsFirst => rank - 2,
        };
        let unshifted = |u: Id, always: bool| -> Vec<Id> {
            let mut v = vec![u];
            if always || eps.get() == 0.0 {
                v.extend(super::shift_sources(eg, u, first_axis));
            }
            v
        };
        // One name for one function: with eps = 0 both starts are `paper`.
        let tilekernels = if eps.get() == 0.0 {
            SinkhornVariant::Paper
        } else {
            SinkhornVariant::TileKernels
        };
        // Breadth-first over the classes under the top normalization,
        // `done` full rounds below `c`.
        let mut frontier = vec![top.children[0]];
        // A class met again is a cycle: the e-graph has proved a round
        // idempotent there (a 1×1 matrix, say), so longer chains are the
        // same Sinkhorns again; the walk stops instead of adding one per
        // round up to the cap.
        let mut seen: HashSet<Id> = frontier.iter().map(|&m| eg.find(m)).collect();
        let mut done = 0;
        while !frontier.is_empty() && done < MAX_SINKHORN_ITERS {
            let mut next = Vec::new();
            for m in frontier {
                for u in tilekernels_starts(eg, m, eps.get(), orientation) {
                    for x in unshifted(u, true) {
                        let spec = SinkhornSpec {
                            variant: tilekernels,
                            iters: done + 1,
                            eps,
                        };
                        out.push(found(x, spec));
                    }
                }
                for r in under(eg, m, &first) {
                    for x in under(eg, r, &Op::Exp)
                        .into_iter()
                        .flat_map(|u| unshifted(u, false))
                    {
                        let spec = SinkhornSpec {
                            variant: SinkhornVariant::Paper,
                            iters: done + 1,
                            eps: FloatAttr(eps.get()),
                        };
                        out.push(found(x, spec));
                    }
                    next.extend(under(eg, r, &second));
                }
            }
            next.sort();
            next.dedup();
            if next.iter().any(|&m| !seen.insert(eg.find(m))) {
                break;
            }
            frontier = next;
            done += 1;
        }
    }
}
