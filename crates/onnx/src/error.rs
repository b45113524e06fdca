//! What can go wrong reading an ONNX model.

/// An ONNX model that cannot be imported: unreadable, malformed, or using
/// something the importer does not support. Every message says where:
/// the file, the node (its position in the graph, name and op type), or
/// the input.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The model or one of its external-data files cannot be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The bytes are not an ONNX model (truncated, not protobuf, a field
    /// of the wrong type).
    #[error("cannot decode {path} as an ONNX model: {message}")]
    Decode {
        /// The file.
        path: String,
        /// What the protobuf decoder said.
        message: String,
    },
    /// A node cannot be imported: an unsupported op, attribute value or
    /// element type, or operands that do not fit the op.
    #[error("node {index}{} ({op_type}): {message}", if name.is_empty() { String::new() } else { format!(" `{name}`") })]
    Node {
        /// Position in the graph's node list, from 0.
        index: usize,
        /// The node's name (may be empty).
        name: String,
        /// Its op type, with the domain when it is not the default one.
        op_type: String,
        /// What is wrong.
        message: String,
    },
    /// A symbolic dimension that no `--dim NAME=SIZE` pins.
    #[error("input `{input}` has the symbolic dimension `{name}`: pin it with --dim {name}=SIZE")]
    UnpinnedDim {
        /// The dimension's name.
        name: String,
        /// The graph input that has it.
        input: String,
    },
    /// Anything else wrong with the model as a whole (its graph, inputs,
    /// outputs, initializers or opsets).
    #[error("{0}")]
    Model(String),
}

impl ImportError {
    /// A model-level error.
    pub(crate) fn model(message: impl Into<String>) -> Self {
        ImportError::Model(message.into())
    }

    /// The same error with control characters (a newline, a NUL) in the
    /// names and messages taken from the file escaped, so that every
    /// error prints as one line of plain text.
    pub(crate) fn escaped(self) -> Self {
        fn esc(s: String) -> String {
            if s.chars().any(char::is_control) {
                s.chars()
                    .map(|c| {
                        if c.is_control() {
                            c.escape_default().to_string()
                        } else {
                            c.to_string()
                        }
                    })
                    .collect()
            } else {
                s
            }
        }
        match self {
            ImportError::Read { path, message } => ImportError::Read {
                path: esc(path),
                message: esc(message),
            },
            ImportError::Decode { path, message } => ImportError::Decode {
                path: esc(path),
                message: esc(message),
            },
            ImportError::Node {
                index,
                name,
                op_type,
                message,
            } => ImportError::Node {
                index,
                name: esc(name),
                op_type: esc(op_type),
                message: esc(message),
            },
            ImportError::UnpinnedDim { name, input } => ImportError::UnpinnedDim {
                name: esc(name),
                input: esc(input),
            },
            ImportError::Model(m) => ImportError::Model(esc(m)),
        }
    }
}
