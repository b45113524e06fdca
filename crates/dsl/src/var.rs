//! Operations on tensor handles: the primitive ops, with broadcasting.

use std::ops;

use birkhoff_ir::{DType, Op, TensorType};

use crate::builder::Var;

/// The NumPy broadcast of two shapes, if they are compatible.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], k: usize| {
        if k + s.len() >= rank {
            s[k + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|k| match (dim(a, k), dim(b, k)) {
            (x, y) if x == y || y == 1 => Some(x),
            (1, y) => Some(y),
            _ => None,
        })
        .collect()
}

impl<'b> Var<'b> {
    /// The value's type (`None` if the handle is poisoned).
    pub fn ty(&self) -> Option<TensorType> {
        self.id.map(|id| self.b.ty_of(id))
    }

    /// The value's shape (empty if the handle is poisoned).
    pub fn shape(&self) -> Vec<usize> {
        self.ty().map(|t| t.shape).unwrap_or_default()
    }

    /// The value's element type (`f32` if the handle is poisoned).
    pub fn dtype(&self) -> DType {
        self.ty().map_or(DType::F32, |t| t.dtype)
    }

    /// The value's rank.
    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    /// The id of the value in the graph (`None` if poisoned). The built
    /// graph prints the value as `%N` with this `N` (or by its name, see
    /// [`Var::named`]), even though building moves inputs first.
    pub fn id(&self) -> Option<birkhoff_ir::ValueId> {
        self.id
    }

    /// This value, named `name` in the graph's text form (`%name`); see
    /// [`Builder::name`](crate::Builder::name).
    #[track_caller]
    pub fn named(self, name: &str) -> Var<'b> {
        self.b.name(self, name);
        self
    }

    #[track_caller]
    fn unary(self, op: Op) -> Var<'b> {
        self.b.add(op, &[self])
    }

    /// Broadcasts both operands to their common shape, then applies `op`.
    #[track_caller]
    pub(crate) fn binary(self, op: Op, other: Var<'b>) -> Var<'b> {
        let (Some(ta), Some(tb)) = (self.ty(), other.ty()) else {
            return self.b.poisoned();
        };
        let Some(shape) = broadcast_shapes(&ta.shape, &tb.shape) else {
            self.b.error(format!(
                "{}: cannot broadcast {ta} with {tb}",
                op.mnemonic()
            ));
            return self.b.poisoned();
        };
        let a = self.broadcast_to(&shape);
        let c = other.broadcast_to(&shape);
        self.b.add(op, &[a, c])
    }

    /// A constant of this handle's dtype and shape, for scalar operands.
    #[track_caller]
    fn lift(self, value: f64) -> Var<'b> {
        match self.ty() {
            Some(t) => self.b.full(value, t.dtype, &t.shape),
            None => self.b.poisoned(),
        }
    }

    /// `|x|`.
    #[track_caller]
    pub fn abs(self) -> Var<'b> {
        self.unary(Op::Abs)
    }

    /// `e^x`.
    #[track_caller]
    pub fn exp(self) -> Var<'b> {
        self.unary(Op::Exp)
    }

    /// Natural logarithm.
    #[track_caller]
    pub fn log(self) -> Var<'b> {
        self.unary(Op::Log)
    }

    /// Square root.
    #[track_caller]
    pub fn sqrt(self) -> Var<'b> {
        self.unary(Op::Sqrt)
    }

    /// `1 / sqrt(x)`.
    #[track_caller]
    pub fn rsqrt(self) -> Var<'b> {
        self.unary(Op::Rsqrt)
    }

    /// `1 / x`.
    #[track_caller]
    pub fn recip(self) -> Var<'b> {
        self.unary(Op::Recip)
    }

    /// `1 / (1 + e^-x)`.
    #[track_caller]
    pub fn sigmoid(self) -> Var<'b> {
        self.unary(Op::Sigmoid)
    }

    /// Hyperbolic tangent.
    #[track_caller]
    pub fn tanh(self) -> Var<'b> {
        self.unary(Op::Tanh)
    }

    /// Logical not.
    #[track_caller]
    pub fn logical_not(self) -> Var<'b> {
        self.unary(Op::Not)
    }

    /// Elementwise maximum (NaN-propagating).
    #[track_caller]
    pub fn max(self, other: Var<'b>) -> Var<'b> {
        self.binary(Op::Max, other)
    }

    /// Elementwise minimum (NaN-propagating).
    #[track_caller]
    pub fn min(self, other: Var<'b>) -> Var<'b> {
        self.binary(Op::Min, other)
    }

    /// `self ^ other`.
    #[track_caller]
    pub fn pow(self, other: Var<'b>) -> Var<'b> {
        self.binary(Op::Pow, other)
    }

    /// `self == other`.
    #[track_caller]
    pub fn cmp_eq(self, other: Var<'b>) -> Var<'b> {
        self.binary(Op::Eq, other)
    }

    /// `self != other`.
    #[track_caller]
    pub fn cmp_ne(self, other: Var<'b>) -> Var<'b> {
        self.binary(Op::Ne, other)
    }

    /// `self < other`.
    #[track_caller]
    pub fn cmp_lt(self, other: Var<'b>) -> Var<'b> {
        self.binary(Op::Lt, other)
    }

    /// `self <= other`.
    #[track_caller]
    pub fn cmp_le(self, other: Var<'b>) -> Var<'b> {
        self.binary(Op::Le, other)
    }

    /// `self > other`.
    #[track_caller]
    pub fn cmp_gt(self, other: Var<'b>) -> Var<'b> {
        self.binary(Op::Gt, other)
    }

    /// `self >= other`.
    #[track_caller]
    pub fn cmp_ge(self, other: Var<'b>) -> Var<'b> {
        self.binary(Op::Ge, other)
    }

    /// Logical and.
    #[track_caller]
    pub fn logical_and(self, other: Var<'b>) -> Var<'b> {
        self.binary(Op::And, other)
    }

    /// Logical or.
    #[track_caller]
    pub fn logical_or(self, other: Var<'b>) -> Var<'b> {
        self.binary(Op::Or, other)
    }

    /// `self ? a : b` elementwise, broadcasting all three.
    #[track_caller]
    pub fn select(self, a: Var<'b>, b: Var<'b>) -> Var<'b> {
        let (Some(tc), Some(ta), Some(tb)) = (self.ty(), a.ty(), b.ty()) else {
            return self.b.poisoned();
        };
        let Some(shape) =
            broadcast_shapes(&tc.shape, &ta.shape).and_then(|s| broadcast_shapes(&s, &tb.shape))
        else {
            self.b.error(format!(
                "select: cannot broadcast {tc}, {ta} and {tb} together"
            ));
            return self.b.poisoned();
        };
        let (c, x, y) = (
            self.broadcast_to(&shape),
            a.broadcast_to(&shape),
            b.broadcast_to(&shape),
        );
        self.b.add(Op::Select, &[c, x, y])
    }

    /// Sum over `axes`.
    #[track_caller]
    pub fn sum(self, axes: &[usize], keepdims: bool) -> Var<'b> {
        self.b.add(
            Op::ReduceSum {
                axes: axes.to_vec(),
                keepdims,
            },
            &[self],
        )
    }

    /// Maximum over `axes`.
    #[track_caller]
    pub fn max_over(self, axes: &[usize], keepdims: bool) -> Var<'b> {
        self.b.add(
            Op::ReduceMax {
                axes: axes.to_vec(),
                keepdims,
            },
            &[self],
        )
    }

    /// Mean over `axes`: the sum times `1/N`.
    #[track_caller]
    pub fn mean(self, axes: &[usize], keepdims: bool) -> Var<'b> {
        let shape = self.shape();
        let n: usize = axes.iter().filter_map(|&a| shape.get(a)).product();
        self.sum(axes, keepdims) * (1.0 / n as f64)
    }

    /// Same elements, new shape.
    #[track_caller]
    pub fn reshape(self, shape: &[usize]) -> Var<'b> {
        if self.shape() == shape {
            return self;
        }
        self.b.add(
            Op::Reshape {
                shape: shape.to_vec(),
            },
            &[self],
        )
    }

    /// Result axis `k` is input axis `perm[k]`.
    #[track_caller]
    pub fn permute(self, perm: &[usize]) -> Var<'b> {
        self.b.add(
            Op::Permute {
                perm: perm.to_vec(),
            },
            &[self],
        )
    }

    /// Swaps the last two axes.
    #[track_caller]
    pub fn transpose(self) -> Var<'b> {
        if self.id.is_none() {
            return self;
        }
        let r = self.rank();
        if r < 2 {
            self.b.error(format!("transpose needs rank >= 2, got {r}"));
            return self.b.poisoned();
        }
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        self.permute(&perm)
    }

    /// NumPy-style broadcast to `shape` (no node if already that shape).
    #[track_caller]
    pub fn broadcast_to(self, shape: &[usize]) -> Var<'b> {
        if self.id.is_some() && self.shape() == shape {
            return self;
        }
        self.b.add(
            Op::Broadcast {
                shape: shape.to_vec(),
            },
            &[self],
        )
    }

    /// The box `start[k] <= i_k < end[k]`.
    #[track_caller]
    pub fn slice(self, start: &[usize], end: &[usize]) -> Var<'b> {
        self.b.add(
            Op::Slice {
                start: start.to_vec(),
                end: end.to_vec(),
            },
            &[self],
        )
    }

    /// `start..end` along one axis, everything along the others.
    #[track_caller]
    pub fn slice_axis(self, axis: usize, start: usize, end: usize) -> Var<'b> {
        if self.id.is_none() {
            // Its mistake is recorded already; no follow-on error.
            return self;
        }
        let shape = self.shape();
        if axis >= shape.len() {
            self.b.error(format!(
                "slice_axis: axis {axis} out of range for rank {}",
                shape.len()
            ));
            return self.b.poisoned();
        }
        let mut lo = vec![0; shape.len()];
        let mut hi = shape;
        lo[axis] = start;
        hi[axis] = end;
        self.slice(&lo, &hi)
    }

    /// Batched matrix product `[..., M, K] x [..., K, N]`.
    #[track_caller]
    pub fn matmul(self, other: Var<'b>) -> Var<'b> {
        self.b.add(Op::MatMul, &[self, other])
    }

    /// Converts the element type.
    #[track_caller]
    pub fn cast(self, dtype: DType) -> Var<'b> {
        self.b.add(Op::Cast { dtype }, &[self])
    }
}

/// Joins `parts` along `axis`.
#[track_caller]
pub fn concat<'b>(parts: &[Var<'b>], axis: usize) -> Option<Var<'b>> {
    let first = parts.first()?;
    Some(first.b.add(Op::Concat { axis }, parts))
}

macro_rules! binary_operator {
    ($trait:ident, $method:ident, $op:expr) => {
        impl<'b> ops::$trait<Var<'b>> for Var<'b> {
            type Output = Var<'b>;
            #[track_caller]
            fn $method(self, rhs: Var<'b>) -> Var<'b> {
                self.binary($op, rhs)
            }
        }
        impl<'b> ops::$trait<f64> for Var<'b> {
            type Output = Var<'b>;
            #[track_caller]
            fn $method(self, rhs: f64) -> Var<'b> {
                let c = self.lift(rhs);
                self.binary($op, c)
            }
        }
        impl<'b> ops::$trait<Var<'b>> for f64 {
            type Output = Var<'b>;
            #[track_caller]
            fn $method(self, rhs: Var<'b>) -> Var<'b> {
                let c = rhs.lift(self);
                c.binary($op, rhs)
            }
        }
    };
}

binary_operator!(Add, add, Op::Add);
binary_operator!(Sub, sub, Op::Sub);
binary_operator!(Mul, mul, Op::Mul);
binary_operator!(Div, div, Op::Div);

impl<'b> ops::Neg for Var<'b> {
    type Output = Var<'b>;
    #[track_caller]
    fn neg(self) -> Var<'b> {
        self.unary(Op::Neg)
    }
}
