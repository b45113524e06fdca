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

use birkhoff::ir::Tensor;

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
    let mut owned: Vec<(String, &Tensor)> = Vec::new();
    for (name, (p, m, v)) in names.iter().zip(tensors) {
        for (prefix, t) in [("param", p), ("adam_m", m), ("adam_v", v)] {
            owned.push((format!("{prefix}.{name}"), *t));
        }
    }
    let meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("step".to_string(), step.to_string()),
        ("params".to_string(), names.join("\n")),
        ("options".to_string(), options.to_string()),
    ]);
    birkhoff::safetensors::encode(&owned, meta).map_err(TrainError::Checkpoint)
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
    let (mut all, meta) = birkhoff::safetensors::decode(&bytes).map_err(corrupt)?;
    let count = all.len();
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
            three.push(
                all.remove(&key)
                    .ok_or_else(|| corrupt(format!("no tensor '{key}'")))?,
            );
        }
        let v = three.pop().expect("three");
        let m = three.pop().expect("three");
        let p = three.pop().expect("three");
        tensors.insert(name.clone(), (p, m, v));
    }
    if count != 3 * names.len() {
        return Err(corrupt(format!(
            "{} tensors for {} parameters",
            count,
            names.len()
        )));
    }
    Ok(Checkpoint {
        step,
        names,
        tensors,
    })
}
