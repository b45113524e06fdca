//! birkhoff's CPU backend: kernel IR to native code through Cranelift.
//!
//! [`compile`] turns a verified kernel IR [`Program`](birkhoff_ir::kernel::Program)
//! into a [`CpuExecutable`]: one JIT-compiled function per kernel (segment),
//! SIMD code (`f32x4`, `f64x2`) for `vector` loops, inline polynomial
//! `exp`/`log`/`tanh`/`sigmoid`, parallel loops split across a thread pool
//! sized to the machine, and matrix products handed to the `gemm` crate.
//! The executable validates its inputs, owns a reusable buffer arena and
//! prints the Cranelift IR of every kernel (`Display`).
//!
//! * `codegen` — kernel IR statements and expressions to Cranelift IR;
//! * `vector` — the SIMD form of vector loops;
//! * `math` — inline `f32` transcendentals;
//! * `runtime` — calling generated code, matrix products, threads, memory;
//! * `executable` — [`compile`], [`CpuExecutable`], [`CpuOptions`].
//!
//! ```
//! use std::collections::BTreeMap;
//! use birkhoff_cpu::{compile, CpuOptions};
//! use birkhoff_ir::kernel::*;
//! use birkhoff_ir::{DType, Op, Tensor, TensorData, TensorType};
//!
//! // y[i] = exp(x[i]) for 10 elements, as one vector loop.
//! let mut k = Kernel::new("k0_exp");
//! let i = k.var(ScalarType::Index);
//! k.body = vec![Stmt::Loop {
//!     var: i,
//!     extent: 10,
//!     kind: LoopKind::Vector,
//!     body: vec![Stmt::Store {
//!         buf: BufferId(1),
//!         index: Index::var(i, 1),
//!         value: Expr::unary(Op::Exp, Expr::load(BufferId(0), Index::var(i, 1))),
//!     }],
//! }];
//! let ty = TensorType::new(DType::F32, [10]);
//! let program = Program {
//!     name: "exp".into(),
//!     buffers: vec![
//!         BufferDecl { name: "x".into(), ty: ty.clone(), kind: BufferKind::Input },
//!         BufferDecl { name: "y".into(), ty: ty.clone(), kind: BufferKind::Output },
//!     ],
//!     inputs: vec![("x".into(), BufferId(0))],
//!     outputs: vec![("y".into(), BufferId(1))],
//!     kernels: vec![k],
//!     arena_bytes: 0,
//! };
//! let exe = compile(&program, &CpuOptions::default())?;
//! assert!(exe.to_string().contains("function")); // the CLIF listing
//!
//! let x = Tensor::new([10], TensorData::F32((0..10).map(|v| v as f32).collect()))?;
//! let out = exe.run(&BTreeMap::from([("x".to_string(), x)]))?;
//! let y = out[0].1.as_f32().unwrap();
//! assert!((y[3] - 3f32.exp()).abs() <= 2e-6 * 3f32.exp());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod codegen;
mod error;
mod executable;
mod math;
#[cfg(target_arch = "x86_64")]
mod row_sweep;
mod runtime;
mod vector;

pub use error::{CpuError, Result};
pub use executable::{
    CpuExecutable, CpuOptions, ElementsMut, ElementsRef, KernelStats, KernelTime, MAX_LOCAL_BYTES,
    TensorMut, TensorRef, compile,
};

/// The CPU backend as a [`birkhoff_ir::kernel::Backend`]: [`compile`] with
/// fixed options.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend(pub CpuOptions);

impl birkhoff_ir::kernel::Backend for CpuBackend {
    type Artifact = CpuExecutable;
    type Error = CpuError;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn compile(&self, program: &birkhoff_ir::kernel::Program) -> Result<CpuExecutable> {
        compile(program, &self.0)
    }
}

impl birkhoff_ir::kernel::Artifact for CpuExecutable {
    type Error = CpuError;

    fn run(
        &self,
        inputs: &std::collections::BTreeMap<String, birkhoff_ir::Tensor>,
    ) -> Result<Vec<(String, birkhoff_ir::Tensor)>> {
        CpuExecutable::run(self, inputs)
    }
}
