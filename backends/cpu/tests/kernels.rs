//! Hand-written kernel programs, each compared with the kernel interpreter
//! (the f64 oracle) under several option sets: one and three threads,
//! checked mode, and scalar code without fused multiply-adds.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use birkhoff_cpu::{CpuError, CpuOptions, ElementsMut, ElementsRef, TensorMut, TensorRef, compile};
use birkhoff_ir::kernel::{
    BufferId, BufferKind, Expr, Gemm, Index, Kernel, LocalId, LoopKind, Matrix, Program,
    ScalarType, Stmt,
};
use birkhoff_ir::tolerance::{Tolerance, close};
use birkhoff_ir::{DType, Op, Tensor, TensorData};
use common::*;

const KINDS: [LoopKind; 3] = [LoopKind::Serial, LoopKind::Parallel, LoopKind::Vector];
const EXTENTS: [usize; 8] = [1, 2, 3, 4, 5, 8, 13, 37];

type BodyFn = dyn Fn(Expr, Expr) -> Expr;

fn st_of(d: DType) -> ScalarType {
    ScalarType::of(d)
}

/// `y[i] = f(a[i], b[i])` over `n` elements of `dtype` with a loop of `kind`.
fn elementwise(
    name: &str,
    dtype: DType,
    out: DType,
    n: usize,
    kind: LoopKind,
    f: &dyn Fn(Expr, Expr) -> Expr,
) -> Program {
    let mut kern = Kernel::new(format!("k0_{name}"));
    let i = kern.var(ScalarType::Index);
    kern.body = vec![lp(
        i,
        n,
        kind,
        vec![st(2, ix(i), f(ld(0, ix(i)), ld(1, ix(i))))],
    )];
    program(
        name,
        vec![
            buf("a", dtype, &[n], BufferKind::Input),
            buf("b", dtype, &[n], BufferKind::Input),
            buf("y", out, &[n], BufferKind::Output),
        ],
        vec![kern],
    )
}

fn assert_vectorized(p: &Program, lanes: usize) {
    let exe = compile(p, &CpuOptions::default()).unwrap();
    let stats = exe.kernel_stats();
    let extent = match &p.kernels[0].body[0] {
        Stmt::Loop { extent, kind, .. } if *kind == LoopKind::Vector => *extent,
        _ => return,
    };
    if extent >= lanes {
        assert_eq!(
            stats[0].vector_loops, 1,
            "{}: {:?}\n{exe}",
            p.name, stats[0].scalar_vector_loops
        );
    }
}

fn unary_ops(d: DType) -> Vec<Op> {
    use Op::*;
    match d {
        DType::Bool => vec![Not],
        DType::I32 => vec![Neg, Abs],
        _ => vec![Neg, Abs, Exp, Log, Sqrt, Rsqrt, Recip, Sigmoid, Tanh],
    }
}

fn binary_ops(d: DType) -> Vec<Op> {
    use Op::*;
    match d {
        DType::Bool => vec![And, Or, Eq, Ne],
        DType::I32 => vec![Add, Sub, Mul, Max, Min, Eq, Ne, Lt, Le, Gt, Ge],
        _ => vec![Add, Sub, Mul, Div, Max, Min, Pow, Eq, Ne, Lt, Le, Gt, Ge],
    }
}

#[test]
fn every_elementwise_op_on_every_type_and_loop_kind() {
    for d in [DType::F32, DType::F64, DType::I32, DType::Bool] {
        let lanes = if d == DType::F64 { 2 } else { 4 };
        let mut cases: Vec<(String, DType, Box<BodyFn>)> = Vec::new();
        for op in unary_ops(d) {
            cases.push((
                op.mnemonic().to_string(),
                d,
                Box::new(move |a, _| un(op.clone(), a)),
            ));
        }
        for op in binary_ops(d) {
            let out = if op.is_comparison() { DType::Bool } else { d };
            cases.push((
                op.mnemonic().to_string(),
                out,
                Box::new(move |a, b| bin(op.clone(), a, b)),
            ));
        }
        for (name, out, f) in &cases {
            for kind in KINDS {
                let extents: &[usize] = if kind == LoopKind::Vector {
                    &EXTENTS
                } else {
                    &[1, 7]
                };
                for &n in extents {
                    let p = elementwise(&format!("{name}_{d}_{n}"), d, *out, n, kind, f);
                    for seed in 0..2 {
                        check(&p, &inputs(&p, seed, seed == 1));
                    }
                    assert_vectorized(&p, lanes);
                }
            }
        }
    }
}

#[test]
fn pow_with_constant_exponents_matches_libm_pow_on_special_values() {
    for d in [DType::F32, DType::F64] {
        for e in [0.0, 1.0, 2.0, 3.0, -1.0, -2.0, 0.5, -0.5, 1.5] {
            for kind in [LoopKind::Serial, LoopKind::Vector] {
                let p = elementwise(&format!("pow_{e}_{d}"), d, d, 13, kind, &|a, _| {
                    bin(Op::Pow, a, k(st_of(d), e))
                });
                for seed in 0..3 {
                    check(&p, &inputs(&p, seed, true));
                }
            }
        }
    }
}

#[test]
fn casts_between_every_pair_of_types() {
    use ScalarType as S;
    let types = [S::F32, S::F64, S::I32, S::Bool];
    for from in types {
        for to in types {
            for kind in KINDS {
                for n in [1, 5, 12] {
                    let d = from.dtype().unwrap();
                    let out = to.dtype().unwrap();
                    let p = elementwise(&format!("cast_{d}_{out}"), d, out, n, kind, &|a, _| {
                        Expr::Cast {
                            to,
                            arg: Box::new(a),
                        }
                    });
                    for seed in 0..2 {
                        check(&p, &inputs(&p, seed, seed == 1));
                    }
                }
            }
        }
        // From a loop index.
        for kind in KINDS {
            let to = from;
            let d = to.dtype().unwrap();
            let mut kern = Kernel::new("k0_iota");
            let i = kern.var(ScalarType::Index);
            let cast = Expr::Cast {
                to,
                arg: Box::new(Expr::Var(i)),
            };
            kern.body = vec![lp(i, 11, kind, vec![st(0, ix(i), cast)])];
            let p = program(
                &format!("iota_{d}"),
                vec![buf("y", d, &[11], BufferKind::Output)],
                vec![kern],
            );
            check(&p, &BTreeMap::new());
        }
    }
}

#[test]
fn bf16_stores_round_to_nearest_even_exactly() {
    // f32 inputs, including NaN, infinities, subnormals and f32::MAX, stored
    // as bf16: the result must be bit-exact (one rounding either way).
    for kind in KINDS {
        for n in [1, 4, 9, 64] {
            let p = elementwise("to_bf16", DType::F32, DType::Bf16, n, kind, &|a, _| a);
            for seed in 0..4 {
                let xs = inputs(&p, seed, seed % 2 == 1);
                check_with(&p, &xs, &option_sets(), &|_| Tolerance::EXACT);
            }
            assert_vectorized(&p, 4);
            // bf16 in, arithmetic, bf16 out: x * 3 is exact in f32, so the
            // only rounding is the store's.
            let p = elementwise(
                "bf16_times_3",
                DType::Bf16,
                DType::Bf16,
                n,
                kind,
                &|a, _| bin(Op::Mul, a, k(ScalarType::F32, 3.0)),
            );
            for seed in 0..4 {
                let xs = inputs(&p, seed, seed % 2 == 1);
                check_with(&p, &xs, &option_sets(), &|_| Tolerance::EXACT);
            }
            assert_vectorized(&p, 4);
        }
    }
    // Ties: 1 + 2^-8 rounds down to 1 (even), 1 + 3·2^-8 up to 1 + 2^-6.
    let p = elementwise(
        "ties",
        DType::F32,
        DType::Bf16,
        4,
        LoopKind::Vector,
        &|a, _| a,
    );
    let t = |v: Vec<f32>| Tensor::new([4], TensorData::F32(v)).unwrap();
    let x = t(vec![
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 256.0,
        -(1.0 + 1.0 / 256.0),
        2.5,
    ]);
    let xs = BTreeMap::from([("a".to_string(), x.clone()), ("b".to_string(), x)]);
    let out = compile(&p, &CpuOptions::default())
        .unwrap()
        .run(&xs)
        .unwrap();
    assert_eq!(
        out[0].1.to_f64_vec(),
        vec![1.0, 1.0 + 4.0 / 256.0, -1.0, 2.5]
    );
}

#[test]
fn select_with_varying_and_uniform_conditions() {
    for d in [DType::F32, DType::F64, DType::I32, DType::Bool] {
        for kind in KINDS {
            for n in [1, 6, 16] {
                let p = elementwise(&format!("select_{d}"), d, d, n, kind, &|a, b| {
                    Expr::Select {
                        cond: Box::new(bin(Op::Eq, a.clone(), b.clone())),
                        then: Box::new(a),
                        otherwise: Box::new(b),
                    }
                });
                check(&p, &inputs(&p, 3, false));
                // A condition that is the same in every lane: b[0] != b[0] is false
                // unless NaN.
                let p = elementwise(&format!("select_uniform_{d}"), d, d, n, kind, &|a, b| {
                    let b0 = ld(1, Index::constant(0));
                    Expr::Select {
                        cond: Box::new(bin(Op::Eq, b0.clone(), b0)),
                        then: Box::new(a),
                        otherwise: Box::new(b),
                    }
                });
                check(&p, &inputs(&p, 4, true));
            }
        }
    }
}

/// `y[r, j] = local[C-1-j]` after `local[j] = x[r, j] * 2`: scratch arrays
/// private to each row, written in one loop and read reversed (a gather).
#[test]
fn locals_are_private_per_parallel_iteration() {
    for d in [DType::F32, DType::F64, DType::I32] {
        for (rows, cols) in [(1, 1), (3, 5), (7, 8), (16, 13)] {
            for kind in [LoopKind::Serial, LoopKind::Vector] {
                let t = st_of(d);
                let mut kern = Kernel::new("k0_locals");
                let (r, j, jj) = (
                    kern.var(ScalarType::Index),
                    kern.var(ScalarType::Index),
                    kern.var(ScalarType::Index),
                );
                let l = kern.local(t, cols);
                let row = |v| Index::var(r, cols as i64).plus(v, 1);
                kern.body = vec![lp(
                    r,
                    rows,
                    LoopKind::Parallel,
                    vec![
                        lp(
                            j,
                            cols,
                            kind,
                            vec![Stmt::LocalStore {
                                local: l,
                                index: ix(j),
                                value: bin(Op::Mul, ld(0, row(j)), k(t, 2.0)),
                            }],
                        ),
                        lp(
                            jj,
                            cols,
                            kind,
                            vec![st(
                                1,
                                row(jj),
                                Expr::LocalLoad {
                                    local: l,
                                    index: Index::var(jj, -1).shifted(cols as i64 - 1),
                                },
                            )],
                        ),
                    ],
                )];
                let p = program(
                    "locals",
                    vec![
                        buf("x", d, &[rows, cols], BufferKind::Input),
                        buf("y", d, &[rows, cols], BufferKind::Output),
                    ],
                    vec![kern],
                );
                check(&p, &inputs(&p, 5, false));
            }
        }
    }
}

/// Row reductions `y[r] = acc(x[r, :])` with sum, max and min
/// accumulators, and a dot product `acc + x·w`.
#[test]
fn accumulators_sum_max_min_and_dot() {
    for d in [DType::F32, DType::F64, DType::I32] {
        let t = st_of(d);
        for (op, init) in [
            (Op::Add, 0.0),
            (Op::Max, f64::NEG_INFINITY),
            (Op::Min, f64::INFINITY),
            (Op::Mul, 0.0), // acc + x * w
        ] {
            let init = if d == DType::I32 && init.is_infinite() {
                if init > 0.0 {
                    f64::from(i32::MAX)
                } else {
                    f64::from(i32::MIN)
                }
            } else {
                init
            };
            for cols in EXTENTS.into_iter().chain([16, 100, 1000]) {
                for kind in [LoopKind::Vector, LoopKind::Serial] {
                    let rows = 5;
                    let mut kern = Kernel::new("k0_reduce");
                    let (r, j, acc) = (
                        kern.var(ScalarType::Index),
                        kern.var(ScalarType::Index),
                        kern.var(t),
                    );
                    let x = ld(0, Index::var(r, cols as i64).plus(j, 1));
                    let update = match op {
                        Op::Mul => bin(Op::Add, Expr::Var(acc), bin(Op::Mul, x, ld(1, ix(j)))),
                        Op::Max => bin(Op::Max, x, Expr::Var(acc)),
                        _ => bin(op.clone(), Expr::Var(acc), x),
                    };
                    kern.body = vec![lp(
                        r,
                        rows,
                        LoopKind::Parallel,
                        vec![
                            set(acc, k(t, init)),
                            lp(j, cols, kind, vec![set(acc, update)]),
                            st(2, ix(r), Expr::Var(acc)),
                        ],
                    )];
                    let p = program(
                        &format!("reduce_{}_{d}_{cols}", op.mnemonic()),
                        vec![
                            buf("x", d, &[rows, cols], BufferKind::Input),
                            buf("w", d, &[cols], BufferKind::Input),
                            buf("y", d, &[rows], BufferKind::Output),
                        ],
                        vec![kern],
                    );
                    let mut xs = inputs(&p, cols as u64, false);
                    check_reduction(&p, &xs);
                    if kind == LoopKind::Vector {
                        assert_vectorized(&p, if d == DType::F64 { 2 } else { 4 });
                    }
                    if d != DType::I32 && op != Op::Mul {
                        // A NaN in row 1 and an infinity in row 3 propagate.
                        let mut v = xs["x"].to_f64_vec();
                        v[cols + cols / 2] = f64::NAN;
                        v[3 * cols + cols / 3] = f64::INFINITY;
                        let ty = xs["x"].ty().clone();
                        xs.insert("x".into(), Tensor::from_f64(ty, &v).unwrap());
                        check_reduction(&p, &xs);
                    }
                }
            }
        }
    }
}

fn gemm_program(d: DType, batch: usize, transpose_b: bool, accumulate: bool) -> Program {
    let (m, n, kk) = (5, 7, 9);
    let mat = |buf: u32, rs: usize, cs: usize, bs: usize, offset: usize| Matrix {
        buf: BufferId(buf),
        offset,
        row_stride: rs,
        col_stride: cs,
        batch_stride: bs,
    };
    let b = if transpose_b {
        mat(1, 1, kk, n * kk, 0)
    } else {
        mat(1, n, 1, n * kk, 0)
    };
    // c is a strided window: rows of 10 with 1 column of padding in front.
    let c = mat(2, 10, 1, m * 10, 1);
    let mut body = Vec::new();
    let mut kern = Kernel::new("k0_init");
    if accumulate {
        let i = kern.var(ScalarType::Index);
        kern.body = vec![lp(
            i,
            batch * m * 10,
            LoopKind::Parallel,
            vec![st(2, ix(i), k(st_of(d), 0.5))],
        )];
        body.push(kern);
    }
    let mut g = Kernel::new("k1_gemm");
    g.body = vec![Stmt::Gemm(Gemm {
        m,
        n,
        k: kk,
        batch,
        a: mat(0, kk, 1, m * kk, 0),
        b,
        c,
        accumulate,
        row_sumsq: None,
    })];
    body.push(g);
    program(
        "gemm",
        vec![
            buf("a", d, &[batch, m, kk], BufferKind::Input),
            buf("b", d, &[batch, kk, n], BufferKind::Input),
            buf("c", d, &[batch, m, 10], BufferKind::Output),
        ],
        body,
    )
}

#[test]
fn gemm_strided_batched_and_accumulating() {
    for d in [DType::F32, DType::F64] {
        for batch in [1, 3] {
            for transpose_b in [false, true] {
                for accumulate in [false, true] {
                    let p = gemm_program(d, batch, transpose_b, accumulate);
                    check_reduction(&p, &inputs(&p, 7, false));
                }
            }
        }
    }
}

#[test]
fn temporaries_constants_and_several_kernels() {
    // k0: t = a * c (constant, per dtype); k1: y = t + 1, in two segments.
    for d in [DType::F32, DType::Bf16, DType::F64, DType::I32] {
        let t = st_of(d);
        let n = 10;
        let consts: Vec<f64> = (0..n).map(|i| i as f64 - 4.0).collect();
        let mut k0 = Kernel::new("k0_scale");
        let i = k0.var(ScalarType::Index);
        k0.body = vec![lp(
            i,
            n,
            LoopKind::Vector,
            vec![st(3, ix(i), bin(Op::Mul, ld(0, ix(i)), ld(2, ix(i))))],
        )];
        let mut k1 = Kernel::new("k1_shift");
        let (i1, i2) = (k1.var(ScalarType::Index), k1.var(ScalarType::Index));
        k1.body = vec![
            lp(
                i1,
                n,
                LoopKind::Parallel,
                vec![st(1, ix(i1), bin(Op::Add, ld(3, ix(i1)), k(t, 1.0)))],
            ),
            lp(
                i2,
                n,
                LoopKind::Parallel,
                vec![st(4, ix(i2), bin(Op::Sub, ld(3, ix(i2)), k(t, 1.0)))],
            ),
        ];
        let p = program(
            "temps",
            vec![
                buf("a", d, &[n], BufferKind::Input),
                buf("y", d, &[n], BufferKind::Output),
                buf("c", d, &[n], BufferKind::Const(consts)),
                buf("t", d, &[n], BufferKind::Temp { offset: 0 }),
                buf("z", d, &[n], BufferKind::Output),
            ],
            vec![k0, k1],
        );
        check(&p, &inputs(&p, 9, false));
        let exe = compile(&p, &CpuOptions::default()).unwrap();
        assert_eq!(exe.kernel_stats()[1].segments, 2);
        // Running twice gives the same answer (the arena is reused).
        let xs = inputs(&p, 10, false);
        assert_eq!(exe.run(&xs).unwrap(), exe.run(&xs).unwrap());
    }
}

#[test]
fn bool_constants_and_top_level_sets_make_one_segment() {
    let n = 6;
    let mut kern = Kernel::new("k0_mask");
    let (v, i) = (kern.var(ScalarType::F32), kern.var(ScalarType::Index));
    kern.body = vec![
        set(v, ld(0, Index::constant(0))),
        lp(
            i,
            n,
            LoopKind::Parallel,
            vec![st(
                2,
                ix(i),
                Expr::Select {
                    cond: Box::new(ld(1, ix(i))),
                    then: Box::new(Expr::Var(v)),
                    otherwise: Box::new(ld(0, ix(i))),
                },
            )],
        ),
    ];
    let p = program(
        "mask",
        vec![
            buf("a", DType::F32, &[n], BufferKind::Input),
            buf(
                "m",
                DType::Bool,
                &[n],
                BufferKind::Const(vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0]),
            ),
            buf("y", DType::F32, &[n], BufferKind::Output),
        ],
        vec![kern],
    );
    check(&p, &inputs(&p, 11, false));
    let exe = compile(&p, &CpuOptions::default()).unwrap();
    assert_eq!(exe.kernel_stats()[0].segments, 1);
}

/// A 3-deep nest: parallel rows, serial streams, vector columns, with
/// uniform loads hoisted, strided loads, and extents that are not
/// multiples of the vector width or the thread count.
#[test]
fn nested_loops_with_uniform_and_strided_accesses() {
    for (t_, s_, c_) in [(1, 1, 1), (3, 2, 5), (5, 4, 13), (17, 3, 33), (2, 4, 64)] {
        let mut kern = Kernel::new("k0_mix");
        let (t, s, c) = (
            kern.var(ScalarType::Index),
            kern.var(ScalarType::Index),
            kern.var(ScalarType::Index),
        );
        let (w, v) = (kern.var(ScalarType::F32), kern.var(ScalarType::F32));
        let x = |c_term| {
            ld(
                0,
                Index::var(t, (s_ * c_) as i64)
                    .plus(s, c_ as i64)
                    .plus(c, c_term),
            )
        };
        // x transposed within a token: x[t, c, s] read as a gather.
        let xt = ld(
            3,
            Index::var(t, (s_ * c_) as i64)
                .plus(c, s_ as i64)
                .plus(s, 1),
        );
        kern.body = vec![lp(
            t,
            t_,
            LoopKind::Parallel,
            vec![lp(
                s,
                s_,
                LoopKind::Serial,
                vec![
                    set(w, ld(1, Index::var(t, s_ as i64).plus(s, 1))),
                    lp(
                        c,
                        c_,
                        LoopKind::Vector,
                        vec![
                            set(v, bin(Op::Mul, x(1), Expr::Var(w))),
                            st(
                                2,
                                Index::var(t, (s_ * c_) as i64)
                                    .plus(s, c_ as i64)
                                    .plus(c, 1),
                                bin(
                                    Op::Add,
                                    Expr::Var(v),
                                    bin(Op::Mul, xt, un(Op::Tanh, Expr::Var(w))),
                                ),
                            ),
                        ],
                    ),
                ],
            )],
        )];
        let p = program(
            "nest",
            vec![
                buf("x", DType::F32, &[t_, s_, c_], BufferKind::Input),
                buf("g", DType::F32, &[t_, s_], BufferKind::Input),
                buf("y", DType::F32, &[t_, s_, c_], BufferKind::Output),
                buf("xt", DType::F32, &[t_, c_, s_], BufferKind::Input),
            ],
            vec![kern],
        );
        check(&p, &inputs(&p, 12, false));
    }
}

fn scale_program() -> Program {
    elementwise(
        "scale",
        DType::F32,
        DType::F32,
        8,
        LoopKind::Vector,
        &|a, b| bin(Op::Mul, a, b),
    )
}

#[test]
fn inputs_are_validated_without_panicking() {
    let p = scale_program();
    let exe = compile(&p, &CpuOptions::default()).unwrap();
    let good = inputs(&p, 1, false);
    let mut missing = good.clone();
    missing.remove("b");
    assert!(matches!(
        exe.run(&missing),
        Err(CpuError::MissingInput { ref name, .. }) if name == "b"
    ));
    let mut unknown = good.clone();
    unknown.insert("zz".into(), Tensor::scalar_f32(1.0));
    let e = exe.run(&unknown).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown input 'zz' (the program takes: a, b)"
    );
    let mut wrong = good.clone();
    wrong.insert(
        "a".into(),
        Tensor::new([8], TensorData::F64(vec![0.0; 8])).unwrap(),
    );
    assert_eq!(
        exe.run(&wrong).unwrap_err().to_string(),
        "input 'a': expected f32[8], got f64[8]"
    );
    wrong.insert(
        "a".into(),
        Tensor::new([2, 4], TensorData::F32(vec![0.0; 8])).unwrap(),
    );
    assert!(matches!(exe.run(&wrong), Err(CpuError::InputType { .. })));
    assert!(exe.run(&good).is_ok());
}

#[test]
fn borrowed_inputs_run_like_owned_ones() {
    let p = scale_program();
    let exe = compile(&p, &CpuOptions::default()).unwrap();
    let owned = inputs(&p, 3, false);
    let want = exe.run(&owned).unwrap();
    fn as_ref(t: &Tensor) -> TensorRef<'_> {
        TensorRef {
            shape: t.shape(),
            elements: match t.data() {
                TensorData::F32(v) => ElementsRef::F32(v),
                other => panic!("scale_program takes f32, got {:?}", other.dtype()),
            },
        }
    }
    let borrowed: BTreeMap<String, TensorRef<'_>> =
        owned.iter().map(|(n, t)| (n.clone(), as_ref(t))).collect();
    assert_eq!(exe.run_borrowed(&borrowed).unwrap(), want);

    // The same checks as owned inputs get, and one more: a slice that does
    // not hold its shape's elements.
    let short = [0.0f32; 7];
    let mut bad = borrowed.clone();
    bad.insert(
        "a".into(),
        TensorRef {
            shape: &[8],
            elements: ElementsRef::F32(&short),
        },
    );
    assert!(matches!(
        exe.run_borrowed(&bad),
        Err(CpuError::InputType { ref name, .. }) if name == "a"
    ));
    let wide = [0.0f64; 8];
    bad.insert(
        "a".into(),
        TensorRef {
            shape: &[8],
            elements: ElementsRef::F64(&wide),
        },
    );
    assert_eq!(
        exe.run_borrowed(&bad).unwrap_err().to_string(),
        "input 'a': expected f32[8], got f64[8]"
    );
    bad.remove("a");
    assert!(matches!(
        exe.run_borrowed(&bad),
        Err(CpuError::MissingInput { ref name, .. }) if name == "a"
    ));
}

#[test]
fn outputs_written_into_caller_memory_match_owned_ones() {
    let p = scale_program();
    let exe = compile(&p, &CpuOptions::default()).unwrap();
    let owned = inputs(&p, 4, false);
    let want = exe.run(&owned).unwrap();
    let borrowed: BTreeMap<String, TensorRef<'_>> = owned
        .iter()
        .map(|(n, t)| {
            let TensorData::F32(v) = t.data() else {
                panic!("scale_program takes f32")
            };
            let r = TensorRef {
                shape: t.shape(),
                elements: ElementsRef::F32(v),
            };
            (n.clone(), r)
        })
        .collect();
    // NaN first: every element must be overwritten.
    let mut out = vec![f32::NAN; 8];
    let mut outs = [TensorMut {
        shape: &[8],
        elements: ElementsMut::F32(&mut out),
    }];
    exe.run_borrowed_into(&borrowed, &mut outs).unwrap();
    assert_eq!(want[0].1.as_f32().unwrap(), out.as_slice());

    let mut short = vec![0.0f32; 7];
    let mut bad = [TensorMut {
        shape: &[8],
        elements: ElementsMut::F32(&mut short),
    }];
    assert_eq!(
        exe.run_borrowed_into(&borrowed, &mut bad)
            .unwrap_err()
            .to_string(),
        "output 'y': expected f32[8], got f32[7]"
    );
    assert!(matches!(
        exe.run_borrowed_into(&borrowed, &mut []),
        Err(CpuError::OutputCount {
            expected: 1,
            got: 0
        })
    ));
}

#[test]
fn invalid_programs_are_refused() {
    let mut p = scale_program();
    if let Stmt::Loop { extent, .. } = &mut p.kernels[0].body[0] {
        *extent = 9; // one past the end of every buffer
    }
    match compile(&p, &CpuOptions::default()) {
        Err(CpuError::Invalid(errs)) => {
            assert!(
                errs.iter().any(|e| e.message.contains("outside 0..8")),
                "{errs:?}"
            );
        }
        other => panic!("expected an invalid-program error, got {other:?}"),
    }
    // Scratch arrays beyond the stack budget.
    let mut p = scale_program();
    p.kernels[0].local(ScalarType::F64, 1 << 20);
    assert!(matches!(
        compile(&p, &CpuOptions::default()),
        Err(CpuError::Unsupported { .. })
    ));
}

#[test]
fn checked_mode_emits_a_bounds_check_per_access() {
    let p = scale_program();
    let plain = compile(&p, &CpuOptions::default()).unwrap().to_string();
    let checked = compile(
        &p,
        &CpuOptions {
            checked: true,
            ..CpuOptions::default()
        },
    )
    .unwrap()
    .to_string();
    let count = |s: &str| s.matches("icmp_imm_s ult").count() + s.matches("icmp ult").count();
    assert_eq!(count(&plain), 0, "{plain}");
    // Two vector copies × (two loads + one store) × (first and last lane).
    assert!(count(&checked) >= 12, "{checked}");
}

#[test]
fn display_prints_clif_for_every_kernel_and_compile_time_is_reported() {
    let p = gemm_program(DType::F32, 2, false, true);
    let exe = compile(&p, &CpuOptions::default()).unwrap();
    let text = exe.to_string();
    assert!(
        text.contains("; kernel k0_init segment 0: parallel over 0..100"),
        "{text}"
    );
    assert!(
        text.contains("; kernel k1_gemm segment 0: serial"),
        "{text}"
    );
    assert!(text.contains("call fn"), "{text}");
    assert!(exe.compile_time().as_nanos() > 0);
    let exe = compile(
        &p,
        &CpuOptions {
            disassemble: true,
            ..CpuOptions::default()
        },
    )
    .unwrap();
    assert!(exe.disassembly().unwrap().contains("ret"));
}

#[test]
fn run_into_reuses_output_buffers() {
    let p = scale_program();
    let exe = compile(&p, &CpuOptions::default()).unwrap();
    let xs = inputs(&p, 2, false);
    let mut outs = Vec::new();
    exe.run_into(&xs, &mut outs).unwrap();
    let addr = outs[0].1.as_f32().unwrap().as_ptr();
    let first = outs.clone();
    exe.run_into(&xs, &mut outs).unwrap();
    assert_eq!(outs[0].1.as_f32().unwrap().as_ptr(), addr);
    assert_eq!(outs, first);
}

#[test]
fn concurrent_runs_take_turns() {
    let p = gemm_program(DType::F32, 3, true, true);
    let exe = Arc::new(compile(&p, &CpuOptions::default()).unwrap());
    let xs = Arc::new(inputs(&p, 3, false));
    let want = exe.run(&xs).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (exe, xs) = (exe.clone(), xs.clone());
            std::thread::spawn(move || (0..20).map(|_| exe.run(&xs).unwrap()).collect::<Vec<_>>())
        })
        .collect();
    for h in handles {
        for got in h.join().unwrap() {
            assert_eq!(got, want);
        }
    }
}

#[test]
fn outputs_of_a_local_free_program_match_in_every_precision_mode() {
    // Sanity for the tolerance table: an exact program is exact.
    let p = elementwise(
        "copy",
        DType::F32,
        DType::F32,
        37,
        LoopKind::Vector,
        &|a, _| a,
    );
    let xs = inputs(&p, 8, true);
    let got = compile(&p, &CpuOptions::default())
        .unwrap()
        .run(&xs)
        .unwrap();
    close(&got[0].1, &xs["a"], Tolerance::EXACT).unwrap();
    let _ = LocalId(0);
}
