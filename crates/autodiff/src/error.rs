//! Errors of [`crate::grad`].

use birkhoff_ir::{TensorType, TypeError, VerifyErrors};

/// Why a gradient graph could not be built.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AutodiffError {
    /// The graph to differentiate does not pass the verifier.
    #[error("cannot differentiate an invalid graph: {0}")]
    InvalidGraph(VerifyErrors),
    /// `loss` names no output of the graph.
    #[error("unknown output '{name}' (graph @{graph} has outputs: {known})")]
    UnknownOutput {
        /// The requested loss name.
        name: String,
        /// The graph's name.
        graph: String,
        /// The output names, comma-separated.
        known: String,
    },
    /// A `wrt` name is not an input or parameter of the graph.
    #[error("unknown input '{name}' (graph @{graph} has inputs: {known})")]
    UnknownInput {
        /// The requested input name.
        name: String,
        /// The graph's name.
        graph: String,
        /// The input names, comma-separated.
        known: String,
    },
    /// The loss has more than one element.
    #[error("loss '{name}' must be a scalar (exactly one element), got {ty}")]
    NonScalarLoss {
        /// The loss output's name.
        name: String,
        /// Its type.
        ty: TensorType,
    },
    /// The loss is not of a float type.
    #[error("loss '{name}' must be a float, got {ty}")]
    NonFloatLoss {
        /// The loss output's name.
        name: String,
        /// Its type.
        ty: TensorType,
    },
    /// A `wrt` input is not of a float type, so it has no gradient.
    #[error("cannot differentiate with respect to '{name}': {ty} is not a float type")]
    NonFloatInput {
        /// The input's name.
        name: String,
        /// Its type.
        ty: TensorType,
    },
    /// A `wrt` name is listed twice, or its gradient's name `d_<name>`
    /// would clash with the loss output's name.
    #[error("output name '{name}' would be used twice in the gradient graph")]
    DuplicateName {
        /// The clashing output name.
        name: String,
    },
    /// The loss depends, through a requested input, on an op that has no
    /// vector-Jacobian product (every op of the IR has one today, the
    /// semantic and fused ops through their expansion).
    #[error("op '{op}' (at {value}) has no gradient rule")]
    Unsupported {
        /// The op's mnemonic.
        op: &'static str,
        /// Where it is, as its text-IR value name.
        value: String,
    },
    /// Expanding the semantic and fused ops into primitives failed.
    #[error("cannot expand the fused ops for differentiation: {0}")]
    Expand(String),
    /// Building a backward node failed: a bug in this crate, reported
    /// rather than panicking.
    #[error("internal error building the gradient graph: {0}")]
    Build(#[from] TypeError),
    /// The gradient graph does not verify: a bug in this crate, reported
    /// rather than panicking.
    #[error("internal error: the gradient graph does not verify: {0}")]
    Verify(VerifyErrors),
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, AutodiffError>;
