//! The mHC fusions: `mhc_pre` (or `hc_pre`) and `mhc_post`.
//!
//! `mhc-pre` starts from the projection `mixes = matmul(rms_norm(reshape(x)),
//! permute(fn))` — the form recognition leaves pre_norm_fn in — and
//! follows its users: the affine split `z = mixes · [scale0 ×n, scale1 ×n,
//! scale2 ×n²] + base`, then the three branches (sigmoid pre gates feeding
//! `apply_mix`, sigmoid post gates, the Sinkhorn-projected residual mix).
//! Only when all three are found does it add one `mhc_pre` and union each
//! branch with its `get`. `hc-pre` does the same for the tanh gates of
//! unconstrained hyper-connections.
//!
//! The swallowed intermediates may have other users: the e-graph keeps
//! them, so those users stay correct, and extraction computes them
//! separately only if it must.

use birkhoff_ir::{FloatAttr, Op, PreMixSpec, SinkhornSpec};
use egg::Id;

use super::{
    Action, Ctx, Rule, args_of, broadcast_sources, commuted, nodes_where, parents_where,
    reshape_sources, same, shape, splat,
};
use crate::lang::{EG, add_checked};

/// The fusion rules.
pub(crate) fn rules() -> Vec<Rule> {
    vec![
        // pre_norm_fn + split + sinkhorn + apply_mix = mhc_pre.
        Rule {
            name: "fuse-mhc-pre",
            search: fuse_mhc_pre,
        },
        // pre_norm_fn + tanh gates + apply_mix = hc_pre.
        Rule {
            name: "fuse-hc-pre",
            search: fuse_hc_pre,
        },
        // comb^T x + post ⊗ f = mhc_post.
        Rule {
            name: "fuse-mhc-post",
            search: fuse_mhc_post,
        },
    ]
}

/// The operands of one pre-mix: residual `x [T,n,C]` and `fn [m, nC]`.
#[derive(Clone, Copy)]
struct Proj {
    x: Id,
    proj: Id,
    norm_eps: FloatAttr,
    t: usize,
    n: usize,
}

/// If class `mixes` is `matmul(rms_norm(reshape(x)), permute(fn, [1,0]))`.
fn projections(eg: &EG, mixes: Id) -> Vec<Proj> {
    let mut out = Vec::new();
    for m in args_of(eg, mixes, &Op::MatMul) {
        let (a, w) = (m[0], m[1]);
        let fns: Vec<Id> = nodes_where(
            eg,
            w,
            |op| matches!(op, Op::Permute { perm } if perm == &[1, 0]),
        )
        .map(|n| n.children[0])
        .collect();
        for r in nodes_where(eg, a, |op| matches!(op, Op::RmsNorm { .. })) {
            let Op::RmsNorm { eps } = r.op else { continue };
            for x in reshape_sources(eg, r.children[0]) {
                let xs = shape(eg, x);
                if xs.len() != 3 {
                    continue;
                }
                let (t, n, c) = (xs[0], xs[1], xs[2]);
                for &f in &fns {
                    if shape(eg, f) == [n * (n + 2), n * c] {
                        out.push(Proj {
                            x,
                            proj: f,
                            norm_eps: eps,
                            t,
                            n,
                        });
                    }
                }
            }
        }
    }
    out
}

/// Users of class `c` that are `slice` nodes taking columns `lo..hi` of a `[T, m]` value.
fn column_slices<'a>(
    ctx: &'a Ctx<'_>,
    c: Id,
    t: usize,
    lo: usize,
    hi: usize,
) -> impl Iterator<Item = Id> + 'a {
    parents_where(
        ctx,
        c,
        move |op| matches!(op, Op::Slice { start, end } if start == &[0, lo] && end == &[t, hi]),
    )
    .map(|(p, _)| p)
}

/// Users of class `c` that are `op(c)`.
fn unary_users<'a>(ctx: &'a Ctx<'_>, c: Id, op: &'a Op) -> impl Iterator<Item = Id> + 'a {
    parents_where(ctx, c, move |o| o == op).map(|(p, _)| p)
}

/// `(user, k)` for users of `c` that are `c ⊕ splat k` (either order);
/// `(c, identity)` if there are none (the constant was left out).
fn with_constant(ctx: &Ctx<'_>, c: Id, op: &Op, identity: f64) -> Vec<(Id, f64)> {
    let eg = ctx.eg;
    let mut out = Vec::new();
    for (p, n) in parents_where(ctx, c, |o| o == op) {
        let other = if same(eg, n.children[0], c) {
            n.children[1]
        } else {
            n.children[0]
        };
        if let Some(k) = splat(eg, other).filter(|k| k.is_finite()) {
            out.push((p, k));
        }
    }
    if out.is_empty() {
        out.push((c, identity));
    }
    out
}

/// `layer_input` classes: `reshape(matmul(reshape(pre, [T,1,n]), x), [T,C])`.
fn apply_mix_users(ctx: &Ctx<'_>, pre: Id, x: Id) -> Vec<Id> {
    let eg = ctx.eg;
    let mut out = Vec::new();
    let xs = shape(eg, x);
    if xs.len() != 3 {
        return out;
    }
    // Only the [T, C] view is the fused op's first result.
    let li = [xs[0], xs[2]];
    for (row, _) in parents_where(
        ctx,
        pre,
        |op| matches!(op, Op::Reshape { shape } if shape.len() == 3 && shape[1] == 1),
    ) {
        for (mm, n) in parents_where(ctx, row, |op| *op == Op::MatMul) {
            if same(eg, n.children[0], row) && same(eg, n.children[1], x) {
                out.extend(
                    parents_where(
                        ctx,
                        mm,
                        move |op| matches!(op, Op::Reshape { shape } if shape == &li),
                    )
                    .map(|(p, _)| p),
                );
            }
        }
    }
    out
}

/// Whether class `v` is `concat(broadcast(scale[0:1]) ×n, broadcast(scale[1:2]) ×n, broadcast(scale[2:3]) ×n²)`.
fn scale_vector_of(eg: &EG, v: Id, n: usize) -> Vec<Id> {
    let mut out = Vec::new();
    for c in args_of(eg, v, &Op::Concat { axis: 0 }) {
        if c.len() != 3 {
            continue;
        }
        let part = |i: usize, len: usize| -> Vec<Id> {
            if shape(eg, c[i]) != [len] {
                return vec![];
            }
            broadcast_sources(eg, c[i])
                .into_iter()
                .flat_map(|s| nodes_where(eg, s, move |op| matches!(op, Op::Slice { start, end } if start == &[i] && end == &[i + 1])).map(|n| n.children[0]).collect::<Vec<_>>())
                .collect()
        };
        for s0 in part(0, n) {
            if part(1, n).iter().any(|&s| same(eg, s, s0))
                && part(2, n * n).iter().any(|&s| same(eg, s, s0))
                && shape(eg, s0) == [3]
            {
                out.push(s0);
            }
        }
    }
    out
}

fn fuse_mhc_pre(ctx: &Ctx<'_>, mixes: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    for p in projections(eg, mixes) {
        let m = p.n * (p.n + 2);
        // z = mixes · broadcast(scale_vec) + broadcast(base).
        for (zm, node) in parents_where(ctx, mixes, |op| *op == Op::Mul) {
            let sv = if same(eg, node.children[0], mixes) {
                node.children[1]
            } else {
                node.children[0]
            };
            let scales: Vec<Id> = broadcast_sources(eg, sv)
                .into_iter()
                .flat_map(|s| scale_vector_of(eg, s, p.n))
                .collect();
            for (z, zn) in parents_where(ctx, zm, |op| *op == Op::Add) {
                let bb = if same(eg, zn.children[0], zm) {
                    zn.children[1]
                } else {
                    zn.children[0]
                };
                let bases: Vec<Id> = broadcast_sources(eg, bb)
                    .into_iter()
                    .filter(|&b| shape(eg, b) == [m])
                    .collect();
                for &scale in &scales {
                    for &base in &bases {
                        pre_branches(ctx, z, p, scale, base, out);
                    }
                }
            }
        }
    }
}

/// The three branches of `z` and the fused op that replaces them.
fn pre_branches(ctx: &Ctx<'_>, z: Id, p: Proj, scale: Id, base: Id, out: &mut Vec<Action>) {
    let (t, n) = (p.t, p.n);
    let m = n * (n + 2);
    let sigmoid_of = |lo: usize, hi: usize| -> Vec<Id> {
        column_slices(ctx, z, t, lo, hi)
            .flat_map(|s| unary_users(ctx, s, &Op::Sigmoid).collect::<Vec<_>>())
            .collect()
    };
    // pre = sigmoid(z[:, :n]) + pre_eps, feeding apply_mix.
    let mut pres = Vec::new();
    for g in sigmoid_of(0, n) {
        for (pre, pre_eps) in with_constant(ctx, g, &Op::Add, 0.0) {
            for li in apply_mix_users(ctx, pre, p.x) {
                pres.push((li, pre_eps));
            }
        }
    }
    // post = sigmoid(z[:, n:2n]) · post_mult.
    let posts: Vec<(Id, f64)> = sigmoid_of(n, 2 * n)
        .into_iter()
        .flat_map(|g| with_constant(ctx, g, &Op::Mul, 1.0))
        .collect();
    // comb = sinkhorn(reshape(z[:, 2n:], [T,n,n])). Every prefix of an
    // unrolled chain is a sinkhorn of the same logits; fuse only the
    // longest of each (variant, eps).
    let mut combs: Vec<(Id, SinkhornSpec)> = Vec::new();
    for s in column_slices(ctx, z, t, 2 * n, m) {
        for (r, _) in parents_where(
            ctx,
            s,
            |op| matches!(op, Op::Reshape { shape } if shape == &[t, n, n]),
        ) {
            for (c, node) in parents_where(ctx, r, |op| matches!(op, Op::Sinkhorn(_))) {
                if let Op::Sinkhorn(spec) = node.op {
                    combs.push((c, spec));
                }
            }
        }
    }
    let longest = |spec: &SinkhornSpec| {
        combs
            .iter()
            .filter(|(_, s)| s.variant == spec.variant && s.eps == spec.eps)
            .map(|(_, s)| s.iters)
            .max()
            == Some(spec.iters)
    };
    let combs: Vec<(Id, SinkhornSpec)> =
        combs.iter().copied().filter(|(_, s)| longest(s)).collect();
    for &(li, pre_eps) in &pres {
        for &(post, post_mult) in &posts {
            for &(comb, spec) in &combs {
                let op = Op::MhcPre(PreMixSpec {
                    norm_eps: p.norm_eps,
                    pre_eps: FloatAttr(pre_eps),
                    post_mult: FloatAttr(post_mult),
                    sinkhorn: spec,
                });
                let operands = vec![p.x, p.proj, scale, base];
                out.push(Action::custom(move |eg| {
                    fused_triple(eg, op, operands, [li, post, comb])
                }));
            }
        }
    }
}

/// Adds `op(operands)` and unions each result class with its `get`.
fn fused_triple(eg: &mut EG, op: Op, operands: Vec<Id>, results: [Id; 3]) -> Vec<(Id, Id)> {
    let Some(tuple) = add_checked(eg, op, operands) else {
        return vec![];
    };
    (0..3)
        .filter_map(|i| add_checked(eg, Op::Get { index: i }, vec![tuple]).map(|g| (results[i], g)))
        .collect()
}

/// `gate_i(lo..hi) = scale_i · tanh(mixes[:, lo..hi]) + base[lo..hi]` users.
fn tanh_gates(
    ctx: &Ctx<'_>,
    mixes: Id,
    t: usize,
    lo: usize,
    hi: usize,
    i: usize,
) -> Vec<(Id, Id, Id)> {
    let eg = ctx.eg;
    let mut out = Vec::new();
    for s in column_slices(ctx, mixes, t, lo, hi) {
        for th in unary_users(ctx, s, &Op::Tanh).collect::<Vec<_>>() {
            for (g, gn) in parents_where(ctx, th, |op| *op == Op::Mul) {
                let k = if same(eg, gn.children[0], th) {
                    gn.children[1]
                } else {
                    gn.children[0]
                };
                // k = broadcast(reshape(scale[i:i+1], [])).
                let scales: Vec<Id> = broadcast_sources(eg, k)
                    .into_iter()
                    .flat_map(|r| reshape_sources(eg, r))
                    .flat_map(|sl| nodes_where(eg, sl, move |op| matches!(op, Op::Slice { start, end } if start == &[i] && end == &[i + 1])).map(|n| n.children[0]).collect::<Vec<_>>())
                    .collect();
                for (gate, an) in parents_where(ctx, g, |op| *op == Op::Add) {
                    let bb = if same(eg, an.children[0], g) {
                        an.children[1]
                    } else {
                        an.children[0]
                    };
                    // bb = broadcast(base[lo..hi]).
                    let bases: Vec<Id> = broadcast_sources(eg, bb)
                        .into_iter()
                        .flat_map(|b| nodes_where(eg, b, move |op| matches!(op, Op::Slice { start, end } if start == &[lo] && end == &[hi])).map(|n| n.children[0]).collect::<Vec<_>>())
                        .collect();
                    for &scale in &scales {
                        for &base in &bases {
                            out.push((gate, scale, base));
                        }
                    }
                }
            }
        }
    }
    out
}

fn fuse_hc_pre(ctx: &Ctx<'_>, mixes: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    for p in projections(eg, mixes) {
        let (t, n) = (p.t, p.n);
        let m = n * (n + 2);
        // The gates may slice longer vectors; hc_pre takes scale [3], base [m].
        let operands_fit = |v: &(Id, Id, Id)| shape(eg, v.1) == [3] && shape(eg, v.2) == [m];
        let pres: Vec<_> = tanh_gates(ctx, mixes, t, 0, n, 0)
            .into_iter()
            .filter(operands_fit)
            .collect();
        let posts = tanh_gates(ctx, mixes, t, n, 2 * n, 1);
        let combs = tanh_gates(ctx, mixes, t, 2 * n, m, 2);
        for &(pre, scale, base) in &pres {
            let lis = apply_mix_users(ctx, pre, p.x);
            let matching = |v: &&(Id, Id, Id)| same(eg, v.1, scale) && same(eg, v.2, base);
            for &(post, _, _) in posts.iter().filter(matching) {
                for &(comb_flat, _, _) in combs.iter().filter(matching) {
                    for (comb, _) in parents_where(
                        ctx,
                        comb_flat,
                        |op| matches!(op, Op::Reshape { shape } if shape == &[t, n, n]),
                    ) {
                        for &li in &lis {
                            let op = Op::HcPre {
                                norm_eps: p.norm_eps,
                            };
                            let operands = vec![p.x, p.proj, scale, base];
                            out.push(Action::custom(move |eg| {
                                fused_triple(eg, op, operands, [li, post, comb])
                            }));
                        }
                    }
                }
            }
        }
    }
}

fn fuse_mhc_post(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let cs = shape(eg, c);
    if cs.len() != 3 {
        return;
    }
    let (t, n, ch) = (cs[0], cs[1], cs[2]);
    for (mixed, prod) in commuted(eg, c, &Op::Add) {
        // mixed = matmul(permute(comb, [0,2,1]), x).
        for mm in args_of(eg, mixed, &Op::MatMul) {
            let x = mm[1];
            let combs: Vec<Id> = nodes_where(
                eg,
                mm[0],
                |op| matches!(op, Op::Permute { perm } if perm == &[0, 2, 1]),
            )
            .map(|n| n.children[0])
            .collect();
            // prod = broadcast(reshape(post, [T,n,1])) · broadcast(reshape(f, [T,1,C])),
            // either broadcast absent when it is the identity (C = 1, n = 1).
            for (bp, bf) in commuted(eg, prod, &Op::Mul) {
                let through = |b: Id, want: &[usize]| -> Vec<Id> {
                    let mut sources = broadcast_sources(eg, b);
                    sources.push(b);
                    sources
                        .into_iter()
                        .filter(|&r| shape(eg, r) == want)
                        .flat_map(|r| reshape_sources(eg, r))
                        .collect()
                };
                for post in through(bp, &[t, n, 1])
                    .into_iter()
                    .filter(|&p| shape(eg, p) == [t, n])
                {
                    for f in through(bf, &[t, 1, ch])
                        .into_iter()
                        .filter(|&f| shape(eg, f) == [t, ch])
                    {
                        for &comb in &combs {
                            out.push(super::rewrite_to(c, Op::MhcPost, vec![f, x, post, comb]));
                        }
                    }
                }
            }
        }
    }
}
