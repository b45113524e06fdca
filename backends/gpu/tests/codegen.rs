//! The code generator's output, checked without a GPU: every zoo model
//! compiles to PTX whose entries are the launch plan's, each with its
//! block-size bound and no local-memory traffic; the mHC kernels take the
//! launches, mappings and instructions the design calls for (tensor-core
//! projection, 16-byte vector loads, one per-token kernel); bad settings
//! are clear errors. Where `ptxas` is found (`PTXAS`, or on `PATH`), every
//! module is also assembled for sm_90; `BIRKHOFF_REQUIRE_PTXAS=1` makes a
//! missing `ptxas` a failure (CI sets it). Numerics are in the root
//! crate's `gpu_emulated` (host emulation) and `gpu` (device) tests.
#![cfg(feature = "gpu")]

mod common;

use common::ptxas_or_note;

use std::process::Command;

use birkhoff_dsl::zoo::{Flag, ModelArgs, build_model, model_info, models};
use birkhoff_gpu::codegen::{LaunchInfo, Mode, launch_plan};
use birkhoff_gpu::{CodegenOptions, GpuError, GpuModule, compile_module, emit_llvm, ptx_entries};
use birkhoff_ir::DType;
use birkhoff_ir::kernel::{Expr, Index, Kernel, LoopKind, Program, ScalarType, Stmt};
use birkhoff_lower::{LowerOptions, PreMixProjection, lower};

fn program(model: &str, dtype: DType, t: usize, c: usize, fused: bool) -> Program {
    let info = model_info(model).expect("a zoo model");
    let takes = |f: Flag| info.flags.contains(&f);
    let args = ModelArgs {
        tokens: takes(Flag::Tokens).then_some(t),
        streams: takes(Flag::Streams).then_some(4),
        hidden: takes(Flag::Hidden).then_some(c),
        heads: takes(Flag::Heads).then_some(2),
        dtype: Some(dtype),
        ..ModelArgs::default()
    };
    let m = build_model(model, &args).unwrap_or_else(|e| panic!("{model}: {e}"));
    let g = if fused {
        birkhoff_opt::optimize(&m.graph, |_| false).unwrap().graph
    } else {
        m.graph
    };
    lower(&g, &LowerOptions::gpu(PreMixProjection::Gemm)).unwrap_or_else(|e| panic!("{model}: {e}"))
}

fn plan(p: &Program) -> Vec<LaunchInfo> {
    launch_plan(p, &CodegenOptions::default()).unwrap()
}

/// The PTX of one entry (its directive up to the next entry).
fn entry_text<'a>(ptx: &'a str, entry: &str) -> &'a str {
    let start = ptx
        .find(&format!(".entry {entry}("))
        .unwrap_or_else(|| panic!("no entry {entry}"));
    let rest = &ptx[start..];
    let end = rest[1..].find(".entry ").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

#[test]
fn every_zoo_model_compiles_to_the_planned_entries() {
    for info in models() {
        for dtype in [DType::F32, DType::Bf16] {
            for fused in [true, false] {
                let what = format!("{} {dtype} fused={fused}", info.name);
                let p = program(info.name, dtype, 16, 64, fused);
                let m = compile_module(&p, &CodegenOptions::default())
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let entries = ptx_entries(&m.ptx);
                let launched: Vec<&str> = m.launches.iter().map(|l| l.entry.as_str()).collect();
                let mut sorted = launched.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted.len(), launched.len(), "{what}: entries are unique");
                let mut have = entries.clone();
                have.sort_unstable();
                assert_eq!(have, sorted, "{what}");
                assert!(m.ptx.contains(".target sm_90"), "{what}");
                for l in &m.launches {
                    let text = entry_text(&m.ptx, &l.entry);
                    assert!(
                        text.contains(&format!(".maxntid {}, 1, 1", l.block[0])),
                        "{what}: {} lacks its block bound",
                        l.entry
                    );
                }
                // Scratch arrays and accumulators live in registers.
                assert!(!m.ptx.contains(".local"), "{what}: local memory");
                // The module is what an artifact holds.
                m.validate().unwrap();
                assert_eq!(m.arena_bytes, p.arena_bytes, "{what}");
            }
        }
    }
}

/// `mhc_pre`: the tensor-core projection, the gates (four lanes per
/// token, a Sinkhorn column each: every token's Sinkhorn at once) and one
/// block per token applying them.
#[test]
fn mhc_pre_is_a_tensor_core_projection_a_gates_kernel_and_a_sweep_per_token() {
    let p = program("mhc-pre", DType::Bf16, 256, 512, true);
    let launches = plan(&p);
    assert_eq!(launches.len(), 3, "{launches:#?}");
    let (gemm, gates, token) = (&launches[0], &launches[1], &launches[2]);
    assert_eq!(gemm.mode, Mode::Gemm);
    assert!(gemm.tensor_cores, "{gemm:?}");
    // 16 rows (one tensor-core tile) per block: blocks of 32 or 64 rows
    // would be far fewer than 264; so are 16 blocks of rows, so the inner
    // dimension (2048) is split in 8 parts of 256, a batch on y.
    assert_eq!(gemm.grid, [16, 8, 1]);
    assert_eq!(gates.mode, Mode::Lanes(4), "{gates:?}");
    assert_eq!(gates.grid[0] * gates.block, 4 * 256, "four lanes per token");
    assert_eq!(token.mode, Mode::Block, "{token:?}");
    assert_eq!(token.grid, [256, 1, 1], "one block per token");
    assert!(token.vectorized >= 1, "{token:?}");
    let m = compile_module(&p, &CodegenOptions::default()).unwrap();
    let mma = m
        .ptx
        .matches("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32")
        .count();
    // ceil(n(n+2) / 8) = 3 column tiles x 1 row tile x 2 steps per
    // 32-element chunk, for 1 chunk body: a part of 256 is 8 chunks, one
    // for each of the block's 8 warps, so there is no loop to unroll.
    assert_eq!(mma, 3 * 2, "{mma} mma instructions");
    let gemm_ptx = entry_text(&m.ptx, &gemm.entry);
    assert!(
        gemm_ptx.contains("ld.global.nc.v4.u32"),
        "16-byte loads of x and fn"
    );
    let token_ptx = entry_text(&m.ptx, &token.entry);
    assert!(
        token_ptx.contains(".v4."),
        "16-byte accesses in the apply sweep"
    );
}

#[test]
fn the_mhc_sublayer_is_a_projection_the_gates_and_one_fused_sweep_per_token() {
    let p = program("mhc-sublayer", DType::Bf16, 128, 256, true);
    let launches = plan(&p);
    assert_eq!(launches.len(), 3, "{launches:#?}");
    assert!(launches[0].tensor_cores);
    assert_eq!(launches[1].mode, Mode::Lanes(4));
    assert_eq!(launches[2].mode, Mode::Block);
    assert_eq!(launches[2].grid, [128, 1, 1]);
}

#[test]
fn mhc_post_is_one_vectorized_block_per_token() {
    for dtype in [DType::F32, DType::Bf16] {
        let p = program("mhc-post", dtype, 64, 1024, true);
        let launches = plan(&p);
        assert_eq!(launches.len(), 1, "{launches:#?}");
        let l = &launches[0];
        assert_eq!((l.mode, l.grid), (Mode::Block, [64, 1, 1]), "{l:?}");
        // One 16-byte chunk of the row per thread up to 128 chunks (bf16:
        // 128), two past that (f32: 256 chunks, 128 threads).
        let chunks = 1024 / (16 / dtype.size_bytes());
        let rounds = if chunks > 128 { 2 } else { 1 };
        assert_eq!(l.block as usize, chunks / rounds, "{l:?}");
        assert!(l.vectorized >= 1 && l.barriers == 0, "{l:?}");
    }
}

/// The tall-and-skinny launch rule: 16-row tiles per block, the most of
/// 4, 2 and 1 that still give 264 blocks (two per SM of an H100), for
/// both flavours; fewer rows per block, fewer accumulators.
#[test]
fn projections_take_as_many_rows_per_block_as_fill_an_h100() {
    for dtype in [DType::Bf16, DType::F32] {
        for (t, rows) in [(2048, 16), (8192, 16), (8448, 32), (16384, 32), (16896, 64)] {
            let p = program("mhc-pre", dtype, t, 64, true);
            let gemm = &plan(&p)[0];
            assert_eq!(gemm.mode, Mode::Gemm, "{dtype} T={t}");
            assert_eq!(gemm.tensor_cores, dtype == DType::Bf16, "{dtype} T={t}");
            let blocks = t.div_ceil(rows) as u32;
            assert_eq!(gemm.grid, [blocks, 1, 1], "{dtype} T={t}: {rows} rows");
            assert_eq!(gemm.block, 256, "{dtype} T={t}");
        }
    }
}

/// The f32 projection is the f32 tall-and-skinny kernel: one launch of
/// 16-row blocks, 16-byte vector loads of `x` and `fn`, fused
/// multiply-adds, no tensor cores, and no tiled staging through shared
/// memory in the loop — on sm_75 too, since it needs no tensor cores.
#[test]
fn f32_projections_take_the_fma_skinny_kernel() {
    for arch in ["sm_90", "sm_75"] {
        let opts = CodegenOptions {
            arch: arch.into(),
            ..CodegenOptions::default()
        };
        let p = program("mhc-pre", DType::F32, 256, 512, true);
        let launches = launch_plan(&p, &opts).unwrap();
        assert_eq!(launches.len(), 3, "{launches:#?}");
        let gemm = &launches[0];
        assert_eq!(gemm.mode, Mode::Gemm);
        assert!(!gemm.tensor_cores, "{gemm:?}");
        assert_eq!(gemm.grid, [16, 8, 1], "{arch}: {gemm:?}");
        let m = compile_module(&p, &opts).unwrap();
        let ptx = entry_text(&m.ptx, &gemm.entry);
        assert!(ptx.contains("ld.global.nc.v4.f32"), "{arch}: 16-byte loads");
        assert!(ptx.contains("fma.rn.f32"), "{arch}");
        assert!(!ptx.contains("mma.sync"), "{arch}");
        assert!(ptx.contains("shfl.sync.bfly"), "{arch}: the reduce-scatter");
    }
}

#[test]
fn bf16_on_older_gpus_and_other_shapes_take_the_general_product() {
    let p = program("mhc-pre", DType::Bf16, 64, 64, true);
    let opts = CodegenOptions {
        arch: "sm_75".into(),
        ..CodegenOptions::default()
    };
    let l = launch_plan(&p, &opts).unwrap();
    assert_eq!(l[0].mode, Mode::Gemm);
    assert!(!l[0].tensor_cores, "no bf16 mma before sm_80");
    // The general kernel's grid: ceil(24 / 16) column tiles, ceil(64 / 16)
    // row tiles.
    assert_eq!(l[0].grid, [2, 4, 1]);
    let m = compile_module(&p, &opts).unwrap();
    assert!(m.ptx.contains(".target sm_75") && !m.ptx.contains("mma.sync"));
    // A row that is not a whole number of 32-element chunks, either type.
    for dtype in [DType::Bf16, DType::F32] {
        let p = program("mhc-pre", dtype, 64, 36, true);
        let l = &plan(&p)[0];
        assert!(!l.tensor_cores, "{dtype}");
        assert_eq!(l.grid, [2, 4, 1], "{dtype}: the general kernel");
    }
}

#[test]
fn llvm_ir_is_printed_before_optimization() {
    let p = program("mhc-post", DType::F32, 8, 32, true);
    let ir = emit_llvm(&p, &CodegenOptions::default()).unwrap();
    assert!(
        ir.contains("target triple = \"nvptx64-nvidia-cuda\""),
        "{ir}"
    );
    assert!(
        ir.contains("define void @k0_mhc_post(ptr addrspace(1)"),
        "{ir}"
    );
    assert!(ir.contains("!nvvm.annotations"), "{ir}");
    assert!(ir.contains("@llvm.nvvm.read.ptx.sreg.ctaid.x"), "{ir}");
}

#[test]
fn bad_settings_are_clear_errors() {
    let p = program("mhc-post", DType::F32, 8, 32, true);
    for (arch, threads, want) in [
        ("sm_xx", 256, "unknown GPU architecture 'sm_xx'"),
        ("compute_90", 256, "unknown GPU architecture 'compute_90'"),
        ("sm_90", 100, "100 threads per block"),
        ("sm_90", 2048, "2048 threads per block"),
    ] {
        let opts = CodegenOptions {
            arch: arch.into(),
            block_threads: threads,
        };
        let e = compile_module(&p, &opts).unwrap_err();
        assert!(matches!(e, GpuError::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains(want), "{e}");
    }
}

#[test]
fn invalid_programs_are_refused_by_the_verifier() {
    // A store whose index range, 2^62 · (5 - 1), wraps to 0 in i64: only
    // an exact range check sees it leave the buffer.
    let mut p = program("mhc-post", DType::F32, 8, 32, true);
    let out = p.outputs[0].1;
    let mut k = Kernel::new("k_wraps");
    let i = k.var(ScalarType::Index);
    k.body = vec![Stmt::Loop {
        var: i,
        extent: 5,
        kind: LoopKind::Serial,
        body: vec![Stmt::Store {
            buf: out,
            index: Index::var(i, 1 << 62),
            value: Expr::constant(ScalarType::F32, 0.0),
        }],
    }];
    p.kernels.push(k);
    let opts = CodegenOptions::default();
    for e in [
        compile_module(&p, &opts).unwrap_err(),
        emit_llvm(&p, &opts).unwrap_err(),
        launch_plan(&p, &opts).unwrap_err(),
    ] {
        assert!(matches!(e, GpuError::Invalid(_)), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with("invalid program: kernel k_wraps: store into "),
            "{text}"
        );
        assert!(
            text.contains("index range 0..=18446744073709551616 is outside"),
            "{text}"
        );
    }
}

#[test]
fn ptxas_accepts_every_module() {
    let Some(ptxas) = ptxas_or_note("PTX assembly") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let mut checked = 0;
    for info in models() {
        for dtype in [DType::F32, DType::Bf16] {
            let p = program(info.name, dtype, 16, 64, true);
            let m: GpuModule = compile_module(&p, &CodegenOptions::default()).unwrap();
            let path = dir.join(format!("{}-{dtype}.ptx", info.name));
            std::fs::write(&path, &m.ptx).unwrap();
            let out = Command::new(&ptxas)
                .args(["-arch=sm_90", "-v", "-o"])
                .arg(dir.join("out.cubin"))
                .arg(&path)
                .output()
                .expect("ptxas runs");
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "{} {dtype}: ptxas failed:\n{log}",
                info.name
            );
            // Nothing spills to local memory.
            for line in log.lines().filter(|l| l.contains("spill")) {
                assert!(
                    line.contains("0 bytes spill stores, 0 bytes spill loads"),
                    "{} {dtype}: {line}",
                    info.name
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * models().len());
}

/// The projections at full size, for every tile count the rule picks
/// (T = 8192: one 16-row tile per block; 16384: two; 32768: four), both
/// flavours: ptxas assembles them without spilling.
#[test]
fn ptxas_assembles_the_projections_without_spills() {
    let Some(ptxas) = ptxas_or_note("PTX assembly") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    for dtype in [DType::Bf16, DType::F32] {
        for t in [8192, 16384, 32768] {
            let what = format!("mhc-pre {dtype} T={t}");
            let p = program("mhc-pre", dtype, t, 4096, true);
            let m = compile_module(&p, &CodegenOptions::default()).unwrap();
            let entry = &m.launches[0].entry;
            let path = dir.join(format!("{dtype}-{t}.ptx"));
            std::fs::write(&path, &m.ptx).unwrap();
            let out = Command::new(&ptxas)
                .args(["-arch=sm_90", "-v", "-o"])
                .arg(dir.join("out.cubin"))
                .arg(&path)
                .output()
                .expect("ptxas runs");
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{what}: ptxas failed:\n{log}");
            let mine: Vec<&str> = log
                .lines()
                .skip_while(|l| !l.contains(&format!("'{entry}'")))
                .take(4)
                .collect();
            let spills = mine.iter().find(|l| l.contains("spill")).expect(&what);
            assert!(
                spills.contains("0 bytes spill stores, 0 bytes spill loads"),
                "{what}: {spills}"
            );
            let regs = mine.iter().find(|l| l.contains("Used")).expect(&what);
            eprintln!("{what}: {}", regs.trim());
        }
    }
}

/// bf16 models' matrix products take the tiled kernel (f32 sums, one
/// rounding per element), not serial loop nests: no kernel of the
/// lowered program is a `matmul_loops`, and every launch of a matrix
/// product is a GEMM launch — for every zoo model, fused and not, and for
/// the sublayer with a linear layer inside.
#[test]
fn bf16_matrix_products_are_gemm_launches() {
    use birkhoff_dsl::zoo::LayerFn;
    use birkhoff_lower::PreMixProjection;
    let linear_tanh = {
        let args = ModelArgs {
            tokens: Some(16),
            streams: Some(4),
            hidden: Some(64),
            layer_fn: Some(LayerFn::LinearTanh),
            dtype: Some(DType::Bf16),
            ..ModelArgs::default()
        };
        let m = build_model("mhc-sublayer", &args).unwrap();
        let g = birkhoff_opt::optimize(&m.graph, |_| false).unwrap().graph;
        lower(&g, &LowerOptions::gpu(PreMixProjection::default())).unwrap()
    };
    let mut cases = vec![(
        "mhc-sublayer --layer-fn linear-tanh".to_string(),
        linear_tanh,
    )];
    for info in models() {
        for fused in [true, false] {
            let what = format!("{} fused={fused}", info.name);
            cases.push((what, program(info.name, DType::Bf16, 16, 64, fused)));
        }
    }
    for (what, p) in &cases {
        let names: Vec<&str> = p.kernels.iter().map(|k| k.name.as_str()).collect();
        assert!(
            !names.iter().any(|n| n.contains("matmul_loops")),
            "{what}: {names:?}"
        );
        let mut bf16_results = 0;
        for k in &p.kernels {
            birkhoff_ir::kernel::walk_stmts(&k.body, &mut |s| {
                if let Stmt::Gemm(g) = s
                    && p.buffer(g.c.buf).dtype() == DType::Bf16
                {
                    bf16_results += 1;
                }
            });
        }
        let launches = plan(p);
        let products: Vec<&LaunchInfo> = launches
            .iter()
            .filter(|l| l.kernel.contains("matmul"))
            .collect();
        for l in &products {
            assert_eq!(l.mode, Mode::Gemm, "{what}: {l:?}");
            assert!(
                !l.tensor_cores,
                "{what}: a bf16 result is the tiled kernel's: {l:?}"
            );
        }
        assert_eq!(products.len(), bf16_results, "{what}: {launches:#?}");
        let has_products = what.starts_with("mhc-block")
            || what.starts_with("hc-block")
            || what.starts_with("residual-block")
            || what.contains("linear-tanh");
        if has_products {
            assert!(bf16_results > 0, "{what}: {launches:#?}");
        }
        compile_module(p, &CodegenOptions::default()).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}
