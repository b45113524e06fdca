//! The DSL builder: graphs it builds, and mistakes it reports.

use birkhoff_dsl::{Builder, Error, concat, nn};
use birkhoff_ir::{DType, InterpOptions, Op, Tensor, TensorType, interpret, parse_and_verify};
use std::collections::BTreeMap;

fn build_errors(b: Builder) -> Vec<String> {
    match b.build() {
        Err(Error::Build { errors, .. }) => errors.iter().map(|e| e.to_string()).collect(),
        other => panic!("expected build errors, got {other:?}"),
    }
}

#[test]
fn shape_mistakes_are_reported_at_the_callers_line() {
    let b = Builder::new("bad");
    let x = b.input("x", DType::F32, &[8, 64]);
    let y = b.input("y", DType::F32, &[8, 32]);
    let line = line!() + 1;
    let z = x + y;
    b.output("z", z.exp());
    let errs = build_errors(b);
    assert_eq!(errs.len(), 1, "poisoned handles must not cascade: {errs:?}");
    assert!(
        errs[0].starts_with(&format!("{}:{line}:", file!())),
        "{}",
        errs[0]
    );
    assert!(
        errs[0].contains("cannot broadcast f32[8,64] with f32[8,32]"),
        "{}",
        errs[0]
    );
}

#[test]
fn every_independent_mistake_is_collected() {
    let b = Builder::new("bad");
    let x = b.input("x", DType::F32, &[2, 3]);
    let _ = x.sum(&[5], false);
    let _ = x.reshape(&[7]);
    let _ = x.permute(&[0, 0]);
    let _ = b.input("x", DType::F32, &[1]);
    let _ = b.input("not an identifier", DType::F32, &[1]);
    let i = b.input("i", DType::I32, &[2, 3]);
    let _ = i.exp();
    b.output("out", x);
    b.output("out", x);
    let errs = build_errors(b);
    let expect = [
        "axis 5 out of range",
        "element counts differ",
        "not a permutation",
        "declared twice",
        "not an identifier",
        "exp is not defined for i32",
        "named twice",
    ];
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    for (e, want) in errs.iter().zip(expect) {
        assert!(e.contains(want), "{e} should mention {want}");
    }
}

#[test]
fn a_graph_without_outputs_is_an_error() {
    let b = Builder::new("empty");
    let _ = b.input("x", DType::F32, &[1]);
    assert!(build_errors(b)[0].contains("no outputs"));
}

#[test]
fn absurd_shapes_are_errors_not_allocations() {
    let b = Builder::new("huge");
    let x = b.input("x", DType::F32, &[1 << 30, 1 << 30]);
    b.output("y", x);
    assert!(build_errors(b)[0].contains("too many elements"));
}

#[test]
fn broadcasting_inserts_explicit_nodes() {
    let b = Builder::new("bc");
    let x = b.input("x", DType::F32, &[4, 1, 3]);
    let y = b.input("y", DType::F32, &[5, 1]);
    let z = x * y + 1.0;
    assert_eq!(z.shape(), vec![4, 5, 3]);
    b.output("z", z);
    let g = b.build().unwrap();
    let broadcasts = g
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::Broadcast { .. }))
        .count();
    assert_eq!(broadcasts, 2, "{g}");
}

#[test]
fn inputs_declared_late_are_moved_first_and_the_text_round_trips() {
    let b = Builder::new("late");
    let x = b.input("x", DType::F32, &[2, 2]);
    let e = x.exp();
    let w = b.param("w", DType::F32, &[2, 2]);
    b.output("y", e.matmul(w));
    let g = b.build().unwrap();
    assert_eq!(g.inputs().len(), 2);
    assert_eq!(g.input_name(g.inputs()[1]), Some("w"));
    assert_eq!(parse_and_verify(&g.to_string()).unwrap()[0], g);
}

/// Runs a one-output graph on named f64 inputs.
fn eval(g: &birkhoff_ir::Graph, inputs: &[(&str, &[usize], &[f64])]) -> Vec<f64> {
    let ins: BTreeMap<_, _> = inputs
        .iter()
        .map(|(n, s, v)| {
            (
                n.to_string(),
                Tensor::from_f64(TensorType::new(DType::F64, *s), v).unwrap(),
            )
        })
        .collect();
    interpret(g, &ins, &InterpOptions::default())
        .unwrap()
        .remove(0)
        .1
        .to_f64_vec()
}

#[test]
fn composites_compute_what_they_say() {
    let b = Builder::new("nn");
    let x = b.input("x", DType::F64, &[2, 3]);
    b.output("softmax", nn::softmax(x, 1));
    let g = b.build().unwrap();
    let y = eval(&g, &[("x", &[2, 3], &[0.0, 1.0, 2.0, 5.0, 5.0, 5.0])]);
    let z = 1.0 + 1f64.exp() + 2f64.exp();
    let want = [
        1.0 / z,
        1f64.exp() / z,
        2f64.exp() / z,
        1.0 / 3.0,
        1.0 / 3.0,
        1.0 / 3.0,
    ];
    for (g, w) in y.iter().zip(want) {
        assert!((g - w).abs() < 1e-15, "{y:?}");
    }

    let b = Builder::new("silu_norm");
    let x = b.input("x", DType::F64, &[1, 4]);
    b.output("y", nn::silu(nn::rms_norm(x, None, 0.0)));
    let g = b.build().unwrap();
    // rms of [3, -3, 3, -3] is 3, so the norm gives ±1; silu(1) = 1/(1+e^-1).
    let y = eval(&g, &[("x", &[1, 4], &[3.0, -3.0, 3.0, -3.0])]);
    let s1 = 1.0 / (1.0 + (-1f64).exp());
    let s_1 = -1.0 / (1.0 + 1f64.exp());
    for (g, w) in y.iter().zip([s1, s_1, s1, s_1]) {
        assert!((g - w).abs() < 1e-15, "{y:?}");
    }
}

#[test]
fn causal_attention_hides_the_future() {
    // One head, T = 3, C = 1: with q = k = 0 every visible score is equal,
    // so token t averages v over positions 0..=t.
    let b = Builder::new("attn");
    let q = b.input("q", DType::F64, &[3, 2]);
    let k = b.input("k", DType::F64, &[3, 2]);
    let v = b.input("v", DType::F64, &[3, 2]);
    b.output("o", nn::causal_attention(q, k, v, 2));
    let g = b.build().unwrap();
    let zeros = [0.0; 6];
    let vals = [1.0, 10.0, 2.0, 20.0, 6.0, 60.0];
    let o = eval(
        &g,
        &[
            ("q", &[3, 2], &zeros),
            ("k", &[3, 2], &zeros),
            ("v", &[3, 2], &vals),
        ],
    );
    let want = [1.0, 10.0, 1.5, 15.0, 3.0, 30.0];
    for (g, w) in o.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{o:?}");
    }
}

#[test]
fn concat_and_linear_shapes() {
    let b = Builder::new("cat");
    let x = b.input("x", DType::F32, &[2, 3, 4]);
    let w = b.param("w", DType::F32, &[4, 5]);
    let y = nn::linear(x, w);
    assert_eq!(y.shape(), vec![2, 3, 5]);
    let c = concat(&[x, x, x], 1).unwrap();
    assert_eq!(c.shape(), vec![2, 9, 4]);
    b.output("y", y);
    b.output("c", c);
    assert!(b.build().is_ok());
}

#[test]
fn var_ids_agree_with_the_printed_graph_when_inputs_come_late() {
    let b = Builder::new("late");
    let x = b.input("x", DType::F32, &[2, 2]);
    let e = x.exp();
    let w = b.param("w", DType::F32, &[2, 2]);
    let y = e.matmul(w);
    b.output("y", y);
    let (e_id, y_id) = (e.id().unwrap(), y.id().unwrap());
    let text = b.build().unwrap().to_string();
    assert!(text.contains(&format!("  {e_id} = exp %x")), "{text}");
    assert!(
        text.contains(&format!("  {y_id} = matmul {e_id}, %w")),
        "{text}"
    );
}

#[test]
fn named_values_keep_their_names_through_printing_and_optimization() {
    let b = Builder::new("named");
    let x = b.input("x", DType::F64, &[2, 3]);
    let sq = (x * x).named("sq");
    let s = sq.sum(&[1], true).named("row_sum");
    b.name(s, "row_sum_again");
    b.output("y", x / s);
    // A second name for one value renames it; that is no mistake.
    assert!(
        b.build()
            .unwrap()
            .to_string()
            .contains("%row_sum_again = reduce_sum")
    );

    let b = Builder::new("named");
    let x = b.input("x", DType::F64, &[2, 3]);
    let sq = (x * x).named("sq");
    let s = sq.sum(&[1], true).named("row_sum");
    b.output("y", x / s);
    let g = b.build().unwrap();
    let text = g.to_string();
    assert!(text.contains("  %sq = mul %x, %x"), "{text}");
    assert!(text.contains("%row_sum = reduce_sum %sq"), "{text}");
    assert_eq!(parse_and_verify(&text).unwrap()[0], g);
}

#[test]
fn naming_mistakes_are_recorded() {
    let b = Builder::new("names");
    let x = b.input("x", DType::F32, &[2]);
    let y = x.exp();
    b.name(y, "not an identifier");
    b.name(y, "x");
    b.name(x, "other");
    let z = y.named("z");
    let _ = z.exp().named("z");
    b.output("out", z);
    let errs = build_errors(b);
    let expect = [
        "not an identifier",
        "is an input's name",
        "cannot name an input",
        "given twice",
    ];
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    for (e, want) in errs.iter().zip(expect) {
        assert!(e.contains(want), "{e} should mention {want}");
    }
}

#[test]
fn a_poisoned_value_raises_no_follow_on_errors() {
    let b = Builder::new("poison");
    let x = b.input("x", DType::F32, &[2, 3]);
    let bad = x.reshape(&[7]);
    let w = b.param("w", DType::F32, &[3, 4]);
    let _ = bad.slice_axis(1, 0, 1);
    let _ = bad.transpose();
    let _ = nn::linear(bad, w);
    let _ = nn::causal_attention(bad, bad, bad, 2);
    b.output("y", x);
    let errs = build_errors(b);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].contains("element counts differ"), "{}", errs[0]);
}

#[test]
fn builder_concat_records_an_empty_list() {
    let b = Builder::new("cat");
    let x = b.input("x", DType::F32, &[2, 3]);
    assert_eq!(b.concat(&[x, x], 0).shape(), vec![4, 3]);
    let _ = b.concat(&[], 0);
    b.output("y", x);
    let errs = build_errors(b);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].contains("concat of no parts"), "{}", errs[0]);
}
