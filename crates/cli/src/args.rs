//! Command-line syntax.

use std::path::PathBuf;

use birkhoff::dsl::zoo::mhc::SinkhornVariant;
use birkhoff::dsl::zoo::{LayerFn, ModelArgs};
use birkhoff::ir::DType;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// A tensor compiler that fuses DeepSeek's mHC layers.
#[derive(Parser, Debug)]
#[command(name = "birkhoff", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the model zoo with each model's flags and defaults.
    Models,
    /// Print a model's or file's graph IR (text or Graphviz DOT).
    Dump(DumpArgs),
    /// Parse and verify IR files (or import ONNX models); errors say where.
    Check(CheckArgs),
    /// Optimize a model or IR file: fuse mHC, dump IR after passes, report.
    Compile(CompileArgs),
    /// Run a model or IR file on .npy inputs and write .npy outputs.
    Run(RunArgs),
    /// Compare the optimized (or compiled) graph with the original on random inputs.
    Compare(CompareArgs),
    /// The old name of `compare` (kept for one release; prints a note).
    #[command(hide = true)]
    Verify(CompareArgs),
    /// Run IR file tests (files or directories of .bir files).
    Test(TestArgs),
    /// Time a compiled model: median, min-max, GB/s, GFLOP/s.
    Bench(BenchArgs),
    /// Build the default mHC transformer block, run it, and report.
    Demo(DemoArgs),
    /// Describe a CUDA device and measure its copy bandwidth (or, with --jit, its JIT times).
    GpuInfo(GpuInfoArgs),
    /// Check the generated GPU code without a GPU: spills, launch plans, a time model.
    GpuAudit(GpuAuditArgs),
    /// Train the byte-level language model; write metrics, charts and a checkpoint.
    Train(TrainArgs),
    /// Draw several training runs (their --out directories) on shared charts.
    TrainCompare(TrainCompareArgs),
    /// Plan recomputation for training: the mHC block size and its memory.
    Plan(PlanArgs),
    /// Import an ONNX model: its graph as IR text, its weights as safetensors.
    Import(ImportArgs),
}

/// `birkhoff import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The ONNX model (its external-data files beside it).
    pub model: PathBuf,
    /// Where the IR text goes.
    #[arg(short, long, value_name = "FILE.bir")]
    pub output: PathBuf,
    /// Where the initializers go [default: the output with the extension
    /// .safetensors].
    #[arg(long, value_name = "FILE.safetensors")]
    pub weights: Option<PathBuf>,
    /// Size of a symbolic dimension (repeatable).
    #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
    pub dims: Vec<(String, usize)>,
}

/// Parses `NAME=SIZE`.
pub fn parse_dim(s: &str) -> Result<(String, usize), String> {
    let (name, size) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=SIZE"))?;
    if name.is_empty() {
        return Err(format!("`{s}` has no dimension name"));
    }
    let size = size
        .parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("`{size}` is not a size (a positive integer)"))?;
    Ok((name.to_string(), size))
}

/// Flags for ONNX models and for weights kept in a file.
#[derive(Args, Debug, Default, Clone)]
pub struct ImportFlags {
    /// Size of a symbolic dimension of an ONNX model (repeatable).
    #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim, help_heading = "Inputs")]
    pub dims: Vec<(String, usize)>,
    /// Values for inputs by name from a safetensors file (such as the
    /// weights `birkhoff import` writes); --inputs files still win.
    #[arg(long, value_name = "FILE.safetensors", help_heading = "Inputs")]
    pub weights: Option<PathBuf>,
}

/// `birkhoff plan`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The model to plan: `lm`, the byte-level language model.
    pub model: String,
    /// How sublayers are connected; only mhc is planned so far.
    #[arg(long, default_value = "mhc", value_parser = crate::train::parse_connection)]
    pub connection: birkhoff::dsl::zoo::Connection,
    /// Layers L, each with one mHC connection.
    #[arg(long, value_name = "L")]
    pub layers: usize,
    /// Residual streams n.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub streams: usize,
    /// Hidden width C.
    #[arg(long, value_name = "C")]
    pub hidden: usize,
    /// Tokens per step T (batch × sequence).
    #[arg(long, value_name = "T")]
    pub tokens: usize,
    /// Activation element type.
    #[arg(long, value_enum, default_value = "bf16")]
    pub dtype: PlanDType,
    /// Largest allowed peak activation memory, e.g. 40GiB, 512MiB, 1.5GB.
    #[arg(long, value_name = "SIZE", value_parser = crate::plan::parse_bytes)]
    pub memory_budget: Option<u64>,
    /// Layers where a block must start (pipeline stages), e.g. 0,15,30,45.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub boundaries: Option<Vec<usize>>,
    /// Write a PNG chart of peak memory against block size.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
}

/// Activation element types for `birkhoff plan`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum PlanDType {
    /// 2 bytes.
    Bf16,
    /// 4 bytes.
    F32,
}

/// `birkhoff train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The model to train: `lm`, the byte-level language model.
    pub model: String,
    /// How sublayers are connected: residual, hc or mhc.
    #[arg(long, default_value = "mhc", value_parser = crate::train::parse_connection)]
    pub connection: birkhoff::dsl::zoo::Connection,
    /// Layers (each attention + SwiGLU MLP).
    #[arg(long, value_name = "L")]
    pub layers: Option<usize>,
    /// Hidden width C.
    #[arg(long, value_name = "C")]
    pub hidden: Option<usize>,
    /// Residual streams n (hc and mhc).
    #[arg(long, value_name = "N")]
    pub streams: Option<usize>,
    /// Attention heads (must divide C).
    #[arg(long, value_name = "H")]
    pub heads: Option<usize>,
    /// SwiGLU width [default: 4·C].
    #[arg(long, value_name = "F")]
    pub ffn: Option<usize>,
    /// Sinkhorn iterations (mhc).
    #[arg(long, value_name = "K")]
    pub iters: Option<usize>,
    /// Sequences per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Bytes per sequence.
    #[arg(long, default_value_t = 64)]
    pub seq: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Decoupled weight decay (matrices only).
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Warm-up steps [default: 5% of --steps].
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Seed of the initialization and of the batches.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the training step runs.
    #[arg(long, alias = "backend", value_enum, default_value = "cpu")]
    pub target: TargetArg,
    /// A text file to train on (bytes; 10% held out) [default: the built-in corpus].
    #[arg(long, value_name = "FILE")]
    pub corpus: Option<PathBuf>,
    /// Output directory: metrics.csv, metrics.json, checkpoint.safetensors, *.png.
    #[arg(long, default_value = "train-out")]
    pub out: PathBuf,
    /// Validation loss every N steps (and at the end).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub eval_every: u64,
    /// Checkpoint (and metrics) every N steps (and at the end).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: u64,
    /// Continue from --out's checkpoint up to --steps.
    #[arg(long)]
    pub resume: bool,
    /// Stop after N steps of this invocation (checkpointed; continue with
    /// --resume and the same flags).
    #[arg(long, value_name = "N")]
    pub stop_after: Option<usize>,
    /// What the backward pass recomputes instead of keeping: none, auto
    /// (the memory model's optimal mHC blocks; the general planner for
    /// models without mHC) or block=K (keep the residual stream every K
    /// mHC connections).
    #[arg(long, default_value = "none", value_name = "MODE")]
    pub recompute: birkhoff_train::Recompute,
    /// After training, print where the steps' time went (the gradient
    /// program, the host's work, the AdamW program; medians), then time
    /// every kernel of one gradient step (CPU) and write the profile to
    /// DIR/profile.txt (the slowest kernels are printed too).
    #[arg(long)]
    pub profile: bool,
}

/// `birkhoff train-compare`.
#[derive(Args, Debug)]
pub struct TrainCompareArgs {
    /// Training output directories (each with its metrics.json).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where the charts go.
    #[arg(long, default_value = "train-compare")]
    pub out: PathBuf,
}

/// Flags that size and configure zoo models (see `birkhoff models`).
#[derive(Args, Debug, Default, Clone)]
pub struct ModelFlags {
    /// Tokens T.
    #[arg(long, value_name = "T", help_heading = "Model flags")]
    pub tokens: Option<usize>,
    /// Residual streams n.
    #[arg(long, value_name = "N", help_heading = "Model flags")]
    pub streams: Option<usize>,
    /// Hidden width C.
    #[arg(long, value_name = "C", help_heading = "Model flags")]
    pub hidden: Option<usize>,
    /// Attention heads (must divide C).
    #[arg(long, value_name = "H", help_heading = "Model flags")]
    pub heads: Option<usize>,
    /// SwiGLU width.
    #[arg(long, value_name = "F", help_heading = "Model flags")]
    pub ffn: Option<usize>,
    /// Stacked transformer layers.
    #[arg(long, value_name = "L", help_heading = "Model flags")]
    pub layers: Option<usize>,
    /// Sinkhorn variant.
    #[arg(long, value_enum, help_heading = "Model flags")]
    pub sinkhorn: Option<SinkhornArg>,
    /// Sinkhorn rounds.
    #[arg(long, value_name = "K", help_heading = "Model flags")]
    pub iters: Option<usize>,
    /// Added to every Sinkhorn denominator.
    #[arg(
        long,
        value_name = "E",
        allow_negative_numbers = true,
        help_heading = "Model flags"
    )]
    pub eps: Option<f64>,
    /// RMS normalization epsilon.
    #[arg(long, allow_negative_numbers = true, help_heading = "Model flags")]
    pub norm_eps: Option<f64>,
    /// Added to the pre gates.
    #[arg(long, allow_negative_numbers = true, help_heading = "Model flags")]
    pub pre_eps: Option<f64>,
    /// Post gate multiplier.
    #[arg(long, allow_negative_numbers = true, help_heading = "Model flags")]
    pub post_mult: Option<f64>,
    /// Layer function of mhc-sublayer.
    #[arg(long, value_enum, help_heading = "Model flags")]
    pub layer_fn: Option<LayerFnArg>,
    /// Element type of every tensor of a zoo model.
    #[arg(long, value_enum, help_heading = "Model flags")]
    pub dtype: Option<DTypeArg>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum SinkhornArg {
    Paper,
    Tilekernels,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum LayerFnArg {
    Identity,
    LinearTanh,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum DTypeArg {
    F32,
    Bf16,
    F64,
}

impl ModelFlags {
    /// The zoo's view of these flags.
    pub fn to_model_args(&self) -> ModelArgs {
        ModelArgs {
            tokens: self.tokens,
            streams: self.streams,
            hidden: self.hidden,
            heads: self.heads,
            ffn: self.ffn,
            layers: self.layers,
            sinkhorn: self.sinkhorn.map(|s| match s {
                SinkhornArg::Paper => SinkhornVariant::Paper,
                SinkhornArg::Tilekernels => SinkhornVariant::TileKernels,
            }),
            iters: self.iters,
            eps: self.eps,
            norm_eps: self.norm_eps,
            pre_eps: self.pre_eps,
            post_mult: self.post_mult,
            layer_fn: self.layer_fn.map(|l| match l {
                LayerFnArg::Identity => LayerFn::Identity,
                LayerFnArg::LinearTanh => LayerFn::LinearTanh,
            }),
            dtype: self.dtype.map(|d| match d {
                DTypeArg::F32 => DType::F32,
                DTypeArg::Bf16 => DType::Bf16,
                DTypeArg::F64 => DType::F64,
            }),
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpFormat {
    Text,
    Dot,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// A zoo model name (see `birkhoff models`), a .bir file or an .onnx model.
    pub source: String,
    #[command(flatten)]
    pub model: ModelFlags,
    #[command(flatten)]
    pub import: ImportFlags,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: DumpFormat,
    /// Write to this file instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// IR files to parse and verify, or ONNX models to import and verify.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Size of a symbolic dimension of an ONNX model (repeatable).
    #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
    pub dims: Vec<(String, usize)>,
}

/// Where a graph runs, or what it is compiled for (`--target`; the old
/// spelling `--backend` is still accepted).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetArg {
    /// The reference interpreter.
    Interp,
    /// Native code for this machine's CPU, through Cranelift.
    Cpu,
    /// PTX on a CUDA GPU (compiling needs a build with `--features gpu`).
    Gpu,
}

impl From<TargetArg> for birkhoff::Target {
    fn from(t: TargetArg) -> Self {
        match t {
            TargetArg::Interp => birkhoff::Target::Interp,
            TargetArg::Cpu => birkhoff::Target::Cpu,
            TargetArg::Gpu => birkhoff::Target::Gpu,
        }
    }
}

impl TargetArg {
    /// The spelling on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TargetArg::Interp => "interp",
            TargetArg::Cpu => "cpu",
            TargetArg::Gpu => "gpu",
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectionArg {
    /// mhc_pre computes its projections in its own sweep over each token.
    InKernel,
    /// mhc_pre calls the runtime GEMM for its projections.
    Gemm,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrecisionArg {
    /// Compute every float in f64 (the oracle).
    F64,
    /// Round f32 values after every operation.
    F32,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A zoo model name (see `birkhoff models`), a .bir file or an .onnx model.
    #[arg(required_unless_present = "artifact", conflicts_with = "artifact")]
    pub source: Option<String>,
    /// Run a GPU artifact (.bkx, from `compile --target gpu -o FILE`)
    /// instead of a model: needs only the CUDA driver. Inputs are drawn or
    /// read by the artifact's input names and types.
    #[arg(long, value_name = "FILE")]
    pub artifact: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelFlags,
    #[command(flatten)]
    pub import: ImportFlags,
    /// Directory holding NAME.npy for each graph input.
    #[arg(long, value_name = "DIR")]
    pub inputs: Option<PathBuf>,
    /// Directory to write NAME.npy for each graph output (created if missing).
    #[arg(long, value_name = "DIR")]
    pub outputs: Option<PathBuf>,
    /// Draw inputs that have no .npy file from this seed.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Where to run [default: interp; gpu for --artifact].
    #[arg(long, alias = "backend", value_enum)]
    pub target: Option<TargetArg>,
    /// CUDA device ordinal (--target gpu, or --artifact) [default: 0].
    #[arg(long, value_name = "N")]
    pub device: Option<usize>,
    /// Interpreter arithmetic precision (--target interp) [default: f64].
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Accept NaN and infinite input values instead of rejecting them.
    #[arg(long)]
    pub allow_nonfinite: bool,
    /// Optimize (fuse) the graph before running it.
    #[arg(long)]
    pub optimize: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct CompileArgs {
    /// A zoo model name (see `birkhoff models`), a .bir file or an .onnx model.
    pub source: String,
    #[command(flatten)]
    pub model: ModelFlags,
    #[command(flatten)]
    pub import: ImportFlags,
    /// Write the IR after this pass (or `all`) into --dump-dir; repeatable.
    #[arg(long, value_name = "PASS|all")]
    pub dump_after: Vec<String>,
    /// Directory for --dump-after files (created if missing).
    #[arg(long, value_name = "DIR", default_value = "dumps")]
    pub dump_dir: PathBuf,
    /// Format of the --dump-after files: IR text (`NN-pass.bir`) or
    /// Graphviz DOT (`NN-pass.dot`, one picture per pass).
    #[arg(long, value_enum, default_value = "text")]
    pub dump_format: DumpFormat,
    /// Print the fusion report.
    #[arg(long)]
    pub fusion_report: bool,
    /// Format of the fusion report.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
    /// Write the result to this file (else it goes to stdout, unless
    /// --fusion-report is given). With --target gpu and no --emit, the
    /// file is a GPU artifact (.bkx) for `run --artifact`, and -o is
    /// required.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// What to compile for: cpu, or gpu (needs a build with `--features
    /// gpu`) [default: cpu, or gpu with --emit llvm|ptx]; interp is not a
    /// compilation target.
    #[arg(long, value_enum)]
    pub target: Option<TargetArg>,
    /// What to emit: the optimized graph IR, the kernel IR lowering makes
    /// of it, the CPU backend's Cranelift IR, or the GPU backend's LLVM IR
    /// or PTX [default: graph; with --target gpu, an artifact (-o)].
    #[arg(long, value_enum)]
    pub emit: Option<EmitArg>,
    /// Skip the optimizer (emit the unfused program).
    #[arg(long)]
    pub unfused: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmitArg {
    /// Graph IR text.
    Graph,
    /// Kernel IR text, as lowered for the target.
    KernelIr,
    /// Cranelift IR of every kernel (CPU target).
    Clif,
    /// LLVM IR of every kernel (GPU target).
    Llvm,
    /// PTX of every kernel (GPU target).
    Ptx,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// A zoo model name (see `birkhoff models`), a .bir file or an .onnx model.
    pub source: String,
    #[command(flatten)]
    pub model: ModelFlags,
    #[command(flatten)]
    pub import: ImportFlags,
    /// Random input sets to try.
    #[arg(long, default_value_t = 8)]
    pub cases: usize,
    /// Seed of the first input set (case i uses seed + i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the optimized graph runs.
    #[arg(long, alias = "backend", value_enum, default_value = "interp")]
    pub target: TargetArg,
    /// CUDA device ordinal (--target gpu).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub device: usize,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Seed for the random inputs and weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct TestArgs {
    /// .bir files or directories holding them.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A zoo model name (see `birkhoff models`), a .bir file or an .onnx model.
    pub source: String,
    #[command(flatten)]
    pub model: ModelFlags,
    #[command(flatten)]
    pub import: ImportFlags,
    /// Where to run.
    #[arg(long, alias = "backend", value_enum, default_value = "cpu")]
    pub target: TargetArg,
    /// Skip the optimizer (time birkhoff's own unfused path).
    #[arg(long)]
    pub unfused: bool,
    /// Threads for parallel loops (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// How mhc_pre computes its projections [default: gemm, on every
    /// target].
    #[arg(long, value_enum)]
    pub projection: Option<ProjectionArg>,
    /// CUDA device ordinal (--target gpu).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub device: usize,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object: model, backend (the target), inputs (name -> type),
    /// median_s, min_s, max_s, bytes (minimal traffic), gbps, flops, ...;
    /// on the GPU also device and launches [{entry, kernel, median_s}].
    #[arg(long)]
    pub json: bool,
    /// Allocate fresh output tensors on every call (as eager peers do)
    /// instead of reusing the previous call's. The previous call's
    /// outputs are freed before the clock starts, as in the peers' timers.
    #[arg(long)]
    pub fresh_outputs: bool,
    /// After timing, run once more timing every kernel (CPU) and print
    /// the slowest, with their share of the run (on stderr).
    #[arg(long)]
    pub profile: bool,
}

/// `birkhoff gpu-audit`.
#[derive(Args, Debug)]
pub struct GpuAuditArgs {
    /// Tokens of the mHC stages and backward ops.
    #[arg(long, value_name = "T", default_value_t = 8192)]
    pub tokens: usize,
    /// Hidden width of the mHC stages and backward ops.
    #[arg(long, value_name = "C", default_value_t = 4096)]
    pub hidden: usize,
    /// Residual streams.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub streams: usize,
    /// Tokens of the transformer blocks.
    #[arg(long, value_name = "T", default_value_t = 2048)]
    pub block_tokens: usize,
    /// Hidden width of the transformer blocks.
    #[arg(long, value_name = "C", default_value_t = 2048)]
    pub block_hidden: usize,
    /// Attention heads of the transformer blocks.
    #[arg(long, value_name = "H", default_value_t = 16)]
    pub heads: usize,
    /// The ptxas to assemble with [default: $PTXAS, else ptxas on PATH].
    #[arg(long, value_name = "PATH")]
    pub ptxas: Option<PathBuf>,
    /// Fail when no ptxas is found (else spills are not checked).
    #[arg(long)]
    pub require_ptxas: bool,
    /// Audit only the programs whose name contains this (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub only: Vec<String>,
    /// Report this finding but do not fail on it (repeatable): spills,
    /// serial-matmul, small-grid, replicated-scalar-work, over-floor.
    #[arg(long, value_name = "FINDING")]
    pub allow: Vec<String>,
    /// Known findings (program, entry, finding per line) not to fail on;
    /// a listed finding that no longer occurs fails until removed.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Write the findings that count to FILE, in the baseline's format.
    #[arg(long, value_name = "FILE")]
    pub write_baseline: Option<PathBuf>,
    /// Print one JSON array: per program its launches, their figures and findings.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print one markdown table, a row per program (model time, floor, spills, findings).
    #[arg(long)]
    pub markdown: bool,
}

#[derive(Args, Debug)]
pub struct GpuInfoArgs {
    /// CUDA device ordinal.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub device: usize,
    /// Size of the buffer the bandwidth test copies, in MiB.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub copy_mib: usize,
    /// Timed copies (the median is reported).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Print one JSON object: {"device", "sms", "memory_bytes",
    /// "driver_version", "copy_gbps", "copy_bytes", ...}; copy_gbps counts
    /// bytes read plus bytes written, copy_bytes is the size of the copied
    /// buffer. With --jit: the device fields and "jit" [{model, dtype,
    /// fused, launches, ptx_bytes, codegen_s, jit_s, error, jit_log}],
    /// "jit_modules", "jit_failed", "jit_total_s", "jit_max_s".
    #[arg(long)]
    pub json: bool,
    /// Instead of the copy bandwidth: generate the PTX of every zoo model
    /// (f32 and bf16, fused and unfused, at the zoo's default shapes) and
    /// load each on the device, reporting the seconds the driver's JIT
    /// compiler took per module; a module the driver rejects is reported
    /// with its JIT log and the command fails after the others ran. Needs a
    /// build with `--features gpu`. Set CUDA_CACHE_DISABLE=1 to time cold
    /// compiles (the driver caches what it compiled before).
    #[arg(long, conflicts_with_all = ["copy_mib", "runs"])]
    pub jit: bool,
}
