//! The kernel IR interpreter: runs a program sequentially, so lowering can
//! be tested apart from code generation.
//!
//! Values are held as `f64`. In [`Precision::F64`] `f32` values are not
//! rounded (as in the graph interpreter's oracle mode); in
//! [`Precision::F32`] every `f32` result is. Stores round to the buffer's
//! storage type as the graph interpreter's `store` does. Loops run in
//! order, parallel and vector loops included.

use std::collections::BTreeMap;

use crate::interp::{Precision, eval_binary, eval_unary, store};
use crate::tensor::Tensor;
use crate::types::DType;

use super::{BufferKind, Expr, Gemm, Index, Kernel, Program, ScalarType, Stmt, verify_program};

/// Why a program could not run.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum KernelInterpError {
    /// The program failed verification.
    #[error("invalid program: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<super::KernelVerifyError>),
    /// An input is missing or has the wrong type.
    #[error("input '{name}': {message}")]
    Input {
        /// Input name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

fn round(ty: ScalarType, p: Precision, x: f64) -> f64 {
    match ty.dtype() {
        Some(d) => store(d, p, x),
        None => x,
    }
}

struct Machine<'a> {
    p: Precision,
    program: &'a Program,
    bufs: Vec<Vec<f64>>,
}

struct Frame<'k> {
    kernel: &'k Kernel,
    vars: Vec<f64>,
    locals: Vec<Vec<f64>>,
}

fn at(ix: &Index, vars: &[f64]) -> usize {
    let v = ix.terms.iter().fold(ix.offset, |acc, &(var, c)| {
        acc + c * vars[var.0 as usize] as i64
    });
    v as usize
}

impl Machine<'_> {
    fn eval(&self, fr: &Frame<'_>, e: &Expr) -> f64 {
        let p = self.p;
        match e {
            Expr::Const { value, .. } => *value,
            Expr::Var(v) => fr.vars[v.0 as usize],
            Expr::Load { buf, index } => self.bufs[buf.0 as usize][at(index, &fr.vars)],
            Expr::LocalLoad { local, index } => fr.locals[local.0 as usize][at(index, &fr.vars)],
            Expr::Unary { op, arg } => {
                let t = arg.ty(self.program, fr.kernel);
                let d = t.dtype().unwrap_or(DType::F64);
                round(t, p, eval_unary(op, d, self.eval(fr, arg)))
            }
            Expr::Binary { op, lhs, rhs } => {
                let t = lhs.ty(self.program, fr.kernel);
                let d = t.dtype().unwrap_or(DType::F64);
                let out = if op.is_comparison() {
                    ScalarType::Bool
                } else {
                    t
                };
                round(
                    out,
                    p,
                    eval_binary(op, d, self.eval(fr, lhs), self.eval(fr, rhs)),
                )
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                if self.eval(fr, cond) != 0.0 {
                    self.eval(fr, then)
                } else {
                    self.eval(fr, otherwise)
                }
            }
            Expr::Cast { to, arg } => {
                let x = self.eval(fr, arg);
                match to.dtype() {
                    Some(d) => d.round(x),
                    None => x,
                }
            }
        }
    }

    fn gemm(&mut self, g: &Gemm) {
        let d = self.program.buffer(g.c.buf).dtype();
        let p = self.p;
        let acc = |x: f64| {
            if d == DType::F32 && p == Precision::F32 {
                x as f32 as f64
            } else {
                x
            }
        };
        for bi in 0..g.batch {
            for i in 0..g.m {
                for j in 0..g.n {
                    let a0 = g.a.offset + bi * g.a.batch_stride + i * g.a.row_stride;
                    let b0 = g.b.offset + bi * g.b.batch_stride + j * g.b.col_stride;
                    let mut s = 0.0;
                    for kk in 0..g.k {
                        let prod = acc(self.bufs[g.a.buf.0 as usize][a0 + kk * g.a.col_stride]
                            * self.bufs[g.b.buf.0 as usize][b0 + kk * g.b.row_stride]);
                        s = if kk == 0 { prod } else { acc(s + prod) };
                    }
                    let ci = g.c.offset
                        + bi * g.c.batch_stride
                        + i * g.c.row_stride
                        + j * g.c.col_stride;
                    let c = &mut self.bufs[g.c.buf.0 as usize][ci];
                    *c = store(d, p, if g.accumulate { acc(*c + s) } else { s });
                }
                if let Some(sq) = &g.row_sumsq {
                    let a0 = g.a.offset + bi * g.a.batch_stride + i * g.a.row_stride;
                    let mut s = 0.0;
                    for kk in 0..g.k {
                        let x = self.bufs[g.a.buf.0 as usize][a0 + kk * g.a.col_stride];
                        s = acc(s + acc(x * x));
                    }
                    let si = sq.offset + bi * sq.batch_stride + i * sq.row_stride;
                    self.bufs[sq.buf.0 as usize][si] = store(d, p, s);
                }
            }
        }
    }

    fn run(&mut self, fr: &mut Frame<'_>, body: &[Stmt]) {
        for s in body {
            match s {
                Stmt::Loop {
                    var, extent, body, ..
                } => {
                    for i in 0..*extent {
                        fr.vars[var.0 as usize] = i as f64;
                        self.run(fr, body);
                    }
                }
                Stmt::Set { var, value } => {
                    fr.vars[var.0 as usize] = self.eval(fr, value);
                }
                Stmt::Store { buf, index, value } => {
                    let x = self.eval(fr, value);
                    let d = self.program.buffer(*buf).dtype();
                    let i = at(index, &fr.vars);
                    self.bufs[buf.0 as usize][i] = store(d, self.p, x);
                }
                Stmt::LocalStore {
                    local,
                    index,
                    value,
                } => {
                    let x = self.eval(fr, value);
                    let i = at(index, &fr.vars);
                    fr.locals[local.0 as usize][i] = x;
                }
                Stmt::Gemm(g) => self.gemm(g),
            }
        }
    }
}

/// Runs `program` on `inputs` (by name) and returns its outputs in order.
pub fn run_program(
    program: &Program,
    inputs: &BTreeMap<String, Tensor>,
    precision: Precision,
) -> Result<Vec<(String, Tensor)>, KernelInterpError> {
    verify_program(program).map_err(KernelInterpError::Invalid)?;
    let mut bufs: Vec<Vec<f64>> = program
        .buffers
        .iter()
        .map(|b| match &b.kind {
            BufferKind::Const(v) => v.clone(),
            _ => vec![0.0; b.len()],
        })
        .collect();
    for (name, b) in &program.inputs {
        let t = inputs.get(name).ok_or_else(|| KernelInterpError::Input {
            name: name.clone(),
            message: "missing".into(),
        })?;
        let want = &program.buffer(*b).ty;
        if t.ty() != want {
            return Err(KernelInterpError::Input {
                name: name.clone(),
                message: format!("expected {want}, got {}", t.ty()),
            });
        }
        bufs[b.0 as usize] = t.to_f64_vec();
    }
    let mut m = Machine {
        p: precision,
        program,
        bufs,
    };
    for k in &program.kernels {
        let mut fr = Frame {
            kernel: k,
            vars: vec![0.0; k.vars.len()],
            locals: k.locals.iter().map(|l| vec![0.0; l.len]).collect(),
        };
        m.run(&mut fr, &k.body);
    }
    program
        .outputs
        .iter()
        .map(|(name, b)| {
            let t = Tensor::from_f64(program.buffer(*b).ty.clone(), &m.bufs[b.0 as usize])
                .map_err(|e| KernelInterpError::Input {
                    name: name.clone(),
                    message: e.to_string(),
                })?;
            Ok((name.clone(), t))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{BufferDecl, BufferId, LoopKind, Matrix, Program};
    use crate::op::Op;
    use crate::tensor::TensorData;
    use crate::types::TensorType;

    /// `y[i] = sum_j x[i, j] * 2` for x [2, 3], with a vector loop and an accumulator.
    fn row_sums() -> Program {
        let mut k = Kernel::new("k0_row_sums");
        let (i, j, acc) = (
            k.var(ScalarType::Index),
            k.var(ScalarType::Index),
            k.var(ScalarType::F32),
        );
        let x = Expr::load(BufferId(0), Index::var(i, 3).plus(j, 1));
        k.body = vec![Stmt::Loop {
            var: i,
            extent: 2,
            kind: LoopKind::Parallel,
            body: vec![
                Stmt::Set {
                    var: acc,
                    value: Expr::constant(ScalarType::F32, 0.0),
                },
                Stmt::Loop {
                    var: j,
                    extent: 3,
                    kind: LoopKind::Vector,
                    body: vec![Stmt::Set {
                        var: acc,
                        value: Expr::binary(
                            Op::Add,
                            Expr::Var(acc),
                            Expr::binary(Op::Mul, x, Expr::constant(ScalarType::F32, 2.0)),
                        ),
                    }],
                },
                Stmt::Store {
                    buf: BufferId(1),
                    index: Index::var(i, 1),
                    value: Expr::Var(acc),
                },
            ],
        }];
        Program {
            name: "row_sums".into(),
            buffers: vec![
                BufferDecl {
                    name: "x".into(),
                    ty: TensorType::new(DType::F32, [2, 3]),
                    kind: BufferKind::Input,
                },
                BufferDecl {
                    name: "y".into(),
                    ty: TensorType::new(DType::F32, [2]),
                    kind: BufferKind::Output,
                },
            ],
            inputs: vec![("x".into(), BufferId(0))],
            outputs: vec![("y".into(), BufferId(1))],
            kernels: vec![k],
            arena_bytes: 0,
        }
    }

    #[test]
    fn runs_loops_and_accumulators() {
        let p = row_sums();
        let x = Tensor::new([2, 3], TensorData::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])).unwrap();
        let out = run_program(&p, &BTreeMap::from([("x".to_string(), x)]), Precision::F64).unwrap();
        assert_eq!(out[0].1.to_f64_vec(), vec![12.0, 30.0]);
        let text = p.to_string();
        assert!(text.contains("vector %i1 in 0..3"), "{text}");
        assert!(text.contains("store %b1[%i0] = %v2"), "{text}");
    }

    #[test]
    fn out_of_bounds_indices_are_rejected_statically() {
        let mut p = row_sums();
        if let Stmt::Loop { extent, .. } = &mut p.kernels[0].body[0] {
            *extent = 3;
        }
        let errs = verify_program(&p).unwrap_err();
        assert!(
            errs.iter().any(|e| e.message.contains("outside 0..6")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.message.contains("outside 0..2")),
            "{errs:?}"
        );
    }

    #[test]
    fn gemm_multiplies_strided_matrices() {
        // c[2x2] = a[2x3] · bᵀ where b is stored as [2x3] (column stride 3).
        let m = |buf, rs, cs| Matrix {
            buf: BufferId(buf),
            offset: 0,
            row_stride: rs,
            col_stride: cs,
            batch_stride: 0,
        };
        let mut k = Kernel::new("k0_gemm");
        k.body = vec![Stmt::Gemm(Gemm {
            m: 2,
            n: 2,
            k: 3,
            batch: 1,
            a: m(0, 3, 1),
            b: m(1, 1, 3),
            c: m(2, 2, 1),
            accumulate: false,
            row_sumsq: None,
        })];
        let t = |s: [usize; 2]| TensorType::new(DType::F64, s);
        let p = Program {
            name: "g".into(),
            buffers: vec![
                BufferDecl {
                    name: "a".into(),
                    ty: t([2, 3]),
                    kind: BufferKind::Input,
                },
                BufferDecl {
                    name: "b".into(),
                    ty: t([2, 3]),
                    kind: BufferKind::Input,
                },
                BufferDecl {
                    name: "c".into(),
                    ty: t([2, 2]),
                    kind: BufferKind::Output,
                },
            ],
            inputs: vec![("a".into(), BufferId(0)), ("b".into(), BufferId(1))],
            outputs: vec![("c".into(), BufferId(2))],
            kernels: vec![k],
            arena_bytes: 0,
        };
        let a = Tensor::new([2, 3], TensorData::F64(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])).unwrap();
        let b = Tensor::new([2, 3], TensorData::F64(vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0])).unwrap();
        let out = run_program(
            &p,
            &BTreeMap::from([("a".to_string(), a), ("b".to_string(), b)]),
            Precision::F64,
        )
        .unwrap();
        assert_eq!(out[0].1.to_f64_vec(), vec![4.0, 2.0, 10.0, 5.0]);
    }

    /// `c = a · bᵀ` on bf16 operands with an f32 result and the row sums
    /// of squares of `a`, in a program whose dtypes are `(ab, c, sq)`.
    fn bf16_gemm(ab: DType, c: DType, sq: DType) -> Program {
        let m = |buf, rs, cs| Matrix {
            buf: BufferId(buf),
            offset: 0,
            row_stride: rs,
            col_stride: cs,
            batch_stride: 0,
        };
        let mut k = Kernel::new("k0_gemm");
        k.body = vec![Stmt::Gemm(Gemm {
            m: 2,
            n: 2,
            k: 3,
            batch: 1,
            a: m(0, 3, 1),
            b: m(1, 1, 3),
            c: m(2, 2, 1),
            accumulate: false,
            row_sumsq: Some(m(3, 1, 1)),
        })];
        let decl = |name: &str, d, shape: Vec<usize>, kind| BufferDecl {
            name: name.into(),
            ty: TensorType::new(d, shape),
            kind,
        };
        Program {
            name: "g".into(),
            buffers: vec![
                decl("a", ab, vec![2, 3], BufferKind::Input),
                decl("b", ab, vec![2, 3], BufferKind::Input),
                decl("c", c, vec![2, 2], BufferKind::Output),
                decl("sq", sq, vec![2], BufferKind::Output),
            ],
            inputs: vec![("a".into(), BufferId(0)), ("b".into(), BufferId(1))],
            outputs: vec![("c".into(), BufferId(2)), ("sq".into(), BufferId(3))],
            kernels: vec![k],
            arena_bytes: 0,
        }
    }

    #[test]
    fn gemm_reads_bf16_and_sums_squares_of_rows() {
        let p = bf16_gemm(DType::Bf16, DType::F32, DType::F32);
        assert!(p.to_string().contains(", row_sumsq %b3["), "{p}");
        let t = |v: Vec<f64>| Tensor::from_f64(TensorType::new(DType::Bf16, [2, 3]), &v).unwrap();
        let ins = BTreeMap::from([
            ("a".to_string(), t(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
            ("b".to_string(), t(vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0])),
        ]);
        let out = run_program(&p, &ins, Precision::F64).unwrap();
        assert_eq!(out[0].1.dtype(), DType::F32);
        assert_eq!(out[0].1.to_f64_vec(), vec![4.0, 2.0, 10.0, 5.0]);
        assert_eq!(out[1].1.to_f64_vec(), vec![14.0, 77.0]);
    }

    #[test]
    fn gemm_types_are_checked() {
        for (ab, c, sq, want) in [
            (
                DType::Bf16,
                DType::Bf16,
                DType::Bf16,
                "gemm on bf16, bf16 and bf16",
            ),
            (
                DType::F32,
                DType::F64,
                DType::F64,
                "gemm on f32, f32 and f64",
            ),
            (DType::Bf16, DType::F32, DType::Bf16, "row_sumsq is bf16"),
        ] {
            let errs = verify_program(&bf16_gemm(ab, c, sq)).unwrap_err();
            assert!(
                errs.iter().any(|e| e.message.contains(want)),
                "{want}: {errs:?}"
            );
        }
    }
}
