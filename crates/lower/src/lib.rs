//! Lowering: graph IR to kernel IR.
//!
//! (Being written.)

mod builder;
mod error;
pub mod templates;

pub use builder::ProgramBuilder;
pub use error::{LowerError, Result};

/// How the mHC pre-mix computes its `n(n+2)` projections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Projection {
    /// Inside the fused kernel, in the same sweep over each token's row
    /// as the sum of squares.
    #[default]
    InKernel,
    /// With the runtime's matrix product, then a per-token kernel.
    Gemm,
}

/// Lowering settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct LowerOptions {
    /// How `mhc_pre` / `hc_pre` compute their projections.
    pub projection: Projection,
}
