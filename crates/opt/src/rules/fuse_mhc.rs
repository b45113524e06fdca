//! The mHC fusions: `mhc_pre` (or `hc_pre`) and `mhc_post`, found in any
//! spelling that reaches them through the earlier passes.
//!
//! **The pre-mix** is matched from the residual stream `x [T,n,C]` up. Its
//! *projections* are the classes `matmul(a, W)` where `a` is
//! `rms_norm(reshape(x, [T, nC]))` (or that times a per-channel weight `γ`)
//! and `W` any `[nC, K]` value: the zoo's `permute(fn)`, an input-major
//! matrix, one of the paper's three `φ`s. From each, the matcher follows
//! users that keep the value an *affine projection* — column slices, a
//! scale (a scalar, or a per-column vector), a bias — and records, for
//! every class it reaches, which columns of which `W`, scaled and shifted
//! by what, it computes. The three branches are then found among those
//! classes:
//!
//! * pre gates: `sigmoid` of an `n`-column affine projection, plus a
//!   constant, feeding the apply_mix of the same `x` (`[T, C]` or
//!   `[T, 1, C]`);
//! * post gates: `sigmoid` of an `n`-column one, times a constant;
//! * the residual mix: `sinkhorn` of an `n²`-column one reshaped
//!   `[T, n, n]`, or of its transpose (the paper's `H_res`, whose
//!   Sinkhorn runs columns first).
//!
//! When all three share `x`, the RMS epsilon and `γ`, one `mhc_pre` is
//! added with *packed* operands built from the weights: `fn` is the
//! branches' columns of their `W`s side by side (transposed, times `γ`;
//! the comb columns reordered for a transposed residual mix, and per-column
//! scales that are not uniform within a branch multiplied in), `scale`
//! the three branch scales and `base` the three biases. These are
//! weight-side ops, sized by the weights and not by the tokens; when the
//! branches are the zoo's slices of one `z = mixes ⊙ scale_vec + base`,
//! the operands are the zoo's `fn`, `scale` and `base` themselves.
//!
//! `hc-pre` does the same for the tanh gates of unconstrained
//! hyper-connections, on one packed projection.
//!
//! **The post-mix** is `mix + post ⊗ f` (either order) with `mix` a
//! batched product `M · x` of a `[T,n,n]` matrix and the stream — `M` the
//! zoo's `combᵀ` or the paper's `H_res` — and `post ⊗ f` a broadcast
//! product or an outer product `[T,n,1] · [T,1,C]`.
//!
//! The swallowed intermediates may have other users: the e-graph keeps
//! them, so those users stay correct, and extraction computes them
//! separately only if it must.

use std::collections::HashSet;

use birkhoff_ir::{DType, FloatAttr, Op, PreMixSpec, SinkhornSpec, TensorType};
use egg::Id;

use super::build;
use super::{
    Action, Ctx, Rule, args_of, broadcast_sources, commuted, nodes_where, parents_where,
    reshape_sources, same, shape, splat,
};
use crate::lang::{EG, add_checked};

/// The fusion rules.
pub(crate) fn rules() -> Vec<Rule> {
    vec![
        // pre_norm_fn + split + sinkhorn + apply_mix = mhc_pre, weights packed.
        Rule {
            name: "fuse-mhc-pre",
            search: fuse_mhc_pre,
        },
        // pre_norm_fn + tanh gates + apply_mix = hc_pre.
        Rule {
            name: "fuse-hc-pre",
            search: fuse_hc_pre,
        },
        // M x + post ⊗ f = mhc_post(f, x, post, Mᵀ).
        Rule {
            name: "fuse-mhc-post",
            search: fuse_mhc_post,
        },
    ]
}

// ---- affine projections of the stream --------------------------------------

/// The stream a projection reads and how it is normalized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Source {
    /// `x [T, n, C]`.
    x: Id,
    /// The RMS epsilon.
    norm_eps: FloatAttr,
    /// A per-channel weight `γ` (`[nC]` or `[1, nC]`) after the RMS factor.
    gamma: Option<Id>,
}

/// How a projection's columns are scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Scale {
    /// Not at all.
    One,
    /// By a constant.
    Const(FloatAttr),
    /// By a one-element value.
    Scalar(Id),
    /// Column `w` of `W` by element `w - base` of a vector.
    Columns(Id, usize),
}

/// What is added to a projection's columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Bias {
    /// Nothing.
    Zero,
    /// A constant.
    Const(FloatAttr),
    /// A one-element value.
    Scalar(Id),
    /// Column `w` of `W` gets element `w - base` of a vector.
    Columns(Id, usize),
}

/// `value[t, j] = scale(w) · Σ_i x̂[t, i] · W[i, w] + bias(w)` for the
/// columns `w = lo + j` of `W`, `x̂` the RMS-normalized (and `γ`-weighted)
/// flattened stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Proj {
    src: Source,
    /// `W [nC, K]`.
    w: Id,
    /// `[lo, hi)` of `W`'s columns.
    cols: (usize, usize),
    scale: Scale,
    bias: Bias,
}

impl Proj {
    fn width(&self) -> usize {
        self.cols.1 - self.cols.0
    }
}

/// `(t, n, c)` of a stream class, if it is `[T, n, C]`.
fn stream_dims(eg: &EG, x: Id) -> Option<(usize, usize, usize)> {
    match shape(eg, x) {
        [t, n, c] => Some((*t, *n, *c)),
        _ => None,
    }
}

/// The projections of stream `x`: `matmul(a, W)` classes with `a` the
/// normalized flattened stream.
fn projections(ctx: &Ctx<'_>, x: Id) -> Vec<(Id, Proj)> {
    let eg = ctx.eg;
    let Some((t, n, c)) = stream_dims(eg, x) else {
        return vec![];
    };
    let k = n * c;
    let mut out = Vec::new();
    let flat = |op: &Op| matches!(op, Op::Reshape { shape } if shape == &[t, k]);
    for (r, _) in parents_where(ctx, x, flat) {
        for (rn, node) in parents_where(ctx, r, |op| matches!(op, Op::RmsNorm { .. })) {
            let Op::RmsNorm { eps } = node.op else {
                continue;
            };
            // The normalized stream, and the same times a weight γ.
            let mut normed = vec![(rn, None)];
            for (g, gn) in parents_where(ctx, rn, |op| *op == Op::Mul) {
                let other = other_operand(eg, &gn.children, rn);
                for s in broadcast_sources(eg, other) {
                    if matches!(shape(eg, s), [w] | [1, w] if *w == k) {
                        normed.push((g, Some(s)));
                    }
                }
            }
            for (a, gamma) in normed {
                for (mm, node) in parents_where(ctx, a, |op| *op == Op::MatMul) {
                    let w = node.children[1];
                    if !same(eg, node.children[0], a) {
                        continue;
                    }
                    if let [rows, cols] = *shape(eg, w)
                        && rows == k
                    {
                        let src = Source {
                            x,
                            norm_eps: eps,
                            gamma,
                        };
                        let p = Proj {
                            src,
                            w,
                            cols: (0, cols),
                            scale: Scale::One,
                            bias: Bias::Zero,
                        };
                        out.push((mm, p));
                    }
                }
            }
        }
    }
    out
}

/// The operand of a binary node other than `c` (the first if both are).
fn other_operand(eg: &EG, children: &[Id], c: Id) -> Id {
    if same(eg, children[0], c) {
        children[1]
    } else {
        children[0]
    }
}

/// What a factor `f` of a `[T, width]` product scales by: a constant, a
/// one-element value, or a per-column vector (broadcast from `[width]` or
/// `[1, width]`).
fn factors(eg: &EG, f: Id, width: usize, lo: usize) -> Vec<Scale> {
    if let Some(v) = splat(eg, f) {
        return vec![Scale::Const(FloatAttr(v))];
    }
    // What `f` broadcasts, or `f` itself (a `[1, width]` factor of a
    // one-token product needs no broadcast).
    let mut sources = broadcast_sources(eg, f);
    sources.push(f);
    sources
        .into_iter()
        .filter_map(|s| match shape(eg, s) {
            sh if sh.iter().product::<usize>() == 1 => Some(Scale::Scalar(s)),
            [w] | [1, w] if *w == width => Some(Scale::Columns(s, lo)),
            _ => None,
        })
        .collect()
}

/// The same for an added term.
fn terms(eg: &EG, b: Id, width: usize, lo: usize) -> Vec<Bias> {
    factors(eg, b, width, lo)
        .into_iter()
        .map(|s| match s {
            Scale::Const(v) => Bias::Const(v),
            Scale::Scalar(s) => Bias::Scalar(s),
            Scale::Columns(v, base) => Bias::Columns(v, base),
            Scale::One => Bias::Zero,
        })
        .collect()
}

/// Every class reachable from the projections of `x` that is still an
/// affine projection of it, with what it computes.
fn affine_classes(ctx: &Ctx<'_>, x: Id) -> Vec<(Id, Proj)> {
    let eg = ctx.eg;
    let Some((t, _, _)) = stream_dims(eg, x) else {
        return vec![];
    };
    let mut seen: HashSet<(Id, Proj)> = HashSet::new();
    let mut out = Vec::new();
    let mut frontier = projections(ctx, x);
    // Slice, scale, add: a few steps, whatever their order allows.
    for _ in 0..6 {
        let mut next = Vec::new();
        for (c, p) in frontier {
            if !seen.insert((eg.find(c), p)) {
                continue;
            }
            out.push((c, p));
            let width = p.width();
            for (s, node) in parents_where(ctx, c, |op| matches!(op, Op::Slice { .. })) {
                if let Op::Slice { start, end } = &node.op
                    && start.len() == 2
                    && start[0] == 0
                    && end[0] == t
                {
                    let narrowed = Proj {
                        cols: (p.cols.0 + start[1], p.cols.0 + end[1]),
                        ..p
                    };
                    next.push((s, narrowed));
                }
            }
            if p.scale == Scale::One && p.bias == Bias::Zero {
                for (m, node) in parents_where(ctx, c, |op| *op == Op::Mul) {
                    let f = other_operand(eg, &node.children, c);
                    for scale in factors(eg, f, width, p.cols.0) {
                        next.push((m, Proj { scale, ..p }));
                    }
                }
            }
            if p.bias == Bias::Zero {
                for (a, node) in parents_where(ctx, c, |op| *op == Op::Add) {
                    let b = other_operand(eg, &node.children, c);
                    for bias in terms(eg, b, width, p.cols.0) {
                        next.push((a, Proj { bias, ..p }));
                    }
                }
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    out
}

// ---- the branches ------------------------------------------------------------

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
        let other = other_operand(eg, &n.children, c);
        if let Some(k) = splat(eg, other).filter(|k| k.is_finite()) {
            out.push((p, k));
        }
    }
    if out.is_empty() {
        out.push((c, identity));
    }
    out
}

/// The layer inputs `Σ_i pre[t,i] · x[t,i,:]` of gates `pre [T,n]`:
/// `matmul(reshape(pre, [T,1,n]), x)` (`[T,1,C]`) and its `[T, C]` view.
fn apply_mix_users(ctx: &Ctx<'_>, pre: Id, x: Id) -> Vec<Id> {
    let eg = ctx.eg;
    let mut out = Vec::new();
    let Some((t, _, c)) = stream_dims(eg, x) else {
        return out;
    };
    let li = [t, c];
    for (row, _) in parents_where(
        ctx,
        pre,
        |op| matches!(op, Op::Reshape { shape } if shape.len() == 3 && shape[1] == 1),
    ) {
        for (mm, n) in parents_where(ctx, row, |op| *op == Op::MatMul) {
            if same(eg, n.children[0], row) && same(eg, n.children[1], x) {
                out.push(mm);
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

/// A residual-mix branch: the Sinkhorn class, its settings, the affine
/// projection of its logits, and whether the logits are transposed.
#[derive(Clone, Copy)]
struct Comb {
    class: Id,
    spec: SinkhornSpec,
    proj: Proj,
    transposed: bool,
}

fn combs(ctx: &Ctx<'_>, affine: &[(Id, Proj)], t: usize, n: usize) -> Vec<Comb> {
    let mut found: Vec<Comb> = Vec::new();
    for &(z, proj) in affine.iter().filter(|(_, p)| p.width() == n * n) {
        let square = |op: &Op| matches!(op, Op::Reshape { shape } if shape == &[t, n, n]);
        for (r, _) in parents_where(ctx, z, square) {
            let mut logits = vec![(r, false)];
            let swap = |op: &Op| matches!(op, Op::Permute { perm } if perm == &[0, 2, 1]);
            logits.extend(parents_where(ctx, r, swap).map(|(p, _)| (p, true)));
            for (l, transposed) in logits {
                for (c, node) in parents_where(ctx, l, |op| matches!(op, Op::Sinkhorn(_))) {
                    if let Op::Sinkhorn(spec) = node.op {
                        found.push(Comb {
                            class: c,
                            spec,
                            proj,
                            transposed,
                        });
                    }
                }
            }
        }
    }
    // Every prefix of an unrolled chain is a sinkhorn of the same logits;
    // fuse only the longest of each (variant, eps, orientation).
    let longest = |c: &Comb| {
        found
            .iter()
            .filter(|o| {
                o.spec.variant == c.spec.variant
                    && o.spec.eps == c.spec.eps
                    && o.transposed == c.transposed
            })
            .map(|o| o.spec.iters)
            .max()
            == Some(c.spec.iters)
    };
    found.iter().copied().filter(longest).collect()
}

fn fuse_mhc_pre(ctx: &Ctx<'_>, x: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let Some((t, n, _)) = stream_dims(eg, x) else {
        return;
    };
    let affine = affine_classes(ctx, x);
    if affine.is_empty() {
        return;
    }
    let gates = |width: usize| -> Vec<(Id, Proj)> {
        affine
            .iter()
            .filter(|(_, p)| p.width() == width)
            .flat_map(|&(z, p)| unary_users(ctx, z, &Op::Sigmoid).map(move |g| (g, p)))
            .collect()
    };
    let sigmoids = gates(n);
    let mut pres = Vec::new();
    for &(g, p) in &sigmoids {
        for (pre, pre_eps) in with_constant(ctx, g, &Op::Add, 0.0) {
            for li in apply_mix_users(ctx, pre, x) {
                pres.push((li, pre_eps, p));
            }
        }
    }
    let posts: Vec<(Id, f64, Proj)> = sigmoids
        .iter()
        .flat_map(|&(g, p)| {
            with_constant(ctx, g, &Op::Mul, 1.0)
                .into_iter()
                .map(move |(post, mult)| (post, mult, p))
        })
        .collect();
    let combs = combs(ctx, &affine, t, n);
    for &(li, pre_eps, pre) in &pres {
        for &(post, post_mult, pp) in &posts {
            for comb in &combs {
                let (a, b, r) = (pre.src, pp.src, comb.proj.src);
                if a != b || a != r || !disjoint(eg, &[pre, pp, comb.proj]) {
                    continue;
                }
                let spec = PreMixSpec {
                    norm_eps: a.norm_eps,
                    pre_eps: FloatAttr(pre_eps),
                    post_mult: FloatAttr(post_mult),
                    sinkhorn: comb.spec,
                };
                let branches = [pre, pp, comb.proj];
                let (transposed, comb_class) = (comb.transposed, comb.class);
                out.push(Action::custom(move |eg| {
                    let Some(operands) = pack(eg, branches, transposed, n) else {
                        return vec![];
                    };
                    fused_triple(eg, Op::MhcPre(spec), operands, [li, post, comb_class])
                }));
            }
        }
    }
}

/// Whether no two branches read the same columns of the same weights: the
/// three branches of a pre-mix are three different projections (a gate
/// that is also read as another branch is not one).
fn disjoint(eg: &EG, branches: &[Proj]) -> bool {
    branches.iter().enumerate().all(|(i, a)| {
        branches[i + 1..]
            .iter()
            .all(|b| !same(eg, a.w, b.w) || a.cols.1 <= b.cols.0 || b.cols.1 <= a.cols.0)
    })
}

// ---- packing -------------------------------------------------------------------

/// The one-element value a per-column vector `v` holds on `lo..hi`, when
/// it is uniform there: `v` is a concat with a part spanning exactly those
/// columns that broadcasts one element, or `v` broadcasts one element.
fn uniform_part(eg: &EG, v: Id, lo: usize, hi: usize) -> Option<Id> {
    // A one-element class, or what a class broadcasts from one element.
    let one = |c: Id| {
        let mut sources = broadcast_sources(eg, c);
        sources.push(c);
        sources
            .into_iter()
            .find(|&s| shape(eg, s).iter().product::<usize>() == 1)
    };
    if let Some(s) = one(v) {
        return Some(s);
    }
    // Look through a `[1, K]` view of a `[K]` vector.
    let mut views = vec![v];
    views.extend(reshape_sources(eg, v));
    for v in views {
        for parts in args_of(eg, v, &Op::Concat { axis: 0 }) {
            let mut at = 0;
            for &p in parts {
                let len = shape(eg, p).first().copied().unwrap_or(0);
                if at == lo && at + len == hi {
                    return one(p);
                }
                at += len;
            }
        }
    }
    None
}

/// The class `s` is `slice(S, [i], [i+1])` of a `[3]` value `S`, seen
/// through reshapes: `S`.
fn slice_of_three(eg: &EG, s: Id, i: usize) -> Option<Id> {
    let mut views = vec![s];
    views.extend(reshape_sources(eg, s));
    views.into_iter().find_map(|v| {
        nodes_where(
            eg,
            v,
            |op| matches!(op, Op::Slice { start, end } if start == &[i] && end == &[i + 1]),
        )
        .map(|n| n.children[0])
        .find(|&src| shape(eg, src) == [3])
    })
}

/// `v` as a `[len]` vector.
fn as_vector(eg: &mut EG, v: Id, len: usize) -> Option<Id> {
    build::reshape(eg, v, &[len])
}

/// The packed operands `(fn [m, nC], scale [3], base [m])` of the three
/// branches (pre, post, residual), or `None` if a term cannot be built.
fn pack(eg: &mut EG, [pre, post, res]: [Proj; 3], transposed: bool, n: usize) -> Option<Vec<Id>> {
    let dtype = build::dtype(eg, pre.w)?;
    let k = *shape(eg, pre.w).first()?;
    let m = n * (n + 2);
    let branches = [pre, post, res];
    // The zoo's shape: one W, its columns in order, one scale vector and
    // one base over all of them.
    let whole = |p: &Proj, lo: usize| same(eg, p.w, pre.w) && p.cols == (lo, lo + p.width());
    let one_matrix = !transposed
        && pre.cols.0 == 0
        && whole(&pre, 0)
        && whole(&post, n)
        && whole(&res, 2 * n)
        && shape(eg, pre.w) == [k, m];
    // Per branch: its columns of W (scaled where the scale is not
    // uniform), its scale entry, its bias part.
    let mut cols = Vec::new();
    let mut scales = Vec::new();
    let mut biases = Vec::new();
    let mut folded = false;
    for (i, p) in branches.iter().enumerate() {
        let width = p.width();
        let transpose = transposed && i == 2;
        let (entry, column_factor) = match p.scale {
            Scale::One => (None, None),
            Scale::Const(v) => (Some(Entry::Const(v.get())), None),
            Scale::Scalar(s) => (Some(Entry::Class(s, i)), None),
            Scale::Columns(v, base) => {
                match uniform_part(eg, v, p.cols.0 - base, p.cols.1 - base) {
                    Some(s) => (Some(Entry::Class(s, i)), None),
                    None => (None, Some((v, p.cols.0 - base, p.cols.1 - base))),
                }
            }
        };
        folded |= column_factor.is_some();
        let mut part = build::columns(eg, p.w, p.cols.0, p.cols.1)?;
        if let Some((v, lo, hi)) = column_factor {
            let len = shape(eg, v).iter().product();
            let vec = as_vector(eg, v, len)?;
            let slice = build::columns(eg, vec, lo, hi)?;
            let row = build::reshape(eg, slice, &[1, width])?;
            let b = build::broadcast(eg, row, &[k, width])?;
            part = add_checked(eg, Op::Mul, vec![part, b])?;
        }
        if transpose {
            let cube = build::reshape(eg, part, &[k, n, n])?;
            let swapped = build::permute(eg, cube, &[0, 2, 1])?;
            part = build::reshape(eg, swapped, &[k, n * n])?;
        }
        cols.push(part);
        scales.push(entry);
        let bias = match p.bias {
            Bias::Zero => build::splat(eg, TensorType::new(dtype, [width]), 0.0),
            Bias::Const(v) => build::splat(eg, TensorType::new(dtype, [width]), v.get()),
            Bias::Scalar(s) => {
                let one = build::reshape(eg, s, &[1])?;
                build::broadcast(eg, one, &[width])?
            }
            Bias::Columns(v, base) => {
                let len = shape(eg, v).iter().product();
                let vec = as_vector(eg, v, len)?;
                build::columns(eg, vec, p.cols.0 - base, p.cols.1 - base)?
            }
        };
        let bias = if transpose {
            let sq = build::reshape(eg, bias, &[n, n])?;
            let swapped = build::permute(eg, sq, &[1, 0])?;
            build::reshape(eg, swapped, &[n * n])?
        } else {
            bias
        };
        biases.push(bias);
    }
    let w_all = if one_matrix && !folded {
        pre.w
    } else {
        build::concat(eg, cols, 1)?
    };
    let w_all = match pre.src.gamma {
        None => w_all,
        Some(g) => {
            let col = build::reshape(eg, g, &[k, 1])?;
            let b = build::broadcast(eg, col, &[k, m])?;
            add_checked(eg, Op::Mul, vec![w_all, b])?
        }
    };
    let proj = build::permute(eg, w_all, &[1, 0])?;
    let scale = pack_scales(eg, &scales, dtype)?;
    // One bias vector over all m columns, in order: the zoo's `base`.
    let base = match (pre.bias, post.bias, res.bias) {
        (Bias::Columns(a, 0), Bias::Columns(b, 0), Bias::Columns(c, 0))
            if one_matrix && same(eg, a, b) && same(eg, b, c) && shape(eg, a) == [m] =>
        {
            a
        }
        _ => build::concat(eg, biases, 0)?,
    };
    Some(vec![pre.src.x, proj, scale, base])
}

/// A branch's entry of the `scale [3]` operand.
#[derive(Clone, Copy)]
enum Entry {
    Const(f64),
    /// A one-element class, for branch `i`.
    Class(Id, usize),
}

/// `scale [3]` from the branches' entries (`None`: 1): the `[3]` value
/// they are slices of, in order, when there is one.
fn pack_scales(eg: &mut EG, entries: &[Option<Entry>], dtype: DType) -> Option<Id> {
    let sources: Vec<Option<Id>> = entries
        .iter()
        .map(|e| match e {
            Some(Entry::Class(s, i)) => slice_of_three(eg, *s, *i),
            _ => None,
        })
        .collect();
    if let [Some(a), Some(b), Some(c)] = sources[..]
        && same(eg, a, b)
        && same(eg, b, c)
    {
        return Some(a);
    }
    let parts = entries
        .iter()
        .map(|e| match e {
            None => Some(build::splat(eg, TensorType::new(dtype, [1]), 1.0)),
            Some(Entry::Const(v)) => Some(build::splat(eg, TensorType::new(dtype, [1]), *v)),
            Some(Entry::Class(s, _)) => build::reshape(eg, *s, &[1]),
        })
        .collect::<Option<Vec<Id>>>()?;
    build::concat(eg, parts, 0)
}

/// Adds `op(operands)` and unions each result class with its `get` (seen
/// through a reshape when the class keeps another shape, e.g. a `[T,1,C]`
/// layer input).
fn fused_triple(eg: &mut EG, op: Op, operands: Vec<Id>, results: [Id; 3]) -> Vec<(Id, Id)> {
    let Some(tuple) = add_checked(eg, op, operands) else {
        return vec![];
    };
    let mut unions = Vec::new();
    for (i, &r) in results.iter().enumerate() {
        let Some(g) = add_checked(eg, Op::Get { index: i }, vec![tuple]) else {
            continue;
        };
        let want = shape(eg, r).to_vec();
        if let Some(v) = build::reshape(eg, g, &want) {
            unions.push((r, v));
        }
    }
    unions
}

// ---- hc_pre ----------------------------------------------------------------------

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
    let column_slice =
        |op: &Op| matches!(op, Op::Slice { start, end } if start == &[0, lo] && end == &[t, hi]);
    for (s, _) in parents_where(ctx, mixes, column_slice) {
        for th in unary_users(ctx, s, &Op::Tanh).collect::<Vec<_>>() {
            for (g, gn) in parents_where(ctx, th, |op| *op == Op::Mul) {
                let k = other_operand(eg, &gn.children, th);
                // k = broadcast(reshape(scale[i:i+1], [])).
                let scales: Vec<Id> = broadcast_sources(eg, k)
                    .into_iter()
                    .filter_map(|r| slice_of_three(eg, r, i))
                    .collect();
                for (gate, an) in parents_where(ctx, g, |op| *op == Op::Add) {
                    let bb = other_operand(eg, &an.children, g);
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

fn fuse_hc_pre(ctx: &Ctx<'_>, x: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let Some((t, n, _)) = stream_dims(eg, x) else {
        return;
    };
    let m = n * (n + 2);
    for (mixes, p) in projections(ctx, x) {
        if p.cols != (0, m) || p.src.gamma.is_some() {
            continue;
        }
        // The gates may slice longer vectors; hc_pre takes base [m].
        let operands_fit = |v: &(Id, Id, Id)| shape(eg, v.2) == [m];
        let pres: Vec<_> = tanh_gates(ctx, mixes, t, 0, n, 0)
            .into_iter()
            .filter(operands_fit)
            .collect();
        let posts = tanh_gates(ctx, mixes, t, n, 2 * n, 1);
        let combs = tanh_gates(ctx, mixes, t, 2 * n, m, 2);
        for &(pre, scale, base) in &pres {
            let lis = apply_mix_users(ctx, pre, x);
            let matching = |v: &&(Id, Id, Id)| same(eg, v.1, scale) && same(eg, v.2, base);
            for &(post, _, _) in posts.iter().filter(matching) {
                for &(comb_flat, _, _) in combs.iter().filter(matching) {
                    let square =
                        |op: &Op| matches!(op, Op::Reshape { shape } if shape == &[t, n, n]);
                    for (comb, _) in parents_where(ctx, comb_flat, square) {
                        for &li in &lis {
                            let op = Op::HcPre {
                                norm_eps: p.src.norm_eps,
                            };
                            let w = p.w;
                            out.push(Action::custom(move |eg| {
                                let Some(proj) = build::permute(eg, w, &[1, 0]) else {
                                    return vec![];
                                };
                                fused_triple(eg, op, vec![x, proj, scale, base], [li, post, comb])
                            }));
                        }
                    }
                }
            }
        }
    }
}

// ---- mhc_post ----------------------------------------------------------------------

/// A value of the given shape, or a reshape of one to build: `(class,
/// shape to view it as)`.
type View = (Id, Vec<usize>);

/// `post [T,n]` and `f [T,C]` (as views) of an outer product `prod
/// [T,n,C]`: `[broadcast](post as [T,n,1]) · [broadcast](f as [T,1,C])`
/// (either order) or `matmul(post as [T,n,1], f as [T,1,C])`.
fn outer_factors(eg: &EG, prod: Id, t: usize, n: usize, ch: usize) -> Vec<(View, View)> {
    let mut out = Vec::new();
    // A class viewed as `[T,n,1]` (or `[T,1,C]`): itself, or what it
    // broadcasts.
    let through = |b: Id, want: [usize; 3]| -> Vec<Id> {
        let mut sources = broadcast_sources(eg, b);
        sources.push(b);
        sources
            .into_iter()
            .filter(|&r| shape(eg, r) == want)
            .collect()
    };
    let post_view = |c: Id| -> View {
        let flat = reshape_sources(eg, c)
            .into_iter()
            .find(|&s| shape(eg, s) == [t, n]);
        flat.map_or((c, vec![t, n]), |s| (s, vec![t, n]))
    };
    let f_view = |c: Id| -> View {
        let flat = reshape_sources(eg, c)
            .into_iter()
            .find(|&s| shape(eg, s) == [t, ch]);
        flat.map_or((c, vec![t, ch]), |s| (s, vec![t, ch]))
    };
    for (bp, bf) in commuted(eg, prod, &Op::Mul) {
        for p in through(bp, [t, n, 1]) {
            for f in through(bf, [t, 1, ch]) {
                out.push((post_view(p), f_view(f)));
            }
        }
    }
    for mm in args_of(eg, prod, &Op::MatMul) {
        if shape(eg, mm[0]) == [t, n, 1] && shape(eg, mm[1]) == [t, 1, ch] {
            out.push((post_view(mm[0]), f_view(mm[1])));
        }
    }
    out
}

fn fuse_mhc_post(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    let Some((t, n, ch)) = stream_dims(eg, c) else {
        return;
    };
    for (mixed, prod) in commuted(eg, c, &Op::Add) {
        // mixed = matmul(M, x) with M = combᵀ.
        for mm in args_of(eg, mixed, &Op::MatMul) {
            let (mat, x) = (mm[0], mm[1]);
            if shape(eg, mat) != [t, n, n] || shape(eg, x) != [t, n, ch] {
                continue;
            }
            let factors = outer_factors(eg, prod, t, n, ch);
            if factors.is_empty() {
                continue;
            }
            for ((post, post_shape), (f, f_shape)) in factors {
                out.push(Action::custom(move |eg| {
                    let operands = (|| {
                        let f = build::reshape(eg, f, &f_shape)?;
                        let post = build::reshape(eg, post, &post_shape)?;
                        let comb = build::permute(eg, mat, &[0, 2, 1])?;
                        Some(vec![f, x, post, comb])
                    })();
                    operands
                        .and_then(|ops| add_checked(eg, Op::MhcPost, ops))
                        .map(|fused| (c, fused))
                        .into_iter()
                        .collect()
                }));
            }
        }
    }
}

// ---- near misses -------------------------------------------------------------------

/// Why the pre-mix read from stream `x` (an RMS-normalized projection of
/// it exists) did not fuse: the parts found, and the first part that is
/// missing, in words. `name` spells a class as the user's value.
pub(crate) fn explain_pre_mix(
    ctx: &Ctx<'_>,
    x: Id,
    name: &dyn Fn(Id) -> String,
) -> Option<(Vec<String>, String)> {
    let eg = ctx.eg;
    let (t, n, _) = stream_dims(eg, x)?;
    let projs = projections(ctx, x);
    let (first, _) = projs.first()?;
    let mut found = vec![format!("a projection of the stream at {}", name(*first))];
    let affine = affine_classes(ctx, x);
    let combs = combs(ctx, &affine, t, n);
    let sigmoids: Vec<(Id, Proj)> = affine
        .iter()
        .filter(|(_, p)| p.width() == n)
        .flat_map(|&(z, p)| unary_users(ctx, z, &Op::Sigmoid).map(move |g| (g, p)))
        .collect();
    let tanhs: Vec<Id> = affine
        .iter()
        .filter(|(_, p)| p.width() == n && p.scale == Scale::One && p.bias == Bias::Zero)
        .flat_map(|&(z, _)| unary_users(ctx, z, &Op::Tanh))
        .collect();
    match combs.first() {
        Some(c) => found.push(format!("sinkhorn at {}", name(c.class))),
        None => {
            let other = sinkhorns_of_shape(eg, t, n);
            let why = match other.first() {
                Some(&s) => format!(
                    "the sinkhorn at {} does not project {} columns of a projection of the stream {} (reshaped [T, n, n], or its transpose)",
                    name(s),
                    n * n,
                    name(x)
                ),
                None => format!(
                    "no Sinkhorn projection of {} columns of a projection of the stream {}",
                    n * n,
                    name(x)
                ),
            };
            if let Some(&th) = tanhs.first() {
                return Some((
                    found,
                    format!(
                        "{why}; the gate at {} is tanh: this is HC's pre-mix (hc_pre)",
                        name(th)
                    ),
                ));
            }
            return Some((found, why));
        }
    }
    let mut pres = Vec::new();
    for &(g, p) in &sigmoids {
        for (pre, _) in with_constant(ctx, g, &Op::Add, 0.0) {
            if !apply_mix_users(ctx, pre, x).is_empty() {
                pres.push((g, p));
            }
        }
    }
    let Some(&(pre_gate, pre)) = pres.first() else {
        let why = match (sigmoids.first(), tanhs.first()) {
            (_, Some(&th)) => format!(
                "the pre gate at {} is tanh, not sigmoid: this is HC's pre-mix (hc_pre) with a Sinkhorn elsewhere",
                name(th)
            ),
            (Some(&(g, _)), None) => format!(
                "the sigmoid gates at {} do not feed Σ_i pre_i · x_i of the stream {} (a [T,1,n] by [T,n,C] product)",
                name(g),
                name(x)
            ),
            (None, None) => format!(
                "no sigmoid pre gate over {n} columns of a projection of the stream {}",
                name(x)
            ),
        };
        return Some((found, why));
    };
    found.push(format!("the pre gate at {}", name(pre_gate)));
    let posts: Vec<&(Id, Proj)> = sigmoids
        .iter()
        .filter(|(_, p)| disjoint(eg, &[pre, *p]))
        .collect();
    let Some(&&(post_gate, post)) = posts.first() else {
        return Some((
            found,
            format!(
                "no post gate: no sigmoid over {n} columns of a projection of the stream other than the pre gate's"
            ),
        ));
    };
    found.push(format!("the post gate at {}", name(post_gate)));
    let comb = combs[0];
    let branches = [pre, post, comb.proj];
    if pre.src != post.src || pre.src != comb.proj.src {
        let eps: Vec<String> = branches
            .iter()
            .map(|p| format!("{:e}", p.src.norm_eps.get()))
            .collect();
        return Some((
            found,
            format!(
                "the three branches read the stream normalized differently (RMS eps {}, or another per-channel weight)",
                eps.join(", ")
            ),
        ));
    }
    if !disjoint(eg, &branches) {
        return Some((
            found,
            "the residual mix reads the same columns of the projection as a gate".to_string(),
        ));
    }
    Some((
        found,
        "every part matches; extraction kept the unfused program, which the cost model rates cheaper".to_string(),
    ))
}

/// Classes holding a `sinkhorn` of `[T, n, n]` logits.
fn sinkhorns_of_shape(eg: &EG, t: usize, n: usize) -> Vec<Id> {
    eg.classes()
        .filter(|c| c.nodes.iter().any(|nd| matches!(nd.op, Op::Sinkhorn(_))))
        .filter(|c| shape(eg, c.id) == [t, n, n])
        .map(|c| c.id)
        .collect()
}

/// Why a Sinkhorn projection with more than one batch axis did not join a
/// pre-mix: the fused ops take one token axis (`[T, n, C]` streams), and a
/// model written with batch and sequence axes (`[B, S, n, C]`, as PyTorch
/// code is) keeps its `[B, S, n, n]` logits apart.
pub(crate) fn explain_batched_sinkhorn(
    eg: &EG,
    c: Id,
    name: &dyn Fn(Id) -> String,
) -> Option<(Vec<String>, String)> {
    if !eg[c]
        .nodes
        .iter()
        .any(|nd| matches!(nd.op, Op::Sinkhorn(_)))
    {
        return None;
    }
    let s = shape(eg, c);
    let r = s.len();
    if r < 4 || s[r - 1] != s[r - 2] {
        return None;
    }
    let (batch, n) = (&s[..r - 2], s[r - 1]);
    let tokens: usize = batch.iter().product();
    Some((
        vec![format!("sinkhorn at {} over {s:?}", name(c))],
        format!(
            "it has {} batch axes {batch:?} before its {n}×{n} matrices, and the fused mHC ops take a \
             stream [T, n, C] with one token axis; with the axes merged ([{tokens}, {n}, C]) the \
             pre-mix did not fuse either: write the model on a [{tokens}, {n}, C] stream to see \
             what else differs",
            batch.len()
        ),
    ))
}

/// Why a residual mix `M · x` added to another term did not fuse into
/// `mhc_post`: the term is not `post ⊗ f`.
pub(crate) fn explain_post_mix(
    ctx: &Ctx<'_>,
    c: Id,
    name: &dyn Fn(Id) -> String,
) -> Option<(Vec<String>, String)> {
    let eg = ctx.eg;
    let (t, n, ch) = stream_dims(eg, c)?;
    for (mixed, other) in commuted(eg, c, &Op::Add) {
        for mm in args_of(eg, mixed, &Op::MatMul) {
            if shape(eg, mm[0]) == [t, n, n]
                && shape(eg, mm[1]) == [t, n, ch]
                && outer_factors(eg, other, t, n, ch).is_empty()
            {
                return Some((
                    vec![format!("the residual mix at {}", name(mixed))],
                    format!(
                        "the term added to it at {} is not post ⊗ f (a [T,n,1] by [T,1,C] product)",
                        name(other)
                    ),
                ));
            }
        }
    }
    None
}
