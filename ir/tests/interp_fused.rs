//! The semantic and fused ops (`row_norm`, `col_norm`, `softmax`,
//! `rms_norm`, `sinkhorn`, `mhc_pre`, `hc_pre`, `mhc_post`) and `get` in the
//! reference interpreter, checked four ways:
//!
//! * hand-checked tiny cases, with the arithmetic in comments;
//! * an independent f64 transcription of `docs/design.md` §2 (the `reference`
//!   section below, written from the design text loop by loop, using
//!   nothing from `birkhoff_ir` but its attribute types) against f64
//!   graphs on random shapes, values and settings;
//! * each fused op against the model zoo's unrolled primitive graph of the
//!   same math, run on the same inputs;
//! * `Precision::F32` and bf16 operands against the same transcription.
//!
//! f64 results must agree to [`F64_REL`] and f32 results to [`F32_REL`], both
//! relative to `max(1, |reference|)`: every result here is a normalized
//! quantity or a sum of terms of order one, so that scale is the magnitude
//! of the terms and not the (possibly cancelled) result.

use std::collections::BTreeMap;
use std::f64::consts::{LN_2, LN_10};

use birkhoff_dsl::zoo::mhc::{self, MhcConfig, MixParams, SinkhornConfig};
use birkhoff_dsl::zoo::{ModelArgs, build_model};
use birkhoff_dsl::{Builder, nn};
use birkhoff_ir::{
    DType, FloatAttr, Graph, InterpOptions, PreMixGates, Precision, SinkhornSpec, SinkhornVariant,
    Tensor, TensorType, interpret, parse_and_verify,
};
use proptest::prelude::*;
use proptest::sample::select;

/// f64 paths: a handful of roundings, or a few hundred over 30 Sinkhorn rounds.
const F64_REL: f64 = 1e-12;

/// f32 paths (`docs/design.md` §3: reductions over far fewer than 10^5 terms).
const F32_REL: f64 = 1e-5;

/// `ln 3`.
const LN_3: f64 = 1.098_612_288_668_109_8;

// ---- running graphs -----------------------------------------------------------

fn parse(text: &str) -> Graph {
    match parse_and_verify(text) {
        Ok(mut gs) if gs.len() == 1 => gs.remove(0),
        other => panic!("test graph does not parse and verify: {other:?}\n{text}"),
    }
}

fn tensor(dtype: DType, shape: &[usize], values: &[f64]) -> Tensor {
    Tensor::from_f64(TensorType::new(dtype, shape), values).expect("one value per element")
}

/// Every output of `graph` on `inputs`, as f64 values, in signature order.
fn run(graph: &Graph, inputs: &[(&str, Tensor)], precision: Precision) -> Vec<Vec<f64>> {
    let inputs: BTreeMap<String, Tensor> = inputs
        .iter()
        .map(|(name, t)| (name.to_string(), t.clone()))
        .collect();
    let opts = InterpOptions {
        precision,
        ..InterpOptions::default()
    };
    match interpret(graph, &inputs, &opts) {
        Ok(outs) => outs
            .into_iter()
            .zip(graph.outputs())
            .map(|((name, t), o)| {
                assert_eq!(name, o.name);
                assert_eq!(t.ty(), graph.ty(o.value), "{name}");
                t.to_f64_vec()
            })
            .collect(),
        Err(e) => panic!("interpreter failed: {e}\n{graph}"),
    }
}

/// Checks `got` against `want` element by element: the error over
/// `max(1, |want|)` must be at most `rel` (NaN only matches NaN).
fn check(what: &str, got: &[f64], want: &[f64], rel: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{}: element count", what);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g.is_nan() && w.is_nan() {
            continue;
        }
        let err = (g - w).abs() / w.abs().max(1.0);
        prop_assert!(
            err <= rel,
            "{}: element {} is {:e}, reference {:e} (error {:e} > {:e})\ngot  {:?}\nwant {:?}",
            what,
            i,
            g,
            w,
            err,
            rel,
            got,
            want
        );
    }
    Ok(())
}

/// [`check`] outside a property test.
#[track_caller]
fn assert_close(what: &str, got: &[f64], want: &[f64], rel: f64) {
    if let Err(e) = check(what, got, want, rel) {
        panic!("{e}");
    }
}

/// `x` rounded to f32, as every f32 input is.
fn f32_values(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v as f32)).collect()
}

/// `x` rounded to bf16 (nearest, ties to even, through f32 which is exact
/// for these moderate values).
fn bf16_values(x: &[f64]) -> Vec<f64> {
    x.iter()
        .map(|&v| half::bf16::from_f32(v as f32).to_f64())
        .collect()
}

fn float_text(x: f64) -> String {
    format!("{x:?}")
}

fn ty(dtype: DType, shape: &[usize]) -> String {
    TensorType::new(dtype, shape).to_string()
}

// ---- the graphs under test ------------------------------------------------------

/// `y = OP %x ATTRS`, the result having x's type.
fn one_op_graph(op: &str, attrs: &str, dtype: DType, shape: &[usize]) -> Graph {
    let t = ty(dtype, shape);
    parse(&format!(
        "graph @one(%x: {t}) -> (y: {t}) {{\n  %1 = {op} %x{attrs} : {t}\n  return %1\n}}\n"
    ))
}

/// The text attributes of a Sinkhorn projection.
fn sinkhorn_attrs(sk: &SinkhornSpec) -> String {
    let variant = match sk.variant {
        SinkhornVariant::Paper => "paper",
        SinkhornVariant::TileKernels => "tilekernels",
    };
    format!(
        "variant={variant}, iters={}, eps={}",
        sk.iters,
        float_text(sk.eps.get())
    )
}

/// One pre-mix problem: `x [T,n,C]`, `fn [n(n+2), nC]`, `scale [3]`,
/// `base [n(n+2)]`.
#[derive(Clone, Debug)]
struct PreCase {
    t: usize,
    n: usize,
    c: usize,
    x: Vec<f64>,
    proj: Vec<f64>,
    scale: Vec<f64>,
    base: Vec<f64>,
    norm_eps: f64,
    gates: PreMixGates,
}

impl PreCase {
    fn m(&self) -> usize {
        self.n * (self.n + 2)
    }

    /// The op's line of text, without the result type.
    fn op_text(&self) -> String {
        let norm_eps = float_text(self.norm_eps);
        match self.gates {
            PreMixGates::Constrained {
                pre_eps,
                post_mult,
                sinkhorn,
            } => format!(
                "mhc_pre %residual, %fn, %scale, %base, norm_eps={norm_eps}, pre_eps={}, post_mult={}, {}",
                float_text(pre_eps.get()),
                float_text(post_mult.get()),
                sinkhorn_attrs(&sinkhorn)
            ),
            PreMixGates::Unconstrained => {
                format!("hc_pre %residual, %fn, %scale, %base, norm_eps={norm_eps}")
            }
        }
    }

    /// The fused graph, with the zoo's input and output names.
    fn graph(&self, d: DType) -> Graph {
        let (t, n, c, m) = (self.t, self.n, self.c, self.m());
        let (li, post, comb) = (ty(d, &[t, c]), ty(d, &[t, n]), ty(d, &[t, n, n]));
        parse(&format!(
            "graph @pre(%residual: {}, param %fn: {}, param %scale: {}, param %base: {}) -> (layer_input: {li}, post_mix: {post}, comb_mix: {comb}) {{\n  \
               %4 = {} : ({li}, {post}, {comb})\n  \
               %5 = get %4, index=0 : {li}\n  \
               %6 = get %4, index=1 : {post}\n  \
               %7 = get %4, index=2 : {comb}\n  \
               return %5, %6, %7\n}}\n",
            ty(d, &[t, n, c]),
            ty(d, &[m, n * c]),
            ty(d, &[3]),
            ty(d, &[m]),
            self.op_text()
        ))
    }

    /// The four operands as tensors of `d` (values already exact in `d`).
    fn inputs(&self, d: DType) -> Vec<(&'static str, Tensor)> {
        let (t, n, c, m) = (self.t, self.n, self.c, self.m());
        vec![
            ("residual", tensor(d, &[t, n, c], &self.x)),
            ("fn", tensor(d, &[m, n * c], &self.proj)),
            ("scale", tensor(d, &[3], &self.scale)),
            ("base", tensor(d, &[m], &self.base)),
        ]
    }

    /// The same problem with every operand rounded by `round`.
    /// The case with every value rounded by `round` and every attribute
    /// to f32: the attributes of an f32 or bf16 op are f32 constants.
    fn rounded(&self, round: fn(&[f64]) -> Vec<f64>) -> PreCase {
        let one = |v: f64| f32_values(&[v])[0];
        PreCase {
            x: round(&self.x),
            proj: round(&self.proj),
            scale: round(&self.scale),
            base: round(&self.base),
            norm_eps: one(self.norm_eps),
            gates: self.gates.rounded_to(DType::F32),
            ..self.clone()
        }
    }
}

/// One post-mix problem: `f [T,C]`, `x [T,n,C]`, `post [T,n]`, `comb [T,n,n]`.
#[derive(Clone, Debug)]
struct PostCase {
    t: usize,
    n: usize,
    c: usize,
    f: Vec<f64>,
    x: Vec<f64>,
    post: Vec<f64>,
    comb: Vec<f64>,
}

impl PostCase {
    fn graph(&self, d: DType) -> Graph {
        let (t, n, c) = (self.t, self.n, self.c);
        let x = ty(d, &[t, n, c]);
        parse(&format!(
            "graph @post(%layer_output: {}, %residual: {x}, %post_mix: {}, %comb_mix: {}) -> (residual_out: {x}) {{\n  \
               %4 = mhc_post %layer_output, %residual, %post_mix, %comb_mix : {x}\n  \
               return %4\n}}\n",
            ty(d, &[t, c]),
            ty(d, &[t, n]),
            ty(d, &[t, n, n]),
        ))
    }

    fn inputs(&self, d: DType) -> Vec<(&'static str, Tensor)> {
        let (t, n, c) = (self.t, self.n, self.c);
        vec![
            ("layer_output", tensor(d, &[t, c], &self.f)),
            ("residual", tensor(d, &[t, n, c], &self.x)),
            ("post_mix", tensor(d, &[t, n], &self.post)),
            ("comb_mix", tensor(d, &[t, n, n], &self.comb)),
        ]
    }
}

/// `sinkhorn` on `comb` of `shape [..., n, n]`, with the zoo's names.
fn sinkhorn_graph(d: DType, shape: &[usize], sk: SinkhornSpec) -> Graph {
    let t = ty(d, shape);
    parse(&format!(
        "graph @sinkhorn(%comb: {t}) -> (comb_mix: {t}) {{\n  %1 = sinkhorn %comb, {} : {t}\n  return %1\n}}\n",
        sinkhorn_attrs(&sk)
    ))
}

// ---- reference: `docs/design.md` §2, transcribed ---------------------------------------

mod reference {
    //! Written from `docs/design.md` §2 and the op descriptions alone, in plain f64,
    //! with index arithmetic spelled out.

    use super::{PostCase, PreCase};
    use birkhoff_ir::{PreMixGates, SinkhornSpec, SinkhornVariant};

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// `(outer, len, inner)`: element `k` of line `(o, i)` along `axis` is at
    /// `(o * len + k) * inner + i`.
    fn lines(shape: &[usize], axis: usize) -> (usize, usize, usize) {
        let outer = shape[..axis].iter().product();
        let inner = shape[axis + 1..].iter().product();
        (outer, shape[axis], inner)
    }

    /// Every line along `axis` divided by its sum plus `eps`.
    pub fn normalize(x: &[f64], shape: &[usize], axis: usize, eps: f64) -> Vec<f64> {
        let (outer, len, inner) = lines(shape, axis);
        let mut y = x.to_vec();
        for o in 0..outer {
            for i in 0..inner {
                let at = |k: usize| (o * len + k) * inner + i;
                let mut sum = 0.0;
                for k in 0..len {
                    sum += x[at(k)];
                }
                for k in 0..len {
                    y[at(k)] = x[at(k)] / (sum + eps);
                }
            }
        }
        y
    }

    /// `exp(x - max) / Σ exp(x - max)` along `axis`.
    pub fn softmax(x: &[f64], shape: &[usize], axis: usize) -> Vec<f64> {
        let (outer, len, inner) = lines(shape, axis);
        let mut y = x.to_vec();
        for o in 0..outer {
            for i in 0..inner {
                let at = |k: usize| (o * len + k) * inner + i;
                let max = (0..len).map(|k| x[at(k)]).fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for k in 0..len {
                    sum += (x[at(k)] - max).exp();
                }
                for k in 0..len {
                    y[at(k)] = (x[at(k)] - max).exp() / sum;
                }
            }
        }
        y
    }

    /// `x · rsqrt(mean(x², last axis) + eps)`.
    pub fn rms_norm(x: &[f64], shape: &[usize], eps: f64) -> Vec<f64> {
        let len = shape[shape.len() - 1];
        let mut y = Vec::with_capacity(x.len());
        for row in x.chunks(len) {
            let mean_square = row.iter().map(|v| v * v).sum::<f64>() / len as f64;
            let r = 1.0 / (mean_square + eps).sqrt();
            y.extend(row.iter().map(|v| v * r));
        }
        y
    }

    /// Sinkhorn-Knopp on one `n × n` matrix of logits, row-major (a row is
    /// the last axis).
    pub fn sinkhorn_matrix(logits: &[f64], n: usize, sk: SinkhornSpec) -> Vec<f64> {
        let at = |i: usize, j: usize| i * n + j;
        let eps = sk.eps.get();
        let mut m = vec![0.0; n * n];
        match sk.variant {
            // M = exp(comb)
            SinkhornVariant::Paper => {
                for (mk, lk) in m.iter_mut().zip(logits) {
                    *mk = lk.exp();
                }
            }
            // M = softmax(comb, axis=-1) + eps
            SinkhornVariant::TileKernels => {
                for i in 0..n {
                    let max = (0..n)
                        .map(|j| logits[at(i, j)])
                        .fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = (0..n).map(|j| (logits[at(i, j)] - max).exp()).sum();
                    for j in 0..n {
                        m[at(i, j)] = (logits[at(i, j)] - max).exp() / sum + eps;
                    }
                }
            }
        }
        let rows = |m: &mut Vec<f64>| {
            for i in 0..n {
                let sum: f64 = (0..n).map(|j| m[at(i, j)]).sum();
                for j in 0..n {
                    m[at(i, j)] /= sum + eps;
                }
            }
        };
        let cols = |m: &mut Vec<f64>| {
            for j in 0..n {
                let sum: f64 = (0..n).map(|i| m[at(i, j)]).sum();
                for i in 0..n {
                    m[at(i, j)] /= sum + eps;
                }
            }
        };
        match sk.variant {
            // t_max rounds of row- then column-normalization.
            SinkhornVariant::Paper => {
                for _ in 0..sk.iters {
                    rows(&mut m);
                    cols(&mut m);
                }
            }
            // Column-normalize, then repeat - 1 rounds of rows then columns.
            SinkhornVariant::TileKernels => {
                cols(&mut m);
                for _ in 1..sk.iters {
                    rows(&mut m);
                    cols(&mut m);
                }
            }
        }
        m
    }

    /// Sinkhorn on every trailing `n × n` matrix.
    pub fn sinkhorn(logits: &[f64], n: usize, sk: SinkhornSpec) -> Vec<f64> {
        logits
            .chunks(n * n)
            .flat_map(|mat| sinkhorn_matrix(mat, n, sk))
            .collect()
    }

    /// The pre-mix: `(layer_input [T,C], post_mix [T,n], comb_mix [T,n,n])`.
    pub fn pre(p: &PreCase) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (t, n, c) = (p.t, p.n, p.c);
        let k = n * c;
        let m = n * (n + 2);
        let (mut layer_input, mut post_mix, mut comb_mix) = (vec![], vec![], vec![]);
        for tok in 0..t {
            // x[t, j] over the flattened j = i·C + c.
            let x = |j: usize| p.x[tok * k + j];
            // pre_norm_fn
            let mean_square = (0..k).map(|j| x(j) * x(j)).sum::<f64>() / k as f64;
            let r = 1.0 / (mean_square + p.norm_eps).sqrt();
            let mixes: Vec<f64> = (0..m)
                .map(|row| (0..k).map(|j| x(j) * p.proj[row * k + j]).sum::<f64>() * r)
                .collect();
            // [scale0 ×n, scale1 ×n, scale2 ×n²]
            let scale = |j: usize| {
                if j < n {
                    p.scale[0]
                } else if j < 2 * n {
                    p.scale[1]
                } else {
                    p.scale[2]
                }
            };
            let (pre, post, comb): (Vec<f64>, Vec<f64>, Vec<f64>) = match p.gates {
                PreMixGates::Constrained {
                    pre_eps,
                    post_mult,
                    sinkhorn,
                } => {
                    let (pre_eps, post_mult) = (pre_eps.get(), post_mult.get());
                    let z: Vec<f64> = (0..m).map(|j| mixes[j] * scale(j) + p.base[j]).collect();
                    (
                        (0..n).map(|i| sigmoid(z[i]) + pre_eps).collect(),
                        (0..n).map(|i| sigmoid(z[n + i]) * post_mult).collect(),
                        sinkhorn_matrix(&z[2 * n..], n, sinkhorn),
                    )
                }
                PreMixGates::Unconstrained => {
                    let gate = |j: usize| scale(j) * mixes[j].tanh() + p.base[j];
                    (
                        (0..n).map(gate).collect(),
                        (n..2 * n).map(gate).collect(),
                        (2 * n..m).map(gate).collect(),
                    )
                }
            };
            // apply_mix: layer_input[t, c] = Σ_i pre[t, i] · x[t, i, c]
            for cc in 0..c {
                layer_input.push((0..n).map(|i| pre[i] * x(i * c + cc)).sum());
            }
            post_mix.extend(post);
            comb_mix.extend(comb);
        }
        (layer_input, post_mix, comb_mix)
    }

    /// `out[t,j,c] = post[t,j]·f[t,c] + Σ_i comb[t,i,j]·x[t,i,c]`.
    pub fn post(p: &PostCase) -> Vec<f64> {
        let (t, n, c) = (p.t, p.n, p.c);
        let mut out = Vec::with_capacity(t * n * c);
        for tok in 0..t {
            for j in 0..n {
                for cc in 0..c {
                    let mixed: f64 = (0..n)
                        .map(|i| p.comb[(tok * n + i) * n + j] * p.x[(tok * n + i) * c + cc])
                        .sum();
                    out.push(p.post[tok * n + j] * p.f[tok * c + cc] + mixed);
                }
            }
        }
        out
    }
}

// ---- hand-checked cases ----------------------------------------------------------

#[test]
fn row_norm_and_col_norm_of_a_2x2() {
    // rows: [1,3] / 4, [2,2] / 4; exact in binary.
    let x = [1.0, 3.0, 2.0, 2.0];
    let g = one_op_graph("row_norm", ", eps=0.0", DType::F64, &[2, 2]);
    let y = run(
        &g,
        &[("x", tensor(DType::F64, &[2, 2], &x))],
        Precision::F64,
    );
    assert_eq!(y[0], [0.25, 0.75, 0.5, 0.5]);
    // columns: [1,2] / 3, [3,2] / 5.
    let g = one_op_graph("col_norm", ", eps=0.0", DType::F64, &[2, 2]);
    let y = run(
        &g,
        &[("x", tensor(DType::F64, &[2, 2], &x))],
        Precision::F64,
    );
    assert_close(
        "col_norm",
        &y[0],
        &[1.0 / 3.0, 0.6, 2.0 / 3.0, 0.4],
        F64_REL,
    );
    // eps joins the denominator: rows [1,3] / (4 + 4), [2,2] / (4 + 4).
    let g = one_op_graph("row_norm", ", eps=4.0", DType::F64, &[2, 2]);
    let y = run(
        &g,
        &[("x", tensor(DType::F64, &[2, 2], &x))],
        Precision::F64,
    );
    assert_eq!(y[0], [0.125, 0.375, 0.25, 0.25]);
    // col_norm of a batch [2,2,1]: each [2,1] column of its own matrix.
    let g = one_op_graph("col_norm", ", eps=0.0", DType::F32, &[2, 2, 1]);
    let y = run(
        &g,
        &[("x", tensor(DType::F32, &[2, 2, 1], &[1.0, 3.0, 2.0, 2.0]))],
        Precision::F64,
    );
    assert_eq!(y[0], [0.25, 0.75, 0.5, 0.5]);
}

#[test]
fn softmax_of_logs_is_the_normalized_arguments() {
    // softmax([0, ln 2, ln 3]) = [1, 2, 3] / 6.
    let g = one_op_graph("softmax", ", axis=0", DType::F64, &[3]);
    let y = run(
        &g,
        &[("x", tensor(DType::F64, &[3], &[0.0, LN_2, LN_3]))],
        Precision::F64,
    );
    assert_close(
        "softmax",
        &y[0],
        &[1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0],
        F64_REL,
    );
    // Along axis 0 of a [2,2]: the columns [0, ln 3] and [ln 10, 0].
    let g = one_op_graph("softmax", ", axis=0", DType::F64, &[2, 2]);
    let y = run(
        &g,
        &[("x", tensor(DType::F64, &[2, 2], &[0.0, LN_10, LN_3, 0.0]))],
        Precision::F64,
    );
    assert_close(
        "softmax",
        &y[0],
        &[0.25, 10.0 / 11.0, 0.75, 1.0 / 11.0],
        F64_REL,
    );
    // The maximum is subtracted first: huge logits do not overflow.
    let y = run(
        &one_op_graph("softmax", ", axis=0", DType::F64, &[2]),
        &[("x", tensor(DType::F64, &[2], &[1000.0, 1000.0]))],
        Precision::F64,
    );
    assert_eq!(y[0], [0.5, 0.5]);
}

#[test]
fn rms_norm_of_a_constant_magnitude_row() {
    // mean square 9, so x / 3.
    let x = [3.0, -3.0, 3.0, -3.0];
    let g = one_op_graph("rms_norm", ", eps=0.0", DType::F64, &[4]);
    let y = run(&g, &[("x", tensor(DType::F64, &[4], &x))], Precision::F64);
    assert_eq!(y[0], [1.0, -1.0, 1.0, -1.0]);
    // With eps = 7: rsqrt(9 + 7) = 1/4; each row of a [2,2] on its own.
    let g = one_op_graph("rms_norm", ", eps=7.0", DType::F32, &[2, 2]);
    let y = run(
        &g,
        &[("x", tensor(DType::F32, &[2, 2], &[3.0, -3.0, 4.0, 0.0]))],
        Precision::F32,
    );
    // Row 2: mean square 8, rsqrt(8 + 7) = 1/sqrt(15).
    let r = 1.0 / 15f64.sqrt();
    assert_close("rms_norm", &y[0], &[0.75, -0.75, 4.0 * r, 0.0], F32_REL);
}

#[test]
fn sinkhorn_by_hand() {
    // Logits [[0, ln 3], [ln 2, ln 2]]: exp gives [[1, 3], [2, 2]].
    // Rows: [[1/4, 3/4], [1/2, 1/2]]; column sums 3/4 and 5/4;
    // columns: [[1/3, 3/5], [2/3, 2/5]].
    let logits = [0.0, LN_3, LN_2, LN_2];
    let one_round = [1.0 / 3.0, 0.6, 2.0 / 3.0, 0.4];
    // Round 2: rows sum to 14/15 and 16/15: [[5/14, 9/14], [5/8, 3/8]];
    // column sums 55/56 and 57/56: [[4/11, 12/19], [7/11, 7/19]].
    let two_rounds = [4.0 / 11.0, 12.0 / 19.0, 7.0 / 11.0, 7.0 / 19.0];
    let cases = [
        (SinkhornVariant::Paper, 1, one_round),
        (SinkhornVariant::Paper, 2, two_rounds),
        // softmax of a row is its exp row-normalized, so with eps = 0 the
        // tilekernels repeat count k matches k paper rounds.
        (SinkhornVariant::TileKernels, 1, one_round),
        (SinkhornVariant::TileKernels, 2, two_rounds),
    ];
    for (variant, iters, want) in cases {
        let sk = SinkhornSpec {
            variant,
            iters,
            eps: FloatAttr(0.0),
        };
        let g = sinkhorn_graph(DType::F64, &[2, 2], sk);
        let y = run(
            &g,
            &[("comb", tensor(DType::F64, &[2, 2], &logits))],
            Precision::F64,
        );
        assert_close(&format!("{sk:?}"), &y[0], &want, F64_REL);
    }
    // eps = 1 on zero logits: exp gives ones; rows 1 / (2 + 1) = 1/3;
    // columns (1/3) / (2/3 + 1) = 1/5. A second matrix in the batch
    // (logits [[0, 0], [ln 2, ln 2]]) is projected on its own:
    // exp [[1, 1], [2, 2]], rows [[1/3, 1/3], [2/5, 2/5]], column sums
    // 11/15, so every column entry over 26/15: [[5/26, 5/26], [6/26, 6/26]].
    let sk = SinkhornSpec {
        variant: SinkhornVariant::Paper,
        iters: 1,
        eps: FloatAttr(1.0),
    };
    let g = sinkhorn_graph(DType::F64, &[2, 2, 2], sk);
    let batch = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, LN_2, LN_2];
    let y = run(
        &g,
        &[("comb", tensor(DType::F64, &[2, 2, 2], &batch))],
        Precision::F64,
    );
    let (a, b) = (5.0 / 26.0, 6.0 / 26.0);
    assert_close("eps=1", &y[0], &[0.2, 0.2, 0.2, 0.2, a, a, b, b], F64_REL);
    // tilekernels adds eps to the softmax too: zero logits give 1/2 + 1 =
    // 3/2 everywhere, then columns (3/2) / (3 + 1) = 3/8.
    let sk = SinkhornSpec {
        variant: SinkhornVariant::TileKernels,
        iters: 1,
        eps: FloatAttr(1.0),
    };
    let y = run(
        &sinkhorn_graph(DType::F64, &[2, 2], sk),
        &[("comb", tensor(DType::F64, &[2, 2], &[0.0; 4]))],
        Precision::F64,
    );
    assert_eq!(y[0], [0.375; 4]);
}

#[test]
fn mhc_post_with_identity_and_permuting_combs() {
    let case = |post: [f64; 2], comb: [f64; 4]| PostCase {
        t: 1,
        n: 2,
        c: 2,
        f: vec![10.0, 20.0],
        x: vec![1.0, 2.0, 3.0, 4.0],
        post: post.to_vec(),
        comb: comb.to_vec(),
    };
    // comb = I: out[j, c] = post[j]·f[c] + x[j, c]
    //   = [[10 + 1, 20 + 2], [2·10 + 3, 2·20 + 4]].
    let p = case([1.0, 2.0], [1.0, 0.0, 0.0, 1.0]);
    let y = run(&p.graph(DType::F64), &p.inputs(DType::F64), Precision::F64);
    assert_eq!(y[0], [11.0, 22.0, 23.0, 44.0]);
    // comb[i=0, j=1] = 1 sends stream 0 to stream 1 (comb is applied
    // transposed, `docs/design.md` §2): out = [[0, 0], [1, 2]].
    let p = case([0.0, 0.0], [0.0, 1.0, 0.0, 0.0]);
    let y = run(&p.graph(DType::F64), &p.inputs(DType::F64), Precision::F64);
    assert_eq!(y[0], [0.0, 0.0, 1.0, 2.0]);
}

/// `n = 2, C = 2, T = 1` with `fn = 0`, so `mixes = 0` and `z = base`.
fn zero_projection_case(gates: PreMixGates, base: [f64; 8]) -> PreCase {
    PreCase {
        t: 1,
        n: 2,
        c: 2,
        x: vec![1.0, 2.0, 3.0, 4.0],
        proj: vec![0.0; 32],
        scale: vec![5.0, 6.0, 7.0],
        base: base.to_vec(),
        norm_eps: 0.0,
        gates,
    }
}

#[test]
fn mhc_pre_by_hand() {
    // z = base = [ln 3, -ln 3 | 0, ln 3 | 0, ln 3, ln 2, ln 2].
    // pre = sigmoid([ln 3, -ln 3]) + 1/4 = [3/4, 1/4] + 1/4 = [1, 1/2];
    // post = 2 · sigmoid([0, ln 3]) = [1, 3/2];
    // comb = one paper round on [[0, ln 3], [ln 2, ln 2]] (sinkhorn_by_hand);
    // layer_input = 1·[1, 2] + (1/2)·[3, 4] = [2.5, 4].
    let gates = PreMixGates::Constrained {
        pre_eps: FloatAttr(0.25),
        post_mult: FloatAttr(2.0),
        sinkhorn: SinkhornSpec {
            variant: SinkhornVariant::Paper,
            iters: 1,
            eps: FloatAttr(0.0),
        },
    };
    let base = [LN_3, -LN_3, 0.0, LN_3, 0.0, LN_3, LN_2, LN_2];
    let p = zero_projection_case(gates, base);
    let y = run(&p.graph(DType::F64), &p.inputs(DType::F64), Precision::F64);
    assert_close("layer_input", &y[0], &[2.5, 4.0], F64_REL);
    assert_close("post_mix", &y[1], &[1.0, 1.5], F64_REL);
    assert_close(
        "comb_mix",
        &y[2],
        &[1.0 / 3.0, 0.6, 2.0 / 3.0, 0.4],
        F64_REL,
    );

    // n = 1, C = 2: x = [1, -1] has mean square 1, so with norm_eps = 0
    // mixes = fn · x = [1·1 + 0·-1, 0·1 + 1·-1, 1·1 + 1·-1] = [1, -1, 0];
    // z = mixes ⊙ [2, 3, 7] + [0, 0, 5] = [2, -3, 5]; the 1×1 comb
    // projects to 1 whatever its logit; layer_input = pre · x.
    let p = PreCase {
        t: 1,
        n: 1,
        c: 2,
        x: vec![1.0, -1.0],
        proj: vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        scale: vec![2.0, 3.0, 7.0],
        base: vec![0.0, 0.0, 5.0],
        norm_eps: 0.0,
        gates: PreMixGates::Constrained {
            pre_eps: FloatAttr(0.0),
            post_mult: FloatAttr(2.0),
            sinkhorn: SinkhornSpec {
                variant: SinkhornVariant::TileKernels,
                iters: 3,
                eps: FloatAttr(0.0),
            },
        },
    };
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    let y = run(&p.graph(DType::F64), &p.inputs(DType::F64), Precision::F64);
    let pre = sigmoid(2.0);
    assert_close("layer_input", &y[0], &[pre, -pre], F64_REL);
    assert_close("post_mix", &y[1], &[2.0 * sigmoid(-3.0)], F64_REL);
    assert_eq!(y[2], [1.0]);
}

#[test]
fn hc_pre_by_hand() {
    // fn = 0: tanh(0) = 0, so every gate is its base (scale is unused):
    // pre = [1, -2], post = [3, 4], comb = [[5, 6], [7, 8]] (not projected);
    // layer_input = 1·[1, 2] - 2·[3, 4] = [-5, -6]. All exact.
    let base = [1.0, -2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    let p = zero_projection_case(PreMixGates::Unconstrained, base);
    let y = run(&p.graph(DType::F64), &p.inputs(DType::F64), Precision::F64);
    assert_eq!(
        y,
        [vec![-5.0, -6.0], vec![3.0, 4.0], vec![5.0, 6.0, 7.0, 8.0]]
    );
    // n = 1: mixes = [1, -1, 0] as in mhc_pre_by_hand; the gates are
    // scale·tanh(mixes) + base = [2 tanh 1, -3 tanh 1 + 1, 5].
    let p = PreCase {
        t: 1,
        n: 1,
        c: 2,
        x: vec![1.0, -1.0],
        proj: vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        scale: vec![2.0, 3.0, 7.0],
        base: vec![0.0, 1.0, 5.0],
        norm_eps: 0.0,
        gates: PreMixGates::Unconstrained,
    };
    let y = run(&p.graph(DType::F64), &p.inputs(DType::F64), Precision::F64);
    let th = 1f64.tanh();
    assert_close("layer_input", &y[0], &[2.0 * th, -2.0 * th], F64_REL);
    assert_close("post_mix", &y[1], &[1.0 - 3.0 * th], F64_REL);
    assert_eq!(y[2], [5.0]);
}

#[test]
fn get_takes_each_tuple_element_alone() {
    let base = [1.0, -2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    let p = zero_projection_case(PreMixGates::Unconstrained, base);
    let inputs = p.inputs(DType::F32);
    let want = [vec![-5.0, -6.0], vec![3.0, 4.0], vec![5.0, 6.0, 7.0, 8.0]];
    let types = ["f32[1,2]", "f32[1,2]", "f32[1,2,2]"];
    for (index, (want, t)) in want.iter().zip(types).enumerate() {
        // One get, twice over: a tuple may be taken apart more than once.
        let text = format!(
            "graph @one(%residual: f32[1,2,2], param %fn: f32[8,4], param %scale: f32[3], param %base: f32[8]) -> (a: {t}, b: {t}) {{\n  \
               %4 = hc_pre %residual, %fn, %scale, %base, norm_eps=0.0 : (f32[1,2], f32[1,2], f32[1,2,2])\n  \
               %5 = get %4, index={index} : {t}\n  \
               %6 = get %4, index={index} : {t}\n  \
               return %5, %6\n}}\n"
        );
        for precision in [Precision::F64, Precision::F32] {
            let y = run(&parse(&text), &inputs, precision);
            assert_eq!(&y[0], want, "index {index}");
            assert_eq!(&y[1], want, "index {index}");
        }
    }
}

#[test]
fn fused_results_feed_later_ops() {
    // get results are ordinary tensors: post-mix the pre-mix's own results.
    // With fn = 0 and base as in hc_pre_by_hand: layer_input [-5, -6],
    // post [3, 4], comb [[5, 6], [7, 8]], so
    // out[j, c] = post[j]·li[c] + Σ_i comb[i, j]·x[i, c]:
    //   j=0: 3·[-5, -6] + 5·[1, 2] + 7·[3, 4] = [11, 20]
    //   j=1: 4·[-5, -6] + 6·[1, 2] + 8·[3, 4] = [10, 20]
    let text = "graph @chain(%residual: f64[1,2,2], param %fn: f64[8,4], param %scale: f64[3], param %base: f64[8]) -> (y: f64[1,2,2]) {\n  \
                  %4 = hc_pre %residual, %fn, %scale, %base, norm_eps=0.0 : (f64[1,2], f64[1,2], f64[1,2,2])\n  \
                  %5 = get %4, index=2 : f64[1,2,2]\n  \
                  %6 = get %4, index=0 : f64[1,2]\n  \
                  %7 = get %4, index=1 : f64[1,2]\n  \
                  %8 = mhc_post %6, %residual, %7, %5 : f64[1,2,2]\n  \
                  return %8\n}\n";
    let p = zero_projection_case(
        PreMixGates::Unconstrained,
        [1.0, -2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
    );
    let y = run(&parse(text), &p.inputs(DType::F64), Precision::F64);
    assert_eq!(y[0], [11.0, 20.0, 10.0, 20.0]);
}

// ---- random cases -----------------------------------------------------------------

fn values(len: usize, lo: f64, hi: f64) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(lo..hi, len)
}

fn sk(max_iters: usize, epsilons: &[f64]) -> impl Strategy<Value = SinkhornSpec> + use<> {
    (
        select(vec![SinkhornVariant::Paper, SinkhornVariant::TileKernels]),
        1..=max_iters,
        select(epsilons.to_vec()),
    )
        .prop_map(|(variant, iters, eps)| SinkhornSpec {
            variant,
            iters,
            eps: FloatAttr(eps),
        })
}

/// A `[..., n, n]` shape (rank 2 to 4) and logits in `[-4, 4)`.
fn sinkhorn_case() -> impl Strategy<Value = (Vec<usize>, Vec<f64>)> {
    (prop::collection::vec(1usize..=3, 0..=2), 1usize..=6).prop_flat_map(|(mut shape, n)| {
        shape.extend([n, n]);
        let len = shape.iter().product();
        (Just(shape), values(len, -4.0, 4.0))
    })
}

/// A shape of rank `min_rank..=4` with dimensions 1–5 and values in `[lo, hi)`.
fn shaped(min_rank: usize, lo: f64, hi: f64) -> impl Strategy<Value = (Vec<usize>, Vec<f64>)> {
    prop::collection::vec(1usize..=5, min_rank..=4).prop_flat_map(move |shape| {
        let len = shape.iter().product();
        (Just(shape), values(len, lo, hi))
    })
}

fn gates(constrained: bool) -> BoxedStrategy<PreMixGates> {
    if constrained {
        (-0.5f64..0.5, -3.0f64..3.0, sk(30, &[0.0, 1e-6, 1e-3]))
            .prop_map(|(pre_eps, post_mult, sinkhorn)| PreMixGates::Constrained {
                pre_eps: FloatAttr(pre_eps),
                post_mult: FloatAttr(post_mult),
                sinkhorn,
            })
            .boxed()
    } else {
        Just(PreMixGates::Unconstrained).boxed()
    }
}

/// A pre-mix problem of `T <= max_t`, `n <= max_n`, `C <= max_c`.
fn pre_case(
    max_t: usize,
    max_n: usize,
    max_c: usize,
    gates: BoxedStrategy<PreMixGates>,
) -> impl Strategy<Value = PreCase> {
    (1..=max_t, 1..=max_n, 1..=max_c).prop_flat_map(move |(t, n, c)| {
        let m = n * (n + 2);
        (
            values(t * n * c, -2.0, 2.0),
            values(m * n * c, -1.0, 1.0),
            values(3, -2.0, 2.0),
            values(m, -1.0, 1.0),
            prop_oneof![Just(0.0), Just(1e-6), 0.0f64..0.5],
            gates.clone(),
        )
            .prop_map(move |(x, proj, scale, base, norm_eps, gates)| PreCase {
                t,
                n,
                c,
                x,
                proj,
                scale,
                base,
                norm_eps,
                gates,
            })
    })
}

fn post_case(max_t: usize, max_n: usize, max_c: usize) -> impl Strategy<Value = PostCase> {
    (1..=max_t, 1..=max_n, 1..=max_c).prop_flat_map(|(t, n, c)| {
        (
            values(t * c, -2.0, 2.0),
            values(t * n * c, -2.0, 2.0),
            values(t * n, 0.0, 2.0),
            values(t * n * n, -1.0, 1.0),
        )
            .prop_map(move |(f, x, post, comb)| PostCase {
                t,
                n,
                c,
                f,
                x,
                post,
                comb,
            })
    })
}

/// Runs a pre-mix problem in `d` and `precision` and checks all three
/// results against the transcription within `rel`.
fn check_pre(p: &PreCase, d: DType, precision: Precision, rel: f64) -> Result<(), TestCaseError> {
    let (li, post, comb) = reference::pre(p);
    let y = run(&p.graph(d), &p.inputs(d), precision);
    check("layer_input", &y[0], &li, rel)?;
    check("post_mix", &y[1], &post, rel)?;
    check("comb_mix", &y[2], &comb, rel)
}

proptest! {
    #[test]
    fn row_col_and_rms_norm_match_the_transcription(
        (shape, x) in shaped(2, 0.1, 4.0),
        mixed in values(1024, -3.0, 3.0),
        eps in select(vec![0.0, 1e-6, 0.5]),
    ) {
        let r = shape.len();
        let attrs = format!(", eps={}", float_text(eps));
        let input = [("x", tensor(DType::F64, &shape, &x))];
        let y = run(&one_op_graph("row_norm", &attrs, DType::F64, &shape), &input, Precision::F64);
        check("row_norm", &y[0], &reference::normalize(&x, &shape, r - 1, eps), F64_REL)?;
        let y = run(&one_op_graph("col_norm", &attrs, DType::F64, &shape), &input, Precision::F64);
        check("col_norm", &y[0], &reference::normalize(&x, &shape, r - 2, eps), F64_REL)?;
        // rms_norm on values of both signs.
        let x = &mixed[..x.len()];
        let input = [("x", tensor(DType::F64, &shape, x))];
        let y = run(&one_op_graph("rms_norm", &attrs, DType::F64, &shape), &input, Precision::F64);
        check("rms_norm", &y[0], &reference::rms_norm(x, &shape, eps), F64_REL)?;
    }

    #[test]
    fn softmax_matches_the_transcription((shape, x) in shaped(1, -8.0, 8.0), axis in 0usize..4) {
        let axis = axis % shape.len();
        let g = one_op_graph("softmax", &format!(", axis={axis}"), DType::F64, &shape);
        let y = run(&g, &[("x", tensor(DType::F64, &shape, &x))], Precision::F64);
        check("softmax", &y[0], &reference::softmax(&x, &shape, axis), F64_REL)?;
    }

    #[test]
    fn sinkhorn_matches_the_transcription(
        (shape, logits) in sinkhorn_case(),
        sk in sk(30, &[0.0, 1e-6, 1e-3]),
    ) {
        let n = shape[shape.len() - 1];
        let y = run(
            &sinkhorn_graph(DType::F64, &shape, sk),
            &[("comb", tensor(DType::F64, &shape, &logits))],
            Precision::F64,
        );
        let want = reference::sinkhorn(&logits, n, sk);
        check("sinkhorn", &y[0], &want, F64_REL)?;
        // The axis normalized last, the columns, sums to 1 (`docs/design.md` §3); with
        // eps > 0 each column sum is S / (S + eps), just below 1.
        for mat in y[0].chunks(n * n) {
            for j in 0..n {
                let s: f64 = (0..n).map(|i| mat[i * n + j]).sum();
                if sk.eps.get() == 0.0 {
                    prop_assert!((s - 1.0).abs() <= 1e-12, "column sum {}", s);
                } else {
                    prop_assert!(s < 1.0 + 1e-12, "column sum {}", s);
                }
            }
        }
    }

    #[test]
    fn mhc_pre_matches_the_transcription(p in pre_case(4, 6, 8, gates(true))) {
        check_pre(&p, DType::F64, Precision::F64, F64_REL)?;
    }

    #[test]
    fn hc_pre_matches_the_transcription(p in pre_case(4, 6, 8, gates(false))) {
        check_pre(&p, DType::F64, Precision::F64, F64_REL)?;
    }

    #[test]
    fn mhc_post_matches_the_transcription(p in post_case(4, 6, 8)) {
        let y = run(&p.graph(DType::F64), &p.inputs(DType::F64), Precision::F64);
        check("residual_out", &y[0], &reference::post(&p), F64_REL)?;
    }
}

// ---- fused op == the zoo's primitive graph ----------------------------------------

/// Runs `fused` and `unfused` on the same inputs and compares every output
/// by name.
fn check_same(
    fused: &Graph,
    unfused: &Graph,
    inputs: &[(&str, Tensor)],
) -> Result<(), TestCaseError> {
    let names = |g: &Graph| {
        g.outputs()
            .iter()
            .map(|o| o.name.clone())
            .collect::<Vec<_>>()
    };
    prop_assert_eq!(names(fused), names(unfused));
    let a = run(fused, inputs, Precision::F64);
    let b = run(unfused, inputs, Precision::F64);
    for ((name, a), b) in names(fused).iter().zip(&a).zip(&b) {
        check(name, a, b, F64_REL)?;
    }
    Ok(())
}

fn zoo(name: &str, args: &ModelArgs) -> Graph {
    let model = build_model(name, args).unwrap_or_else(|e| panic!("zoo {name}: {e}"));
    assert!(
        model
            .graph
            .nodes()
            .iter()
            .all(|n| !n.op.is_semantic() && !n.op.is_fused()),
        "the zoo writes {name} in primitive ops"
    );
    model.graph
}

proptest! {
    #[test]
    fn fused_sinkhorn_equals_the_zoo(
        t in 1usize..=3,
        n in 1usize..=5,
        logits in values(3 * 25, -4.0, 4.0),
        sk in sk(25, &[0.0, 1e-6, 1e-3]),
    ) {
        let args = ModelArgs {
            tokens: Some(t),
            streams: Some(n),
            sinkhorn: Some(sk.variant),
            iters: Some(sk.iters),
            eps: Some(sk.eps.get()),
            dtype: Some(DType::F64),
            ..ModelArgs::default()
        };
        let shape = [t, n, n];
        let inputs = [("comb", tensor(DType::F64, &shape, &logits[..t * n * n]))];
        check_same(&sinkhorn_graph(DType::F64, &shape, sk), &zoo("sinkhorn", &args), &inputs)?;
    }

    #[test]
    fn fused_mhc_pre_equals_the_zoo(p in pre_case(3, 4, 5, gates(true))) {
        let PreMixGates::Constrained { pre_eps, post_mult, sinkhorn: sk } = p.gates else {
            unreachable!("constrained gates")
        };
        // The zoo takes only non-negative pre_eps.
        let pre_eps = FloatAttr(pre_eps.get().abs());
        let args = ModelArgs {
            tokens: Some(p.t),
            streams: Some(p.n),
            hidden: Some(p.c),
            norm_eps: Some(p.norm_eps),
            pre_eps: Some(pre_eps.get()),
            post_mult: Some(post_mult.get()),
            sinkhorn: Some(sk.variant),
            iters: Some(sk.iters),
            eps: Some(sk.eps.get()),
            dtype: Some(DType::F64),
            ..ModelArgs::default()
        };
        let p = PreCase {
            gates: PreMixGates::Constrained { pre_eps, post_mult, sinkhorn: sk },
            ..p
        };
        check_same(&p.graph(DType::F64), &zoo("mhc-pre", &args), &p.inputs(DType::F64))?;
    }

    #[test]
    fn fused_hc_pre_equals_the_zoo(p in pre_case(3, 4, 5, gates(false))) {
        let args = ModelArgs {
            tokens: Some(p.t),
            streams: Some(p.n),
            hidden: Some(p.c),
            norm_eps: Some(p.norm_eps),
            dtype: Some(DType::F64),
            ..ModelArgs::default()
        };
        check_same(&p.graph(DType::F64), &zoo("hc-pre", &args), &p.inputs(DType::F64))?;
    }

    #[test]
    fn fused_mhc_post_equals_the_zoo(p in post_case(3, 4, 5)) {
        let args = ModelArgs {
            tokens: Some(p.t),
            streams: Some(p.n),
            hidden: Some(p.c),
            dtype: Some(DType::F64),
            ..ModelArgs::default()
        };
        check_same(&p.graph(DType::F64), &zoo("mhc-post", &args), &p.inputs(DType::F64))?;
    }

    #[test]
    fn fused_rms_norm_and_softmax_equal_the_dsl_layers(
        (shape, x) in shaped(1, -3.0, 3.0),
        eps in select(vec![0.0, 1e-6, 0.5]),
    ) {
        let last = shape.len() - 1;
        let b = Builder::new("layers");
        let v = b.input("x", DType::F64, &shape);
        b.output("rms", nn::rms_norm(v, None, eps));
        b.output("softmax", nn::softmax(v, last));
        let unfused = b.build().expect("the DSL builds its own layers");
        let t = ty(DType::F64, &shape);
        let fused = parse(&format!(
            "graph @layers(%x: {t}) -> (rms: {t}, softmax: {t}) {{\n  \
               %1 = rms_norm %x, eps={} : {t}\n  \
               %2 = softmax %x, axis={last} : {t}\n  \
               return %1, %2\n}}\n",
            float_text(eps)
        ));
        check_same(&fused, &unfused, &[("x", tensor(DType::F64, &shape, &x))])?;
    }
}

// ---- f32 precision and bf16 operands -------------------------------------------

/// The unfused pre-mix of `p` in dtype `d`, built by the zoo's functions.
fn unfused_pre(p: &PreCase, d: DType) -> Graph {
    let (t, n, c, m) = (p.t, p.n, p.c, p.m());
    let b = Builder::new("pre");
    let x = b.input("residual", d, &[t, n, c]);
    let params = MixParams {
        proj: b.param("fn", d, &[m, n * c]),
        scale: b.param("scale", d, &[3]),
        base: b.param("base", d, &[m]),
    };
    let (li, post, comb) = match p.gates {
        PreMixGates::Constrained {
            pre_eps,
            post_mult,
            sinkhorn,
        } => {
            let cfg = MhcConfig {
                norm_eps: p.norm_eps,
                pre_eps: pre_eps.get(),
                post_mult: post_mult.get(),
                sinkhorn: sinkhorn_config(sinkhorn),
            };
            mhc::mhc_pre(x, &params, &cfg)
        }
        PreMixGates::Unconstrained => mhc::hc_pre(x, &params, p.norm_eps),
    };
    b.output("layer_input", li);
    b.output("post_mix", post);
    b.output("comb_mix", comb);
    b.build().expect("the zoo's pre-mix builds")
}

fn sinkhorn_config(sk: SinkhornSpec) -> SinkhornConfig {
    SinkhornConfig {
        variant: sk.variant,
        iters: sk.iters,
        eps: sk.eps.get(),
    }
}

/// `max |got - want| / max(1, |want|)` over all outputs, in bf16 units
/// (2^-8).
fn bf16_units(got: &[Vec<f64>], want: &[Vec<f64>]) -> f64 {
    got.iter()
        .flatten()
        .zip(want.iter().flatten())
        .map(|(g, w)| (g - w).abs() / w.abs().max(1.0) * 256.0)
        .fold(0.0, f64::max)
}

proptest! {
    #[test]
    fn f32_precision_stays_within_1e_5_of_the_f64_transcription(
        p in pre_case(3, 4, 6, gates(true)),
        hc in pre_case(3, 4, 6, gates(false)),
        q in post_case(3, 4, 6),
        (shape, logits) in sinkhorn_case(),
        sk in sk(20, &[0.0, 1e-6, 1e-3]),
    ) {
        let p = p.rounded(f32_values);
        check_pre(&p, DType::F32, Precision::F32, F32_REL)?;
        let hc = hc.rounded(f32_values);
        check_pre(&hc, DType::F32, Precision::F32, F32_REL)?;
        // The f64 mode computes f32 values in f64 and rounds them once, on
        // output: within half an f32 ulp (2^-24 relative) of the reference,
        // plus the f64 noise that may move a value across a midpoint.
        check_pre(&p, DType::F32, Precision::F64, 2f64.powi(-24) + F64_REL)?;
        let q = PostCase {
            f: f32_values(&q.f),
            x: f32_values(&q.x),
            post: f32_values(&q.post),
            comb: f32_values(&q.comb),
            ..q
        };
        let y = run(&q.graph(DType::F32), &q.inputs(DType::F32), Precision::F32);
        check("residual_out", &y[0], &reference::post(&q), F32_REL)?;
        let logits = f32_values(&logits);
        let sk = sk.rounded_to(DType::F32);
        let n = shape[shape.len() - 1];
        let y = run(
            &sinkhorn_graph(DType::F32, &shape, sk),
            &[("comb", tensor(DType::F32, &shape, &logits))],
            Precision::F32,
        );
        check("sinkhorn", &y[0], &reference::sinkhorn(&logits, n, sk), F32_REL)?;
    }

    #[test]
    fn f32_precision_semantic_ops((shape, x) in shaped(2, 0.1, 4.0), eps in select(vec![0.0, 1e-6])) {
        let x = f32_values(&x);
        let r = shape.len();
        let attrs = format!(", eps={}", float_text(eps));
        let input = [("x", tensor(DType::F32, &shape, &x))];
        let cases = [
            ("row_norm", attrs.clone(), reference::normalize(&x, &shape, r - 1, eps)),
            ("col_norm", attrs.clone(), reference::normalize(&x, &shape, r - 2, eps)),
            ("rms_norm", attrs, reference::rms_norm(&x, &shape, eps)),
            ("softmax", format!(", axis={}", r - 2), reference::softmax(&x, &shape, r - 2)),
        ];
        for (op, attrs, want) in cases {
            let y = run(&one_op_graph(op, &attrs, DType::F32, &shape), &input, Precision::F32);
            check(op, &y[0], &want, F32_REL)?;
        }
    }

    #[test]
    fn bf16_fused_ops_track_the_unfused_graph(
        p in pre_case(2, 4, 8, gates(true)),
        hc in pre_case(2, 4, 8, gates(false)),
        q in post_case(3, 4, 8),
        (t, n) in (1usize..=3, 1usize..=5),
        logits in values(75, -4.0, 4.0),
        sk in sk(20, &[0.0, 1e-6, 1e-3]),
    ) {
        let d = DType::Bf16;
        for precision in [Precision::F64, Precision::F32] {
            // The fused post-mix computes in f32 and rounds only its
            // result to bf16 (bf16 is storage), where the unfused graph
            // also rounds both products and the sum: a few bf16 units apart.
            let q = PostCase {
                f: bf16_values(&q.f),
                x: bf16_values(&q.x),
                post: bf16_values(&q.post),
                comb: bf16_values(&q.comb),
                ..q.clone()
            };
            let b = Builder::new("post");
            let (tt, nn, cc) = (q.t, q.n, q.c);
            let out = mhc::mhc_post(
                b.input("layer_output", d, &[tt, cc]),
                b.input("residual", d, &[tt, nn, cc]),
                b.input("post_mix", d, &[tt, nn]),
                b.input("comb_mix", d, &[tt, nn, nn]),
            );
            b.output("residual_out", out);
            let unfused = b.build().expect("the zoo's post-mix builds");
            let inputs = q.inputs(d);
            let units = bf16_units(&run(&q.graph(d), &inputs, precision), &run(&unfused, &inputs, precision));
            prop_assert!(units <= 8.0, "mhc_post: {} bf16 units", units);

            // Sinkhorn: the fused op keeps every intermediate in f32 where
            // the graph stores bf16. (Thousands of random cases stay within
            // 2.5 units; the bounds here and below leave a factor of three.)
            let shape = [t, n, n];
            let comb = bf16_values(&logits[..t * n * n]);
            let b = Builder::new("sinkhorn");
            let out = mhc::sinkhorn(b.input("comb", d, &shape), &sinkhorn_config(sk));
            b.output("comb_mix", out);
            let unfused = b.build().expect("the zoo's Sinkhorn builds");
            let inputs = [("comb", tensor(d, &shape, &comb))];
            let fused = run(&sinkhorn_graph(d, &shape, sk), &inputs, precision);
            let want = run(&unfused, &inputs, precision);
            let units = bf16_units(&fused, &want);
            prop_assert!(units <= 8.0, "sinkhorn {:?}: {} bf16 units", sk, units);

            // The pre-mixes differ from the graph only in how the mean
            // square is formed (sum / nC against sum · bf16(1/nC)) and in
            // the epsilons (f64 attributes against bf16 constants); seen
            // within 8 units.
            for case in [&p, &hc] {
                let case = case.rounded(bf16_values);
                let inputs = case.inputs(d);
                let fused = run(&case.graph(d), &inputs, precision);
                let want = run(&unfused_pre(&case, d), &inputs, precision);
                let units = bf16_units(&fused, &want);
                prop_assert!(units <= 24.0, "{:?}: {} bf16 units", case.gates, units);
            }
        }
    }

    #[test]
    fn bf16_operands_give_bf16_results_near_the_transcription(
        p in pre_case(2, 3, 4, gates(true)),
        hc in pre_case(2, 3, 4, gates(false)),
        q in post_case(2, 3, 4),
        (shape, x) in shaped(2, 0.1, 4.0),
    ) {
        // bf16 is a storage type: every stored intermediate of the fused op
        // is rounded to bf16 (8 significant bits), as in the unfused graph.
        // The bounds below are in units of one bf16 rounding, at most 2^-8
        // relative.
        let ulp = 2f64.powi(-8);
        let is_bf16 = |v: &[f64]| v.iter().all(|&x| half::bf16::from_f64(x).to_f64() == x);
        for precision in [Precision::F64, Precision::F32] {
            // A normalization rounds twice (denominator, quotient); 0.1 ulp
            // more covers the second-order term and an f32 accumulator.
            let r = shape.len();
            let x = bf16_values(&x);
            let input = [("x", tensor(DType::Bf16, &shape, &x))];
            let y = run(&one_op_graph("row_norm", ", eps=0.0", DType::Bf16, &shape), &input, precision);
            prop_assert!(is_bf16(&y[0]));
            check("row_norm", &y[0], &reference::normalize(&x, &shape, r - 1, 0.0), 2.1 * ulp)?;
            // The post-mix: n + 1 products and n additions, each rounded, of
            // terms below 4 in magnitude.
            let q = PostCase {
                f: bf16_values(&q.f),
                x: bf16_values(&q.x),
                post: bf16_values(&q.post),
                comb: bf16_values(&q.comb),
                ..q.clone()
            };
            let y = run(&q.graph(DType::Bf16), &q.inputs(DType::Bf16), precision);
            prop_assert!(is_bf16(&y[0]));
            let bound = 4.0 * (2 * q.n + 1) as f64 * ulp;
            check("residual_out", &y[0], &reference::post(&q), bound)?;
            // The pre-mixes: a long chain (dot products, exp, up to 30
            // Sinkhorn rounds) with no simple worst case. Thousands of random
            // cases stay within 10 ulp of the reference; the bound leaves a
            // factor of three.
            for case in [&p, &hc] {
                let case = case.rounded(bf16_values);
                let (li, post, comb) = reference::pre(&case);
                let y = run(&case.graph(DType::Bf16), &case.inputs(DType::Bf16), precision);
                for (v, want, name) in [(&y[0], &li, "layer_input"), (&y[1], &post, "post_mix"), (&y[2], &comb, "comb_mix")] {
                    prop_assert!(is_bf16(v), "{} is not bf16", name);
                    check(name, v, want, 32.0 * ulp)?;
                }
            }
        }
    }
}
