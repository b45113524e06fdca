//! birkhoff: a tensor compiler that fuses DeepSeek's mHC
//! (Manifold-Constrained Hyper-Connections) layers.
//!
//! This facade is the entry point to the pipeline: it re-exports the graph
//! IR ([`ir`]) and the DSL with its model zoo ([`dsl`]), and adds the
//! interop the command line needs — [`npy`] files and atomic writes.
//!
//! The canonical end-to-end example (`examples/quickstart.rs`): build a
//! graph with the DSL, print and re-parse its IR, run it in the reference
//! interpreter.
//!
#![doc = concat!("```rust\n", include_str!("../examples/quickstart.rs"), "\n```")]

mod atomic;
pub mod filetest;
pub mod npy;

pub use atomic::write_atomic;
pub use birkhoff_dsl as dsl;
pub use birkhoff_ir as ir;
