//! The sign of zero through a compiled matrix product: the IR sums from the
//! `k = 0` product, so products that are all `-0` sum to `-0`; the runtime
//! GEMM starts from `+0`, and the CPU backend restores the sign.

use std::collections::BTreeMap;

use birkhoff::dsl::Builder;
use birkhoff::ir::{DType, Graph, InterpOptions, Tensor, TensorType, interpret};
use birkhoff::{CompileOptions, Target, compile_with};

/// `y = x · w` for the shapes given, and its inputs from these values.
fn matmul(
    dtype: DType,
    xs: &[usize],
    xv: &[f64],
    ws: &[usize],
    wv: &[f64],
) -> (Graph, BTreeMap<String, Tensor>) {
    let b = Builder::new("mm");
    let x = b.input("x", dtype, xs);
    let w = b.input("w", dtype, ws);
    b.output("y", x.matmul(w));
    let inputs = [("x", xs, xv), ("w", ws, wv)]
        .into_iter()
        .map(|(n, s, v)| {
            (
                n.to_string(),
                Tensor::from_f64(TensorType::new(dtype, s), v).unwrap(),
            )
        })
        .collect();
    (b.build().unwrap(), inputs)
}

/// The signs of the output's elements: `(interpreter, CPU)`.
fn signs(g: &Graph, inputs: &BTreeMap<String, Tensor>) -> (Vec<bool>, Vec<bool>) {
    let want = interpret(g, inputs, &InterpOptions::default()).unwrap();
    let opts = CompileOptions {
        target: Target::Cpu,
        optimize: false,
        ..CompileOptions::default()
    };
    let got = compile_with(g, &opts).unwrap().run(inputs).unwrap();
    let of = |t: &Tensor| -> Vec<bool> {
        t.to_f64_vec()
            .iter()
            .map(|v| v.is_sign_negative())
            .collect()
    };
    (of(&want[0].1), of(&got[0].1))
}

#[test]
fn products_that_are_all_negative_zero_sum_to_negative_zero() {
    for dtype in [DType::F32, DType::F64] {
        // Row 0 of x is -0 (every product -0); row 1 mixes -0 and +0 (the
        // sum is +0). Column 1 of w is -1: row 0 gives -0 · -1 = +0.
        let xv = [-0.0, -0.0, -0.0, -0.0, 0.0, -0.0];
        let wv = [1.0, -1.0, 2.0, -1.0, 3.0, -1.0];
        let (g, inputs) = matmul(dtype, &[2, 3], &xv, &[3, 2], &wv);
        let (want, got) = signs(&g, &inputs);
        assert_eq!(want, [true, false, false, false], "{dtype}");
        assert_eq!(got, want, "{dtype}");
    }
}

/// The same in the second matrix of a batch (operands at an offset).
#[test]
fn batched_products_keep_the_sign_of_zero_in_every_matrix() {
    let mut xv = vec![1.0; 12];
    xv[6..9].copy_from_slice(&[-0.0, -0.0, -0.0]);
    let (g, inputs) = matmul(DType::F32, &[2, 2, 3], &xv, &[2, 3, 2], &[1.0; 12]);
    let (want, got) = signs(&g, &inputs);
    assert_eq!(want[4..6], [true, true]);
    assert_eq!(got, want);
}
