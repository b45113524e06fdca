//! Facts about kernel code that every backend needs, stated once.
//!
//! Input: statements and expressions of a kernel, verified where a
//! function says so. Output: plain data — an accumulator's form, the
//! buffers and scratch arrays a statement list uses, an expression's
//! type, which variables are in scope. Nothing here changes the code.
//!
//! The CPU and GPU backends each decide from these whether a loop is a
//! reduction they may reorder and which memory a generated function
//! touches; the verifier and the interpreter read scopes and types by the
//! same rules, so a backend cannot drift from what was verified.

use std::collections::{BTreeSet, HashSet};

use crate::op::Op;

use super::{BufferId, Expr, Kernel, LocalId, Program, ScalarType, Stmt, VarId};
use super::{walk_exprs, walk_stmts};

/// How an accumulator `acc = acc op e` combines (see
/// [`LoopKind::Vector`](super::LoopKind::Vector)): the ops a backend may
/// reassociate, splitting a reduction into partials and combining them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccOp {
    /// `acc + e`.
    Add,
    /// `max(acc, e)`.
    Max,
    /// `min(acc, e)`.
    Min,
}

impl AccOp {
    /// The graph op.
    pub fn op(self) -> Op {
        match self {
            AccOp::Add => Op::Add,
            AccOp::Max => Op::Max,
            AccOp::Min => Op::Min,
        }
    }

    /// The identity element in type `t`, the start of every partial:
    /// `-0` for float sums (so a sum of `-0`s stays `-0`), `∓inf` for
    /// float `max`/`min`, and `0` or the `i32` extremes otherwise.
    pub fn identity(self, t: ScalarType) -> f64 {
        let float = matches!(t, ScalarType::F32 | ScalarType::F64);
        match (self, float) {
            (AccOp::Add, true) => -0.0,
            (AccOp::Add, false) => 0.0,
            (AccOp::Max, true) => f64::NEG_INFINITY,
            (AccOp::Max, false) => f64::from(i32::MIN),
            (AccOp::Min, true) => f64::INFINITY,
            (AccOp::Min, false) => f64::from(i32::MAX),
        }
    }
}

/// The accumulator form of `var = value`, if it is one: `(op, e)` for
/// `value` = `var op e` or `e op var` ([`Expr::accumulates`]).
pub fn acc_form(var: VarId, value: &Expr) -> Option<(AccOp, &Expr)> {
    let (op, e) = value.accumulates(var)?;
    let op = match op {
        Op::Add => AccOp::Add,
        Op::Max => AccOp::Max,
        _ => AccOp::Min,
    };
    Some((op, e))
}

/// The buffers that loads and stores in `body` (loop bodies included)
/// access, each once, in id order. Matrix products' operands are not
/// counted: a `gemm` addresses its buffers itself.
pub fn buffers_used(body: &[Stmt]) -> Vec<BufferId> {
    let mut out = BTreeSet::new();
    walk_stmts(body, &mut |s| {
        if let Stmt::Store { buf, .. } = s {
            out.insert(*buf);
        }
    });
    walk_exprs(body, &mut |e| {
        if let Expr::Load { buf, .. } = e {
            out.insert(*buf);
        }
    });
    out.into_iter().collect()
}

/// The scratch arrays that `body` (loop bodies included) loads or
/// stores, each once, in id order.
pub fn locals_used(body: &[Stmt]) -> Vec<LocalId> {
    let mut out = BTreeSet::new();
    walk_stmts(body, &mut |s| {
        if let Stmt::LocalStore { local, .. } = s {
            out.insert(*local);
        }
    });
    walk_exprs(body, &mut |e| {
        if let Expr::LocalLoad { local, .. } = e {
            out.insert(*local);
        }
    });
    out.into_iter().collect()
}

impl Expr {
    /// How many times this expression reads variable `var`.
    pub fn reads(&self, var: VarId) -> usize {
        let mut n = 0;
        self.walk(&mut |e| {
            if matches!(e, Expr::Var(v) if *v == var) {
                n += 1;
            }
        });
        n
    }

    /// The type of this expression in `kernel` of `program`, by the
    /// verifier's rules. The expression must be one the verifier accepted
    /// there (its variables, buffers and scratch arrays exist).
    pub fn ty(&self, program: &Program, kernel: &Kernel) -> ScalarType {
        match self {
            Expr::Const { ty, .. } | Expr::Cast { to: ty, .. } => *ty,
            Expr::Var(v) => kernel.vars[v.0 as usize].ty,
            Expr::Load { buf, .. } => ScalarType::of(program.buffer(*buf).dtype()),
            Expr::LocalLoad { local, .. } => kernel.locals[local.0 as usize].ty,
            Expr::Unary { arg, .. } => arg.ty(program, kernel),
            Expr::Binary { op, lhs, .. } => {
                if op.is_comparison() {
                    ScalarType::Bool
                } else {
                    lhs.ty(program, kernel)
                }
            }
            Expr::Select { then, .. } => then.ty(program, kernel),
        }
    }
}

/// The operands of a multiply-add that backends contract into one fused
/// multiply-add (one rounding instead of two): `(a, b, c, negate)` for
/// `op(lhs, rhs)` equal to `a * b + c`, or `c - a * b` when `negate`.
/// `add(mul(a, b), c)` fuses its left product when both operands are
/// products. Backends apply it to float types only; sharing the rule keeps
/// their roundings the same.
pub fn contraction<'e>(
    op: &Op,
    lhs: &'e Expr,
    rhs: &'e Expr,
) -> Option<(&'e Expr, &'e Expr, &'e Expr, bool)> {
    let mul = |e: &'e Expr| match e {
        Expr::Binary {
            op: Op::Mul,
            lhs,
            rhs,
        } => Some((&**lhs, &**rhs)),
        _ => None,
    };
    match op {
        Op::Add => mul(lhs)
            .map(|(a, b)| (a, b, rhs, false))
            .or_else(|| mul(rhs).map(|(a, b)| (a, b, lhs, false))),
        Op::Sub => mul(rhs).map(|(a, b)| (a, b, lhs, true)),
        _ => None,
    }
}

/// The value variables in scope while walking a kernel's statements, by
/// the verifier's rule: a `Set` declares its variable in the innermost
/// open statement list unless an enclosing one already has it, and the
/// declaration ends with that list. Loop indices are not tracked.
#[derive(Clone, Debug, Default)]
pub struct Scopes {
    stack: Vec<HashSet<VarId>>,
}

impl Scopes {
    /// Opens a statement list.
    pub fn push(&mut self) {
        self.stack.push(HashSet::new());
    }

    /// Closes the innermost statement list.
    pub fn pop(&mut self) {
        self.stack.pop();
    }

    /// Whether `v` is set in an open statement list.
    pub fn defined(&self, v: VarId) -> bool {
        self.stack.iter().any(|s| s.contains(&v))
    }

    /// Records `v = …` in the innermost open list (nothing if `v` is
    /// already defined, or no list is open).
    pub fn set(&mut self, v: VarId) {
        if !self.defined(v)
            && let Some(top) = self.stack.last_mut()
        {
            top.insert(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{BufferDecl, BufferKind, Index, LoopKind};
    use crate::types::{DType, TensorType};

    fn c(v: f64) -> Expr {
        Expr::constant(ScalarType::F32, v)
    }

    #[test]
    fn accumulator_forms() {
        let (v, w) = (VarId(0), VarId(1));
        let e = c(2.0);
        let sum = Expr::binary(Op::Add, e.clone(), Expr::Var(v));
        assert_eq!(acc_form(v, &sum), Some((AccOp::Add, &e)));
        let max = Expr::binary(Op::Max, Expr::Var(v), e.clone());
        assert_eq!(acc_form(v, &max), Some((AccOp::Max, &e)));
        let min = Expr::binary(Op::Min, e.clone(), Expr::Var(v));
        assert_eq!(acc_form(v, &min), Some((AccOp::Min, &e)));
        // Another variable, an op that does not reassociate, no op at all.
        assert_eq!(acc_form(w, &sum), None);
        assert_eq!(
            acc_form(v, &Expr::binary(Op::Mul, Expr::Var(v), c(2.0))),
            None
        );
        assert_eq!(acc_form(v, &Expr::Var(v)), None);
        for op in [AccOp::Add, AccOp::Max, AccOp::Min] {
            let x = Expr::binary(op.op(), Expr::Var(v), e.clone());
            assert_eq!(acc_form(v, &x).map(|a| a.0), Some(op));
        }
    }

    #[test]
    fn identities_leave_every_value_alone() {
        for t in [ScalarType::F32, ScalarType::F64] {
            assert!(AccOp::Add.identity(t) == 0.0 && AccOp::Add.identity(t).is_sign_negative());
            assert_eq!(AccOp::Max.identity(t), f64::NEG_INFINITY);
            assert_eq!(AccOp::Min.identity(t), f64::INFINITY);
        }
        let t = ScalarType::I32;
        assert!(AccOp::Add.identity(t) == 0.0 && AccOp::Add.identity(t).is_sign_positive());
        assert_eq!(AccOp::Max.identity(t), f64::from(i32::MIN));
        assert_eq!(AccOp::Min.identity(t), f64::from(i32::MAX));
    }

    #[test]
    fn buffers_and_locals_come_once_each_in_id_order() {
        let i = VarId(0);
        let load = |b| Expr::load(BufferId(b), Index::var(i, 1));
        let body = vec![
            Stmt::Store {
                buf: BufferId(3),
                index: Index::constant(0),
                value: load(2),
            },
            Stmt::Loop {
                var: i,
                extent: 4,
                kind: LoopKind::Serial,
                body: vec![
                    Stmt::LocalStore {
                        local: LocalId(1),
                        index: Index::var(i, 1),
                        value: Expr::binary(Op::Add, load(0), load(2)),
                    },
                    Stmt::Store {
                        buf: BufferId(1),
                        index: Index::var(i, 1),
                        value: Expr::LocalLoad {
                            local: LocalId(0),
                            index: Index::var(i, 1),
                        },
                    },
                ],
            },
        ];
        assert_eq!(
            buffers_used(&body),
            [BufferId(0), BufferId(1), BufferId(2), BufferId(3)]
        );
        assert_eq!(locals_used(&body), [LocalId(0), LocalId(1)]);
        assert!(buffers_used(&[]).is_empty());
    }

    #[test]
    fn reads_counts_every_occurrence() {
        let (v, w) = (VarId(0), VarId(1));
        let e = Expr::Select {
            cond: Box::new(Expr::binary(Op::Lt, Expr::Var(v), Expr::Var(w))),
            then: Box::new(Expr::unary(Op::Neg, Expr::Var(v))),
            otherwise: Box::new(Expr::Var(v)),
        };
        assert_eq!(e.reads(v), 3);
        assert_eq!(e.reads(w), 1);
        assert_eq!(e.reads(VarId(2)), 0);
    }

    #[test]
    fn types_follow_the_verifier() {
        let program = Program {
            name: "p".into(),
            buffers: vec![BufferDecl {
                name: "x".into(),
                ty: TensorType::new(DType::Bf16, vec![4]),
                kind: BufferKind::Input,
            }],
            inputs: Vec::new(),
            outputs: Vec::new(),
            kernels: Vec::new(),
            arena_bytes: 0,
        };
        let mut k = Kernel::new("k");
        let i = k.var(ScalarType::Index);
        let n = k.var(ScalarType::I32);
        let l = k.local(ScalarType::F64, 2);
        let x = Expr::load(BufferId(0), Index::var(i, 1));
        assert_eq!(x.ty(&program, &k), ScalarType::F32);
        let cmp = Expr::binary(Op::Lt, x.clone(), c(1.0));
        assert_eq!(cmp.ty(&program, &k), ScalarType::Bool);
        assert_eq!(Expr::Var(i).ty(&program, &k), ScalarType::Index);
        assert_eq!(
            Expr::binary(Op::Add, Expr::Var(n), Expr::Var(n)).ty(&program, &k),
            ScalarType::I32
        );
        let local = Expr::LocalLoad {
            local: l,
            index: Index::constant(1),
        };
        let sel = Expr::Select {
            cond: Box::new(cmp),
            then: Box::new(local.clone()),
            otherwise: Box::new(local),
        };
        assert_eq!(sel.ty(&program, &k), ScalarType::F64);
        let cast = Expr::Cast {
            to: ScalarType::I32,
            arg: Box::new(x),
        };
        assert_eq!(Expr::unary(Op::Neg, cast).ty(&program, &k), ScalarType::I32);
    }

    #[test]
    fn a_set_is_scoped_to_the_list_that_first_sets_it() {
        let (v, w) = (VarId(0), VarId(1));
        let mut sc = Scopes::default();
        sc.set(v); // no list open: nothing recorded
        assert!(!sc.defined(v));
        sc.push();
        sc.set(v);
        sc.push();
        sc.set(v); // already defined outside: stays in the outer list
        sc.set(w);
        assert!(sc.defined(v) && sc.defined(w));
        sc.pop();
        assert!(sc.defined(v) && !sc.defined(w));
        sc.pop();
        assert!(!sc.defined(v));
    }
}
