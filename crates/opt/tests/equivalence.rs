//! The optimized graph computes what the original computes: on random
//! shapes, settings and values, every mHC model of the zoo (built in f64)
//! agrees with its optimization in the f64 reference interpreter within
//! a relative error of 1e-9 (absolute floor 1e-12, see `common::ATOL`),
//! and the optimization contains exactly the fused ops the model calls for.
//!
//! Values are drawn with the zoo's own initializations (`Model::inits`)
//! from a seed proptest chooses, so they are finite and of the magnitudes
//! the models see in use; NaN, infinities and subnormals are excluded on
//! purpose: the point here is the arithmetic of fusion, and the IEEE edge
//! cases of each rule are tested by the rules' own guards.
//!
//! Case counts are modest so the file runs in seconds in a debug build;
//! `PROPTEST_CASES` overrides them.

mod common;

use birkhoff_dsl::zoo::mhc::SinkhornVariant;
use birkhoff_dsl::zoo::{LayerFn, ModelArgs, build_model};
use birkhoff_ir::{DType, FloatAttr, SinkhornSpec};
use birkhoff_opt::Optimized;
use common::{agree, count, counts, draw_inputs, kernels, run, sinkhorn_specs};
use proptest::prelude::*;

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 32;

fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = DEFAULT_CASES;
    }
    c
}

/// Every setting of an mHC connection.
#[derive(Clone, Copy, Debug)]
struct Mix {
    variant: SinkhornVariant,
    iters: usize,
    eps: f64,
    norm_eps: f64,
    pre_eps: f64,
    post_mult: f64,
}

fn variant() -> impl Strategy<Value = SinkhornVariant> {
    prop_oneof![
        Just(SinkhornVariant::Paper),
        Just(SinkhornVariant::TileKernels)
    ]
}

/// Sinkhorn eps: exactly 0 (no add at all), the default, or anything small.
fn sinkhorn_eps() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1e-6), 1e-9f64..0.1]
}

fn mix() -> impl Strategy<Value = Mix> {
    (
        variant(),
        1usize..=30,
        sinkhorn_eps(),
        prop_oneof![Just(0.0), 1e-9f64..1e-2],
        prop_oneof![Just(0.0), 0.0f64..0.5],
        -3.0f64..3.0,
    )
        .prop_map(|(variant, iters, eps, norm_eps, pre_eps, post_mult)| Mix {
            variant,
            iters,
            eps,
            norm_eps,
            pre_eps,
            post_mult,
        })
}

fn with_mix(args: &ModelArgs, m: &Mix) -> ModelArgs {
    ModelArgs {
        sinkhorn: Some(m.variant),
        iters: Some(m.iters),
        eps: Some(m.eps),
        norm_eps: Some(m.norm_eps),
        pre_eps: Some(m.pre_eps),
        post_mult: Some(m.post_mult),
        ..*args
    }
}

fn sizes(t: usize, n: usize, c: usize) -> ModelArgs {
    ModelArgs {
        tokens: Some(t),
        streams: Some(n),
        hidden: Some(c),
        dtype: Some(DType::F64),
        ..ModelArgs::default()
    }
}

/// Builds `name`, optimizes it, checks how many nodes of each op in `want`
/// the result has, and compares both graphs on inputs drawn from `seed`.
/// Returns the optimization for further checks.
fn check(
    name: &str,
    args: &ModelArgs,
    want: &[(&str, usize)],
    seed: u64,
) -> Result<Optimized, TestCaseError> {
    let model = build_model(name, args).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let out = run(&model.graph);
    for &(op, n) in want {
        prop_assert_eq!(
            count(&out.graph, op),
            n,
            "{} of {}\n{}",
            op,
            name,
            out.graph
        );
    }
    let inputs = draw_inputs(&model.graph, &model.inits, seed);
    if let Err(e) = agree(&model.graph, &out.graph, &inputs) {
        return Err(TestCaseError::fail(format!(
            "{name} {args:?} seed {seed}: {e}"
        )));
    }
    Ok(out)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mhc_pre_agrees_with_its_unfused_graph(
        t in 1usize..=3, n in 2usize..8, c in 1usize..=4, m in mix(), seed in any::<u64>(),
    ) {
        let args = with_mix(&sizes(t, n, c), &m);
        let out = check("mhc-pre", &args, &[], seed)?;
        prop_assert_eq!(kernels(&out.graph), counts(&[("mhc_pre", 1)]));
    }

    #[test]
    fn hc_pre_agrees_with_its_unfused_graph(
        t in 1usize..=3, n in 2usize..8, c in 1usize..=4,
        norm_eps in prop_oneof![Just(0.0), 1e-9f64..1e-2], seed in any::<u64>(),
    ) {
        let args = ModelArgs { norm_eps: Some(norm_eps), ..sizes(t, n, c) };
        let out = check("hc-pre", &args, &[], seed)?;
        prop_assert_eq!(kernels(&out.graph), counts(&[("hc_pre", 1)]));
    }

    #[test]
    fn mhc_post_agrees_with_its_unfused_graph(
        t in 1usize..=3, n in 2usize..8, c in 1usize..=4, seed in any::<u64>(),
    ) {
        let args = sizes(t, n, c);
        let out = check("mhc-post", &args, &[], seed)?;
        prop_assert_eq!(kernels(&out.graph), counts(&[("mhc_post", 1)]));
    }

    #[test]
    fn sinkhorn_agrees_with_its_unrolled_chain(
        t in 1usize..=3, n in 2usize..8, v in variant(), iters in 1usize..=30,
        eps in sinkhorn_eps(), seed in any::<u64>(),
    ) {
        let args = ModelArgs {
            tokens: Some(t),
            streams: Some(n),
            sinkhorn: Some(v),
            iters: Some(iters),
            eps: Some(eps),
            dtype: Some(DType::F64),
            ..ModelArgs::default()
        };
        let out = check("sinkhorn", &args, &[], seed)?;
        prop_assert_eq!(kernels(&out.graph), counts(&[("sinkhorn", 1)]));
        // With eps = 0 both variants are one function, named `paper`.
        let named = if eps == 0.0 { SinkhornVariant::Paper } else { v };
        prop_assert_eq!(
            sinkhorn_specs(&out.graph),
            vec![SinkhornSpec { variant: named, iters, eps: FloatAttr(eps) }]
        );
    }

    #[test]
    fn mhc_sublayer_agrees_with_its_unfused_graph(
        t in 1usize..=3, n in 2usize..8, c in 1usize..=4, m in mix(),
        layer_fn in prop_oneof![Just(LayerFn::Identity), Just(LayerFn::LinearTanh)],
        seed in any::<u64>(),
    ) {
        let args = ModelArgs { layer_fn: Some(layer_fn), ..with_mix(&sizes(t, n, c), &m) };
        check(
            "mhc-sublayer",
            &args,
            &[("mhc_pre", 1), ("mhc_post", 1), ("sinkhorn", 0), ("row_norm", 0), ("col_norm", 0)],
            seed,
        )?;
    }

    #[test]
    fn mhc_block_agrees_with_its_unfused_graph(
        layers in 1usize..=2, t in 1usize..=3, n in 2usize..8, heads in 1usize..=2,
        width in 1usize..=2, m in mix(), seed in any::<u64>(),
    ) {
        let args = ModelArgs {
            heads: Some(heads),
            ffn: Some(3),
            layers: Some(layers),
            ..with_mix(&sizes(t, n, heads * width), &m)
        };
        check(
            "mhc-block",
            &args,
            &[("mhc_pre", 2 * layers), ("mhc_post", 2 * layers), ("sinkhorn", 0), ("row_norm", 0), ("col_norm", 0)],
            seed,
        )?;
    }

    #[test]
    fn hc_block_agrees_with_its_unfused_graph(
        layers in 1usize..=2, t in 1usize..=3, n in 2usize..8, heads in 1usize..=2,
        width in 1usize..=2, norm_eps in prop_oneof![Just(0.0), 1e-9f64..1e-2],
        seed in any::<u64>(),
    ) {
        let args = ModelArgs {
            heads: Some(heads),
            ffn: Some(3),
            layers: Some(layers),
            norm_eps: Some(norm_eps),
            ..sizes(t, n, heads * width)
        };
        check(
            "hc-block",
            &args,
            &[("hc_pre", 2 * layers), ("mhc_post", 2 * layers), ("mhc_pre", 0)],
            seed,
        )?;
    }
}
