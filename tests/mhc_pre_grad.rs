//! `mhc_pre_grad` compiled for the CPU against the f64 reference
//! interpreter: the op alone (f32 and bf16, random `T`, `n`, `C` and
//! Sinkhorn spec), and the gradient graph of a pre-mix loss, which `grad`
//! builds around it.
//!
//! Tolerances are `docs/design.md` §3's reduction row of the output's dtype
//! (`birkhoff::compare::compare`).

use std::collections::BTreeMap;

use birkhoff::autodiff::grad;
use birkhoff::compare::{check_cpu, compare_cpu, random_inputs};
use birkhoff::dsl::zoo::Inits;
use birkhoff::dsl::{Init, Rng, random_tensor};
use birkhoff::ir::{
    DType, FloatAttr, Graph, InputKind, Op, PreMixSpec, SinkhornSpec, SinkhornVariant, Tensor,
    TensorType,
};
use birkhoff_testkit::proptest_cases;
use proptest::prelude::*;
use proptest::sample::select;

/// The operand names of `mhc_pre`, in order.
const OPERANDS: [&str; 4] = ["x", "fn", "scale", "base"];

/// The cotangents of its results.
const COTANGENTS: [&str; 3] = ["d_li", "d_post", "d_comb"];

/// `x, fn, scale, base, d_li, d_post, d_comb` as graph inputs.
fn inputs(
    g: &mut Graph,
    dtype: DType,
    (t, n, c): (usize, usize, usize),
) -> Vec<birkhoff::ir::ValueId> {
    let m = n * (n + 2);
    let shapes: [&[usize]; 7] = [
        &[t, n, c],
        &[m, n * c],
        &[3],
        &[m],
        &[t, c],
        &[t, n],
        &[t, n, n],
    ];
    OPERANDS
        .iter()
        .chain(&COTANGENTS)
        .zip(shapes)
        .map(|(name, s)| g.add_input(*name, InputKind::Data, TensorType::new(dtype, s)))
        .collect()
}

fn attrs(sinkhorn: SinkhornSpec) -> PreMixSpec {
    PreMixSpec {
        norm_eps: FloatAttr(1e-6),
        pre_eps: FloatAttr(0.01),
        post_mult: FloatAttr(2.0),
        sinkhorn,
    }
}

/// `mhc_pre_grad(...)`, one output per cotangent.
fn op_graph(dtype: DType, dims: (usize, usize, usize), spec: SinkhornSpec) -> Graph {
    let mut g = Graph::new("mhc_pre_grad");
    let ins = inputs(&mut g, dtype, dims);
    let d = g
        .add(Op::MhcPreGrad(attrs(spec)), &ins)
        .expect("well-typed");
    for (i, name) in OPERANDS.iter().enumerate() {
        let e = g.add(Op::Get { index: i }, &[d]).expect("a tuple element");
        g.add_output(format!("d_{name}"), e);
    }
    g
}

fn inits(k: usize) -> Inits {
    let uniform = |low, high| Init::Uniform { low, high };
    let w = 1.0 / (k as f64).sqrt();
    [
        ("x", uniform(-2.0, 2.0)),
        ("fn", uniform(-w, w)),
        ("scale", uniform(0.5, 1.5)),
        ("base", uniform(-0.5, 0.5)),
        ("d_li", uniform(-1.0, 1.0)),
        ("d_post", uniform(-1.0, 1.0)),
        ("d_comb", uniform(-1.0, 1.0)),
    ]
    .into_iter()
    .map(|(n, i)| (n.to_string(), i))
    .collect()
}

fn spec() -> impl Strategy<Value = SinkhornSpec> {
    (
        select(vec![SinkhornVariant::Paper, SinkhornVariant::TileKernels]),
        1usize..=6,
    )
        .prop_map(|(variant, iters)| SinkhornSpec {
            variant,
            iters,
            eps: FloatAttr(variant.default_eps()),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(12)))]

    #[test]
    fn mhc_pre_grad_on_cpu_matches_the_interpreter(
        dtype in select(vec![DType::F32, DType::Bf16]),
        t in 1usize..=4,
        n in 1usize..=4,
        c in 1usize..=40,
        spec in spec(),
        seed in any::<u64>(),
    ) {
        let g = op_graph(dtype, (t, n, c), spec);
        check_cpu(&g, &random_inputs(&g, &inits(n * c), seed), Some(4))?;
    }
}

/// Enough tokens that the CPU runtime computes `d_fn = gᵀ·x` (24 rows,
/// one column per element of a token's row, an inner dimension of 96
/// tokens) with its AVX-512 row sweep where the CPU has it, including a
/// ragged last block of columns (`n·C = 812`).
#[test]
fn mhc_pre_grad_over_many_tokens_matches_the_interpreter() {
    let spec = SinkhornSpec {
        variant: SinkhornVariant::TileKernels,
        iters: 5,
        eps: FloatAttr(SinkhornVariant::TileKernels.default_eps()),
    };
    let (t, n, c) = (96, 4, 203);
    let g = op_graph(DType::F32, (t, n, c), spec);
    check_cpu(&g, &random_inputs(&g, &inits(n * c), 17), Some(4)).unwrap();
}

/// The gradient of `Σ li ⊙ w_li + Σ comb ⊙ w_comb` (no post term: its
/// cotangent is a zero constant) with respect to all four operands, as
/// `grad` builds it (with `mhc_pre_grad`), compiled.
#[test]
fn pre_mix_loss_gradient_compiles_and_matches() {
    let dims = (5, 4, 33);
    let spec = SinkhornSpec {
        variant: SinkhornVariant::Paper,
        iters: 20,
        eps: FloatAttr(0.0),
    };
    let mut g = Graph::new("loss");
    let ins = inputs(&mut g, DType::F32, dims);
    let tuple = g.add(Op::MhcPre(attrs(spec)), &ins[..4]).unwrap();
    let mut total = None;
    for i in [0, 2] {
        let r = g.add(Op::Get { index: i }, &[tuple]).unwrap();
        let p = g.add(Op::Mul, &[r, ins[4 + i]]).unwrap();
        let rank = g.ty(p).rank();
        let s = g
            .add(
                Op::ReduceSum {
                    axes: (0..rank).collect(),
                    keepdims: false,
                },
                &[p],
            )
            .unwrap();
        total = Some(match total {
            None => s,
            Some(t) => g.add(Op::Add, &[t, s]).unwrap(),
        });
    }
    g.add_output("loss", total.unwrap());
    let dg = grad(&g, "loss", &OPERANDS).unwrap();
    assert!(
        dg.nodes().iter().any(|n| matches!(n.op, Op::MhcPreGrad(_))),
        "{dg}"
    );
    let root = Rng::new(11);
    let feed: BTreeMap<String, Tensor> = dg
        .inputs()
        .iter()
        .map(|&v| {
            let n = dg.input_name(v).unwrap();
            let init = Init::Normal {
                mean: 0.0,
                std: if n == "fn" { 0.1 } else { 1.0 },
            };
            (
                n.to_string(),
                random_tensor(dg.ty(v), &init, &mut root.fork(n)),
            )
        })
        .collect();
    for e in compare_cpu(&dg, &feed).unwrap() {
        assert!(e.within, "{e}\n{dg}");
    }
}
