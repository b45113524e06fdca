//! Helpers shared by the CPU backend's tests: building kernel IR by hand,
//! deterministic inputs, and comparing the backend with the interpreter.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeMap;

use birkhoff_cpu::{CpuOptions, compile};
use birkhoff_ir::kernel::{
    BufferDecl, BufferId, BufferKind, Expr, Index, Kernel, LoopKind, Program, ScalarType, Stmt,
    VarId, run_program,
};
use birkhoff_ir::tolerance::{Tolerance, close};
use birkhoff_ir::{DType, Op, Precision, Tensor, TensorType};
use birkhoff_testkit::special_scalars;

/// `buf[index]`.
pub fn ld(b: u32, ix: Index) -> Expr {
    Expr::load(BufferId(b), ix)
}

/// `buf[index] = value`.
pub fn st(b: u32, ix: Index, value: Expr) -> Stmt {
    Stmt::Store {
        buf: BufferId(b),
        index: ix,
        value,
    }
}

/// `var = value`.
pub fn set(var: VarId, value: Expr) -> Stmt {
    Stmt::Set { var, value }
}

/// A loop.
pub fn lp(var: VarId, extent: usize, kind: LoopKind, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop {
        var,
        extent,
        kind,
        body,
    }
}

/// A constant.
pub fn k(ty: ScalarType, x: f64) -> Expr {
    Expr::constant(ty, x)
}

/// `op(a)`.
pub fn un(op: Op, a: Expr) -> Expr {
    Expr::unary(op, a)
}

/// `op(a, b)`.
pub fn bin(op: Op, a: Expr, b: Expr) -> Expr {
    Expr::binary(op, a, b)
}

/// `i` as an index (coefficient 1).
pub fn ix(i: VarId) -> Index {
    Index::var(i, 1)
}

/// A buffer declaration.
pub fn buf(name: &str, dtype: DType, shape: &[usize], kind: BufferKind) -> BufferDecl {
    BufferDecl {
        name: name.into(),
        ty: TensorType::new(dtype, shape),
        kind,
    }
}

/// A program over `buffers` (inputs and outputs named after their
/// buffers, in order), temporaries laid out back to back.
pub fn program(name: &str, mut buffers: Vec<BufferDecl>, kernels: Vec<Kernel>) -> Program {
    let mut offset = 0;
    for b in &mut buffers {
        if let BufferKind::Temp { offset: o } = &mut b.kind {
            *o = offset;
            offset += b.ty.size_bytes().div_ceil(64) * 64;
        }
    }
    let pick = |kind: BufferKind| {
        buffers
            .iter()
            .enumerate()
            .filter(|(_, b)| b.kind == kind)
            .map(|(i, b)| (b.name.clone(), BufferId(i as u32)))
            .collect::<Vec<_>>()
    };
    Program {
        name: name.into(),
        inputs: pick(BufferKind::Input),
        outputs: pick(BufferKind::Output),
        buffers,
        kernels,
        arena_bytes: offset,
    }
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Values for an input of `dtype`: ordinary ones, and with `special` also
/// NaN, ±Inf, ±0, subnormals and extremes every few elements.
pub fn values(dtype: DType, n: usize, rng: &mut Rng, special: bool) -> Vec<f64> {
    let specials = special_scalars(dtype);
    (0..n)
        .map(|i| {
            if special && i % 3 == 1 {
                return specials[rng.below(specials.len())];
            }
            match dtype {
                DType::I32 => (rng.below(2001) as f64) - 1000.0,
                DType::Bool => (rng.below(2)) as f64,
                _ => rng.uniform(-3.0, 3.0),
            }
        })
        .collect()
}

/// One tensor per input of `p`.
pub fn inputs(p: &Program, seed: u64, special: bool) -> BTreeMap<String, Tensor> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    p.inputs
        .iter()
        .map(|(name, b)| {
            let ty = p.buffer(*b).ty.clone();
            let v = values(ty.dtype, ty.num_elements(), &mut rng, special);
            (name.clone(), Tensor::from_f64(ty, &v).unwrap())
        })
        .collect()
}

/// The option sets every program is run under.
pub fn option_sets() -> Vec<CpuOptions> {
    let base = CpuOptions {
        min_parallel_work: 0,
        ..CpuOptions::default()
    };
    vec![
        CpuOptions { threads: 1, ..base },
        CpuOptions { threads: 3, ..base },
        CpuOptions {
            threads: 2,
            checked: true,
            ..base
        },
        CpuOptions {
            threads: 1,
            vectorize: false,
            fma: false,
            ..base
        },
    ]
}

/// Runs `p` on the interpreter (f64 oracle) and compiled with each option
/// set, and compares every output within `tol` (per output dtype).
pub fn check_with(
    p: &Program,
    inputs: &BTreeMap<String, Tensor>,
    opts: &[CpuOptions],
    tol: &dyn Fn(DType) -> Tolerance,
) {
    let want = run_program(p, inputs, Precision::F64).expect("the interpreter runs it");
    for o in opts {
        let exe = compile(p, o).unwrap_or_else(|e| panic!("compile {}: {e}\n{p}", p.name));
        let got = exe
            .run(inputs)
            .unwrap_or_else(|e| panic!("run {} with {o:?}: {e}\n{p}", p.name));
        assert_eq!(got.len(), want.len());
        for ((name, g), (_, w)) in got.iter().zip(&want) {
            if let Err(msg) = close(g, w, tol(w.dtype())) {
                panic!(
                    "{}: output {name} with {o:?}: {msg}\ninputs: {inputs:?}\n{p}\n{exe}",
                    p.name
                );
            }
        }
    }
}

/// [`check_with`] under every option set, elementwise tolerance.
pub fn check(p: &Program, inputs: &BTreeMap<String, Tensor>) {
    check_with(p, inputs, &option_sets(), &Tolerance::elementwise);
}

/// [`check_with`] under every option set, reduction tolerance.
pub fn check_reduction(p: &Program, inputs: &BTreeMap<String, Tensor>) {
    check_with(p, inputs, &option_sets(), &Tolerance::reduction);
}
