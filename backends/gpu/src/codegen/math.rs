//! Inline transcendental functions: `exp`, `log`, `tanh`, `sigmoid` and
//! `pow` in `f32` and `f64`, as plain LLVM IR.
//!
//! Each routine is an internal, always-inlined function of the module
//! (`birkhoff.exp.f32`, ...) built on first use. They use nothing but
//! arithmetic, comparisons, selects and bit casts — no NVVM intrinsics and
//! no library calls — so the very same code is JIT-compiled for the host
//! by [`super::host`], where the accuracy tests sweep it against `f64`.
//!
//! * `f32` `exp`, `log`, `tanh`, `sigmoid` are the CPU backend's
//!   Cephes-style routines (`backends/cpu/src/math.rs`) operation for
//!   operation — same reductions, fused multiply-adds and coefficients (one
//!   copy, in [`birkhoff_ir::kernel::math_consts`]) — so the two backends
//!   agree to the bit on them wherever the CPU uses FMA.
//! * `f64` `exp`: Cody–Waite reduction `x = k·ln2 + r`, `|r| ≤ ln2/2`, a
//!   degree-13 Taylor polynomial (truncation below 2^-57), scaling by
//!   `2^k` in two steps so that subnormal results round once.
//! * `f64` `log`: fdlibm's `e_log.c` (reduction to `[√2/2, √2)`,
//!   `s = f/(2+f)`, its degree-14 rational-free polynomial in `s²`).
//! * `f64` `tanh`: `e/(e+2)` with `e = expm1(2|x|)` (the `exp` reduction
//!   with the polynomial's constant term dropped, so no cancellation near
//!   0), `x` itself below `2^-28`, `±1` beyond 22.
//! * `sigmoid`: `1/(1+e^-|x|)`, mirrored for negative `x`, as on the CPU.
//! * `pow`: `exp(y·log|x|)` with the C99 special cases (`pow(x, ±0) = 1`,
//!   `pow(1, y) = 1`, `pow(-1, ±inf) = 1`, signed results for odd integer
//!   `y`, NaN for negative `x` and non-integer finite `y`, zeros and
//!   infinities); `f32` `pow` runs in `f64` and rounds once, as the CPU's
//!   does. The `f64` version loses `|y·ln x|·2^-53` of relative accuracy
//!   in the product, so large results (near overflow) are off by up to a
//!   few hundred ulps. `tests/gpu_emulated.rs`
//!   (`math_routines_across_their_ranges`, in the workspace root) checks
//!   every routine across its range against the f64 reference.

#![expect(
    clippy::excessive_precision,
    reason = "the fdlibm and Cephes constants, digit for digit as published"
)]

use birkhoff_ir::kernel::ScalarType;
use birkhoff_ir::kernel::math_consts::{
    EXP_F32_MAX, EXP_F32_MIN, EXP_F32_POLY, LN2_HI_F32, LN2_LO_F32, LOG_F32_POLY, TANH_F32_POLY,
    TANH_F32_SMALL,
};
use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::module::Linkage;
use inkwell::types::BasicMetadataTypeEnum;
use inkwell::values::{BasicMetadataValueEnum, FloatValue, FunctionValue, IntValue};
use inkwell::{FloatPredicate, IntPredicate};

use super::ops::{Cx, OrLlvm};
use crate::{GpuError, Result};

/// One inline math routine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Routine {
    /// `e^x` in `f32`.
    ExpF32,
    /// `ln x` in `f32`.
    LogF32,
    /// `tanh x` in `f32`.
    TanhF32,
    /// `1 / (1 + e^-x)` in `f32`.
    SigmoidF32,
    /// `x^y` in `f32` (computed in `f64`, rounded once).
    PowF32,
    /// `e^x` in `f64`.
    ExpF64,
    /// `ln x` in `f64`.
    LogF64,
    /// `tanh x` in `f64`.
    TanhF64,
    /// `1 / (1 + e^-x)` in `f64`.
    SigmoidF64,
    /// `x^y` in `f64`.
    PowF64,
}

impl Routine {
    /// `exp` of a float type.
    pub fn exp(t: ScalarType) -> Routine {
        if t == ScalarType::F64 {
            Routine::ExpF64
        } else {
            Routine::ExpF32
        }
    }

    /// `log` of a float type.
    pub fn log(t: ScalarType) -> Routine {
        if t == ScalarType::F64 {
            Routine::LogF64
        } else {
            Routine::LogF32
        }
    }

    /// `tanh` of a float type.
    pub fn tanh(t: ScalarType) -> Routine {
        if t == ScalarType::F64 {
            Routine::TanhF64
        } else {
            Routine::TanhF32
        }
    }

    /// `sigmoid` of a float type.
    pub fn sigmoid(t: ScalarType) -> Routine {
        if t == ScalarType::F64 {
            Routine::SigmoidF64
        } else {
            Routine::SigmoidF32
        }
    }

    /// `pow` of a float type.
    pub fn pow(t: ScalarType) -> Routine {
        if t == ScalarType::F64 {
            Routine::PowF64
        } else {
            Routine::PowF32
        }
    }

    /// The function's name in the module.
    pub fn symbol(self) -> &'static str {
        match self {
            Routine::ExpF32 => "birkhoff.exp.f32",
            Routine::LogF32 => "birkhoff.log.f32",
            Routine::TanhF32 => "birkhoff.tanh.f32",
            Routine::SigmoidF32 => "birkhoff.sigmoid.f32",
            Routine::PowF32 => "birkhoff.pow.f32",
            Routine::ExpF64 => "birkhoff.exp.f64",
            Routine::LogF64 => "birkhoff.log.f64",
            Routine::TanhF64 => "birkhoff.tanh.f64",
            Routine::SigmoidF64 => "birkhoff.sigmoid.f64",
            Routine::PowF64 => "birkhoff.pow.f64",
        }
    }

    /// Its argument and result type.
    pub fn ty(self) -> ScalarType {
        match self {
            Routine::ExpF32
            | Routine::LogF32
            | Routine::TanhF32
            | Routine::SigmoidF32
            | Routine::PowF32 => ScalarType::F32,
            _ => ScalarType::F64,
        }
    }

    /// How many arguments it takes.
    pub fn arity(self) -> usize {
        if matches!(self, Routine::PowF32 | Routine::PowF64) {
            2
        } else {
            1
        }
    }
}

/// Calls `r` on `args` at the builder's position, defining it first if
/// the module does not have it yet.
pub(crate) fn call<'ctx>(
    cx: &Cx<'_, 'ctx>,
    r: Routine,
    args: &[FloatValue<'ctx>],
) -> Result<FloatValue<'ctx>> {
    let f = routine(cx, r)?;
    let args: Vec<BasicMetadataValueEnum<'ctx>> = args.iter().map(|&a| a.into()).collect();
    let call = cx.b.build_call(f, &args, "").ll()?;
    call.try_as_basic_value()
        .basic()
        .map(|v| v.into_float_value())
        .ok_or_else(|| GpuError::Llvm(format!("{} returns nothing", r.symbol())))
}

/// The function of `r` in the module, built on first use.
pub(crate) fn routine<'ctx>(cx: &Cx<'_, 'ctx>, r: Routine) -> Result<FunctionValue<'ctx>> {
    if let Some(f) = cx.module.get_function(r.symbol()) {
        return Ok(f);
    }
    let ft = cx.ty(r.ty()).into_float_type();
    let params: Vec<BasicMetadataTypeEnum<'ctx>> = (0..r.arity()).map(|_| ft.into()).collect();
    let f = cx.module.add_function(
        r.symbol(),
        ft.fn_type(&params, false),
        Some(Linkage::Internal),
    );
    for attr in ["alwaysinline", "nounwind"] {
        let kind = Attribute::get_named_enum_kind_id(attr);
        f.add_attribute(
            AttributeLoc::Function,
            cx.ctx.create_enum_attribute(kind, 0),
        );
    }
    // A builder of its own: the caller's stays where it is.
    let body = Cx::new(cx.ctx, cx.module);
    let entry = cx.ctx.append_basic_block(f, "entry");
    body.b.position_at_end(entry);
    let arg = |i: u32| -> Result<FloatValue<'ctx>> {
        f.get_nth_param(i)
            .map(|p| p.into_float_value())
            .ok_or_else(|| GpuError::Llvm("missing parameter".into()))
    };
    let x = arg(0)?;
    let y = match r {
        Routine::ExpF32 => exp_f32(&body, x)?,
        Routine::LogF32 => log_f32(&body, x)?,
        Routine::TanhF32 => tanh_f32(&body, x)?,
        Routine::SigmoidF32 => sigmoid(&body, x, Routine::ExpF32)?,
        Routine::PowF32 => {
            let f64t = cx.ctx.f64_type();
            let a = body.b.build_float_ext(x, f64t, "").ll()?;
            let b = body.b.build_float_ext(arg(1)?, f64t, "").ll()?;
            let p = call(&body, Routine::PowF64, &[a, b])?;
            body.b.build_float_trunc(p, cx.ctx.f32_type(), "").ll()?
        }
        Routine::ExpF64 => exp_f64(&body, x)?,
        Routine::LogF64 => log_f64(&body, x)?,
        Routine::TanhF64 => tanh_f64(&body, x)?,
        Routine::SigmoidF64 => sigmoid(&body, x, Routine::ExpF64)?,
        Routine::PowF64 => pow_f64(&body, x, arg(1)?)?,
    };
    body.b.build_return(Some(&y)).ll()?;
    Ok(f)
}

/// Horner's rule with fused multiply-adds: `((c0·x + c1)·x + c2) …`.
fn horner<'ctx>(
    cx: &Cx<'_, 'ctx>,
    x: FloatValue<'ctx>,
    coeffs: &[f64],
) -> Result<FloatValue<'ctx>> {
    let mut p = cx.fconst_like(x, coeffs[0]);
    for &c in &coeffs[1..] {
        p = cx.fma(p, x, cx.fconst_like(x, c))?;
    }
    Ok(p)
}

/// `x < c ? ... ` style comparison against a constant.
fn cmp_c<'ctx>(
    cx: &Cx<'_, 'ctx>,
    p: FloatPredicate,
    x: FloatValue<'ctx>,
    c: f64,
) -> Result<IntValue<'ctx>> {
    cx.fcmp(p, x, cx.fconst_like(x, c))
}

/// `x` clamped to `[lo, hi]`, NaN kept (ordered comparisons are false on
/// NaN, so it passes both selects).
fn clamp<'ctx>(
    cx: &Cx<'_, 'ctx>,
    x: FloatValue<'ctx>,
    lo: f64,
    hi: f64,
) -> Result<FloatValue<'ctx>> {
    let above = cmp_c(cx, FloatPredicate::OGT, x, hi)?;
    let x = cx.fselect(above, cx.fconst_like(x, hi), x)?;
    let below = cmp_c(cx, FloatPredicate::OLT, x, lo)?;
    cx.fselect(below, cx.fconst_like(x, lo), x)
}

/// `2^n` for `n` in the normal exponent range of `x`'s type (`n` is `i32`).
fn pow2i<'ctx>(
    cx: &Cx<'_, 'ctx>,
    like: FloatValue<'ctx>,
    n: IntValue<'ctx>,
) -> Result<FloatValue<'ctx>> {
    let b = &cx.b;
    if like.get_type() == cx.ctx.f32_type() {
        let e = b.build_int_add(n, cx.i32c(127), "").ll()?;
        let bits = b.build_left_shift(e, cx.i32c(23), "").ll()?;
        Ok(cx.bitcast(bits, cx.ctx.f32_type())?.into_float_value())
    } else {
        let n = b.build_int_s_extend(n, cx.ctx.i64_type(), "").ll()?;
        let e = b.build_int_add(n, cx.i64c(1023), "").ll()?;
        let bits = b.build_left_shift(e, cx.i64c(52), "").ll()?;
        Ok(cx.bitcast(bits, cx.ctx.f64_type())?.into_float_value())
    }
}

/// `p · 2^k` in two steps, so each factor is a normal number and a
/// subnormal result rounds once; `k` is the float holding an integer.
fn scale<'ctx>(
    cx: &Cx<'_, 'ctx>,
    p: FloatValue<'ctx>,
    k: FloatValue<'ctx>,
) -> Result<FloatValue<'ctx>> {
    let b = &cx.b;
    let ki = cx
        .intrinsic(
            "llvm.fptosi.sat",
            &[cx.ctx.i32_type().into(), k.get_type().into()],
            &[k.into()],
        )?
        .into_int_value();
    let n1 = b.build_right_shift(ki, cx.i32c(1), true, "").ll()?;
    let n2 = b.build_int_sub(ki, n1, "").ll()?;
    let s1 = pow2i(cx, p, n1)?;
    let s2 = pow2i(cx, p, n2)?;
    let p = cx.fmul(p, s1)?;
    cx.fmul(p, s2)
}

fn exp_f32<'ctx>(cx: &Cx<'_, 'ctx>, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
    // Beyond these the result is +inf / +0 anyway; clamping keeps 2^n in
    // range. minimum/maximum propagate NaN (Cranelift's fmin/fmax do too).
    let x = cx.fcall("llvm.minimum", &[x, cx.f32c(EXP_F32_MAX)])?;
    let x = cx.fcall("llvm.maximum", &[x, cx.f32c(EXP_F32_MIN)])?;
    let t = cx.fmul(x, cx.f32c(std::f32::consts::LOG2_E))?;
    let n = cx.fcall("llvm.roundeven", &[t])?;
    // Cody–Waite: ln 2 = C1 + C2, C1 with few bits so n·C1 is exact.
    let r = cx.fma(n, cx.f32c(-LN2_HI_F32), x)?;
    let r = cx.fma(n, cx.f32c(-LN2_LO_F32), r)?;
    let p = horner(cx, r, &EXP_F32_POLY.map(f64::from))?;
    let z = cx.fmul(r, r)?;
    let p = cx.fma(p, z, r)?;
    let p = cx.fadd(p, cx.f32c(1.0))?;
    scale(cx, p, n)
}

fn log_f32<'ctx>(cx: &Cx<'_, 'ctx>, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
    let b = &cx.b;
    let i32t = cx.ctx.i32_type();
    // Subnormals: scale into the normal range first.
    let sub = cmp_c(cx, FloatPredicate::OLT, x, f64::from(f32::MIN_POSITIVE))?;
    let scaled = cx.fmul(x, cx.f32c(8_388_608.0))?;
    let xs = cx.fselect(sub, scaled, x)?;
    let eadj = cx.iselect(sub, cx.i32c(-23), cx.i32c(0))?;
    let bits = cx.bitcast(xs, i32t)?.into_int_value();
    let e = b.build_right_shift(bits, cx.i32c(23), false, "").ll()?;
    let e = b.build_and(e, cx.i32c(0xff), "").ll()?;
    let e = b.build_int_sub(e, cx.i32c(126), "").ll()?;
    let e = b.build_int_add(e, eadj, "").ll()?;
    let mb = b.build_and(bits, cx.i32c(0x007f_ffff), "").ll()?;
    let mb = b.build_or(mb, cx.i32c(0x3f00_0000), "").ll()?;
    let m = cx.bitcast(mb, cx.ctx.f32_type())?.into_float_value(); // [0.5, 1)
    let small = cmp_c(
        cx,
        FloatPredicate::OLT,
        m,
        f64::from(std::f32::consts::FRAC_1_SQRT_2),
    )?;
    let e_dec = cx.iselect(small, cx.i32c(1), cx.i32c(0))?;
    let e = b.build_int_sub(e, e_dec, "").ll()?;
    let m2 = cx.fadd(m, m)?;
    let m = cx.fselect(small, m2, m)?;
    let m = cx.fsub(m, cx.f32c(1.0))?;
    let z = cx.fmul(m, m)?;
    let p = horner(cx, m, &LOG_F32_POLY.map(f64::from))?;
    let pm = cx.fmul(p, m)?;
    let y = cx.fmul(pm, z)?;
    let fe = b.build_signed_int_to_float(e, cx.ctx.f32_type(), "").ll()?;
    let y = cx.fma(fe, cx.f32c(LN2_LO_F32), y)?;
    let y = cx.fma(z, cx.f32c(-0.5), y)?;
    let r = cx.fadd(m, y)?;
    let r = cx.fma(fe, cx.f32c(LN2_HI_F32), r)?;
    log_specials(cx, x, r)
}

/// The special values of `log`, last one wins: `+inf`, `±0`, negatives
/// and NaN.
fn log_specials<'ctx>(
    cx: &Cx<'_, 'ctx>,
    x: FloatValue<'ctx>,
    r: FloatValue<'ctx>,
) -> Result<FloatValue<'ctx>> {
    let inf = cx.fconst_like(x, f64::INFINITY);
    let is_inf = cx.fcmp(FloatPredicate::OEQ, x, inf)?;
    let r = cx.fselect(is_inf, inf, r)?;
    let is_zero = cmp_c(cx, FloatPredicate::OEQ, x, 0.0)?;
    let r = cx.fselect(is_zero, cx.fconst_like(x, f64::NEG_INFINITY), r)?;
    let bad = cmp_c(cx, FloatPredicate::ULT, x, 0.0)?;
    cx.fselect(bad, cx.fconst_like(x, f64::NAN), r)
}

fn tanh_f32<'ctx>(cx: &Cx<'_, 'ctx>, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
    let a = cx.fabs(x)?;
    // Small |x|: odd polynomial.
    let z = cx.fmul(a, a)?;
    let p = horner(cx, z, &TANH_F32_POLY.map(f64::from))?;
    let pz = cx.fmul(p, z)?;
    let small = cx.fma(pz, a, a)?;
    // Otherwise 1 - 2 / (e^{2|x|} + 1), which saturates to 1 (and is NaN for NaN).
    let two_a = cx.fadd(a, a)?;
    let e = call(cx, Routine::ExpF32, &[two_a])?;
    let d = cx.fadd(e, cx.f32c(1.0))?;
    let q = cx.fdiv(cx.f32c(2.0), d)?;
    let large = cx.fsub(cx.f32c(1.0), q)?;
    let is_small = cmp_c(cx, FloatPredicate::OLT, a, f64::from(TANH_F32_SMALL))?;
    let r = cx.fselect(is_small, small, large)?;
    cx.fcall("llvm.copysign", &[r, x])
}

/// `1 / (1 + e^-x)`, computed from `e^-|x|` so neither side overflows.
fn sigmoid<'ctx>(cx: &Cx<'_, 'ctx>, x: FloatValue<'ctx>, exp: Routine) -> Result<FloatValue<'ctx>> {
    let a = cx.fabs(x)?;
    let na = cx.b.build_float_neg(a, "").ll()?;
    let e = call(cx, exp, &[na])?;
    let one = cx.fconst_like(x, 1.0);
    let d = cx.fadd(one, e)?;
    let s = cx.fdiv(one, d)?;
    let neg = cx.fmul(e, s)?;
    let is_neg = cmp_c(cx, FloatPredicate::OLT, x, 0.0)?;
    cx.fselect(is_neg, neg, s)
}

/// `ln 2` split so that `k · LN2_HI` is exact for `|k| < 2^21` (fdlibm).
const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-01;
const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;

/// `1/k!` for `k = 13, 12, …, 1`: the Taylor coefficients of `e^r`.
fn inverse_factorials() -> Vec<f64> {
    let mut f = [1.0f64; 14];
    for k in 1..14 {
        f[k] = f[k - 1] / k as f64;
    }
    f[1..].iter().rev().copied().collect()
}

/// `x = k·ln2 + r`: returns `(k, r)` with `k` integral and `|r| ≤ ln2/2`.
fn reduce_ln2<'ctx>(
    cx: &Cx<'_, 'ctx>,
    x: FloatValue<'ctx>,
) -> Result<(FloatValue<'ctx>, FloatValue<'ctx>)> {
    let t = cx.fmul(x, cx.f64c(std::f64::consts::LOG2_E))?;
    let k = cx.fcall("llvm.roundeven", &[t])?;
    let nk = cx.b.build_float_neg(k, "").ll()?;
    let r = cx.fma(nk, cx.f64c(LN2_HI), x)?;
    let r = cx.fma(nk, cx.f64c(LN2_LO), r)?;
    Ok((k, r))
}

/// `e^r - 1` for `|r| ≤ ln2/2`, without the constant term (so no
/// cancellation for small `r`).
fn expm1_poly<'ctx>(cx: &Cx<'_, 'ctx>, r: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
    // 1/13! … 1/1!, then one more multiply by r.
    let p = horner(cx, r, &inverse_factorials())?;
    cx.fmul(p, r)
}

fn exp_f64<'ctx>(cx: &Cx<'_, 'ctx>, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
    // e^710 overflows and e^-746 is below half the smallest subnormal.
    let x = clamp(cx, x, -746.0, 710.0)?;
    let (k, r) = reduce_ln2(cx, x)?;
    let mut coeffs = inverse_factorials();
    coeffs.push(1.0);
    let p = horner(cx, r, &coeffs)?;
    scale(cx, p, k)
}

/// `e^x - 1` for `x` in `[0, 44]` (what `tanh` needs).
fn expm1_f64<'ctx>(cx: &Cx<'_, 'ctx>, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
    let (k, r) = reduce_ln2(cx, x)?;
    let q = expm1_poly(cx, r)?;
    // 2^k·(q + 1) - 1 = 2^k·q + (2^k - 1), with 2^k - 1 exact for k ≤ 53.
    let s = scale(cx, cx.f64c(1.0), k)?;
    let sm1 = cx.fsub(s, cx.f64c(1.0))?;
    cx.fma(s, q, sm1)
}

fn log_f64<'ctx>(cx: &Cx<'_, 'ctx>, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
    let b = &cx.b;
    let i64t = cx.ctx.i64_type();
    let f64t = cx.ctx.f64_type();
    // Subnormals: scale by 2^54 into the normal range first.
    let sub = cmp_c(cx, FloatPredicate::OLT, x, f64::MIN_POSITIVE)?;
    let scaled = cx.fmul(x, cx.f64c(18_014_398_509_481_984.0))?;
    let xs = cx.fselect(sub, scaled, x)?;
    let eadj = cx.iselect(sub, cx.i64c(-54), cx.i64c(0))?;
    let bits = cx.bitcast(xs, i64t)?.into_int_value();
    let e = b.build_right_shift(bits, cx.i64c(52), false, "").ll()?;
    let e = b.build_and(e, cx.i64c(0x7ff), "").ll()?;
    let e = b.build_int_sub(e, cx.i64c(1023), "").ll()?;
    let e = b.build_int_add(e, eadj, "").ll()?;
    let mb = b.build_and(bits, cx.i64c(0x000f_ffff_ffff_ffff), "").ll()?;
    let mb = b.build_or(mb, cx.i64c(0x3ff0_0000_0000_0000), "").ll()?;
    let m = cx.bitcast(mb, f64t)?.into_float_value(); // [1, 2)
    let big = cmp_c(cx, FloatPredicate::OGT, m, std::f64::consts::SQRT_2)?;
    let e_inc = cx.iselect(big, cx.i64c(1), cx.i64c(0))?;
    let e = b.build_int_add(e, e_inc, "").ll()?;
    let half = cx.fmul(m, cx.f64c(0.5))?;
    let m = cx.fselect(big, half, m)?; // [√2/2, √2]
    // fdlibm e_log.c: log(1+f) = f - (hfsq - s·(hfsq + R)).
    let f = cx.fsub(m, cx.f64c(1.0))?; // exact (Sterbenz)
    let two_f = cx.fadd(f, cx.f64c(2.0))?;
    let s = cx.fdiv(f, two_f)?;
    let z = cx.fmul(s, s)?;
    let w = cx.fmul(z, z)?;
    const LG: [f64; 7] = [
        6.666_666_666_666_735_130e-01,
        3.999_999_999_940_941_908e-01,
        2.857_142_874_366_239_149e-01,
        2.222_219_843_214_978_396e-01,
        1.818_357_216_161_805_012e-01,
        1.531_383_769_920_937_332e-01,
        1.479_819_860_511_658_591e-01,
    ];
    // t1 = w·(Lg2 + w·(Lg4 + w·Lg6)), t2 = z·(Lg1 + w·(Lg3 + w·(Lg5 + w·Lg7)))
    let t1 = horner(cx, w, &[LG[5], LG[3], LG[1]])?;
    let t1 = cx.fmul(w, t1)?;
    let t2 = horner(cx, w, &[LG[6], LG[4], LG[2], LG[0]])?;
    let t2 = cx.fmul(z, t2)?;
    let r = cx.fadd(t2, t1)?;
    let hf = cx.fmul(f, cx.f64c(0.5))?;
    let hfsq = cx.fmul(hf, f)?;
    let dk = b.build_signed_int_to_float(e, f64t, "").ll()?;
    // dk·ln2_hi - ((hfsq - (s·(hfsq + R) + dk·ln2_lo)) - f)
    let inner = cx.fadd(hfsq, r)?;
    let inner = cx.fmul(s, inner)?;
    let lo = cx.fmul(dk, cx.f64c(LN2_LO))?;
    let inner = cx.fadd(inner, lo)?;
    let inner = cx.fsub(hfsq, inner)?;
    let inner = cx.fsub(inner, f)?;
    let hi = cx.fmul(dk, cx.f64c(LN2_HI))?;
    let y = cx.fsub(hi, inner)?;
    log_specials(cx, x, y)
}

fn tanh_f64<'ctx>(cx: &Cx<'_, 'ctx>, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
    let a = cx.fabs(x)?;
    // Clamped so expm1 stays finite; the select below saturates anyway.
    let ac = clamp(cx, a, 0.0, 22.0)?;
    let two_a = cx.fadd(ac, ac)?;
    let e = expm1_f64(cx, two_a)?;
    let d = cx.fadd(e, cx.f64c(2.0))?;
    let t = cx.fdiv(e, d)?;
    let beyond = cmp_c(cx, FloatPredicate::OGT, a, 22.0)?;
    let t = cx.fselect(beyond, cx.f64c(1.0), t)?;
    // tanh x = x (to the last bit) below 2^-28; keeps ±0 and subnormals.
    let tiny = cmp_c(cx, FloatPredicate::OLT, a, 2f64.powi(-28))?;
    let t = cx.fselect(tiny, a, t)?;
    cx.fcall("llvm.copysign", &[t, x])
}

fn pow_f64<'ctx>(
    cx: &Cx<'_, 'ctx>,
    x: FloatValue<'ctx>,
    y: FloatValue<'ctx>,
) -> Result<FloatValue<'ctx>> {
    let b = &cx.b;
    let ax = cx.fabs(x)?;
    let l = call(cx, Routine::LogF64, &[ax])?;
    let t = cx.fmul(y, l)?;
    let r = call(cx, Routine::ExpF64, &[t])?;
    // Integer and odd-integer tests of y (|y| ≥ 2^53 is even; ±inf is an
    // "integer" here, which is what the rules below want).
    let yt = cx.fcall("llvm.trunc", &[y])?;
    let y_int = cx.fcmp(FloatPredicate::OEQ, yt, y)?;
    let h = cx.fmul(y, cx.f64c(0.5))?;
    let ht = cx.fcall("llvm.trunc", &[h])?;
    let h_frac = cx.fcmp(FloatPredicate::ONE, ht, h)?;
    let y_odd = b.build_and(y_int, h_frac, "").ll()?;
    // The sign bit of x (so -0 and -inf count as negative).
    let xbits = cx.bitcast(x, cx.ctx.i64_type())?.into_int_value();
    let x_neg = cx.icmp(IntPredicate::SLT, xbits, cx.i64c(0))?;
    let flip = b.build_and(x_neg, y_odd, "").ll()?;
    let nr = b.build_float_neg(r, "").ll()?;
    let r = cx.fselect(flip, nr, r)?;
    // Negative finite x to a finite non-integer power: NaN.
    let lt0 = cmp_c(cx, FloatPredicate::OLT, x, 0.0)?;
    let finite = cmp_c(cx, FloatPredicate::OGT, x, f64::NEG_INFINITY)?;
    let not_int = b.build_not(y_int, "").ll()?;
    let bad = b.build_and(lt0, finite, "").ll()?;
    let bad = b.build_and(bad, not_int, "").ll()?;
    let r = cx.fselect(bad, cx.f64c(f64::NAN), r)?;
    // pow(x, ±0) = pow(1, y) = pow(-1, ±inf) = 1, even for NaN.
    let y0 = cmp_c(cx, FloatPredicate::OEQ, y, 0.0)?;
    let x1 = cmp_c(cx, FloatPredicate::OEQ, x, 1.0)?;
    let xm1 = cmp_c(cx, FloatPredicate::OEQ, x, -1.0)?;
    let ay = cx.fabs(y)?;
    let yinf = cmp_c(cx, FloatPredicate::OEQ, ay, f64::INFINITY)?;
    let m1inf = b.build_and(xm1, yinf, "").ll()?;
    let one = b.build_or(y0, x1, "").ll()?;
    let one = b.build_or(one, m1inf, "").ll()?;
    cx.fselect(one, cx.f64c(1.0), r)
}
