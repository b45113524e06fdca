//! The kernel IR: loop nests over buffers.
//!
//! A [`Program`] is what lowering makes of a graph: a list of buffers
//! (inputs, outputs, constants, temporaries placed in one arena) and a
//! list of [`Kernel`]s run in order. A kernel is structured code — loops
//! with static extents, scalar variables, loads and stores at affine
//! indices, small private scratch arrays, and calls to runtime routines
//! (matrix products). Everything a backend needs is explicit: loop kinds
//! say which loops may run in parallel or as SIMD lanes, and every index
//! is an affine function of loop variables, so bounds are checked
//! statically ([`verify_program`]).
//!
//! Arithmetic reuses the graph IR's elementwise [`Op`]s and their
//! semantics. Values are typed ([`ScalarType`]): `bf16` buffers load as
//! `f32` and round to nearest-even when stored.
//!
//! What every backend reads off kernel code is stated here once, so the
//! backends cannot drift from the verifier or from each other: the
//! accumulator form of an update ([`acc_form`]), the buffers and scratch
//! arrays a statement list uses ([`buffers_used`], [`locals_used`]), an
//! expression's type ([`Expr::ty`]), variable scopes ([`Scopes`]), and
//! the constants of the inline `f32` math routines ([`math_consts`]).

mod analysis;
mod backend;
mod interp;
pub mod math_consts;
mod print;
mod verify;

pub use analysis::{AccOp, Scopes, acc_form, buffers_used, contraction, locals_used};
pub use backend::{Artifact, Backend};
pub use interp::{KernelInterpError, run_program};
pub use verify::{KernelVerifyError, verify_program};

use crate::op::Op;
use crate::types::{DType, TensorType};

/// A buffer of a program, by index into [`Program::buffers`]. Displays as `%bN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub u32);

/// A scalar variable of a kernel (loop index or value), by index into
/// [`Kernel::vars`]. Displays as `%iN` for indices and `%vN` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarId(pub u32);

/// A private scratch array of a kernel, by index into [`Kernel::locals`].
/// Displays as `%lN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalId(pub u32);

/// The type of a scalar value in a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalarType {
    /// IEEE binary32 (also the compute type of bf16).
    F32,
    /// IEEE binary64.
    F64,
    /// 32-bit two's complement.
    I32,
    /// Boolean.
    Bool,
    /// A loop index (a non-negative 64-bit integer).
    Index,
}

impl ScalarType {
    /// The compute type of values stored as `d`.
    pub fn of(d: DType) -> ScalarType {
        match d {
            DType::F32 | DType::Bf16 => ScalarType::F32,
            DType::F64 => ScalarType::F64,
            DType::I32 => ScalarType::I32,
            DType::Bool => ScalarType::Bool,
        }
    }

    /// The graph dtype with this compute type (`Index` has none).
    pub fn dtype(self) -> Option<DType> {
        match self {
            ScalarType::F32 => Some(DType::F32),
            ScalarType::F64 => Some(DType::F64),
            ScalarType::I32 => Some(DType::I32),
            ScalarType::Bool => Some(DType::Bool),
            ScalarType::Index => None,
        }
    }

    /// Text spelling.
    pub fn name(self) -> &'static str {
        match self {
            ScalarType::F32 => "f32",
            ScalarType::F64 => "f64",
            ScalarType::I32 => "i32",
            ScalarType::Bool => "bool",
            ScalarType::Index => "index",
        }
    }

    /// Bytes of one element of a scratch array of this type (a `bool`
    /// is one byte, an index eight).
    pub fn size_bytes(self) -> usize {
        match self {
            ScalarType::Bool => 1,
            ScalarType::F32 | ScalarType::I32 => 4,
            ScalarType::F64 | ScalarType::Index => 8,
        }
    }
}

/// `offset + Σ coeff · var` over loop variables: the only form an index takes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Index {
    /// Constant part.
    pub offset: i64,
    /// `(loop variable, coefficient)` pairs, each variable at most once.
    pub terms: Vec<(VarId, i64)>,
}

impl Index {
    /// A constant index.
    pub fn constant(offset: i64) -> Index {
        Index {
            offset,
            terms: Vec::new(),
        }
    }

    /// `coeff · var`.
    pub fn var(var: VarId, coeff: i64) -> Index {
        Index {
            offset: 0,
            terms: vec![(var, coeff)],
        }
    }

    /// This index plus `coeff · var` (merging with an existing term).
    pub fn plus(mut self, var: VarId, coeff: i64) -> Index {
        if coeff == 0 {
            return self;
        }
        match self.terms.iter_mut().find(|(v, _)| *v == var) {
            Some((_, c)) => *c += coeff,
            None => self.terms.push((var, coeff)),
        }
        self.terms.retain(|&(_, c)| c != 0);
        self
    }

    /// This index plus a constant.
    pub fn shifted(mut self, by: i64) -> Index {
        self.offset += by;
        self
    }

    /// The coefficient of `var` (0 if absent).
    pub fn coeff(&self, var: VarId) -> i64 {
        self.terms
            .iter()
            .find(|(v, _)| *v == var)
            .map_or(0, |&(_, c)| c)
    }

    /// This index with its terms sorted by variable: one key for every
    /// spelling of the same affine function.
    pub fn normalized(&self) -> Index {
        let mut ix = self.clone();
        ix.terms.sort();
        ix
    }
}

/// A scalar expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A constant of a type.
    Const {
        /// Its type.
        ty: ScalarType,
        /// Its value (exact for every type).
        value: f64,
    },
    /// A variable's current value (a loop index is of type `Index`).
    Var(VarId),
    /// `buf[index]`, widened from its storage type.
    Load {
        /// The buffer.
        buf: BufferId,
        /// The element.
        index: Index,
    },
    /// `local[index]`.
    LocalLoad {
        /// The scratch array.
        local: LocalId,
        /// The element.
        index: Index,
    },
    /// An elementwise unary graph op.
    Unary {
        /// One of the graph IR's unary ops.
        op: Op,
        /// Operand.
        arg: Box<Expr>,
    },
    /// An elementwise binary graph op (both operands of one type).
    Binary {
        /// One of the graph IR's binary ops.
        op: Op,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `cond ? then : otherwise`.
    Select {
        /// A bool.
        cond: Box<Expr>,
        /// Value if true.
        then: Box<Expr>,
        /// Value if false.
        otherwise: Box<Expr>,
    },
    /// Conversion, as the graph IR's `cast` (from `Index` too).
    Cast {
        /// Target type (not `Index`).
        to: ScalarType,
        /// Operand.
        arg: Box<Expr>,
    },
}

impl Expr {
    /// A constant.
    pub fn constant(ty: ScalarType, value: f64) -> Expr {
        Expr::Const { ty, value }
    }

    /// `op(arg)`.
    pub fn unary(op: Op, arg: Expr) -> Expr {
        Expr::Unary {
            op,
            arg: Box::new(arg),
        }
    }

    /// `op(lhs, rhs)`.
    pub fn binary(op: Op, lhs: Expr, rhs: Expr) -> Expr {
        Expr::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        }
    }

    /// `buf[index]`.
    pub fn load(buf: BufferId, index: Index) -> Expr {
        Expr::Load { buf, index }
    }

    /// `(op, e)` when this is `var op e` or `e op var` with `op` one of
    /// `add`, `max`, `min`: the shape of an accumulator update, which a
    /// backend may reorder (split into partials and combine).
    pub fn accumulates(&self, var: VarId) -> Option<(&Op, &Expr)> {
        let Expr::Binary { op, lhs, rhs } = self else {
            return None;
        };
        if !matches!(op, Op::Add | Op::Max | Op::Min) {
            return None;
        }
        match (&**lhs, &**rhs) {
            (Expr::Var(v), e) | (e, Expr::Var(v)) if *v == var => Some((op, e)),
            _ => None,
        }
    }

    /// Calls `f` on this expression and every subexpression, outermost first.
    pub fn walk(&self, f: &mut impl FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Unary { arg, .. } | Expr::Cast { arg, .. } => arg.walk(f),
            Expr::Binary { lhs, rhs, .. } => {
                lhs.walk(f);
                rhs.walk(f);
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                cond.walk(f);
                then.walk(f);
                otherwise.walk(f);
            }
            Expr::Const { .. } | Expr::Var(_) | Expr::Load { .. } | Expr::LocalLoad { .. } => {}
        }
    }
}

impl Stmt {
    /// The expression a statement evaluates, if any.
    pub fn value(&self) -> Option<&Expr> {
        match self {
            Stmt::Set { value, .. }
            | Stmt::Store { value, .. }
            | Stmt::LocalStore { value, .. } => Some(value),
            Stmt::Loop { .. } | Stmt::Gemm(_) => None,
        }
    }
}

/// Calls `f` on every statement of `body`, loop bodies included,
/// outermost first.
pub fn walk_stmts(body: &[Stmt], f: &mut impl FnMut(&Stmt)) {
    for s in body {
        f(s);
        if let Stmt::Loop { body, .. } = s {
            walk_stmts(body, f);
        }
    }
}

/// Calls `f` on every expression (and subexpression) in `body`.
pub fn walk_exprs(body: &[Stmt], f: &mut impl FnMut(&Expr)) {
    walk_stmts(body, &mut |s| {
        if let Some(e) = s.value() {
            e.walk(f);
        }
    });
}

/// How a loop's iterations may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoopKind {
    /// In order.
    Serial,
    /// In any order, on any thread: iterations are independent (no two
    /// write the same element, none reads what another writes). Only the
    /// outermost statements of a kernel may be parallel loops.
    Parallel,
    /// Independent iterations that a backend may run as SIMD lanes. The
    /// body may also update accumulators `acc = acc + e` or
    /// `acc = max(acc, e)` declared outside the loop; such reductions may
    /// be reassociated.
    Vector,
}

/// A matrix product routine: for each of `batch` products,
/// `c[m×n] = a[m×k] · b[k×n]` (or `c += …` when `accumulate`), every
/// operand addressed by an offset and row/column strides in elements.
///
/// Operands: `a` and `b` of one storage type — `f32`, `f64`, or `bf16`
/// (widened exactly to `f32`), or one `f32` and one `bf16` — and `c` of
/// their compute type, or `bf16`
/// for `f32`/`bf16` operands (summed in `f32`, rounded once on the store;
/// not with `row_sumsq`). Products are summed in the compute type in any
/// order.
///
/// With `row_sumsq`, the routine also writes `Σ_k a[i,k]²` for every row
/// `i` (of every product) — the sum of squares an RMS normalization of the
/// rows needs, computed while `a` streams through for the product (the
/// mHC pre-mix's projection reads each token's row once for both). Not
/// every backend's routine takes `bf16` operands or `row_sumsq`; lowering
/// emits them only where its options say the target's backend does.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemm {
    /// Rows of `a` and `c`.
    pub m: usize,
    /// Columns of `b` and `c`.
    pub n: usize,
    /// Columns of `a`, rows of `b`.
    pub k: usize,
    /// Independent products.
    pub batch: usize,
    /// Left operand.
    pub a: Matrix,
    /// Right operand.
    pub b: Matrix,
    /// Result.
    pub c: Matrix,
    /// Add to `c` instead of overwriting it.
    pub accumulate: bool,
    /// Where to write the sum of squares of each row of `a`, as an
    /// `m × 1` matrix of `c`'s type (its `col_stride` is unused).
    pub row_sumsq: Option<Matrix>,
}

/// A strided matrix inside a buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    /// The buffer.
    pub buf: BufferId,
    /// Element offset of `[0, 0]` of the first product.
    pub offset: usize,
    /// Element stride between rows.
    pub row_stride: usize,
    /// Element stride between columns.
    pub col_stride: usize,
    /// Element stride between products of the batch.
    pub batch_stride: usize,
}

/// A statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `for var in 0..extent { body }`.
    Loop {
        /// The loop index (type `Index`).
        var: VarId,
        /// Number of iterations.
        extent: usize,
        /// Serial, parallel or vector.
        kind: LoopKind,
        /// The body.
        body: Vec<Stmt>,
    },
    /// Sets a value variable (declaring it on first use in its scope).
    Set {
        /// The variable.
        var: VarId,
        /// Its new value.
        value: Expr,
    },
    /// `buf[index] = value`, rounded to the buffer's storage type.
    Store {
        /// The buffer.
        buf: BufferId,
        /// The element.
        index: Index,
        /// The value (of the buffer's compute type).
        value: Expr,
    },
    /// `local[index] = value`.
    LocalStore {
        /// The scratch array.
        local: LocalId,
        /// The element.
        index: Index,
        /// The value.
        value: Expr,
    },
    /// A matrix product.
    Gemm(Gemm),
}

/// What a buffer holds.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferKind {
    /// A graph input, supplied by the caller.
    Input,
    /// A graph output, returned to the caller.
    Output,
    /// A constant, filled once.
    Const(Vec<f64>),
    /// An intermediate, placed in the arena at `offset` bytes.
    Temp {
        /// Byte offset in the arena (from the memory plan).
        offset: usize,
    },
}

/// One buffer of a program: a row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferDecl {
    /// For dumps: the graph value or input/output name it holds.
    pub name: String,
    /// Storage type and shape.
    pub ty: TensorType,
    /// Role.
    pub kind: BufferKind,
}

impl BufferDecl {
    /// Elements.
    pub fn len(&self) -> usize {
        self.ty.num_elements()
    }

    /// Whether it has no elements (never, for a verified program).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Storage type.
    pub fn dtype(&self) -> DType {
        self.ty.dtype
    }

    /// Whether kernels may write it.
    pub fn is_writable(&self) -> bool {
        matches!(self.kind, BufferKind::Output | BufferKind::Temp { .. })
    }
}

/// A declared variable.
#[derive(Clone, Debug, PartialEq)]
pub struct VarDecl {
    /// Its type.
    pub ty: ScalarType,
}

/// A declared scratch array, private to each iteration of the kernel's
/// outermost loop.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalDecl {
    /// Element type.
    pub ty: ScalarType,
    /// Elements.
    pub len: usize,
}

/// One kernel: a statement list over the program's buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// Name, for dumps and profiles (`k3_mhc_pre`).
    pub name: String,
    /// Every variable used.
    pub vars: Vec<VarDecl>,
    /// Every scratch array used.
    pub locals: Vec<LocalDecl>,
    /// The code.
    pub body: Vec<Stmt>,
}

impl Kernel {
    /// An empty kernel.
    pub fn new(name: impl Into<String>) -> Kernel {
        Kernel {
            name: name.into(),
            vars: Vec::new(),
            locals: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Declares a variable.
    pub fn var(&mut self, ty: ScalarType) -> VarId {
        self.vars.push(VarDecl { ty });
        VarId(self.vars.len() as u32 - 1)
    }

    /// Declares a scratch array.
    pub fn local(&mut self, ty: ScalarType, len: usize) -> LocalId {
        self.locals.push(LocalDecl { ty, len });
        LocalId(self.locals.len() as u32 - 1)
    }
}

/// A lowered graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// The graph's name.
    pub name: String,
    /// Every buffer.
    pub buffers: Vec<BufferDecl>,
    /// Graph inputs: `(name, buffer)` in signature order.
    pub inputs: Vec<(String, BufferId)>,
    /// Graph outputs: `(name, buffer)` in signature order.
    pub outputs: Vec<(String, BufferId)>,
    /// Kernels, run in order.
    pub kernels: Vec<Kernel>,
    /// Bytes of the arena holding every `Temp` buffer.
    pub arena_bytes: usize,
}

impl Program {
    /// The declaration of a buffer.
    pub fn buffer(&self, b: BufferId) -> &BufferDecl {
        &self.buffers[b.0 as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulator_updates_are_recognized_either_way_round() {
        let (v, w) = (VarId(0), VarId(1));
        let e = Expr::constant(ScalarType::F32, 2.0);
        let sum = Expr::binary(Op::Add, Expr::Var(v), e.clone());
        assert_eq!(sum.accumulates(v), Some((&Op::Add, &e)));
        let max = Expr::binary(Op::Max, e.clone(), Expr::Var(v));
        assert_eq!(max.accumulates(v), Some((&Op::Max, &e)));
        // Another variable, or an op that does not reassociate.
        assert_eq!(sum.accumulates(w), None);
        assert_eq!(Expr::binary(Op::Sub, Expr::Var(v), e).accumulates(v), None);
        assert_eq!(Expr::Var(v).accumulates(v), None);
    }
}
