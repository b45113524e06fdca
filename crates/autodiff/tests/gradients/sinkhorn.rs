//! Sinkhorn's recomputing backward (`sinkhorn_grad`, the rule `grad` uses
//! for `sinkhorn`) against autodiff through the unrolled primitive rounds.
//!
//! The oracle: `sinkhorn(x)` expanded into primitives
//! (`birkhoff_opt::expand`), the loss `Σ y ⊙ dy`, and `grad` of that loss
//! with respect to `x` — the primitive rules applied to every round. Its
//! `d_x` must equal `sinkhorn_grad(x, dy)` in the f64 interpreter within
//! `1e-9` relative (to the gradient's largest magnitude, see
//! `worst_relative`), both variants,
//! `n` 1–5, 1–25 rounds, 0–2 batch dimensions, eps 0, default or random.

use std::collections::BTreeMap;

use birkhoff_autodiff::grad;
use birkhoff_ir::{
    DType, FloatAttr, Graph, InputKind, Op, PreMixSpec, SinkhornSpec, SinkhornVariant, Tensor,
    TensorType,
};
use proptest::prelude::*;
use proptest::sample::select;

use crate::common::{config, run};

/// Largest relative error allowed against the unrolled oracle.
const TOL: f64 = 1e-9;

/// `Σ sinkhorn(x) ⊙ dy` over inputs `x`, `dy` of `ty`; the Sinkhorn
/// expanded into primitive rounds when `unrolled`.
fn loss_graph(ty: &TensorType, spec: SinkhornSpec, unrolled: bool) -> Graph {
    let mut g = Graph::new("sk");
    let x = g.add_input("x", InputKind::Data, ty.clone());
    let dy = g.add_input("dy", InputKind::Data, ty.clone());
    let y = g.add(Op::Sinkhorn(spec), &[x]).unwrap();
    let p = g.add(Op::Mul, &[y, dy]).unwrap();
    let axes: Vec<usize> = (0..ty.rank()).collect();
    let l = g
        .add(
            Op::ReduceSum {
                axes,
                keepdims: false,
            },
            &[p],
        )
        .unwrap();
    g.add_output("loss", l);
    if unrolled {
        birkhoff_opt::expand(&g).unwrap()
    } else {
        g
    }
}

/// `sinkhorn_grad(x, dy)` as a one-node graph.
fn fused_graph(ty: &TensorType, spec: SinkhornSpec) -> Graph {
    let mut g = Graph::new("skg");
    let x = g.add_input("x", InputKind::Data, ty.clone());
    let dy = g.add_input("dy", InputKind::Data, ty.clone());
    let d = g.add(Op::SinkhornGrad(spec), &[x, dy]).unwrap();
    g.add_output("dx", d);
    g
}

/// The worst `|got − want|` relative to the gradient's scale:
/// `max|want|`, but at least `1e-3·max|dy|`.
///
/// The floor is for `n = 1` with `eps > 0`, where every normalization is
/// `y = z / (z + eps)` and its derivative `eps / (z + eps)²` is a
/// cancellation `1 − y` that loses ~6 digits per round: after 25 rounds
/// the gradient is ~1e-110 and both computations of it keep only ~9
/// digits (they differ by 2e-9 relative). For `n ≥ 2` the gradient is of
/// the order of `dy` and the floor never applies.
fn worst_relative(got: &[f64], want: &[f64], dy: &[f64]) -> f64 {
    let max_abs = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let scale = max_abs(want).max(1e-3 * max_abs(dy)).max(1e-300);
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0.0, f64::max)
}

fn spec() -> impl Strategy<Value = SinkhornSpec> {
    (
        select(vec![SinkhornVariant::Paper, SinkhornVariant::TileKernels]),
        1usize..=25,
        prop_oneof![Just(None), Just(Some(1e-6)), (1e-9f64..0.1).prop_map(Some)],
    )
        .prop_map(|(variant, iters, eps)| SinkhornSpec {
            variant,
            iters,
            eps: FloatAttr(eps.unwrap_or(variant.default_eps())),
        })
}

/// `d_x` of the unrolled oracle and of `sinkhorn_grad` at `x`, `dy`.
fn both(ty: &TensorType, spec: SinkhornSpec, x: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let feed: BTreeMap<String, Tensor> = [("x", x), ("dy", dy)]
        .into_iter()
        .map(|(n, v)| (n.to_string(), Tensor::from_f64(ty.clone(), v).unwrap()))
        .collect();
    let oracle = grad(&loss_graph(ty, spec, true), "loss", &["x"]).unwrap();
    assert!(
        !oracle
            .nodes()
            .iter()
            .any(|n| matches!(n.op, Op::SinkhornGrad(_))),
        "the oracle must differentiate the primitive rounds"
    );
    let want = run(&oracle, &feed)[1].1.to_f64_vec();
    let got = run(&fused_graph(ty, spec), &feed)[0].1.to_f64_vec();
    (got, want)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn recomputing_backward_equals_autodiff_through_unrolled_rounds(
        spec in spec(),
        (shape, x, dy) in (proptest::collection::vec(1usize..=2, 0..=2), 1usize..=5)
            .prop_flat_map(|(mut shape, n)| {
                shape.extend([n, n]);
                let count: usize = shape.iter().product();
                (
                    Just(shape),
                    proptest::collection::vec(-3.0f64..3.0, count),
                    proptest::collection::vec(-1.0f64..1.0, count),
                )
            }),
    ) {
        let ty = TensorType::new(DType::F64, shape);
        let (got, want) = both(&ty, spec, &x, &dy);
        let err = worst_relative(&got, &want, &dy);
        prop_assert!(
            err <= TOL,
            "{spec:?} on {ty}: relative error {err:e}\n got {got:?}\nwant {want:?}"
        );
    }
}

/// `grad` differentiates `sinkhorn` with one `sinkhorn_grad` node, not
/// through the rounds: the gradient graph's size does not grow with the
/// round count, and it computes what the unrolled oracle does.
#[test]
fn grad_emits_one_recomputing_node_whatever_the_round_count() {
    let ty = TensorType::new(DType::F64, [2, 3, 3]);
    let mut sizes = Vec::new();
    for iters in [1, 20] {
        for variant in [SinkhornVariant::Paper, SinkhornVariant::TileKernels] {
            let spec = SinkhornSpec {
                variant,
                iters,
                eps: FloatAttr(variant.default_eps()),
            };
            let dg = grad(&loss_graph(&ty, spec, false), "loss", &["x"]).unwrap();
            let fused: Vec<&Op> = dg
                .nodes()
                .iter()
                .map(|n| &n.op)
                .filter(|op| matches!(op, Op::SinkhornGrad(_)))
                .collect();
            assert_eq!(fused, [&Op::SinkhornGrad(spec)], "{dg}");
            assert!(
                !dg.nodes()
                    .iter()
                    .any(|n| matches!(n.op, Op::ReduceSum { .. })
                        && n.ty.as_tensor().is_some_and(|t| t.shape == [2, 3, 1])),
                "no unrolled row sums in\n{dg}"
            );
            sizes.push((variant, dg.len()));
        }
    }
    assert_eq!(sizes[0].1, sizes[2].1, "{sizes:?}");
    assert_eq!(sizes[1].1, sizes[3].1, "{sizes:?}");
}

/// The Sinkhorn inside an `mhc_pre` keeps its recomputing backward too:
/// `mhc_pre` stays one node and its rule, `mhc_pre_grad`, recomputes the
/// rounds inside (no separate `sinkhorn_grad`, no unrolled rounds).
#[test]
fn mhc_pre_gradient_uses_the_recomputing_sinkhorn_backward() {
    let (t, n, c) = (2, 2, 3);
    let m = n * (n + 2);
    let mut g = Graph::new("pre");
    let ty = |s: &[usize]| TensorType::new(DType::F64, s);
    let x = g.add_input("x", InputKind::Data, ty(&[t, n, c]));
    let f = g.add_input("fn", InputKind::Param, ty(&[m, n * c]));
    let s = g.add_input("scale", InputKind::Param, ty(&[3]));
    let b = g.add_input("base", InputKind::Param, ty(&[m]));
    let spec = SinkhornSpec {
        variant: SinkhornVariant::TileKernels,
        iters: 4,
        eps: FloatAttr(1e-6),
    };
    let pre = Op::MhcPre(PreMixSpec {
        norm_eps: FloatAttr(1e-6),
        pre_eps: FloatAttr(0.0),
        post_mult: FloatAttr(2.0),
        sinkhorn: spec,
    });
    let tuple = g.add(pre, &[x, f, s, b]).unwrap();
    let comb = g.add(Op::Get { index: 2 }, &[tuple]).unwrap();
    let l = g
        .add(
            Op::ReduceSum {
                axes: vec![0, 1, 2],
                keepdims: false,
            },
            &[comb],
        )
        .unwrap();
    g.add_output("loss", l);
    let dg = grad(&g, "loss", &["x", "fn", "scale", "base"]).unwrap();
    let count = |want: fn(&Op) -> bool| dg.nodes().iter().filter(|n| want(&n.op)).count();
    assert_eq!(count(|op| matches!(op, Op::MhcPreGrad(_))), 1, "{dg}");
    assert_eq!(count(|op| matches!(op, Op::SinkhornGrad(_))), 0, "{dg}");
    assert_eq!(count(|op| matches!(op, Op::Sinkhorn(_))), 0, "{dg}");
    assert_eq!(count(|op| *op == Op::Div), 0, "no unrolled rounds: {dg}");
}

/// The gradient graph of a fused mHC model goes through the optimizer
/// again: the recomputing backward (inside `mhc_pre_grad`) survives as one node, the forward's
/// Sinkhorn is fused (it never left), and the results do not change.
#[test]
fn gradient_graphs_reoptimize_with_the_recomputing_backward() {
    use birkhoff_dsl::zoo::{ModelArgs, build_model};
    let args = ModelArgs {
        tokens: Some(2),
        streams: Some(3),
        hidden: Some(4),
        iters: Some(5),
        dtype: Some(DType::F64),
        ..ModelArgs::default()
    };
    let model = build_model("mhc-pre", &args).unwrap();
    let mut g = birkhoff_opt::optimize(&model.graph, |_| false)
        .unwrap()
        .graph;
    let outs = g.outputs().to_vec();
    let mut total = None;
    for o in outs {
        let ty = g.ty(o.value).clone();
        let axes: Vec<usize> = (0..ty.rank()).collect();
        let s = g
            .add(
                Op::ReduceSum {
                    axes,
                    keepdims: false,
                },
                &[o.value],
            )
            .unwrap();
        total = Some(match total {
            None => s,
            Some(t) => g.add(Op::Add, &[t, s]).unwrap(),
        });
    }
    g.add_output("loss", total.unwrap());
    let wrt: Vec<String> = g
        .inputs()
        .iter()
        .map(|&v| g.input_name(v).unwrap().to_string())
        .collect();
    let wrt: Vec<&str> = wrt.iter().map(String::as_str).collect();
    let dg = grad(&g, "loss", &wrt).unwrap();
    let opt = birkhoff_opt::optimize(&dg, |_| false).unwrap();
    let sites = &opt.report.sites;
    // The Sinkhorn backward lives inside mhc_pre's fused backward.
    assert_eq!(
        sites.get("mhc_pre_grad"),
        Some(&1),
        "{sites:?}\n{}",
        opt.graph
    );
    assert_eq!(sites.get("sinkhorn_grad"), None, "{sites:?}");
    assert!(
        sites.contains_key("sinkhorn") || sites.contains_key("mhc_pre"),
        "{sites:?}\n{}",
        opt.graph
    );
    let root = birkhoff_dsl::Rng::new(3);
    let feed: BTreeMap<String, Tensor> = dg
        .inputs()
        .iter()
        .map(|&v| {
            let n = dg.input_name(v).unwrap().to_string();
            let init = birkhoff_dsl::Init::Normal {
                mean: 0.0,
                std: 1.0,
            };
            let t = birkhoff_dsl::random_tensor(dg.ty(v), &init, &mut root.fork(&n));
            (n, t)
        })
        .collect();
    for ((name, a), (_, b)) in run(&dg, &feed).iter().zip(run(&opt.graph, &feed)) {
        for (x, y) in a.to_f64_vec().iter().zip(b.to_f64_vec()) {
            assert!(
                (x - y).abs() <= 1e-9 * (1.0 + y.abs()),
                "{name}: {x} vs {y}"
            );
        }
    }
}
