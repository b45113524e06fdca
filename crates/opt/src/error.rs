//! Errors of the optimizer.

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why optimization failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input graph is invalid.
    #[error("input graph: {0}")]
    Input(#[source] birkhoff_ir::VerifyErrors),
    /// A pass produced an invalid graph (a bug in the optimizer).
    #[error("pass '{pass}' produced an invalid graph: {errors}")]
    PassOutput {
        /// The pass.
        pass: String,
        /// What the verifier found.
        errors: birkhoff_ir::VerifyErrors,
    },
    /// No pass has this name.
    #[error("unknown pass '{name}' (passes: {known})")]
    UnknownPass {
        /// The name asked for.
        name: String,
        /// Comma-separated pass names.
        known: String,
    },
    /// Extraction found no way to compute an output (a bug in a rule).
    #[error("extraction found no acyclic term for output '{output}'")]
    Extraction {
        /// The output.
        output: String,
    },
}
