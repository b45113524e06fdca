//! Kernel IR to LLVM IR for `nvptx64-nvidia-cuda`, then PTX.
//!
//! Input: a kernel [`Program`], which is verified first
//! ([`verify_program`]; an invalid one is [`GpuError::Invalid`]). Output:
//! a [`GpuModule`] — one PTX module holding every launch's entry, the
//! launch plan and the buffer plan. The stages:
//!
//! 1. [`launch::pieces`] cuts each kernel into launches and picks each
//!    launch's mode (thread per iteration, block per iteration, single
//!    block, or a matrix product);
//! 2. statement launches are emitted through inkwell by [`entry::Gen`]
//!    (scalar semantics in [`ops`], inline math routines in [`math`]);
//!    matrix products are written as LLVM IR text — the tall-and-skinny
//!    kernels ([`skinny`]: bf16 on tensor cores, f32 with fused
//!    multiply-adds in [`skinny_fma`]) where they apply, the general tiled
//!    one ([`gemm`]) elsewhere — parsed and linked in;
//! 3. the module is verified, optimized at `O3` for the target
//!    architecture and printed as PTX by LLVM's NVPTX backend.
//!
//! Every entry takes the device address of the buffer-address table (see
//! `module.rs`), so the runtime launches all of them the same way.

pub mod audit;
mod emulate;
mod entry;
mod gemm;
mod launch;
mod math;
mod ops;
mod skinny;
mod skinny_fma;
mod wide;

use std::collections::HashSet;

use birkhoff_ir::kernel::{Program, verify_program};
use inkwell::OptimizationLevel;
use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple,
};

pub use emulate::emulate;
pub use launch::Mode;

use crate::{ARTIFACT_VERSION, CodegenOptions, GpuError, GpuModule, Launch, Result};
use entry::Gen;
use launch::{Work, pieces, sanitize};
use ops::Cx;

/// The target triple of every module.
const TRIPLE: &str = "nvptx64-nvidia-cuda";

/// One launch as planned and emitted, for reports and the module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchInfo {
    /// The PTX entry.
    pub entry: String,
    /// The kernel-IR kernel it runs (part of).
    pub kernel: String,
    /// How it maps onto the GPU.
    pub mode: Mode,
    /// Blocks per grid.
    pub grid: [u32; 3],
    /// Threads per block.
    pub block: u32,
    /// Whether it is the tensor-core matrix product.
    pub tensor_cores: bool,
    /// Vector loops spread over the block, and of which vectorized.
    pub distributed: usize,
    /// Of the distributed loops, those moving 16 bytes per access.
    pub vectorized: usize,
    /// Barriers in the code (static count).
    pub barriers: usize,
}

/// Compiles a kernel program to PTX and its launch plan.
pub fn compile(program: &Program, opts: &CodegenOptions) -> Result<GpuModule> {
    let ctx = Context::create();
    let (module, infos, tm) = optimized(&ctx, program, opts)?;
    let buf = tm
        .write_to_memory_buffer(&module, FileType::Assembly)
        .map_err(|e| GpuError::Llvm(format!("emitting PTX: {e}")))?;
    let ptx = String::from_utf8(buf.as_slice().to_vec())
        .map_err(|_| GpuError::Llvm("the PTX is not UTF-8".into()))?;
    let (buffers, inputs, outputs) = GpuModule::buffer_plan(program);
    let m = GpuModule {
        version: ARTIFACT_VERSION,
        name: program.name.clone(),
        ptx,
        arch: opts.arch.clone(),
        buffers,
        inputs,
        outputs,
        arena_bytes: program.arena_bytes,
        launches: infos
            .into_iter()
            .map(|i| Launch {
                entry: i.entry,
                kernel: i.kernel,
                grid: i.grid,
                block: [i.block, 1, 1],
                shared_bytes: 0,
            })
            .collect(),
    };
    m.validate()?;
    Ok(m)
}

/// The verified, unoptimized LLVM IR of a kernel program.
pub fn emit_llvm(program: &Program, opts: &CodegenOptions) -> Result<String> {
    let ctx = Context::create();
    let (module, _) = build(&ctx, program, opts)?;
    Ok(module.print_to_string().to_string())
}

/// The launch plan of a kernel program: what [`compile`] would launch,
/// with each launch's mode and code statistics.
pub fn launch_plan(program: &Program, opts: &CodegenOptions) -> Result<Vec<LaunchInfo>> {
    Ok(launch_plan_with_warp0(program, opts)?
        .into_iter()
        .map(|(info, _)| info)
        .collect())
}

/// [`launch_plan`], with each launch's statements that run on warp 0
/// alone (by address in `program`; see `entry.rs`, *Warp-0 runs*).
pub(crate) fn launch_plan_with_warp0(
    program: &Program,
    opts: &CodegenOptions,
) -> Result<Vec<(LaunchInfo, HashSet<usize>)>> {
    let ctx = Context::create();
    let (_, infos, warp0) = build_recording(&ctx, program, opts)?;
    Ok(infos.into_iter().zip(warp0).collect())
}

/// The program's module built and optimized for the target, with its
/// launches and the target machine.
fn optimized<'ctx>(
    ctx: &'ctx Context,
    program: &Program,
    opts: &CodegenOptions,
) -> Result<(Module<'ctx>, Vec<LaunchInfo>, TargetMachine)> {
    let (module, infos) = build(ctx, program, opts)?;
    let tm = target_machine(opts)?;
    module
        .run_passes("default<O3>", &tm, PassBuilderOptions::create())
        .map_err(|e| GpuError::Llvm(format!("optimizing: {e}")))?;
    Ok((module, infos, tm))
}

/// The compute capability in `sm_XY`, as `XY`.
fn sm_version(arch: &str) -> Result<u32> {
    arch.strip_prefix("sm_")
        .and_then(|v| v.trim_end_matches('a').parse::<u32>().ok())
        .filter(|v| (50..=200).contains(v))
        .ok_or_else(|| {
            GpuError::InvalidArgument(format!(
                "unknown GPU architecture '{arch}' (expected sm_XY, e.g. sm_90)"
            ))
        })
}

fn target_machine(opts: &CodegenOptions) -> Result<TargetMachine> {
    sm_version(&opts.arch)?;
    Target::initialize_nvptx(&InitializationConfig::default());
    let triple = TargetTriple::create(TRIPLE);
    let target = Target::from_triple(&triple).map_err(|e| GpuError::Llvm(e.to_string()))?;
    // PTX 7.8 is the first with every sm_90 feature we use; older
    // architectures get the same ISA version, which their drivers accept.
    target
        .create_target_machine(
            &triple,
            &opts.arch,
            "+ptx78",
            OptimizationLevel::Aggressive,
            RelocMode::Default,
            CodeModel::Default,
        )
        .ok_or_else(|| GpuError::Llvm(format!("no NVPTX target machine for {}", opts.arch)))
}

/// Builds the whole program's module (verified, not optimized).
fn build<'ctx>(
    ctx: &'ctx Context,
    program: &Program,
    opts: &CodegenOptions,
) -> Result<(Module<'ctx>, Vec<LaunchInfo>)> {
    let (module, infos, _) = build_recording(ctx, program, opts)?;
    Ok((module, infos))
}

/// [`build`], with each launch's warp-0 statements (see
/// [`launch_plan_with_warp0`]).
#[allow(clippy::type_complexity, reason = "one private helper's result")]
fn build_recording<'ctx>(
    ctx: &'ctx Context,
    program: &Program,
    opts: &CodegenOptions,
) -> Result<(Module<'ctx>, Vec<LaunchInfo>, Vec<HashSet<usize>>)> {
    let sm = sm_version(&opts.arch)?;
    if !(32..=1024).contains(&opts.block_threads) || !opts.block_threads.is_multiple_of(32) {
        return Err(GpuError::InvalidArgument(format!(
            "{} threads per block (a multiple of 32 from 32 to 1024)",
            opts.block_threads
        )));
    }
    // Loads and stores are emitted unchecked: the verifier's exact range
    // check is what keeps them inside their buffers.
    verify_program(program).map_err(GpuError::Invalid)?;
    let tm = target_machine(opts)?;
    let module = ctx.create_module(&program.name);
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    let mut infos = Vec::new();
    let mut warp0 = Vec::new();
    let mut taken: HashSet<String> = HashSet::new();
    for k in &program.kernels {
        let parts = pieces(program, k)?;
        for (i, piece) in parts.iter().enumerate() {
            let mut entry = sanitize(&k.name);
            if parts.len() > 1 {
                entry = format!("{entry}_{i}");
            }
            while !taken.insert(entry.clone()) {
                entry.push('_');
            }
            let info = match piece.work {
                Work::Gemm(g) => {
                    let sk = skinny::applies(program, g, sm);
                    let (text, grid, block) = match &sk {
                        Some(s) => (skinny::module_ir(&entry, s), s.grid(), skinny::THREADS),
                        None => match wide::applies(program, g) {
                            Some(w) => (wide::module_ir(&entry, &w), w.grid(), w.threads),
                            None => (
                                gemm::module_ir(&entry, program, g),
                                gemm::grid(&k.name, g)?,
                                gemm::THREADS,
                            ),
                        },
                    };
                    link_text(ctx, &module, &tm, &entry, &text)?;
                    warp0.push(HashSet::new());
                    LaunchInfo {
                        entry,
                        kernel: k.name.clone(),
                        mode: piece.mode,
                        grid,
                        block,
                        tensor_cores: sk.as_ref().is_some_and(skinny::Skinny::tensor_cores),
                        distributed: 0,
                        vectorized: 0,
                        barriers: 0,
                    }
                }
                Work::Body(_) => {
                    let cx = Cx::new(ctx, &module);
                    let (f, st) = Gen::launch(cx, program, k, piece, &entry, opts.block_threads)?;
                    annotate(ctx, &module, f, st.block)?;
                    warp0.push(st.warp0_stmts);
                    LaunchInfo {
                        entry,
                        kernel: k.name.clone(),
                        mode: piece.mode,
                        grid: st.grid,
                        block: st.block,
                        tensor_cores: false,
                        distributed: st.distributed,
                        vectorized: st.vectorized,
                        barriers: st.barriers,
                    }
                }
            };
            infos.push(info);
        }
    }
    module
        .verify()
        .map_err(|e| GpuError::Llvm(format!("invalid LLVM IR: {e}")))?;
    Ok((module, infos, warp0))
}

/// Marks `f` a kernel entry launched with at most `block` threads.
fn annotate<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    f: inkwell::values::FunctionValue<'ctx>,
    block: u32,
) -> Result<()> {
    let ptr = f.as_global_value().as_pointer_value();
    let i32t = ctx.i32_type();
    for (key, value) in [("kernel", 1), ("maxntidx", block)] {
        let node = ctx.metadata_node(&[
            ptr.into(),
            ctx.metadata_string(key).into(),
            i32t.const_int(u64::from(value), false).into(),
        ]);
        module
            .add_global_metadata("nvvm.annotations", &node)
            .map_err(|e| GpuError::Llvm(e.to_string()))?;
    }
    Ok(())
}

/// The start of a kernel written as LLVM IR text: the target and the
/// NVVM intrinsics both text kernels use.
pub(crate) fn text_prelude() -> String {
    [
        "target triple = \"nvptx64-nvidia-cuda\"",
        "declare i32 @llvm.nvvm.read.ptx.sreg.tid.x()",
        "declare i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()",
        "declare i32 @llvm.nvvm.read.ptx.sreg.ctaid.y()",
        "declare void @llvm.nvvm.barrier0()",
        "",
    ]
    .join("\n")
}

/// The end of a kernel written as LLVM IR text: the empty node its
/// `!invariant.load`s name (`!0`) and the annotations that make `entry` a
/// kernel launched with at most `threads` threads.
pub(crate) fn text_epilogue(entry: &str, threads: u32) -> String {
    format!(
        "!0 = !{{}}\n!nvvm.annotations = !{{!1, !2}}\n!1 = !{{ptr @{entry}, !\"kernel\", i32 1}}\n!2 = !{{ptr @{entry}, !\"maxntidx\", i32 {threads}}}\n"
    )
}

/// Parses a kernel written as LLVM IR text and links it into `module`.
fn link_text<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    tm: &TargetMachine,
    entry: &str,
    text: &str,
) -> Result<()> {
    let buf = MemoryBuffer::create_from_memory_range_copy(text.as_bytes(), entry);
    let m = ctx
        .create_module_from_ir(buf)
        .map_err(|e| GpuError::Llvm(format!("kernel {entry}: {e}")))?;
    m.set_triple(&tm.get_triple());
    m.set_data_layout(&tm.get_target_data().get_data_layout());
    module
        .link_in_module(m)
        .map_err(|e| GpuError::Llvm(format!("linking kernel {entry}: {e}")))?;
    Ok(())
}
