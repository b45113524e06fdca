//! proptest strategies for types, tensors and whole graphs.
//!
//! Value strategies come in two flavours, chosen by `special_values`:
//! ordinary values (finite, moderate magnitudes, so that tolerance checks
//! mean something), or ordinary values mixed with NaN, ±Inf, ±0, subnormals
//! and the extremes of each type on purpose.
//!
//! [`graph`] builds random well-typed graphs from a stream of `u32`
//! choices: every choice that shrinks towards 0 picks a simpler option, so
//! failing cases shrink to small graphs. It draws from every [`OpKind`]
//! but `input` and matches on the kind exhaustively, so adding an op to the
//! IR fails to compile here until the generator covers it. Semantic ops
//! (`row_norm`, `sinkhorn`, …) get float operands of a suitable rank; the
//! fused mHC ops get operands of matching `[T,n,C]` shapes, and every tuple
//! they produce is taken apart by at least one `get`, so no tuple is ever
//! an operand of anything else or an output.

use std::collections::BTreeMap;

use birkhoff_ir::{
    DType, FloatAttr, Graph, InputKind, Literal, Op, OpKind, PreMixSpec, SinkhornSpec,
    SinkhornVariant, Tensor, TensorType, Type, ValueId, num_elements,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

/// Largest dimension [`tensor_type`] draws.
pub const MAX_DIM: usize = 5;

/// Largest rank [`tensor_type`] draws.
pub const MAX_TEST_RANK: usize = 4;

/// Upper bound on the element count of any value [`graph`] creates.
pub const MAX_GRAPH_ELEMENTS: usize = 1024;

/// Any element type.
pub fn dtype() -> impl Strategy<Value = DType> {
    select(DType::ALL.to_vec())
}

/// A shape of rank `0..=4` with dimensions `1..=5`.
pub fn shape() -> impl Strategy<Value = Vec<usize>> {
    vec(1..=MAX_DIM, 0..=MAX_TEST_RANK)
}

/// A small tensor type: any dtype, a shape from [`shape`].
pub fn tensor_type() -> impl Strategy<Value = TensorType> {
    (dtype(), shape()).prop_map(|(d, s)| TensorType::new(d, s))
}

/// NaN, ±Inf, ±0, subnormals and the extremes of `dtype`, as `f64`s that
/// `dtype` holds exactly (for `i32`: its extremes, 0 and ±1; for `bool`:
/// both values).
pub fn special_scalars(dtype: DType) -> Vec<f64> {
    let bf16 = |bits: u32| f64::from(f32::from_bits(bits << 16));
    match dtype {
        DType::F32 => vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            f64::from(f32::from_bits(1)),
            f64::from(f32::from_bits(0x0040_0000)),
            -f64::from(f32::from_bits(0x007f_ffff)),
            f64::from(f32::MIN_POSITIVE),
            f64::from(f32::MAX),
            f64::from(f32::MIN),
        ],
        DType::Bf16 => vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            bf16(0x0001),
            bf16(0x0040),
            -bf16(0x007f),
            bf16(0x0080),
            bf16(0x7f7f),
            -bf16(0x7f7f),
        ],
        DType::F64 => vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            f64::from_bits(1),
            f64::from_bits(0x0008_0000_0000_0000),
            -f64::from_bits(0x000f_ffff_ffff_ffff),
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
        ],
        DType::I32 => vec![f64::from(i32::MIN), f64::from(i32::MAX), 0.0, 1.0, -1.0],
        DType::Bool => vec![0.0, 1.0],
    }
}

/// One scalar that `dtype` holds exactly, as `f64`.
///
/// Without `special_values`, floats are finite and within ±2^20 (mostly
/// within ±8, plus small integers), and `i32`s lie in `-100..=100`.
/// With it, a quarter of the draws come from [`special_scalars`] and some
/// are arbitrary bit patterns of the type.
pub fn scalar(dtype: DType, special_values: bool) -> BoxedStrategy<f64> {
    let round = move |x: f64| dtype.round(x);
    let ordinary: BoxedStrategy<f64> = match dtype {
        DType::Bool => any::<bool>().prop_map(|b| f64::from(u8::from(b))).boxed(),
        DType::I32 => (-100i32..=100).prop_map(f64::from).boxed(),
        _ => prop_oneof![
            4 => (-8.0f64..8.0).prop_map(round),
            1 => (-4i32..=4).prop_map(f64::from),
            1 => (any::<bool>(), -20i32..20, 1.0f64..2.0)
                .prop_map(move |(neg, e, m)| {
                    let x = m * 2f64.powi(e);
                    round(if neg { -x } else { x })
                }),
        ]
        .boxed(),
    };
    if !special_values {
        return ordinary;
    }
    let bits: BoxedStrategy<f64> = match dtype {
        DType::F32 => any::<u32>()
            .prop_map(|b| f64::from(f32::from_bits(b)))
            .boxed(),
        DType::Bf16 => any::<u16>()
            .prop_map(|b| f64::from(f32::from_bits(u32::from(b) << 16)))
            .boxed(),
        DType::F64 => any::<u64>().prop_map(f64::from_bits).boxed(),
        DType::I32 => any::<i32>().prop_map(f64::from).boxed(),
        DType::Bool => any::<bool>().prop_map(|b| f64::from(u8::from(b))).boxed(),
    };
    prop_oneof![
        2 => ordinary,
        1 => select(special_scalars(dtype)),
        1 => bits,
    ]
    .boxed()
}

/// A tensor of type `ty`; see [`scalar`] for what `special_values` adds.
pub fn tensor(ty: TensorType, special_values: bool) -> impl Strategy<Value = Tensor> {
    let n = ty.num_elements();
    vec(scalar(ty.dtype, special_values), n).prop_map(move |xs| {
        Tensor::from_f64(ty.clone(), &xs).expect("the element count matches the type")
    })
}

/// One tensor per input of `graph`, keyed by input name, ready for
/// `birkhoff_ir::interpret`.
pub fn inputs(
    graph: &Graph,
    special_values: bool,
) -> impl Strategy<Value = BTreeMap<String, Tensor>> + use<> {
    let named: Vec<(String, TensorType)> = graph
        .inputs()
        .iter()
        .map(|&v| {
            let name = graph.input_name(v).unwrap_or_default().to_string();
            (name, graph.ty(v).clone())
        })
        .collect();
    let strategies: Vec<_> = named
        .iter()
        .map(|(_, ty)| tensor(ty.clone(), special_values))
        .collect();
    strategies.prop_map(move |tensors| {
        named
            .iter()
            .map(|(name, _)| name.clone())
            .zip(tensors)
            .collect()
    })
}

/// A random graph that passes the verifier: 1–3 inputs (data and params),
/// up to ten generation steps over every op of the IR, and 1–3 outputs.
///
/// Every value (counting all elements of a tuple) has at most
/// [`MAX_GRAPH_ELEMENTS`] elements.
pub fn graph() -> impl Strategy<Value = Graph> {
    vec(any::<u32>(), 1..256).prop_map(|choices| graph_from_choices(&choices))
}

/// The graph [`graph`] builds from a given choice stream; deterministic.
/// Choices past the end of the stream read as 0 (the simplest option).
pub fn graph_from_choices(choices: &[u32]) -> Graph {
    let mut b = Builder {
        g: Graph::new(""),
        c: Choices {
            data: choices,
            pos: 0,
        },
    };
    b.build()
}

/// Reads choices from the stream.
struct Choices<'a> {
    data: &'a [u32],
    pos: usize,
}

impl Choices<'_> {
    fn next(&mut self) -> u32 {
        let v = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        v
    }

    fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        self.next() as usize % n
    }

    fn flip(&mut self) -> bool {
        self.below(2) == 1
    }

    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())].clone()
    }

    fn shuffled(&mut self, n: usize) -> Vec<usize> {
        let mut xs: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i + 1);
            xs.swap(i, j);
        }
        xs
    }
}

/// The ops the generator draws from, in [`OpKind::ALL`]'s order: every
/// kind but `input` (inputs are declared before the first step).
fn kinds() -> Vec<OpKind> {
    OpKind::ALL
        .iter()
        .copied()
        .filter(|&k| k != OpKind::Input)
        .collect()
}

/// Epsilons the generator puts on normalizations and Sinkhorn.
const EPSILONS: [f64; 3] = [0.0, 1e-6, 0.01];

/// Values of `mhc_pre`'s signed attributes (`pre_eps`, `post_mult`).
const SIGNED_ATTRS: [f64; 5] = [2.0, 0.0, 1e-6, -0.5, 1.25];

/// Largest `n` and `C` of a fresh mHC residual `[T, n, C]`.
const MAX_STREAMS: usize = 4;

const FLOATS: [DType; 3] = [DType::F32, DType::Bf16, DType::F64];
const NUMERIC: [DType; 4] = [DType::F32, DType::Bf16, DType::F64, DType::I32];

struct Builder<'a> {
    g: Graph,
    c: Choices<'a>,
}

impl Builder<'_> {
    fn build(&mut self) -> Graph {
        let name = self.c.pick(&["g", "main", "block_0", "mhc.pre", "_f"]);
        self.g.set_name(name);
        let n_inputs = 1 + self.c.below(3);
        for i in 0..n_inputs {
            let prefix = self.c.pick(&["x", "w", "in_", "h.", "_t"]);
            let kind = if self.c.below(3) == 2 {
                InputKind::Param
            } else {
                InputKind::Data
            };
            let ty = self.fresh_type(&DType::ALL, 0);
            self.g.add_input(format!("{prefix}{i}"), kind, ty);
        }
        let kinds = kinds();
        let steps = 1 + self.c.below(10);
        for _ in 0..steps {
            let kind = self.c.pick(&kinds);
            self.step(kind);
        }
        let n_outputs = 1 + self.c.below(3);
        let last = ValueId::new(self.g.len() - 1);
        for i in 0..n_outputs {
            let v = if i == 0 { last } else { self.any_value() };
            let prefix = self.c.pick(&["y", "out.", "r_"]);
            self.g.add_output(format!("{prefix}{i}"), v);
        }
        std::mem::take(&mut self.g)
    }

    fn add(&mut self, op: Op, args: &[ValueId]) -> ValueId {
        let described = format!("{op:?} on {args:?}");
        match self.g.add(op, args) {
            Ok(v) => v,
            Err(e) => panic!("graph generator built an ill-typed node ({described}): {e}"),
        }
    }

    fn ty(&self, v: ValueId) -> TensorType {
        self.g.ty(v).clone()
    }

    /// A type with a dtype from `dtypes` and rank at least `min_rank`.
    fn fresh_type(&mut self, dtypes: &[DType], min_rank: usize) -> TensorType {
        let d = self.c.pick(dtypes);
        let rank = min_rank + self.c.below(MAX_TEST_RANK + 1 - min_rank);
        let shape: Vec<usize> = (0..rank).map(|_| 1 + self.c.below(MAX_DIM)).collect();
        TensorType::new(d, shape)
    }

    /// An existing tensor value (never a tuple): the newest one half the
    /// time, else any.
    fn any_value(&mut self) -> ValueId {
        let tensors: Vec<ValueId> = self
            .g
            .values()
            .filter(|&v| !self.g.value_type(v).is_tuple())
            .collect();
        if self.c.flip() {
            tensors[tensors.len() - 1]
        } else {
            self.c.pick(&tensors)
        }
    }

    /// One scalar of `d`, exactly representable, sometimes special.
    fn scalar(&mut self, d: DType) -> f64 {
        let x = match self.c.below(8) {
            0..=2 => f64::from(self.c.below(33) as i32 - 16) / 4.0,
            3 => {
                let specials = special_scalars(d);
                self.c.pick(&specials)
            }
            4 => match d {
                DType::F32 => f64::from(f32::from_bits(self.c.next())),
                DType::Bf16 => f64::from(f32::from_bits(self.c.next() & 0xffff_0000)),
                DType::F64 => {
                    let hi = u64::from(self.c.next());
                    f64::from_bits(hi << 32 | u64::from(self.c.next()))
                }
                DType::I32 => f64::from(self.c.next() as i32),
                DType::Bool => f64::from(self.c.next() & 1),
            },
            _ => f64::from(self.c.next()) / f64::from(u32::MAX) * 16.0 - 8.0,
        };
        match d {
            DType::I32 => x.trunc(),
            _ => d.round(x),
        }
    }

    /// A constant of type `ty`: a splat or every element spelled out.
    fn constant(&mut self, ty: &TensorType) -> ValueId {
        let lit = if ty.num_elements() > 64 || self.c.flip() {
            Literal::splat(ty.clone(), self.scalar(ty.dtype))
        } else {
            let xs: Vec<f64> = (0..ty.num_elements())
                .map(|_| self.scalar(ty.dtype))
                .collect();
            Literal::dense(ty.clone(), xs).expect("one value per element")
        };
        self.add(Op::Const(lit), &[])
    }

    /// A value of exactly type `ty`: an existing one, a constant or an iota.
    fn operand_like(&mut self, ty: &TensorType) -> ValueId {
        let same: Vec<ValueId> = self
            .g
            .values()
            .filter(|&v| self.g.value_type(v).as_tensor() == Some(ty))
            .collect();
        match self.c.below(3) {
            0 if !same.is_empty() => self.c.pick(&same),
            1 if ty.dtype.is_numeric() && ty.rank() > 0 => {
                let axis = self.c.below(ty.rank());
                self.add(
                    Op::Iota {
                        axis,
                        ty: ty.clone(),
                    },
                    &[],
                )
            }
            _ => self.constant(ty),
        }
    }

    /// `v` itself if its dtype is in `dtypes`, else a cast to one of them.
    fn coerce(&mut self, v: ValueId, dtypes: &[DType]) -> ValueId {
        if dtypes.contains(&self.g.ty(v).dtype) {
            v
        } else {
            let dtype = self.c.pick(dtypes);
            self.add(Op::Cast { dtype }, &[v])
        }
    }

    /// `v` reshaped to rank at least `min_rank` by adding leading 1s.
    fn at_least_rank(&mut self, v: ValueId, min_rank: usize) -> ValueId {
        let ty = self.ty(v);
        if ty.rank() >= min_rank {
            return v;
        }
        let mut shape = vec![1; min_rank - ty.rank()];
        shape.extend(&ty.shape);
        self.add(Op::Reshape { shape }, &[v])
    }

    /// A bool value with `v`'s shape.
    fn condition_like(&mut self, v: ValueId) -> ValueId {
        let ty = self.ty(v).with_dtype(DType::Bool);
        match self.c.below(3) {
            0 => self.add(Op::Cast { dtype: DType::Bool }, &[v]),
            1 if self.g.ty(v).dtype.is_numeric() => {
                let other = self.operand_like(&self.ty(v));
                let cmp = self.c.pick(&[Op::Lt, Op::Ge, Op::Eq]);
                self.add(cmp, &[v, other])
            }
            _ => self.operand_like(&ty),
        }
    }

    /// One of `xs`, as a float attribute.
    fn float_attr(&mut self, xs: &[f64]) -> FloatAttr {
        FloatAttr(self.c.pick(xs))
    }

    /// A Sinkhorn spec: either variant, 1–5 rounds, eps from [`EPSILONS`].
    fn sinkhorn_spec(&mut self) -> SinkhornSpec {
        SinkhornSpec {
            variant: self
                .c
                .pick(&[SinkhornVariant::Paper, SinkhornVariant::TileKernels]),
            iters: 1 + self.c.below(5),
            eps: self.float_attr(&EPSILONS),
        }
    }

    /// Pre-mix attributes: `norm_eps` from [`EPSILONS`], `pre_eps` and
    /// `post_mult` from [`SIGNED_ATTRS`], a [`Self::sinkhorn_spec`].
    fn pre_mix_spec(&mut self) -> PreMixSpec {
        PreMixSpec {
            norm_eps: self.float_attr(&EPSILONS),
            pre_eps: self.float_attr(&SIGNED_ATTRS),
            post_mult: self.float_attr(&SIGNED_ATTRS),
            sinkhorn: self.sinkhorn_spec(),
        }
    }

    /// A float value of rank at least 2 whose last two dimensions are
    /// equal: an existing value, cast and reshaped as needed, sliced square.
    fn square(&mut self) -> ValueId {
        let v = self.any_value();
        let v = self.coerce(v, &FLOATS);
        let v = self.at_least_rank(v, 2);
        let mut end = self.ty(v).shape;
        let r = end.len();
        let k = end[r - 1].min(end[r - 2]);
        if end[r - 1] == end[r - 2] {
            return v;
        }
        let start = vec![0; r];
        end[r - 2] = k;
        end[r - 1] = k;
        self.add(Op::Slice { start, end }, &[v])
    }

    /// A float residual stream `[T, n, C]` whose mHC weights, results and
    /// gradients stay within [`MAX_GRAPH_ELEMENTS`]: an existing rank-3
    /// value when one is drawn and fits, else a fresh operand.
    fn residual(&mut self) -> ValueId {
        let v = self.any_value();
        let ty = self.ty(v);
        if let [t, n, c] = ty.shape[..] {
            let weights = n * (n + 2) * n * c;
            let results = t * (c + n + n * n);
            // mhc_pre_grad's tuple: d_x, d_fn, d_scale, d_base.
            let grads = t * n * c + weights + 3 + n * (n + 2);
            if weights.max(results).max(grads) <= MAX_GRAPH_ELEMENTS && self.c.flip() {
                return self.coerce(v, &FLOATS);
            }
        }
        let d = self.c.pick(&FLOATS);
        let t = 1 + self.c.below(3);
        let n = 1 + self.c.below(MAX_STREAMS);
        let c = 1 + self.c.below(MAX_STREAMS);
        self.operand_like(&TensorType::new(d, [t, n, c]))
    }

    /// Adds `get`s of some (at least one) of the elements of the tuple `v`,
    /// in random order.
    fn take_apart(&mut self, v: ValueId) {
        let len = self.tuple_len(v);
        let count = 1 + self.c.below(len);
        for index in self.c.shuffled(len)[..count].to_vec() {
            self.add(Op::Get { index }, &[v]);
        }
    }

    /// The element count of the tuple `v` (3 for the pre-mixes, 4 for
    /// `mhc_post_grad` and `mhc_pre_grad`).
    fn tuple_len(&self, v: ValueId) -> usize {
        match self.g.value_type(v) {
            Type::Tuple(ts) => ts.len(),
            Type::Tensor(_) => 1,
        }
    }

    /// A random shape with `n` elements and rank at most 4.
    fn factor_shape(&mut self, n: usize) -> Vec<usize> {
        let mut rank = self.c.below(MAX_TEST_RANK + 1);
        if rank == 0 && n != 1 {
            rank = 1;
        }
        let mut shape = vec![1; rank];
        let (mut m, mut p) = (n, 2);
        while m > 1 {
            while m % p == 0 {
                let k = self.c.below(rank);
                shape[k] *= p;
                m /= p;
            }
            p += 1;
        }
        shape
    }

    /// Adds the nodes for one generation step with an op of `kind`.
    fn step(&mut self, kind: OpKind) {
        match kind {
            OpKind::Input => unreachable!("inputs are not drawn as steps"),
            OpKind::Const => {
                let ty = self.fresh_type(&DType::ALL, 0);
                self.constant(&ty);
            }
            OpKind::Iota => {
                let ty = self.fresh_type(&NUMERIC, 1);
                let axis = self.c.below(ty.rank());
                self.add(Op::Iota { axis, ty }, &[]);
            }
            OpKind::Neg
            | OpKind::Abs
            | OpKind::Exp
            | OpKind::Log
            | OpKind::Sqrt
            | OpKind::Rsqrt
            | OpKind::Recip
            | OpKind::Sigmoid
            | OpKind::Tanh
            | OpKind::Not => {
                let v = self.any_value();
                let op = kind.sample();
                let v = self.coerce(v, operand_dtypes(&op));
                self.add(op, &[v]);
            }
            OpKind::Add
            | OpKind::Sub
            | OpKind::Mul
            | OpKind::Div
            | OpKind::Max
            | OpKind::Min
            | OpKind::Pow
            | OpKind::Eq
            | OpKind::Ne
            | OpKind::Lt
            | OpKind::Le
            | OpKind::Gt
            | OpKind::Ge
            | OpKind::And
            | OpKind::Or => {
                let a = self.any_value();
                let op = kind.sample();
                let a = self.coerce(a, operand_dtypes(&op));
                let b = self.operand_like(&self.ty(a));
                let args = if self.c.flip() { [a, b] } else { [b, a] };
                self.add(op, &args);
            }
            OpKind::Select => {
                let a = self.any_value();
                let b = self.operand_like(&self.ty(a));
                let cond = self.condition_like(a);
                self.add(Op::Select, &[cond, a, b]);
            }
            OpKind::ReduceSum | OpKind::ReduceMax => {
                let v = self.any_value();
                let v = self.coerce(v, &NUMERIC);
                let v = self.at_least_rank(v, 1);
                let rank = self.g.ty(v).rank();
                let count = 1 + self.c.below(rank);
                let axes = self.c.shuffled(rank)[..count].to_vec();
                let keepdims = self.c.flip();
                let op = if kind == OpKind::ReduceSum {
                    Op::ReduceSum { axes, keepdims }
                } else {
                    Op::ReduceMax { axes, keepdims }
                };
                self.add(op, &[v]);
            }
            OpKind::Reshape => {
                let v = self.any_value();
                let shape = self.factor_shape(self.g.ty(v).num_elements());
                self.add(Op::Reshape { shape }, &[v]);
            }
            OpKind::Permute => {
                let v = self.any_value();
                let perm = self.c.shuffled(self.g.ty(v).rank());
                self.add(Op::Permute { perm }, &[v]);
            }
            OpKind::Broadcast => {
                let v = self.any_value();
                let ty = self.ty(v);
                let mut shape = Vec::new();
                for _ in 0..self.c.below(3) {
                    shape.push(1 + self.c.below(3));
                }
                for &d in &ty.shape {
                    shape.push(if d == 1 { 1 + self.c.below(4) } else { d });
                }
                if num_elements(&shape).is_none_or(|n| n > MAX_GRAPH_ELEMENTS) {
                    shape = ty.shape;
                }
                self.add(Op::Broadcast { shape }, &[v]);
            }
            OpKind::Slice => {
                let v = self.any_value();
                let (mut start, mut end) = (Vec::new(), Vec::new());
                for d in self.ty(v).shape {
                    let s = self.c.below(d);
                    start.push(s);
                    end.push(s + 1 + self.c.below(d - s));
                }
                self.add(Op::Slice { start, end }, &[v]);
            }
            OpKind::Concat => {
                let v = self.any_value();
                let v = self.at_least_rank(v, 1);
                let ty = self.ty(v);
                let axis = self.c.below(ty.rank());
                let mut args = vec![v];
                let mut total = ty.num_elements();
                for _ in 0..self.c.below(3) {
                    let part = if self.c.flip() {
                        ty.clone()
                    } else {
                        let mut shape = ty.shape.clone();
                        shape[axis] = 1 + self.c.below(3);
                        ty.with_shape(shape)
                    };
                    total += part.num_elements();
                    if total > MAX_GRAPH_ELEMENTS {
                        break;
                    }
                    let arg = if part == ty && self.c.flip() {
                        v
                    } else {
                        self.operand_like(&part)
                    };
                    args.push(arg);
                }
                self.add(Op::Concat { axis }, &args);
            }
            OpKind::MatMul => {
                let a = self.any_value();
                let a = self.coerce(a, &NUMERIC);
                let a = self.at_least_rank(a, 2);
                let ty = self.ty(a);
                let r = ty.rank();
                // a is [batch.., M, K]; b has batch·K·N elements and the
                // result batch·M·N, with N = M when b is a transposed.
                let (m, k) = (ty.shape[r - 2], ty.shape[r - 1]);
                let batch = ty.num_elements() / (m * k);
                let b = if self.c.flip() && batch * m * m <= MAX_GRAPH_ELEMENTS {
                    let mut perm: Vec<usize> = (0..r).collect();
                    perm.swap(r - 2, r - 1);
                    self.add(Op::Permute { perm }, &[a])
                } else {
                    let max_n = MAX_GRAPH_ELEMENTS / (batch * m.max(k));
                    let mut shape = ty.shape[..r - 2].to_vec();
                    shape.push(k);
                    shape.push(1 + self.c.below(max_n.min(4)));
                    self.operand_like(&ty.with_shape(shape))
                };
                self.add(Op::MatMul, &[a, b]);
            }
            OpKind::Cast => {
                let v = self.any_value();
                let dtype = self.c.pick(&DType::ALL);
                self.add(Op::Cast { dtype }, &[v]);
            }
            OpKind::RowNorm | OpKind::ColNorm | OpKind::Softmax | OpKind::RmsNorm => {
                let v = self.any_value();
                let v = self.coerce(v, &FLOATS);
                let min_rank = if kind == OpKind::ColNorm { 2 } else { 1 };
                let v = self.at_least_rank(v, min_rank);
                let rank = self.g.ty(v).rank();
                let op = match kind {
                    OpKind::RowNorm => Op::RowNorm {
                        eps: self.float_attr(&EPSILONS),
                    },
                    OpKind::ColNorm => Op::ColNorm {
                        eps: self.float_attr(&EPSILONS),
                    },
                    OpKind::RmsNorm => Op::RmsNorm {
                        eps: self.float_attr(&EPSILONS),
                    },
                    _ => Op::Softmax {
                        axis: self.c.below(rank),
                    },
                };
                self.add(op, &[v]);
            }
            OpKind::Sinkhorn => {
                let v = self.square();
                let spec = self.sinkhorn_spec();
                self.add(Op::Sinkhorn(spec), &[v]);
            }
            OpKind::SinkhornGrad => {
                let x = self.square();
                let ty = self.ty(x);
                let dy = self.operand_like(&ty);
                let spec = self.sinkhorn_spec();
                self.add(Op::SinkhornGrad(spec), &[x, dy]);
            }
            OpKind::MhcPre | OpKind::HcPre => {
                let x = self.residual();
                let ty = self.ty(x);
                let (n, c) = (ty.shape[1], ty.shape[2]);
                let m = n * (n + 2);
                let proj = self.operand_like(&ty.with_shape([m, n * c]));
                let scale = self.operand_like(&ty.with_shape([3]));
                let base = self.operand_like(&ty.with_shape([m]));
                let op = if kind == OpKind::MhcPre {
                    Op::MhcPre(self.pre_mix_spec())
                } else {
                    Op::HcPre {
                        norm_eps: self.float_attr(&EPSILONS),
                    }
                };
                let tuple = self.add(op, &[x, proj, scale, base]);
                self.take_apart(tuple);
            }
            OpKind::MhcProject => {
                let x = self.residual();
                let ty = self.ty(x);
                let (n, c) = (ty.shape[1], ty.shape[2]);
                let w = self.operand_like(&ty.with_shape([n * (n + 2), n * c]));
                self.add(Op::MhcProject, &[x, w]);
            }
            OpKind::MhcPreProjected => {
                let x = self.residual();
                let ty = self.ty(x);
                let (t, n, c) = (ty.shape[0], ty.shape[1], ty.shape[2]);
                let m = n * (n + 2);
                // The mixes of x itself (as the recomputation planner
                // builds it), or any tensor of their type.
                let mixes = if self.c.flip() {
                    let w = self.operand_like(&ty.with_shape([m, n * c]));
                    self.add(Op::MhcProject, &[x, w])
                } else {
                    let dtype = if ty.dtype == DType::Bf16 {
                        DType::F32
                    } else {
                        ty.dtype
                    };
                    self.operand_like(&TensorType::new(dtype, [t, m]))
                };
                let scale = self.operand_like(&ty.with_shape([3]));
                let base = self.operand_like(&ty.with_shape([m]));
                let op = Op::MhcPreProjected(self.pre_mix_spec());
                let tuple = self.add(op, &[x, mixes, scale, base]);
                self.take_apart(tuple);
            }
            OpKind::MhcPost => {
                let x = self.residual();
                let ty = self.ty(x);
                let (t, n, c) = (ty.shape[0], ty.shape[1], ty.shape[2]);
                let f = self.operand_like(&ty.with_shape([t, c]));
                let post = self.operand_like(&ty.with_shape([t, n]));
                let comb = self.operand_like(&ty.with_shape([t, n, n]));
                self.add(Op::MhcPost, &[f, x, post, comb]);
            }
            OpKind::MhcPostGrad => {
                let x = self.residual();
                let ty = self.ty(x);
                let (t, n, c) = (ty.shape[0], ty.shape[1], ty.shape[2]);
                let f = self.operand_like(&ty.with_shape([t, c]));
                let post = self.operand_like(&ty.with_shape([t, n]));
                let comb = self.operand_like(&ty.with_shape([t, n, n]));
                let d_out = self.operand_like(&ty);
                let tuple = self.add(Op::MhcPostGrad, &[f, x, post, comb, d_out]);
                self.take_apart(tuple);
            }
            OpKind::MhcPreGrad => {
                let x = self.residual();
                let ty = self.ty(x);
                let (t, n, c) = (ty.shape[0], ty.shape[1], ty.shape[2]);
                let m = n * (n + 2);
                let proj = self.operand_like(&ty.with_shape([m, n * c]));
                let scale = self.operand_like(&ty.with_shape([3]));
                let base = self.operand_like(&ty.with_shape([m]));
                let d_li = self.operand_like(&ty.with_shape([t, c]));
                let d_post = self.operand_like(&ty.with_shape([t, n]));
                let d_comb = self.operand_like(&ty.with_shape([t, n, n]));
                let op = Op::MhcPreGrad(self.pre_mix_spec());
                let args = [x, proj, scale, base, d_li, d_post, d_comb];
                let tuple = self.add(op, &args);
                self.take_apart(tuple);
            }
            OpKind::Get => {
                // Another look at an existing tuple, or a fresh pre-mix.
                let tuples: Vec<ValueId> = self
                    .g
                    .values()
                    .filter(|&v| self.g.value_type(v).is_tuple())
                    .collect();
                if tuples.is_empty() {
                    let pre = if self.c.flip() {
                        OpKind::MhcPre
                    } else {
                        OpKind::HcPre
                    };
                    self.step(pre);
                } else {
                    let v = self.c.pick(&tuples);
                    let index = self.c.below(self.tuple_len(v));
                    self.add(Op::Get { index }, &[v]);
                }
            }
        }
    }
}

/// The operand dtypes an elementwise op accepts.
fn operand_dtypes(op: &Op) -> &'static [DType] {
    if op.is_logical() {
        &[DType::Bool]
    } else if matches!(op, Op::Eq | Op::Ne) {
        &DType::ALL
    } else if op.needs_float() {
        &FLOATS
    } else {
        &NUMERIC
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    fn sample<S: Strategy>(s: &S, n: usize) -> Vec<S::Value> {
        let mut runner = TestRunner::deterministic();
        (0..n)
            .map(|_| s.new_tree(&mut runner).unwrap().current())
            .collect()
    }

    #[test]
    fn the_generator_draws_every_kind_but_input() {
        let kinds = kinds();
        assert_eq!(kinds.len() + 1, OpKind::ALL.len());
        assert!(!kinds.contains(&OpKind::Input));
    }

    #[test]
    fn empty_choice_stream_builds_the_simplest_graph() {
        let g = graph_from_choices(&[]);
        assert_eq!(g.to_string(), graph_from_choices(&[0; 8]).to_string());
        birkhoff_ir::verify(&g).unwrap();
        assert_eq!(g.inputs().len(), 1);
        assert_eq!(g.outputs().len(), 1);
    }

    #[test]
    fn factor_shape_keeps_the_element_count() {
        for n in [1, 2, 12, 97, 360, 1024] {
            for seed in 0..20u32 {
                let choices: Vec<u32> = (0..64).map(|i| i * 7919 + seed * 104_729).collect();
                let mut b = Builder {
                    g: Graph::new("g"),
                    c: Choices {
                        data: &choices,
                        pos: 0,
                    },
                };
                let s = b.factor_shape(n);
                assert_eq!(s.iter().product::<usize>(), n, "{s:?}");
                assert!(s.len() <= MAX_TEST_RANK);
            }
        }
    }

    #[test]
    fn ordinary_scalars_are_finite_and_exact() {
        for d in DType::ALL {
            for x in sample(&scalar(d, false), 300) {
                assert!(x.is_finite() && x.abs() <= 2f64.powi(21), "{d} {x}");
                assert!(d.holds(x), "{d} does not hold {x}");
            }
        }
    }

    #[test]
    fn special_scalars_appear_and_are_exact() {
        for d in [DType::F32, DType::Bf16, DType::F64] {
            let xs = sample(&scalar(d, true), 400);
            assert!(xs.iter().any(|x| x.is_nan()), "{d}: no NaN");
            assert!(xs.contains(&f64::INFINITY), "{d}: no +inf");
            assert!(xs.contains(&f64::NEG_INFINITY), "{d}: no -inf");
            assert!(
                xs.iter().any(|&x| x == 0.0 && x.is_sign_negative()),
                "{d}: no -0"
            );
            let min_normal = match d {
                DType::F64 => f64::MIN_POSITIVE,
                _ => f64::from(f32::MIN_POSITIVE),
            };
            assert!(
                xs.iter().any(|&x| x != 0.0 && x.abs() < min_normal),
                "{d}: no subnormal"
            );
            assert!(xs.iter().all(|&x| d.holds(x)), "{d}: inexact value");
        }
        let ints = sample(&scalar(DType::I32, true), 300);
        assert!(ints.contains(&f64::from(i32::MIN)));
        assert!(ints.iter().all(|&x| DType::I32.holds(x)));
    }

    #[test]
    fn tensor_types_stay_small() {
        for ty in sample(&tensor_type(), 300) {
            assert!(ty.rank() <= MAX_TEST_RANK);
            assert!(ty.shape.iter().all(|&d| (1..=MAX_DIM).contains(&d)));
        }
        let ranks: std::collections::BTreeSet<usize> = sample(&tensor_type(), 300)
            .iter()
            .map(TensorType::rank)
            .collect();
        assert_eq!(ranks.len(), MAX_TEST_RANK + 1);
    }

    #[test]
    fn tensors_have_the_requested_type() {
        let ty = TensorType::new(DType::Bf16, [2, 3]);
        for t in sample(&tensor(ty.clone(), true), 50) {
            assert_eq!(t.ty(), &ty);
        }
    }
}
