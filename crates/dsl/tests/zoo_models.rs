//! Every zoo model builds, round-trips through text, runs, and rejects bad
//! flags with a clear error.

use std::collections::BTreeMap;

use birkhoff_dsl::zoo::mhc::SinkhornVariant;
use birkhoff_dsl::zoo::{Flag, ModelArgs, build_model, models};
use birkhoff_dsl::{Error, Rng, random_tensor};
use birkhoff_ir::{InterpOptions, Op, interpret, parse_and_verify};

fn small() -> ModelArgs {
    ModelArgs {
        tokens: Some(5),
        streams: Some(3),
        hidden: Some(8),
        heads: Some(2),
        ffn: Some(12),
        layers: Some(2),
        ..ModelArgs::default()
    }
}

/// `small()` restricted to the flags `model` takes.
fn small_for(model: &str) -> ModelArgs {
    let info = models().iter().find(|m| m.name == model).unwrap();
    let s = small();
    let keep = |f: Flag| info.flags.contains(&f);
    ModelArgs {
        tokens: s.tokens.filter(|_| keep(Flag::Tokens)),
        streams: s.streams.filter(|_| keep(Flag::Streams)),
        hidden: s.hidden.filter(|_| keep(Flag::Hidden)),
        heads: s.heads.filter(|_| keep(Flag::Heads)),
        ffn: s.ffn.filter(|_| keep(Flag::Ffn)),
        layers: s.layers.filter(|_| keep(Flag::Layers)),
        ..ModelArgs::default()
    }
}

#[test]
fn every_model_builds_round_trips_and_runs() {
    for info in models() {
        for args in [ModelArgs::default(), small_for(info.name)] {
            let m = build_model(info.name, &args).unwrap_or_else(|e| panic!("{}: {e}", info.name));
            let g = &m.graph;
            assert_eq!(
                parse_and_verify(&g.to_string()).unwrap()[0],
                *g,
                "{} round trip",
                info.name
            );
            // Primitive ops only: every op is one of the closed set (there is
            // no other kind yet), and every input has an initialization.
            for &v in g.inputs() {
                let name = g.input_name(v).unwrap();
                assert!(
                    m.inits.contains_key(name),
                    "{}: no init for {name}",
                    info.name
                );
            }
            let root = Rng::new(3);
            let inputs: BTreeMap<_, _> = g
                .inputs()
                .iter()
                .map(|&v| {
                    let name = g.input_name(v).unwrap();
                    (
                        name.to_string(),
                        random_tensor(g.ty(v), &m.inits[name], &mut root.fork(name)),
                    )
                })
                .collect();
            let out = interpret(g, &inputs, &InterpOptions::default()).unwrap();
            for (name, t) in &out {
                assert!(
                    t.first_non_finite().is_none(),
                    "{}: output {name} is not finite",
                    info.name
                );
            }
        }
    }
}

#[test]
fn stacks_grow_with_layers_and_name_parameters_per_layer() {
    let one = build_model(
        "mhc-block",
        &ModelArgs {
            layers: Some(1),
            ..small_for("mhc-block")
        },
    )
    .unwrap();
    let three = build_model(
        "mhc-block",
        &ModelArgs {
            layers: Some(3),
            ..small_for("mhc-block")
        },
    )
    .unwrap();
    assert_eq!(
        three.graph.inputs().len(),
        1 + 3 * (one.graph.inputs().len() - 1)
    );
    assert!(three.graph.input_by_name("layer2.mlp.w_down").is_some());
    assert!(three.graph.input_by_name("layer2.attn.fn").is_some());
    let res = build_model("residual-block", &small_for("residual-block")).unwrap();
    assert!(
        res.graph.input_by_name("layer0.attn.fn").is_none(),
        "the baseline has no mixing weights"
    );
}

#[test]
fn sinkhorn_iterations_are_unrolled_per_round() {
    let count_divs = |variant, iters| {
        let a = ModelArgs {
            sinkhorn: Some(variant),
            iters: Some(iters),
            ..ModelArgs::default()
        };
        build_model("sinkhorn", &a)
            .unwrap()
            .graph
            .nodes()
            .iter()
            .filter(|n| n.op == Op::Div)
            .count()
    };
    // paper: 2 divisions per round; tilekernels: softmax + 1 column + 2 per extra round.
    assert_eq!(count_divs(SinkhornVariant::Paper, 7), 14);
    assert_eq!(count_divs(SinkhornVariant::TileKernels, 7), 1 + 1 + 2 * 6);
}

#[test]
fn bad_flags_are_clear_errors() {
    let err = |name: &str, a: ModelArgs| build_model(name, &a).unwrap_err();
    assert!(matches!(
        err("nope", ModelArgs::default()),
        Error::UnknownModel { .. }
    ));
    let e = err(
        "sinkhorn",
        ModelArgs {
            hidden: Some(8),
            ..ModelArgs::default()
        },
    );
    assert!(
        matches!(e, Error::FlagNotApplicable { ref flag, .. } if flag == "hidden"),
        "{e}"
    );
    assert!(
        e.to_string().contains("--tokens"),
        "lists accepted flags: {e}"
    );
    for (model, a, flag) in [
        (
            "mhc-pre",
            ModelArgs {
                tokens: Some(0),
                ..ModelArgs::default()
            },
            "tokens",
        ),
        (
            "mhc-pre",
            ModelArgs {
                iters: Some(0),
                ..ModelArgs::default()
            },
            "iters",
        ),
        (
            "mhc-pre",
            ModelArgs {
                iters: Some(100_000),
                ..ModelArgs::default()
            },
            "iters",
        ),
        (
            "mhc-pre",
            ModelArgs {
                eps: Some(-1.0),
                ..ModelArgs::default()
            },
            "eps",
        ),
        (
            "mhc-pre",
            ModelArgs {
                norm_eps: Some(f64::NAN),
                ..ModelArgs::default()
            },
            "norm-eps",
        ),
        (
            "mhc-pre",
            ModelArgs {
                post_mult: Some(f64::INFINITY),
                ..ModelArgs::default()
            },
            "post-mult",
        ),
        (
            "mhc-block",
            ModelArgs {
                heads: Some(3),
                ..ModelArgs::default()
            },
            "heads",
        ),
        (
            "mhc-pre",
            ModelArgs {
                tokens: Some(1 << 40),
                hidden: Some(1 << 20),
                ..ModelArgs::default()
            },
            "tokens",
        ),
        (
            "mhc-pre",
            ModelArgs {
                dtype: Some(birkhoff_ir::DType::I32),
                ..ModelArgs::default()
            },
            "dtype",
        ),
    ] {
        match err(model, a) {
            Error::BadFlag { flag: f, .. } => assert_eq!(f, flag),
            other => panic!("expected a bad --{flag}, got {other}"),
        }
    }
}

/// The size check counts the tensors each model really has: a Sinkhorn
/// over 600,000 tokens holds 9.6e6-element tensors and builds, while the
/// transformer's attention scores at 6e6 tokens are refused.
#[test]
fn size_limits_follow_each_models_own_tensors() {
    let args = |tokens| ModelArgs {
        tokens: Some(tokens),
        ..ModelArgs::default()
    };
    assert!(build_model("sinkhorn", &args(600_000)).is_ok());
    let e = build_model("mhc-block", &args(6_000_000))
        .unwrap_err()
        .to_string();
    assert!(e.contains("over the limit"), "{e}");
}
