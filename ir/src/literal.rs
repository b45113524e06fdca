//! Constant tensors and the exact text spelling of scalars.

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::types::{DType, TensorType};

/// The values of a constant: one value repeated, or every element.
///
/// Values are stored as `f64`, which holds every `f32`, `bf16`, `i32` and
/// `bool` value exactly; a [`Literal`] only ever holds values of its dtype.
/// NaN is stored in its canonical form, so equality is bitwise.
#[derive(Clone, Debug)]
pub enum LiteralValues {
    /// Every element is this value.
    Splat(f64),
    /// Row-major elements; as many as the type has.
    Dense(Vec<f64>),
}

/// A constant tensor of a fixed type.
#[derive(Clone, Debug)]
pub struct Literal {
    ty: TensorType,
    values: LiteralValues,
}

fn canonical(x: f64) -> f64 {
    if x.is_nan() { f64::NAN } else { x }
}

impl Literal {
    /// A constant whose elements are all `value`, rounded to `ty`'s dtype.
    pub fn splat(ty: TensorType, value: f64) -> Self {
        let v = canonical(ty.dtype.round(value));
        Literal {
            ty,
            values: LiteralValues::Splat(v),
        }
    }

    /// A scalar constant, rounded to `dtype`.
    pub fn scalar(dtype: DType, value: f64) -> Self {
        Literal::splat(TensorType::scalar(dtype), value)
    }

    /// A constant with every element given, each rounded to `ty`'s dtype.
    /// Returns `None` if the count does not match the type.
    pub fn dense(ty: TensorType, values: Vec<f64>) -> Option<Self> {
        if values.len() != ty.num_elements() {
            return None;
        }
        let d = ty.dtype;
        let values = values.into_iter().map(|v| canonical(d.round(v))).collect();
        Some(Literal {
            ty,
            values: LiteralValues::Dense(values),
        })
    }

    /// The constant's type.
    pub fn ty(&self) -> &TensorType {
        &self.ty
    }

    /// The stored values.
    pub fn values(&self) -> &LiteralValues {
        &self.values
    }

    /// Element `i` (row-major).
    pub fn get(&self, i: usize) -> f64 {
        match &self.values {
            LiteralValues::Splat(v) => *v,
            LiteralValues::Dense(vs) => vs[i],
        }
    }

    /// The single value if every element is the same.
    pub fn as_splat(&self) -> Option<f64> {
        match &self.values {
            LiteralValues::Splat(v) => Some(*v),
            LiteralValues::Dense(vs) => {
                let first = *vs.first()?;
                vs.iter()
                    .all(|v| v.to_bits() == first.to_bits())
                    .then_some(first)
            }
        }
    }

    fn bits(&self) -> (bool, Vec<u64>) {
        match &self.values {
            LiteralValues::Splat(v) => (true, vec![v.to_bits()]),
            LiteralValues::Dense(vs) => (false, vs.iter().map(|v| v.to_bits()).collect()),
        }
    }
}

impl PartialEq for Literal {
    fn eq(&self, other: &Self) -> bool {
        self.ty == other.ty && self.bits() == other.bits()
    }
}

impl Eq for Literal {}

impl PartialOrd for Literal {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Literal {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.ty, self.bits()).cmp(&(&other.ty, other.bits()))
    }
}

impl Hash for Literal {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.ty.hash(state);
        self.bits().hash(state);
    }
}

/// Writes one scalar of `dtype` so that [`parse_scalar`] reads back the same
/// bits: the shortest decimal that round-trips for floats, `nan`, `inf`,
/// `-inf`, integers for `i32`, `true`/`false` for `bool`.
pub fn format_scalar(f: &mut impl fmt::Write, dtype: DType, v: f64) -> fmt::Result {
    match dtype {
        DType::Bool => f.write_str(if v != 0.0 { "true" } else { "false" }),
        DType::I32 => write!(f, "{}", v as i32),
        _ if v.is_nan() => f.write_str("nan"),
        _ if v.is_infinite() => f.write_str(if v > 0.0 { "inf" } else { "-inf" }),
        DType::F64 => write!(f, "{v:?}"),
        // bf16 values are f32 values, and f32's shortest spelling parses back
        // to the same f32, hence the same bf16.
        DType::F32 | DType::Bf16 => write!(f, "{:?}", v as f32),
    }
}

/// Reads one scalar of `dtype` written by [`format_scalar`] (or by hand).
///
/// Accepts decimal and exponent notation, `nan`, `inf`, `-inf`, and for
/// floats the raw bits as `0x…` hex (8 digits for f32, 4 for bf16, 16 for
/// f64). Floats round to nearest; integers and bools must be exact.
pub fn parse_scalar(dtype: DType, s: &str) -> Result<f64, String> {
    let bad = || format!("'{s}' is not a {dtype} value");
    if let Some(hex) = s.strip_prefix("0x") {
        let bits = u64::from_str_radix(hex, 16).map_err(|_| bad())?;
        return match dtype {
            DType::F32 if hex.len() == 8 => Ok(canonical(f32::from_bits(bits as u32) as f64)),
            DType::Bf16 if hex.len() == 4 => {
                Ok(canonical(half::bf16::from_bits(bits as u16).to_f64()))
            }
            DType::F64 if hex.len() == 16 => Ok(canonical(f64::from_bits(bits))),
            _ => Err(format!("hex literal '{s}' has the wrong width for {dtype}")),
        };
    }
    match dtype {
        DType::Bool => match s {
            "true" => Ok(1.0),
            "false" => Ok(0.0),
            _ => Err(bad()),
        },
        DType::I32 => s.parse::<i32>().map(f64::from).map_err(|_| bad()),
        _ => {
            let v = match s {
                "nan" => f64::NAN,
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                // Parse f32 directly: going through f64 could round twice.
                _ if dtype == DType::F32 => s.parse::<f32>().map_err(|_| bad())? as f64,
                // bf16 goes through f64, not f32: f32's 24 bits would turn
                // decimals near a bf16 midpoint into exact ties (then to even).
                _ => s.parse::<f64>().map_err(|_| bad())?,
            };
            Ok(canonical(dtype.round(v)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(dtype: DType, v: f64) {
        let mut s = String::new();
        format_scalar(&mut s, dtype, v).unwrap();
        let back = parse_scalar(dtype, &s).unwrap();
        assert_eq!(
            back.to_bits(),
            canonical(v).to_bits(),
            "{dtype} {v} via '{s}'"
        );
    }

    #[test]
    fn scalars_round_trip_bit_exactly() {
        for v in [
            0.0,
            -0.0,
            1.0,
            0.1f32 as f64,
            1e-6f32 as f64,
            f32::MIN_POSITIVE as f64 / 8.0,
        ] {
            round_trip(DType::F32, v);
        }
        for v in [
            0.1,
            1e-300,
            5e-324,
            -2.5e300,
            f64::NAN,
            f64::INFINITY,
            -f64::INFINITY,
        ] {
            round_trip(DType::F64, v);
        }
        round_trip(DType::Bf16, DType::Bf16.round(1.234567));
        round_trip(DType::I32, -2147483648.0);
        round_trip(DType::Bool, 1.0);
    }

    #[test]
    fn hex_bits_and_errors() {
        assert_eq!(parse_scalar(DType::F32, "0x3f800000"), Ok(1.0));
        assert_eq!(parse_scalar(DType::Bf16, "0x3f80"), Ok(1.0));
        assert!(parse_scalar(DType::F32, "0x3f80").is_err());
        assert!(parse_scalar(DType::I32, "1.5").is_err());
        assert!(parse_scalar(DType::Bool, "1").is_err());
        assert!(parse_scalar(DType::F32, "abc").is_err());
    }

    #[test]
    fn literal_equality_is_bitwise() {
        let t = TensorType::scalar(DType::F32);
        assert_eq!(
            Literal::splat(t.clone(), f64::NAN),
            Literal::splat(t.clone(), -f64::NAN)
        );
        assert_ne!(Literal::splat(t.clone(), 0.0), Literal::splat(t, -0.0));
        let d = Literal::dense(TensorType::new(DType::I32, [2]), vec![3.0, 3.0]).unwrap();
        assert_eq!(d.as_splat(), Some(3.0));
        assert!(Literal::dense(TensorType::new(DType::I32, [3]), vec![1.0]).is_none());
    }
}
