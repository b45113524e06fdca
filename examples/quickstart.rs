//! Build a graph with the DSL, print its IR, and run it in the reference
//! interpreter: a per-token RMSNorm followed by a linear layer.

use std::collections::BTreeMap;

use birkhoff::dsl::{Builder, nn};
use birkhoff::ir::{DType, InterpOptions, Tensor, TensorType, interpret, parse_and_verify};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Write the model the way the math reads.
    let b = Builder::new("norm_linear");
    let x = b.input("x", DType::F32, &[2, 4]);
    let w = b.param("w", DType::F32, &[4, 3]);
    let y = nn::linear(nn::rms_norm(x, None, 1e-6), w);
    b.output("y", y);
    let graph = b.build()?;

    // 2. The text IR is a first-class artifact: it prints and parses back.
    let text = graph.to_string();
    println!("{text}");
    assert_eq!(parse_and_verify(&text)?[0], graph);

    // 3. Run it on concrete inputs.
    let x = Tensor::from_f64(
        TensorType::new(DType::F32, [2, 4]),
        &[1.0, -1.0, 1.0, -1.0, 2.0, 2.0, 2.0, 2.0],
    )?;
    let w = Tensor::from_f64(
        TensorType::new(DType::F32, [4, 3]),
        &[1.0, 0.0, 0.5, 0.0, 1.0, 0.5, 0.0, 0.0, 0.5, 0.0, 0.0, 0.5],
    )?;
    let inputs = BTreeMap::from([("x".to_string(), x), ("w".to_string(), w)]);
    let out = interpret(&graph, &inputs, &InterpOptions::default())?;
    let y = out[0].1.to_f64_vec();
    println!("y = {y:?}");

    // Both rows normalize to ±1 entries, so y is easy to check by hand:
    // row 0 = [1, -1, 1, -1] · w = [1, -1, 0], row 1 = [1, 1, 1, 1] · w = [1, 1, 2].
    let want = [1.0, -1.0, 0.0, 1.0, 1.0, 2.0];
    assert!(
        y.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-5),
        "{y:?}"
    );
    Ok(())
}
