//! Small constructors for kernel IR, so that a template reads like the
//! loop nest it emits.
//!
//! [`KernelBuilder`] owns the kernel under construction (its variables and scratch
//! arrays) and the compute type of the op; the free functions build
//! statements and expressions. Loops are built with closures that receive
//! the fresh loop index, so indices are always in scope where they are
//! used.

use birkhoff_ir::kernel::{
    BufferId, Expr, Index, Kernel, LocalId, LoopKind, ScalarType, Stmt, VarId,
};
use birkhoff_ir::{DType, Op};

use crate::builder::ProgramBuilder;

/// A kernel under construction, with the compute type of its op.
pub(crate) struct KernelBuilder {
    /// The kernel (its body is set by [`KernelBuilder::finish`]).
    k: Kernel,
    /// Compute type of every float value (`f32` for `f32` and `bf16`).
    pub compute_type: ScalarType,
    /// Whether results are stored as bf16 (so a result buffer is no exact
    /// scratch space: storing rounds).
    pub bf16: bool,
    /// [`crate::LowerOptions::column_reductions`].
    pub column_reductions: bool,
    /// [`crate::LowerOptions::reciprocal_lines`].
    pub reciprocal_lines: bool,
}

impl KernelBuilder {
    /// A fresh kernel named after `what`, computing in the type of `dtype`.
    pub fn new(pb: &ProgramBuilder, what: &str, dtype: DType) -> KernelBuilder {
        KernelBuilder {
            k: pb.kernel(what),
            compute_type: ScalarType::of(dtype),
            bf16: dtype == DType::Bf16,
            column_reductions: pb.column_reductions,
            reciprocal_lines: pb.reciprocal_lines,
        }
    }

    /// A new loop index.
    pub fn index(&mut self) -> VarId {
        self.k.var(ScalarType::Index)
    }

    /// A new value variable of the compute type.
    pub fn value(&mut self) -> VarId {
        self.k.var(self.compute_type)
    }

    /// A new scratch array of the compute type, private to each iteration
    /// of the kernel's outermost loop.
    pub fn local(&mut self, len: usize) -> LocalId {
        self.k.local(self.compute_type, len)
    }

    /// A constant of the compute type. `f32` constants are rounded to
    /// `f32` here, so that the interpreter, the printed IR and a backend's
    /// immediate operand all hold the same value.
    pub fn c(&self, v: f64) -> Expr {
        let v = match self.compute_type {
            ScalarType::F32 => DType::F32.round(v),
            _ => v,
        };
        Expr::constant(self.compute_type, v)
    }

    /// A loop of `kind` over `0..extent`; `body` gets the loop index.
    pub fn lp(
        &mut self,
        kind: LoopKind,
        extent: usize,
        body: impl FnOnce(&mut KernelBuilder, VarId) -> Vec<Stmt>,
    ) -> Stmt {
        let var = self.index();
        let body = body(self, var);
        Stmt::Loop {
            var,
            extent,
            kind,
            body,
        }
    }

    /// `parallel i in 0..extent`.
    pub fn parallel(
        &mut self,
        extent: usize,
        body: impl FnOnce(&mut KernelBuilder, VarId) -> Vec<Stmt>,
    ) -> Stmt {
        self.lp(LoopKind::Parallel, extent, body)
    }

    /// `for i in 0..extent` (in order).
    pub fn serial(
        &mut self,
        extent: usize,
        body: impl FnOnce(&mut KernelBuilder, VarId) -> Vec<Stmt>,
    ) -> Stmt {
        self.lp(LoopKind::Serial, extent, body)
    }

    /// `vector i in 0..extent`: independent lanes over contiguous memory,
    /// plus accumulators declared outside.
    pub fn vector(
        &mut self,
        extent: usize,
        body: impl FnOnce(&mut KernelBuilder, VarId) -> Vec<Stmt>,
    ) -> Stmt {
        self.lp(LoopKind::Vector, extent, body)
    }

    /// The finished kernel with `body` as its code.
    pub fn finish(mut self, body: Vec<Stmt>) -> Kernel {
        self.k.body = body;
        self.k
    }

    /// How a line's elements are divided by its sum `s`, and the statement
    /// that sets the sum's reciprocal when the line divides through one
    /// ([`crate::LowerOptions::reciprocal_lines`]).
    pub fn line_divisor(&mut self, s: VarId) -> (LineDivisor, Option<Stmt>) {
        if self.reciprocal_lines {
            let r = self.value();
            let recip = set(r, unary(Op::Recip, var(s)));
            (LineDivisor::Reciprocal(r), Some(recip))
        } else {
            (LineDivisor::Exact(s), None)
        }
    }
}

/// A line's divisor: its sum, or the sum's reciprocal.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LineDivisor {
    /// Divide by the sum in this variable.
    Exact(VarId),
    /// Multiply by the reciprocal in this variable.
    Reciprocal(VarId),
}

impl LineDivisor {
    /// `x` divided by the line's sum.
    pub fn apply(self, x: Expr) -> Expr {
        match self {
            LineDivisor::Exact(s) => div(x, var(s)),
            LineDivisor::Reciprocal(r) => mul(x, var(r)),
        }
    }
}

/// `var = e`.
pub(crate) fn set(var: VarId, e: Expr) -> Stmt {
    Stmt::Set { var, value: e }
}

/// `buf[index] = e`.
pub(crate) fn store(buf: BufferId, index: Index, e: Expr) -> Stmt {
    Stmt::Store {
        buf,
        index,
        value: e,
    }
}

/// `local[index] = e`.
pub(crate) fn store_local(local: LocalId, index: Index, e: Expr) -> Stmt {
    Stmt::LocalStore {
        local,
        index,
        value: e,
    }
}

/// The value of a variable.
pub(crate) fn var(v: VarId) -> Expr {
    Expr::Var(v)
}

/// `buf[index]`.
pub(crate) fn load(buf: BufferId, index: Index) -> Expr {
    Expr::load(buf, index)
}

/// `local[index]`.
pub(crate) fn load_local(local: LocalId, index: Index) -> Expr {
    Expr::LocalLoad { local, index }
}

/// `a + b`.
pub(crate) fn add(a: Expr, b: Expr) -> Expr {
    Expr::binary(Op::Add, a, b)
}

/// `a - b`.
pub(crate) fn sub(a: Expr, b: Expr) -> Expr {
    Expr::binary(Op::Sub, a, b)
}

/// `a * b`.
pub(crate) fn mul(a: Expr, b: Expr) -> Expr {
    Expr::binary(Op::Mul, a, b)
}

/// `a / b`.
pub(crate) fn div(a: Expr, b: Expr) -> Expr {
    Expr::binary(Op::Div, a, b)
}

/// `max(a, b)`, NaN if either is NaN.
pub(crate) fn max(a: Expr, b: Expr) -> Expr {
    Expr::binary(Op::Max, a, b)
}

/// A unary graph op applied to `a`.
pub(crate) fn unary(op: Op, a: Expr) -> Expr {
    Expr::unary(op, a)
}

/// `base + coeff · v`, leaving `base` untouched.
pub(crate) fn at(base: &Index, v: VarId, coeff: i64) -> Index {
    base.clone().plus(v, coeff)
}

/// `a + b`.
pub(crate) fn join(a: &Index, b: &Index) -> Index {
    b.terms
        .iter()
        .fold(a.clone().shifted(b.offset), |acc, &(v, c)| acc.plus(v, c))
}

/// A size as an index coefficient or offset.
pub(crate) fn index_coeff(n: usize) -> i64 {
    i64::try_from(n).expect("verified shapes have fewer than 2^63 elements")
}
