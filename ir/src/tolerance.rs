//! How close a computed tensor must be to the reference, per element type
//! (the numerics contract of `docs/design.md`, made executable). Every
//! comparison in the workspace goes through this module: the file tests'
//! `run` option, `birkhoff compare`, the `birkhoff::compare` module and the tests.
//!
//! One table, [`TOLERANCES`], holds the allowed absolute and relative error
//! for every [`DType`], once for elementwise results and once for
//! reductions (sums and matrix products, whose error grows with the number
//! of terms). Loosening an entry needs a comment saying why.
//!
//! **The rule.** An element passes when
//!
//! ```text
//! |got - want| <= atol + rtol · max(|want|, floor)
//! ```
//!
//! NaN matches NaN (of any sign or payload); an infinity matches only the
//! same infinity; integers and bools are compared exactly (their table
//! rows are zero). A [`Rule`] is a [`Tolerance`] and the [`Scale`] that
//! sets `floor`, in one of two regimes:
//!
//! * [`Scale::Element`] (`floor = 0`): each element against its own
//!   reference value. For one op or a short chain: an op against its
//!   reference, a kernel against the interpreter. [`close`] and
//!   [`assert_close`] use it.
//! * [`Scale::OutputPeak`] (`floor` a fraction of the output's largest
//!   finite `|want|`): for whole programs compared with another program —
//!   fused against unfused, compiled against the reference. An element that
//!   cancels to nearly zero still carries the rounding error of the large
//!   values it was computed from, so its error is measured against a
//!   thousandth of the output's peak ([`Rule::output`]). For `bf16`,
//!   where the two programs round at different points (a fused kernel keeps
//!   `f32` inside and rounds only its results, the unfused graph rounds
//!   every intermediate to 8 bits), the floor is the whole peak and the
//!   bound four times the reduction row ([`Rule::rounded_apart`]): 8 bf16
//!   units of the peak.

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
        // One f32 rounding is 2^-24 ≈ 6e-8; 1e-5 (`docs/design.md` §3) leaves room for
        // libm transcendentals and a few chained ops; atol covers cancellation.
        elementwise: tol(1e-6, 1e-5),
        // `docs/design.md` §3: f32 accumulation over ≤ 10^5 terms, in any order.
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

    /// Whether one element passes per element ([`Scale::Element`]): see
    /// the module documentation.
    pub fn accepts(&self, got: f64, want: f64) -> bool {
        Rule::per_element(*self).compare(&[got], &[want]).passed()
    }

    /// This tolerance with `atol` and `rtol` multiplied by `factor`.
    #[must_use]
    pub fn scaled(self, factor: f64) -> Tolerance {
        tol(self.atol * factor, self.rtol * factor)
    }

    /// The allowed `|got - want|` where the relative part is measured
    /// against `scale`.
    pub fn bound(&self, scale: f64) -> f64 {
        self.atol + self.rtol * scale
    }
}

/// What an element's relative error is measured against (module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    /// The element's own reference value: `floor = 0`.
    Element,
    /// At least this fraction of the output's largest finite `|want|`.
    OutputPeak(f64),
}

/// How close a whole output must be: a tolerance, the scale its relative
/// part is measured against, and what non-finite elements may do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    /// The allowed error.
    pub tolerance: Tolerance,
    /// What `rtol` multiplies.
    pub scale: Scale,
    /// Whether an element that is non-finite in both `got` and `want`
    /// passes even when they differ (NaN against ±inf, +inf against -inf):
    /// a program whose intermediates overflow does so at a different step
    /// than the reference, when it fuses multiply-adds or sums in another
    /// order, and only its finite elements can be judged.
    pub overflow_matches: bool,
}

/// Of the output's peak, the floor of [`Rule::output`].
pub const PROGRAM_PEAK_FRACTION: f64 = 1e-3;

/// How much wider than the reduction row a `bf16` output's bound is when
/// two programs that round at different points are compared.
pub const BF16_PROGRAMS_FACTOR: f64 = 4.0;

impl Rule {
    /// `tolerance` per element ([`Scale::Element`]).
    pub fn per_element(tolerance: Tolerance) -> Rule {
        Rule {
            tolerance,
            scale: Scale::Element,
            overflow_matches: false,
        }
    }

    /// A whole `dtype` output of a program against the reference (or
    /// another program): the reduction row, measured against at least a
    /// thousandth of the output's peak.
    pub fn output(dtype: DType) -> Rule {
        Rule {
            tolerance: Tolerance::reduction(dtype),
            scale: Scale::OutputPeak(PROGRAM_PEAK_FRACTION),
            overflow_matches: false,
        }
    }

    /// [`Rule::output`] for two programs that round `bf16` at different
    /// points (a fused program against the unfused graph): for `bf16`
    /// outputs four times the reduction row against the whole peak, 8 bf16
    /// units of it (module docs); other dtypes as [`Rule::output`]. The
    /// zoo's mHC models stay within 3.5 units and its transformer blocks
    /// within 4.5 over many seeds and shapes, while a wrong fusion is off by
    /// the size of the values themselves.
    pub fn rounded_apart(dtype: DType) -> Rule {
        if dtype == DType::Bf16 {
            Rule {
                tolerance: Tolerance::reduction(dtype).scaled(BF16_PROGRAMS_FACTOR),
                scale: Scale::OutputPeak(1.0),
                overflow_matches: false,
            }
        } else {
            Rule::output(dtype)
        }
    }

    /// The same rule with `atol` and `rtol` multiplied by `factor`: for
    /// whole models, where the per-op-family bounds compound through
    /// chained layers.
    #[must_use]
    pub fn scaled(self, factor: f64) -> Rule {
        Rule {
            tolerance: self.tolerance.scaled(factor),
            ..self
        }
    }

    /// The same rule with [`Rule::overflow_matches`] set.
    #[must_use]
    pub fn forgiving_overflow(self) -> Rule {
        Rule {
            overflow_matches: true,
            ..self
        }
    }

    /// Compares `got` with the reference `want` element by element (the
    /// two must have the same length).
    pub fn compare(&self, got: &[f64], want: &[f64]) -> Comparison {
        assert_eq!(got.len(), want.len(), "compared outputs differ in length");
        let floor = self.floor(want);
        let mut c = Comparison {
            elements: got.len(),
            failures: 0,
            max_abs: 0.0,
            max_rel: 0.0,
            max_rel_index: 0,
            worst_failure: None,
            floor,
        };
        let mut worst_excess = f64::NEG_INFINITY;
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            let (abs, rel, excess) = self.element(g, w, floor);
            c.max_abs = c.max_abs.max(abs);
            if rel > c.max_rel {
                c.max_rel = rel;
                c.max_rel_index = k;
            }
            if excess > 0.0 {
                c.failures += 1;
                if excess > worst_excess {
                    worst_excess = excess;
                    c.worst_failure = Some(k);
                }
            }
        }
        c
    }

    /// Whether each element of `got` is within the bound of `want`'s.
    pub fn verdicts(&self, got: &[f64], want: &[f64]) -> Vec<bool> {
        assert_eq!(got.len(), want.len(), "compared outputs differ in length");
        let floor = self.floor(want);
        got.iter()
            .zip(want)
            .map(|(&g, &w)| self.element(g, w, floor).2 <= 0.0)
            .collect()
    }

    /// The `floor` of the scale for the reference output `want`.
    fn floor(&self, want: &[f64]) -> f64 {
        match self.scale {
            Scale::Element => 0.0,
            Scale::OutputPeak(fraction) => {
                let peak = want
                    .iter()
                    .filter(|x| x.is_finite())
                    .fold(0.0f64, |m, x| m.max(x.abs()));
                (fraction * peak).max(f64::MIN_POSITIVE)
            }
        }
    }

    /// One element: `(|got - want|, relative error, excess over the
    /// bound)`, the excess positive when it fails.
    fn element(&self, g: f64, w: f64, floor: f64) -> (f64, f64, f64) {
        let both_nonfinite = !g.is_finite() && !w.is_finite();
        if (g.is_nan() && w.is_nan()) || g == w || (self.overflow_matches && both_nonfinite) {
            (0.0, 0.0, f64::NEG_INFINITY)
        } else if !g.is_finite() || !w.is_finite() {
            (f64::INFINITY, f64::INFINITY, f64::INFINITY)
        } else {
            let abs = (g - w).abs();
            let scale = w.abs().max(floor);
            (abs, abs / scale, abs - self.tolerance.bound(scale))
        }
    }
}

/// What [`Rule::compare`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// Elements compared.
    pub elements: usize,
    /// Elements outside the bound.
    pub failures: usize,
    /// Largest `|got - want|` (infinite for a NaN or infinity mismatch).
    pub max_abs: f64,
    /// Largest `|got - want| / max(|want|, floor)`.
    pub max_rel: f64,
    /// Flat index of the element with the largest relative error.
    pub max_rel_index: usize,
    /// Flat index of the element furthest outside the bound, if any is.
    pub worst_failure: Option<usize>,
    /// The `floor` the scale gave (0 for [`Scale::Element`]).
    pub floor: f64,
}

impl Comparison {
    /// Whether every element is within the bound.
    pub fn passed(&self) -> bool {
        self.failures == 0
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
    let c = Rule::per_element(tol).compare(&g, &w);
    match c.worst_failure {
        None => Ok(()),
        Some(i) => {
            let (a, b) = (g[i], w[i]);
            Err(format!(
                "{} of {} elements differ (atol {:e}, rtol {:e}); worst at {:?} (flat {i}): \
                 got {a:?}, want {b:?}, |diff| {:e} > allowed {:e}",
                c.failures,
                g.len(),
                tol.atol,
                tol.rtol,
                multi_index(i, got.shape()),
                (a - b).abs(),
                tol.bound(b.abs()),
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
