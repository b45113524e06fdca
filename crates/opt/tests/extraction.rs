//! Extraction minimizes the DAG cost — every computed value paid once —
//! not the tree cost, and optimizing never makes a graph more expensive
//! under the cost model.

mod common;

use birkhoff_dsl::Builder;
use birkhoff_dsl::zoo::mhc::SinkhornVariant;
use birkhoff_dsl::zoo::{LayerFn, ModelArgs, build_model, models};
use birkhoff_ir::{DType, Graph, Op, TensorType, Type};
use birkhoff_opt::cost::{graph_cost, node_cost};
use common::{assert_agree, counts, draw_inputs, inits, kernels, run};

/// `y = exp(u) / sum(exp(u))` over the last axis; with `share`, `exp(u)`
/// is an output too.
fn softmax_graph(share: bool) -> Graph {
    let b = Builder::new("shared_exp");
    let u = b.input("u", DType::F64, &[4, 8]);
    let e = u.exp();
    if share {
        b.output("e", e);
    }
    b.output("y", e / e.sum(&[1], true));
    b.build().unwrap()
}

fn own(op: &Op) -> f64 {
    let t = Type::Tensor(TensorType::new(DType::F64, [4, 8]));
    node_cost(op, &[&t], &t).scalar()
}

/// Every zoo model with settings that exercise each rule set.
fn zoo_cases() -> Vec<(&'static str, ModelArgs)> {
    let small = ModelArgs {
        tokens: Some(4),
        hidden: Some(8),
        heads: Some(2),
        ..ModelArgs::default()
    };
    let mut cases = Vec::new();
    for info in models() {
        let name = info.name;
        let flags = info.flags;
        let takes = |f: birkhoff_dsl::zoo::Flag| flags.contains(&f);
        for dtype in [DType::F32, DType::F64] {
            let mut base = if name.ends_with("block") {
                small.clone()
            } else {
                ModelArgs::default()
            };
            base.dtype = Some(dtype);
            let mut variants = vec![base.clone()];
            if takes(birkhoff_dsl::zoo::Flag::Sinkhorn) {
                variants.push(ModelArgs {
                    sinkhorn: Some(SinkhornVariant::Paper),
                    iters: Some(5),
                    ..base.clone()
                });
            }
            if takes(birkhoff_dsl::zoo::Flag::Layers) {
                variants.push(ModelArgs {
                    layers: Some(2),
                    ..base.clone()
                });
            }
            if takes(birkhoff_dsl::zoo::Flag::LayerFn) {
                variants.push(ModelArgs {
                    layer_fn: Some(LayerFn::LinearTanh),
                    ..base.clone()
                });
            }
            cases.extend(variants.into_iter().map(|a| (name, a)));
        }
    }
    cases
}

#[test]
fn a_shared_subterm_is_counted_once() {
    // With exp(u) computed anyway (it is an output), y is cheapest as
    // row_norm(exp(u)): one more light kernel. A tree-cost extractor pays
    // for exp(u) again inside y and picks softmax(u) instead.
    let row_norm = own(&Op::RowNorm {
        eps: birkhoff_ir::FloatAttr(0.0),
    });
    let softmax = own(&Op::Softmax { axis: 1 });
    let exp = own(&Op::Exp);
    assert!(softmax < exp + row_norm, "tree cost prefers softmax(u)");
    assert!(row_norm < softmax, "DAG cost prefers row_norm(exp(u))");

    let g = softmax_graph(true);
    let opt = run(&g).graph;
    assert_eq!(
        kernels(&opt),
        counts(&[("exp", 1), ("row_norm", 1)]),
        "{opt}"
    );
    let e = opt.outputs()[0].value;
    let y = opt.outputs()[1].value;
    assert_eq!(opt.node(y).args, vec![e], "y = row_norm(e)\n{opt}");
    assert_agree(&g, &opt, &draw_inputs(&g, &inits(&[]), 7));
}

#[test]
fn without_the_shared_user_the_softmax_is_chosen() {
    let g = softmax_graph(false);
    let opt = run(&g).graph;
    assert_eq!(kernels(&opt), counts(&[("softmax", 1)]), "{opt}");
    assert_agree(&g, &opt, &draw_inputs(&g, &inits(&[]), 7));
}

#[test]
fn a_fused_op_with_three_results_is_computed_once() {
    // Each of the three outputs uses the one mhc_pre through its own get.
    let m = build_model("mhc-pre", &ModelArgs::default()).unwrap();
    let out = run(&m.graph);
    assert_eq!(kernels(&out.graph), counts(&[("mhc_pre", 1)]));
    let gets = out
        .graph
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::Get { .. }))
        .count();
    assert_eq!(gets, 3, "{}", out.graph);
}

#[test]
fn extraction_cost_is_the_cost_of_the_extracted_graph() {
    for (name, args) in zoo_cases() {
        let m = build_model(name, &args).unwrap();
        let out = run(&m.graph);
        let cost = graph_cost(&out.graph);
        // Extraction counts weight-side work at a share of its cost.
        let seen = birkhoff_opt::cost::extraction_cost(&out.graph);
        assert_eq!(out.report.extraction_cost, seen, "{name} {args:?}");
        assert_eq!(out.report.cost_after, cost, "{name} {args:?}");
        assert_eq!(out.report.cost_before, graph_cost(&m.graph), "{name}");
    }
}

#[test]
fn optimizing_never_raises_the_cost_of_a_zoo_model() {
    for (name, args) in zoo_cases() {
        let m = build_model(name, &args).unwrap();
        let out = run(&m.graph);
        let (before, after) = (graph_cost(&m.graph), graph_cost(&out.graph));
        assert!(
            after.scalar() <= before.scalar(),
            "{name} {args:?}: cost {before:?} -> {after:?}"
        );
    }
}
