//! torch tensors' memory, read and written in place by a run.
//!
//! `birkhoff.torch`'s ops run one small program per call, so what a call
//! costs besides the kernels matters: at T = 16 it was most of the call.
//! Going through DLPack and NumPy costs a few microseconds per tensor;
//! asking the tensor for its address costs a fraction of one. This is the
//! one place in the extension that turns an address into a slice, so it
//! first checks everything that makes that sound: the object is a plain
//! torch tensor (not a subclass that reinterprets its memory), on the CPU,
//! of the declared dtype and shape, contiguous, without torch's lazy
//! negation, with every element inside its storage, aligned, and outputs
//! overlap nothing else of the call. Bool tensors are never viewed: a
//! torch bool may hold any byte (a `uint8` tensor viewed as bool), which
//! a Rust `bool` may not.

#![expect(
    unsafe_code,
    reason = "a checked torch tensor's address becomes a slice for one run"
)]

use birkhoff::cpu::{ElementsMut, ElementsRef};
use birkhoff::ir::{DType, TensorType};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// What is checked against: torch's tensor classes and dtypes.
struct Torch {
    tensor: Py<PyType>,
    parameter: Py<PyType>,
    dtypes: Vec<(Py<PyAny>, DType)>,
}

fn torch(py: Python<'_>) -> PyResult<&Torch> {
    static TORCH: PyOnceLock<Torch> = PyOnceLock::new();
    TORCH.get_or_try_init(py, || {
        let torch = py.import("torch")?;
        let dtype = |name: &str| torch.getattr(name).map(Bound::unbind);
        Ok(Torch {
            tensor: torch.getattr("Tensor")?.cast_into::<PyType>()?.unbind(),
            parameter: torch
                .getattr("nn")?
                .getattr("Parameter")?
                .cast_into::<PyType>()?
                .unbind(),
            dtypes: vec![
                (dtype("float32")?, DType::F32),
                (dtype("float64")?, DType::F64),
                (dtype("bfloat16")?, DType::Bf16),
                (dtype("int32")?, DType::I32),
            ],
        })
    })
}

/// A torch tensor's elements: where they are and how many bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TensorMemory {
    addr: usize,
    bytes: usize,
    dtype: DType,
    len: usize,
}

/// Why a tensor cannot be used in place (the caller may still copy it).
pub(crate) type Refusal = String;

impl TensorMemory {
    /// The memory of `obj`, checked to hold a tensor of type `ty` in place.
    pub(crate) fn of(obj: &Bound<'_, PyAny>, ty: &TensorType) -> PyResult<Result<Self, Refusal>> {
        if ty.dtype == DType::Bool {
            return Ok(Err("bool tensors are not viewed in place".to_string()));
        }
        let py = obj.py();
        let torch = torch(py)?;
        let class = obj.get_type();
        if !class.is(torch.tensor.bind(py)) && !class.is(torch.parameter.bind(py)) {
            return Ok(Err(format!(
                "a {} is not a plain torch.Tensor",
                class.name()?
            )));
        }
        if !obj.getattr(intern!(py, "is_cpu"))?.is_truthy()? {
            return Ok(Err(format!(
                "the tensor is on {}, not the CPU",
                obj.getattr(intern!(py, "device"))?
            )));
        }
        let dtype_obj = obj.getattr(intern!(py, "dtype"))?;
        let dtype = torch
            .dtypes
            .iter()
            .find(|(d, _)| dtype_obj.is(d.bind(py)))
            .map(|&(_, dtype)| dtype);
        if dtype != Some(ty.dtype) {
            return Ok(Err(format!("dtype {dtype_obj} is not {}", ty.dtype.name())));
        }
        let dtype = ty.dtype;
        let shape: Vec<usize> = obj.getattr(intern!(py, "shape"))?.extract()?;
        if shape != ty.shape {
            return Ok(Err(format!("shape {shape:?} is not {:?}", ty.shape)));
        }
        if !obj
            .call_method0(intern!(py, "is_contiguous"))?
            .is_truthy()?
        {
            return Ok(Err("the tensor is not contiguous".to_string()));
        }
        if obj.call_method0(intern!(py, "is_neg"))?.is_truthy()? {
            return Ok(Err(
                "the tensor has torch's lazy negation bit set".to_string()
            ));
        }
        let len = ty.num_elements();
        let bytes = ty.size_bytes();
        let offset: usize = obj.call_method0(intern!(py, "storage_offset"))?.extract()?;
        let storage: usize = obj
            .call_method0(intern!(py, "untyped_storage"))?
            .call_method0(intern!(py, "nbytes"))?
            .extract()?;
        let end = offset
            .checked_mul(dtype.size_bytes())
            .and_then(|start| start.checked_add(bytes));
        if end.is_none_or(|end| end > storage) {
            return Ok(Err(format!(
                "its storage holds {storage} bytes, fewer than the tensor's elements need"
            )));
        }
        let addr: usize = obj.call_method0(intern!(py, "data_ptr"))?.extract()?;
        if len > 0 && (addr == 0 || !addr.is_multiple_of(align(dtype))) {
            return Ok(Err(format!(
                "its data address {addr:#x} is not aligned for {}",
                dtype.name()
            )));
        }
        Ok(Ok(TensorMemory {
            addr,
            bytes,
            dtype,
            len,
        }))
    }

    fn overlaps(&self, other: &TensorMemory) -> bool {
        self.bytes > 0
            && other.bytes > 0
            && self.addr < other.addr + other.bytes
            && other.addr < self.addr + self.bytes
    }

    /// The elements, read in place.
    ///
    /// The tensor the memory was checked on must stay alive, and its
    /// storage unresized, while the view lives: the caller holds it.
    pub(crate) fn elements(&self) -> ElementsRef<'_> {
        if self.len == 0 {
            return empty_elements(self.dtype);
        }
        let p = self.addr as *const u8;
        // SAFETY: `of` checked that `len` elements of `dtype` lie inside
        // the live tensor's storage from the aligned, non-null `addr`; the
        // caller keeps the tensor alive for the view's lifetime, and no
        // output of the call overlaps it (`check_disjoint`).
        unsafe {
            match self.dtype {
                DType::F32 => ElementsRef::F32(std::slice::from_raw_parts(p.cast(), self.len)),
                DType::F64 => ElementsRef::F64(std::slice::from_raw_parts(p.cast(), self.len)),
                DType::Bf16 => ElementsRef::Bf16(std::slice::from_raw_parts(p.cast(), self.len)),
                DType::I32 => ElementsRef::I32(std::slice::from_raw_parts(p.cast(), self.len)),
                DType::Bool => unreachable!("`of` views no bool tensor"),
            }
        }
    }

    /// The elements, written in place.
    ///
    /// As [`TensorMemory::elements`], and nothing else of the call may view
    /// this memory.
    pub(crate) fn elements_mut(&mut self) -> ElementsMut<'_> {
        if self.len == 0 {
            return empty_elements_mut(self.dtype);
        }
        let p = self.addr as *mut u8;
        // SAFETY: as in `elements`; `check_disjoint` made this the only
        // view of these bytes during the run.
        unsafe {
            match self.dtype {
                DType::F32 => ElementsMut::F32(std::slice::from_raw_parts_mut(p.cast(), self.len)),
                DType::F64 => ElementsMut::F64(std::slice::from_raw_parts_mut(p.cast(), self.len)),
                DType::Bf16 => {
                    ElementsMut::Bf16(std::slice::from_raw_parts_mut(p.cast(), self.len))
                }
                DType::I32 => ElementsMut::I32(std::slice::from_raw_parts_mut(p.cast(), self.len)),
                DType::Bool => unreachable!("`of` views no bool tensor"),
            }
        }
    }
}

/// Fails if an output's memory overlaps an input's or another output's:
/// a run writes outputs while it reads inputs.
pub(crate) fn check_disjoint(
    inputs: &[TensorMemory],
    outputs: &[TensorMemory],
) -> Result<(), Refusal> {
    for (k, out) in outputs.iter().enumerate() {
        if let Some(i) = inputs.iter().position(|m| m.overlaps(out)) {
            return Err(format!("output {k} shares memory with input {i}"));
        }
        if let Some(j) = outputs[..k].iter().position(|m| m.overlaps(out)) {
            return Err(format!("output {k} shares memory with output {j}"));
        }
    }
    Ok(())
}

fn align(dtype: DType) -> usize {
    match dtype {
        DType::F32 => align_of::<f32>(),
        DType::F64 => align_of::<f64>(),
        DType::Bf16 => align_of::<half::bf16>(),
        DType::I32 => align_of::<i32>(),
        DType::Bool => align_of::<bool>(),
    }
}

fn empty_elements(dtype: DType) -> ElementsRef<'static> {
    match dtype {
        DType::F32 => ElementsRef::F32(&[]),
        DType::F64 => ElementsRef::F64(&[]),
        DType::Bf16 => ElementsRef::Bf16(&[]),
        DType::I32 => ElementsRef::I32(&[]),
        DType::Bool => ElementsRef::Bool(&[]),
    }
}

fn empty_elements_mut(dtype: DType) -> ElementsMut<'static> {
    match dtype {
        DType::F32 => ElementsMut::F32(&mut []),
        DType::F64 => ElementsMut::F64(&mut []),
        DType::Bf16 => ElementsMut::Bf16(&mut []),
        DType::I32 => ElementsMut::I32(&mut []),
        DType::Bool => ElementsMut::Bool(&mut []),
    }
}
