//! The zoo's bf16 models (`--dtype bf16`): the optimizer fuses them as it
//! does f32 models, the fused program agrees with the unfused graph in the
//! interpreter and on the CPU backend (`birkhoff::compare`'s bf16 bound),
//! and a fused mHC kernel rounds to bf16 once: its result is the f32
//! computation on the same inputs, rounded, within one bf16 ulp.

use std::collections::BTreeMap;

use birkhoff::compare::{CheckError, compare_cases, random_inputs, reference_options};
use birkhoff::dsl::zoo::{Flag, Model, ModelArgs, build_model, model_info, models};
use birkhoff::ir::{DType, InterpOptions, Tensor, TensorType, Type, interpret};
use birkhoff::{Target, compile};

/// `args` in `dtype`, keeping only the flags `model` takes.
fn args_for(model: &str, dtype: DType, t: usize, n: usize, c: usize) -> ModelArgs {
    let info = model_info(model).expect("a zoo model");
    let takes = |f: Flag| info.flags.contains(&f);
    ModelArgs {
        tokens: Some(t),
        streams: takes(Flag::Streams).then_some(n),
        hidden: takes(Flag::Hidden).then_some(c),
        heads: takes(Flag::Heads).then_some(2),
        dtype: Some(dtype),
        ..ModelArgs::default()
    }
}

fn build(model: &str, args: &ModelArgs) -> Model {
    build_model(model, args).unwrap_or_else(|e| panic!("{model}: {e}"))
}

/// The same tensors as f32 (bf16 values are exact in f32).
fn widened(inputs: &BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    inputs
        .iter()
        .map(|(k, t)| {
            let ty = TensorType::new(DType::F32, t.shape().to_vec());
            (k.clone(), Tensor::from_f64(ty, &t.to_f64_vec()).unwrap())
        })
        .collect()
}

#[test]
fn bf16_models_fuse_like_f32_models() {
    for info in models() {
        let bf = build(info.name, &args_for(info.name, DType::Bf16, 16, 4, 32));
        let f32 = build(info.name, &args_for(info.name, DType::F32, 16, 4, 32));
        let ob = birkhoff::opt::optimize(&bf.graph, |_| false).unwrap();
        let of = birkhoff::opt::optimize(&f32.graph, |_| false).unwrap();
        assert_eq!(
            ob.report.sites, of.report.sites,
            "{}: bf16 and f32 fuse differently",
            info.name
        );
        assert_eq!(ob.report.ops_after, of.report.ops_after, "{}", info.name);
        // Every float in the optimized graph stays bf16 (fusion never
        // widens storage).
        for v in ob.graph.values() {
            let dtypes: Vec<DType> = match ob.graph.value_type(v) {
                Type::Tensor(t) => vec![t.dtype],
                Type::Tuple(ts) => ts.iter().map(|t| t.dtype).collect(),
            };
            for d in dtypes {
                assert!(!d.is_float() || d == DType::Bf16, "{}: {d}", info.name);
            }
        }
    }
    // The mHC sublayer becomes the two fused kernels in bf16 too.
    let m = build(
        "mhc-sublayer",
        &args_for("mhc-sublayer", DType::Bf16, 16, 4, 32),
    );
    let sites = birkhoff::opt::optimize(&m.graph, |_| false)
        .unwrap()
        .report
        .sites;
    assert_eq!(sites.get("mhc_pre"), Some(&1), "{sites:?}");
    assert_eq!(sites.get("mhc_post"), Some(&1), "{sites:?}");
}

/// Fused against unfused, in the interpreter and compiled for the CPU, at
/// the default shapes and at odd ones (sizes that are not multiples of the
/// vector width).
#[test]
fn fused_bf16_programs_match_the_unfused_graph() {
    for info in models() {
        for (t, n, c) in [(32, 4, 64), (7, 3, 22)] {
            let m = build(info.name, &args_for(info.name, DType::Bf16, t, n, c));
            let g = &m.graph;
            let optimized = birkhoff::opt::optimize(g, |_| false).unwrap().graph;
            let interp = compare_cases(g, &m.inits, 4, 11, |ins| {
                Ok(interpret(&optimized, ins, &reference_options())?)
            })
            .unwrap();
            let exe = compile(g, Target::Cpu).unwrap();
            let cpu = compare_cases(g, &m.inits, 4, 11, |ins| {
                exe.run(ins).map_err(|e| CheckError::Mismatch {
                    name: "(all)".into(),
                    detail: e.to_string(),
                })
            })
            .unwrap();
            for (what, s) in [("interpreter", interp), ("cpu", cpu)] {
                for w in &s.outputs {
                    assert!(
                        w.failures == 0,
                        "{} [{t},{n},{c}] on the {what}: {} (seed {})",
                        info.name,
                        w.error,
                        w.worst_seed
                    );
                }
            }
        }
    }
}

/// One bf16 ulp at `x`: 2^(e-7) for `x` in [2^e, 2^(e+1)).
fn bf16_ulp(x: f64) -> f64 {
    let x = x.abs().max(f64::MIN_POSITIVE);
    2f64.powi(x.log2().floor() as i32 - 7)
}

/// A single fused mHC kernel computes in f32 and rounds its results once:
/// within one bf16 ulp (a value near a rounding midpoint may round either
/// way) of the f32 model run exactly on the same inputs and rounded to bf16.
#[test]
fn fused_bf16_kernels_round_only_their_results() {
    for name in ["sinkhorn", "mhc-pre", "hc-pre", "mhc-post"] {
        for (t, n, c) in [(32, 4, 64), (9, 3, 40)] {
            let bf = build(name, &args_for(name, DType::Bf16, t, n, c));
            let f32 = build(name, &args_for(name, DType::F32, t, n, c));
            let optimized = birkhoff::opt::optimize(&bf.graph, |_| false).unwrap().graph;
            let exe = compile(&bf.graph, Target::Cpu).unwrap();
            for seed in 0..3 {
                let inputs = random_inputs(&bf.graph, &bf.inits, seed);
                let exact = interpret(&f32.graph, &widened(&inputs), &reference_options()).unwrap();
                // The fused ops in f64, their results rounded to bf16.
                let fused = interpret(&optimized, &inputs, &InterpOptions::default()).unwrap();
                let native = exe.run(&inputs).unwrap();
                for (what, got) in [("interpreter", fused), ("cpu", native)] {
                    for ((out, want), (_, got)) in exact.iter().zip(&got) {
                        assert_eq!(got.dtype(), DType::Bf16, "{name} {out}");
                        for (k, (&w, g)) in
                            want.to_f64_vec().iter().zip(got.to_f64_vec()).enumerate()
                        {
                            let w = DType::Bf16.round(w);
                            assert!(
                                (g - w).abs() <= bf16_ulp(w),
                                "{name} [{t},{n},{c}] seed {seed} on the {what}: {out}[{k}] = {g}, want {w}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The bf16 bound is not vacuous: a program that differs in substance (here
/// a Sinkhorn projection stopped after 2 rounds instead of 20, or post
/// gates 10% larger) fails it.
#[test]
fn the_bf16_bound_catches_a_wrong_program() {
    let cases = [
        (
            "sinkhorn",
            ModelArgs {
                iters: Some(2),
                ..args_for("sinkhorn", DType::Bf16, 32, 4, 64)
            },
        ),
        (
            "mhc-pre",
            ModelArgs {
                post_mult: Some(2.2),
                ..args_for("mhc-pre", DType::Bf16, 32, 4, 64)
            },
        ),
    ];
    for (name, wrong_args) in cases {
        let m = build(name, &args_for(name, DType::Bf16, 32, 4, 64));
        let wrong = build(name, &wrong_args);
        let exe = compile(&wrong.graph, Target::Cpu).unwrap();
        let s = compare_cases(&m.graph, &m.inits, 2, 0, |ins| {
            exe.run(ins).map_err(|e| CheckError::Mismatch {
                name: "(all)".into(),
                detail: e.to_string(),
            })
        })
        .unwrap();
        assert!(!s.passed(), "{name}: {:?}", s.outputs);
    }
}
