//! The testing API users write their own checks with: `Check`, `Verdict`,
//! the rule in words, and what f64 comparisons alone would miss.

use birkhoff::compare::{Check, CheckError, random_inputs};
use birkhoff::dsl::zoo::{ModelArgs, build_model};
use birkhoff::dsl::{Builder, Init, Inits};
use birkhoff::ir::DType;

fn sublayer(args: &ModelArgs) -> birkhoff::dsl::zoo::Model {
    build_model("mhc-sublayer", args).expect("the zoo builds")
}

#[test]
fn a_fused_sublayer_passes_both_checks_and_says_by_which_rule() {
    let model = sublayer(&ModelArgs {
        tokens: Some(8),
        hidden: Some(16),
        ..ModelArgs::default()
    });
    let inputs = random_inputs(&model.graph, &model.inits, 3);
    for check in [Check::optimized().in_declared_dtype(), Check::cpu()] {
        let verdict = check.run(&model.graph, &inputs).expect("runs");
        verdict.assert_passed();
        let text = verdict.to_string();
        assert!(text.contains("passed"), "{text}");
        assert!(
            text.contains("|got - want| <= atol + rtol·max(|want|, floor)"),
            "{text}"
        );
        assert!(
            text.contains("residual_out") && text.contains(" ok: 0 of "),
            "{text}"
        );
        assert!(verdict.into_result().is_ok());
    }
}

/// The optimized graph in f64 is held to the elementwise row of its dtype
/// by default (ten times the reduction row's precision), and a user whose
/// graph agrees to f64 rounding can tighten it further.
#[test]
fn the_optimized_graph_is_held_to_f64_precision() {
    let model = sublayer(&ModelArgs {
        tokens: Some(4),
        hidden: Some(8),
        ..ModelArgs::default()
    });
    let inputs = random_inputs(&model.graph, &model.inits, 1);
    let verdict = Check::optimized().run(&model.graph, &inputs).expect("runs");
    assert_eq!(verdict.outputs[0].tolerance.rtol, 1e-5, "{verdict}");
    assert!(verdict.outputs[0].max_rel < 1e-12, "{verdict}");
    let strict = Check::optimized()
        .tolerance(1e-13, 0.0)
        .run(&model.graph, &inputs)
        .expect("runs");
    assert_eq!(strict.outputs[0].tolerance.rtol, 1e-13);
    assert!(strict.passed(), "{strict}");
    // The compiled program computes in f32: the f64 row would fail it,
    // and its verdict says so in words.
    let cpu_f64_row = Check::cpu()
        .tolerance(1e-10, 1e-10)
        .run(&model.graph, &inputs)
        .expect("runs");
    assert!(!cpu_f64_row.passed(), "{cpu_f64_row}");
    assert!(cpu_f64_row.to_string().contains("FAIL"), "{cpu_f64_row}");
}

/// The paper's Sinkhorn starts with `exp` of the raw logits: logits past
/// 88.7 overflow in f32. The f64 comparison cannot see it; computing in the
/// declared dtype reports the first non-finite element, and so does the
/// compiled program.
#[test]
fn an_f32_overflow_is_reported_as_a_non_finite_output() {
    let b = Builder::new("raw_exp_rows");
    let x = b.input("logits", DType::F32, &[4, 4, 4]);
    let e = x.exp();
    // With an eps in the denominator this is no softmax: exp stays raw.
    b.output("rows", e / (e.sum(&[2], true) + 1e-6));
    let graph = b.build().expect("builds");
    // Logits spread like a projection over n·C = 2048 inputs (std ~ 45).
    let mut inits = Inits::new();
    inits.insert(
        "logits".into(),
        Init::Normal {
            mean: 0.0,
            std: 45.0,
        },
    );
    let inputs = random_inputs(&graph, &inits, 5);
    let in_f64 = Check::optimized().run(&graph, &inputs).expect("runs");
    assert!(in_f64.passed(), "{in_f64}");
    let declared = Check::optimized()
        .in_declared_dtype()
        .run(&graph, &inputs)
        .expect("runs");
    assert!(!declared.passed(), "{declared}");
    let text = declared.to_string();
    assert!(text.contains("non-finite output: element "), "{text}");
    assert!(declared.declared[0].non_finite.is_some());
    let compiled = Check::cpu().run(&graph, &inputs).expect("runs");
    assert!(!compiled.passed(), "{compiled}");
    assert!(
        compiled.to_string().contains("non-finite output"),
        "{compiled}"
    );
    // In a proptest body `?` turns this into the case's failure.
    let err = compiled.into_result().unwrap_err();
    assert!(matches!(err, CheckError::Failed { .. }));
    assert!(err.to_string().contains("non-finite output"), "{err}");
}

/// Many seeds at once: the worst case per output, printed with its seed.
#[test]
fn case_summaries_print_the_worst_seed() {
    let model = sublayer(&ModelArgs {
        tokens: Some(4),
        streams: Some(1),
        hidden: Some(8),
        ..ModelArgs::default()
    });
    let summary = birkhoff::compare::compare_optimized_cases(&model.graph, &model.inits, 3, 10)
        .expect("runs");
    let text = summary.to_string();
    assert!(summary.passed(), "{text}");
    assert!(text.starts_with("3 input sets: passed"), "{text}");
    assert!(text.contains("worst at seed 1"), "{text}");
    assert!(text.contains("0 of 3 sets outside the bound"), "{text}");
}
