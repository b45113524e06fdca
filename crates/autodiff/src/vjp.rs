//! Vector-Jacobian products: one gradient rule per primitive op, and one
//! each for `sinkhorn` and `mhc_post`.
//!
//! Input: a node `v = op(args)` of the gradient graph under construction
//! (forward nodes keep their ids there, so rules read forward values,
//! including `v` itself, directly) and the cotangent `g` of `v`, a value of
//! `v`'s type. Output: for each operand whose gradient is needed, its
//! cotangent contribution, a new value of that operand's type; `None` for
//! operands that need none. Rules only append nodes.
//!
//! Conventions at the points where an op is not differentiable, chosen to
//! match PyTorch where it has a choice:
//! * `abs`: the derivative at 0 is 0.
//! * `max` / `min`: the larger (smaller) operand gets the whole cotangent;
//!   on a tie each operand gets half. `reduce_max` splits the cotangent
//!   evenly among all positions equal to the maximum (like `amax`). A NaN
//!   maximum passes no gradient.
//! * `pow(a, b)`: `∂/∂a = b · a^(b-1)`, defined as 0 where `b == 0`;
//!   `∂/∂b = a^b · ln a` where `a > 0` and 0 where `a <= 0` (for `a < 0`
//!   the power is only real at integer `b`, and for `a == 0`, `b > 0` the
//!   power is constantly 0).
//! * `sinkhorn` has a rule of its own: `sinkhorn_grad(x, g)`, the fused
//!   recomputing backward (see docs/autodiff.md); so has `mhc_post`:
//!   one `mhc_post_grad(f, x, post, comb, g)` and a `get` of each needed
//!   operand's cotangent from its tuple.
//! * `mhc_pre` (a tuple) gets one `mhc_pre_grad` for its elements' cotangents
//!   (zeros where an element has none), see [`vjp_tuple`].
//! * comparisons, logical ops, `iota`, constants and casts to `i32` or
//!   `bool` pass no gradient; `select` routes the cotangent by its
//!   condition and gives the condition none.

use birkhoff_ir::{Literal, Op, Type, ValueId};

use crate::append::Appender;
use crate::error::{AutodiffError, Result};

/// The cotangent contributions of `v`'s operands, given `v`'s cotangent
/// `g`; `needs[i]` says whether operand `i` wants one.
pub(crate) fn vjp(
    e: &mut Appender<'_>,
    v: ValueId,
    g: ValueId,
    needs: &[bool],
) -> Result<Vec<Option<ValueId>>> {
    let node = e.g.node(v).clone();
    let args = node.args.clone();
    let mut out = vec![None; args.len()];
    let x = args.first().copied();
    match &node.op {
        // Leaves have no operands; ops with bool or i32 results never
        // receive a cotangent.
        Op::Input { .. } | Op::Const(_) | Op::Iota { .. } => {}
        Op::Not | Op::And | Op::Or => {}
        op if op.is_comparison() => {}

        // ---- unary --------------------------------------------------------
        Op::Neg => out[0] = Some(e.neg(g)?),
        Op::Abs => {
            let x = arg(x)?;
            let zero = e.splat_like(x, 0.0)?;
            let pos = e.op(Op::Gt, &[x, zero])?;
            let neg = e.op(Op::Lt, &[x, zero])?;
            let minus_g = e.neg(g)?;
            let inner = e.select_or_zero(neg, minus_g)?;
            out[0] = Some(e.select(pos, g, inner)?);
        }
        Op::Exp => out[0] = Some(e.mul(g, v)?),
        Op::Log => out[0] = Some(e.div(g, arg(x)?)?),
        Op::Sqrt => {
            // d sqrt(x) = 1 / (2 sqrt(x)).
            let two_y = e.scale(v, 2.0)?;
            out[0] = Some(e.div(g, two_y)?);
        }
        Op::Rsqrt => {
            // d x^(-1/2) = -1/2 · x^(-3/2) = -1/2 · y³.
            let y2 = e.mul(v, v)?;
            let y3 = e.mul(y2, v)?;
            let d = e.scale(y3, -0.5)?;
            out[0] = Some(e.mul(g, d)?);
        }
        Op::Recip => {
            // d (1/x) = -y².
            let y2 = e.mul(v, v)?;
            let gy2 = e.mul(g, y2)?;
            out[0] = Some(e.neg(gy2)?);
        }
        Op::Sigmoid => {
            let one_minus = e.rsub(1.0, v)?;
            let d = e.mul(v, one_minus)?;
            out[0] = Some(e.mul(g, d)?);
        }
        Op::Tanh => {
            let y2 = e.mul(v, v)?;
            let d = e.rsub(1.0, y2)?;
            out[0] = Some(e.mul(g, d)?);
        }

        // ---- binary -------------------------------------------------------
        Op::Add => {
            out[0] = Some(g);
            out[1] = Some(g);
        }
        Op::Sub => {
            out[0] = Some(g);
            if needs[1] {
                out[1] = Some(e.neg(g)?);
            }
        }
        Op::Mul => {
            if needs[0] {
                out[0] = Some(e.mul(g, args[1])?);
            }
            if needs[1] {
                out[1] = Some(e.mul(g, args[0])?);
            }
        }
        Op::Div => {
            // y = a / b: ∂a = g / b, ∂b = -g · y / b.
            if needs[0] {
                out[0] = Some(e.div(g, args[1])?);
            }
            if needs[1] {
                let gy = e.mul(g, v)?;
                let q = e.div(gy, args[1])?;
                out[1] = Some(e.neg(q)?);
            }
        }
        Op::Max | Op::Min => {
            let (a, b) = (args[0], args[1]);
            let (wins_a, wins_b) = if node.op == Op::Max {
                (Op::Gt, Op::Lt)
            } else {
                (Op::Lt, Op::Gt)
            };
            let tie = e.op(Op::Eq, &[a, b])?;
            let half = e.scale(g, 0.5)?;
            let on_tie = e.select_or_zero(tie, half)?;
            for (i, wins) in [wins_a, wins_b].into_iter().enumerate() {
                if needs[i] {
                    let c = e.op(wins, &[a, b])?;
                    out[i] = Some(e.select(c, g, on_tie)?);
                }
            }
        }
        Op::Pow => {
            let (a, b) = (args[0], args[1]);
            if needs[0] {
                // b · a^(b-1), and 0 where b == 0 (a^(-1) may be infinite there).
                let one = e.splat_like(b, 1.0)?;
                let bm1 = e.sub(b, one)?;
                let p = e.op(Op::Pow, &[a, bm1])?;
                let d = e.mul(b, p)?;
                let gd = e.mul(g, d)?;
                let zero = e.splat_like(b, 0.0)?;
                let b_zero = e.op(Op::Eq, &[b, zero])?;
                out[0] = Some(e.select(b_zero, zero, gd)?);
            }
            if needs[1] {
                // a^b · ln a where a > 0, else 0.
                let zero = e.splat_like(a, 0.0)?;
                let pos = e.op(Op::Gt, &[a, zero])?;
                let ln = e.op(Op::Log, &[a])?;
                let gy = e.mul(g, v)?;
                let d = e.mul(gy, ln)?;
                out[1] = Some(e.select(pos, d, zero)?);
            }
        }

        // ---- ternary ------------------------------------------------------
        Op::Select => {
            let c = args[0];
            if needs[1] {
                out[1] = Some(e.select_or_zero(c, g)?);
            }
            if needs[2] {
                let z = e.splat_like(g, 0.0)?;
                out[2] = Some(e.select(c, z, g)?);
            }
        }

        // ---- reductions ---------------------------------------------------
        Op::ReduceSum { axes, .. } => {
            let x = arg(x)?;
            let shape = e.ty(x).shape;
            let kept = kept_shape(&shape, axes);
            let gk = e.reshape(g, &kept)?;
            out[0] = Some(e.broadcast(gk, &shape)?);
        }
        Op::ReduceMax { axes, .. } => {
            // Split evenly among the positions equal to the maximum.
            let x = arg(x)?;
            let ty = e.ty(x);
            let kept = kept_shape(&ty.shape, axes);
            let yk = e.reshape(v, &kept)?;
            let yb = e.broadcast(yk, &ty.shape)?;
            let at_max = e.op(Op::Eq, &[x, yb])?;
            let ones = e.cast(at_max, ty.dtype)?;
            let count = e.op(
                Op::ReduceSum {
                    axes: axes.clone(),
                    keepdims: true,
                },
                &[ones],
            )?;
            let gk = e.reshape(g, &kept)?;
            let share = e.div(gk, count)?;
            let sb = e.broadcast(share, &ty.shape)?;
            out[0] = Some(e.select_or_zero(at_max, sb)?);
        }

        // ---- movement -----------------------------------------------------
        Op::Reshape { .. } => {
            let shape = e.ty(arg(x)?).shape;
            out[0] = Some(e.reshape(g, &shape)?);
        }
        Op::Permute { perm } => {
            let mut inverse = vec![0; perm.len()];
            for (k, &p) in perm.iter().enumerate() {
                inverse[p] = k;
            }
            out[0] = Some(e.op(Op::Permute { perm: inverse }, &[g])?);
        }
        Op::Broadcast { shape } => {
            let x_shape = e.ty(arg(x)?).shape;
            let off = shape.len() - x_shape.len();
            let axes: Vec<usize> = (0..shape.len())
                .filter(|&k| k < off || (x_shape[k - off] == 1 && shape[k] != 1))
                .collect();
            let summed = if axes.is_empty() {
                g
            } else {
                e.op(
                    Op::ReduceSum {
                        axes,
                        keepdims: false,
                    },
                    &[g],
                )?
            };
            out[0] = Some(e.reshape(summed, &x_shape)?);
        }
        Op::Slice { start, end } => {
            // Pad the cotangent back with zeros, one axis at a time.
            let x_shape = e.ty(arg(x)?).shape;
            let mut cur = g;
            for k in 0..x_shape.len() {
                let (before, after) = (start[k], x_shape[k] - end[k]);
                let cur_ty = e.ty(cur);
                let zeros = |e: &mut Appender<'_>, n: usize| {
                    let mut s = cur_ty.shape.clone();
                    s[k] = n;
                    e.splat(cur_ty.with_shape(s), 0.0)
                };
                let mut parts = Vec::with_capacity(3);
                if before > 0 {
                    parts.push(zeros(e, before)?);
                }
                parts.push(cur);
                if after > 0 {
                    parts.push(zeros(e, after)?);
                }
                if parts.len() > 1 {
                    cur = e.op(Op::Concat { axis: k }, &parts)?;
                }
            }
            out[0] = Some(cur);
        }
        Op::Concat { axis } => {
            let g_shape = e.ty(g).shape;
            let mut offset = 0;
            for (i, &a) in args.iter().enumerate() {
                let len = e.ty(a).shape[*axis];
                if needs[i] {
                    let mut start = vec![0; g_shape.len()];
                    let mut end = g_shape.clone();
                    start[*axis] = offset;
                    end[*axis] = offset + len;
                    out[i] = Some(if start.iter().all(|&s| s == 0) && end == g_shape {
                        g
                    } else {
                        e.op(Op::Slice { start, end }, &[g])?
                    });
                }
                offset += len;
            }
        }

        // ---- contraction --------------------------------------------------
        Op::MatMul => {
            // y = a b with equal batch dimensions: ∂a = g bᵀ, ∂b = aᵀ g.
            let (a, b) = (args[0], args[1]);
            let r = e.ty(a).rank();
            let mut swap: Vec<usize> = (0..r).collect();
            swap.swap(r - 2, r - 1);
            if needs[0] {
                let bt = e.op(Op::Permute { perm: swap.clone() }, &[b])?;
                out[0] = Some(e.op(Op::MatMul, &[g, bt])?);
            }
            if needs[1] {
                let at = e.op(Op::Permute { perm: swap }, &[a])?;
                out[1] = Some(e.op(Op::MatMul, &[at, g])?);
            }
        }

        // ---- conversion ---------------------------------------------------
        Op::Cast { .. } => {
            let in_dtype = e.ty(arg(x)?).dtype;
            if in_dtype.is_float() {
                out[0] = Some(e.cast(g, in_dtype)?);
            }
        }

        // ---- semantic ops with a rule of their own -------------------------
        Op::Sinkhorn(spec) => {
            // Recomputes the rounds from the logits: only `x` stays alive.
            out[0] = Some(e.op(Op::SinkhornGrad(*spec), &[arg(x)?, g])?);
        }
        Op::MhcPost => {
            // One kernel computes all four cotangents, reading each token's
            // residual and cotangent once; the `get`s of operands that need
            // none are never made, so nothing reads their elements.
            let operands = [args[0], args[1], args[2], args[3], g];
            let grads = e.op(Op::MhcPostGrad, &operands)?;
            for (i, &need) in needs.iter().enumerate() {
                if need {
                    out[i] = Some(e.op(Op::Get { index: i }, &[grads])?);
                }
            }
        }

        // ---- not yet differentiable ---------------------------------------
        Op::Get { .. } => {
            let producer = e.g.node(arg(x)?).op.mnemonic();
            return Err(unsupported(producer, v));
        }
        op => return Err(unsupported(op.mnemonic(), v)),
    }
    // Drop contributions nobody asked for (cheap rules compute them anyway).
    for (o, &need) in out.iter_mut().zip(needs) {
        if !need {
            *o = None;
        }
    }
    Ok(out)
}

/// The vector-Jacobian product of a tuple-valued node `v` (`mhc_pre`) for
/// the cotangents `gs` of its elements (`None`: nobody differentiates that
/// element; a zero constant of its type goes in its place). `needs` and
/// the result are as for [`vjp`].
pub(crate) fn vjp_tuple(
    e: &mut Appender<'_>,
    v: ValueId,
    gs: &[Option<ValueId>],
    needs: &[bool],
) -> Result<Vec<Option<ValueId>>> {
    let node = e.g.node(v).clone();
    let args = node.args.clone();
    let mut out = vec![None; args.len()];
    match &node.op {
        Op::MhcPre(spec) => {
            let Type::Tuple(tys) = e.g.value_type(v).clone() else {
                return Err(unsupported(node.op.mnemonic(), v));
            };
            let mut operands = vec![args[0], args[1], args[2], args[3]];
            for (i, ty) in tys.into_iter().enumerate() {
                let g = match gs.get(i).copied().flatten() {
                    Some(g) => g,
                    None => e.op(Op::Const(Literal::splat(ty, 0.0)), &[])?,
                };
                operands.push(g);
            }
            let grads = e.op(Op::MhcPreGrad(*spec), &operands)?;
            for (i, &need) in needs.iter().enumerate() {
                if need {
                    out[i] = Some(e.op(Op::Get { index: i }, &[grads])?);
                }
            }
        }
        op => return Err(unsupported(op.mnemonic(), v)),
    }
    Ok(out)
}

fn unsupported(op: &'static str, v: ValueId) -> AutodiffError {
    AutodiffError::Unsupported {
        op,
        value: v.to_string(),
    }
}

/// The first operand; verified graphs give every non-leaf op one.
fn arg(x: Option<ValueId>) -> Result<ValueId> {
    x.ok_or_else(|| {
        AutodiffError::Build(birkhoff_ir::TypeError::Invalid {
            op: "vjp",
            message: "node has no operand".to_string(),
        })
    })
}

/// `shape` with the reduced `axes` kept as size 1.
fn kept_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .map(|(k, &d)| if axes.contains(&k) { 1 } else { d })
        .collect()
}
