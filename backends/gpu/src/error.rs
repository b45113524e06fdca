//! Errors of the GPU backend.

/// Result with this crate's [`GpuError`].
pub type Result<T, E = GpuError> = std::result::Result<T, E>;

/// Why compiling, loading or running on a GPU failed.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// This build has no GPU code generation (the `gpu` cargo feature).
    #[error("this build cannot generate GPU code: rebuild with `--features gpu` (needs LLVM 19)")]
    CodegenNotEnabled,
    /// This build has no CUDA runtime (the `cuda` cargo feature).
    #[error("this build has no CUDA runtime: rebuild with the `cuda` feature")]
    CudaNotEnabled,
    /// No CUDA driver library could be loaded on this machine.
    #[error("no CUDA driver found (libcuda could not be loaded)")]
    NoDriver,
    /// The program failed [`birkhoff_ir::kernel::verify_program`] (the
    /// same message as the CPU backend's).
    #[error("invalid program: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<birkhoff_ir::kernel::KernelVerifyError>),
    /// The kernel program cannot be compiled for the GPU.
    #[error("cannot compile kernel {kernel} for the GPU: {message}")]
    Unsupported {
        /// The kernel.
        kernel: String,
        /// Why.
        message: String,
    },
    /// LLVM rejected the generated module (a bug in code generation).
    #[error("LLVM: {0}")]
    Llvm(String),
    /// An artifact file could not be written or read.
    #[error("artifact {path}: {message}")]
    Artifact {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// An input is missing, unknown or of the wrong type.
    #[error("input '{name}': {message}")]
    Input {
        /// Input name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The CUDA driver reported an error.
    #[error("CUDA: {0}")]
    Cuda(String),
    /// The driver's JIT compiler rejected a module's PTX (boxed: the
    /// details are large and rare).
    #[error("CUDA: {0}")]
    Jit(Box<JitError>),
    /// A module is internally inconsistent (buffer indices out of range,
    /// empty launch dimensions, an entry missing from the PTX, …).
    #[error("invalid GPU module: {0}")]
    InvalidModule(String),
    /// A caller passed an unusable argument (zero runs, zero bytes).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Why the driver's JIT compiler rejected a module's PTX
/// ([`GpuError::Jit`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the driver rejected the PTX of @{module} (target {target}) on {device}: {cause}; JIT log: {}",
    if log.is_empty() { "(empty)" } else { log.as_str() }
)]
pub struct JitError {
    /// The module's name (its graph's).
    pub module: String,
    /// The PTX target it was generated for (`sm_90`).
    pub target: String,
    /// The device's architecture (`sm_90`).
    pub device: String,
    /// The driver's error: its name and description.
    pub cause: String,
    /// The JIT compiler's error log (or, if that is empty, its info log)
    /// on one line: control characters escaped (a newline reads `\n`), at
    /// most 2000 characters kept.
    pub log: String,
}
