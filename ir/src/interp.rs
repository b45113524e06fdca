//! The reference interpreter: the executable definition of every op.
//!
//! Written for clarity, not speed. Input: a graph that passes the verifier.
//! Every value is held as `f64`; in [`Precision::F64`] (the oracle) `f32`
//! values are not rounded at all, in [`Precision::F32`] every `f32` result
//! and every step of a reduction or matrix-product accumulation is rounded
//! to `f32`. `bf16` is a storage type: its values are rounded to bf16
//! (nearest, ties to even) in both modes, with arithmetic done at the
//! mode's precision. `i32` arithmetic is exact two's-complement with
//! wrap-around; `bool` values are 0 and 1.
//!
//! Reductions and matrix products accumulate sequentially in row-major
//! order of the reduced positions, starting from the first element.
//!
//! `cast` always rounds to its target type, in both precisions: it is the
//! one place a graph asks for rounding explicitly.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::op::{FloatAttr, Op};
use crate::reference::{self, ProjectionSource, Rounding};
use crate::tensor::Tensor;
use crate::types::{DType, TensorType, Type, strides};
use crate::verify::verify;

/// Arithmetic precision of the interpreter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// Every float computed in f64 (bf16 values still rounded to bf16).
    #[default]
    F64,
    /// f32 values rounded after every operation and accumulation step.
    F32,
}

/// Interpreter settings.
#[derive(Clone, Copy, Debug)]
pub struct InterpOptions {
    /// Arithmetic precision.
    pub precision: Precision,
    /// Upper bound on the bytes of values alive at once (8 bytes per
    /// element); a graph that needs more fails with [`Error::TooLarge`]
    /// before allocating.
    pub memory_limit: u64,
    /// Return float outputs as `f64` tensors, unrounded (the oracle's full
    /// precision) instead of rounded to their declared type.
    pub f64_outputs: bool,
}

impl Default for InterpOptions {
    fn default() -> Self {
        InterpOptions {
            precision: Precision::F64,
            memory_limit: 8 << 30,
            f64_outputs: false,
        }
    }
}

/// Rounds a result of dtype `d` as a store of it does in precision `p`.
pub fn store(d: DType, p: Precision, x: f64) -> f64 {
    match (d, p) {
        (DType::F32, Precision::F64) | (DType::F64, _) => x,
        _ => d.round(x),
    }
}

/// Rounds an accumulator of dtype `d` between steps.
fn acc(d: DType, p: Precision, x: f64) -> f64 {
    match (d, p) {
        (DType::F32 | DType::Bf16, Precision::F32) => x as f32 as f64,
        _ => x,
    }
}

fn wrap_i32(x: i64) -> f64 {
    f64::from(x as i32)
}

fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        // max(-0, +0) is +0.
        if a.is_sign_negative() { b } else { a }
    } else if a > b {
        a
    } else {
        b
    }
}

fn nan_min(a: f64, b: f64) -> f64 {
    -nan_max(-a, -b)
}

/// One elementwise unary op on one value of dtype `d`, unrounded.
pub fn eval_unary(op: &Op, d: DType, x: f64) -> f64 {
    match op {
        Op::Neg if d == DType::I32 => wrap_i32(-(x as i64)),
        Op::Abs if d == DType::I32 => wrap_i32((x as i64).abs()),
        Op::Neg => -x,
        Op::Abs => x.abs(),
        Op::Exp => x.exp(),
        Op::Log => x.ln(),
        Op::Sqrt => x.sqrt(),
        Op::Rsqrt => 1.0 / x.sqrt(),
        Op::Recip => 1.0 / x,
        Op::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Op::Tanh => x.tanh(),
        Op::Not => f64::from(u8::from(x == 0.0)),
        _ => f64::NAN,
    }
}

/// One elementwise binary op on values of dtype `d` (the operands' type),
/// unrounded.
pub fn eval_binary(op: &Op, d: DType, a: f64, b: f64) -> f64 {
    let bool_of = |c: bool| f64::from(u8::from(c));
    if d == DType::I32 {
        let (x, y) = (a as i64, b as i64);
        match op {
            Op::Add => return wrap_i32(x + y),
            Op::Sub => return wrap_i32(x - y),
            Op::Mul => return wrap_i32(x.wrapping_mul(y)),
            _ => {}
        }
    }
    match op {
        Op::Add => a + b,
        Op::Sub => a - b,
        Op::Mul => a * b,
        Op::Div => a / b,
        Op::Max => nan_max(a, b),
        Op::Min => nan_min(a, b),
        Op::Pow => a.powf(b),
        Op::Eq => bool_of(a == b),
        Op::Ne => bool_of(a != b),
        Op::Lt => bool_of(a < b),
        Op::Le => bool_of(a <= b),
        Op::Gt => bool_of(a > b),
        Op::Ge => bool_of(a >= b),
        Op::And => bool_of(a != 0.0 && b != 0.0),
        Op::Or => bool_of(a != 0.0 || b != 0.0),
        _ => f64::NAN,
    }
}

/// Walks `out_shape` in row-major order; element `i` is read from
/// `src[offset + Σ idx_k · src_strides[k]]`.
fn gather(src: &[f64], out_shape: &[usize], src_strides: &[usize], offset: usize) -> Vec<f64> {
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; out_shape.len()];
    let mut pos = offset;
    for _ in 0..n {
        out.push(src[pos]);
        for k in (0..out_shape.len()).rev() {
            idx[k] += 1;
            pos += src_strides[k];
            if idx[k] < out_shape[k] {
                break;
            }
            pos -= src_strides[k] * out_shape[k];
            idx[k] = 0;
        }
    }
    out
}

struct Eval<'a> {
    graph: &'a Graph,
    p: Precision,
    values: Vec<Option<Vec<f64>>>,
}

impl Eval<'_> {
    fn arg(&self, v: ValueId, i: usize) -> &[f64] {
        let a = self.graph.node(v).args[i];
        self.values[a.index()]
            .as_deref()
            .expect("operand freed before its last use")
    }

    fn arg_ty(&self, v: ValueId, i: usize) -> &TensorType {
        self.graph.ty(self.graph.node(v).args[i])
    }

    /// Semantic, fused and tuple ops; `None` for primitives.
    fn eval_composite(&self, v: ValueId) -> Option<Vec<f64>> {
        let node = self.graph.node(v);
        let op = &node.op;
        if let Op::Get { index } = op {
            let Type::Tuple(parts) = self.graph.value_type(node.args[0]) else {
                unreachable!("the verifier only lets get take tuples")
            };
            let start: usize = parts[..*index].iter().map(TensorType::num_elements).sum();
            let buf = self.values[node.args[0].index()]
                .as_deref()
                .expect("operand freed before its last use");
            return Some(buf[start..start + parts[*index].num_elements()].to_vec());
        }
        let d = match &node.ty {
            Type::Tensor(t) => t.dtype,
            Type::Tuple(ts) => ts[0].dtype,
        };
        let p = self.p;
        // bf16 is a storage type: a semantic or fused op computes in f32 and
        // rounds only its results to bf16 (below), as its kernel does.
        let compute = if d == DType::Bf16 { DType::F32 } else { d };
        let (st, ac) = (move |x| store(compute, p, x), move |x| acc(compute, p, x));
        let r = Rounding {
            store: &st,
            accumulate: &ac,
        };
        let x = || self.arg(v, 0);
        let shape = || &self.arg_ty(v, 0).shape;
        let dims = |i: usize| {
            let s = &self.arg_ty(v, i).shape;
            (s[0], s[1], s[2])
        };
        // Float attributes are constants of the op's compute type: f32 for
        // f32 and bf16 ops (as the constants they were recognized from were).
        let attr = |a: FloatAttr| a.rounded_to(compute).get();
        let out = match op {
            Op::RowNorm { eps } => {
                reference::normalize(x(), shape(), shape().len() - 1, attr(*eps), &r)
            }
            Op::ColNorm { eps } => {
                reference::normalize(x(), shape(), shape().len() - 2, attr(*eps), &r)
            }
            Op::Softmax { axis } => reference::softmax(x(), shape(), *axis, &r),
            Op::RmsNorm { eps } => reference::rms_norm(x(), shape(), attr(*eps), &r),
            Op::Sinkhorn(spec) => {
                let spec = spec.rounded_to(compute);
                reference::sinkhorn(x(), shape()[shape().len() - 1], &spec, &r)
            }
            Op::SinkhornGrad(spec) => reference::sinkhorn_grad(
                x(),
                self.arg(v, 1),
                shape()[shape().len() - 1],
                &spec.rounded_to(compute),
                &r,
            ),
            Op::MhcProject => reference::project(x(), self.arg(v, 1), dims(0).0, &r),
            Op::MhcPost => {
                let (res, post, comb) = (self.arg(v, 1), self.arg(v, 2), self.arg(v, 3));
                reference::post_mix(x(), res, post, comb, dims(1), &r)
            }
            Op::MhcPreGrad(spec) => {
                let args = [0, 1, 2, 3, 4, 5, 6].map(|i| self.arg(v, i));
                reference::pre_mix_grad(args, dims(0), &spec.rounded_to(compute), &r)
            }
            Op::MhcPostGrad => {
                let args = [0, 1, 2, 3, 4].map(|i| self.arg(v, i));
                reference::post_mix_grad(args, dims(1), &r)
            }
            _ if let Some((norm_eps, gates)) = op.pre_mix() => {
                let (a, b, c) = (self.arg(v, 1), self.arg(v, 2), self.arg(v, 3));
                let proj = match op {
                    Op::MhcPreProjected(_) => ProjectionSource::Mixes(a),
                    _ => ProjectionSource::Weights(a),
                };
                let gates = gates.rounded_to(compute);
                reference::pre_mix(x(), proj, b, c, dims(0), attr(norm_eps), &gates, &r)
            }
            _ => return None,
        };
        Some(if d == DType::Bf16 {
            out.into_iter().map(|x| store(d, p, x)).collect()
        } else {
            out
        })
    }

    fn eval(&self, v: ValueId) -> Vec<f64> {
        if let Some(out) = self.eval_composite(v) {
            return out;
        }
        let node = self.graph.node(v);
        let ty = node.tensor_ty();
        let (d, p) = (ty.dtype, self.p);
        let op = &node.op;
        match op {
            Op::Input { .. } => unreachable!("inputs are bound before evaluation"),
            Op::Const(lit) => (0..ty.num_elements()).map(|i| lit.get(i)).collect(),
            Op::Iota { axis, .. } => {
                let st = strides(&ty.shape);
                (0..ty.num_elements())
                    .map(|i| store(d, p, ((i / st[*axis]) % ty.shape[*axis]) as f64))
                    .collect()
            }
            _ if op.is_unary() => self
                .arg(v, 0)
                .iter()
                .map(|&x| store(d, p, eval_unary(op, d, x)))
                .collect(),
            _ if op.is_binary() => {
                let ad = self.arg_ty(v, 0).dtype;
                let (a, b) = (self.arg(v, 0), self.arg(v, 1));
                a.iter()
                    .zip(b)
                    .map(|(&x, &y)| store(d, p, eval_binary(op, ad, x, y)))
                    .collect()
            }
            Op::Select => {
                let (c, a, b) = (self.arg(v, 0), self.arg(v, 1), self.arg(v, 2));
                c.iter()
                    .zip(a.iter().zip(b))
                    .map(|(&c, (&x, &y))| if c != 0.0 { x } else { y })
                    .collect()
            }
            Op::ReduceSum { axes, .. } | Op::ReduceMax { axes, .. } => {
                let in_shape = &self.arg_ty(v, 0).shape;
                let x = self.arg(v, 0);
                // Output strides over the input's axes, 0 on reduced axes.
                let kept: Vec<usize> = in_shape
                    .iter()
                    .enumerate()
                    .map(|(k, &n)| if axes.contains(&k) { 1 } else { n })
                    .collect();
                let mut ost = strides(&kept);
                for &a in axes {
                    ost[a] = 0;
                }
                let idx = gather(
                    &(0..ty.num_elements()).map(|i| i as f64).collect::<Vec<_>>(),
                    in_shape,
                    &ost,
                    0,
                );
                let is_sum = matches!(op, Op::ReduceSum { .. });
                let mut out: Vec<Option<f64>> = vec![None; ty.num_elements()];
                for (&o, &xi) in idx.iter().zip(x) {
                    let slot = &mut out[o as usize];
                    *slot = Some(match *slot {
                        None => xi,
                        Some(s) if is_sum && d == DType::I32 => wrap_i32(s as i64 + xi as i64),
                        Some(s) if is_sum => acc(d, p, s + xi),
                        Some(s) => nan_max(s, xi),
                    });
                }
                out.into_iter()
                    .map(|s| store(d, p, s.unwrap_or(0.0)))
                    .collect()
            }
            Op::Reshape { .. } => self.arg(v, 0).to_vec(),
            Op::Cast { dtype } => self.arg(v, 0).iter().map(|&x| cast(*dtype, p, x)).collect(),
            Op::Permute { perm } => {
                let ist = strides(&self.arg_ty(v, 0).shape);
                let st: Vec<usize> = perm.iter().map(|&k| ist[k]).collect();
                gather(self.arg(v, 0), &ty.shape, &st, 0)
            }
            Op::Broadcast { shape } => {
                let ishape = &self.arg_ty(v, 0).shape;
                let ist = strides(ishape);
                let off = shape.len() - ishape.len();
                let st: Vec<usize> = (0..shape.len())
                    .map(|k| {
                        if k < off || ishape[k - off] == 1 {
                            0
                        } else {
                            ist[k - off]
                        }
                    })
                    .collect();
                gather(self.arg(v, 0), shape, &st, 0)
            }
            Op::Slice { start, .. } => {
                let ist = strides(&self.arg_ty(v, 0).shape);
                let offset = start.iter().zip(&ist).map(|(s, t)| s * t).sum();
                gather(self.arg(v, 0), &ty.shape, &ist, offset)
            }
            Op::Concat { axis } => {
                let outer: usize = ty.shape[..*axis].iter().product();
                let mut out = Vec::with_capacity(ty.num_elements());
                for o in 0..outer {
                    for i in 0..node.args.len() {
                        let inner: usize = self.arg_ty(v, i).shape[*axis..].iter().product();
                        out.extend_from_slice(&self.arg(v, i)[o * inner..(o + 1) * inner]);
                    }
                }
                out
            }
            Op::MatMul => {
                let (ash, bsh) = (&self.arg_ty(v, 0).shape, &self.arg_ty(v, 1).shape);
                let r = ash.len();
                let (m, k, n) = (ash[r - 2], ash[r - 1], bsh[r - 1]);
                let batch: usize = ash[..r - 2].iter().product();
                let (a, b) = (self.arg(v, 0), self.arg(v, 1));
                let mut out = vec![0.0; batch * m * n];
                for bi in 0..batch {
                    let (a, b) = (&a[bi * m * k..][..m * k], &b[bi * k * n..][..k * n]);
                    let o = &mut out[bi * m * n..][..m * n];
                    for i in 0..m {
                        let row = &mut o[i * n..][..n];
                        for kk in 0..k {
                            let aik = a[i * k + kk];
                            let brow = &b[kk * n..][..n];
                            for (oj, &bj) in row.iter_mut().zip(brow) {
                                *oj = if d == DType::I32 {
                                    wrap_i32(
                                        *oj as i64
                                            + (aik as i64).wrapping_mul(bj as i64) as i32 as i64,
                                    )
                                } else if kk == 0 {
                                    acc(d, p, aik * bj)
                                } else {
                                    acc(d, p, *oj + acc(d, p, aik * bj))
                                };
                            }
                        }
                    }
                }
                out.into_iter().map(|x| store(d, p, x)).collect()
            }
            _ => unreachable!("op {} has no interpreter rule", op.mnemonic()),
        }
    }
}

/// Converts one value to `dtype`, as `cast` does: an explicit cast is a
/// request to round, so it rounds to the target type in both precisions.
fn cast(dtype: DType, _p: Precision, x: f64) -> f64 {
    dtype.round(x)
}

/// Runs `graph` on `inputs` (one tensor per graph input, by name) and
/// returns each output by name, in signature order.
///
/// The graph is verified first. Missing, unknown or mistyped inputs are
/// errors, as is a graph whose live values exceed the memory limit.
pub fn interpret(
    graph: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    opts: &InterpOptions,
) -> Result<Vec<(String, Tensor)>> {
    interpret_with_progress(graph, inputs, opts, &mut |_, _| {})
}

/// Elements of a value (all parts of a tuple).
fn elements(t: &Type) -> usize {
    match t {
        Type::Tensor(t) => t.num_elements(),
        Type::Tuple(ts) => ts.iter().map(TensorType::num_elements).sum(),
    }
}

/// Scalar operations a node costs the interpreter, for progress reports.
pub fn node_cost(graph: &Graph, v: ValueId) -> u64 {
    let node = graph.node(v);
    let out = elements(graph.value_type(v)) as u64;
    match &node.op {
        Op::MatMul => {
            let a = &graph.ty(node.args[0]).shape;
            out.saturating_mul(a[a.len() - 1] as u64)
        }
        op if op.is_reduce() => graph.ty(node.args[0]).num_elements() as u64,
        _ => out,
    }
}

/// [`interpret`], calling `progress(done, total)` after each node with the
/// work done so far and in all, in [`node_cost`] units.
pub fn interpret_with_progress(
    graph: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    opts: &InterpOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<(String, Tensor)>> {
    verify(graph)?;
    for name in inputs.keys() {
        if graph.input_by_name(name).is_none() {
            let known: Vec<&str> = graph
                .inputs()
                .iter()
                .filter_map(|&v| graph.input_name(v))
                .collect();
            return Err(Error::UnknownInput {
                name: name.clone(),
                graph: graph.name().to_string(),
                known: known.join(", "),
            });
        }
    }
    let mut ev = Eval {
        graph,
        p: opts.precision,
        values: vec![None; graph.len()],
    };
    let mut live_bytes: u64 = 0;
    for &v in graph.inputs() {
        let name = graph.input_name(v).unwrap_or_default();
        let ty = graph.ty(v);
        let t = inputs.get(name).ok_or_else(|| Error::MissingInput {
            name: name.to_string(),
            ty: ty.clone(),
        })?;
        if t.ty() != ty {
            return Err(Error::InputType {
                name: name.to_string(),
                expected: ty.clone(),
                got: t.ty().clone(),
            });
        }
        let bytes = 8 * ty.num_elements() as u64;
        if live_bytes + bytes > opts.memory_limit {
            return Err(Error::TooLarge {
                value: v,
                bytes: live_bytes + bytes,
                limit: opts.memory_limit,
            });
        }
        live_bytes += bytes;
        ev.values[v.index()] = Some(t.to_f64_vec());
    }
    let mut last_use = vec![0usize; graph.len()];
    for v in graph.values() {
        for a in &graph.node(v).args {
            last_use[a.index()] = v.index();
        }
    }
    for o in graph.outputs() {
        last_use[o.value.index()] = usize::MAX;
    }
    let total: u64 = graph.values().map(|v| node_cost(graph, v)).sum();
    let mut done = 0u64;
    for v in graph.values() {
        done += node_cost(graph, v);
        if ev.values[v.index()].is_some() {
            continue;
        }
        let bytes = 8 * elements(graph.value_type(v)) as u64;
        if live_bytes + bytes > opts.memory_limit {
            return Err(Error::TooLarge {
                value: v,
                bytes: live_bytes + bytes,
                limit: opts.memory_limit,
            });
        }
        live_bytes += bytes;
        ev.values[v.index()] = Some(ev.eval(v));
        progress(done, total);
        if last_use[v.index()] == 0 {
            // Dead value: nothing reads it.
            ev.values[v.index()] = None;
            live_bytes -= bytes;
        }
        for &a in &graph.node(v).args {
            if last_use[a.index()] == v.index() && ev.values[a.index()].take().is_some() {
                live_bytes -= 8 * elements(graph.value_type(a)) as u64;
            }
        }
    }
    graph
        .outputs()
        .iter()
        .map(|o| {
            let data = ev.values[o.value.index()]
                .as_deref()
                .expect("outputs are kept alive");
            let ty = graph.ty(o.value);
            let ty = if opts.f64_outputs && ty.dtype.is_float() {
                ty.with_dtype(DType::F64)
            } else {
                ty.clone()
            };
            Ok((o.name.clone(), Tensor::from_f64(ty, data)?))
        })
        .collect()
}
