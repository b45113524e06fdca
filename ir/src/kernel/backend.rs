//! The one narrow interface every backend implements.
//!
//! A backend turns a verified kernel [`Program`] into an artifact that
//! runs it and prints as the backend's own code (CLIF for the CPU, PTX for
//! NVIDIA GPUs). Everything above this trait — lowering, the optimizer,
//! the checking harness — is shared; nothing below it knows about graphs.

use std::collections::BTreeMap;
use std::fmt;

use crate::tensor::Tensor;

use super::Program;

/// Turns kernel IR into runnable code.
pub trait Backend {
    /// The compiled program; its `Display` is the generated code.
    type Artifact: Artifact<Error = Self::Error> + fmt::Display;
    /// What compiling or running can fail with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// A short name (`cpu`, `nvptx`).
    fn name(&self) -> &'static str;

    /// Compiles a program (which the backend verifies first).
    fn compile(&self, program: &Program) -> Result<Self::Artifact, Self::Error>;
}

/// A compiled program.
pub trait Artifact {
    /// What running can fail with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Runs on `inputs` (by name); returns the outputs in signature order.
    fn run(&self, inputs: &BTreeMap<String, Tensor>) -> Result<Vec<(String, Tensor)>, Self::Error>;
}
