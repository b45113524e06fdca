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
use birkhoff::lower::{LowerOptions, PreMixProjection, lower};

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
    let program = lower(&g, &LowerOptions::gpu(PreMixProjection::Gemm)).unwrap();
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

/// Attention blocks whose mask rows are long enough to spread over a
/// block (T ≥ 64): the mask's two heads put its rows on the grid (a block
/// per row, the heads on y), and bf16's scale and mask loops run as
/// launches of their own.
#[test]
fn attention_blocks_with_mask_rows_on_the_grid() {
    for model in ["residual-block", "mhc-block"] {
        let m = build(model, &args_for(model, DType::F32, 70, 4, 32));
        check_f32(&format!("{model} T=70"), &m, true, 13);
        let m = build(model, &args_for(model, DType::Bf16, 70, 4, 32));
        check_bf16(&format!("{model} T=70"), &m, true, 17);
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
    // The third shape's d_fn (24 × 544, over 520 tokens) takes the
    // short-and-wide kernel, a partial last block of columns, with the
    // tokens split in eight parts. The fourth's projection splits its
    // inner dimension, so the Sinkhorn kernel first sums the parts of its
    // 24 projections: a loop its 16 lanes do not divide (the lanes past
    // its end skip the second round).
    let shapes = [
        (SinkhornVariant::Paper, 37, 40),
        (SinkhornVariant::TileKernels, 37, 40),
    ]
    .into_iter()
    .chain([
        (SinkhornVariant::TileKernels, 520, 136),
        (SinkhornVariant::TileKernels, 64, 512),
    ]);
    for (variant, t, c) in shapes {
        for dtype in [DType::F32, DType::Bf16] {
            let n = 4;
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
            let name = format!("mhc_pre_grad {variant:?} T={t} C={c}");
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

/// bf16 matrix products, which the GPU runs on its tiled kernel with f32
/// accumulation and one rounding per element, on sizes that are no
/// multiple of its 16-wide tiles (a single element, `K = 1`, partial
/// tiles in every direction), batched, with each operand read through a
/// transposed view and the right one through a batch broadcast, against
/// the reference. (Lowering never asks a bf16 product to accumulate into
/// its result; `bf16_gemm_kernel_rounds_once_bit_for_bit` covers that.)
#[test]
fn bf16_matrix_products_on_ragged_shapes() {
    for (batch, m, k, n) in [
        (1, 1, 1, 1),
        (3, 17, 1, 9),
        (2, 5, 23, 18),
        (2, 33, 40, 7),
        (1, 70, 300, 35),
    ] {
        let b = birkhoff::dsl::Builder::new("bf16_products");
        let x = b.input("x", DType::Bf16, &[batch, m, k]);
        let w = b.input("w", DType::Bf16, &[batch, k, n]);
        let wt = b.input("wt", DType::Bf16, &[batch, n, k]);
        let xt = b.input("xt", DType::Bf16, &[batch, k, m]);
        let shared = b.input("shared", DType::Bf16, &[k, n]);
        b.output("xw", x.matmul(w));
        b.output("x_wt", x.matmul(wt.transpose()));
        b.output("xt_w", xt.transpose().matmul(w));
        b.output("x_shared", x.matmul(shared.broadcast_to(&[batch, k, n])));
        let model = uniform_inputs(b.build().unwrap());
        for fused in [false, true] {
            let name = format!("bf16 products {batch}x[{m}x{k}]x[{k}x{n}]");
            check_bf16(&name, &model, fused, 13);
        }
    }
}

/// The tiled kernel on a bf16 result, for bf16 and f32 operands, with and
/// without accumulating into it, bit for bit: each element is the f32
/// fused multiply-add chain over `k` in order (what every thread of the
/// kernel computes), plus the widened old value when accumulating, rounded
/// to bf16 once (to nearest, ties to even).
#[test]
fn bf16_gemm_kernel_rounds_once_bit_for_bit() {
    use birkhoff::dsl::{Init, Rng, random_tensor};
    use birkhoff::ir::TensorType;
    use birkhoff::ir::kernel::{
        BufferDecl, BufferId, BufferKind, Expr, Gemm, Index, Kernel, LoopKind, Matrix, Program,
        ScalarType, Stmt,
    };
    for operands in [DType::Bf16, DType::F32] {
        for accumulate in [false, true] {
            for (batch, m, n, k) in [(1, 1, 1, 1), (3, 17, 9, 1), (2, 33, 18, 40)] {
                let what = format!("{operands} accumulate={accumulate} {batch}x{m}x{n}x{k}");
                let decl = |name: &str, d, shape: [usize; 3], kind| BufferDecl {
                    name: name.into(),
                    ty: TensorType::new(d, shape),
                    kind,
                };
                // a as stored; b stored transposed ([batch, n, k]).
                let mut buffers = vec![
                    decl("a", operands, [batch, m, k], BufferKind::Input),
                    decl("bt", operands, [batch, n, k], BufferKind::Input),
                    decl("c", DType::Bf16, [batch, m, n], BufferKind::Output),
                ];
                let mut inputs = vec![("a".to_string(), BufferId(0)), ("bt".into(), BufferId(1))];
                let mut kernels = Vec::new();
                if accumulate {
                    // c starts as a copy of the input c0.
                    buffers.push(decl("c0", DType::Bf16, [batch, m, n], BufferKind::Input));
                    inputs.push(("c0".into(), BufferId(3)));
                    let mut init = Kernel::new("k0_init");
                    let i = init.var(ScalarType::Index);
                    init.body = vec![Stmt::Loop {
                        var: i,
                        extent: batch * m * n,
                        kind: LoopKind::Parallel,
                        body: vec![Stmt::Store {
                            buf: BufferId(2),
                            index: Index::var(i, 1),
                            value: Expr::load(BufferId(3), Index::var(i, 1)),
                        }],
                    }];
                    kernels.push(init);
                }
                let mut gemm = Kernel::new("k1_gemm");
                gemm.body = vec![Stmt::Gemm(Gemm {
                    m,
                    n,
                    k,
                    batch,
                    a: Matrix {
                        buf: BufferId(0),
                        offset: 0,
                        row_stride: k,
                        col_stride: 1,
                        batch_stride: m * k,
                    },
                    b: Matrix {
                        buf: BufferId(1),
                        offset: 0,
                        row_stride: 1,
                        col_stride: k,
                        batch_stride: n * k,
                    },
                    c: Matrix {
                        buf: BufferId(2),
                        offset: 0,
                        row_stride: n,
                        col_stride: 1,
                        batch_stride: m * n,
                    },
                    accumulate,
                    row_sumsq: None,
                })];
                kernels.push(gemm);
                let program = Program {
                    name: "bf16_gemm".into(),
                    buffers,
                    inputs,
                    outputs: vec![("c".into(), BufferId(2))],
                    kernels,
                    arena_bytes: 0,
                };
                // Values of several magnitudes, so that sums carry bits
                // below bf16's precision and rounding decides the result.
                let rng = Rng::new(17);
                let init = Init::Uniform {
                    low: -3.0,
                    high: 3.0,
                };
                let ins: BTreeMap<String, Tensor> = program
                    .inputs
                    .iter()
                    .map(|(name, buf)| {
                        let ty = &program.buffer(*buf).ty;
                        (name.clone(), random_tensor(ty, &init, &mut rng.fork(name)))
                    })
                    .collect();
                let got = emulate(&program, &CodegenOptions::default(), &ins)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let f32s = |name: &str| -> Vec<f32> {
                    ins[name].to_f64_vec().iter().map(|&x| x as f32).collect()
                };
                let (a, bt) = (f32s("a"), f32s("bt"));
                let c0 = accumulate.then(|| f32s("c0"));
                let mut want = Vec::with_capacity(batch * m * n);
                for bi in 0..batch {
                    for i in 0..m {
                        for j in 0..n {
                            let mut acc = 0.0f32;
                            for kk in 0..k {
                                let x = a[(bi * m + i) * k + kk];
                                let y = bt[(bi * n + j) * k + kk];
                                acc = x.mul_add(y, acc);
                            }
                            if let Some(c0) = &c0 {
                                acc += c0[(bi * m + i) * n + j];
                            }
                            want.push(f64::from(acc));
                        }
                    }
                }
                // Tensor::from_f64 rounds to bf16 to nearest, ties to even;
                // each value is an f32, so this is the f32 -> bf16 rounding.
                let want = Tensor::from_f64(TensorType::new(DType::Bf16, [batch, m, n]), &want)
                    .unwrap()
                    .to_f64_vec();
                assert_eq!(got.len(), 1, "{what}");
                assert_eq!(got[0].1.dtype(), DType::Bf16, "{what}");
                let got = got[0].1.to_f64_vec();
                for (e, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        g.to_bits() == w.to_bits(),
                        "{what}: element {e} is {g}, want {w}"
                    );
                }
            }
        }
    }
}
