//! mHC however it is written: every spelling the generator draws
//! (`birkhoff_testkit::spellings`) optimizes to the same fused ops as the
//! zoo's `mhc-sublayer` with the same settings — one `mhc_pre` and one
//! `mhc_post` per sublayer, with the same attributes — leaves nothing of
//! the unfused structure behind, and computes what the original computes
//! (in f64, where only the order of a few roundings separates the two).

mod common;

use birkhoff_dsl::zoo::mhc::SinkhornVariant;
use birkhoff_dsl::zoo::{LayerFn, ModelArgs, build_model};
use birkhoff_ir::{DType, Graph, Op};
use birkhoff_testkit::proptest_cases;
use birkhoff_testkit::spellings::{Dims, Projection, RmsFactor, Spelling, build, dims, spelling};
use common::{agree, draw_inputs, run, same_signature};
use proptest::prelude::*;

/// The fused ops of `g` with their attributes, in a stable order.
fn fused_ops(g: &Graph) -> Vec<String> {
    let mut ops: Vec<String> = g
        .nodes()
        .iter()
        .filter(|n| n.op.is_fused())
        .map(|n| format!("{:?}", n.op))
        .collect();
    ops.sort();
    ops
}

/// The zoo's sublayer with the spelling's settings and sizes, optimized.
fn canonical(s: &Spelling, d: &Dims) -> Vec<String> {
    let cfg = s.config();
    let args = ModelArgs {
        tokens: Some(d.tokens),
        streams: Some(d.streams),
        hidden: Some(d.hidden),
        layer_fn: Some(LayerFn::LinearTanh),
        dtype: Some(d.dtype),
        sinkhorn: Some(cfg.sinkhorn.variant),
        iters: Some(cfg.sinkhorn.iters),
        eps: Some(cfg.sinkhorn.eps),
        norm_eps: Some(cfg.norm_eps),
        pre_eps: Some(cfg.pre_eps),
        post_mult: Some(cfg.post_mult),
        ..ModelArgs::default()
    };
    let model = build_model("mhc-sublayer", &args).expect("the zoo builds the sublayer");
    let one = fused_ops(&run(&model.graph).graph);
    // A stack of sublayers repeats the sublayer's fused ops.
    let mut all: Vec<String> = (0..d.layers).flat_map(|_| one.clone()).collect();
    all.sort();
    all
}

/// What must not survive fusion: the unfused structure and the
/// `[T, n, n, C]` products of a broadcast contraction.
fn leftovers(g: &Graph) -> Vec<String> {
    g.nodes()
        .iter()
        .filter(|n| {
            matches!(
                n.op,
                Op::Sinkhorn(_)
                    | Op::RmsNorm { .. }
                    | Op::RowNorm { .. }
                    | Op::ColNorm { .. }
                    | Op::Softmax { .. }
                    | Op::Sigmoid
                    | Op::Exp
            ) || (!n.op.is_leaf() && n.ty.as_tensor().is_some_and(|t| t.rank() >= 4))
        })
        .map(|n| format!("{:?} : {}", n.op, n.ty))
        .collect()
}

/// Optimizes the spelled model and checks the fused ops, the leftovers,
/// the signature and the numerics.
fn check(s: &Spelling, d: &Dims, seed: u64) -> Result<(), TestCaseError> {
    let model = build(s, d, &s.config()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let out = run(&model.graph);
    let g = &out.graph;
    let fused = fused_ops(g);
    let want = canonical(s, d);
    prop_assert_eq!(&fused, &want, "{:?}\n{}", s, g);
    let left = leftovers(g);
    prop_assert!(left.is_empty(), "left unfused: {:?}\n{:?}\n{}", left, s, g);
    same_signature(&model.graph, g).map_err(TestCaseError::fail)?;
    let inputs = draw_inputs(&model.graph, &model.inits, seed);
    agree(&model.graph, g, &inputs).map_err(|e| TestCaseError::fail(format!("{e}\n{s:?}")))?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(48)))]

    #[test]
    fn every_spelling_fuses_like_the_zoo(s in spelling(), d in dims(1..2, DType::F64), seed in any::<u64>()) {
        check(&s, &d, seed)?;
    }

    #[test]
    fn stacked_spellings_fuse_every_sublayer(s in spelling(), d in dims(2..4, DType::F64), seed in any::<u64>()) {
        check(&s, &d, seed)?;
    }
}

/// The two named spellings, at a few sizes (n = 1 included).
#[test]
fn the_zoo_and_the_paper_spellings_fuse() {
    for s in [Spelling::zoo(), Spelling::paper()] {
        for (tokens, streams, hidden) in [(3, 4, 8), (2, 1, 5), (1, 2, 3)] {
            let d = Dims {
                tokens,
                streams,
                hidden,
                layers: 1,
                dtype: DType::F64,
                layer_fn: LayerFn::LinearTanh,
            };
            if let Err(e) = check(&s, &d, 7) {
                panic!("{e}");
            }
        }
    }
}

/// Minimal spellings the properties above shrank to while a rule was
/// missing, each kept as it was found (one token, one stream, one channel;
/// the zoo spelling otherwise, with the failing draw's settings).
#[test]
fn shrunk_failures_stay_fused() {
    let base = || {
        let mut s = Spelling::zoo();
        s.projection = Projection::Packed {
            output_major: false,
            order: 0,
        };
        s.scale_after = false;
        s.settings.pre_eps = 0.0;
        s.settings.iters = 1;
        s
    };
    let paper_eps0 = |mut s: Spelling| {
        s.settings.variant = SinkhornVariant::Paper;
        s.settings.eps = 0.0;
        s
    };
    // pow(ms + eps, -0.5) as the RMS factor (`pow-to-root`).
    let mut pow = paper_eps0(base());
    pow.rms.factor = RmsFactor::PowNegHalf;
    // The projection as (φᵀ · x̂ᵀ)ᵀ (`transpose-of-matmul`).
    let mut transposed = paper_eps0(base());
    transposed.transposed_product = true;
    // tilekernels with eps: the softmax of logits minus their row max
    // (the shift under the softmax, whatever eps).
    let mut shifted = base();
    shifted.sinkhorn.shift = 1;
    // Log-domain Sinkhorn on H̃_res (`log-softmax`, `softmax-of-log`,
    // `exp-of-log`); with n = 1 every value is constant along a 1-wide
    // axis, and a general shift there folded the rounds into one.
    let mut log_domain = paper_eps0(base());
    log_domain.sinkhorn.on_h_res = true;
    log_domain.sinkhorn.log_domain = 1;
    log_domain.settings.iters = 2;
    for s in [pow, transposed, shifted, log_domain] {
        let d = Dims {
            tokens: 1,
            streams: 1,
            hidden: 1,
            layers: 1,
            dtype: DType::F64,
            layer_fn: LayerFn::LinearTanh,
        };
        if let Err(e) = check(&s, &d, 0) {
            panic!("{e}");
        }
    }
}

/// Log-domain Sinkhorn on 1×1 matrices once grew the e-graph to 450,000
/// nodes (each shift rule saw every round's normalizer as a shift, and the
/// chain walk went round the resulting cycle up to its cap): the e-graph
/// stays small.
#[test]
fn one_stream_log_domain_chains_stay_small() {
    let mut s = Spelling::zoo();
    s.settings.variant = SinkhornVariant::Paper;
    s.settings.eps = 0.0;
    s.settings.iters = 3;
    s.sinkhorn.log_domain = 2;
    let d = Dims {
        tokens: 2,
        streams: 1,
        hidden: 2,
        layers: 3,
        dtype: DType::F64,
        layer_fn: LayerFn::LinearTanh,
    };
    let model = build(&s, &d, &s.config()).expect("builds");
    let out = run(&model.graph);
    let largest = out.report.passes.iter().map(|p| p.egraph_nodes).max();
    assert!(largest < Some(20_000), "largest e-graph: {largest:?}");
    if let Err(e) = check(&s, &d, 3) {
        panic!("{e}");
    }
}

/// The zoo spelling is the zoo's graph: the generator writes what the zoo
/// writes, so the property above is anchored to the real thing.
#[test]
fn the_zoo_spelling_is_the_zoo_graph() {
    let d = Dims {
        tokens: 3,
        streams: 2,
        hidden: 4,
        layers: 1,
        dtype: DType::F32,
        layer_fn: LayerFn::LinearTanh,
    };
    let s = Spelling::zoo();
    let spelled = build(&s, &d, &s.config()).expect("builds").graph;
    let cfg = s.config();
    let args = ModelArgs {
        tokens: Some(3),
        streams: Some(2),
        hidden: Some(4),
        layer_fn: Some(LayerFn::LinearTanh),
        sinkhorn: Some(cfg.sinkhorn.variant),
        iters: Some(cfg.sinkhorn.iters),
        ..ModelArgs::default()
    };
    let zoo = build_model("mhc-sublayer", &args).expect("builds").graph;
    // The same nodes (the zoo computes the projection before the RMS
    // factor, the generator after: the order differs, not the graph).
    let ops = |g: &Graph| -> Vec<String> {
        let mut v: Vec<String> = g
            .nodes()
            .iter()
            .filter(|n| !n.op.is_leaf())
            .map(|n| format!("{:?} {}", n.op, n.ty))
            .collect();
        v.sort();
        v
    };
    assert_eq!(ops(&spelled), ops(&zoo));
}
