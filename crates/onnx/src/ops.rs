//! One ONNX op at a time: what each becomes in the graph, or the
//! constant it folds to.

use std::rc::Rc;

use birkhoff_ir::{DType, Op, ValueId};

use crate::einsum;
use crate::import::{Attrs, Importer, Val, axes, axis};
use crate::proto::{NodeProto, data_type as dt};
use crate::tensor::{Const, broadcast_shapes, decode, ir_dtype, is_float, is_int, shape_of};

type R<T> = Result<T, String>;

/// Input `i`, which the op requires.
fn req(ins: &[Option<Val>], i: usize) -> R<&Val> {
    ins.get(i)
        .and_then(Option::as_ref)
        .ok_or_else(|| format!("input {i} is required"))
}

/// Input 0 of a float-only op, with its element type.
fn float_input<'v>(imp: &Importer, ins: &'v [Option<Val>], op: &str) -> R<(&'v Val, i32)> {
    let x = req(ins, 0)?;
    let dtype = imp.dtype(x);
    if !is_float(dtype) {
        return Err(format!(
            "{op} of {} values is not supported",
            dt::name(dtype)
        ));
    }
    Ok((x, dtype))
}

/// Input `i` if given.
fn opt(ins: &[Option<Val>], i: usize) -> Option<&Val> {
    ins.get(i).and_then(Option::as_ref)
}

/// Every given input as a constant, if all are.
fn all_const(ins: &[Option<Val>]) -> Option<Vec<Rc<Const>>> {
    ins.iter()
        .flatten()
        .map(|v| match v {
            Val::Const(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn konst(c: Const) -> Val {
    Val::Const(Rc::new(c))
}

/// Integer list from a constant input `i`, or `None` if not given.
fn int_input(imp: &Importer, ins: &[Option<Val>], i: usize, what: &str) -> R<Option<Vec<i64>>> {
    match opt(ins, i) {
        Some(v) => Ok(Some(imp.constant(v, what)?.as_ints())),
        None => Ok(None),
    }
}

/// The axes of a reduction or (un)squeeze: the attribute, else input 1.
fn axes_of(imp: &Importer, a: &Attrs, ins: &[Option<Val>]) -> R<Option<Vec<i64>>> {
    if let Some(v) = a.ints("axes") {
        return Ok(Some(v));
    }
    int_input(imp, ins, 1, "the axes")
}

fn float_fn(op: &str) -> Option<fn(f64) -> f64> {
    Some(match op {
        "Neg" => |x| -x,
        "Abs" => f64::abs,
        "Exp" => f64::exp,
        "Log" => f64::ln,
        "Sqrt" => f64::sqrt,
        "Reciprocal" => |x| 1.0 / x,
        "Sigmoid" => |x| 1.0 / (1.0 + (-x).exp()),
        "Tanh" => f64::tanh,
        "Relu" => |x| x.max(0.0),
        "Floor" => f64::floor,
        "Ceil" => f64::ceil,
        "Not" => |x| f64::from(u8::from(x == 0.0)),
        "Sin" => f64::sin,
        "Cos" => f64::cos,
        "Round" => f64::round_ties_even,
        "Sign" => |x| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        },
        _ => return None,
    })
}

fn binary_fn(op: &str, int: bool) -> Option<fn(f64, f64) -> f64> {
    Some(match op {
        "Add" | "Sum" => |x, y| x + y,
        "Sub" => |x, y| x - y,
        "Mul" => |x, y| x * y,
        "Div" if int => |x, y| if y == 0.0 { 0.0 } else { (x / y).trunc() },
        "Div" => |x, y| x / y,
        "Pow" => f64::powf,
        "Max" => f64::max,
        "Min" => f64::min,
        "Mod" => |x, y| {
            if y == 0.0 {
                0.0
            } else {
                x - (x / y).floor() * y
            }
        },
        "Equal" => |x, y| f64::from(u8::from(x == y)),
        "Less" => |x, y| f64::from(u8::from(x < y)),
        "LessOrEqual" => |x, y| f64::from(u8::from(x <= y)),
        "Greater" => |x, y| f64::from(u8::from(x > y)),
        "GreaterOrEqual" => |x, y| f64::from(u8::from(x >= y)),
        "And" => |x, y| f64::from(u8::from(x != 0.0 && y != 0.0)),
        "Or" => |x, y| f64::from(u8::from(x != 0.0 || y != 0.0)),
        "Xor" => |x, y| f64::from(u8::from((x != 0.0) != (y != 0.0))),
        _ => return None,
    })
}

fn is_comparison(op: &str) -> bool {
    matches!(
        op,
        "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" | "And" | "Or" | "Xor"
    )
}

/// Imports node `n` with inputs `ins`; returns its outputs.
pub(crate) fn import_node(
    imp: &mut Importer,
    n: &NodeProto,
    a: &Attrs,
    ins: &[Option<Val>],
) -> R<Vec<Val>> {
    let op = n.op_type.as_str();
    let one = |v: Val| Ok(vec![v]);

    // Everything known at import folds, for the ops that fold.
    if let Some(cs) = all_const(ins)
        && !cs.is_empty()
        && let Some(v) = fold(imp, op, a, &cs, n)?
    {
        return Ok(v);
    }
    if let Some(v) = import_movement(imp, op, a, ins, n)? {
        return Ok(v);
    }
    match op {
        "Identity" => one(req(ins, 0)?.clone()),
        // Inference: the data passes through, and the mask keeps everything.
        "Dropout" => {
            let x = req(ins, 0)?.clone();
            let mask = imp.splat(DType::Bool, &imp.shape(&x), 1.0)?;
            Ok(vec![
                x,
                Val::Node {
                    id: mask,
                    dtype: dt::BOOL,
                },
            ])
        }
        "Neg" | "Abs" | "Exp" | "Log" | "Sqrt" | "Reciprocal" | "Sigmoid" | "Tanh" => {
            let (x, dtype) = float_input(imp, ins, op)?;
            let ir_op = match op {
                "Neg" => Op::Neg,
                "Abs" => Op::Abs,
                "Exp" => Op::Exp,
                "Log" => Op::Log,
                "Sqrt" => Op::Sqrt,
                "Reciprocal" => Op::Recip,
                "Sigmoid" => Op::Sigmoid,
                _ => Op::Tanh,
            };
            let id = imp.id(x)?;
            one(Val::Node {
                id: imp.add(ir_op, &[id])?,
                dtype,
            })
        }
        "Not" => {
            let x = req(ins, 0)?;
            let id = imp.id(x)?;
            one(Val::Node {
                id: imp.add(Op::Not, &[id])?,
                dtype: dt::BOOL,
            })
        }
        "Relu" => {
            let x = req(ins, 0)?;
            let dtype = imp.dtype(x);
            let zero = konst(Const::scalar(dtype, 0.0));
            one(Val::Node {
                id: imp.elementwise(Op::Max, &[x.clone(), zero])?,
                dtype,
            })
        }
        "Erf" => {
            let x = req(ins, 0)?;
            let dtype = imp.dtype(x);
            let id = imp.id(x)?;
            one(Val::Node {
                id: erf(imp, id)?,
                dtype,
            })
        }
        "Gelu" => {
            let x = req(ins, 0)?;
            let dtype = imp.dtype(x);
            let id = imp.id(x)?;
            let approx = a.string("approximate").unwrap_or_else(|| "none".into());
            one(Val::Node {
                id: gelu(imp, id, &approx)?,
                dtype,
            })
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Mean" => {
            let args: Vec<Val> = ins.iter().flatten().cloned().collect();
            if args.is_empty() {
                return Err("needs at least one input".into());
            }
            let dtype = imp.common_dtype(&args);
            if !is_float(dtype) {
                return Err(format!(
                    "{op} of {} graph values is not supported (integer arithmetic must fold to constants)",
                    dt::name(dtype)
                ));
            }
            let ir_op = match op {
                "Add" | "Sum" | "Mean" => Op::Add,
                "Sub" => Op::Sub,
                "Mul" => Op::Mul,
                "Div" => Op::Div,
                "Pow" => Op::Pow,
                "Max" => Op::Max,
                _ => Op::Min,
            };
            let mut acc = args[0].clone();
            if args.len() == 1 {
                return one(acc);
            }
            for b in &args[1..] {
                let id = imp.elementwise(ir_op.clone(), &[acc, b.clone()])?;
                acc = Val::Node { id, dtype };
            }
            if op == "Mean" {
                let k = konst(Const::scalar(dtype, args.len() as f64));
                let id = imp.elementwise(Op::Div, &[acc, k])?;
                acc = Val::Node { id, dtype };
            }
            one(acc)
        }
        "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" | "And" | "Or" => {
            let (x, y) = (req(ins, 0)?, req(ins, 1)?);
            let ir_op = match op {
                "Equal" => Op::Eq,
                "Less" => Op::Lt,
                "LessOrEqual" => Op::Le,
                "Greater" => Op::Gt,
                "GreaterOrEqual" => Op::Ge,
                "And" => Op::And,
                _ => Op::Or,
            };
            one(Val::Node {
                id: imp.elementwise(ir_op, &[x.clone(), y.clone()])?,
                dtype: dt::BOOL,
            })
        }
        "Where" => {
            let (c, x, y) = (req(ins, 0)?, req(ins, 1)?, req(ins, 2)?);
            let shape = [c, x, y]
                .iter()
                .try_fold(Vec::new(), |s, v| broadcast_shapes(&s, &imp.shape(v)))
                .ok_or("operand shapes do not broadcast")?;
            let dtype = imp.common_dtype(&[x.clone(), y.clone()]);
            let cid = imp.operand(c, dt::BOOL, &shape)?;
            let xid = imp.operand(x, dtype, &shape)?;
            let yid = imp.operand(y, dtype, &shape)?;
            one(Val::Node {
                id: imp.add(Op::Select, &[cid, xid, yid])?,
                dtype,
            })
        }
        "Clip" => {
            let x = req(ins, 0)?;
            let dtype = imp.dtype(x);
            let mut acc = x.clone();
            // Before opset 11 the bounds were attributes.
            let lo = opt(ins, 1).cloned().or_else(|| {
                a.get("min")
                    .map(|m| konst(Const::scalar(dtype, f64::from(m.f))))
            });
            let hi = opt(ins, 2).cloned().or_else(|| {
                a.get("max")
                    .map(|m| konst(Const::scalar(dtype, f64::from(m.f))))
            });
            if let Some(lo) = lo {
                acc = Val::Node {
                    id: imp.elementwise(Op::Max, &[acc, lo])?,
                    dtype,
                };
            }
            if let Some(hi) = hi {
                acc = Val::Node {
                    id: imp.elementwise(Op::Min, &[acc, hi])?,
                    dtype,
                };
            }
            one(acc)
        }
        "Cast" | "CastLike" => {
            let x = req(ins, 0)?;
            let to = if op == "Cast" {
                a.int("to", 0) as i32
            } else {
                imp.dtype(req(ins, 1)?)
            };
            let from = imp.dtype(x);
            let id = imp.id(x)?;
            if to == dt::BOOL {
                let zero = imp.splat(imp.ty(id).dtype, &imp.shape(x), 0.0)?;
                return one(Val::Node {
                    id: imp.add(Op::Ne, &[id, zero])?,
                    dtype: dt::BOOL,
                });
            }
            let target = ir_dtype(to)?;
            if target == DType::I32 && is_float(from) {
                return Err(format!(
                    "casting computed {} values to {} is not supported (integer tensors must fold to constants)",
                    dt::name(from),
                    dt::name(to)
                ));
            }
            let id = if imp.ty(id).dtype == target {
                id
            } else {
                imp.add(Op::Cast { dtype: target }, &[id])?
            };
            one(Val::Node { id, dtype: to })
        }
        "MatMul" => {
            let (x, y) = (req(ins, 0)?, req(ins, 1)?);
            let dtype = imp.common_dtype(&[x.clone(), y.clone()]);
            one(Val::Node {
                id: matmul(imp, x, y, dtype)?,
                dtype,
            })
        }
        "Gemm" => one(gemm(imp, a, ins)?),
        "Einsum" => {
            let eq = a.string("equation").ok_or("Einsum needs an equation")?;
            let args: Vec<Val> = ins.iter().flatten().cloned().collect();
            let dtype = imp.common_dtype(&args);
            one(Val::Node {
                id: einsum::import(imp, &eq, &args, dtype)?,
                dtype,
            })
        }
        "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceSumSquare" | "ReduceL2"
        | "ReduceL1" | "ReduceLogSum" | "ReduceLogSumExp" => one(reduce(imp, op, a, ins)?),
        "Softplus" | "LeakyRelu" | "Elu" | "HardSigmoid" | "HardSwish" | "Mish" => {
            let (x, dtype) = float_input(imp, ins, op)?;
            let id = imp.id(x)?;
            one(Val::Node {
                id: activation(imp, op, a, id)?,
                dtype,
            })
        }
        "Tile" => {
            let x = req(ins, 0)?;
            let reps = int_input(imp, ins, 1, "the repeats")?.ok_or("Tile needs repeats")?;
            let shape = imp.shape(x);
            if reps.len() != shape.len() || reps.iter().any(|&r| r < 1) {
                return Err(format!("Tile repeats {reps:?} do not fit shape {shape:?}"));
            }
            let dtype = imp.dtype(x);
            let mut id = imp.id(x)?;
            for (k, &r) in reps.iter().enumerate() {
                if r > 1 {
                    if r > 1 << 16 {
                        return Err(format!("Tile repeat {r} is too large"));
                    }
                    let copies = vec![id; r as usize];
                    id = imp.add(Op::Concat { axis: k }, &copies)?;
                }
            }
            one(Val::Node { id, dtype })
        }
        "Softmax" | "LogSoftmax" => {
            let x = req(ins, 0)?;
            let dtype = imp.dtype(x);
            let rank = imp.shape(x).len();
            let k = axis(a.int("axis", -1), rank)?;
            let id = imp.id(x)?;
            let id = if op == "Softmax" {
                imp.add(Op::Softmax { axis: k }, &[id])?
            } else {
                log_softmax(imp, id, k)?
            };
            one(Val::Node { id, dtype })
        }
        "LayerNormalization" | "RMSNormalization" => norm(imp, op, a, ins, n.output.len()),
        "Trilu" => {
            let x = req(ins, 0)?;
            let shape = imp.shape(x);
            if shape.len() < 2 {
                return Err("Trilu needs rank 2 or more".into());
            }
            let k = int_input(imp, ins, 1, "k")?.map_or(0, |v| v.first().copied().unwrap_or(0));
            let upper = a.int("upper", 1) != 0;
            let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
            // keep[i, j] = (j - i >= k) (upper) or (j - i <= k) (lower),
            // from index tensors: no mask the size of the matrix is built
            // here, whatever the graph's shape.
            let k = i32::try_from(k).map_err(|_| format!("Trilu k {k} is out of range"))?;
            let ity = |axis| Op::Iota {
                axis,
                ty: birkhoff_ir::TensorType::new(DType::I32, vec![rows, cols]),
            };
            let i = imp.add(ity(0), &[])?;
            let j = imp.add(ity(1), &[])?;
            let d = imp.add(Op::Sub, &[j, i])?;
            let kk = imp.splat(DType::I32, &[rows, cols], f64::from(k))?;
            let keep = imp.add(if upper { Op::Ge } else { Op::Le }, &[d, kk])?;
            let mask = Val::Node {
                id: keep,
                dtype: dt::BOOL,
            };
            let dtype = imp.dtype(x);
            let zero = konst(Const::scalar(dtype, 0.0));
            let cid = imp.operand(&mask, dt::BOOL, &shape)?;
            let xid = imp.operand(x, dtype, &shape)?;
            let zid = imp.operand(&zero, dtype, &shape)?;
            one(Val::Node {
                id: imp.add(Op::Select, &[cid, xid, zid])?,
                dtype,
            })
        }
        "Gather" => one(gather(imp, a, ins)?),
        "Shape" | "Size" | "Constant" | "ConstantOfShape" | "Range" => {
            unreachable!("folded above")
        }
        _ if FOLD_ONLY.contains(&op) => Err(format!(
            "{op} is folded at import only: its operands must be constants (of at most \
             {} elements) known when importing",
            1 << 16
        )),
        _ => Err(format!("unsupported op {op}")),
    }
}

/// Ops that only move elements, on graph values (constants fold first).
fn import_movement(
    imp: &mut Importer,
    op: &str,
    a: &Attrs,
    ins: &[Option<Val>],
    n: &NodeProto,
) -> R<Option<Vec<Val>>> {
    let Some(x) = opt(ins, 0) else {
        return Ok(None);
    };
    let dtype = imp.dtype(x);
    let shape = imp.shape(x);
    let node = |_: &mut Importer, id: ValueId| Val::Node { id, dtype };
    let v = match op {
        "Reshape" | "Flatten" | "Unsqueeze" | "Squeeze" => {
            let to = target_shape(imp, op, a, ins, &shape)?;
            let id = imp.id(x)?;
            let id = imp.reshape(id, &to)?;
            vec![node(imp, id)]
        }
        "Transpose" => {
            let perm = transpose_perm(a, shape.len())?;
            let id = imp.id(x)?;
            let id = imp.permute(id, &perm)?;
            vec![node(imp, id)]
        }
        "Expand" => {
            let to = int_input(imp, ins, 1, "the shape")?.ok_or("Expand needs a shape")?;
            let to: Vec<usize> = to.iter().map(|&d| d.max(0) as usize).collect();
            let out = broadcast_shapes(&shape, &to)
                .ok_or_else(|| format!("shape {shape:?} does not expand to {to:?}"))?;
            let id = imp.id(x)?;
            let id = imp.broadcast(id, &out)?;
            vec![node(imp, id)]
        }
        "Concat" => {
            let args: Vec<Val> = ins.iter().flatten().cloned().collect();
            let k = axis(a.int("axis", 0), shape.len())?;
            let dtype = imp.common_dtype(&args);
            let mut ids = Vec::new();
            for v in &args {
                let s = imp.shape(v);
                if s.get(k) == Some(&0) && args.len() > 1 {
                    continue;
                }
                ids.push(imp.operand(v, dtype, &s)?);
            }
            let id = if ids.len() == 1 {
                ids[0]
            } else {
                imp.add(Op::Concat { axis: k }, &ids)?
            };
            vec![Val::Node { id, dtype }]
        }
        "Split" => {
            let k = axis(a.int("axis", 0), shape.len())?;
            let sizes = split_sizes(imp, a, ins, shape[k], n.output.len())?;
            let id = imp.id(x)?;
            let mut outs = Vec::new();
            let mut start = 0;
            for s in sizes {
                let mut lo = vec![0; shape.len()];
                let mut hi = shape.clone();
                lo[k] = start;
                hi[k] = start + s;
                start += s;
                let part = imp.add(Op::Slice { start: lo, end: hi }, &[id])?;
                outs.push(node(imp, part));
            }
            outs
        }
        "Slice" => {
            let (lo, hi, steps) = slice_box(imp, a, ins, &shape)?;
            if steps.iter().any(|&s| s != 1) {
                return Err(
                    "Slice with a step other than 1 on a graph value is not supported".into(),
                );
            }
            let id = imp.id(x)?;
            let id = if lo.iter().all(|&s| s == 0) && hi == shape {
                id
            } else {
                imp.add(Op::Slice { start: lo, end: hi }, &[id])?
            };
            vec![node(imp, id)]
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

/// Result shape of Reshape, Flatten, Unsqueeze and Squeeze.
fn target_shape(
    imp: &Importer,
    op: &str,
    a: &Attrs,
    ins: &[Option<Val>],
    shape: &[usize],
) -> R<Vec<usize>> {
    let count: usize = shape.iter().product();
    match op {
        "Reshape" => {
            let spec = int_input(imp, ins, 1, "the shape")?.ok_or("Reshape needs a shape")?;
            let allow_zero = a.int("allowzero", 0) != 0;
            let mut out = Vec::with_capacity(spec.len());
            let mut infer = None;
            for (i, &d) in spec.iter().enumerate() {
                match d {
                    -1 if infer.is_none() => {
                        infer = Some(i);
                        out.push(1);
                    }
                    0 if !allow_zero => out.push(
                        *shape
                            .get(i)
                            .ok_or("Reshape copies an axis the input lacks")?,
                    ),
                    d if d >= 0 => out.push(d as usize),
                    _ => return Err(format!("invalid Reshape shape {spec:?}")),
                }
            }
            if let Some(i) = infer {
                let rest = out
                    .iter()
                    .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                    .unwrap_or(0);
                if rest == 0 || !count.is_multiple_of(rest) {
                    return Err(format!("cannot reshape {shape:?} to {spec:?}"));
                }
                out[i] = count / rest;
            }
            let total = out.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
            if total != Some(count) {
                return Err(format!("cannot reshape {shape:?} to {spec:?}"));
            }
            Ok(out)
        }
        "Flatten" => {
            let k = a.int("axis", 1);
            let k = if k == shape.len() as i64 {
                shape.len()
            } else {
                axis(k, shape.len())?
            };
            Ok(vec![
                shape[..k].iter().product(),
                shape[k..].iter().product(),
            ])
        }
        "Unsqueeze" => {
            let list = axes_of(imp, a, ins)?.ok_or("Unsqueeze needs axes")?;
            let rank = shape.len() + list.len();
            let ax = axes(&list, rank)?;
            let mut out = Vec::with_capacity(rank);
            let mut it = shape.iter();
            for k in 0..rank {
                if ax.contains(&k) {
                    out.push(1);
                } else {
                    out.push(*it.next().ok_or("Unsqueeze axes out of range")?);
                }
            }
            Ok(out)
        }
        _ => {
            let ax = match axes_of(imp, a, ins)? {
                Some(list) => axes(&list, shape.len())?,
                None => (0..shape.len()).filter(|&k| shape[k] == 1).collect(),
            };
            if let Some(&k) = ax.iter().find(|&&k| shape[k] != 1) {
                return Err(format!("Squeeze of axis {k}, which has size {}", shape[k]));
            }
            Ok((0..shape.len())
                .filter(|k| !ax.contains(k))
                .map(|k| shape[k])
                .collect())
        }
    }
}

fn transpose_perm(a: &Attrs, rank: usize) -> R<Vec<usize>> {
    match a.ints("perm") {
        Some(p) => {
            let perm = axes(&p, rank)?;
            if perm.len() != rank {
                return Err(format!("perm {p:?} is not a permutation of {rank} axes"));
            }
            Ok(perm)
        }
        None => Ok((0..rank).rev().collect()),
    }
}

fn split_sizes(
    imp: &Importer,
    a: &Attrs,
    ins: &[Option<Val>],
    dim: usize,
    outputs: usize,
) -> R<Vec<usize>> {
    let given = match int_input(imp, ins, 1, "the split sizes")? {
        Some(v) => Some(v),
        None => a.ints("split"),
    };
    if let Some(v) = given {
        let sum: i128 = v.iter().map(|&s| i128::from(s)).sum();
        if v.iter().any(|&s| s < 0) || sum != dim as i128 {
            return Err(format!("split sizes {v:?} do not add up to {dim}"));
        }
        return Ok(v.iter().map(|&s| s as usize).collect());
    }
    let parts = a.int("num_outputs", outputs as i64);
    if parts != outputs as i64 || parts < 1 {
        return Err(format!(
            "Split's num_outputs is {parts}, but the node has {outputs} outputs"
        ));
    }
    let parts = outputs;
    let each = dim.div_ceil(parts);
    Ok((0..parts)
        .map(|i| each.min(dim.saturating_sub(i * each)))
        .collect())
}

/// `(start, end, step)` per axis of a Slice, clamped as ONNX specifies.
fn slice_box(
    imp: &Importer,
    a: &Attrs,
    ins: &[Option<Val>],
    shape: &[usize],
) -> R<(Vec<usize>, Vec<usize>, Vec<i64>)> {
    let starts = int_input(imp, ins, 1, "the starts")?
        .or_else(|| a.ints("starts"))
        .ok_or("Slice needs starts")?;
    let ends = int_input(imp, ins, 2, "the ends")?
        .or_else(|| a.ints("ends"))
        .ok_or("Slice needs ends")?;
    let ax = match int_input(imp, ins, 3, "the axes")?.or_else(|| a.ints("axes")) {
        Some(v) => axes(&v, shape.len())?,
        None if starts.len() <= shape.len() => (0..starts.len()).collect(),
        None => {
            return Err(format!(
                "Slice has {} starts for an input of rank {}",
                starts.len(),
                shape.len()
            ));
        }
    };
    let steps = int_input(imp, ins, 4, "the steps")?.unwrap_or_else(|| vec![1; starts.len()]);
    if starts.len() != ends.len() || starts.len() != ax.len() || steps.len() != ax.len() {
        return Err("Slice starts, ends, axes and steps differ in length".into());
    }
    let mut lo = vec![0; shape.len()];
    let mut hi = shape.to_vec();
    let mut st = vec![1; shape.len()];
    for (i, &k) in ax.iter().enumerate() {
        let d = shape[k] as i64;
        let step = steps[i];
        if step == 0 {
            return Err("Slice step 0".into());
        }
        let fix = |x: i64, lo: i64, hi: i64| {
            let x = if x < 0 { x.saturating_add(d) } else { x };
            x.clamp(lo, hi)
        };
        if step > 0 {
            let s = fix(starts[i], 0, d);
            let e = fix(ends[i], 0, d).max(s);
            lo[k] = s as usize;
            hi[k] = e as usize;
        } else {
            // Reversed slices keep their bounds in (start, end] form;
            // only constants take them (see `fold_slice`).
            lo[k] = fix(starts[i], -1, d - 1).max(-1) as usize;
            hi[k] = fix(ends[i], -1, d - 1) as usize;
        }
        st[k] = step;
    }
    Ok((lo, hi, st))
}

fn reduce(imp: &mut Importer, op: &str, a: &Attrs, ins: &[Option<Val>]) -> R<Val> {
    let x = req(ins, 0)?;
    let dtype = imp.dtype(x);
    let shape = imp.shape(x);
    let keep = a.int("keepdims", 1) != 0;
    let ax = match axes_of(imp, a, ins)? {
        Some(list) if !list.is_empty() => axes(&list, shape.len())?,
        _ if a.int("noop_with_empty_axes", 0) != 0 => return Ok(x.clone()),
        _ => (0..shape.len()).collect(),
    };
    let mut id = imp.id(x)?;
    match op {
        "ReduceSumSquare" | "ReduceL2" => id = imp.add(Op::Mul, &[id, id])?,
        "ReduceL1" => id = imp.add(Op::Abs, &[id])?,
        "ReduceLogSumExp" => {
            // log Σ exp(x) = m + log Σ exp(x − m), m the maximum: finite
            // where the plain sum overflows.
            let (m, _, s) = shifted_exp_sum(imp, id, &ax, keep)?;
            let l = imp.add(Op::Log, &[s])?;
            let out = imp.ty(l).shape.clone();
            let m = imp.reshape(m, &out)?;
            let id = imp.add(Op::Add, &[l, m])?;
            return Ok(Val::Node { id, dtype });
        }
        _ => {}
    }
    let id = match op {
        "ReduceMax" => imp.add(
            Op::ReduceMax {
                axes: ax,
                keepdims: keep,
            },
            &[id],
        )?,
        "ReduceMin" => {
            let neg = imp.add(Op::Neg, &[id])?;
            let m = imp.add(
                Op::ReduceMax {
                    axes: ax,
                    keepdims: keep,
                },
                &[neg],
            )?;
            imp.add(Op::Neg, &[m])?
        }
        _ => {
            let s = imp.add(
                Op::ReduceSum {
                    axes: ax.clone(),
                    keepdims: keep,
                },
                &[id],
            )?;
            match op {
                "ReduceMean" => {
                    let count: usize = ax.iter().map(|&k| shape[k]).product();
                    let out = imp.ty(s).clone();
                    let c = imp.splat(out.dtype, &out.shape, count as f64)?;
                    imp.add(Op::Div, &[s, c])?
                }
                "ReduceL2" => imp.add(Op::Sqrt, &[s])?,
                "ReduceLogSum" => imp.add(Op::Log, &[s])?,
                _ => s,
            }
        }
    };
    Ok(Val::Node { id, dtype })
}

/// The activation functions ONNX has as ops, from primitives.
fn activation(imp: &mut Importer, op: &str, a: &Attrs, x: ValueId) -> R<ValueId> {
    let ty = imp.ty(x).clone();
    let c = |imp: &mut Importer, v: f64| imp.splat(ty.dtype, &ty.shape, v);
    let softplus = |imp: &mut Importer| -> R<ValueId> {
        // log(1 + e^x) = max(x, 0) + log(1 + e^-|x|): no overflow.
        let zero = c(imp, 0.0)?;
        let one = c(imp, 1.0)?;
        let pos = imp.add(Op::Max, &[x, zero])?;
        let ab = imp.add(Op::Abs, &[x])?;
        let nab = imp.add(Op::Neg, &[ab])?;
        let e = imp.add(Op::Exp, &[nab])?;
        let p = imp.add(Op::Add, &[e, one])?;
        let l = imp.add(Op::Log, &[p])?;
        imp.add(Op::Add, &[pos, l])
    };
    let hard_sigmoid = |imp: &mut Importer, alpha: f64, beta: f64| -> R<ValueId> {
        let k = c(imp, alpha)?;
        let b = c(imp, beta)?;
        let m = imp.add(Op::Mul, &[x, k])?;
        let s = imp.add(Op::Add, &[m, b])?;
        let zero = c(imp, 0.0)?;
        let one = c(imp, 1.0)?;
        let lo = imp.add(Op::Max, &[s, zero])?;
        imp.add(Op::Min, &[lo, one])
    };
    match op {
        "Softplus" => softplus(imp),
        "Mish" => {
            let sp = softplus(imp)?;
            let t = imp.add(Op::Tanh, &[sp])?;
            imp.add(Op::Mul, &[x, t])
        }
        "LeakyRelu" | "Elu" => {
            let alpha = f64::from(a.float("alpha", if op == "Elu" { 1.0 } else { 0.01 }));
            let zero = c(imp, 0.0)?;
            let k = c(imp, alpha)?;
            let neg = if op == "Elu" {
                let one = c(imp, 1.0)?;
                let e = imp.add(Op::Exp, &[x])?;
                let em1 = imp.add(Op::Sub, &[e, one])?;
                imp.add(Op::Mul, &[em1, k])?
            } else {
                imp.add(Op::Mul, &[x, k])?
            };
            let is_neg = imp.add(Op::Lt, &[x, zero])?;
            imp.add(Op::Select, &[is_neg, neg, x])
        }
        "HardSigmoid" => hard_sigmoid(
            imp,
            f64::from(a.float("alpha", 0.2)),
            f64::from(a.float("beta", 0.5)),
        ),
        _ => {
            let h = hard_sigmoid(imp, 1.0 / 6.0, 0.5)?;
            imp.add(Op::Mul, &[x, h])
        }
    }
}

/// `x - max - log(sum(exp(x - max)))` along `axis`, as ONNX computes it
/// (finite where `log(softmax(x))` would underflow).
fn log_softmax(imp: &mut Importer, x: ValueId, axis: usize) -> R<ValueId> {
    let shape = imp.ty(x).shape.clone();
    let (_, shifted, s) = shifted_exp_sum(imp, x, &[axis], true)?;
    let l = imp.add(Op::Log, &[s])?;
    let l = imp.broadcast(l, &shape)?;
    imp.add(Op::Sub, &[shifted, l])
}

/// `(m, x − m, Σ exp(x − m))` over `axes`, `m` the maximum (keepdims);
/// the sum keeps its axes when `keep`.
fn shifted_exp_sum(
    imp: &mut Importer,
    x: ValueId,
    axes: &[usize],
    keep: bool,
) -> R<(ValueId, ValueId, ValueId)> {
    let shape = imp.ty(x).shape.clone();
    let m = imp.add(
        Op::ReduceMax {
            axes: axes.to_vec(),
            keepdims: true,
        },
        &[x],
    )?;
    let mb = imp.broadcast(m, &shape)?;
    let shifted = imp.add(Op::Sub, &[x, mb])?;
    let e = imp.add(Op::Exp, &[shifted])?;
    let s = imp.add(
        Op::ReduceSum {
            axes: axes.to_vec(),
            keepdims: keep,
        },
        &[e],
    )?;
    Ok((m, shifted, s))
}

/// LayerNormalization and RMSNormalization over the axes from `axis` on.
fn norm(
    imp: &mut Importer,
    op: &str,
    a: &Attrs,
    ins: &[Option<Val>],
    outputs: usize,
) -> R<Vec<Val>> {
    let x = req(ins, 0)?;
    let dtype = imp.dtype(x);
    let shape = imp.shape(x);
    let k = axis(a.int("axis", -1), shape.len())?;
    let eps = f64::from(a.float("epsilon", 1e-5));
    let ax: Vec<usize> = (k..shape.len()).collect();
    let count: usize = shape[k..].iter().product();
    let xid = imp.id(x)?;
    // stash_type 1 (the default): statistics in f32 even for bf16 data.
    let stored = imp.ty(xid).dtype;
    let xid = if stored == DType::Bf16 && a.int("stash_type", 1) == 1 {
        imp.add(Op::Cast { dtype: DType::F32 }, &[xid])?
    } else {
        xid
    };
    let ir = imp.ty(xid).dtype;
    let compute = if ir == stored { dtype } else { dt::FLOAT };
    let mean_of = |imp: &mut Importer, v: ValueId| -> R<ValueId> {
        let s = imp.add(
            Op::ReduceSum {
                axes: ax.clone(),
                keepdims: true,
            },
            &[v],
        )?;
        let sh = imp.ty(s).shape.clone();
        let c = imp.splat(ir, &sh, count as f64)?;
        imp.add(Op::Div, &[s, c])
    };
    let (centered, mean) = if op == "LayerNormalization" {
        let m = mean_of(imp, xid)?;
        let mb = imp.broadcast(m, &shape)?;
        (imp.add(Op::Sub, &[xid, mb])?, Some(m))
    } else {
        (xid, None)
    };
    let sq = imp.add(Op::Mul, &[centered, centered])?;
    let var = mean_of(imp, sq)?;
    let vshape = imp.ty(var).shape.clone();
    let e = imp.splat(ir, &vshape, eps)?;
    let ve = imp.add(Op::Add, &[var, e])?;
    let inv = imp.add(Op::Rsqrt, &[ve])?;
    let invb = imp.broadcast(inv, &shape)?;
    let mut y = imp.add(Op::Mul, &[centered, invb])?;
    if let Some(scale) = opt(ins, 1) {
        let s = imp.operand(scale, compute, &shape)?;
        y = imp.add(Op::Mul, &[y, s])?;
    }
    if let Some(bias) = opt(ins, 2) {
        let b = imp.operand(bias, compute, &shape)?;
        y = imp.add(Op::Add, &[y, b])?;
    }
    let y = if ir == stored {
        y
    } else {
        imp.add(Op::Cast { dtype: stored }, &[y])?
    };
    let mut outs = vec![Val::Node { id: y, dtype }];
    if outputs > 1 {
        let m = mean.ok_or("RMSNormalization has one output")?;
        outs.push(Val::Node {
            id: m,
            dtype: compute,
        });
    }
    if outputs > 2 {
        outs.push(Val::Node {
            id: inv,
            dtype: compute,
        });
    }
    Ok(outs)
}

/// `erf(x)` from `exp` and a rational function: `erfc(|x|) = t·exp(-x² +
/// P(t))`, `t = 1/(1 + |x|/2)`, with the Chebyshev-fitted coefficients of
/// Press et al. (Numerical Recipes §6.2): relative error below 1.2e-7 in
/// `erfc`, so below 1.2e-7 absolute in `erf` — f32 accuracy, not f64;
/// below |x| = 1/2 a series instead (see the end).
fn erf(imp: &mut Importer, x: ValueId) -> R<ValueId> {
    const P: [f64; 10] = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ];
    let ty = imp.ty(x).clone();
    let c = |imp: &mut Importer, v: f64| imp.splat(ty.dtype, &ty.shape, v);
    let ax = imp.add(Op::Abs, &[x])?;
    let half = c(imp, 0.5)?;
    let one = c(imp, 1.0)?;
    let h = imp.add(Op::Mul, &[ax, half])?;
    let d = imp.add(Op::Add, &[h, one])?;
    let t = imp.add(Op::Recip, &[d])?;
    let p = horner(imp, &P, t)?;
    let sq = imp.add(Op::Mul, &[ax, ax])?;
    let arg = imp.add(Op::Sub, &[p, sq])?;
    let e = imp.add(Op::Exp, &[arg])?;
    let erfc = imp.add(Op::Mul, &[t, e])?;
    let pos = imp.add(Op::Sub, &[one, erfc])?;
    let neg = imp.add(Op::Neg, &[pos])?;
    let zero = c(imp, 0.0)?;
    let is_neg = imp.add(Op::Lt, &[x, zero])?;
    let far = imp.add(Op::Select, &[is_neg, neg, pos])?;
    // Near zero, where `1 - erfc` cancels, the Maclaurin series to x¹¹:
    // its first omitted term is below 3e-8 of erf(x) for |x| < 1/2, and
    // erf(0) is 0 exactly.
    let x2 = imp.add(Op::Mul, &[x, x])?;
    let series = horner(imp, &SERIES, x2)?;
    let near = imp.add(Op::Mul, &[series, x])?;
    let is_near = imp.add(Op::Lt, &[ax, half])?;
    imp.add(Op::Select, &[is_near, near, far])
}

/// `Σ_i coeffs[i] · t^i` by Horner's rule, from the highest coefficient
/// down, each coefficient a splat of `t`'s type.
fn horner(imp: &mut Importer, coeffs: &[f64], t: ValueId) -> R<ValueId> {
    let ty = imp.ty(t).clone();
    let (&last, rest) = coeffs.split_last().ok_or("no coefficients")?;
    let mut p = imp.splat(ty.dtype, &ty.shape, last)?;
    for &k in rest.iter().rev() {
        let m = imp.add(Op::Mul, &[p, t])?;
        let kk = imp.splat(ty.dtype, &ty.shape, k)?;
        p = imp.add(Op::Add, &[m, kk])?;
    }
    Ok(p)
}

/// erf's Maclaurin coefficients `2/√π · (−1)ⁿ / (n! (2n+1))` of `x^(2n+1)`.
const SERIES: [f64; 6] = [
    std::f64::consts::FRAC_2_SQRT_PI,
    -0.376_126_389_031_837_5,
    0.112_837_916_709_551_26,
    -0.026_866_170_645_131_25,
    0.005_223_977_625_442_187,
    -0.000_854_832_702_345_085,
];

/// GELU: `x·Φ(x)` exactly (through [`erf`]) or with the tanh approximation.
fn gelu(imp: &mut Importer, x: ValueId, approx: &str) -> R<ValueId> {
    let ty = imp.ty(x).clone();
    let c = |imp: &mut Importer, v: f64| imp.splat(ty.dtype, &ty.shape, v);
    let inner = match approx {
        "none" => {
            let k = c(imp, std::f64::consts::FRAC_1_SQRT_2)?;
            let s = imp.add(Op::Mul, &[x, k])?;
            erf(imp, s)?
        }
        "tanh" => {
            let x2 = imp.add(Op::Mul, &[x, x])?;
            let x3 = imp.add(Op::Mul, &[x2, x])?;
            let k = c(imp, 0.044715)?;
            let t = imp.add(Op::Mul, &[x3, k])?;
            let u = imp.add(Op::Add, &[x, t])?;
            let r = c(imp, (2.0 / std::f64::consts::PI).sqrt())?;
            let v = imp.add(Op::Mul, &[u, r])?;
            imp.add(Op::Tanh, &[v])?
        }
        other => return Err(format!("unsupported Gelu approximation `{other}`")),
    };
    let one = c(imp, 1.0)?;
    let half = c(imp, 0.5)?;
    let p = imp.add(Op::Add, &[inner, one])?;
    let hx = imp.add(Op::Mul, &[x, half])?;
    imp.add(Op::Mul, &[hx, p])
}

/// NumPy `matmul`: 1-D operands promoted, batch axes broadcast; a 2-D
/// right operand (a weight) multiplies the left one's rows flattened.
pub(crate) fn matmul(imp: &mut Importer, x: &Val, y: &Val, dtype: i32) -> R<ValueId> {
    let (xs, ys) = (imp.shape(x), imp.shape(y));
    if xs.is_empty() || ys.is_empty() {
        return Err("MatMul of a scalar".into());
    }
    let xid = imp.operand(x, dtype, &xs)?;
    let yid = imp.operand(y, dtype, &ys)?;
    let (xid, xs2) = if xs.len() == 1 {
        (imp.reshape(xid, &[1, xs[0]])?, vec![1, xs[0]])
    } else {
        (xid, xs.clone())
    };
    let (yid, ys2) = if ys.len() == 1 {
        (imp.reshape(yid, &[ys[0], 1])?, vec![ys[0], 1])
    } else {
        (yid, ys.clone())
    };
    let (m, k) = (xs2[xs2.len() - 2], xs2[xs2.len() - 1]);
    let (k2, nn) = (ys2[ys2.len() - 2], ys2[ys2.len() - 1]);
    if k != k2 {
        return Err(format!(
            "MatMul of shapes {xs:?} and {ys:?}: inner sizes differ"
        ));
    }
    let out = if ys2.len() == 2 && xs2.len() > 2 {
        let rows: usize = xs2[..xs2.len() - 1].iter().product();
        let flat = imp.reshape(xid, &[rows, k])?;
        let p = imp.add(Op::MatMul, &[flat, yid])?;
        let mut shape = xs2[..xs2.len() - 1].to_vec();
        shape.push(nn);
        imp.reshape(p, &shape)?
    } else {
        let batch = broadcast_shapes(&xs2[..xs2.len() - 2], &ys2[..ys2.len() - 2])
            .ok_or_else(|| format!("MatMul batch axes of {xs:?} and {ys:?} do not broadcast"))?;
        let full = |b: &[usize], r: usize, c: usize| {
            let mut s = b.to_vec();
            s.extend([r, c]);
            s
        };
        let xb = imp.broadcast(xid, &full(&batch, m, k))?;
        let yb = imp.broadcast(yid, &full(&batch, k, nn))?;
        imp.add(Op::MatMul, &[xb, yb])?
    };
    // Drop the axes 1-D operands were promoted with.
    let mut shape = imp.ty(out).shape.clone();
    if ys.len() == 1 {
        shape.pop();
    }
    if xs.len() == 1 {
        let r = shape.len();
        shape.remove(r - if ys.len() == 1 { 1 } else { 2 });
    }
    imp.reshape(out, &shape)
}

fn gemm(imp: &mut Importer, a: &Attrs, ins: &[Option<Val>]) -> R<Val> {
    let (x, y) = (req(ins, 0)?, req(ins, 1)?);
    let dtype = imp.common_dtype(&[x.clone(), y.clone()]);
    let mut xid = imp.operand(x, dtype, &imp.shape(x))?;
    let mut yid = imp.operand(y, dtype, &imp.shape(y))?;
    if imp.ty(xid).rank() != 2 || imp.ty(yid).rank() != 2 {
        return Err("Gemm operands must be 2-D".into());
    }
    if a.int("transA", 0) != 0 {
        xid = imp.permute(xid, &[1, 0])?;
    }
    if a.int("transB", 0) != 0 {
        yid = imp.permute(yid, &[1, 0])?;
    }
    let mut out = imp.add(Op::MatMul, &[xid, yid])?;
    let shape = imp.ty(out).shape.clone();
    let ir = imp.ty(out).dtype;
    let alpha = f64::from(a.float("alpha", 1.0));
    if alpha != 1.0 {
        let k = imp.splat(ir, &shape, alpha)?;
        out = imp.add(Op::Mul, &[out, k])?;
    }
    if let Some(c) = opt(ins, 2) {
        let beta = f64::from(a.float("beta", 1.0));
        let mut cid = imp.operand(c, dtype, &shape)?;
        if beta != 1.0 {
            let k = imp.splat(ir, &shape, beta)?;
            cid = imp.add(Op::Mul, &[cid, k])?;
        }
        out = imp.add(Op::Add, &[out, cid])?;
    }
    Ok(Val::Node { id: out, dtype })
}

/// Gather along `axis`: constant indices become slices (runs of
/// consecutive indices one slice each); indices that depend on an input
/// become a one-hot matrix product along axis 0 (an embedding lookup).
fn gather(imp: &mut Importer, a: &Attrs, ins: &[Option<Val>]) -> R<Val> {
    let (x, idx) = (req(ins, 0)?, req(ins, 1)?);
    let dtype = imp.dtype(x);
    let shape = imp.shape(x);
    let k = axis(a.int("axis", 0), shape.len())?;
    let dim = shape[k];
    let xid = imp.id(x)?;
    if let Val::Node { id: iid, .. } = idx {
        if k != 0 {
            return Err("Gather with computed indices is supported on axis 0 only".into());
        }
        let ishape = imp.ty(*iid).shape.clone();
        let count: usize = ishape.iter().product();
        let rest: Vec<usize> = shape[1..].to_vec();
        let width: usize = rest.iter().product();
        // ONNX counts a negative index from the end.
        let zero = imp.splat(DType::I32, &ishape, 0.0)?;
        let size = imp.splat(DType::I32, &ishape, dim as f64)?;
        let neg = imp.add(Op::Lt, &[*iid, zero])?;
        let wrapped = imp.add(Op::Add, &[*iid, size])?;
        let iid = imp.add(Op::Select, &[neg, wrapped, *iid])?;
        let flat = imp.reshape(iid, &[count, 1])?;
        let ids = imp.broadcast(flat, &[count, dim])?;
        let iota = imp.add(
            Op::Iota {
                axis: 1,
                ty: birkhoff_ir::TensorType::new(DType::I32, vec![count, dim]),
            },
            &[],
        )?;
        let hot = imp.add(Op::Eq, &[ids, iota])?;
        let ir = imp.ty(xid).dtype;
        let hot = imp.add(Op::Cast { dtype: ir }, &[hot])?;
        let table = imp.reshape(xid, &[dim, width])?;
        let rows = imp.add(Op::MatMul, &[hot, table])?;
        let mut out = ishape;
        out.extend(rest);
        let id = imp.reshape(rows, &out)?;
        return Ok(Val::Node { id, dtype });
    }
    let ic = imp.constant(idx, "the indices")?;
    if ic.data.len() > MAX_GATHER_INDICES {
        return Err(format!(
            "Gather with {} constant indices on a graph value is too large to import \
             (at most {MAX_GATHER_INDICES})",
            ic.data.len()
        ));
    }
    let list: Vec<usize> = ic
        .as_ints()
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + dim as i64 } else { i };
            if j < 0 || j >= dim as i64 {
                Err(format!(
                    "index {i} is out of range for an axis of size {dim}"
                ))
            } else {
                Ok(j as usize)
            }
        })
        .collect::<R<_>>()?;
    let runs = 1 + list.windows(2).filter(|w| w[1] != w[0] + 1).count();
    if runs > MAX_GATHER_RUNS {
        return Err(format!(
            "Gather with {} constant indices in {runs} runs is too large to import as slices \
             (at most {MAX_GATHER_RUNS})",
            list.len()
        ));
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < list.len() {
        let mut j = i + 1;
        while j < list.len() && list[j] == list[j - 1] + 1 {
            j += 1;
        }
        let mut lo = vec![0; shape.len()];
        let mut hi = shape.clone();
        lo[k] = list[i];
        hi[k] = list[j - 1] + 1;
        parts.push(imp.add(Op::Slice { start: lo, end: hi }, &[xid])?);
        i = j;
    }
    let joined = match parts.len() {
        0 => return Err("Gather with no indices".into()),
        1 => parts[0],
        _ => imp.add(Op::Concat { axis: k }, &parts)?,
    };
    let mut out = shape[..k].to_vec();
    out.extend(&ic.shape);
    out.extend(&shape[k + 1..]);
    let id = imp.reshape(joined, &out)?;
    Ok(Val::Node { id, dtype })
}

/// The most constant indices a graph-value Gather takes.
const MAX_GATHER_INDICES: usize = 1 << 20;

/// The most runs of consecutive constant indices a graph-value Gather
/// becomes slices for (one node each).
const MAX_GATHER_RUNS: usize = 1 << 14;

/// Ops with no graph form: they import only when they fold.
const FOLD_ONLY: &[&str] = &[
    "Sin",
    "Cos",
    "Round",
    "Floor",
    "Ceil",
    "Sign",
    "Mod",
    "Xor",
    "ReduceProd",
];

/// The most elements a folded constant has; a larger result stays a
/// graph value (a `broadcast`), so no fold allocates more than this.
const MAX_FOLDED: usize = 1 << 24;

/// Whether the broadcast of `cs` is small enough to fold.
fn folds_small(cs: &[Rc<Const>]) -> bool {
    cs.iter()
        .try_fold(Vec::new(), |s, c| broadcast_shapes(&s, &c.shape))
        .is_some_and(|s| s.iter().product::<usize>() <= MAX_FOLDED)
}

/// Folds `op` on constants; `None` if it does not fold (its graph form
/// is then built from the constants).
fn fold(
    imp: &Importer,
    op: &str,
    a: &Attrs,
    cs: &[Rc<Const>],
    n: &NodeProto,
) -> R<Option<Vec<Val>>> {
    let c0 = &cs[0];
    let int = is_int(c0.dtype);
    // Float constants larger than this stay graph values: folding them
    // here would compute in f64 what the graph computes in f32.
    let small = cs.iter().all(|c| c.data.len() <= 1 << 16);
    let v = if let Some(f) = float_fn(op) {
        if !small {
            return Ok(None);
        }
        let mut c = Const::clone(c0);
        c.data.iter_mut().for_each(|x| *x = f(*x));
        c.rounded()
    } else if let Some(f) = binary_fn(op, int) {
        if !small || cs.len() < 2 && !matches!(op, "Sum" | "Max" | "Min") {
            return Ok(None);
        }
        let dtype = if is_comparison(op) {
            dt::BOOL
        } else {
            c0.dtype
        };
        if !folds_small(cs) {
            return Ok(None);
        }
        let mut acc = Const::clone(c0);
        for c in &cs[1..] {
            acc = acc
                .zip(c, dtype, f)
                .ok_or("operand shapes do not broadcast")?;
        }
        acc
    } else {
        match op {
            "Identity" => Const::clone(c0),
            "Cast" => {
                let mut c = Const::clone(c0);
                c.dtype = a.int("to", 0) as i32;
                ir_dtype(c.dtype).or_else(|e| {
                    if is_int(c.dtype) {
                        Ok(DType::I32)
                    } else {
                        Err(e)
                    }
                })?;
                c.rounded()
            }
            "Where" if cs.len() == 3 => {
                let shape = broadcast_shapes(&c0.shape, &cs[1].shape)
                    .and_then(|s| broadcast_shapes(&s, &cs[2].shape))
                    .ok_or("operand shapes do not broadcast")?;
                if shape.iter().product::<usize>() > MAX_FOLDED {
                    return Ok(None);
                }
                let (c, x, y) = (
                    c0.broadcast_to(&shape),
                    cs[1].broadcast_to(&shape),
                    cs[2].broadcast_to(&shape),
                );
                let data = (0..c.data.len())
                    .map(|i| {
                        if c.data[i] != 0.0 {
                            x.data[i]
                        } else {
                            y.data[i]
                        }
                    })
                    .collect();
                Const::new(cs[1].dtype, shape, data)
            }
            "Constant" | "ConstantOfShape" | "Range" | "Shape" | "Size" => unreachable!(),
            "Reshape" | "Flatten" | "Unsqueeze" | "Squeeze" => {
                let ins: Vec<Option<Val>> =
                    cs.iter().map(|c| Some(Val::Const(c.clone()))).collect();
                let to = target_shape(imp, op, a, &ins, &c0.shape)?;
                Const::new(c0.dtype, to, c0.data.clone())
            }
            "Transpose" => c0.permute(&transpose_perm(a, c0.shape.len())?),
            "Expand" => {
                let to: Vec<usize> = cs
                    .get(1)
                    .ok_or("Expand needs a shape")?
                    .as_ints()
                    .iter()
                    .map(|&d| d.max(0) as usize)
                    .collect();
                let out = broadcast_shapes(&c0.shape, &to).ok_or("shapes do not expand")?;
                shape_of(&out.iter().map(|&d| d as i64).collect::<Vec<_>>(), "Expand")?;
                if out.iter().product::<usize>() > MAX_FOLDED {
                    return Ok(None);
                }
                c0.broadcast_to(&out)
            }
            "Concat" => {
                let k = axis(a.int("axis", 0), c0.shape.len())?;
                let parts: Vec<Const> = cs.iter().map(|c| Const::clone(c)).collect();
                if parts.iter().any(|p| {
                    p.shape.len() != c0.shape.len()
                        || (0..c0.shape.len()).any(|d| d != k && p.shape[d] != c0.shape[d])
                }) {
                    return Err("Concat operands differ in shape".into());
                }
                Const::concat(&parts, k)
            }
            "Gather" if cs.len() == 2 => {
                let k = axis(a.int("axis", 0), c0.shape.len())?;
                let out: usize = c0.shape[..k].iter().product::<usize>()
                    * cs[1].data.len()
                    * c0.shape[k + 1..].iter().product::<usize>();
                if out > MAX_FOLDED {
                    return Ok(None);
                }
                let dim = c0.shape[k] as i64;
                let mut pieces = Vec::new();
                for &i in &cs[1].as_ints() {
                    let j = if i < 0 { i + dim } else { i };
                    if j < 0 || j >= dim {
                        return Err(format!(
                            "index {i} is out of range for an axis of size {dim}"
                        ));
                    }
                    let mut lo = vec![0; c0.shape.len()];
                    let mut hi = c0.shape.clone();
                    lo[k] = j as usize;
                    hi[k] = j as usize + 1;
                    pieces.push(c0.slice(&lo, &hi));
                }
                let mut out = c0.shape[..k].to_vec();
                out.extend(&cs[1].shape);
                out.extend(&c0.shape[k + 1..]);
                let data = if pieces.is_empty() {
                    Vec::new()
                } else {
                    Const::concat(&pieces, k).data
                };
                Const::new(c0.dtype, out, data)
            }
            "Slice" => {
                let ins: Vec<Option<Val>> =
                    cs.iter().map(|c| Some(Val::Const(c.clone()))).collect();
                let (lo, hi, steps) = slice_box(imp, a, &ins, &c0.shape)?;
                fold_slice(c0, &lo, &hi, &steps)
            }
            "Split" => {
                let k = axis(a.int("axis", 0), c0.shape.len())?;
                let ins: Vec<Option<Val>> =
                    cs.iter().map(|c| Some(Val::Const(c.clone()))).collect();
                let sizes = split_sizes(imp, a, &ins, c0.shape[k], n.output.len())?;
                let mut start = 0;
                let mut outs = Vec::new();
                for s in sizes {
                    let mut lo = vec![0; c0.shape.len()];
                    let mut hi = c0.shape.clone();
                    lo[k] = start;
                    hi[k] = start + s;
                    start += s;
                    outs.push(konst(c0.slice(&lo, &hi)));
                }
                return Ok(Some(outs));
            }
            "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceMean" if small => {
                let ins: Vec<Option<Val>> =
                    cs.iter().map(|c| Some(Val::Const(c.clone()))).collect();
                let keep = a.int("keepdims", 1) != 0;
                let ax = match axes_of(imp, a, &ins)? {
                    Some(l) if !l.is_empty() => axes(&l, c0.shape.len())?,
                    _ => (0..c0.shape.len()).collect(),
                };
                let r = match op {
                    "ReduceMax" => c0.reduce(&ax, keep, f64::NEG_INFINITY, f64::max),
                    "ReduceMin" => c0.reduce(&ax, keep, f64::INFINITY, f64::min),
                    "ReduceProd" => c0.reduce(&ax, keep, 1.0, |x, y| x * y),
                    _ => c0.reduce(&ax, keep, 0.0, |x, y| x + y),
                };
                if op == "ReduceMean" {
                    let count: usize = ax.iter().map(|&k| c0.shape[k]).product();
                    let mut r = r;
                    r.data.iter_mut().for_each(|x| *x /= count as f64);
                    r.rounded()
                } else {
                    r.rounded()
                }
            }
            _ => return Ok(None),
        }
    };
    Ok(Some(vec![konst(v)]))
}

/// A constant slice with any non-zero steps (`lo`/`hi` as `slice_box`
/// gives them: `[lo, hi)` for positive steps, `(hi, lo]` for negative).
fn fold_slice(c: &Const, lo: &[usize], hi: &[usize], steps: &[i64]) -> Const {
    let idx: Vec<Vec<usize>> = (0..c.shape.len())
        .map(|k| {
            let s = steps[k];
            if s > 0 {
                (lo[k]..hi[k]).step_by(s as usize).collect()
            } else {
                // Starts at `lo` (which may be -1 as usize::MAX: empty) and
                // goes down to just above `hi` (-1 as usize::MAX: through 0).
                let start = lo[k] as i64;
                let end = hi[k] as i64;
                let mut v = Vec::new();
                let mut i = start;
                while i > end && i >= 0 {
                    v.push(i as usize);
                    i += s;
                }
                v
            }
        })
        .collect();
    let shape: Vec<usize> = idx.iter().map(Vec::len).collect();
    let strides = birkhoff_ir::strides(&c.shape);
    let count: usize = shape.iter().product();
    let mut data = Vec::with_capacity(count);
    let mut pos = vec![0usize; shape.len()];
    for _ in 0..count {
        let off: usize = (0..shape.len()).map(|k| idx[k][pos[k]] * strides[k]).sum();
        data.push(c.data[off]);
        crate::tensor::advance(&mut pos, &shape);
    }
    Const::new(c.dtype, shape, data)
}

/// Ops whose result is known from attributes and shapes alone: folded
/// before their inputs are looked at as values.
pub(crate) fn leaf(imp: &Importer, n: &NodeProto, ins: &[Option<Val>]) -> R<Option<Val>> {
    let a = Attrs(n);
    Ok(Some(match n.op_type.as_str() {
        "Constant" => konst(constant_attr(imp, &a)?),
        "Shape" => {
            let s = imp.shape(req(ins, 0)?);
            let r = s.len() as i64;
            let clamp = |x: i64| (if x < 0 { x + r } else { x }).clamp(0, r) as usize;
            let lo = clamp(a.int("start", 0));
            let hi = clamp(a.int("end", r)).max(lo);
            konst(Const::ints(
                &s[lo..hi].iter().map(|&d| d as i64).collect::<Vec<_>>(),
            ))
        }
        "Size" => {
            let s = imp.shape(req(ins, 0)?);
            konst(Const::scalar(dt::INT64, s.iter().product::<usize>() as f64))
        }
        "ConstantOfShape" => {
            let shape = imp.constant(req(ins, 0)?, "the shape")?.as_ints();
            let shape = shape_of(&shape, "ConstantOfShape")?;
            let (dtype, x) = match a.get("value").and_then(|v| v.t.as_ref()) {
                Some(t) => {
                    let v = decode(t, None)?.to_f64();
                    (t.data_type, v.first().copied().unwrap_or(0.0))
                }
                None => (dt::FLOAT, 0.0),
            };
            let count: usize = shape.iter().product();
            if count > 1 << 24 {
                return Err(format!(
                    "ConstantOfShape of shape {shape:?} is too large to fold"
                ));
            }
            konst(Const::new(dtype, shape, vec![x; count]).rounded())
        }
        "Range" => {
            let get = |i: usize, what: &str| -> R<(i32, f64)> {
                let c = imp.constant(req(ins, i)?, what)?;
                Ok((
                    c.dtype,
                    c.single()
                        .ok_or_else(|| format!("{what} must be a scalar"))?,
                ))
            };
            let (dtype, start) = get(0, "the start")?;
            let (_, limit) = get(1, "the limit")?;
            let (_, delta) = get(2, "the delta")?;
            if delta == 0.0 || !delta.is_finite() || !start.is_finite() || !limit.is_finite() {
                return Err("Range needs a finite, non-zero delta and finite bounds".into());
            }
            let count = ((limit - start) / delta).ceil().max(0.0);
            if count > f64::from(1u32 << 24) {
                return Err(format!("Range of {count} elements is too large to fold"));
            }
            let data: Vec<f64> = (0..count as usize)
                .map(|i| start + i as f64 * delta)
                .collect();
            konst(Const::new(dtype, vec![data.len()], data).rounded())
        }
        _ => return Ok(None),
    }))
}

/// The value of a `Constant` node.
fn constant_attr(imp: &Importer, a: &Attrs) -> R<Const> {
    if let Some(t) = a.get("value").and_then(|v| v.t.as_ref()) {
        let values = decode(t, imp.base)?;
        let shape = shape_of(&t.dims, "Constant")?;
        return Ok(Const::new(t.data_type, shape, values.to_f64()));
    }
    if let Some(v) = a.get("value_float") {
        return Ok(Const::scalar(dt::FLOAT, f64::from(v.f)));
    }
    if let Some(v) = a.get("value_floats") {
        return Ok(Const::new(
            dt::FLOAT,
            vec![v.floats.len()],
            v.floats.iter().map(|&x| f64::from(x)).collect(),
        ));
    }
    if let Some(v) = a.get("value_int") {
        return Ok(Const::scalar(dt::INT64, v.i as f64));
    }
    if let Some(v) = a.get("value_ints") {
        return Ok(Const::ints(&v.ints));
    }
    Err("Constant without a supported value attribute (value, value_float(s), value_int(s))".into())
}
