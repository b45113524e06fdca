//! Errors of the IR crate.

use std::fmt;

use crate::graph::ValueId;
use crate::types::TensorType;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an op cannot be applied to its operands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    /// Wrong operand count.
    #[error("{op} takes {expected} operand(s), got {got}")]
    Arity {
        /// Op mnemonic.
        op: &'static str,
        /// Expected count, spelled out (`2`, `at least 1`).
        expected: String,
        /// Actual count.
        got: usize,
    },
    /// An operand's element type is not allowed.
    #[error("{op} is not defined for {dtype} operands")]
    DType {
        /// Op mnemonic.
        op: &'static str,
        /// The offending element type.
        dtype: crate::types::DType,
    },
    /// Operands that must agree do not.
    #[error("{op} operands disagree: {a} vs {b}")]
    Mismatch {
        /// Op mnemonic.
        op: &'static str,
        /// First operand type.
        a: TensorType,
        /// Second operand type.
        b: TensorType,
    },
    /// An attribute does not fit the operand (axis out of range, bad
    /// permutation, incompatible shapes, …).
    #[error("{op}: {message}")]
    Invalid {
        /// Op mnemonic.
        op: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// One verifier finding, located at a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// The offending value, if the error is about one node.
    pub value: Option<ValueId>,
    /// That value as the text form spells it (`%3`, `%h_pre`; empty for
    /// graph-level errors).
    pub value_name: String,
    /// The offending node as printed text (empty for graph-level errors).
    pub node_text: String,
    /// What is wrong.
    pub message: String,
    /// Line and column in the source text, when the graph was parsed.
    pub location: Option<(usize, usize)>,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, col)) = self.location {
            write!(f, "{line}:{col}: ")?;
        }
        let name = match self.value {
            Some(_) if !self.value_name.is_empty() => self.value_name.clone(),
            Some(v) => v.to_string(),
            None => return f.write_str(&self.message),
        };
        if self.node_text.is_empty() {
            write!(f, "{name}: {}", self.message)
        } else {
            write!(f, "{name}: {} (in `{}`)", self.message, self.node_text)
        }
    }
}

/// Every error the verifier found in a graph, in node order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyErrors {
    /// Name of the graph.
    pub graph: String,
    /// The findings; never empty.
    pub errors: Vec<VerifyError>,
}

impl fmt::Display for VerifyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "graph @{} has {n} error{}",
            self.graph,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for VerifyErrors {}

/// A syntax or name error in IR text, with its position.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What was expected and what was found.
    pub message: String,
}

/// Any error from this crate.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Error {
    /// IR text could not be parsed.
    #[error("parse error at {0}")]
    Parse(#[from] ParseError),
    /// A graph is ill-formed.
    #[error("{0}")]
    Verify(#[from] VerifyErrors),
    /// A node cannot be built.
    #[error("{0}")]
    Type(#[from] TypeError),
    /// The interpreter was not given an input the graph needs.
    #[error("missing input '{name}' ({ty})")]
    MissingInput {
        /// Input name.
        name: String,
        /// Its type.
        ty: TensorType,
    },
    /// The interpreter was given an input the graph does not have.
    #[error("unknown input '{name}' (graph @{graph} has inputs: {known})")]
    UnknownInput {
        /// The given name.
        name: String,
        /// The graph.
        graph: String,
        /// Comma-separated input names.
        known: String,
    },
    /// A tensor does not have the type its use requires.
    #[error("input '{name}': expected {expected}, got {got}")]
    InputType {
        /// Input name.
        name: String,
        /// The graph's type.
        expected: TensorType,
        /// The given tensor's type.
        got: TensorType,
    },
    /// Tensor data does not match its declared type.
    #[error("tensor data has {got} elements of the wrong kind for {ty}")]
    TensorData {
        /// The declared type.
        ty: TensorType,
        /// Element count actually given.
        got: usize,
    },
    /// A value is too large for the interpreter's memory limit.
    #[error("{value} needs {bytes} bytes, over the interpreter's limit of {limit} bytes")]
    TooLarge {
        /// The value.
        value: ValueId,
        /// Bytes it would take.
        bytes: u64,
        /// The configured limit.
        limit: u64,
    },
}
