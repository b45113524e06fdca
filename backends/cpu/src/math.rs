//! Inline `f32` math: exp, log, tanh and sigmoid as Cranelift code, for
//! scalars and `f32x4` alike.
//!
//! Each function is Cephes-style: reduce the argument to a small interval,
//! evaluate a short minimax polynomial there (Horner's rule, fused
//! multiply-adds when the host has them), and scale back. The constants
//! are [`birkhoff_ir::kernel::math_consts`], which the GPU backend's
//! routines use too. Special values
//! are handled with branch-free selects, so the same code serves vectors:
//! NaN in gives NaN out, `exp` overflows to `+inf` and underflows through
//! the subnormals to `+0`, `log` maps `±0` to `-inf`, negatives to NaN and
//! `+inf` to `+inf`, subnormal inputs included; `tanh` and `sigmoid`
//! saturate exactly at ±1 / 0 and 1 and keep `-0`.
//!
//! The worst errors, measured against `f64` over dense sweeps (the test
//! `math_accuracy` asserts them), are documented in `docs/backends.md`.
//! `f64` math and `pow` call the C library instead (see
//! [`crate::runtime::Libm`]).

use birkhoff_ir::kernel::math_consts::{
    EXP_F32_MAX, EXP_F32_MIN, EXP_F32_POLY, LN2_HI_F32, LN2_LO_F32, LOG_F32_POLY, TANH_F32_POLY,
    TANH_F32_SMALL,
};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

use crate::codegen::le;

/// An `f32` constant of `x`'s shape.
fn fc(b: &mut FunctionBuilder<'_>, ty: Type, v: f32) -> Value {
    let c = b.ins().f32const(v);
    if ty.is_vector() {
        b.ins().splat(ty, c)
    } else {
        c
    }
}

/// An `i32` constant of `x`'s shape (`i32` or `i32x4`).
fn ic(b: &mut FunctionBuilder<'_>, ity: Type, v: i32) -> Value {
    let c = b.ins().iconst(types::I32, i64::from(v));
    if ity.is_vector() {
        b.ins().splat(ity, c)
    } else {
        c
    }
}

fn int_ty(ty: Type) -> Type {
    if ty.is_vector() {
        types::I32X4
    } else {
        types::I32
    }
}

/// `cond ? a : b` where `cond` comes from a comparison of the same shape.
pub(crate) fn bitselect(b: &mut FunctionBuilder<'_>, cond: Value, x: Value, y: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    if !ty.is_vector() {
        return b.ins().select(cond, x, y);
    }
    let cty = b.func.dfg.value_type(cond);
    let mask = if cty == ty {
        cond
    } else {
        b.ins().bitcast(ty, le(), cond)
    };
    b.ins().bitselect(mask, x, y)
}

/// `a * x + c`, fused when `fma`.
fn madd(b: &mut FunctionBuilder<'_>, a: Value, x: Value, c: Value, fma: bool) -> Value {
    if fma {
        b.ins().fma(a, x, c)
    } else {
        let p = b.ins().fmul(a, x);
        b.ins().fadd(p, c)
    }
}

/// Horner's rule: `((c0 * x + c1) * x + c2) …`.
fn horner(b: &mut FunctionBuilder<'_>, x: Value, coeffs: &[f32], fma: bool) -> Value {
    let ty = b.func.dfg.value_type(x);
    let mut p = fc(b, ty, coeffs[0]);
    for &c in &coeffs[1..] {
        let cv = fc(b, ty, c);
        p = madd(b, p, x, cv, fma);
    }
    p
}

/// `|x|` with the sign of `s` (bitwise, for scalars and vectors).
fn copysign(b: &mut FunctionBuilder<'_>, x: Value, s: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let ity = int_ty(ty);
    let xi = b.ins().bitcast(ity, le(), x);
    let si = b.ins().bitcast(ity, le(), s);
    let mag = ic(b, ity, 0x7fff_ffff);
    let sign = ic(b, ity, i32::MIN);
    let xm = b.ins().band(xi, mag);
    let ss = b.ins().band(si, sign);
    let r = b.ins().bor(xm, ss);
    b.ins().bitcast(ty, le(), r)
}

/// `2^n` for integer lanes `n` in `[-126, 127]`, as floats.
fn pow2i(b: &mut FunctionBuilder<'_>, ty: Type, n: Value) -> Value {
    let ity = int_ty(ty);
    let bias = ic(b, ity, 127);
    let e = b.ins().iadd(n, bias);
    let bits = b.ins().ishl_imm_s(e, 23);
    b.ins().bitcast(ty, le(), bits)
}

/// `e^x`.
pub(crate) fn exp(b: &mut FunctionBuilder<'_>, x: Value, fma: bool) -> Value {
    let ty = b.func.dfg.value_type(x);
    let ity = int_ty(ty);
    // Beyond these the result is +inf / +0 anyway; clamping keeps 2^n in
    // range. fmin/fmax propagate NaN.
    let hi = fc(b, ty, EXP_F32_MAX);
    let lo = fc(b, ty, EXP_F32_MIN);
    let x = b.ins().fmin(x, hi);
    let x = b.ins().fmax(x, lo);
    let log2e = fc(b, ty, std::f32::consts::LOG2_E);
    let t = b.ins().fmul(x, log2e);
    let n = b.ins().nearest(t);
    // Cody–Waite: ln 2 = C1 + C2, C1 with few bits so n·C1 is exact.
    let c1 = fc(b, ty, -LN2_HI_F32);
    let c2 = fc(b, ty, -LN2_LO_F32);
    let r = madd(b, n, c1, x, fma);
    let r = madd(b, n, c2, r, fma);
    let p = horner(b, r, &EXP_F32_POLY, fma);
    let z = b.ins().fmul(r, r);
    let p = madd(b, p, z, r, fma);
    let one = fc(b, ty, 1.0);
    let p = b.ins().fadd(p, one);
    // Scale by 2^n in two steps so subnormal results round once.
    let ni = b.ins().fcvt_to_sint_sat(ity, n);
    let n1 = b.ins().sshr_imm_s(ni, 1);
    let n2 = b.ins().isub(ni, n1);
    let s1 = pow2i(b, ty, n1);
    let s2 = pow2i(b, ty, n2);
    let p = b.ins().fmul(p, s1);
    b.ins().fmul(p, s2)
}

/// `ln x`.
pub(crate) fn log(b: &mut FunctionBuilder<'_>, x: Value, fma: bool) -> Value {
    let ty = b.func.dfg.value_type(x);
    let ity = int_ty(ty);
    // Subnormals: scale into the normal range first.
    let min_normal = fc(b, ty, f32::MIN_POSITIVE);
    let sub = b.ins().fcmp(FloatCC::LessThan, x, min_normal);
    let two23 = fc(b, ty, 8_388_608.0);
    let scaled = b.ins().fmul(x, two23);
    let xs = bitselect(b, sub, scaled, x);
    let m23 = ic(b, ity, -23);
    let z0 = ic(b, ity, 0);
    let eadj = bitselect(b, sub, m23, z0);
    let bits = b.ins().bitcast(ity, le(), xs);
    let e = b.ins().ushr_imm_s(bits, 23);
    let ff = ic(b, ity, 0xff);
    let e = b.ins().band(e, ff);
    let bias = ic(b, ity, 126);
    let e = b.ins().isub(e, bias);
    let e = b.ins().iadd(e, eadj);
    let mant = ic(b, ity, 0x007f_ffff);
    let half = ic(b, ity, 0x3f00_0000);
    let mb = b.ins().band(bits, mant);
    let mb = b.ins().bor(mb, half);
    let m = b.ins().bitcast(ty, le(), mb); // [0.5, 1)
    let sqrthf = fc(b, ty, std::f32::consts::FRAC_1_SQRT_2);
    let small = b.ins().fcmp(FloatCC::LessThan, m, sqrthf);
    let one_i = ic(b, ity, 1);
    let e_dec = bitselect(b, small, one_i, z0);
    let e = b.ins().isub(e, e_dec);
    let m2 = b.ins().fadd(m, m);
    let m = bitselect(b, small, m2, m);
    let one = fc(b, ty, 1.0);
    let m = b.ins().fsub(m, one);
    let z = b.ins().fmul(m, m);
    let p = horner(b, m, &LOG_F32_POLY, fma);
    let pm = b.ins().fmul(p, m);
    let y = b.ins().fmul(pm, z);
    let fe = b.ins().fcvt_from_sint(ty, e);
    let c2 = fc(b, ty, LN2_LO_F32);
    let y = madd(b, fe, c2, y, fma);
    let mhalf = fc(b, ty, -0.5);
    let y = madd(b, z, mhalf, y, fma);
    let r = b.ins().fadd(m, y);
    let c1 = fc(b, ty, LN2_HI_F32);
    let r = madd(b, fe, c1, r, fma);
    // Special values, last one wins: +inf, ±0, negatives and NaN.
    let inf = fc(b, ty, f32::INFINITY);
    let is_inf = b.ins().fcmp(FloatCC::Equal, x, inf);
    let r = bitselect(b, is_inf, inf, r);
    let zero = fc(b, ty, 0.0);
    let is_zero = b.ins().fcmp(FloatCC::Equal, x, zero);
    let ninf = fc(b, ty, f32::NEG_INFINITY);
    let r = bitselect(b, is_zero, ninf, r);
    let bad = b.ins().fcmp(FloatCC::UnorderedOrLessThan, x, zero);
    let nan = fc(b, ty, f32::NAN);
    bitselect(b, bad, nan, r)
}

/// `tanh x`.
pub(crate) fn tanh(b: &mut FunctionBuilder<'_>, x: Value, fma: bool) -> Value {
    let ty = b.func.dfg.value_type(x);
    let a = b.ins().fabs(x);
    // Small |x|: odd polynomial.
    let z = b.ins().fmul(a, a);
    let p = horner(b, z, &TANH_F32_POLY, fma);
    let pz = b.ins().fmul(p, z);
    let small = madd(b, pz, a, a, fma);
    // Otherwise 1 - 2 / (e^{2|x|} + 1), which saturates to 1 (and is NaN for NaN).
    let two_a = b.ins().fadd(a, a);
    let e = exp(b, two_a, fma);
    let one = fc(b, ty, 1.0);
    let two = fc(b, ty, 2.0);
    let d = b.ins().fadd(e, one);
    let q = b.ins().fdiv(two, d);
    let large = b.ins().fsub(one, q);
    let lim = fc(b, ty, TANH_F32_SMALL);
    let is_small = b.ins().fcmp(FloatCC::LessThan, a, lim);
    let r = bitselect(b, is_small, small, large);
    copysign(b, r, x)
}

/// `1 / (1 + e^-x)`, computed from `e^-|x|` so neither side overflows.
pub(crate) fn sigmoid(b: &mut FunctionBuilder<'_>, x: Value, fma: bool) -> Value {
    let ty = b.func.dfg.value_type(x);
    let a = b.ins().fabs(x);
    let na = b.ins().fneg(a);
    let e = exp(b, na, fma);
    let one = fc(b, ty, 1.0);
    let d = b.ins().fadd(one, e);
    let s = b.ins().fdiv(one, d);
    let neg = b.ins().fmul(e, s);
    let zero = fc(b, ty, 0.0);
    let is_neg = b.ins().fcmp(FloatCC::LessThan, x, zero);
    bitselect(b, is_neg, neg, s)
}
