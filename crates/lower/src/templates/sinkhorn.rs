//! Sinkhorn-Knopp projection (`docs/design.md` §2), as a kernel of its own and as
//! a statement sequence the mHC pre-mix kernel reuses.
//!
//! Input: logits `[..., n, n]` in a contiguous buffer (rows are the last
//! axis). The kernel is parallel over the matrices; each matrix lives in a
//! scratch array of `n²` elements for the whole iteration, so after one
//! read of the logits every round runs on cache-resident data, and the
//! result is written once. Rows are contiguous, so a row normalization is
//! a vector sum into a scalar and a vector division; a column
//! normalization keeps the `n` column sums in a second scratch array and
//! adds whole rows into it, so it is vector loops over rows too.
//!
//! Both variants perform the reference's operations in its order: every
//! sum starts from the first element of its line (columns) or adds it to
//! zero (rows, which is exact), and every division is a division.

use birkhoff_ir::kernel::{BufferId, Expr, Index, LocalId, Stmt, VarId};
use birkhoff_ir::{DType, Op, SinkhornSpec, SinkhornVariant};

use super::kernel_builder::{
    KernelBuilder, add, at, div, index_coeff, join, load, load_local, max, set, store, store_local,
    sub, unary, var,
};
use crate::builder::ProgramBuilder;

/// The scratch arrays of one projection: the `n × n` matrix and `n`
/// column sums.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scratch {
    /// The matrix, row-major.
    pub mat: LocalId,
    /// Column sums.
    pub cols: LocalId,
}

impl Scratch {
    /// Declares the scratch arrays for `n × n` matrices in `kb`.
    pub fn new(kb: &mut KernelBuilder, n: usize) -> Scratch {
        Scratch {
            mat: kb.local(n * n),
            cols: kb.local(n),
        }
    }
}

/// Appends the kernel projecting every trailing `n × n` matrix of `x`
/// (of `shape`) into `out`.
pub(crate) fn lower_sinkhorn(
    pb: &mut ProgramBuilder,
    spec: &SinkhornSpec,
    (x, out): (BufferId, BufferId),
    shape: &[usize],
    dtype: DType,
) {
    let n = shape[shape.len() - 1];
    let nn = n * n;
    let batch: usize = shape.iter().product::<usize>() / nn;
    let mut kb = KernelBuilder::new(pb, "sinkhorn", dtype);
    let sc = Scratch::new(&mut kb, n);
    let body = vec![kb.parallel(batch, |kb, b| {
        let start = Index::var(b, index_coeff(nn));
        let mut body = project(kb, spec, n, &|k| load(x, join(&start, &k)), sc);
        body.push(kb.vector(nn, |_, k| {
            vec![store(
                out,
                at(&start, k, 1),
                load_local(sc.mat, Index::var(k, 1)),
            )]
        }));
        body
    })];
    pb.push(kb.finish(body));
}

/// Statements leaving in `sc.mat` the projection of the `n × n` logits
/// whose row-major element `k` is `src(k)`. `src` may read `sc.mat`
/// itself: every statement reads an element before writing it, in the
/// same lane.
pub(crate) fn project(
    kb: &mut KernelBuilder,
    spec: &SinkhornSpec,
    n: usize,
    src: &dyn Fn(Index) -> Expr,
    sc: Scratch,
) -> Vec<Stmt> {
    let eps = spec.eps.get();
    let mut body = Vec::new();
    let rounds = match spec.computed_as() {
        SinkhornVariant::Paper => {
            body.push(kb.vector(n * n, |_, k| {
                let k = Index::var(k, 1);
                vec![store_local(sc.mat, k.clone(), unary(Op::Exp, src(k)))]
            }));
            spec.iters
        }
        SinkhornVariant::TileKernels => {
            body.push(kb.serial(n, |kb, i| softmax_row(kb, n, eps, src, (sc.mat, None), i)));
            body.extend(col_normalize(kb, n, eps, sc));
            spec.iters - 1
        }
    };
    let round = |kb: &mut KernelBuilder| {
        let mut r = vec![line_normalize(kb, n, eps, sc.mat, Lines::Rows)];
        r.extend(col_normalize(kb, n, eps, sc));
        r
    };
    match rounds {
        0 => {}
        1 => body.extend(round(kb)),
        _ => body.push(kb.serial(rounds, |kb, _| round(kb))),
    }
    body
}

/// Row `i` of `mat` := `softmax(src row i) + eps` (the `tilekernels`
/// start), and row `i` of `keep`, when given, := the softmax itself.
pub(crate) fn softmax_row(
    kb: &mut KernelBuilder,
    n: usize,
    eps: f64,
    src: &dyn Fn(Index) -> Expr,
    (mat, keep): (LocalId, Option<LocalId>),
    i: VarId,
) -> Vec<Stmt> {
    let row = Index::var(i, index_coeff(n));
    let (m, s, e) = (kb.value(), kb.value(), kb.value());
    let ninf = kb.c(f64::NEG_INFINITY);
    let zero = kb.c(0.0);
    let eps = nonzero(kb, eps);
    vec![
        set(m, ninf),
        kb.vector(n, |_, j| vec![set(m, max(var(m), src(at(&row, j, 1))))]),
        set(s, zero),
        kb.vector(n, |_, j| {
            vec![
                set(e, unary(Op::Exp, sub(src(at(&row, j, 1)), var(m)))),
                store_local(mat, at(&row, j, 1), var(e)),
                set(s, add(var(s), var(e))),
            ]
        }),
        kb.vector(n, |kb, j| {
            let mut p = div(load_local(mat, at(&row, j, 1)), var(s));
            let mut out = Vec::new();
            if let Some(keep) = keep {
                let v = kb.value();
                out.push(set(v, p));
                out.push(store_local(keep, at(&row, j, 1), var(v)));
                p = var(v);
            }
            out.push(store_local(
                mat,
                at(&row, j, 1),
                match eps {
                    Some(eps) => add(p, eps),
                    None => p,
                },
            ));
            out
        }),
    ]
}

/// The lines of an `n × n` row-major matrix: rows or columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lines {
    Rows,
    Cols,
}

impl Lines {
    /// The index coefficients of (which line, which element of it).
    pub fn coeffs(self, n: usize) -> (i64, i64) {
        match self {
            Lines::Rows => (index_coeff(n), 1),
            Lines::Cols => (1, index_coeff(n)),
        }
    }
}

/// Divides every line of `mat` by its sum plus `eps`, each sum a vector
/// reduction along the line from zero (for rows the reference's order:
/// `0 + x` is exact; for columns the same terms, in order when the loop
/// runs in order).
fn line_normalize(kb: &mut KernelBuilder, n: usize, eps: f64, mat: LocalId, lines: Lines) -> Stmt {
    let eps = nonzero(kb, eps);
    let zero = kb.c(0.0);
    let (outer, inner) = lines.coeffs(n);
    kb.serial(n, |kb, i| {
        let line = Index::var(i, outer);
        let s = kb.value();
        let mut body = vec![
            set(s, zero),
            kb.vector(n, |_, j| {
                vec![set(s, add(var(s), load_local(mat, at(&line, j, inner))))]
            }),
        ];
        if let Some(eps) = eps {
            body.push(set(s, add(var(s), eps)));
        }
        let (by, recip) = kb.line_divisor(s);
        body.extend(recip);
        body.push(kb.vector(n, |_, j| {
            vec![store_local(
                mat,
                at(&line, j, inner),
                by.apply(load_local(mat, at(&line, j, inner))),
            )]
        }));
        body
    })
}

/// Divides every column of `sc.mat` by its sum plus `eps`: with
/// [`crate::LowerOptions::column_reductions`] a reduction per column,
/// else the sums are built row by row in `sc.cols` so every loop runs
/// along a row.
fn col_normalize(kb: &mut KernelBuilder, n: usize, eps: f64, sc: Scratch) -> Vec<Stmt> {
    if kb.column_reductions {
        return vec![line_normalize(kb, n, eps, sc.mat, Lines::Cols)];
    }
    let eps = nonzero(kb, eps);
    let col = |j| Index::var(j, 1);
    let (mat, cols) = (sc.mat, sc.cols);
    let mut body = vec![kb.vector(n, |_, j| {
        vec![store_local(cols, col(j), load_local(mat, col(j)))]
    })];
    if n > 1 {
        body.push(kb.serial(n - 1, |kb, i| {
            let row = Index::var(i, index_coeff(n)).shifted(index_coeff(n));
            vec![kb.vector(n, |_, j| {
                vec![store_local(
                    cols,
                    col(j),
                    add(load_local(cols, col(j)), load_local(mat, at(&row, j, 1))),
                )]
            })]
        }));
    }
    if let Some(eps) = eps {
        body.push(kb.vector(n, |_, j| {
            vec![store_local(
                cols,
                col(j),
                add(load_local(cols, col(j)), eps),
            )]
        }));
    }
    body.push(kb.serial(n, |kb, i| {
        let row = Index::var(i, index_coeff(n));
        vec![kb.vector(n, |_, j| {
            vec![store_local(
                mat,
                at(&row, j, 1),
                div(load_local(mat, at(&row, j, 1)), load_local(cols, col(j))),
            )]
        })]
    }));
    body
}

/// `eps` as a constant, or `None` for 0. Every entry of a Sinkhorn matrix
/// is an exponential, a softmax or a quotient of such (`+0`, positive,
/// `+inf` or NaN), so no sum is `-0` and adding `+0`, which the reference
/// does, changes nothing: leaving it out saves a pass per normalization
/// at `eps = 0` (the paper's default).
fn nonzero(kb: &KernelBuilder, eps: f64) -> Option<Expr> {
    (eps != 0.0).then(|| kb.c(eps))
}
