//! The lowering driver: partition a graph into kernels and emit them.
//!
//! Input: a verified graph (fused or not). Each value ends up in one of
//! three places:
//!
//! * **stored** — in a buffer, or a view of one ([`Access`]): inputs,
//!   dense constants, and every value a kernel materializes;
//! * **inline** — recomputed inside each consumer's loop body: splat
//!   constants, `iota`, elementwise ops and views of inline values;
//! * **tuple** — the result buffers of a multi-result op, taken apart by `get`.
//!
//! Fusion rules (after XLA's and tinygrad's; `docs/backends.md`):
//!
//! 1. Views never copy: `permute`, `broadcast`, `slice` and `reshape` of
//!    row-major data change strides only. A `reshape` of anything else
//!    first materializes its source.
//! 2. Elementwise chains fuse into one loop nest, and an elementwise
//!    producer fuses into its consumer — another elementwise op, a
//!    reduction (as the value it accumulates), a `concat` copy.
//! 3. A producer is materialized (never duplicated) when it is a graph
//!    output, has two or more consumers, is read through a broadcast that
//!    repeats its elements, feeds a matrix product or a template kernel
//!    (which read memory), or is a bf16 value (only a store rounds to
//!    bf16). Pure functions of constants and `iota` are always recomputed
//!    instead. A chain deeper than [`MAX_FUSED_DEPTH`] is cut there into
//!    several kernels, which keeps every recursive walk of an expression
//!    shallow.
//! 4. Reductions, matrix products (`f32`/`f64` through the runtime GEMM,
//!    `bf16` too where the backend's GEMM writes `bf16` results, other
//!    types as loop nests), `concat` and every semantic or fused op
//!    (hand-written templates) are kernels of their own.
//!
//! Output: a verified [`Program`] whose outermost loops are parallel where
//! iterations are independent and whose innermost loops over contiguous
//! data are vector loops; temporaries are placed by the memory plan.

use std::collections::HashMap;

use birkhoff_ir::kernel::{
    BufferId, BufferKind, Expr, Gemm, Index, Kernel, LoopKind, Matrix, ScalarType, Stmt, VarId,
    verify_program, walk_exprs, walk_stmts,
};
use birkhoff_ir::{DType, Graph, Op, TensorType, Type, ValueId, eliminate_dead_nodes, verify};

use crate::builder::ProgramBuilder;
use crate::error::{LowerError, Result};
use crate::templates::{Arg, has_template, lower_composite, lower_composite_reading};
use crate::views::Access;
use crate::{LowerOptions, memory};

#[derive(Clone, Debug)]
enum Place {
    Stored(Access),
    Inline,
    Tuple(Vec<BufferId>),
}

struct Lowerer<'g> {
    g: &'g Graph,
    pb: ProgramBuilder,
    opts: LowerOptions,
    place: Vec<Option<Place>>,
    materialize: Vec<bool>,
    /// Output buffers a producer should write directly, by value.
    output_buf: HashMap<ValueId, BufferId>,
    /// Output buffers per tuple element: `(tuple value, index)`.
    output_elem: HashMap<(ValueId, usize), BufferId>,
    /// Contiguous copies the last template read (see `composite`), and
    /// the number of kernels when it was done.
    copies: (HashMap<ValueId, Arg>, usize),
}

/// Whether a value is a pure function of constants and `iota`.
fn cheap(g: &Graph, v: ValueId, memo: &mut HashMap<ValueId, bool>) -> bool {
    if let Some(&c) = memo.get(&v) {
        return c;
    }
    let n = g.node(v);
    let c = match &n.op {
        Op::Const(lit) => lit.as_splat().is_some(),
        Op::Iota { .. } => true,
        op if op.is_elementwise()
            || matches!(
                op,
                Op::Cast { .. } | Op::Broadcast { .. } | Op::Permute { .. } | Op::Slice { .. }
            ) =>
        {
            n.args.iter().all(|&a| cheap(g, a, memo))
        }
        _ => false,
    };
    memo.insert(v, c);
    c
}

fn is_view(op: &Op) -> bool {
    matches!(
        op,
        Op::Permute { .. } | Op::Broadcast { .. } | Op::Slice { .. } | Op::Reshape { .. }
    )
}

fn inlinable(op: &Op) -> bool {
    op.is_elementwise() || matches!(op, Op::Cast { .. })
}

/// Decides which inlinable values must be materialized (rule 3).
fn decide(g: &Graph) -> Vec<bool> {
    let mut consumers: Vec<Vec<ValueId>> = vec![Vec::new(); g.len()];
    for v in g.values() {
        for &a in &g.node(v).args {
            consumers[a.index()].push(v);
        }
    }
    let mut memo = HashMap::new();
    let mut mat = vec![false; g.len()];
    for o in g.outputs() {
        mat[o.value.index()] = true;
    }
    for v in g.values() {
        let op = &g.node(v).op;
        if !inlinable(op) {
            continue;
        }
        // Every bf16 result is rounded to bf16 (the graph's semantics);
        // only a store rounds to bf16, so bf16 values are not fused.
        if g.ty(v).dtype == DType::Bf16 {
            mat[v.index()] = true;
            continue;
        }
        if cheap(g, v, &mut memo) {
            continue;
        }
        // Readers through views; whether any path repeats elements.
        let (mut readers, mut expands, mut memory) = (Vec::new(), false, false);
        let mut stack = vec![(v, false)];
        while let Some((u, exp)) = stack.pop() {
            for &c in &consumers[u.index()] {
                let cop = &g.node(c).op;
                if is_view(cop) {
                    let grows = matches!(cop, Op::Broadcast { .. })
                        && g.ty(c).num_elements() > g.ty(u).num_elements();
                    stack.push((c, exp || grows));
                } else {
                    readers.push(c);
                    expands |= exp;
                    memory |=
                        !(inlinable(cop) || cop.is_reduce() || matches!(cop, Op::Concat { .. }));
                }
            }
        }
        readers.sort();
        readers.dedup();
        if readers.len() > 1 || expands || memory {
            mat[v.index()] = true;
        }
    }
    bound_fused_depth(g, &mut mat);
    mat
}

/// The most elementwise ops (and views) one fused expression chains: a
/// kernel evaluates its expression recursively, and so do the verifier
/// and the code generators, so an unbounded chain (100,000 `add`s in a
/// row) would overflow the stack. Longer chains are cut into kernels of
/// this depth, at no cost that matters: each already does this much
/// arithmetic per element.
pub const MAX_FUSED_DEPTH: usize = 256;

/// Materializes every inlinable value whose fused expression would be
/// deeper than [`MAX_FUSED_DEPTH`] (in arena order, so operands first).
fn bound_fused_depth(g: &Graph, mat: &mut [bool]) {
    let mut depth = vec![0usize; g.len()];
    for v in g.values() {
        let node = g.node(v);
        let deepest = node
            .args
            .iter()
            .map(|a| depth[a.index()])
            .max()
            .unwrap_or(0);
        let fused = is_view(&node.op) || (inlinable(&node.op) && !mat[v.index()]);
        if !fused {
            continue;
        }
        if deepest < MAX_FUSED_DEPTH {
            depth[v.index()] = deepest + 1;
        } else if inlinable(&node.op) {
            mat[v.index()] = true;
        } else if let Some(&src) = node.args.first() {
            // A view cannot be stored on its own; its source can.
            if inlinable(&g.node(src).op) {
                mat[src.index()] = true;
                depth[v.index()] = 1;
            }
        }
    }
}

/// `[%i0, %i1, …]`: one loop per dimension of `shape`, returning the loop
/// variables and a function wrapping a body in the nest.
fn loop_nest(k: &mut Kernel, shape: &[usize]) -> Vec<VarId> {
    shape.iter().map(|_| k.var(ScalarType::Index)).collect()
}

/// Wraps `body` in loops over `vars` with `shape`: the outermost parallel
/// (when there is more than one loop or it is long), the innermost vector.
fn wrap(vars: &[VarId], shape: &[usize], body: Vec<Stmt>, vector_inner: bool) -> Vec<Stmt> {
    let r = vars.len();
    let mut body = body;
    for d in (0..r).rev() {
        let kind = if d == 0 && (r > 1 || shape[0] >= 64) {
            LoopKind::Parallel
        } else if d == r - 1 && vector_inner {
            LoopKind::Vector
        } else {
            LoopKind::Serial
        };
        body = vec![Stmt::Loop {
            var: vars[d],
            extent: shape[d],
            kind,
            body,
        }];
    }
    body
}

fn idx(vars: &[VarId]) -> Vec<Index> {
    vars.iter().map(|&v| Index::var(v, 1)).collect()
}

impl<'g> Lowerer<'g> {
    fn ty(&self, v: ValueId) -> &'g TensorType {
        self.g.ty(v)
    }

    fn stored(&self, v: ValueId) -> Option<&Access> {
        match self.place[v.index()].as_ref() {
            Some(Place::Stored(a)) => Some(a),
            _ => None,
        }
    }

    /// The expression for element `idx` of value `v`, inlining producers;
    /// `memo` shares subexpressions within one loop body as variables.
    fn eval(
        &self,
        k: &mut Kernel,
        pre: &mut Vec<Stmt>,
        memo: &mut HashMap<(ValueId, Vec<Index>), VarId>,
        v: ValueId,
        idx: &[Index],
    ) -> Expr {
        let node = self.g.node(v);
        if let Some(Place::Stored(a)) = &self.place[v.index()] {
            return Expr::load(a.buf, a.at(idx));
        }
        let ty = ScalarType::of(self.ty(v).dtype);
        let key = (v, idx.to_vec());
        if let Some(&var) = memo.get(&key) {
            return Expr::Var(var);
        }
        let e = match &node.op {
            Op::Const(lit) => return Expr::constant(ty, lit.as_splat().unwrap_or(0.0)),
            Op::Iota { axis, .. } => {
                let ix = &idx[*axis];
                let mut e = Expr::constant(ty, ix.offset as f64);
                for &(var, c) in &ix.terms {
                    let term = Expr::Cast {
                        to: ty,
                        arg: Box::new(Expr::Var(var)),
                    };
                    let term = if c == 1 {
                        term
                    } else {
                        Expr::binary(Op::Mul, term, Expr::constant(ty, c as f64))
                    };
                    e = if ix.offset == 0 && ix.terms.len() == 1 {
                        term
                    } else {
                        Expr::binary(Op::Add, e, term)
                    };
                }
                return e;
            }
            Op::Broadcast { shape } => {
                let src = self.ty(node.args[0]);
                let off = shape.len() - src.rank();
                let sidx: Vec<Index> = (0..src.rank())
                    .map(|d| {
                        if src.shape[d] == 1 {
                            Index::constant(0)
                        } else {
                            idx[off + d].clone()
                        }
                    })
                    .collect();
                return self.eval(k, pre, memo, node.args[0], &sidx);
            }
            Op::Permute { perm } => {
                let mut sidx = vec![Index::constant(0); perm.len()];
                for (kk, &p) in perm.iter().enumerate() {
                    sidx[p] = idx[kk].clone();
                }
                return self.eval(k, pre, memo, node.args[0], &sidx);
            }
            Op::Slice { start, .. } => {
                let sidx: Vec<Index> = idx
                    .iter()
                    .zip(start)
                    .map(|(ix, &s)| ix.clone().shifted(s as i64))
                    .collect();
                return self.eval(k, pre, memo, node.args[0], &sidx);
            }
            Op::Cast { dtype } => Expr::Cast {
                to: ScalarType::of(*dtype),
                arg: Box::new(self.eval(k, pre, memo, node.args[0], idx)),
            },
            Op::Select => {
                let c = self.eval(k, pre, memo, node.args[0], idx);
                let a = self.eval(k, pre, memo, node.args[1], idx);
                let b = self.eval(k, pre, memo, node.args[2], idx);
                Expr::Select {
                    cond: Box::new(c),
                    then: Box::new(a),
                    otherwise: Box::new(b),
                }
            }
            op if op.is_unary() => {
                Expr::unary(op.clone(), self.eval(k, pre, memo, node.args[0], idx))
            }
            op if op.is_binary() => {
                let a = self.eval(k, pre, memo, node.args[0], idx);
                let b = self.eval(k, pre, memo, node.args[1], idx);
                Expr::binary(op.clone(), a, b)
            }
            op => unreachable!("{} is never inline", op.mnemonic()),
        };
        let var = k.var(ty);
        pre.push(Stmt::Set { var, value: e });
        memo.insert(key, var);
        Expr::Var(var)
    }

    /// A fresh buffer for `v`'s result: its output buffer if it is an
    /// output, else a temporary.
    fn result_buffer(&mut self, v: ValueId) -> BufferId {
        match self.output_buf.remove(&v) {
            Some(b) => b,
            None => self.pb.temp(v.to_string(), self.ty(v).clone()),
        }
    }

    /// Emits `out[idx] = v[idx]` over `v`'s shape into `out`.
    fn copy_kernel(&mut self, what: &str, v: ValueId, out: &Access) {
        let mut k = self.pb.kernel(what);
        let shape = self.ty(v).shape.clone();
        let vars = loop_nest(&mut k, &shape);
        let ix = idx(&vars);
        let mut body = Vec::new();
        let e = self.eval(&mut k, &mut body, &mut HashMap::new(), v, &ix);
        body.push(Stmt::Store {
            buf: out.buf,
            index: out.at(&ix),
            value: e,
        });
        k.body = wrap(&vars, &shape, body, true);
        self.pb.push(k);
    }

    /// `v` in a contiguous row-major buffer of its own (copying if needed).
    fn contiguous(&mut self, v: ValueId) -> Arg {
        let ty = self.ty(v).clone();
        if let Some(a) = self.stored(v) {
            let whole = self.pb.decl(a.buf).ty.num_elements() == ty.num_elements();
            if a.offset == 0 && a.is_row_major() && whole {
                return Arg { buf: a.buf, ty };
            }
        }
        let buf = self.pb.temp(format!("{v}.contiguous"), ty.clone());
        self.copy_kernel(
            &format!("copy_{}", v.index()),
            v,
            &Access::contiguous(buf, &ty.shape),
        );
        Arg { buf, ty }
    }

    fn elementwise(&mut self, v: ValueId) {
        let buf = self.result_buffer(v);
        let shape = self.ty(v).shape.clone();
        let out = Access::contiguous(buf, &shape);
        // Compute through the inline definition, then store.
        self.place[v.index()] = Some(Place::Inline);
        self.copy_kernel(self.g.node(v).op.mnemonic(), v, &out);
        self.place[v.index()] = Some(Place::Stored(out));
    }

    fn reduce(&mut self, v: ValueId) {
        let node = self.g.node(v);
        let (axes, is_max) = match &node.op {
            Op::ReduceSum { axes, .. } => (axes, false),
            Op::ReduceMax { axes, .. } => (axes, true),
            _ => unreachable!("only reductions"),
        };
        let x = node.args[0];
        let in_shape = self.ty(x).shape.clone();
        let dtype = self.ty(v).dtype;
        let ty = ScalarType::of(dtype);
        let buf = self.result_buffer(v);
        let mut k = self.pb.kernel(node.op.mnemonic());
        let vars = loop_nest(&mut k, &in_shape);
        let kept: Vec<usize> = (0..in_shape.len()).filter(|d| !axes.contains(d)).collect();
        let mut reduced: Vec<usize> = axes.clone();
        reduced.sort_unstable();
        let acc = k.var(ty);
        let init = match (is_max, dtype) {
            (true, DType::I32) => f64::from(i32::MIN),
            (true, _) => f64::NEG_INFINITY,
            (false, DType::I32) => 0.0,
            // -0 is the identity of IEEE addition (+0 would turn a sum of -0s into +0).
            (false, _) => -0.0,
        };
        let mut inner = Vec::new();
        let e = self.eval(&mut k, &mut inner, &mut HashMap::new(), x, &idx(&vars));
        let op = if is_max { Op::Max } else { Op::Add };
        inner.push(Stmt::Set {
            var: acc,
            value: Expr::binary(op, Expr::Var(acc), e),
        });
        // Reduced loops, innermost last; a vector loop if it runs over the
        // contiguous last axis.
        let last = in_shape.len() - 1;
        for (pos, &d) in reduced.iter().enumerate().rev() {
            let kind = if pos == reduced.len() - 1 && d == last {
                LoopKind::Vector
            } else {
                LoopKind::Serial
            };
            inner = vec![Stmt::Loop {
                var: vars[d],
                extent: in_shape[d],
                kind,
                body: inner,
            }];
        }
        // The output element: kept axes in order (reduced ones are 0 or absent).
        let out_shape = self.ty(v).shape.clone();
        let out_access = Access::contiguous(buf, &out_shape);
        let out_idx: Vec<Index> = if out_shape.len() == in_shape.len() {
            (0..in_shape.len())
                .map(|d| {
                    if axes.contains(&d) {
                        Index::constant(0)
                    } else {
                        Index::var(vars[d], 1)
                    }
                })
                .collect()
        } else {
            kept.iter().map(|&d| Index::var(vars[d], 1)).collect()
        };
        let mut body = vec![Stmt::Set {
            var: acc,
            value: Expr::constant(ty, init),
        }];
        body.extend(inner);
        body.push(Stmt::Store {
            buf,
            index: out_access.at(&out_idx),
            value: Expr::Var(acc),
        });
        let kept_vars: Vec<VarId> = kept.iter().map(|&d| vars[d]).collect();
        let kept_shape: Vec<usize> = kept.iter().map(|&d| in_shape[d]).collect();
        k.body = wrap(&kept_vars, &kept_shape, body, false);
        self.pb.push(k);
        self.place[v.index()] = Some(Place::Stored(out_access));
    }

    /// A matrix view for GEMM: `(offset, row, col, batch)` strides, if the
    /// operand's batch axes collapse into one stride.
    fn matrix(a: &Access) -> Option<Matrix> {
        let r = a.shape.len();
        let batch: Vec<usize> = (0..r - 2).filter(|&d| a.shape[d] != 1).collect();
        let mut bs = 0i64;
        for w in batch.windows(2) {
            if a.strides[w[0]] != a.strides[w[1]] * a.shape[w[1]] as i64 {
                return None;
            }
        }
        if let Some(&d) = batch.last() {
            bs = a.strides[d];
        }
        let (rs, cs) = (a.strides[r - 2], a.strides[r - 1]);
        if a.offset < 0 || bs < 0 || rs < 0 || cs < 0 {
            return None;
        }
        Some(Matrix {
            buf: a.buf,
            offset: a.offset as usize,
            row_stride: rs as usize,
            col_stride: cs as usize,
            batch_stride: bs as usize,
        })
    }

    fn matmul(&mut self, v: ValueId) -> Result<()> {
        let node = self.g.node(v);
        let (a, b) = (node.args[0], node.args[1]);
        let out_ty = self.ty(v).clone();
        let dtype = out_ty.dtype;
        let r = out_ty.rank();
        let (m, n, kk) = (
            out_ty.shape[r - 2],
            out_ty.shape[r - 1],
            self.ty(a).shape[r - 1],
        );
        let batch: usize = out_ty.shape[..r - 2].iter().product();
        let buf = self.result_buffer(v);
        let out = Access::contiguous(buf, &out_ty.shape);
        // bf16 results where the backend's GEMM accumulates them in f32 and
        // rounds once on the store, which is the graph's semantics.
        let gemm = match dtype {
            DType::F32 | DType::F64 => true,
            DType::Bf16 => self.opts.gemm.bf16_results,
            _ => false,
        };
        if gemm {
            // bf16 operands the routine cannot read are widened (exactly)
            // into f32 copies first.
            let widen = dtype == DType::Bf16 && !self.opts.gemm.bf16_operands;
            let operand = |s: &mut Self, x: ValueId| -> Matrix {
                if widen {
                    let shape = s.ty(x).shape.clone();
                    let wide = s.pb.temp(
                        format!("{x}.f32"),
                        TensorType::new(DType::F32, shape.clone()),
                    );
                    let at = Access::contiguous(wide, &shape);
                    s.copy_kernel(&format!("widen_{}", x.index()), x, &at);
                    return Self::matrix(&at).expect("contiguous operands collapse");
                }
                if let Some(mx) = s.stored(x).and_then(Self::matrix) {
                    return mx;
                }
                let arg = s.contiguous(x);
                Self::matrix(&Access::contiguous(arg.buf, &arg.ty.shape))
                    .expect("contiguous operands collapse")
            };
            let (ma, mb) = (operand(self, a), operand(self, b));
            let mc = Self::matrix(&out).expect("contiguous results collapse");
            let mut k = self.pb.kernel("matmul");
            k.body = vec![Stmt::Gemm(Gemm {
                m,
                n,
                k: kk,
                batch,
                a: ma,
                b: mb,
                c: mc,
                accumulate: false,
                row_sumsq: None,
            })];
            self.pb.push(k);
        } else {
            // Integer products, and bf16 ones where the backend's GEMM
            // writes only f32/f64, as loop nests.
            let mut k = self.pb.kernel("matmul_loops");
            let vars = loop_nest(&mut k, &out_ty.shape);
            let kv = k.var(ScalarType::Index);
            let ty = ScalarType::of(dtype);
            let acc = k.var(ty);
            let mut ai = idx(&vars[..r - 1]);
            ai.push(Index::var(kv, 1));
            let mut bi = idx(&vars[..r - 2]);
            bi.push(Index::var(kv, 1));
            bi.push(Index::var(vars[r - 1], 1));
            let mut inner = Vec::new();
            let mut memo = HashMap::new();
            let ea = self.eval(&mut k, &mut inner, &mut memo, a, &ai);
            let eb = self.eval(&mut k, &mut inner, &mut memo, b, &bi);
            inner.push(Stmt::Set {
                var: acc,
                value: Expr::binary(Op::Add, Expr::Var(acc), Expr::binary(Op::Mul, ea, eb)),
            });
            let init = if dtype == DType::I32 { 0.0 } else { -0.0 };
            let body = vec![
                Stmt::Set {
                    var: acc,
                    value: Expr::constant(ty, init),
                },
                Stmt::Loop {
                    var: kv,
                    extent: kk,
                    kind: LoopKind::Serial,
                    body: inner,
                },
                Stmt::Store {
                    buf,
                    index: out.at(&idx(&vars)),
                    value: Expr::Var(acc),
                },
            ];
            k.body = wrap(&vars, &out_ty.shape, body, false);
            self.pb.push(k);
        }
        self.place[v.index()] = Some(Place::Stored(out));
        Ok(())
    }

    fn concat(&mut self, v: ValueId) {
        let node = self.g.node(v);
        let Op::Concat { axis } = node.op else {
            unreachable!("only concat")
        };
        let buf = self.result_buffer(v);
        let out = Access::contiguous(buf, &self.ty(v).shape);
        let mut k = self.pb.kernel("concat");
        let mut at = 0usize;
        for &a in &node.args {
            let shape = self.ty(a).shape.clone();
            let vars = loop_nest(&mut k, &shape);
            let ix = idx(&vars);
            let mut body = Vec::new();
            let e = self.eval(&mut k, &mut body, &mut HashMap::new(), a, &ix);
            let mut oix = ix.clone();
            oix[axis] = oix[axis].clone().shifted(at as i64);
            body.push(Stmt::Store {
                buf,
                index: out.at(&oix),
                value: e,
            });
            // Several nests in one kernel: only the first statement level
            // may be parallel, and each nest is one.
            k.body.extend(wrap(&vars, &shape, body, true));
            at += shape[axis];
        }
        self.pb.push(k);
        self.place[v.index()] = Some(Place::Stored(out));
    }

    fn composite(&mut self, v: ValueId) -> Result<()> {
        let node = self.g.node(v);
        // Templates that follow each other (a block's replayed pre- and
        // post-mixes, say) share the copy of an operand they both read
        // as a broadcast, instead of copying it once each; a copy made
        // further back is not kept alive for a later reader.
        let (mut recent, end) = std::mem::take(&mut self.copies);
        if end != self.pb.kernels().len() {
            recent.clear();
        }
        let mut copies = HashMap::new();
        let mut args = Vec::with_capacity(node.args.len());
        for &a in &node.args {
            let arg = match recent.get(&a).or_else(|| copies.get(&a)) {
                Some(c) => Arg::clone(c),
                None => {
                    let arg = self.contiguous(a);
                    if self.stored(a).is_none_or(|s| s.buf != arg.buf) {
                        copies.insert(a, arg.clone());
                    }
                    arg
                }
            };
            args.push(arg);
        }
        for (a, c) in recent {
            if node.args.contains(&a) {
                copies.insert(a, c);
            }
        }
        match &node.ty {
            Type::Tuple(parts) => {
                let outs: Vec<Arg> = parts
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let buf = self
                            .output_elem
                            .remove(&(v, i))
                            .unwrap_or_else(|| self.pb.temp(format!("{v}.{i}"), t.clone()));
                        Arg { buf, ty: t.clone() }
                    })
                    .collect();
                let read: Vec<bool> = (0..parts.len())
                    .map(|i| {
                        self.g.nodes()[v.index() + 1..].iter().any(|u| {
                            matches!(u.op, Op::Get { index } if index == i) && u.args[0] == v
                        })
                    })
                    .collect();
                lower_composite_reading(&mut self.pb, &node.op, &args, &outs, &read, &self.opts)?;
                self.place[v.index()] = Some(Place::Tuple(outs.iter().map(|a| a.buf).collect()));
                self.copies = (copies, self.pb.kernels().len());
            }
            Type::Tensor(t) => {
                let buf = self.result_buffer(v);
                let out = Arg { buf, ty: t.clone() };
                lower_composite(
                    &mut self.pb,
                    &node.op,
                    &args,
                    std::slice::from_ref(&out),
                    &self.opts,
                )?;
                self.place[v.index()] = Some(Place::Stored(Access::contiguous(buf, &t.shape)));
                self.copies = (copies, self.pb.kernels().len());
            }
        }
        Ok(())
    }

    fn view(&mut self, v: ValueId) {
        let node = self.g.node(v);
        let src = node.args[0];
        let place = match (&node.op, self.place[src.index()].clone()) {
            (Op::Reshape { shape }, Some(Place::Stored(a))) => match a.reshape(shape) {
                Some(r) => Place::Stored(r),
                None => {
                    let arg = self.contiguous(src);
                    Place::Stored(Access::contiguous(arg.buf, shape))
                }
            },
            (Op::Reshape { shape }, _) => {
                let arg = self.contiguous(src);
                Place::Stored(Access::contiguous(arg.buf, shape))
            }
            (Op::Permute { perm }, Some(Place::Stored(a))) => Place::Stored(a.permute(perm)),
            (Op::Broadcast { shape }, Some(Place::Stored(a))) => Place::Stored(a.broadcast(shape)),
            (Op::Slice { start, end }, Some(Place::Stored(a))) => {
                Place::Stored(a.slice(start, end))
            }
            _ => Place::Inline,
        };
        self.place[v.index()] = Some(place);
    }

    fn node(&mut self, v: ValueId) -> Result<()> {
        let node = self.g.node(v);
        match &node.op {
            Op::Input { .. } => unreachable!("inputs are placed first"),
            Op::Const(lit) => {
                if lit.as_splat().is_some() {
                    self.place[v.index()] = Some(Place::Inline);
                } else {
                    let t = self.ty(v).clone();
                    let values = (0..t.num_elements()).map(|i| lit.get(i)).collect();
                    let b = self
                        .pb
                        .buffer(v.to_string(), t.clone(), BufferKind::Const(values));
                    self.place[v.index()] = Some(Place::Stored(Access::contiguous(b, &t.shape)));
                }
            }
            Op::Iota { .. } => self.place[v.index()] = Some(Place::Inline),
            Op::Get { index } => {
                let Some(Place::Tuple(bufs)) = self.place[node.args[0].index()].clone() else {
                    unreachable!("get reads a tuple")
                };
                self.place[v.index()] = Some(Place::Stored(Access::contiguous(
                    bufs[*index],
                    &self.ty(v).shape,
                )));
            }
            op if is_view(op) => self.view(v),
            op if inlinable(op) => {
                if self.materialize[v.index()] {
                    self.elementwise(v);
                } else {
                    self.place[v.index()] = Some(Place::Inline);
                }
            }
            op if op.is_reduce() => self.reduce(v),
            Op::MatMul => self.matmul(v)?,
            Op::Concat { .. } => self.concat(v),
            op if has_template(op) => self.composite(v)?,
            op => {
                return Err(LowerError::Unsupported {
                    op: op.mnemonic().into(),
                    types: self.g.value_type(v).to_string(),
                    reason: "no lowering".into(),
                });
            }
        }
        Ok(())
    }
}

/// Lowers a verified graph to a verified, memory-planned kernel program.
pub fn lower(graph: &Graph, opts: &LowerOptions) -> Result<birkhoff_ir::kernel::Program> {
    verify(graph).map_err(LowerError::Input)?;
    let live = eliminate_dead_nodes(graph);
    let g = &live;
    let mut l = Lowerer {
        g,
        pb: ProgramBuilder::new(g.name()),
        opts: *opts,
        place: vec![None; g.len()],
        materialize: decide(g),
        output_buf: HashMap::new(),
        output_elem: HashMap::new(),
        copies: (HashMap::new(), 0),
    };
    l.pb.column_reductions = opts.column_reductions;
    l.pb.reciprocal_lines = opts.reciprocal_lines;
    for &v in g.inputs() {
        let name = g.input_name(v).unwrap_or_default().to_string();
        let b = l.pb.input(&name, g.ty(v).clone());
        l.place[v.index()] = Some(Place::Stored(Access::contiguous(b, &g.ty(v).shape)));
    }
    // Outputs a kernel can write directly; the rest are copied at the end.
    let mut copies = Vec::new();
    let mut claimed = std::collections::HashSet::new();
    for o in g.outputs() {
        let b = l.pb.output(&o.name, g.ty(o.value).clone());
        let node = g.node(o.value);
        let direct = !matches!(node.op, Op::Input { .. } | Op::Const(_) | Op::Iota { .. })
            && !is_view(&node.op)
            && claimed.insert(o.value);
        match &node.op {
            // A tuple element goes straight to the first output that asks
            // for it; any other output holding it is a copy.
            Op::Get { index } => {
                if direct && !l.output_elem.contains_key(&(node.args[0], *index)) {
                    l.output_elem.insert((node.args[0], *index), b);
                } else {
                    copies.push((o.value, b));
                }
            }
            _ if direct => {
                l.output_buf.insert(o.value, b);
            }
            _ => copies.push((o.value, b)),
        }
    }
    for v in g.values() {
        if l.place[v.index()].is_none() {
            l.node(v)?;
        }
    }
    for (v, b) in copies {
        let out = Access::contiguous(b, &g.ty(v).shape);
        l.copy_kernel("output_copy", v, &out);
    }
    let mut program = l.pb.finish();
    split_parallel(&mut program);
    if opts.fuse_kernels {
        crate::kernel_fusion::fuse(&mut program, opts.scalar_kernels_apart);
    }
    if opts.values_at_use {
        crate::scratch_at_use::values_at_use(&mut program);
    }
    memory::place_temporaries(&mut program);
    verify_program(&program).map_err(LowerError::Invalid)?;
    Ok(program)
}

/// Variables a statement list reads or sets.
fn vars_of(body: &[Stmt], out: &mut std::collections::HashSet<VarId>) {
    walk_stmts(body, &mut |s| match s {
        Stmt::Loop { var, .. } | Stmt::Set { var, .. } => {
            out.insert(*var);
        }
        Stmt::Store { index, .. } | Stmt::LocalStore { index, .. } => {
            out.extend(index.terms.iter().map(|t| t.0));
        }
        Stmt::Gemm(_) => {}
    });
    walk_exprs(body, &mut |e| match e {
        Expr::Var(v) => {
            out.insert(*v);
        }
        Expr::Load { index, .. } | Expr::LocalLoad { index, .. } => {
            out.extend(index.terms.iter().map(|t| t.0));
        }
        _ => {}
    });
}

/// Splits kernels so that each parallel loop is a kernel's only top-level
/// statement, where the pieces share no variables (backends dispatch one
/// parallel loop per kernel across threads).
fn split_parallel(p: &mut birkhoff_ir::kernel::Program) {
    let mut out = Vec::new();
    for k in std::mem::take(&mut p.kernels) {
        let parallel = k
            .body
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    Stmt::Loop {
                        kind: LoopKind::Parallel,
                        ..
                    }
                )
            })
            .count();
        if k.body.len() <= 1 || parallel == 0 {
            out.push(k);
            continue;
        }
        // Segments: each parallel loop alone, other statements grouped.
        let mut segments: Vec<Vec<Stmt>> = Vec::new();
        for s in k.body.iter().cloned() {
            let par = matches!(
                s,
                Stmt::Loop {
                    kind: LoopKind::Parallel,
                    ..
                }
            );
            match segments.last_mut() {
                Some(last)
                    if !par
                        && !matches!(
                            last.last(),
                            Some(Stmt::Loop {
                                kind: LoopKind::Parallel,
                                ..
                            })
                        ) =>
                {
                    last.push(s);
                }
                _ => segments.push(vec![s]),
            }
        }
        let sets: Vec<std::collections::HashSet<VarId>> = segments
            .iter()
            .map(|seg| {
                let mut v = std::collections::HashSet::new();
                vars_of(seg, &mut v);
                v
            })
            .collect();
        let independent =
            (0..sets.len()).all(|i| (i + 1..sets.len()).all(|j| sets[i].is_disjoint(&sets[j])));
        if !independent {
            out.push(k);
            continue;
        }
        for (i, seg) in segments.into_iter().enumerate() {
            out.push(Kernel {
                name: format!("{}.{i}", k.name),
                vars: k.vars.clone(),
                locals: k.locals.clone(),
                body: seg,
            });
        }
    }
    p.kernels = out;
}
