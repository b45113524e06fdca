//! Accuracy of the inline `f32` math functions against `f64`, on dense
//! sweeps of each function's useful range (10^6 points each) plus special
//! values, for the SIMD and the scalar code, with and without fused
//! multiply-adds. The bounds asserted here are the ones stated in
//! `docs/backends.md`; run with `--nocapture` to print the measured table.

mod common;

use std::collections::BTreeMap;

use birkhoff_cpu::{CpuOptions, compile};
use birkhoff_ir::kernel::{BufferKind, Kernel, LoopKind, ScalarType};
use birkhoff_ir::{DType, Op, Tensor, TensorData};
use common::*;

const POINTS: usize = 1_000_000;

/// `f32` ulps between `got` and the exact `want`: the error over the
/// spacing of `f32` values at `want` (2^-149 in the subnormal range).
fn ulps(got: f32, want: f64) -> f64 {
    if got.is_nan() || want.is_nan() {
        return if got.is_nan() && want.is_nan() {
            0.0
        } else {
            f64::INFINITY
        };
    }
    let w = want as f32;
    if w.is_infinite() || got.is_infinite() {
        return if got == w { 0.0 } else { f64::INFINITY };
    }
    let a = w.abs();
    let spacing = if a < f32::MIN_POSITIVE {
        f64::from(f32::from_bits(1))
    } else {
        f64::from(f32::from_bits(a.to_bits() + 1)) - f64::from(a)
    };
    (f64::from(got) - want).abs() / spacing
}

fn run(op: &Op, xs: &[f32], kind: LoopKind, fma: bool) -> Vec<f32> {
    let n = xs.len();
    let mut kern = Kernel::new("k0_math");
    let i = kern.var(ScalarType::Index);
    kern.body = vec![lp(
        i,
        n,
        kind,
        vec![st(1, ix(i), un(op.clone(), ld(0, ix(i))))],
    )];
    let p = program(
        "math",
        vec![
            buf("x", DType::F32, &[n], BufferKind::Input),
            buf("y", DType::F32, &[n], BufferKind::Output),
        ],
        vec![kern],
    );
    let exe = compile(
        &p,
        &CpuOptions {
            threads: 1,
            fma,
            ..CpuOptions::default()
        },
    )
    .unwrap();
    if kind == LoopKind::Vector {
        assert_eq!(exe.kernel_stats()[0].vector_loops, 1);
    }
    let x = Tensor::new([n], TensorData::F32(xs.to_vec())).unwrap();
    let out = exe.run(&BTreeMap::from([("x".to_string(), x)])).unwrap();
    out[0].1.as_f32().unwrap().to_vec()
}

fn reference(op: &Op, x: f64) -> f64 {
    birkhoff_ir::eval_unary(op, DType::F64, x)
}

/// `POINTS` points evenly spaced in `[lo, hi]`.
fn linear(lo: f64, hi: f64) -> Vec<f32> {
    (0..POINTS)
        .map(|i| (lo + (hi - lo) * i as f64 / (POINTS - 1) as f64) as f32)
        .collect()
}

/// `POINTS` points `±2^e`, `e` evenly spaced in `[lo, hi]`.
fn logarithmic(lo: f64, hi: f64, signed: bool) -> Vec<f32> {
    (0..POINTS)
        .map(|i| {
            let x = (lo + (hi - lo) * i as f64 / (POINTS - 1) as f64).exp2() as f32;
            if signed && i % 2 == 1 { -x } else { x }
        })
        .collect()
}

const SPECIALS: [f32; 14] = [
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    0.0,
    -0.0,
    1.0,
    -1.0,
    f32::MAX,
    f32::MIN,
    f32::MIN_POSITIVE,
    1e-45,
    -1e-45,
    88.8,
    -104.5,
];

/// Worst error of `op` over the sweep in ulps, and its argument.
fn worst(op: &Op, xs: &[f32], kind: LoopKind, fma: bool) -> (f64, f32) {
    let got = run(op, xs, kind, fma);
    let mut w = (0.0, 0.0);
    for (&x, &g) in xs.iter().zip(&got) {
        let e = ulps(g, reference(op, f64::from(x)));
        if e > w.0 {
            w = (e, x);
        }
    }
    w
}

fn specials_exact(op: &Op) {
    for kind in [LoopKind::Vector, LoopKind::Serial] {
        let got = run(op, &SPECIALS, kind, true);
        for (&x, &g) in SPECIALS.iter().zip(&got) {
            let want = reference(op, f64::from(x)) as f32;
            // Within 2 ulps at special points; NaN, infinities and signed
            // zeros exactly.
            let ok = (g.is_nan() && want.is_nan())
                || (g == want && g.is_sign_negative() == want.is_sign_negative())
                || (want.is_finite() && want != 0.0 && ulps(g, reference(op, f64::from(x))) <= 2.0);
            assert!(
                ok,
                "{}({x:e}) = {g:e}, want {want:e} ({kind:?})",
                op.mnemonic()
            );
        }
    }
}

fn check(op: &Op, sweeps: &[(&str, Vec<f32>)], bound: f64) {
    specials_exact(op);
    for (range, xs) in sweeps {
        for kind in [LoopKind::Vector, LoopKind::Serial] {
            for fma in [true, false] {
                let (e, at) = worst(op, xs, kind, fma);
                println!(
                    "{:8} {range:28} {:7} fma={fma:5}: {e:.3} ulp (at {at:e})",
                    op.mnemonic(),
                    format!("{kind:?}")
                );
                assert!(
                    e <= bound,
                    "{} over {range}: {e} ulp at {at:e} exceeds {bound}",
                    op.mnemonic()
                );
            }
        }
    }
}

#[test]
fn exp_is_within_its_stated_bound() {
    check(
        &Op::Exp,
        &[
            ("[-104, 89] linear", linear(-104.0, 89.0)),
            ("[-1, 1] linear", linear(-1.0, 1.0)),
        ],
        1.5,
    );
}

#[test]
fn log_is_within_its_stated_bound() {
    check(
        &Op::Log,
        &[
            (
                "[2^-149, 2^128) log-spaced",
                logarithmic(-149.0, 127.99, false),
            ),
            ("[0.5, 2] linear", linear(0.5, 2.0)),
        ],
        1.5,
    );
}

#[test]
fn tanh_is_within_its_stated_bound() {
    check(
        &Op::Tanh,
        &[
            ("[-10, 10] linear", linear(-10.0, 10.0)),
            ("±[2^-100, 2^4] log-spaced", logarithmic(-100.0, 4.0, true)),
        ],
        2.0,
    );
}

#[test]
fn sigmoid_is_within_its_stated_bound() {
    check(
        &Op::Sigmoid,
        &[
            ("[-104, 20] linear", linear(-104.0, 20.0)),
            ("±[2^-100, 2^7] log-spaced", logarithmic(-100.0, 7.0, true)),
        ],
        3.0,
    );
}

#[test]
fn sqrt_rsqrt_recip_are_correctly_rounded_or_nearly() {
    let xs = logarithmic(-149.0, 127.99, false);
    for (op, bound) in [(Op::Sqrt, 0.5), (Op::Rsqrt, 1.5), (Op::Recip, 0.5)] {
        check(&op, &[("[2^-149, 2^128) log-spaced", xs.clone())], bound);
    }
}
