//! Kernel IR to LLVM IR for `nvptx64-nvidia-cuda`, then PTX (being written).

use birkhoff_ir::kernel::Program;

use crate::{CodegenOptions, GpuError, GpuModule, Result};

/// Compiles a kernel program to PTX and its launch plan.
pub fn compile(program: &Program, opts: &CodegenOptions) -> Result<GpuModule> {
    let _ = (program, opts);
    Err(GpuError::Llvm(
        "GPU code generation is not written yet".into(),
    ))
}

/// The verified, unoptimized LLVM IR of a kernel program.
pub fn emit_llvm(program: &Program, opts: &CodegenOptions) -> Result<String> {
    let _ = (program, opts);
    Err(GpuError::Llvm(
        "GPU code generation is not written yet".into(),
    ))
}
