//! Contractions written as broadcast, multiply and sum — what `einsum`
//! exports to, and how `Σ_i pre_i · x_i` or `Σ_i H_ji · x_i` read when
//! written with broadcasting — become (batched) matrix products.
//!
//! For `reduce_sum(mul(A, B), axes)` where `A` and `B` are broadcasts of
//! lower-rank `a` and `b` (or full-shape values), every axis of the
//! product is classified by which operand has it:
//!
//! | `a` has it | `b` has it | summed | role |
//! |---|---|---|---|
//! | yes | yes | yes | contracted (`K`) |
//! | yes | yes | no | batch |
//! | yes | no | no | rows of the product (`M`) |
//! | no | yes | no | columns of the product (`N`) |
//!
//! and the sum becomes `matmul(a as [batch.., M, K], b as [batch.., K, N])`,
//! reshaped and permuted back to the sum's layout. An axis that only one
//! operand has but that is summed, or that neither has, makes it something
//! else (a sum of one operand, a multiple): no rewrite. Neither is a sum of
//! squares (`M` and `N` empty, both operands the same value): it gains
//! nothing as a matrix product.
//!
//! An axis of size 1 has no role of its own (any role gives the same
//! values), except that a leading one both operands spell out stays a batch
//! axis — a single token is still a batch of one, so the product keeps the
//! `[T, ..]` layout the fusions look for. A sum over size-1 axes only is a
//! product with `K = 1`.
//!
//! Soundness: the same products, summed over the same terms; the order in
//! which a matrix product sums them may differ from the reduction's, so
//! the two agree within the reduction tolerance.

use birkhoff_ir::Op;
use egg::Id;

use super::build;
use super::{Action, Ctx, args_of, broadcast_sources, nodes_where, same, shape, tensor};
use crate::lang::{EG, add_checked};

/// The sources of an operand of the product: what it broadcasts, or the
/// operand itself when it is no broadcast.
fn sources(eg: &EG, x: Id) -> Vec<Id> {
    let b = broadcast_sources(eg, x);
    if b.is_empty() { vec![x] } else { b }
}

pub(crate) fn contraction(ctx: &Ctx<'_>, c: Id, out: &mut Vec<Action>) {
    let eg = ctx.eg;
    if !tensor(eg, c).is_some_and(|t| t.dtype.is_float()) {
        return;
    }
    let out_shape = shape(eg, c).to_vec();
    for n in nodes_where(eg, c, |op| matches!(op, Op::ReduceSum { .. })) {
        let Op::ReduceSum { axes, .. } = &n.op else {
            continue;
        };
        let p = n.children[0];
        let full = shape(eg, p).to_vec();
        for m in args_of(eg, p, &Op::Mul) {
            for a in sources(eg, m[0]) {
                for b in sources(eg, m[1]) {
                    let Some(plan) = Plan::new(&full, shape(eg, a), shape(eg, b), axes) else {
                        continue;
                    };
                    if plan.m.is_empty() && plan.n.is_empty() && same(eg, a, b) {
                        continue;
                    }
                    let out_shape = out_shape.clone();
                    out.push(Action::custom(move |eg| {
                        plan.build(eg, a, b, &out_shape)
                            .map(|r| (c, r))
                            .into_iter()
                            .collect()
                    }));
                }
            }
        }
    }
}

/// The axes of the product by role, each list in axis order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Plan {
    full: Vec<usize>,
    batch: Vec<usize>,
    m: Vec<usize>,
    k: Vec<usize>,
    n: Vec<usize>,
    /// The axes `a` has, in order (its dimensions other than broadcast ones).
    a_axes: Vec<usize>,
    /// The same for `b`.
    b_axes: Vec<usize>,
}

/// Which axes of a rank-`r` product an operand of shape `s` (right-aligned,
/// NumPy style) really has: its dimensions that are not stretched from 1.
fn present(full: &[usize], s: &[usize]) -> Option<Vec<bool>> {
    let r = full.len();
    let lead = r.checked_sub(s.len())?;
    (0..r)
        .map(|k| {
            let d = if k < lead { 1 } else { s[k - lead] };
            if d != 1 && d != full[k] {
                None
            } else {
                Some(d != 1)
            }
        })
        .collect()
}

impl Plan {
    fn new(full: &[usize], a: &[usize], b: &[usize], summed: &[usize]) -> Option<Plan> {
        let (pa, pb) = (present(full, a)?, present(full, b)?);
        let mut plan = Plan {
            full: full.to_vec(),
            batch: vec![],
            m: vec![],
            k: vec![],
            n: vec![],
            a_axes: vec![],
            b_axes: vec![],
        };
        let r = full.len();
        let spelled = |s: &[usize], ax: usize| ax + s.len() >= r;
        for ax in 0..r {
            if full[ax] == 1 {
                if ax == 0 && !summed.contains(&ax) && spelled(a, ax) && spelled(b, ax) {
                    plan.batch.push(ax);
                    plan.a_axes.push(ax);
                    plan.b_axes.push(ax);
                }
                continue;
            }
            let role = match (pa[ax], pb[ax], summed.contains(&ax)) {
                (true, true, true) => &mut plan.k,
                (true, true, false) => &mut plan.batch,
                (true, false, false) => &mut plan.m,
                (false, true, false) => &mut plan.n,
                _ => return None,
            };
            role.push(ax);
            if pa[ax] {
                plan.a_axes.push(ax);
            }
            if pb[ax] {
                plan.b_axes.push(ax);
            }
        }
        let useful = !plan.k.is_empty() || summed.iter().any(|&ax| full[ax] == 1);
        useful.then_some(plan)
    }

    fn dims(&self, axes: &[usize]) -> Vec<usize> {
        axes.iter().map(|&k| self.full[k]).collect()
    }

    fn size(&self, axes: &[usize]) -> usize {
        axes.iter().map(|&k| self.full[k]).product()
    }

    /// `x` (an operand source with axes `own`) laid out as
    /// `[batch.., rows, cols]` with `rows` and `cols` flattened.
    fn operand(
        &self,
        eg: &mut EG,
        x: Id,
        own: &[usize],
        rows: &[usize],
        cols: &[usize],
    ) -> Option<Id> {
        let core = build::reshape(eg, x, &self.dims(own))?;
        let order: Vec<usize> = self.batch.iter().chain(rows).chain(cols).copied().collect();
        let perm: Vec<usize> = order
            .iter()
            .map(|ax| own.iter().position(|o| o == ax))
            .collect::<Option<_>>()?;
        let laid = build::permute(eg, core, &perm)?;
        let mut to = self.dims(&self.batch);
        to.push(self.size(rows));
        to.push(self.size(cols));
        build::reshape(eg, laid, &to)
    }

    fn build(&self, eg: &mut EG, a: Id, b: Id, out_shape: &[usize]) -> Option<Id> {
        let a2 = self.operand(eg, a, &self.a_axes, &self.m, &self.k)?;
        let b2 = self.operand(eg, b, &self.b_axes, &self.k, &self.n)?;
        let mm = add_checked(eg, Op::MatMul, vec![a2, b2])?;
        // [batch.., M.., N..], then into the sum's axis order.
        let mut split = self.dims(&self.batch);
        split.extend(self.dims(&self.m));
        split.extend(self.dims(&self.n));
        let unflat = build::reshape(eg, mm, &split)?;
        let order: Vec<usize> = self
            .batch
            .iter()
            .chain(&self.m)
            .chain(&self.n)
            .copied()
            .collect();
        let mut kept = order.clone();
        kept.sort_unstable();
        let perm: Vec<usize> = kept
            .iter()
            .map(|ax| order.iter().position(|o| o == ax))
            .collect::<Option<_>>()?;
        let ordered = build::permute(eg, unflat, &perm)?;
        build::reshape(eg, ordered, out_shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_which_operand_has_each_axis() {
        // Σ_i pre[t,i] · x[t,i,c]: pre [T,n,1] broadcast, x [T,n,C].
        let p = Plan::new(&[5, 3, 7], &[5, 3, 1], &[5, 3, 7], &[1]).unwrap();
        assert_eq!(
            (p.batch, p.m, p.k, p.n),
            (vec![0], vec![], vec![1], vec![2])
        );
        // Σ_i H[t,j,i] · x[t,i,c] on [T, n(j), n(i), C], summed over i.
        let p = Plan::new(&[5, 3, 3, 7], &[5, 3, 3, 1], &[5, 1, 3, 7], &[2]).unwrap();
        assert_eq!(
            (p.batch, p.m, p.k, p.n),
            (vec![0], vec![1], vec![2], vec![3])
        );
        // Lower-rank operands align at the right.
        let p = Plan::new(&[4, 6, 2], &[4, 6, 1], &[6, 2], &[1]).unwrap();
        assert_eq!(
            (p.batch, p.m, p.k, p.n),
            (vec![], vec![0], vec![1], vec![2])
        );
    }

    #[test]
    fn sums_that_are_no_matrix_product_are_left_alone() {
        // Summing an axis only one operand has.
        assert_eq!(Plan::new(&[5, 3, 7], &[5, 3, 7], &[5, 1, 7], &[1]), None);
        // An axis neither operand has (both broadcast along it).
        assert_eq!(Plan::new(&[5, 3, 7], &[5, 1, 7], &[5, 1, 7], &[2]), None);
        // No summed axis both have.
        assert_eq!(Plan::new(&[5, 3], &[5, 1], &[1, 3], &[]), None);
    }

    #[test]
    fn size_one_axes() {
        // One token: the leading axis stays a batch of one.
        let p = Plan::new(&[1, 3, 7], &[1, 3, 1], &[1, 3, 7], &[1]).unwrap();
        assert_eq!(
            (p.batch, p.m, p.k, p.n),
            (vec![0], vec![], vec![1], vec![2])
        );
        // One stream: the sum runs over a size-1 axis, K = 1.
        let p = Plan::new(&[5, 1, 1, 7], &[5, 1, 1, 1], &[5, 1, 1, 7], &[1]).unwrap();
        assert_eq!((p.batch, p.m, p.k, p.n), (vec![0], vec![], vec![], vec![3]));
        // A size-1 axis after a real one is no batch axis: a dot product
        // per row (different operands) is a [5,1,3] x [5,3,1] product.
        let p = Plan::new(&[5, 3, 1], &[5, 3, 1], &[5, 3, 1], &[1]).unwrap();
        assert_eq!((p.batch, p.m, p.k, p.n), (vec![0], vec![], vec![1], vec![]));
    }
}
