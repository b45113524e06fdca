//! Normalizations along one axis: `row_norm`, `col_norm`, `softmax`,
//! `rms_norm`.
//!
//! Input: one operand and one result, both contiguous row-major buffers of
//! the same shape and float dtype. Every op is a map over *lines* along an
//! axis, so the operand is viewed as `[outer, len, inner]` with the axis
//! in the middle:
//!
//! * `inner == 1` (the axis is the last one, or only size-1 axes follow):
//!   each line is a contiguous row. The kernel is parallel over rows; per
//!   row, a vector loop reduces into a scalar accumulator and a second
//!   vector loop writes the row.
//! * `inner > 1`: a line is strided, so instead of walking it the kernel
//!   walks `len` contiguous rows of a block of columns, keeping one
//!   accumulator per column in a scratch array: every inner loop is a
//!   vector loop over contiguous memory. Blocks are at most [`COL_BLOCK`]
//!   columns wide so the accumulators stay in L1; the kernel is parallel
//!   over `outer`, or over column blocks when `outer == 1`.
//!
//! Each kernel performs exactly the operations of the reference
//! (`birkhoff_ir` semantics), in the same order; only its accumulators
//! start from zero rather than from the first term, which can change
//! nothing but the sign of a zero sum (and `+ eps`, which the reference
//! always adds, erases that).

use birkhoff_ir::kernel::{BufferId, Index, LocalId, Stmt};
use birkhoff_ir::{DType, Op};

use super::kernel_builder::{
    KernelBuilder, add, at, div, index_coeff, load, load_local, max, mul, set, store, store_local,
    sub, unary, var,
};
use crate::builder::ProgramBuilder;

/// Widest column block of a strided line kernel: two scratch arrays of
/// this many `f64`s are 4 KiB, well inside L1.
pub(crate) const COL_BLOCK: usize = 256;

/// A normalization along one axis.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LineOp {
    /// `x / (Σ x + eps)`.
    Normalize {
        /// Added to the sum.
        eps: f64,
    },
    /// `exp(x - max) / Σ exp(x - max)`.
    Softmax,
    /// `x · rsqrt(Σ x² / len + eps)` (last axis only).
    Rms {
        /// Added to the mean square.
        eps: f64,
    },
}

/// Appends the kernel applying `op` along `axis` of the `shape`d tensor in
/// `x`, writing `out`.
pub(crate) fn lower_line_op(
    pb: &mut ProgramBuilder,
    what: &str,
    op: LineOp,
    (x, out): (BufferId, BufferId),
    shape: &[usize],
    axis: usize,
    dtype: DType,
) {
    let outer: usize = shape[..axis].iter().product();
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut kb = KernelBuilder::new(pb, what, dtype);
    let body = if inner == 1 {
        vec![kb.parallel(outer, |kb, r| {
            row(kb, op, x, out, &Index::var(r, index_coeff(len)), len)
        })]
    } else {
        debug_assert!(
            !matches!(op, LineOp::Rms { .. }),
            "rms_norm is along the last axis"
        );
        strided(&mut kb, op, x, out, (outer, len, inner))
    };
    pb.push(kb.finish(body));
}

/// One contiguous line of `len` elements starting at `base`.
fn row(
    kb: &mut KernelBuilder,
    op: LineOp,
    x: BufferId,
    out: BufferId,
    base: &Index,
    len: usize,
) -> Vec<Stmt> {
    let zero = kb.c(0.0);
    match op {
        LineOp::Normalize { eps } => {
            let (s, z) = (kb.value(), kb.value());
            vec![
                set(s, zero),
                kb.vector(len, |_, j| {
                    vec![set(s, add(var(s), load(x, at(base, j, 1))))]
                }),
                set(z, add(var(s), kb.c(eps))),
                kb.vector(len, |_, j| {
                    vec![store(
                        out,
                        at(base, j, 1),
                        div(load(x, at(base, j, 1)), var(z)),
                    )]
                }),
            ]
        }
        LineOp::Softmax => {
            let (m, s, e) = (kb.value(), kb.value(), kb.value());
            vec![
                set(m, kb.c(f64::NEG_INFINITY)),
                kb.vector(len, |_, j| {
                    vec![set(m, max(var(m), load(x, at(base, j, 1))))]
                }),
                set(s, zero),
                // The exponentials go to the result row (the cache-hot
                // scratch a long row needs) and into the sum at once; a bf16
                // row would round them, so bf16 recomputes them instead.
                kb.vector(len, |kb, j| {
                    let mut b = vec![set(e, unary(Op::Exp, sub(load(x, at(base, j, 1)), var(m))))];
                    if !kb.bf16 {
                        b.push(store(out, at(base, j, 1), var(e)));
                    }
                    b.push(set(s, add(var(s), var(e))));
                    b
                }),
                kb.vector(len, |kb, j| {
                    let num = if kb.bf16 {
                        unary(Op::Exp, sub(load(x, at(base, j, 1)), var(m)))
                    } else {
                        load(out, at(base, j, 1))
                    };
                    vec![store(out, at(base, j, 1), div(num, var(s)))]
                }),
            ]
        }
        LineOp::Rms { eps } => {
            let (ss, f, v) = (kb.value(), kb.value(), kb.value());
            let n = kb.c(len as f64);
            vec![
                set(ss, zero),
                kb.vector(len, |_, j| {
                    vec![
                        set(v, load(x, at(base, j, 1))),
                        set(ss, add(var(ss), mul(var(v), var(v)))),
                    ]
                }),
                set(f, unary(Op::Rsqrt, add(div(var(ss), n), kb.c(eps)))),
                kb.vector(len, |_, j| {
                    vec![store(
                        out,
                        at(base, j, 1),
                        mul(load(x, at(base, j, 1)), var(f)),
                    )]
                }),
            ]
        }
    }
}

/// The kernel body for lines along the middle axis of `[outer, len, inner]`
/// with `inner > 1`: blocks of columns, one accumulator per column.
fn strided(
    kb: &mut KernelBuilder,
    op: LineOp,
    x: BufferId,
    out: BufferId,
    (outer, len, inner): (usize, usize, usize),
) -> Vec<Stmt> {
    // As few blocks as COL_BLOCK allows, of nearly equal widths rounded up
    // to whole f32x4 vectors, so that the blocks balance across threads
    // and a tail block (if any) is nearly as wide as the others.
    let blocks = inner.div_ceil(COL_BLOCK);
    let w = inner.div_ceil(blocks).next_multiple_of(4).min(inner);
    let (full, tail) = (inner / w, inner % w);
    // One accumulator array per reduction (max and sum for softmax).
    let acc = (kb.local(w), kb.local(w));
    let block = |kb: &mut KernelBuilder, base: Index, width: usize| {
        column_block(kb, op, (x, out), acc, &base, (len, inner, width))
    };
    let line = index_coeff(len * inner);
    if outer > 1 || full + usize::from(tail > 0) == 1 {
        vec![kb.parallel(outer, |kb, o| {
            let start = Index::var(o, line);
            let mut body = if full == 1 {
                block(kb, start.clone(), w)
            } else {
                vec![kb.serial(full, |kb, b| block(kb, at(&start, b, index_coeff(w)), w))]
            };
            if tail > 0 {
                body.extend(block(kb, start.shifted(index_coeff(full * w)), tail));
            }
            body
        })]
    } else {
        // A single line batch: the column blocks are the parallel work.
        let mut body = vec![kb.parallel(full, |kb, b| block(kb, Index::var(b, index_coeff(w)), w))];
        if tail > 0 {
            body.push(kb.parallel(1, |kb, _| {
                block(kb, Index::constant(index_coeff(full * w)), tail)
            }));
        }
        body
    }
}

/// One block of `width` columns whose first element is at `base`; row `i`
/// of the block starts at `base + i·inner`.
fn column_block(
    kb: &mut KernelBuilder,
    op: LineOp,
    (x, out): (BufferId, BufferId),
    (a, b): (LocalId, LocalId),
    base: &Index,
    (len, inner, width): (usize, usize, usize),
) -> Vec<Stmt> {
    let stride = index_coeff(inner);
    let elem = |i, j| at(&at(base, i, stride), j, 1);
    let col = |j| Index::var(j, 1);
    let zero = kb.c(0.0);
    match op {
        LineOp::Normalize { eps } => {
            let eps = kb.c(eps);
            vec![
                kb.vector(width, |_, j| vec![store_local(a, col(j), zero)]),
                kb.serial(len, |kb, i| {
                    vec![kb.vector(width, |_, j| {
                        vec![store_local(
                            a,
                            col(j),
                            add(load_local(a, col(j)), load(x, elem(i, j))),
                        )]
                    })]
                }),
                kb.vector(width, |_, j| {
                    vec![store_local(a, col(j), add(load_local(a, col(j)), eps))]
                }),
                kb.serial(len, |kb, i| {
                    vec![kb.vector(width, |_, j| {
                        vec![store(
                            out,
                            elem(i, j),
                            div(load(x, elem(i, j)), load_local(a, col(j))),
                        )]
                    })]
                }),
            ]
        }
        LineOp::Softmax => {
            let (m, s) = (a, b);
            let e = kb.value();
            let ninf = kb.c(f64::NEG_INFINITY);
            vec![
                kb.vector(width, |_, j| vec![store_local(m, col(j), ninf)]),
                kb.serial(len, |kb, i| {
                    vec![kb.vector(width, |_, j| {
                        vec![store_local(
                            m,
                            col(j),
                            max(load_local(m, col(j)), load(x, elem(i, j))),
                        )]
                    })]
                }),
                kb.vector(width, |_, j| vec![store_local(s, col(j), zero)]),
                kb.serial(len, |kb, i| {
                    vec![kb.vector(width, |kb, j| {
                        let mut b = vec![set(
                            e,
                            unary(Op::Exp, sub(load(x, elem(i, j)), load_local(m, col(j)))),
                        )];
                        if !kb.bf16 {
                            b.push(store(out, elem(i, j), var(e)));
                        }
                        b.push(store_local(s, col(j), add(load_local(s, col(j)), var(e))));
                        b
                    })]
                }),
                kb.serial(len, |kb, i| {
                    vec![kb.vector(width, |kb, j| {
                        let num = if kb.bf16 {
                            unary(Op::Exp, sub(load(x, elem(i, j)), load_local(m, col(j))))
                        } else {
                            load(out, elem(i, j))
                        };
                        vec![store(out, elem(i, j), div(num, load_local(s, col(j))))]
                    })]
                }),
            ]
        }
        LineOp::Rms { .. } => unreachable!("rms_norm is along the last axis"),
    }
}
