//! The short-and-wide matrix product (`d_fn = gᵀ·x` of the mHC pre-mix
//! backward: few rows, many columns, a long inner dimension): the launch
//! plan takes it for such products, and the host emulator computes what
//! the kernel interpreter computes, bit for bit — small integers, so every
//! sum is exact in `f32` — with `f32` and `bf16` operands and results,
//! several batches, a partial last block of columns and an odd `K`, in
//! blocks of 64 threads and in the narrow blocks of 32 that small grids
//! take.
#![cfg(feature = "gpu")]

mod common;

use std::collections::BTreeMap;

use birkhoff_gpu::CodegenOptions;
use birkhoff_gpu::codegen::{Mode, launch_plan};
use birkhoff_ir::kernel::{BufferDecl, BufferId, BufferKind, Gemm, Kernel, Matrix, Program, Stmt};
use birkhoff_ir::{DType, Tensor, TensorType};

/// `c[batch][m × n] = g[batch·k × m]ᵀ · x[batch·k × n]`, `x` and `c` in
/// `xd` and `cd`.
fn product(m: usize, n: usize, k: usize, batch: usize, xd: DType, cd: DType) -> Program {
    let buf = |name: &str, d: DType, shape: &[usize], kind| BufferDecl {
        name: name.into(),
        ty: TensorType::new(d, shape),
        kind,
    };
    let mat = |b: u32, row_stride, col_stride, batch_stride| Matrix {
        buf: BufferId(b),
        offset: 0,
        row_stride,
        col_stride,
        batch_stride,
    };
    let mut kernel = Kernel::new("k0_wide");
    kernel.body = vec![Stmt::Gemm(Gemm {
        m,
        n,
        k,
        batch,
        a: mat(0, 1, m, k * m),
        b: mat(1, n, 1, k * n),
        c: mat(2, n, 1, m * n),
        accumulate: false,
        row_sumsq: None,
    })];
    Program {
        name: "wide".into(),
        buffers: vec![
            buf("g", DType::F32, &[batch * k, m], BufferKind::Input),
            buf("x", xd, &[batch * k, n], BufferKind::Input),
            buf("c", cd, &[batch, m, n], BufferKind::Output),
        ],
        inputs: vec![("g".into(), BufferId(0)), ("x".into(), BufferId(1))],
        outputs: vec![("c".into(), BufferId(2))],
        kernels: vec![kernel],
        arena_bytes: 0,
    }
}

#[test]
fn short_wide_products_match_the_interpreter_bit_for_bit() {
    let cases = [
        (24, 1028, 37, 3, DType::F32, DType::F32),
        (24, 544, 260, 2, DType::Bf16, DType::Bf16),
        (8, 256, 5, 1, DType::Bf16, DType::F32),
        (32, 300, 64, 1, DType::F32, DType::Bf16),
        // 132 blocks of 256 columns in each of 2 batches: enough to fill
        // the device, so blocks of 64 threads.
        (4, 132 * 256, 3, 2, DType::F32, DType::F32),
    ];
    for (m, n, k, batch, xd, cd) in cases {
        let what = format!("{m} × {n}, K={k}, batch {batch}, x {xd}, c {cd}");
        let p = product(m, n, k, batch, xd, cd);
        let opts = CodegenOptions::default();
        let launches = launch_plan(&p, &opts).unwrap();
        assert_eq!(launches.len(), 1, "{what}");
        let l = &launches[0];
        assert_eq!(l.mode, Mode::Gemm, "{what}");
        // 64 threads of 4 columns each, 256 columns a block, where that
        // gives at least 264 blocks (two for each of 132 SMs); else 32
        // threads and 128 columns, twice the blocks.
        let threads = if n.div_ceil(256) * batch >= 264 {
            64
        } else {
            32
        };
        assert_eq!(l.block, threads, "{what}: the short-and-wide kernel");
        let cols = 4 * threads as usize;
        assert_eq!(l.grid, [n.div_ceil(cols) as u32, batch as u32, 1], "{what}");
        // Integers in [-3, 3] and [-2, 2]: every product and sum is exact
        // in f32 (at most 260 · 6 in magnitude), so only the bf16 store
        // rounds, the same way in both.
        let g: Vec<f64> = (0..batch * k * m)
            .map(|i| ((i * 5 + 1) % 7) as f64 - 3.0)
            .collect();
        let x: Vec<f64> = (0..batch * k * n)
            .map(|i| ((i * 3 + 2) % 5) as f64 - 2.0)
            .collect();
        let inputs = BTreeMap::from([
            (
                "g".to_string(),
                Tensor::from_f64(TensorType::new(DType::F32, [batch * k, m]), &g).unwrap(),
            ),
            (
                "x".to_string(),
                Tensor::from_f64(TensorType::new(xd, [batch * k, n]), &x).unwrap(),
            ),
        ]);
        common::emulates_bit_for_bit(&p, &inputs, &what);
    }
}

#[test]
fn short_wide_products_assemble_without_spills() {
    let Some(ptxas) = common::ptxas_or_note("spills") else {
        return;
    };
    // 32 rows: the most accumulators (128) a thread holds.
    for (xd, cd) in [(DType::F32, DType::F32), (DType::Bf16, DType::Bf16)] {
        let p = product(32, 16384, 512, 16, xd, cd);
        let opts = CodegenOptions::default();
        let m = birkhoff_gpu::compile_module(&p, &opts).unwrap();
        let stats = birkhoff_gpu::codegen::audit::ptxas_stats(&ptxas, &m.ptx, &opts.arch).unwrap();
        let s = &stats["k0_wide"];
        assert_eq!(
            (s.spill_stores, s.spill_loads),
            (0, 0),
            "x {xd}, c {cd}: {} registers",
            s.registers
        );
    }
}
