//! Tensors in the safetensors format: named tensors and string metadata
//! in one file (checkpoints, imported models' weights).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use birkhoff_ir::{Tensor, TensorData};
use half::bf16;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// Serializes `tensors` (name, tensor) and `metadata`.
pub fn encode(
    tensors: &[(String, &Tensor)],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, String> {
    let owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let (dtype, bytes) = to_bytes(t);
            (name.clone(), dtype, t.shape().to_vec(), bytes)
        })
        .collect();
    let views = owned
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| format!("cannot encode: {e}"))?;
    let meta = (!metadata.is_empty()).then_some(metadata);
    safetensors::serialize(views, meta).map_err(|e| format!("cannot encode: {e}"))
}

/// Tensors by name and string metadata: what a safetensors file holds.
pub type Contents = (BTreeMap<String, Tensor>, HashMap<String, String>);

/// Every tensor in the safetensors bytes `bytes`, by name, and the
/// metadata; an error says what is malformed.
pub fn decode(bytes: &[u8]) -> Result<Contents, String> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let t = from_view(&view).map_err(|m| format!("tensor '{name}': {m}"))?;
        out.insert(name, t);
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// Reads a safetensors file (see [`decode`]); errors name the file.
pub fn read(path: &Path) -> Result<BTreeMap<String, Tensor>, String> {
    let bytes = crate::read_bounded(path, 1 << 40)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    decode(&bytes)
        .map(|(t, _)| t)
        .map_err(|e| format!("{} is not a readable safetensors file: {e}", path.display()))
}

/// The safetensors dtype and little-endian bytes of `t`.
fn to_bytes(t: &Tensor) -> (Dtype, Vec<u8>) {
    match t.data() {
        TensorData::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::F64(v) => (Dtype::F64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::Bf16(v) => (
            Dtype::BF16,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        TensorData::I32(v) => (Dtype::I32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::Bool(v) => (Dtype::BOOL, v.iter().map(|&x| u8::from(x)).collect()),
    }
}

/// The tensor a safetensors view holds (the dtypes birkhoff has).
fn from_view(view: &TensorView<'_>) -> Result<Tensor, String> {
    let b = view.data();
    let data = match view.dtype() {
        Dtype::F32 => TensorData::F32(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        ),
        Dtype::F64 => TensorData::F64(
            b.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ),
        Dtype::BF16 => TensorData::Bf16(
            b.chunks_exact(2)
                .map(|c| bf16::from_le_bytes(c.try_into().expect("2 bytes")))
                .collect(),
        ),
        Dtype::I32 => TensorData::I32(
            b.chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        ),
        Dtype::BOOL => TensorData::Bool(b.iter().map(|&x| x != 0).collect()),
        other => return Err(format!("dtype {other:?} is not one birkhoff has")),
    };
    Tensor::new(view.shape().to_vec(), data).map_err(|e| e.to_string())
}
