//! The recomputation's per-block replay kernel (DeepSeek's multi-layer
//! recompute) on its own: lowering fuses a block's pre- and post-mix
//! replays into one kernel, which computes what the layer-by-layer kernels
//! do — bit for bit on the CPU, within tolerance in the GPU emulator.
//! (Training with recomputation is tested in `crates/train`.)

use birkhoff::ir::Tensor;

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_f64_vec().into_iter().map(f64::to_bits).collect()
}

/// A block's replay as the recomputation rewrite lays it out: for each
/// connection, the pre-mix from the stream and the kept mixes
/// (`mhc_pre_projected`), then the post-mix giving the next stream —
/// per-token kernels in a row, which kernel fusion makes one kernel that
/// replays the block per token from its starting stream `x0`, read once
/// (DeepSeek's multi-layer recompute). Here three connections. (The
/// layer inputs and streams are still stored: in training they are what
/// the backward pass reads.)
const REPLAY: &str = "graph @replay(%x0: f32[6,4,24], %f0: f32[6,24], %f1: f32[6,24], %p0: f32[6,4], %p1: f32[6,4], %c0: f32[6,4,4], %c1: f32[6,4,4], %m0: f32[6,24], %m1: f32[6,24], %m2: f32[6,24], %s: f32[3], %b: f32[24]) -> (li0: f32[6,24], li1: f32[6,24], li2: f32[6,24], x2: f32[6,4,24]) {
  %12 = mhc_pre_projected %x0, %m0, %s, %b, norm_eps=1e-6, pre_eps=1e-6, post_mult=2.0, variant=paper, iters=6, eps=0.0 : (f32[6,24], f32[6,4], f32[6,4,4])
  %13 = get %12, index=0 : f32[6,24]
  %14 = mhc_post %f0, %x0, %p0, %c0 : f32[6,4,24]
  %15 = mhc_pre_projected %14, %m1, %s, %b, norm_eps=1e-6, pre_eps=1e-6, post_mult=2.0, variant=paper, iters=6, eps=0.0 : (f32[6,24], f32[6,4], f32[6,4,4])
  %16 = get %15, index=0 : f32[6,24]
  %17 = mhc_post %f1, %14, %p1, %c1 : f32[6,4,24]
  %18 = mhc_pre_projected %17, %m2, %s, %b, norm_eps=1e-6, pre_eps=1e-6, post_mult=2.0, variant=paper, iters=6, eps=0.0 : (f32[6,24], f32[6,4], f32[6,4,4])
  %19 = get %18, index=0 : f32[6,24]
  return %13, %16, %19, %17
}";

/// The fused multi-layer replay computes bit for bit what the
/// layer-by-layer kernels compute.
#[test]
fn fused_multilayer_recompute_equals_layer_by_layer() {
    use birkhoff::compare::random_inputs;
    use birkhoff::cpu::{CpuOptions, compile as cpu_compile};
    use birkhoff::lower::{LowerOptions, lower};

    let graph = birkhoff::ir::parse_graph(REPLAY).expect("the replay graph parses");
    let inputs = random_inputs(&graph, &Default::default(), 5);
    let run = |fuse_kernels: bool| {
        let opts = LowerOptions {
            fuse_kernels,
            ..LowerOptions::default()
        };
        let program = lower(&graph, &opts).expect("lowering");
        let exe = cpu_compile(&program, &CpuOptions::default()).expect("code generation");
        (program, exe.run(&inputs).expect("a run"))
    };
    let (fused, a) = run(true);
    let (layered, b) = run(false);
    assert_eq!(fused.kernels.len(), 1, "one kernel replays the block");
    assert_eq!(
        fused.kernels[0].name.matches("mhc_pre_projected").count(),
        3
    );
    assert_eq!(fused.kernels[0].name.matches("mhc_post").count(), 2);
    assert_eq!(layered.kernels.len(), 5);
    for ((name, a), (_, b)) in a.iter().zip(&b) {
        assert!(bits(a) == bits(b), "the replays differ in {name}");
    }
}

/// The replay kernel on the GPU (code generation run in the host
/// emulator): one kernel, within the f32 tolerance of the reference.
#[cfg(feature = "gpu")]
#[test]
fn fused_multilayer_replay_on_the_gpu() {
    use birkhoff::compare::{compare_scaled, random_inputs, reference_options};
    use birkhoff::gpu::CodegenOptions;
    use birkhoff::gpu::codegen::emulate;
    use birkhoff::ir::interpret;
    use birkhoff::lower::{LowerOptions, lower};

    let graph = birkhoff::ir::parse_graph(REPLAY).expect("the replay graph parses");
    let inputs = random_inputs(&graph, &Default::default(), 9);
    let program = lower(&graph, &LowerOptions::default()).expect("lowering");
    assert_eq!(program.kernels.len(), 1, "one kernel replays the block");
    let got = emulate(&program, &CodegenOptions::default(), &inputs).expect("emulation");
    let want = interpret(&graph, &inputs, &reference_options()).expect("the reference");
    for e in compare_scaled(&graph, &want, &got, 1.0).expect("comparable outputs") {
        assert!(e.within, "{e:?}");
    }
}
