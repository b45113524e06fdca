//! Properties of the random graph generator itself: its graphs verify,
//! stay small, cover the whole op set, and run under the interpreter.

use std::collections::{BTreeMap, BTreeSet};

use birkhoff_ir::{
    DType, Graph, InputKind, InterpOptions, LiteralValues, Op, OpKind, PreMixSpec, Precision,
    SinkhornVariant, Type, interpret, verify,
};
use birkhoff_testkit::{MAX_GRAPH_ELEMENTS, graph, inputs};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

fn sample_graphs(n: usize) -> Vec<Graph> {
    let mut runner = TestRunner::deterministic();
    let s = graph();
    (0..n)
        .map(|_| s.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// Every fact about the op set the generator is meant to cover.
fn features(g: &Graph) -> BTreeSet<String> {
    let mut f = BTreeSet::new();
    for n in g.nodes() {
        f.insert(n.op.mnemonic().to_string());
        match &n.op {
            Op::Input { kind, .. } => {
                f.insert(format!("input:{kind:?}"));
            }
            Op::Const(lit) => {
                let form = match lit.values() {
                    LiteralValues::Splat(_) => "splat",
                    LiteralValues::Dense(_) => "dense",
                };
                f.insert(format!("const:{form}:{}", lit.ty().dtype));
                for i in 0..lit.ty().num_elements() {
                    let x = lit.get(i);
                    if lit.ty().dtype.is_float() {
                        if x.is_nan() {
                            f.insert("const:nan".into());
                        } else if x.is_infinite() {
                            f.insert(format!("const:{x}"));
                        } else if x == 0.0 && x.is_sign_negative() {
                            f.insert("const:-0".into());
                        }
                    }
                }
            }
            Op::Cast { dtype } => {
                f.insert(format!("cast:{dtype}"));
            }
            Op::ReduceSum { keepdims, axes } | Op::ReduceMax { keepdims, axes } => {
                f.insert(format!("{}:keepdims={keepdims}", n.op.mnemonic()));
                f.insert(format!("reduce:axes={}", axes.len()));
            }
            op if op.is_unary() || op.is_binary() => {
                f.insert(format!("{}:{}", op.mnemonic(), g.ty(n.args[0]).dtype));
            }
            Op::Sinkhorn(spec) | Op::MhcPre(PreMixSpec { sinkhorn: spec, .. }) => {
                let m = n.op.mnemonic();
                f.insert(format!("{m}:{}", g.ty(n.args[0]).dtype));
                f.insert(format!("{m}:{}", spec.variant.name()));
                f.insert(format!("{m}:iters={}", spec.iters));
                f.insert(format!("{m}:eps={}", spec.eps.get()));
            }
            Op::Softmax { axis } => {
                let x = g.ty(n.args[0]);
                f.insert(format!("softmax:{}", x.dtype));
                if *axis + 1 < x.rank() {
                    f.insert("softmax:inner-axis".into());
                }
            }
            op if op.is_semantic() || op.is_fused() => {
                f.insert(format!("{}:{}", op.mnemonic(), g.ty(n.args[0]).dtype));
            }
            Op::Get { index } => {
                let tuple = g.node(n.args[0]).op.mnemonic();
                f.insert(format!("get:{tuple}:{index}"));
            }
            _ => {}
        }
    }
    f.insert(format!("outputs={}", g.outputs().len()));
    f
}

#[test]
fn generator_covers_every_op_and_variant() {
    let mut seen = BTreeSet::new();
    for g in sample_graphs(600) {
        seen.extend(features(&g));
    }
    // Every op of the IR, `param` as well as `input`.
    let mut want: Vec<String> = OpKind::ALL
        .iter()
        .map(|k| k.mnemonic().to_string())
        .collect();
    want.push("param".into());
    for kind in [InputKind::Data, InputKind::Param] {
        want.push(format!("input:{kind:?}"));
    }
    for d in DType::ALL {
        want.push(format!("cast:{d}"));
        want.push(format!("const:splat:{d}"));
        want.push(format!("const:dense:{d}"));
        want.push(format!("eq:{d}"));
    }
    for d in [DType::F32, DType::Bf16, DType::F64, DType::I32] {
        want.push(format!("add:{d}"));
        want.push(format!("neg:{d}"));
    }
    for d in [DType::F32, DType::Bf16, DType::F64] {
        want.push(format!("exp:{d}"));
        want.push(format!("div:{d}"));
        for op in [
            "row_norm", "col_norm", "softmax", "rms_norm", "sinkhorn", "mhc_pre", "hc_pre",
            "mhc_post",
        ] {
            want.push(format!("{op}:{d}"));
        }
    }
    for op in ["sinkhorn", "mhc_pre"] {
        for v in [SinkhornVariant::Paper, SinkhornVariant::TileKernels] {
            want.push(format!("{op}:{}", v.name()));
        }
    }
    for iters in 1..=5 {
        want.push(format!("sinkhorn:iters={iters}"));
    }
    for eps in [0.0, 1e-6, 0.01] {
        want.push(format!("sinkhorn:eps={eps}"));
    }
    for tuple in ["mhc_pre", "hc_pre"] {
        for index in 0..3 {
            want.push(format!("get:{tuple}:{index}"));
        }
    }
    for s in [
        "const:nan",
        "const:inf",
        "const:-inf",
        "const:-0",
        "reduce_sum:keepdims=true",
        "reduce_sum:keepdims=false",
        "reduce_max:keepdims=true",
        "reduce_max:keepdims=false",
        "reduce:axes=1",
        "reduce:axes=2",
        "reduce:axes=3",
        "outputs=1",
        "outputs=2",
        "outputs=3",
        "not:bool",
        "and:bool",
        "softmax:inner-axis",
    ] {
        want.push(s.to_string());
    }
    let missing: Vec<&String> = want.iter().filter(|w| !seen.contains(*w)).collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}

#[test]
fn generator_is_deterministic() {
    let a: Vec<String> = sample_graphs(20).iter().map(|g| g.to_string()).collect();
    let b: Vec<String> = sample_graphs(20).iter().map(|g| g.to_string()).collect();
    assert_eq!(a, b);
}

proptest! {
    #[test]
    fn generated_graphs_verify_and_stay_small(g in graph()) {
        prop_assert!(verify(&g).is_ok(), "{}\n{}", verify(&g).unwrap_err(), g);
        prop_assert!((1..=3).contains(&g.inputs().len()));
        prop_assert!((1..=3).contains(&g.outputs().len()));
        prop_assert!(g.len() <= 80, "{} nodes", g.len());
        for v in g.values() {
            let elements = match g.value_type(v) {
                Type::Tensor(t) => t.num_elements(),
                Type::Tuple(ts) => ts.iter().map(|t| t.num_elements()).sum(),
            };
            prop_assert!(elements <= MAX_GRAPH_ELEMENTS, "{}", g.value_type(v));
        }
        // Every tuple is taken apart by a get, and only gets use tuples.
        let uses = g.use_counts();
        for v in g.values() {
            let node = g.node(v);
            if g.value_type(v).is_tuple() {
                prop_assert!(uses[v.index()] > 0, "unused tuple {v}");
            }
            for &a in &node.args {
                prop_assert_eq!(
                    g.value_type(a).is_tuple(),
                    matches!(node.op, Op::Get { .. }),
                    "{} uses {}", v, a
                );
            }
        }
    }

    #[test]
    fn generated_graphs_run_under_the_interpreter(
        (g, ins) in graph().prop_flat_map(|g| {
            let ins = inputs(&g, true);
            (Just(g), ins)
        }),
        f32_mode in any::<bool>(),
    ) {
        let opts = InterpOptions {
            precision: if f32_mode { Precision::F32 } else { Precision::F64 },
            ..InterpOptions::default()
        };
        let out = interpret(&g, &ins, &opts);
        prop_assert!(out.is_ok(), "{:?}", out);
        let out = out.unwrap_or_default();
        prop_assert_eq!(out.len(), g.outputs().len());
        for ((name, t), o) in out.iter().zip(g.outputs()) {
            prop_assert_eq!(name, &o.name);
            prop_assert_eq!(t.ty(), g.ty(o.value));
        }
    }
}

#[test]
fn inputs_match_the_graph_signature() {
    let mut runner = TestRunner::deterministic();
    for g in sample_graphs(30) {
        let ins: BTreeMap<_, _> = inputs(&g, false).new_tree(&mut runner).unwrap().current();
        assert_eq!(ins.len(), g.inputs().len());
        for &v in g.inputs() {
            let name = g.input_name(v).unwrap();
            assert_eq!(ins[name].ty(), g.ty(v), "{name}");
        }
    }
}
