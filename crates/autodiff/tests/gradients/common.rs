//! Finite-difference gradient checking.
//!
//! `check` differentiates a graph, checks the result verifies and survives
//! `parse(print(g))`, runs it in the f64 reference interpreter and compares
//! every gradient element with the central difference
//! `(L(x + h) - L(x - h)) / 2h` of the original graph's loss, also in f64.
//! With `h = 1e-5` and inputs of order 1 the truncation error is about
//! `h² · L''' ≈ 1e-10` and the rounding error about `ε · L / h ≈ 1e-10`, so
//! `|ad - fd| <= 1e-6 · (1 + |fd|)` leaves a wide margin while still
//! catching any wrong rule (a wrong factor or sign is an O(1) error).

use std::collections::BTreeMap;

use birkhoff_autodiff::grad;
use birkhoff_dsl::{Builder, Var};
use birkhoff_ir::{
    DType, Graph, InterpOptions, Tensor, TensorType, interpret, parse_graph, verify,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 32;

/// The proptest configuration of every property here.
pub fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = DEFAULT_CASES;
    }
    c
}

/// Step and tolerance of a finite-difference check.
#[derive(Clone, Copy, Debug)]
pub struct Fd {
    /// Perturbation of each input element.
    pub h: f64,
    /// Allowed `|ad - fd| / (1 + |fd|)`.
    pub tol: f64,
}

/// The default check (see the module comment).
pub const FD: Fd = Fd { h: 1e-5, tol: 1e-6 };

/// An f64 tensor of `shape`.
pub fn t64(shape: &[usize], values: &[f64]) -> Tensor {
    Tensor::from_f64(TensorType::new(DType::F64, shape), values).expect("count matches shape")
}

/// Named inputs for the interpreter.
pub fn inputs(items: &[(&str, Tensor)]) -> BTreeMap<String, Tensor> {
    items
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect()
}

/// Runs `g` in the f64 reference interpreter.
pub fn run(g: &Graph, inputs: &BTreeMap<String, Tensor>) -> Vec<(String, Tensor)> {
    let opts = InterpOptions {
        f64_outputs: true,
        ..InterpOptions::default()
    };
    interpret(g, inputs, &opts).unwrap_or_else(|e| panic!("{e}\n{g}"))
}

/// A fixed, varied weight for element `i`, in [-1, 1].
pub fn weight(i: usize) -> f64 {
    ((i * 37 + 11) % 17) as f64 / 8.0 - 1.0
}

/// `Σ y ⊙ w` over every axis of `y`, with `w` from [`weight`]: every
/// element of `y` gets its own cotangent.
pub fn weighted_sum<'b>(b: &'b Builder, y: Var<'b>) -> Var<'b> {
    let shape = y.shape();
    let n: usize = shape.iter().product();
    let w: Vec<f64> = (0..n).map(weight).collect();
    let w = b.constant(&w, y.dtype(), &shape);
    let all: Vec<usize> = (0..shape.len()).collect();
    if all.is_empty() {
        y * w
    } else {
        (y * w).sum(&all, false)
    }
}

/// The gradient graph of `g`, checked to verify and to round-trip through
/// its text form.
pub fn grad_checked(g: &Graph, loss: &str, wrt: &[&str]) -> Graph {
    let dg = grad(g, loss, wrt).unwrap_or_else(|e| panic!("{e}\n{g}"));
    if let Err(e) = verify(&dg) {
        panic!("{e}\n{dg}");
    }
    let text = dg.to_string();
    let back = parse_graph(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back, dg, "parse(print(g)) != g");
    assert_eq!(dg.inputs().len(), g.inputs().len());
    for (a, b) in dg.inputs().iter().zip(g.inputs()) {
        assert_eq!(dg.node(*a), g.node(*b));
    }
    assert_eq!(dg.outputs()[0].name, loss);
    for (o, name) in dg.outputs()[1..].iter().zip(wrt) {
        assert_eq!(o.name, format!("d_{name}"));
        let input = g.input_by_name(name).expect("wrt is an input");
        assert_eq!(dg.ty(o.value), g.ty(input));
    }
    dg
}

/// Checks every gradient of `loss` with respect to `wrt` against central
/// finite differences at `at`.
pub fn check(
    g: &Graph,
    loss: &str,
    wrt: &[&str],
    at: &BTreeMap<String, Tensor>,
    fd: Fd,
) -> Result<(), TestCaseError> {
    let dg = grad_checked(g, loss, wrt);
    let got = run(&dg, at);
    let forward = loss_at(g, loss, at);
    prop_assert!(
        (got[0].1.to_f64_vec()[0] - forward).abs() <= 1e-12 * (1.0 + forward.abs()),
        "loss differs: {} vs {forward}",
        got[0].1.to_f64_vec()[0]
    );
    for (k, name) in wrt.iter().enumerate() {
        let ad = got[k + 1].1.to_f64_vec();
        let x = &at[*name];
        let xs = x.to_f64_vec();
        for j in 0..xs.len() {
            let mut probe = at.clone();
            let mut plus = xs.clone();
            plus[j] += fd.h;
            probe.insert(
                name.to_string(),
                Tensor::from_f64(x.ty().clone(), &plus).unwrap(),
            );
            let lp = loss_at(g, loss, &probe);
            let mut minus = xs.clone();
            minus[j] -= fd.h;
            probe.insert(
                name.to_string(),
                Tensor::from_f64(x.ty().clone(), &minus).unwrap(),
            );
            let lm = loss_at(g, loss, &probe);
            let num = (lp - lm) / (2.0 * fd.h);
            prop_assert!(
                (ad[j] - num).abs() <= fd.tol * (1.0 + num.abs()),
                "d_{name}[{j}]: autodiff {} vs finite difference {num}\n{g}\n{dg}",
                ad[j]
            );
        }
    }
    Ok(())
}

/// The loss of `g` at `at`.
pub fn loss_at(g: &Graph, loss: &str, at: &BTreeMap<String, Tensor>) -> f64 {
    run(g, at)
        .into_iter()
        .find(|(n, _)| n == loss)
        .expect("loss is an output")
        .1
        .to_f64_vec()[0]
}

/// Shapes of rank 1 to 3 with dimensions 1 to 3.
pub fn small_shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=3, 1..=3)
}

/// `n` values in `lo..hi`.
pub fn values(n: usize, lo: f64, hi: f64) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(lo..hi, n)
}

/// `n` values with magnitude in `lo..hi` and either sign (away from 0).
pub fn signed(n: usize, lo: f64, hi: f64) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(
        (lo..hi, any::<bool>()).prop_map(|(m, s)| if s { m } else { -m }),
        n,
    )
}

/// A shape and `count` value vectors for it, each drawn by `vals`.
pub fn shaped<S, F>(count: usize, vals: F) -> impl Strategy<Value = (Vec<usize>, Vec<Vec<f64>>)>
where
    S: Strategy<Value = Vec<f64>>,
    F: Fn(usize) -> S + Clone,
{
    small_shape().prop_flat_map(move |shape| {
        let n = shape.iter().product();
        let v = vals.clone();
        (Just(shape), prop::collection::vec(v(n), count..=count))
    })
}
