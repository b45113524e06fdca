//! The kernel IR verifier: types, scopes, loop placement and static bounds.
//!
//! Every load and store index is an affine function of enclosing loop
//! indices with static extents, so its smallest and largest values are
//! known exactly; the verifier proves each access in bounds, which is
//! what lets backends emit unchecked loads and stores.

use crate::op::Op;
use crate::types::DType;

use super::{
    BufferId, BufferKind, Expr, Gemm, Index, Kernel, LocalId, LoopKind, Matrix, Program,
    ScalarType, Scopes, Stmt, VarId,
};

/// One problem found in a program.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("kernel {kernel}: {message}")]
pub struct KernelVerifyError {
    /// The kernel's name (or `program`).
    pub kernel: String,
    /// What is wrong.
    pub message: String,
}

struct Checker<'a> {
    program: &'a Program,
    kernel: &'a Kernel,
    errors: Vec<KernelVerifyError>,
    /// Loop variables in scope with their extents, innermost last.
    loops: Vec<(VarId, usize)>,
    /// Value variables defined, per scope.
    scopes: Scopes,
}

impl Checker<'_> {
    fn err(&mut self, message: String) {
        self.errors.push(KernelVerifyError {
            kernel: self.kernel.name.clone(),
            message,
        });
    }

    fn var_ty(&mut self, v: VarId) -> Option<ScalarType> {
        match self.kernel.vars.get(v.0 as usize) {
            Some(d) => Some(d.ty),
            None => {
                self.err(format!("variable {v:?} is not declared"));
                None
            }
        }
    }

    fn defined(&self, v: VarId) -> bool {
        self.loops.iter().any(|(l, _)| *l == v) || self.scopes.defined(v)
    }

    /// The smallest and largest value of an index over the enclosing loops.
    fn range(&mut self, index: &Index) -> Option<(i64, i64)> {
        let (mut lo, mut hi) = (index.offset, index.offset);
        for &(v, c) in &index.terms {
            let Some(&(_, extent)) = self.loops.iter().find(|(l, _)| *l == v) else {
                self.err(format!(
                    "index uses {v:?}, which is not an enclosing loop index"
                ));
                return None;
            };
            let last = c * (extent as i64 - 1);
            lo += last.min(0);
            hi += last.max(0);
        }
        Some((lo, hi))
    }

    fn check_index(&mut self, what: &str, index: &Index, len: usize) {
        if let Some((lo, hi)) = self.range(index)
            && (lo < 0 || hi >= len as i64)
        {
            self.err(format!(
                "{what}: index range {lo}..={hi} is outside 0..{len}"
            ));
        }
    }

    fn buffer(&mut self, b: BufferId) -> Option<&super::BufferDecl> {
        let found = self.program.buffers.get(b.0 as usize);
        if found.is_none() {
            self.err(format!("buffer {b:?} does not exist"));
        }
        found
    }

    fn local_len(&mut self, l: LocalId) -> Option<(ScalarType, usize)> {
        match self.kernel.locals.get(l.0 as usize) {
            Some(d) => Some((d.ty, d.len)),
            None => {
                self.err(format!("local {l:?} is not declared"));
                None
            }
        }
    }

    fn expr(&mut self, e: &Expr) -> Option<ScalarType> {
        match e {
            Expr::Const { ty, .. } => Some(*ty),
            Expr::Var(v) => {
                if !self.defined(*v) {
                    self.err(format!("variable {v:?} is read before it is set"));
                }
                self.var_ty(*v)
            }
            Expr::Load { buf, index } => {
                let (len, ty, name) = {
                    let d = self.buffer(*buf)?;
                    (d.len(), ScalarType::of(d.dtype()), d.name.clone())
                };
                self.check_index(&format!("load of {name}"), index, len);
                Some(ty)
            }
            Expr::LocalLoad { local, index } => {
                let (ty, len) = self.local_len(*local)?;
                self.check_index("local load", index, len);
                Some(ty)
            }
            Expr::Unary { op, arg } => {
                let t = self.expr(arg)?;
                let ok = op.is_unary()
                    && t != ScalarType::Index
                    && if op.is_logical() {
                        t == ScalarType::Bool
                    } else if op.needs_float() {
                        matches!(t, ScalarType::F32 | ScalarType::F64)
                    } else {
                        t != ScalarType::Bool
                    };
                if !ok {
                    self.err(format!(
                        "{} is not a unary op on {}",
                        op.mnemonic(),
                        t.name()
                    ));
                }
                Some(t)
            }
            Expr::Binary { op, lhs, rhs } => {
                let (a, b) = (self.expr(lhs)?, self.expr(rhs)?);
                if a != b || a == ScalarType::Index || !op.is_binary() {
                    self.err(format!(
                        "{} applied to {} and {}",
                        op.mnemonic(),
                        a.name(),
                        b.name()
                    ));
                }
                let float = matches!(a, ScalarType::F32 | ScalarType::F64);
                if (op.needs_float() && !float)
                    || (op.is_logical() != (a == ScalarType::Bool)
                        && !matches!(op, Op::Eq | Op::Ne))
                {
                    self.err(format!("{} is not defined on {}", op.mnemonic(), a.name()));
                }
                Some(if op.is_comparison() {
                    ScalarType::Bool
                } else {
                    a
                })
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                let (c, a, b) = (self.expr(cond)?, self.expr(then)?, self.expr(otherwise)?);
                if c != ScalarType::Bool || a != b {
                    self.err(format!(
                        "select on {} of {} and {}",
                        c.name(),
                        a.name(),
                        b.name()
                    ));
                }
                Some(a)
            }
            Expr::Cast { to, arg } => {
                self.expr(arg)?;
                if *to == ScalarType::Index {
                    self.err("cast to index".to_string());
                }
                Some(*to)
            }
        }
    }

    fn matrix(
        &mut self,
        which: &str,
        m: &Matrix,
        rows: usize,
        cols: usize,
        batch: usize,
        write: bool,
    ) -> Option<DType> {
        let (len, ty, writable) = {
            let d = self.buffer(m.buf)?;
            (d.len(), d.dtype(), d.is_writable())
        };
        if write && !writable {
            self.err(format!("gemm writes {which} into a read-only buffer"));
        }
        let last = m.offset
            + (batch - 1) * m.batch_stride
            + (rows - 1) * m.row_stride
            + (cols - 1) * m.col_stride;
        if last >= len {
            self.err(format!(
                "gemm operand {which} reaches element {last} of a buffer of {len}"
            ));
        }
        Some(ty)
    }

    fn gemm(&mut self, g: &Gemm) {
        if g.m == 0 || g.n == 0 || g.k == 0 || g.batch == 0 {
            self.err("gemm with an empty dimension".to_string());
            return;
        }
        let a = self.matrix("a", &g.a, g.m, g.k, g.batch, false);
        let b = self.matrix("b", &g.b, g.k, g.n, g.batch, false);
        let c = self.matrix("c", &g.c, g.m, g.n, g.batch, true);
        // a and b of one storage type, c of its compute type.
        if let (Some(a), Some(b), Some(c)) = (a, b, c) {
            let compute = match a {
                DType::F32 | DType::Bf16 => Some(DType::F32),
                DType::F64 => Some(DType::F64),
                _ => None,
            };
            if a != b || compute != Some(c) {
                self.err(format!(
                    "gemm on {a}, {b} and {c} buffers (needs f32, f32, f32; bf16, bf16, f32; or f64, f64, f64)"
                ));
            }
            if let Some(sq) = &g.row_sumsq
                && let Some(t) = self.matrix("row_sumsq", sq, g.m, 1, g.batch, true)
                && t != c
            {
                self.err(format!("gemm row_sumsq is {t}, not the result type {c}"));
            }
        }
    }

    fn stmts(&mut self, body: &[Stmt], top: bool, in_vector: bool) {
        self.scopes.push();
        for s in body {
            match s {
                Stmt::Loop {
                    var,
                    extent,
                    kind,
                    body,
                } => {
                    if self.var_ty(*var) != Some(ScalarType::Index) {
                        self.err(format!("loop index {var:?} is not of type index"));
                    }
                    if *extent == 0 {
                        self.err(format!("loop over {var:?} has no iterations"));
                    }
                    if *kind == LoopKind::Parallel && !top {
                        self.err("a parallel loop must be an outermost statement".to_string());
                    }
                    if in_vector {
                        self.err("a vector loop may not contain loops".to_string());
                    }
                    if self.defined(*var) {
                        self.err(format!("loop index {var:?} is already in scope"));
                    }
                    self.loops.push((*var, *extent));
                    self.stmts(body, false, *kind == LoopKind::Vector);
                    self.loops.pop();
                }
                Stmt::Set { var, value } => {
                    let t = self.expr(value);
                    let vt = self.var_ty(*var);
                    if vt == Some(ScalarType::Index) {
                        self.err(format!("{var:?} is a loop index and cannot be set"));
                    }
                    if let (Some(t), Some(vt)) = (t, vt)
                        && t != vt
                    {
                        self.err(format!(
                            "{var:?} of type {} set to a {}",
                            vt.name(),
                            t.name()
                        ));
                    }
                    if !self.defined(*var) {
                        self.scopes.set(*var);
                    }
                }
                Stmt::Store { buf, index, value } => {
                    let t = self.expr(value);
                    let Some(d) = self.buffer(*buf) else { continue };
                    let (len, ty, writable, name) = (
                        d.len(),
                        ScalarType::of(d.dtype()),
                        d.is_writable(),
                        d.name.clone(),
                    );
                    if !writable {
                        self.err(format!("store into read-only buffer {name}"));
                    }
                    if t.is_some_and(|t| t != ty) {
                        self.err(format!(
                            "store of a {} into {name} of {}",
                            t.map_or("?", ScalarType::name),
                            ty.name()
                        ));
                    }
                    self.check_index(&format!("store into {name}"), index, len);
                }
                Stmt::LocalStore {
                    local,
                    index,
                    value,
                } => {
                    let t = self.expr(value);
                    if let Some((ty, len)) = self.local_len(*local) {
                        if t.is_some_and(|t| t != ty) {
                            self.err(format!(
                                "local store of a {} into {}",
                                t.map_or("?", ScalarType::name),
                                ty.name()
                            ));
                        }
                        self.check_index("local store", index, len);
                    }
                }
                Stmt::Gemm(g) => {
                    if in_vector {
                        self.err("a vector loop may not call gemm".to_string());
                    }
                    self.gemm(g);
                }
            }
        }
        self.scopes.pop();
    }
}

/// Checks every kernel of `program`; returns every problem found.
pub fn verify_program(program: &Program) -> Result<(), Vec<KernelVerifyError>> {
    let mut errors = Vec::new();
    let prog_err = |message: String| KernelVerifyError {
        kernel: "program".into(),
        message,
    };
    for (name, b) in program.inputs.iter().chain(&program.outputs) {
        if program.buffers.get(b.0 as usize).is_none() {
            errors.push(prog_err(format!("'{name}' names missing buffer {b:?}")));
        }
    }
    for (name, b) in &program.outputs {
        if let Some(d) = program.buffers.get(b.0 as usize)
            && d.kind != BufferKind::Output
        {
            errors.push(prog_err(format!("output '{name}' is not an output buffer")));
        }
    }
    for d in &program.buffers {
        match &d.kind {
            BufferKind::Const(v) if v.len() != d.len() => {
                errors.push(prog_err(format!(
                    "constant {} has {} values for {} elements",
                    d.name,
                    v.len(),
                    d.len()
                )));
            }
            BufferKind::Temp { offset } if offset + d.ty.size_bytes() > program.arena_bytes => {
                errors.push(prog_err(format!(
                    "temporary {} ends past the arena",
                    d.name
                )));
            }
            _ => {}
        }
    }
    for k in &program.kernels {
        let mut c = Checker {
            program,
            kernel: k,
            errors: Vec::new(),
            loops: Vec::new(),
            scopes: Scopes::default(),
        };
        c.stmts(&k.body, true, false);
        errors.extend(c.errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
