//! The post-mix's fused backward (`mhc_post_grad`, the rule `grad` uses
//! for `mhc_post`) against autodiff through the expanded primitives.
//!
//! The oracle: `mhc_post(f, x, post, comb)` expanded into primitives
//! (`birkhoff_opt::expand`: a transpose, a batched `matmul`, a broadcast
//! product and an add), the loss `Σ out ⊙ w`, and `grad` of that loss with
//! respect to all four operands — the primitive rules. Each of its four
//! cotangents must equal the matching element of
//! `mhc_post_grad(f, x, post, comb, w)` in the f64 interpreter within
//! `1e-12` relative (to that cotangent's largest magnitude): both sum the
//! same products in the same order, so they agree to rounding.

use std::collections::BTreeMap;

use birkhoff_autodiff::grad;
use birkhoff_ir::{DType, Graph, InputKind, Op, Tensor, TensorType, ValueId};
use proptest::prelude::*;

use crate::common::{config, run};

/// Largest relative error allowed against the expanded oracle.
const TOL: f64 = 1e-12;

/// The operand names of `mhc_post`, in order.
const OPERANDS: [&str; 4] = ["f", "x", "post", "comb"];

/// The types of `f [T,C]`, `x [T,n,C]`, `post [T,n]`, `comb [T,n,n]` and
/// the cotangent `w [T,n,C]`.
fn types((t, n, c): (usize, usize, usize)) -> [TensorType; 5] {
    let ty = |s: &[usize]| TensorType::new(DType::F64, s);
    [
        ty(&[t, c]),
        ty(&[t, n, c]),
        ty(&[t, n]),
        ty(&[t, n, n]),
        ty(&[t, n, c]),
    ]
}

/// Inputs `f, x, post, comb, w` of `dims` in a new graph.
fn inputs(g: &mut Graph, dims: (usize, usize, usize)) -> Vec<ValueId> {
    OPERANDS
        .iter()
        .chain(&["w"])
        .zip(types(dims))
        .map(|(name, ty)| g.add_input(*name, InputKind::Data, ty))
        .collect()
}

/// `Σ mhc_post(f, x, post, comb) ⊙ w`, expanded into primitives when
/// `expanded`.
fn loss_graph(dims: (usize, usize, usize), expanded: bool) -> Graph {
    let mut g = Graph::new("post");
    let ins = inputs(&mut g, dims);
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
    if expanded {
        birkhoff_opt::expand(&g).unwrap()
    } else {
        g
    }
}

/// `mhc_post_grad(f, x, post, comb, w)` with one output per cotangent.
fn fused_graph(dims: (usize, usize, usize)) -> Graph {
    let mut g = Graph::new("post_grad");
    let ins = inputs(&mut g, dims);
    let d = g.add(Op::MhcPostGrad, &ins).unwrap();
    for (i, name) in OPERANDS.iter().enumerate() {
        let e = g.add(Op::Get { index: i }, &[d]).unwrap();
        g.add_output(format!("d_{name}"), e);
    }
    g
}

/// The worst `|got − want|` relative to `max|want|` (at least 1e-300, so
/// an all-zero cotangent must be matched exactly).
fn worst_relative(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-300);
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0.0, f64::max)
}

/// `(T, n, C)` and values for `f, x, post, comb, w`, in that order.
fn case() -> impl Strategy<Value = ((usize, usize, usize), Vec<Vec<f64>>)> {
    (1usize..=3, 1usize..=5, 1usize..=7).prop_flat_map(|dims| {
        let values: Vec<_> = types(dims)
            .iter()
            .map(|t| proptest::collection::vec(-2.0f64..2.0, t.num_elements()))
            .collect();
        (Just(dims), values)
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fused_backward_equals_autodiff_through_the_expansion((dims, values) in case()) {
        let feed: BTreeMap<String, Tensor> = OPERANDS
            .iter()
            .chain(&["w"])
            .zip(types(dims))
            .zip(&values)
            .map(|((n, ty), v)| (n.to_string(), Tensor::from_f64(ty, v).unwrap()))
            .collect();
        let oracle = grad(&loss_graph(dims, true), "loss", &OPERANDS).unwrap();
        prop_assert!(
            !oracle.nodes().iter().any(|n| n.op == Op::MhcPostGrad),
            "the oracle must differentiate the primitives"
        );
        let want = run(&oracle, &feed);
        let got = run(&fused_graph(dims), &feed);
        for (k, name) in OPERANDS.iter().enumerate() {
            // The oracle's outputs are the loss, then d_f, d_x, d_post, d_comb.
            let (wn, w) = &want[k + 1];
            let (gn, g) = &got[k];
            prop_assert_eq!(wn, gn);
            let (w, g) = (w.to_f64_vec(), g.to_f64_vec());
            let err = worst_relative(&g, &w);
            prop_assert!(
                err <= TOL,
                "d_{name} at {dims:?}: relative error {err:e}\n got {g:?}\nwant {w:?}"
            );
        }
    }
}

/// `grad` differentiates `mhc_post` with one `mhc_post_grad` node and
/// takes from it only the cotangents it needs: one `get` per requested
/// operand, none for the others.
#[test]
fn grad_emits_one_fused_node_and_gets_only_needed_cotangents() {
    let dims = (2, 3, 4);
    for wrt in [
        &["x"][..],
        &["f", "comb"],
        &["post"],
        &["f", "x", "post", "comb"],
    ] {
        let dg = grad(&loss_graph(dims, false), "loss", wrt).unwrap();
        let fused: Vec<ValueId> = dg
            .values()
            .filter(|&v| dg.node(v).op == Op::MhcPostGrad)
            .collect();
        assert_eq!(fused.len(), 1, "{wrt:?}\n{dg}");
        let mut taken: Vec<usize> = dg
            .values()
            .filter_map(|v| match dg.node(v).op {
                Op::Get { index } if dg.node(v).args[0] == fused[0] => Some(index),
                _ => None,
            })
            .collect();
        taken.sort_unstable();
        let want: Vec<usize> = wrt
            .iter()
            .map(|w| OPERANDS.iter().position(|o| o == w).unwrap())
            .collect();
        assert_eq!(taken, want, "{wrt:?}\n{dg}");
        // No primitive backward of the post-mix is left beside it.
        assert!(
            !dg.nodes().iter().any(|n| n.op == Op::MatMul),
            "{wrt:?}\n{dg}"
        );
        // The forward stays one fused node as well.
        assert_eq!(
            dg.nodes().iter().filter(|n| n.op == Op::MhcPost).count(),
            1,
            "{dg}"
        );
    }
}

/// Every zoo model with an mHC or HC post-mix, optimized (so the post-mix
/// is a fused `mhc_post`), differentiates it with `mhc_post_grad`, and the
/// gradient graph optimizes again without losing it.
#[test]
fn fused_zoo_models_use_the_fused_post_mix_backward() {
    use birkhoff_dsl::zoo::{ModelArgs, build_model};
    for (name, iters) in [("mhc-block", Some(3)), ("hc-block", None)] {
        let args = ModelArgs {
            tokens: Some(2),
            streams: Some(3),
            hidden: Some(4),
            heads: Some(1),
            layers: Some(1),
            iters,
            dtype: Some(DType::F64),
            ..ModelArgs::default()
        };
        let model = build_model(name, &args).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut g = birkhoff_opt::optimize(&model.graph, |_| false)
            .unwrap()
            .graph;
        if !g.nodes().iter().any(|n| n.op == Op::MhcPost) {
            panic!("{name}: no fused mhc_post to differentiate\n{g}");
        }
        let out = g.outputs()[0].value;
        let axes: Vec<usize> = (0..g.ty(out).rank()).collect();
        let l = g
            .add(
                Op::ReduceSum {
                    axes,
                    keepdims: false,
                },
                &[out],
            )
            .unwrap();
        g.add_output("loss", l);
        let wrt: Vec<String> = g
            .inputs()
            .iter()
            .map(|&v| g.input_name(v).unwrap().to_string())
            .collect();
        let wrt: Vec<&str> = wrt.iter().map(String::as_str).collect();
        let dg = grad(&g, "loss", &wrt).unwrap();
        // One fused backward per post-mix (a block has two sublayers).
        let posts = g.nodes().iter().filter(|n| n.op == Op::MhcPost).count();
        let grads = dg
            .nodes()
            .iter()
            .filter(|n| n.op == Op::MhcPostGrad)
            .count();
        assert_eq!(grads, posts, "{name}\n{dg}");
        // Re-optimizing the gradient graph keeps each fused backward as
        // one node and changes no result.
        let opt = birkhoff_opt::optimize(&dg, |_| false).unwrap();
        assert_eq!(
            opt.report.sites.get("mhc_post_grad"),
            Some(&posts),
            "{name}: {:?}\n{}",
            opt.report.sites,
            opt.graph
        );
        let root = birkhoff_dsl::Rng::new(7);
        let init = birkhoff_dsl::Init::Normal {
            mean: 0.0,
            std: 1.0,
        };
        let feed: BTreeMap<String, Tensor> = dg
            .inputs()
            .iter()
            .map(|&v| {
                let n = dg.input_name(v).unwrap().to_string();
                let t = birkhoff_dsl::random_tensor(dg.ty(v), &init, &mut root.fork(&n));
                (n, t)
            })
            .collect();
        for ((out, a), (_, b)) in run(&dg, &feed).iter().zip(run(&opt.graph, &feed)) {
            for (x, y) in a.to_f64_vec().iter().zip(b.to_f64_vec()) {
                assert!(
                    (x - y).abs() <= 1e-9 * (1.0 + y.abs()),
                    "{name} {out}: {x} vs {y}"
                );
            }
        }
    }
}
