//! Hand-written kernels for the semantic and fused ops.
//!
//! Each template turns one op whose operands are contiguous row-major
//! buffers into one or more kernels that write its results into
//! contiguous row-major buffers. They are written once, as kernel IR, for
//! every backend.

use birkhoff_ir::kernel::BufferId;
use birkhoff_ir::{Op, TensorType};

use crate::LowerOptions;
use crate::builder::ProgramBuilder;
use crate::error::Result;

/// A tensor held in a contiguous row-major buffer.
#[derive(Clone, Debug)]
pub struct Arg {
    /// The buffer.
    pub buf: BufferId,
    /// Its type.
    pub ty: TensorType,
}

/// Whether `op` has a template.
pub fn has_template(op: &Op) -> bool {
    op.is_semantic() || op.is_fused()
}

/// Appends the kernels computing `outs` (one per result; three for
/// `mhc_pre` and `hc_pre`) from `args`.
pub fn lower_composite(
    pb: &mut ProgramBuilder,
    op: &Op,
    args: &[Arg],
    outs: &[Arg],
    opts: &LowerOptions,
) -> Result<()> {
    let _ = (pb, op, args, outs, opts);
    Err(crate::error::LowerError::Unsupported {
        op: op.mnemonic().to_string(),
        types: String::new(),
        reason: "templates are being written".to_string(),
    })
}
