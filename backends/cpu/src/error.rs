//! The CPU backend's error type.

use birkhoff_ir::TensorType;
use birkhoff_ir::kernel::KernelVerifyError;

/// Everything that can go wrong compiling or running a program on the CPU.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// The program failed [`birkhoff_ir::kernel::verify_program`].
    #[error("invalid program: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<KernelVerifyError>),
    /// The program is valid but this backend cannot compile it.
    #[error("kernel {kernel}: {message}")]
    Unsupported {
        /// The kernel's name.
        kernel: String,
        /// Why.
        message: String,
    },
    /// The host is not a target Cranelift supports.
    #[error("unsupported host: {0}")]
    Host(String),
    /// A Cranelift setting was rejected.
    #[error("code generator setting: {0}")]
    Setting(#[from] cranelift_codegen::settings::SetError),
    /// Cranelift failed to compile a function.
    #[error("code generation: {0}")]
    Codegen(#[from] Box<cranelift_codegen::CodegenError>),
    /// Cranelift's module layer failed (declaring, defining or linking).
    #[error("module: {0}")]
    Module(#[from] Box<cranelift_module::ModuleError>),
    /// The program's buffers need more memory than the system has.
    #[error("{0}")]
    OutOfMemory(String),
    /// The worker threads could not be started.
    #[error("thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
    /// A program input was not supplied.
    #[error("input '{name}' is missing (expected {expected})")]
    MissingInput {
        /// The input's name.
        name: String,
        /// Its declared type.
        expected: TensorType,
    },
    /// A tensor was supplied under a name the program does not have.
    #[error("unknown input '{name}' (the program takes: {known})")]
    UnknownInput {
        /// The name supplied.
        name: String,
        /// The program's input names, comma-separated.
        known: String,
    },
    /// An input has the wrong dtype or shape.
    #[error("input '{name}': expected {expected}, got {got}")]
    InputType {
        /// The input's name.
        name: String,
        /// Its declared type.
        expected: TensorType,
        /// The supplied tensor's type.
        got: TensorType,
    },
    /// Caller memory for an output has the wrong dtype, shape or length.
    #[error("output '{name}': expected {expected}, got {got}")]
    OutputType {
        /// The output's name.
        name: String,
        /// Its type.
        expected: TensorType,
        /// The supplied memory's type.
        got: TensorType,
    },
    /// Caller memory was given for a different number of outputs.
    #[error("the program has {expected} outputs, memory was given for {got}")]
    OutputCount {
        /// The program's outputs.
        expected: usize,
        /// The tensors given.
        got: usize,
    },
    /// Checked mode caught an access outside its buffer or scratch array.
    #[error("kernel {kernel}: out-of-bounds {access}")]
    OutOfBounds {
        /// The kernel's name.
        kernel: String,
        /// The access, as printed kernel IR.
        access: String,
    },
}

impl From<cranelift_codegen::CodegenError> for CpuError {
    fn from(e: cranelift_codegen::CodegenError) -> Self {
        CpuError::Codegen(Box::new(e))
    }
}

impl From<cranelift_module::ModuleError> for CpuError {
    fn from(e: cranelift_module::ModuleError) -> Self {
        CpuError::Module(Box::new(e))
    }
}

/// The CPU backend's result type.
pub type Result<T> = std::result::Result<T, CpuError>;
