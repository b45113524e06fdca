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
//!
//! **Storage.** A buffer holds its elements row-major, little-endian:
//! `f32`, `f64` and `i32` as themselves, `bf16` as its 16 bits, `bool` as
//! one byte, 0 or 1 ([`to_storage`], [`from_storage`]).
//!
//! **Artifact file**, format version [`ARTIFACT_VERSION`]:
//!
//! | bytes | field |
//! |-------|-------|
//! | 8     | [`ARTIFACT_MAGIC`] |
//! | 4     | format version, `u32` little-endian |
//! | 8     | payload length in bytes, `u64` little-endian |
//! | 8     | FNV-1a 64 checksum of the payload, `u64` little-endian |
//! | …     | payload: the [`GpuModule`] as JSON |
//!
//! The version comes right after the magic so that a reader can reject a
//! file of another version before interpreting anything version-specific.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use birkhoff_ir::kernel::{BufferDecl, BufferId};
use birkhoff_ir::{DType, Tensor, TensorData, TensorType};
use serde::{Deserialize, Serialize};

use crate::error::{GpuError, Result};

/// Version of the artifact format; bumped on every incompatible change.
pub const ARTIFACT_VERSION: u32 = 1;

/// The first bytes of every artifact file.
pub const ARTIFACT_MAGIC: &[u8; 8] = b"BIRKHOFF";

/// Bytes before the payload: magic, version, length, checksum.
const HEADER_BYTES: usize = 8 + 4 + 8 + 8;

/// Most threads in one block on every CUDA GPU since compute capability 2.0.
pub const MAX_BLOCK_THREADS: u32 = 1024;

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
    /// Constant values (for `const`), row-major. Stored in the artifact
    /// as their bit patterns: JSON has no infinities or NaNs, and decimal
    /// text need not read back to the same double.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "f64_bits")]
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

    /// Its storage type and shape; fails on an unknown dtype name.
    pub fn ty(&self) -> Result<TensorType> {
        let dtype = DType::from_name(&self.dtype).ok_or_else(|| {
            GpuError::InvalidModule(format!(
                "buffer '{}' has unknown dtype '{}'",
                self.name, self.dtype
            ))
        })?;
        Ok(TensorType::new(dtype, self.shape.clone()))
    }

    /// Bytes of device memory it takes (`None` if that overflows).
    pub fn size_bytes(&self) -> Option<usize> {
        let elem = DType::from_name(&self.dtype)?.size_bytes();
        self.shape
            .iter()
            .try_fold(elem, |acc, &d| acc.checked_mul(d))
    }
}

/// The most shared memory one thread block may use on the targeted GPUs
/// (sm_90: 227 KiB with the opt-in carve-out).
pub const MAX_SHARED_BYTES: u32 = 227 * 1024;

/// The PTX `.entry` names of a PTX text, in order.
pub fn ptx_entries(ptx: &str) -> Vec<&str> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$';
    let mut out = Vec::new();
    let mut rest = ptx;
    while let Some(at) = rest.find(".entry") {
        let after = &rest[at + ".entry".len()..];
        // `.entry` must stand alone: preceded by a line start or blank
        // and followed by a blank (not `.entryfoo`).
        let standalone_before = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace());
        if standalone_before && after.starts_with(|c: char| c.is_whitespace()) {
            let name = after.trim_start();
            let end = name.find(|c: char| !is_ident(c)).unwrap_or(name.len());
            if end > 0 {
                out.push(&name[..end]);
            }
        }
        rest = after;
    }
    out
}

impl GpuModule {
    /// Buffer info from a kernel program's declarations, inputs and outputs.
    #[expect(
        clippy::type_complexity,
        reason = "the three parts of the plan, named by the fields they fill"
    )]
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

    /// Checks that the module is self-consistent, so that loading it can
    /// neither fail halfway nor launch a kernel on memory it does not own:
    /// the version is this build's, every dtype and role is known, every
    /// buffer index is in range and of the right role, constants hold one
    /// value per element, every temporary lies inside the arena at an
    /// aligned offset, every launch has non-empty grid and block
    /// dimensions within CUDA's limits, and every launched entry is defined
    /// in the PTX. Reports every problem found, not just the first.
    pub fn validate(&self) -> Result<()> {
        let mut bad: Vec<String> = Vec::new();
        if self.version != ARTIFACT_VERSION {
            bad.push(format!(
                "format version {}, this build reads version {ARTIFACT_VERSION}",
                self.version
            ));
        }
        if self.ptx.trim().is_empty() {
            bad.push("the PTX is empty".into());
        }
        if self.ptx.contains('\0') {
            bad.push("the PTX contains a NUL byte".into());
        }
        for (i, b) in self.buffers.iter().enumerate() {
            let what = format!("buffer {i} '{}'", b.name);
            let Some(dtype) = DType::from_name(&b.dtype) else {
                bad.push(format!("{what} has unknown dtype '{}'", b.dtype));
                continue;
            };
            if b.shape.len() > birkhoff_ir::MAX_RANK || b.shape.contains(&0) {
                bad.push(format!(
                    "{what} has shape {:?}: rank at most {} and no zero dimensions",
                    b.shape,
                    birkhoff_ir::MAX_RANK
                ));
                continue;
            }
            let Some(bytes) = b.size_bytes().filter(|&n| {
                n <= isize::MAX as usize
                    && (n / dtype.size_bytes()) as u64 <= birkhoff_ir::MAX_ELEMENTS
            }) else {
                bad.push(format!(
                    "{what} of shape {:?} is too large (at most {} elements)",
                    b.shape,
                    birkhoff_ir::MAX_ELEMENTS
                ));
                continue;
            };
            let elements = bytes / dtype.size_bytes();
            match b.role.as_str() {
                "input" | "output" => {}
                "const" => {
                    if b.values.len() != elements {
                        bad.push(format!(
                            "{what} holds {} values for {elements} elements",
                            b.values.len()
                        ));
                    }
                }
                "temp" => match b.offset.checked_add(bytes) {
                    Some(end) if end <= self.arena_bytes => {
                        if !b.offset.is_multiple_of(dtype.size_bytes()) {
                            bad.push(format!(
                                "{what} at arena offset {} is not aligned to its {}-byte elements",
                                b.offset,
                                dtype.size_bytes()
                            ));
                        }
                    }
                    _ => bad.push(format!(
                        "{what} at arena offset {} needs {bytes} bytes, past the arena's {} bytes",
                        b.offset, self.arena_bytes
                    )),
                },
                other => bad.push(format!(
                    "{what} has unknown role '{other}' (input, output, const, temp)"
                )),
            }
        }
        if !birkhoff_ir::is_identifier(&self.name) {
            bad.push(format!(
                "graph name {:?} is not an identifier",
                self.name.escape_debug().to_string()
            ));
        }
        for (list, role) in [(&self.inputs, "input"), (&self.outputs, "output")] {
            let mut seen = HashSet::new();
            for (name, idx) in list {
                // Names become file names (`NAME.npy` in --inputs and
                // --outputs): only IR identifiers, never a path.
                if !birkhoff_ir::is_identifier(name) {
                    bad.push(format!(
                        "{role} name \"{}\" is not an identifier ([A-Za-z_][A-Za-z0-9_.]*)",
                        name.escape_debug()
                    ));
                }
                if !seen.insert(name) {
                    bad.push(format!("{role} '{name}' is listed twice"));
                }
                match self.buffers.get(*idx) {
                    None => bad.push(format!(
                        "{role} '{name}' is buffer {idx}, but there are {} buffers",
                        self.buffers.len()
                    )),
                    Some(b) if b.role != role => bad.push(format!(
                        "{role} '{name}' is buffer {idx}, whose role is '{}'",
                        b.role
                    )),
                    Some(_) => {}
                }
            }
        }
        let entries: HashSet<&str> = ptx_entries(&self.ptx).into_iter().collect();
        for (i, l) in self.launches.iter().enumerate() {
            let what = format!("launch {i} ({})", l.entry);
            if !entries.contains(l.entry.as_str()) {
                bad.push(format!("{what}: no entry '{}' in the PTX", l.entry));
            }
            if l.grid.contains(&0) || l.block.contains(&0) {
                bad.push(format!(
                    "{what}: empty launch (grid {:?}, block {:?})",
                    l.grid, l.block
                ));
                continue;
            }
            if l.grid[0] > i32::MAX as u32 || l.grid[1] > 65535 || l.grid[2] > 65535 {
                bad.push(format!("{what}: grid {:?} exceeds CUDA's limits", l.grid));
            }
            if l.shared_bytes > MAX_SHARED_BYTES {
                bad.push(format!(
                    "{what}: {} bytes of shared memory, over the {MAX_SHARED_BYTES} a block can have",
                    l.shared_bytes
                ));
            }
            let threads = u64::from(l.block[0]) * u64::from(l.block[1]) * u64::from(l.block[2]);
            if threads > u64::from(MAX_BLOCK_THREADS) || l.block[2] > 64 {
                bad.push(format!(
                    "{what}: block {:?} exceeds CUDA's limits ({MAX_BLOCK_THREADS} threads, z at most 64)",
                    l.block
                ));
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(GpuError::InvalidModule(bad.join("; ")))
        }
    }

    /// Every graph input's name and type, in signature order.
    pub fn input_types(&self) -> Result<Vec<(String, TensorType)>> {
        self.typed(&self.inputs)
    }

    /// Every graph output's name and type, in signature order.
    pub fn output_types(&self) -> Result<Vec<(String, TensorType)>> {
        self.typed(&self.outputs)
    }

    fn typed(&self, list: &[(String, usize)]) -> Result<Vec<(String, TensorType)>> {
        list.iter()
            .map(|(name, idx)| {
                let b = self.buffers.get(*idx).ok_or_else(|| {
                    GpuError::InvalidModule(format!("'{name}' is buffer {idx}, out of range"))
                })?;
                Ok((name.clone(), b.ty()?))
            })
            .collect()
    }

    /// Checks `inputs` against the buffer plan: one tensor per graph input,
    /// of its dtype and shape, and no others. Runs on the host, before a
    /// run touches the device.
    pub fn check_inputs(&self, inputs: &BTreeMap<String, Tensor>) -> Result<()> {
        let types = self.input_types()?;
        for (name, ty) in &types {
            let Some(t) = inputs.get(name) else {
                return Err(GpuError::Input {
                    name: name.clone(),
                    message: format!("missing (expected {ty})"),
                });
            };
            if t.ty() != ty {
                return Err(GpuError::Input {
                    name: name.clone(),
                    message: format!("expected {ty}, got {}", t.ty()),
                });
            }
        }
        if let Some(name) = inputs.keys().find(|n| !types.iter().any(|(m, _)| m == *n)) {
            let known: Vec<&str> = types.iter().map(|(n, _)| n.as_str()).collect();
            return Err(GpuError::Input {
                name: name.clone(),
                message: format!(
                    "unknown input (@{} takes: {})",
                    self.name,
                    if known.is_empty() {
                        "nothing".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        }
        Ok(())
    }

    /// The artifact file's bytes: header and JSON payload.
    pub fn to_artifact_bytes(&self) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(self)
            .map_err(|e| GpuError::InvalidModule(format!("cannot serialize: {e}")))?;
        let mut bytes = Vec::with_capacity(HEADER_BYTES + json.len());
        bytes.extend_from_slice(ARTIFACT_MAGIC);
        bytes.extend_from_slice(&self.version.to_le_bytes());
        bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&fnv1a(&json).to_le_bytes());
        bytes.extend_from_slice(&json);
        Ok(bytes)
    }

    /// Reads a module from an artifact file's bytes; `Err` holds a message
    /// (the caller adds the path).
    pub fn from_artifact_bytes(bytes: &[u8]) -> std::result::Result<GpuModule, String> {
        let n = bytes.len();
        if n == 0 {
            return Err("empty file, not a birkhoff GPU artifact".into());
        }
        if n < ARTIFACT_MAGIC.len() {
            return Err(if ARTIFACT_MAGIC.starts_with(bytes) {
                format!("truncated: {n} bytes, shorter than the header")
            } else {
                "not a birkhoff GPU artifact (bad magic)".into()
            });
        }
        if &bytes[..8] != ARTIFACT_MAGIC {
            return Err("not a birkhoff GPU artifact (bad magic)".into());
        }
        let le = |at: usize, len: usize| -> Option<u64> {
            let b = bytes.get(at..at + len)?;
            Some(
                b.iter()
                    .rev()
                    .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
            )
        };
        let truncated =
            || format!("truncated: {n} bytes, shorter than the {HEADER_BYTES}-byte header");
        let version = le(8, 4).ok_or_else(truncated)? as u32;
        if version != ARTIFACT_VERSION {
            return Err(format!(
                "artifact format version {version}, but this build reads version {ARTIFACT_VERSION} (recompile it with this build)"
            ));
        }
        let len = le(12, 8).ok_or_else(truncated)?;
        let sum = le(20, 8).ok_or_else(truncated)?;
        let payload = &bytes[HEADER_BYTES.min(n)..];
        if (payload.len() as u64) < len {
            return Err(format!(
                "truncated: the header announces {len} bytes of module, the file holds {}",
                payload.len()
            ));
        }
        if payload.len() as u64 > len {
            return Err(format!(
                "{} unexpected bytes after the {len}-byte module",
                payload.len() as u64 - len
            ));
        }
        if fnv1a(payload) != sum {
            return Err("checksum mismatch: the file is corrupt".into());
        }
        let m: GpuModule = serde_json::from_slice(payload)
            .map_err(|e| format!("corrupt module description: {e}"))?;
        if m.version != version {
            return Err(format!(
                "the header says format version {version}, the module says {}",
                m.version
            ));
        }
        m.validate().map_err(|e| match e {
            GpuError::InvalidModule(msg) => format!("inconsistent module: {msg}"),
            other => other.to_string(),
        })?;
        Ok(m)
    }

    /// Writes the module as an artifact file. The module is validated
    /// first; the file is written to a temporary next to `path`, synced and
    /// renamed over it, so an error never leaves a partial artifact.
    pub fn save(&self, path: &Path) -> Result<()> {
        let err = |message: String| GpuError::Artifact {
            path: path.display().to_string(),
            message,
        };
        self.validate().map_err(|e| err(e.to_string()))?;
        let bytes = self.to_artifact_bytes().map_err(|e| err(e.to_string()))?;
        birkhoff_io::write_atomic(path, &bytes).map_err(|e| err(format!("cannot write: {e}")))
    }

    /// Reads an artifact file: checks its magic, version, length and
    /// checksum, parses the module and validates it.
    pub fn load(path: &Path) -> Result<GpuModule> {
        let err = |message: String| GpuError::Artifact {
            path: path.display().to_string(),
            message,
        };
        // An artifact holds PTX text and a launch table; 4 GiB is far more.
        let bytes = birkhoff_io::read_bounded(path, 1 << 32)
            .map_err(|e| err(format!("cannot read: {e}")))?;
        GpuModule::from_artifact_bytes(&bytes).map_err(err)
    }
}

/// `Vec<f64>` as the `u64` bit pattern of each element.
mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.to_bits()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<u64>::deserialize(d)?
            .into_iter()
            .map(f64::from_bits)
            .collect())
    }
}

/// FNV-1a, 64 bits: detects corruption (not tampering) of the payload.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A host tensor's device storage bytes (see the module docs).
pub fn to_storage(t: &Tensor) -> Vec<u8> {
    match t.data() {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Bf16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Bool(v) => v.iter().map(|&x| u8::from(x)).collect(),
    }
}

/// A host tensor of type `ty` from device storage bytes. A `bool` byte
/// other than 0 reads as true.
pub fn from_storage(ty: &TensorType, bytes: &[u8]) -> Result<Tensor> {
    let want = ty.size_bytes();
    if bytes.len() != want {
        return Err(GpuError::InvalidModule(format!(
            "{ty} needs {want} bytes of storage, got {}",
            bytes.len()
        )));
    }
    fn words<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        bytes
            .chunks_exact(N)
            .map(|c| c.try_into().expect("chunks_exact yields N bytes"))
    }
    let data = match ty.dtype {
        DType::F32 => TensorData::F32(words::<4>(bytes).map(f32::from_le_bytes).collect()),
        DType::Bf16 => TensorData::Bf16(
            words::<2>(bytes)
                .map(|w| half::bf16::from_bits(u16::from_le_bytes(w)))
                .collect(),
        ),
        DType::F64 => TensorData::F64(words::<8>(bytes).map(f64::from_le_bytes).collect()),
        DType::I32 => TensorData::I32(words::<4>(bytes).map(i32::from_le_bytes).collect()),
        DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
    };
    Tensor::new(ty.shape.clone(), data)
        .map_err(|e| GpuError::InvalidModule(format!("storage of {ty}: {e}")))
}

/// A constant buffer's storage bytes (its values rounded to its dtype).
pub fn const_storage(b: &BufferInfo) -> Result<Vec<u8>> {
    let t = Tensor::from_f64(b.ty()?, &b.values)
        .map_err(|e| GpuError::InvalidModule(format!("constant buffer '{}': {e}", b.name)))?;
    Ok(to_storage(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_by_their_directive() {
        let ptx = ".version 8.0\n.visible .entry k0_exp(\n.param .u64 p)\n{}\n.entry k1(\n)\n// .entryfake x\n.func f()";
        assert_eq!(ptx_entries(ptx), vec!["k0_exp", "k1"]);
        assert!(ptx_entries("no entries").is_empty());
    }

    #[test]
    fn storage_round_trips_every_dtype() {
        for dtype in DType::ALL {
            let ty = TensorType::new(dtype, [2, 3]);
            let values = [0.0, 1.0, -2.5, 3.0, 1e-3, -7.0];
            let t = Tensor::from_f64(ty.clone(), &values).unwrap();
            let bytes = to_storage(&t);
            assert_eq!(bytes.len(), ty.size_bytes(), "{dtype}");
            assert_eq!(from_storage(&ty, &bytes).unwrap(), t, "{dtype}");
        }
    }

    #[test]
    fn storage_is_little_endian_with_bf16_bits_and_bool_bytes() {
        let t = Tensor::from_f64(TensorType::new(DType::F32, [1]), &[1.0]).unwrap();
        assert_eq!(to_storage(&t), 1.0f32.to_le_bytes());
        let t = Tensor::from_f64(TensorType::new(DType::Bf16, [1]), &[1.0]).unwrap();
        assert_eq!(to_storage(&t), [0x80, 0x3f]);
        let t = Tensor::from_f64(TensorType::new(DType::Bool, [2]), &[0.0, 1.0]).unwrap();
        assert_eq!(to_storage(&t), [0, 1]);
        let ty = TensorType::new(DType::Bool, [2]);
        assert!(from_storage(&ty, &[1, 2, 3]).is_err());
    }

    #[test]
    fn checksum_is_fnv1a() {
        // The published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
