//! The GPU code generator's output, run on the host by the emulator
//! (`birkhoff::gpu::codegen::emulate`: the optimized module retargeted to
//! the host, one OS thread per GPU thread, barriers, warp shuffles and
//! tensor-core fragments emulated), against the f64 reference
//! interpreter. This tests the generated code's logic — launch mapping,
//! indexing, vectorization, barriers, block reductions, the tensor-core
//! fragment layout — on machines without a GPU; `tests/gpu.rs` runs the
//! same models on a device.
//!
//! Tolerances: f32 models are held to 10x the per-op reduction row of
//! `docs/design.md` §3, as on the CPU; bf16 models use `birkhoff::compare`'s bf16
//! bound, which allows for the unfused reference rounding every
//! intermediate.
#![cfg(feature = "gpu")]

use std::collections::BTreeMap;

use birkhoff::compare::{
    CheckError, compare_cases, compare_scaled, random_inputs, reference_options,
};
use birkhoff::dsl::zoo::{Flag, Model, ModelArgs, build_model, model_info, models};
use birkhoff::gpu::CodegenOptions;
use birkhoff::gpu::codegen::emulate;
use birkhoff::ir::{DType, Graph, Tensor, interpret};
use birkhoff::lower::{GemmSupport, LowerOptions, lower};

/// Whole models chain dozens of ops per layer (see `tests/cpu_backend.rs`).
const MODEL_FACTOR: f64 = 10.0;

fn args_for(model: &str, dtype: DType, t: usize, n: usize, c: usize) -> ModelArgs {
    let info = model_info(model).expect("a zoo model");
    let takes = |f: Flag| info.flags.contains(&f);
    ModelArgs {
        tokens: takes(Flag::Tokens).then_some(t),
        streams: takes(Flag::Streams).then_some(n),
        hidden: takes(Flag::Hidden).then_some(c),
        heads: takes(Flag::Heads).then_some(2),
        dtype: Some(dtype),
        ..ModelArgs::default()
    }
}

fn build(model: &str, args: &ModelArgs) -> Model {
    build_model(model, args).unwrap_or_else(|e| panic!("{model}: {e}"))
}

/// `graph` optimized (if `fused`), lowered as for the GPU, generated and
/// run in the emulator.
fn emulated(
    graph: &Graph,
    fused: bool,
    inputs: &BTreeMap<String, Tensor>,
) -> Vec<(String, Tensor)> {
    let g = if fused {
        birkhoff::opt::optimize(graph, |_| false).unwrap().graph
    } else {
        graph.clone()
    };
    let lo = LowerOptions {
        gemm: GemmSupport {
            bf16_operands: true,
            row_sumsq: true,
        },
        ..LowerOptions::default()
    };
    let program = lower(&g, &lo).unwrap();
    emulate(&program, &CodegenOptions::default(), inputs)
        .unwrap_or_else(|e| panic!("{}: {e}", graph.name()))
}

/// Every output of `model` within the model tolerance of the reference.
fn check_f32(name: &str, m: &Model, fused: bool, seed: u64) {
    let inputs = random_inputs(&m.graph, &m.inits, seed);
    let want = interpret(&m.graph, &inputs, &reference_options()).unwrap();
    let got = emulated(&m.graph, fused, &inputs);
    let errs = compare_scaled(&m.graph, &want, &got, MODEL_FACTOR)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    for e in errs {
        println!(
            "{name} fused={fused} {}: max_abs {:.2e} max_rel {:.2e}",
            e.name, e.max_abs, e.max_rel
        );
        assert!(e.within, "{name} (fused: {fused}): {e:?}");
    }
}

fn check_bf16(name: &str, m: &Model, fused: bool, seed: u64) {
    let summary = compare_cases(&m.graph, &m.inits, 1, seed, |inputs| {
        Ok::<_, CheckError>(emulated(&m.graph, fused, inputs))
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    for w in &summary.outputs {
        println!(
            "{name} bf16 fused={fused} {}: max_rel {:.2e}",
            w.error.name, w.error.max_rel
        );
    }
    assert!(
        summary.passed(),
        "{name} bf16 (fused: {fused}): {summary:?}"
    );
}

#[test]
fn every_zoo_model_in_f32_fused_and_not() {
    for info in models() {
        let m = build(info.name, &args_for(info.name, DType::F32, 16, 4, 32));
        for fused in [true, false] {
            check_f32(info.name, &m, fused, 7);
        }
    }
}

#[test]
fn every_zoo_model_in_bf16_fused_and_not() {
    for info in models() {
        let m = build(info.name, &args_for(info.name, DType::Bf16, 16, 4, 32));
        for fused in [true, false] {
            check_bf16(info.name, &m, fused, 11);
        }
    }
}

/// The mHC kernels on shapes that exercise partial tiles and blocks:
/// tokens not a multiple of the tensor-core kernel's 64 rows; hidden
/// sizes whose rows are (160 = 5·32) and are not (136) a whole number of
/// the tensor-core kernel's 32-element chunks, so both matrix-product
/// kernels run; and rows long enough for blocks of several warps (block
/// reductions across warps), with and without 16-byte chunks dividing
/// the row.
#[test]
fn mhc_kernels_on_ragged_shapes() {
    for (t, c) in [(70, 40), (5, 34), (3, 1024), (2, 1030)] {
        for model in ["mhc-pre", "mhc-post", "mhc-sublayer"] {
            let m = build(model, &args_for(model, DType::Bf16, t, 4, c));
            check_bf16(&format!("{model} T={t} C={c}"), &m, true, 3);
            let m = build(model, &args_for(model, DType::F32, t, 4, c));
            check_f32(&format!("{model} T={t} C={c}"), &m, true, 5);
        }
    }
}

/// `graph` as a model whose every input is drawn uniformly from [-1, 1].
fn uniform_inputs(graph: Graph) -> Model {
    let inits = graph
        .inputs()
        .iter()
        .filter_map(|&v| graph.input_name(v))
        .map(|name| {
            let init = birkhoff::dsl::Init::Uniform {
                low: -1.0,
                high: 1.0,
            };
            (name.to_string(), init)
        })
        .collect();
    Model { graph, inits }
}

/// `mhc_post_grad`, the post-mix's fused backward (one kernel: parallel
/// over tokens, one sweep over C with `n + n²` reductions), on the same
/// ragged shapes, f32 and bf16.
#[test]
fn mhc_post_grad_on_ragged_shapes() {
    use birkhoff::ir::{InputKind, Op, TensorType};
    for (t, c) in [(70, 40), (5, 34), (3, 1024), (2, 1030)] {
        for dtype in [DType::F32, DType::Bf16] {
            let n = 4;
            let mut graph = Graph::new("mhc_post_grad");
            let shapes: [&[usize]; 5] = [&[t, c], &[t, n, c], &[t, n], &[t, n, n], &[t, n, c]];
            let names = ["f", "x", "post", "comb", "dy"];
            let ins: Vec<_> = names
                .iter()
                .zip(shapes)
                .map(|(nm, s)| graph.add_input(*nm, InputKind::Data, TensorType::new(dtype, s)))
                .collect();
            let d = graph.add(Op::MhcPostGrad, &ins).unwrap();
            for i in 0..4 {
                let e = graph.add(Op::Get { index: i }, &[d]).unwrap();
                graph.add_output(format!("d{i}"), e);
            }
            let m = uniform_inputs(graph);
            let name = format!("mhc_post_grad T={t} C={c}");
            match dtype {
                DType::Bf16 => check_bf16(&name, &m, false, 3),
                _ => check_f32(&name, &m, false, 5),
            }
        }
    }
}

/// `sinkhorn_grad`, Sinkhorn's recomputing backward (one kernel, parallel
/// over matrices, every round's state in private scratch), both variants,
/// f32 and bf16, against the reference.
#[test]
fn sinkhorn_grad_on_the_gpu() {
    use birkhoff::ir::{InputKind, Op, SinkhornSpec, SinkhornVariant, TensorType};
    for variant in [SinkhornVariant::Paper, SinkhornVariant::TileKernels] {
        for dtype in [DType::F32, DType::Bf16] {
            let ty = TensorType::new(dtype, [37, 4, 4]);
            let mut graph = Graph::new("sinkhorn_grad");
            let x = graph.add_input("x", InputKind::Data, ty.clone());
            let dy = graph.add_input("dy", InputKind::Data, ty);
            let spec = SinkhornSpec {
                variant,
                iters: 20,
                eps: birkhoff::ir::FloatAttr(variant.default_eps()),
            };
            let d = graph.add(Op::SinkhornGrad(spec), &[x, dy]).unwrap();
            graph.add_output("dx", d);
            let m = uniform_inputs(graph);
            let name = format!("sinkhorn_grad {variant:?}");
            match dtype {
                DType::Bf16 => check_bf16(&name, &m, false, 3),
                _ => check_f32(&name, &m, false, 5),
            }
        }
    }
}

/// `mhc_pre_grad`, the pre-mix's fused backward: in f32 three matrix
/// products around one fused per-token kernel, in bf16 loops only; both
/// Sinkhorn variants, against the reference.
#[test]
fn mhc_pre_grad_on_the_gpu() {
    use birkhoff::ir::SinkhornVariant;
    for variant in [SinkhornVariant::Paper, SinkhornVariant::TileKernels] {
        for dtype in [DType::F32, DType::Bf16] {
            let (t, n, c) = (37, 4, 40);
            let m = n * (n + 2);
            let text = format!(
                "graph @pre_grad(%x: {d}[{t},{n},{c}], %fn: {d}[{m},{k}], %scale: {d}[3], %base: {d}[{m}], %dl: {d}[{t},{c}], %dp: {d}[{t},{n}], %dc: {d}[{t},{n},{n}]) -> (d_x: {d}[{t},{n},{c}], d_fn: {d}[{m},{k}], d_scale: {d}[3], d_base: {d}[{m}]) {{
  %7 = mhc_pre_grad %x, %fn, %scale, %base, %dl, %dp, %dc, norm_eps=1e-6, pre_eps=0.01, post_mult=2.0, variant={v}, iters=20, eps={e} : ({d}[{t},{n},{c}], {d}[{m},{k}], {d}[3], {d}[{m}])
  %8 = get %7, index=0 : {d}[{t},{n},{c}]
  %9 = get %7, index=1 : {d}[{m},{k}]
  %10 = get %7, index=2 : {d}[3]
  %11 = get %7, index=3 : {d}[{m}]
  return %8, %9, %10, %11
}}",
                d = dtype,
                k = n * c,
                v = variant.name(),
                e = match variant {
                    SinkhornVariant::Paper => "0.0",
                    SinkhornVariant::TileKernels => "1e-6",
                },
            );
            let graph = birkhoff::ir::parse_graph(&text).unwrap();
            let m = uniform_inputs(graph);
            let name = format!("mhc_pre_grad {variant:?}");
            match dtype {
                DType::Bf16 => check_bf16(&name, &m, false, 3),
                _ => check_f32(&name, &m, false, 5),
            }
        }
    }
}

/// A pre-mix split as the recomputation planner splits it: `mhc_project`
/// (the GPU's matrix product, without the row sums it hands `mhc_pre`)
/// and `mhc_pre_projected` (the per-token kernel, summing the squares
/// itself), f32 and bf16, against the reference.
#[test]
fn split_pre_mix_on_the_gpu() {
    for dtype in [DType::F32, DType::Bf16] {
        let (t, n, c) = (37, 4, 40);
        let m = n * (n + 2);
        let text = format!(
            "graph @split(%x: {d}[{t},{n},{c}], %fn: {d}[{m},{k}], %scale: {d}[3], %base: {d}[{m}]) -> (mixes: f32[{t},{m}], li: {d}[{t},{c}], comb: {d}[{t},{n},{n}]) {{
  %4 = mhc_project %x, %fn : f32[{t},{m}]
  %5 = mhc_pre_projected %x, %4, %scale, %base, norm_eps=1e-6, pre_eps=0.01, post_mult=2.0, variant=tilekernels, iters=20, eps=1e-6 : ({d}[{t},{c}], {d}[{t},{n}], {d}[{t},{n},{n}])
  %6 = get %5, index=0 : {d}[{t},{c}]
  %7 = get %5, index=2 : {d}[{t},{n},{n}]
  return %4, %6, %7
}}",
            d = dtype,
            k = n * c,
        );
        let graph = birkhoff::ir::parse_graph(&text).unwrap();
        let m = uniform_inputs(graph);
        match dtype {
            DType::Bf16 => check_bf16("split pre-mix", &m, false, 3),
            _ => check_f32("split pre-mix", &m, false, 5),
        }
    }
}

/// Row reductions long enough to spread over blocks of several warps —
/// sums, maxima, `i32` sums (integer shuffles), RMSNorm and softmax — in
/// every float dtype (`f64` shuffles its two halves), plus a general
/// matrix product whose sizes are no multiple of its 16-wide tiles.
#[test]
fn block_reductions_and_general_products() {
    for dtype in [DType::F32, DType::F64, DType::Bf16] {
        for len in [1024, 1030, 100] {
            let b = birkhoff::dsl::Builder::new("rows");
            let x = b.input("x", dtype, &[3, len]);
            let w = b.input("w", dtype, &[len]);
            let m = b.input("m", dtype, &[len, 19]);
            b.output("norm", birkhoff::dsl::nn::rms_norm(x, Some(w), 1e-6));
            b.output("softmax", birkhoff::dsl::nn::softmax(x, 1));
            b.output("max", x.max_over(&[1], false));
            b.output("sum", x.sum(&[1], false));
            let scaled = x * b.constant(&[100.0], dtype, &[]);
            b.output("isum", scaled.cast(DType::I32).sum(&[1], false));
            b.output("prod", x.matmul(m));
            let g = b.build().unwrap();
            let model = Model {
                graph: g,
                inits: Default::default(),
            };
            let name = format!("rows {dtype} x {len}");
            if dtype == DType::Bf16 {
                check_bf16(&name, &model, false, 1);
            } else {
                check_f32(&name, &model, false, 1);
            }
        }
    }
}

/// The inline math routines over wide ranges, against the f64 reference:
/// `exp` up to the top of the f32 range and down into its subnormals
/// (the reference is f64, so f32 overflow would read as an error), `log`
/// of tiny and huge values,
/// `tanh` and `sigmoid` through saturation, `pow` of mixed signs.
#[test]
fn math_routines_across_their_ranges() {
    for dtype in [DType::F32, DType::F64] {
        let b = birkhoff::dsl::Builder::new("math");
        let x = b.input("x", dtype, &[4096]);
        let y = b.input("y", dtype, &[4096]);
        b.output("exp", x.exp());
        b.output("log", x.abs().log());
        b.output("tanh", x.tanh());
        b.output("sigmoid", x.sigmoid());
        b.output("pow", x.abs().pow(y));
        let g = b.build().unwrap();
        let inits = [
            (
                "x".to_string(),
                birkhoff::dsl::Init::Uniform {
                    low: -100.0,
                    high: 88.0,
                },
            ),
            (
                "y".to_string(),
                birkhoff::dsl::Init::Uniform {
                    low: -4.0,
                    high: 4.0,
                },
            ),
        ]
        .into_iter()
        .collect();
        check_f32(
            &format!("math {dtype}"),
            &Model { graph: g, inits },
            false,
            2,
        );
    }
}
