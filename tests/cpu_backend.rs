//! The CPU backend against the f64 reference interpreter: every zoo model,
//! fused and unfused, on proptest-chosen shapes (including sizes that are
//! not multiples of the vector width or the thread count) and values; and
//! random graphs of every op (the compiler's fuzzer).
//!
//! Tolerances are the `docs/design.md` §3 reduction row of each output's dtype
//! (`birkhoff::compare::compare`); f32 overflow in intermediates is judged
//! against the interpreter's f32 mode (see `check`). bf16 graphs are compared to the
//! interpreter with the bf16 row too: a fused kernel rounds to bf16 only
//! where it stores.

use std::collections::BTreeMap;

use birkhoff::compare::{compare, compare_compiled, random_inputs};
use birkhoff::dsl::zoo::{ModelArgs, build_model, models};
use birkhoff::ir::{DType, Graph, InterpOptions, Tensor, interpret};
use birkhoff::{CompileOptions, Target, compile_with};
use birkhoff_testkit::{proptest_cases, zoo_case};
use proptest::prelude::*;

/// Compiles `graph` for the CPU (checked mode: every access bounds-checked)
/// and compares it with the interpreter on `inputs` (the f64 oracle, and
/// the f32 interpreter where f32 overflow decides: `compare_compiled`),
/// with the tolerances multiplied by `factor`.
fn check(
    graph: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    optimize: bool,
    factor: f64,
) -> Result<(), TestCaseError> {
    let opts = CompileOptions {
        target: Target::Cpu,
        optimize,
        checked: true,
        ..CompileOptions::default()
    };
    let exe = compile_with(graph, &opts)
        .map_err(|e| TestCaseError::fail(format!("compile: {e}\n{graph}")))?;
    let got = exe
        .run(inputs)
        .map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
    let errs = compare_compiled(graph, inputs, &got, factor)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for e in &errs {
        prop_assert!(
            e.within,
            "@{} (optimize: {optimize}): {e}\n{graph}\ngot {:?}",
            graph.name(),
            got
        );
    }
    Ok(())
}

/// Whole models chain dozens of ops per layer; `docs/design.md` §3 bounds each op
/// family, so a model is held to 10x the reduction row (f32: 1e-3 relative).
const MODEL_FACTOR: f64 = 10.0;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(12)))]

    #[test]
    fn zoo_models_on_cpu_match_the_interpreter((name, args, seed) in zoo_case(), optimize in any::<bool>()) {
        let model = build_model(&name, &args).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let inputs = random_inputs(&model.graph, &model.inits, seed);
        check(&model.graph, &inputs, optimize, MODEL_FACTOR)?;
    }

    #[test]
    fn random_graphs_on_cpu_match_the_interpreter(
        (g, ins) in birkhoff_testkit::graph().prop_flat_map(|g| { let i = birkhoff_testkit::inputs(&g, false); (Just(g), i) })
    ) {
        check(&g, &ins, false, 1.0)?;
    }
}

#[test]
fn every_zoo_model_in_f64_matches_tightly() {
    // f64 graphs: the compiled program agrees with the oracle to the f64
    // reduction tolerance (1e-10), fused and not.
    for info in models() {
        let model = build_model(
            info.name,
            &ModelArgs {
                dtype: Some(DType::F64),
                ..ModelArgs::default()
            },
        )
        .unwrap();
        let inputs = random_inputs(&model.graph, &model.inits, 5);
        for optimize in [false, true] {
            check(&model.graph, &inputs, optimize, MODEL_FACTOR)
                .unwrap_or_else(|e| panic!("{}: {e}", info.name));
        }
    }
}

#[test]
fn the_interpreter_target_is_the_reference() {
    let model = build_model("mhc-pre", &ModelArgs::default()).unwrap();
    let inputs = random_inputs(&model.graph, &model.inits, 1);
    let exe = compile_with(
        &model.graph,
        &CompileOptions {
            target: Target::Interp,
            ..CompileOptions::default()
        },
    )
    .unwrap();
    let fused = exe.run(&inputs).unwrap();
    let plain = interpret(&model.graph, &inputs, &InterpOptions::default()).unwrap();
    for e in compare(&model.graph, &plain, &fused).unwrap() {
        assert!(e.within, "{e}");
    }
}
