//! The kernel templates compute what the reference interpreter computes.
//!
//! Each property builds a program holding one op's kernels (inputs →
//! template → outputs) with `ProgramBuilder`, checks it with the kernel
//! verifier, runs it with the kernel interpreter and compares the outputs
//! with the graph interpreter running a one-node graph of the same op:
//!
//! * `f64`: both in f64, within the f64 elementwise tolerance (the
//!   templates perform the reference's operations in its order, so only
//!   libm could differ);
//! * `f32`: the kernels with every `f32` step rounded, against the f64
//!   oracle, within the f32 reduction tolerance;
//! * `bf16`: the kernels with every `f32` step rounded, against the f64
//!   oracle of the same (exactly widened) inputs, within the bf16
//!   reduction tolerance. The graph interpreter's bf16 mode is not the
//!   target here: it rounds every intermediate of a semantic op to bf16,
//!   as the unfused graph does, while a template computes in f32 and
//!   rounds only its results (`docs/design.md` §3: bf16 is a storage type).
//!
//! Values are finite and of the magnitudes these ops see in models
//! (logits within ±4, activations within ±2, projections scaled by
//! `1/sqrt(nC)`, positive inputs for the plain normalizations, whose sums
//! would otherwise cancel), so the tolerances measure the kernels and not
//! an ill-conditioned input; a separate property feeds NaN, ±Inf, ±0 and
//! subnormals in f64, where results must agree exactly in which elements
//! are NaN or infinite.
//!
//! Case counts are modest so the file runs in seconds in a debug build;
//! `PROPTEST_CASES` overrides them.

use std::collections::BTreeMap;

use birkhoff_dsl::{Init, Rng, random_tensor};
use birkhoff_ir::kernel::{
    Expr, Index, LoopKind, Program, Stmt, VarId, run_program, verify_program,
};
use birkhoff_ir::{
    DType, FloatAttr, Graph, InputKind, InterpOptions, Op, PreMixSpec, Precision, SinkhornSpec,
    SinkhornVariant, Tensor, TensorType, Type, interpret,
};
use birkhoff_lower::templates::{Arg, lower_composite};
use birkhoff_lower::{LowerError, LowerOptions, PreMixProjection, ProgramBuilder};
use birkhoff_testkit::{Tolerance, close};
use proptest::prelude::*;
use proptest::sample::select;

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 256;

fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = DEFAULT_CASES;
    }
    c
}

/// Result names of the pre-mix ops, in tuple order.
const PRE_MIX_OUTPUTS: [&str; 3] = ["layer_input", "post_mix", "comb_mix"];

/// Result names of `mhc_post_grad`, in tuple order.
const POST_MIX_GRAD_OUTPUTS: [&str; 4] = ["d_f", "d_x", "d_post", "d_comb"];

/// Result names of `mhc_pre_grad`, in tuple order.
const PRE_MIX_GRAD_OUTPUTS: [&str; 4] = ["d_x", "d_fn", "d_scale", "d_base"];

/// A one-node graph of `op` over inputs named and typed as `inputs`;
/// tuple results are taken apart into one output each.
fn graph_of(op: &Op, inputs: &[(&str, TensorType)]) -> Graph {
    let mut g = Graph::new("one_op");
    let ids: Vec<_> = inputs
        .iter()
        .map(|(name, ty)| g.add_input(*name, InputKind::Data, ty.clone()))
        .collect();
    let v = g
        .add(op.clone(), &ids)
        .expect("test operands are well-typed");
    match g.value_type(v).clone() {
        Type::Tuple(parts) => {
            let names: &[&str] = match op {
                Op::MhcPostGrad => &POST_MIX_GRAD_OUTPUTS,
                Op::MhcPreGrad(_) => &PRE_MIX_GRAD_OUTPUTS,
                _ => &PRE_MIX_OUTPUTS,
            };
            for (i, name) in names.iter().enumerate().take(parts.len()) {
                let part = g
                    .add(Op::Get { index: i }, &[v])
                    .expect("tuple parts exist");
                g.add_output(*name, part);
            }
        }
        Type::Tensor(_) => g.add_output("out", v),
    }
    g
}

/// The program of `op`'s template for the inputs and outputs of `g`.
fn program_of(op: &Op, g: &Graph, opts: &LowerOptions) -> Result<Program, LowerError> {
    let mut pb = ProgramBuilder::new(g.name());
    let args: Vec<Arg> = g
        .inputs()
        .iter()
        .map(|&v| {
            let ty = g.ty(v).clone();
            let name = g.input_name(v).expect("inputs are named");
            Arg {
                buf: pb.input(name, ty.clone()),
                ty,
            }
        })
        .collect();
    let outs: Vec<Arg> = g
        .outputs()
        .iter()
        .map(|o| {
            let ty = g.ty(o.value).clone();
            Arg {
                buf: pb.output(&o.name, ty.clone()),
                ty,
            }
        })
        .collect();
    lower_composite(&mut pb, op, &args, &outs, opts)?;
    Ok(pb.finish())
}

/// `t` as an f64 tensor (exact).
fn widen(t: &Tensor) -> Tensor {
    Tensor::from_f64(t.ty().with_dtype(DType::F64), &t.to_f64_vec()).expect("same element count")
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// Lowers `op` on `inputs`, verifies the program, runs it and compares
/// it with the reference as the module documentation describes.
fn check(op: &Op, inputs: &[(&str, Tensor)], opts: &LowerOptions) -> Result<(), TestCaseError> {
    let dtype = inputs[0].1.dtype();
    let types: Vec<(&str, TensorType)> = inputs.iter().map(|(n, t)| (*n, t.ty().clone())).collect();
    let g = graph_of(op, &types);
    let program = program_of(op, &g, opts).map_err(fail)?;
    if let Err(errs) = verify_program(&program) {
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        return Err(fail(format!("{}\n{program}", msgs.join("\n"))));
    }
    let feed: BTreeMap<String, Tensor> = inputs
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    let (precision, tol) = match dtype {
        DType::F64 => (Precision::F64, Tolerance::elementwise(DType::F64)),
        DType::F32 => (Precision::F32, Tolerance::reduction(DType::F32)),
        _ => (Precision::F32, Tolerance::reduction(DType::Bf16)),
    };
    let got = run_program(&program, &feed, precision).map_err(fail)?;
    // The oracle: f64 arithmetic on the same values, unrounded results.
    let wide: Vec<(&str, TensorType)> = types
        .iter()
        .map(|(n, t)| (*n, t.with_dtype(DType::F64)))
        .collect();
    let oracle_graph = graph_of(op, &wide);
    let oracle_feed = feed.iter().map(|(n, t)| (n.clone(), widen(t))).collect();
    let want = interpret(&oracle_graph, &oracle_feed, &InterpOptions::default()).map_err(fail)?;
    for ((name, g), (_, w)) in got.iter().zip(&want) {
        close(&widen(g), w, tol).map_err(|e| {
            fail(format!(
                "{} on {}: output {name}: {e}\n{program}",
                op.mnemonic(),
                types
                    .iter()
                    .map(|(_, t)| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    }
    Ok(())
}

/// A tensor of `ty` drawn from `init` with a generator forked from `seed`.
fn draw(ty: &TensorType, init: &Init, seed: u64, name: &str) -> Tensor {
    random_tensor(ty, init, &mut Rng::new(seed).fork(name))
}

fn uniform(low: f64, high: f64) -> Init {
    Init::Uniform { low, high }
}

fn float_dtype() -> impl Strategy<Value = DType> {
    select(vec![DType::F32, DType::F64, DType::Bf16])
}

/// An epsilon: exactly 0, a typical default, or anything small.
fn eps() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1e-6), 1e-9f64..0.1]
}

fn sinkhorn_spec() -> impl Strategy<Value = SinkhornSpec> {
    (
        select(vec![SinkhornVariant::Paper, SinkhornVariant::TileKernels]),
        1usize..=25,
        eps(),
    )
        .prop_map(|(variant, iters, eps)| SinkhornSpec {
            variant,
            iters,
            eps: FloatAttr(eps),
        })
}

fn projection() -> impl Strategy<Value = PreMixProjection> {
    select(vec![PreMixProjection::InKernel, PreMixProjection::Gemm])
}

fn opts(projection: PreMixProjection) -> LowerOptions {
    LowerOptions {
        projection,
        ..LowerOptions::default()
    }
}

/// A normalization along one axis, for an operand of rank `rank`, with
/// the value range its inputs are drawn from.
fn line_op(rank: usize) -> impl Strategy<Value = (Op, Init)> {
    let positive = uniform(0.05, 4.0);
    let signed = uniform(-4.0, 4.0);
    let (p1, p2, s1, s2) = (positive.clone(), positive, signed.clone(), signed);
    let mut ops: Vec<BoxedStrategy<(Op, Init)>> = vec![
        eps()
            .prop_map(move |e| (Op::RowNorm { eps: FloatAttr(e) }, p1.clone()))
            .boxed(),
        (0..rank)
            .prop_map(move |axis| (Op::Softmax { axis }, s1.clone()))
            .boxed(),
        eps()
            .prop_map(move |e| (Op::RmsNorm { eps: FloatAttr(e) }, s2.clone()))
            .boxed(),
    ];
    if rank >= 2 {
        ops.push(
            eps()
                .prop_map(move |e| (Op::ColNorm { eps: FloatAttr(e) }, p2.clone()))
                .boxed(),
        );
    }
    proptest::strategy::Union::new(ops)
}

fn pre_mix_inputs(
    dtype: DType,
    (t, n, c): (usize, usize, usize),
    seed: u64,
) -> Vec<(&'static str, Tensor)> {
    let (m, k) = (n * (n + 2), n * c);
    let w = 1.0 / (k as f64).sqrt();
    vec![
        (
            "x",
            draw(
                &TensorType::new(dtype, [t, n, c]),
                &uniform(-2.0, 2.0),
                seed,
                "x",
            ),
        ),
        (
            "fn",
            draw(&TensorType::new(dtype, [m, k]), &uniform(-w, w), seed, "fn"),
        ),
        (
            "scale",
            draw(
                &TensorType::new(dtype, [3]),
                &uniform(0.0, 2.0),
                seed,
                "scale",
            ),
        ),
        (
            "base",
            draw(
                &TensorType::new(dtype, [m]),
                &uniform(-1.0, 1.0),
                seed,
                "base",
            ),
        ),
    ]
}

fn post_mix_inputs(
    dtype: DType,
    (t, n, c): (usize, usize, usize),
    seed: u64,
) -> Vec<(&'static str, Tensor)> {
    vec![
        (
            "f",
            draw(
                &TensorType::new(dtype, [t, c]),
                &uniform(-2.0, 2.0),
                seed,
                "f",
            ),
        ),
        (
            "x",
            draw(
                &TensorType::new(dtype, [t, n, c]),
                &uniform(-2.0, 2.0),
                seed,
                "x",
            ),
        ),
        (
            "post",
            draw(
                &TensorType::new(dtype, [t, n]),
                &uniform(0.0, 2.0),
                seed,
                "post",
            ),
        ),
        (
            "comb",
            draw(
                &TensorType::new(dtype, [t, n, n]),
                &uniform(0.0, 1.0),
                seed,
                "comb",
            ),
        ),
    ]
}

fn mhc_dims() -> impl Strategy<Value = (usize, usize, usize)> {
    (1usize..=3, 1usize..8, 1usize..=9)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn line_ops_match_the_reference(
        dtype in float_dtype(),
        (shape, (op, init)) in proptest::collection::vec(1usize..=6, 1..=4)
            .prop_flat_map(|s| { let r = s.len(); (Just(s), line_op(r)) }),
        seed in any::<u64>(),
    ) {
        let x = draw(&TensorType::new(dtype, shape), &init, seed, "x");
        check(&op, &[("x", x)], &LowerOptions::default())?;
    }

    #[test]
    fn sinkhorn_matches_the_reference(
        dtype in float_dtype(),
        batch in proptest::collection::vec(1usize..=3, 0..=2),
        n in 1usize..8,
        spec in sinkhorn_spec(),
        seed in any::<u64>(),
    ) {
        let mut shape = batch;
        shape.extend([n, n]);
        let x = draw(&TensorType::new(dtype, shape), &uniform(-4.0, 4.0), seed, "x");
        check(&Op::Sinkhorn(spec), &[("x", x)], &LowerOptions::default())?;
    }

    #[test]
    fn sinkhorn_grad_matches_the_reference(
        dtype in float_dtype(),
        batch in proptest::collection::vec(1usize..=3, 0..=2),
        n in 1usize..6,
        spec in sinkhorn_spec(),
        seed in any::<u64>(),
    ) {
        let mut shape = batch;
        shape.extend([n, n]);
        let ty = TensorType::new(dtype, shape);
        let x = draw(&ty, &uniform(-4.0, 4.0), seed, "x");
        let dy = draw(&ty, &uniform(-1.0, 1.0), seed, "dy");
        check(&Op::SinkhornGrad(spec), &[("x", x), ("dy", dy)], &LowerOptions::default())?;
    }

    #[test]
    fn mhc_pre_matches_the_reference(
        dtype in float_dtype(),
        dims in mhc_dims(),
        sinkhorn in sinkhorn_spec(),
        norm_eps in eps(),
        pre_eps in -0.5f64..0.5,
        post_mult in 0.0f64..3.0,
        projection in projection(),
        seed in any::<u64>(),
    ) {
        let op = Op::MhcPre(PreMixSpec {
            norm_eps: FloatAttr(norm_eps),
            pre_eps: FloatAttr(pre_eps),
            post_mult: FloatAttr(post_mult),
            sinkhorn,
        });
        check(&op, &pre_mix_inputs(dtype, dims, seed), &opts(projection))?;
    }

    #[test]
    fn hc_pre_matches_the_reference(
        dtype in float_dtype(),
        dims in mhc_dims(),
        norm_eps in eps(),
        projection in projection(),
        seed in any::<u64>(),
    ) {
        let op = Op::HcPre { norm_eps: FloatAttr(norm_eps) };
        check(&op, &pre_mix_inputs(dtype, dims, seed), &opts(projection))?;
    }

    #[test]
    fn mhc_post_matches_the_reference(
        dtype in float_dtype(),
        dims in mhc_dims(),
        seed in any::<u64>(),
    ) {
        check(&Op::MhcPost, &post_mix_inputs(dtype, dims, seed), &LowerOptions::default())?;
    }

    #[test]
    fn mhc_pre_grad_matches_the_reference(
        dtype in float_dtype(),
        dims in mhc_dims(),
        sinkhorn in sinkhorn_spec(),
        norm_eps in eps(),
        pre_eps in -0.5f64..0.5,
        post_mult in 0.0f64..3.0,
        seed in any::<u64>(),
    ) {
        let (t, n, c) = dims;
        let op = Op::MhcPreGrad(PreMixSpec {
            norm_eps: FloatAttr(norm_eps),
            pre_eps: FloatAttr(pre_eps),
            post_mult: FloatAttr(post_mult),
            sinkhorn,
        });
        let mut inputs = pre_mix_inputs(dtype, dims, seed);
        for (name, shape) in [("d_li", vec![t, c]), ("d_post", vec![t, n]), ("d_comb", vec![t, n, n])] {
            let ty = TensorType::new(dtype, shape);
            inputs.push((name, draw(&ty, &uniform(-1.0, 1.0), seed, name)));
        }
        check(&op, &inputs, &LowerOptions::default())?;
    }

    #[test]
    fn mhc_post_grad_matches_the_reference(
        dtype in float_dtype(),
        dims in mhc_dims(),
        seed in any::<u64>(),
    ) {
        let (t, n, c) = dims;
        let mut inputs = post_mix_inputs(dtype, dims, seed);
        let ty = TensorType::new(dtype, [t, n, c]);
        inputs.push(("d_out", draw(&ty, &uniform(-1.0, 1.0), seed, "d_out")));
        check(&Op::MhcPostGrad, &inputs, &LowerOptions::default())?;
    }

    /// NaN, ±Inf, ±0 and subnormals go through every template as through
    /// the reference: in f64 the operations are the same, so even which
    /// elements come out NaN or infinite must agree.
    #[test]
    fn special_values_propagate_like_the_reference(
        which in 0usize..7,
        n in 1usize..5,
        spec in sinkhorn_spec(),
        projection in projection(),
        pool in proptest::collection::vec(birkhoff_testkit::scalar(DType::F64, true), 97),
    ) {
        let ty = |s: &[usize]| TensorType::new(DType::F64, s);
        // Each input cycles through the pool from its own starting point.
        let special = |t: TensorType, name: &str| {
            let start = name.len() * 13;
            let values: Vec<f64> = (0..t.num_elements())
                .map(|i| pool[(start + 7 * i) % pool.len()])
                .collect();
            Tensor::from_f64(t, &values).expect("sizes match")
        };
        let (op, inputs): (Op, Vec<(&str, Tensor)>) = match which {
            0 => (Op::RowNorm { eps: FloatAttr(0.0) }, vec![("x", special(ty(&[3, n + 1]), "x"))]),
            1 => (Op::ColNorm { eps: FloatAttr(1e-6) }, vec![("x", special(ty(&[2, n, n + 1]), "x"))]),
            2 => (Op::Softmax { axis: 1 }, vec![("x", special(ty(&[2, n + 1, 3]), "x"))]),
            3 => (Op::RmsNorm { eps: FloatAttr(1e-6) }, vec![("x", special(ty(&[3, n + 2]), "x"))]),
            4 => (Op::Sinkhorn(spec), vec![("x", special(ty(&[2, n, n]), "x"))]),
            5 => (Op::MhcPost, vec![
                ("f", special(ty(&[2, 3]), "f")),
                ("x", special(ty(&[2, n, 3]), "x")),
                ("post", special(ty(&[2, n]), "post")),
                ("comb", special(ty(&[2, n, n]), "comb")),
            ]),
            _ => (Op::MhcPostGrad, vec![
                ("f", special(ty(&[2, 3]), "f")),
                ("x", special(ty(&[2, n, 3]), "x")),
                ("post", special(ty(&[2, n]), "post")),
                ("comb", special(ty(&[2, n, n]), "comb")),
                ("d_out", special(ty(&[2, n, 3]), "d_out")),
            ]),
        };
        check(&op, &inputs, &opts(projection))?;
        let pre = Op::MhcPre(PreMixSpec {
            norm_eps: FloatAttr(1e-6),
            pre_eps: FloatAttr(0.0),
            post_mult: FloatAttr(2.0),
            sinkhorn: spec,
        });
        let m = n * (n + 2);
        let inputs = vec![
            ("x", special(ty(&[2, n, 3]), "x")),
            ("fn", special(ty(&[m, 3 * n]), "fn")),
            ("scale", special(ty(&[3]), "scale")),
            ("base", special(ty(&[m]), "base")),
        ];
        check(&pre, &inputs, &opts(projection))?;
    }
}

/// Lines along a middle axis wider than one column block: several blocks,
/// with and without a narrower tail block, parallel over the batch or
/// (with one batch) over the blocks.
#[test]
fn wide_strided_lines_match_the_reference() {
    let shapes: [&[usize]; 4] = [&[1, 3, 600], &[2, 3, 700], &[1, 2, 512], &[3, 700]];
    for dtype in [DType::F64, DType::F32, DType::Bf16] {
        for shape in shapes {
            let rank = shape.len();
            let ops = [
                (
                    Op::ColNorm {
                        eps: FloatAttr(1e-3),
                    },
                    uniform(0.05, 4.0),
                ),
                (Op::Softmax { axis: rank - 2 }, uniform(-4.0, 4.0)),
            ];
            for (op, init) in ops {
                let x = draw(&TensorType::new(dtype, shape), &init, 7, "x");
                check(&op, &[("x", x)], &LowerOptions::default())
                    .unwrap_or_else(|e| panic!("{} {dtype} {shape:?}: {e}", op.mnemonic()));
            }
        }
    }
}

/// What [`walk`] calls on each statement, with the enclosing loops.
type Visit<'v, 'a> = dyn FnMut(&'a Stmt, &[(VarId, LoopKind)]) + 'v;

/// Walks every statement of a program.
fn walk<'a>(body: &'a [Stmt], loops: &mut Vec<(VarId, LoopKind)>, f: &mut Visit<'_, 'a>) {
    for s in body {
        f(s, loops);
        if let Stmt::Loop {
            var, kind, body, ..
        } = s
        {
            loops.push((*var, *kind));
            walk(body, loops, f);
            loops.pop();
        }
    }
}

/// Every index an expression reads at.
fn indices<'a>(e: &'a Expr, out: &mut Vec<&'a Index>) {
    match e {
        Expr::Load { index, .. } | Expr::LocalLoad { index, .. } => out.push(index),
        Expr::Unary { arg, .. } | Expr::Cast { arg, .. } => indices(arg, out),
        Expr::Binary { lhs, rhs, .. } => {
            indices(lhs, out);
            indices(rhs, out);
        }
        Expr::Select {
            cond,
            then,
            otherwise,
        } => {
            indices(cond, out);
            indices(then, out);
            indices(otherwise, out);
        }
        Expr::Const { .. } | Expr::Var(_) => {}
    }
}

/// The performance shape every template promises: each kernel is a GEMM
/// or parallel loops at the top; every innermost loop is a vector loop;
/// and a vector loop reads and writes memory contiguously along its
/// index (coefficient 1) or at one place (coefficient 0).
fn assert_kernel_shape(p: &Program) {
    for k in &p.kernels {
        for s in &k.body {
            if let Stmt::Gemm(g) = s {
                let dtype = |b| p.buffer(b).dtype();
                assert!(
                    dtype(g.a.buf) == dtype(g.c.buf) && dtype(g.b.buf) == dtype(g.c.buf),
                    "{}: a matrix product mixes storage types\n{p}",
                    k.name
                );
            }
        }
        for s in &k.body {
            assert!(
                matches!(
                    s,
                    Stmt::Gemm(_)
                        | Stmt::Loop {
                            kind: LoopKind::Parallel,
                            ..
                        }
                ),
                "{}: top-level statement is neither a GEMM nor a parallel loop\n{p}",
                k.name
            );
        }
        walk(&k.body, &mut Vec::new(), &mut |s, loops| {
            if let Stmt::Loop { kind, body, .. } = s {
                let has_loop = body.iter().any(|b| matches!(b, Stmt::Loop { .. }));
                assert!(
                    has_loop || *kind == LoopKind::Vector,
                    "{}: innermost loop is not a vector loop\n{p}",
                    k.name
                );
            }
            let Some(&(v, LoopKind::Vector)) = loops.last() else {
                return;
            };
            let mut ixs = Vec::new();
            match s {
                Stmt::Set { value, .. } => indices(value, &mut ixs),
                Stmt::Store { index, value, .. } | Stmt::LocalStore { index, value, .. } => {
                    ixs.push(index);
                    indices(value, &mut ixs);
                }
                _ => {}
            }
            for ix in ixs {
                assert!(
                    matches!(ix.coeff(v), 0 | 1),
                    "{}: vector loop strides by {}\n{p}",
                    k.name,
                    ix.coeff(v)
                );
            }
        });
    }
}

#[test]
fn kernels_are_parallel_outside_and_contiguous_vectors_inside() {
    let x = |s: &[usize]| ("x", TensorType::new(DType::F32, s));
    let spec = SinkhornSpec {
        variant: SinkhornVariant::TileKernels,
        iters: 3,
        eps: FloatAttr(1e-6),
    };
    let pre_in = |n: usize, c: usize| {
        let m = n * (n + 2);
        vec![
            x(&[5, n, c]),
            ("fn", TensorType::new(DType::F32, [m, n * c])),
            ("scale", TensorType::new(DType::F32, [3])),
            ("base", TensorType::new(DType::F32, [m])),
        ]
    };
    let cases: Vec<(Op, Vec<(&str, TensorType)>)> = vec![
        (
            Op::RowNorm {
                eps: FloatAttr(0.0),
            },
            vec![x(&[4, 8])],
        ),
        (
            Op::ColNorm {
                eps: FloatAttr(0.0),
            },
            vec![x(&[2, 4, 8])],
        ),
        (
            Op::ColNorm {
                eps: FloatAttr(0.0),
            },
            vec![x(&[1, 4, 600])],
        ),
        (Op::Softmax { axis: 0 }, vec![x(&[4, 8])]),
        (Op::Softmax { axis: 1 }, vec![x(&[4, 8])]),
        (
            Op::RmsNorm {
                eps: FloatAttr(1e-6),
            },
            vec![x(&[4, 8])],
        ),
        (Op::Sinkhorn(spec), vec![x(&[3, 4, 4])]),
        (
            Op::MhcPre(PreMixSpec {
                norm_eps: FloatAttr(1e-6),
                pre_eps: FloatAttr(0.0),
                post_mult: FloatAttr(2.0),
                sinkhorn: spec,
            }),
            pre_in(4, 8),
        ),
        (
            Op::HcPre {
                norm_eps: FloatAttr(1e-6),
            },
            pre_in(4, 8),
        ),
        (
            Op::MhcPost,
            vec![
                ("f", TensorType::new(DType::F32, [5, 8])),
                x(&[5, 4, 8]),
                ("post", TensorType::new(DType::F32, [5, 4])),
                ("comb", TensorType::new(DType::F32, [5, 4, 4])),
            ],
        ),
    ];
    for (op, inputs) in cases {
        for (dtype, projection) in [DType::F32, DType::Bf16]
            .into_iter()
            .flat_map(|d| [(d, PreMixProjection::InKernel), (d, PreMixProjection::Gemm)])
        {
            let inputs: Vec<(&str, TensorType)> = inputs
                .iter()
                .map(|(n, t)| (*n, t.with_dtype(dtype)))
                .collect();
            let g = graph_of(&op, &inputs);
            let p = program_of(&op, &g, &opts(projection)).expect("lowers");
            verify_program(&p).expect("verifies");
            assert_kernel_shape(&p);
        }
    }
}

/// Each `check` directive must appear, in order, after the previous one.
fn assert_in_order(text: &str, checks: &[&str]) {
    let mut rest = text;
    for c in checks {
        match rest.find(c) {
            Some(at) => rest = &rest[at + c.len()..],
            None => panic!("expected `{c}` after the previous match in\n{text}"),
        }
    }
}

fn tiny_mhc_pre(projection: PreMixProjection) -> Program {
    let op = Op::MhcPre(PreMixSpec {
        norm_eps: FloatAttr(1e-6),
        pre_eps: FloatAttr(0.0),
        post_mult: FloatAttr(2.0),
        sinkhorn: SinkhornSpec {
            variant: SinkhornVariant::Paper,
            iters: 20,
            // eps > 0: the paper's exp start (with eps = 0 it is a softmax).
            eps: FloatAttr(1e-3),
        },
    });
    let f32 = |s: &[usize]| TensorType::new(DType::F32, s);
    let g = graph_of(
        &op,
        &[
            ("x", f32(&[2, 2, 4])),
            ("fn", f32(&[8, 8])),
            ("scale", f32(&[3])),
            ("base", f32(&[8])),
        ],
    );
    program_of(&op, &g, &opts(projection)).expect("lowers")
}

/// The kernel IR of `mhc_pre` for `T = 2, n = 2, C = 4`, printed for
/// reviewers (`cargo test -- --nocapture`) and checked for its structure.
#[test]
fn mhc_pre_kernel_reads_as_designed() {
    let p = tiny_mhc_pre(PreMixProjection::InKernel);
    let text = p.to_string();
    println!("{text}");
    assert_eq!(p.kernels.len(), 1);
    assert_in_order(
        &text,
        &[
            "kernel k0_mhc_pre {",
            "local %l0: f32[8]",
            "parallel %i0 in 0..2 {",
            // One sweep: 8 dot products and the sum of squares.
            "vector %i",
            " in 0..8 {",
            "= %b0[8*%i0 + %i",
            "add(%v",
            "mul(%v",
            "mul(%v",
            "%b1[%i",
            "mul(%v",
            "%b1[%i",
            " + 56]",
            "}",
            // RMS factor, mixes, gates.
            "rsqrt(add(div(%v",
            "8.0), 1e-6))",
            "%l0[7] = mul(%v",
            "sigmoid(add(mul(%l0[0], %v",
            "store %b5[2*%i0 + %i",
            // Sinkhorn: exp, then 20 rounds of rows and columns.
            "exp(add(mul(%l0[",
            "for %i",
            " in 0..20 {",
            "div(%l1[",
            "div(%l1[",
            "store %b6[4*%i0 + %i",
            // apply_mix: the second sweep over the row.
            "vector %i",
            " in 0..4 {",
            "store %b4[4*%i0 + %i",
        ],
    );
    let p = tiny_mhc_pre(PreMixProjection::Gemm);
    let text = p.to_string();
    println!("{text}");
    assert_in_order(
        &text,
        &[
            "temp @0 mhc_pre_mixes : f32[2,8]",
            "kernel k0_mhc_pre_proj {",
            "gemm m=2 n=8 k=8 batch=1: %b7[0 + 8*row + 1*col + 0*batch] = %b0[0 + 8*row + 1*col + 0*batch] x %b1[0 + 1*row + 8*col + 0*batch]",
            "kernel k1_mhc_pre {",
            "parallel %i0 in 0..2 {",
            "mul(%b7[8*%i0 + %i",
        ],
    );
    assert!(
        !text.contains("%b1[%i"),
        "the GEMM variant reads fn only in the GEMM\n{text}"
    );
}

#[test]
fn mismatched_operands_are_errors() {
    let f32 = |s: &[usize]| TensorType::new(DType::F32, s);
    let mut pb = ProgramBuilder::new("bad");
    let x = Arg {
        buf: pb.input("x", f32(&[2, 3])),
        ty: f32(&[2, 3]),
    };
    let wrong = Arg {
        buf: pb.output("y", f32(&[3, 2])),
        ty: f32(&[3, 2]),
    };
    let op = Op::RowNorm {
        eps: FloatAttr(0.0),
    };
    let err = lower_composite(
        &mut pb,
        &op,
        std::slice::from_ref(&x),
        std::slice::from_ref(&wrong),
        &LowerOptions::default(),
    )
    .expect_err("result type is wrong");
    assert!(
        err.to_string().contains("results must be (f32[2,3])"),
        "{err}"
    );
    let err = lower_composite(
        &mut pb,
        &Op::Exp,
        std::slice::from_ref(&x),
        std::slice::from_ref(&x),
        &LowerOptions::default(),
    )
    .expect_err("exp has no template");
    assert!(err.to_string().contains("no kernel template"), "{err}");
    let err = lower_composite(
        &mut pb,
        &Op::MhcPost,
        std::slice::from_ref(&x),
        std::slice::from_ref(&x),
        &LowerOptions::default(),
    )
    .expect_err("too few operands");
    assert!(err.to_string().contains("cannot lower mhc_post"), "{err}");
    assert!(pb.kernels().is_empty());
}
