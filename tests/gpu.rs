//! The GPU backend's numerics on a real device: every zoo model, fused
//! and unfused, in f32 and bf16, on fixed and proptest-chosen shapes and
//! values, and random graphs of every op, each against the f64 reference
//! interpreter with the `docs/design.md` §3 tolerances and against the CPU backend;
//! plus artifacts, timing and buffer reuse on the device.
//!
//! One test needs no device and always runs in a `gpu` build: every zoo
//! model generates a valid module (PTX and launch plan) that survives the
//! artifact format. The rest need a CUDA GPU, so they are `#[ignore]`d; on
//! a GPU machine run
//!
//! ```text
//! cargo test --features gpu --test gpu -- --ignored --nocapture
//! ```
//!
//! (`scripts/gpu-check` runs the same binary on a machine without Rust.)
//! (`--nocapture` prints one line per case: model, dtype, shape, fused or
//! not, and the worst error of every output). Tolerances: whole models are
//! held to 10x the per-op reduction row of their dtype (as on the CPU); a
//! bf16 model is judged by `birkhoff::compare::compare_cases`, whose bf16
//! bound allows for the unfused reference rounding every intermediate; and
//! an f32 graph whose f32 intermediates overflow is judged against the
//! interpreter's f32 mode as well (see `reference_check`).
#![cfg(feature = "gpu")]

use std::collections::BTreeMap;

use birkhoff::compare::{
    CheckError, OutputError, Rule, compare_cases, compare_compiled, compare_with, random_inputs,
};
use birkhoff::dsl::zoo::{Flag, ModelArgs, build_model, model_info, models};
use birkhoff::gpu::{GpuError, GpuExecutable, GpuModule, copy_bandwidth};
use birkhoff::ir::{DType, Graph, Tensor};
use birkhoff::{
    CompileError, CompileOptions, GpuCode, Target, compile_with, gpu_code, gpu_module,
    load_gpu_artifact,
};
use birkhoff_testkit::proptest_cases;
use proptest::prelude::*;

/// Whole models chain dozens of ops per layer; `docs/design.md` §3 bounds each op
/// family, so a model is held to 10x the reduction row (f32: 1e-3).
const MODEL_FACTOR: f64 = 10.0;

/// The GPU and the CPU are each within the bound of the reference, so
/// within twice of each other.
const CPU_FACTOR: f64 = 2.0 * MODEL_FACTOR;

fn gpu_options(optimize: bool) -> CompileOptions {
    CompileOptions {
        target: Target::Gpu,
        optimize,
        ..CompileOptions::default()
    }
}

/// Compiles for the GPU, or says clearly why the test cannot run.
fn compile_gpu(graph: &Graph, optimize: bool) -> Result<birkhoff::Executable, String> {
    compile_with(graph, &gpu_options(optimize)).map_err(|e| match e {
        CompileError::Gpu(GpuError::NoDriver) => {
            format!("these tests need a CUDA GPU: {e}")
        }
        e => format!("compiling @{} for the GPU: {e}\n{graph}", graph.name()),
    })
}

/// `got` against the f64 reference on `inputs` (and the f32 interpreter
/// where f32 overflow decides: `compare_compiled`), tolerances times
/// `factor`.
fn reference_check(
    graph: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    got: &[(String, Tensor)],
    factor: f64,
) -> Result<Vec<OutputError>, CheckError> {
    compare_compiled(graph, inputs, &got.to_vec(), factor)
}

/// The graph's dtype as the zoo builds it (its first input's).
fn dtype_of(graph: &Graph) -> DType {
    graph
        .inputs()
        .first()
        .map_or(DType::F32, |&v| graph.ty(v).dtype)
}

/// One model case on the GPU against the interpreter and the CPU backend.
/// `Ok` holds a report line, `Err` the failure (with the same details).
fn check_model(
    what: &str,
    graph: &Graph,
    inits: &birkhoff::dsl::zoo::Inits,
    seed: u64,
    optimize: bool,
) -> Result<String, String> {
    let label = format!(
        "{what} {} {}",
        dtype_of(graph),
        if optimize { "fused" } else { "unfused" }
    );
    let exe = compile_gpu(graph, optimize)?;
    let inputs = random_inputs(graph, inits, seed);
    let got = exe.run(&inputs).map_err(|e| format!("{label}: run: {e}"))?;
    let interp: Vec<OutputError> = if dtype_of(graph) == DType::Bf16 {
        // The bf16 bound of `compare_cases`: the unfused reference rounds
        // every intermediate to bf16, a fused kernel only its results.
        let summary = compare_cases(graph, inits, 1, seed, |ins| {
            exe.run(ins).map_err(|e| CheckError::Mismatch {
                name: "(all)".into(),
                detail: e.to_string(),
            })
        })
        .map_err(|e| format!("{label}: {e}"))?;
        summary.outputs.into_iter().map(|w| w.error).collect()
    } else {
        reference_check(graph, &inputs, &got, MODEL_FACTOR).map_err(|e| format!("{label}: {e}"))?
    };
    let cpu_opts = CompileOptions {
        target: Target::Cpu,
        optimize,
        ..CompileOptions::default()
    };
    let cpu = compile_with(graph, &cpu_opts)
        .and_then(|c| c.run(&inputs))
        .map_err(|e| format!("{label}: CPU backend: {e}"))?;
    let cpu_ref = cpu;
    let vs_cpu = compare_with(graph, &cpu_ref, &got, |d| {
        Rule::output(d).scaled(CPU_FACTOR).forgiving_overflow()
    })
    .map_err(|e| format!("{label}: vs CPU: {e}"))?;
    let rows: Vec<String> = interp
        .iter()
        .map(|e| format!("    vs interpreter {e}"))
        .chain(vs_cpu.iter().map(|e| format!("    vs CPU         {e}")))
        .collect();
    let report = format!(
        "{label} (seed {seed}, {} launches):\n{}",
        exe.gpu().map_or(0, |g| g.module().launches.len()),
        rows.join("\n")
    );
    if interp.iter().chain(&vs_cpu).all(|e| e.within) {
        Ok(report)
    } else {
        Err(report)
    }
}

/// Zoo flags for shape `(t, n, c)` and `dtype`, only those `model` takes.
fn zoo_args(model: &str, dtype: DType, t: usize, n: usize, c: usize, layers: usize) -> ModelArgs {
    let info = model_info(model).expect("a zoo model");
    let takes = |f: Flag| info.flags.contains(&f);
    ModelArgs {
        tokens: Some(t),
        streams: takes(Flag::Streams).then_some(n),
        hidden: takes(Flag::Hidden).then_some(c),
        heads: takes(Flag::Heads).then_some(2),
        layers: takes(Flag::Layers).then_some(layers),
        dtype: Some(dtype),
        ..ModelArgs::default()
    }
}

/// The dtypes every model is tested in (the zoo builds each in both).
const DTYPES: [DType; 2] = [DType::F32, DType::Bf16];

#[test]
fn every_zoo_model_generates_a_module_that_survives_its_artifact() {
    for info in models() {
        for dtype in DTYPES {
            let args = zoo_args(info.name, dtype, 8, 4, 32, 1);
            let model =
                build_model(info.name, &args).unwrap_or_else(|e| panic!("{}: {e}", info.name));
            for optimize in [false, true] {
                let what = format!("{} {dtype} optimize={optimize}", info.name);
                let module = gpu_module(&model.graph, &gpu_options(optimize))
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                module.validate().unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(!module.launches.is_empty(), "{what}: no launches");
                let specs = module.input_types().unwrap();
                let names: Vec<&str> = specs.iter().map(|(n, _)| n.as_str()).collect();
                let graph_inputs: Vec<&str> = model
                    .graph
                    .inputs()
                    .iter()
                    .map(|&v| model.graph.input_name(v).unwrap_or_default())
                    .collect();
                assert_eq!(names, graph_inputs, "{what}: inputs in signature order");
                let bytes = module.to_artifact_bytes().unwrap();
                let back = GpuModule::from_artifact_bytes(&bytes)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(back, module, "{what}: artifact round trip");
                let llvm = gpu_code(&model.graph, &gpu_options(optimize), GpuCode::Llvm)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(llvm.contains("nvptx64"), "{what}:\n{llvm}");
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn every_zoo_model_on_the_gpu_matches_the_interpreter_and_the_cpu() {
    let mut failures = Vec::new();
    for info in models() {
        for dtype in DTYPES {
            // The default shape, odd sizes (not multiples of a warp or a
            // vector), and a stack of two layers.
            for (t, n, c, layers) in [(32, 4, 64, 1), (7, 3, 22, 1), (16, 4, 32, 2)] {
                let args = zoo_args(info.name, dtype, t, n, c, layers);
                let model =
                    build_model(info.name, &args).unwrap_or_else(|e| panic!("{}: {e}", info.name));
                let what = format!("{} [T={t} n={n} C={c} L={layers}]", info.name);
                for optimize in [false, true] {
                    match check_model(&what, &model.graph, &model.inits, 3, optimize) {
                        Ok(line) => println!("ok   {line}"),
                        Err(line) => {
                            println!("FAIL {line}");
                            failures.push(line);
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} GPU case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn zoo_case() -> impl Strategy<Value = (String, ModelArgs, u64)> {
    let names: Vec<&'static str> = models().iter().map(|m| m.name).collect();
    (
        proptest::sample::select(names),
        proptest::sample::select(DTYPES.to_vec()),
        1usize..40,
        1usize..5,
        1usize..4,
        1usize..24,
        1usize..3,
        any::<u64>(),
    )
        .prop_map(|(name, dtype, t, n, heads, c_per_head, layers, seed)| {
            let mut args = zoo_args(name, dtype, t, n, heads * c_per_head, layers);
            let info = model_info(name).expect("listed");
            args.heads = info.flags.contains(&Flag::Heads).then_some(heads);
            (name.to_string(), args, seed)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(8)))]

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn zoo_models_on_random_shapes_match((name, args, seed) in zoo_case(), optimize in any::<bool>()) {
        let model = build_model(&name, &args).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let what = format!("{name} {args:?}");
        match check_model(&what, &model.graph, &model.inits, seed, optimize) {
            Ok(line) => println!("ok   {line}"),
            Err(line) => return Err(TestCaseError::fail(line)),
        }
    }

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn random_graphs_on_the_gpu_match_the_interpreter(
        (g, ins) in birkhoff_testkit::graph().prop_flat_map(|g| {
            let i = birkhoff_testkit::inputs(&g, false);
            (Just(g), i)
        })
    ) {
        let exe = compile_gpu(&g, false).map_err(TestCaseError::fail)?;
        let got = exe.run(&ins).map_err(|e| TestCaseError::fail(format!("run: {e}\n{g}")))?;
        let errs = reference_check(&g, &ins, &got, 1.0)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for e in &errs {
            prop_assert!(e.within, "@{}: {}\n{}", g.name(), e, g);
        }
    }
}

fn sublayer() -> birkhoff::dsl::zoo::Model {
    build_model(
        "mhc-sublayer",
        &ModelArgs {
            tokens: Some(64),
            ..ModelArgs::default()
        },
    )
    .unwrap()
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn an_artifact_runs_like_the_program_it_was_saved_from() {
    let model = sublayer();
    let inputs = random_inputs(&model.graph, &model.inits, 9);
    let exe = compile_gpu(&model.graph, true).unwrap();
    let direct = exe.run(&inputs).unwrap();
    let module = gpu_module(&model.graph, &gpu_options(true)).unwrap();
    let path = std::env::temp_dir().join(format!("birkhoff-gpu-test-{}.bkx", std::process::id()));
    module.save(&path).unwrap();
    let loaded = load_gpu_artifact(&path, 0);
    let _ = std::fs::remove_file(&path);
    let from_file = loaded.unwrap().run(&inputs).unwrap();
    // The same PTX on the same inputs: the same bits.
    assert_eq!(direct, from_file);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn runs_reuse_device_memory_without_stale_state() {
    let model = sublayer();
    let exe = compile_gpu(&model.graph, true).unwrap();
    let a = random_inputs(&model.graph, &model.inits, 1);
    let b = random_inputs(&model.graph, &model.inits, 2);
    let first = exe.run(&a).unwrap();
    let other = exe.run(&b).unwrap();
    assert_ne!(first, other, "different inputs, different outputs");
    assert_eq!(exe.run(&a).unwrap(), first, "a rerun repeats the first run");
    // A bad input is refused before the device runs anything.
    let mut bad = a.clone();
    bad.remove("residual");
    let e = exe.run(&bad).unwrap_err();
    assert!(e.to_string().contains("residual"), "{e}");
    assert_eq!(exe.run(&a).unwrap(), first);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn device_timings_are_measured() {
    let model = sublayer();
    let exe = compile_gpu(&model.graph, true).unwrap();
    let gpu = exe.gpu().expect("a GPU executable");
    let inputs = random_inputs(&model.graph, &model.inits, 0);
    let times = gpu.time(&inputs, 2, 5).unwrap();
    assert_eq!(times.len(), 5);
    // Measured, not judged: event timings are positive and finite.
    assert!(times.iter().all(|&t| t > 0.0 && t.is_finite()), "{times:?}");
    let launches = gpu.time_launches(&inputs, 1, 3).unwrap();
    assert_eq!(launches.len(), gpu.module().launches.len());
    for l in &launches {
        assert_eq!(l.times.len(), 3);
        assert!(l.times.iter().all(|&t| t > 0.0 && t.is_finite()), "{l:?}");
    }
    let info = gpu.device().info();
    let bw = copy_bandwidth(gpu.device(), 64 << 20, 5).unwrap();
    println!(
        "{info}: copy {:.0} GB/s; @{} {:.1} us per run over {} launches",
        bw / 1e9,
        model.graph.name(),
        times.iter().sum::<f64>() / times.len() as f64 * 1e6,
        launches.len()
    );
    assert!(bw > 0.0 && bw.is_finite(), "{bw}");
}

/// The driver's JIT: a loaded module has its JIT time measured, and PTX the
/// driver rejects fails with the JIT compiler's error log in the message,
/// on one line.
#[test]
#[ignore = "needs a CUDA GPU"]
fn the_jit_is_timed_and_rejected_ptx_carries_the_jit_log() {
    let model = sublayer();
    let exe = compile_gpu(&model.graph, true).unwrap();
    let gpu = exe.gpu().expect("a GPU executable");
    let jit = gpu.jit_seconds();
    assert!(jit > 0.0 && jit.is_finite(), "{jit}");
    println!(
        "@{}: JIT {jit:.3} s; info log: {:?}",
        model.graph.name(),
        gpu.jit_log()
    );
    // An instruction that does not exist, first in the first entry's body.
    let mut module = gpu_module(&model.graph, &gpu_options(true)).unwrap();
    let entry = module.ptx.find(".entry").expect("an entry");
    let body = entry + module.ptx[entry..].find('{').expect("a body") + 1;
    module
        .ptx
        .insert_str(body, "\n\tno_such_instruction.u32 %r0;\n");
    match GpuExecutable::load(module, gpu.device()) {
        Err(GpuError::Jit(j)) => {
            println!("{j}");
            assert_eq!(j.module, model.graph.name());
            assert!(!j.log.is_empty(), "no JIT log: {j}");
            assert!(
                !j.log.contains('\n') && j.log.chars().count() <= 2100,
                "{j}"
            );
        }
        other => panic!("expected the JIT's rejection, got {other:?}"),
    }
}

/// Training with recomputation on the device: a two-layer mHC language
/// model trained three steps with `none`, `block=2` and `auto` — the
/// per-block replay kernels included — gives the CPU's losses and gradient
/// norms within f32 tolerance. (Not bit for bit: on the GPU `mhc_pre`
/// takes its sums of squares from the matrix product, the split pre-mix
/// of a recomputing plan sums them itself; docs/recompute.md.)
#[test]
#[ignore = "needs a CUDA GPU"]
fn training_with_recomputation_on_the_gpu() {
    use birkhoff::Target;
    use birkhoff::dsl::lm::{LmConfig, build_lm};
    use birkhoff::dsl::zoo::Connection;
    use birkhoff_train::data::{Batches, builtin_corpus};
    use birkhoff_train::{Recompute, TrainOptions, Trainer};

    let cfg = LmConfig {
        connection: Connection::Mhc,
        layers: 2,
        hidden: 32,
        heads: 2,
        ffn: 64,
        batch: 2,
        seq: 16,
        sinkhorn_iters: 6,
        ..LmConfig::default()
    };
    let model = build_lm(&cfg).unwrap();
    let run = |target: Target, recompute: Recompute| {
        let opts = TrainOptions {
            steps: 3,
            warmup: 1,
            lr: 1e-2,
            seed: 7,
            target,
            recompute,
            ..TrainOptions::default()
        };
        let mut t = Trainer::new(&model, &opts).unwrap();
        let corpus = builtin_corpus();
        let mut batches = Batches::new(&corpus.train, 2, 16, 3).unwrap();
        (0..3)
            .map(|_| {
                let (x, y) = batches.next();
                let m = t.step(&x, &y).unwrap();
                (m.loss, m.grad_norm)
            })
            .collect::<Vec<_>>()
    };
    let cpu = run(Target::Cpu, Recompute::None);
    for mode in [Recompute::None, Recompute::Block(2), Recompute::Auto] {
        let gpu = run(Target::Gpu, mode);
        println!("{mode}: cpu {cpu:?}\n      gpu {gpu:?}");
        for ((l0, g0), (l1, g1)) in cpu.iter().zip(&gpu) {
            assert!(
                (l0 - l1).abs() <= 1e-4 * l0.abs(),
                "{mode}: loss {l0} vs {l1}"
            );
            assert!(
                (g0 - g1).abs() <= 1e-3 * g0.abs(),
                "{mode}: gradient norm {g0} vs {g1}"
            );
        }
    }
}
