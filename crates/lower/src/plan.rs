//! The memory plan: every temporary gets an offset in one arena, and
//! temporaries whose lifetimes do not overlap share memory.
//!
//! Lifetimes are in kernel steps: a temporary lives from the first kernel
//! that touches it to the last. Temporaries are placed in order of first
//! use, each at the lowest 64-byte-aligned offset where it overlaps no
//! live temporary (first fit). The arena size is the plan's peak.

use birkhoff_ir::kernel::{BufferId, BufferKind, Expr, Kernel, Program, Stmt};

/// Alignment of every temporary, in bytes (a cache line, and enough for
/// any vector load).
pub const ALIGN: usize = 64;

fn visit_expr(e: &Expr, f: &mut impl FnMut(BufferId)) {
    match e {
        Expr::Load { buf, .. } => f(*buf),
        Expr::Unary { arg, .. } | Expr::Cast { arg, .. } => visit_expr(arg, f),
        Expr::Binary { lhs, rhs, .. } => {
            visit_expr(lhs, f);
            visit_expr(rhs, f);
        }
        Expr::Select {
            cond,
            then,
            otherwise,
        } => {
            visit_expr(cond, f);
            visit_expr(then, f);
            visit_expr(otherwise, f);
        }
        Expr::Const { .. } | Expr::Var(_) | Expr::LocalLoad { .. } => {}
    }
}

fn visit_stmts(body: &[Stmt], f: &mut impl FnMut(BufferId)) {
    for s in body {
        match s {
            Stmt::Loop { body, .. } => visit_stmts(body, f),
            Stmt::Set { value, .. } | Stmt::LocalStore { value, .. } => visit_expr(value, f),
            Stmt::Store { buf, value, .. } => {
                f(*buf);
                visit_expr(value, f);
            }
            Stmt::Gemm(g) => {
                f(g.a.buf);
                f(g.b.buf);
                f(g.c.buf);
            }
        }
    }
}

/// Every buffer a kernel reads or writes.
pub fn buffers_of(k: &Kernel) -> Vec<BufferId> {
    let mut v = Vec::new();
    visit_stmts(&k.body, &mut |b| v.push(b));
    v.sort();
    v.dedup();
    v
}

/// Places every temporary of `p` and sets `p.arena_bytes`.
pub fn plan(p: &mut Program) {
    let n = p.buffers.len();
    let (mut first, mut last) = (vec![usize::MAX; n], vec![0usize; n]);
    for (step, k) in p.kernels.iter().enumerate() {
        for b in buffers_of(k) {
            let i = b.0 as usize;
            first[i] = first[i].min(step);
            last[i] = last[i].max(step);
        }
    }
    let mut temps: Vec<usize> = (0..n)
        .filter(|&i| matches!(p.buffers[i].kind, BufferKind::Temp { .. }))
        .collect();
    temps.sort_by_key(|&i| (first[i], i));
    // (start, end, first step, last step) of every placed temporary.
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut arena = 0;
    for i in temps {
        let size = p.buffers[i].ty.size_bytes().div_ceil(ALIGN) * ALIGN;
        let (f, l) = if first[i] == usize::MAX {
            (0, 0)
        } else {
            (first[i], last[i])
        };
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&(_, _, pf, pl)| pf <= l && f <= pl)
            .map(|&(s, e, _, _)| (s, e))
            .collect();
        busy.sort_unstable();
        let mut offset = 0;
        for (s, e) in busy {
            if offset + size <= s {
                break;
            }
            offset = offset.max(e);
        }
        placed.push((offset, offset + size, f, l));
        arena = arena.max(offset + size);
        p.buffers[i].kind = BufferKind::Temp { offset };
    }
    p.arena_bytes = arena;
}
