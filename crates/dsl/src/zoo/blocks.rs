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

/// The `fn`, `scale` and `base` of one connection, named `{prefix}fn` etc.
#[track_caller]
pub(crate) fn mix_params<'b>(
    b: &'b Builder,
    inits: &mut Inits,
    prefix: &str,
    cfg: &ZooConfig,
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
        scale: param(
            b,
            inits,
            &format!("{prefix}scale"),
            d,
            &[3],
            Init::Uniform {
                low: 0.5,
                high: 1.5,
            },
        ),
        base: param(b, inits, &format!("{prefix}base"), d, &[m], normal(1.0)),
    }
}

/// The two layer functions of a transformer layer, on `u [T, C]`.
#[derive(Clone, Copy)]
enum Sublayer {
    Attention,
    Mlp,
}

#[track_caller]
fn layer_fn<'b>(
    b: &'b Builder,
    inits: &mut Inits,
    cfg: &ZooConfig,
    prefix: &str,
    which: Sublayer,
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
            let a = causal_attention(linear(h, wq), linear(h, wk), linear(h, wv), cfg.heads);
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
    match conn {
        Connection::Residual => x + layer_fn(b, inits, cfg, prefix, which, x),
        Connection::Hc | Connection::Mhc => {
            let p = mix_params(b, inits, prefix, cfg);
            let (u, post, comb) = match conn {
                Connection::Mhc => mhc_pre(x, &p, &cfg.mhc()),
                _ => hc_pre(x, &p, cfg.norm_eps),
            };
            let f = layer_fn(b, inits, cfg, prefix, which, u);
            mhc_post(f, x, post, comb)
        }
    }
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
