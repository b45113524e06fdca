//! The model zoo: every mHC model of the paper, written in primitive ops.
//!
//! Each model is built from a [`ModelArgs`] (the CLI's flags; unset
//! fields take the documented defaults) into a [`Model`]: the graph plus a
//! suggested random initialization for each input. Only flags a model
//! takes may be set; anything else is an error, not silently ignored.
//!
//! `--dtype` sets the element type of every tensor, inputs, weights and
//! intermediates alike. With `bf16` (a storage type, `docs/design.md` §3) the unfused
//! graph rounds every op's result to bf16, while the optimizer's fused mHC
//! ops keep their intermediates in f32 and round only what they return, as
//! DeepSeek's kernels do; the two therefore differ by a few bf16 units of
//! the values involved (see `birkhoff::compare`).

pub(crate) mod blocks;
pub mod mhc;

use birkhoff_ir::{DType, Graph, MAX_ELEMENTS};

use crate::builder::Builder;
use crate::error::{Error, Result};
use crate::init::Init;
use mhc::{MixParams, SinkhornConfig, SinkhornVariant};

pub use crate::init::Inits;

/// The layer function `F` of `mhc-sublayer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerFn {
    /// `F(u) = u`.
    Identity,
    /// `F(u) = tanh(u · w)` with `w [C, C]`.
    LinearTanh,
}

impl std::str::FromStr for LayerFn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "identity" => Ok(LayerFn::Identity),
            "linear-tanh" => Ok(LayerFn::LinearTanh),
            _ => Err(format!(
                "'{s}' is not a layer function (identity, linear-tanh)"
            )),
        }
    }
}

/// How a transformer sublayer is connected to the residual stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    /// `x + F(x)`.
    Residual,
    /// Unconstrained hyper-connections.
    Hc,
    /// Manifold-constrained hyper-connections.
    Mhc,
}

impl Connection {
    /// The name: `residual`, `hc` or `mhc`.
    pub fn name(self) -> &'static str {
        match self {
            Connection::Residual => "residual",
            Connection::Hc => "hc",
            Connection::Mhc => "mhc",
        }
    }
}

impl std::fmt::Display for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Connection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "residual" => Ok(Connection::Residual),
            "hc" => Ok(Connection::Hc),
            "mhc" => Ok(Connection::Mhc),
            _ => Err(format!("'{s}' is not a connection (residual, hc, mhc)")),
        }
    }
}

/// A model flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// `--tokens T`.
    Tokens,
    /// `--streams n`.
    Streams,
    /// `--hidden C`.
    Hidden,
    /// `--heads H`.
    Heads,
    /// `--ffn F`.
    Ffn,
    /// `--layers L`.
    Layers,
    /// `--sinkhorn paper|tilekernels`.
    Sinkhorn,
    /// `--iters K`.
    Iters,
    /// `--eps E`.
    Eps,
    /// `--norm-eps`.
    NormEps,
    /// `--pre-eps`.
    PreEps,
    /// `--post-mult`.
    PostMult,
    /// `--layer-fn identity|linear-tanh`.
    LayerFn,
    /// `--dtype f32|bf16|f64`.
    Dtype,
}

impl Flag {
    /// The flag's name without dashes.
    pub fn name(self) -> &'static str {
        match self {
            Flag::Tokens => "tokens",
            Flag::Streams => "streams",
            Flag::Hidden => "hidden",
            Flag::Heads => "heads",
            Flag::Ffn => "ffn",
            Flag::Layers => "layers",
            Flag::Sinkhorn => "sinkhorn",
            Flag::Iters => "iters",
            Flag::Eps => "eps",
            Flag::NormEps => "norm-eps",
            Flag::PreEps => "pre-eps",
            Flag::PostMult => "post-mult",
            Flag::LayerFn => "layer-fn",
            Flag::Dtype => "dtype",
        }
    }

    /// What it sets, and its default.
    pub fn help(self) -> &'static str {
        match self {
            Flag::Tokens => "tokens T (default 32)",
            Flag::Streams => "residual streams n (default 4)",
            Flag::Hidden => "hidden width C (default 64)",
            Flag::Heads => "attention heads, dividing C (default 4)",
            Flag::Ffn => "SwiGLU width (default 8C/3 rounded up to a multiple of 8)",
            Flag::Layers => "stacked transformer layers (default 1)",
            Flag::Sinkhorn => "Sinkhorn variant: paper | tilekernels (default tilekernels)",
            Flag::Iters => "Sinkhorn rounds, 1..=1000 (default 20)",
            Flag::Eps => {
                "added to every Sinkhorn denominator (default 1e-6 for tilekernels, 0 for paper)"
            }
            Flag::NormEps => "RMS normalization epsilon (default 1e-6)",
            Flag::PreEps => "added to the pre gates (default 1e-6)",
            Flag::PostMult => "post gate multiplier (default 2.0)",
            Flag::LayerFn => "layer function F: identity | linear-tanh (default identity)",
            Flag::Dtype => {
                "element type of every tensor: f32 | bf16 | f64 (default f32; bf16 is storage: \
                 ops compute in f32 and round their results to bf16)"
            }
        }
    }
}

/// Flag values as given; `None` means "not given, use the default".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelArgs {
    /// `--tokens`.
    pub tokens: Option<usize>,
    /// `--streams`.
    pub streams: Option<usize>,
    /// `--hidden`.
    pub hidden: Option<usize>,
    /// `--heads`.
    pub heads: Option<usize>,
    /// `--ffn`.
    pub ffn: Option<usize>,
    /// `--layers`.
    pub layers: Option<usize>,
    /// `--sinkhorn`.
    pub sinkhorn: Option<SinkhornVariant>,
    /// `--iters`.
    pub iters: Option<usize>,
    /// `--eps`.
    pub eps: Option<f64>,
    /// `--norm-eps`.
    pub norm_eps: Option<f64>,
    /// `--pre-eps`.
    pub pre_eps: Option<f64>,
    /// `--post-mult`.
    pub post_mult: Option<f64>,
    /// `--layer-fn`.
    pub layer_fn: Option<LayerFn>,
    /// `--dtype`.
    pub dtype: Option<DType>,
}

impl ModelArgs {
    /// The flags that were given.
    pub fn given(&self) -> Vec<Flag> {
        let mut out = Vec::new();
        let mut mark = |set: bool, f: Flag| {
            if set {
                out.push(f);
            }
        };
        mark(self.tokens.is_some(), Flag::Tokens);
        mark(self.streams.is_some(), Flag::Streams);
        mark(self.hidden.is_some(), Flag::Hidden);
        mark(self.heads.is_some(), Flag::Heads);
        mark(self.ffn.is_some(), Flag::Ffn);
        mark(self.layers.is_some(), Flag::Layers);
        mark(self.sinkhorn.is_some(), Flag::Sinkhorn);
        mark(self.iters.is_some(), Flag::Iters);
        mark(self.eps.is_some(), Flag::Eps);
        mark(self.norm_eps.is_some(), Flag::NormEps);
        mark(self.pre_eps.is_some(), Flag::PreEps);
        mark(self.post_mult.is_some(), Flag::PostMult);
        mark(self.layer_fn.is_some(), Flag::LayerFn);
        mark(self.dtype.is_some(), Flag::Dtype);
        out
    }
}

/// Every setting with defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct ZooConfig {
    /// Tokens `T`.
    pub tokens: usize,
    /// Streams `n`.
    pub streams: usize,
    /// Hidden width `C`.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// SwiGLU width; `None` means `8C/3` rounded up to a multiple of 8.
    pub ffn: Option<usize>,
    /// Stacked layers.
    pub layers: usize,
    /// Sinkhorn variant.
    pub sinkhorn: SinkhornVariant,
    /// Sinkhorn rounds.
    pub iters: usize,
    /// Sinkhorn eps; `None` means the variant's default.
    pub eps: Option<f64>,
    /// RMS normalization epsilon.
    pub norm_eps: f64,
    /// Pre gate epsilon.
    pub pre_eps: f64,
    /// Post gate multiplier.
    pub post_mult: f64,
    /// `F` of `mhc-sublayer`.
    pub layer_fn: LayerFn,
    /// Element type of every tensor.
    pub dtype: DType,
}

impl Default for ZooConfig {
    fn default() -> Self {
        ZooConfig {
            tokens: 32,
            streams: 4,
            hidden: 64,
            heads: 4,
            ffn: None,
            layers: 1,
            sinkhorn: SinkhornVariant::TileKernels,
            iters: 20,
            eps: None,
            norm_eps: 1e-6,
            pre_eps: 1e-6,
            post_mult: 2.0,
            layer_fn: LayerFn::Identity,
            dtype: DType::F32,
        }
    }
}

impl ZooConfig {
    /// The SwiGLU width.
    pub fn ffn_size(&self) -> usize {
        self.ffn
            .unwrap_or_else(|| (8 * self.hidden).div_ceil(3).div_ceil(8) * 8)
    }

    /// The Sinkhorn settings.
    pub fn sinkhorn_config(&self) -> SinkhornConfig {
        SinkhornConfig {
            variant: self.sinkhorn,
            iters: self.iters,
            eps: self.eps.unwrap_or(self.sinkhorn.default_eps()),
        }
    }
}

/// A zoo model: its graph and a suggested initialization per input.
#[derive(Clone, Debug)]
pub struct Model {
    /// The graph, verified, in primitive ops only.
    pub graph: Graph,
    /// How to draw random values for each input (by name).
    pub inits: Inits,
}

/// A zoo entry.
#[derive(Clone, Copy, Debug)]
pub struct ModelInfo {
    /// The name to build it by.
    pub name: &'static str,
    /// One line on what it computes, with its inputs and outputs.
    pub summary: &'static str,
    /// The flags it takes.
    pub flags: &'static [Flag],
}

use Flag::*;

static MODELS: &[ModelInfo] = &[
    ModelInfo {
        name: "sinkhorn",
        summary: "Sinkhorn-Knopp projection: comb [T,n,n] -> comb_mix [T,n,n]",
        flags: &[Tokens, Streams, Sinkhorn, Iters, Eps, Dtype],
    },
    ModelInfo {
        name: "mhc-pre",
        summary: "mHC pre-mix: residual [T,n,C], fn [n(n+2),nC], scale [3], base [n(n+2)] -> layer_input [T,C], post_mix [T,n], comb_mix [T,n,n]",
        flags: &[
            Tokens, Streams, Hidden, NormEps, PreEps, PostMult, Sinkhorn, Iters, Eps, Dtype,
        ],
    },
    ModelInfo {
        name: "hc-pre",
        summary: "unconstrained HC pre-mix (tanh gates, no Sinkhorn): same inputs and outputs as mhc-pre",
        flags: &[Tokens, Streams, Hidden, NormEps, Dtype],
    },
    ModelInfo {
        name: "mhc-post",
        summary: "mHC post-mix: layer_output [T,C], residual [T,n,C], post_mix [T,n], comb_mix [T,n,n] -> residual_out [T,n,C]",
        flags: &[Tokens, Streams, Hidden, Dtype],
    },
    ModelInfo {
        name: "mhc-sublayer",
        summary: "mHC pre -> F -> post: mhc-pre's inputs (+ w [C,C] for linear-tanh) -> residual_out [T,n,C]",
        flags: &[
            Tokens, Streams, Hidden, NormEps, PreEps, PostMult, Sinkhorn, Iters, Eps, LayerFn,
            Dtype,
        ],
    },
    ModelInfo {
        name: "mhc-block",
        summary: "transformer layer(s) (RMSNorm + causal attention, RMSNorm + SwiGLU), each sublayer wrapped in mHC: residual [T,n,C] -> residual_out [T,n,C]",
        flags: &[
            Tokens, Streams, Hidden, Heads, Ffn, Layers, NormEps, PreEps, PostMult, Sinkhorn,
            Iters, Eps, Dtype,
        ],
    },
    ModelInfo {
        name: "hc-block",
        summary: "the same transformer layer(s) with unconstrained HC connections",
        flags: &[Tokens, Streams, Hidden, Heads, Ffn, Layers, NormEps, Dtype],
    },
    ModelInfo {
        name: "residual-block",
        summary: "the baseline: plain pre-norm residual transformer layer(s), residual [T,C] -> residual_out [T,C]",
        flags: &[Tokens, Hidden, Heads, Ffn, Layers, NormEps, Dtype],
    },
];

/// Every zoo model.
pub fn models() -> &'static [ModelInfo] {
    MODELS
}

/// Looks a model up by name.
pub fn model_info(name: &str) -> Result<&'static ModelInfo> {
    MODELS
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| Error::UnknownModel {
            name: name.to_string(),
            known: MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
        })
}

fn resolve(info: &ModelInfo, args: &ModelArgs) -> Result<ZooConfig> {
    let accepted = || {
        info.flags
            .iter()
            .map(|f| format!("--{}", f.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for f in args.given() {
        if !info.flags.contains(&f) {
            return Err(Error::FlagNotApplicable {
                model: info.name.into(),
                flag: f.name().into(),
                accepted: accepted(),
            });
        }
    }
    let bad = |flag: Flag, message: String| {
        Err(Error::BadFlag {
            model: info.name.into(),
            flag: flag.name().into(),
            message,
        })
    };
    let d = ZooConfig::default();
    let cfg = ZooConfig {
        tokens: args.tokens.unwrap_or(d.tokens),
        streams: args.streams.unwrap_or(d.streams),
        hidden: args.hidden.unwrap_or(d.hidden),
        heads: args.heads.unwrap_or(d.heads),
        ffn: args.ffn.or(d.ffn),
        layers: args.layers.unwrap_or(d.layers),
        sinkhorn: args.sinkhorn.unwrap_or(d.sinkhorn),
        iters: args.iters.unwrap_or(d.iters),
        eps: args.eps.or(d.eps),
        norm_eps: args.norm_eps.unwrap_or(d.norm_eps),
        pre_eps: args.pre_eps.unwrap_or(d.pre_eps),
        post_mult: args.post_mult.unwrap_or(d.post_mult),
        layer_fn: args.layer_fn.unwrap_or(d.layer_fn),
        dtype: args.dtype.unwrap_or(d.dtype),
    };
    if !cfg.dtype.is_float() {
        return bad(
            Dtype,
            format!("{} is not supported (f32, bf16, f64)", cfg.dtype),
        );
    }
    for (flag, v) in [
        (Tokens, cfg.tokens),
        (Streams, cfg.streams),
        (Hidden, cfg.hidden),
        (Heads, cfg.heads),
        (Layers, cfg.layers),
    ] {
        if v == 0 {
            return bad(flag, "must be at least 1".into());
        }
    }
    if cfg.ffn == Some(0) {
        return bad(Ffn, "must be at least 1".into());
    }
    if !(1..=1000).contains(&cfg.iters) {
        return bad(Iters, format!("{} is outside 1..=1000", cfg.iters));
    }
    if cfg.layers > 1000 {
        return bad(Layers, format!("{} is more than 1000", cfg.layers));
    }
    if !cfg.hidden.is_multiple_of(cfg.heads) && info.flags.contains(&Heads) {
        return bad(
            Heads,
            format!("{} heads do not divide --hidden {}", cfg.heads, cfg.hidden),
        );
    }
    for (flag, v) in [
        (Eps, cfg.eps.unwrap_or(0.0)),
        (NormEps, cfg.norm_eps),
        (PreEps, cfg.pre_eps),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return bad(flag, format!("{v} is not a finite non-negative number"));
        }
    }
    if !cfg.post_mult.is_finite() {
        return bad(PostMult, format!("{} is not finite", cfg.post_mult));
    }
    // The largest tensor this model's graph holds, checked before building
    // so that absurd sizes give one clear error: the mixes always, the
    // stream and projections where the model has a hidden width, the
    // attention scores and the MLP only in the transformer blocks.
    let (t, n, c, f) = (
        cfg.tokens as u128,
        cfg.streams as u128,
        cfg.hidden as u128,
        cfg.ffn_size() as u128,
    );
    let m = n * (n + 2);
    let takes = |flag: Flag| info.flags.contains(&flag);
    let mut sizes = vec![t * n * n];
    if takes(Hidden) {
        sizes.extend([t * n * c, m * n * c, t * m, c * c]);
    }
    if takes(Heads) {
        sizes.extend([cfg.heads as u128 * t * t, t * f, c * f]);
    }
    let largest = sizes.into_iter().max().unwrap_or(0);
    if largest > u128::from(MAX_ELEMENTS) {
        return bad(
            Tokens,
            format!(
                "these sizes need a tensor of {largest} elements, over the limit of {MAX_ELEMENTS}"
            ),
        );
    }
    Ok(cfg)
}

/// Builds the zoo model `name` with `args`.
pub fn build_model(name: &str, args: &ModelArgs) -> Result<Model> {
    let info = model_info(name)?;
    let cfg = resolve(info, args)?;
    let mut inits = Inits::new();
    let graph_name = name.replace('-', "_");
    let graph = match name {
        "sinkhorn" => sinkhorn_model(&graph_name, &cfg, &mut inits)?,
        "mhc-pre" | "hc-pre" => pre_model(&graph_name, &cfg, name == "mhc-pre", &mut inits)?,
        "mhc-post" => post_model(&graph_name, &cfg, &mut inits)?,
        "mhc-sublayer" => blocks::mhc_sublayer(&graph_name, &cfg, &mut inits)?,
        "mhc-block" => blocks::transformer(&graph_name, &cfg, Connection::Mhc, &mut inits)?,
        "hc-block" => blocks::transformer(&graph_name, &cfg, Connection::Hc, &mut inits)?,
        "residual-block" => {
            blocks::transformer(&graph_name, &cfg, Connection::Residual, &mut inits)?
        }
        _ => unreachable!("every registered model is built above"),
    };
    Ok(Model { graph, inits })
}

fn sinkhorn_model(name: &str, cfg: &ZooConfig, inits: &mut Inits) -> Result<Graph> {
    let b = Builder::new(name);
    let comb = b.input("comb", cfg.dtype, &[cfg.tokens, cfg.streams, cfg.streams]);
    inits.insert(
        "comb".into(),
        Init::Normal {
            mean: 0.0,
            std: 1.0,
        },
    );
    b.output("comb_mix", mhc::sinkhorn(comb, &cfg.sinkhorn_config()));
    b.build()
}

fn pre_model(name: &str, cfg: &ZooConfig, constrained: bool, inits: &mut Inits) -> Result<Graph> {
    let b = Builder::new(name);
    let (t, n, c) = (cfg.tokens, cfg.streams, cfg.hidden);
    let x = b.input("residual", cfg.dtype, &[t, n, c]);
    inits.insert(
        "residual".into(),
        Init::Normal {
            mean: 0.0,
            std: 1.0,
        },
    );
    let p: MixParams<'_> = blocks::mix_params(&b, inits, "", cfg);
    let (li, post, comb) = if constrained {
        mhc::mhc_pre(x, &p, &cfg.mhc())
    } else {
        mhc::hc_pre(x, &p, cfg.norm_eps)
    };
    b.output("layer_input", li);
    b.output("post_mix", post);
    b.output("comb_mix", comb);
    b.build()
}

fn post_model(name: &str, cfg: &ZooConfig, inits: &mut Inits) -> Result<Graph> {
    let b = Builder::new(name);
    let (t, n, c) = (cfg.tokens, cfg.streams, cfg.hidden);
    let f = b.input("layer_output", cfg.dtype, &[t, c]);
    let x = b.input("residual", cfg.dtype, &[t, n, c]);
    let post = b.input("post_mix", cfg.dtype, &[t, n]);
    let comb = b.input("comb_mix", cfg.dtype, &[t, n, n]);
    inits.insert(
        "layer_output".into(),
        Init::Normal {
            mean: 0.0,
            std: 1.0,
        },
    );
    inits.insert(
        "residual".into(),
        Init::Normal {
            mean: 0.0,
            std: 1.0,
        },
    );
    inits.insert(
        "post_mix".into(),
        Init::Uniform {
            low: 0.0,
            high: 2.0,
        },
    );
    inits.insert(
        "comb_mix".into(),
        Init::Uniform {
            low: 0.0,
            high: 0.5,
        },
    );
    b.output("residual_out", mhc::mhc_post(f, x, post, comb));
    b.build()
}
