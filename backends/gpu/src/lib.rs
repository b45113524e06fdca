//! birkhoff's GPU backend: kernel IR to PTX through LLVM's NVPTX target,
//! run through the CUDA driver.
//!
//! Two halves, behind two cargo features, so that each machine builds only
//! what it needs:
//!
//! * **code generation** (feature `gpu`, needs LLVM 19): [`compile_module`]
//!   turns a verified kernel [`Program`] into a [`GpuModule`] — the PTX of
//!   every kernel, the launch plan and the buffer plan — and
//!   [`emit_llvm`] prints the LLVM IR it goes through;
//! * **the runtime** (feature `cuda`, on by default; loads the CUDA driver
//!   at run time, so it builds anywhere): [`GpuDevice::open`] finds the
//!   driver and a device, [`GpuExecutable::load`] puts a [`GpuModule`] on
//!   it and [`GpuExecutable::run`] runs it; [`GpuBackend`] does all of it
//!   through the kernel IR's `Backend` interface. Without a driver every
//!   entry point returns [`GpuError::NoDriver`], never panics.
//!
//! A [`GpuModule`] saves to and loads from a versioned artifact file, so a
//! program compiled where LLVM is installed runs where only the driver is.

#[cfg(feature = "gpu")]
pub mod codegen;
mod error;
mod executable;
mod module;
mod runtime;

use birkhoff_ir::kernel::Program;

pub use error::{GpuError, JitError, Result};
pub use executable::{GpuBackend, GpuExecutable, LaunchTiming};
pub use module::{
    ARTIFACT_MAGIC, ARTIFACT_VERSION, BufferInfo, GpuModule, Launch, MAX_BLOCK_THREADS,
    const_storage, from_storage, ptx_entries, to_storage,
};
pub use runtime::{
    DeviceInfo, GpuDevice, arch_runs_on, copy_bandwidth, device_count, driver_present,
};

/// Code generation settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodegenOptions {
    /// The target architecture (`sm_90` for Hopper).
    pub arch: String,
    /// Threads per block for kernels that run one block per iteration of
    /// their parallel loop.
    pub block_threads: u32,
}

impl Default for CodegenOptions {
    fn default() -> Self {
        CodegenOptions {
            arch: "sm_90".to_string(),
            block_threads: 256,
        }
    }
}

/// Whether this build can generate GPU code (the `gpu` feature).
pub const CODEGEN_ENABLED: bool = cfg!(feature = "gpu");

/// Compiles a kernel program to a [`GpuModule`] (PTX, launches, buffers).
///
/// The program is verified first
/// ([`birkhoff_ir::kernel::verify_program`]); an invalid one is refused
/// with [`GpuError::Invalid`]. Fails with [`GpuError::CodegenNotEnabled`]
/// in builds without the `gpu` feature.
pub fn compile_module(program: &Program, opts: &CodegenOptions) -> Result<GpuModule> {
    #[cfg(feature = "gpu")]
    {
        codegen::compile(program, opts)
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = (program, opts);
        Err(GpuError::CodegenNotEnabled)
    }
}

/// Runs a kernel program's generated GPU code in the host emulator
/// (`codegen::emulate`, in builds with the `gpu` feature):
/// its numerics, checked without a device.
///
/// Fails with [`GpuError::CodegenNotEnabled`] in builds without the `gpu`
/// feature.
pub fn emulate(
    program: &Program,
    opts: &CodegenOptions,
    inputs: &std::collections::BTreeMap<String, birkhoff_ir::Tensor>,
) -> Result<Vec<(String, birkhoff_ir::Tensor)>> {
    #[cfg(feature = "gpu")]
    {
        codegen::emulate(program, opts, inputs)
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = (program, opts, inputs);
        Err(GpuError::CodegenNotEnabled)
    }
}

/// The LLVM IR (verified, before optimization) of a kernel program.
///
/// Fails with [`GpuError::CodegenNotEnabled`] in builds without the `gpu`
/// feature.
pub fn emit_llvm(program: &Program, opts: &CodegenOptions) -> Result<String> {
    #[cfg(feature = "gpu")]
    {
        codegen::emit_llvm(program, opts)
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = (program, opts);
        Err(GpuError::CodegenNotEnabled)
    }
}
