//! Training with recomputation: the same numbers as keeping everything,
//! bit for bit, for residual, HC and mHC language models; the memory the
//! compiled step really holds against the planner's prediction; errors for
//! plans that do not apply.

use birkhoff::CompileError;
use birkhoff::dsl::lm::{LmConfig, LmGraph, build_lm};
use birkhoff::dsl::zoo::Connection;
use birkhoff::ir::Tensor;
use birkhoff::recompute::RecomputeError;
use birkhoff_train::data::{Batches, builtin_corpus};
use birkhoff_train::{Recompute, StepMetrics, TrainError, TrainOptions, Trainer};

fn lm(connection: Connection, layers: usize, hidden: usize) -> LmGraph {
    let cfg = LmConfig {
        connection,
        layers,
        hidden,
        heads: 2,
        ffn: 2 * hidden,
        batch: 2,
        seq: 16,
        sinkhorn_iters: 6,
        ..LmConfig::default()
    };
    build_lm(&cfg).expect("the test LM builds")
}

fn trainer(model: &LmGraph, recompute: Recompute) -> Result<Trainer, TrainError> {
    let opts = TrainOptions {
        steps: 3,
        warmup: 1,
        lr: 1e-2,
        seed: 7,
        recompute,
        ..TrainOptions::default()
    };
    Trainer::new(model, &opts)
}

/// Three steps on the built-in corpus: every step's metrics and the final
/// parameters.
fn train(model: &LmGraph, recompute: Recompute) -> (Vec<StepMetrics>, Vec<(String, Tensor)>) {
    let mut t = trainer(model, recompute).expect("the trainer compiles");
    let corpus = builtin_corpus();
    let mut batches = Batches::new(&corpus.train, 2, 16, 3).expect("batches");
    let metrics = (0..3)
        .map(|_| {
            let (x, y) = batches.next();
            t.step(&x, &y).expect("a step")
        })
        .collect();
    let params = t
        .param_names()
        .iter()
        .map(|n| (n.clone(), t.param(n).expect("a parameter").clone()))
        .collect();
    (metrics, params)
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_f64_vec().into_iter().map(f64::to_bits).collect()
}

/// Recomputing re-runs the same fused ops through the same kernels, so
/// nothing may differ by even one bit: not the loss, not the gradient norm,
/// not a parameter after three AdamW updates.
fn assert_same_training(model: &LmGraph, modes: &[Recompute]) {
    let (m0, p0) = train(model, Recompute::None);
    for &mode in modes {
        let (m, p) = train(model, mode);
        for (a, b) in m0.iter().zip(&m) {
            assert_eq!(
                a.loss.to_bits(),
                b.loss.to_bits(),
                "{mode}: loss, step {}",
                a.step
            );
            assert_eq!(
                a.grad_norm.to_bits(),
                b.grad_norm.to_bits(),
                "{mode}: gradient norm, step {}",
                a.step
            );
        }
        for ((name, a), (_, b)) in p0.iter().zip(&p) {
            assert!(bits(a) == bits(b), "{mode}: parameter {name} differs");
        }
    }
}

fn recomputed(model: &LmGraph, mode: Recompute) -> usize {
    let t = trainer(model, mode).expect("the trainer compiles");
    let plan = t
        .gradient_executable()
        .recompute_plan()
        .expect("the gradient step is planned");
    plan.recompute.len()
}

#[test]
fn mhc_trains_identically_with_recomputation() {
    let model = lm(Connection::Mhc, 2, 16);
    let modes = [
        Recompute::Block(1),
        Recompute::Block(2),
        Recompute::Block(3),
        Recompute::Auto,
    ];
    // The plans really recompute something (a block of 2 or more drops streams).
    assert!(recomputed(&model, Recompute::Block(2)) > 0);
    assert_same_training(&model, &modes);
}

#[test]
fn hc_trains_identically_with_recomputation() {
    let model = lm(Connection::Hc, 2, 16);
    assert!(recomputed(&model, Recompute::Block(2)) > 0);
    assert_same_training(&model, &[Recompute::Block(2), Recompute::Auto]);
}

/// Wider models, where the recomputed pre-mix kernels fuse with other
/// neighbours than their originals did (this once cost up to 11 ulps; see
/// `tests/kernel_fusion.rs`).
#[test]
fn wider_models_train_identically_with_recomputation() {
    assert_same_training(&lm(Connection::Mhc, 1, 32), &[Recompute::Block(2)]);
    assert_same_training(
        &lm(Connection::Mhc, 3, 32),
        &[Recompute::Block(2), Recompute::Block(4), Recompute::Auto],
    );
    assert_same_training(&lm(Connection::Hc, 2, 32), &[Recompute::Block(3)]);
}

#[test]
fn residual_trains_identically_with_the_general_planner() {
    let model = lm(Connection::Residual, 2, 16);
    assert_same_training(&model, &[Recompute::Auto]);
}

#[test]
fn predicted_peak_matches_the_compiled_step() {
    // Four layers, eight mHC connections: the streams are a visible share.
    // (At much smaller sizes, 64-byte alignment of many tiny buffers makes
    // the compiled step's peak a few percent larger than predicted.)
    let cfg = LmConfig {
        connection: Connection::Mhc,
        layers: 4,
        hidden: 128,
        heads: 2,
        ffn: 4 * 128,
        batch: 4,
        seq: 32,
        ..LmConfig::default()
    };
    let model = build_lm(&cfg).expect("the LM builds");
    let mut live = Vec::new();
    for mode in [Recompute::None, Recompute::Block(2), Recompute::Block(4)] {
        let t = trainer(&model, mode).expect("the trainer compiles");
        let exe = t.gradient_executable();
        let plan = exe.recompute_plan().expect("planned");
        let measured = exe.peak_live_bytes().expect("a CPU program") as f64;
        let predicted = plan.peak_bytes as f64;
        let err = (predicted - measured).abs() / measured;
        assert!(
            err < 0.05,
            "{mode}: predicted peak {predicted} B, compiled step's peak {measured} B ({:.1}% off)",
            100.0 * err
        );
        assert!(exe.arena_bytes().expect("a CPU program") as f64 >= measured);
        live.push(measured);
    }
    assert!(live[1] < live[0], "block=2 holds less than none: {live:?}");
}

#[test]
fn plans_that_do_not_apply_are_errors() {
    let residual = lm(Connection::Residual, 2, 16);
    assert!(matches!(
        trainer(&residual, Recompute::Block(2)),
        Err(TrainError::Compile(CompileError::Recompute(
            RecomputeError::NoConnections
        )))
    ));
    let mhc = lm(Connection::Mhc, 1, 16);
    assert!(matches!(
        trainer(&mhc, Recompute::Block(3)),
        Err(TrainError::Compile(CompileError::Recompute(
            RecomputeError::BlockTooLarge {
                block: 3,
                layers: 2
            }
        )))
    ));
}

#[test]
fn recompute_modes_parse_and_print() {
    for (text, mode) in [
        ("none", Recompute::None),
        ("auto", Recompute::Auto),
        ("block=3", Recompute::Block(3)),
    ] {
        assert_eq!(text.parse::<Recompute>(), Ok(mode));
        assert_eq!(mode.to_string(), text);
    }
    for bad in ["block=0", "block=x", "block", "some", ""] {
        assert!(bad.parse::<Recompute>().is_err(), "{bad:?} parses");
    }
}

/// In a compiled training step with `block=K`, each block's
/// recomputation is one kernel: its `K` pre-mix replays and the `K - 1`
/// post-mixes between them (the kernel may take in neighbouring backward
/// work too). Two layers are four connections.
#[test]
fn each_block_is_replayed_by_one_kernel() {
    let model = lm(Connection::Mhc, 2, 32);
    for (block, blocks) in [(1, 4), (2, 2), (4, 1)] {
        let t = trainer(&model, Recompute::Block(block)).expect("the trainer compiles");
        let exe = t.gradient_executable();
        let plan = exe.recompute_plan().expect("planned");
        assert_eq!(plan.replayed, 4, "block={block}: every layer input");
        let program = exe.program().expect("a kernel program");
        // The forward pass's four pre-mixes come first, one kernel each;
        // the backward pass's replay kernels follow.
        let with_pre: Vec<&str> = program
            .kernels
            .iter()
            .map(|k| k.name.as_str())
            .filter(|n| n.contains("mhc_pre_projected"))
            .collect();
        let (forward, replays) = with_pre.split_at(4.min(with_pre.len()));
        assert!(
            forward
                .iter()
                .all(|n| n.matches("mhc_pre_projected").count() == 1)
        );
        assert_eq!(replays.len(), blocks, "block={block}: {replays:?}");
        for name in replays {
            assert_eq!(name.matches("mhc_pre_projected").count(), block, "{name}");
            assert_eq!(name.matches("mhc_post+").count(), block - 1, "{name}");
        }
    }
}
