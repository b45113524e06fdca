//! Hand-checked cases for every op of the reference interpreter.
//!
//! Each test runs a tiny graph, written as IR text, on inputs whose results
//! were worked out by hand (the arithmetic is in a comment where it is not
//! obvious). Floats are compared bit for bit, so `-0.0` differs from `0.0`
//! and NaN matches any NaN, except where a result is not exactly
//! representable: those are compared within [`REL`], in f64 graphs.

use std::collections::BTreeMap;
use std::f64::consts::{E, FRAC_1_SQRT_2, LN_2, LN_10, SQRT_2};

use birkhoff_ir::{
    DType, Error, InterpOptions, Precision, Tensor, TensorData, TensorType, ValueId, interpret,
    parse_and_verify, parse_graph,
};
use half::bf16;

/// Relative tolerance for inexact f64 results (transcendentals, `1/3`):
/// the platform's libm is within a few ulp (~1e-16), far inside this.
const REL: f64 = 1e-12;

const INF: f32 = f32::INFINITY;
const NAN: f32 = f32::NAN;
const MIN: i32 = i32::MIN;
const MAX: i32 = i32::MAX;
/// The smallest bf16 subnormal, 2^-133 (bf16 bits 0x0001), as an f32.
const BF16_TINY: f32 = f32::from_bits(0x0001_0000);

// ---- running graphs ---------------------------------------------------------

fn try_run(
    text: &str,
    inputs: &[(&str, Tensor)],
    opts: &InterpOptions,
) -> Result<Vec<(String, Tensor)>, Error> {
    let graph = parse_and_verify(text)
        .expect("test graph parses and verifies")
        .remove(0);
    let inputs: BTreeMap<String, Tensor> = inputs
        .iter()
        .map(|(name, t)| (name.to_string(), t.clone()))
        .collect();
    interpret(&graph, &inputs, opts)
}

fn run_in(precision: Precision, text: &str, inputs: &[(&str, Tensor)]) -> Vec<Tensor> {
    let opts = InterpOptions {
        precision,
        ..InterpOptions::default()
    };
    try_run(text, inputs, &opts)
        .expect("interpreter succeeds")
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

/// All outputs, in the default (f64) precision.
fn run(text: &str, inputs: &[(&str, Tensor)]) -> Vec<Tensor> {
    run_in(Precision::F64, text, inputs)
}

/// The single output, in the default (f64) precision.
fn run1(text: &str, inputs: &[(&str, Tensor)]) -> Tensor {
    let mut out = run(text, inputs);
    assert_eq!(out.len(), 1, "expected one output");
    out.remove(0)
}

/// `y = OP x`, the result having x's type.
fn unary(op: &str, x: &Tensor) -> Tensor {
    let ty = x.ty();
    let text =
        format!("graph @unary(%x: {ty}) -> (y: {ty}) {{\n  %1 = {op} %x : {ty}\n  return %1\n}}");
    run1(&text, &[("x", x.clone())])
}

/// `y = a OP b`; comparisons give bool, every other op a's type.
fn binary(op: &str, a: &Tensor, b: &Tensor) -> Tensor {
    let ty = a.ty();
    let out = if ["eq", "ne", "lt", "le", "gt", "ge"].contains(&op) {
        ty.with_dtype(DType::Bool)
    } else {
        ty.clone()
    };
    let text = format!(
        "graph @binary(%a: {ty}, %b: {}) -> (y: {out}) {{\n  %2 = {op} %a, %b : {out}\n  return %2\n}}",
        b.ty()
    );
    run1(&text, &[("a", a.clone()), ("b", b.clone())])
}

// ---- building inputs ----------------------------------------------------------

fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::new(shape, TensorData::F32(v.to_vec())).unwrap()
}

fn f64s(shape: &[usize], v: &[f64]) -> Tensor {
    Tensor::new(shape, TensorData::F64(v.to_vec())).unwrap()
}

/// Values must be bf16 values already (checked).
fn bf16s(shape: &[usize], v: &[f32]) -> Tensor {
    let data: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
    for (b, &x) in data.iter().zip(v) {
        assert!(
            b.to_f32() == x || x.is_nan(),
            "{x} is not a bf16 value (test input error)"
        );
    }
    Tensor::new(shape, TensorData::Bf16(data)).unwrap()
}

fn i32s(shape: &[usize], v: &[i32]) -> Tensor {
    Tensor::new(shape, TensorData::I32(v.to_vec())).unwrap()
}

fn bools(shape: &[usize], v: &[bool]) -> Tensor {
    Tensor::new(shape, TensorData::Bool(v.to_vec())).unwrap()
}

/// `0, 1, …, n-1` as f32, shaped: element `[a, b, c]` of `[2,3,4]` is `12a + 4b + c`.
fn counting(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    f32s(shape, &(0..n).map(|i| i as f32).collect::<Vec<_>>())
}

// ---- checking outputs -----------------------------------------------------------

fn same_bits(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

fn assert_exact(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            same_bits(g, w),
            "element {i}: got {g:?}, want {w:?}\n  got  {got:?}\n  want {want:?}"
        );
    }
}

fn assert_close(got: &[f64], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * w.abs(),
            "element {i}: got {g:?}, want {w:?} within relative {rel}"
        );
    }
}

fn check_ty(t: &Tensor, dtype: DType, shape: &[usize]) {
    assert_eq!(t.ty(), &TensorType::new(dtype, shape), "output type");
}

fn expect_f32(t: &Tensor, shape: &[usize], want: &[f32]) {
    check_ty(t, DType::F32, shape);
    let want: Vec<f64> = want.iter().map(|&x| f64::from(x)).collect();
    assert_exact(&t.to_f64_vec(), &want);
}

/// `want` holds bf16 values written as f32.
fn expect_bf16(t: &Tensor, shape: &[usize], want: &[f32]) {
    check_ty(t, DType::Bf16, shape);
    let want: Vec<f64> = want.iter().map(|&x| f64::from(x)).collect();
    assert_exact(&t.to_f64_vec(), &want);
}

fn expect_f64(t: &Tensor, shape: &[usize], want: &[f64]) {
    check_ty(t, DType::F64, shape);
    assert_exact(&t.to_f64_vec(), want);
}

/// The elements of an f64 output, for tests that check some exactly and
/// some within a tolerance.
fn f64_values(t: &Tensor, shape: &[usize]) -> Vec<f64> {
    check_ty(t, DType::F64, shape);
    t.to_f64_vec()
}

fn expect_i32(t: &Tensor, shape: &[usize], want: &[i32]) {
    check_ty(t, DType::I32, shape);
    assert_eq!(t.data(), &TensorData::I32(want.to_vec()));
}

fn expect_bool(t: &Tensor, shape: &[usize], want: &[bool]) {
    check_ty(t, DType::Bool, shape);
    assert_eq!(t.data(), &TensorData::Bool(want.to_vec()));
}

// ---- leaves ---------------------------------------------------------------------

#[test]
fn const_splat_fills_every_element() {
    let y = run1(
        "graph @g() -> (y: f32[2,3]) {
           %0 = const 2.5 : f32[2,3]
           return %0
         }",
        &[],
    );
    expect_f32(&y, &[2, 3], &[2.5; 6]);
}

#[test]
fn const_dense_is_row_major_and_rounds_to_f32() {
    let y = run1(
        "graph @g() -> (y: f32[2,2]) {
           %0 = const [1.5, -2, 0.1, 1e-3] : f32[2,2]
           return %0
         }",
        &[],
    );
    expect_f32(&y, &[2, 2], &[1.5, -2.0, 0.1, 1e-3]);
}

#[test]
fn const_i32_holds_extremes() {
    let y = run1(
        "graph @g() -> (y: i32[4]) {
           %0 = const [-2147483648, 2147483647, 0, -7] : i32[4]
           return %0
         }",
        &[],
    );
    expect_i32(&y, &[4], &[MIN, MAX, 0, -7]);
}

#[test]
fn const_bool_values() {
    let y = run1(
        "graph @g() -> (y: bool[3]) {
           %0 = const [true, false, true] : bool[3]
           return %0
         }",
        &[],
    );
    expect_bool(&y, &[3], &[true, false, true]);
}

#[test]
fn const_bf16_rounds_to_nearest_even() {
    // bf16 keeps 8 significant bits: between 1 and 2 its spacing is 2^-7.
    // 1 + 2^-8      = 1.00390625   is a tie between 1 and 1 + 2^-7: even is 1.
    // 1 + 3·2^-8    = 1.01171875   is a tie between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
    // 1 + 1.5·2^-8  = 1.005859375  is past the tie at 1 + 2^-8: up to 1 + 2^-7.
    // 3.14159: spacing 2^-6 in [2,4); 3.14159 / 2^-6 = 201.06 -> 201·2^-6 = 3.140625.
    // 0x3fc0: sign 0, exponent 127, mantissa 0x40 -> 1.5.
    let y = run1(
        "graph @g() -> (y: bf16[5]) {
           %0 = const [1.00390625, 1.01171875, 1.005859375, 3.14159, 0x3fc0] : bf16[5]
           return %0
         }",
        &[],
    );
    expect_bf16(&y, &[5], &[1.0, 1.015625, 1.0078125, 3.140625, 1.5]);
}

#[test]
fn const_special_floats() {
    let out = run(
        "graph @g() -> (a: f32[6], b: bf16[3], c: f64[2]) {
           %0 = const [nan, inf, -inf, -0.0, 0x00000001, 0x7f7fffff] : f32[6]
           %1 = const [nan, -inf, 0x0001] : bf16[3]
           %2 = const [5e-324, -0.0] : f64[2]
           return %0, %1, %2
         }",
        &[],
    );
    // 0x00000001 is the smallest f32 subnormal 2^-149, 0x7f7fffff is f32::MAX;
    // bf16 0x0001 is its smallest subnormal, 2^-133.
    expect_f32(
        &out[0],
        &[6],
        &[NAN, INF, -INF, -0.0, f32::from_bits(1), f32::MAX],
    );
    expect_bf16(&out[1], &[3], &[NAN, -INF, BF16_TINY]);
    expect_f64(&out[2], &[2], &[5e-324, -0.0]);
}

#[test]
fn iota_counts_along_each_axis_of_rank3() {
    let out = run(
        "graph @g() -> (a0: i32[2,3,4], a1: i32[2,3,4], a2: f32[2,3,4]) {
           %0 = iota axis=0 : i32[2,3,4]
           %1 = iota axis=1 : i32[2,3,4]
           %2 = iota axis=2 : f32[2,3,4]
           return %0, %1, %2
         }",
        &[],
    );
    #[rustfmt::skip]
    expect_i32(&out[0], &[2, 3, 4], &[
        0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
        1, 1, 1, 1,  1, 1, 1, 1,  1, 1, 1, 1,
    ]);
    #[rustfmt::skip]
    expect_i32(&out[1], &[2, 3, 4], &[
        0, 0, 0, 0,  1, 1, 1, 1,  2, 2, 2, 2,
        0, 0, 0, 0,  1, 1, 1, 1,  2, 2, 2, 2,
    ]);
    #[rustfmt::skip]
    expect_f32(&out[2], &[2, 3, 4], &[
        0.0, 1.0, 2.0, 3.0,  0.0, 1.0, 2.0, 3.0,  0.0, 1.0, 2.0, 3.0,
        0.0, 1.0, 2.0, 3.0,  0.0, 1.0, 2.0, 3.0,  0.0, 1.0, 2.0, 3.0,
    ]);
}

// ---- elementwise unary ------------------------------------------------------------

#[test]
fn neg_flips_sign_of_zeros_and_infinities() {
    let x = f32s(&[6], &[1.5, -2.0, 0.0, -0.0, INF, NAN]);
    expect_f32(&unary("neg", &x), &[6], &[-1.5, 2.0, -0.0, 0.0, -INF, NAN]);
}

#[test]
fn neg_of_i32_min_wraps() {
    // -(-2^31) = 2^31 does not fit: it wraps to -2^31.
    let x = i32s(&[4], &[MIN, MAX, 5, 0]);
    expect_i32(&unary("neg", &x), &[4], &[MIN, -MAX, -5, 0]);
}

#[test]
fn abs_clears_the_sign_bit() {
    let x = f32s(&[6], &[-1.5, 2.0, -0.0, -INF, NAN, 0.0]);
    expect_f32(&unary("abs", &x), &[6], &[1.5, 2.0, 0.0, INF, NAN, 0.0]);
}

#[test]
fn abs_of_i32_min_wraps() {
    // |-2^31| = 2^31 wraps to -2^31.
    let x = i32s(&[4], &[MIN, -7, 7, 0]);
    expect_i32(&unary("abs", &x), &[4], &[MIN, 7, 7, 0]);
}

#[test]
fn exp_values_and_limits() {
    // exp(710) > f64::MAX (ln f64::MAX ≈ 709.78): overflows to inf.
    let x = f64s(
        &[8],
        &[
            0.0,
            -0.0,
            -f64::INFINITY,
            f64::INFINITY,
            710.0,
            f64::NAN,
            1.0,
            -1.0,
        ],
    );
    let y = f64_values(&unary("exp", &x), &[8]);
    assert_exact(
        &y[..6],
        &[1.0, 1.0, 0.0, f64::INFINITY, f64::INFINITY, f64::NAN],
    );
    assert_close(&y[6..], &[E, 1.0 / E], REL);
}

#[test]
fn log_values_and_edges() {
    let x = f64s(
        &[9],
        &[
            1.0,
            0.0,
            -0.0,
            -1.0,
            f64::INFINITY,
            f64::NAN,
            2.0,
            0.5,
            10.0,
        ],
    );
    let y = f64_values(&unary("log", &x), &[9]);
    // log 0 = log -0 = -inf, log of a negative number is NaN.
    assert_exact(
        &y[..6],
        &[
            0.0,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::INFINITY,
            f64::NAN,
        ],
    );
    assert_close(&y[6..], &[LN_2, -LN_2, LN_10], REL);
}

#[test]
fn sqrt_values_and_edges() {
    // sqrt(-0) = -0 (IEEE 754), sqrt of a negative number or -inf is NaN.
    let x = f64s(
        &[8],
        &[
            4.0,
            2.25,
            0.0,
            -0.0,
            -1.0,
            f64::INFINITY,
            -f64::INFINITY,
            2.0,
        ],
    );
    let y = f64_values(&unary("sqrt", &x), &[8]);
    assert_exact(
        &y[..7],
        &[2.0, 1.5, 0.0, -0.0, f64::NAN, f64::INFINITY, f64::NAN],
    );
    assert_close(&y[7..], &[SQRT_2], REL);
}

#[test]
fn sqrt_of_f32_is_exact_where_representable() {
    let x = f32s(&[5], &[16.0, 0.25, -0.0, -4.0, INF]);
    expect_f32(&unary("sqrt", &x), &[5], &[4.0, 0.5, -0.0, NAN, INF]);
}

#[test]
fn rsqrt_values_and_edges() {
    // rsqrt(±0) = 1/±0 = ±inf, rsqrt(inf) = 0, rsqrt(-1) = NaN.
    let x = f64s(&[7], &[4.0, 0.25, 16.0, 0.0, -0.0, f64::INFINITY, -1.0]);
    let y = f64_values(&unary("rsqrt", &x), &[7]);
    assert_exact(
        &y,
        &[
            0.5,
            2.0,
            0.25,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            f64::NAN,
        ],
    );
    let y = f64_values(&unary("rsqrt", &f64s(&[1], &[2.0])), &[1]);
    assert_close(&y, &[FRAC_1_SQRT_2], REL);
}

#[test]
fn recip_values_and_edges() {
    // recip(0) = inf, recip(-0) = -inf, recip(±inf) = ±0.
    let x = f64s(
        &[8],
        &[
            2.0,
            -4.0,
            0.0,
            -0.0,
            f64::INFINITY,
            -f64::INFINITY,
            f64::NAN,
            3.0,
        ],
    );
    let y = f64_values(&unary("recip", &x), &[8]);
    assert_exact(
        &y[..7],
        &[
            0.5,
            -0.25,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            f64::NAN,
        ],
    );
    assert_close(&y[7..], &[1.0 / 3.0], REL);
}

#[test]
fn sigmoid_values_and_saturation() {
    // sigmoid(x) = 1 / (1 + e^-x): e^-1000 underflows to 0, so sigmoid(1000) = 1;
    // e^1000 overflows to inf, so sigmoid(-1000) = 1/inf = 0. Never NaN for
    // large |x|.
    let x = f64s(
        &[8],
        &[
            0.0,
            1000.0,
            -1000.0,
            f64::INFINITY,
            -f64::INFINITY,
            f64::NAN,
            1.0,
            -1.0,
        ],
    );
    let y = f64_values(&unary("sigmoid", &x), &[8]);
    assert_exact(&y[..6], &[0.5, 1.0, 0.0, 1.0, 0.0, f64::NAN]);
    // 1/(1 + e^-1) and 1/(1 + e).
    assert_close(&y[6..], &[0.7310585786300049, 0.2689414213699951], REL);
}

#[test]
fn sigmoid_of_large_f32_saturates() {
    let x = f32s(&[2], &[200.0, -1000.0]);
    expect_f32(&unary("sigmoid", &x), &[2], &[1.0, 0.0]);
}

#[test]
fn tanh_values_and_saturation() {
    // tanh(±30) = ±(1 - 2e^-60 …), which rounds to ±1 in f64.
    let x = f64s(
        &[10],
        &[
            0.0,
            -0.0,
            30.0,
            -30.0,
            f64::INFINITY,
            -f64::INFINITY,
            f64::NAN,
            1.0,
            -1.0,
            0.5,
        ],
    );
    let y = f64_values(&unary("tanh", &x), &[10]);
    assert_exact(&y[..7], &[0.0, -0.0, 1.0, -1.0, 1.0, -1.0, f64::NAN]);
    assert_close(
        &y[7..],
        &[0.7615941559557649, -0.7615941559557649, 0.46211715726000974],
        REL,
    );
}

#[test]
fn not_inverts_bools() {
    let x = bools(&[2], &[true, false]);
    expect_bool(&unary("not", &x), &[2], &[false, true]);
}

// ---- elementwise binary -------------------------------------------------------------

#[test]
fn add_f32_signed_zeros_and_infinities() {
    // -2 + 2 = +0; -0 + -0 = -0; -0 + 0 = +0; inf - inf = NaN;
    // 3e38 + 3e38 = 6e38 overflows f32 (max ≈ 3.4028e38).
    let a = f32s(&[7], &[1.5, -2.0, INF, INF, -0.0, -0.0, 3e38]);
    let b = f32s(&[7], &[2.25, 2.0, 1.0, -INF, -0.0, 0.0, 3e38]);
    expect_f32(
        &binary("add", &a, &b),
        &[7],
        &[3.75, 0.0, INF, NAN, -0.0, 0.0, INF],
    );
}

#[test]
fn sub_f32_signed_zeros_and_infinities() {
    // -0 - 0 = -0; 0 - 0 = +0; inf - inf = NaN.
    let a = f32s(&[5], &[5.0, 1.0, -0.0, 0.0, INF]);
    let b = f32s(&[5], &[3.0, 4.0, 0.0, 0.0, INF]);
    expect_f32(&binary("sub", &a, &b), &[5], &[2.0, -3.0, -0.0, 0.0, NAN]);
}

#[test]
fn mul_f32_signed_zeros_and_inf_times_zero() {
    // 0·-1 = -0; -0·-1 = +0; inf·0 = NaN; 1e30·1e30 = 1e60 overflows f32.
    let a = f32s(&[6], &[1.5, -2.0, 0.0, -0.0, INF, 1e30]);
    let b = f32s(&[6], &[4.0, 3.0, -1.0, -1.0, 0.0, 1e30]);
    expect_f32(
        &binary("mul", &a, &b),
        &[6],
        &[6.0, -6.0, -0.0, 0.0, NAN, INF],
    );
}

#[test]
fn div_f32_by_zero_and_infinity() {
    // 1/0 = inf, -1/0 = -inf, 1/-0 = -inf, 0/0 = NaN, inf/inf = NaN, 1/inf = 0.
    let a = f32s(&[8], &[1.0, 7.0, 1.0, -1.0, 1.0, 0.0, INF, 1.0]);
    let b = f32s(&[8], &[4.0, 2.0, 0.0, 0.0, -0.0, 0.0, INF, INF]);
    expect_f32(
        &binary("div", &a, &b),
        &[8],
        &[0.25, 3.5, INF, -INF, -INF, NAN, NAN, 0.0],
    );
}

#[test]
fn div_f32_rounds_the_quotient_once() {
    // 1/3 and 2/3 are not representable: the result is the correctly
    // rounded f32 quotient, which is what f32 division itself gives.
    let a = f32s(&[2], &[1.0, 2.0]);
    let b = f32s(&[2], &[3.0, 3.0]);
    expect_f32(&binary("div", &a, &b), &[2], &[1.0 / 3.0, 2.0 / 3.0]);
}

#[test]
fn max_propagates_nan_and_prefers_positive_zero() {
    let a = f32s(&[8], &[1.0, -1.0, NAN, 2.0, -0.0, 0.0, -0.0, -INF]);
    let b = f32s(&[8], &[2.0, -3.0, 1.0, NAN, 0.0, -0.0, -0.0, -INF]);
    expect_f32(
        &binary("max", &a, &b),
        &[8],
        &[2.0, -1.0, NAN, NAN, 0.0, 0.0, -0.0, -INF],
    );
}

#[test]
fn min_propagates_nan_and_prefers_negative_zero() {
    let a = f32s(&[8], &[1.0, -1.0, NAN, 2.0, -0.0, 0.0, 0.0, INF]);
    let b = f32s(&[8], &[2.0, -3.0, 1.0, NAN, 0.0, -0.0, 0.0, INF]);
    expect_f32(
        &binary("min", &a, &b),
        &[8],
        &[1.0, -3.0, NAN, NAN, -0.0, -0.0, 0.0, INF],
    );
}

#[test]
fn max_and_min_on_i32() {
    let a = i32s(&[3], &[MIN, 3, -4]);
    let b = i32s(&[3], &[0, -3, -4]);
    expect_i32(&binary("max", &a, &b), &[3], &[0, 3, -4]);
    expect_i32(&binary("min", &a, &b), &[3], &[MIN, -3, -4]);
}

#[test]
fn add_i32_wraps() {
    // MAX + 1 = MIN; MIN + -1 = MAX; 2^30 + 2^30 = 2^31 -> MIN.
    let a = i32s(&[4], &[MAX, MIN, 5, 1 << 30]);
    let b = i32s(&[4], &[1, -1, -7, 1 << 30]);
    expect_i32(&binary("add", &a, &b), &[4], &[MIN, MAX, -2, MIN]);
}

#[test]
fn sub_i32_wraps() {
    // MIN - 1 = MAX; MAX - -1 = MIN; 0 - MIN = 2^31 -> MIN.
    let a = i32s(&[4], &[MIN, MAX, 0, 3]);
    let b = i32s(&[4], &[1, -1, MIN, 5]);
    expect_i32(&binary("sub", &a, &b), &[4], &[MAX, MIN, MIN, -2]);
}

#[test]
fn mul_i32_wraps() {
    // 2^16·2^16 = 2^32 -> 0; MAX·2 = 2^32 - 2 -> -2; MIN·-1 = 2^31 -> MIN;
    // 46341² = 2147488281 = 2^31 + 4633 -> 2147488281 - 2^32 = -2147479015.
    let a = i32s(&[5], &[65536, MAX, -3, MIN, 46341]);
    let b = i32s(&[5], &[65536, 2, 7, -1, 46341]);
    expect_i32(
        &binary("mul", &a, &b),
        &[5],
        &[0, -2, -21, MIN, -2147479015],
    );
}

#[test]
fn pow_values_and_edges() {
    // pow(x, 0) = 1 even for x = 0 or NaN; a negative base with a
    // non-integer exponent is NaN; 0^-1 = inf.
    let a = f64s(
        &[10],
        &[2.0, 2.0, 4.0, 9.0, -2.0, 0.0, f64::NAN, -8.0, 0.0, 2.0],
    );
    let b = f64s(
        &[10],
        &[10.0, -1.0, 0.5, 0.5, 3.0, 0.0, 0.0, 0.5, -1.0, 0.5],
    );
    let y = f64_values(&binary("pow", &a, &b), &[10]);
    assert_exact(
        &y[..9],
        &[
            1024.0,
            0.5,
            2.0,
            3.0,
            -8.0,
            1.0,
            1.0,
            f64::NAN,
            f64::INFINITY,
        ],
    );
    assert_close(&y[9..], &[SQRT_2], REL);
}

#[test]
fn comparisons_on_f32_with_nan_and_signed_zero() {
    // NaN compares unequal to everything; -0 == +0.
    let a = f32s(&[6], &[1.0, 2.0, 3.0, NAN, -0.0, INF]);
    let b = f32s(&[6], &[2.0, 2.0, 2.0, 1.0, 0.0, INF]);
    let (t, f) = (true, false);
    expect_bool(&binary("eq", &a, &b), &[6], &[f, t, f, f, t, t]);
    expect_bool(&binary("ne", &a, &b), &[6], &[t, f, t, t, f, f]);
    expect_bool(&binary("lt", &a, &b), &[6], &[t, f, f, f, f, f]);
    expect_bool(&binary("le", &a, &b), &[6], &[t, t, f, f, t, t]);
    expect_bool(&binary("gt", &a, &b), &[6], &[f, f, t, f, f, f]);
    expect_bool(&binary("ge", &a, &b), &[6], &[f, t, t, f, t, t]);
}

#[test]
fn comparisons_on_i32() {
    let a = i32s(&[3], &[MIN, 0, 5]);
    let b = i32s(&[3], &[MAX, 0, -5]);
    let (t, f) = (true, false);
    expect_bool(&binary("eq", &a, &b), &[3], &[f, t, f]);
    expect_bool(&binary("ne", &a, &b), &[3], &[t, f, t]);
    expect_bool(&binary("lt", &a, &b), &[3], &[t, f, f]);
    expect_bool(&binary("le", &a, &b), &[3], &[t, t, f]);
    expect_bool(&binary("gt", &a, &b), &[3], &[f, f, t]);
    expect_bool(&binary("ge", &a, &b), &[3], &[f, t, t]);
}

#[test]
fn eq_and_ne_on_bool() {
    let a = bools(&[4], &[false, false, true, true]);
    let b = bools(&[4], &[false, true, false, true]);
    expect_bool(&binary("eq", &a, &b), &[4], &[true, false, false, true]);
    expect_bool(&binary("ne", &a, &b), &[4], &[false, true, true, false]);
}

#[test]
fn and_or_truth_tables() {
    let a = bools(&[4], &[false, false, true, true]);
    let b = bools(&[4], &[false, true, false, true]);
    expect_bool(&binary("and", &a, &b), &[4], &[false, false, false, true]);
    expect_bool(&binary("or", &a, &b), &[4], &[false, true, true, true]);
}

// ---- select ------------------------------------------------------------------------

#[test]
fn select_picks_by_condition_without_mixing_in_the_other_side() {
    // The NaNs sit only in unpicked positions, so none reaches the result.
    let text = "graph @g(%c: bool[4], %a: f32[4], %b: f32[4]) -> (y: f32[4]) {
                  %3 = select %c, %a, %b : f32[4]
                  return %3
                }";
    let y = run1(
        text,
        &[
            ("c", bools(&[4], &[true, false, true, false])),
            ("a", f32s(&[4], &[1.0, NAN, 3.0, 4.0])),
            ("b", f32s(&[4], &[10.0, 20.0, NAN, -0.0])),
        ],
    );
    expect_f32(&y, &[4], &[1.0, 20.0, 3.0, -0.0]);
}

#[test]
fn select_on_i32() {
    let text = "graph @g(%c: bool[2], %a: i32[2], %b: i32[2]) -> (y: i32[2]) {
                  %3 = select %c, %a, %b : i32[2]
                  return %3
                }";
    let y = run1(
        text,
        &[
            ("c", bools(&[2], &[false, true])),
            ("a", i32s(&[2], &[MIN, MAX])),
            ("b", i32s(&[2], &[7, 8])),
        ],
    );
    expect_i32(&y, &[2], &[7, MAX]);
}

// ---- reductions -------------------------------------------------------------------------

#[test]
fn reduce_sum_over_one_axis() {
    // [[1,2,3],[4,5,6]]: rows sum to 6 and 15, columns to 5, 7, 9.
    let out = run(
        "graph @g(%x: f32[2,3]) -> (rows: f32[2], cols: f32[3]) {
           %1 = reduce_sum %x, axes=[1] : f32[2]
           %2 = reduce_sum %x, axes=[0] : f32[3]
           return %1, %2
         }",
        &[("x", f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))],
    );
    expect_f32(&out[0], &[2], &[6.0, 15.0]);
    expect_f32(&out[1], &[3], &[5.0, 7.0, 9.0]);
}

#[test]
fn reduce_sum_keepdims_keeps_size_one_axes() {
    let out = run(
        "graph @g(%x: f32[2,3]) -> (rows: f32[2,1], cols: f32[1,3]) {
           %1 = reduce_sum %x, axes=[1], keepdims : f32[2,1]
           %2 = reduce_sum %x, axes=[0], keepdims : f32[1,3]
           return %1, %2
         }",
        &[("x", f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))],
    );
    expect_f32(&out[0], &[2, 1], &[6.0, 15.0]);
    expect_f32(&out[1], &[1, 3], &[5.0, 7.0, 9.0]);
}

#[test]
fn reduce_sum_over_several_axes() {
    // x[a,b,c] = 12a + 4b + c on [2,3,4].
    // Over a and c: Σ_a Σ_c = 4·12·(0+1) + 8·4b + 2·(0+1+2+3) = 60 + 32b -> 60, 92, 124.
    // Over a and b: Σ_a Σ_b = 3·12·1 + 2·4·(0+1+2) + 6c = 60 + 6c -> 60, 66, 72, 78.
    // The order of `axes` does not matter.
    let out = run(
        "graph @g(%x: f32[2,3,4]) -> (ac: f32[3], ca: f32[3], ac_keep: f32[1,3,1], ab: f32[4]) {
           %1 = reduce_sum %x, axes=[0,2] : f32[3]
           %2 = reduce_sum %x, axes=[2,0] : f32[3]
           %3 = reduce_sum %x, axes=[0,2], keepdims : f32[1,3,1]
           %4 = reduce_sum %x, axes=[0,1] : f32[4]
           return %1, %2, %3, %4
         }",
        &[("x", counting(&[2, 3, 4]))],
    );
    expect_f32(&out[0], &[3], &[60.0, 92.0, 124.0]);
    expect_f32(&out[1], &[3], &[60.0, 92.0, 124.0]);
    expect_f32(&out[2], &[1, 3, 1], &[60.0, 92.0, 124.0]);
    expect_f32(&out[3], &[4], &[60.0, 66.0, 72.0, 78.0]);
}

#[test]
fn reduce_sum_over_all_axes() {
    // 0 + 1 + … + 23 = 23·24/2 = 276.
    let out = run(
        "graph @g(%x: f32[2,3,4]) -> (s: f32[], k: f32[1,1,1]) {
           %1 = reduce_sum %x, axes=[0,1,2] : f32[]
           %2 = reduce_sum %x, axes=[2,1,0], keepdims : f32[1,1,1]
           return %1, %2
         }",
        &[("x", counting(&[2, 3, 4]))],
    );
    expect_f32(&out[0], &[], &[276.0]);
    expect_f32(&out[1], &[1, 1, 1], &[276.0]);
}

#[test]
fn reduce_sum_i32_wraps() {
    // MAX + 1 + 1 = MIN + 1; MAX + 1 - 1 wraps to MIN and back to MAX.
    let y = run1(
        "graph @g(%x: i32[2,3]) -> (s: i32[2]) {
           %1 = reduce_sum %x, axes=[1] : i32[2]
           return %1
         }",
        &[("x", i32s(&[2, 3], &[MAX, 1, 1, MAX, 1, -1]))],
    );
    expect_i32(&y, &[2], &[MIN + 1, MAX]);
}

#[test]
fn reduce_sum_starts_from_the_first_element() {
    // -0 + -0 = -0; an accumulator started at +0 would give +0.
    let y = run1(
        "graph @g(%x: f32[2]) -> (s: f32[]) {
           %1 = reduce_sum %x, axes=[0] : f32[]
           return %1
         }",
        &[("x", f32s(&[2], &[-0.0, -0.0]))],
    );
    expect_f32(&y, &[], &[-0.0]);
}

#[test]
fn reduce_max_over_one_axis() {
    let out = run(
        "graph @g(%x: f32[2,3]) -> (rows: f32[2], cols: f32[3]) {
           %1 = reduce_max %x, axes=[1] : f32[2]
           %2 = reduce_max %x, axes=[0] : f32[3]
           return %1, %2
         }",
        &[("x", f32s(&[2, 3], &[1.0, 5.0, 3.0, -2.0, -1.0, -7.0]))],
    );
    expect_f32(&out[0], &[2], &[5.0, -1.0]);
    expect_f32(&out[1], &[3], &[1.0, 5.0, 3.0]);
}

#[test]
fn reduce_max_over_several_axes_with_keepdims() {
    // x[a,b,c] = 12a + 4b + c: the largest over (b, c) is 12a + 11,
    // over (a, b) it is 20 + c.
    let out = run(
        "graph @g(%x: f32[2,3,4]) -> (bc: f32[2,1,1], ab: f32[4]) {
           %1 = reduce_max %x, axes=[1,2], keepdims : f32[2,1,1]
           %2 = reduce_max %x, axes=[0,1] : f32[4]
           return %1, %2
         }",
        &[("x", counting(&[2, 3, 4]))],
    );
    expect_f32(&out[0], &[2, 1, 1], &[11.0, 23.0]);
    expect_f32(&out[1], &[4], &[20.0, 21.0, 22.0, 23.0]);
}

#[test]
fn reduce_max_propagates_nan_from_any_position() {
    #[rustfmt::skip]
    let x = f32s(&[5, 3], &[
        NAN, 1.0, 2.0,
        1.0, NAN, 2.0,
        1.0, 2.0, NAN,
        1.0, 2.0, 3.0,
        -INF, -INF, -INF,
    ]);
    let y = run1(
        "graph @g(%x: f32[5,3]) -> (m: f32[5]) {
           %1 = reduce_max %x, axes=[1] : f32[5]
           return %1
         }",
        &[("x", x)],
    );
    expect_f32(&y, &[5], &[NAN, NAN, NAN, 3.0, -INF]);
}

#[test]
fn reduce_max_prefers_positive_zero() {
    let y = run1(
        "graph @g(%x: f32[3,2]) -> (m: f32[3]) {
           %1 = reduce_max %x, axes=[1] : f32[3]
           return %1
         }",
        &[("x", f32s(&[3, 2], &[-0.0, 0.0, 0.0, -0.0, -0.0, -0.0]))],
    );
    expect_f32(&y, &[3], &[0.0, 0.0, -0.0]);
}

#[test]
fn reduce_max_on_i32() {
    let y = run1(
        "graph @g(%x: i32[2,2]) -> (m: i32[2]) {
           %1 = reduce_max %x, axes=[1] : i32[2]
           return %1
         }",
        &[("x", i32s(&[2, 2], &[MIN, MIN, MIN, -1]))],
    );
    expect_i32(&y, &[2], &[MIN, -1]);
}

// ---- movement --------------------------------------------------------------------------

#[test]
fn reshape_keeps_row_major_order() {
    let out = run(
        "graph @g(%x: f32[2,3]) -> (a: f32[3,2], b: f32[6], c: f32[1,6,1]) {
           %1 = reshape %x : f32[3,2]
           %2 = reshape %1 : f32[6]
           %3 = reshape %x : f32[1,6,1]
           return %1, %2, %3
         }",
        &[("x", f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))],
    );
    let want = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    expect_f32(&out[0], &[3, 2], &want);
    expect_f32(&out[1], &[6], &want);
    expect_f32(&out[2], &[1, 6, 1], &want);
}

#[test]
fn permute_rank3_moves_input_axis_perm_k_to_result_axis_k() {
    // x[a,b,c] = 12a + 4b + c on [2,3,4].
    // perm=[2,0,1]: y[i,j,k] = x[j,k,i] = 12j + 4k + i, shape [4,2,3].
    // perm=[1,2,0]: z[i,j,k] = x[k,i,j] = 12k + 4i + j, shape [3,4,2].
    let out = run(
        "graph @g(%x: f32[2,3,4]) -> (y: f32[4,2,3], z: f32[3,4,2]) {
           %1 = permute %x, perm=[2,0,1] : f32[4,2,3]
           %2 = permute %x, perm=[1,2,0] : f32[3,4,2]
           return %1, %2
         }",
        &[("x", counting(&[2, 3, 4]))],
    );
    #[rustfmt::skip]
    expect_f32(&out[0], &[4, 2, 3], &[
        0.0, 4.0, 8.0,   12.0, 16.0, 20.0,
        1.0, 5.0, 9.0,   13.0, 17.0, 21.0,
        2.0, 6.0, 10.0,  14.0, 18.0, 22.0,
        3.0, 7.0, 11.0,  15.0, 19.0, 23.0,
    ]);
    #[rustfmt::skip]
    expect_f32(&out[1], &[3, 4, 2], &[
        0.0, 12.0,  1.0, 13.0,  2.0, 14.0,  3.0, 15.0,
        4.0, 16.0,  5.0, 17.0,  6.0, 18.0,  7.0, 19.0,
        8.0, 20.0,  9.0, 21.0,  10.0, 22.0, 11.0, 23.0,
    ]);
}

#[test]
fn broadcast_adds_leading_dims_and_stretches_size_one_dims() {
    // [3,1] -> [2,3,4]: a leading axis of 2 is added and the last axis
    // stretched, so y[a,b,c] = x[b,0].
    let y = run1(
        "graph @g(%x: f32[3,1]) -> (y: f32[2,3,4]) {
           %1 = broadcast %x : f32[2,3,4]
           return %1
         }",
        &[("x", f32s(&[3, 1], &[1.0, 2.0, 3.0]))],
    );
    #[rustfmt::skip]
    expect_f32(&y, &[2, 3, 4], &[
        1.0, 1.0, 1.0, 1.0,  2.0, 2.0, 2.0, 2.0,  3.0, 3.0, 3.0, 3.0,
        1.0, 1.0, 1.0, 1.0,  2.0, 2.0, 2.0, 2.0,  3.0, 3.0, 3.0, 3.0,
    ]);
}

#[test]
fn broadcast_stretches_a_middle_axis_and_a_scalar() {
    let out = run(
        "graph @g(%x: i32[2,1,3], %s: f32[]) -> (y: i32[2,2,3], z: f32[2,2]) {
           %2 = broadcast %x : i32[2,2,3]
           %3 = broadcast %s : f32[2,2]
           return %2, %3
         }",
        &[
            ("x", i32s(&[2, 1, 3], &[1, 2, 3, 4, 5, 6])),
            ("s", Tensor::scalar_f32(7.5)),
        ],
    );
    expect_i32(&out[0], &[2, 2, 3], &[1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6]);
    expect_f32(&out[1], &[2, 2], &[7.5; 4]);
}

#[test]
fn slice_takes_a_box_of_a_rank3_tensor() {
    // x[a,b,c] = 12a + 4b + c; the box a in 0..2, b in 1..3, c in 2..4 is
    // {0, 12} + {4, 8} + {2, 3}.
    let y = run1(
        "graph @g(%x: f32[2,3,4]) -> (y: f32[2,2,2]) {
           %1 = slice %x, start=[0,1,2], end=[2,3,4] : f32[2,2,2]
           return %1
         }",
        &[("x", counting(&[2, 3, 4]))],
    );
    expect_f32(
        &y,
        &[2, 2, 2],
        &[6.0, 7.0, 10.0, 11.0, 18.0, 19.0, 22.0, 23.0],
    );
}

#[test]
fn concat_three_operands_on_the_middle_axis() {
    // For each index of axis 0, the a-row, then the b-rows, then the c-rows.
    let y = run1(
        "graph @g(%a: f32[2,1,2], %b: f32[2,2,2], %c: f32[2,3,2]) -> (y: f32[2,6,2]) {
           %3 = concat %a, %b, %c, axis=1 : f32[2,6,2]
           return %3
         }",
        &[
            ("a", f32s(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0])),
            (
                "b",
                f32s(
                    &[2, 2, 2],
                    &[10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0],
                ),
            ),
            ("c", counting(&[2, 3, 2])),
        ],
    );
    #[rustfmt::skip]
    expect_f32(&y, &[2, 6, 2], &[
        1.0, 2.0,  10.0, 11.0, 12.0, 13.0,  0.0, 1.0, 2.0, 3.0, 4.0, 5.0,
        3.0, 4.0,  14.0, 15.0, 16.0, 17.0,  6.0, 7.0, 8.0, 9.0, 10.0, 11.0,
    ]);
}

// ---- contraction ---------------------------------------------------------------------

#[test]
fn matmul_2d() {
    // [[1,2,3],[4,5,6]] · [[7,8],[9,10],[11,12]]:
    // 1·7 + 2·9 + 3·11 = 58, 1·8 + 2·10 + 3·12 = 64,
    // 4·7 + 5·9 + 6·11 = 139, 4·8 + 5·10 + 6·12 = 154.
    let y = run1(
        "graph @g(%a: f32[2,3], %b: f32[3,2]) -> (y: f32[2,2]) {
           %2 = matmul %a, %b : f32[2,2]
           return %2
         }",
        &[
            ("a", f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
            ("b", f32s(&[3, 2], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0])),
        ],
    );
    expect_f32(&y, &[2, 2], &[58.0, 64.0, 139.0, 154.0]);
}

#[test]
fn matmul_batched_rank3_pairs_matching_batches() {
    // Batch 0: [[1,2],[3,4]] · [1,1]ᵀ = [3, 7].
    // Batch 1: [[1,0],[0,2]] · [5,6]ᵀ = [5, 12].
    // (Pairing batch 0 with batch 1 would give [17, 39].)
    let y = run1(
        "graph @g(%a: f32[2,2,2], %b: f32[2,2,1]) -> (y: f32[2,2,1]) {
           %2 = matmul %a, %b : f32[2,2,1]
           return %2
         }",
        &[
            (
                "a",
                f32s(&[2, 2, 2], &[1.0, 2.0, 3.0, 4.0, 1.0, 0.0, 0.0, 2.0]),
            ),
            ("b", f32s(&[2, 2, 1], &[1.0, 1.0, 5.0, 6.0])),
        ],
    );
    expect_f32(&y, &[2, 2, 1], &[3.0, 7.0, 5.0, 12.0]);
}

#[test]
fn matmul_i32_is_exact_and_wraps() {
    // [[2^16, 2^16], [MAX, 1]] · [[2^16, 1], [1, 1]]:
    // (0,0): 2^16·2^16 + 2^16·1 = 2^32 + 2^16 -> 2^16 = 65536
    // (0,1): 2^16 + 2^16 = 131072
    // (1,0): MAX·2^16 + 1 = 2^47 - 2^16 + 1 ≡ -2^16 + 1 = -65535 (mod 2^32)
    // (1,1): MAX + 1 -> MIN
    let y = run1(
        "graph @g(%a: i32[2,2], %b: i32[2,2]) -> (y: i32[2,2]) {
           %2 = matmul %a, %b : i32[2,2]
           return %2
         }",
        &[
            ("a", i32s(&[2, 2], &[65536, 65536, MAX, 1])),
            ("b", i32s(&[2, 2], &[65536, 1, 1, 1])),
        ],
    );
    expect_i32(&y, &[2, 2], &[65536, 131072, -65535, MIN]);
}

// ---- cast ----------------------------------------------------------------------------

#[test]
fn cast_f32_to_i32_truncates_saturates_and_maps_nan_to_zero() {
    // 2147483520 is the largest f32 below 2^31; 2^31 itself and 3e9
    // saturate to MAX, -3e9 to MIN; -2^31 is exact.
    let x = f32s(
        &[11],
        &[
            1.9,
            -1.9,
            -0.5,
            2147483520.0,
            2147483648.0,
            -2147483648.0,
            3e9,
            -3e9,
            NAN,
            INF,
            -INF,
        ],
    );
    let y = run1(
        "graph @g(%x: f32[11]) -> (y: i32[11]) {
           %1 = cast %x : i32[11]
           return %1
         }",
        &[("x", x)],
    );
    expect_i32(
        &y,
        &[11],
        &[1, -1, 0, 2147483520, MAX, MIN, MAX, MIN, 0, MAX, MIN],
    );
}

#[test]
fn cast_f64_and_bf16_to_i32_truncate_and_saturate() {
    // bf16(1e10) is about 9.98e9, still past MAX.
    let out = run(
        "graph @g(%d: f64[4], %h: bf16[3]) -> (a: i32[4], b: i32[3]) {
           %2 = cast %d : i32[4]
           %3 = cast %h : i32[3]
           return %2, %3
         }",
        &[
            ("d", f64s(&[4], &[1e10, -1e10, 2147483647.9, -2147483648.9])),
            (
                "h",
                bf16s(&[3], &[2.5, -2.5, bf16::from_f32(1e10).to_f32()]),
            ),
        ],
    );
    expect_i32(&out[0], &[4], &[MAX, MIN, MAX, MIN]);
    expect_i32(&out[1], &[3], &[2, -2, MAX]);
}

#[test]
fn cast_to_bool_is_nonzero() {
    // NaN != 0, so NaN is true; -0 == 0, so -0 is false.
    let out = run(
        "graph @g(%x: f32[6], %i: i32[4]) -> (a: bool[6], b: bool[4]) {
           %2 = cast %x : bool[6]
           %3 = cast %i : bool[4]
           return %2, %3
         }",
        &[
            ("x", f32s(&[6], &[0.0, -0.0, 0.5, -2.0, NAN, -INF])),
            ("i", i32s(&[4], &[0, 1, -5, MIN])),
        ],
    );
    expect_bool(&out[0], &[6], &[false, false, true, true, true, true]);
    expect_bool(&out[1], &[4], &[false, true, true, true]);
}

#[test]
fn cast_bool_to_numbers_gives_one_and_zero() {
    let out = run(
        "graph @g(%b: bool[2]) -> (f: f32[2], i: i32[2], h: bf16[2], d: f64[2]) {
           %1 = cast %b : f32[2]
           %2 = cast %b : i32[2]
           %3 = cast %b : bf16[2]
           %4 = cast %b : f64[2]
           return %1, %2, %3, %4
         }",
        &[("b", bools(&[2], &[true, false]))],
    );
    expect_f32(&out[0], &[2], &[1.0, 0.0]);
    expect_i32(&out[1], &[2], &[1, 0]);
    expect_bf16(&out[2], &[2], &[1.0, 0.0]);
    expect_f64(&out[3], &[2], &[1.0, 0.0]);
}

#[test]
fn cast_f32_to_bf16_rounds_to_nearest_even() {
    // Spacing of bf16 in [1,2) is 2^-7.
    // 0x3f808000 = 1 + 2^-8: a tie, to even 1.
    // 0x3f818000 = 1 + 3·2^-8: a tie, to even 1 + 2^-6 = 1.015625.
    // 0x3f808001 = 1 + 2^-8 + 2^-23: just past the tie, up to 1 + 2^-7.
    // bf16::MAX = (2 - 2^-7)·2^127 ≈ 3.3895e38; halfway to 2^128 is
    // (2 - 2^-8)·2^127 ≈ 3.3962e38: 3.39e38 rounds to bf16::MAX
    // (f32 bits 0x7f7f0000), 3.4e38 overflows to inf.
    let x = f32s(
        &[9],
        &[
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::from_bits(0x3f80_8001),
            -f32::from_bits(0x3f81_8000),
            3.39e38,
            3.4e38,
            -0.0,
            NAN,
            -INF,
        ],
    );
    let y = run1(
        "graph @g(%x: f32[9]) -> (y: bf16[9]) {
           %1 = cast %x : bf16[9]
           return %1
         }",
        &[("x", x)],
    );
    expect_bf16(
        &y,
        &[9],
        &[
            1.0,
            1.015625,
            1.0078125,
            -1.015625,
            f32::from_bits(0x7f7f_0000),
            INF,
            -0.0,
            NAN,
            -INF,
        ],
    );
}

#[test]
fn cast_i32_to_f32_and_bf16_rounds_to_nearest_even() {
    // f32 spacing in [2^24, 2^25) is 2: 2^24 + 1 is a tie, to even 2^24;
    // 2^24 + 3 is a tie between 2^24 + 2 (odd mantissa) and 2^24 + 4 (even).
    // MAX = 2^31 - 1 rounds to 2^31.
    // bf16 spacing in [256, 512) is 2: 257 ties to 256, 259 ties to 260;
    // 255 has 8 significant bits and is exact.
    let out = run(
        "graph @g(%i: i32[4], %j: i32[4]) -> (f: f32[4], h: bf16[4]) {
           %2 = cast %i : f32[4]
           %3 = cast %j : bf16[4]
           return %2, %3
         }",
        &[
            ("i", i32s(&[4], &[16777217, -16777217, 16777219, MAX])),
            ("j", i32s(&[4], &[257, 259, 255, -257])),
        ],
    );
    expect_f32(
        &out[0],
        &[4],
        &[16777216.0, -16777216.0, 16777220.0, 2147483648.0],
    );
    expect_bf16(&out[1], &[4], &[256.0, 260.0, 255.0, -256.0]);
}

#[test]
fn cast_widening_is_exact() {
    // bf16 0x0001 = 2^-133 (subnormal); f32 0x00000001 = 2^-149.
    let out = run(
        "graph @g(%h: bf16[3], %f: f32[3]) -> (a: f32[3], b: f64[3]) {
           %2 = cast %h : f32[3]
           %3 = cast %f : f64[3]
           return %2, %3
         }",
        &[
            ("h", bf16s(&[3], &[1.5, -3.140625, BF16_TINY])),
            ("f", f32s(&[3], &[0.1, f32::from_bits(1), -0.0])),
        ],
    );
    expect_f32(&out[0], &[3], &[1.5, -3.140625, BF16_TINY]);
    // f32 0.1 is 0.100000001490116119384765625 exactly, which is an f64
    // value whose shortest spelling is 0.10000000149011612.
    expect_f64(
        &out[1],
        &[3],
        &[0.100_000_001_490_116_12, 2f64.powi(-149), -0.0],
    );
}

#[test]
fn cast_f64_to_f32_rounds_to_nearest_even() {
    // 1 + 2^-24 ties between 1 and 1 + 2^-23: even is 1.
    // 1 + 3·2^-24 ties between 1 + 2^-23 and 1 + 2^-22: even is 1 + 2^-22.
    // 1e300 overflows to inf; 1e-50 is below half the least subnormal: 0.
    let x = f64s(
        &[6],
        &[
            0.1,
            1.0 + 2f64.powi(-24),
            1.0 + 3.0 * 2f64.powi(-24),
            1e300,
            1e-50,
            -1e-50,
        ],
    );
    let y = run1(
        "graph @g(%x: f64[6]) -> (y: f32[6]) {
           %1 = cast %x : f32[6]
           return %1
         }",
        &[("x", x)],
    );
    expect_f32(&y, &[6], &[0.1, 1.0, 1.0 + 2f32.powi(-22), INF, 0.0, -0.0]);
}

// ---- precision modes -------------------------------------------------------------------

#[test]
fn f32_mode_rounds_every_elementwise_step() {
    // x = 2^24. (x + 1) - x: in f64, exactly 1. In f32, x + 1 = 2^24 + 1 is a
    // tie between 2^24 and 2^24 + 2 and rounds to even 2^24, so the result is 0.
    let text = "graph @g(%x: f32[], %one: f32[]) -> (y: f32[]) {
                  %2 = add %x, %one : f32[]
                  %3 = sub %2, %x : f32[]
                  return %3
                }";
    let inputs = [
        ("x", Tensor::scalar_f32(16777216.0)),
        ("one", Tensor::scalar_f32(1.0)),
    ];
    expect_f32(&run_in(Precision::F64, text, &inputs)[0], &[], &[1.0]);
    expect_f32(&run_in(Precision::F32, text, &inputs)[0], &[], &[0.0]);
}

#[test]
fn f32_mode_rounds_every_reduction_step() {
    // 2^24 + 1 + 1 + 1 + 1: f64 gives 2^24 + 4 (an f32 value); in f32 each
    // + 1 ties back to 2^24.
    let text = "graph @g(%x: f32[5]) -> (s: f32[]) {
                  %1 = reduce_sum %x, axes=[0] : f32[]
                  return %1
                }";
    let inputs = [("x", f32s(&[5], &[16777216.0, 1.0, 1.0, 1.0, 1.0]))];
    expect_f32(
        &run_in(Precision::F64, text, &inputs)[0],
        &[],
        &[16777220.0],
    );
    expect_f32(
        &run_in(Precision::F32, text, &inputs)[0],
        &[],
        &[16777216.0],
    );
}

#[test]
fn f32_mode_rounds_every_matmul_step() {
    // [2^24, 1, 1] · [1, 1, 1]ᵀ: f64 gives 2^24 + 2; f32 accumulation
    // rounds 2^24 + 1 back to 2^24 twice.
    let text = "graph @g(%a: f32[1,3], %b: f32[3,1]) -> (y: f32[1,1]) {
                  %2 = matmul %a, %b : f32[1,1]
                  return %2
                }";
    let inputs = [
        ("a", f32s(&[1, 3], &[16777216.0, 1.0, 1.0])),
        ("b", f32s(&[3, 1], &[1.0, 1.0, 1.0])),
    ];
    expect_f32(
        &run_in(Precision::F64, text, &inputs)[0],
        &[1, 1],
        &[16777218.0],
    );
    expect_f32(
        &run_in(Precision::F32, text, &inputs)[0],
        &[1, 1],
        &[16777216.0],
    );
}

#[test]
fn f32_mode_leaves_f64_and_i32_exact() {
    // The same (x + 1) - x as above at x = 2^30, and an i32 sum past 2^24:
    // neither type is rounded to f32 in f32 mode.
    let text = "graph @g(%x: f64[], %one: f64[], %i: i32[2]) -> (y: f64[], s: i32[]) {
                  %3 = add %x, %one : f64[]
                  %4 = sub %3, %x : f64[]
                  %5 = reduce_sum %i, axes=[0] : i32[]
                  return %4, %5
                }";
    let inputs = [
        ("x", f64s(&[], &[1073741824.0])),
        ("one", f64s(&[], &[1.0])),
        ("i", i32s(&[2], &[16777216, 1])),
    ];
    let out = run_in(Precision::F32, text, &inputs);
    expect_f64(&out[0], &[], &[1.0]);
    expect_i32(&out[1], &[], &[16777217]);
}

#[test]
fn bf16_rounds_after_every_op_in_both_modes() {
    // (1 + 2^-8) + 2^-8: each add is a tie between 1 and 1 + 2^-7 and rounds
    // to even 1, so the result is 1, although the exact sum 1 + 2^-7 is a
    // bf16 value.
    let text = "graph @g(%x: bf16[], %y: bf16[]) -> (z: bf16[]) {
                  %2 = add %x, %y : bf16[]
                  %3 = add %2, %y : bf16[]
                  return %3
                }";
    let inputs = [
        ("x", bf16s(&[], &[1.0])),
        ("y", bf16s(&[], &[2f32.powi(-8)])),
    ];
    for p in [Precision::F64, Precision::F32] {
        expect_bf16(&run_in(p, text, &inputs)[0], &[], &[1.0]);
    }
}

#[test]
fn bf16_exp_rounds_to_nearest_bf16_in_both_modes() {
    // e ≈ 2.71828; bf16 spacing in [2,4) is 2^-6: e / 2^-6 ≈ 173.97 -> 174·2^-6 = 2.71875.
    // The rounding happens at the exp itself: exp(1) - 2.71875 is exactly 0.
    let text = "graph @g(%x: bf16[1], %c: bf16[1]) -> (y: bf16[1], d: bf16[1]) {
                  %2 = exp %x : bf16[1]
                  %3 = sub %2, %c : bf16[1]
                  return %2, %3
                }";
    let inputs = [("x", bf16s(&[1], &[1.0])), ("c", bf16s(&[1], &[2.71875]))];
    for p in [Precision::F64, Precision::F32] {
        let out = run_in(p, text, &inputs);
        expect_bf16(&out[0], &[1], &[2.71875]);
        expect_bf16(&out[1], &[1], &[0.0]);
    }
}

#[test]
fn f32_mode_rounds_unary_results() {
    // c = the f32 nearest e. In f32 mode exp(1) is rounded to c, so
    // exp(1) - c = 0; in f64 mode it is e - c ≈ 8.25e-8, then rounded to f32
    // on output (relative error ≤ 2^-24, checked within 1e-7).
    let text = "graph @g(%x: f32[], %c: f32[]) -> (y: f32[]) {
                  %2 = exp %x : f32[]
                  %3 = sub %2, %c : f32[]
                  return %3
                }";
    let c = std::f32::consts::E;
    let inputs = [("x", Tensor::scalar_f32(1.0)), ("c", Tensor::scalar_f32(c))];
    expect_f32(&run_in(Precision::F32, text, &inputs)[0], &[], &[0.0]);
    let y = run_in(Precision::F64, text, &inputs)[0].to_f64_vec();
    assert_close(&y, &[E - f64::from(c)], 1e-7);
}

#[test]
fn bf16_reduce_sum_rounds_once_at_the_end() {
    // 1 + 2^-8 + 2^-8: the accumulator is f64 (or f32) and holds
    // 1 + 2^-8 exactly, so the sum is 1 + 2^-7, unlike the chain of adds above.
    let text = "graph @g(%x: bf16[3]) -> (s: bf16[]) {
                  %1 = reduce_sum %x, axes=[0] : bf16[]
                  return %1
                }";
    let inputs = [("x", bf16s(&[3], &[1.0, 2f32.powi(-8), 2f32.powi(-8)]))];
    for p in [Precision::F64, Precision::F32] {
        expect_bf16(&run_in(p, text, &inputs)[0], &[], &[1.0078125]);
    }
}

// ---- errors ------------------------------------------------------------------------------

const TWO_INPUTS: &str = "graph @two(%x: f32[2], %y: f32[2]) -> (s: f32[2]) {
                            %2 = add %x, %y : f32[2]
                            return %2
                          }";

fn two_inputs_with(inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>, Error> {
    try_run(TWO_INPUTS, inputs, &InterpOptions::default())
}

#[test]
fn missing_input_is_an_error() {
    let err = two_inputs_with(&[("x", f32s(&[2], &[1.0, 2.0]))]).unwrap_err();
    assert_eq!(
        err,
        Error::MissingInput {
            name: "y".to_string(),
            ty: TensorType::new(DType::F32, [2]),
        }
    );
}

#[test]
fn unknown_input_is_an_error() {
    let x = f32s(&[2], &[1.0, 2.0]);
    let err = two_inputs_with(&[("x", x.clone()), ("y", x.clone()), ("z", x)]).unwrap_err();
    assert_eq!(
        err,
        Error::UnknownInput {
            name: "z".to_string(),
            graph: "two".to_string(),
            known: "x, y".to_string(),
        }
    );
}

#[test]
fn input_of_the_wrong_shape_is_an_error() {
    let err = two_inputs_with(&[
        ("x", f32s(&[2], &[1.0, 2.0])),
        ("y", f32s(&[3], &[1.0, 2.0, 3.0])),
    ])
    .unwrap_err();
    assert_eq!(
        err,
        Error::InputType {
            name: "y".to_string(),
            expected: TensorType::new(DType::F32, [2]),
            got: TensorType::new(DType::F32, [3]),
        }
    );
}

#[test]
fn input_of_the_wrong_dtype_is_an_error() {
    let err =
        two_inputs_with(&[("x", f32s(&[2], &[1.0, 2.0])), ("y", i32s(&[2], &[1, 2]))]).unwrap_err();
    assert_eq!(
        err,
        Error::InputType {
            name: "y".to_string(),
            expected: TensorType::new(DType::F32, [2]),
            got: TensorType::new(DType::I32, [2]),
        }
    );
}

#[test]
fn an_ill_typed_graph_is_rejected_before_running() {
    let graph = parse_graph(
        "graph @bad(%x: f32[2]) -> (y: f32[3]) {
           %1 = neg %x : f32[3]
           return %1
         }",
    )
    .unwrap();
    let inputs = BTreeMap::from([("x".to_string(), f32s(&[2], &[1.0, 2.0]))]);
    let err = interpret(&graph, &inputs, &InterpOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Verify(_)), "{err:?}");
}

#[test]
fn memory_limit_fires_before_allocating() {
    // The broadcast has 2^40 elements (8 TiB at 8 bytes each); allocating
    // it would abort the test process, so the error must come first.
    let text = "graph @huge(%x: f32[1]) -> (s: f32[]) {
                  %1 = broadcast %x : f32[1048576,1048576]
                  %2 = reduce_sum %1, axes=[0,1] : f32[]
                  return %2
                }";
    let err = try_run(
        text,
        &[("x", f32s(&[1], &[1.0]))],
        &InterpOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::TooLarge {
            value: ValueId::new(1),
            bytes: 8 * (1 << 40) + 8,
            limit: 8 << 30,
        }
    );
}

#[test]
fn memory_limit_counts_only_live_values_and_is_inclusive() {
    // Each value is 4 elements = 32 bytes (8 per element, whatever the
    // dtype). At most two are alive at once: an operand and its result, or
    // the input and the dead %1, which nothing reads and which is dropped at
    // once. So 64 bytes suffice for a chain of any length and 63 do not.
    let text = "graph @chain(%x: f32[4]) -> (y: f32[4]) {
                  %1 = exp %x : f32[4]
                  %2 = neg %x : f32[4]
                  %3 = neg %2 : f32[4]
                  %4 = neg %3 : f32[4]
                  %5 = neg %4 : f32[4]
                  return %5
                }";
    let x = f32s(&[4], &[1.0, -2.0, 3.0, -4.0]);
    let with_limit = |limit: u64| {
        let opts = InterpOptions {
            memory_limit: limit,
            ..InterpOptions::default()
        };
        try_run(text, &[("x", x.clone())], &opts)
    };
    let out = with_limit(64).unwrap();
    expect_f32(&out[0].1, &[4], &[1.0, -2.0, 3.0, -4.0]);
    assert_eq!(
        with_limit(63).unwrap_err(),
        Error::TooLarge {
            value: ValueId::new(1),
            bytes: 64,
            limit: 63,
        }
    );
}

#[test]
fn memory_limit_counts_inputs() {
    // A graph that only returns its input still holds 4·8 = 32 bytes.
    let text = "graph @id(%x: f32[4]) -> (y: f32[4]) {
                  return %x
                }";
    let opts = InterpOptions {
        memory_limit: 31,
        ..InterpOptions::default()
    };
    let err = try_run(text, &[("x", f32s(&[4], &[1.0; 4]))], &opts).unwrap_err();
    assert_eq!(
        err,
        Error::TooLarge {
            value: ValueId::new(0),
            bytes: 32,
            limit: 31,
        }
    );
}

// ---- outputs -----------------------------------------------------------------------------

#[test]
fn outputs_come_back_in_signature_order_with_their_names() {
    // Signature order (b, a, n) differs from both definition order and
    // name order.
    let text = "graph @g(%x: f32[2]) -> (b: f32[2], a: f32[2], n: bool[2]) {
                  %1 = neg %x : f32[2]
                  %2 = add %x, %x : f32[2]
                  %3 = lt %x, %1 : bool[2]
                  return %2, %1, %3
                }";
    let out = try_run(
        text,
        &[("x", f32s(&[2], &[1.5, -3.0]))],
        &InterpOptions::default(),
    )
    .unwrap();
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["b", "a", "n"]);
    expect_f32(&out[0].1, &[2], &[3.0, -6.0]);
    expect_f32(&out[1].1, &[2], &[-1.5, 3.0]);
    expect_bool(&out[2].1, &[2], &[false, true]);
}

#[test]
fn a_graph_may_return_an_input_directly() {
    // The input comes back bit for bit (NaN, -0 and all), also when it is
    // returned twice and used by another output.
    let text = "graph @g(%x: f32[3]) -> (same: f32[3], twice: f32[3], again: f32[3]) {
                  %1 = add %x, %x : f32[3]
                  return %x, %1, %x
                }";
    let out = try_run(
        text,
        &[("x", f32s(&[3], &[NAN, -0.0, 2.5]))],
        &InterpOptions::default(),
    )
    .unwrap();
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["same", "twice", "again"]);
    expect_f32(&out[0].1, &[3], &[NAN, -0.0, 2.5]);
    expect_f32(&out[1].1, &[3], &[NAN, -0.0, 5.0]);
    expect_f32(&out[2].1, &[3], &[NAN, -0.0, 2.5]);
}
