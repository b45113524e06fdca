//! `expand`, the inverse of fusion: every semantic and fused op, expanded
//! to primitives, computes what the reference interpreter computes for it
//! (f64, within the shared 1e-9 relative tolerance), and every zoo model
//! comes back from `expand(optimize(g))` with the same results as `g`, no
//! fused op left, and the same fusion sites when optimized again.

mod common;

use birkhoff_dsl::Init;
use birkhoff_dsl::zoo::mhc::SinkhornVariant;
use birkhoff_dsl::zoo::{Inits, LayerFn, ModelArgs, build_model, models};
use birkhoff_ir::{
    DType, FloatAttr, Graph, InputKind, Op, PreMixSpec, SinkhornSpec, TensorType, Type,
};
use birkhoff_opt::{expand, is_expandable};
use common::{assert_agree, draw_inputs, inits, run, same_signature};

/// A graph computing `op` on fresh inputs `a0, a1, …` of types `args`,
/// with one output per result (a tuple's elements through `get`).
fn single(op: Op, args: &[TensorType]) -> Graph {
    let mut g = Graph::new("single");
    let ins: Vec<_> = args
        .iter()
        .enumerate()
        .map(|(i, t)| g.add_input(format!("a{i}"), InputKind::Data, t.clone()))
        .collect();
    let text = format!("{op:?}");
    let v = g.add(op, &ins).unwrap_or_else(|e| panic!("{text}: {e}"));
    match g.value_type(v).clone() {
        Type::Tensor(_) => g.add_output("y", v),
        Type::Tuple(ts) => {
            for i in 0..ts.len() {
                let r = g.add(Op::Get { index: i }, &[v]).expect("get of a tuple");
                g.add_output(format!("y{i}"), r);
            }
        }
    }
    g
}

fn ty(dtype: DType, shape: &[usize]) -> TensorType {
    TensorType::new(dtype, shape)
}

/// The ops of `g` that `expand` should have removed.
fn expandable_left(g: &Graph) -> Vec<&'static str> {
    g.nodes()
        .iter()
        .filter(|n| is_expandable(&n.op))
        .map(|n| n.op.mnemonic())
        .collect()
}

/// Expands `g`, checks the result is primitive with `g`'s signature, and
/// compares both in the f64 interpreter on three seeds of `inits`.
#[track_caller]
fn check_expansion(g: &Graph, inits: &Inits) -> Graph {
    let e = expand(g).unwrap_or_else(|err| panic!("expanding failed: {err}\n{g}"));
    assert_eq!(expandable_left(&e), Vec::<&str>::new(), "{e}");
    same_signature(g, &e).unwrap_or_else(|err| panic!("{err}\n{g}\n{e}"));
    assert_eq!(e.name(), g.name());
    for seed in 0..3 {
        assert_agree(g, &e, &draw_inputs(g, inits, seed));
    }
    e
}

fn sinkhorn_specs() -> Vec<SinkhornSpec> {
    let mut v = Vec::new();
    for variant in [SinkhornVariant::Paper, SinkhornVariant::TileKernels] {
        for iters in [1, 2, 5, 20] {
            for eps in [0.0, 1e-6] {
                v.push(SinkhornSpec {
                    variant,
                    iters,
                    eps: FloatAttr(eps),
                });
            }
        }
    }
    v
}

const DTYPES: [DType; 3] = [DType::F64, DType::F32, DType::Bf16];

/// Positive values: a normalization of values that can sum to ~0 is
/// ill-conditioned, and no relative tolerance can compare it.
fn positive(n: usize) -> Inits {
    (0..n)
        .map(|i| {
            (
                format!("a{i}"),
                Init::Uniform {
                    low: 0.1,
                    high: 2.0,
                },
            )
        })
        .collect()
}

#[test]
fn row_and_col_norm_expand_to_their_definition() {
    for dtype in DTYPES {
        for shape in [&[3, 4][..], &[2, 3, 5], &[1, 1]] {
            for eps in [0.0, 1e-6, 0.5] {
                for op in [
                    Op::RowNorm {
                        eps: FloatAttr(eps),
                    },
                    Op::ColNorm {
                        eps: FloatAttr(eps),
                    },
                ] {
                    check_expansion(&single(op, &[ty(dtype, shape)]), &positive(1));
                }
            }
        }
    }
}

#[test]
fn softmax_expands_to_its_definition_on_every_axis() {
    for dtype in DTYPES {
        for shape in [&[7][..], &[2, 3, 4]] {
            for axis in 0..shape.len() {
                let g = single(Op::Softmax { axis }, &[ty(dtype, shape)]);
                check_expansion(&g, &inits(&[]));
            }
        }
    }
}

#[test]
fn rms_norm_expands_to_its_definition() {
    for dtype in DTYPES {
        for shape in [&[5][..], &[3, 8], &[2, 2, 6]] {
            for eps in [0.0, 1e-6, 1e-2] {
                let g = single(
                    Op::RmsNorm {
                        eps: FloatAttr(eps),
                    },
                    &[ty(dtype, shape)],
                );
                check_expansion(&g, &inits(&[]));
            }
        }
    }
}

#[test]
fn sinkhorn_expands_to_its_rounds_in_both_variants() {
    for dtype in DTYPES {
        for shape in [&[2, 2][..], &[3, 4, 4], &[2, 1, 3, 3]] {
            for spec in sinkhorn_specs() {
                let g = single(Op::Sinkhorn(spec), &[ty(dtype, shape)]);
                let e = check_expansion(&g, &inits(&[]));
                // paper: a row and a column normalization (a division each)
                // per round; tilekernels: the softmax's division, one column
                // normalization, then iters - 1 rounds.
                let divs = e.nodes().iter().filter(|n| n.op == Op::Div).count();
                let want = 2 * spec.iters;
                assert_eq!(divs, want, "{spec:?}\n{e}");
            }
        }
    }
}

#[test]
fn sinkhorn_grad_expands_to_the_unrolled_backward() {
    for dtype in DTYPES {
        for shape in [&[1, 1][..], &[3, 3], &[2, 4, 4]] {
            for spec in sinkhorn_specs() {
                let t = ty(dtype, shape);
                let g = single(Op::SinkhornGrad(spec), &[t.clone(), t]);
                let e = check_expansion(&g, &inits(&[]));
                // Per normalization: one division forward, one backward;
                // tilekernels adds the forward softmax's division.
                let divs = e.nodes().iter().filter(|n| n.op == Op::Div).count();
                let norms = match spec.variant {
                    SinkhornVariant::Paper => 2 * spec.iters,
                    SinkhornVariant::TileKernels => 2 * spec.iters - 1,
                };
                let softmax = usize::from(spec.variant == SinkhornVariant::TileKernels);
                assert_eq!(divs, 2 * norms + 2 * softmax, "{spec:?}\n{e}");
            }
        }
    }
}

#[test]
fn expand_keeping_leaves_the_kept_op_also_inside_another_expansion() {
    let spec = SinkhornSpec {
        variant: SinkhornVariant::TileKernels,
        iters: 3,
        eps: FloatAttr(1e-6),
    };
    let pre = Op::MhcPre(PreMixSpec {
        norm_eps: FloatAttr(1e-6),
        pre_eps: FloatAttr(1e-6),
        post_mult: FloatAttr(2.0),
        sinkhorn: spec,
    });
    for dtype in DTYPES {
        let g = single(pre.clone(), &pre_types(dtype, 2, 3, 4));
        let keep = |op: &Op| matches!(op, Op::Sinkhorn(_));
        let e = birkhoff_opt::expand_keeping(&g, keep).expect("expands");
        let left: Vec<&Op> = e
            .nodes()
            .iter()
            .map(|n| &n.op)
            .filter(|op| is_expandable(op))
            .collect();
        // Graphs store float attributes rounded to the compute type.
        let compute = if dtype == DType::Bf16 {
            DType::F32
        } else {
            dtype
        };
        let want = Op::Sinkhorn(spec).with_attrs_rounded_to(compute);
        assert_eq!(left, [&want], "{e}");
        same_signature(&g, &e).unwrap_or_else(|err| panic!("{err}\n{g}\n{e}"));
        for seed in 0..2 {
            assert_agree(&g, &e, &draw_inputs(&g, &pre_inits(), seed));
        }
        // Keeping the tuple op itself keeps it, and its gets.
        let kept =
            birkhoff_opt::expand_keeping(&g, |op| matches!(op, Op::MhcPre(_))).expect("expands");
        assert_eq!(kept, g);
    }
}

/// `(x, fn, scale, base)` types of a pre-mix with `t` tokens, `n` streams and `c` channels.
fn pre_types(dtype: DType, t: usize, n: usize, c: usize) -> Vec<TensorType> {
    let m = n * (n + 2);
    vec![
        ty(dtype, &[t, n, c]),
        ty(dtype, &[m, n * c]),
        ty(dtype, &[3]),
        ty(dtype, &[m]),
    ]
}

/// Small projection weights, as the zoo draws them.
fn pre_inits() -> Inits {
    inits(&[(
        "a1",
        Init::Normal {
            mean: 0.0,
            std: 0.2,
        },
    )])
}

#[test]
fn mhc_pre_expands_to_pre_norm_fn_split_sinkhorn_and_apply_mix() {
    for dtype in DTYPES {
        for (t, n, c) in [(3, 2, 4), (2, 4, 3), (1, 1, 2)] {
            for spec in sinkhorn_specs() {
                for (pre_eps, post_mult) in [(0.0, 1.0), (1e-2, 2.0), (-0.5, 0.5)] {
                    let op = Op::MhcPre(PreMixSpec {
                        norm_eps: FloatAttr(1e-6),
                        pre_eps: FloatAttr(pre_eps),
                        post_mult: FloatAttr(post_mult),
                        sinkhorn: spec,
                    });
                    check_expansion(&single(op, &pre_types(dtype, t, n, c)), &pre_inits());
                }
            }
        }
    }
}

#[test]
fn hc_pre_expands_to_tanh_gates_and_apply_mix() {
    for dtype in DTYPES {
        for (t, n, c) in [(3, 2, 4), (2, 4, 3), (1, 1, 2)] {
            for norm_eps in [0.0, 1e-6, 1e-2] {
                let op = Op::HcPre {
                    norm_eps: FloatAttr(norm_eps),
                };
                check_expansion(&single(op, &pre_types(dtype, t, n, c)), &pre_inits());
            }
        }
    }
}

#[test]
fn mhc_post_expands_with_comb_transposed() {
    for dtype in DTYPES {
        for (t, n, c) in [(3, 2, 4), (2, 4, 3), (1, 1, 1), (2, 4, 1)] {
            let args = [
                ty(dtype, &[t, c]),
                ty(dtype, &[t, n, c]),
                ty(dtype, &[t, n]),
                ty(dtype, &[t, n, n]),
            ];
            check_expansion(&single(Op::MhcPost, &args), &inits(&[]));
        }
    }
}

#[test]
fn mhc_post_grad_expands_to_four_products() {
    for dtype in DTYPES {
        for (t, n, c) in [(3, 2, 4), (2, 4, 3), (1, 1, 1), (2, 5, 1)] {
            let args = [
                ty(dtype, &[t, c]),
                ty(dtype, &[t, n, c]),
                ty(dtype, &[t, n]),
                ty(dtype, &[t, n, n]),
                ty(dtype, &[t, n, c]),
            ];
            let e = check_expansion(&single(Op::MhcPostGrad, &args), &inits(&[]));
            let products = e.nodes().iter().filter(|n| n.op == Op::MatMul).count();
            assert_eq!(products, 4, "{e}");
        }
    }
}

/// A non-symmetric `comb` must be read as `comb[t, i, j]` weighting stream
/// `i` into stream `j`, not the other way round: checked by value, not only
/// against the interpreter.
#[test]
fn mhc_post_reads_comb_with_the_interpreters_convention() {
    use birkhoff_ir::{InterpOptions, Tensor, TensorData, interpret};
    let g = single(
        Op::MhcPost,
        &[
            ty(DType::F64, &[1, 1]),
            ty(DType::F64, &[1, 2, 1]),
            ty(DType::F64, &[1, 2]),
            ty(DType::F64, &[1, 2, 2]),
        ],
    );
    let e = expand(&g).expect("expands");
    let t = |shape: &[usize], v: &[f64]| {
        Tensor::new(shape.to_vec(), TensorData::F64(v.to_vec())).expect("tensor")
    };
    let inputs: std::collections::BTreeMap<String, Tensor> = [
        ("a0", t(&[1, 1], &[0.0])),
        ("a1", t(&[1, 2, 1], &[1.0, 10.0])),
        ("a2", t(&[1, 2], &[0.0, 0.0])),
        // comb[0] = [[1, 2], [3, 4]]: out[j] = Σ_i comb[i, j] x[i].
        ("a3", t(&[1, 2, 2], &[1.0, 2.0, 3.0, 4.0])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for graph in [&g, &e] {
        let out = interpret(graph, &inputs, &InterpOptions::default()).expect("runs");
        assert_eq!(out[0].1.to_f64_vec(), vec![31.0, 42.0]);
    }
}

/// Gets used twice, in another order, or not at all; fused ops feeding
/// fused ops; ordinary ops in between.
#[test]
fn tuples_are_taken_apart_wherever_their_elements_are_used() {
    let (t, n, c) = (3, 2, 4);
    let mut g = Graph::new("chain");
    let ins: Vec<_> = pre_types(DType::F32, t, n, c)
        .into_iter()
        .enumerate()
        .map(|(i, ty)| g.add_input(format!("a{i}"), InputKind::Param, ty))
        .collect();
    let pre = g
        .add(
            Op::MhcPre(PreMixSpec {
                norm_eps: FloatAttr(1e-6),
                pre_eps: FloatAttr(0.0),
                post_mult: FloatAttr(2.0),
                sinkhorn: SinkhornSpec {
                    variant: SinkhornVariant::TileKernels,
                    iters: 3,
                    eps: FloatAttr(1e-6),
                },
            }),
            &ins,
        )
        .expect("mhc_pre");
    let comb = g.add(Op::Get { index: 2 }, &[pre]).expect("get");
    let li = g.add(Op::Get { index: 0 }, &[pre]).expect("get");
    let post = g.add(Op::Get { index: 1 }, &[pre]).expect("get");
    let f = g.add(Op::Tanh, &[li]).expect("tanh");
    let out = g.add(Op::MhcPost, &[f, ins[0], post, comb]).expect("post");
    let hc = g
        .add(
            Op::HcPre {
                norm_eps: FloatAttr(1e-6),
            },
            &[out, ins[1], ins[2], ins[3]],
        )
        .expect("hc_pre");
    let li2 = g.add(Op::Get { index: 0 }, &[hc]).expect("get");
    let sm = g.add(Op::Softmax { axis: 1 }, &[li2]).expect("softmax");
    g.add_output("out", out);
    g.add_output("comb", comb);
    g.add_output("sm", sm);
    g.add_output("comb_again", comb);
    check_expansion(&g, &pre_inits());
}

#[test]
fn graphs_without_fused_ops_come_back_unchanged() {
    for info in models() {
        let model = build_model(info.name, &ModelArgs::default()).expect("builds");
        let e = expand(&model.graph).expect("expands");
        assert_eq!(e, model.graph, "{}", info.name);
    }
}

#[test]
fn an_invalid_graph_is_an_input_error() {
    let mut g = single(Op::Softmax { axis: 0 }, &[ty(DType::F32, &[3])]);
    g.add_output("y", birkhoff_ir::ValueId::new(99));
    assert!(matches!(expand(&g), Err(birkhoff_opt::Error::Input(_))));
}

/// Small sizes for the transformer blocks.
fn block(layers: usize) -> ModelArgs {
    ModelArgs {
        tokens: Some(4),
        hidden: Some(8),
        heads: Some(2),
        layers: Some(layers),
        ..ModelArgs::default()
    }
}

/// Every zoo model, with the settings that change what gets fused.
fn zoo_cases() -> Vec<(&'static str, ModelArgs)> {
    let mut cases = Vec::new();
    for info in models() {
        let name = info.name;
        match name {
            "mhc-block" | "hc-block" | "residual-block" => cases.push((name, block(1))),
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
            "sinkhorn" | "mhc-pre" => {
                for variant in [SinkhornVariant::Paper, SinkhornVariant::TileKernels] {
                    for (iters, eps) in [(1, 0.0), (4, 1e-6)] {
                        cases.push((
                            name,
                            ModelArgs {
                                sinkhorn: Some(variant),
                                iters: Some(iters),
                                eps: Some(eps),
                                streams: Some(if iters == 1 { 2 } else { 4 }),
                                ..ModelArgs::default()
                            },
                        ));
                    }
                }
            }
            _ => cases.push((name, ModelArgs::default())),
        }
    }
    cases.push((
        "mhc-pre",
        ModelArgs {
            pre_eps: Some(0.0),
            post_mult: Some(1.0),
            dtype: Some(DType::Bf16),
            ..ModelArgs::default()
        },
    ));
    cases.push((
        "mhc-block",
        ModelArgs {
            dtype: Some(DType::Bf16),
            ..block(1)
        },
    ));
    cases.push((
        "mhc-block",
        ModelArgs {
            sinkhorn: Some(SinkhornVariant::TileKernels),
            pre_eps: Some(0.0),
            post_mult: Some(1.0),
            ..block(2)
        },
    ));
    cases.push((
        "mhc-sublayer",
        ModelArgs {
            dtype: Some(DType::F64),
            layer_fn: Some(LayerFn::LinearTanh),
            ..ModelArgs::default()
        },
    ));
    cases
}

#[test]
fn expanding_an_optimized_zoo_model_gives_back_its_results_and_its_fusions() {
    for (name, args) in zoo_cases() {
        let model = build_model(name, &args).unwrap_or_else(|e| panic!("{name}: {e}"));
        let g = &model.graph;
        let opt = run(g);
        let e = expand(&opt.graph).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(expandable_left(&e), Vec::<&str>::new(), "{name}");
        same_signature(g, &e).unwrap_or_else(|err| panic!("{name}: {err}"));
        // In bf16 the primitive graph rounds every intermediate to bf16
        // while a fused op computes in f32 and rounds only its results, so
        // fusion itself changes bf16 results; there the optimized graph
        // (whose fused ops the expansion spells out) is the reference.
        let bf16 = g.nodes().iter().any(|n| match &n.ty {
            Type::Tensor(t) => t.dtype == DType::Bf16,
            Type::Tuple(_) => false,
        });
        let reference = if bf16 { &opt.graph } else { g };
        for seed in 0..2 {
            assert_agree(reference, &e, &draw_inputs(g, &model.inits, seed));
        }
        // The expansion is spelled the way the DSL writes the math, so the
        // optimizer finds exactly the same fused and semantic ops again.
        let again = run(&e);
        assert_eq!(again.report.sites, opt.report.sites, "{name} {args:?}");
        assert!(!opt.report.sites.is_empty(), "{name}: nothing fused");
    }
}

/// `mhc_pre_grad` expands to the forward up to the logits, the Sinkhorn
/// backward, and the products of the projection's backward; its value is
/// the interpreter's (the vector-Jacobian product of `mhc_pre`).
#[test]
fn mhc_pre_grad_expands_to_the_pre_mix_backward() {
    for dtype in DTYPES {
        for (t, n, c) in [(3, 2, 4), (2, 4, 3), (1, 1, 2)] {
            for spec in sinkhorn_specs().into_iter().filter(|s| s.iters <= 5) {
                for (pre_eps, post_mult) in [(0.0, 1.0), (-0.5, 0.5)] {
                    let op = Op::MhcPreGrad(PreMixSpec {
                        norm_eps: FloatAttr(1e-6),
                        pre_eps: FloatAttr(pre_eps),
                        post_mult: FloatAttr(post_mult),
                        sinkhorn: spec,
                    });
                    let mut args = pre_types(dtype, t, n, c);
                    args.extend([
                        ty(dtype, &[t, c]),
                        ty(dtype, &[t, n]),
                        ty(dtype, &[t, n, n]),
                    ]);
                    let e = check_expansion(&single(op, &args), &pre_inits());
                    let products = e.nodes().iter().filter(|n| n.op == Op::MatMul).count();
                    // x·fnᵀ, d_pre, gᵀ·x and g·fn.
                    assert_eq!(products, 4, "{e}");
                }
            }
        }
    }
}
