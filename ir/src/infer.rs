//! Type inference: the result type of an op applied to operand types.
//!
//! This is the single definition of every op's typing rule. The graph
//! builder uses it to type new nodes and the verifier uses it to check
//! existing ones.

use crate::error::TypeError;
use crate::op::{Arity, FloatAttr, MAX_SINKHORN_ITERS, Op, PreMixSpec, SinkhornSpec};
use crate::types::{DType, MAX_RANK, TensorType, Type, num_elements};

fn invalid(op: &Op, message: impl Into<String>) -> TypeError {
    TypeError::Invalid {
        op: op.mnemonic(),
        message: message.into(),
    }
}

fn check_shape(op: &Op, shape: &[usize]) -> Result<(), TypeError> {
    if shape.len() > MAX_RANK {
        return Err(invalid(
            op,
            format!("rank {} exceeds the maximum {MAX_RANK}", shape.len()),
        ));
    }
    if shape.contains(&0) {
        return Err(invalid(op, format!("shape {shape:?} has a zero dimension")));
    }
    if num_elements(shape).is_none() {
        return Err(invalid(
            op,
            format!("shape {shape:?} has too many elements"),
        ));
    }
    Ok(())
}

fn same_type(op: &Op, a: &TensorType, b: &TensorType) -> Result<(), TypeError> {
    if a == b {
        Ok(())
    } else {
        Err(TypeError::Mismatch {
            op: op.mnemonic(),
            a: a.clone(),
            b: b.clone(),
        })
    }
}

fn check_axes(op: &Op, axes: &[usize], rank: usize) -> Result<(), TypeError> {
    if axes.is_empty() {
        return Err(invalid(op, "no axes given"));
    }
    let mut seen = vec![false; rank];
    for &a in axes {
        if a >= rank {
            return Err(invalid(
                op,
                format!("axis {a} out of range for rank {rank}"),
            ));
        }
        if std::mem::replace(&mut seen[a], true) {
            return Err(invalid(op, format!("axis {a} listed twice")));
        }
    }
    Ok(())
}

fn check_eps(op: &Op, name: &str, v: FloatAttr, allow_negative: bool) -> Result<(), TypeError> {
    let x = v.get();
    if x.is_finite() && (allow_negative || x >= 0.0) {
        Ok(())
    } else {
        // As written: an f32 op holds `-0.1` rounded to f32.
        let shown = if DType::F32.holds(x) {
            (x as f32).to_string()
        } else {
            x.to_string()
        };
        Err(invalid(
            op,
            format!(
                "{name}={shown} must be finite{}",
                if allow_negative {
                    ""
                } else {
                    " and non-negative"
                }
            ),
        ))
    }
}

fn check_sinkhorn(op: &Op, s: &SinkhornSpec) -> Result<(), TypeError> {
    if !(1..=MAX_SINKHORN_ITERS).contains(&s.iters) {
        return Err(invalid(
            op,
            format!("iters={} is outside 1..={MAX_SINKHORN_ITERS}", s.iters),
        ));
    }
    check_eps(op, "eps", s.eps, false)
}

/// The checks of a pre-mix's attributes: `norm_eps` finite and
/// non-negative, `pre_eps` and `post_mult` finite, the Sinkhorn settings.
fn check_pre_mix(op: &Op, s: &PreMixSpec) -> Result<(), TypeError> {
    check_eps(op, "norm_eps", s.norm_eps, false)?;
    check_eps(op, "pre_eps", s.pre_eps, true)?;
    check_eps(op, "post_mult", s.post_mult, true)?;
    check_sinkhorn(op, &s.sinkhorn)
}

fn float_operand<'a>(
    op: &Op,
    x: &'a TensorType,
    min_rank: usize,
) -> Result<&'a TensorType, TypeError> {
    if !x.dtype.is_float() {
        return Err(TypeError::DType {
            op: op.mnemonic(),
            dtype: x.dtype,
        });
    }
    if x.rank() < min_rank {
        return Err(invalid(op, format!("needs rank >= {min_rank}, got {x}")));
    }
    Ok(x)
}

/// The shapes of the mHC pre-mix operands: `(T, n, C)` if `x [T,n,C]`,
/// `fn [n(n+2), n·C]`, `scale [3]`, `base [n(n+2)]` all share one float dtype.
/// `(T, n, C)` of a pre-mix's residual `x [T,n,C]`, checked small enough
/// that `n(n+2)` mixes, `n·C` rows and `comb_mix [T,n,n]` do not overflow.
fn residual_dims(op: &Op, x: &TensorType) -> Result<(usize, usize, usize), TypeError> {
    let x = float_operand(op, x, 3)?;
    if x.rank() != 3 {
        return Err(invalid(op, format!("residual must be [T,n,C], got {x}")));
    }
    let (t, n, c) = (x.shape[0], x.shape[1], x.shape[2]);
    // A residual with absurd dimensions is an error here, not an overflow.
    if n.checked_add(2).and_then(|a| a.checked_mul(n)).is_none() || n.checked_mul(c).is_none() {
        return Err(invalid(op, format!("residual {x} is too large to mix")));
    }
    // comb_mix [T,n,n] may be larger than the residual itself.
    check_shape(op, &[t, n, n])?;
    check_shape(op, &[t, n * (n + 2)])?;
    Ok((t, n, c))
}

/// The type of `mhc_project`'s result for residual `x` (`[T, m]`, `f32`
/// for `bf16`: the product is not rounded before it is scaled).
fn project_type(x: &TensorType, t: usize, m: usize) -> TensorType {
    let dtype = if x.dtype == DType::Bf16 {
        DType::F32
    } else {
        x.dtype
    };
    TensorType::new(dtype, [t, m])
}

/// `mhc_project`'s result type: `(x [T,n,C], fn [m,nC])` to `[T, m]`.
fn mhc_project_type(op: &Op, args: &[&TensorType]) -> Result<TensorType, TypeError> {
    let (t, n, c) = residual_dims(op, args[0])?;
    let w = args[1];
    if w.dtype != args[0].dtype || w.rank() != 2 || w.shape[1] != n * c {
        return Err(invalid(
            op,
            format!(
                "fn must be {}, got {w}",
                args[0].with_shape([n * (n + 2), n * c])
            ),
        ));
    }
    check_shape(op, &[t, w.shape[0]])?;
    Ok(project_type(args[0], t, w.shape[0]))
}

fn mhc_pre_dims(op: &Op, args: &[&TensorType]) -> Result<(usize, usize, usize), TypeError> {
    let (t, n, c) = residual_dims(op, args[0])?;
    let x = args[0];
    let (m, k) = (n * (n + 2), n * c);
    let want = [vec![m, k], vec![3], vec![m]];
    for (i, (a, w)) in args[1..].iter().zip(want).enumerate() {
        if a.dtype != x.dtype || a.shape != w {
            let name = ["fn", "scale", "base"][i];
            return Err(invalid(
                op,
                format!("{name} must be {}, got {a}", x.with_shape(w)),
            ));
        }
    }
    Ok((t, n, c))
}

/// The result type of a post-mix on `(layer_output [T,C], residual [T,n,C],
/// post_mix [T,n], comb_mix [T,n,n])` of one float dtype: the residual's.
/// `op` (`mhc_post`, or `mhc_post_grad`, which takes these operands first)
/// names the errors.
fn mhc_post_type(op: &Op, args: &[&TensorType]) -> Result<TensorType, TypeError> {
    let x = float_operand(op, args[1], 3)?;
    if x.rank() != 3 {
        return Err(invalid(op, format!("residual must be [T,n,C], got {x}")));
    }
    let (t, n, c) = (x.shape[0], x.shape[1], x.shape[2]);
    let want = [
        ("layer_output", vec![t, c]),
        ("post_mix", vec![t, n]),
        ("comb_mix", vec![t, n, n]),
    ];
    for (a, (name, w)) in [args[0], args[2], args[3]].into_iter().zip(want) {
        if a.dtype != x.dtype || a.shape != w {
            return Err(invalid(
                op,
                format!("{name} must be {}, got {a}", x.with_shape(w)),
            ));
        }
    }
    Ok(x.clone())
}

/// The type of any op applied to operands of types `args` — tuples
/// included — or why it is ill-typed. Never panics.
pub fn infer(op: &Op, args: &[&Type]) -> Result<Type, TypeError> {
    if let Op::Get { index } = op {
        return match args {
            [Type::Tuple(ts)] => ts.get(*index).cloned().map(Type::Tensor).ok_or_else(|| {
                invalid(
                    op,
                    format!("index {index} out of range for a tuple of {}", ts.len()),
                )
            }),
            [t] => Err(invalid(op, format!("operand must be a tuple, got {t}"))),
            _ => Err(TypeError::Arity {
                op: op.mnemonic(),
                expected: "1".into(),
                got: args.len(),
            }),
        };
    }
    let tensors = args
        .iter()
        .map(|a| {
            a.as_tensor().ok_or_else(|| {
                invalid(op, format!("operand is a tuple {a}; only get takes tuples"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    match op {
        Op::MhcPreProjected(spec) => {
            if tensors.len() != 4 {
                return Err(TypeError::Arity {
                    op: op.mnemonic(),
                    expected: "4".into(),
                    got: tensors.len(),
                });
            }
            check_pre_mix(op, spec)?;
            let (t, n, c) = residual_dims(op, tensors[0])?;
            let m = n * (n + 2);
            let mixes = project_type(tensors[0], t, m);
            if *tensors[1] != mixes {
                return Err(invalid(
                    op,
                    format!("mixes must be {mixes}, got {}", tensors[1]),
                ));
            }
            let x = tensors[0];
            for (a, w, name) in [
                (tensors[2], vec![3], "scale"),
                (tensors[3], vec![m], "base"),
            ] {
                if a.dtype != x.dtype || a.shape != w {
                    return Err(invalid(
                        op,
                        format!("{name} must be {}, got {a}", x.with_shape(w)),
                    ));
                }
            }
            Ok(Type::Tuple(vec![
                x.with_shape([t, c]),
                x.with_shape([t, n]),
                x.with_shape([t, n, n]),
            ]))
        }
        Op::MhcPre(_) | Op::HcPre { .. } => {
            if tensors.len() != 4 {
                return Err(TypeError::Arity {
                    op: op.mnemonic(),
                    expected: "4".into(),
                    got: tensors.len(),
                });
            }
            match op {
                Op::MhcPre(spec) => check_pre_mix(op, spec)?,
                Op::HcPre { norm_eps } => check_eps(op, "norm_eps", *norm_eps, false)?,
                _ => {}
            }
            let (t, n, c) = mhc_pre_dims(op, &tensors)?;
            let x = tensors[0];
            Ok(Type::Tuple(vec![
                x.with_shape([t, c]),
                x.with_shape([t, n]),
                x.with_shape([t, n, n]),
            ]))
        }
        Op::MhcPreGrad(spec) => {
            if tensors.len() != 7 {
                return Err(TypeError::Arity {
                    op: op.mnemonic(),
                    expected: "7".into(),
                    got: tensors.len(),
                });
            }
            check_pre_mix(op, spec)?;
            // The first four operands are mhc_pre's, the rest have its
            // result types.
            let (t, n, c) = mhc_pre_dims(op, &tensors[..4])?;
            let x = tensors[0];
            let want = [
                ("d_layer_input", x.with_shape([t, c])),
                ("d_post", x.with_shape([t, n])),
                ("d_comb", x.with_shape([t, n, n])),
            ];
            for (a, (name, w)) in tensors[4..].iter().zip(want) {
                if **a != w {
                    return Err(invalid(op, format!("{name} must be {w}, got {a}")));
                }
            }
            Ok(Type::Tuple(vec![
                x.clone(),
                tensors[1].clone(),
                tensors[2].clone(),
                tensors[3].clone(),
            ]))
        }
        Op::MhcPostGrad => {
            if tensors.len() != 5 {
                return Err(TypeError::Arity {
                    op: op.mnemonic(),
                    expected: "5".into(),
                    got: tensors.len(),
                });
            }
            // The first four operands are mhc_post's, d_out has its result type.
            let out = mhc_post_type(op, &tensors[..4])?;
            if tensors[4] != &out {
                return Err(invalid(
                    op,
                    format!("d_out must be {out}, got {}", tensors[4]),
                ));
            }
            let (t, n, c) = (out.shape[0], out.shape[1], out.shape[2]);
            Ok(Type::Tuple(vec![
                out.with_shape([t, c]),
                out.clone(),
                out.with_shape([t, n]),
                out.with_shape([t, n, n]),
            ]))
        }
        _ => infer_type(op, &tensors).map(Type::Tensor),
    }
}

/// The type of `op` applied to operands of types `args`, or why it is
/// ill-typed. Never panics. Ops whose result is a tuple (and `get`) need
/// [`infer`].
pub fn infer_type(op: &Op, args: &[&TensorType]) -> Result<TensorType, TypeError> {
    let arity_ok = match op.arity() {
        Arity::Fixed(n) => args.len() == n,
        Arity::Variadic => !args.is_empty(),
    };
    if !arity_ok {
        let expected = match op.arity() {
            Arity::Fixed(n) => n.to_string(),
            Arity::Variadic => "at least 1".to_string(),
        };
        return Err(TypeError::Arity {
            op: op.mnemonic(),
            expected,
            got: args.len(),
        });
    }
    let dtype_err = |d: DType| TypeError::DType {
        op: op.mnemonic(),
        dtype: d,
    };

    match op {
        Op::Input { ty, .. } => {
            check_shape(op, &ty.shape)?;
            Ok(ty.clone())
        }
        Op::Const(lit) => {
            check_shape(op, &lit.ty().shape)?;
            Ok(lit.ty().clone())
        }
        Op::Iota { axis, ty } => {
            check_shape(op, &ty.shape)?;
            if !ty.dtype.is_numeric() {
                return Err(dtype_err(ty.dtype));
            }
            if *axis >= ty.rank() {
                return Err(invalid(op, format!("axis {axis} out of range for {ty}")));
            }
            Ok(ty.clone())
        }
        _ if op.is_unary() => {
            let x = args[0];
            let ok = if op.is_logical() {
                x.dtype == DType::Bool
            } else if op.needs_float() {
                x.dtype.is_float()
            } else {
                x.dtype.is_numeric()
            };
            if ok {
                Ok(x.clone())
            } else {
                Err(dtype_err(x.dtype))
            }
        }
        _ if op.is_binary() => {
            let (a, b) = (args[0], args[1]);
            same_type(op, a, b)?;
            let ok = if op.is_logical() {
                a.dtype == DType::Bool
            } else if matches!(op, Op::Eq | Op::Ne) {
                true
            } else if op.needs_float() {
                a.dtype.is_float()
            } else {
                a.dtype.is_numeric()
            };
            if !ok {
                return Err(dtype_err(a.dtype));
            }
            Ok(if op.is_comparison() {
                a.with_dtype(DType::Bool)
            } else {
                a.clone()
            })
        }
        Op::Select => {
            let (c, a, b) = (args[0], args[1], args[2]);
            if c.dtype != DType::Bool {
                return Err(invalid(op, format!("condition must be bool, got {c}")));
            }
            same_type(op, a, b)?;
            if c.shape != a.shape {
                return Err(invalid(
                    op,
                    format!("condition {c} does not match operands {a}"),
                ));
            }
            Ok(a.clone())
        }
        Op::ReduceSum { axes, keepdims } | Op::ReduceMax { axes, keepdims } => {
            let x = args[0];
            if !x.dtype.is_numeric() {
                return Err(dtype_err(x.dtype));
            }
            check_axes(op, axes, x.rank())?;
            let shape = (0..x.rank())
                .filter_map(|i| match (axes.contains(&i), keepdims) {
                    (false, _) => Some(x.shape[i]),
                    (true, true) => Some(1),
                    (true, false) => None,
                })
                .collect::<Vec<_>>();
            Ok(x.with_shape(shape))
        }
        Op::Reshape { shape } => {
            let x = args[0];
            check_shape(op, shape)?;
            if num_elements(shape) != num_elements(&x.shape) {
                return Err(invalid(
                    op,
                    format!("cannot reshape {x} to {:?}: element counts differ", shape),
                ));
            }
            Ok(x.with_shape(shape.clone()))
        }
        Op::Permute { perm } => {
            let x = args[0];
            let mut seen = vec![false; x.rank()];
            let valid = perm.len() == x.rank()
                && perm
                    .iter()
                    .all(|&p| p < x.rank() && !std::mem::replace(&mut seen[p], true));
            if !valid {
                return Err(invalid(
                    op,
                    format!("{perm:?} is not a permutation of the axes of {x}"),
                ));
            }
            Ok(x.with_shape(perm.iter().map(|&p| x.shape[p]).collect::<Vec<_>>()))
        }
        Op::Broadcast { shape } => {
            let x = args[0];
            check_shape(op, shape)?;
            let offset = shape.len().checked_sub(x.rank());
            let fits = offset.is_some_and(|off| {
                x.shape
                    .iter()
                    .enumerate()
                    .all(|(i, &d)| d == 1 || d == shape[off + i])
            });
            if !fits {
                return Err(invalid(op, format!("cannot broadcast {x} to {shape:?}")));
            }
            Ok(x.with_shape(shape.clone()))
        }
        Op::Slice { start, end } => {
            let x = args[0];
            if start.len() != x.rank() || end.len() != x.rank() {
                return Err(invalid(
                    op,
                    format!("start/end need {} entries for {x}", x.rank()),
                ));
            }
            let mut shape = Vec::with_capacity(x.rank());
            for k in 0..x.rank() {
                if !(start[k] < end[k] && end[k] <= x.shape[k]) {
                    return Err(invalid(
                        op,
                        format!(
                            "axis {k}: range {}..{} is empty or outside 0..{}",
                            start[k], end[k], x.shape[k]
                        ),
                    ));
                }
                shape.push(end[k] - start[k]);
            }
            Ok(x.with_shape(shape))
        }
        Op::Concat { axis } => {
            let first = args[0];
            if *axis >= first.rank() {
                return Err(invalid(op, format!("axis {axis} out of range for {first}")));
            }
            let mut total = 0usize;
            for a in args {
                let same_elsewhere = a.dtype == first.dtype
                    && a.rank() == first.rank()
                    && (0..a.rank()).all(|k| k == *axis || a.shape[k] == first.shape[k]);
                if !same_elsewhere {
                    return Err(TypeError::Mismatch {
                        op: op.mnemonic(),
                        a: first.clone(),
                        b: (*a).clone(),
                    });
                }
                total = total.saturating_add(a.shape[*axis]);
            }
            let mut shape = first.shape.clone();
            shape[*axis] = total;
            check_shape(op, &shape)?;
            Ok(first.with_shape(shape))
        }
        Op::MatMul => {
            let (a, b) = (args[0], args[1]);
            if a.dtype != b.dtype {
                return Err(TypeError::Mismatch {
                    op: op.mnemonic(),
                    a: a.clone(),
                    b: b.clone(),
                });
            }
            if !a.dtype.is_numeric() {
                return Err(dtype_err(a.dtype));
            }
            let r = a.rank();
            if r < 2
                || b.rank() != r
                || a.shape[..r - 2] != b.shape[..r - 2]
                || a.shape[r - 1] != b.shape[r - 2]
            {
                return Err(invalid(
                    op,
                    format!(
                        "cannot multiply {a} by {b}: need [...,M,K] x [...,K,N] with equal batch dimensions"
                    ),
                ));
            }
            let mut shape = a.shape.clone();
            shape[r - 1] = b.shape[r - 1];
            Ok(a.with_shape(shape))
        }
        Op::Cast { dtype } => Ok(args[0].with_dtype(*dtype)),
        Op::RowNorm { eps } | Op::RmsNorm { eps } => {
            check_eps(op, "eps", *eps, false)?;
            Ok(float_operand(op, args[0], 1)?.clone())
        }
        Op::ColNorm { eps } => {
            check_eps(op, "eps", *eps, false)?;
            Ok(float_operand(op, args[0], 2)?.clone())
        }
        Op::Softmax { axis } => {
            let x = float_operand(op, args[0], 1)?;
            if *axis >= x.rank() {
                return Err(invalid(op, format!("axis {axis} out of range for {x}")));
            }
            Ok(x.clone())
        }
        Op::Sinkhorn(spec) => {
            check_sinkhorn(op, spec)?;
            let x = float_operand(op, args[0], 2)?;
            let r = x.rank();
            if x.shape[r - 1] != x.shape[r - 2] {
                return Err(invalid(
                    op,
                    format!("needs square [..., n, n] matrices, got {x}"),
                ));
            }
            Ok(x.clone())
        }
        Op::SinkhornGrad(spec) => {
            check_sinkhorn(op, spec)?;
            let x = float_operand(op, args[0], 2)?;
            let r = x.rank();
            if x.shape[r - 1] != x.shape[r - 2] {
                return Err(invalid(
                    op,
                    format!("needs square [..., n, n] matrices, got {x}"),
                ));
            }
            // The cotangent has the type of the output, which is x's.
            if args[1] != x {
                return Err(TypeError::Mismatch {
                    op: op.mnemonic(),
                    a: x.clone(),
                    b: args[1].clone(),
                });
            }
            Ok(x.clone())
        }
        Op::MhcPost => mhc_post_type(op, args),
        Op::MhcProject => mhc_project_type(op, args),
        Op::MhcPre(_)
        | Op::HcPre { .. }
        | Op::MhcPreProjected(_)
        | Op::MhcPostGrad
        | Op::MhcPreGrad(_)
        | Op::Get { .. } => Err(invalid(op, "has a tuple result or operand; use infer")),
        _ => Err(invalid(op, "no typing rule (internal error)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::literal::Literal;

    fn t(d: DType, s: &[usize]) -> TensorType {
        TensorType::new(d, s)
    }

    #[test]
    fn elementwise_rules() {
        let f = t(DType::F32, &[2, 3]);
        assert_eq!(infer_type(&Op::Add, &[&f, &f]), Ok(f.clone()));
        assert_eq!(infer_type(&Op::Lt, &[&f, &f]).unwrap().dtype, DType::Bool);
        let i = t(DType::I32, &[2, 3]);
        assert!(matches!(
            infer_type(&Op::Exp, &[&i]),
            Err(TypeError::DType { .. })
        ));
        assert!(matches!(
            infer_type(&Op::Add, &[&f, &i]),
            Err(TypeError::Mismatch { .. })
        ));
        assert!(matches!(
            infer_type(&Op::Add, &[&f]),
            Err(TypeError::Arity { .. })
        ));
        let b = t(DType::Bool, &[2, 3]);
        assert_eq!(infer_type(&Op::Select, &[&b, &f, &f]), Ok(f.clone()));
        assert!(infer_type(&Op::Select, &[&f, &f, &f]).is_err());
        assert!(infer_type(&Op::Not, &[&f]).is_err());
    }

    #[test]
    fn shape_rules() {
        let x = t(DType::F32, &[2, 3, 4]);
        let sum = Op::ReduceSum {
            axes: vec![2, 0],
            keepdims: false,
        };
        assert_eq!(infer_type(&sum, &[&x]).unwrap().shape, vec![3]);
        let keep = Op::ReduceMax {
            axes: vec![1],
            keepdims: true,
        };
        assert_eq!(infer_type(&keep, &[&x]).unwrap().shape, vec![2, 1, 4]);
        assert!(
            infer_type(
                &Op::ReduceSum {
                    axes: vec![1, 1],
                    keepdims: false
                },
                &[&x]
            )
            .is_err()
        );
        assert!(
            infer_type(
                &Op::ReduceSum {
                    axes: vec![3],
                    keepdims: false
                },
                &[&x]
            )
            .is_err()
        );
        assert_eq!(
            infer_type(
                &Op::Permute {
                    perm: vec![2, 0, 1]
                },
                &[&x]
            )
            .unwrap()
            .shape,
            vec![4, 2, 3]
        );
        assert!(
            infer_type(
                &Op::Permute {
                    perm: vec![0, 0, 1]
                },
                &[&x]
            )
            .is_err()
        );
        assert!(infer_type(&Op::Reshape { shape: vec![6, 4] }, &[&x]).is_ok());
        assert!(infer_type(&Op::Reshape { shape: vec![5, 4] }, &[&x]).is_err());
        let row = t(DType::F32, &[3, 1]);
        assert!(
            infer_type(
                &Op::Broadcast {
                    shape: vec![2, 3, 4]
                },
                &[&row]
            )
            .is_ok()
        );
        assert!(
            infer_type(
                &Op::Broadcast {
                    shape: vec![2, 4, 4]
                },
                &[&row]
            )
            .is_err()
        );
        let s = Op::Slice {
            start: vec![0, 1, 0],
            end: vec![2, 3, 4],
        };
        assert_eq!(infer_type(&s, &[&x]).unwrap().shape, vec![2, 2, 4]);
        assert!(
            infer_type(
                &Op::Slice {
                    start: vec![0, 3, 0],
                    end: vec![2, 3, 4]
                },
                &[&x]
            )
            .is_err()
        );
        let y = t(DType::F32, &[2, 5, 4]);
        assert_eq!(
            infer_type(&Op::Concat { axis: 1 }, &[&x, &y])
                .unwrap()
                .shape,
            vec![2, 8, 4]
        );
        assert!(infer_type(&Op::Concat { axis: 0 }, &[&x, &y]).is_err());
    }

    #[test]
    fn matmul_and_leaves() {
        let a = t(DType::F32, &[5, 2, 3]);
        let b = t(DType::F32, &[5, 3, 7]);
        assert_eq!(
            infer_type(&Op::MatMul, &[&a, &b]).unwrap().shape,
            vec![5, 2, 7]
        );
        assert!(infer_type(&Op::MatMul, &[&b, &a]).is_err());
        assert!(infer_type(&Op::MatMul, &[&t(DType::F32, &[3]), &t(DType::F32, &[3])]).is_err());
        let iota = Op::Iota {
            axis: 2,
            ty: t(DType::I32, &[2, 2]),
        };
        assert!(infer_type(&iota, &[]).is_err());
        let huge = Op::Const(Literal::splat(t(DType::F32, &[1 << 30, 1 << 30]), 0.0));
        assert!(infer_type(&huge, &[]).is_err());
        let zero = Op::Const(Literal::splat(t(DType::F32, &[0]), 0.0));
        assert!(infer_type(&zero, &[]).is_err());
    }
}
