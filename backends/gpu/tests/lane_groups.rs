//! Lane groups: a per-iteration chain of small vector loops (a Sinkhorn
//! projection's `n`-wide normalizations) runs on a group of lanes, each
//! vector loop spread over them (or a serial loop over rows or columns
//! split with it), accumulators combined by a butterfly within the group.
//! Checked in the host emulator against the kernel interpreter: the
//! Sinkhorn kernels on sixteen lanes a matrix (few matrices) and four
//! (many), on counts that leave a partial last group (within a few units
//! in the last place: the group reassociates its sums), and hand-written
//! kernels bit for bit (their values are exact in f32) — one whose
//! scratch array is read outside its lanes (so it must be replicated)
//! and one whose lane 0 stores what other lanes then read (so a warp sync
//! must order them).
#![cfg(feature = "gpu")]

mod common;

use common::{add, buffer, emulates_bit_for_bit, f32c, function, mul, vector};

use std::collections::BTreeMap;

use birkhoff_gpu::codegen::{Mode, launch_plan};
use birkhoff_gpu::{CodegenOptions, emit_llvm, emulate};
use birkhoff_ir::kernel::{
    BufferKind, Expr, Index, Kernel, LocalId, LoopKind, Program, ScalarType, Stmt, VarId,
    run_program,
};
use birkhoff_ir::{DType, Precision, Tensor, TensorType};
use birkhoff_lower::{LowerOptions, PreMixProjection, lower};

fn load(buf: u32, index: Index) -> Expr {
    Expr::Load {
        buf: birkhoff_ir::kernel::BufferId(buf),
        index,
    }
}

fn local(l: LocalId, index: Index) -> Expr {
    Expr::LocalLoad { local: l, index }
}

fn store(buf: u32, index: Index, value: Expr) -> Stmt {
    Stmt::Store {
        buf: birkhoff_ir::kernel::BufferId(buf),
        index,
        value,
    }
}

/// Small integers, exact in f32 through every product the kernels take.
fn ints(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i * 7 + 3) % 9) as f64 - 4.0).collect()
}

fn input(name: &str, shape: &[usize], xs: &[f64]) -> BTreeMap<String, Tensor> {
    let mut m = BTreeMap::new();
    m.insert(
        name.to_string(),
        Tensor::from_f64(TensorType::new(DType::F32, shape), xs).unwrap(),
    );
    m
}

/// `parallel i < t { l[j] = 2·x[i,j] (vector); a = l[3] + 1;
/// s = Σ_j x[i,j]·a·x[i,j]; z[i] = s; y[i,j] = l[5]·a + x[i,j]² }`:
/// `l` is read at constant indices, outside any vector loop and in one,
/// so every lane needs all of it. (Read at `l[j]` in a spread loop, a lane
/// would index it by its own position, which only local memory can do:
/// such a plan is refused, and the kernel runs a thread per iteration.)
fn replicated_program(t: usize) -> Program {
    let mut k = Kernel::new("k0_replicated");
    let (i, j1, j2, j3) = (
        k.var(ScalarType::Index),
        k.var(ScalarType::Index),
        k.var(ScalarType::Index),
        k.var(ScalarType::Index),
    );
    let (a, s) = (k.var(ScalarType::F32), k.var(ScalarType::F32));
    let l = k.local(ScalarType::F32, 8);
    let x = |j: VarId| load(0, Index::var(i, 8).plus(j, 1));
    let body = vec![
        vector(
            j1,
            8,
            vec![Stmt::LocalStore {
                local: l,
                index: Index::var(j1, 1),
                value: mul(x(j1), f32c(2.0)),
            }],
        ),
        Stmt::Set {
            var: a,
            value: add(local(l, Index::constant(3)), f32c(1.0)),
        },
        Stmt::Set {
            var: s,
            value: f32c(0.0),
        },
        vector(
            j2,
            8,
            vec![Stmt::Set {
                var: s,
                value: add(Expr::Var(s), mul(mul(x(j2), Expr::Var(a)), x(j2))),
            }],
        ),
        store(1, Index::var(i, 1), Expr::Var(s)),
        vector(
            j3,
            8,
            vec![store(
                2,
                Index::var(i, 8).plus(j3, 1),
                add(
                    mul(local(l, Index::constant(5)), Expr::Var(a)),
                    mul(x(j3), x(j3)),
                ),
            )],
        ),
    ];
    k.body = vec![Stmt::Loop {
        var: i,
        extent: t,
        kind: LoopKind::Parallel,
        body,
    }];
    Program {
        name: "replicated".into(),
        buffers: vec![
            buffer("x", &[t, 8], BufferKind::Input),
            buffer("z", &[t], BufferKind::Output),
            buffer("y", &[t, 8], BufferKind::Output),
        ],
        inputs: vec![("x".into(), birkhoff_ir::kernel::BufferId(0))],
        outputs: vec![
            ("z".into(), birkhoff_ir::kernel::BufferId(1)),
            ("y".into(), birkhoff_ir::kernel::BufferId(2)),
        ],
        kernels: vec![k],
        arena_bytes: 0,
    }
}

/// `parallel i < t { v = x[i,0] + x[i,1]; tmp[i,c] = v·(c − 3) for each
/// c (scalar stores: lane 0); y[i,j] = (tmp[i,j]·x[i,j] + x[i,j])·x[i,j]
/// + tmp[i,j] (vector) }`: lane `j mod 8` reads what lane 0 stored.
fn exchange_program(t: usize) -> Program {
    let mut k = Kernel::new("k0_exchange");
    let (i, j) = (k.var(ScalarType::Index), k.var(ScalarType::Index));
    let v = k.var(ScalarType::F32);
    let x0 = |c: i64| load(0, Index::var(i, 8).shifted(c));
    let mut body = vec![Stmt::Set {
        var: v,
        value: add(x0(0), x0(1)),
    }];
    for c in 0..8 {
        body.push(store(
            1,
            Index::var(i, 8).shifted(c),
            mul(Expr::Var(v), f32c(c as f64 - 3.0)),
        ));
    }
    let xj = || load(0, Index::var(i, 8).plus(j, 1));
    let tj = || load(1, Index::var(i, 8).plus(j, 1));
    body.push(vector(
        j,
        8,
        vec![store(
            2,
            Index::var(i, 8).plus(j, 1),
            add(mul(add(mul(tj(), xj()), xj()), xj()), tj()),
        )],
    ));
    k.body = vec![Stmt::Loop {
        var: i,
        extent: t,
        kind: LoopKind::Parallel,
        body,
    }];
    Program {
        name: "exchange".into(),
        buffers: vec![
            buffer("x", &[t, 8], BufferKind::Input),
            buffer("tmp", &[t, 8], BufferKind::Output),
            buffer("y", &[t, 8], BufferKind::Output),
        ],
        inputs: vec![("x".into(), birkhoff_ir::kernel::BufferId(0))],
        outputs: vec![
            ("tmp".into(), birkhoff_ir::kernel::BufferId(1)),
            ("y".into(), birkhoff_ir::kernel::BufferId(2)),
        ],
        kernels: vec![k],
        arena_bytes: 0,
    }
}

#[test]
fn a_scratch_array_read_outside_its_lanes_is_replicated() {
    for t in [1, 5, 70] {
        let p = replicated_program(t);
        let launches = launch_plan(&p, &CodegenOptions::default()).unwrap();
        assert_eq!(launches.len(), 1);
        assert_eq!(launches[0].mode, Mode::Lanes(8), "{:?}", launches[0]);
        emulates_bit_for_bit(&p, &input("x", &[t, 8], &ints(t * 8)), &format!("t={t}"));
    }
}

#[test]
fn what_lane_0_stores_reaches_the_other_lanes_after_a_warp_sync() {
    for t in [3, 70] {
        let p = exchange_program(t);
        let opts = CodegenOptions::default();
        let launches = launch_plan(&p, &opts).unwrap();
        assert_eq!(launches[0].mode, Mode::Lanes(8), "{:?}", launches[0]);
        let ir = emit_llvm(&p, &opts).unwrap();
        let f = function(&ir, &launches[0].entry);
        assert!(f.contains("bar.warp.sync"), "t={t}: no warp sync");
        emulates_bit_for_bit(&p, &input("x", &[t, 8], &ints(t * 8)), &format!("t={t}"));
    }
}

/// The Sinkhorn projection of `[t, 4, 4]` logits, 20 rounds, in `dtype`,
/// lowered for the GPU.
fn sinkhorn(dtype: DType, variant: &str, t: usize) -> Program {
    let d = dtype;
    let text = format!(
        "graph @g(%x: {d}[{t},4,4]) -> (y: {d}[{t},4,4]) {{
  %1 = sinkhorn %x, variant={variant}, iters=20, eps=1e-6 : {d}[{t},4,4]
  return %1
}}"
    );
    let g = birkhoff_ir::parse_graph(&text).expect("the graph parses");
    lower(&g, &LowerOptions::gpu(PreMixProjection::default())).unwrap()
}

/// Few matrices: a lane per element (16), the row and column sums each a
/// butterfly over four lanes. Many: four lanes per matrix, a column each,
/// the column sums in order on their lane (the chain is then no longer
/// what limits the launch, and four lanes issue fewer instructions).
#[test]
fn sinkhorn_runs_sixteen_or_four_lanes_a_matrix_on_ragged_counts() {
    let cases = [
        (DType::F32, 1, 16),
        (DType::F32, 37, 16),
        (DType::F32, 300, 16),
        (DType::F64, 37, 16),
        (DType::F32, 8191, 4),
    ];
    for (dtype, t, lanes) in cases {
        // The big case (slow in the emulator) in one variant.
        let variants: &[&str] = if t > 1000 {
            &["tilekernels"]
        } else {
            &["paper", "tilekernels"]
        };
        for variant in variants {
            {
                let what = format!("{dtype} {variant} t={t}");
                let p = sinkhorn(dtype, variant, t);
                let opts = CodegenOptions::default();
                let launches = launch_plan(&p, &opts).unwrap();
                assert_eq!(launches.len(), 1, "{what}");
                assert_eq!(launches[0].mode, Mode::Lanes(lanes), "{what}");
                let xs: Vec<f64> = (0..t * 16)
                    .map(|i| ((i * 37 + 11) % 61) as f64 / 10.0 - 3.0)
                    .collect();
                let mut inputs = BTreeMap::new();
                inputs.insert(
                    "x".to_string(),
                    Tensor::from_f64(TensorType::new(dtype, [t, 4, 4]), &xs).unwrap(),
                );
                let precision = if dtype == DType::F64 {
                    Precision::F64
                } else {
                    Precision::F32
                };
                let want = run_program(&p, &inputs, precision).unwrap();
                let got = emulate(&p, &opts, &inputs).unwrap();
                let (w, g) = (want[0].1.to_f64_vec(), got[0].1.to_f64_vec());
                // Entries lie in [0, 1]; a reassociated 4-term sum moves
                // a normalization by a unit or two in the last place.
                let tol = if dtype == DType::F64 { 1e-13 } else { 2e-6 };
                for (n, (a, b)) in g.iter().zip(&w).enumerate() {
                    assert!((a - b).abs() <= tol, "{what}: y[{n}] is {a}, want {b}");
                }
            }
        }
    }
}

/// The Sinkhorn backward of `[t, 4, 4]` logits, `iters` rounds, f32,
/// lowered for the GPU (lines divided through reciprocals).
fn sinkhorn_grad(variant: &str, t: usize, iters: usize) -> Program {
    let text = format!(
        "graph @g(%x: f32[{t},4,4], %dy: f32[{t},4,4]) -> (dx: f32[{t},4,4]) {{
  %2 = sinkhorn_grad %x, %dy, variant={variant}, iters={iters}, eps=1e-6 : f32[{t},4,4]
  return %2
}}"
    );
    let g = birkhoff_ir::parse_graph(&text).expect("the graph parses");
    lower(&g, &LowerOptions::gpu(PreMixProjection::default())).unwrap()
}

/// Many matrices: the backward runs four lanes a matrix, a column each,
/// its row loops transposed — lane `i` runs row `i`'s scalars, its row
/// sums reduce-scattered to it and its reciprocal shuffled to the other
/// lanes (`shfl.sync.idx`). Within a relative 1e-5 of the interpreter's
/// f32 run on the largest gradient (reassociated sums and reciprocals
/// move each normalization by a unit or two in the last place). The
/// slowest test here (minutes in the emulator): fewer matrices or fewer
/// than 18 rounds take sixteen lanes a matrix.
#[test]
fn sinkhorn_grad_runs_rows_transposed_on_four_lanes() {
    let t = 4095;
    let p = sinkhorn_grad("tilekernels", t, 20);
    let opts = CodegenOptions::default();
    let launches = launch_plan(&p, &opts).unwrap();
    assert_eq!(launches.len(), 1);
    assert_eq!(launches[0].mode, Mode::Lanes(4));
    let ir = emit_llvm(&p, &opts).unwrap();
    assert!(
        ir.contains("llvm.nvvm.shfl.sync.idx"),
        "no row loop ran transposed"
    );
    let xs: Vec<f64> = (0..t * 16)
        .map(|i| ((i * 37 + 11) % 61) as f64 / 10.0 - 3.0)
        .collect();
    let dys: Vec<f64> = (0..t * 16)
        .map(|i| ((i * 53 + 7) % 41) as f64 / 20.0 - 1.0)
        .collect();
    let ty = TensorType::new(DType::F32, [t, 4, 4]);
    let mut inputs = BTreeMap::new();
    inputs.insert("x".to_string(), Tensor::from_f64(ty.clone(), &xs).unwrap());
    inputs.insert("dy".to_string(), Tensor::from_f64(ty, &dys).unwrap());
    let want = run_program(&p, &inputs, Precision::F64).unwrap();
    let got = emulate(&p, &opts, &inputs).unwrap();
    let (w, g) = (want[0].1.to_f64_vec(), got[0].1.to_f64_vec());
    let scale = w.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let worst = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f64, f64::max);
    println!("sinkhorn_grad t={t}: largest |dx| {scale:.3e}, worst error {worst:.3e}");
    assert!(scale > 0.1, "the test's gradients are too small to check");
    assert!(
        worst <= 1e-5 * scale,
        "worst error {worst} over 1e-5 of {scale}"
    );
}
