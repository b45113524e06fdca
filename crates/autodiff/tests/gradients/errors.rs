//! Every error a caller can provoke, and the edge cases that are not
//! errors.

use birkhoff_autodiff::{AutodiffError, grad};
use birkhoff_dsl::Builder;
use birkhoff_ir::{DType, Graph, Node, Op, TensorType, Type, parse_graph};

use crate::common::{grad_checked, inputs, run};

fn simple() -> Graph {
    let b = Builder::new("simple");
    let x = b.input("x", DType::F64, &[2]);
    let n = b.input("n", DType::I32, &[2]);
    let w = b.param("w", DType::F64, &[2]);
    b.output("loss", (x * w).sum(&[0], false));
    b.output("vec", x * w);
    b.output("count", n.sum(&[0], false));
    b.output("d_x", x.sum(&[0], false));
    b.build().expect("test graph builds")
}

fn err(g: &Graph, loss: &str, wrt: &[&str]) -> AutodiffError {
    match grad(g, loss, wrt) {
        Ok(dg) => panic!("expected an error, got\n{dg}"),
        Err(e) => e,
    }
}

#[test]
fn invalid_graph() {
    let mut g = simple();
    // A node whose declared type disagrees with its op.
    let x = g.inputs()[0];
    let bad = g.push(Node {
        op: Op::Exp,
        args: vec![x],
        ty: Type::Tensor(TensorType::new(DType::F64, [3])),
    });
    g.add_output("bad", bad);
    let e = err(&g, "loss", &["x"]);
    assert!(matches!(e, AutodiffError::InvalidGraph(_)), "{e}");
    assert!(e.to_string().contains("invalid graph"), "{e}");
}

#[test]
fn unknown_output() {
    let e = err(&simple(), "nope", &["x"]);
    assert!(matches!(e, AutodiffError::UnknownOutput { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "unknown output 'nope' (graph @simple has outputs: loss, vec, count, d_x)"
    );
}

#[test]
fn unknown_input() {
    let e = err(&simple(), "loss", &["x", "y"]);
    assert!(matches!(e, AutodiffError::UnknownInput { .. }), "{e}");
    assert!(e.to_string().contains("unknown input 'y'"), "{e}");
    assert!(e.to_string().contains("x, n, w"), "{e}");
}

#[test]
fn non_scalar_loss() {
    let e = err(&simple(), "vec", &["x"]);
    assert!(matches!(e, AutodiffError::NonScalarLoss { .. }), "{e}");
    assert!(e.to_string().contains("f64[2]"), "{e}");
}

#[test]
fn non_float_loss() {
    let e = err(&simple(), "count", &["x"]);
    assert!(matches!(e, AutodiffError::NonFloatLoss { .. }), "{e}");
    assert!(e.to_string().contains("i32[]"), "{e}");
}

#[test]
fn non_float_input() {
    let e = err(&simple(), "loss", &["n"]);
    assert!(matches!(e, AutodiffError::NonFloatInput { .. }), "{e}");
    assert!(e.to_string().contains("'n'"), "{e}");
}

#[test]
fn duplicate_names() {
    let e = err(&simple(), "loss", &["x", "w", "x"]);
    assert_eq!(
        e,
        AutodiffError::DuplicateName {
            name: "d_x".to_string()
        }
    );
    // The gradient of x would be named like the loss.
    let e = err(&simple(), "d_x", &["x"]);
    assert!(matches!(e, AutodiffError::DuplicateName { .. }), "{e}");
}

const SEMANTIC: &str = "
graph @semantic(%x: f32[2,2,3], %y: f32[2,3]) -> (a: f32[], b: f32[]) {
  %2 = softmax %x, axis=2 : f32[2,2,3]
  %3 = reduce_sum %2, axes=[0,1,2] : f32[]
  %4 = reduce_sum %y, axes=[0,1] : f32[]
  return %3, %4
}";

/// Semantic and fused ops are differentiated through their expansion;
/// off the path from the requested inputs to the loss they are left alone.
#[test]
fn semantic_and_fused_ops_differentiate_through_their_expansion() {
    let g = parse_graph(SEMANTIC).expect("parses");
    let dg = grad_checked(&g, "a", &["x"]);
    assert!(!dg.to_string().contains("softmax"), "expanded:\n{dg}");
    // Softmax rows sum to one: the sum of every element does not move.
    let at = inputs(&[
        (
            "x",
            birkhoff_ir::Tensor::from_f64(
                TensorType::new(DType::F32, [2, 2, 3]),
                &[
                    0.1, -0.4, 2.0, 1.0, 0.0, -1.0, 0.3, 0.3, 0.3, -2.0, 5.0, 0.5,
                ],
            )
            .unwrap(),
        ),
        (
            "y",
            birkhoff_ir::Tensor::from_f64(TensorType::new(DType::F32, [2, 3]), &[0.0; 6]).unwrap(),
        ),
    ]);
    let out = run(&dg, &at);
    for d in out[1].1.to_f64_vec() {
        assert!(d.abs() < 1e-6, "{d}");
    }
    let g = parse_graph(
        "
graph @fused(%x: f32[2,2,3], %fn: f32[8,6], %scale: f32[3], %base: f32[8]) -> (loss: f32[]) {
  %4 = mhc_pre %x, %fn, %scale, %base, norm_eps=1e-6, pre_eps=1e-6, post_mult=2.0, variant=paper, iters=20, eps=0.0 : (f32[2,3], f32[2,2], f32[2,2,2])
  %5 = get %4, index=0 : f32[2,3]
  %6 = reduce_sum %5, axes=[0,1] : f32[]
  return %6
}",
    )
    .expect("parses");
    let dg = grad_checked(&g, "loss", &["fn", "x"]);
    // mhc_pre keeps its fused backward (its forward is only recomputed).
    assert!(dg.to_string().contains("mhc_pre_grad"), "{dg}");
}

/// Not errors: a loss with one element but rank 2, a loss that is an
/// input itself, and an input the loss does not depend on.
#[test]
fn single_element_loss_and_independent_inputs() {
    let b = Builder::new("edge");
    let x = b.input("x", DType::F32, &[2, 2]);
    let s = b.input("s", DType::F32, &[1, 1]);
    let _u = b.param("u", DType::F32, &[3]);
    b.output("loss", (x * x).sum(&[0, 1], true) * s);
    b.output("s_out", s);
    let g = b.build().expect("test graph builds");
    let dg = grad_checked(&g, "loss", &["x", "u", "s"]);
    let f32t = |shape: &[usize], v: &[f64]| {
        birkhoff_ir::Tensor::from_f64(TensorType::new(DType::F32, shape), v).unwrap()
    };
    let at = inputs(&[
        ("x", f32t(&[2, 2], &[1.0, 2.0, 3.0, 4.0])),
        ("s", f32t(&[1, 1], &[0.5])),
        ("u", f32t(&[3], &[7.0, 8.0, 9.0])),
    ]);
    let out = run(&dg, &at);
    assert_eq!(out[0].1.to_f64_vec(), vec![15.0]);
    assert_eq!(out[1].1.to_f64_vec(), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(out[2].1.to_f64_vec(), vec![0.0; 3]);
    assert_eq!(out[3].1.to_f64_vec(), vec![30.0]);

    let dg = grad_checked(&g, "s_out", &["s", "x"]);
    let out = run(&dg, &at);
    assert_eq!(out[1].1.to_f64_vec(), vec![1.0]);
    assert_eq!(out[2].1.to_f64_vec(), vec![0.0; 4]);
}
