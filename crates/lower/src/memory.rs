//! The memory plan: every temporary gets an offset in one arena, and
//! temporaries whose lifetimes do not overlap share memory.
//!
//! Lifetimes are in kernel steps: a temporary lives from the first kernel
//! that touches it to the last. Temporaries are placed one by one, each at
//! the lowest 64-byte-aligned offset where it overlaps no live temporary
//! (first fit), once in order of first use and once largest first; the
//! smaller arena is kept. The arena size is the plan's peak; it is at
//! least the peak of live bytes ([`live_bytes`]), more where placement
//! leaves gaps.

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

/// The first and last kernel step that touches each buffer of `p`
/// (`None` for a buffer no kernel touches).
fn lifetimes(p: &Program) -> Vec<Option<(usize, usize)>> {
    let mut life: Vec<Option<(usize, usize)>> = vec![None; p.buffers.len()];
    for (step, k) in p.kernels.iter().enumerate() {
        for b in buffers_of(k) {
            let l = &mut life[b.0 as usize];
            *l = Some(l.map_or((step, step), |(f, _)| (f, step)));
        }
    }
    life
}

/// Bytes of temporaries live during each kernel of `p` (a temporary lives
/// from the first kernel that touches it to the last, as the memory plan
/// assumes), each rounded up to [`ALIGN`] as the arena places it. The
/// maximum is the smallest arena any placement could have; the plan's
/// `arena_bytes` is at least that (first fit can leave gaps).
pub fn live_bytes(p: &Program) -> Vec<usize> {
    let mut live = vec![0usize; p.kernels.len()];
    for (b, l) in p.buffers.iter().zip(lifetimes(p)) {
        if let (BufferKind::Temp { .. }, Some((f, last))) = (&b.kind, l) {
            let size = b.ty.size_bytes().div_ceil(ALIGN) * ALIGN;
            for x in &mut live[f..=last] {
                *x += size;
            }
        }
    }
    live
}

/// Places every temporary of `p` and sets `p.arena_bytes`: two orders
/// are tried and the smaller arena wins (the first on a tie).
pub fn place_temporaries(p: &mut Program) {
    let n = p.buffers.len();
    let life: Vec<(usize, usize)> = lifetimes(p)
        .into_iter()
        .map(|l| l.unwrap_or((0, 0)))
        .collect();
    let size = |i: usize| p.buffers[i].ty.size_bytes().div_ceil(ALIGN) * ALIGN;
    let mut by_first: Vec<usize> = (0..n)
        .filter(|&i| matches!(p.buffers[i].kind, BufferKind::Temp { .. }))
        .collect();
    by_first.sort_by_key(|&i| (life[i].0, i));
    // Largest first leaves the small buffers to fill the gaps the large
    // ones leave, which first-use order cannot (TFLite's "greedy by size").
    let mut by_size = by_first.clone();
    by_size.sort_by_key(|&i| (std::cmp::Reverse(size(i)), life[i].0, i));
    let a = place(&by_first, &life, &size);
    let b = place(&by_size, &life, &size);
    let (offsets, arena) = if b.1 < a.1 { b } else { a };
    for (i, offset) in offsets {
        p.buffers[i].kind = BufferKind::Temp { offset };
    }
    p.arena_bytes = arena;
}

/// Places the temporaries `order` in that order, each at the lowest offset
/// where it overlaps no placed temporary whose lifetime meets its own;
/// returns each one's offset and the arena size.
fn place(
    order: &[usize],
    life: &[(usize, usize)],
    size: &dyn Fn(usize) -> usize,
) -> (Vec<(usize, usize)>, usize) {
    // (start, end, first step, last step) of every placed temporary.
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut offsets = Vec::with_capacity(order.len());
    let mut arena = 0;
    for &i in order {
        let (f, l) = life[i];
        let size = size(i);
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
        offsets.push((i, offset));
    }
    (offsets, arena)
}
