//! A decoder-only byte-level language model for training, in primitive ops.
//!
//! [`build_lm`] builds the whole training-time forward pass as one graph:
//! one-hot embedding, expansion to `n` residual streams, `L` transformer
//! layers (RMSNorm + causal attention, RMSNorm + SwiGLU MLP) whose
//! sublayers are wrapped by a residual, HC or mHC connection (the zoo's own
//! sublayer code, [`crate::zoo`]), the mean of the streams, a final RMSNorm,
//! the output projection and the mean next-token cross-entropy.
//!
//! Inputs: `tokens: i32[batch, seq]`, `targets: i32[batch, seq]` (data),
//! then the parameters in [`LmGraph::params`] order. Outputs: `loss: []`,
//! then for HC / mHC one `h_res_<i>: [batch·seq, n, n]` per sublayer in
//! depth order (`2·layers` of them): the residual mixing matrix `comb` of
//! `docs/design.md` §2 as the post step uses it,
//! `x_next[t, j] = Σ_i comb[t, i, j] · x[t, i] + post[t, j] · F[t]`.
//!
//! The gates start as the paper's: every `scale` is `α = 0.01`, and each
//! connection's bias is a fixed constant `b0` (see [`gate_bias`]) plus a
//! trained `base` that starts at zero, so that at initialization
//! `pre ≈ 1/n`, `post ≈ 1` and `H_res ≈ 0.95·I` (mHC) or `≈ I` (HC). Since
//! every stream starts as a copy of the embedding, the HC and mHC models
//! then compute almost exactly what the residual model does.
//!
//! ```
//! use birkhoff_dsl::lm::{Connection, LmConfig, build_lm};
//!
//! let cfg = LmConfig { layers: 1, hidden: 16, heads: 2, ffn: 32, batch: 2, seq: 8, ..LmConfig::default() };
//! let lm = build_lm(&cfg)?;
//! assert_eq!(lm.graph.outputs()[0].name, "loss");
//! assert_eq!(lm.graph.outputs().len(), 1 + 2); // loss, h_res_0, h_res_1
//! assert_eq!(lm.params[0], "embed");
//! assert!("hc".parse::<Connection>().is_ok());
//! # Ok::<(), birkhoff_dsl::Error>(())
//! ```

use birkhoff_ir::{DType, Graph, InputKind, MAX_ELEMENTS, Op};

use crate::builder::{Builder, Var};
use crate::error::{Error, Result};
use crate::init::Init;
use crate::nn::rms_norm;
use crate::zoo::ZooConfig;
use crate::zoo::blocks::{Sublayer, connection, layer_fn, mix_params_with, param};
use crate::zoo::mhc::MixParams;

pub use crate::zoo::{Connection, Inits};

/// The initial value of every gate `scale` (the paper's `α`).
pub const GATE_SCALE_INIT: f64 = 0.01;

/// The initial diagonal weight of mHC's `H_res`, before Sinkhorn's `eps`.
pub const MHC_RES_DIAGONAL: f64 = 0.95;

/// Standard deviation of the output projection's initial weights (small,
/// so that the initial loss is close to `ln(vocab)`).
pub const UNEMBED_STD: f64 = 0.02;

/// The sizes and connection of a language model.
#[derive(Clone, Debug, PartialEq)]
pub struct LmConfig {
    /// How each sublayer is connected to the residual stream.
    pub connection: Connection,
    /// Transformer layers (each an attention and an MLP sublayer).
    pub layers: usize,
    /// Hidden width `C`.
    pub hidden: usize,
    /// Residual streams `n` (ignored, taken as 1, for the residual model).
    pub streams: usize,
    /// Attention heads; must divide `hidden`.
    pub heads: usize,
    /// SwiGLU inner width.
    pub ffn: usize,
    /// Vocabulary size (256 for bytes).
    pub vocab: usize,
    /// Sequences per batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Sinkhorn rounds of mHC (DeepSeek's `tilekernels` variant, `eps = 1e-6`).
    pub sinkhorn_iters: usize,
    /// Element type of the weights and activations (a float type).
    pub dtype: DType,
}

impl Default for LmConfig {
    fn default() -> Self {
        LmConfig {
            connection: Connection::Mhc,
            layers: 2,
            hidden: 64,
            streams: 4,
            heads: 4,
            ffn: 256,
            vocab: 256,
            batch: 4,
            seq: 64,
            sinkhorn_iters: 20,
            dtype: DType::F32,
        }
    }
}

impl LmConfig {
    /// The number of residual streams the model has: `streams`, or 1 for
    /// the residual model.
    pub fn stream_count(&self) -> usize {
        match self.connection {
            Connection::Residual => 1,
            Connection::Hc | Connection::Mhc => self.streams,
        }
    }

    /// The zoo settings the sublayers are built with.
    fn zoo(&self) -> ZooConfig {
        ZooConfig {
            tokens: self.batch * self.seq,
            streams: self.stream_count(),
            hidden: self.hidden,
            heads: self.heads,
            ffn: Some(self.ffn),
            layers: self.layers,
            iters: self.sinkhorn_iters,
            dtype: self.dtype,
            ..ZooConfig::default()
        }
    }
}

/// A built language model.
#[derive(Clone, Debug)]
pub struct LmGraph {
    /// The forward pass and loss: verified, primitive ops only.
    pub graph: Graph,
    /// Every trainable parameter (the graph's `Param` inputs), in the
    /// graph's input order.
    pub params: Vec<String>,
    /// How to initialize each parameter.
    pub inits: Inits,
}

/// The fixed part `b0 [n(n+2)]` of a connection's gate bias (the graph
/// adds the trained `base`, which starts at zero), laid out like `base`:
/// `n` pre gates, `n` post gates, then `H_res` row-major.
///
/// * mHC: pre `ln(1/(n−1))`, so `sigmoid = 1/n`; post 0, so
///   `2·sigmoid = 1`; `H_res` logits `ln(19(n−1))` on the diagonal and 0
///   off it, so its softmax rows (already doubly stochastic) are
///   `0.95` on the diagonal and `0.05/(n−1)` elsewhere.
/// * HC: pre `1/n`, post 1, `H_res = I`.
/// * residual: empty.
///
/// `n` must be at least 2 for mHC.
pub fn gate_bias(connection: Connection, n: usize) -> Vec<f64> {
    let m = n * (n + 2);
    let (pre, post, diag) = match connection {
        Connection::Residual => return Vec::new(),
        Connection::Hc => (1.0 / n as f64, 1.0, 1.0),
        Connection::Mhc => {
            let rest = (n as f64 - 1.0).max(f64::MIN_POSITIVE);
            let diag = (MHC_RES_DIAGONAL / (1.0 - MHC_RES_DIAGONAL) * rest).ln();
            (-rest.ln(), 0.0, diag)
        }
    };
    let mut b = vec![0.0; m];
    b[..n].fill(pre);
    b[n..2 * n].fill(post);
    for i in 0..n {
        b[2 * n + i * n + i] = diag;
    }
    b
}

/// The mean next-token cross-entropy `[]` of `logits [T, V]` against
/// `targets: i32 [T]`: `mean_t(log Σ_v exp(z[t, v]) − z[t, targets[t]])`
/// with `z = logits − max_v logits` (so no `exp` overflows), the target
/// picked by a one-hot product.
#[track_caller]
pub fn cross_entropy<'b>(logits: Var<'b>, targets: Var<'b>) -> Var<'b> {
    if logits.id.is_none() || targets.id.is_none() {
        return logits.b.poisoned();
    }
    let s = logits.shape();
    if s.len() != 2 || targets.shape() != [s[0]] {
        logits.b.error(format!(
            "cross_entropy needs logits [T, V] and targets [T], got {s:?} and {:?}",
            targets.shape()
        ));
        return logits.b.poisoned();
    }
    let z = logits - logits.max_over(&[1], true);
    let lse = z.exp().sum(&[1], false).log();
    let picked = (one_hot(targets, s[1], logits.dtype()) * z).sum(&[1], false);
    (lse - picked).mean(&[0], false)
}

/// `ids: i32 [T]` as rows of a `[T, classes]` matrix of `dtype`, 1 in
/// column `ids[t]` and 0 elsewhere (all 0 for an id out of range).
#[track_caller]
pub fn one_hot<'b>(ids: Var<'b>, classes: usize, dtype: DType) -> Var<'b> {
    let t = ids.shape().first().copied().unwrap_or(0);
    let column = ids.b.iota(DType::I32, &[t, classes], 1);
    ids.reshape(&[t, 1]).cmp_eq(column).cast(dtype)
}

fn check(cfg: &LmConfig) -> Result<()> {
    let bad = |flag: &str, message: String| {
        Err(Error::BadFlag {
            model: "lm".into(),
            flag: flag.into(),
            message,
        })
    };
    if !cfg.dtype.is_float() {
        return bad(
            "dtype",
            format!("{} is not supported (f32, bf16, f64)", cfg.dtype),
        );
    }
    for (flag, v) in [
        ("layers", cfg.layers),
        ("hidden", cfg.hidden),
        ("heads", cfg.heads),
        ("ffn", cfg.ffn),
        ("vocab", cfg.vocab),
        ("batch", cfg.batch),
        ("seq", cfg.seq),
    ] {
        if v == 0 {
            return bad(flag, "must be at least 1".into());
        }
    }
    if cfg.connection != Connection::Residual && cfg.streams < 2 {
        return bad(
            "streams",
            format!(
                "{} connections need at least 2 streams, got {}",
                cfg.connection, cfg.streams
            ),
        );
    }
    if !cfg.hidden.is_multiple_of(cfg.heads) {
        return bad(
            "heads",
            format!("{} heads do not divide --hidden {}", cfg.heads, cfg.hidden),
        );
    }
    if !(1..=1000).contains(&cfg.sinkhorn_iters) {
        return bad(
            "iters",
            format!("{} is outside 1..=1000", cfg.sinkhorn_iters),
        );
    }
    if cfg.layers > 1000 {
        return bad("layers", format!("{} is more than 1000", cfg.layers));
    }
    // The largest tensor the graph holds, checked before building.
    let u = |x: usize| x as u128;
    let (t, n, c, v) = (
        u(cfg.batch) * u(cfg.seq),
        u(cfg.stream_count()),
        u(cfg.hidden),
        u(cfg.vocab),
    );
    let largest = [
        t * v,
        v * c,
        t * n * c,
        n * (n + 2) * n * c,
        t * u(cfg.ffn),
        c * u(cfg.ffn),
        u(cfg.heads) * t * u(cfg.seq),
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    if largest > u128::from(MAX_ELEMENTS) {
        return bad(
            "seq",
            format!(
                "these sizes need a tensor of {largest} elements, over the limit of {MAX_ELEMENTS}"
            ),
        );
    }
    Ok(())
}

/// The gates of one HC / mHC connection as the paper initializes them:
/// `fn` small random, `scale = α`, bias `b0 + base` with `base = 0`.
#[track_caller]
fn gates<'b>(
    b: &'b Builder,
    inits: &mut Inits,
    prefix: &str,
    zoo: &ZooConfig,
    connection: Connection,
) -> MixParams<'b> {
    let n = zoo.streams;
    let mut p = mix_params_with(
        b,
        inits,
        prefix,
        zoo,
        Init::Constant(GATE_SCALE_INIT),
        Init::Constant(0.0),
    );
    let b0 = b.constant(&gate_bias(connection, n), zoo.dtype, &[n * (n + 2)]);
    p.base = p.base + b0;
    p
}

/// Builds the language model of `cfg`; see the [module docs](self).
///
/// Parameters, in order: `embed [vocab, C]`, then per layer `l` and
/// sublayer `s` in `attn`, `mlp` (prefix `layer{l}.{s}.`): for HC / mHC
/// `fn`, `scale`, `base`; then `norm` and `wq`, `wk`, `wv`, `wo` (attention)
/// or `w_gate`, `w_up`, `w_down` (MLP); last `final_norm [C]` and
/// `unembed [C, vocab]`.
pub fn build_lm(cfg: &LmConfig) -> Result<LmGraph> {
    check(cfg)?;
    let zoo = cfg.zoo();
    let (batch, t, n, c, v, d) = (
        cfg.batch,
        cfg.batch * cfg.seq,
        cfg.stream_count(),
        cfg.hidden,
        cfg.vocab,
        cfg.dtype,
    );
    let b = Builder::new("lm");
    let mut inits = Inits::new();
    let tokens = b.input("tokens", DType::I32, &[batch, cfg.seq]);
    let targets = b.input("targets", DType::I32, &[batch, cfg.seq]);

    let embed = param(
        &b,
        &mut inits,
        "embed",
        d,
        &[v, c],
        Init::Normal {
            mean: 0.0,
            std: 1.0,
        },
    );
    let e = one_hot(tokens.reshape(&[t]), v, d).matmul(embed);
    // Every stream starts as a copy of the embedding.
    let mut x = match cfg.connection {
        Connection::Residual => e,
        Connection::Hc | Connection::Mhc => e.reshape(&[t, 1, c]).broadcast_to(&[t, n, c]),
    };
    let mut h_res = Vec::new();
    for l in 0..cfg.layers {
        for (name, which) in [("attn", Sublayer::Attention), ("mlp", Sublayer::Mlp)] {
            let prefix = format!("layer{l}.{name}.");
            let mix = match cfg.connection {
                Connection::Residual => None,
                conn => Some(gates(&b, &mut inits, &prefix, &zoo, conn)),
            };
            let f = |u| layer_fn(&b, &mut inits, &zoo, &prefix, which, batch, u);
            let (next, comb) = connection(&zoo, cfg.connection, mix.as_ref(), x, f);
            x = next;
            h_res.extend(comb);
        }
    }
    let last = match cfg.connection {
        Connection::Residual => x,
        Connection::Hc | Connection::Mhc => x.mean(&[1], false),
    };
    let final_norm = param(&b, &mut inits, "final_norm", d, &[c], Init::Constant(1.0));
    let unembed = param(
        &b,
        &mut inits,
        "unembed",
        d,
        &[c, v],
        Init::Normal {
            mean: 0.0,
            std: UNEMBED_STD,
        },
    );
    let logits = rms_norm(last, Some(final_norm), zoo.norm_eps).matmul(unembed);
    b.output("loss", cross_entropy(logits, targets.reshape(&[t])));
    for (i, comb) in h_res.into_iter().enumerate() {
        b.output(&format!("h_res_{i}"), comb);
    }
    let graph = b.build()?;
    let params = graph
        .inputs()
        .iter()
        .filter_map(|&id| match &graph.node(id).op {
            Op::Input {
                name,
                kind: InputKind::Param,
                ..
            } => Some(name.clone()),
            _ => None,
        })
        .collect();
    Ok(LmGraph {
        graph,
        params,
        inits,
    })
}
