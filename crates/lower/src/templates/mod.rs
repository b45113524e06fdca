//! Hand-written kernels for the semantic and fused ops.
//!
//! Each template turns one op whose operands are contiguous row-major
//! buffers into one or more kernels that write its results into
//! contiguous row-major buffers. They are written once, as kernel IR, for
//! every backend.
//!
//! Input invariants: the operands' types are ones the op accepts and the
//! result buffers have the op's result types (checked here with the graph
//! IR's own type rules; a mismatch is an error, not a panic). Output: the
//! appended kernels pass `verify_program`, and running them computes the
//! reference semantics of the op with the same operations in the same
//! order, except that sums inside vector loops may be reassociated by a
//! backend.
//!
//! The shape of every kernel follows one plan, for a 2-core machine with
//! 128-bit SIMD: the outermost loop is parallel over independent rows,
//! matrices or tokens; innermost loops walk contiguous memory and are
//! vector loops (reductions into scalar accumulators or into per-column
//! scratch arrays); per-row scalar work lives in variables and private
//! scratch arrays. The templates:
//!
//! * `norm`: `row_norm`, `col_norm`, `softmax` (any axis), `rms_norm`;
//! * `sinkhorn`: `sinkhorn`, both variants;
//! * `sinkhorn_grad`: `sinkhorn_grad`, both variants (recomputes the rounds
//!   in scratch, then runs the backward);
//! * `mhc`: `mhc_pre`, `hc_pre` (projection in the kernel or by GEMM,
//!   see [`PreMixProjection`](crate::PreMixProjection)), `mhc_post`, and the two
//!   halves of a GEMM-projected `mhc_pre`: `mhc_project` (the GEMM) and
//!   `mhc_pre_projected` (the per-token kernel);
//! * `mhc_post_grad`: `mhc_post_grad` (all four cotangents in one sweep
//!   over each token);
//! * `mhc_pre_grad`: `mhc_pre_grad` (the recomputed forward, the Sinkhorn
//!   backward, per-token gate and `d_x` kernel, reductions over tokens).

mod kernel_builder;
mod mhc;
mod mhc_post_grad;
mod mhc_pre_grad;
mod norm;
mod sinkhorn;
mod sinkhorn_grad;

use birkhoff_ir::kernel::BufferId;
use birkhoff_ir::{Op, TensorType, Type, infer};

use crate::LowerOptions;
use crate::builder::ProgramBuilder;
use crate::error::{LowerError, Result};

use mhc::{PostMix, PreMix};
use mhc_post_grad::PostMixGrad;
use mhc_pre_grad::PreMixGrad;
use norm::LineOp;

/// A tensor held in a contiguous row-major buffer.
#[derive(Clone, Debug)]
pub struct Arg {
    /// The buffer.
    pub buf: BufferId,
    /// Its type.
    pub ty: TensorType,
}

/// Whether `op` has a template.
pub fn has_template(op: &Op) -> bool {
    op.is_semantic() || op.is_fused()
}

/// Appends the kernels computing `outs` (one per result; three for
/// `mhc_pre` and `hc_pre`, four for `mhc_post_grad` and `mhc_pre_grad`)
/// from `args`.
///
/// Fails with [`LowerError::Unsupported`] when `op` has no template or
/// when `args` and `outs` do not have the types the op takes and gives.
pub fn lower_composite(
    pb: &mut ProgramBuilder,
    op: &Op,
    args: &[Arg],
    outs: &[Arg],
    opts: &LowerOptions,
) -> Result<()> {
    lower_composite_reading(pb, op, args, outs, &vec![true; outs.len()], opts)
}

/// [`lower_composite`] where only the results marked in `read` are read
/// afterwards: a pre-mix whose mixes nobody reads computes only its layer
/// input (the others still get well-typed buffers, left unwritten).
pub fn lower_composite_reading(
    pb: &mut ProgramBuilder,
    op: &Op,
    args: &[Arg],
    outs: &[Arg],
    read: &[bool],
    opts: &LowerOptions,
) -> Result<()> {
    check_types(op, args, outs)?;
    let layer_input_only = read.len() == 3 && !read[1] && !read[2];
    let x = &args[0];
    let (shape, dtype) = (&x.ty.shape[..], x.ty.dtype);
    let rank = shape.len();
    let io = (x.buf, outs[0].buf);
    match op {
        Op::RowNorm { eps } => {
            let line = LineOp::Normalize { eps: eps.get() };
            norm::lower_line_op(pb, "row_norm", line, io, shape, rank - 1, dtype);
        }
        Op::ColNorm { eps } => {
            let line = LineOp::Normalize { eps: eps.get() };
            norm::lower_line_op(pb, "col_norm", line, io, shape, rank - 2, dtype);
        }
        Op::Softmax { axis } => {
            norm::lower_line_op(pb, "softmax", LineOp::Softmax, io, shape, *axis, dtype);
        }
        Op::RmsNorm { eps } => {
            let line = LineOp::Rms { eps: eps.get() };
            norm::lower_line_op(pb, "rms_norm", line, io, shape, rank - 1, dtype);
        }
        Op::Sinkhorn(spec) => sinkhorn::lower_sinkhorn(pb, spec, io, shape, dtype),
        Op::SinkhornGrad(spec) => {
            let bufs = (x.buf, args[1].buf, outs[0].buf);
            sinkhorn_grad::lower_sinkhorn_grad(pb, spec, bufs, shape, dtype)?;
        }
        Op::MhcProject => {
            let (t, n, c) = dims3(&x.ty);
            let p = mhc::Project {
                x: x.buf,
                weights: args[1].buf,
                out: outs[0].buf,
                dims: (t, n, c),
                rows: args[1].ty.shape[0],
                dtype,
            };
            mhc::lower_project(pb, "mhc_project", &p, opts.gemm);
        }
        Op::MhcPost => {
            let p = PostMix {
                f: args[0].buf,
                x: args[1].buf,
                post: args[2].buf,
                comb: args[3].buf,
                out: outs[0].buf,
                dims: dims3(&args[1].ty),
                dtype,
            };
            mhc::lower_post_mix(pb, &p);
        }
        Op::MhcPostGrad => {
            let p = PostMixGrad {
                f: args[0].buf,
                x: args[1].buf,
                post: args[2].buf,
                comb: args[3].buf,
                d_out: args[4].buf,
                grads: [outs[0].buf, outs[1].buf, outs[2].buf, outs[3].buf],
                dims: dims3(&args[1].ty),
                dtype,
            };
            mhc_post_grad::lower_post_mix_grad(pb, &p);
        }
        Op::MhcPreGrad(attrs) => {
            let p = PreMixGrad {
                x: args[0].buf,
                proj: args[1].buf,
                scale: args[2].buf,
                base: args[3].buf,
                cots: [args[4].buf, args[5].buf, args[6].buf],
                grads: [outs[0].buf, outs[1].buf, outs[2].buf, outs[3].buf],
                dims: dims3(&args[0].ty),
                dtype,
                attrs: *attrs,
            };
            mhc_pre_grad::lower_pre_mix_grad(pb, &p, opts.gemm)?;
        }
        _ if let Some((norm_eps, gates)) = op.pre_mix() => {
            let p = pre_mix(args, outs, layer_input_only);
            let (what, norm_eps) = (op.mnemonic(), norm_eps.get());
            if matches!(op, Op::MhcPreProjected(_)) {
                let apart = opts.scalar_kernels_apart;
                mhc::lower_pre_mix_projected(pb, what, &p, norm_eps, &gates, apart);
            } else {
                mhc::lower_pre_mix(pb, what, &p, norm_eps, &gates, opts);
            }
        }
        _ => unreachable!("check_types admits only ops with a template"),
    }
    Ok(())
}

/// `(T, n, C)` of a `[T, n, C]` residual.
fn dims3(t: &TensorType) -> (usize, usize, usize) {
    (t.shape[0], t.shape[1], t.shape[2])
}

/// The buffers of a pre-mix whose types [`check_types`] accepted.
fn pre_mix(args: &[Arg], outs: &[Arg], layer_input_only: bool) -> PreMix {
    PreMix {
        x: args[0].buf,
        proj: args[1].buf,
        scale: args[2].buf,
        base: args[3].buf,
        layer_input: outs[0].buf,
        post: outs[1].buf,
        comb: outs[2].buf,
        dims: dims3(&args[0].ty),
        dtype: args[0].ty.dtype,
        layer_input_only,
    }
}

/// Checks that `op` has a template, that `args` are operands it accepts
/// (by the graph IR's type rules) and that `outs` have its result types.
fn check_types(op: &Op, args: &[Arg], outs: &[Arg]) -> Result<()> {
    let types = || {
        args.iter()
            .map(|a| a.ty.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let fail = |reason: String| LowerError::Unsupported {
        op: op.mnemonic().to_string(),
        types: types(),
        reason,
    };
    if !has_template(op) {
        return Err(fail("the op has no kernel template".to_string()));
    }
    let arg_types: Vec<Type> = args.iter().map(|a| Type::Tensor(a.ty.clone())).collect();
    let refs: Vec<&Type> = arg_types.iter().collect();
    let want = match infer(op, &refs).map_err(|e| fail(e.to_string()))? {
        Type::Tensor(t) => vec![t],
        Type::Tuple(ts) => ts,
    };
    let got: Vec<&TensorType> = outs.iter().map(|o| &o.ty).collect();
    if got.len() != want.len() || got.iter().zip(&want).any(|(g, w)| *g != w) {
        let show = |ts: &mut dyn Iterator<Item = &TensorType>| {
            ts.map(ToString::to_string).collect::<Vec<_>>().join(", ")
        };
        return Err(fail(format!(
            "results must be ({}), got ({})",
            show(&mut want.iter()),
            show(&mut got.iter().copied())
        )));
    }
    Ok(())
}
