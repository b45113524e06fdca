//! Graphs far longer or wider than any model: a 100,000-op chain and a
//! graph of 20,000 inputs compile for the CPU without overflowing the
//! stack (fused expressions are cut at `MAX_FUSED_DEPTH`), and compute
//! what the interpreter's f32 mode does, bit for bit.

use std::collections::BTreeMap;

use birkhoff::compare::random_inputs;
use birkhoff::dsl::Inits;
use birkhoff::ir::{Graph, InterpOptions, Precision, interpret, parse_and_verify};
use birkhoff::{CompileOptions, Target, compile_with};

fn cpu_matches_the_f32_interpreter(g: &Graph) {
    let inputs: BTreeMap<_, _> = random_inputs(g, &Inits::new(), 1);
    let opts = CompileOptions {
        target: Target::Cpu,
        optimize: false,
        ..CompileOptions::default()
    };
    let got = compile_with(g, &opts)
        .expect("compiles")
        .run(&inputs)
        .expect("runs");
    let f32_mode = InterpOptions {
        precision: Precision::F32,
        ..InterpOptions::default()
    };
    let want = interpret(g, &inputs, &f32_mode).expect("interprets");
    assert_eq!(got, want);
}

#[test]
fn a_hundred_thousand_op_chain_compiles() {
    let n = 100_000;
    let mut text =
        String::from("graph @t(%x: f32[4]) -> (y: f32[4]) {\n  %v0 = add %x, %x : f32[4]\n");
    for i in 1..n {
        text += &format!("  %v{i} = add %v{}, %x : f32[4]\n", i - 1);
    }
    text += &format!("  return %v{}\n}}\n", n - 1);
    let g = parse_and_verify(&text).expect("valid").remove(0);
    cpu_matches_the_f32_interpreter(&g);
}

#[test]
fn twenty_thousand_inputs_compile() {
    let n = 20_000;
    let params: Vec<String> = (0..n).map(|i| format!("%x{i}: f32[2]")).collect();
    let mut text = format!(
        "graph @t({}) -> (y: f32[2]) {{\n  %s1 = add %x0, %x1 : f32[2]\n",
        params.join(", ")
    );
    for i in 2..n {
        text += &format!("  %s{i} = add %s{}, %x{i} : f32[2]\n", i - 1);
    }
    text += &format!("  return %s{}\n}}\n", n - 1);
    let g = parse_and_verify(&text).expect("valid").remove(0);
    cpu_matches_the_f32_interpreter(&g);
}
