//! Adding terms from rule actions: movement and constant builders that
//! reuse what the e-graph already holds and skip identities, so a rule
//! that assembles operands (a packed weight matrix, a contraction's
//! reshapes) adds only the nodes that are really new.
//!
//! Every builder returns `None` when the term would be ill-typed
//! (`add_checked` refuses it); actions then add nothing.

use birkhoff_ir::{Literal, Op, TensorType};
use egg::Id;

use super::{nodes_where, shape, tensor};
use crate::lang::{EG, ENode, add_checked};

/// `reshape(x, to)`: `x` itself when it has that shape; else a value `x`
/// is a reshape of (through a chain of reshapes) that has it; else a
/// reshape of the deepest such value, so reshapes never stack.
pub(crate) fn reshape(eg: &mut EG, x: Id, to: &[usize]) -> Option<Id> {
    let mut chain = vec![x];
    for _ in 0..4 {
        let last = *chain.last()?;
        let Some(src) = nodes_where(eg, last, |op| matches!(op, Op::Reshape { .. }))
            .map(|n| n.children[0])
            .next()
        else {
            break;
        };
        chain.push(src);
    }
    if let Some(&c) = chain.iter().find(|&&c| shape(eg, c) == to) {
        return Some(c);
    }
    let base = *chain.last()?;
    add_checked(eg, Op::Reshape { shape: to.to_vec() }, vec![base])
}

/// `permute(x, perm)`: `x` for the identity, the source of a permute of
/// `x` that `perm` undoes, else a new node.
pub(crate) fn permute(eg: &mut EG, x: Id, perm: &[usize]) -> Option<Id> {
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Some(x);
    }
    let undone = nodes_where(eg, x, |op| matches!(op, Op::Permute { .. })).find_map(|n| {
        let Op::Permute { perm: p } = &n.op else {
            return None;
        };
        // Result axis k of permute(permute(s, p), perm) is s's axis p[perm[k]].
        let identity = perm.iter().enumerate().all(|(k, &q)| p.get(q) == Some(&k));
        identity.then_some(n.children[0])
    });
    match undone {
        Some(s) => Some(s),
        None => add_checked(
            eg,
            Op::Permute {
                perm: perm.to_vec(),
            },
            vec![x],
        ),
    }
}

/// Columns `lo..hi` of the last axis of `x` (`x` itself for all of them).
pub(crate) fn columns(eg: &mut EG, x: Id, lo: usize, hi: usize) -> Option<Id> {
    let s = shape(eg, x).to_vec();
    let last = s.len().checked_sub(1)?;
    if lo == 0 && hi == s[last] {
        return Some(x);
    }
    let mut start = vec![0; s.len()];
    let mut end = s;
    start[last] = lo;
    end[last] = hi;
    add_checked(eg, Op::Slice { start, end }, vec![x])
}

/// `parts` joined along `axis` (the one part itself when there is one).
pub(crate) fn concat(eg: &mut EG, parts: Vec<Id>, axis: usize) -> Option<Id> {
    match parts.as_slice() {
        [] => None,
        [one] => Some(*one),
        _ => add_checked(eg, Op::Concat { axis }, parts),
    }
}

/// `x` broadcast to `to` (`x` itself when it has that shape).
pub(crate) fn broadcast(eg: &mut EG, x: Id, to: &[usize]) -> Option<Id> {
    if shape(eg, x) == to {
        return Some(x);
    }
    add_checked(eg, Op::Broadcast { shape: to.to_vec() }, vec![x])
}

/// A constant splat of type `ty`.
pub(crate) fn splat(eg: &mut EG, ty: TensorType, value: f64) -> Id {
    eg.add(ENode {
        op: Op::Const(Literal::splat(ty, value)),
        children: vec![],
    })
}

/// The dtype of class `x` (`None` for tuples).
pub(crate) fn dtype(eg: &EG, x: Id) -> Option<birkhoff_ir::DType> {
    tensor(eg, x).map(|t| t.dtype)
}
