//! The pre-mix's fused backward (`mhc_pre_grad`, the rule `grad` uses for
//! `mhc_pre`) against autodiff through the expanded primitives.
//!
//! The oracle: `mhc_pre(x, fn, scale, base)` expanded into primitives
//! (`birkhoff_opt::expand`: the projection, the RMS factor, the gates and
//! the unrolled Sinkhorn rounds), the loss
//! `Σ li ⊙ w_li + Σ post ⊙ w_post + Σ comb ⊙ w_comb` (each term present
//! or not) and `grad` of it with
//! respect to the four operands — the primitive rules. Compared with
//! `mhc_pre_grad(x, fn, scale, base, w_li, w_post, w_comb)` in the f64
//! interpreter, and with `grad` of the unexpanded graph (which emits
//! `mhc_pre_grad`, with zero cotangents for the missing terms), within
//! `1e-9` relative to each cotangent's largest magnitude: the sums run in
//! different orders, so they agree to rounding only.

use std::collections::BTreeMap;

use birkhoff_autodiff::grad;
use birkhoff_ir::{
    DType, FloatAttr, Graph, InputKind, Op, PreMixSpec, SinkhornSpec, SinkhornVariant, Tensor,
    TensorType, ValueId,
};
use proptest::prelude::*;

use crate::common::{config, run};

/// Largest relative error allowed against the expanded oracle.
const TOL: f64 = 1e-9;

/// The operand names of `mhc_pre`, in order.
const OPERANDS: [&str; 4] = ["x", "fn", "scale", "base"];

/// The cotangent (weight) names, one per result.
const WEIGHTS: [&str; 3] = ["w_li", "w_post", "w_comb"];

fn types((t, n, c): (usize, usize, usize)) -> [TensorType; 7] {
    let ty = |s: &[usize]| TensorType::new(DType::F64, s);
    let m = n * (n + 2);
    [
        ty(&[t, n, c]),
        ty(&[m, n * c]),
        ty(&[3]),
        ty(&[m]),
        ty(&[t, c]),
        ty(&[t, n]),
        ty(&[t, n, n]),
    ]
}

fn inputs(g: &mut Graph, dims: (usize, usize, usize)) -> Vec<ValueId> {
    OPERANDS
        .iter()
        .chain(&WEIGHTS)
        .zip(types(dims))
        .map(|(name, ty)| g.add_input(*name, InputKind::Data, ty))
        .collect()
}

fn pre_attrs(spec: SinkhornSpec) -> PreMixSpec {
    PreMixSpec {
        norm_eps: FloatAttr(1e-6),
        pre_eps: FloatAttr(0.25),
        post_mult: FloatAttr(2.0),
        sinkhorn: spec,
    }
}

fn pre_op(spec: SinkhornSpec) -> Op {
    Op::MhcPre(pre_attrs(spec))
}

fn pre_grad_op(spec: SinkhornSpec) -> Op {
    Op::MhcPreGrad(pre_attrs(spec))
}

/// The loss over the results in `terms`, expanded into primitives when
/// `expanded`.
fn loss_graph(
    dims: (usize, usize, usize),
    spec: SinkhornSpec,
    terms: [bool; 3],
    expanded: bool,
) -> Graph {
    let mut g = Graph::new("pre");
    let ins = inputs(&mut g, dims);
    let tuple = g.add(pre_op(spec), &ins[..4]).unwrap();
    let mut total = None;
    for (i, &on) in terms.iter().enumerate() {
        if !on {
            continue;
        }
        let r = g.add(Op::Get { index: i }, &[tuple]).unwrap();
        let p = g.add(Op::Mul, &[r, ins[4 + i]]).unwrap();
        let rank = g.ty(p).rank();
        let s = g
            .add(
                Op::ReduceSum {
                    axes: (0..rank).collect(),
                    keepdims: false,
                },
                &[p],
            )
            .unwrap();
        total = Some(match total {
            None => s,
            Some(t) => g.add(Op::Add, &[t, s]).unwrap(),
        });
    }
    g.add_output("loss", total.expect("at least one term"));
    if expanded {
        birkhoff_opt::expand(&g).unwrap()
    } else {
        g
    }
}

/// `mhc_pre_grad` with one output per cotangent; weights of results not
/// in `terms` are replaced by zeros.
fn fused_graph(dims: (usize, usize, usize), spec: SinkhornSpec, terms: [bool; 3]) -> Graph {
    let mut g = Graph::new("pre_grad");
    let mut ins = inputs(&mut g, dims);
    for (i, &on) in terms.iter().enumerate() {
        if !on {
            let ty = g.ty(ins[4 + i]).clone();
            ins[4 + i] = g
                .add(Op::Const(birkhoff_ir::Literal::splat(ty, 0.0)), &[])
                .unwrap();
        }
    }
    let d = g.add(pre_grad_op(spec), &ins).unwrap();
    for (i, name) in OPERANDS.iter().enumerate() {
        let e = g.add(Op::Get { index: i }, &[d]).unwrap();
        g.add_output(format!("d_{name}"), e);
    }
    g
}

fn worst_relative(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-300);
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0.0, f64::max)
}

type Case = (
    (usize, usize, usize),
    SinkhornSpec,
    [bool; 3],
    Vec<Vec<f64>>,
);

fn case() -> impl Strategy<Value = Case> {
    let spec = (
        prop_oneof![
            Just(SinkhornVariant::Paper),
            Just(SinkhornVariant::TileKernels)
        ],
        1usize..=4,
    )
        .prop_map(|(variant, iters)| SinkhornSpec {
            variant,
            iters,
            eps: FloatAttr(variant.default_eps()),
        });
    let terms = prop_oneof![
        Just([true, true, true]),
        Just([true, false, false]),
        Just([false, true, false]),
        Just([false, false, true]),
        Just([true, false, true]),
    ];
    (1usize..=3, 1usize..=4, 1usize..=5, spec, terms).prop_flat_map(|(t, n, c, spec, terms)| {
        let dims = (t, n, c);
        let values: Vec<_> = types(dims)
            .iter()
            .map(|ty| proptest::collection::vec(-1.5f64..1.5, ty.num_elements()))
            .collect();
        (Just(dims), Just(spec), Just(terms), values)
    })
}

fn feed(dims: (usize, usize, usize), values: &[Vec<f64>]) -> BTreeMap<String, Tensor> {
    OPERANDS
        .iter()
        .chain(&WEIGHTS)
        .zip(types(dims))
        .zip(values)
        .map(|((n, ty), v)| (n.to_string(), Tensor::from_f64(ty, v).unwrap()))
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fused_backward_equals_autodiff_through_the_expansion(
        (dims, spec, terms, values) in case()
    ) {
        let feed = feed(dims, &values);
        let oracle = grad(&loss_graph(dims, spec, terms, true), "loss", &OPERANDS).unwrap();
        prop_assert!(
            !oracle.nodes().iter().any(|n| matches!(n.op, Op::MhcPreGrad(_))),
            "the oracle must differentiate the primitives"
        );
        let want = run(&oracle, &feed);
        let got = run(&fused_graph(dims, spec, terms), &feed);
        // grad of the unexpanded graph emits one mhc_pre_grad.
        let via = grad(&loss_graph(dims, spec, terms, false), "loss", &OPERANDS).unwrap();
        let count = via
            .nodes()
            .iter()
            .filter(|n| matches!(n.op, Op::MhcPreGrad(_)))
            .count();
        prop_assert_eq!(count, 1, "{}", via);
        let via = run(&via, &feed);
        for (k, name) in OPERANDS.iter().enumerate() {
            let (wn, w) = &want[k + 1];
            let (gn, g) = &got[k];
            let (vn, v) = &via[k + 1];
            prop_assert_eq!(wn, gn);
            prop_assert_eq!(wn, vn);
            let (w, g, v) = (w.to_f64_vec(), g.to_f64_vec(), v.to_f64_vec());
            let err = worst_relative(&g, &w);
            prop_assert!(
                err <= TOL,
                "d_{name} at {dims:?} {spec:?} {terms:?}: relative error {err:e}\n got {g:?}\nwant {w:?}"
            );
            let err = worst_relative(&v, &w);
            prop_assert!(
                err <= TOL,
                "grad d_{name} at {dims:?} {spec:?} {terms:?}: relative error {err:e}"
            );
        }
    }
}
