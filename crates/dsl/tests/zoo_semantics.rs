//! The zoo's mHC models against an independent, loop-by-loop transcription
//! of `docs/design.md` §2, on random shapes, values and settings.
//!
//! Models are built with `--dtype f64` and run in the interpreter's f64
//! mode, so both sides compute in f64 and agree to rounding noise; the
//! tolerance (1e-10 relative to the magnitude of the terms) only absorbs
//! different summation orders.

use std::collections::BTreeMap;

use birkhoff_dsl::zoo::mhc::SinkhornVariant;
use birkhoff_dsl::zoo::{LayerFn, ModelArgs, build_model};
use birkhoff_ir::{DType, InterpOptions, Tensor, TensorType, interpret};
use proptest::prelude::*;

/// Settings shared by the reference functions.
#[derive(Clone, Debug)]
struct Settings {
    variant: SinkhornVariant,
    iters: usize,
    eps: f64,
    norm_eps: f64,
    pre_eps: f64,
    post_mult: f64,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `docs/design.md` §2 Sinkhorn on one n×n matrix `c[i][j]` (rows first).
#[allow(
    clippy::needless_range_loop,
    reason = "column sums read clearest as m[i][j]"
)]
fn ref_sinkhorn(c: &[Vec<f64>], s: &Settings) -> Vec<Vec<f64>> {
    let n = c.len();
    let mut m: Vec<Vec<f64>> = match s.variant {
        SinkhornVariant::Paper => c
            .iter()
            .map(|r| r.iter().map(|x| x.exp()).collect())
            .collect(),
        SinkhornVariant::TileKernels => c
            .iter()
            .map(|r| {
                let mx = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = r.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                e.iter().map(|x| x / z + s.eps).collect()
            })
            .collect(),
    };
    let rows = |m: &mut Vec<Vec<f64>>| {
        for r in m.iter_mut() {
            let z: f64 = r.iter().sum::<f64>() + s.eps;
            r.iter_mut().for_each(|x| *x /= z);
        }
    };
    let cols = |m: &mut Vec<Vec<f64>>| {
        for j in 0..n {
            let z: f64 = (0..n).map(|i| m[i][j]).sum::<f64>() + s.eps;
            (0..n).for_each(|i| m[i][j] /= z);
        }
    };
    match s.variant {
        SinkhornVariant::Paper => {
            for _ in 0..s.iters {
                rows(&mut m);
                cols(&mut m);
            }
        }
        SinkhornVariant::TileKernels => {
            cols(&mut m);
            for _ in 1..s.iters {
                rows(&mut m);
                cols(&mut m);
            }
        }
    }
    m
}

/// Per-token mixes `[m]` for `x[n][C]`.
fn ref_mixes(x: &[Vec<f64>], proj: &[f64], norm_eps: f64) -> Vec<f64> {
    let flat: Vec<f64> = x.iter().flatten().copied().collect();
    let k = flat.len();
    let ms = flat.iter().map(|v| v * v).sum::<f64>() / k as f64;
    let r = 1.0 / (ms + norm_eps).sqrt();
    proj.chunks(k)
        .map(|row| row.iter().zip(&flat).map(|(a, b)| a * b).sum::<f64>() * r)
        .collect()
}

/// One token of mhc-pre (or hc-pre): (layer_input [C], post [n], comb [n][n]).
fn ref_pre(
    x: &[Vec<f64>],
    proj: &[f64],
    scale: &[f64],
    base: &[f64],
    s: &Settings,
    constrained: bool,
) -> (Vec<f64>, Vec<f64>, Vec<Vec<f64>>) {
    let n = x.len();
    let mixes = ref_mixes(x, proj, s.norm_eps);
    let (pre, post, comb): (Vec<f64>, Vec<f64>, Vec<Vec<f64>>) = if constrained {
        let z: Vec<f64> = (0..n * (n + 2))
            .map(|k| {
                mixes[k]
                    * scale[if k < n {
                        0
                    } else if k < 2 * n {
                        1
                    } else {
                        2
                    }]
                    + base[k]
            })
            .collect();
        let comb: Vec<Vec<f64>> = (0..n)
            .map(|i| z[2 * n + i * n..2 * n + (i + 1) * n].to_vec())
            .collect();
        (
            (0..n).map(|i| sigmoid(z[i]) + s.pre_eps).collect(),
            (0..n).map(|i| sigmoid(z[n + i]) * s.post_mult).collect(),
            ref_sinkhorn(&comb, s),
        )
    } else {
        let g = |k: usize, which: usize| scale[which] * mixes[k].tanh() + base[k];
        (
            (0..n).map(|i| g(i, 0)).collect(),
            (0..n).map(|i| g(n + i, 1)).collect(),
            (0..n)
                .map(|i| (0..n).map(|j| g(2 * n + i * n + j, 2)).collect())
                .collect(),
        )
    };
    let c = x[0].len();
    let li = (0..c)
        .map(|cc| (0..n).map(|i| pre[i] * x[i][cc]).sum())
        .collect();
    (li, post, comb)
}

/// One token of mhc-post.
fn ref_post(f: &[f64], x: &[Vec<f64>], post: &[f64], comb: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = x.len();
    (0..n)
        .map(|j| {
            (0..f.len())
                .map(|c| post[j] * f[c] + (0..n).map(|i| comb[i][j] * x[i][c]).sum::<f64>())
                .collect()
        })
        .collect()
}

fn args(t: usize, n: usize, c: Option<usize>, s: &Settings) -> ModelArgs {
    ModelArgs {
        tokens: Some(t),
        streams: Some(n),
        hidden: c,
        sinkhorn: Some(s.variant),
        iters: Some(s.iters),
        eps: Some(s.eps),
        norm_eps: Some(s.norm_eps),
        pre_eps: Some(s.pre_eps),
        post_mult: Some(s.post_mult),
        dtype: Some(DType::F64),
        ..ModelArgs::default()
    }
}

fn run(
    model: &str,
    a: &ModelArgs,
    inputs: &[(&str, &[usize], &[f64])],
) -> BTreeMap<String, Vec<f64>> {
    let m = build_model(model, a).expect("model builds");
    let ins = inputs
        .iter()
        .map(|(name, shape, v)| {
            (
                name.to_string(),
                Tensor::from_f64(TensorType::new(DType::F64, *shape), v).unwrap(),
            )
        })
        .collect();
    interpret(&m.graph, &ins, &InterpOptions::default())
        .expect("runs")
        .into_iter()
        .map(|(n, t)| (n, t.to_f64_vec()))
        .collect()
}

fn close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-10 * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        prop_oneof![
            Just(SinkhornVariant::Paper),
            Just(SinkhornVariant::TileKernels)
        ],
        1usize..=25,
        prop_oneof![Just(0.0), Just(1e-6), 1e-4..1e-2f64],
        prop_oneof![Just(1e-6), 1e-8..1e-1f64],
        prop_oneof![Just(0.0), Just(1e-6), 0.0..0.5f64],
        prop_oneof![Just(2.0), Just(1.0), 0.1..3.0f64],
    )
        .prop_map(
            |(variant, iters, eps, norm_eps, pre_eps, post_mult)| Settings {
                variant,
                iters,
                eps,
                norm_eps,
                pre_eps,
                post_mult,
            },
        )
}

fn values(len: usize, scale: f64) -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(-scale..scale, len)
}

fn token(x: &[f64], t: usize, n: usize, c: usize) -> Vec<Vec<f64>> {
    (0..n).map(|i| x[(t * n + i) * c..][..c].to_vec()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn sinkhorn_matches_reference((t, n, s, comb) in (1usize..4, 1usize..6, settings()).prop_flat_map(|(t, n, s)| (Just(t), Just(n), Just(s), values(t * n * n, 4.0)))) {
        let mut a = args(t, n, None, &s);
        (a.norm_eps, a.pre_eps, a.post_mult) = (None, None, None);
        let out = run("sinkhorn", &a, &[("comb", &[t, n, n], &comb)]);
        let want: Vec<f64> = (0..t)
            .flat_map(|tt| ref_sinkhorn(&(0..n).map(|i| comb[(tt * n + i) * n..][..n].to_vec()).collect::<Vec<_>>(), &s).concat())
            .collect();
        close(&out["comb_mix"], &want, "comb_mix");
    }

    #[test]
    fn mhc_and_hc_pre_match_reference(
        (t, n, c, s, x, proj, scale, base, constrained) in (1usize..4, 1usize..5, 1usize..7, settings(), any::<bool>())
            .prop_flat_map(|(t, n, c, s, k)| {
                let m = n * (n + 2);
                (Just(t), Just(n), Just(c), Just(s), values(t * n * c, 3.0), values(m * n * c, 1.0), values(3, 2.0), values(m, 2.0), Just(k))
            })
    ) {
        let model = if constrained { "mhc-pre" } else { "hc-pre" };
        let mut a = args(t, n, Some(c), &s);
        if !constrained {
            (a.sinkhorn, a.iters, a.eps, a.pre_eps, a.post_mult) = (None, None, None, None, None);
        }
        let m = n * (n + 2);
        let out = run(model, &a, &[("residual", &[t, n, c], &x), ("fn", &[m, n * c], &proj), ("scale", &[3], &scale), ("base", &[m], &base)]);
        let (mut li, mut post, mut comb) = (vec![], vec![], vec![]);
        for tt in 0..t {
            let (l, p, cm) = ref_pre(&token(&x, tt, n, c), &proj, &scale, &base, &s, constrained);
            li.extend(l);
            post.extend(p);
            comb.extend(cm.concat());
        }
        close(&out["layer_input"], &li, "layer_input");
        close(&out["post_mix"], &post, "post_mix");
        close(&out["comb_mix"], &comb, "comb_mix");
    }

    #[test]
    fn mhc_post_matches_reference(
        (t, n, c, f, x, post, comb) in (1usize..4, 1usize..5, 1usize..7)
            .prop_flat_map(|(t, n, c)| (Just(t), Just(n), Just(c), values(t * c, 3.0), values(t * n * c, 3.0), values(t * n, 2.0), values(t * n * n, 1.0)))
    ) {
        let a = ModelArgs { tokens: Some(t), streams: Some(n), hidden: Some(c), dtype: Some(DType::F64), ..ModelArgs::default() };
        let out = run("mhc-post", &a, &[("layer_output", &[t, c], &f), ("residual", &[t, n, c], &x), ("post_mix", &[t, n], &post), ("comb_mix", &[t, n, n], &comb)]);
        let want: Vec<f64> = (0..t)
            .flat_map(|tt| {
                let cm: Vec<Vec<f64>> = (0..n).map(|i| comb[(tt * n + i) * n..][..n].to_vec()).collect();
                ref_post(&f[tt * c..][..c], &token(&x, tt, n, c), &post[tt * n..][..n], &cm).concat()
            })
            .collect();
        close(&out["residual_out"], &want, "residual_out");
    }

    #[test]
    fn mhc_sublayer_is_pre_then_f_then_post(
        (t, n, c, s, x, proj, scale, base, w, linear) in (1usize..3, 1usize..5, 1usize..6, settings(), any::<bool>())
            .prop_flat_map(|(t, n, c, s, l)| {
                let m = n * (n + 2);
                (Just(t), Just(n), Just(c), Just(s), values(t * n * c, 3.0), values(m * n * c, 1.0), values(3, 2.0), values(m, 2.0), values(c * c, 1.0), Just(l))
            })
    ) {
        let mut a = args(t, n, Some(c), &s);
        a.layer_fn = Some(if linear { LayerFn::LinearTanh } else { LayerFn::Identity });
        let m = n * (n + 2);
        let (xs, ps, bs, wshape) = ([t, n, c], [m, n * c], [m], [c, c]);
        let mut inputs: Vec<(&str, &[usize], &[f64])> = vec![("residual", &xs, &x), ("fn", &ps, &proj), ("scale", &[3], &scale), ("base", &bs, &base)];
        if linear {
            inputs.push(("w", &wshape, &w));
        }
        let out = run("mhc-sublayer", &a, &inputs);
        let mut want = vec![];
        for tt in 0..t {
            let xt = token(&x, tt, n, c);
            let (li, post, comb) = ref_pre(&xt, &proj, &scale, &base, &s, true);
            let f: Vec<f64> = if linear {
                (0..c).map(|j| (0..c).map(|i| li[i] * w[i * c + j]).sum::<f64>().tanh()).collect()
            } else {
                li
            };
            want.extend(ref_post(&f, &xt, &post, &comb).concat());
        }
        close(&out["residual_out"], &want, "residual_out");
    }
}

/// Deterministic N(0,1)-ish logits without a random-number crate.
fn logits(count: usize, seed: u64) -> Vec<f64> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            // Sum of 12 uniforms minus 6: mean 0, variance 1.
            (0..12)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (state >> 11) as f64 / (1u64 << 53) as f64
                })
                .sum::<f64>()
                - 6.0
        })
        .collect()
}

fn axis_sums(m: &[f64], t: usize, n: usize) -> (f64, f64) {
    // Worst deviation from 1 of row sums (last axis) and column sums.
    let (mut row, mut col) = (0.0f64, 0.0f64);
    for tt in 0..t {
        for i in 0..n {
            let r: f64 = (0..n).map(|j| m[(tt * n + i) * n + j]).sum();
            let c: f64 = (0..n).map(|j| m[(tt * n + j) * n + i]).sum();
            row = row.max((r - 1.0).abs());
            col = col.max((c - 1.0).abs());
        }
    }
    (row, col)
}

#[test]
fn sinkhorn_last_normalized_axis_sums_to_one_in_f64() {
    let (t, n) = (64, 4);
    let comb = logits(t * n * n, 7);
    for variant in [SinkhornVariant::Paper, SinkhornVariant::TileKernels] {
        let a = ModelArgs {
            tokens: Some(t),
            streams: Some(n),
            sinkhorn: Some(variant),
            iters: Some(20),
            eps: Some(0.0),
            dtype: Some(DType::F64),
            ..ModelArgs::default()
        };
        let out = run("sinkhorn", &a, &[("comb", &[t, n, n], &comb)]);
        let (_, col) = axis_sums(&out["comb_mix"], t, n);
        assert!(
            col < 1e-12,
            "{variant:?}: columns (normalized last) miss 1 by {col}"
        );
    }
}

#[test]
fn two_hundred_paper_rounds_are_doubly_stochastic() {
    let (t, n) = (64, 4);
    let comb = logits(t * n * n, 11);
    let a = ModelArgs {
        tokens: Some(t),
        streams: Some(n),
        sinkhorn: Some(SinkhornVariant::Paper),
        iters: Some(200),
        dtype: Some(DType::F64),
        ..ModelArgs::default()
    };
    let out = run("sinkhorn", &a, &[("comb", &[t, n, n], &comb)]);
    let (row, col) = axis_sums(&out["comb_mix"], t, n);
    assert!(
        row < 1e-6 && col < 1e-6,
        "rows miss by {row}, columns by {col}"
    );
}
