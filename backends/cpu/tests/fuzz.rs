//! The backend's fuzzer: random valid kernel programs (loop nests up to
//! three deep with random affine input indices, uniform values hoisted
//! from enclosing loops, loop-index casts, selects, and reductions into
//! vector accumulators), compiled and compared with the interpreter.
//!
//! Values are ordinary (no NaN or infinities): the point is to exercise
//! code generation — indexing, loop splitting, SIMD forms, tails — and
//! special values are covered op by op in `kernels.rs`. Float expressions
//! keep their ranges bounded (`exp` of a `tanh`, `log` of `1 + |x|`) so
//! f32 and f64 agree to the tolerance below.

mod common;

use birkhoff_ir::kernel::{BufferKind, Expr, Index, Kernel, LoopKind, Program, ScalarType};
use birkhoff_ir::tolerance::Tolerance;
use birkhoff_ir::{DType, Op};
use common::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum E {
    Load(usize),
    Const(i8),
    Iota,
    Outer,
    Un(u8, Box<E>),
    Bin(u8, Box<E>, Box<E>),
    Sel(u8, Box<E>, Box<E>, Box<E>, Box<E>),
}

#[derive(Clone, Debug)]
struct Spec {
    dtype: DType,
    extents: Vec<usize>,
    outer_parallel: bool,
    inner_vector: bool,
    /// Per input: coefficient per loop, and whether it is stored as bf16.
    inputs: Vec<(Vec<i64>, bool)>,
    expr: E,
    /// 0: elementwise; 1..=3: sum, max, min over the innermost loop.
    reduce: u8,
    out_reverse: bool,
}

fn expr() -> impl Strategy<Value = E> {
    let leaf = prop_oneof![
        4 => (0usize..3).prop_map(E::Load),
        1 => any::<i8>().prop_map(E::Const),
        1 => Just(E::Iota),
        1 => Just(E::Outer),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            (0u8..7, inner.clone()).prop_map(|(o, a)| E::Un(o, Box::new(a))),
            (0u8..6, inner.clone(), inner.clone()).prop_map(|(o, a, b)| E::Bin(
                o,
                Box::new(a),
                Box::new(b)
            )),
            (0u8..6, inner.clone(), inner.clone(), inner.clone(), inner).prop_map(
                |(o, a, b, c, d)| E::Sel(o, Box::new(a), Box::new(b), Box::new(c), Box::new(d))
            ),
        ]
    })
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::sample::select(vec![DType::F32, DType::F64, DType::I32]),
        prop::collection::vec(1usize..=5, 0..=2),
        1usize..=19,
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec((prop::collection::vec(-2i64..=3, 3), any::<bool>()), 1..=3),
        expr(),
        0u8..=3,
        any::<bool>(),
    )
        .prop_map(
            |(
                dtype,
                mut extents,
                last,
                outer_parallel,
                inner_vector,
                inputs,
                expr,
                reduce,
                out_reverse,
            )| {
                extents.push(last);
                Spec {
                    dtype,
                    extents,
                    outer_parallel,
                    inner_vector,
                    inputs,
                    expr,
                    reduce,
                    out_reverse,
                }
            },
        )
}

struct Builder<'s> {
    spec: &'s Spec,
    t: ScalarType,
    loops: Vec<birkhoff_ir::kernel::VarId>,
    outer: birkhoff_ir::kernel::VarId,
    /// Input index offsets (so every index is in bounds).
    offsets: Vec<i64>,
}

impl Builder<'_> {
    fn index(&self, k: usize) -> Index {
        let coeffs = &self.spec.inputs[k].0;
        let mut ix = Index::constant(self.offsets[k]);
        for (d, &v) in self.loops.iter().enumerate() {
            ix = ix.plus(v, coeffs[d]);
        }
        ix
    }

    fn expr(&self, e: &E) -> Expr {
        let t = self.t;
        let float = t != ScalarType::I32;
        let n = self.spec.inputs.len();
        match e {
            E::Load(k) => ld((k % n) as u32, self.index(k % n)),
            E::Const(c) => k(t, f64::from(*c) / if float { 16.0 } else { 1.0 }),
            E::Iota => Expr::Cast {
                to: t,
                arg: Box::new(Expr::Var(*self.loops.last().unwrap())),
            },
            E::Outer => Expr::Var(self.outer),
            E::Un(o, a) => {
                let a = self.expr(a);
                if !float {
                    return un(if o % 2 == 0 { Op::Neg } else { Op::Abs }, a);
                }
                match o {
                    0 => un(Op::Neg, a),
                    1 => un(Op::Abs, a),
                    2 => un(Op::Exp, un(Op::Tanh, a)),
                    3 => un(Op::Tanh, a),
                    4 => un(Op::Sigmoid, a),
                    5 => un(Op::Sqrt, un(Op::Abs, a)),
                    _ => un(Op::Log, bin(Op::Add, k(t, 1.0), un(Op::Abs, a))),
                }
            }
            E::Bin(o, a, b) => {
                let (a, b) = (self.expr(a), self.expr(b));
                match o {
                    0 => bin(Op::Add, a, b),
                    1 => bin(Op::Sub, a, b),
                    2 => bin(Op::Mul, a, b),
                    3 => bin(Op::Max, a, b),
                    4 => bin(Op::Min, a, b),
                    _ if float => bin(Op::Div, a, bin(Op::Add, k(t, 2.0), un(Op::Abs, b))),
                    _ => bin(Op::Add, a, bin(Op::Mul, b, k(t, 3.0))),
                }
            }
            E::Sel(o, a, b, c, d) => {
                let cmp = [Op::Lt, Op::Le, Op::Gt, Op::Ge, Op::Eq, Op::Ne][*o as usize % 6].clone();
                Expr::Select {
                    cond: Box::new(bin(cmp, self.expr(a), self.expr(b))),
                    then: Box::new(self.expr(c)),
                    otherwise: Box::new(self.expr(d)),
                }
            }
        }
    }
}

fn build(spec: &Spec) -> Program {
    let t = ScalarType::of(spec.dtype);
    let depth = spec.extents.len();
    let mut kern = Kernel::new("k0_fuzz");
    let loops: Vec<_> = (0..depth).map(|_| kern.var(ScalarType::Index)).collect();
    let outer = kern.var(t);
    let acc = kern.var(t);
    let mut offsets = Vec::new();
    let mut buffers = Vec::new();
    for (k, (coeffs, bf16)) in spec.inputs.iter().enumerate() {
        let (mut lo, mut hi) = (0i64, 0i64);
        for (d, &e) in spec.extents.iter().enumerate() {
            let last = coeffs[d] * (e as i64 - 1);
            lo += last.min(0);
            hi += last.max(0);
        }
        offsets.push(-lo);
        let d = if *bf16 && spec.dtype == DType::F32 {
            DType::Bf16
        } else {
            spec.dtype
        };
        buffers.push(buf(
            &format!("in{k}"),
            d,
            &[(hi - lo + 1) as usize],
            BufferKind::Input,
        ));
    }
    let n_in = buffers.len() as u32;
    let b = Builder {
        spec,
        t,
        loops: loops.clone(),
        outer,
        offsets,
    };
    let value = b.expr(&spec.expr);
    // Row-major output index over `dims` loops (the innermost reversed on request).
    let out_index = |dims: usize| {
        let mut ix = Index::constant(0);
        let mut stride = 1i64;
        for d in (0..dims).rev() {
            let e = spec.extents[d] as i64;
            if d == depth - 1 && spec.out_reverse {
                ix = ix.plus(loops[d], -stride).shifted(stride * (e - 1));
            } else {
                ix = ix.plus(loops[d], stride);
            }
            stride *= e;
        }
        ix
    };
    let reduce = spec.reduce > 0;
    let out_dims = if reduce { depth - 1 } else { depth };
    let out_len: usize = spec.extents[..out_dims].iter().product();
    // The innermost loop's body and the statements around it.
    let (init, op) = match spec.reduce {
        1 => (0.0, Op::Add),
        2 => (
            if t == ScalarType::I32 {
                f64::from(i32::MIN)
            } else {
                f64::NEG_INFINITY
            },
            Op::Max,
        ),
        _ => (
            if t == ScalarType::I32 {
                f64::from(i32::MAX)
            } else {
                f64::INFINITY
            },
            Op::Min,
        ),
    };
    let inner_body = if reduce {
        vec![set(acc, bin(op, Expr::Var(acc), value))]
    } else {
        vec![st(n_in, out_index(depth), value)]
    };
    let last = depth - 1;
    let inner_kind = if spec.inner_vector {
        LoopKind::Vector
    } else if depth == 1 && spec.outer_parallel && !reduce {
        LoopKind::Parallel
    } else {
        LoopKind::Serial
    };
    let mut stmts = vec![lp(loops[last], spec.extents[last], inner_kind, inner_body)];
    if reduce {
        stmts.insert(0, set(acc, k(t, init)));
        stmts.push(st(n_in, out_index(out_dims), Expr::Var(acc)));
    }
    // The uniform value: input 0 at the enclosing loops' position.
    let mut outer_ix = Index::constant(b.offsets[0]);
    for (d, &v) in loops.iter().enumerate().take(last) {
        outer_ix = outer_ix.plus(v, spec.inputs[0].0[d]);
    }
    stmts.insert(0, set(outer, ld(0, outer_ix)));
    for d in (0..last).rev() {
        let kind = if d == 0 && spec.outer_parallel {
            LoopKind::Parallel
        } else {
            LoopKind::Serial
        };
        stmts = vec![lp(loops[d], spec.extents[d], kind, stmts)];
    }
    kern.body = stmts;
    buffers.push(buf(
        "out",
        spec.dtype,
        &[out_len.max(1)],
        BufferKind::Output,
    ));
    program("fuzz", buffers, vec![kern])
}

fn tolerance(d: DType) -> Tolerance {
    match d {
        // Chains of up to a dozen rounded f32 operations (fused
        // multiply-adds round once where the interpreter rounds twice)
        // over values up to ~10^3: the reduction row, with atol raised
        // from 1e-5 to 1e-4 for cancellations in such chains.
        DType::F32 => Tolerance::new(1e-4, 1e-4),
        _ => Tolerance::reduction(d),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_programs_match_the_interpreter(s in spec(), seed in 0u64..1000) {
        let p = build(&s);
        let xs = inputs(&p, seed, false);
        check_with(&p, &xs, &option_sets(), &tolerance);
    }
}
