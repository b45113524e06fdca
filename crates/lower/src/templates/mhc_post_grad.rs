//! `mhc_post_grad`: the post-mix's backward, as one kernel.
//!
//! Input: contiguous row-major operands of one float dtype — `f [T,C]`,
//! `x [T,n,C]`, `post [T,n]`, `comb [T,n,n]` and the cotangent
//! `d_out [T,n,C]` — and result buffers `d_f [T,C]`, `d_x [T,n,C]`,
//! `d_post [T,n]`, `d_comb [T,n,n]`.
//!
//! Design: every token is independent, so the kernel is one parallel loop
//! over tokens, like the forward `mhc_post`. Per token, the `n²` mixing
//! weights and `n` post gates go to variables, then one vector sweep over
//! `C` reads the `n` residual rows, the `n` cotangent rows and `f` once
//! and
//!
//! * writes `d_f[c] = Σ_j post_j·d_out[j,c]` and
//!   `d_x[i,c] = Σ_j comb_ij·d_out[j,c]` (sums over the streams, in
//!   registers, in the reference's order), and
//! * accumulates the `n + n²` reductions over `C`,
//!   `d_post_j += d_out[j,c]·f[c]` and `d_comb_ij += x[i,c]·d_out[j,c]`,
//!   in scalar accumulators (vector accumulators on a SIMD backend).
//!
//! After the sweep the `n + n²` sums are stored. So the `[T,n,C]` tensors
//! are read once and `d_x` written once, where the expansion into
//! primitives makes a pass over them per product.
//!
//! Rounding: every result is one dot product of the reference's terms.
//! The sums over `C` start from zero rather than from their first term
//! (which can change nothing but the sign of a zero) and a backend may
//! reassociate them across vector lanes, as for any reduction in a vector
//! loop. `bf16` operands are widened to `f32` on load; only the results
//! are rounded to `bf16`.

use birkhoff_ir::DType;
use birkhoff_ir::kernel::{BufferId, Index, Stmt, VarId};

use super::kernel_builder::{KernelBuilder, add, at, index_coeff, load, mul, set, store, var};
use crate::builder::ProgramBuilder;

/// Buffers and sizes of a post-mix backward.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PostMixGrad {
    /// `layer_output [T,C]`.
    pub f: BufferId,
    /// `residual [T,n,C]`.
    pub x: BufferId,
    /// `post_mix [T,n]`.
    pub post: BufferId,
    /// `comb_mix [T,n,n]`.
    pub comb: BufferId,
    /// The cotangent of `residual_out`, `[T,n,C]`.
    pub d_out: BufferId,
    /// Results: `d_f [T,C]`, `d_x [T,n,C]`, `d_post [T,n]`, `d_comb [T,n,n]`.
    pub grads: [BufferId; 4],
    /// `(T, n, C)`.
    pub dims: (usize, usize, usize),
    /// The operands' dtype.
    pub dtype: DType,
}

/// Appends the kernel of an `mhc_post_grad`.
pub(crate) fn lower_post_mix_grad(pb: &mut ProgramBuilder, p: &PostMixGrad) {
    let (t, n, c) = p.dims;
    let (k, nn) = (n * c, n * n);
    let [d_f, d_x, d_post, d_comb] = p.grads;
    let mut kb = KernelBuilder::new(pb, "mhc_post_grad", p.dtype);
    let body = vec![kb.parallel(t, |kb, tok| {
        let comb: Vec<VarId> = (0..nn).map(|_| kb.value()).collect();
        let post: Vec<VarId> = (0..n).map(|_| kb.value()).collect();
        let comb_row = Index::var(tok, index_coeff(nn));
        let post_row = Index::var(tok, index_coeff(n));
        let mut body: Vec<Stmt> = comb
            .iter()
            .enumerate()
            .map(|(r, &v)| set(v, load(p.comb, comb_row.clone().shifted(index_coeff(r)))))
            .collect();
        body.extend(
            post.iter()
                .enumerate()
                .map(|(j, &v)| set(v, load(p.post, post_row.clone().shifted(index_coeff(j))))),
        );
        // The reductions over C: d_post_j and d_comb_ij (row-major, i·n + j).
        let dp: Vec<VarId> = (0..n).map(|_| kb.value()).collect();
        let dc: Vec<VarId> = (0..nn).map(|_| kb.value()).collect();
        body.extend(dp.iter().chain(&dc).map(|&a| set(a, kb.c(0.0))));
        let xs: Vec<VarId> = (0..n).map(|_| kb.value()).collect();
        let gs: Vec<VarId> = (0..n).map(|_| kb.value()).collect();
        let fv = kb.value();
        let row = Index::var(tok, index_coeff(k));
        let f_row = Index::var(tok, index_coeff(c));
        // With no streams d_f is an empty sum.
        let zero = kb.c(0.0);
        body.push(kb.vector(c, |_, cc| {
            // Stream i of the token's residual (or cotangent) at column cc.
            let elem = |i: usize| at(&row, cc, 1).shifted(index_coeff(i * c));
            let mut b: Vec<Stmt> = xs
                .iter()
                .enumerate()
                .map(|(i, &v)| set(v, load(p.x, elem(i))))
                .collect();
            b.extend(
                gs.iter()
                    .enumerate()
                    .map(|(j, &v)| set(v, load(p.d_out, elem(j)))),
            );
            b.push(set(fv, load(p.f, at(&f_row, cc, 1))));
            // Σ_j w(j)·g_j in the reference's order, from j = 0.
            let mix = |w: &dyn Fn(usize) -> VarId| {
                let term = |j: usize| mul(var(w(j)), var(gs[j]));
                match n {
                    0 => zero.clone(),
                    _ => (1..n).fold(term(0), |s, j| add(s, term(j))),
                }
            };
            b.push(store(d_f, at(&f_row, cc, 1), mix(&|j| post[j])));
            b.extend((0..n).map(|i| store(d_x, elem(i), mix(&|j| comb[i * n + j]))));
            b.extend(
                dp.iter()
                    .enumerate()
                    .map(|(j, &a)| set(a, add(var(a), mul(var(gs[j]), var(fv))))),
            );
            b.extend(dc.iter().enumerate().map(|(r, &a)| {
                let (i, j) = (r / n, r % n);
                set(a, add(var(a), mul(var(xs[i]), var(gs[j]))))
            }));
            b
        }));
        body.extend(
            dp.iter()
                .enumerate()
                .map(|(j, &a)| store(d_post, post_row.clone().shifted(index_coeff(j)), var(a))),
        );
        body.extend(
            dc.iter()
                .enumerate()
                .map(|(r, &a)| store(d_comb, comb_row.clone().shifted(index_coeff(r)), var(a))),
        );
        body
    })];
    pb.push(kb.finish(body));
}
