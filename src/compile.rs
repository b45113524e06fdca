//! The one entry point: compile a graph for a target and run it.
//!
//! ```no_run
//! use birkhoff::{Target, compile};
//! use birkhoff::dsl::zoo::{ModelArgs, build_model};
//! use birkhoff::testing::random_inputs;
//!
//! let model = build_model("mhc-sublayer", &ModelArgs::default())?;
//! let exe = compile(&model.graph, Target::Cpu)?;
//! let outputs = exe.run(&random_inputs(&model.graph, &model.inits, 0))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use birkhoff_cpu::{CpuBackend, CpuExecutable, CpuOptions};
use birkhoff_ir::kernel::Program;
use birkhoff_ir::{Graph, InterpOptions, Tensor, interpret};
use birkhoff_lower::{LowerOptions, Projection, lower};
use birkhoff_opt::Report;

/// Where a graph runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The reference interpreter (f64; slow; the oracle).
    Interp,
    /// Native code for this machine's CPU, through Cranelift.
    Cpu,
}

/// Compilation settings.
#[derive(Clone, Copy, Debug)]
pub struct CompileOptions {
    /// The target.
    pub target: Target,
    /// Run the optimizer (fusion) first.
    pub optimize: bool,
    /// Threads for parallel loops (`None`: one per core).
    pub threads: Option<usize>,
    /// How the mHC pre-mix computes its projections.
    pub projection: Projection,
    /// Bounds-check every memory access in generated code (for tests).
    pub checked: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            target: Target::Cpu,
            optimize: true,
            threads: None,
            projection: Projection::default(),
            checked: false,
        }
    }
}

/// Why compiling or running failed.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The graph or its inputs are invalid (interpreter errors included).
    #[error("{0}")]
    Ir(#[from] birkhoff_ir::Error),
    /// The optimizer failed.
    #[error("{0}")]
    Opt(#[from] birkhoff_opt::Error),
    /// Lowering failed.
    #[error("{0}")]
    Lower(#[from] birkhoff_lower::LowerError),
    /// Code generation or the CPU runtime failed.
    #[error("{0}")]
    Cpu(#[from] birkhoff_cpu::CpuError),
}

enum Backend {
    Interp,
    Cpu(Box<CpuExecutable>),
}

/// A compiled graph, ready to run many times.
pub struct Executable {
    graph: Graph,
    program: Option<Program>,
    report: Option<Report>,
    backend: Backend,
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
pub fn compile_with(graph: &Graph, opts: &CompileOptions) -> Result<Executable, CompileError> {
    let start = Instant::now();
    birkhoff_ir::verify(graph).map_err(birkhoff_ir::Error::from)?;
    let (graph, report) = if opts.optimize {
        let o = birkhoff_opt::optimize(graph, |_| false)?;
        (o.graph, Some(o.report))
    } else {
        (graph.clone(), None)
    };
    let (program, backend) = match opts.target {
        Target::Interp => (None, Backend::Interp),
        Target::Cpu => {
            let program = lower(
                &graph,
                &LowerOptions {
                    projection: opts.projection,
                    ..LowerOptions::default()
                },
            )?;
            let cpu = CpuOptions {
                threads: opts.threads.unwrap_or(0),
                checked: opts.checked,
                ..CpuOptions::default()
            };
            // Through the backend interface every target implements.
            let exe = birkhoff_ir::kernel::Backend::compile(&CpuBackend(cpu), &program)?;
            (Some(program), Backend::Cpu(Box::new(exe)))
        }
    };
    Ok(Executable {
        graph,
        program,
        report,
        backend,
        compile_time: start.elapsed(),
    })
}

impl Executable {
    /// Runs on `inputs` (one tensor per graph input, by name); returns
    /// the outputs by name, in signature order.
    pub fn run(
        &self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<Vec<(String, Tensor)>, CompileError> {
        match &self.backend {
            Backend::Interp => Ok(interpret(&self.graph, inputs, &InterpOptions::default())?),
            Backend::Cpu(exe) => Ok(exe.run(inputs)?),
        }
    }

    /// Like [`run`](Self::run), reusing the tensors in `outputs` when they
    /// are this graph's outputs (pass back what the previous call
    /// returned): with the CPU target a call then allocates nothing.
    pub fn run_into(
        &self,
        inputs: &BTreeMap<String, Tensor>,
        outputs: &mut Vec<(String, Tensor)>,
    ) -> Result<(), CompileError> {
        match &self.backend {
            Backend::Interp => {
                *outputs = interpret(&self.graph, inputs, &InterpOptions::default())?;
                Ok(())
            }
            Backend::Cpu(exe) => Ok(exe.run_into(inputs, outputs)?),
        }
    }

    /// The graph that runs (optimized, if optimization was on).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The kernel program (CPU target).
    pub fn program(&self) -> Option<&Program> {
        self.program.as_ref()
    }

    /// The optimizer's fusion report (if optimization was on).
    pub fn fusion_report(&self) -> Option<&Report> {
        self.report.as_ref()
    }

    /// The generated code as text (CLIF for the CPU target).
    pub fn code(&self) -> Option<String> {
        match &self.backend {
            Backend::Interp => None,
            Backend::Cpu(exe) => Some(exe.to_string()),
        }
    }

    /// Wall time of optimization, lowering and code generation.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }
}
