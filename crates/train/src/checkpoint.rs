//! Checkpoints as safetensors files.
//!
//! One file holds, for every parameter `k`, the tensors `param.k` (in the
//! parameter's dtype), `adam_m.k` and `adam_v.k` (`f32`), and string
//! metadata: `format` (`birkhoff-train/1`), `step` (updates done),
//! `params` (the parameter names in the trainer's order, one per line)
//! and `options` (the training options, for the record; a resumed run
//! uses the options it is given). Files are written with
//! [`write_atomic`](birkhoff::write_atomic): a crash mid-save leaves the
//! previous file, never a torn one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use birkhoff::ir::{Tensor, TensorData};
use half::bf16;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::TrainError;

/// The value of the `format` metadata key.
pub(crate) const FORMAT: &str = "birkhoff-train/1";

/// What a checkpoint holds.
pub(crate) struct Checkpoint {
    /// Updates done.
    pub step: usize,
    /// Parameter names, in order.
    pub names: Vec<String>,
    /// Per name: the parameter, its first and second moment.
    pub tensors: BTreeMap<String, (Tensor, Tensor, Tensor)>,
}

/// Serializes a checkpoint; `tensors` are `(param, m, v)` per name of
/// `names`, in that order.
pub(crate) fn encode(
    step: usize,
    names: &[String],
    tensors: &[(&Tensor, &Tensor, &Tensor)],
    options: &str,
) -> Result<Vec<u8>, TrainError> {
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, (p, m, v)) in names.iter().zip(tensors) {
        for (prefix, t) in [("param", p), ("adam_m", m), ("adam_v", v)] {
            let (dtype, bytes) = to_bytes(t);
            owned.push((format!("{prefix}.{name}"), dtype, t.shape().to_vec(), bytes));
        }
    }
    let views = owned
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| TrainError::Checkpoint(format!("cannot encode: {e}")))?;
    let meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("step".to_string(), step.to_string()),
        ("params".to_string(), names.join("\n")),
        ("options".to_string(), options.to_string()),
    ]);
    safetensors::serialize(views, Some(meta))
        .map_err(|e| TrainError::Checkpoint(format!("cannot encode: {e}")))
}

/// Reads a checkpoint file.
pub(crate) fn read(path: &Path) -> Result<Checkpoint, TrainError> {
    // A checkpoint holds the parameters and two moments; no model this
    // trains on one machine comes near 1 TiB.
    let bytes = birkhoff::read_bounded(path, 1 << 40).map_err(|error| TrainError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let corrupt = |message: String| TrainError::CorruptCheckpoint {
        path: path.to_path_buf(),
        message,
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let get = |key: &str| {
        meta.get(key)
            .ok_or_else(|| corrupt(format!("no '{key}' in the metadata")))
    };
    let format = get("format")?;
    if format != FORMAT {
        return Err(corrupt(format!("format '{format}', expected '{FORMAT}'")));
    }
    let step = get("step")?
        .parse::<usize>()
        .map_err(|e| corrupt(format!("bad step: {e}")))?;
    let names: Vec<String> = get("params")?
        .split('\n')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let mut tensors = BTreeMap::new();
    for name in &names {
        let mut three = Vec::with_capacity(3);
        for prefix in ["param", "adam_m", "adam_v"] {
            let key = format!("{prefix}.{name}");
            let view = st
                .tensor(&key)
                .map_err(|_| corrupt(format!("no tensor '{key}'")))?;
            three.push(from_view(&view).map_err(|m| corrupt(format!("tensor '{key}': {m}")))?);
        }
        let v = three.pop().expect("three");
        let m = three.pop().expect("three");
        let p = three.pop().expect("three");
        tensors.insert(name.clone(), (p, m, v));
    }
    if st.len() != 3 * names.len() {
        return Err(corrupt(format!(
            "{} tensors for {} parameters",
            st.len(),
            names.len()
        )));
    }
    Ok(Checkpoint {
        step,
        names,
        tensors,
    })
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
