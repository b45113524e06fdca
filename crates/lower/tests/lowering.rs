//! Lowered programs compute what their graphs compute: the kernel IR
//! interpreter against the graph interpreter, both in f64, on random
//! graphs (the lowering's fuzzer) and on every zoo model, fused and not.

use std::collections::BTreeMap;

use birkhoff_dsl::zoo::{ModelArgs, build_model, models};
use birkhoff_dsl::{Rng, random_tensor};
use birkhoff_ir::kernel::run_program;
use birkhoff_ir::{DType, Graph, InterpOptions, Precision, Tensor, interpret};
use birkhoff_lower::{GemmSupport, LowerOptions, PreMixProjection, lower};
use proptest::prelude::*;

/// Element-by-element closeness. bf16 values round at different points in
/// the two (a template keeps its intermediates in f32, and may use an
/// output row as scratch), so bf16 allows 8 units of 2^-8; others are tight.
fn assert_same(
    graph: &Graph,
    want: &[(String, Tensor)],
    got: &[(String, Tensor)],
) -> Result<(), TestCaseError> {
    for ((name, w), (gname, g)) in want.iter().zip(got) {
        prop_assert_eq!(name, gname);
        prop_assert_eq!(w.ty(), g.ty());
        let tol = match w.dtype() {
            DType::Bf16 => 8.0 / 256.0,
            DType::F32 | DType::F64 => 1e-12,
            _ => 0.0,
        };
        for (i, (a, b)) in w.to_f64_vec().iter().zip(g.to_f64_vec()).enumerate() {
            let ok =
                (a.is_nan() && b.is_nan()) || a == &b || (a - b).abs() <= tol * a.abs().max(1.0);
            prop_assert!(
                ok,
                "@{} output {} element {}: interpreter {} vs lowered {}\n{}",
                graph.name(),
                name,
                i,
                a,
                b,
                graph
            );
        }
    }
    Ok(())
}

fn check(
    graph: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    opts: &LowerOptions,
) -> Result<(), TestCaseError> {
    let program = lower(graph, opts).map_err(|e| TestCaseError::fail(format!("{e}\n{graph}")))?;
    let want = interpret(graph, inputs, &InterpOptions::default())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let got = run_program(&program, inputs, Precision::F64)
        .map_err(|e| TestCaseError::fail(format!("{e}\n{program}")))?;
    assert_same(graph, &want, &got)
}

fn zoo_inputs(model: &birkhoff_dsl::zoo::Model, seed: u64) -> BTreeMap<String, Tensor> {
    let g = &model.graph;
    let root = Rng::new(seed);
    g.inputs()
        .iter()
        .map(|&v| {
            let name = g.input_name(v).unwrap_or_default();
            (
                name.to_string(),
                random_tensor(g.ty(v), &model.inits[name], &mut root.fork(name)),
            )
        })
        .collect()
}

proptest! {
    // 256 cases by default; PROPTEST_CASES runs more.
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)))]

    #[test]
    fn random_graphs_lower_to_equivalent_programs(
        (g, ins) in birkhoff_testkit::graph()
            .prop_flat_map(|g| { let i = birkhoff_testkit::inputs(&g, false); (Just(g), i) })
    ) {
        check(&g, &ins, &LowerOptions::default())?;
    }
}

#[test]
fn unfused_zoo_models_lower_to_equivalent_programs() {
    for info in models() {
        let args = ModelArgs {
            dtype: Some(DType::F64),
            ..ModelArgs::default()
        };
        let model = build_model(info.name, &args).unwrap();
        check(
            &model.graph,
            &zoo_inputs(&model, 1),
            &LowerOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", info.name));
    }
}

#[test]
fn fused_zoo_models_lower_to_equivalent_programs() {
    for info in models() {
        for projection in [PreMixProjection::InKernel, PreMixProjection::Gemm] {
            let args = ModelArgs {
                dtype: Some(DType::F64),
                ..ModelArgs::default()
            };
            let model = build_model(info.name, &args).unwrap();
            let fused = birkhoff_opt::optimize(&model.graph, |_| false)
                .unwrap()
                .graph;
            check(
                &fused,
                &zoo_inputs(&model, 2),
                &LowerOptions {
                    projection,
                    ..LowerOptions::default()
                },
            )
            .unwrap_or_else(|e| panic!("{} {projection:?}: {e}", info.name));
        }
    }
}

/// The matrix-product extras a GPU-like backend takes (bf16 operands, row
/// sums of squares) and the lowering without kernel fusion compute the
/// same, in f64 and in bf16.
#[test]
fn gemm_extras_and_unfused_kernels_lower_to_equivalent_programs() {
    let everything = GemmSupport {
        bf16_operands: true,
        row_sumsq: true,
        bf16_results: true,
        min_row_blocks: 264,
    };
    for name in ["mhc-pre", "hc-pre", "mhc-sublayer", "mhc-block"] {
        for dtype in [DType::F64, DType::Bf16] {
            for (gemm, fuse_kernels) in [
                (everything, true),
                (everything, false),
                (GemmSupport::default(), false),
            ] {
                let args = ModelArgs {
                    dtype: Some(dtype),
                    ..ModelArgs::default()
                };
                let model = build_model(name, &args).unwrap();
                let fused = birkhoff_opt::optimize(&model.graph, |_| false)
                    .unwrap()
                    .graph;
                let opts = LowerOptions {
                    projection: PreMixProjection::Gemm,
                    gemm,
                    fuse_kernels,
                    scalar_kernels_apart: fuse_kernels,
                    column_reductions: fuse_kernels,
                    reciprocal_lines: fuse_kernels,
                    values_at_use: fuse_kernels,
                };
                let program = lower(&fused, &opts).unwrap();
                let text = program.to_string();
                assert_eq!(
                    text.contains("row_sumsq"),
                    gemm.row_sumsq,
                    "{name} {dtype}:\n{text}"
                );
                check(&fused, &zoo_inputs(&model, 4), &opts)
                    .unwrap_or_else(|e| panic!("{name} {dtype} {gemm:?} fuse={fuse_kernels}: {e}"));
            }
        }
    }
}

#[test]
fn f32_interpreter_modes_agree_closely() {
    let model = build_model("mhc-block", &ModelArgs::default()).unwrap();
    let program = lower(&model.graph, &LowerOptions::default()).unwrap();
    let ins = zoo_inputs(&model, 3);
    let want = interpret(
        &model.graph,
        &ins,
        &InterpOptions {
            precision: Precision::F32,
            ..InterpOptions::default()
        },
    )
    .unwrap();
    let got = run_program(&program, &ins, Precision::F32).unwrap();
    let (w, g) = (want[0].1.to_f64_vec(), got[0].1.to_f64_vec());
    let worst = w
        .iter()
        .zip(&g)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs() / a.abs().max(1.0)));
    assert!(worst < 1e-4, "f32 lowering vs f32 interpreter: {worst}");
}

/// bf16 matrix products lower to the matrix-product routine where the
/// backend writes bf16 results — reading the operands as bf16, or from
/// f32 copies a kernel widens first — and to loop nests where it does not
/// (the CPU), computing the same either way; i32 products stay loops.
#[test]
fn bf16_products_take_the_gemm_where_the_backend_writes_bf16() {
    use birkhoff_dsl::{Builder, Init};
    use birkhoff_ir::kernel::{Stmt, walk_stmts};
    let b = Builder::new("products");
    let x = b.input("x", DType::Bf16, &[2, 5, 7]);
    let w = b.input("w", DType::Bf16, &[7, 3]);
    let y = b.input("y", DType::Bf16, &[2, 3, 7]);
    b.output("xw", x.matmul(w.broadcast_to(&[2, 7, 3])));
    b.output("xyt", x.matmul(y.transpose()));
    let xi = (x * 100.0).cast(DType::I32);
    let yi = (y * 100.0).cast(DType::I32);
    b.output("ints", xi.matmul(yi.transpose()));
    let graph = b.build().unwrap();
    let root = Rng::new(5);
    let init = Init::Uniform {
        low: -1.0,
        high: 1.0,
    };
    let inputs: BTreeMap<String, Tensor> = graph
        .inputs()
        .iter()
        .map(|&v| {
            let name = graph.input_name(v).unwrap_or_default().to_string();
            let t = random_tensor(graph.ty(v), &init, &mut root.fork(&name));
            (name, t)
        })
        .collect();
    for (bf16_operands, bf16_results) in [(true, true), (false, true), (true, false)] {
        let opts = LowerOptions {
            gemm: GemmSupport {
                bf16_operands,
                row_sumsq: false,
                bf16_results,
                min_row_blocks: 0,
            },
            ..LowerOptions::default()
        };
        let program = lower(&graph, &opts).unwrap();
        // Kernel fusion may merge loop nests into one kernel, named after all.
        let loops: usize = program
            .kernels
            .iter()
            .map(|k| k.name.matches("matmul_loops").count())
            .sum();
        let mut gemms = Vec::new();
        for k in &program.kernels {
            walk_stmts(&k.body, &mut |s| {
                if let Stmt::Gemm(g) = s {
                    gemms.push((
                        program.buffer(g.a.buf).dtype(),
                        program.buffer(g.c.buf).dtype(),
                    ));
                }
            });
        }
        let what = format!("operands {bf16_operands}, results {bf16_results}:\n{program}");
        if bf16_results {
            let a = if bf16_operands {
                DType::Bf16
            } else {
                DType::F32
            };
            assert_eq!(loops, 1, "{what}");
            assert_eq!(gemms, [(a, DType::Bf16); 2], "{what}");
            let widened = program.kernels.iter().any(|k| k.name.contains("widen"));
            assert_eq!(widened, !bf16_operands, "{what}");
        } else {
            assert_eq!(loops, 3, "{what}");
            assert!(gemms.is_empty(), "{what}");
        }
        check(&graph, &inputs, &opts).unwrap_or_else(|e| panic!("{what}\n{e}"));
    }
}

/// A projection of few rows and a long inner dimension, lowered for a
/// backend that wants 264 blocks of 16 rows: split into 16 partial products
/// (a batch) that a kernel sums, with the graph's results in f64 and bf16.
#[test]
fn short_projections_split_their_inner_dimension() {
    for name in ["mhc-pre", "hc-pre", "mhc-sublayer"] {
        for dtype in [DType::F64, DType::Bf16] {
            let args = ModelArgs {
                dtype: Some(dtype),
                tokens: Some(24),
                hidden: Some(1024),
                ..ModelArgs::default()
            };
            let model = build_model(name, &args).unwrap();
            let fused = birkhoff_opt::optimize(&model.graph, |_| false)
                .unwrap()
                .graph;
            let opts = LowerOptions::gpu(PreMixProjection::Gemm);
            let program = lower(&fused, &opts).unwrap();
            let text = program.to_string();
            assert!(
                text.contains("k=256 batch=16") && text.contains("_proj_sum"),
                "{name} {dtype}:\n{text}"
            );
            check(&fused, &zoo_inputs(&model, 5), &opts)
                .unwrap_or_else(|e| panic!("{name} {dtype}: {e}"));
        }
    }
}

/// `mhc_pre_grad`'s `d_fn = gᵀ·x` (24 rows, 544 columns, 520 tokens)
/// lowered for a backend that wants 264 blocks of 256 columns: the tokens
/// split in eight parts of 65 (a batch) that a kernel sums, with the graph's
/// results.
#[test]
fn short_wide_products_split_their_tokens() {
    let (t, n, c) = (520, 4, 136);
    let (m, k) = (n * (n + 2), n * c);
    let text = format!(
        "graph @pre_grad(%x: f32[{t},{n},{c}], %fn: f32[{m},{k}], %scale: f32[3], %base: f32[{m}], %dl: f32[{t},{c}], %dp: f32[{t},{n}], %dc: f32[{t},{n},{n}]) -> (d_x: f32[{t},{n},{c}], d_fn: f32[{m},{k}], d_scale: f32[3], d_base: f32[{m}]) {{
  %7 = mhc_pre_grad %x, %fn, %scale, %base, %dl, %dp, %dc, norm_eps=1e-6, pre_eps=0.01, post_mult=2.0, variant=tilekernels, iters=20, eps=1e-6 : (f32[{t},{n},{c}], f32[{m},{k}], f32[3], f32[{m}])
  %8 = get %7, index=0 : f32[{t},{n},{c}]
  %9 = get %7, index=1 : f32[{m},{k}]
  %10 = get %7, index=2 : f32[3]
  %11 = get %7, index=3 : f32[{m}]
  return %8, %9, %10, %11
}}"
    );
    let graph = birkhoff_ir::parse_graph(&text).unwrap();
    let opts = LowerOptions::gpu(PreMixProjection::Gemm);
    let program = lower(&graph, &opts).unwrap();
    let printed = program.to_string();
    assert!(
        printed.contains(&format!("gemm m={m} n={k} k=65 batch=8"))
            && printed.contains("mhc_pre_grad_dfn_sum"),
        "{printed}"
    );
    let root = Rng::new(9);
    let inputs = graph
        .inputs()
        .iter()
        .map(|&v| {
            let name = graph.input_name(v).unwrap_or_default().to_string();
            let x = random_tensor(graph.ty(v), &Default::default(), &mut root.fork(&name));
            (name, x)
        })
        .collect();
    check(&graph, &inputs, &opts).unwrap();
}
