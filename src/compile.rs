//! The one entry point: compile a graph for a target and run it.
//!
//! `Target::Gpu` lowers for the GPU's matrix product, generates
//! PTX (the `gpu` cargo feature, LLVM 19) and runs it on a CUDA device
//! through the driver; [`gpu_module`] stops after code generation (for
//! artifacts, no device needed) and [`gpu_code`] returns the LLVM IR or PTX.
//!
//! ```no_run
//! use birkhoff::{Target, compile};
//! use birkhoff::dsl::zoo::{ModelArgs, build_model};
//! use birkhoff::compare::random_inputs;
//!
//! let model = build_model("mhc-sublayer", &ModelArgs::default())?;
//! let exe = compile(&model.graph, Target::Cpu)?;
//! let outputs = exe.run(&random_inputs(&model.graph, &model.inits, 0))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::path::Path;

use birkhoff_cpu::{CpuBackend, CpuExecutable, CpuOptions, KernelTime, TensorMut, TensorRef};
use birkhoff_gpu::{CodegenOptions, GpuDevice, GpuError, GpuExecutable, GpuModule};
use birkhoff_ir::kernel::Program;
use birkhoff_ir::{Graph, InterpOptions, Tensor, interpret};
use birkhoff_lower::{LowerOptions, PreMixProjection, lower};
use birkhoff_opt::Report;
use birkhoff_recompute::{Recompute, TrainingPlan, plan_training};

/// Where a graph runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The reference interpreter (f64; slow; the oracle).
    Interp,
    /// Native code for this machine's CPU, through Cranelift.
    Cpu,
    /// PTX for an NVIDIA GPU, through LLVM (the `gpu` cargo feature), run
    /// through the CUDA driver.
    Gpu,
}

/// Compilation settings.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// The target.
    pub target: Target,
    /// Run the optimizer (fusion) first.
    pub optimize: bool,
    /// Threads for parallel loops (`None`: one per core).
    pub threads: Option<usize>,
    /// How the mHC pre-mix computes its projections (`None`: a matrix
    /// product, the default on every target).
    pub projection: Option<PreMixProjection>,
    /// Bounds-check every memory access in generated code (CPU; for tests).
    pub checked: bool,
    /// GPU code generation settings.
    pub codegen: CodegenOptions,
    /// The CUDA device ordinal (GPU target).
    pub device: usize,
    /// Recomputation for a training graph (`None`: keep everything). Runs
    /// after the optimizer, before lowering (`docs/architecture.md`).
    pub recompute: Option<RecomputeOptions>,
}

/// What a training graph recomputes in its backward pass, and where its
/// forward pass ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecomputeOptions {
    /// `none`, `auto` or `block=K` (see [`birkhoff_recompute::Recompute`]).
    pub mode: Recompute,
    /// Outputs computed by the forward pass (e.g. `loss`); the forward
    /// pass is everything they depend on, the backward pass the rest.
    pub forward_outputs: Vec<String>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            target: Target::Cpu,
            optimize: true,
            threads: None,
            projection: None,
            checked: false,
            codegen: CodegenOptions::default(),
            device: 0,
            recompute: None,
        }
    }
}

/// Why compiling or running failed. Each variant is its stage's error,
/// displayed as it is (transparent), so error chains do not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The graph or its inputs are invalid (interpreter errors included).
    #[error(transparent)]
    Ir(#[from] birkhoff_ir::Error),
    /// The optimizer failed.
    #[error(transparent)]
    Opt(#[from] birkhoff_opt::Error),
    /// Lowering failed.
    #[error(transparent)]
    Lower(#[from] birkhoff_lower::LowerError),
    /// Code generation or the CPU runtime failed.
    #[error(transparent)]
    Cpu(#[from] birkhoff_cpu::CpuError),
    /// GPU code generation, the CUDA driver or a GPU run failed.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// Planning or executing recomputation failed.
    #[error(transparent)]
    Recompute(#[from] birkhoff_recompute::RecomputeError),
    /// Per-kernel profiles are taken on the CPU target only.
    #[error("per-kernel profiles are available for the CPU target only, not {target:?}")]
    NoProfile {
        /// The target asked for.
        target: Target,
    },
}

/// What runs a compiled graph: the interpreter or a backend's artifact.
enum Runner {
    Interp,
    Cpu(Box<CpuExecutable>),
    Gpu(Box<GpuExecutable>),
}

/// Copies a result into caller memory of the same type.
fn copy_into(name: &str, t: &Tensor, out: &mut TensorMut<'_>) -> Result<(), CompileError> {
    if out.shape == t.shape() && out.elements.fill(t.data()) {
        return Ok(());
    }
    Err(birkhoff_cpu::CpuError::OutputType {
        name: name.to_string(),
        expected: t.ty().clone(),
        got: birkhoff_ir::TensorType::new(out.elements.as_ref().dtype(), out.shape),
    }
    .into())
}

/// What [`gpu_code`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuCode {
    /// The LLVM IR, verified, before optimization.
    Llvm,
    /// The PTX.
    Ptx,
}

/// A compiled graph, ready to run many times.
pub struct Executable {
    graph: Graph,
    program: Option<Program>,
    report: Option<Report>,
    plan: Option<TrainingPlan>,
    runner: Runner,
    compile_time: Duration,
}

/// Compiles `graph` for `target` with default settings (fusion on).
pub fn compile(graph: &Graph, target: Target) -> Result<Executable, CompileError> {
    compile_with(
        graph,
        &CompileOptions {
            target,
            ..CompileOptions::default()
        },
    )
}

/// Compiles `graph` with explicit settings.
///
/// For [`Target::Gpu`] the device is opened first, so a machine without a
/// CUDA driver fails fast with [`GpuError::NoDriver`].
pub fn compile_with(graph: &Graph, opts: &CompileOptions) -> Result<Executable, CompileError> {
    let start = Instant::now();
    birkhoff_ir::verify(graph).map_err(birkhoff_ir::Error::from)?;
    let device = match opts.target {
        Target::Gpu => Some(GpuDevice::open(opts.device)?),
        Target::Interp | Target::Cpu => None,
    };
    let (graph, report, plan) = prepare(graph, opts)?;
    let (program, runner) = match (opts.target, device) {
        (Target::Interp, _) => (None, Runner::Interp),
        (Target::Cpu, _) => {
            let program = lower_for(&graph, opts)?;
            let cpu = CpuOptions {
                threads: opts.threads.unwrap_or(0),
                checked: opts.checked,
                ..CpuOptions::default()
            };
            // Through the backend interface every target implements.
            let exe = birkhoff_ir::kernel::Backend::compile(&CpuBackend(cpu), &program)?;
            (Some(program), Runner::Cpu(Box::new(exe)))
        }
        (Target::Gpu, device) => {
            let device = device.expect("opened above for the GPU target");
            let program = lower_for(&graph, opts)?;
            let module = birkhoff_gpu::compile_module(&program, &opts.codegen)?;
            let exe = GpuExecutable::load(module, &device)?;
            (Some(program), Runner::Gpu(Box::new(exe)))
        }
    };
    Ok(Executable {
        graph,
        program,
        report,
        plan,
        runner,
        compile_time: start.elapsed(),
    })
}

/// Optimizes the (verified) `graph` if `opts.optimize`, then plans and
/// executes recomputation if `opts.recompute` asks for it. The rewrite
/// comes after the optimizer because the e-graph would merge each
/// recomputed clone with its original.
fn prepare(
    graph: &Graph,
    opts: &CompileOptions,
) -> Result<(Graph, Option<Report>, Option<TrainingPlan>), CompileError> {
    let (graph, report) = if opts.optimize {
        let o = birkhoff_opt::optimize(graph, |_| false)?;
        (o.graph, Some(o.report))
    } else {
        (graph.clone(), None)
    };
    let Some(r) = &opts.recompute else {
        return Ok((graph, report, None));
    };
    let forward: Vec<&str> = r.forward_outputs.iter().map(String::as_str).collect();
    let plan = plan_training(&graph, &forward, r.mode)?;
    let graph = if plan.recompute.is_empty() {
        plan.graph.clone()
    } else {
        birkhoff_recompute::apply(&plan.graph, &forward, &plan.recompute)?
    };
    Ok((graph, report, Some(plan)))
}

/// Lowers with the projection `opts` asks for, or the target's default.
fn lower_for(graph: &Graph, opts: &CompileOptions) -> Result<Program, CompileError> {
    let lo = match opts.target {
        Target::Gpu => LowerOptions::gpu(opts.projection.unwrap_or_default()),
        Target::Interp | Target::Cpu => LowerOptions {
            projection: opts.projection.unwrap_or_default(),
            ..LowerOptions::default()
        },
    };
    Ok(lower(graph, &lo)?)
}

/// Optimizes (if `opts.optimize`) and lowers `graph` as [`compile_with`]
/// would for `opts.target`: the kernel program the backend gets (for
/// `--emit kernel-ir`; no code generation, no device).
pub fn kernel_program(graph: &Graph, opts: &CompileOptions) -> Result<Program, CompileError> {
    birkhoff_ir::verify(graph).map_err(birkhoff_ir::Error::from)?;
    let (graph, _, _) = prepare(graph, opts)?;
    lower_for(&graph, opts)
}

/// Optimizes (if `opts.optimize`), lowers and generates GPU code for
/// `graph`, without a device: the module an artifact file holds
/// ([`GpuModule::save`]). `opts.target` is ignored (always the GPU's
/// defaults). Needs the `gpu` cargo feature.
pub fn gpu_module(graph: &Graph, opts: &CompileOptions) -> Result<GpuModule, CompileError> {
    let program = gpu_program(graph, opts)?;
    Ok(birkhoff_gpu::compile_module(&program, &opts.codegen)?)
}

/// [`kernel_program`] for the GPU, whatever `opts.target` says.
fn gpu_program(graph: &Graph, opts: &CompileOptions) -> Result<Program, CompileError> {
    let opts = CompileOptions {
        target: Target::Gpu,
        ..opts.clone()
    };
    kernel_program(graph, &opts)
}

/// The LLVM IR or PTX that [`Target::Gpu`] would run for `graph`, without
/// a device. Needs the `gpu` cargo feature.
pub fn gpu_code(
    graph: &Graph,
    opts: &CompileOptions,
    what: GpuCode,
) -> Result<String, CompileError> {
    match what {
        GpuCode::Ptx => Ok(gpu_module(graph, opts)?.ptx),
        GpuCode::Llvm => {
            let program = gpu_program(graph, opts)?;
            Ok(birkhoff_gpu::emit_llvm(&program, &opts.codegen)?)
        }
    }
}

/// Loads an artifact file written by [`GpuModule::save`] onto CUDA device
/// `device`. Needs only the driver: no LLVM, no `gpu` feature. The file is
/// read and checked before the device is opened, so a bad artifact is
/// reported as such on any machine.
pub fn load_gpu_artifact(path: &Path, device: usize) -> Result<GpuExecutable, CompileError> {
    let module = GpuModule::load(path)?;
    let device = GpuDevice::open(device)?;
    Ok(GpuExecutable::load(module, &device)?)
}

impl Executable {
    /// Runs on `inputs` (one tensor per graph input, by name); returns
    /// the outputs by name, in signature order.
    pub fn run(
        &self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<Vec<(String, Tensor)>, CompileError> {
        match &self.runner {
            Runner::Interp => Ok(interpret(&self.graph, inputs, &InterpOptions::default())?),
            Runner::Cpu(exe) => Ok(exe.run(inputs)?),
            Runner::Gpu(exe) => Ok(exe.run(inputs)?),
        }
    }

    /// Like [`run`](Self::run) on inputs the caller owns. The CPU target
    /// reads them in place; the interpreter and the GPU copy them first.
    pub fn run_borrowed(
        &self,
        inputs: &BTreeMap<String, TensorRef<'_>>,
    ) -> Result<Vec<(String, Tensor)>, CompileError> {
        if let Runner::Cpu(exe) = &self.runner {
            return Ok(exe.run_borrowed(inputs)?);
        }
        let owned = inputs
            .iter()
            .map(|(name, t)| Ok((name.clone(), Tensor::new(t.shape, t.elements.to_data())?)))
            .collect::<Result<BTreeMap<_, _>, CompileError>>()?;
        self.run(&owned)
    }

    /// Like [`run_borrowed`](Self::run_borrowed), writing the outputs
    /// into caller memory (one tensor per output, in signature order, of
    /// the output's type). The CPU target writes them in place; the
    /// interpreter and the GPU copy their results in.
    pub fn run_borrowed_into(
        &self,
        inputs: &BTreeMap<String, TensorRef<'_>>,
        outputs: &mut [TensorMut<'_>],
    ) -> Result<(), CompileError> {
        if let Runner::Cpu(exe) = &self.runner {
            return Ok(exe.run_borrowed_into(inputs, outputs)?);
        }
        let results = self.run_borrowed(inputs)?;
        if results.len() != outputs.len() {
            return Err(birkhoff_cpu::CpuError::OutputCount {
                expected: results.len(),
                got: outputs.len(),
            }
            .into());
        }
        for ((name, t), out) in results.into_iter().zip(outputs.iter_mut()) {
            copy_into(&name, &t, out)?;
        }
        Ok(())
    }

    /// Like [`run`](Self::run), reusing the tensors in `outputs` when they
    /// are this graph's outputs (pass back what the previous call
    /// returned): with the CPU target a call then allocates nothing.
    pub fn run_into(
        &self,
        inputs: &BTreeMap<String, Tensor>,
        outputs: &mut Vec<(String, Tensor)>,
    ) -> Result<(), CompileError> {
        match &self.runner {
            Runner::Interp => {
                *outputs = interpret(&self.graph, inputs, &InterpOptions::default())?;
                Ok(())
            }
            Runner::Cpu(exe) => Ok(exe.run_into(inputs, outputs)?),
            Runner::Gpu(exe) => {
                *outputs = exe.run(inputs)?;
                Ok(())
            }
        }
    }

    /// Runs once on `inputs` and times every kernel, in program order
    /// (CPU target): where a run's time goes.
    ///
    /// # Errors
    /// As [`run`](Self::run); [`CompileError::NoProfile`] for the
    /// interpreter and the GPU target.
    pub fn profile(
        &self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<Vec<KernelTime>, CompileError> {
        match &self.runner {
            Runner::Cpu(exe) => Ok(exe.profile(inputs)?),
            Runner::Interp => Err(CompileError::NoProfile {
                target: Target::Interp,
            }),
            Runner::Gpu(_) => Err(CompileError::NoProfile {
                target: Target::Gpu,
            }),
        }
    }

    /// The graph that runs (optimized, if optimization was on).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The kernel program (CPU and GPU targets).
    pub fn program(&self) -> Option<&Program> {
        self.program.as_ref()
    }

    /// The recomputation plan the graph was compiled with (if
    /// [`CompileOptions::recompute`] asked for one).
    pub fn recompute_plan(&self) -> Option<&TrainingPlan> {
        self.plan.as_ref()
    }

    /// Bytes of the arena that holds every temporary of a run (CPU and GPU
    /// targets): the memory plan's high-water mark, i.e. the peak of
    /// activation and workspace memory a run really allocates (inputs and
    /// outputs are separate buffers).
    pub fn arena_bytes(&self) -> Option<usize> {
        self.program.as_ref().map(|p| p.arena_bytes)
    }

    /// The largest sum of temporaries live at once, over the run's kernels
    /// (CPU and GPU targets): the arena's lower bound; the difference to
    /// [`arena_bytes`](Self::arena_bytes) is placement gaps.
    pub fn peak_live_bytes(&self) -> Option<usize> {
        self.program.as_ref().map(|p| {
            birkhoff_lower::memory::live_bytes(p)
                .into_iter()
                .max()
                .unwrap_or(0)
        })
    }

    /// The optimizer's fusion report (if optimization was on).
    pub fn fusion_report(&self) -> Option<&Report> {
        self.report.as_ref()
    }

    /// The generated code as text (CLIF for the CPU target, PTX for the
    /// GPU).
    pub fn code(&self) -> Option<String> {
        match &self.runner {
            Runner::Interp => None,
            Runner::Cpu(exe) => Some(exe.to_string()),
            Runner::Gpu(exe) => Some(exe.to_string()),
        }
    }

    /// The GPU executable (GPU target): device timings, the module, the
    /// device.
    pub fn gpu(&self) -> Option<&GpuExecutable> {
        match &self.runner {
            Runner::Gpu(exe) => Some(exe),
            Runner::Interp | Runner::Cpu(_) => None,
        }
    }

    /// Wall time of optimization, lowering and code generation.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }
}
