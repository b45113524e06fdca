//! birkhoff: a tensor compiler that fuses DeepSeek's mHC
//! (Manifold-Constrained Hyper-Connections) layers.
//!
//! This facade is the entry point to the pipeline: it re-exports the graph
//! IR ([`ir`]), the DSL with its model zoo ([`dsl`]), the optimizer
//! ([`opt`]) and the recomputation planner ([`recompute`]), and adds what users and the command line need around them:
//! [`npy`] files, atomic writes, fused-vs-unfused checking ([`testing`]),
//! the IR file-test driver ([`filetest`]) and the training runtime
//! ([`train`]).
//!
//! The canonical end-to-end example (`examples/quickstart.rs`): build a
//! graph with the DSL, print and re-parse its IR, run it in the reference
//! interpreter.
//!
#![doc = concat!("```rust\n", include_str!("../examples/quickstart.rs"), "\n```")]

mod atomic;
mod compile;
pub mod filetest;
pub mod npy;
pub mod testing;
pub mod train;

pub use atomic::write_atomic;
pub use birkhoff_autodiff as autodiff;
pub use birkhoff_cpu as cpu;
pub use birkhoff_dsl as dsl;
pub use birkhoff_gpu as gpu;
pub use birkhoff_ir as ir;
pub use birkhoff_lower as lower;
pub use birkhoff_opt as opt;
pub use birkhoff_recompute as recompute;
pub use compile::{
    CompileError, CompileOptions, Executable, GpuCode, RecomputeOptions, Target, compile,
    compile_with, gpu_code, gpu_module, kernel_program, load_gpu_artifact,
};
