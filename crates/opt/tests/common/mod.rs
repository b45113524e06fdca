//! Helpers shared by the optimizer's integration tests: running the
//! optimizer, counting ops, drawing inputs and comparing the optimized
//! graph with the original in the reference interpreter.

#![allow(
    dead_code,
    reason = "each test file uses a different subset of these helpers"
)]

use std::collections::BTreeMap;

use birkhoff_dsl::zoo::Inits;
use birkhoff_dsl::{Init, Rng, random_tensor};
use birkhoff_ir::{Graph, InterpOptions, Op, Precision, Tensor, interpret, verify};
use birkhoff_opt::{Optimized, optimize};
use birkhoff_testkit::{Tolerance, close};

/// Relative error allowed between the optimized and the original graph in
/// the f64 interpreter.
pub const RTOL: f64 = 1e-9;

/// Absolute floor under [`RTOL`]: elements whose reference value is near
/// zero (a sum of O(1) terms that cancels) may differ by this much. It is
/// about 10^4 ulps of 1.0, far below any value the models produce on
/// purpose and far above f64 rounding noise after a few dozen roundings.
pub const ATOL: f64 = 1e-12;

/// The tolerance of every equivalence check in these tests: fusion and
/// recognition reorder a handful of roundings (a per-row scale moved across
/// a matrix product, a mean taken as `sum / N` instead of `sum · (1/N)`), so
/// f64 results agree to about 1e-15 relative; 1e-9 leaves room for the
/// amplification through Sinkhorn rounds and deep stacks.
pub fn tolerance() -> Tolerance {
    Tolerance::new(ATOL, RTOL)
}

/// Runs the whole pipeline; panics with the error if it fails.
#[track_caller]
pub fn run(g: &Graph) -> Optimized {
    match optimize(g, |_| false) {
        Ok(o) => o,
        Err(e) => panic!("optimizing @{} failed: {e}\n{g}", g.name()),
    }
}

/// How many nodes of `g` have the op mnemonic `name`.
pub fn count(g: &Graph, name: &str) -> usize {
    g.nodes().iter().filter(|n| n.op.mnemonic() == name).count()
}

/// The op mnemonics of `g` other than inputs, constants, views and `get`
/// (what actually runs as kernels), with their counts.
pub fn kernels(g: &Graph) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in g.nodes() {
        if !birkhoff_opt::cost::is_free(&n.op) {
            *m.entry(n.op.mnemonic().to_string()).or_insert(0) += 1;
        }
    }
    m
}

/// The `op` of every node of `g` that is a Sinkhorn projection.
pub fn sinkhorn_specs(g: &Graph) -> Vec<birkhoff_ir::SinkhornSpec> {
    g.nodes()
        .iter()
        .filter_map(|n| match n.op {
            Op::Sinkhorn(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// A `BTreeMap` literal for expected counts.
pub fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

/// One tensor per input of `g`, each drawn from its own stream of `seed`
/// (forked by input name) with the input's entry of `inits`, or the
/// standard normal when it has none.
pub fn draw_inputs(g: &Graph, inits: &Inits, seed: u64) -> BTreeMap<String, Tensor> {
    let root = Rng::new(seed);
    g.inputs()
        .iter()
        .map(|&v| {
            let name = g.input_name(v).expect("inputs have names").to_string();
            let init = inits.get(&name).cloned().unwrap_or_default();
            let t = random_tensor(g.ty(v), &init, &mut root.fork(&name));
            (name, t)
        })
        .collect()
}

/// Standard-normal inits for every input except those given.
pub fn inits(pairs: &[(&str, Init)]) -> Inits {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Runs `g` in the f64 reference interpreter.
#[track_caller]
pub fn eval(g: &Graph, inputs: &BTreeMap<String, Tensor>) -> Vec<(String, Tensor)> {
    let opts = InterpOptions {
        precision: Precision::F64,
        ..InterpOptions::default()
    };
    match interpret(g, inputs, &opts) {
        Ok(out) => out,
        Err(e) => panic!("interpreting @{} failed: {e}", g.name()),
    }
}

/// Compares `optimized` with `original` on `inputs`, output by output, in
/// the f64 interpreter within [`tolerance`]. Every reference value must be
/// finite (so that the comparison says something).
pub fn agree(
    original: &Graph,
    optimized: &Graph,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<(), String> {
    let want = eval(original, inputs);
    let got = eval(optimized, inputs);
    if want.len() != got.len() {
        return Err(format!("{} outputs, want {}", got.len(), want.len()));
    }
    for ((wn, w), (gn, g)) in want.iter().zip(&got) {
        if wn != gn {
            return Err(format!("output '{gn}' where '{wn}' was expected"));
        }
        if let Some((i, v)) = w.first_non_finite() {
            return Err(format!("reference output '{wn}' has {v} at flat index {i}"));
        }
        close(g, w, tolerance()).map_err(|e| format!("output '{wn}': {e}"))?;
    }
    Ok(())
}

/// [`agree`], panicking with the message and both graphs.
#[track_caller]
pub fn assert_agree(original: &Graph, optimized: &Graph, inputs: &BTreeMap<String, Tensor>) {
    if let Err(e) = agree(original, optimized, inputs) {
        panic!("optimized graph disagrees with the original: {e}\n{original}\n{optimized}");
    }
}

/// Checks that `optimized` verifies and has `original`'s signature: the
/// same inputs (names, kinds, types, order) and outputs (names, types,
/// order).
pub fn same_signature(original: &Graph, optimized: &Graph) -> Result<(), String> {
    verify(optimized).map_err(|e| format!("optimized graph does not verify: {e}"))?;
    let ins = |g: &Graph| -> Vec<Op> { g.inputs().iter().map(|&v| g.node(v).op.clone()).collect() };
    if ins(original) != ins(optimized) {
        return Err(format!(
            "inputs differ: {:?} vs {:?}",
            ins(original),
            ins(optimized)
        ));
    }
    let outs = |g: &Graph| -> Vec<(String, birkhoff_ir::TensorType)> {
        g.outputs()
            .iter()
            .map(|o| (o.name.clone(), g.ty(o.value).clone()))
            .collect()
    };
    if outs(original) != outs(optimized) {
        return Err(format!(
            "outputs differ: {:?} vs {:?}",
            outs(original),
            outs(optimized)
        ));
    }
    Ok(())
}
