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

    /// The smallest and largest value of an index over the enclosing
    /// loops, in `i128`: every `i64` coefficient times a `usize` extent
    /// fits, so the range is exact (a sum of several such products that
    /// leaves `i128` saturates there, still outside every buffer).
    fn range(&mut self, index: &Index) -> Option<(i128, i128)> {
        let (mut lo, mut hi) = (i128::from(index.offset), i128::from(index.offset));
        for &(v, c) in &index.terms {
            let Some(&(_, extent)) = self.loops.iter().find(|(l, _)| *l == v) else {
                self.err(format!(
                    "index uses {v:?}, which is not an enclosing loop index"
                ));
                return None;
            };
            // |c| <= 2^63 and |extent - 1| < 2^64: |last| < 2^127.
            let last = i128::from(c) * (extent as i128 - 1);
            lo = lo.saturating_add(last.min(0));
            hi = hi.saturating_add(last.max(0));
        }
        Some((lo, hi))
    }

    fn check_index(&mut self, what: &str, index: &Index, len: usize) {
        if let Some((lo, hi)) = self.range(index)
            && (lo < 0 || hi >= len as i128)
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
        // In u128, where no product of two usizes overflows (a sum that
        // leaves u128 saturates there, still past the buffer's end).
        let wide = |n: usize, stride: usize| (n as u128 - 1) * stride as u128;
        let last = [
            wide(batch, m.batch_stride),
            wide(rows, m.row_stride),
            wide(cols, m.col_stride),
        ]
        .into_iter()
        .fold(m.offset as u128, u128::saturating_add);
        if last >= len as u128 {
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
        // a and b of one storage type, or f32 and bf16 mixed; c of their
        // compute type, or bf16 (summed in f32, rounded once when stored)
        // for f32 or bf16 operands.
        if let (Some(a), Some(b), Some(c)) = (a, b, c) {
            let compute = match a {
                DType::F32 | DType::Bf16 => Some(DType::F32),
                DType::F64 => Some(DType::F64),
                _ => None,
            };
            let rounded = c == DType::Bf16 && compute == Some(DType::F32);
            // f32 and bf16 operands may mix: both widen exactly to f32.
            let narrow = |d: DType| matches!(d, DType::F32 | DType::Bf16);
            let operands_agree = a == b || (narrow(a) && narrow(b));
            if !operands_agree || !(compute == Some(c) || rounded) {
                self.err(format!(
                    "gemm on {a}, {b} and {c} buffers (needs f32 or bf16 operands with an f32 or bf16 result, or f64, f64, f64)"
                ));
            }
            if let Some(sq) = &g.row_sumsq
                && let Some(t) = self.matrix("row_sumsq", sq, g.m, 1, g.batch, true)
            {
                if rounded {
                    self.err(format!(
                        "gemm on {a}, {b} and {c} buffers with row_sumsq (a bf16 result takes none)"
                    ));
                } else if t != c {
                    self.err(format!("gemm row_sumsq is {t}, not the result type {c}"));
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{BufferDecl, Gemm, LoopKind};
    use crate::types::TensorType;

    /// `y[c·i + offset] = x[0]` for `i` in `0..extent`, `x` and `y` of 8
    /// elements, plus `extra` statements at the top level.
    fn strided(c: i64, offset: i64, extent: usize, extra: Vec<Stmt>) -> Program {
        let mut k = Kernel::new("k0_strided");
        let i = k.var(ScalarType::Index);
        k.body = vec![Stmt::Loop {
            var: i,
            extent,
            kind: LoopKind::Serial,
            body: vec![Stmt::Store {
                buf: BufferId(1),
                index: Index::var(i, c).shifted(offset),
                value: Expr::load(BufferId(0), Index::constant(0)),
            }],
        }];
        k.body.extend(extra);
        let buf = |name: &str, kind| BufferDecl {
            name: name.into(),
            ty: TensorType::new(DType::F32, [8]),
            kind,
        };
        Program {
            name: "strided".into(),
            buffers: vec![buf("x", BufferKind::Input), buf("y", BufferKind::Output)],
            inputs: vec![("x".into(), BufferId(0))],
            outputs: vec![("y".into(), BufferId(1))],
            kernels: vec![k],
            arena_bytes: 0,
        }
    }

    fn messages(p: &Program) -> Vec<String> {
        match verify_program(p) {
            Ok(()) => Vec::new(),
            Err(errs) => errs.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn in_bounds_strides_pass() {
        assert_eq!(
            messages(&strided(2, 1, 4, Vec::new())),
            Vec::<String>::new()
        );
        assert_eq!(
            messages(&strided(-1, 7, 8, Vec::new())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_range_check_is_exact_where_i64_would_wrap() {
        // 2^62 · 4 is 2^64, which wraps to 0 in i64: the index would look
        // constant (in bounds) while it reaches far past the buffer.
        let p = strided(1 << 62, 0, 5, Vec::new());
        assert_eq!(
            messages(&p),
            [
                "kernel k0_strided: store into y: index range 0..=18446744073709551616 is outside 0..8"
            ]
        );
        // The same going down, from an offset in bounds.
        let p = strided(-(1 << 62), 7, 5, Vec::new());
        assert_eq!(
            messages(&p),
            [
                "kernel k0_strided: store into y: index range -18446744073709551609..=7 is outside 0..8"
            ]
        );
        // Terms that fit i64 one by one but not summed: i64::MAX · 1 + 1.
        let p = strided(i64::MAX, 1, 2, Vec::new());
        assert_eq!(
            messages(&p),
            [
                "kernel k0_strided: store into y: index range 1..=9223372036854775808 is outside 0..8"
            ]
        );
    }

    #[test]
    fn extents_past_i64_are_measured_exactly() {
        let p = strided(1, 0, usize::MAX, Vec::new());
        assert_eq!(
            messages(&p),
            [
                "kernel k0_strided: store into y: index range 0..=18446744073709551614 is outside 0..8"
            ]
        );
        let p = strided(i64::MIN, 0, usize::MAX, Vec::new());
        let errs = messages(&p);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("is outside 0..8"), "{errs:?}");
    }

    #[test]
    fn matrix_products_past_usize_are_refused() {
        let m = |buf, row_stride| Matrix {
            buf: BufferId(buf),
            offset: 0,
            row_stride,
            col_stride: 1,
            batch_stride: 0,
        };
        // (3 - 1) · 2^63 is 2^64, which wraps to 0 in usize.
        let gemm = Stmt::Gemm(Gemm {
            m: 3,
            n: 1,
            k: 1,
            batch: 1,
            a: m(0, 1 << 63),
            b: m(0, 1),
            c: m(1, 1),
            accumulate: false,
            row_sumsq: None,
        });
        let p = strided(1, 0, 8, vec![gemm]);
        assert_eq!(
            messages(&p),
            [
                "kernel k0_strided: gemm operand a reaches element 18446744073709551616 of a buffer of 8"
            ]
        );
    }
}
