//! Errors of lowering.

/// Result with this crate's [`LowerError`].
pub type Result<T, E = LowerError> = std::result::Result<T, E>;

/// Why a graph could not be lowered.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    /// The graph is invalid.
    #[error("input graph: {0}")]
    Input(#[source] birkhoff_ir::VerifyErrors),
    /// An op has no lowering for these operand types (e.g. a matrix
    /// product on integers, which the runtime GEMM does not provide).
    #[error("cannot lower {op} on {types}: {reason}")]
    Unsupported {
        /// Op mnemonic.
        op: String,
        /// Operand types.
        types: String,
        /// Why.
        reason: String,
    },
    /// Lowering produced an invalid program (a bug in lowering).
    #[error("lowering produced an invalid program: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<birkhoff_ir::kernel::KernelVerifyError>),
}
