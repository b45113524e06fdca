//! Gradients through the semantic and fused ops (`softmax`, `rms_norm`,
//! `sinkhorn`, `mhc_pre`, `hc_pre`, `mhc_post`, …), which `grad` expands
//! into primitives first: every zoo model, optimized so that its mHC
//! structure is fused, against central finite differences in f64; and the
//! fused graph's gradients against the unfused graph's.

use std::collections::BTreeMap;

use birkhoff_autodiff::grad;
use birkhoff_dsl::random_tensor;
use birkhoff_dsl::zoo::{Flag, Model, ModelArgs, build_model, model_info, models};
use birkhoff_dsl::{Init, Rng};
use birkhoff_ir::{DType, Graph, Literal, Op, SinkhornVariant, Tensor};

use crate::common::{FD, check, run, weight};

/// `model` in f64 at tiny sizes, with a scalar loss `loss` = the weighted
/// sum of every output, optimized when `fused`.
fn model(
    name: &str,
    args: &ModelArgs,
    fused: bool,
) -> (Graph, Vec<String>, BTreeMap<String, Tensor>) {
    let Model { graph, inits } = build_model(name, args).unwrap_or_else(|e| panic!("{name}: {e}"));
    let g = if fused {
        birkhoff_opt::optimize(&graph, |_| false)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .graph
    } else {
        graph
    };
    let g = with_loss(&g);
    let wrt: Vec<String> = g
        .inputs()
        .iter()
        .filter(|&&v| g.ty(v).dtype.is_float())
        .map(|&v| g.input_name(v).unwrap_or_default().to_string())
        .collect();
    let root = Rng::new(5);
    let at = g
        .inputs()
        .iter()
        .map(|&v| {
            let n = g.input_name(v).unwrap_or_default().to_string();
            let init = inits.get(&n).cloned().unwrap_or(Init::Normal {
                mean: 0.0,
                std: 1.0,
            });
            let t = random_tensor(g.ty(v), &init, &mut root.fork(&n));
            (n, t)
        })
        .collect();
    (g, wrt, at)
}

/// `g` with one more output, `loss`: `Σ_o Σ out_o ⊙ w_o` over its float
/// outputs, with fixed, varied weights.
fn with_loss(g: &Graph) -> Graph {
    let mut g = g.clone();
    let mut total = None;
    for o in g.outputs().to_vec() {
        let ty = g.ty(o.value).clone();
        if !ty.dtype.is_float() {
            continue;
        }
        let n: usize = ty.shape.iter().product();
        let w: Vec<f64> = (0..n).map(|i| weight(i + total.map_or(0, |_| 7))).collect();
        let w = g
            .add(
                Op::Const(Literal::dense(ty.clone(), w).expect("sized")),
                &[],
            )
            .unwrap();
        let p = g.add(Op::Mul, &[o.value, w]).unwrap();
        let axes: Vec<usize> = (0..ty.shape.len()).collect();
        let s = g
            .add(
                Op::ReduceSum {
                    axes,
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
    g.add_output("loss", total.expect("a float output"));
    g
}

fn args(name: &str) -> ModelArgs {
    let info = model_info(name).expect("a zoo model");
    let takes = |f: Flag| info.flags.contains(&f);
    ModelArgs {
        tokens: takes(Flag::Tokens).then_some(2),
        streams: takes(Flag::Streams).then_some(2),
        hidden: takes(Flag::Hidden).then_some(4),
        heads: takes(Flag::Heads).then_some(1),
        ffn: takes(Flag::Ffn).then_some(4),
        iters: takes(Flag::Iters).then_some(3),
        dtype: Some(DType::F64),
        ..ModelArgs::default()
    }
}

fn check_model(name: &str, a: &ModelArgs) {
    let (g, wrt, at) = model(name, a, true);
    let wrt: Vec<&str> = wrt.iter().map(String::as_str).collect();
    // The optimizer fused something to differentiate through (every model
    // but the plain residual block has mHC, HC or Sinkhorn structure).
    let fused = g
        .nodes()
        .iter()
        .filter(|n| birkhoff_opt::is_expandable(&n.op))
        .count();
    assert!(
        fused > 0 || name == "residual-block",
        "{name}: nothing fused\n{g}"
    );
    check(&g, "loss", &wrt, &at, FD).unwrap_or_else(|e| panic!("{name}: {e}"));
}

#[test]
fn every_zoo_model_fused_against_finite_differences() {
    for info in models() {
        check_model(info.name, &args(info.name));
    }
}

#[test]
fn both_sinkhorn_variants_with_eps_against_finite_differences() {
    for variant in [SinkhornVariant::Paper, SinkhornVariant::TileKernels] {
        for eps in [0.0, 1e-6] {
            let a = ModelArgs {
                sinkhorn: Some(variant),
                eps: Some(eps),
                ..args("mhc-pre")
            };
            check_model("mhc-pre", &a);
        }
    }
}

/// The fused graph differentiates to the same gradients as the graph the
/// model was written as (f64: only the order of sums differs).
#[test]
fn fused_and_unfused_gradients_agree() {
    for info in models() {
        let a = args(info.name);
        let (gf, wrt, at) = model(info.name, &a, true);
        let (gu, wrt_u, _) = model(info.name, &a, false);
        assert_eq!(wrt, wrt_u, "{}", info.name);
        let wrt: Vec<&str> = wrt.iter().map(String::as_str).collect();
        let df = run(&grad(&gf, "loss", &wrt).unwrap(), &at);
        let du = run(&grad(&gu, "loss", &wrt).unwrap(), &at);
        for ((name, f), (_, u)) in df.iter().zip(&du) {
            for (x, y) in f.to_f64_vec().iter().zip(u.to_f64_vec()) {
                assert!(
                    (x - y).abs() <= 1e-9 * (1.0 + y.abs()),
                    "{} {name}: fused {x} vs unfused {y}",
                    info.name
                );
            }
        }
    }
}
