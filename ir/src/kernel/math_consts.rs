//! The constants of the inline `f32` math routines (`exp`, `log`, `tanh`;
//! `sigmoid` is built on `exp`) that the CPU and GPU backends emit
//! operation for operation, so that the two agree to the bit wherever
//! both fuse multiply-adds.
//!
//! The polynomials and the two-part `ln 2` are from the Cephes Math
//! Library by Stephen L. Moshier (`expf.c`, `logf.c`, `tanhf.c`), rounded
//! to `f32`. Each polynomial is evaluated by Horner's rule from its first
//! coefficient. The clamp of `exp`'s argument is this project's own.
//!
//! Accuracy of the routines built on them, in `f32` ulps of the exact
//! result, measured against `f64` on sweeps of 10^6 points
//! (`backends/cpu/tests/math_accuracy.rs` asserts the bounds;
//! `docs/backends.md` has the table): `exp` 0.99 (bound 1.5), `log` 0.82
//! (bound 1.5), `tanh` 1.30 (bound 2), `sigmoid` 2.53 (bound 3).

/// Largest argument `exp` evaluates: beyond it `e^x` is `+inf` anyway,
/// and clamping keeps the scale `2^n` in range.
pub const EXP_F32_MAX: f32 = 89.0;

/// Smallest argument `exp` evaluates: below it `e^x` rounds to `+0`.
pub const EXP_F32_MIN: f32 = -104.0;

/// The high part of `ln 2` for Cody–Waite reduction (Cephes `C1`,
/// `355/512`): few bits, so `n · LN2_HI_F32` is exact for the exponents
/// `n` that occur.
pub const LN2_HI_F32: f32 = 0.693_359_4;

/// The low part of `ln 2` (Cephes `C2`): `ln 2 ≈ LN2_HI_F32 + LN2_LO_F32`.
pub const LN2_LO_F32: f32 = -2.121_944_4e-4;

/// `e^r ≈ 1 + r + r² · P(r)` for `|r| ≤ ln 2 / 2` (Cephes `expf.c`).
pub const EXP_F32_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `ln(1 + m) ≈ m - m²/2 + m³ · P(m)` for `m` in `[√2/2 - 1, √2 - 1)`
/// (Cephes `logf.c`).
pub const LOG_F32_POLY: [f32; 9] = [
    7.037_683_6e-2,
    -1.151_461e-1,
    1.167_699_9e-1,
    -1.242_014_1e-1,
    1.424_932_3e-1,
    -1.666_805_8e-1,
    2.000_071_5e-1,
    -2.499_999_4e-1,
    3.333_333e-1,
];

/// `tanh x ≈ x + x · z · P(z)`, `z = x²`, for `|x| <` [`TANH_F32_SMALL`]
/// (Cephes `tanhf.c`).
pub const TANH_F32_POLY: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_909e-2,
    -5.373_971_6e-2,
    1.333_144_2e-1,
    -3.333_328e-1,
];

/// Below this `|x|`, `tanh` uses [`TANH_F32_POLY`]; above, `1 - 2 / (e^{2|x|} + 1)`.
pub const TANH_F32_SMALL: f32 = 0.625;

#[cfg(test)]
mod tests {
    use super::*;

    fn bits<const N: usize>(c: [f32; N]) -> [u32; N] {
        c.map(f32::to_bits)
    }

    /// The bit patterns both backends emitted before the constants were
    /// shared: generated code must not change with this file.
    #[test]
    fn bit_patterns_are_pinned() {
        assert_eq!(EXP_F32_MAX.to_bits(), 0x42b2_0000);
        assert_eq!(EXP_F32_MIN.to_bits(), 0xc2d0_0000);
        assert_eq!(LN2_HI_F32.to_bits(), 0x3f31_8000);
        assert_eq!(LN2_LO_F32.to_bits(), 0xb95e_8083);
        assert_eq!(
            bits(EXP_F32_POLY),
            [
                0x3950_6967,
                0x3ab7_43ce,
                0x3c08_8908,
                0x3d2a_a9c1,
                0x3e2a_aaaa,
                0x3f00_0000
            ]
        );
        assert_eq!(
            bits(LOG_F32_POLY),
            [
                0x3d90_21bb,
                0xbdeb_d1b8,
                0x3def_251b,
                0xbdfe_5d4f,
                0x3e11_e9bf,
                0xbe2a_ae50,
                0x3e4c_cead,
                0xbe7f_fffc,
                0x3eaa_aaaa
            ]
        );
        assert_eq!(
            bits(TANH_F32_POLY),
            [
                0xbbba_f0ea,
                0x3ca9_134f,
                0xbd5c_1e2d,
                0x3e08_8393,
                0xbeaa_aa99
            ]
        );
        assert_eq!(TANH_F32_SMALL.to_bits(), 0x3f20_0000);
    }

    #[test]
    fn ln2_splits_exactly_enough() {
        // C1 has 9 significant bits; C1 + C2 is ln 2 to f32 precision.
        assert_eq!(LN2_HI_F32, 355.0 / 512.0);
        let ln2 = f64::from(LN2_HI_F32) + f64::from(LN2_LO_F32);
        assert!((ln2 - std::f64::consts::LN_2).abs() < 1e-11);
    }
}
