//! birkhoff's GPU backend (being written).

mod error;
mod module;

pub use error::{GpuError, Result};
pub use module::{ARTIFACT_MAGIC, ARTIFACT_VERSION, BufferInfo, GpuModule, Launch};
