//! A thin helper that appends typed nodes to the gradient graph.
//!
//! Every node goes through [`Graph::add`], so its type is inferred and
//! checked by the IR's own rules; a failure there is a bug in a gradient
//! rule and comes back as [`AutodiffError::Build`](crate::AutodiffError).

use birkhoff_ir::{DType, Graph, Literal, Op, TensorType, ValueId};

use crate::error::Result;

/// Appends nodes to a graph under construction.
pub(crate) struct Appender<'g> {
    pub(crate) g: &'g mut Graph,
}

impl Appender<'_> {
    /// The tensor type of `v`.
    pub(crate) fn ty(&self, v: ValueId) -> TensorType {
        self.g.ty(v).clone()
    }

    /// Appends `op(args)`.
    pub(crate) fn op(&mut self, op: Op, args: &[ValueId]) -> Result<ValueId> {
        Ok(self.g.add(op, args)?)
    }

    /// A constant of type `ty` with every element `x`.
    pub(crate) fn splat(&mut self, ty: TensorType, x: f64) -> Result<ValueId> {
        self.op(Op::Const(Literal::splat(ty, x)), &[])
    }

    /// A constant shaped and typed like `v`, every element `x`.
    pub(crate) fn splat_like(&mut self, v: ValueId, x: f64) -> Result<ValueId> {
        let ty = self.ty(v);
        self.splat(ty, x)
    }

    /// `a + b`.
    pub(crate) fn add(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.op(Op::Add, &[a, b])
    }

    /// `a - b`.
    pub(crate) fn sub(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.op(Op::Sub, &[a, b])
    }

    /// `a * b`.
    pub(crate) fn mul(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.op(Op::Mul, &[a, b])
    }

    /// `a / b`.
    pub(crate) fn div(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.op(Op::Div, &[a, b])
    }

    /// `-a`.
    pub(crate) fn neg(&mut self, a: ValueId) -> Result<ValueId> {
        self.op(Op::Neg, &[a])
    }

    /// `a * c` for a constant `c`.
    pub(crate) fn scale(&mut self, a: ValueId, c: f64) -> Result<ValueId> {
        let k = self.splat_like(a, c)?;
        self.mul(a, k)
    }

    /// `c - a` for a constant `c`.
    pub(crate) fn rsub(&mut self, c: f64, a: ValueId) -> Result<ValueId> {
        let k = self.splat_like(a, c)?;
        self.sub(k, a)
    }

    /// `cond ? a : b`.
    pub(crate) fn select(&mut self, cond: ValueId, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.op(Op::Select, &[cond, a, b])
    }

    /// `cond ? a : 0`.
    pub(crate) fn select_or_zero(&mut self, cond: ValueId, a: ValueId) -> Result<ValueId> {
        let z = self.splat_like(a, 0.0)?;
        self.select(cond, a, z)
    }

    /// `x` reshaped to `shape`, or `x` itself if it already has that shape.
    pub(crate) fn reshape(&mut self, x: ValueId, shape: &[usize]) -> Result<ValueId> {
        if self.g.ty(x).shape == shape {
            return Ok(x);
        }
        self.op(
            Op::Reshape {
                shape: shape.to_vec(),
            },
            &[x],
        )
    }

    /// `x` broadcast to `shape`, or `x` itself if it already has that shape.
    pub(crate) fn broadcast(&mut self, x: ValueId, shape: &[usize]) -> Result<ValueId> {
        if self.g.ty(x).shape == shape {
            return Ok(x);
        }
        self.op(
            Op::Broadcast {
                shape: shape.to_vec(),
            },
            &[x],
        )
    }

    /// `x` cast to `dtype`, or `x` itself if it already has that type.
    pub(crate) fn cast(&mut self, x: ValueId, dtype: DType) -> Result<ValueId> {
        if self.g.ty(x).dtype == dtype {
            return Ok(x);
        }
        self.op(Op::Cast { dtype }, &[x])
    }
}
