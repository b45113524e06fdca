//! A compiled GPU program: PTX, the launch plan and the buffer plan.
//!
//! This is what code generation produces and what the runtime loads, and
//! it is what an ahead-of-time artifact (`.bkx`) holds, so a machine with
//! only the CUDA driver — no LLVM, no Rust toolchain — can run it.
//!
//! **Kernel ABI.** Every PTX entry takes one parameter: a pointer to a
//! device array of `u64` device addresses, one per program buffer, in
//! [`GpuModule::buffers`] order (inputs, outputs, constants, and `Temp`
//! buffers at their arena offsets). Launches run in order on one stream.

use std::path::Path;

use birkhoff_ir::kernel::{BufferDecl, BufferId};
use serde::{Deserialize, Serialize};

use crate::error::{GpuError, Result};

/// Version of the artifact format; bumped on every incompatible change.
pub const ARTIFACT_VERSION: u32 = 1;

/// The first bytes of every artifact file.
pub const ARTIFACT_MAGIC: &[u8; 8] = b"BIRKHOFF";

/// One kernel launch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// The PTX entry's name.
    pub entry: String,
    /// The kernel IR kernel it came from (for reports).
    pub kernel: String,
    /// Blocks per grid (x, y, z).
    pub grid: [u32; 3],
    /// Threads per block (x, y, z).
    pub block: [u32; 3],
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
}

/// One buffer as the runtime sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BufferInfo {
    /// Name (a graph input or output name, or a temporary's value).
    pub name: String,
    /// Storage dtype name (`f32`, `bf16`, `f64`, `i32`, `bool`).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// `input`, `output`, `const` or `temp`.
    pub role: String,
    /// Constant values (for `const`), row-major.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<f64>,
    /// Byte offset in the arena (for `temp`).
    #[serde(default)]
    pub offset: usize,
}

/// A compiled program, ready to load on a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuModule {
    /// Artifact format version ([`ARTIFACT_VERSION`]).
    pub version: u32,
    /// The graph's name.
    pub name: String,
    /// The PTX text of every entry.
    pub ptx: String,
    /// The target architecture the PTX was generated for (`sm_90`).
    pub arch: String,
    /// Every buffer, in kernel-IR buffer order.
    pub buffers: Vec<BufferInfo>,
    /// Graph inputs `(name, buffer index)` in signature order.
    pub inputs: Vec<(String, usize)>,
    /// Graph outputs `(name, buffer index)` in signature order.
    pub outputs: Vec<(String, usize)>,
    /// Bytes of the arena holding every `temp` buffer.
    pub arena_bytes: usize,
    /// Launches, in order.
    pub launches: Vec<Launch>,
}

impl BufferInfo {
    /// The runtime view of a kernel-IR buffer.
    pub fn from_decl(d: &BufferDecl) -> BufferInfo {
        use birkhoff_ir::kernel::BufferKind;
        let (role, values, offset) = match &d.kind {
            BufferKind::Input => ("input", Vec::new(), 0),
            BufferKind::Output => ("output", Vec::new(), 0),
            BufferKind::Const(v) => ("const", v.clone(), 0),
            BufferKind::Temp { offset } => ("temp", Vec::new(), *offset),
        };
        BufferInfo {
            name: d.name.clone(),
            dtype: d.dtype().name().to_string(),
            shape: d.ty.shape.clone(),
            role: role.to_string(),
            values,
            offset,
        }
    }
}

impl GpuModule {
    /// Buffer info from a kernel program's declarations, inputs and outputs.
    pub fn buffer_plan(
        p: &birkhoff_ir::kernel::Program,
    ) -> (Vec<BufferInfo>, Vec<(String, usize)>, Vec<(String, usize)>) {
        let idx = |b: &BufferId| b.0 as usize;
        (
            p.buffers.iter().map(BufferInfo::from_decl).collect(),
            p.inputs.iter().map(|(n, b)| (n.clone(), idx(b))).collect(),
            p.outputs.iter().map(|(n, b)| (n.clone(), idx(b))).collect(),
        )
    }

    /// Writes the module as an artifact file, atomically enough for our
    /// needs (a temporary next to it, then a rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec(self).map_err(|e| GpuError::Artifact {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut bytes = ARTIFACT_MAGIC.to_vec();
        bytes.extend_from_slice(&self.version.to_le_bytes());
        bytes.extend_from_slice(&json);
        let tmp = path.with_extension("bkx.tmp");
        std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                GpuError::Artifact {
                    path: path.display().to_string(),
                    message: e.to_string(),
                }
            })
    }

    /// Reads an artifact file, checking its magic and version.
    pub fn load(path: &Path) -> Result<GpuModule> {
        let err = |message: String| GpuError::Artifact {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        if bytes.len() < 12 || &bytes[..8] != ARTIFACT_MAGIC {
            return Err(err("not a birkhoff GPU artifact (bad magic)".into()));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != ARTIFACT_VERSION {
            return Err(err(format!(
                "artifact format version {version}, this build reads version {ARTIFACT_VERSION}"
            )));
        }
        let m: GpuModule = serde_json::from_slice(&bytes[12..])
            .map_err(|e| err(format!("corrupt artifact: {e}")))?;
        if m.version != version {
            return Err(err("version fields disagree".into()));
        }
        Ok(m)
    }
}
