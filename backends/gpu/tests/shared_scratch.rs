//! Shared copies: in uniform code (block per iteration, single block) a
//! per-thread scratch array too big for registers lives in shared memory,
//! one copy per block, instead of being unrolled into registers that
//! spill. Checked on the fused per-token kernel of `mhc_pre_grad`, whose
//! Sinkhorn backward keeps every state (640 values for four streams and
//! 20 rounds) — in its LLVM IR and, where `PTXAS` names a `ptxas`, in
//! what `ptxas -v` reports at a production width — and on a hand-written
//! kernel run in the host emulator: warp-0 runs that fill a copy, update
//! it in place (loops unrolled and not), a distributed loop and the rest
//! of the block reading it, the block writing it and warp 0 writing it
//! again — block per iteration and single block, one warp and several —
//! computing values exact in f32, so the results must equal the kernel
//! interpreter's bit for bit.
#![cfg(feature = "gpu")]

mod common;

use common::{add, buffer, by_place, emulates_bit_for_bit, f32c, function, mul, ptxas_or_note};

use std::collections::BTreeMap;

use birkhoff_gpu::codegen::audit::ptxas_stats;
use birkhoff_gpu::codegen::{Mode, launch_plan};
use birkhoff_gpu::{CodegenOptions, compile_module, emit_llvm};
use birkhoff_ir::kernel::{
    BufferId, BufferKind, Expr, Index, Kernel, LocalId, LoopKind, Program, ScalarType, Stmt, VarId,
};
use birkhoff_ir::{DType, Tensor, TensorType};
use birkhoff_lower::{LowerOptions, PreMixProjection, lower};

/// `mhc_pre_grad` with four streams, the TileKernels Sinkhorn and 20
/// rounds, fused and lowered as for the GPU but with its per-token
/// kernels fused into one (`scalar_kernels_apart` off: the GPU's default
/// runs the Sinkhorn backward as a thread per token instead, checked
/// below), so the Sinkhorn backward runs on warp 0 of a block per token.
fn pre_grad(d: DType, t: usize, c: usize) -> Program {
    let n = 4;
    let m = n * (n + 2);
    let k = n * c;
    let text = format!(
        "graph @pre_grad(%x: {d}[{t},{n},{c}], %fn: {d}[{m},{k}], %scale: {d}[3], %base: {d}[{m}], %dl: {d}[{t},{c}], %dp: {d}[{t},{n}], %dc: {d}[{t},{n},{n}]) -> (d_x: {d}[{t},{n},{c}], d_fn: {d}[{m},{k}], d_scale: {d}[3], d_base: {d}[{m}]) {{
  %7 = mhc_pre_grad %x, %fn, %scale, %base, %dl, %dp, %dc, norm_eps=1e-6, pre_eps=1e-6, post_mult=2.0, variant=tilekernels, iters=20, eps=1e-6 : ({d}[{t},{n},{c}], {d}[{m},{k}], {d}[3], {d}[{m}])
  %8 = get %7, index=0 : {d}[{t},{n},{c}]
  %9 = get %7, index=1 : {d}[{m},{k}]
  %10 = get %7, index=2 : {d}[3]
  %11 = get %7, index=3 : {d}[{m}]
  return %8, %9, %10, %11
}}"
    );
    let g = birkhoff_ir::parse_graph(&text).expect("the graph parses");
    let g = birkhoff_opt::optimize(&g, |_| false).unwrap().graph;
    let lo = LowerOptions {
        scalar_kernels_apart: false,
        ..LowerOptions::gpu(PreMixProjection::default())
    };
    lower(&g, &lo).unwrap()
}

/// The per-token kernel's launch entry and its Sinkhorn state history
/// (the one scratch array of 640 elements).
fn per_token(p: &Program) -> (String, LocalId) {
    let opts = CodegenOptions::default();
    let launches = launch_plan(p, &opts).unwrap();
    let l = launches
        .iter()
        .find(|l| l.kernel.contains("sinkhorn_grad"))
        .expect("a fused per-token kernel");
    assert_eq!(l.mode, Mode::Block, "{l:?}");
    assert!(l.block > 32, "{l:?}");
    let k = p.kernels.iter().find(|k| k.name == l.kernel).unwrap();
    let states = k
        .locals
        .iter()
        .position(|d| d.len == 640)
        .expect("the state history");
    (l.entry.clone(), LocalId(states as u32))
}

#[test]
fn the_sinkhorn_state_history_lives_in_shared_memory() {
    for dtype in [DType::F32, DType::Bf16] {
        let p = pre_grad(dtype, 5, 1024);
        let (entry, states) = per_token(&p);
        let ir = emit_llvm(&p, &CodegenOptions::default()).unwrap();
        // One copy per block, in shared memory...
        let copy = format!(
            "@{entry}.l{} = internal addrspace(3) global [640 x float] undef",
            states.0
        );
        assert!(ir.contains(&copy), "{dtype}: no {copy}");
        // ...not a per-thread array to unroll into registers.
        let f = function(&ir, &entry);
        assert!(!f.contains("alloca [640 x float]"), "{dtype}");
        // The Sinkhorn runs on warp 0, which waits for its own lanes
        // before it overwrites states it read (the last softmax).
        let (inside, outside) = by_place(f);
        assert!(
            inside.contains("@llvm.nvvm.bar.warp.sync(i32 -1)"),
            "{dtype}"
        );
        assert!(!outside.contains("bar.warp.sync"), "{dtype}");
        assert!(!inside.contains("barrier0"), "{dtype}");
        // The states are written by every lane, volatile (not forwarded
        // to the loads that read them back).
        assert!(inside.contains("store volatile float %"), "{dtype}");
    }
}

#[test]
fn the_per_token_kernel_does_not_spill_at_a_production_width() {
    let Some(ptxas) = ptxas_or_note("spills") else {
        return;
    };
    for dtype in [DType::F32, DType::Bf16] {
        // The kernel's code does not depend on the token count.
        let p = pre_grad(dtype, 8, 4096);
        let (entry, _) = per_token(&p);
        let opts = CodegenOptions::default();
        let m = compile_module(&p, &opts).unwrap();
        let stats = ptxas_stats(&ptxas, &m.ptx, &opts.arch).unwrap();
        let s = stats.get(&entry).expect("ptxas reports the entry");
        assert_eq!(
            (s.spill_stores, s.spill_loads),
            (0, 0),
            "{dtype}: {entry} spills ({} registers)",
            s.registers
        );
    }
}

/// How [`copies_program`] is laid out.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// Tokens (one block each), or `None`: one token, no parallel loop (a
    /// single-block launch).
    tokens: Option<usize>,
    /// The sweeps are vector loops spread over the block (else serial
    /// loops: with no spread loop a single block is one warp).
    spread: bool,
}

/// Length of the scratch array and of a row (above the register limit).
const L: usize = 256;

/// ```text
/// parallel t in 0..T {
///   for k in 0..L { h[k] = x[t, k]·3 + 1 }          // warp 0: fill,
///   for k in 0..L { h[k] = h[k]·0.5 + 2 }           // update in place,
///   for k in 0..8 { h[k+1] = h[k] + h[k+1] }        // unrolled
///   vector j in 0..L { y[t, j] = x[t, j]·h[j] }     // the block reads h
///   h[1] = h[0] + 1; z[t] = h[1]                    // every thread writes h
///   s = z[t]; for k in 0..L { h[k] = h[k]·2 + s }   // warp 0 writes it again
///   vector j in 0..L { w[t, j] = h[j] + x[t, j] }   // the block reads h
/// }
/// ```
fn copies_program(shape: Shape) -> Program {
    let Shape { tokens, spread } = shape;
    let t = tokens.unwrap_or(1);
    let (x, y, z, w) = (BufferId(0), BufferId(1), BufferId(2), BufferId(3));
    let mut k = Kernel::new("k0_copies");
    let it = k.var(ScalarType::Index);
    let s = k.var(ScalarType::F32);
    let h = k.local(ScalarType::F32, L);
    let mut index = || k.var(ScalarType::Index);
    let (k1, k2, k3, j1, k4, j2) = (index(), index(), index(), index(), index(), index());
    // `stride·t + col`, or `col` without a parallel loop.
    let at = |stride: usize, col: Index| {
        let mut ix = col;
        if tokens.is_some() {
            ix.terms.push((it, stride as i64));
        }
        ix
    };
    let hl = |ix: Index| Expr::LocalLoad {
        local: h,
        index: ix,
    };
    let hs = |ix: Index, value: Expr| Stmt::LocalStore {
        local: h,
        index: ix,
        value,
    };
    let serial = |var: VarId, extent: usize, body: Vec<Stmt>| Stmt::Loop {
        var,
        extent,
        kind: LoopKind::Serial,
        body,
    };
    let sweep = if spread {
        LoopKind::Vector
    } else {
        LoopKind::Serial
    };
    let body = vec![
        serial(
            k1,
            L,
            vec![hs(
                Index::var(k1, 1),
                add(
                    mul(Expr::load(x, at(L, Index::var(k1, 1))), f32c(3.0)),
                    f32c(1.0),
                ),
            )],
        ),
        serial(
            k2,
            L,
            vec![hs(
                Index::var(k2, 1),
                add(mul(hl(Index::var(k2, 1)), f32c(0.5)), f32c(2.0)),
            )],
        ),
        serial(
            k3,
            8,
            vec![hs(
                Index::var(k3, 1).shifted(1),
                add(hl(Index::var(k3, 1)), hl(Index::var(k3, 1).shifted(1))),
            )],
        ),
        Stmt::Loop {
            var: j1,
            extent: L,
            kind: sweep,
            body: vec![Stmt::Store {
                buf: y,
                index: at(L, Index::var(j1, 1)),
                value: mul(
                    Expr::load(x, at(L, Index::var(j1, 1))),
                    hl(Index::var(j1, 1)),
                ),
            }],
        },
        hs(Index::constant(1), add(hl(Index::constant(0)), f32c(1.0))),
        Stmt::Store {
            buf: z,
            index: at(1, Index::constant(0)),
            value: hl(Index::constant(1)),
        },
        Stmt::Set {
            var: s,
            value: Expr::load(z, at(1, Index::constant(0))),
        },
        serial(
            k4,
            L,
            vec![hs(
                Index::var(k4, 1),
                add(mul(hl(Index::var(k4, 1)), f32c(2.0)), Expr::Var(s)),
            )],
        ),
        Stmt::Loop {
            var: j2,
            extent: L,
            kind: sweep,
            body: vec![Stmt::Store {
                buf: w,
                index: at(L, Index::var(j2, 1)),
                value: add(
                    hl(Index::var(j2, 1)),
                    Expr::load(x, at(L, Index::var(j2, 1))),
                ),
            }],
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
        name: "copies".into(),
        buffers: vec![
            buffer("x", &[t, L], BufferKind::Input),
            buffer("y", &[t, L], BufferKind::Output),
            buffer("z", &[t], BufferKind::Output),
            buffer("w", &[t, L], BufferKind::Output),
        ],
        inputs: vec![("x".into(), x)],
        outputs: vec![("y".into(), y), ("z".into(), z), ("w".into(), w)],
        kernels: vec![k],
        arena_bytes: 0,
    }
}

#[test]
fn shared_copies_are_ordered_within_warp_0_and_across_the_block() {
    for (tokens, spread) in [(Some(3), true), (None, true), (None, false)] {
        let shape = Shape { tokens, spread };
        let what = format!("{shape:?}");
        let p = copies_program(shape);
        let opts = CodegenOptions::default();
        let launches = launch_plan(&p, &opts).unwrap();
        assert_eq!(launches.len(), 1, "{what}");
        let l = &launches[0];
        let mode = if tokens.is_some() {
            Mode::Block
        } else {
            Mode::Single
        };
        assert_eq!(l.mode, mode, "{what}: {l:?}");
        // 64 chunks of 4 when spread; one warp otherwise.
        assert_eq!(l.block, if spread { 64 } else { 32 }, "{what}: {l:?}");
        let ir = emit_llvm(&p, &opts).unwrap();
        let copy = "@k0_copies.l0 = internal addrspace(3) global [256 x float] undef";
        assert!(ir.contains(copy), "{what}: {ir}");
        let f = function(&ir, "k0_copies");
        let (inside, _) = by_place(f);
        if spread {
            // Filling, updating and rewriting run on warp 0, which syncs
            // its lanes before each in-place store.
            assert!(inside.contains("bar.warp.sync"), "{what}");
        } else {
            assert!(!f.contains("warp.run"), "{what}");
            assert!(!f.contains("bar.warp.sync"), "{what}");
        }
        // Integers in [-4, 4], halves and doublings: exact in f32, so
        // the emulator must match the interpreter bit for bit.
        let t = tokens.unwrap_or(1);
        let xs: Vec<f64> = (0..t * L).map(|i| ((i * 7 + 3) % 9) as f64 - 4.0).collect();
        let mut inputs = BTreeMap::new();
        inputs.insert(
            "x".to_string(),
            Tensor::from_f64(TensorType::new(DType::F32, [t, L]), &xs).unwrap(),
        );
        emulates_bit_for_bit(&p, &inputs, &what);
    }
}

/// The Sinkhorn backward alone, `[t, 4, 4]` in `dtype`, 20 rounds.
fn sinkhorn_grad(d: DType, t: usize) -> Program {
    let text = format!(
        "graph @g(%x: {d}[{t},4,4], %dy: {d}[{t},4,4]) -> (dx: {d}[{t},4,4]) {{
  %2 = sinkhorn_grad %x, %dy, variant=tilekernels, iters=20, eps=1e-6 : {d}[{t},4,4]
  return %2
}}"
    );
    let g = birkhoff_ir::parse_graph(&text).expect("the graph parses");
    lower(&g, &LowerOptions::gpu(PreMixProjection::default())).unwrap()
}

#[test]
fn each_lane_keeps_its_share_of_the_state_history_in_a_shared_slice() {
    for dtype in [DType::F32, DType::Bf16] {
        let p = sinkhorn_grad(dtype, 8192);
        let opts = CodegenOptions::default();
        let launches = launch_plan(&p, &opts).unwrap();
        assert_eq!(launches.len(), 1, "{dtype}: {launches:?}");
        let l = &launches[0];
        // Four lanes a matrix, a column each: 640 states / 4 = 160 f32
        // a lane, 640 bytes, 76 slices in 48 KB, so 64 threads a block.
        assert_eq!(l.mode, Mode::Lanes(4), "{dtype}: {l:?}");
        assert_eq!(l.block, 64, "{dtype}: {l:?}");
        assert_eq!(l.grid, [8192 * 4 / 64, 1, 1], "{dtype}: {l:?}");
        let ir = emit_llvm(&p, &opts).unwrap();
        let f = function(&ir, &l.entry);
        assert!(
            ir.contains("internal addrspace(3) global [10240 x float] undef"),
            "{dtype}: no shared slices"
        );
        assert!(!f.contains("alloca [160 x float]"), "{dtype}");
        assert!(f.contains("shfl.sync.bfly"), "{dtype}: no lane butterfly");
        if let Some(ptxas) = ptxas_or_note("spills") {
            let m = compile_module(&p, &opts).unwrap();
            let stats = ptxas_stats(&ptxas, &m.ptx, &opts.arch).unwrap();
            let s = &stats[&l.entry];
            assert_eq!(
                (s.spill_stores, s.spill_loads),
                (0, 0),
                "{dtype}: {} spills ({} registers)",
                l.entry,
                s.registers
            );
        }
    }
}
