//! The memory plan: every temporary gets an offset in one arena, and
//! temporaries whose lifetimes do not overlap share memory.
//!
//! Lifetimes are in kernel steps: a temporary lives from the first kernel
//! that touches it to the last. Temporaries are placed in order of first
//! use, each at the lowest 64-byte-aligned offset where it overlaps no
//! live temporary (first fit). The arena size is the plan's peak.

use birkhoff_ir::kernel::{
    BufferId, BufferKind, Expr, Kernel, Program, Stmt, walk_exprs, walk_stmts,
};

/// Alignment of every temporary, in bytes (a cache line, and enough for
/// any vector load).
pub const ALIGN: usize = 64;

/// Every buffer a kernel reads or writes.
pub fn buffers_of(k: &Kernel) -> Vec<BufferId> {
    let mut v = Vec::new();
    walk_stmts(&k.body, &mut |s| match s {
        Stmt::Store { buf, .. } => v.push(*buf),
        Stmt::Gemm(g) => {
            v.extend([g.a.buf, g.b.buf, g.c.buf]);
            v.extend(g.row_sumsq.as_ref().map(|m| m.buf));
        }
        _ => {}
    });
    walk_exprs(&k.body, &mut |e| {
        if let Expr::Load { buf, .. } = e {
            v.push(*buf);
        }
    });
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
