//! The closed set of graph operations.
//!
//! Every op the compiler knows is a variant of [`Op`], grouped by family.
//! Algebraic facts are queries on the enum ([`Op::is_elementwise`],
//! [`Op::is_commutative`], …) so that passes ask them instead of keeping
//! their own lists. [`OpKind`] names each variant without its attributes,
//! and every list of ops (the parser's plain ops, the test generators') is
//! derived from [`OpKind::ALL`]. Adding an op is described in
//! `docs/adding-an-op.md`.

use crate::literal::Literal;
use crate::types::{DType, TensorType, Type};

/// Whether a graph input is data (activations, fed per call) or a parameter
/// (weights: trainable, usually constant across calls).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputKind {
    /// Per-call data.
    Data,
    /// A weight.
    Param,
}

/// A float attribute (an epsilon, a multiplier), compared and hashed by
/// its bits so that ops stay `Eq` and `Hash`.
#[derive(Clone, Copy, Debug)]
pub struct FloatAttr(pub f64);

impl FloatAttr {
    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }

    /// The value rounded to `dtype`, as a constant of a computation in
    /// `dtype` holds it.
    pub fn rounded_to(self, dtype: DType) -> FloatAttr {
        FloatAttr(dtype.round(self.0))
    }
}

impl PartialEq for FloatAttr {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for FloatAttr {}

impl std::hash::Hash for FloatAttr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

impl PartialOrd for FloatAttr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FloatAttr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.to_bits().cmp(&other.0.to_bits())
    }
}

/// Which Sinkhorn-Knopp iteration (`docs/design.md` §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SinkhornVariant {
    /// The paper's: `exp`, then `iters` rounds of row- then column-normalization.
    Paper,
    /// DeepSeek's released kernels: `softmax + eps`, column-normalize, then
    /// `iters - 1` rounds of row- then column-normalization.
    TileKernels,
}

impl SinkhornVariant {
    /// The text spelling.
    pub fn name(self) -> &'static str {
        match self {
            SinkhornVariant::Paper => "paper",
            SinkhornVariant::TileKernels => "tilekernels",
        }
    }

    /// The default `eps`: 0 for `paper`, 1e-6 for `tilekernels`.
    pub fn default_eps(self) -> f64 {
        match self {
            SinkhornVariant::Paper => 0.0,
            SinkhornVariant::TileKernels => 1e-6,
        }
    }
}

impl std::str::FromStr for SinkhornVariant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "paper" => Ok(SinkhornVariant::Paper),
            "tilekernels" => Ok(SinkhornVariant::TileKernels),
            _ => Err(format!(
                "'{s}' is not a Sinkhorn variant (paper, tilekernels)"
            )),
        }
    }
}

/// Largest Sinkhorn round count an op may carry.
pub const MAX_SINKHORN_ITERS: usize = 10_000;

/// The settings of one Sinkhorn projection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SinkhornSpec {
    /// Which iteration.
    pub variant: SinkhornVariant,
    /// Rounds (`paper`) or the repeat count (`tilekernels`); at least 1.
    pub iters: usize,
    /// Added to every normalizing denominator (and to the softmax in `tilekernels`).
    pub eps: FloatAttr,
}

impl SinkhornSpec {
    /// The same settings with `eps` rounded to `dtype`: the constant a
    /// projection computing in `dtype` uses (see [`PreMixSpec::rounded_to`]).
    pub fn rounded_to(self, dtype: DType) -> Self {
        SinkhornSpec {
            eps: self.eps.rounded_to(dtype),
            ..self
        }
    }
}

/// The attributes of an mHC pre-mix (`docs/design.md` §2), shared by `mhc_pre`,
/// `mhc_pre_projected` and `mhc_pre_grad`. In text they read
/// `norm_eps=…, pre_eps=…, post_mult=…` followed by the Sinkhorn settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PreMixSpec {
    /// RMS epsilon of pre_norm_fn.
    pub norm_eps: FloatAttr,
    /// Added to the sigmoid pre gates.
    pub pre_eps: FloatAttr,
    /// Multiplies the sigmoid post gates.
    pub post_mult: FloatAttr,
    /// The projection of the residual mix.
    pub sinkhorn: SinkhornSpec,
}

impl PreMixSpec {
    /// The gates these attributes give: always [`PreMixGates::Constrained`].
    pub fn gates(&self) -> PreMixGates {
        PreMixGates::Constrained {
            pre_eps: self.pre_eps,
            post_mult: self.post_mult,
            sinkhorn: self.sinkhorn,
        }
    }

    /// The same attributes, each float rounded to `dtype`: the constants of
    /// a pre-mix computing in `dtype` (`f32` for `f32` and `bf16` ops, as the
    /// constants it was recognized from were).
    pub fn rounded_to(self, dtype: DType) -> Self {
        PreMixSpec {
            norm_eps: self.norm_eps.rounded_to(dtype),
            pre_eps: self.pre_eps.rounded_to(dtype),
            post_mult: self.post_mult.rounded_to(dtype),
            sinkhorn: self.sinkhorn.rounded_to(dtype),
        }
    }
}

/// How a pre-mix turns its mixes `z` (scaled per segment, plus `base`)
/// into the pre gates, the post gates and the residual mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PreMixGates {
    /// mHC (`mhc_pre`, `mhc_pre_projected`): `pre = σ(z) + pre_eps`,
    /// `post = σ(z)·post_mult` and a Sinkhorn-projected residual mix.
    Constrained {
        /// Added to the sigmoid pre gates.
        pre_eps: FloatAttr,
        /// Multiplies the sigmoid post gates.
        post_mult: FloatAttr,
        /// The projection of the residual mix.
        sinkhorn: SinkhornSpec,
    },
    /// HC (`hc_pre`): every gate is `scale · tanh(mixes) + base`, with no
    /// projection.
    Unconstrained,
}

impl PreMixGates {
    /// The same gates, each float rounded to `dtype` (see
    /// [`PreMixSpec::rounded_to`]).
    pub fn rounded_to(self, dtype: DType) -> Self {
        match self {
            PreMixGates::Constrained {
                pre_eps,
                post_mult,
                sinkhorn,
            } => PreMixGates::Constrained {
                pre_eps: pre_eps.rounded_to(dtype),
                post_mult: post_mult.rounded_to(dtype),
                sinkhorn: sinkhorn.rounded_to(dtype),
            },
            PreMixGates::Unconstrained => PreMixGates::Unconstrained,
        }
    }
}

impl SinkhornSpec {
    /// How the projection is computed: as specified, except that `paper`
    /// with `eps = 0` is computed as `tilekernels` with `eps = 0`. The two
    /// are the same function — the paper's first row normalization of
    /// `exp(x)` is a softmax over the rows — and the softmax subtracts
    /// each row's maximum first, so logits large enough to overflow `exp`
    /// still give the right answer. With `eps > 0` the variants differ and
    /// each is computed as written.
    pub fn computed_as(&self) -> SinkhornVariant {
        match self.variant {
            SinkhornVariant::Paper if self.eps.get() == 0.0 => SinkhornVariant::TileKernels,
            v => v,
        }
    }
}

/// One graph operation with its attributes.
///
/// Operands are not part of the op; they are the node's `args`. Every
/// attribute that decides the result type is carried here, so the type of
/// a node follows from its op and its operands' types alone
/// ([`crate::infer_type`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    // ---- leaves ---------------------------------------------------------
    /// A graph input; `name` is how callers and `.npy` files refer to it.
    Input {
        /// External name, unique in the graph.
        name: String,
        /// Data or parameter.
        kind: InputKind,
        /// Its type.
        ty: TensorType,
    },
    /// A constant tensor.
    Const(Literal),
    /// `out[i_0, …, i_r] = i_axis`.
    Iota {
        /// The axis whose index is the value.
        axis: usize,
        /// Result type (numeric).
        ty: TensorType,
    },

    // ---- elementwise unary -------------------------------------------------
    /// `-x`.
    Neg,
    /// `|x|`.
    Abs,
    /// `e^x`.
    Exp,
    /// Natural logarithm.
    Log,
    /// Square root.
    Sqrt,
    /// `1 / sqrt(x)`.
    Rsqrt,
    /// `1 / x`.
    Recip,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Logical not (bool only).
    Not,

    // ---- elementwise binary ------------------------------------------------
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b` (floats only).
    Div,
    /// Larger operand; NaN if either is NaN.
    Max,
    /// Smaller operand; NaN if either is NaN.
    Min,
    /// `a ^ b` (floats only).
    Pow,
    /// `a == b`, bool result.
    Eq,
    /// `a != b`, bool result.
    Ne,
    /// `a < b`, bool result.
    Lt,
    /// `a <= b`, bool result.
    Le,
    /// `a > b`, bool result.
    Gt,
    /// `a >= b`, bool result.
    Ge,
    /// Logical and (bool only).
    And,
    /// Logical or (bool only).
    Or,

    // ---- elementwise ternary -----------------------------------------------
    /// `cond ? a : b`, elementwise.
    Select,

    // ---- reductions --------------------------------------------------------
    /// Sum over `axes`.
    ReduceSum {
        /// Reduced axes, distinct.
        axes: Vec<usize>,
        /// Keep reduced axes as size 1.
        keepdims: bool,
    },
    /// Maximum over `axes`; NaN if any element is NaN.
    ReduceMax {
        /// Reduced axes, distinct.
        axes: Vec<usize>,
        /// Keep reduced axes as size 1.
        keepdims: bool,
    },

    // ---- movement ----------------------------------------------------------
    /// Same elements in row-major order, new shape.
    Reshape {
        /// Result shape; same element count.
        shape: Vec<usize>,
    },
    /// `out[i_perm[0], …] = x[i_0, …]`: result axis `k` is input axis `perm[k]`.
    Permute {
        /// A permutation of `0..rank`.
        perm: Vec<usize>,
    },
    /// NumPy-style broadcast: dimensions align at the right; an input
    /// dimension of 1 stretches, missing leading dimensions are added.
    Broadcast {
        /// Result shape.
        shape: Vec<usize>,
    },
    /// The box `start[k] <= i_k < end[k]`.
    Slice {
        /// First index per axis.
        start: Vec<usize>,
        /// One past the last index per axis.
        end: Vec<usize>,
    },
    /// Operands joined along `axis`.
    Concat {
        /// The joined axis.
        axis: usize,
    },

    // ---- contraction -------------------------------------------------------
    /// Batched matrix product `[..., M, K] x [..., K, N] -> [..., M, N]`;
    /// batch dimensions must be equal.
    MatMul,

    // ---- conversion --------------------------------------------------------
    /// Element type conversion, rounding as a store of the target type does.
    Cast {
        /// Target element type.
        dtype: DType,
    },

    // ---- semantic ops (found by the optimizer) -----------------------------
    /// `x / (sum(x, last axis) + eps)`: every row sums to 1 (up to eps).
    RowNorm {
        /// Added to the denominator.
        eps: FloatAttr,
    },
    /// `x / (sum(x, axis rank-2) + eps)`: every column sums to 1 (up to eps).
    ColNorm {
        /// Added to the denominator.
        eps: FloatAttr,
    },
    /// `exp(x - max) / sum(exp(x - max))` along `axis`.
    Softmax {
        /// The normalized axis.
        axis: usize,
    },
    /// `x · rsqrt(sum(x², last axis) / N + eps)`, no weight.
    RmsNorm {
        /// Added to the mean square.
        eps: FloatAttr,
    },
    /// Sinkhorn-Knopp projection of `[..., n, n]` logits (rows are the last axis).
    Sinkhorn(SinkhornSpec),

    // ---- fused backward ops ------------------------------------------------
    /// The vector-Jacobian product of `sinkhorn`: operands `(x, dy)`, both
    /// `[..., n, n]` of one float type, with `x` the Sinkhorn *input* logits
    /// and `dy` the cotangent of its output; the result is `dx` (same type).
    /// It recomputes the forward rounds from `x` exactly as `sinkhorn` does
    /// and back-propagates `dy` through each normalization in reverse, so a
    /// backward pass keeps only `x` alive, not every round.
    SinkhornGrad(SinkhornSpec),
    /// The vector-Jacobian product of `mhc_post`: operands
    /// `(f [T,C], x [T,n,C], post [T,n], comb [T,n,n], d_out [T,n,C])` of
    /// one float type, the first four `mhc_post`'s operands and `d_out` the
    /// cotangent of its result; the result is the tuple of the four
    /// operands' cotangents `(d_f [T,C], d_x [T,n,C], d_post [T,n],
    /// d_comb [T,n,n])`:
    /// `d_f[t,c] = Σ_j post[t,j]·d_out[t,j,c]`,
    /// `d_x[t,i,c] = Σ_j comb[t,i,j]·d_out[t,j,c]`,
    /// `d_post[t,j] = Σ_c d_out[t,j,c]·f[t,c]`,
    /// `d_comb[t,i,j] = Σ_c x[t,i,c]·d_out[t,j,c]`. One kernel reads each
    /// token's `x`, `f` and `d_out` once for all four.
    MhcPostGrad,
    /// The vector-Jacobian product of `mhc_pre`, with its attributes:
    /// operands `(x [T,n,C], fn [m,nC], scale [3], base [m], d_layer_input
    /// [T,C], d_post [T,n], d_comb [T,n,n])` of one float type, the first
    /// four `mhc_pre`'s operands and the rest the cotangents of its three
    /// results; the result is the tuple of the four operands' cotangents
    /// `(d_x [T,n,C], d_fn [m,nC], d_scale [3], d_base [m])`. It recomputes
    /// the forward per token from `x` (RMS factor, projection, gates,
    /// Sinkhorn) and back-propagates through apply_mix, the gates, the
    /// Sinkhorn rounds (as `sinkhorn_grad`), the projection and the RMS
    /// factor.
    MhcPreGrad(PreMixSpec),

    // ---- fused mHC ops -----------------------------------------------------
    /// The whole mHC pre-mix of `docs/design.md` §2 (pre_norm_fn, split, Sinkhorn,
    /// apply_mix): `(x [T,n,C], fn [m,nC], scale [3], base [m])` with
    /// `m = n(n+2)` to the tuple `(layer_input [T,C], post_mix [T,n], comb_mix [T,n,n])`.
    MhcPre(PreMixSpec),
    /// `mhc_pre`'s projection on its own: `(x [T,n,C], fn [m,nC])` to
    /// `mixes [T,m] = x·fnᵀ` (each token's `n·C` row against each row of
    /// `fn`), before the RMS factor; `f32` for `bf16` operands, as inside
    /// `mhc_pre`. `mhc_pre_projected(x, mhc_project(x, fn), scale, base)`
    /// computes what `mhc_pre(x, fn, scale, base)` does. The recomputation
    /// planner splits a pre-mix this way so that the backward pass can
    /// replay it from `x` and the kept `mixes` without the matrix product.
    MhcProject,
    /// `mhc_pre` given its projection: `(x [T,n,C], mixes [T,m], scale
    /// [3], base [m])` with `mixes` what `mhc_project(x, fn)` computes;
    /// `mhc_pre`'s attributes and results.
    MhcPreProjected(PreMixSpec),
    /// The unconstrained HC pre-mix (tanh gates, no projection); same
    /// operands and results as `mhc_pre`.
    HcPre {
        /// RMS epsilon of pre_norm_fn.
        norm_eps: FloatAttr,
    },
    /// The post-mix: `(layer_output [T,C], residual [T,n,C], post_mix [T,n], comb_mix [T,n,n])`
    /// to `residual_out[t,j,c] = post[t,j]·f[t,c] + Σ_i comb[t,i,j]·x[t,i,c]`.
    MhcPost,
    /// Element `index` of a tuple value.
    Get {
        /// Which element.
        index: usize,
    },
}

/// Declares [`OpKind`], [`OpKind::ALL`], [`OpKind::mnemonic`],
/// [`OpKind::sample`], [`OpKind::plain`] and [`Op::kind`] from one list of
/// [`Op`]'s variants, so that the set of ops is written out once. An entry
/// is a variant's name and its mnemonic, followed by `=> sample` when the
/// variant carries attributes; an entry without a sample is an op without
/// attributes (its own sample).
///
/// `Op::kind` matches every variant of `Op`, so a variant missing from the
/// list does not compile; a variant with attributes listed without a
/// sample does not compile either (`Op::Name` is then not an `Op`).
macro_rules! op_kinds {
    (@sample $kind:ident) => {
        Op::$kind
    };
    (@sample $kind:ident $sample:expr) => {
        $sample
    };
    (@plain $kind:ident) => {
        Some(Op::$kind)
    };
    (@plain $kind:ident $sample:expr) => {
        None
    };
    ($($kind:ident $mnemonic:literal $(=> $sample:expr)?,)*) => {
        /// Which op an [`Op`] is, without its attributes: one variant per
        /// variant of `Op`, in the same order. Lists of ops (the parser's,
        /// the test generators') are derived from [`OpKind::ALL`], so a new
        /// op cannot be left out of them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum OpKind {
            $(
                #[doc = concat!("[`Op::", stringify!($kind), "`].")]
                $kind,
            )*
        }

        impl OpKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [OpKind] = &[$(OpKind::$kind),*];

            /// The text-IR mnemonic (`input` for both kinds of input;
            /// [`Op::mnemonic`] spells a parameter `param`).
            pub fn mnemonic(self) -> &'static str {
                match self {
                    $(OpKind::$kind => $mnemonic,)*
                }
            }

            /// One op of this kind. An op without attributes is its own
            /// sample; an op with attributes gets placeholders (zeros,
            /// empty lists, `f32[]` types, one `paper` Sinkhorn round),
            /// which need not fit any operands.
            pub fn sample(self) -> Op {
                match self {
                    $(OpKind::$kind => op_kinds!(@sample $kind $($sample)?),)*
                }
            }

            /// The one op of this kind when ops of this kind carry no
            /// attribute (the parser reads these by mnemonic alone);
            /// `None` otherwise.
            pub fn plain(self) -> Option<Op> {
                match self {
                    $(OpKind::$kind => op_kinds!(@plain $kind $($sample)?),)*
                }
            }
        }

        impl Op {
            /// This op's kind.
            pub fn kind(&self) -> OpKind {
                match self {
                    $(Op::$kind { .. } => OpKind::$kind,)*
                }
            }
        }
    };
}

/// Placeholder attributes of [`OpKind::sample`].
const SAMPLE_TYPE: TensorType = TensorType {
    dtype: DType::F32,
    shape: Vec::new(),
};
const SAMPLE_SINKHORN: SinkhornSpec = SinkhornSpec {
    variant: SinkhornVariant::Paper,
    iters: 1,
    eps: FloatAttr(0.0),
};
const SAMPLE_PRE_MIX: PreMixSpec = PreMixSpec {
    norm_eps: FloatAttr(0.0),
    pre_eps: FloatAttr(0.0),
    post_mult: FloatAttr(0.0),
    sinkhorn: SAMPLE_SINKHORN,
};

op_kinds! {
    Input "input" => Op::Input {
        name: String::new(),
        kind: InputKind::Data,
        ty: SAMPLE_TYPE,
    },
    Const "const" => Op::Const(Literal::splat(SAMPLE_TYPE, 0.0)),
    Iota "iota" => Op::Iota { axis: 0, ty: SAMPLE_TYPE },
    Neg "neg",
    Abs "abs",
    Exp "exp",
    Log "log",
    Sqrt "sqrt",
    Rsqrt "rsqrt",
    Recip "recip",
    Sigmoid "sigmoid",
    Tanh "tanh",
    Not "not",
    Add "add",
    Sub "sub",
    Mul "mul",
    Div "div",
    Max "max",
    Min "min",
    Pow "pow",
    Eq "eq",
    Ne "ne",
    Lt "lt",
    Le "le",
    Gt "gt",
    Ge "ge",
    And "and",
    Or "or",
    Select "select",
    ReduceSum "reduce_sum" => Op::ReduceSum { axes: Vec::new(), keepdims: false },
    ReduceMax "reduce_max" => Op::ReduceMax { axes: Vec::new(), keepdims: false },
    Reshape "reshape" => Op::Reshape { shape: Vec::new() },
    Permute "permute" => Op::Permute { perm: Vec::new() },
    Broadcast "broadcast" => Op::Broadcast { shape: Vec::new() },
    Slice "slice" => Op::Slice { start: Vec::new(), end: Vec::new() },
    Concat "concat" => Op::Concat { axis: 0 },
    MatMul "matmul",
    Cast "cast" => Op::Cast { dtype: DType::F32 },
    RowNorm "row_norm" => Op::RowNorm { eps: FloatAttr(0.0) },
    ColNorm "col_norm" => Op::ColNorm { eps: FloatAttr(0.0) },
    Softmax "softmax" => Op::Softmax { axis: 0 },
    RmsNorm "rms_norm" => Op::RmsNorm { eps: FloatAttr(0.0) },
    Sinkhorn "sinkhorn" => Op::Sinkhorn(SAMPLE_SINKHORN),
    SinkhornGrad "sinkhorn_grad" => Op::SinkhornGrad(SAMPLE_SINKHORN),
    MhcPostGrad "mhc_post_grad",
    MhcPreGrad "mhc_pre_grad" => Op::MhcPreGrad(SAMPLE_PRE_MIX),
    MhcPre "mhc_pre" => Op::MhcPre(SAMPLE_PRE_MIX),
    MhcProject "mhc_project",
    MhcPreProjected "mhc_pre_projected" => Op::MhcPreProjected(SAMPLE_PRE_MIX),
    HcPre "hc_pre" => Op::HcPre { norm_eps: FloatAttr(0.0) },
    MhcPost "mhc_post",
    Get "get" => Op::Get { index: 0 },
}

/// How many operands an op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Fixed(usize),
    /// One or more.
    Variadic,
}

impl Op {
    /// The op with every float attribute rounded to `dtype` (see
    /// [`Op::attr_dtype`]): the constant a kernel computing in `dtype`
    /// holds, and what the printer writes in `dtype`'s shortest spelling.
    pub fn with_attrs_rounded_to(self, dtype: DType) -> Op {
        if !matches!(dtype, DType::F32 | DType::Bf16) {
            return self;
        }
        match self {
            Op::RowNorm { eps } => Op::RowNorm {
                eps: eps.rounded_to(dtype),
            },
            Op::ColNorm { eps } => Op::ColNorm {
                eps: eps.rounded_to(dtype),
            },
            Op::RmsNorm { eps } => Op::RmsNorm {
                eps: eps.rounded_to(dtype),
            },
            Op::HcPre { norm_eps } => Op::HcPre {
                norm_eps: norm_eps.rounded_to(dtype),
            },
            Op::Sinkhorn(s) => Op::Sinkhorn(s.rounded_to(dtype)),
            Op::SinkhornGrad(s) => Op::SinkhornGrad(s.rounded_to(dtype)),
            Op::MhcPre(s) => Op::MhcPre(s.rounded_to(dtype)),
            Op::MhcPreGrad(s) => Op::MhcPreGrad(s.rounded_to(dtype)),
            Op::MhcPreProjected(s) => Op::MhcPreProjected(s.rounded_to(dtype)),
            op => op,
        }
    }

    /// The type an op's float attributes are constants of, given its
    /// result type: the op's compute type, which is `f32` for `bf16` ops
    /// (bf16 is a storage type) and the element type otherwise.
    pub fn attr_dtype(ty: &Type) -> DType {
        let d = match ty {
            Type::Tensor(t) => t.dtype,
            Type::Tuple(ts) => ts.first().map_or(DType::F64, |t| t.dtype),
        };
        if d == DType::Bf16 { DType::F32 } else { d }
    }

    /// The text-IR mnemonic.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input {
                kind: InputKind::Param,
                ..
            } => "param",
            op => op.kind().mnemonic(),
        }
    }

    /// Operand count.
    pub fn arity(&self) -> Arity {
        match self {
            Op::Input { .. } | Op::Const(_) | Op::Iota { .. } => Arity::Fixed(0),
            Op::Concat { .. } => Arity::Variadic,
            Op::Select => Arity::Fixed(3),
            Op::SinkhornGrad(_) => Arity::Fixed(2),
            Op::MhcPostGrad => Arity::Fixed(5),
            Op::MhcPreGrad(_) => Arity::Fixed(7),
            Op::MhcPre(_) | Op::HcPre { .. } | Op::MhcPost | Op::MhcPreProjected(_) => {
                Arity::Fixed(4)
            }
            Op::MhcProject => Arity::Fixed(2),
            op if op.is_unary() => Arity::Fixed(1),
            op if op.is_binary() => Arity::Fixed(2),
            Op::MatMul => Arity::Fixed(2),
            _ => Arity::Fixed(1),
        }
    }

    /// Takes no operands.
    pub fn is_leaf(&self) -> bool {
        matches!(self, Op::Input { .. } | Op::Const(_) | Op::Iota { .. })
    }

    /// Elementwise with one operand.
    pub fn is_unary(&self) -> bool {
        use Op::*;
        matches!(
            self,
            Neg | Abs | Exp | Log | Sqrt | Rsqrt | Recip | Sigmoid | Tanh | Not
        )
    }

    /// Elementwise with two operands.
    pub fn is_binary(&self) -> bool {
        use Op::*;
        matches!(
            self,
            Add | Sub | Mul | Div | Max | Min | Pow | Eq | Ne | Lt | Le | Gt | Ge | And | Or
        )
    }

    /// Output element `i` depends only on operand elements `i` (same shapes).
    pub fn is_elementwise(&self) -> bool {
        self.is_unary() || self.is_binary() || *self == Op::Select
    }

    /// Unary op defined only on floats (transcendental or division-like).
    pub fn needs_float(&self) -> bool {
        use Op::*;
        matches!(
            self,
            Exp | Log | Sqrt | Rsqrt | Recip | Sigmoid | Tanh | Div | Pow
        )
    }

    /// Comparison with a bool result.
    pub fn is_comparison(&self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge)
    }

    /// Logical op on bools.
    pub fn is_logical(&self) -> bool {
        matches!(self, Op::Not | Op::And | Op::Or)
    }

    /// `f(a, b) == f(b, a)` for every input, NaN included.
    pub fn is_commutative(&self) -> bool {
        use Op::*;
        matches!(self, Add | Mul | Max | Min | Eq | Ne | And | Or)
    }

    /// `f(f(a, b), c) == f(a, f(b, c))` in exact arithmetic. For float `add`
    /// and `mul` this does not hold after rounding: rewrites that use it on
    /// floats belong behind the `fast-math` option.
    pub fn is_associative(&self) -> bool {
        use Op::*;
        matches!(self, Add | Mul | Max | Min | And | Or)
    }

    /// Associative without rounding, so safe to re-bracket on every type.
    pub fn is_exactly_associative(&self) -> bool {
        use Op::*;
        matches!(self, Max | Min | And | Or)
    }

    /// `f(a, a) == a`.
    pub fn is_idempotent(&self) -> bool {
        use Op::*;
        matches!(self, Max | Min | And | Or)
    }

    /// A semantic op: a named composite of primitives that the optimizer
    /// recognizes (normalizations, softmax, Sinkhorn).
    pub fn is_semantic(&self) -> bool {
        matches!(
            self,
            Op::RowNorm { .. }
                | Op::ColNorm { .. }
                | Op::Softmax { .. }
                | Op::RmsNorm { .. }
                | Op::Sinkhorn(_)
        )
    }

    /// A fused op: one kernel in place of many primitives — the mHC ops
    /// (which the optimizer finds) and the backward ops `sinkhorn_grad`,
    /// `mhc_post_grad` and `mhc_pre_grad` (which autodiff emits). `birkhoff_opt::expand`
    /// rewrites each into its primitives.
    pub fn is_fused(&self) -> bool {
        matches!(
            self,
            Op::MhcPre(_)
                | Op::HcPre { .. }
                | Op::MhcPost
                | Op::MhcProject
                | Op::MhcPreProjected(_)
                | Op::SinkhornGrad(_)
                | Op::MhcPostGrad
                | Op::MhcPreGrad(_)
        )
    }

    /// Produces a tuple (taken apart with `get`).
    pub fn is_multi_result(&self) -> bool {
        matches!(
            self,
            Op::MhcPre(_)
                | Op::HcPre { .. }
                | Op::MhcPreProjected(_)
                | Op::MhcPostGrad
                | Op::MhcPreGrad(_)
        )
    }

    /// The RMS epsilon and the gates of a pre-mix (`mhc_pre`,
    /// `mhc_pre_projected`, `hc_pre`); `None` for every other op, the
    /// backward `mhc_pre_grad` included.
    pub fn pre_mix(&self) -> Option<(FloatAttr, PreMixGates)> {
        match self {
            Op::MhcPre(spec) | Op::MhcPreProjected(spec) => Some((spec.norm_eps, spec.gates())),
            Op::HcPre { norm_eps } => Some((*norm_eps, PreMixGates::Unconstrained)),
            _ => None,
        }
    }

    /// A reduction over axes.
    pub fn is_reduce(&self) -> bool {
        matches!(self, Op::ReduceSum { .. } | Op::ReduceMax { .. })
    }

    /// Moves or copies elements without arithmetic.
    pub fn is_movement(&self) -> bool {
        matches!(
            self,
            Op::Reshape { .. }
                | Op::Permute { .. }
                | Op::Broadcast { .. }
                | Op::Slice { .. }
                | Op::Concat { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ops_have_distinct_mnemonics_and_fixed_arity() {
        let mut seen = std::collections::HashSet::new();
        for op in OpKind::ALL.iter().filter_map(|k| k.plain()) {
            assert!(seen.insert(op.mnemonic()), "duplicate {}", op.mnemonic());
            assert!(
                matches!(op.arity(), Arity::Fixed(1..=5)),
                "{}",
                op.mnemonic()
            );
        }
    }

    #[test]
    fn every_kind_has_a_sample_of_its_kind_and_its_own_mnemonic() {
        let mut seen = std::collections::HashSet::new();
        for (i, &kind) in OpKind::ALL.iter().enumerate() {
            assert_eq!(kind as usize, i, "{kind:?}");
            let op = kind.sample();
            assert_eq!(op.kind(), kind);
            assert_eq!(op.mnemonic(), kind.mnemonic());
            assert!(
                seen.insert(kind.mnemonic()),
                "duplicate {}",
                kind.mnemonic()
            );
            if let Some(plain) = kind.plain() {
                assert_eq!(plain, op);
            }
        }
        // The kinds are in `Op`'s order (ops compare by variant first).
        for pair in OpKind::ALL.windows(2) {
            assert!(pair[0].sample() < pair[1].sample(), "{pair:?}");
        }
    }

    #[test]
    fn pre_mix_gives_the_gates_of_the_three_forward_pre_mixes() {
        let spec = PreMixSpec {
            norm_eps: FloatAttr(1e-6),
            pre_eps: FloatAttr(0.25),
            post_mult: FloatAttr(2.0),
            sinkhorn: SinkhornSpec {
                variant: SinkhornVariant::TileKernels,
                iters: 3,
                eps: FloatAttr(0.1),
            },
        };
        let constrained = Some((FloatAttr(1e-6), spec.gates()));
        assert_eq!(Op::MhcPre(spec).pre_mix(), constrained);
        assert_eq!(Op::MhcPreProjected(spec).pre_mix(), constrained);
        let hc = Op::HcPre {
            norm_eps: FloatAttr(0.5),
        };
        assert_eq!(
            hc.pre_mix(),
            Some((FloatAttr(0.5), PreMixGates::Unconstrained))
        );
        let with_pre_mix: Vec<OpKind> = OpKind::ALL
            .iter()
            .copied()
            .filter(|k| k.sample().pre_mix().is_some())
            .collect();
        assert_eq!(
            with_pre_mix,
            [OpKind::MhcPre, OpKind::MhcPreProjected, OpKind::HcPre]
        );
        // Rounded to f32: every float attribute, the Sinkhorn eps included.
        let PreMixGates::Constrained { sinkhorn, .. } = spec.gates().rounded_to(DType::F32) else {
            panic!("mhc_pre has constrained gates")
        };
        assert_eq!(sinkhorn.eps.get(), f64::from(0.1f32));
        let r = spec.rounded_to(DType::F32);
        assert_eq!(r.norm_eps.get(), f64::from(1e-6f32));
        assert_eq!(r.gates(), spec.gates().rounded_to(DType::F32));
        assert_eq!(spec.rounded_to(DType::F64), spec);
    }

    #[test]
    fn algebraic_queries_are_consistent() {
        for op in OpKind::ALL.iter().map(|k| k.sample()) {
            if op.is_idempotent() || op.is_exactly_associative() {
                assert!(op.is_associative(), "{}", op.mnemonic());
            }
            if op.is_commutative() || op.is_associative() {
                assert!(op.is_binary(), "{}", op.mnemonic());
            }
        }
        assert_eq!(Op::Concat { axis: 0 }.arity(), Arity::Variadic);
        assert_eq!(Op::Select.arity(), Arity::Fixed(3));
        let spec = SinkhornSpec {
            variant: SinkhornVariant::Paper,
            iters: 1,
            eps: FloatAttr(0.0),
        };
        assert_eq!(Op::SinkhornGrad(spec).arity(), Arity::Fixed(2));
        assert!(Op::SinkhornGrad(spec).is_fused() && !Op::SinkhornGrad(spec).is_semantic());
        assert_eq!(Op::MhcPostGrad.arity(), Arity::Fixed(5));
        assert!(Op::MhcPostGrad.is_fused() && Op::MhcPostGrad.is_multi_result());
        assert!(Op::Sub.is_binary() && !Op::Sub.is_commutative());
    }
}
