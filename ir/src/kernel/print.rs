//! Text form of kernel IR, for dumps and file tests.
//!
//! ```text
//! program @mhc_post (arena 0 bytes)
//!   %b0 = input layer_output : f32[4,8]
//!   %b4 = output residual_out : f32[4,2,8]
//! kernel k0_mhc_post {
//!   parallel %i0 in 0..4 {
//!     %v2 = add(mul(load %b2[2*%i0 + %i1], ...), ...)
//!     store %b4[16*%i0 + 8*%i1 + %i2] = %v2
//!   }
//! }
//! ```

use std::fmt::{self, Write};

use crate::literal::format_scalar;
use crate::types::DType;

use super::{
    BufferId, BufferKind, Expr, Index, Kernel, LocalId, LoopKind, Matrix, Program, ScalarType,
    Stmt, VarId,
};

impl fmt::Display for BufferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%b{}", self.0)
    }
}

impl fmt::Display for LocalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%l{}", self.0)
    }
}

/// A variable as printed: `%iN` for a loop index, `%vN` otherwise. Without
/// a kernel to look the type up in, every variable is taken for a loop
/// index (the only kind an [`Index`] may use).
struct V<'a>(Option<&'a Kernel>, VarId);

impl fmt::Display for V<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let index = self.0.is_none_or(|k| {
            k.vars
                .get(self.1.0 as usize)
                .is_some_and(|d| d.ty == ScalarType::Index)
        });
        write!(f, "%{}{}", if index { 'i' } else { 'v' }, self.1.0)
    }
}

/// `3*%i0 + %i1 + 2`, the text form of an index.
impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        index(f, None, self)
    }
}

fn index(f: &mut impl Write, k: Option<&Kernel>, ix: &Index) -> fmt::Result {
    let mut first = true;
    for &(v, c) in &ix.terms {
        let sep = if first { "" } else { " + " };
        first = false;
        if c == 1 {
            write!(f, "{sep}{}", V(k, v))?;
        } else {
            write!(f, "{sep}{c}*{}", V(k, v))?;
        }
    }
    if first {
        write!(f, "{}", ix.offset)
    } else if ix.offset != 0 {
        write!(f, " + {}", ix.offset)
    } else {
        Ok(())
    }
}

fn expr(f: &mut impl Write, k: &Kernel, e: &Expr) -> fmt::Result {
    match e {
        Expr::Const { ty, value } => {
            let d = ty.dtype().unwrap_or(DType::F64);
            format_scalar(f, d, *value)
        }
        Expr::Var(v) => write!(f, "{}", V(Some(k), *v)),
        Expr::Load { buf, index: ix } => {
            write!(f, "{buf}[")?;
            index(f, Some(k), ix)?;
            f.write_char(']')
        }
        Expr::LocalLoad { local, index: ix } => {
            write!(f, "{local}[")?;
            index(f, Some(k), ix)?;
            f.write_char(']')
        }
        Expr::Unary { op, arg } => {
            write!(f, "{}(", op.mnemonic())?;
            expr(f, k, arg)?;
            f.write_char(')')
        }
        Expr::Binary { op, lhs, rhs } => {
            write!(f, "{}(", op.mnemonic())?;
            expr(f, k, lhs)?;
            f.write_str(", ")?;
            expr(f, k, rhs)?;
            f.write_char(')')
        }
        Expr::Select {
            cond,
            then,
            otherwise,
        } => {
            f.write_str("select(")?;
            expr(f, k, cond)?;
            f.write_str(", ")?;
            expr(f, k, then)?;
            f.write_str(", ")?;
            expr(f, k, otherwise)?;
            f.write_char(')')
        }
        Expr::Cast { to, arg } => {
            write!(f, "{}(", to.name())?;
            expr(f, k, arg)?;
            f.write_char(')')
        }
    }
}

fn matrix(f: &mut impl Write, m: &Matrix) -> fmt::Result {
    write!(
        f,
        "{}[{} + {}*row + {}*col + {}*batch]",
        m.buf, m.offset, m.row_stride, m.col_stride, m.batch_stride
    )
}

fn stmts(f: &mut impl Write, k: &Kernel, body: &[Stmt], depth: usize) -> fmt::Result {
    let pad = "  ".repeat(depth);
    for s in body {
        match s {
            Stmt::Loop {
                var,
                extent,
                kind,
                body,
            } => {
                let kw = match kind {
                    LoopKind::Serial => "for",
                    LoopKind::Parallel => "parallel",
                    LoopKind::Vector => "vector",
                };
                writeln!(f, "{pad}{kw} {} in 0..{extent} {{", V(Some(k), *var))?;
                stmts(f, k, body, depth + 1)?;
                writeln!(f, "{pad}}}")?;
            }
            Stmt::Set { var, value } => {
                write!(f, "{pad}{} = ", V(Some(k), *var))?;
                expr(f, k, value)?;
                f.write_char('\n')?;
            }
            Stmt::Store {
                buf,
                index: ix,
                value,
            } => {
                write!(f, "{pad}store {buf}[")?;
                index(f, Some(k), ix)?;
                f.write_str("] = ")?;
                expr(f, k, value)?;
                f.write_char('\n')?;
            }
            Stmt::LocalStore {
                local,
                index: ix,
                value,
            } => {
                write!(f, "{pad}{local}[")?;
                index(f, Some(k), ix)?;
                f.write_str("] = ")?;
                expr(f, k, value)?;
                f.write_char('\n')?;
            }
            Stmt::Gemm(g) => {
                write!(
                    f,
                    "{pad}gemm m={} n={} k={} batch={}{}: ",
                    g.m,
                    g.n,
                    g.k,
                    g.batch,
                    if g.accumulate { " accumulate" } else { "" }
                )?;
                matrix(f, &g.c)?;
                f.write_str(" = ")?;
                matrix(f, &g.a)?;
                f.write_str(" x ")?;
                matrix(f, &g.b)?;
                if let Some(sq) = &g.row_sumsq {
                    f.write_str(", row_sumsq ")?;
                    matrix(f, sq)?;
                }
                f.write_char('\n')?;
            }
        }
    }
    Ok(())
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel {} {{", self.name)?;
        for (i, l) in self.locals.iter().enumerate() {
            writeln!(f, "  local %l{i}: {}[{}]", l.ty.name(), l.len)?;
        }
        stmts(f, self, &self.body, 1)?;
        writeln!(f, "}}")
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "program @{} (arena {} bytes)",
            self.name, self.arena_bytes
        )?;
        for (i, b) in self.buffers.iter().enumerate() {
            let role = match &b.kind {
                BufferKind::Input => "input".to_string(),
                BufferKind::Output => "output".to_string(),
                BufferKind::Const(_) => "const".to_string(),
                BufferKind::Temp { offset } => format!("temp @{offset}"),
            };
            writeln!(f, "  %b{i} = {role} {} : {}", b.name, b.ty)?;
        }
        for k in &self.kernels {
            write!(f, "{k}")?;
        }
        Ok(())
    }
}
