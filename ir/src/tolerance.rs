//! How close a computed tensor must be to the reference, per element type
//! (DESIGN §5 made executable).
//!
//! One table, [`TOLERANCES`], holds the allowed absolute and relative error
//! for every [`DType`], once for elementwise results and once for
//! reductions (sums and matrix products, whose error grows with the number
//! of terms). Loosening an entry needs a comment saying why.
//!
//! An element passes when `|got - want| <= atol + rtol * |want|`. NaN
//! matches NaN (of any sign or payload); an infinity matches only the same
//! infinity; integers and bools are compared exactly.

use crate::tensor::Tensor;
use crate::types::DType;

/// The error allowed when comparing one value against the reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Absolute error allowed at any magnitude (matters near zero).
    pub atol: f64,
    /// Error allowed relative to the reference value.
    pub rtol: f64,
}

/// One row of the tolerance table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DTypeTolerance {
    /// The element type this row is for.
    pub dtype: DType,
    /// For elementwise ops and movement: a few roundings at most.
    pub elementwise: Tolerance,
    /// For reductions and matrix products over up to 10^5 terms.
    pub reduction: Tolerance,
}

const fn tol(atol: f64, rtol: f64) -> Tolerance {
    Tolerance { atol, rtol }
}

/// The tolerance table, one row per [`DType`], in [`DType::ALL`] order.
pub const TOLERANCES: [DTypeTolerance; 5] = [
    DTypeTolerance {
        dtype: DType::F32,
        // One f32 rounding is 2^-24 ≈ 6e-8; 1e-5 (DESIGN §5) leaves room for
        // libm transcendentals and a few chained ops; atol covers cancellation.
        elementwise: tol(1e-6, 1e-5),
        // DESIGN §5: f32 accumulation over ≤ 10^5 terms, in any order.
        reduction: tol(1e-5, 1e-4),
    },
    DTypeTolerance {
        dtype: DType::Bf16,
        // bf16 keeps 8 significant bits: one rounding is at most 2^-8 relative.
        elementwise: tol(2.0 / 256.0 / 256.0, 1.0 / 256.0),
        // The f32 accumulator adds little; one more bf16 ulp for upstream roundings.
        reduction: tol(1.0 / 256.0 / 64.0, 1.0 / 128.0),
    },
    DTypeTolerance {
        dtype: DType::F64,
        // f64 rounding is 2^-53 ≈ 1.1e-16; 1e-12 allows libm and short chains.
        elementwise: tol(1e-12, 1e-12),
        // 10^5 terms × 2^-53 ≈ 1.1e-11 worst case for a reordered sum.
        reduction: tol(1e-10, 1e-10),
    },
    DTypeTolerance {
        dtype: DType::I32,
        // Two's-complement arithmetic is exact and wraps identically everywhere.
        elementwise: Tolerance::EXACT,
        // Integer sums are exact (with wrap-around) in any order.
        reduction: Tolerance::EXACT,
    },
    DTypeTolerance {
        dtype: DType::Bool,
        // Logical results have no rounding.
        elementwise: Tolerance::EXACT,
        // Bools are never reduced, but exact is the only sensible bound.
        reduction: Tolerance::EXACT,
    },
];

impl Tolerance {
    /// Bit-for-bit equality (NaN still matches NaN).
    pub const EXACT: Tolerance = tol(0.0, 0.0);

    /// A custom tolerance. Prefer the table; say why when you need this.
    pub const fn new(atol: f64, rtol: f64) -> Tolerance {
        tol(atol, rtol)
    }

    fn row(dtype: DType) -> &'static DTypeTolerance {
        TOLERANCES
            .iter()
            .find(|r| r.dtype == dtype)
            .expect("every dtype has a tolerance row")
    }

    /// The table's tolerance for elementwise results of `dtype`.
    pub fn elementwise(dtype: DType) -> Tolerance {
        Tolerance::row(dtype).elementwise
    }

    /// The table's tolerance for reductions and matrix products of `dtype`.
    pub fn reduction(dtype: DType) -> Tolerance {
        Tolerance::row(dtype).reduction
    }

    /// Whether one element passes: see the module documentation.
    pub fn accepts(&self, got: f64, want: f64) -> bool {
        self.excess(got, want) <= 0.0
    }

    /// How far `got` is outside the allowed band (≤ 0 when it passes,
    /// `+inf` for a NaN or infinity mismatch).
    fn excess(&self, got: f64, want: f64) -> f64 {
        if got.is_nan() || want.is_nan() {
            return if got.is_nan() && want.is_nan() {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            };
        }
        if got.is_infinite() || want.is_infinite() {
            return if got == want {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            };
        }
        if got == want {
            return f64::NEG_INFINITY;
        }
        (got - want).abs() - (self.atol + self.rtol * want.abs())
    }
}

fn multi_index(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for k in (0..shape.len()).rev() {
        idx[k] = flat % shape[k];
        flat /= shape[k];
    }
    idx
}

/// Compares `got` with the reference `want` element by element.
///
/// Types (dtype and shape) must be equal. On failure the message gives the
/// number of failing elements and the worst one: its index, both values,
/// the difference and the allowed difference.
pub fn close(got: &Tensor, want: &Tensor, tol: Tolerance) -> Result<(), String> {
    if got.ty() != want.ty() {
        return Err(format!(
            "type mismatch: got {}, want {}",
            got.ty(),
            want.ty()
        ));
    }
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let mut failures = 0usize;
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let e = tol.excess(a, b);
        if e > 0.0 {
            failures += 1;
            if worst.is_none_or(|(_, we)| e > we) {
                worst = Some((i, e));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, _)) => {
            let (a, b) = (g[i], w[i]);
            Err(format!(
                "{failures} of {} elements differ (atol {:e}, rtol {:e}); worst at {:?} (flat {i}): \
                 got {a:?}, want {b:?}, |diff| {:e} > allowed {:e}",
                g.len(),
                tol.atol,
                tol.rtol,
                multi_index(i, got.shape()),
                (a - b).abs(),
                tol.atol + tol.rtol * b.abs(),
            ))
        }
    }
}

/// Panics with [`close`]'s message unless `got` is within `tol` of `want`.
#[track_caller]
pub fn assert_close(got: &Tensor, want: &Tensor, tol: Tolerance) {
    if let Err(msg) = close(got, want, tol) {
        panic!("tensors are not close: {msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::TensorType;

    fn t(dtype: DType, shape: &[usize], xs: &[f64]) -> Tensor {
        Tensor::from_f64(TensorType::new(dtype, shape), xs).unwrap()
    }

    #[test]
    fn table_has_one_row_per_dtype_in_order() {
        let dtypes: Vec<DType> = TOLERANCES.iter().map(|r| r.dtype).collect();
        assert_eq!(dtypes, DType::ALL);
        for r in &TOLERANCES {
            assert!(r.reduction.rtol >= r.elementwise.rtol, "{}", r.dtype);
            assert!(r.reduction.atol >= r.elementwise.atol, "{}", r.dtype);
        }
        assert_eq!(Tolerance::elementwise(DType::I32), Tolerance::EXACT);
        assert_eq!(Tolerance::reduction(DType::F32).rtol, 1e-4);
    }

    #[test]
    fn relative_and_absolute_bands() {
        let tol = Tolerance::elementwise(DType::F32);
        assert!(tol.accepts(1.0 + 5e-6, 1.0));
        assert!(!tol.accepts(1.0 + 5e-5, 1.0));
        assert!(tol.accepts(5e-7, 0.0));
        assert!(!tol.accepts(5e-6, 0.0));
        assert!(tol.accepts(1e6 + 5.0, 1e6));
        assert!(Tolerance::EXACT.accepts(-0.0, 0.0));
        assert!(!Tolerance::EXACT.accepts(1.0, 1.0 + f64::EPSILON));
    }

    #[test]
    fn nan_and_infinity_rules() {
        let loose = Tolerance::new(1e300, 1e300);
        assert!(loose.accepts(f64::NAN, -f64::NAN));
        assert!(!loose.accepts(f64::NAN, 1.0));
        assert!(!loose.accepts(1.0, f64::NAN));
        assert!(loose.accepts(f64::INFINITY, f64::INFINITY));
        assert!(!loose.accepts(f64::INFINITY, f64::NEG_INFINITY));
        assert!(!loose.accepts(f64::MAX, f64::INFINITY));
        assert!(!loose.accepts(f64::NEG_INFINITY, -1.0));
    }

    #[test]
    fn close_reports_the_worst_element() {
        let want = t(DType::F32, &[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let got = t(DType::F32, &[2, 3], &[0.0, 1.1, 2.0, 3.0, 4.5, 5.0]);
        let msg = close(&got, &want, Tolerance::elementwise(DType::F32)).unwrap_err();
        assert!(msg.starts_with("2 of 6 elements differ"), "{msg}");
        assert!(
            msg.contains("worst at [1, 1] (flat 4): got 4.5, want 4.0"),
            "{msg}"
        );
        assert!(close(&want, &want, Tolerance::EXACT).is_ok());
        let nan = t(DType::F32, &[2], &[f64::NAN, 1.0]);
        assert!(close(&nan, &nan, Tolerance::EXACT).is_ok());
        let other = t(DType::F32, &[2], &[1.0, 1.0]);
        let msg = close(&nan, &other, Tolerance::EXACT).unwrap_err();
        assert!(
            msg.contains("worst at [0] (flat 0): got NaN, want 1.0"),
            "{msg}"
        );
    }

    #[test]
    fn close_rejects_type_mismatches() {
        let a = t(DType::F32, &[2], &[1.0, 2.0]);
        let b = t(DType::F64, &[2], &[1.0, 2.0]);
        let c = t(DType::F32, &[1, 2], &[1.0, 2.0]);
        assert_eq!(
            close(&a, &b, Tolerance::EXACT).unwrap_err(),
            "type mismatch: got f32[2], want f64[2]"
        );
        assert!(close(&a, &c, Tolerance::EXACT).is_err());
    }

    #[test]
    #[should_panic(expected = "tensors are not close: 1 of 1 elements differ")]
    fn assert_close_panics_with_the_report() {
        let a = t(DType::I32, &[], &[3.0]);
        let b = t(DType::I32, &[], &[4.0]);
        assert_close(&a, &b, Tolerance::EXACT);
    }
}
