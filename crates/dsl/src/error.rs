//! Errors of the DSL and the model zoo.

use std::fmt;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One mistake made while building a graph, located at the Rust call that
/// made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildError {
    /// Source file of the offending call.
    pub file: &'static str,
    /// Line of the offending call.
    pub line: u32,
    /// Column of the offending call.
    pub column: u32,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Any error from this crate.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// Shape, dtype or naming mistakes made while building a graph.
    #[error("graph @{graph} could not be built:{}", list(errors))]
    Build {
        /// The graph's name.
        graph: String,
        /// Every mistake, in the order made.
        errors: Vec<BuildError>,
    },
    /// The built graph failed verification (a bug in the DSL, not the caller).
    #[error("{0}")]
    Verify(#[from] birkhoff_ir::VerifyErrors),
    /// No zoo model has this name.
    #[error("unknown model '{name}' (known models: {known})")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// Comma-separated known names.
        known: String,
    },
    /// A flag was given that the model does not take.
    #[error("model '{model}' does not take --{flag} (it takes: {accepted})")]
    FlagNotApplicable {
        /// The model.
        model: String,
        /// The flag, without dashes.
        flag: String,
        /// Comma-separated accepted flags.
        accepted: String,
    },
    /// A flag value is out of range or inconsistent with others.
    #[error("invalid --{flag} for model '{model}': {message}")]
    BadFlag {
        /// The model.
        model: String,
        /// The flag, without dashes.
        flag: String,
        /// Why the value is invalid.
        message: String,
    },
}

fn list(errors: &[BuildError]) -> String {
    errors.iter().map(|e| format!("\n  {e}")).collect()
}
