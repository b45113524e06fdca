//! `mhc_post_grad` compiled for the CPU against the f64 reference
//! interpreter: the op alone (f32 and bf16, random `T`, `n` and `C`), and
//! the gradient graph of a post-mix loss, which `grad` builds around it.
//!
//! Tolerances are `docs/design.md` §3's reduction row of the output's dtype
//! (`birkhoff::compare::compare`): every result is one dot product, over
//! the `n` streams (`d_f`, `d_x`) or over `C` (`d_post`, `d_comb`).

use std::collections::BTreeMap;

use birkhoff::autodiff::grad;
use birkhoff::compare::{check_cpu, compare_cpu, random_inputs};
use birkhoff::dsl::zoo::Inits;
use birkhoff::dsl::{Init, Rng, random_tensor};
use birkhoff::ir::{DType, Graph, InputKind, Op, Tensor, TensorType};
use birkhoff_testkit::proptest_cases;
use proptest::prelude::*;
use proptest::sample::select;

/// The operand names of `mhc_post`, in order.
const OPERANDS: [&str; 4] = ["f", "x", "post", "comb"];

/// `f, x, post, comb, dy` of `dtype` and `(T, n, C)` as graph inputs.
fn inputs(
    g: &mut Graph,
    dtype: DType,
    (t, n, c): (usize, usize, usize),
) -> Vec<birkhoff::ir::ValueId> {
    let shapes: [&[usize]; 5] = [&[t, c], &[t, n, c], &[t, n], &[t, n, n], &[t, n, c]];
    OPERANDS
        .iter()
        .chain(&["dy"])
        .zip(shapes)
        .map(|(name, s)| g.add_input(*name, InputKind::Data, TensorType::new(dtype, s)))
        .collect()
}

/// `mhc_post_grad(f, x, post, comb, dy)`, one output per cotangent.
fn op_graph(dtype: DType, dims: (usize, usize, usize)) -> Graph {
    let mut g = Graph::new("mhc_post_grad");
    let ins = inputs(&mut g, dtype, dims);
    let d = g.add(Op::MhcPostGrad, &ins).expect("well-typed");
    for (i, name) in OPERANDS.iter().enumerate() {
        let e = g.add(Op::Get { index: i }, &[d]).expect("a tuple element");
        g.add_output(format!("d_{name}"), e);
    }
    g
}

fn inits() -> Inits {
    let uniform = |low, high| Init::Uniform { low, high };
    OPERANDS
        .iter()
        .map(|n| (n.to_string(), uniform(-2.0, 2.0)))
        .chain([("dy".to_string(), uniform(-1.0, 1.0))])
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(12)))]

    #[test]
    fn mhc_post_grad_on_cpu_matches_the_interpreter(
        dtype in select(vec![DType::F32, DType::Bf16]),
        t in 1usize..=4,
        n in 1usize..=5,
        c in 1usize..=70,
        seed in any::<u64>(),
    ) {
        let g = op_graph(dtype, (t, n, c));
        check_cpu(&g, &random_inputs(&g, &inits(), seed), Some(4))?;
    }
}

/// The gradient of `Σ mhc_post(f, x, post, comb) ⊙ w` with respect to all
/// four operands, as `grad` builds it (with `mhc_post_grad`), compiled.
#[test]
fn post_mix_loss_gradient_compiles_and_matches() {
    let dims = (5, 4, 33);
    let mut g = Graph::new("loss");
    let ins = inputs(&mut g, DType::F32, dims);
    let out = g.add(Op::MhcPost, &ins[..4]).unwrap();
    let p = g.add(Op::Mul, &[out, ins[4]]).unwrap();
    let l = g
        .add(
            Op::ReduceSum {
                axes: vec![0, 1, 2],
                keepdims: false,
            },
            &[p],
        )
        .unwrap();
    g.add_output("loss", l);
    let dg = grad(&g, "loss", &OPERANDS).unwrap();
    assert!(dg.nodes().iter().any(|n| n.op == Op::MhcPostGrad), "{dg}");
    let root = Rng::new(11);
    let feed: BTreeMap<String, Tensor> = dg
        .inputs()
        .iter()
        .map(|&v| {
            let n = dg.input_name(v).unwrap();
            let init = Init::Normal {
                mean: 0.0,
                std: 1.0,
            };
            (
                n.to_string(),
                random_tensor(dg.ty(v), &init, &mut root.fork(n)),
            )
        })
        .collect();
    for e in compare_cpu(&dg, &feed).unwrap() {
        assert!(e.within, "{e}\n{dg}");
    }
}
