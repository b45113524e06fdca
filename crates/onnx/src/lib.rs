//! Reading ONNX models into birkhoff's graph IR.
//!
//! [`import_file`] decodes a `.onnx` file (with its external-data files),
//! folds the shape arithmetic exporters emit, and builds a verified
//! [`birkhoff_ir::Graph`]: graph inputs stay inputs, float initializers
//! become `param` inputs whose values come back in
//! [`Imported::weights`], and ONNX names that are not IR identifiers are
//! renamed ([`Imported::names`]). `docs/onnx.md` lists the supported ops
//! and what each becomes.

mod einsum;
mod error;
mod import;
mod ops;
pub mod proto;
mod tensor;

pub use error::ImportError;
pub use import::{
    ImportOptions, Imported, Renamed, Role, import_bytes, import_file, ir_identifier,
};
