//! Dense host tensors: what graphs take and return.

use half::bf16;

use crate::error::{Error, Result};
use crate::types::{DType, TensorType};

/// Typed, row-major element storage.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `f32` elements.
    F32(Vec<f32>),
    /// `bf16` elements.
    Bf16(Vec<bf16>),
    /// `f64` elements.
    F64(Vec<f64>),
    /// `i32` elements.
    I32(Vec<i32>),
    /// `bool` elements.
    Bool(Vec<bool>),
}

impl TensorData {
    /// Element type.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::Bf16(_) => DType::Bf16,
            TensorData::F64(_) => DType::F64,
            TensorData::I32(_) => DType::I32,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    /// Element count.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::Bf16(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A dense tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    ty: TensorType,
    data: TensorData,
}

impl Tensor {
    /// A tensor of `shape` holding `data`; the element count must match.
    pub fn new(shape: impl Into<Vec<usize>>, data: TensorData) -> Result<Self> {
        let ty = TensorType::new(data.dtype(), shape);
        if crate::types::num_elements(&ty.shape) != Some(data.len()) {
            return Err(Error::TensorData {
                ty,
                got: data.len(),
            });
        }
        Ok(Tensor { ty, data })
    }

    /// A tensor of type `ty` from `f64` values, each rounded to the dtype.
    pub fn from_f64(ty: TensorType, values: &[f64]) -> Result<Self> {
        let d = ty.dtype;
        let data = match d {
            DType::F32 => TensorData::F32(values.iter().map(|&x| x as f32).collect()),
            DType::Bf16 => TensorData::Bf16(
                values
                    .iter()
                    .map(|&x| bf16::from_f32(crate::types::round_bf16(x) as f32))
                    .collect(),
            ),
            DType::F64 => TensorData::F64(values.to_vec()),
            DType::I32 => TensorData::I32(values.iter().map(|&x| x as i32).collect()),
            DType::Bool => TensorData::Bool(values.iter().map(|&x| x != 0.0).collect()),
        };
        Tensor::new(ty.shape, data)
    }

    /// A rank-0 `f32` tensor.
    pub fn scalar_f32(x: f32) -> Self {
        Tensor {
            ty: TensorType::scalar(DType::F32),
            data: TensorData::F32(vec![x]),
        }
    }

    /// Its type.
    pub fn ty(&self) -> &TensorType {
        &self.ty
    }

    /// Its shape.
    pub fn shape(&self) -> &[usize] {
        &self.ty.shape
    }

    /// Its element type.
    pub fn dtype(&self) -> DType {
        self.ty.dtype
    }

    /// Its elements.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// Consumes the tensor, returning its elements.
    pub fn into_data(self) -> TensorData {
        self.data
    }

    /// Every element widened to `f64` (exact for every dtype).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::Bf16(v) => v.iter().map(|x| x.to_f64()).collect(),
            TensorData::F64(v) => v.clone(),
            TensorData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| f64::from(u8::from(x))).collect(),
        }
    }

    /// The elements if the tensor is `f32`.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Position and value of the first NaN or infinity, if any.
    pub fn first_non_finite(&self) -> Option<(usize, f64)> {
        self.to_f64_vec()
            .into_iter()
            .enumerate()
            .find(|(_, x)| !x.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction_checks_counts() {
        assert!(Tensor::new([2, 2], TensorData::F32(vec![0.0; 3])).is_err());
        let t =
            Tensor::from_f64(TensorType::new(DType::Bf16, [2]), &[1.0, 1.0 + 1.0 / 512.0]).unwrap();
        assert_eq!(t.to_f64_vec(), vec![1.0, 1.0]);
        let i = Tensor::from_f64(TensorType::new(DType::I32, [2]), &[-1.9, 3.0]).unwrap();
        assert_eq!(i.data(), &TensorData::I32(vec![-1, 3]));
        assert_eq!(
            Tensor::scalar_f32(f32::NAN).first_non_finite().map(|p| p.0),
            Some(0)
        );
    }
}
