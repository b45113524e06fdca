//! Token axes flattened: a graph whose stream is written `[B, S, n, C]`
//! (batch and sequence, as PyTorch code writes it) rewritten to compute
//! `[B·S, n, C]`, so that the mHC fusions, which take one token axis, can
//! match it.
//!
//! The token axes `L` come from a Sinkhorn over `[L..., n, n]` with two
//! or more leading axes (a Sinkhorn is per token). Every value whose
//! shape starts with `L` and whose op treats every index of those axes
//! alike — elementwise ops, casts, row and RMS normalizations,
//! reductions, softmaxes and concatenations along later axes, Sinkhorns
//! and matrix products with `L` as their batch axes, permutes and slices
//! that leave `L` alone, splats and dense constants, reshapes, broadcasts
//! whose operand has `L` or only ones there — is computed with `L`
//! merged into one axis of `T = ∏L` elements; a value needed in its own
//! shape (an output, the operand of any other op) is a reshape of its
//! flat form. Every step is exact: merging leading axes that an op treats
//! independently changes no element, and a row-major reshape of a reshape
//! is one reshape.

use std::collections::HashMap;

use birkhoff_ir::{Graph, Literal, LiteralValues, Op, TensorType, ValueId};

/// The token axes of `g`'s first Sinkhorn with two or more leading axes.
pub(crate) fn token_axes(g: &Graph) -> Option<Vec<usize>> {
    g.values().find_map(|v| {
        let n = g.node(v);
        match n.op {
            Op::Sinkhorn(_) => {
                let s = &g.ty(n.args[0]).shape;
                (s.len() >= 4).then(|| s[..s.len() - 2].to_vec())
            }
            _ => None,
        }
    })
}

/// `g` with the token axes `lead` merged wherever the ops allow (module
/// docs). The result has `g`'s inputs and outputs, names and types.
pub(crate) fn flatten(g: &Graph, lead: &[usize]) -> Graph {
    let mut f = Flattener {
        src: g,
        out: Graph::new(g.name()),
        lead: lead.to_vec(),
        t: lead.iter().product(),
        own: HashMap::new(),
        flat: HashMap::new(),
    };
    for &v in g.inputs() {
        f.value(v);
    }
    // The stream's flat form before anything else, so that every view of
    // it (`[T, nC]` for the projection) is a reshape of `[T, n, C]`.
    for &v in g.inputs() {
        let shape = g.ty(v).shape.clone();
        if f.has_lead(&shape) {
            let flat = f.reshape(f.own[&v], f.merged(&shape));
            f.flat.insert(v, flat);
        }
    }
    for v in g
        .values()
        .filter(|&v| !matches!(g.node(v).op, Op::Input { .. }))
    {
        f.value(v);
    }
    for o in g.outputs() {
        let id = f.own_form(o.value);
        f.out.add_output(o.name.clone(), id);
    }
    f.out
}

struct Flattener<'g> {
    src: &'g Graph,
    out: Graph,
    lead: Vec<usize>,
    t: usize,
    /// Each source value in its own shape, once made.
    own: HashMap<ValueId, ValueId>,
    /// Each source value with the token axes merged, once made.
    flat: HashMap<ValueId, ValueId>,
}

impl Flattener<'_> {
    fn merged(&self, shape: &[usize]) -> Vec<usize> {
        let mut s = vec![self.t];
        s.extend_from_slice(&shape[self.lead.len()..]);
        s
    }

    fn has_lead(&self, shape: &[usize]) -> bool {
        shape.len() > self.lead.len() && shape.starts_with(&self.lead)
    }

    fn push(&mut self, v: ValueId, op: Op, args: &[ValueId]) -> ValueId {
        // The source graph is verified and every rewrite keeps types
        // consistent; a failure here is a bug in this module.
        let id = self
            .out
            .add(op, args)
            .unwrap_or_else(|e| panic!("flattening made an ill-typed node: {e}"));
        self.out.carry_label(id, self.src, v);
        id
    }

    fn reshape(&mut self, x: ValueId, shape: Vec<usize>) -> ValueId {
        if self.out.ty(x).shape == shape {
            return x;
        }
        self.out
            .add(Op::Reshape { shape }, &[x])
            .unwrap_or_else(|e| panic!("flattening made an ill-typed reshape: {e}"))
    }

    /// `v` in its own shape.
    fn own_form(&mut self, v: ValueId) -> ValueId {
        if let Some(&id) = self.own.get(&v) {
            return id;
        }
        let flat = self.flat[&v];
        let id = self.reshape(flat, self.src.ty(v).shape.clone());
        self.own.insert(v, id);
        id
    }

    /// `v` with the token axes merged; `v`'s shape starts with them.
    fn flat_form(&mut self, v: ValueId) -> ValueId {
        if let Some(&id) = self.flat.get(&v) {
            return id;
        }
        let own = self.own[&v];
        let target = self.merged(&self.src.ty(v).shape);
        let id = self.reshape(own, target);
        self.flat.insert(v, id);
        id
    }

    fn value(&mut self, v: ValueId) {
        let node = self.src.node(v);
        if let Op::Input { name, kind, ty } = &node.op {
            let id = self.out.add_input(name.clone(), *kind, ty.clone());
            self.own.insert(v, id);
            return;
        }
        let flattens = self
            .src
            .value_type(v)
            .as_tensor()
            .is_some_and(|t| self.has_lead(&t.shape));
        if flattens && let Some(id) = self.flattened(v) {
            self.flat.insert(v, id);
            return;
        }
        let args: Vec<ValueId> = node.args.iter().map(|&a| self.own_form(a)).collect();
        let id = self.push(v, node.op.clone(), &args);
        self.own.insert(v, id);
    }

    /// The flat form of `v` built from its operands' flat forms, if its
    /// op treats every index of the token axes alike.
    fn flattened(&mut self, v: ValueId) -> Option<ValueId> {
        let node = self.src.node(v);
        let l = self.lead.len();
        let shift = |a: usize| (a >= l).then(|| a - l + 1);
        let arg_rank = |i: usize| node.args.get(i).map_or(0, |&a| self.src.ty(a).rank());
        let op = match &node.op {
            op if op.is_elementwise() => op.clone(),
            Op::Cast { .. } | Op::RowNorm { .. } | Op::RmsNorm { .. } => node.op.clone(),
            Op::ColNorm { .. } if arg_rank(0) >= l + 2 => node.op.clone(),
            Op::Sinkhorn(_) if arg_rank(0) == l + 2 => node.op.clone(),
            Op::MatMul if arg_rank(0) == l + 2 && arg_rank(1) == l + 2 => Op::MatMul,
            Op::Softmax { axis } => Op::Softmax {
                axis: shift(*axis)?,
            },
            Op::ReduceSum { axes, keepdims } => Op::ReduceSum {
                axes: axes.iter().map(|&a| shift(a)).collect::<Option<_>>()?,
                keepdims: *keepdims,
            },
            Op::ReduceMax { axes, keepdims } => Op::ReduceMax {
                axes: axes.iter().map(|&a| shift(a)).collect::<Option<_>>()?,
                keepdims: *keepdims,
            },
            Op::Permute { perm } if perm[..l].iter().enumerate().all(|(i, &p)| i == p) => {
                let mut p = vec![0];
                p.extend(perm[l..].iter().map(|&a| a - l + 1));
                Op::Permute { perm: p }
            }
            Op::Slice { start, end }
                if start[..l].iter().all(|&s| s == 0) && end[..l] == self.lead[..] =>
            {
                let mut s = vec![0];
                s.extend_from_slice(&start[l..]);
                let mut e = vec![self.t];
                e.extend_from_slice(&end[l..]);
                Op::Slice { start: s, end: e }
            }
            Op::Concat { axis } => Op::Concat {
                axis: shift(*axis)?,
            },
            Op::Const(lit) => {
                // Row-major: the same elements in the merged shape.
                let ty = TensorType::new(lit.ty().dtype, self.merged(&lit.ty().shape));
                let lit = match lit.values() {
                    LiteralValues::Splat(x) => Literal::splat(ty, *x),
                    LiteralValues::Dense(xs) => Literal::dense(ty, xs.clone())?,
                };
                return Some(self.push(v, Op::Const(lit), &[]));
            }
            Op::Reshape { shape } => {
                let a = node.args[0];
                let x = if self.flat.contains_key(&a) {
                    self.flat[&a]
                } else {
                    self.own_form(a)
                };
                let target = self.merged(shape);
                return Some(self.reshape(x, target));
            }
            Op::Broadcast { shape } => return self.broadcast(v, node.args[0], shape),
            _ => return None,
        };
        let mut args = Vec::with_capacity(node.args.len());
        for &a in &node.args {
            if !self.has_lead(&self.src.ty(a).shape) {
                return None;
            }
            args.push(self.flat_form(a));
        }
        Some(self.push(v, op, &args))
    }

    /// `broadcast(x, to)` flattened: `x` either has the token axes or has
    /// none (size one or absent there, as broadcasting aligns right).
    fn broadcast(&mut self, v: ValueId, x: ValueId, to: &[usize]) -> Option<ValueId> {
        let l = self.lead.len();
        let xs = self.src.ty(x).shape.clone();
        let pad = to.len() - xs.len();
        let target = self.merged(to);
        let src = if pad == 0 && self.has_lead(&xs) {
            self.flat_form(x)
        } else if (0..l).all(|i| i < pad || xs[i - pad] == 1) {
            let rest = to.len() - l;
            let own = self.own_form(x);
            if xs.len() > rest {
                self.reshape(own, xs[xs.len() - rest..].to_vec())
            } else {
                own
            }
        } else {
            return None;
        };
        if self.out.ty(src).shape == target {
            return Some(src);
        }
        Some(self.push(v, Op::Broadcast { shape: target }, &[src]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use birkhoff_ir::{InterpOptions, Tensor, interpret, parse_and_verify, verify};
    use std::collections::BTreeMap;

    #[test]
    fn flattened_graph_computes_the_same_values() {
        let g = parse_and_verify(
            "graph @g(%x: f64[2,3,2,4], %b: f64[2,2]) -> (y: f64[2,3,2,4], s: f64[2,3,2,2]) {
               %1 = permute %x, perm=[0,1,3,2] : f64[2,3,4,2]
               %2 = matmul %x, %1 : f64[2,3,2,2]
               %3 = broadcast %b : f64[2,3,2,2]
               %4 = add %2, %3 : f64[2,3,2,2]
               %5 = exp %4 : f64[2,3,2,2]
               %s = sinkhorn %5, variant=paper, iters=2, eps=0.0 : f64[2,3,2,2]
               %7 = matmul %s, %x : f64[2,3,2,4]
               %8 = reduce_sum %7, axes=[3], keepdims : f64[2,3,2,1]
               %9 = broadcast %8 : f64[2,3,2,4]
               %y = div %7, %9 : f64[2,3,2,4]
               return %y, %s
             }",
        )
        .unwrap()
        .remove(0);
        let lead = token_axes(&g).unwrap();
        assert_eq!(lead, vec![2, 3]);
        let f = flatten(&g, &lead);
        verify(&f).unwrap();
        // Every op above flattens: the only reshapes are the inputs' and
        // the outputs'.
        assert!(!f.nodes().iter().any(|n| {
            n.ty.as_tensor()
                .is_some_and(|t| t.shape.starts_with(&[2, 3]))
                && !matches!(n.op, Op::Input { .. } | Op::Reshape { .. })
        }));
        let mut inputs = BTreeMap::new();
        let xs: Vec<f64> = (0..48).map(|i| (i as f64 * 0.37).sin()).collect();
        inputs.insert(
            "x".to_string(),
            Tensor::from_f64(
                TensorType::new(birkhoff_ir::DType::F64, vec![2, 3, 2, 4]),
                &xs,
            )
            .unwrap(),
        );
        inputs.insert(
            "b".to_string(),
            Tensor::from_f64(
                TensorType::new(birkhoff_ir::DType::F64, vec![2, 2]),
                &[0.1, -0.2, 0.3, 0.05],
            )
            .unwrap(),
        );
        let opts = InterpOptions::default();
        assert_eq!(
            interpret(&g, &inputs, &opts).unwrap(),
            interpret(&f, &inputs, &opts).unwrap()
        );
    }
}
