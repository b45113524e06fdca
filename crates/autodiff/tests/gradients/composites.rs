//! Whole models written in primitive ops: gradients of every parameter
//! against finite differences.

use birkhoff_dsl::{Builder, nn};
use birkhoff_ir::{DType, Graph};
use proptest::prelude::*;

use crate::common::{FD, check, config, grad_checked, inputs, run, t64, values};

const T: usize = 4;
const D_IN: usize = 6;
const HIDDEN: usize = 5;
const CLASSES: usize = 3;

/// One-hot labels for `T` tokens.
fn one_hot() -> Vec<f64> {
    (0..T * CLASSES)
        .map(|i| f64::from(u8::from(i % CLASSES == (i / CLASSES) % CLASSES)))
        .collect()
}

/// `x → linear → RMSNorm(γ) → SiLU → linear → softmax → cross-entropy`,
/// with the loss averaged over tokens. `log_softmax` picks the stable form
/// `z - max - log Σ exp(z - max)` instead of `log(softmax(z))`.
fn mlp(log_softmax: bool) -> Graph {
    let b = Builder::new("mlp");
    let x = b.input("x", DType::F64, &[T, D_IN]);
    let w1 = b.param("w1", DType::F64, &[D_IN, HIDDEN]);
    let gamma = b.param("gamma", DType::F64, &[HIDDEN]);
    let w2 = b.param("w2", DType::F64, &[HIDDEN, CLASSES]);
    let h = nn::rms_norm(nn::linear(x, w1), Some(gamma), 1e-6);
    let logits = nn::silu(h).matmul(w2);
    let logp = if log_softmax {
        let z = logits - logits.max_over(&[1], true);
        z - z.exp().sum(&[1], true).log()
    } else {
        nn::softmax(logits, 1).log()
    };
    let labels = b.constant(&one_hot(), DType::F64, &[T, CLASSES]);
    let ce = -(labels * logp).sum(&[1], false).mean(&[0], false);
    b.output("loss", ce);
    b.output("logits", logits);
    b.build().expect("test graph builds")
}

proptest! {
    #![proptest_config({ let mut c = config(); c.cases = c.cases.min(8); c })]

    #[test]
    fn mlp_with_rms_norm_and_cross_entropy(
        stable in any::<bool>(),
        x in values(T * D_IN, -1.5, 1.5),
        w1 in values(D_IN * HIDDEN, -1.0, 1.0),
        gamma in values(HIDDEN, 0.5, 1.5),
        w2 in values(HIDDEN * CLASSES, -1.0, 1.0),
    ) {
        let g = mlp(stable);
        let at = inputs(&[
            ("x", t64(&[T, D_IN], &x)),
            ("w1", t64(&[D_IN, HIDDEN], &w1)),
            ("gamma", t64(&[HIDDEN], &gamma)),
            ("w2", t64(&[HIDDEN, CLASSES], &w2)),
        ]);
        check(&g, "loss", &["x", "w1", "gamma", "w2"], &at, FD)?;
    }

    /// A value used many times (`x` feeds five ops) accumulates every
    /// contribution.
    #[test]
    fn fan_out_accumulates(x in values(6, -1.0, 1.0)) {
        let b = Builder::new("fan_out");
        let xv = b.input("x", DType::F64, &[2, 3]);
        let y = xv * xv + xv.exp() * xv - xv.tanh().sum(&[1], true) + xv.transpose().transpose();
        b.output("loss", y.sum(&[0, 1], false));
        let g = b.build().expect("test graph builds");
        check(&g, "loss", &["x"], &inputs(&[("x", t64(&[2, 3], &x))]), FD)?;
    }
}

/// Cross-entropy of a softmax has the closed form gradient
/// `(softmax(z) - labels) / T` with respect to the logits.
#[test]
fn softmax_cross_entropy_matches_closed_form() {
    let b = Builder::new("ce");
    let z = b.input("z", DType::F64, &[T, CLASSES]);
    let labels = b.constant(&one_hot(), DType::F64, &[T, CLASSES]);
    let ce = -(labels * nn::softmax(z, 1).log())
        .sum(&[1], false)
        .mean(&[0], false);
    b.output("loss", ce);
    let g = b.build().expect("test graph builds");
    let zv: Vec<f64> = (0..T * CLASSES)
        .map(|i| (i as f64 * 0.7).cos() * 2.0)
        .collect();
    let dg = grad_checked(&g, "loss", &["z"]);
    let got = run(&dg, &inputs(&[("z", t64(&[T, CLASSES], &zv))]))[1]
        .1
        .to_f64_vec();
    let labels = one_hot();
    for t in 0..T {
        let row = &zv[t * CLASSES..(t + 1) * CLASSES];
        let m = row.iter().copied().fold(f64::MIN, f64::max);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        for (c, v) in row.iter().enumerate() {
            let i = t * CLASSES + c;
            let want = ((v - m).exp() / s - labels[i]) / T as f64;
            assert!((got[i] - want).abs() < 1e-12, "{i}: {} vs {want}", got[i]);
        }
    }
}

/// Only what the loss and the gradients need stays: the `logits` output
/// is dropped, the inputs all remain.
#[test]
fn gradient_graph_keeps_inputs_and_drops_other_outputs() {
    let g = mlp(true);
    let dg = grad_checked(&g, "loss", &["w2"]);
    let names: Vec<&str> = dg.outputs().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["loss", "d_w2"]);
    assert_eq!(dg.inputs().len(), 4);
}
