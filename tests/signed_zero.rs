//! The sign of zero through a compiled matrix product: the IR sums from the
//! `k = 0` product, so products that are all `-0` sum to `-0`; the runtime
//! GEMM starts from `+0`, and the CPU backend restores the sign.

use std::collections::BTreeMap;

use birkhoff::dsl::Builder;
use birkhoff::ir::{DType, InterpOptions, Tensor, TensorType, interpret};
use birkhoff::{CompileOptions, Target, compile_with};

#[test]
fn products_that_are_all_negative_zero_sum_to_negative_zero() {
    for dtype in [DType::F32, DType::F64] {
        let b = Builder::new("mm");
        let x = b.input("x", dtype, &[2, 3]);
        let w = b.input("w", dtype, &[3, 2]);
        b.output("y", x.matmul(w));
        let g = b.build().unwrap();
        // Row 0 of x is -0 (every product -0); row 1 mixes -0 and +0 (the
        // sum is +0). Column 1 of w is -1: row 0 gives -0 · -1 = +0.
        let xv = [-0.0, -0.0, -0.0, -0.0, 0.0, -0.0];
        let wv = [1.0, -1.0, 2.0, -1.0, 3.0, -1.0];
        let inputs: BTreeMap<String, Tensor> = [
            ("x", TensorType::new(dtype, [2, 3]), &xv[..]),
            ("w", TensorType::new(dtype, [3, 2]), &wv[..]),
        ]
        .into_iter()
        .map(|(n, ty, v)| (n.to_string(), Tensor::from_f64(ty, v).unwrap()))
        .collect();
        let want = interpret(&g, &inputs, &InterpOptions::default()).unwrap();
        let opts = CompileOptions {
            target: Target::Cpu,
            optimize: false,
            ..CompileOptions::default()
        };
        let got = compile_with(&g, &opts).unwrap().run(&inputs).unwrap();
        let signs = |t: &Tensor| -> Vec<bool> {
            t.to_f64_vec()
                .iter()
                .map(|v| v.is_sign_negative())
                .collect()
        };
        assert_eq!(signs(&want[0].1), [true, false, false, false], "{dtype}");
        assert_eq!(signs(&got[0].1), signs(&want[0].1), "{dtype}");
    }
}

/// The same in the second matrix of a batch (operands at an offset).
#[test]
fn batched_products_keep_the_sign_of_zero_in_every_matrix() {
    let b = Builder::new("bmm");
    let x = b.input("x", DType::F32, &[2, 2, 3]);
    let w = b.input("w", DType::F32, &[2, 3, 2]);
    b.output("y", x.matmul(w));
    let g = b.build().unwrap();
    let mut xv = vec![1.0; 12];
    xv[6..9].copy_from_slice(&[-0.0, -0.0, -0.0]);
    let wv = vec![1.0; 12];
    let inputs: BTreeMap<String, Tensor> = [
        ("x", TensorType::new(DType::F32, [2, 2, 3]), xv),
        ("w", TensorType::new(DType::F32, [2, 3, 2]), wv),
    ]
    .into_iter()
    .map(|(n, ty, v)| (n.to_string(), Tensor::from_f64(ty, &v).unwrap()))
    .collect();
    let want = interpret(&g, &inputs, &InterpOptions::default()).unwrap();
    let opts = CompileOptions {
        target: Target::Cpu,
        optimize: false,
        ..CompileOptions::default()
    };
    let got = compile_with(&g, &opts).unwrap().run(&inputs).unwrap();
    let signs = |t: &Tensor| -> Vec<bool> {
        t.to_f64_vec()
            .iter()
            .map(|v| v.is_sign_negative())
            .collect()
    };
    assert_eq!(signs(&want[0].1)[4..6], [true, true]);
    assert_eq!(signs(&got[0].1), signs(&want[0].1));
}
