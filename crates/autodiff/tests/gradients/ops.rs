//! Every primitive op's gradient rule, against finite differences.
//!
//! Values keep away from points where an op is not differentiable (or not
//! defined): `log`, `sqrt`, `rsqrt` and the base of `pow` see `[0.5, 2)`,
//! `abs` and `recip` see magnitudes in `[0.2, 2)`, `max`/`min` operands
//! differ by at least 0.1, `reduce_max` elements by at least 0.2, and
//! inputs of casts to `i32` stay at least 0.1 from an integer. The
//! conventions at those points are checked exactly by the unit tests at
//! the end.

use birkhoff_dsl::{Builder, Var, concat};
use birkhoff_ir::{DType, Graph};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::common::{
    FD, Fd, check, config, grad_checked, inputs, run, shaped, signed, small_shape, t64, values,
    weighted_sum,
};

fn unary(shape: &[usize], x: &[f64], f: fn(Var<'_>) -> Var<'_>) -> Result<(), TestCaseError> {
    let b = Builder::new("unary");
    let xv = b.input("x", DType::F64, shape);
    let y = f(xv);
    b.output("loss", weighted_sum(&b, y));
    let g = b.build().expect("test graph builds");
    check(&g, "loss", &["x"], &inputs(&[("x", t64(shape, x))]), FD)
}

fn binary(
    shape: &[usize],
    a: &[f64],
    c: &[f64],
    f: for<'b> fn(Var<'b>, Var<'b>) -> Var<'b>,
) -> Result<(), TestCaseError> {
    let b = Builder::new("binary");
    let av = b.input("a", DType::F64, shape);
    let cv = b.input("b", DType::F64, shape);
    b.output("loss", weighted_sum(&b, f(av, cv)));
    let g = b.build().expect("test graph builds");
    let at = inputs(&[("a", t64(shape, a)), ("b", t64(shape, c))]);
    check(&g, "loss", &["a", "b"], &at, FD)
}

/// A one-input graph `loss = weighted_sum(f(x))` for ops with attributes.
fn with_x(shape: &[usize], f: impl for<'b> Fn(Var<'b>) -> Var<'b>) -> Graph {
    let b = Builder::new("movement");
    let x = b.input("x", DType::F64, shape);
    let y = f(x);
    b.output("loss", weighted_sum(&b, y));
    b.build().expect("test graph builds")
}

fn iota_values(shape: &[usize]) -> Vec<f64> {
    let n: usize = shape.iter().product();
    (0..n).map(|i| (i as f64 * 0.37).sin() * 1.5).collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn neg((s, v) in shaped(1, |n| values(n, -2.0, 2.0))) {
        unary(&s, &v[0], |x| -x)?;
    }

    #[test]
    fn abs((s, v) in shaped(1, |n| signed(n, 0.2, 2.0))) {
        unary(&s, &v[0], |x| x.abs())?;
    }

    #[test]
    fn exp((s, v) in shaped(1, |n| values(n, -2.0, 2.0))) {
        unary(&s, &v[0], |x| x.exp())?;
    }

    #[test]
    fn log((s, v) in shaped(1, |n| values(n, 0.5, 2.0))) {
        unary(&s, &v[0], |x| x.log())?;
    }

    #[test]
    fn sqrt((s, v) in shaped(1, |n| values(n, 0.5, 2.0))) {
        unary(&s, &v[0], |x| x.sqrt())?;
    }

    #[test]
    fn rsqrt((s, v) in shaped(1, |n| values(n, 0.5, 2.0))) {
        unary(&s, &v[0], |x| x.rsqrt())?;
    }

    #[test]
    fn recip((s, v) in shaped(1, |n| signed(n, 0.2, 2.0))) {
        unary(&s, &v[0], |x| x.recip())?;
    }

    #[test]
    fn sigmoid((s, v) in shaped(1, |n| values(n, -3.0, 3.0))) {
        unary(&s, &v[0], |x| x.sigmoid())?;
    }

    #[test]
    fn tanh((s, v) in shaped(1, |n| values(n, -3.0, 3.0))) {
        unary(&s, &v[0], |x| x.tanh())?;
    }

    #[test]
    fn add((s, v) in shaped(2, |n| values(n, -2.0, 2.0))) {
        binary(&s, &v[0], &v[1], |a, b| a + b)?;
    }

    #[test]
    fn sub((s, v) in shaped(2, |n| values(n, -2.0, 2.0))) {
        binary(&s, &v[0], &v[1], |a, b| a - b)?;
    }

    #[test]
    fn mul((s, v) in shaped(2, |n| values(n, -2.0, 2.0))) {
        binary(&s, &v[0], &v[1], |a, b| a * b)?;
    }

    #[test]
    fn div((s, a) in shaped(1, |n| values(n, -2.0, 2.0)), d in signed(27, 0.3, 2.0)) {
        binary(&s, &a[0], &d[..a[0].len()], |a, b| a / b)?;
    }

    #[test]
    fn max((s, a) in shaped(1, |n| values(n, -2.0, 2.0)), d in signed(27, 0.1, 1.0)) {
        let c: Vec<f64> = a[0].iter().zip(&d).map(|(x, d)| x + d).collect();
        binary(&s, &a[0], &c, |a, b| a.max(b))?;
    }

    #[test]
    fn min((s, a) in shaped(1, |n| values(n, -2.0, 2.0)), d in signed(27, 0.1, 1.0)) {
        let c: Vec<f64> = a[0].iter().zip(&d).map(|(x, d)| x + d).collect();
        binary(&s, &a[0], &c, |a, b| a.min(b))?;
    }

    #[test]
    fn pow((s, a) in shaped(1, |n| values(n, 0.5, 2.0)), e in values(27, -2.0, 2.0)) {
        binary(&s, &a[0], &e[..a[0].len()], |a, b| a.pow(b))?;
    }

    /// `select` routes by its condition; the condition's input `c` only
    /// feeds a comparison, so its gradient is zero.
    #[test]
    fn select((s, v) in shaped(2, |n| values(n, -2.0, 2.0)), c in signed(27, 0.1, 2.0)) {
        let b = Builder::new("select");
        let x = b.input("a", DType::F64, &s);
        let y = b.input("b", DType::F64, &s);
        let cv = b.input("c", DType::F64, &s);
        let cond = cv.cmp_gt(b.full(0.0, DType::F64, &s));
        b.output("loss", weighted_sum(&b, cond.select(x * y, y.exp())));
        let g = b.build().expect("test graph builds");
        let n = v[0].len();
        let at = inputs(&[("a", t64(&s, &v[0])), ("b", t64(&s, &v[1])), ("c", t64(&s, &c[..n]))]);
        check(&g, "loss", &["a", "b", "c"], &at, FD)?;
    }

    /// Comparisons, logical ops, `iota`, constants and casts to `i32` and
    /// `bool` pass no gradient; the float paths around them still do.
    #[test]
    fn no_gradient_ops(
        (s, frac) in shaped(1, |n| values(n, 0.1, 0.9)),
        k in prop::collection::vec(-2i32..2, 27),
        d in signed(27, 0.1, 1.0),
    ) {
        let n = frac[0].len();
        let x: Vec<f64> = frac[0].iter().zip(&k).map(|(f, k)| f64::from(*k) + f).collect();
        let y: Vec<f64> = x.iter().zip(&d).map(|(x, d)| x + d).collect();
        let b = Builder::new("no_grad");
        let xv = b.input("x", DType::F64, &s);
        let yv = b.input("y", DType::F64, &s);
        let zero = b.full(0.0, DType::F64, &s);
        let m = xv
            .cmp_lt(yv)
            .logical_and(xv.cmp_gt(zero).logical_not())
            .logical_or(xv.cmp_eq(yv))
            .logical_or(xv.cmp_ne(xv).logical_and(xv.cmp_le(yv).logical_or(xv.cmp_ge(yv))));
        let iota = b.iota(DType::F64, &s, s.len() - 1);
        let ints = xv.cast(DType::I32) + b.iota(DType::I32, &s, 0);
        let as_float = ints.cast(DType::F64) + xv.cmp_ge(yv).cast(DType::F64);
        let truthy = xv.cast(DType::Bool).cast(DType::F64);
        let out = m.select(xv * yv, iota) + as_float * yv + truthy * yv;
        b.output("loss", weighted_sum(&b, out));
        let g = b.build().expect("test graph builds");
        let at = inputs(&[("x", t64(&s, &x)), ("y", t64(&s, &y[..n]))]);
        check(&g, "loss", &["x", "y"], &at, FD)?;
    }

    #[test]
    fn reduce_sum(
        (s, mask, keep) in small_shape().prop_flat_map(|s| {
            let r = s.len();
            (Just(s), prop::collection::vec(any::<bool>(), r), any::<bool>())
        }),
        v in values(27, -2.0, 2.0),
    ) {
        let mut axes: Vec<usize> = (0..s.len()).filter(|&k| mask[k]).collect();
        if axes.is_empty() {
            axes.push(0);
        }
        let n: usize = s.iter().product();
        let g = with_x(&s, |x| x.sum(&axes, keep).exp());
        check(&g, "loss", &["x"], &inputs(&[("x", t64(&s, &v[..n]))]), FD)?;
    }

    #[test]
    fn reduce_max(
        (s, mask, keep, perm) in small_shape().prop_flat_map(|s| {
            let r = s.len();
            let n: usize = s.iter().product();
            (
                Just(s),
                prop::collection::vec(any::<bool>(), r),
                any::<bool>(),
                Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
            )
        }),
        noise in values(27, 0.0, 0.1),
    ) {
        let mut axes: Vec<usize> = (0..s.len()).filter(|&k| mask[k]).collect();
        if axes.is_empty() {
            axes.push(s.len() - 1);
        }
        // Distinct values, at least 0.2 apart: no ties.
        let x: Vec<f64> = perm.iter().zip(&noise).map(|(&p, e)| p as f64 * 0.3 + e - 1.0).collect();
        let g = with_x(&s, |x| x.max_over(&axes, keep));
        check(&g, "loss", &["x"], &inputs(&[("x", t64(&s, &x))]), FD)?;
    }

    #[test]
    fn reshape(s in small_shape(), which in 0usize..3) {
        let n: usize = s.iter().product();
        let target = match which {
            0 => vec![n],
            1 => s.iter().rev().copied().collect(),
            _ => vec![1, n, 1],
        };
        let g = with_x(&s, |x| x.reshape(&target).tanh());
        check(&g, "loss", &["x"], &inputs(&[("x", t64(&s, &iota_values(&s)))]), FD)?;
    }

    #[test]
    fn permute(
        (s, perm) in small_shape().prop_flat_map(|s| {
            let r = s.len();
            (Just(s), Just((0..r).collect::<Vec<usize>>()).prop_shuffle())
        }),
    ) {
        let g = with_x(&s, |x| x.permute(&perm).sigmoid());
        check(&g, "loss", &["x"], &inputs(&[("x", t64(&s, &iota_values(&s)))]), FD)?;
    }

    /// Leading axes added and size-1 axes stretched, in any combination
    /// (a rank-0 operand included).
    #[test]
    fn broadcast(
        (target, rank, keep) in small_shape().prop_flat_map(|t| {
            let r = t.len();
            (Just(t), 0..=r, prop::collection::vec(any::<bool>(), r))
        }),
    ) {
        let off = target.len() - rank;
        let s: Vec<usize> = (0..rank).map(|i| if keep[i] { target[off + i] } else { 1 }).collect();
        let g = with_x(&s, |x| x.broadcast_to(&target).tanh());
        check(&g, "loss", &["x"], &inputs(&[("x", t64(&s, &iota_values(&s)))]), FD)?;
    }

    #[test]
    fn slice(
        (s, bounds) in small_shape().prop_flat_map(|s| {
            let b: Vec<_> = s
                .iter()
                .map(|&d| (0..d).prop_flat_map(move |st| (Just(st), st + 1..=d)))
                .collect();
            (Just(s), b)
        }),
    ) {
        let start: Vec<usize> = bounds.iter().map(|b| b.0).collect();
        let end: Vec<usize> = bounds.iter().map(|b| b.1).collect();
        let g = with_x(&s, |x| x.slice(&start, &end).exp());
        check(&g, "loss", &["x"], &inputs(&[("x", t64(&s, &iota_values(&s)))]), FD)?;
    }

    /// Two or three operands, joined along any axis; the first operand is
    /// also used directly, so cotangents accumulate.
    #[test]
    fn concat_parts(
        (s, axis, lens) in small_shape().prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r, prop::collection::vec(1usize..=3, 2..=3))
        }),
    ) {
        let b = Builder::new("concat");
        let mut parts = Vec::new();
        let mut at = Vec::new();
        let names = ["p0", "p1", "p2"];
        for (i, &len) in lens.iter().enumerate() {
            let mut shape = s.clone();
            shape[axis] = len;
            parts.push(b.input(names[i], DType::F64, &shape));
            at.push((names[i], t64(&shape, &iota_values(&shape).iter().map(|v| v + i as f64 * 0.1).collect::<Vec<_>>())));
        }
        let joined = concat(&parts, axis).expect("parts given");
        let loss = weighted_sum(&b, joined.tanh()) + weighted_sum(&b, parts[0] * parts[0]);
        b.output("loss", loss);
        let g = b.build().expect("test graph builds");
        let wrt = &names[..lens.len()];
        check(&g, "loss", wrt, &inputs(&at), FD)?;
    }

    #[test]
    fn matmul(
        batch in prop::collection::vec(1usize..=2, 0..=2),
        (m, k, n) in (1usize..=3, 1usize..=3, 1usize..=3),
        v in values(72, -1.5, 1.5),
    ) {
        let mut sa = batch.clone();
        sa.extend([m, k]);
        let mut sb = batch;
        sb.extend([k, n]);
        let b = Builder::new("matmul");
        let a = b.input("a", DType::F64, &sa);
        let c = b.input("b", DType::F64, &sb);
        b.output("loss", weighted_sum(&b, a.matmul(c)));
        let g = b.build().expect("test graph builds");
        let (na, nb) = (sa.iter().product::<usize>(), sb.iter().product::<usize>());
        let at = inputs(&[("a", t64(&sa, &v[..na])), ("b", t64(&sb, &v[na..na + nb]))]);
        check(&g, "loss", &["a", "b"], &at, FD)?;
    }

    /// `f64 → f32 → f64`: f32 arithmetic is not rounded by the f64
    /// interpreter, but the casts are, so the step is large enough for the
    /// f32 rounding (relative 6e-8) to stay far below the tolerance.
    #[test]
    fn cast_through_f32((s, v) in shaped(1, |n| values(n, -2.0, 2.0))) {
        let g = with_x(&s, |x| {
            let y = x.cast(DType::F32);
            (y * y).cast(DType::F64)
        });
        let fd = Fd { h: 1e-2, tol: 1e-4 };
        check(&g, "loss", &["x"], &inputs(&[("x", t64(&s, &v[0]))]), fd)?;
    }
}

/// Gradient outputs for `wrt` at `at`.
fn grads(g: &Graph, wrt: &[&str], at: &[(&str, birkhoff_ir::Tensor)]) -> Vec<Vec<f64>> {
    let dg = grad_checked(g, "loss", wrt);
    run(&dg, &inputs(at))[1..]
        .iter()
        .map(|(_, t)| t.to_f64_vec())
        .collect()
}

fn pow_sum() -> Graph {
    let b = Builder::new("pow");
    let a = b.input("a", DType::F64, &[4]);
    let e = b.input("b", DType::F64, &[4]);
    b.output("loss", a.pow(e).sum(&[0], false));
    b.build().expect("test graph builds")
}

#[test]
fn pow_at_non_positive_base_and_zero_exponent() {
    let a = [0.0, -2.0, 3.0, 0.0];
    let e = [2.0, 2.0, 0.0, 0.0];
    let got = grads(
        &pow_sum(),
        &["a", "b"],
        &[("a", t64(&[4], &a)), ("b", t64(&[4], &e))],
    );
    // ∂a = b·a^(b-1), 0 where b == 0.
    assert_eq!(got[0], vec![0.0, -4.0, 0.0, 0.0]);
    // ∂b = a^b·ln a where a > 0, else 0.
    assert_eq!(got[1], vec![0.0, 0.0, 3f64.ln(), 0.0]);
}

#[test]
fn max_and_min_split_ties_evenly() {
    for (is_max, want_a, want_b) in [
        (true, [0.5, 0.0, 1.0], [0.5, 1.0, 0.0]),
        (false, [0.5, 1.0, 0.0], [0.5, 0.0, 1.0]),
    ] {
        let b = Builder::new("ties");
        let x = b.input("a", DType::F64, &[3]);
        let y = b.input("b", DType::F64, &[3]);
        let m = if is_max { x.max(y) } else { x.min(y) };
        b.output("loss", m.sum(&[0], false));
        let g = b.build().expect("test graph builds");
        let at = [
            ("a", t64(&[3], &[1.0, 2.0, 3.0])),
            ("b", t64(&[3], &[1.0, 5.0, 0.0])),
        ];
        let got = grads(&g, &["a", "b"], &at);
        assert_eq!(got[0], want_a.to_vec(), "max={is_max}");
        assert_eq!(got[1], want_b.to_vec(), "max={is_max}");
    }
}

#[test]
fn reduce_max_splits_ties_evenly() {
    let g = with_x(&[2, 3], |x| x.max_over(&[1], false));
    let x = t64(&[2, 3], &[1.0, 3.0, 3.0, 2.0, 2.0, 2.0]);
    let got = grads(&g, &["x"], &[("x", x)]);
    // weighted_sum's weights for the two rows.
    let (w0, w1) = (crate::common::weight(0), crate::common::weight(1));
    let third = w1 / 3.0;
    assert_eq!(got[0], vec![0.0, w0 / 2.0, w0 / 2.0, third, third, third]);
}

#[test]
fn abs_has_zero_derivative_at_zero() {
    let g = with_x(&[3], |x| x.abs());
    let got = grads(&g, &["x"], &[("x", t64(&[3], &[0.0, -1.0, 2.0]))]);
    let w = crate::common::weight;
    assert_eq!(got[0], vec![0.0, -w(1), w(2)]);
}

/// A cast to bf16 passes the cotangent back rounded to bf16 and then
/// widened: with a bf16-exact cotangent the gradient is exact.
#[test]
fn cast_through_bf16_passes_the_cotangent_back() {
    let b = Builder::new("bf16");
    let x = b.input("x", DType::F64, &[3]);
    let w = b.constant(&[0.5, -1.25, 3.0], DType::F64, &[3]);
    b.output(
        "loss",
        (x.cast(DType::Bf16).cast(DType::F64) * w).sum(&[0], false),
    );
    let g = b.build().expect("test graph builds");
    let got = grads(&g, &["x"], &[("x", t64(&[3], &[0.1, 0.2, 0.3]))]);
    assert_eq!(got[0], vec![0.5, -1.25, 3.0]);
}

/// A whole bf16 graph differentiates to bf16 gradients close to the f64
/// ones (bf16 keeps 8 significant bits: relative error about 1e-2).
#[test]
fn bf16_graph_gradients_track_f64() {
    let build = |d: DType| {
        let b = Builder::new("bf16_mlp");
        let x = b.input("x", d, &[2, 3]);
        let w = b.param("w", d, &[3, 2]);
        let y = x.matmul(w).tanh() * x.slice(&[0, 0], &[2, 2]);
        b.output("loss", y.sum(&[0, 1], false));
        b.build().expect("test graph builds")
    };
    let xv = [0.5, -0.25, 1.0, 0.75, 0.125, -1.5];
    let wv = [0.25, -0.5, 1.0, 0.5, -0.75, 0.125];
    let at = |d: DType| {
        let t = |s: &[usize], v: &[f64]| {
            birkhoff_ir::Tensor::from_f64(birkhoff_ir::TensorType::new(d, s), v).unwrap()
        };
        [("x", t(&[2, 3], &xv)), ("w", t(&[3, 2], &wv))]
    };
    let want = grads(&build(DType::F64), &["x", "w"], &at(DType::F64));
    let got = grads(&build(DType::Bf16), &["x", "w"], &at(DType::Bf16));
    for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
        assert!((g - w).abs() <= 2e-2 * (1.0 + w.abs()), "{g} vs {w}");
    }
}
