//! Names through the optimizer: a value keeps the name (or number) it had
//! in the input wherever it survives, so that dumps after each pass can be
//! diffed against the input, and the fusion report cites input values.

use birkhoff_dsl::zoo::{ModelArgs, build_model};
use birkhoff_ir::{Graph, parse_and_verify};
use birkhoff_opt::optimize;

fn parse(text: &str) -> Graph {
    parse_and_verify(text).expect("valid IR").remove(0)
}

/// A pass that changes nothing writes the input back line for line,
/// under the input's own names (numbers out of order, names by hand).
#[test]
fn a_pass_that_changes_nothing_dumps_the_input_unchanged() {
    let g = parse(
        "graph @g(%x: f32[4,8], param %w: f32[8,8]) -> (y: f32[4,8]) {
  %h = matmul %x, %w : f32[4,8]
  %40 = tanh %h : f32[4,8]
  %7 = add %40, %x : f32[4,8]
  return %7
}",
    );
    let out = optimize(&g, |_| true).expect("optimizes");
    let input = g.depth_first().to_string();
    for (pass, snapshot) in &out.snapshots {
        assert_eq!(snapshot.to_string(), input, "after {pass}");
    }
    assert_eq!(out.graph.to_string(), input);
}

/// In a zoo model, every dump differs from the one before only in lines
/// the pass changed: a pass that applied no rule leaves the text as it
/// was, and the fused result names its values after the input's.
#[test]
fn zoo_dumps_differ_only_where_a_pass_changed_something() {
    let args = ModelArgs {
        tokens: Some(4),
        streams: Some(2),
        hidden: Some(8),
        iters: Some(3),
        ..ModelArgs::default()
    };
    let model = build_model("mhc-sublayer", &args).expect("builds");
    let out = optimize(&model.graph, |_| true).expect("optimizes");
    let input = model.graph.depth_first().to_string();
    // The "input" snapshot is the input as the e-graph holds it: the same
    // text but for the values equal to earlier ones, merged (one line each).
    let (first, held) = &out.snapshots[0];
    assert_eq!(first, "input");
    let held = held.to_string();
    assert_eq!(
        input.lines().count() - held.lines().count(),
        out.report.duplicates_merged,
        "{held}"
    );
    assert!(out.report.duplicates_merged > 0);
    // After it, a pass that applied no rule leaves the text as it was.
    let mut before = held.clone();
    for ((pass, snapshot), stats) in out.snapshots[1..].iter().zip(&out.report.passes) {
        let text = snapshot.to_string();
        if stats.applied.values().all(|&n| n == 0) {
            assert_eq!(text, before, "{pass} applied no rule");
        }
        before = text;
    }
    // canonicalize folded reshape pairs (`fold-reshape`); everything else
    // is the held input's text, verbatim.
    let canon = out.snapshots[1].1.to_string();
    let changed = held
        .lines()
        .filter(|l| !canon.lines().any(|c| c == *l))
        .count();
    assert!(changed <= 4, "{changed} lines changed:\n{held}\n{canon}");
    // Each fused site cites values of the input, by the input's names.
    for site in &out.report.site_details {
        assert!(!site.replaces.is_empty(), "{site:?}");
        for name in &site.replaces {
            let first = name.split("..").next().unwrap();
            assert!(
                input.contains(&format!("  {first} = ")),
                "{name} not in the input"
            );
        }
    }
}

/// A name given in the DSL survives optimization when its value does.
#[test]
fn a_dsl_name_survives_optimization() {
    let b = birkhoff_dsl::Builder::new("named");
    let x = b.input("x", birkhoff_ir::DType::F32, &[4, 8]);
    let w = b.param("w", birkhoff_ir::DType::F32, &[8, 8]);
    let h = x.matmul(w).named("hidden");
    b.output("y", h.tanh());
    let g = b.build().expect("builds");
    let out = optimize(&g, |_| false).expect("optimizes");
    let text = out.graph.to_string();
    assert!(text.contains("  %hidden = matmul %x, %w"), "{text}");
}
