//! The same math written differently is still recognized, and near misses
//! — graphs that look like a pattern but compute something else, or
//! whose intermediates other users need — are left alone or fused only
//! where that stays correct. Every test also checks the optimized graph
//! against the original in the f64 interpreter (relative error 1e-9,
//! absolute floor 1e-12).
//!
//! The mHC graphs here are written by hand with the DSL, following
//! `docs/design.md` §2 like the zoo does, with one spelling changed at a time.

mod common;

use birkhoff_dsl::zoo::mhc::SinkhornVariant;
use birkhoff_dsl::{Builder, Var, concat, nn};
use birkhoff_ir::{DType, FloatAttr, Graph, Op, SinkhornSpec};
use common::{assert_agree, count, counts, draw_inputs, inits, kernels, run, sinkhorn_specs};

const D: DType = DType::F64;
/// Tokens, streams and hidden width of the hand-written mHC graphs.
const T: usize = 3;
const N: usize = 3;
const C: usize = 4;
const M: usize = N * (N + 2);
const NORM_EPS: f64 = 1e-5;
const PRE_EPS: f64 = 0.01;
const POST_MULT: f64 = 2.0;
const ITERS: usize = 4;

/// How a mean over one axis is spelled.
#[derive(Clone, Copy, Debug, PartialEq)]
enum MeanSpelling {
    /// `mean` (the DSL's: `sum · (1/N)`).
    Mean,
    /// `sum / N`.
    SumOverN,
    /// `(1/N) · sum`.
    ReciprocalTimesSum,
}

/// One way to write an mHC sublayer; [`ZOO`] is how the zoo writes it.
#[derive(Clone, Copy, Debug)]
struct Spelling {
    /// `matmul(rms_norm(x), W)` instead of `matmul(x, W) · rsqrt(…)`.
    rms_before_projection: bool,
    /// A near miss: the mean square taken over tokens (axis 0), one
    /// factor per column, applied before the projection.
    rms_over_tokens: bool,
    mean: MeanSpelling,
    /// `eps + v` instead of `v + eps` for every added constant.
    constant_first: bool,
    /// Normalize as `x · recip(sum + eps)` instead of `x / (sum + eps)`.
    reciprocal: bool,
    /// Subtract the row maximum in the softmax of `tilekernels`.
    max_subtraction: bool,
    /// Swap the operands of the remaining commutative ops (scale · mixes,
    /// base + …, post_mult · sigmoid, the factors and terms of the post-mix).
    commute: bool,
    /// Build the residual-mix branch first and the pre gates last.
    comb_first: bool,
    variant: SinkhornVariant,
    /// Sinkhorn eps of each normalization, by round (`ITERS` rounds).
    eps: [f64; ITERS],
}

const ZOO: Spelling = Spelling {
    rms_before_projection: false,
    rms_over_tokens: false,
    mean: MeanSpelling::Mean,
    constant_first: false,
    reciprocal: false,
    max_subtraction: true,
    commute: false,
    comb_first: false,
    variant: SinkhornVariant::TileKernels,
    eps: [1e-4; ITERS],
};

#[allow(
    clippy::if_same_then_else,
    reason = "the operand order is the point: each order builds a different graph"
)]
fn plus<'b>(s: &Spelling, v: Var<'b>, k: f64) -> Var<'b> {
    if s.constant_first { k + v } else { v + k }
}

fn mean_last<'b>(s: &Spelling, v: Var<'b>) -> Var<'b> {
    let last = v.rank() - 1;
    let n = v.shape()[last] as f64;
    match s.mean {
        MeanSpelling::Mean => v.mean(&[last], true),
        MeanSpelling::SumOverN => v.sum(&[last], true) / n,
        MeanSpelling::ReciprocalTimesSum => (1.0 / n) * v.sum(&[last], true),
    }
}

/// `x / (sum(x, axis) + eps)`, spelled as `s` says.
fn normalize<'b>(s: &Spelling, x: Var<'b>, axis: usize, eps: f64) -> Var<'b> {
    let sum = x.sum(&[axis], true);
    let d = if eps == 0.0 { sum } else { plus(s, sum, eps) };
    if s.reciprocal { x * d.recip() } else { x / d }
}

fn softmax<'b>(s: &Spelling, x: Var<'b>, axis: usize) -> Var<'b> {
    if s.max_subtraction {
        nn::softmax(x, axis)
    } else {
        let e = x.exp();
        e / e.sum(&[axis], true)
    }
}

/// Sinkhorn on `comb [T, n, n]` (rows last), round `r` with eps `s.eps[r]`.
fn sinkhorn<'b>(s: &Spelling, comb: Var<'b>) -> Var<'b> {
    let (row, col) = (2, 1);
    match s.variant {
        SinkhornVariant::Paper => {
            let mut m = comb.exp();
            for eps in s.eps {
                m = normalize(s, m, row, eps);
                m = normalize(s, m, col, eps);
            }
            m
        }
        SinkhornVariant::TileKernels => {
            let mut m = softmax(s, comb, row);
            if s.eps[0] != 0.0 {
                m = plus(s, m, s.eps[0]);
            }
            m = normalize(s, m, col, s.eps[0]);
            for &eps in &s.eps[1..] {
                m = normalize(s, m, row, eps);
                m = normalize(s, m, col, eps);
            }
            m
        }
    }
}

fn mul<'b>(s: &Spelling, a: Var<'b>, b: Var<'b>) -> Var<'b> {
    if s.commute { b * a } else { a * b }
}

fn add<'b>(s: &Spelling, a: Var<'b>, b: Var<'b>) -> Var<'b> {
    if s.commute { b + a } else { a + b }
}

/// The intermediates of a hand-written mHC pre-mix.
struct Pre<'b> {
    z: Var<'b>,
    pre: Var<'b>,
    layer_input: Var<'b>,
    post: Var<'b>,
    comb: Var<'b>,
}

/// The mixing logits `z [T, M]` of `docs/design.md` §2 (pre_norm_fn, then the
/// affine split) on `x [T, N, C]`, spelled as `s` says.
fn logits<'b>(b: &'b Builder, s: &Spelling, x: Var<'b>) -> Var<'b> {
    let proj = b.param("fn", D, &[M, N * C]);
    let scale = b.param("scale", D, &[3]);
    let base = b.param("base", D, &[M]);
    let xf = x.reshape(&[T, N * C]);
    let rms = plus(s, mean_last(s, xf * xf), NORM_EPS).rsqrt();
    let mixes = if s.rms_over_tokens {
        let per_column = plus(s, (xf * xf).mean(&[0], true), NORM_EPS).rsqrt();
        mul(s, xf, per_column).matmul(proj.transpose())
    } else if s.rms_before_projection {
        mul(s, xf, rms).matmul(proj.transpose())
    } else {
        mul(s, xf.matmul(proj.transpose()), rms)
    };
    let sc = |i: usize, len: usize| scale.slice(&[i], &[i + 1]).broadcast_to(&[len]);
    let scale_vec = concat(&[sc(0, N), sc(1, N), sc(2, N * N)], 0).unwrap();
    add(s, mul(s, mixes, scale_vec), base)
}

/// `sigmoid(z[:, :N]) + pre_eps`.
fn pre_gates<'b>(s: &Spelling, z: Var<'b>) -> Var<'b> {
    plus(s, z.slice(&[0, 0], &[T, N]).sigmoid(), PRE_EPS)
}

/// `sigmoid(z[:, N:2N]) · post_mult`.
#[allow(
    clippy::if_same_then_else,
    reason = "the operand order is the point: each order builds a different graph"
)]
fn post_gates<'b>(s: &Spelling, z: Var<'b>) -> Var<'b> {
    let g = z.slice(&[0, N], &[T, 2 * N]).sigmoid();
    if s.commute {
        POST_MULT * g
    } else {
        g * POST_MULT
    }
}

/// `z[:, 2N:]` as `[T, N, N]`, before any projection.
fn comb_logits<'b>(z: Var<'b>) -> Var<'b> {
    z.slice(&[0, 2 * N], &[T, M]).reshape(&[T, N, N])
}

/// `layer_input[t, c] = Σ_i pre[t, i] · x[t, i, c]`.
fn apply_mix<'b>(pre: Var<'b>, x: Var<'b>) -> Var<'b> {
    pre.reshape(&[T, 1, N]).matmul(x).reshape(&[T, C])
}

/// The whole mHC pre-mix, its branches built in the order `s` says.
fn pre_mix<'b>(b: &'b Builder, s: &Spelling, x: Var<'b>) -> Pre<'b> {
    let z = logits(b, s, x);
    let (pre, post, comb) = if s.comb_first {
        let comb = sinkhorn(s, comb_logits(z));
        let post = post_gates(s, z);
        (pre_gates(s, z), post, comb)
    } else {
        let pre = pre_gates(s, z);
        let post = post_gates(s, z);
        (pre, post, sinkhorn(s, comb_logits(z)))
    };
    Pre {
        z,
        pre,
        layer_input: apply_mix(pre, x),
        post,
        comb,
    }
}

/// The post-mix of `docs/design.md` §2, spelled as `s` says.
fn post_mix<'b>(s: &Spelling, f: Var<'b>, x: Var<'b>, post: Var<'b>, comb: Var<'b>) -> Var<'b> {
    let mixed = comb.transpose().matmul(x);
    let prod = mul(s, post.reshape(&[T, N, 1]), f.reshape(&[T, 1, C]));
    add(s, mixed, prod)
}

/// A whole sublayer with `F = identity`: one output, `residual_out`.
fn sublayer(s: &Spelling) -> Graph {
    let b = Builder::new("sublayer");
    let x = b.input("residual", D, &[T, N, C]);
    let p = pre_mix(&b, s, x);
    b.output(
        "residual_out",
        post_mix(s, p.layer_input, x, p.post, p.comb),
    );
    b.build().unwrap()
}

/// The scale inputs are drawn from the zoo's range `[0.5, 1.5)`.
fn mix_inits() -> birkhoff_dsl::zoo::Inits {
    inits(&[(
        "scale",
        birkhoff_dsl::Init::Uniform {
            low: 0.5,
            high: 1.5,
        },
    )])
}

/// Optimizes `g`, checks it against the original on two input draws, and
/// returns the optimized graph.
#[track_caller]
fn optimized(g: &Graph) -> Graph {
    let out = run(g);
    for seed in [1, 2] {
        assert_agree(g, &out.graph, &draw_inputs(g, &mix_inits(), seed));
    }
    out.graph
}

/// Asserts that `s` optimizes to exactly one `mhc_pre` and one `mhc_post`.
#[track_caller]
fn assert_fused_sublayer(s: &Spelling) {
    let g = optimized(&sublayer(s));
    assert_eq!(
        kernels(&g),
        counts(&[("mhc_pre", 1), ("mhc_post", 1)]),
        "{s:?}\n{g}"
    );
}

fn single(name: &str, shape: &[usize], f: impl for<'b> Fn(Var<'b>) -> Var<'b>) -> Graph {
    let b = Builder::new(name);
    let x = b.input("x", D, shape);
    b.output("y", f(x));
    b.build().unwrap()
}

// ---- the same math, spelled differently --------------------------------

#[test]
fn zoo_spelling_of_the_hand_written_sublayer_is_fused() {
    assert_fused_sublayer(&ZOO);
}

#[test]
fn row_normalization_by_a_reciprocal_is_row_norm() {
    let s = Spelling {
        reciprocal: true,
        ..ZOO
    };
    let g = optimized(&single("rn", &[3, 5], |x| normalize(&s, x, 1, 1e-3)));
    assert_eq!(kernels(&g), counts(&[("row_norm", 1)]), "{g}");
    assert!(g.nodes().iter().any(|n| n.op
        == Op::RowNorm {
            eps: FloatAttr(1e-3)
        }));
}

#[test]
fn sinkhorn_written_with_reciprocals_is_one_sinkhorn() {
    for variant in [SinkhornVariant::Paper, SinkhornVariant::TileKernels] {
        let s = Spelling {
            reciprocal: true,
            variant,
            ..ZOO
        };
        let g = optimized(&single("sk", &[2, N, N], |x| sinkhorn(&s, x)));
        assert_eq!(
            sinkhorn_specs(&g),
            vec![SinkhornSpec {
                variant,
                iters: ITERS,
                eps: FloatAttr(1e-4)
            }],
            "{g}"
        );
        assert_eq!(kernels(&g), counts(&[("sinkhorn", 1)]), "{g}");
    }
}

#[test]
fn sublayer_normalizing_by_reciprocals_is_fused() {
    assert_fused_sublayer(&Spelling {
        reciprocal: true,
        ..ZOO
    });
}

#[test]
fn rms_norm_is_recognized_for_every_spelling_of_the_mean() {
    for mean in [
        MeanSpelling::Mean,
        MeanSpelling::SumOverN,
        MeanSpelling::ReciprocalTimesSum,
    ] {
        for constant_first in [false, true] {
            let s = Spelling {
                mean,
                constant_first,
                ..ZOO
            };
            let g = optimized(&single("rms", &[3, 6], |x| {
                x * plus(&s, mean_last(&s, x * x), NORM_EPS).rsqrt()
            }));
            assert_eq!(
                kernels(&g),
                counts(&[("rms_norm", 1)]),
                "{mean:?} constant_first={constant_first}\n{g}"
            );
        }
    }
}

#[test]
fn rms_factor_as_a_division_by_a_square_root_is_rms_norm() {
    let g = optimized(&single("rms_div", &[3, 6], |x| {
        x / ((x * x).mean(&[1], true) + NORM_EPS).sqrt()
    }));
    assert_eq!(kernels(&g), counts(&[("rms_norm", 1)]), "{g}");
}

#[test]
fn sublayer_with_every_spelling_of_the_mean_is_fused() {
    for mean in [
        MeanSpelling::Mean,
        MeanSpelling::SumOverN,
        MeanSpelling::ReciprocalTimesSum,
    ] {
        assert_fused_sublayer(&Spelling { mean, ..ZOO });
    }
}

#[test]
fn rms_factor_before_or_after_the_projection_gives_one_mhc_pre() {
    for rms_before_projection in [false, true] {
        assert_fused_sublayer(&Spelling {
            rms_before_projection,
            ..ZOO
        });
    }
}

#[test]
fn softmax_with_and_without_max_subtraction_is_softmax() {
    for max_subtraction in [true, false] {
        let s = Spelling {
            max_subtraction,
            ..ZOO
        };
        let g = optimized(&single("sm", &[3, 5], |x| softmax(&s, x, 1)));
        assert_eq!(
            kernels(&g),
            counts(&[("softmax", 1)]),
            "max_subtraction={max_subtraction}\n{g}"
        );
        assert!(
            g.nodes()
                .iter()
                .any(|n| n.op == Op::Softmax { axis: 1 } && n.args == [g.inputs()[0]]),
            "softmax of the input itself\n{g}"
        );
    }
}

#[test]
fn tilekernels_without_max_subtraction_is_fused() {
    assert_fused_sublayer(&Spelling {
        max_subtraction: false,
        ..ZOO
    });
}

#[test]
fn commuted_operands_are_matched_in_both_orders() {
    for variant in [SinkhornVariant::Paper, SinkhornVariant::TileKernels] {
        assert_fused_sublayer(&Spelling {
            constant_first: true,
            commute: true,
            variant,
            ..ZOO
        });
    }
}

#[test]
fn pre_mix_built_in_another_order_and_spelling_is_one_mhc_pre() {
    // Every alternative at once, the residual-mix branch built first.
    assert_fused_sublayer(&Spelling {
        rms_before_projection: true,
        rms_over_tokens: false,
        mean: MeanSpelling::SumOverN,
        constant_first: true,
        reciprocal: true,
        max_subtraction: false,
        commute: true,
        comb_first: true,
        variant: SinkhornVariant::TileKernels,
        eps: [1e-4; ITERS],
    });
}

// ---- near misses ---------------------------------------------------------

#[test]
fn normalization_over_the_token_axis_is_not_a_sinkhorn() {
    // Rows are normalized; the "columns" are normalized over tokens (axis 0).
    let g = optimized(&single("sk_axis0", &[2, N, N], |x| {
        let mut m = x.exp();
        for _ in 0..ITERS {
            m = normalize(&ZOO, m, 2, 0.0);
            m = normalize(&ZOO, m, 0, 0.0);
        }
        m
    }));
    // The first row normalization of exp(x) is a softmax of x.
    assert_eq!(
        kernels(&g),
        counts(&[
            ("softmax", 1),
            ("row_norm", ITERS - 1),
            ("reduce_sum", ITERS),
            ("div", ITERS)
        ]),
        "{g}"
    );
}

#[test]
fn rms_over_the_wrong_axis_is_not_rms_norm() {
    // The mean square over axis 0 (per column) scales each column.
    let g = optimized(&single("rms_axis0", &[3, 6], |x| {
        x * ((x * x).mean(&[0], true) + NORM_EPS).rsqrt()
    }));
    assert_eq!(count(&g, "rms_norm"), 0, "{g}");
}

#[test]
fn a_different_eps_in_one_round_splits_the_sinkhorn_chain() {
    // Paper, 4 rounds, round 3 with another eps: the two rounds below it
    // are one sinkhorn; rounds 3 and 4 stay separate normalizations.
    let s = Spelling {
        variant: SinkhornVariant::Paper,
        eps: [1e-4, 1e-4, 2e-4, 1e-4],
        ..ZOO
    };
    let g = optimized(&single("sk_eps", &[2, N, N], |x| sinkhorn(&s, x)));
    assert_eq!(
        sinkhorn_specs(&g),
        vec![SinkhornSpec {
            variant: SinkhornVariant::Paper,
            iters: 2,
            eps: FloatAttr(1e-4)
        }],
        "{g}"
    );
    assert_eq!(
        kernels(&g),
        counts(&[("sinkhorn", 1), ("row_norm", 2), ("col_norm", 2)]),
        "{g}"
    );
}

#[test]
fn pre_mix_whose_sinkhorn_changes_eps_in_the_last_round_fuses_the_clean_rounds() {
    // mhc_pre absorbs the longest uniform prefix of the chain (3 rounds);
    // the last round runs after it on the fused op's comb_mix.
    let s = Spelling {
        variant: SinkhornVariant::Paper,
        eps: [1e-4, 1e-4, 1e-4, 3e-4],
        ..ZOO
    };
    let g = optimized(&sublayer(&s));
    assert_eq!(
        kernels(&g),
        counts(&[
            ("mhc_pre", 1),
            ("row_norm", 1),
            ("col_norm", 1),
            ("mhc_post", 1)
        ]),
        "{g}"
    );
    let fused = g
        .nodes()
        .iter()
        .find_map(|n| match n.op {
            Op::MhcPre(spec) => Some(spec.sinkhorn),
            _ => None,
        })
        .expect("an mhc_pre");
    assert_eq!(fused.iters, 3, "{g}");
}

#[test]
fn pre_gates_returned_as_an_extra_output_stay_correct() {
    let b = Builder::new("gates_out");
    let x = b.input("residual", D, &[T, N, C]);
    let p = pre_mix(&b, &ZOO, x);
    b.output(
        "residual_out",
        post_mix(&ZOO, p.layer_input, x, p.post, p.comb),
    );
    b.output("pre_gates", p.pre);
    let g = b.build().unwrap();
    let opt = optimized(&g);
    // The fused ops still run; the gates are recomputed next to them from
    // the shared projection (rms_norm + matmul + affine + sigmoid).
    assert_eq!(count(&opt, "mhc_pre"), 1, "{opt}");
    assert_eq!(count(&opt, "mhc_post"), 1, "{opt}");
    assert_eq!(count(&opt, "rms_norm"), 1, "{opt}");
    assert_eq!(count(&opt, "matmul"), 1, "{opt}");
    assert_eq!(count(&opt, "sigmoid"), 1, "{opt}");
}

#[test]
fn mixing_logits_returned_as_an_extra_output_stay_correct() {
    let b = Builder::new("z_out");
    let x = b.input("residual", D, &[T, N, C]);
    let p = pre_mix(&b, &ZOO, x);
    b.output(
        "residual_out",
        post_mix(&ZOO, p.layer_input, x, p.post, p.comb),
    );
    b.output("z", p.z);
    let g = b.build().unwrap();
    let opt = optimized(&g);
    // The fused ops still run; z is recomputed next to them from the
    // projection, and nothing of the Sinkhorn chain is left.
    assert_eq!(count(&opt, "mhc_pre"), 1, "{opt}");
    assert_eq!(count(&opt, "mhc_post"), 1, "{opt}");
    assert_eq!(count(&opt, "rms_norm"), 1, "{opt}");
    assert_eq!(count(&opt, "matmul"), 1, "{opt}");
    assert_eq!(count(&opt, "sinkhorn"), 0, "{opt}");
}

#[test]
fn per_column_scale_after_a_matmul_is_not_moved_before_it() {
    let b = Builder::new("col_scale");
    let x = b.input("x", D, &[3, 4]);
    let w = b.param("w", D, &[4, 5]);
    let g_col = b.param("g", D, &[1, 5]);
    b.output("y", x.matmul(w) * g_col);
    let g = b.build().unwrap();
    let opt = optimized(&g);
    assert_eq!(kernels(&opt), counts(&[("matmul", 1), ("mul", 1)]), "{opt}");
    let mm = opt
        .values()
        .find(|&v| opt.node(v).op == Op::MatMul)
        .expect("a matmul");
    assert_eq!(
        opt.node(mm).args,
        vec![opt.inputs()[0], opt.inputs()[1]],
        "the matmul still reads x and w directly\n{opt}"
    );
}

#[test]
fn per_column_scale_before_a_matmul_is_not_moved_after_it() {
    let b = Builder::new("col_scale_before");
    let x = b.input("x", D, &[3, 4]);
    let w = b.param("w", D, &[4, 5]);
    let g_col = b.param("g", D, &[1, 4]);
    b.output("y", (x * g_col).matmul(w));
    let g = b.build().unwrap();
    let opt = optimized(&g);
    assert_eq!(kernels(&opt), counts(&[("mul", 1), ("matmul", 1)]), "{opt}");
    let mm = opt
        .values()
        .find(|&v| opt.node(v).op == Op::MatMul)
        .expect("a matmul");
    let a = opt.node(mm).args[0];
    assert_eq!(
        opt.node(a).op,
        Op::Mul,
        "the matmul reads the scaled x\n{opt}"
    );
}

#[test]
fn pre_mix_with_a_per_column_rms_factor_is_not_fused() {
    // Gates, Sinkhorn and apply_mix all match, but the projection is not
    // an RMSNorm of each token, so there is no mhc_pre to form.
    let s = Spelling {
        rms_over_tokens: true,
        ..ZOO
    };
    let g = optimized(&sublayer(&s));
    assert_eq!(count(&g, "mhc_pre"), 0, "{g}");
    assert_eq!(count(&g, "rms_norm"), 0, "{g}");
    assert_eq!(count(&g, "sinkhorn"), 1, "{g}");
    assert_eq!(count(&g, "mhc_post"), 1, "{g}");
}

#[test]
fn pre_mix_without_a_sinkhorn_is_not_fused() {
    // The residual mix is only row-normalized: two branches match, the
    // third does not, so nothing is fused.
    let b = Builder::new("no_sinkhorn");
    let x = b.input("residual", D, &[T, N, C]);
    let z = logits(&b, &ZOO, x);
    b.output("layer_input", apply_mix(pre_gates(&ZOO, z), x));
    b.output("post_mix", post_gates(&ZOO, z));
    b.output("comb_mix", normalize(&ZOO, comb_logits(z).exp(), 2, 1e-4));
    let g = b.build().unwrap();
    let opt = optimized(&g);
    assert_eq!(count(&opt, "mhc_pre"), 0, "{opt}");
    assert_eq!(count(&opt, "row_norm"), 1, "{opt}");
}

#[test]
fn layer_input_viewed_in_another_shape_is_still_fused() {
    // apply_mix viewed as [C, T] instead of [T, C]: the product [T, 1, C]
    // is the fused op's first result (reshaped), and the user's view of it
    // is a view of that.
    let b = Builder::new("li_view");
    let x = b.input("residual", D, &[T, N, C]);
    let z = logits(&b, &ZOO, x);
    let li = pre_gates(&ZOO, z)
        .reshape(&[T, 1, N])
        .matmul(x)
        .reshape(&[C, T]);
    b.output("layer_input", li);
    b.output("post_mix", post_gates(&ZOO, z));
    b.output("comb_mix", sinkhorn(&ZOO, comb_logits(z)));
    let g = b.build().unwrap();
    let opt = optimized(&g);
    assert_eq!(count(&opt, "mhc_pre"), 1, "{opt}");
    assert_eq!(count(&opt, "sinkhorn"), 0, "{opt}");
}

#[test]
fn hc_gates_sliced_from_longer_vectors_are_not_fused() {
    // scale [4] and base [M + 1]: the gates use a prefix of each, which
    // hc_pre (scale [3], base [M]) cannot take.
    let b = Builder::new("hc_long");
    let x = b.input("residual", D, &[T, N, C]);
    let proj = b.param("fn", D, &[M, N * C]);
    let scale = b.param("scale", D, &[4]);
    let base = b.param("base", D, &[M + 1]);
    let p = birkhoff_dsl::zoo::mhc::MixParams { proj, scale, base };
    let (li, post, comb) = birkhoff_dsl::zoo::mhc::hc_pre(x, &p, NORM_EPS);
    b.output("layer_input", li);
    b.output("post_mix", post);
    b.output("comb_mix", comb);
    let g = b.build().unwrap();
    let opt = optimized(&g);
    assert_eq!(count(&opt, "hc_pre"), 0, "{opt}");
    assert_eq!(count(&opt, "rms_norm"), 1, "{opt}");
}

#[test]
fn division_by_a_constant_with_no_normal_reciprocal_stays_a_division() {
    // 1/k overflows (k tiny) or is subnormal (k huge): x / k must not
    // become x · inf or lose precision.
    for (dtype, k) in [
        (DType::F64, 4e-309),
        (DType::F64, 1e308),
        (DType::F32, 1e-39),
        (DType::F32, 1e38),
    ] {
        let b = Builder::new("div_k");
        let x = b.input("x", dtype, &[4]);
        b.output("y", x / k);
        let g = b.build().unwrap();
        let opt = run(&g).graph;
        assert_eq!(kernels(&opt), counts(&[("div", 1)]), "{dtype} {k:e}\n{opt}");
    }
}

#[test]
fn division_by_an_ordinary_constant_becomes_a_multiplication() {
    let g = optimized(&single("div_3", &[4], |x| x / 3.0));
    assert_eq!(kernels(&g), counts(&[("mul", 1)]), "{g}");
}
