//! `sinkhorn_grad` compiled for the CPU against the f64 reference
//! interpreter: the op alone (f32 and bf16, both variants, random round
//! counts, eps and batch dimensions), and the gradient graph of a Sinkhorn
//! loss, which `grad` builds around it.
//!
//! Tolerances are `docs/design.md` §3's reduction row of the output's dtype
//! (`birkhoff::compare::compare`): the kernel recomputes the forward with
//! the reference's operations in its order, so it is one reduction-like
//! computation per element, like `sinkhorn` itself.

use std::collections::BTreeMap;

use birkhoff::autodiff::grad;
use birkhoff::compare::{check_cpu, random_inputs};
use birkhoff::dsl::zoo::Inits;
use birkhoff::dsl::{Init, Rng, random_tensor};
use birkhoff::ir::{
    DType, FloatAttr, Graph, InputKind, Op, SinkhornSpec, SinkhornVariant, Tensor, TensorType,
};
use birkhoff::{CompileOptions, Target, compile_with};
use birkhoff_testkit::proptest_cases;
use proptest::prelude::*;
use proptest::sample::select;

fn spec() -> impl Strategy<Value = SinkhornSpec> {
    (
        select(vec![SinkhornVariant::Paper, SinkhornVariant::TileKernels]),
        1usize..=25,
        prop_oneof![Just(None), Just(Some(1e-6)), (1e-9f64..0.1).prop_map(Some)],
    )
        .prop_map(|(variant, iters, eps)| SinkhornSpec {
            variant,
            iters,
            eps: FloatAttr(eps.unwrap_or(variant.default_eps())),
        })
}

/// `dx = sinkhorn_grad(x, dy)` on inputs of `ty`.
fn op_graph(ty: &TensorType, spec: SinkhornSpec) -> Graph {
    let mut g = Graph::new("sinkhorn_grad");
    let x = g.add_input("x", InputKind::Data, ty.clone());
    let dy = g.add_input("dy", InputKind::Data, ty.clone());
    let d = g.add(Op::SinkhornGrad(spec), &[x, dy]).expect("well-typed");
    g.add_output("dx", d);
    g
}

fn inits() -> Inits {
    [
        (
            "x".to_string(),
            Init::Uniform {
                low: -3.0,
                high: 3.0,
            },
        ),
        (
            "dy".to_string(),
            Init::Uniform {
                low: -1.0,
                high: 1.0,
            },
        ),
    ]
    .into_iter()
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(12)))]

    #[test]
    fn sinkhorn_grad_on_cpu_matches_the_interpreter(
        dtype in select(vec![DType::F32, DType::Bf16]),
        batch in proptest::collection::vec(1usize..=3, 0..=2),
        n in 1usize..=5,
        spec in spec(),
        seed in any::<u64>(),
    ) {
        let mut shape = batch;
        shape.extend([n, n]);
        let g = op_graph(&TensorType::new(dtype, shape), spec);
        check_cpu(&g, &random_inputs(&g, &inits(), seed), None)?;
    }
}

/// The gradient of `Σ sinkhorn(x) ⊙ w` with respect to `x`, as `grad`
/// builds it (with `sinkhorn_grad`), compiled, optimized or not.
#[test]
fn sinkhorn_loss_gradient_compiles_and_matches() {
    for variant in [SinkhornVariant::Paper, SinkhornVariant::TileKernels] {
        let spec = SinkhornSpec {
            variant,
            iters: 20,
            eps: FloatAttr(variant.default_eps()),
        };
        let ty = TensorType::new(DType::F32, [3, 4, 4]);
        let mut g = Graph::new("loss");
        let x = g.add_input("x", InputKind::Data, ty.clone());
        let w = g.add_input("w", InputKind::Data, ty.clone());
        let y = g.add(Op::Sinkhorn(spec), &[x]).unwrap();
        let p = g.add(Op::Mul, &[y, w]).unwrap();
        let axes = vec![0, 1, 2];
        let l = g
            .add(
                Op::ReduceSum {
                    axes,
                    keepdims: false,
                },
                &[p],
            )
            .unwrap();
        g.add_output("loss", l);
        let dg = grad(&g, "loss", &["x"]).unwrap();
        assert!(
            // The graph holds the f32 rounding of eps, as its kernel does.
            dg.nodes()
                .iter()
                .any(|n| n.op == Op::SinkhornGrad(spec).with_attrs_rounded_to(DType::F32)),
            "{dg}"
        );
        let root = Rng::new(11);
        let feed: BTreeMap<String, Tensor> = ["x", "w"]
            .into_iter()
            .map(|n| {
                let init = Init::Normal {
                    mean: 0.0,
                    std: 1.0,
                };
                (n.to_string(), random_tensor(&ty, &init, &mut root.fork(n)))
            })
            .collect();
        check_cpu(&dg, &feed, None).unwrap_or_else(|e| panic!("{variant:?}: {e}"));
    }
}

/// Round counts whose recomputed states would not fit the kernel's
/// scratch budget are refused with an error naming the op, not a crash.
#[test]
fn too_many_rounds_for_the_scratch_budget_is_a_compile_error() {
    let spec = SinkhornSpec {
        variant: SinkhornVariant::Paper,
        iters: 10_000,
        eps: FloatAttr(0.0),
    };
    let g = op_graph(&TensorType::new(DType::F32, [2, 4, 4]), spec);
    let opts = CompileOptions {
        target: Target::Cpu,
        ..CompileOptions::default()
    };
    match compile_with(&g, &opts) {
        Ok(_) => panic!("compiled a kernel whose scratch exceeds the budget"),
        Err(e) => assert!(e.to_string().contains("sinkhorn_grad"), "{e}"),
    }
}
