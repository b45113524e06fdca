//! Element types and tensor types.

use std::fmt;

/// Element type of a tensor.
///
/// `bf16` is a storage type: arithmetic on it happens in `f32` (in `f64` in
/// the reference interpreter) and every stored value is rounded to the
/// nearest bf16, ties to even.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// bfloat16: 8 exponent bits, 7 mantissa bits.
    Bf16,
    /// IEEE binary64.
    F64,
    /// Two's-complement 32-bit integer; arithmetic wraps.
    I32,
    /// Boolean.
    Bool,
}

impl DType {
    /// All element types, in text order.
    pub const ALL: [DType; 5] = [DType::F32, DType::Bf16, DType::F64, DType::I32, DType::Bool];

    /// The text spelling (`f32`, `bf16`, …).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
            DType::F64 => "f64",
            DType::I32 => "i32",
            DType::Bool => "bool",
        }
    }

    /// Parses a text spelling.
    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::Bf16 | DType::F64)
    }

    /// Whether arithmetic (add, mul, sum, …) is defined: every type but `bool`.
    pub fn is_numeric(self) -> bool {
        self != DType::Bool
    }

    /// Storage size of one element in bytes.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::Bf16 => 2,
            DType::F64 => 8,
            DType::Bool => 1,
        }
    }

    /// Rounds an `f64` to the nearest value of this type, the way a store
    /// of this type does: nearest-even for floats, truncation toward zero
    /// with saturation (NaN to 0) for `i32`, `x != 0` for `bool`.
    pub fn round(self, x: f64) -> f64 {
        match self {
            DType::F64 => x,
            DType::F32 => x as f32 as f64,
            DType::Bf16 => round_bf16(x),
            DType::I32 => x as i32 as f64,
            DType::Bool => f64::from(u8::from(x != 0.0)),
        }
    }

    /// Whether `x` is exactly a value of this type (NaN counts for floats).
    pub fn holds(self, x: f64) -> bool {
        x.is_nan() && self.is_float() || self.round(x).to_bits() == x.to_bits()
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rounds to the nearest bf16 value, ties to even, in one step from `f64`
/// (going through `f32` first could round twice).
pub fn round_bf16(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    // bf16 has 8 significant bits and f32's exponent range.
    let exp = (((x.to_bits() >> 52) & 0x7ff) as i64 - 1023).max(-126);
    let ulp = f64::from_bits(((exp - 7 + 1023) as u64) << 52);
    let r = (x / ulp).round_ties_even() * ulp;
    if r.abs() >= 2f64.powi(128) {
        f64::INFINITY.copysign(x)
    } else {
        r
    }
}

/// Upper bound on the rank of any tensor.
pub const MAX_RANK: usize = 16;

/// Upper bound on the element count of any tensor (2^40): larger shapes are
/// rejected by the verifier as absurd rather than overflowing later.
pub const MAX_ELEMENTS: u64 = 1 << 40;

/// Number of elements of a shape, or `None` if it exceeds [`MAX_ELEMENTS`].
pub fn num_elements(shape: &[usize]) -> Option<usize> {
    let mut n: u64 = 1;
    for &d in shape {
        n = n.checked_mul(d as u64)?;
        if n > MAX_ELEMENTS {
            return None;
        }
    }
    usize::try_from(n).ok()
}

/// Row-major strides of a shape, in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The static type of a value: element type plus shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first; empty for a scalar.
    pub shape: Vec<usize>,
}

impl TensorType {
    /// A tensor type.
    pub fn new(dtype: DType, shape: impl Into<Vec<usize>>) -> Self {
        TensorType {
            dtype,
            shape: shape.into(),
        }
    }

    /// A rank-0 type.
    pub fn scalar(dtype: DType) -> Self {
        TensorType {
            dtype,
            shape: Vec::new(),
        }
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements; saturates at `usize::MAX` for absurd shapes
    /// (which the verifier rejects).
    pub fn num_elements(&self) -> usize {
        num_elements(&self.shape).unwrap_or(usize::MAX)
    }

    /// Storage size in bytes; saturating like [`TensorType::num_elements`].
    pub fn size_bytes(&self) -> usize {
        self.num_elements().saturating_mul(self.dtype.size_bytes())
    }

    /// The same shape with another element type.
    pub fn with_dtype(&self, dtype: DType) -> Self {
        TensorType {
            dtype,
            shape: self.shape.clone(),
        }
    }

    /// The same element type with another shape.
    pub fn with_shape(&self, shape: impl Into<Vec<usize>>) -> Self {
        TensorType {
            dtype: self.dtype,
            shape: shape.into(),
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_sizes() {
        let t = TensorType::new(DType::Bf16, [4, 8]);
        assert_eq!(t.to_string(), "bf16[4,8]");
        assert_eq!(t.size_bytes(), 64);
        assert_eq!(TensorType::scalar(DType::F32).to_string(), "f32[]");
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(num_elements(&[1 << 20, 1 << 21]), None);
    }

    #[test]
    fn rounding_per_dtype() {
        assert_eq!(DType::F32.round(0.1), 0.1f32 as f64);
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7 in bf16: ties go to even (1).
        assert_eq!(DType::Bf16.round(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(DType::Bf16.round(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(DType::I32.round(-2.7), -2.0);
        assert_eq!(DType::I32.round(f64::NAN), 0.0);
        assert_eq!(DType::Bool.round(-3.0), 1.0);
        assert!(DType::F32.holds(0.5) && !DType::F32.holds(0.1));
        // Just above a tie rounds up even when the excess is far below f32 precision.
        assert_eq!(
            DType::Bf16.round(1.0 + 1.0 / 256.0 + 1e-12),
            1.0 + 2.0 / 256.0
        );
        assert_eq!(DType::Bf16.round(3.4e38), f64::INFINITY);
        assert!(DType::Bf16.round(-3.0e38).is_finite());
        // Subnormal bf16: spacing 2^-133.
        assert_eq!(DType::Bf16.round(2f64.powi(-133) * 0.75), 2f64.powi(-133));
        for x in [0.1, -7.3, 1e-39, 123456.0] {
            assert_eq!(
                DType::Bf16.round(x),
                half::bf16::from_f32(x as f32).to_f64(),
                "{x}"
            );
        }
    }
}

/// The type of a value: a tensor, or a tuple of tensors (the result of a
/// multi-result op, taken apart with `get`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Type {
    /// One tensor.
    Tensor(TensorType),
    /// Several tensors; only `get` may use such a value.
    Tuple(Vec<TensorType>),
}

impl Type {
    /// The tensor type, if this is not a tuple.
    pub fn as_tensor(&self) -> Option<&TensorType> {
        match self {
            Type::Tensor(t) => Some(t),
            Type::Tuple(_) => None,
        }
    }

    /// Whether this is a tuple.
    pub fn is_tuple(&self) -> bool {
        matches!(self, Type::Tuple(_))
    }

    /// Storage size in bytes (the sum over tuple elements).
    pub fn size_bytes(&self) -> usize {
        match self {
            Type::Tensor(t) => t.size_bytes(),
            Type::Tuple(ts) => ts
                .iter()
                .map(TensorType::size_bytes)
                .fold(0, usize::saturating_add),
        }
    }
}

impl From<TensorType> for Type {
    fn from(t: TensorType) -> Self {
        Type::Tensor(t)
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Tensor(t) => write!(f, "{t}"),
            Type::Tuple(ts) => {
                f.write_str("(")?;
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{t}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// `bytes` in the largest binary unit that keeps the number at least 1,
/// with two decimals (`512 B`, `1.50 KiB`, `589.12 MiB`): small graphs
/// read `3.25 KiB`, not `0.00 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}
