//! birkhoff: a tensor compiler that fuses DeepSeek's mHC
//! (Manifold-Constrained Hyper-Connections) layers.
//!
//! This facade is the entry point to the pipeline: one [`compile`] call
//! (optimize → recompute → lower → code generation) for every target, and
//! the pipeline's crates re-exported under short names: the graph IR
//! ([`ir`]), the DSL with its model zoo ([`dsl`]), the optimizer ([`opt`]),
//! autodiff ([`autodiff`]), the recomputation planner ([`recompute`]),
//! lowering ([`lower`]), the backends ([`cpu`], [`gpu`]) and `.npy` files
//! ([`npy`]). [`compare`] checks a compiled or optimized graph against the
//! reference interpreter, and [`write_atomic`] writes files that appear
//! complete or not at all.
//!
//! Training (`birkhoff-train`) and the IR file tests (`birkhoff-filetests`)
//! are crates of their own, built on this one.
//!
//! The canonical end-to-end example (`examples/quickstart.rs`): build a
//! graph with the DSL, print and re-parse its IR, run it in the reference
//! interpreter.
//!
#![doc = concat!("```rust\n", include_str!("../examples/quickstart.rs"), "\n```")]

pub mod compare;
mod compile;
#[cfg(feature = "gpu")]
pub mod gpu_audit;

pub use birkhoff_autodiff as autodiff;
pub use birkhoff_cpu as cpu;
pub use birkhoff_dsl as dsl;
pub use birkhoff_gpu as gpu;
pub use birkhoff_io::npy;
pub use birkhoff_io::safetensors;
pub use birkhoff_io::{ensure_memory, read_bounded, read_text, stage, write_atomic};
pub use birkhoff_ir as ir;
pub use birkhoff_lower as lower;
pub use birkhoff_onnx as onnx;
pub use birkhoff_opt as opt;
pub use birkhoff_recompute as recompute;
pub use compile::{
    CompileError, CompileOptions, Executable, GpuCode, RecomputeOptions, Target, compile,
    compile_with, gpu_code, gpu_module, kernel_program, load_gpu_artifact,
};
