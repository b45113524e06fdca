//! Short parallel loops and the grid: a parallel loop of fewer iterations
//! than two blocks per H100 SM (a causal mask over 16 heads; for a thread
//! per iteration, fewer than the device holds threads) spreads the serial
//! loop inside it over the grid's x dimension, itself on y, when that
//! loop's iterations are independent; a parallel loop whose body is
//! several loops is split into a launch per loop first. Checked on
//! hand-written kernels in the host emulator against the kernel
//! interpreter, bit for bit (the values are exact in f32), and on kernels
//! whose inner loop carries a value or writes overlapping elements, which
//! must keep their one-dimensional grid.
#![cfg(feature = "gpu")]

mod common;

use common::{add, buffer, emulates_bit_for_bit, f32c, mul, serial, vector};

use std::collections::BTreeMap;

use birkhoff_gpu::CodegenOptions;
use birkhoff_gpu::codegen::{LaunchInfo, Mode, launch_plan};
use birkhoff_ir::kernel::{
    BufferId, BufferKind, Expr, Index, Kernel, LoopKind, Program, ScalarType, Stmt, VarId,
};
use birkhoff_ir::{DType, Op, Tensor, TensorType};

/// Heads, rows, columns of the test tensors.
const H: usize = 3;
const R: usize = 70;

/// `index = h·R·cols + r·cols + j`.
fn at(h: VarId, r: VarId, j: VarId, cols: usize) -> Index {
    Index::var(h, (R * cols) as i64)
        .plus(r, cols as i64)
        .plus(j, 1)
}

/// `i32(var)` as an f32.
fn index_value(var: VarId) -> Expr {
    Expr::Cast {
        to: ScalarType::F32,
        arg: Box::new(Expr::Var(var)),
    }
}

/// One parallel loop over `H` heads around `body(h)` in a program with
/// input `x` and output `y`, both `[H, R, cols]`, and output `z`,
/// `[H, z_len]`; `body` must write every element of both outputs.
fn program(
    cols: usize,
    z_len: usize,
    body: impl FnOnce(&mut Kernel, VarId) -> Vec<Stmt>,
) -> Program {
    let mut k = Kernel::new("k0_heads");
    let h = k.var(ScalarType::Index);
    let inner = body(&mut k, h);
    k.body = vec![Stmt::Loop {
        var: h,
        extent: H,
        kind: LoopKind::Parallel,
        body: inner,
    }];
    Program {
        name: "heads".into(),
        buffers: vec![
            buffer("x", &[H, R, cols], BufferKind::Input),
            buffer("y", &[H, R, cols], BufferKind::Output),
            buffer("z", &[H, z_len], BufferKind::Output),
        ],
        inputs: vec![("x".into(), BufferId(0))],
        outputs: vec![("y".into(), BufferId(1)), ("z".into(), BufferId(2))],
        kernels: vec![k],
        arena_bytes: 0,
    }
}

/// A causal mask and a scale, as two row loops (the bf16 attention's
/// shape):
///
/// ```text
/// parallel h in 0..H {
///   for r in 0..R { vector j in 0..cols { y[h,r,j] = x[h,r,j]·0.5 + h } }
///   for r in 0..R { vector j in 0..cols {
///     z[h,r,j] = j <= r ? y[h,r,j] + r : -1 } }
/// }
/// ```
fn masked(cols: usize) -> Program {
    program(cols, R * cols, |k, h| {
        let (x, y, z) = (BufferId(0), BufferId(1), BufferId(2));
        let (r1, j1, r2, j2) = (
            k.var(ScalarType::Index),
            k.var(ScalarType::Index),
            k.var(ScalarType::Index),
            k.var(ScalarType::Index),
        );
        let scaled = add(
            mul(Expr::load(x, at(h, r1, j1, cols)), f32c(0.5)),
            index_value(h),
        );
        let keep = Expr::binary(Op::Le, index_value(j2), index_value(r2));
        let masked = Expr::Select {
            cond: Box::new(keep),
            then: Box::new(add(Expr::load(y, at(h, r2, j2, cols)), index_value(r2))),
            otherwise: Box::new(f32c(-1.0)),
        };
        vec![
            serial(
                r1,
                R,
                vec![vector(
                    j1,
                    cols,
                    vec![Stmt::Store {
                        buf: y,
                        index: at(h, r1, j1, cols),
                        value: scaled,
                    }],
                )],
            ),
            serial(
                r2,
                R,
                vec![vector(
                    j2,
                    cols,
                    vec![Stmt::Store {
                        buf: z,
                        index: at(h, r2, j2, cols),
                        value: masked,
                    }],
                )],
            ),
        ]
    })
}

fn plan(p: &Program) -> Vec<LaunchInfo> {
    launch_plan(p, &CodegenOptions::default()).unwrap()
}

/// The emulator's outputs equal the kernel interpreter's, bit for bit.
fn emulates_exactly(p: &Program, cols: usize, what: &str) {
    // Small integers and halves: exact in f32.
    let xs: Vec<f64> = (0..H * R * cols)
        .map(|i| ((i * 5 + 1) % 11) as f64 - 5.0)
        .collect();
    let inputs = BTreeMap::from([(
        "x".to_string(),
        Tensor::from_f64(TensorType::new(DType::F32, [H, R, cols]), &xs).unwrap(),
    )]);
    emulates_bit_for_bit(p, &inputs, what);
}

#[test]
fn rows_of_a_few_heads_spread_over_the_grid() {
    // Rows of 128 spread over a block's threads (block per row); rows of
    // 8 do not (thread per element of the row loop).
    for (cols, mode) in [(128, Mode::Block), (8, Mode::Thread)] {
        let p = masked(cols);
        let launches = plan(&p);
        let what = format!("{cols} columns");
        assert_eq!(launches.len(), 2, "{what}: {launches:?}");
        for l in &launches {
            assert_eq!(l.mode, mode, "{what}: {l:?}");
            assert_eq!(l.grid[1], H as u32, "{what}: heads on y: {l:?}");
            let x_blocks = match mode {
                Mode::Block => R as u32,
                _ => (R as u32).div_ceil(l.block),
            };
            assert_eq!(l.grid[0], x_blocks, "{what}: rows on x: {l:?}");
        }
        emulates_exactly(&p, cols, &what);
    }
}

#[test]
fn dependent_rows_keep_the_heads_grid() {
    let cols = 128;
    // A value carried from one row to the next: `s` is read before the
    // row sets it, so rows must run in order.
    let carried = program(cols, R * cols, |k, h| {
        let (x, y, z) = (BufferId(0), BufferId(1), BufferId(2));
        let s = k.var(ScalarType::F32);
        let (r, j) = (k.var(ScalarType::Index), k.var(ScalarType::Index));
        vec![
            Stmt::Set {
                var: s,
                value: f32c(0.0),
            },
            serial(
                r,
                R,
                vec![
                    Stmt::Set {
                        var: s,
                        value: add(
                            Expr::Var(s),
                            Expr::load(x, Index::var(h, (R * cols) as i64).plus(r, cols as i64)),
                        ),
                    },
                    vector(
                        j,
                        cols,
                        vec![
                            Stmt::Store {
                                buf: y,
                                index: at(h, r, j, cols),
                                value: add(Expr::load(x, at(h, r, j, cols)), Expr::Var(s)),
                            },
                            Stmt::Store {
                                buf: z,
                                index: at(h, r, j, cols),
                                value: mul(Expr::Var(s), f32c(2.0)),
                            },
                        ],
                    ),
                ],
            ),
        ]
    });
    // Overlapping rows: row r writes elements r..r+cols/2 of its head's
    // line of `z`, so rows share elements and the last writer wins.
    let line = R + cols / 2 - 1;
    let overlapping = program(cols, line, |k, h| {
        let (x, y, z) = (BufferId(0), BufferId(1), BufferId(2));
        let (r, j, j2) = (
            k.var(ScalarType::Index),
            k.var(ScalarType::Index),
            k.var(ScalarType::Index),
        );
        let at_line = Index::var(h, line as i64).plus(r, 1).plus(j, 1);
        vec![serial(
            r,
            R,
            vec![
                vector(
                    j,
                    cols / 2,
                    vec![Stmt::Store {
                        buf: z,
                        index: at_line,
                        value: add(Expr::load(x, at(h, r, j, cols)), index_value(r)),
                    }],
                ),
                vector(
                    j2,
                    cols,
                    vec![Stmt::Store {
                        buf: y,
                        index: at(h, r, j2, cols),
                        value: Expr::load(x, at(h, r, j2, cols)),
                    }],
                ),
            ],
        )]
    });
    // Every row reading row 0, which only the first row writes.
    let reads_back = program(cols, R * cols, |k, h| {
        let (x, y, z) = (BufferId(0), BufferId(1), BufferId(2));
        let (r, j1, j2) = (
            k.var(ScalarType::Index),
            k.var(ScalarType::Index),
            k.var(ScalarType::Index),
        );
        let row0 = Index::var(h, (R * cols) as i64).plus(j2, 1);
        vec![serial(
            r,
            R,
            vec![
                vector(
                    j1,
                    cols,
                    vec![Stmt::Store {
                        buf: y,
                        index: at(h, r, j1, cols),
                        value: add(Expr::load(x, at(h, r, j1, cols)), f32c(1.0)),
                    }],
                ),
                vector(
                    j2,
                    cols,
                    vec![Stmt::Store {
                        buf: z,
                        index: at(h, r, j2, cols),
                        value: add(Expr::load(y, row0), index_value(r)),
                    }],
                ),
            ],
        )]
    });
    for (p, what) in [
        (carried, "a sum carried from row to row"),
        (overlapping, "overlapping rows"),
        (reads_back, "a row reading the row before"),
    ] {
        let launches = plan(&p);
        assert_eq!(launches.len(), 1, "{what}: {launches:?}");
        assert_eq!(launches[0].grid, [H as u32, 1, 1], "{what}: {launches:?}");
        emulates_exactly(&p, cols, what);
    }
}
