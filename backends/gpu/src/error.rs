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
    /// A module is internally inconsistent (buffer indices out of range,
    /// empty launch dimensions, an entry missing from the PTX, …).
    #[error("invalid GPU module: {0}")]
    InvalidModule(String),
    /// A caller passed an unusable argument (zero runs, zero bytes).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}
