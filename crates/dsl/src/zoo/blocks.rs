//! Whole sublayers and transformer blocks built from the mHC pieces.

use birkhoff_ir::DType;

use crate::builder::{Builder, Var};
use crate::init::Init;
use crate::nn::{causal_attention, linear, rms_norm, silu};
use crate::zoo::mhc::{MhcConfig, MixParams, hc_pre, mhc_post, mhc_pre};
use crate::zoo::{Connection, Inits, ZooConfig};

fn normal(std: f64) -> Init {
    Init::Normal { mean: 0.0, std }
}

/// Declares a parameter and records how to initialize it.
#[track_caller]
pub(crate) fn param<'b>(
    b: &'b Builder,
    inits: &mut Inits,
    name: &str,
    dtype: DType,
    shape: &[usize],
    init: Init,
) -> Var<'b> {
    inits.insert(name.to_string(), init);
    b.param(name, dtype, shape)
}

/// The `fn`, `scale` and `base` of one connection, named `{prefix}fn` etc.,
/// with the zoo's random initialization (gates far from their rest point,
/// so tests exercise every branch).
#[track_caller]
pub(crate) fn mix_params<'b>(
    b: &'b Builder,
    inits: &mut Inits,
    prefix: &str,
    cfg: &ZooConfig,
) -> MixParams<'b> {
    let scale = Init::Uniform {
        low: 0.5,
        high: 1.5,
    };
    mix_params_with(b, inits, prefix, cfg, scale, normal(1.0))
}

/// The `fn`, `scale` and `base` of one connection, named `{prefix}fn` etc.:
/// `fn` drawn with std `1/sqrt(n·C)` (so each mix has unit scale), `scale`
/// and `base` as given.
#[track_caller]
pub(crate) fn mix_params_with<'b>(
    b: &'b Builder,
    inits: &mut Inits,
    prefix: &str,
    cfg: &ZooConfig,
    scale: Init,
    base: Init,
) -> MixParams<'b> {
    let (n, c, d) = (cfg.streams, cfg.hidden, cfg.dtype);
    let m = n * (n + 2);
    MixParams {
        proj: param(
            b,
            inits,
            &format!("{prefix}fn"),
            d,
            &[m, n * c],
            normal(1.0 / ((n * c) as f64).sqrt()),
        ),
        scale: param(b, inits, &format!("{prefix}scale"), d, &[3], scale),
        base: param(b, inits, &format!("{prefix}base"), d, &[m], base),
    }
}

/// The two layer functions of a transformer layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sublayer {
    /// RMSNorm, then multi-head causal self-attention.
    Attention,
    /// RMSNorm, then a SwiGLU MLP.
    Mlp,
}

/// The layer function `F` on `u [T, C]`, where the `T` tokens are `seqs`
/// independent sequences of `T / seqs` tokens each (attention stays within
/// a sequence); parameters are named `{prefix}norm`, `{prefix}wq`, ….
#[track_caller]
pub(crate) fn layer_fn<'b>(
    b: &'b Builder,
    inits: &mut Inits,
    cfg: &ZooConfig,
    prefix: &str,
    which: Sublayer,
    seqs: usize,
    u: Var<'b>,
) -> Var<'b> {
    let c = cfg.hidden;
    let norm = param(
        b,
        inits,
        &format!("{prefix}norm"),
        cfg.dtype,
        &[c],
        Init::Constant(1.0),
    );
    let h = rms_norm(u, Some(norm), cfg.norm_eps);
    let w = |inits: &mut Inits, name: &str, rows: usize, cols: usize| {
        param(
            b,
            inits,
            &format!("{prefix}{name}"),
            cfg.dtype,
            &[rows, cols],
            normal(1.0 / (rows as f64).sqrt()),
        )
    };
    match which {
        Sublayer::Attention => {
            let (wq, wk, wv, wo) = (
                w(inits, "wq", c, c),
                w(inits, "wk", c, c),
                w(inits, "wv", c, c),
                w(inits, "wo", c, c),
            );
            let (q, k, v) = (linear(h, wq), linear(h, wk), linear(h, wv));
            let a = if seqs == 1 {
                causal_attention(q, k, v, cfg.heads)
            } else {
                let t = u.shape().first().copied().unwrap_or(0);
                let split = |x: Var<'b>| x.reshape(&[seqs, t / seqs.max(1), c]);
                causal_attention(split(q), split(k), split(v), cfg.heads).reshape(&[t, c])
            };
            linear(a, wo)
        }
        Sublayer::Mlp => {
            let f = cfg.ffn_size();
            let (wg, wu, wd) = (
                w(inits, "w_gate", c, f),
                w(inits, "w_up", c, f),
                w(inits, "w_down", f, c),
            );
            linear(silu(linear(h, wg)) * linear(h, wu), wd)
        }
    }
}

/// `x` wrapped around the layer function `f` by the connection `conn`; `x`
/// is `[T, n, C]` (`[T, C]` for the plain residual) and `mix` the
/// connection's weights (`None` for the residual). Returns the next stream
/// and, for HC / mHC, the residual mixing matrix `comb [T, n, n]` the post
/// step mixes the streams with.
#[track_caller]
pub(crate) fn connection<'b>(
    cfg: &ZooConfig,
    conn: Connection,
    mix: Option<&MixParams<'b>>,
    x: Var<'b>,
    f: impl FnOnce(Var<'b>) -> Var<'b>,
) -> (Var<'b>, Option<Var<'b>>) {
    match (conn, mix) {
        (Connection::Hc | Connection::Mhc, Some(p)) => {
            let (u, post, comb) = match conn {
                Connection::Mhc => mhc_pre(x, p, &cfg.mhc()),
                _ => hc_pre(x, p, cfg.norm_eps),
            };
            (mhc_post(f(u), x, post, comb), Some(comb))
        }
        _ => (x + f(x), None),
    }
}

/// One sublayer wrapped in the chosen connection; `x` is `[T, n, C]`
/// (`[T, C]` for the plain residual).
#[track_caller]
fn connect<'b>(
    b: &'b Builder,
    inits: &mut Inits,
    cfg: &ZooConfig,
    conn: Connection,
    prefix: &str,
    which: Sublayer,
    x: Var<'b>,
) -> Var<'b> {
    let mix = match conn {
        Connection::Residual => None,
        Connection::Hc | Connection::Mhc => Some(mix_params(b, inits, prefix, cfg)),
    };
    let f = |u| layer_fn(b, inits, cfg, prefix, which, 1, u);
    connection(cfg, conn, mix.as_ref(), x, f).0
}

/// `layers` transformer layers (attention, then MLP), each sublayer wrapped
/// in `conn`; parameters are named `layer{i}.attn.*` and `layer{i}.mlp.*`.
pub(crate) fn transformer(
    name: &str,
    cfg: &ZooConfig,
    conn: Connection,
    inits: &mut Inits,
) -> crate::Result<birkhoff_ir::Graph> {
    let b = Builder::new(name);
    let (t, n, c) = (cfg.tokens, cfg.streams, cfg.hidden);
    let mut x = match conn {
        Connection::Residual => b.input("residual", cfg.dtype, &[t, c]),
        _ => b.input("residual", cfg.dtype, &[t, n, c]),
    };
    inits.insert("residual".into(), normal(1.0));
    for l in 0..cfg.layers {
        x = connect(
            &b,
            inits,
            cfg,
            conn,
            &format!("layer{l}.attn."),
            Sublayer::Attention,
            x,
        );
        x = connect(
            &b,
            inits,
            cfg,
            conn,
            &format!("layer{l}.mlp."),
            Sublayer::Mlp,
            x,
        );
    }
    b.output("residual_out", x);
    b.build()
}

/// pre → F → post for one sublayer with a simple F.
pub(crate) fn mhc_sublayer(
    name: &str,
    cfg: &ZooConfig,
    inits: &mut Inits,
) -> crate::Result<birkhoff_ir::Graph> {
    let b = Builder::new(name);
    let (t, n, c) = (cfg.tokens, cfg.streams, cfg.hidden);
    let x = b.input("residual", cfg.dtype, &[t, n, c]);
    inits.insert("residual".into(), normal(1.0));
    let p = mix_params(&b, inits, "", cfg);
    let (u, post, comb) = mhc_pre(x, &p, &cfg.mhc());
    let f = match cfg.layer_fn {
        super::LayerFn::Identity => u,
        super::LayerFn::LinearTanh => {
            let w = param(
                &b,
                inits,
                "w",
                cfg.dtype,
                &[c, c],
                normal(1.0 / (c as f64).sqrt()),
            );
            u.matmul(w).tanh()
        }
    };
    b.output("residual_out", mhc_post(f, x, post, comb));
    b.build()
}

impl ZooConfig {
    /// The mHC settings implied by the flags.
    pub fn mhc(&self) -> MhcConfig {
        MhcConfig {
            norm_eps: self.norm_eps,
            pre_eps: self.pre_eps,
            post_mult: self.post_mult,
            sinkhorn: self.sinkhorn_config(),
        }
    }
}
