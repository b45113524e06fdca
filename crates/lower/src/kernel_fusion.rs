//! Kernel fusion on kernel IR: per-row kernels that follow each other
//! become one kernel, and within it, vector loops over the same row merge
//! so that a value stored by one and loaded by the next stays in a
//! register.
//!
//! Lowering makes one kernel per graph op that needs its own loop nest, so
//! a chain like `mhc_pre` → `mhc_post` (the mHC sublayer with an identity
//! layer function) becomes two passes over every token's residual rows,
//! with `layer_input` written to memory by the first and read back by the
//! second. When both kernels are one parallel loop of the same extent and
//! iteration `i` of the second only reads what iteration `i` of the first
//! wrote, running both bodies in one iteration computes the same thing;
//! the apply-mix loop of the first and the post-mix loop of the second then
//! merge into one sweep, and `layer_input`, no longer read anywhere, is
//! not stored at all.
//!
//! Three rewrites, each checked conservatively (when in doubt, nothing
//! changes):
//!
//! 1. **Kernel fusion.** Two consecutive kernels, each exactly one
//!    parallel loop, same extent, fuse when every buffer that both touch
//!    and one of them writes is accessed by *rows*: every index into it is
//!    `s·i + r` with the same row stride `s` for the parallel index `i`
//!    and `0 ≤ r < s` over the other loops. Then iteration `i` of either
//!    kernel touches only row `i`, and program order within an iteration
//!    is the old kernel order.
//! 2. **Vector-loop merging.** Two vector loops of one statement list with
//!    the same extent merge when only scalar `set`s lie between them (and
//!    can move above the first loop), the second reads no variable the
//!    first sets, and every buffer or local element one writes and the
//!    other touches is touched at the same index in both, an index that
//!    depends on the loop (so distinct iterations never meet), and
//!    neither loop sums into an accumulator (see [`sums`]): fusion then
//!    changes no bits. A short first loop that loads more than a few
//!    values an iteration stays apart ([`load_heavy`]).
//! 3. **Store forwarding and dead temporaries.** In a merged loop, a load
//!    of what the first half stored at the same index becomes the stored
//!    value (for storage types that hold their compute type exactly: not
//!    `bf16`, whose store rounds); so does a load, in straight-line
//!    statements, of an element a scalar store just wrote
//!    ([`forward_scalar_stores`]); a temporary that nothing loads any more
//!    loses its stores and its buffer.

use std::collections::{HashMap, HashSet};

use birkhoff_ir::kernel::{
    BufferId, BufferKind, Expr, Index, Kernel, LocalId, LoopKind, Program, ScalarType, Stmt, VarId,
    walk_exprs, walk_stmts,
};
use birkhoff_ir::{DType, Op};

/// Applies the three rewrites to the whole program. With `apart`
/// ([`crate::LowerOptions::scalar_kernels_apart`]), a kernel whose rows
/// hold long scalar work ([`scalar_heavy`]) and one that streams its rows
/// ([`streams`]) stay apart.
pub(crate) fn fuse(p: &mut Program, apart: bool) {
    let mut out: Vec<Kernel> = Vec::with_capacity(p.kernels.len());
    for k in std::mem::take(&mut p.kernels) {
        match out.last_mut() {
            Some(prev) if can_fuse(prev, &k) && !(apart && kept_apart(prev, &k)) => {
                *prev = fuse_pair(prev, &k);
            }
            _ => out.push(k),
        }
    }
    let dtypes: Vec<DType> = p.buffers.iter().map(|b| b.dtype()).collect();
    for k in &mut out {
        let mut body = std::mem::take(&mut k.body);
        merge_in(k, &dtypes, &mut body);
        k.body = body;
    }
    p.kernels = out;
    remove_dead_temps(p);
}

/// The kernel's parallel loop `(index, extent, body)` when that loop is
/// its only statement.
fn parallel_loop(k: &Kernel) -> Option<(VarId, usize, &[Stmt])> {
    match k.body.as_slice() {
        [
            Stmt::Loop {
                var,
                extent,
                kind: LoopKind::Parallel,
                body,
            },
        ] => Some((*var, *extent, body)),
        _ => None,
    }
}

/// Extents of every loop index in `body`.
fn extents(body: &[Stmt]) -> HashMap<VarId, usize> {
    let mut m = HashMap::new();
    walk_stmts(body, &mut |s| {
        if let Stmt::Loop { var, extent, .. } = s {
            m.insert(*var, *extent);
        }
    });
    m
}

/// One load or store of a buffer.
struct Access<'a> {
    buf: BufferId,
    index: &'a Index,
    write: bool,
}

/// Every buffer access in `body`, or `None` if it calls a matrix product
/// (whose footprint is not an index).
fn accesses(body: &[Stmt]) -> Option<Vec<Access<'_>>> {
    let mut v = Vec::new();
    let mut gemm = false;
    collect_accesses(body, &mut v, &mut gemm);
    (!gemm).then_some(v)
}

fn collect_accesses<'a>(body: &'a [Stmt], v: &mut Vec<Access<'a>>, gemm: &mut bool) {
    for s in body {
        match s {
            Stmt::Loop { body, .. } => collect_accesses(body, v, gemm),
            Stmt::Store { buf, index, value } => {
                v.push(Access {
                    buf: *buf,
                    index,
                    write: true,
                });
                expr_loads(value, v);
            }
            Stmt::Set { value, .. } | Stmt::LocalStore { value, .. } => expr_loads(value, v),
            Stmt::Gemm(_) => *gemm = true,
        }
    }
}

fn expr_loads<'a>(e: &'a Expr, v: &mut Vec<Access<'a>>) {
    match e {
        Expr::Load { buf, index } => v.push(Access {
            buf: *buf,
            index,
            write: false,
        }),
        Expr::Unary { arg, .. } | Expr::Cast { arg, .. } => expr_loads(arg, v),
        Expr::Binary { lhs, rhs, .. } => {
            expr_loads(lhs, v);
            expr_loads(rhs, v);
        }
        Expr::Select {
            cond,
            then,
            otherwise,
        } => {
            expr_loads(cond, v);
            expr_loads(then, v);
            expr_loads(otherwise, v);
        }
        Expr::Const { .. } | Expr::Var(_) | Expr::LocalLoad { .. } => {}
    }
}

/// The row stride `s` of `index` for parallel index `row`: `Some(s)` when
/// the index is `s·row + r` with `0 ≤ r < s` over every other loop.
fn row_stride(index: &Index, row: VarId, extents: &HashMap<VarId, usize>) -> Option<i64> {
    let s = index.coeff(row);
    if s <= 0 {
        return None;
    }
    let (mut lo, mut hi) = (index.offset, index.offset);
    for &(v, c) in &index.terms {
        if v == row {
            continue;
        }
        let last = c * (*extents.get(&v)? as i64 - 1);
        lo += last.min(0);
        hi += last.max(0);
    }
    (lo >= 0 && hi < s).then_some(s)
}

/// Whether `b` can run inside `a`'s parallel loop (rewrite 1).
fn can_fuse(a: &Kernel, b: &Kernel) -> bool {
    let (Some((ra, ea, ba)), Some((rb, eb, bb))) = (parallel_loop(a), parallel_loop(b)) else {
        return false;
    };
    if ea != eb {
        return false;
    }
    let (Some(xa), Some(xb)) = (accesses(ba), accesses(bb)) else {
        return false;
    };
    let (exa, exb) = (extents(&a.body), extents(&b.body));
    let touched_a: HashSet<BufferId> = xa.iter().map(|x| x.buf).collect();
    let touched_b: HashSet<BufferId> = xb.iter().map(|x| x.buf).collect();
    let written: HashSet<BufferId> = xa
        .iter()
        .chain(&xb)
        .filter(|x| x.write)
        .map(|x| x.buf)
        .collect();
    for buf in touched_a.intersection(&touched_b) {
        if !written.contains(buf) {
            continue;
        }
        let strides = xa
            .iter()
            .filter(|x| x.buf == *buf)
            .map(|x| row_stride(x.index, ra, &exa))
            .chain(
                xb.iter()
                    .filter(|x| x.buf == *buf)
                    .map(|x| row_stride(x.index, rb, &exb)),
            );
        let mut common = None;
        for s in strides {
            match (s, common) {
                (None, _) => return false,
                (Some(s), Some(c)) if s != c => return false,
                (Some(s), _) => common = Some(s),
            }
        }
    }
    true
}

/// Fewest iterations of a vector loop that streams a row: what a GPU
/// spreads over a block's threads.
const STREAM_MIN: usize = 64;

/// Fewest scalar operations per row (loops multiplied out, streaming loops
/// left out) that make a row's work a long chain: a Sinkhorn projection of
/// 20 rounds has about 1400, the pre-mix's other per-token work under 300.
const SCALAR_HEAVY_OPS: usize = 512;

/// Whether fusing `a` and `b` would put long scalar work into a kernel that
/// streams rows (see [`fuse`]).
fn kept_apart(a: &Kernel, b: &Kernel) -> bool {
    (scalar_heavy(a) && streams(b)) || (streams(a) && scalar_heavy(b))
}

/// Whether some vector loop of `k` has at least [`STREAM_MIN`] iterations.
fn streams(k: &Kernel) -> bool {
    let mut any = false;
    walk_stmts(&k.body, &mut |s| {
        if let Stmt::Loop {
            kind: LoopKind::Vector,
            extent,
            ..
        } = s
        {
            any |= *extent >= STREAM_MIN;
        }
    });
    any
}

/// Whether the scalar work of `k`'s rows reaches [`SCALAR_HEAVY_OPS`].
fn scalar_heavy(k: &Kernel) -> bool {
    fn ops(body: &[Stmt]) -> usize {
        body.iter()
            .map(|s| match s {
                Stmt::Loop {
                    kind: LoopKind::Vector,
                    extent,
                    ..
                } if *extent >= STREAM_MIN => 0,
                Stmt::Loop {
                    kind: LoopKind::Parallel,
                    body,
                    ..
                } => ops(body),
                Stmt::Loop { extent, body, .. } => extent.saturating_mul(ops(body)),
                _ => s.value().map_or(0, |e| {
                    let mut n = 0usize;
                    e.walk(&mut |x| {
                        n += usize::from(matches!(
                            x,
                            Expr::Unary { .. }
                                | Expr::Binary { .. }
                                | Expr::Select { .. }
                                | Expr::Cast { .. }
                        ));
                    });
                    n
                }),
            })
            .fold(0, usize::saturating_add)
    }
    ops(&k.body) >= SCALAR_HEAVY_OPS
}

/// How [`remap`] renames things.
pub(crate) type Rename<'a, T> = &'a dyn Fn(T) -> T;

/// Renames variables, locals and buffers throughout a statement list.
pub(crate) fn remap(
    body: &[Stmt],
    var: Rename<VarId>,
    local: Rename<LocalId>,
    buf: Rename<BufferId>,
) -> Vec<Stmt> {
    body.iter()
        .map(|s| remap_stmt(s, var, local, buf))
        .collect()
}

fn remap_index(i: &Index, var: Rename<VarId>) -> Index {
    Index {
        offset: i.offset,
        terms: i.terms.iter().map(|&(v, c)| (var(v), c)).collect(),
    }
}

fn remap_expr(e: &Expr, var: Rename<VarId>, local: Rename<LocalId>, buf: Rename<BufferId>) -> Expr {
    map_expr(e, &|x| match x {
        Expr::Var(v) => Some(Expr::Var(var(*v))),
        Expr::Load { buf: b, index } => Some(Expr::Load {
            buf: buf(*b),
            index: remap_index(index, var),
        }),
        Expr::LocalLoad { local: l, index } => Some(Expr::LocalLoad {
            local: local(*l),
            index: remap_index(index, var),
        }),
        _ => None,
    })
}

/// `e` rebuilt bottom-up, with each subexpression `f` answers for replaced
/// by its answer (and not descended into).
pub(crate) fn map_expr(e: &Expr, f: &dyn Fn(&Expr) -> Option<Expr>) -> Expr {
    if let Some(x) = f(e) {
        return x;
    }
    let r = |e: &Expr| Box::new(map_expr(e, f));
    match e {
        Expr::Const { .. } | Expr::Var(_) | Expr::Load { .. } | Expr::LocalLoad { .. } => e.clone(),
        Expr::Unary { op, arg } => Expr::Unary {
            op: op.clone(),
            arg: r(arg),
        },
        Expr::Binary { op, lhs, rhs } => Expr::Binary {
            op: op.clone(),
            lhs: r(lhs),
            rhs: r(rhs),
        },
        Expr::Select {
            cond,
            then,
            otherwise,
        } => Expr::Select {
            cond: r(cond),
            then: r(then),
            otherwise: r(otherwise),
        },
        Expr::Cast { to, arg } => Expr::Cast {
            to: *to,
            arg: r(arg),
        },
    }
}

/// `s` with `f` applied to the value it evaluates; a loop or a matrix
/// product is returned as it is.
pub(crate) fn map_value(s: &Stmt, f: &dyn Fn(&Expr) -> Expr) -> Stmt {
    match s {
        Stmt::Set { var, value } => Stmt::Set {
            var: *var,
            value: f(value),
        },
        Stmt::Store { buf, index, value } => Stmt::Store {
            buf: *buf,
            index: index.clone(),
            value: f(value),
        },
        Stmt::LocalStore {
            local,
            index,
            value,
        } => Stmt::LocalStore {
            local: *local,
            index: index.clone(),
            value: f(value),
        },
        Stmt::Loop { .. } | Stmt::Gemm(_) => s.clone(),
    }
}

fn remap_stmt(s: &Stmt, var: Rename<VarId>, local: Rename<LocalId>, buf: Rename<BufferId>) -> Stmt {
    match s {
        Stmt::Loop {
            var: v,
            extent,
            kind,
            body,
        } => Stmt::Loop {
            var: var(*v),
            extent: *extent,
            kind: *kind,
            body: remap(body, var, local, buf),
        },
        Stmt::Set { var: v, value } => Stmt::Set {
            var: var(*v),
            value: remap_expr(value, var, local, buf),
        },
        Stmt::Store {
            buf: b,
            index,
            value,
        } => Stmt::Store {
            buf: buf(*b),
            index: remap_index(index, var),
            value: remap_expr(value, var, local, buf),
        },
        Stmt::LocalStore {
            local: l,
            index,
            value,
        } => Stmt::LocalStore {
            local: local(*l),
            index: remap_index(index, var),
            value: remap_expr(value, var, local, buf),
        },
        Stmt::Gemm(g) => {
            let mut g = g.clone();
            for m in [&mut g.a, &mut g.b, &mut g.c]
                .into_iter()
                .chain(g.row_sumsq.as_mut())
            {
                m.buf = buf(m.buf);
            }
            Stmt::Gemm(g)
        }
    }
}

/// `a` with `b`'s parallel body appended to its own (rewrite 1; the
/// caller checked [`can_fuse`]).
fn fuse_pair(a: &Kernel, b: &Kernel) -> Kernel {
    let (ra, extent, ba) = parallel_loop(a).expect("checked by can_fuse");
    let (rb, _, bb) = parallel_loop(b).expect("checked by can_fuse");
    let (nv, nl) = (a.vars.len() as u32, a.locals.len() as u32);
    let var = |v: VarId| if v == rb { ra } else { VarId(v.0 + nv) };
    let local = |l: LocalId| LocalId(l.0 + nl);
    let mut body = ba.to_vec();
    body.extend(remap(bb, &var, &local, &|b| b));
    // `k1_mhc_pre` + `k2_mhc_post` → `k1_mhc_pre+mhc_post`.
    let tail = b.name.split_once('_').map_or(b.name.as_str(), |(_, t)| t);
    Kernel {
        name: format!("{}+{tail}", a.name),
        vars: a.vars.iter().chain(&b.vars).cloned().collect(),
        locals: a.locals.iter().chain(&b.locals).cloned().collect(),
        body: vec![Stmt::Loop {
            var: ra,
            extent,
            kind: LoopKind::Parallel,
            body,
        }],
    }
}

/// Variables a statement list reads and sets, buffers and locals it
/// loads and stores.
#[derive(Default)]
struct Effects {
    reads: HashSet<VarId>,
    sets: HashSet<VarId>,
    loads: HashSet<BufferId>,
    stores: HashSet<BufferId>,
    local_loads: HashSet<LocalId>,
    local_stores: HashSet<LocalId>,
}

impl Effects {
    fn of(body: &[Stmt]) -> Effects {
        let mut fx = Effects::default();
        walk_stmts(body, &mut |s| match s {
            Stmt::Set { var, .. } => {
                fx.sets.insert(*var);
            }
            Stmt::Store { buf, .. } => {
                fx.stores.insert(*buf);
            }
            Stmt::LocalStore { local, .. } => {
                fx.local_stores.insert(*local);
            }
            Stmt::Loop { .. } | Stmt::Gemm(_) => {}
        });
        walk_exprs(body, &mut |e| match e {
            Expr::Var(v) => {
                fx.reads.insert(*v);
            }
            Expr::Load { buf, .. } => {
                fx.loads.insert(*buf);
            }
            Expr::LocalLoad { local, .. } => {
                fx.local_loads.insert(*local);
            }
            _ => {}
        });
        fx
    }
}

/// A vector loop's `(index, extent, body)`.
pub(crate) fn vector_loop(s: &Stmt) -> Option<(VarId, usize, &[Stmt])> {
    match s {
        Stmt::Loop {
            var,
            extent,
            kind: LoopKind::Vector,
            body,
        } => Some((*var, *extent, body)),
        _ => None,
    }
}

/// Whether the scalar statement `s` can move above a loop with effects
/// `fx` without changing what either computes.
fn hoistable(s: &Stmt, fx: &Effects) -> bool {
    let Stmt::Set { var, .. } = s else {
        return false;
    };
    if fx.reads.contains(var) || fx.sets.contains(var) {
        return false;
    }
    let mine = Effects::of(std::slice::from_ref(s));
    mine.reads.is_disjoint(&fx.sets)
        && mine.loads.is_disjoint(&fx.stores)
        && mine.local_loads.is_disjoint(&fx.local_stores)
}

/// A memory location class: a buffer or a local.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Place {
    Buf(BufferId),
    Local(LocalId),
}

/// Every `(place, index, is_write)` of a straight-line vector body.
fn places(body: &[Stmt]) -> Vec<(Place, Index, bool)> {
    let mut v = Vec::new();
    for s in body {
        match s {
            Stmt::Store { buf, index, .. } => v.push((Place::Buf(*buf), index.clone(), true)),
            Stmt::LocalStore { local, index, .. } => {
                v.push((Place::Local(*local), index.clone(), true));
            }
            _ => {}
        }
        if let Some(e) = s.value() {
            e.walk(&mut |e| match e {
                Expr::Load { buf, index } => v.push((Place::Buf(*buf), index.clone(), false)),
                Expr::LocalLoad { local, index } => {
                    v.push((Place::Local(*local), index.clone(), false));
                }
                _ => {}
            });
        }
    }
    v
}

/// Whether vector loops `(v1, b1)` and then `(v2, b2)` (same extent) can
/// run as one loop over `v1` (rewrite 2).
fn mergeable(v1: VarId, b1: &[Stmt], b2_renamed: &[Stmt]) -> bool {
    // Vector bodies are straight-line (the verifier forbids loops in them).
    let (f1, f2) = (Effects::of(b1), Effects::of(b2_renamed));
    if !f2.reads.is_disjoint(&f1.sets)
        || !f2.sets.is_disjoint(&f1.sets)
        || !f2.sets.is_disjoint(&f1.reads)
    {
        return false;
    }
    let (p1, p2) = (places(b1), places(b2_renamed));
    for (pl1, i1, w1) in &p1 {
        for (pl2, i2, w2) in &p2 {
            if pl1 != pl2 || !(*w1 || *w2) {
                continue;
            }
            if i1 != i2 || i1.coeff(v1) == 0 {
                return false;
            }
        }
    }
    true
}

/// Whether a vector body accumulates a sum (`acc = acc + e`). A backend
/// may split such a sum into partials (the kernel IR allows it), and how
/// many it uses can depend on what else the loop does; merging another
/// sweep into the loop could then change how the sum rounds. Sums stay in
/// their own loops, so that a kernel computes the same bits wherever
/// fusion puts it: with or without a neighbour, recomputed in the
/// backward pass or not.
fn sums(body: &[Stmt]) -> bool {
    body.iter().any(|s| {
        matches!(s, Stmt::Set { var, value } if matches!(value.accumulates(*var), Some((Op::Add, _))))
    })
}

/// Most loads one iteration of a short vector loop (fewer than
/// [`STREAM_MIN`] iterations) may make and still take a second loop in
/// (rewrite 2).
const MERGE_MAX_SHORT_LOADS: usize = 4;

/// Whether a short vector loop of `extent` iterations over `body` loads
/// more than [`MERGE_MAX_SHORT_LOADS`] values an iteration. A backend may
/// unroll such a loop and issue all its loads at once: while each
/// iteration stores its value into a temporary, the stores keep the
/// loads apart, but merged with the loop that reads the temporary (which
/// then dies) nothing does. The per-token sum of a split projection's
/// parts (24 mixes), so merged, took a GPU kernel from 64 registers to
/// 127 with 4 parts, 220 with 8 and 255, with spills, with 16.
fn load_heavy(extent: usize, body: &[Stmt]) -> bool {
    let mut loads = 0usize;
    for s in body {
        if let Some(e) = s.value() {
            e.walk(&mut |x| loads += usize::from(matches!(x, Expr::Load { .. })));
        }
    }
    extent < STREAM_MIN && loads > MERGE_MAX_SHORT_LOADS
}

/// Merges vector loops in `body` and every nested statement list
/// (rewrite 2, with rewrite 3's forwarding); may declare variables in `k`.
fn merge_in(k: &mut Kernel, dtypes: &[DType], body: &mut Vec<Stmt>) {
    for s in body.iter_mut() {
        if let Stmt::Loop {
            kind: LoopKind::Parallel | LoopKind::Serial,
            body: inner,
            ..
        } = s
        {
            merge_in(k, dtypes, inner);
        }
    }
    let mut i = 0;
    while i < body.len() {
        let Some((v1, e1, b1)) = vector_loop(&body[i]) else {
            i += 1;
            continue;
        };
        let fx = Effects::of(std::slice::from_ref(&body[i]));
        let mut j = i + 1;
        while j < body.len() && hoistable(&body[j], &fx) {
            j += 1;
        }
        let Some((v2, e2, b2)) = body.get(j).and_then(vector_loop) else {
            i += 1;
            continue;
        };
        let b2 = remap(b2, &|v| if v == v2 { v1 } else { v }, &|l| l, &|b| b);
        if e1 != e2 || sums(b1) || sums(&b2) || load_heavy(e1, b1) || !mergeable(v1, b1, &b2) {
            i += 1;
            continue;
        }
        let merged = Stmt::Loop {
            var: v1,
            extent: e1,
            kind: LoopKind::Vector,
            body: forward_stores(k, dtypes, b1, &b2),
        };
        // The scalar statements in between move above the merged loop.
        let between: Vec<Stmt> = body.drain(i + 1..j).collect();
        let hoisted = between.len();
        body.splice(i..i + 2, between.into_iter().chain(std::iter::once(merged)));
        i += hoisted;
    }
    forward_scalar_stores(k, dtypes, body);
}

/// `first` then `second` as one vector body, where each load in `second`
/// of an element `first` stored (exactly once, into a buffer whose storage
/// holds the value exactly, and not stored again by `second`) reads the
/// stored value from a variable instead.
fn forward_stores(k: &mut Kernel, dtypes: &[DType], first: &[Stmt], second: &[Stmt]) -> Vec<Stmt> {
    let count = |body: &[Stmt], key: &(BufferId, Index)| {
        body.iter()
            .filter(
                |s| matches!(s, Stmt::Store { buf, index, .. } if (*buf, index) == (key.0, &key.1)),
            )
            .count()
    };
    let loaded: HashSet<(BufferId, Index)> = places(second)
        .into_iter()
        .filter_map(|(p, i, w)| match (p, w) {
            (Place::Buf(b), false) => Some((b, i)),
            _ => None,
        })
        .collect();
    let mut forwarded: HashMap<(BufferId, Index), VarId> = HashMap::new();
    let mut out = Vec::with_capacity(first.len() + second.len());
    for s in first {
        if let Stmt::Store { buf, index, value } = s {
            let key = (*buf, index.clone());
            let exact = dtypes[buf.0 as usize] != DType::Bf16;
            if exact && loaded.contains(&key) && count(first, &key) == 1 && count(second, &key) == 0
            {
                let t = k.var(ScalarType::of(dtypes[buf.0 as usize]));
                out.push(Stmt::Set {
                    var: t,
                    value: value.clone(),
                });
                out.push(Stmt::Store {
                    buf: *buf,
                    index: index.clone(),
                    value: Expr::Var(t),
                });
                forwarded.insert(key, t);
                continue;
            }
        }
        out.push(s.clone());
    }
    out.extend(second.iter().map(|s| replace_loads(s, &forwarded)));
    out
}

/// Rewrite 3 on straight-line statements: a scalar store into a buffer
/// that holds the value exactly, followed by loads of the same element
/// before any loop, matrix product or other store into that buffer, hands
/// the value over in a variable instead. A fused split projection stores
/// each token's sum of squares and reads it back at once: without this,
/// the read-back orders the block's uniform code around a global store.
fn forward_scalar_stores(k: &mut Kernel, dtypes: &[DType], body: &mut Vec<Stmt>) {
    let mut i = 0;
    while i < body.len() {
        let Stmt::Store { buf, index, .. } = &body[i] else {
            i += 1;
            continue;
        };
        let (buf, index) = (*buf, index.clone());
        let mut end = i + 1;
        let mut loaded = false;
        while let Some(s) = body.get(end) {
            let stops = match s {
                Stmt::Loop { .. } | Stmt::Gemm(_) => true,
                Stmt::Store { buf: b, .. } => *b == buf,
                Stmt::Set { .. } | Stmt::LocalStore { .. } => false,
            };
            if stops {
                break;
            }
            if let Some(e) = s.value() {
                e.walk(&mut |x| {
                    loaded |=
                        matches!(x, Expr::Load { buf: b, index: ix } if *b == buf && *ix == index);
                });
            }
            end += 1;
        }
        if dtypes[buf.0 as usize] == DType::Bf16 || !loaded {
            i += 1;
            continue;
        }
        let t = k.var(ScalarType::of(dtypes[buf.0 as usize]));
        let forwarded = Stmt::Store {
            buf,
            index: index.clone(),
            value: Expr::Var(t),
        };
        let Stmt::Store { value, .. } = std::mem::replace(&mut body[i], forwarded) else {
            unreachable!("matched as a store above")
        };
        body.insert(i, Stmt::Set { var: t, value });
        let fwd = HashMap::from([((buf, index), t)]);
        for s in &mut body[i + 2..=end] {
            *s = replace_loads(s, &fwd);
        }
        i = end + 1;
    }
}

/// `s` with every load of a forwarded element replaced by its variable.
fn replace_loads(s: &Stmt, fwd: &HashMap<(BufferId, Index), VarId>) -> Stmt {
    map_value(s, &|e| {
        map_expr(e, &|x| match x {
            Expr::Load { buf, index } => fwd.get(&(*buf, index.clone())).map(|v| Expr::Var(*v)),
            _ => None,
        })
    })
}

/// Removes every temporary that nothing reads: its stores, then the
/// buffer itself (rewrite 3).
fn remove_dead_temps(p: &mut Program) {
    let mut read: HashSet<BufferId> = HashSet::new();
    for k in &p.kernels {
        walk_exprs(&k.body, &mut |e| {
            if let Expr::Load { buf, .. } = e {
                read.insert(*buf);
            }
        });
        walk_stmts(&k.body, &mut |s| {
            if let Stmt::Gemm(g) = s {
                read.extend([g.a.buf, g.b.buf]);
                if g.accumulate {
                    read.insert(g.c.buf);
                }
            }
        });
    }
    let dead: HashSet<BufferId> = (0..p.buffers.len())
        .map(|i| BufferId(i as u32))
        .filter(|b| {
            matches!(p.buffers[b.0 as usize].kind, BufferKind::Temp { .. }) && !read.contains(b)
        })
        .collect();
    if dead.is_empty() {
        return;
    }
    for k in &mut p.kernels {
        drop_stores(&mut k.body, &dead);
    }
    // A dead temporary a matrix product still writes keeps its buffer.
    let mut used: HashSet<BufferId> = HashSet::new();
    for k in &p.kernels {
        walk_stmts(&k.body, &mut |s| match s {
            Stmt::Store { buf, .. } => {
                used.insert(*buf);
            }
            Stmt::Gemm(g) => {
                used.extend([g.a.buf, g.b.buf, g.c.buf]);
                used.extend(g.row_sumsq.as_ref().map(|m| m.buf));
            }
            _ => {}
        });
        walk_exprs(&k.body, &mut |e| {
            if let Expr::Load { buf, .. } = e {
                used.insert(*buf);
            }
        });
    }
    let keep: Vec<bool> = (0..p.buffers.len())
        .map(|i| !dead.contains(&BufferId(i as u32)) || used.contains(&BufferId(i as u32)))
        .collect();
    let mut new_id = vec![BufferId(u32::MAX); p.buffers.len()];
    let mut next = 0;
    for (i, &kept) in keep.iter().enumerate() {
        if kept {
            new_id[i] = BufferId(next);
            next += 1;
        }
    }
    let buf = |b: BufferId| new_id[b.0 as usize];
    let mut i = 0;
    p.buffers.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    for (_, b) in p.inputs.iter_mut().chain(p.outputs.iter_mut()) {
        *b = buf(*b);
    }
    for k in &mut p.kernels {
        k.body = remap(&k.body, &|v| v, &|l| l, &buf);
    }
}

/// Removes stores into `dead` buffers, and loops left empty.
fn drop_stores(body: &mut Vec<Stmt>, dead: &HashSet<BufferId>) {
    body.retain_mut(|s| match s {
        Stmt::Store { buf, .. } => !dead.contains(buf),
        Stmt::Loop { body, .. } => {
            drop_stores(body, dead);
            !body.is_empty()
        }
        _ => true,
    });
}

#[cfg(test)]
mod tests {
    use birkhoff_ir::kernel::{BufferDecl, Kernel};
    use birkhoff_ir::{Op, TensorType};

    use super::*;

    fn buf(name: &str, rows: usize, kind: BufferKind) -> BufferDecl {
        BufferDecl {
            name: name.into(),
            ty: TensorType::new(DType::F32, [rows, 4]),
            kind,
        }
    }

    /// `for i in 0..4 (parallel) { for j in 0..4 (vector) { body(i, j) } }`.
    fn row_kernel(name: &str, body: impl Fn(VarId, VarId) -> Vec<Stmt>) -> Kernel {
        let mut k = Kernel::new(name);
        let (i, j) = (k.var(ScalarType::Index), k.var(ScalarType::Index));
        k.body = vec![Stmt::Loop {
            var: i,
            extent: 4,
            kind: LoopKind::Parallel,
            body: vec![Stmt::Loop {
                var: j,
                extent: 4,
                kind: LoopKind::Vector,
                body: body(i, j),
            }],
        }];
        k
    }

    /// x → (exp) → t → (t[row(i, j)] + x) → y, with `t` of `t_rows` rows.
    fn program(t_rows: usize, row: impl Fn(VarId, VarId) -> Index) -> Program {
        let at = |i, j| Index::var(i, 4).plus(j, 1);
        let k0 = row_kernel("k0_exp", |i, j| {
            vec![Stmt::Store {
                buf: BufferId(2),
                index: at(i, j),
                value: Expr::unary(Op::Exp, Expr::load(BufferId(0), at(i, j))),
            }]
        });
        let k1 = row_kernel("k1_add", |i, j| {
            vec![Stmt::Store {
                buf: BufferId(1),
                index: at(i, j),
                value: Expr::binary(
                    Op::Add,
                    Expr::load(BufferId(2), row(i, j)),
                    Expr::load(BufferId(0), at(i, j)),
                ),
            }]
        });
        Program {
            name: "p".into(),
            buffers: vec![
                buf("x", 4, BufferKind::Input),
                buf("y", 4, BufferKind::Output),
                buf("t", t_rows, BufferKind::Temp { offset: 0 }),
            ],
            inputs: vec![("x".into(), BufferId(0))],
            outputs: vec![("y".into(), BufferId(1))],
            kernels: vec![k0, k1],
            arena_bytes: 0,
        }
    }

    #[test]
    fn same_row_kernels_fuse_and_the_temporary_disappears() {
        let mut p = program(4, |i, j| Index::var(i, 4).plus(j, 1));
        fuse(&mut p, false);
        assert_eq!(p.kernels.len(), 1, "{p}");
        assert_eq!(p.kernels[0].name, "k0_exp+add");
        assert_eq!(p.buffers.len(), 2, "t is never read after forwarding:\n{p}");
        let text = p.to_string();
        assert_eq!(
            text.matches("vector").count(),
            1,
            "one merged sweep:\n{text}"
        );
        assert!(!text.contains("%b2"), "{text}");
    }

    #[test]
    fn a_consumer_reading_the_next_row_does_not_fuse() {
        let mut p = program(5, |i, j| Index::var(i, 4).plus(j, 1).shifted(4));
        let before = p.clone();
        fuse(&mut p, false);
        assert_eq!(p, before);
    }

    #[test]
    fn sweeps_meeting_at_different_elements_do_not_merge() {
        // Same row, but the consumer reads the row reversed: iteration j
        // needs what iteration 3 - j of the producer stores.
        let mut p = program(4, |i, j| Index::var(i, 4).plus(j, -1).shifted(3));
        fuse(&mut p, false);
        assert_eq!(p.kernels.len(), 1, "rows still match:\n{p}");
        let text = p.to_string();
        assert_eq!(text.matches("vector").count(), 2, "two sweeps:\n{text}");
        assert!(text.contains("store %b2"), "t is still needed:\n{text}");
    }
}
