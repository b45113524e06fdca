//! The tall-and-skinny matrix products (`N ≤ 32` columns, long
//! contiguous rows: the mHC projection's shape) in the host emulator, for
//! both flavours — `bf16` operands on tensor cores, `f32` operands with
//! fused multiply-adds — against an f64 reference: every number of 16-row
//! tiles per block the launch rule picks (1, 2 and 4), row counts that are
//! no multiple of a block's rows, column counts from 1 to 32, `row_sumsq`
//! on and off, accumulating into `c` and not, batches, padded rows and
//! offsets, and a transposed result.
//!
//! Each launch is checked against the plan the rule implies (grid of
//! `⌈M / rows⌉ × batch` blocks) so that a change of rule shows here, and
//! each element against the reference within the worst-case bound of an
//! `f32` sum of `K` products in any order (`K · ε · Σ|a·b|`): a wrong
//! fragment, row or column mapping is off by far more.
#![cfg(feature = "gpu")]

use std::collections::BTreeMap;

use birkhoff::dsl::{Init, Rng, random_tensor};
use birkhoff::gpu::CodegenOptions;
use birkhoff::gpu::codegen::{Mode, emulate, launch_plan};
use birkhoff::ir::kernel::{
    BufferDecl, BufferId, BufferKind, Expr, Gemm, Index, Kernel, LoopKind, Matrix, Program,
    ScalarType, Stmt,
};
use birkhoff::ir::{DType, Tensor, TensorType};

/// One product to run.
#[derive(Clone, Copy, Debug)]
struct Case {
    dtype: DType,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    sumsq: bool,
    accumulate: bool,
    /// Extra elements at the end of each row of `a`, and `a`'s offset.
    pad: usize,
    /// `c` stored column-major (`c[j][i]`).
    transposed_c: bool,
    /// Rows per block the launch rule should pick.
    rows: usize,
}

impl Case {
    fn new(dtype: DType, batch: usize, m: usize, n: usize, k: usize, rows: usize) -> Case {
        Case {
            dtype,
            batch,
            m,
            n,
            k,
            sumsq: false,
            accumulate: false,
            pad: 0,
            transposed_c: false,
            rows,
        }
    }
}

/// The program: `c (+)= a · btᵀ` as one `Gemm` statement, `a` read
/// through rows of `k + pad` elements at offset `pad`; with
/// `accumulate`, a first kernel copies the input `c0` into `c`.
fn program(cs: &Case) -> Program {
    let (batch, m, n, k) = (cs.batch, cs.m, cs.n, cs.k);
    let lda = k + cs.pad;
    let decl = |name: &str, d, shape: &[usize], kind| BufferDecl {
        name: name.into(),
        ty: TensorType::new(d, shape),
        kind,
    };
    let c_shape = if cs.transposed_c {
        [batch, n, m]
    } else {
        [batch, m, n]
    };
    let mut buffers = vec![
        // One spare row holds the offset's tail.
        decl("a", cs.dtype, &[batch * m + 1, lda], BufferKind::Input),
        decl("bt", cs.dtype, &[batch, n, k], BufferKind::Input),
        decl("c", DType::F32, &c_shape, BufferKind::Output),
    ];
    let mut inputs = vec![("a".to_string(), BufferId(0)), ("bt".into(), BufferId(1))];
    let mut outputs = vec![("c".to_string(), BufferId(2))];
    if cs.sumsq {
        buffers.push(decl("sq", DType::F32, &[batch, m], BufferKind::Output));
        outputs.push(("sq".into(), BufferId(3)));
    }
    let mut kernels = Vec::new();
    if cs.accumulate {
        let c0 = BufferId(buffers.len() as u32);
        buffers.push(decl("c0", DType::F32, &c_shape, BufferKind::Input));
        inputs.push(("c0".into(), c0));
        let mut init = Kernel::new("k0_init");
        let i = init.var(ScalarType::Index);
        init.body = vec![Stmt::Loop {
            var: i,
            extent: batch * m * n,
            kind: LoopKind::Parallel,
            body: vec![Stmt::Store {
                buf: BufferId(2),
                index: Index::var(i, 1),
                value: Expr::load(c0, Index::var(i, 1)),
            }],
        }];
        kernels.push(init);
    }
    let (c_row, c_col) = if cs.transposed_c { (1, m) } else { (n, 1) };
    let mut gemm = Kernel::new("k1_proj");
    gemm.body = vec![Stmt::Gemm(Gemm {
        m,
        n,
        k,
        batch,
        a: Matrix {
            buf: BufferId(0),
            offset: cs.pad,
            row_stride: lda,
            col_stride: 1,
            batch_stride: m * lda,
        },
        b: Matrix {
            buf: BufferId(1),
            offset: 0,
            row_stride: 1,
            col_stride: k,
            batch_stride: n * k,
        },
        c: Matrix {
            buf: BufferId(2),
            offset: 0,
            row_stride: c_row,
            col_stride: c_col,
            batch_stride: m * n,
        },
        accumulate: cs.accumulate,
        row_sumsq: cs.sumsq.then_some(Matrix {
            buf: BufferId(3),
            offset: 0,
            row_stride: 1,
            col_stride: 1,
            batch_stride: m,
        }),
    })];
    kernels.push(gemm);
    Program {
        name: "skinny".into(),
        buffers,
        inputs,
        outputs,
        kernels,
        arena_bytes: 0,
    }
}

/// Runs `cs` in the emulator and checks its plan and every element.
fn check(cs: &Case) {
    let what = format!("{cs:?}");
    let p = program(cs);
    let opts = CodegenOptions::default();
    let plan = launch_plan(&p, &opts).unwrap_or_else(|e| panic!("{what}: {e}"));
    let l = plan.last().unwrap();
    assert_eq!(l.mode, Mode::Gemm, "{what}");
    assert_eq!(l.tensor_cores, cs.dtype == DType::Bf16, "{what}: {l:?}");
    assert_eq!(
        l.grid,
        [cs.m.div_ceil(cs.rows) as u32, cs.batch as u32, 1],
        "{what}: {} rows per block",
        cs.rows
    );
    assert_eq!(l.block, 256, "{what}");

    let rng = Rng::new(23);
    let init = Init::Uniform {
        low: -2.0,
        high: 2.0,
    };
    let ins: BTreeMap<String, Tensor> = p
        .inputs
        .iter()
        .map(|(name, buf)| {
            let ty = &p.buffer(*buf).ty;
            (name.clone(), random_tensor(ty, &init, &mut rng.fork(name)))
        })
        .collect();
    let got = emulate(&p, &opts, &ins).unwrap_or_else(|e| panic!("{what}: {e}"));
    let got: BTreeMap<&str, Vec<f64>> = got
        .iter()
        .map(|(name, t)| (name.as_str(), t.to_f64_vec()))
        .collect();

    let (batch, m, n, k) = (cs.batch, cs.m, cs.n, cs.k);
    let lda = k + cs.pad;
    let a = ins["a"].to_f64_vec();
    let bt = ins["bt"].to_f64_vec();
    let c0 = cs.accumulate.then(|| ins["c0"].to_f64_vec());
    let eps = f64::from(f32::EPSILON);
    let bound = |k: usize, magnitude: f64| (k as f64 + 2.0) * eps * magnitude + 1e-30;
    let mut worst = 0.0f64;
    for bi in 0..batch {
        for i in 0..m {
            let row = &a[(bi * m + i) * lda + cs.pad..][..k];
            for j in 0..n {
                let col = &bt[(bi * n + j) * k..][..k];
                let mut want: f64 = row.iter().zip(col).map(|(x, y)| x * y).sum();
                let mut mag: f64 = row.iter().zip(col).map(|(x, y)| (x * y).abs()).sum();
                let at = bi * m * n
                    + if cs.transposed_c {
                        j * m + i
                    } else {
                        i * n + j
                    };
                if let Some(c0) = &c0 {
                    want += c0[at];
                    mag += c0[at].abs();
                }
                let g = got["c"][at];
                let err = (g - want).abs();
                worst = worst.max(err / mag.max(1e-30));
                assert!(
                    err <= bound(k, mag),
                    "{what}: c[{bi}][{i}][{j}] is {g}, want {want} (error {err:.3e}, bound {:.3e})",
                    bound(k, mag)
                );
            }
            if cs.sumsq {
                let want: f64 = row.iter().map(|x| x * x).sum();
                let g = got["sq"][bi * m + i];
                assert!(
                    (g - want).abs() <= bound(k, want),
                    "{what}: sumsq[{bi}][{i}] is {g}, want {want}"
                );
            }
        }
    }
    println!("{what}: worst error {worst:.2e} of sum |a·b|");
}

/// One 16-row tile per block (the rule's choice whenever 32-row blocks
/// would be fewer than 264): rows that are no multiple of 16, every
/// column count class (one, odd, the mHC projection's 24, the limit 32),
/// row sums on and off, accumulation, batches, and `K` from one 32-wide
/// chunk (most warps idle) to 33 chunks (ragged trips of the warps).
#[test]
fn one_tile_per_block() {
    for dtype in [DType::F32, DType::Bf16] {
        for (batch, m, n, k) in [
            (1, 37, 24, 160),
            (1, 5, 1, 32),
            (2, 50, 7, 64),
            (1, 16, 32, 1056),
            (3, 21, 24, 256),
        ] {
            for sumsq in [true, false] {
                let mut cs = Case::new(dtype, batch, m, n, k, 16);
                cs.sumsq = sumsq;
                check(&cs);
            }
        }
        let mut cs = Case::new(dtype, 2, 33, 24, 96, 16);
        cs.accumulate = true;
        cs.sumsq = true;
        check(&cs);
    }
}

/// Operands that are views: rows of `a` padded past `K` and `a` at an
/// offset (both 16-byte aligned), and a result stored column-major.
#[test]
fn padded_rows_offsets_and_a_transposed_result() {
    for dtype in [DType::F32, DType::Bf16] {
        let mut cs = Case::new(dtype, 2, 45, 24, 128, 16);
        cs.pad = 16;
        cs.sumsq = true;
        check(&cs);
        let mut cs = Case::new(dtype, 1, 19, 9, 64, 16);
        cs.transposed_c = true;
        cs.accumulate = true;
        check(&cs);
    }
}

/// Two and four 16-row tiles per block, which the rule picks where they
/// still give 264 blocks: here through the batch (132 products of 40 and
/// of 70 rows — no multiple of 32 or 64) or through the rows of a single
/// product (8421 = 263 · 32 + 5). Each case is 264 blocks, slow in the
/// emulator, so each flavour gets one of each.
#[test]
fn two_and_four_tiles_per_block() {
    let mut cs = Case::new(DType::Bf16, 132, 40, 24, 64, 32);
    cs.sumsq = true;
    check(&cs);
    let mut cs = Case::new(DType::Bf16, 132, 70, 13, 32, 64);
    cs.accumulate = true;
    check(&cs);
    let mut cs = Case::new(DType::F32, 1, 8421, 24, 32, 32);
    cs.sumsq = true;
    check(&cs);
    let mut cs = Case::new(DType::F32, 132, 70, 24, 64, 64);
    cs.sumsq = true;
    cs.accumulate = true;
    check(&cs);
}

/// Products the tall-and-skinny kernels do not take run on the general
/// one: more than 32 columns, `K` no multiple of 32, `f32` operands read
/// with a misaligned offset.
#[test]
fn other_shapes_take_the_general_product() {
    for (dtype, n, k, pad) in [
        (DType::F32, 33, 64, 0),
        (DType::F32, 24, 40, 0),
        (DType::F32, 24, 64, 2),
        (DType::Bf16, 24, 64, 4),
    ] {
        let mut cs = Case::new(dtype, 1, 20, n, k, 16);
        cs.pad = pad;
        let p = program(&cs);
        let l = launch_plan(&p, &CodegenOptions::default()).unwrap();
        let l = l.last().unwrap();
        assert!(!l.tensor_cores, "{cs:?}");
        assert_eq!(
            l.grid,
            [n.div_ceil(16) as u32, 20u32.div_ceil(16), 1],
            "{cs:?}: the general kernel's 16 × 16 tiles"
        );
    }
}
