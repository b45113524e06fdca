//! Lowered programs compute what their graphs compute: the kernel IR
//! interpreter against the graph interpreter, both in f64, on random
//! graphs (the lowering's fuzzer) and on every zoo model, fused and not.

use std::collections::BTreeMap;

use birkhoff_dsl::zoo::{ModelArgs, build_model, models};
use birkhoff_dsl::{Rng, random_tensor};
use birkhoff_ir::kernel::run_program;
use birkhoff_ir::{DType, Graph, InterpOptions, Precision, Tensor, interpret};
use birkhoff_lower::{GemmSupport, LowerOptions, PreMixProjection, lower};
use proptest::prelude::*;

/// Element-by-element closeness. bf16 values round at different points in
/// the two (a template keeps its intermediates in f32, and may use an
/// output row as scratch), so bf16 allows 8 units of 2^-8; others are tight.
fn assert_same(
    graph: &Graph,
    want: &[(String, Tensor)],
    got: &[(String, Tensor)],
) -> Result<(), TestCaseError> {
    for ((name, w), (gname, g)) in want.iter().zip(got) {
        prop_assert_eq!(name, gname);
        prop_assert_eq!(w.ty(), g.ty());
        let tol = match w.dtype() {
            DType::Bf16 => 8.0 / 256.0,
            DType::F32 | DType::F64 => 1e-12,
            _ => 0.0,
        };
        for (i, (a, b)) in w.to_f64_vec().iter().zip(g.to_f64_vec()).enumerate() {
            let ok =
                (a.is_nan() && b.is_nan()) || a == &b || (a - b).abs() <= tol * a.abs().max(1.0);
            prop_assert!(
                ok,
                "@{} output {} element {}: interpreter {} vs lowered {}\n{}",
                graph.name(),
                name,
                i,
                a,
                b,
                graph
            );
        }
    }
    Ok(())
}

fn check(
    graph: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    opts: &LowerOptions,
) -> Result<(), TestCaseError> {
    let program = lower(graph, opts).map_err(|e| TestCaseError::fail(format!("{e}\n{graph}")))?;
    let want = interpret(graph, inputs, &InterpOptions::default())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let got = run_program(&program, inputs, Precision::F64)
        .map_err(|e| TestCaseError::fail(format!("{e}\n{program}")))?;
    assert_same(graph, &want, &got)
}

fn zoo_inputs(model: &birkhoff_dsl::zoo::Model, seed: u64) -> BTreeMap<String, Tensor> {
    let g = &model.graph;
    let root = Rng::new(seed);
    g.inputs()
        .iter()
        .map(|&v| {
            let name = g.input_name(v).unwrap_or_default();
            (
                name.to_string(),
                random_tensor(g.ty(v), &model.inits[name], &mut root.fork(name)),
            )
        })
        .collect()
}

proptest! {
    // 256 cases by default; PROPTEST_CASES runs more.
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)))]

    #[test]
    fn random_graphs_lower_to_equivalent_programs(
        (g, ins) in birkhoff_testkit::graph()
            .prop_flat_map(|g| { let i = birkhoff_testkit::inputs(&g, false); (Just(g), i) })
    ) {
        check(&g, &ins, &LowerOptions::default())?;
    }
}

#[test]
fn unfused_zoo_models_lower_to_equivalent_programs() {
    for info in models() {
        let args = ModelArgs {
            dtype: Some(DType::F64),
            ..ModelArgs::default()
        };
        let model = build_model(info.name, &args).unwrap();
        check(
            &model.graph,
            &zoo_inputs(&model, 1),
            &LowerOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", info.name));
    }
}

#[test]
fn fused_zoo_models_lower_to_equivalent_programs() {
    for info in models() {
        for projection in [PreMixProjection::InKernel, PreMixProjection::Gemm] {
            let args = ModelArgs {
                dtype: Some(DType::F64),
                ..ModelArgs::default()
            };
            let model = build_model(info.name, &args).unwrap();
            let fused = birkhoff_opt::optimize(&model.graph, |_| false)
                .unwrap()
                .graph;
            check(
                &fused,
                &zoo_inputs(&model, 2),
                &LowerOptions {
                    projection,
                    ..LowerOptions::default()
                },
            )
            .unwrap_or_else(|e| panic!("{} {projection:?}: {e}", info.name));
        }
    }
}

/// The matrix-product extras a GPU-like backend takes (bf16 operands, row
/// sums of squares) and the lowering without kernel fusion compute the
/// same, in f64 and in bf16.
#[test]
fn gemm_extras_and_unfused_kernels_lower_to_equivalent_programs() {
    let everything = GemmSupport {
        bf16_operands: true,
        row_sumsq: true,
    };
    for name in ["mhc-pre", "hc-pre", "mhc-sublayer", "mhc-block"] {
        for dtype in [DType::F64, DType::Bf16] {
            for (gemm, fuse_kernels) in [
                (everything, true),
                (everything, false),
                (GemmSupport::default(), false),
            ] {
                let args = ModelArgs {
                    dtype: Some(dtype),
                    ..ModelArgs::default()
                };
                let model = build_model(name, &args).unwrap();
                let fused = birkhoff_opt::optimize(&model.graph, |_| false)
                    .unwrap()
                    .graph;
                let opts = LowerOptions {
                    projection: PreMixProjection::Gemm,
                    gemm,
                    fuse_kernels,
                };
                let program = lower(&fused, &opts).unwrap();
                let text = program.to_string();
                assert_eq!(
                    text.contains("row_sumsq"),
                    gemm.row_sumsq,
                    "{name} {dtype}:\n{text}"
                );
                check(&fused, &zoo_inputs(&model, 4), &opts)
                    .unwrap_or_else(|e| panic!("{name} {dtype} {gemm:?} fuse={fuse_kernels}: {e}"));
            }
        }
    }
}

#[test]
fn f32_interpreter_modes_agree_closely() {
    let model = build_model("mhc-block", &ModelArgs::default()).unwrap();
    let program = lower(&model.graph, &LowerOptions::default()).unwrap();
    let ins = zoo_inputs(&model, 3);
    let want = interpret(
        &model.graph,
        &ins,
        &InterpOptions {
            precision: Precision::F32,
            ..InterpOptions::default()
        },
    )
    .unwrap();
    let got = run_program(&program, &ins, Precision::F32).unwrap();
    let (w, g) = (want[0].1.to_f64_vec(), got[0].1.to_f64_vec());
    let worst = w
        .iter()
        .zip(&g)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs() / a.abs().max(1.0)));
    assert!(worst < 1e-4, "f32 lowering vs f32 interpreter: {worst}");
}
