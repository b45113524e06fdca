//! Equivalent spellings of one mHC sublayer (pre-mix, layer function,
//! post-mix), drawn independently from every choice a user writing from
//! the paper, from the zoo or from another framework's code makes: how the
//! projection is laid out and split, where RMSNorm sits and how it is
//! spelled, how the gates, the Sinkhorn projection and the two mixes are
//! written, and in which order operands and terms come.
//!
//! Every spelling computes an mHC sublayer with the settings of its
//! [`MhcConfig`], so the optimizer must fuse each into the same `mhc_pre`
//! and `mhc_post` as the zoo's `mhc-sublayer` with that configuration.
//! Spellings that write the residual mix the paper's way (`H_res · x`,
//! Sinkhorn columns first on `H_res`) parameterize the transpose of the
//! zoo's `comb`: the same function class, other weights.
//!
//! ```
//! use birkhoff_testkit::spellings::{Dims, Spelling, build};
//! use birkhoff_dsl::zoo::mhc::MhcConfig;
//!
//! let s = Spelling::paper();
//! let dims = Dims { tokens: 2, streams: 2, hidden: 4, layers: 1, dtype: birkhoff_ir::DType::F32, layer_fn: birkhoff_dsl::zoo::LayerFn::LinearTanh };
//! let model = build(&s, &dims, &s.config())?;
//! assert!(model.graph.len() > 50);
//! # Ok::<(), birkhoff_dsl::Error>(())
//! ```

use birkhoff_dsl::zoo::mhc::{MhcConfig, SinkhornConfig, SinkhornVariant};
use birkhoff_dsl::zoo::{Inits, LayerFn};
use birkhoff_dsl::{Builder, Init, Var, concat, nn};
use birkhoff_ir::{DType, Graph};
use proptest::prelude::*;

/// How the projections `φ` are stored and applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Projection {
    /// One matrix for all `m = n(n+2)` mixes: `[m, nC]` used transposed
    /// (`output_major`, the zoo's `fn`) or `[nC, m]` used as is.
    Packed {
        /// Stored `[m, nC]`.
        output_major: bool,
        /// The order of the three branches' columns: an index into the six
        /// orders of `(pre, post, res)`, `0` being that one.
        order: u8,
    },
    /// Three matrices, `φ_pre`, `φ_post`, `φ_res` (the paper), each
    /// `[k, nC]` (`output_major`) or `[nC, k]`.
    Split {
        /// Stored `[k, nC]`.
        output_major: bool,
    },
    /// Two: the gates' `φ_gates [2n, nC]` (pre then post) and `φ_res`, laid
    /// out as `output_major` says.
    Pair {
        /// Stored `[k, nC]`.
        output_major: bool,
    },
}

/// Where the RMS factor is applied and how it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rms {
    /// Normalize `x̃` first (the paper) instead of scaling the projections
    /// after (the zoo).
    pub before: bool,
    /// The factor's spelling.
    pub factor: RmsFactor,
    /// Squares as `pow(x, 2)` instead of `x · x`.
    pub pow: bool,
    /// The mean as `sum / N` instead of `sum · (1/N)`.
    pub divide: bool,
    /// `eps + ms` instead of `ms + eps`.
    pub eps_first: bool,
    /// The sum of squares reduced without keepdims, then reshaped to
    /// `[T, 1]` (`x.sum(-1)[..., None]`).
    pub unsqueeze: bool,
    /// A per-channel weight `γ [nC]` after the factor, as PyTorch's
    /// `nn.RMSNorm` has (only with `before`: `RMSNorm(x̃) · φ`).
    pub weight: bool,
}

/// The spelling of `1/sqrt(ms + eps)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmsFactor {
    /// `rsqrt(v)`.
    Rsqrt,
    /// `recip(sqrt(v))`.
    RecipSqrt,
    /// Divide by `sqrt(v)` instead of multiplying.
    DivSqrt,
    /// `pow(v, -0.5)`.
    PowNegHalf,
    /// Divide by `pow(v, 0.5)`.
    DivPowHalf,
}

/// How the scales `α` and biases `b` are stored and applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Affine {
    /// The zoo: `mixes ⊙ concat(α₀ ×n, α₁ ×n, α₂ ×n²) + base` on the whole
    /// packed projection, then sliced into branches (needs a packed
    /// projection).
    Packed,
    /// Per branch: `α_k · h_k + b_k`, from one `scale [3]` and one
    /// `base [m]` sliced per branch.
    Sliced,
    /// Per branch from three scalar `α`s and three biases (the paper).
    Split,
}

/// How a Sinkhorn projection is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkhornSpelling {
    /// Normalize by multiplying with `recip(sum)` instead of dividing.
    pub mul_recip: bool,
    /// `eps + sum` instead of `sum + eps`.
    pub eps_first: bool,
    /// The paper's convention: the logits as `H̃_res`, columns normalized
    /// first, then `x_next = H_res · x`; else the zoo's (rows first on
    /// `comb = H_resᵀ`, `x_next = combᵀ · x`).
    pub on_h_res: bool,
    /// `tilekernels`: the softmax without subtracting the max.
    pub plain_softmax: bool,
    /// Subtract a maximum from the logits first: `0` none, `1` along the
    /// first-normalized axis, `2` over each matrix (only where it changes
    /// nothing: under the softmax, or with `eps = 0`).
    pub shift: u8,
    /// In the log domain (only with `eps = 0`): `z ← z − lse(z)` along each
    /// axis in turn, then `exp(z)`, with `lse` as `1` `m + log Σ exp(z − m)`,
    /// `2` `log Σ exp(z)`, or `3` the max subtracted first, `(z − m) −
    /// log Σ exp(z − m)`; `0` not.
    pub log_domain: u8,
    /// Normalizing sums reduced without keepdims, then reshaped back.
    pub unsqueeze: bool,
}

/// How a contraction (apply_mix, the residual mix) is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contraction {
    /// A (batched) matrix product.
    MatMul,
    /// Broadcast both operands, multiply, sum over the shared axis (what
    /// `einsum` exports to).
    BroadcastSum,
}

/// One spelling of an mHC sublayer.
#[derive(Clone, Debug, PartialEq)]
pub struct Spelling {
    /// Projection layout and splitting.
    pub projection: Projection,
    /// Each projection as `(φᵀ · x̂ᵀ)ᵀ`, a product of transposes.
    pub transposed_product: bool,
    /// RMSNorm placement and spelling.
    pub rms: Rms,
    /// Scales and biases.
    pub affine: Affine,
    /// `h · α` instead of `α · h`.
    pub scale_after: bool,
    /// The residual branch's scale and bias applied to the `[T, n, n]`
    /// matrix, as the paper writes `α_res · mat(x̂ φ_res) + b_res` with
    /// `b_res` an `n × n` matrix (with a sliced or split affine).
    pub res_matrix: bool,
    /// `b + α·h` instead of `α·h + b`.
    pub bias_first: bool,
    /// Split scales and biases stored `[1]` and `[1, k]` (as frameworks
    /// that keep dimensions store them) instead of `[]` and `[k]`.
    pub keep_dims: bool,
    /// Pre gates: `0` `sigmoid(z) + eps`, `1` `eps + sigmoid(z)`, `2`
    /// `recip(1 + exp(-z)) + eps`.
    pub pre_gate: u8,
    /// Post gates: `0` `sigmoid(z) · k`, `1` `k · sigmoid(z)`, `2`
    /// `sigmoid(z) + sigmoid(z)` (when `k = 2`).
    pub post_gate: u8,
    /// The Sinkhorn projection.
    pub sinkhorn: SinkhornSpelling,
    /// The layer input `Σ_i pre_i · x_i`.
    pub apply_mix: Contraction,
    /// Keep the layer input `[T, 1, C]` (the product `pre · x` unreshaped).
    pub layer_input_3d: bool,
    /// The residual mix.
    pub residual_mix: Contraction,
    /// `post ⊗ f` as a matrix product of `[T,n,1]` and `[T,1,C]` instead of
    /// a broadcast multiply.
    pub outer_matmul: bool,
    /// `post ⊗ f + mix` instead of `mix + post ⊗ f`.
    pub outer_first: bool,
    /// The settings: pre_eps, post_mult, norm_eps and the Sinkhorn.
    pub settings: Settings,
}

/// The mHC settings a spelling is drawn with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// RMS epsilon.
    pub norm_eps: f64,
    /// Added to the pre gates (`0`: left out).
    pub pre_eps: f64,
    /// Multiplies the post gates.
    pub post_mult: f64,
    /// `paper` or `tilekernels`.
    pub variant: SinkhornVariant,
    /// Sinkhorn rounds.
    pub iters: usize,
    /// Sinkhorn eps (`0` for `paper` in the paper).
    pub eps: f64,
}

/// Sizes of a spelled model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Tokens `T`.
    pub tokens: usize,
    /// Streams `n`.
    pub streams: usize,
    /// Hidden width `C`.
    pub hidden: usize,
    /// Sublayers, one after the other.
    pub layers: usize,
    /// The element type of every tensor.
    pub dtype: DType,
    /// The layer function `F`: `tanh(u · w)`, or the identity.
    pub layer_fn: LayerFn,
}

/// A spelled model: its graph and the distributions its inputs are drawn
/// from.
pub struct SpelledModel {
    /// The graph, `residual [T,n,C]` to `residual_out [T,n,C]`.
    pub graph: Graph,
    /// Input distributions by name.
    pub inits: Inits,
}

impl Spelling {
    /// The zoo's spelling of `mhc-sublayer` with `linear-tanh` (one packed
    /// `fn [m, nC]`, the RMS factor after the projection, and so on).
    pub fn zoo() -> Spelling {
        Spelling {
            projection: Projection::Packed {
                output_major: true,
                order: 0,
            },
            rms: Rms {
                before: false,
                factor: RmsFactor::Rsqrt,
                pow: false,
                divide: false,
                eps_first: false,
                unsqueeze: false,
                weight: false,
            },
            transposed_product: false,
            affine: Affine::Packed,
            scale_after: true,
            res_matrix: false,
            bias_first: false,
            keep_dims: false,
            pre_gate: 0,
            post_gate: 0,
            sinkhorn: SinkhornSpelling {
                mul_recip: false,
                eps_first: false,
                on_h_res: false,
                plain_softmax: false,
                shift: 0,
                log_domain: 0,
                unsqueeze: false,
            },
            apply_mix: Contraction::MatMul,
            layer_input_3d: false,
            residual_mix: Contraction::MatMul,
            outer_matmul: false,
            outer_first: false,
            settings: Settings {
                norm_eps: 1e-6,
                pre_eps: 1e-6,
                post_mult: 2.0,
                variant: SinkhornVariant::TileKernels,
                iters: 4,
                eps: 1e-6,
            },
        }
    }

    /// The paper's equations, written as they read: three input-major
    /// projections of the RMS-normalized, flattened stream, three scalar
    /// `α`s and biases, `2σ`, Sinkhorn on `H̃_res` (columns first, plain
    /// sums, `eps = 0`), `H_res · x` as a matrix product.
    pub fn paper() -> Spelling {
        Spelling {
            projection: Projection::Split {
                output_major: false,
            },
            rms: Rms {
                before: true,
                factor: RmsFactor::DivSqrt,
                pow: true,
                divide: true,
                eps_first: false,
                unsqueeze: false,
                weight: false,
            },
            transposed_product: false,
            affine: Affine::Split,
            scale_after: false,
            res_matrix: true,
            bias_first: false,
            keep_dims: false,
            pre_gate: 0,
            post_gate: 1,
            sinkhorn: SinkhornSpelling {
                mul_recip: false,
                eps_first: false,
                on_h_res: true,
                plain_softmax: false,
                shift: 0,
                log_domain: 0,
                unsqueeze: false,
            },
            apply_mix: Contraction::MatMul,
            layer_input_3d: true,
            residual_mix: Contraction::MatMul,
            outer_matmul: true,
            outer_first: false,
            settings: Settings {
                norm_eps: 1e-6,
                pre_eps: 0.0,
                post_mult: 2.0,
                variant: SinkhornVariant::Paper,
                iters: 20,
                eps: 0.0,
            },
        }
    }

    /// The zoo configuration with this spelling's settings: the canonical
    /// graph its fused ops must match.
    pub fn config(&self) -> MhcConfig {
        let s = &self.settings;
        MhcConfig {
            norm_eps: s.norm_eps,
            pre_eps: s.pre_eps,
            post_mult: s.post_mult,
            sinkhorn: SinkhornConfig {
                variant: s.variant,
                iters: s.iters,
                eps: s.eps,
            },
        }
    }
}

fn normal(std: f64) -> Init {
    Init::Normal { mean: 0.0, std }
}

/// Builds the spelled model: `dims.layers` sublayers, each `pre → F →
/// post` with `F` as `dims.layer_fn` says.
pub fn build(s: &Spelling, dims: &Dims, cfg: &MhcConfig) -> birkhoff_dsl::Result<SpelledModel> {
    let b = Builder::new("mhc_spelled");
    let (t, n, c) = (dims.tokens, dims.streams, dims.hidden);
    let mut inits = Inits::new();
    let mut x = b.input("residual", dims.dtype, &[t, n, c]);
    inits.insert("residual".into(), normal(1.0));
    for l in 0..dims.layers {
        let prefix = if dims.layers == 1 {
            String::new()
        } else {
            format!("l{l}.")
        };
        x = sublayer(&b, &mut inits, &prefix, s, cfg, x, (t, n, c), dims);
    }
    b.output("residual_out", x);
    Ok(SpelledModel {
        graph: b.build()?,
        inits,
    })
}

/// Declares parameters of the model's dtype, recording their inits.
struct Params<'a, 'b> {
    b: &'b Builder,
    inits: &'a mut Inits,
    dtype: DType,
}

impl<'b> Params<'_, 'b> {
    /// A parameter drawn from `init`.
    fn declare(&mut self, name: &str, shape: &[usize], init: Init) -> Var<'b> {
        self.inits.insert(name.to_string(), init);
        self.b.param(name, self.dtype, shape)
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "one sublayer's builder, its names, its spelling and its sizes"
)]
fn sublayer<'b>(
    b: &'b Builder,
    inits: &mut Inits,
    prefix: &str,
    s: &Spelling,
    cfg: &MhcConfig,
    x: Var<'b>,
    (t, n, c): (usize, usize, usize),
    dims: &Dims,
) -> Var<'b> {
    let dtype = dims.dtype;
    let mut params = Params { b, inits, dtype };
    let (m, k) = (n * (n + 2), n * c);
    let widths = [n, n, n * n];
    // The branches in the packed projection's column order, and where
    // each one's columns start.
    let order = match s.projection {
        Projection::Packed { order, .. } => ORDERS[usize::from(order) % ORDERS.len()],
        Projection::Split { .. } | Projection::Pair { .. } => [0, 1, 2],
    };
    let mut starts = [0; 3];
    let mut lo = 0;
    for &i in &order {
        starts[i] = lo;
        lo += widths[i];
    }
    let slices = |v: Var<'b>| -> Vec<Var<'b>> {
        (0..3)
            .map(|i| v.slice(&[0, starts[i]], &[t, starts[i] + widths[i]]))
            .collect()
    };
    let xf = x.reshape(&[t, k]);
    let factor = rms_factor(b, xf, &s.rms, cfg.norm_eps, dtype);
    let h = if s.rms.before {
        let normed = factor.apply(xf);
        if s.rms.weight {
            let gamma = params.declare(
                &format!("{prefix}gamma"),
                &[k],
                Init::Uniform {
                    low: 0.5,
                    high: 1.5,
                },
            );
            normed * gamma.broadcast_to(&[t, k])
        } else {
            normed
        }
    } else {
        xf
    };
    let w_init = normal(1.0 / (k as f64).sqrt());
    let scale_init = Init::Uniform {
        low: 0.5,
        high: 1.5,
    };
    // The three pre-activations z_pre [T,n], z_post [T,n], z_res [T,n²].
    let z: Vec<Var<'b>> = match (s.projection, s.affine) {
        (Projection::Packed { output_major, .. }, Affine::Packed) => {
            let w = packed_weight(&mut params, prefix, output_major, m, k, w_init);
            let mixes = project(s, h, w, &factor);
            let scale = params.declare(&format!("{prefix}scale"), &[3], scale_init);
            let base = params.declare(&format!("{prefix}base"), &[m], normal(1.0));
            let sc = |i: usize| scale.slice(&[i], &[i + 1]).broadcast_to(&[widths[i]]);
            let parts: Vec<Var<'b>> = order.iter().map(|&i| sc(i)).collect();
            let vec = concat(&parts, 0).unwrap_or(scale);
            slices(affine(s, mixes, vec, base))
        }
        (projection, affine_kind) => {
            let projected: Vec<Var<'b>> = match projection {
                Projection::Packed { output_major, .. } => {
                    let w = packed_weight(&mut params, prefix, output_major, m, k, w_init);
                    slices(project(s, h, w, &factor))
                }
                Projection::Split { output_major } => ["pre", "post", "res"]
                    .iter()
                    .zip(widths)
                    .map(|(name, w)| {
                        let name = format!("{prefix}phi_{name}");
                        let phi = if output_major {
                            params.declare(&name, &[w, k], w_init.clone()).transpose()
                        } else {
                            params.declare(&name, &[k, w], w_init.clone())
                        };
                        project(s, h, phi, &factor)
                    })
                    .collect(),
                Projection::Pair { output_major } => {
                    let declare = |params: &mut Params<'_, 'b>, name: &str, w: usize| {
                        let name = format!("{prefix}phi_{name}");
                        if output_major {
                            params.declare(&name, &[w, k], w_init.clone()).transpose()
                        } else {
                            params.declare(&name, &[k, w], w_init.clone())
                        }
                    };
                    let gates = project(s, h, declare(&mut params, "gates", 2 * n), &factor);
                    let res = project(s, h, declare(&mut params, "res", n * n), &factor);
                    vec![
                        gates.slice(&[0, 0], &[t, n]),
                        gates.slice(&[0, n], &[t, 2 * n]),
                        res,
                    ]
                }
            };
            let (scales, biases): (Vec<Var<'b>>, Vec<Var<'b>>) = match affine_kind {
                Affine::Split => ["pre", "post", "res"]
                    .iter()
                    .zip(widths)
                    .map(|(name, w)| {
                        // A scalar α as `[]` or `[1]`, a bias as `[k]` or `[1, k]`.
                        let a_shape: &[usize] = if s.keep_dims { &[1] } else { &[] };
                        let b_shape: Vec<usize> = if s.res_matrix && *name == "res" {
                            vec![n, n]
                        } else if s.keep_dims {
                            vec![1, w]
                        } else {
                            vec![w]
                        };
                        let a = params.declare(
                            &format!("{prefix}alpha_{name}"),
                            a_shape,
                            scale_init.clone(),
                        );
                        let bias =
                            params.declare(&format!("{prefix}b_{name}"), &b_shape, normal(1.0));
                        (a, bias)
                    })
                    .unzip(),
                Affine::Packed | Affine::Sliced => {
                    let scale = params.declare(&format!("{prefix}scale"), &[3], scale_init);
                    let base = params.declare(&format!("{prefix}base"), &[m], normal(1.0));
                    (0..3)
                        .map(|i| {
                            let a = scale.slice(&[i], &[i + 1]).reshape(&[]);
                            let bias = base.slice(&[starts[i]], &[starts[i] + widths[i]]);
                            (a, bias)
                        })
                        .unzip()
                }
            };
            projected
                .into_iter()
                .zip(scales.into_iter().zip(biases))
                .enumerate()
                .map(|(i, (p, (a, bias)))| {
                    if i == 2 && s.res_matrix {
                        // The paper's mat(·) first: α_res · mat(x̂ φ_res) + b_res,
                        // b_res an n×n matrix.
                        affine(s, p.reshape(&[t, n, n]), a, bias.reshape(&[n, n]))
                    } else {
                        affine(s, p, a, bias)
                    }
                })
                .collect()
        }
    };
    let pre = pre_gate(s, z[0], cfg.pre_eps);
    let post = post_gate(s, z[1], cfg.post_mult);
    let logits = z[2].reshape(&[t, n, n]);
    let mixing = sinkhorn(s, logits, &cfg.sinkhorn);
    let li = apply_mix(s, pre, x, (t, n, c));
    let f = match dims.layer_fn {
        LayerFn::Identity => li,
        LayerFn::LinearTanh => {
            let w = params.declare(
                &format!("{prefix}w"),
                &[c, c],
                normal(1.0 / (c as f64).sqrt()),
            );
            // F on the layer input as it is shaped: `nn::linear` flattens a
            // `[T, 1, C]` input's leading axes.
            nn::linear(li, w).tanh()
        }
    };
    post_mix(s, f, x, post, mixing, (t, n, c))
}

/// The six orders of the branches `(pre, post, res)` = `(0, 1, 2)`.
const ORDERS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
];

fn packed_weight<'b>(
    params: &mut Params<'_, 'b>,
    prefix: &str,
    output_major: bool,
    m: usize,
    k: usize,
    init: Init,
) -> Var<'b> {
    if output_major {
        params
            .declare(&format!("{prefix}fn"), &[m, k], init)
            .transpose()
    } else {
        params.declare(&format!("{prefix}w_mix"), &[k, m], init)
    }
}

/// The per-token RMS factor of `xf [T, K]`, as spelled.
struct Factor<'b> {
    /// `ms + eps`, `[T, 1]`.
    v: Var<'b>,
    spelling: RmsFactor,
    b: &'b Builder,
    dtype: DType,
}

impl<'b> Factor<'b> {
    /// `y` scaled by the factor (a `[T, *]` value).
    fn apply(&self, y: Var<'b>) -> Var<'b> {
        let shape = y.shape();
        match self.spelling {
            RmsFactor::Rsqrt => y * self.v.rsqrt().broadcast_to(&shape),
            RmsFactor::RecipSqrt => y * self.v.sqrt().recip().broadcast_to(&shape),
            RmsFactor::DivSqrt => y / self.v.sqrt().broadcast_to(&shape),
            RmsFactor::PowNegHalf => y * self.v.pow(self.exponent(-0.5)).broadcast_to(&shape),
            RmsFactor::DivPowHalf => y / self.v.pow(self.exponent(0.5)).broadcast_to(&shape),
        }
    }

    /// A constant exponent shaped like `v`.
    fn exponent(&self, e: f64) -> Var<'b> {
        self.b.full(e, self.dtype, &self.v.shape())
    }
}

fn rms_factor<'b>(b: &'b Builder, xf: Var<'b>, r: &Rms, eps: f64, dtype: DType) -> Factor<'b> {
    let k = xf.shape()[1];
    let sq = if r.pow {
        xf.pow(b.full(2.0, dtype, &xf.shape()))
    } else {
        xf * xf
    };
    let sum = sum_kept(sq, 1, r.unsqueeze);
    let ms = if r.divide {
        sum / k as f64
    } else {
        sum * (1.0 / k as f64)
    };
    let v = if r.eps_first { eps + ms } else { ms + eps };
    Factor {
        v,
        spelling: r.factor,
        b,
        dtype,
    }
}

/// `h · w`, with the RMS factor applied after when it was not before.
fn project<'b>(s: &Spelling, h: Var<'b>, w: Var<'b>, factor: &Factor<'b>) -> Var<'b> {
    let p = if s.transposed_product {
        w.transpose().matmul(h.transpose()).transpose()
    } else {
        h.matmul(w)
    };
    if s.rms.before { p } else { factor.apply(p) }
}

/// `α · h + b` in the spelling's order; `a` is a scalar or a vector as
/// wide as `h`'s rows, `bias` a vector.
fn affine<'b>(s: &Spelling, h: Var<'b>, a: Var<'b>, bias: Var<'b>) -> Var<'b> {
    let shape = h.shape();
    let a = a.broadcast_to(&shape);
    let scaled = if s.scale_after { h * a } else { a * h };
    let bias = bias.broadcast_to(&shape);
    if s.bias_first {
        bias + scaled
    } else {
        scaled + bias
    }
}

fn pre_gate<'b>(s: &Spelling, z: Var<'b>, eps: f64) -> Var<'b> {
    let g = match s.pre_gate {
        2 => (1.0 + (-z).exp()).recip(),
        _ => z.sigmoid(),
    };
    if eps == 0.0 {
        g
    } else if s.pre_gate == 1 {
        eps + g
    } else {
        g + eps
    }
}

fn post_gate<'b>(s: &Spelling, z: Var<'b>, mult: f64) -> Var<'b> {
    let g = z.sigmoid();
    match s.post_gate {
        2 if mult == 2.0 => g + g,
        1 => mult * g,
        _ => g * mult,
    }
}

/// `x` divided by its sum over `axis` (plus `eps`), as spelled.
/// `x` summed over `axis` with that axis kept as 1: by keepdims, or
/// (`unsqueeze`) reduced away and reshaped back.
fn sum_kept(x: Var<'_>, axis: usize, unsqueeze: bool) -> Var<'_> {
    if unsqueeze {
        let mut kept = x.shape();
        kept[axis] = 1;
        x.sum(&[axis], false).reshape(&kept)
    } else {
        x.sum(&[axis], true)
    }
}

fn normalize<'b>(s: &SinkhornSpelling, x: Var<'b>, axis: usize, eps: f64) -> Var<'b> {
    let sum = sum_kept(x, axis, s.unsqueeze);
    let d = if eps == 0.0 {
        sum
    } else if s.eps_first {
        eps + sum
    } else {
        sum + eps
    };
    let d = d.broadcast_to(&x.shape());
    if s.mul_recip { x * d.recip() } else { x / d }
}

/// The mixing matrix: `comb [T,n,n]` (zoo convention), or `H_res` (the
/// paper's, its transpose) when `on_h_res`.
fn sinkhorn<'b>(s: &Spelling, logits: Var<'b>, cfg: &SinkhornConfig) -> Var<'b> {
    let sp = &s.sinkhorn;
    // On comb, rows (axis 2) come first; on H_res, columns (axis 1).
    let (first, second) = if sp.on_h_res { (1, 2) } else { (2, 1) };
    let eps = cfg.eps;
    // A shift the first normalization cancels: under the softmax always,
    // under a bare exp only without eps.
    let cancels = cfg.variant == SinkhornVariant::TileKernels || eps == 0.0;
    let logits = match sp.shift {
        1 if cancels => {
            logits
                - logits
                    .max_over(&[first], true)
                    .broadcast_to(&logits.shape())
        }
        2 if cancels => logits - logits.max_over(&[1, 2], true).broadcast_to(&logits.shape()),
        _ => logits,
    };
    if sp.log_domain != 0 && eps == 0.0 {
        let mut z = logits;
        for _ in 0..cfg.iters {
            z = log_normalize(sp.log_domain, z, first);
            z = log_normalize(sp.log_domain, z, second);
        }
        return z.exp();
    }
    match cfg.variant {
        SinkhornVariant::Paper => {
            let mut mat = logits.exp();
            for _ in 0..cfg.iters {
                mat = normalize(sp, mat, first, eps);
                mat = normalize(sp, mat, second, eps);
            }
            mat
        }
        SinkhornVariant::TileKernels => {
            let mut mat = if sp.plain_softmax {
                let e = logits.exp();
                e / e.sum(&[first], true).broadcast_to(&e.shape())
            } else {
                nn::softmax(logits, first)
            };
            if eps != 0.0 {
                mat = if sp.eps_first { eps + mat } else { mat + eps };
            }
            mat = normalize(sp, mat, second, eps);
            for _ in 1..cfg.iters {
                mat = normalize(sp, mat, first, eps);
                mat = normalize(sp, mat, second, eps);
            }
            mat
        }
    }
}

/// `z − logsumexp(z, axis)`, with `lse` spelled as
/// [`SinkhornSpelling::log_domain`] says (`1`, `2` or `3`).
pub fn log_normalize(spelling: u8, z: Var<'_>, axis: usize) -> Var<'_> {
    let shape = z.shape();
    let m = z.max_over(&[axis], true);
    let mb = m.broadcast_to(&shape);
    match spelling {
        2 => z - z.exp().sum(&[axis], true).log().broadcast_to(&shape),
        3 => {
            let u = z - mb;
            u - u.exp().sum(&[axis], true).log().broadcast_to(&shape)
        }
        _ => {
            let lse = m + (z - mb).exp().sum(&[axis], true).log();
            z - lse.broadcast_to(&shape)
        }
    }
}

/// `Σ_i pre[t,i] · x[t,i,c]`: `[T, C]`, or `[T, 1, C]` when the spelling
/// keeps the product's shape.
fn apply_mix<'b>(
    s: &Spelling,
    pre: Var<'b>,
    x: Var<'b>,
    (t, n, c): (usize, usize, usize),
) -> Var<'b> {
    let li = match s.apply_mix {
        Contraction::MatMul => pre.reshape(&[t, 1, n]).matmul(x),
        Contraction::BroadcastSum => {
            let p = pre.reshape(&[t, n, 1]).broadcast_to(&[t, n, c]);
            (p * x).sum(&[1], true)
        }
    };
    if s.layer_input_3d {
        li
    } else {
        li.reshape(&[t, c])
    }
}

/// `x_next = mix(x) + post ⊗ f`, in the spelling's convention and order.
fn post_mix<'b>(
    s: &Spelling,
    f: Var<'b>,
    x: Var<'b>,
    post: Var<'b>,
    mixing: Var<'b>,
    (t, n, c): (usize, usize, usize),
) -> Var<'b> {
    // x_next[t,j,c] = Σ_i H[t,j,i] x[t,i,c] with H = mixing (paper) or
    // mixingᵀ (zoo).
    let mixed = match (s.residual_mix, s.sinkhorn.on_h_res) {
        (Contraction::MatMul, true) => mixing.matmul(x),
        (Contraction::MatMul, false) => mixing.transpose().matmul(x),
        (Contraction::BroadcastSum, true) => {
            let h = mixing.reshape(&[t, n, n, 1]).broadcast_to(&[t, n, n, c]);
            let xs = x.reshape(&[t, 1, n, c]).broadcast_to(&[t, n, n, c]);
            (h * xs).sum(&[2], false)
        }
        (Contraction::BroadcastSum, false) => {
            let cm = mixing.reshape(&[t, n, n, 1]).broadcast_to(&[t, n, n, c]);
            let xs = x.reshape(&[t, n, 1, c]).broadcast_to(&[t, n, n, c]);
            (cm * xs).sum(&[1], false)
        }
    };
    let p = post.reshape(&[t, n, 1]);
    let fr = f.reshape(&[t, 1, c]);
    let outer = if s.outer_matmul {
        p.matmul(fr)
    } else {
        p.broadcast_to(&[t, n, c]) * fr.broadcast_to(&[t, n, c])
    };
    if s.outer_first {
        outer + mixed
    } else {
        mixed + outer
    }
}

/// Draws spellings: every choice independently, with settings that the
/// spelling can express (a pre gate without `eps` only when `pre_eps = 0`,
/// `σ + σ` only for `post_mult = 2`).
pub fn spelling() -> impl Strategy<Value = Spelling> {
    let projection = prop_oneof![
        (any::<bool>(), 0u8..6).prop_map(|(output_major, order)| Projection::Packed {
            output_major,
            order
        }),
        any::<bool>().prop_map(|output_major| Projection::Split { output_major }),
        any::<bool>().prop_map(|output_major| Projection::Pair { output_major }),
    ];
    let rms = (
        any::<bool>(),
        prop_oneof![
            Just(RmsFactor::Rsqrt),
            Just(RmsFactor::RecipSqrt),
            Just(RmsFactor::DivSqrt),
            Just(RmsFactor::PowNegHalf),
            Just(RmsFactor::DivPowHalf)
        ],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(before, factor, pow, divide, eps_first, unsqueeze, weight)| Rms {
                before,
                factor,
                pow,
                divide,
                eps_first,
                unsqueeze,
                // γ only where RMSNorm comes first: RMSNorm(x̃) · φ.
                weight: weight && before,
            },
        );
    let affine = prop_oneof![
        Just(Affine::Packed),
        Just(Affine::Sliced),
        Just(Affine::Split)
    ];
    let sinkhorn = (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u8..3,
        prop_oneof![3 => Just(0u8), 1 => 1u8..4],
        any::<bool>(),
    )
        .prop_map(
            |(mul_recip, eps_first, on_h_res, plain_softmax, shift, log_domain, unsqueeze)| {
                SinkhornSpelling {
                    mul_recip,
                    eps_first,
                    on_h_res,
                    plain_softmax,
                    shift,
                    log_domain,
                    unsqueeze,
                }
            },
        );
    let contraction = || prop_oneof![Just(Contraction::MatMul), Just(Contraction::BroadcastSum)];
    let settings = (
        prop_oneof![Just(1e-6), Just(1e-5)],
        prop_oneof![Just(0.0), Just(1e-6)],
        prop_oneof![Just(2.0), Just(1.5)],
        prop_oneof![
            Just(SinkhornVariant::Paper),
            Just(SinkhornVariant::TileKernels)
        ],
        1usize..6,
        prop_oneof![Just(0.0), Just(1e-6)],
    )
        .prop_map(
            |(norm_eps, pre_eps, post_mult, variant, iters, eps)| Settings {
                norm_eps,
                pre_eps,
                post_mult,
                variant,
                iters,
                eps,
            },
        );
    (
        (
            projection,
            rms,
            affine,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        (0u8..3, 0u8..3, sinkhorn, any::<bool>(), any::<bool>()),
        (
            contraction(),
            any::<bool>(),
            contraction(),
            any::<bool>(),
            any::<bool>(),
        ),
        settings,
    )
        .prop_map(
            |(
                (projection, rms, affine, scale_after, bias_first, keep_dims),
                (pre_gate, post_gate, sinkhorn, transposed_product, res_matrix),
                (apply_mix, layer_input_3d, residual_mix, outer_matmul, outer_first),
                settings,
            )| {
                // The zoo's packed affine needs the packed projection.
                let affine = match (affine, projection) {
                    (Affine::Packed, Projection::Split { .. } | Projection::Pair { .. }) => {
                        Affine::Sliced
                    }
                    (a, _) => a,
                };
                Spelling {
                    projection,
                    transposed_product,
                    res_matrix,
                    rms,
                    affine,
                    scale_after,
                    bias_first,
                    keep_dims,
                    pre_gate,
                    post_gate,
                    sinkhorn,
                    apply_mix,
                    layer_input_3d,
                    residual_mix,
                    outer_matmul,
                    outer_first,
                    settings,
                }
            },
        )
}

/// Small sizes for spelled models: 1–5 tokens, 1–4 streams, 1–9 channels,
/// `F(u) = tanh(u · w)`.
pub fn dims(layers: std::ops::Range<usize>, dtype: DType) -> impl Strategy<Value = Dims> {
    (1usize..6, 1usize..5, 1usize..10, layers).prop_map(move |(tokens, streams, hidden, layers)| {
        Dims {
            tokens,
            streams,
            hidden,
            layers,
            dtype,
            layer_fn: LayerFn::LinearTanh,
        }
    })
}
