//! Scalar runs on warp 0: in a block-per-iteration launch the costly
//! stretches of scalar statements (the mHC gates and the Sinkhorn
//! iterations) execute on warp 0 alone, and what the rest of the block
//! reads afterwards comes through shared-memory slots after a barrier.
//! Checked on the LLVM IR of mhc-sublayer's fused per-token kernel, and on
//! a hand-written kernel run in the host emulator: a run inside a serial
//! loop hands a variable and scratch arrays to a distributed loop — block
//! per iteration and single block, the loop unrolled or not, with and
//! without a block reduction between trips — computing values exact in
//! f32, so the results must equal the kernel interpreter's bit for bit.
#![cfg(feature = "gpu")]

mod common;

use common::{add, buffer, by_place, f32c, function, mul};

use std::collections::BTreeMap;

use birkhoff_dsl::zoo::{Flag, ModelArgs, build_model, model_info};
use birkhoff_gpu::codegen::{Mode, launch_plan};
use birkhoff_gpu::{CodegenOptions, emit_llvm, emulate};
use birkhoff_ir::kernel::{
    BufferId, BufferKind, Expr, Index, Kernel, LoopKind, Program, ScalarType, Stmt, run_program,
};
use birkhoff_ir::{DType, Precision, Tensor, TensorType};
use birkhoff_lower::{GemmSupport, LowerOptions, lower};

fn program(model: &str, dtype: DType, t: usize, c: usize) -> Program {
    let info = model_info(model).expect("a zoo model");
    let takes = |f: Flag| info.flags.contains(&f);
    let args = ModelArgs {
        tokens: takes(Flag::Tokens).then_some(t),
        streams: takes(Flag::Streams).then_some(4),
        hidden: takes(Flag::Hidden).then_some(c),
        dtype: Some(dtype),
        ..ModelArgs::default()
    };
    let m = build_model(model, &args).unwrap_or_else(|e| panic!("{model}: {e}"));
    let g = birkhoff_opt::optimize(&m.graph, |_| false).unwrap().graph;
    let lo = LowerOptions {
        gemm: GemmSupport {
            bf16_operands: true,
            row_sumsq: true,
            ..GemmSupport::default()
        },
        ..LowerOptions::default()
    };
    lower(&g, &lo).unwrap_or_else(|e| panic!("{model}: {e}"))
}

#[test]
fn the_fused_mhc_kernels_sinkhorn_runs_on_warp_0() {
    for dtype in [DType::Bf16, DType::F32] {
        let p = program("mhc-sublayer", dtype, 16, 1024);
        let opts = CodegenOptions::default();
        let launches = launch_plan(&p, &opts).unwrap();
        let token = &launches[1];
        assert_eq!(token.mode, Mode::Block, "{token:?}");
        assert!(token.block > 32, "{token:?}");
        let ir = emit_llvm(&p, &opts).unwrap();
        let f = function(&ir, &token.entry);
        let (inside, outside) = by_place(f);
        // Every division of the kernel — RMSNorm, the gates' sigmoids, the
        // Sinkhorn's row and column normalizations of a 4 x 4 matrix (the
        // first round, then a loop of 19 more) — is on warp 0.
        let divs = inside.matches(" = fdiv ").count();
        assert!(divs >= 2 * 2 * 16, "{dtype}: {divs} divisions on warp 0");
        assert!(inside.contains("\nloop"), "{dtype}: the rounds' loop");
        assert_eq!(outside.matches(" = fdiv ").count(), 0, "{dtype}: {f}");
        // The branch tests the thread index against one warp.
        assert!(
            f.contains("icmp ult i32 %") && f.contains(", 32\n  br i1 "),
            "{dtype}: no warp-0 branch"
        );
        // No barrier inside a run; the hand-over's barrier after it.
        assert!(!inside.contains("barrier0"), "{dtype}");
        assert!(outside.contains("@llvm.nvvm.barrier0()"), "{dtype}");
        // The four pre-mix gates the row sweep reads are handed over
        // through shared memory.
        let slots = format!(
            "@{}.pub0 = internal addrspace(3) global [4 x i64] undef",
            token.entry
        );
        assert!(ir.contains(&slots), "{dtype}: no {slots}");
        assert!(outside.contains("load float, ptr addrspace(3)"), "{dtype}");
        // The row sweep runs on every thread: its 16-byte accesses are
        // outside the runs.
        assert!(outside.contains("<4 x "), "{dtype}");
    }
}

#[test]
fn runs_of_loads_stay_on_every_thread() {
    // mhc-post loads its token's mixes and sweeps the row: nothing to
    // compute, so no warp-0 run and no barrier.
    let p = program("mhc-post", DType::Bf16, 8, 256);
    let opts = CodegenOptions::default();
    let launches = launch_plan(&p, &opts).unwrap();
    assert_eq!(launches.len(), 1);
    assert_eq!(launches[0].barriers, 0, "{:?}", launches[0]);
    let ir = emit_llvm(&p, &opts).unwrap();
    assert!(!ir.contains("warp.run"), "{ir}");
}

/// How [`handover_program`] is laid out.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// Tokens (one block each), or `None`: one token, no parallel loop (a
    /// single-block launch).
    tokens: Option<usize>,
    /// Trips of the serial loop around the run.
    trips: usize,
    /// Row length.
    c: usize,
    /// The run also writes `m[k]`, which the sweep reads: the serial loop
    /// indexes a scratch array, so it is unrolled and the run emitted once
    /// per trip.
    unrolled: bool,
    /// The sweep also sums the row (a block reduction, whose barriers
    /// separate one trip's reads of the slots from the next trip's writes;
    /// without it the hand-over needs a barrier of its own there).
    sum: bool,
}

/// `parallel t in 0..T { acc = 0; for k in 0..K { s = x[t, k]; s = s·3 + 1
/// (repeated); l[0] = s + 2; l[1] = s·2; (m[k] = s - 1;) vector j in 0..C {
/// y[t, k, j] = x[t, j]·l[0] + l[1] + s (+ m[k]); (acc += x[t, j]) } };
/// z[t] = acc }`: the run in the serial loop is costly, so it runs on warp
/// 0 and hands `s` and `l` (and `m`) to the distributed loop, once per
/// trip of the loop.
fn handover_program(shape: Shape) -> Program {
    let Shape {
        tokens,
        trips,
        c,
        unrolled,
        sum,
    } = shape;
    let t = tokens.unwrap_or(1);
    let (x, y, z) = (BufferId(0), BufferId(1), BufferId(2));
    let mut k = Kernel::new("k0_handover");
    let it = k.var(ScalarType::Index);
    let ik = k.var(ScalarType::Index);
    let ij = k.var(ScalarType::Index);
    let s = k.var(ScalarType::F32);
    let acc = k.var(ScalarType::F32);
    let l = k.local(ScalarType::F32, 2);
    let m = k.local(ScalarType::F32, trips);
    // `stride·t + col`, or `col` without a parallel loop.
    let at = |stride: usize, col: Index| {
        let mut ix = col;
        if tokens.is_some() {
            ix.terms.push((it, stride as i64));
        }
        ix
    };
    let mut run = vec![Stmt::Set {
        var: s,
        value: Expr::load(x, at(c, Index::var(ik, 1))),
    }];
    for _ in 0..12 {
        run.push(Stmt::Set {
            var: s,
            value: add(mul(Expr::Var(s), f32c(3.0)), f32c(1.0)),
        });
        run.push(Stmt::Set {
            var: s,
            value: add(mul(Expr::Var(s), f32c(0.5)), f32c(-1.0)),
        });
    }
    let slot = |local, index| Expr::LocalLoad { local, index };
    run.push(Stmt::LocalStore {
        local: l,
        index: Index::constant(0),
        value: add(Expr::Var(s), f32c(2.0)),
    });
    run.push(Stmt::LocalStore {
        local: l,
        index: Index::constant(1),
        value: mul(Expr::Var(s), f32c(2.0)),
    });
    let mut value = add(
        add(
            mul(
                Expr::load(x, at(c, Index::var(ij, 1))),
                slot(l, Index::constant(0)),
            ),
            slot(l, Index::constant(1)),
        ),
        Expr::Var(s),
    );
    if unrolled {
        run.push(Stmt::LocalStore {
            local: m,
            index: Index::var(ik, 1),
            value: add(Expr::Var(s), f32c(-1.0)),
        });
        value = add(value, slot(m, Index::var(ik, 1)));
    }
    let mut out = at(trips * c, Index::var(ik, c as i64));
    out.terms.push((ij, 1));
    let mut sweep = vec![Stmt::Store {
        buf: y,
        index: out,
        value,
    }];
    if sum {
        sweep.push(Stmt::Set {
            var: acc,
            value: add(Expr::Var(acc), Expr::load(x, at(c, Index::var(ij, 1)))),
        });
    }
    run.push(Stmt::Loop {
        var: ij,
        extent: c,
        kind: LoopKind::Vector,
        body: sweep,
    });
    let body = vec![
        Stmt::Set {
            var: acc,
            value: f32c(0.0),
        },
        Stmt::Loop {
            var: ik,
            extent: trips,
            kind: LoopKind::Serial,
            body: run,
        },
        Stmt::Store {
            buf: z,
            index: at(1, Index::constant(0)),
            value: Expr::Var(acc),
        },
    ];
    k.body = match tokens {
        Some(t) => vec![Stmt::Loop {
            var: it,
            extent: t,
            kind: LoopKind::Parallel,
            body,
        }],
        None => body,
    };
    Program {
        name: "handover".into(),
        buffers: vec![
            buffer("x", &[t, c], BufferKind::Input),
            buffer("y", &[t, trips, c], BufferKind::Output),
            buffer("z", &[t], BufferKind::Output),
        ],
        inputs: vec![("x".into(), x)],
        outputs: vec![("y".into(), y), ("z".into(), z)],
        kernels: vec![k],
        arena_bytes: 0,
    }
}

#[test]
fn a_run_in_a_loop_hands_its_values_to_the_block() {
    let c = 512;
    for (tokens, unrolled, sum) in [
        (Some(3), false, true),
        (Some(3), true, true),
        (None, false, true),
        (None, true, true),
        (Some(3), false, false),
        (Some(3), true, false),
    ] {
        let shape = Shape {
            tokens,
            trips: 3,
            c,
            unrolled,
            sum,
        };
        let what = format!("{shape:?}");
        let p = handover_program(shape);
        let opts = CodegenOptions::default();
        let launches = launch_plan(&p, &opts).unwrap();
        assert_eq!(launches.len(), 1);
        let l = &launches[0];
        let mode = if tokens.is_some() {
            Mode::Block
        } else {
            Mode::Single
        };
        assert_eq!(l.mode, mode, "{what}: {l:?}");
        // 128 chunks of 4: four warps.
        assert_eq!(l.block, 128, "{what}: {l:?}");
        let ir = emit_llvm(&p, &opts).unwrap();
        // `s`, both elements of `l` (and the three of `m`).
        let n = if unrolled { 6 } else { 3 };
        let slots = format!("@k0_handover.pub0 = internal addrspace(3) global [{n} x i64] undef");
        assert!(ir.contains(&slots), "{what}: {ir}");
        let f = function(&ir, "k0_handover");
        let (inside, _) = by_place(f);
        assert!(
            inside.contains("fmul float"),
            "{what}: the chain is on warp 0"
        );
        let runs = f.lines().filter(|l| l.starts_with("warp.run.end")).count();
        assert_eq!(runs, if unrolled { 3 } else { 1 }, "{what}");
        if !sum {
            // A hand-over barrier per run; and before each run met
            // again, one so that its slots are not overwritten while
            // the previous trip may still read them.
            let barriers = if unrolled { 3 + 2 } else { 1 + 1 };
            assert_eq!(l.barriers, barriers, "{what}: {l:?}");
        }
        // Integers in [-4, 4] and a chain exact in f32: the sums are
        // exact in any order, so the emulator must match the
        // interpreter bit for bit.
        let t = tokens.unwrap_or(1);
        let xs: Vec<f64> = (0..t * c).map(|i| ((i * 7 + 3) % 9) as f64 - 4.0).collect();
        let mut inputs = BTreeMap::new();
        inputs.insert(
            "x".to_string(),
            Tensor::from_f64(TensorType::new(DType::F32, [t, c]), &xs).unwrap(),
        );
        let want = run_program(&p, &inputs, Precision::F32).unwrap();
        let got = emulate(&p, &opts, &inputs).unwrap();
        assert_eq!(want.len(), got.len());
        for ((wn, w), (gn, g)) in want.iter().zip(&got) {
            assert_eq!(wn, gn);
            assert_eq!(w.to_f64_vec(), g.to_f64_vec(), "{what}: {wn}");
        }
    }
}
