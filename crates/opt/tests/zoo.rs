//! What the optimizer makes of every model of the zoo: exactly the fused
//! and semantic ops each model's structure calls for, nothing left of the
//! unrolled Sinkhorn chains, every rule set saturated, and the signature
//! of the graph unchanged.

mod common;

use birkhoff_dsl::zoo::mhc::SinkhornVariant;
use birkhoff_dsl::zoo::{LayerFn, ModelArgs, build_model, models};
use birkhoff_ir::{DType, FloatAttr, Graph, Op, PreMixSpec, SinkhornSpec};
use birkhoff_opt::StopReason;
use common::{count, counts, kernels, run, same_signature, sinkhorn_specs};

/// Small sizes for the transformer blocks (the rules do not depend on them).
fn block(layers: usize) -> ModelArgs {
    ModelArgs {
        tokens: Some(4),
        hidden: Some(8),
        heads: Some(2),
        layers: Some(layers),
        ..ModelArgs::default()
    }
}

/// The Sinkhorn settings exercised: both variants, short and long chains,
/// eps 0 and not.
fn sinkhorn_settings() -> Vec<(SinkhornVariant, usize, f64)> {
    let mut v = Vec::new();
    for variant in [SinkhornVariant::Paper, SinkhornVariant::TileKernels] {
        for iters in [1, 2, 7, 20] {
            for eps in [0.0, 1e-6, 1e-3] {
                v.push((variant, iters, eps));
            }
        }
    }
    v
}

/// The variant a chain is named by: with `eps = 0` both variants are one
/// function, named `paper`.
fn named(variant: SinkhornVariant, eps: f64) -> SinkhornVariant {
    if eps == 0.0 {
        SinkhornVariant::Paper
    } else {
        variant
    }
}

/// Every zoo model with a few settings each, small enough to optimize fast.
fn zoo_cases() -> Vec<(&'static str, ModelArgs)> {
    let mut cases = Vec::new();
    for info in models() {
        let name = info.name;
        match name {
            "mhc-block" | "hc-block" | "residual-block" => {
                for layers in 1..=2 {
                    cases.push((name, block(layers)));
                }
            }
            "mhc-sublayer" => {
                for layer_fn in [LayerFn::Identity, LayerFn::LinearTanh] {
                    cases.push((
                        name,
                        ModelArgs {
                            layer_fn: Some(layer_fn),
                            ..ModelArgs::default()
                        },
                    ));
                }
            }
            _ => cases.push((name, ModelArgs::default())),
        }
    }
    cases
}

fn mhc_ops_left(g: &Graph) -> Vec<(&'static str, usize)> {
    ["sinkhorn", "row_norm", "col_norm"]
        .into_iter()
        .map(|k| (k, count(g, k)))
        .filter(|&(_, n)| n > 0)
        .collect()
}

#[test]
fn mhc_block_has_one_mhc_pre_and_one_mhc_post_per_sublayer() {
    for layers in 1..=3 {
        for variant in [SinkhornVariant::Paper, SinkhornVariant::TileKernels] {
            let args = ModelArgs {
                sinkhorn: Some(variant),
                ..block(layers)
            };
            let m = build_model("mhc-block", &args).unwrap();
            let out = run(&m.graph);
            let g = &out.graph;
            let what = format!("mhc-block, {layers} layers, {}", variant.name());
            assert_eq!(count(g, "mhc_pre"), 2 * layers, "{what}\n{g}");
            assert_eq!(count(g, "mhc_post"), 2 * layers, "{what}\n{g}");
            assert_eq!(count(g, "hc_pre"), 0, "{what}\n{g}");
            assert_eq!(mhc_ops_left(g), vec![], "{what}\n{g}");
        }
    }
}

#[test]
fn mhc_block_fuses_with_the_models_settings() {
    let args = ModelArgs {
        sinkhorn: Some(SinkhornVariant::Paper),
        iters: Some(7),
        eps: Some(1e-3),
        norm_eps: Some(1e-5),
        pre_eps: Some(0.25),
        post_mult: Some(1.5),
        ..block(1)
    };
    let m = build_model("mhc-block", &args).unwrap();
    let out = run(&m.graph);
    let f32 = |v: f64| FloatAttr(DType::F32.round(v));
    let want = Op::MhcPre(PreMixSpec {
        norm_eps: f32(1e-5),
        pre_eps: f32(0.25),
        post_mult: f32(1.5),
        sinkhorn: SinkhornSpec {
            variant: SinkhornVariant::Paper,
            iters: 7,
            eps: f32(1e-3),
        },
    });
    let pres: Vec<&Op> = out
        .graph
        .nodes()
        .iter()
        .map(|n| &n.op)
        .filter(|op| matches!(op, Op::MhcPre(_)))
        .collect();
    assert_eq!(pres, vec![&want, &want], "{}", out.graph);
}

#[test]
fn hc_block_has_hc_pre_and_mhc_post_per_sublayer_and_no_sinkhorn() {
    for layers in 1..=3 {
        let m = build_model("hc-block", &block(layers)).unwrap();
        let out = run(&m.graph);
        let g = &out.graph;
        assert_eq!(count(g, "hc_pre"), 2 * layers, "{layers} layers\n{g}");
        assert_eq!(count(g, "mhc_post"), 2 * layers, "{layers} layers\n{g}");
        assert_eq!(count(g, "mhc_pre"), 0, "{layers} layers\n{g}");
        assert_eq!(mhc_ops_left(g), vec![], "{layers} layers\n{g}");
    }
}

#[test]
fn residual_block_gets_only_generic_recognition() {
    for layers in 1..=3 {
        let m = build_model("residual-block", &block(layers)).unwrap();
        let out = run(&m.graph);
        // Two RMSNorms (attention and MLP) and one attention softmax per
        // layer; no mixing, so nothing mHC.
        assert_eq!(
            out.report.sites,
            counts(&[("rms_norm", 2 * layers), ("softmax", layers)]),
            "{layers} layers\n{}",
            out.graph
        );
    }
}

#[test]
fn mhc_pre_model_becomes_one_mhc_pre_with_its_settings() {
    for (variant, iters, eps) in sinkhorn_settings() {
        let args = ModelArgs {
            tokens: Some(3),
            streams: Some(3),
            hidden: Some(4),
            sinkhorn: Some(variant),
            iters: Some(iters),
            eps: Some(eps),
            dtype: Some(DType::F64),
            ..ModelArgs::default()
        };
        let m = build_model("mhc-pre", &args).unwrap();
        let out = run(&m.graph);
        let want = Op::MhcPre(PreMixSpec {
            norm_eps: FloatAttr(1e-6),
            pre_eps: FloatAttr(1e-6),
            post_mult: FloatAttr(2.0),
            sinkhorn: SinkhornSpec {
                variant: named(variant, eps),
                iters,
                eps: FloatAttr(eps),
            },
        });
        let what = format!("{} iters={iters} eps={eps}", variant.name());
        assert_eq!(kernels(&out.graph), counts(&[("mhc_pre", 1)]), "{what}");
        assert!(
            out.graph.nodes().iter().any(|n| n.op == want),
            "{what}: want {want:?}\n{}",
            out.graph
        );
    }
}

#[test]
fn hc_pre_model_becomes_one_hc_pre() {
    let m = build_model("hc-pre", &ModelArgs::default()).unwrap();
    let out = run(&m.graph);
    assert_eq!(
        kernels(&out.graph),
        counts(&[("hc_pre", 1)]),
        "{}",
        out.graph
    );
    assert_eq!(out.report.sites, counts(&[("hc_pre", 1)]));
}

#[test]
fn mhc_post_model_becomes_one_mhc_post() {
    let m = build_model("mhc-post", &ModelArgs::default()).unwrap();
    let out = run(&m.graph);
    assert_eq!(
        kernels(&out.graph),
        counts(&[("mhc_post", 1)]),
        "{}",
        out.graph
    );
    assert_eq!(out.report.sites, counts(&[("mhc_post", 1)]));
}

#[test]
fn sinkhorn_model_becomes_one_sinkhorn_with_its_settings() {
    for (variant, iters, eps) in sinkhorn_settings() {
        let args = ModelArgs {
            tokens: Some(2),
            sinkhorn: Some(variant),
            iters: Some(iters),
            eps: Some(eps),
            dtype: Some(DType::F64),
            ..ModelArgs::default()
        };
        let m = build_model("sinkhorn", &args).unwrap();
        let out = run(&m.graph);
        let what = format!("{} iters={iters} eps={eps}\n{}", variant.name(), out.graph);
        assert_eq!(kernels(&out.graph), counts(&[("sinkhorn", 1)]), "{what}");
        assert_eq!(
            sinkhorn_specs(&out.graph),
            vec![SinkhornSpec {
                variant: named(variant, eps),
                iters,
                eps: FloatAttr(eps)
            }],
            "{what}"
        );
    }
}

#[test]
fn mhc_sublayer_becomes_one_mhc_pre_and_one_mhc_post() {
    let m = build_model("mhc-sublayer", &ModelArgs::default()).unwrap();
    let out = run(&m.graph);
    assert_eq!(
        kernels(&out.graph),
        counts(&[("mhc_pre", 1), ("mhc_post", 1)]),
        "{}",
        out.graph
    );
}

#[test]
fn mhc_sublayer_with_linear_tanh_keeps_the_layer_function_between_the_fused_ops() {
    let args = ModelArgs {
        layer_fn: Some(LayerFn::LinearTanh),
        ..ModelArgs::default()
    };
    let m = build_model("mhc-sublayer", &args).unwrap();
    let out = run(&m.graph);
    assert_eq!(
        kernels(&out.graph),
        counts(&[("mhc_pre", 1), ("matmul", 1), ("tanh", 1), ("mhc_post", 1)]),
        "{}",
        out.graph
    );
}

#[test]
fn every_rule_set_saturates_on_every_zoo_model() {
    for (name, args) in zoo_cases() {
        let m = build_model(name, &args).unwrap();
        let out = run(&m.graph);
        for p in &out.report.passes {
            assert_eq!(
                p.stop_reason,
                StopReason::Saturated,
                "{name} {args:?}: pass {} stopped by {}",
                p.name,
                p.stop_reason
            );
        }
        assert_eq!(out.report.passes.len(), birkhoff_opt::PASSES.len());
    }
}

#[test]
fn optimized_zoo_graphs_verify_and_keep_their_signature() {
    for (name, args) in zoo_cases() {
        let m = build_model(name, &args).unwrap();
        let out = run(&m.graph);
        if let Err(e) = same_signature(&m.graph, &out.graph) {
            panic!("{name} {args:?}: {e}\n{}", out.graph);
        }
    }
}
