//! Tensor values in a model: decoding `TensorProto`s (inline or external
//! data) and the constants the importer folds.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

use birkhoff_ir::{DType, MAX_ELEMENTS, Tensor, TensorData, TensorType};
use half::bf16;

use crate::proto::{DATA_LOCATION_EXTERNAL, TensorProto, data_type as dt};

/// A tensor's elements as its file stores them.
pub(crate) enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bf16(Vec<bf16>),
    Int(Vec<i64>),
    Bool(Vec<bool>),
}

impl Values {
    /// Every element as an `f64` (exact for every type but `i64` beyond
    /// 2⁵³, which no shape or index reaches).
    pub(crate) fn to_f64(&self) -> Vec<f64> {
        match self {
            Values::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Values::F64(v) => v.clone(),
            Values::Bf16(v) => v.iter().map(|x| x.to_f64()).collect(),
            Values::Int(v) => v.iter().map(|&x| x as f64).collect(),
            Values::Bool(v) => v.iter().map(|&x| f64::from(u8::from(x))).collect(),
        }
    }
}

/// The IR element type of an ONNX element type, for values that live in
/// the graph: floats as they are, integers as `i32`, bools as `bool`.
pub(crate) fn ir_dtype(t: i32) -> Result<DType, String> {
    Ok(match t {
        dt::FLOAT => DType::F32,
        dt::DOUBLE => DType::F64,
        dt::BFLOAT16 => DType::Bf16,
        dt::BOOL => DType::Bool,
        dt::INT64 | dt::INT32 | dt::INT16 | dt::INT8 | dt::UINT8 | dt::UINT16 | dt::UINT32 => {
            DType::I32
        }
        dt::FLOAT16 => {
            return Err(
                "unsupported element type float16: birkhoff computes in float32, \
                 bfloat16 or float64; convert the model (e.g. onnxconverter_common's \
                 float16 -> float32 conversion) before importing"
                    .to_string(),
            );
        }
        other => return Err(format!("unsupported element type {}", dt::name(other))),
    })
}

/// Whether values of ONNX type `t` are integers.
pub(crate) fn is_int(t: i32) -> bool {
    matches!(
        t,
        dt::INT64
            | dt::INT32
            | dt::INT16
            | dt::INT8
            | dt::UINT8
            | dt::UINT16
            | dt::UINT32
            | dt::UINT64
    )
}

/// Whether values of ONNX type `t` are floats the importer handles.
pub(crate) fn is_float(t: i32) -> bool {
    matches!(t, dt::FLOAT | dt::DOUBLE | dt::BFLOAT16)
}

/// A checked shape: every dimension non-negative and the element count
/// within the IR's limit.
pub(crate) fn shape_of(dims: &[i64], what: &str) -> Result<Vec<usize>, String> {
    if dims.len() > birkhoff_ir::MAX_RANK {
        return Err(format!(
            "{what} has rank {}, more than the IR's {}",
            dims.len(),
            birkhoff_ir::MAX_RANK
        ));
    }
    let mut shape = Vec::with_capacity(dims.len());
    // Each axis within the limit and the product in u128: a zero after
    // huge axes must not hide them (`[2^32, 2^32, 0]`).
    let mut count: u128 = 1;
    let mut too_large = false;
    for &d in dims {
        let d = u64::try_from(d).map_err(|_| format!("{what} has a negative dimension {d}"))?;
        too_large |= d > MAX_ELEMENTS;
        count = count.saturating_mul(u128::from(d.max(1)));
        shape.push(usize::try_from(d).map_err(|_| format!("{what}: dimension {d} is too large"))?);
    }
    if too_large || count > u128::from(MAX_ELEMENTS) {
        return Err(format!(
            "{what} of shape {dims:?} is too large: more than the IR's 2^40 elements"
        ));
    }
    Ok(shape)
}

/// Bytes per element of a stored type, for raw and external data.
fn element_bytes(t: i32) -> Option<usize> {
    Some(match t {
        dt::FLOAT | dt::INT32 | dt::UINT32 => 4,
        dt::DOUBLE | dt::INT64 | dt::UINT64 => 8,
        dt::BFLOAT16 | dt::FLOAT16 | dt::INT16 | dt::UINT16 => 2,
        dt::INT8 | dt::UINT8 | dt::BOOL => 1,
        _ => return None,
    })
}

/// Reads the values of `t`, from its own fields or its external-data file
/// (resolved against `base`, the model's directory).
pub(crate) fn decode(t: &TensorProto, base: Option<&Path>) -> Result<Values, String> {
    let what = format!("tensor `{}`", t.name);
    let shape = shape_of(&t.dims, &what)?;
    let n: usize = shape.iter().product();
    if t.segment.is_some() {
        return Err(format!(
            "{what} is split into segments, which is not supported"
        ));
    }
    if t.data_type == dt::FLOAT16
        || t.data_type == dt::STRING
        || element_bytes(t.data_type).is_none()
    {
        return Err(format!(
            "{what}: {}",
            ir_dtype(t.data_type)
                .err()
                .unwrap_or_else(|| format!("unsupported element type {}", dt::name(t.data_type)))
        ));
    }
    let size = element_bytes(t.data_type).unwrap_or(1);
    let bytes = n
        .checked_mul(size)
        .ok_or_else(|| format!("{what} is too large"))?;
    let raw = if t.data_location == DATA_LOCATION_EXTERNAL {
        Some(read_external(t, base, bytes as u64)?)
    } else if !t.raw_data.is_empty() || n == 0 && typed_len(t) == 0 {
        if t.raw_data.len() != bytes {
            return Err(format!(
                "{what} of shape {shape:?} needs {bytes} bytes of raw data, but holds {}",
                t.raw_data.len()
            ));
        }
        Some(t.raw_data.clone())
    } else {
        None
    };
    if let Some(raw) = raw {
        return Ok(from_raw(t.data_type, &raw));
    }
    let have = typed_len(t);
    if have != n {
        return Err(format!(
            "{what} of shape {shape:?} needs {n} values, but holds {have}"
        ));
    }
    Ok(match t.data_type {
        dt::FLOAT => Values::F32(t.float_data.clone()),
        dt::DOUBLE => Values::F64(t.double_data.clone()),
        dt::INT64 => Values::Int(t.int64_data.clone()),
        dt::UINT32 | dt::UINT64 => Values::Int(
            t.uint64_data
                .iter()
                .map(|&x| i64::try_from(x).unwrap_or(i64::MAX))
                .collect(),
        ),
        // bf16 values are stored as their bit patterns in int32_data.
        dt::BFLOAT16 => Values::Bf16(
            t.int32_data
                .iter()
                .map(|&x| bf16::from_bits(x as u16))
                .collect(),
        ),
        dt::BOOL => Values::Bool(t.int32_data.iter().map(|&x| x != 0).collect()),
        _ => Values::Int(t.int32_data.iter().map(|&x| i64::from(x)).collect()),
    })
}

/// How many values the typed field of `t`'s data type holds.
fn typed_len(t: &TensorProto) -> usize {
    match t.data_type {
        dt::FLOAT => t.float_data.len(),
        dt::DOUBLE => t.double_data.len(),
        dt::INT64 => t.int64_data.len(),
        dt::UINT32 | dt::UINT64 => t.uint64_data.len(),
        _ => t.int32_data.len(),
    }
}

fn from_raw(t: i32, raw: &[u8]) -> Values {
    fn chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        raw.chunks_exact(N)
            .map(|c| c.try_into().expect("chunks_exact gives N bytes"))
    }
    match t {
        dt::FLOAT => Values::F32(chunks::<4>(raw).map(f32::from_le_bytes).collect()),
        dt::DOUBLE => Values::F64(chunks::<8>(raw).map(f64::from_le_bytes).collect()),
        dt::BFLOAT16 => Values::Bf16(
            chunks::<2>(raw)
                .map(|b| bf16::from_bits(u16::from_le_bytes(b)))
                .collect(),
        ),
        dt::INT64 => Values::Int(chunks::<8>(raw).map(i64::from_le_bytes).collect()),
        dt::UINT64 => Values::Int(
            chunks::<8>(raw)
                .map(|b| i64::try_from(u64::from_le_bytes(b)).unwrap_or(i64::MAX))
                .collect(),
        ),
        dt::INT32 => Values::Int(
            chunks::<4>(raw)
                .map(|b| i64::from(i32::from_le_bytes(b)))
                .collect(),
        ),
        dt::UINT32 => Values::Int(
            chunks::<4>(raw)
                .map(|b| i64::from(u32::from_le_bytes(b)))
                .collect(),
        ),
        dt::INT16 => Values::Int(
            chunks::<2>(raw)
                .map(|b| i64::from(i16::from_le_bytes(b)))
                .collect(),
        ),
        dt::UINT16 => Values::Int(
            chunks::<2>(raw)
                .map(|b| i64::from(u16::from_le_bytes(b)))
                .collect(),
        ),
        dt::INT8 => Values::Int(raw.iter().map(|&b| i64::from(b as i8)).collect()),
        dt::BOOL => Values::Bool(raw.iter().map(|&b| b != 0).collect()),
        _ => Values::Int(raw.iter().map(|&b| i64::from(b)).collect()),
    }
}

/// The bytes of an external-data tensor: `location` relative to `base`
/// and inside it, `offset` and `length` within the file, `length` equal
/// to what the shape needs. Only those bytes are read.
fn read_external(t: &TensorProto, base: Option<&Path>, want: u64) -> Result<Vec<u8>, String> {
    let what = format!("tensor `{}`", t.name);
    let mut location = None;
    let mut offset: u64 = 0;
    let mut length = None;
    for e in &t.external_data {
        match e.key.as_str() {
            "location" => location = Some(e.value.as_str()),
            "offset" => {
                offset = e.value.parse().map_err(|_| {
                    format!(
                        "{what}: external data offset `{}` is not a byte count",
                        e.value
                    )
                })?;
            }
            "length" => {
                length = Some(e.value.parse::<u64>().map_err(|_| {
                    format!(
                        "{what}: external data length `{}` is not a byte count",
                        e.value
                    )
                })?);
            }
            _ => {}
        }
    }
    let location = location.ok_or_else(|| format!("{what}: external data without a location"))?;
    let rel = Path::new(location);
    if location.is_empty()
        || !rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "{what}: external data location `{location}` must be a relative path inside the \
             model's directory"
        ));
    }
    let base = base.ok_or_else(|| {
        format!("{what} has external data (`{location}`), but the model was not read from a file")
    })?;
    let path = base.join(rel);
    let meta = std::fs::metadata(&path).map_err(|e| {
        format!(
            "{what}: cannot open its external data file {}: {e}",
            path.display()
        )
    })?;
    // A symbolic link may not lead out of the model's directory either.
    let inside = match (std::fs::canonicalize(base), std::fs::canonicalize(&path)) {
        (Ok(b), Ok(p)) => p.starts_with(b),
        _ => false,
    };
    if !inside {
        return Err(format!(
            "{what}: external data location `{location}` resolves outside the model's directory"
        ));
    }
    if !meta.is_file() {
        return Err(format!(
            "{what}: external data {} is not a regular file",
            path.display()
        ));
    }
    let file_len = meta.len();
    let length = length.unwrap_or(want);
    if length != want {
        return Err(format!(
            "{what}: external data length {length} does not match its shape, which needs {want} bytes"
        ));
    }
    match offset.checked_add(length) {
        Some(end) if end <= file_len => {}
        _ => {
            return Err(format!(
                "{what}: external data at offset {offset} with length {length} runs past the end \
                 of {} ({file_len} bytes)",
                path.display()
            ));
        }
    }
    birkhoff_io::ensure_memory(length, &what)?;
    let mut buf = vec![0u8; length as usize];
    let mut f =
        File::open(&path).map_err(|e| format!("{what}: cannot open {}: {e}", path.display()))?;
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?;
    Ok(buf)
}

/// The IR tensor of a float initializer: a weight the graph takes as a
/// `param` input.
pub(crate) fn to_ir_tensor(values: Values, shape: Vec<usize>) -> Result<Tensor, String> {
    let data = match values {
        Values::F32(v) => TensorData::F32(v),
        Values::F64(v) => TensorData::F64(v),
        Values::Bf16(v) => TensorData::Bf16(v),
        Values::Bool(v) => TensorData::Bool(v),
        Values::Int(v) => TensorData::I32(
            v.into_iter()
                .map(|x| i32::try_from(x).map_err(|_| format!("integer {x} does not fit in i32")))
                .collect::<Result<_, _>>()?,
        ),
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

/// A constant the importer knows the value of: shape arithmetic, small
/// initializers, `Constant` nodes. Values are `f64` (exact for every
/// element type the importer folds); `dtype` is the ONNX element type.
#[derive(Clone, Debug)]
pub(crate) struct Const {
    pub dtype: i32,
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// Steps the row-major multi-index `idx` within `shape` to the next
/// element (back to all zeros after the last).
pub(crate) fn advance(idx: &mut [usize], shape: &[usize]) {
    for k in (0..shape.len()).rev() {
        idx[k] += 1;
        if idx[k] < shape[k] {
            return;
        }
        idx[k] = 0;
    }
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    birkhoff_ir::strides(shape)
}

/// The NumPy broadcast of two shapes, or `None` if they do not broadcast.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

impl Const {
    /// A constant of type `dtype`, shape and values; the count must match.
    pub(crate) fn new(dtype: i32, shape: Vec<usize>, data: Vec<f64>) -> Const {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Const { dtype, shape, data }
    }

    /// A rank-0 constant.
    pub(crate) fn scalar(dtype: i32, x: f64) -> Const {
        Const::new(dtype, vec![], vec![x])
    }

    /// A 1-D `int64` constant.
    pub(crate) fn ints(v: &[i64]) -> Const {
        Const::new(
            dt::INT64,
            vec![v.len()],
            v.iter().map(|&x| x as f64).collect(),
        )
    }

    /// The values as integers (saturating).
    pub(crate) fn as_ints(&self) -> Vec<i64> {
        self.data.iter().map(|&x| x as i64).collect()
    }

    /// The one value of a one-element constant.
    pub(crate) fn single(&self) -> Option<f64> {
        (self.data.len() == 1).then(|| self.data[0])
    }

    /// Elements at the positions of `shape` broadcast from `self.shape`.
    pub(crate) fn broadcast_to(&self, shape: &[usize]) -> Const {
        if self.shape == shape {
            return self.clone();
        }
        let rank = shape.len();
        let src_strides = strides(&self.shape);
        let n: usize = shape.iter().product();
        let mut data = Vec::with_capacity(n);
        let mut idx = vec![0usize; rank];
        for _ in 0..n {
            let mut off = 0;
            for (k, &s) in self.shape.iter().enumerate() {
                let i = idx[k + rank - self.shape.len()];
                if s != 1 {
                    off += i * src_strides[k];
                }
            }
            data.push(self.data[off]);
            advance(&mut idx, shape);
        }
        Const::new(self.dtype, shape.to_vec(), data)
    }

    /// Elementwise `f` over two broadcast constants; the result has
    /// element type `dtype`.
    pub(crate) fn zip(
        &self,
        other: &Const,
        dtype: i32,
        f: impl Fn(f64, f64) -> f64,
    ) -> Option<Const> {
        let shape = broadcast_shapes(&self.shape, &other.shape)?;
        let a = self.broadcast_to(&shape);
        let b = other.broadcast_to(&shape);
        let data = a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y)).collect();
        Some(Const::new(dtype, shape, data).rounded())
    }

    /// Values rounded as the element type stores them.
    pub(crate) fn rounded(mut self) -> Const {
        let round: fn(f64) -> f64 = match self.dtype {
            dt::FLOAT => |x| f64::from(x as f32),
            dt::BFLOAT16 => birkhoff_ir::round_bf16,
            dt::BOOL => |x| f64::from(u8::from(x != 0.0)),
            t if is_int(t) => |x: f64| x.trunc(),
            _ => |x| x,
        };
        for x in &mut self.data {
            *x = round(*x);
        }
        self
    }

    /// The axes permuted: result axis `k` is axis `perm[k]`.
    pub(crate) fn permute(&self, perm: &[usize]) -> Const {
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        let src = strides(&self.shape);
        let n = self.data.len();
        let mut data = Vec::with_capacity(n);
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..n {
            let off: usize = idx.iter().zip(perm).map(|(&i, &p)| i * src[p]).sum();
            data.push(self.data[off]);
            advance(&mut idx, &shape);
        }
        Const::new(self.dtype, shape, data)
    }

    /// The box `start[k] <= i_k < end[k]`.
    pub(crate) fn slice(&self, start: &[usize], end: &[usize]) -> Const {
        let shape: Vec<usize> = start.iter().zip(end).map(|(&s, &e)| e - s).collect();
        let src = strides(&self.shape);
        let n: usize = shape.iter().product();
        let mut data = Vec::with_capacity(n);
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..n {
            let off: usize = (0..shape.len()).map(|k| (idx[k] + start[k]) * src[k]).sum();
            data.push(self.data[off]);
            advance(&mut idx, &shape);
        }
        Const::new(self.dtype, shape, data)
    }

    /// Constants joined along `axis` (shapes equal elsewhere).
    pub(crate) fn concat(parts: &[Const], axis: usize) -> Const {
        let first = &parts[0];
        let outer: usize = first.shape[..axis].iter().product();
        let mut shape = first.shape.clone();
        shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
        let mut data = Vec::with_capacity(shape.iter().product());
        for o in 0..outer {
            for p in parts {
                let inner: usize = p.shape[axis..].iter().product();
                data.extend_from_slice(&p.data[o * inner..(o + 1) * inner]);
            }
        }
        Const::new(first.dtype, shape, data)
    }

    /// Reduction over `axes` with `f` from `init`.
    pub(crate) fn reduce(
        &self,
        axes: &[usize],
        keepdims: bool,
        init: f64,
        f: impl Fn(f64, f64) -> f64,
    ) -> Const {
        let rank = self.shape.len();
        let kept: Vec<usize> = (0..rank)
            .map(|k| if axes.contains(&k) { 1 } else { self.shape[k] })
            .collect();
        let out_strides = strides(&kept);
        let mut out = vec![init; kept.iter().product()];
        let mut idx = vec![0usize; rank];
        for &x in &self.data {
            let off: usize = (0..rank)
                .filter(|k| !axes.contains(k))
                .map(|k| idx[k] * out_strides[k])
                .sum();
            out[off] = f(out[off], x);
            advance(&mut idx, &self.shape);
        }
        let shape = if keepdims {
            kept
        } else {
            (0..rank)
                .filter(|k| !axes.contains(k))
                .map(|k| self.shape[k])
                .collect()
        };
        Const::new(self.dtype, shape, out)
    }

    /// The IR type this constant has as a graph value.
    pub(crate) fn ir_type(&self) -> Result<TensorType, String> {
        Ok(TensorType::new(ir_dtype(self.dtype)?, self.shape.clone()))
    }
}
