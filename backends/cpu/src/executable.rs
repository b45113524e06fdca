//! Compiling a program, and the executable that runs it.
//!
//! [`compile`] verifies the program, generates one Cranelift function per
//! kernel segment, links them with the runtime routines and lays out the
//! memory a run needs. A [`CpuExecutable`] owns that memory: the arena for
//! `Temp` buffers (64-byte aligned, allocated once, reused by every call)
//! and the constant buffers (filled once). Inputs are read in place from
//! the caller's tensors; outputs are written straight into the tensors
//! returned (or handed back in, with [`CpuExecutable::run_into`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use birkhoff_ir::kernel::{BufferKind, Program, Scopes, Stmt, verify_program};
use birkhoff_ir::{DType, Tensor, TensorData, TensorType};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};

use crate::codegen::{self, Gen, GenConfig, Imports};
use crate::error::{CpuError, Result};
use crate::runtime::{self, Aligned, Code, Entry, GEMM_SYMBOL, Libm, Runtime, Segment};

/// Largest total size of one kernel's scratch arrays: they live on the
/// stack of whichever thread runs the kernel.
pub const MAX_LOCAL_BYTES: usize = 256 << 10;

/// Compilation settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuOptions {
    /// Worker threads for parallel loops and matrix products; 0 means one
    /// per available core (`std::thread::available_parallelism`).
    pub threads: usize,
    /// Check every load and store against its buffer's bounds at run time
    /// (and every matrix product's operands); a failure makes
    /// [`CpuExecutable::run`] return [`CpuError::OutOfBounds`]. Slow: for
    /// tests.
    pub checked: bool,
    /// Emit SIMD code for `vector` loops.
    pub vectorize: bool,
    /// Contract `a * b + c` into fused multiply-adds (one rounding instead
    /// of two) when the host has them.
    pub fma: bool,
    /// Parallel loops of kernels estimated to do fewer scalar operations
    /// than this, and matrix products of fewer multiply-adds, run on one
    /// thread: waking workers costs microseconds. A program left with
    /// nothing to split never wakes them.
    pub min_parallel_work: u64,
    /// Keep the machine code listing of every function
    /// ([`CpuExecutable::disassembly`]).
    pub disassemble: bool,
}

impl Default for CpuOptions {
    fn default() -> Self {
        CpuOptions {
            threads: 0,
            checked: false,
            vectorize: true,
            fma: true,
            min_parallel_work: 1 << 15,
            disassemble: false,
        }
    }
}

/// What code generation made of one kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelStats {
    /// The kernel's name.
    pub name: String,
    /// Functions it was compiled into.
    pub segments: usize,
    /// Segments whose parallel loop is split across threads.
    pub parallel_segments: usize,
    /// `vector` loops emitted as SIMD code.
    pub vector_loops: usize,
    /// `vector` loops left scalar, each with the reason.
    pub scalar_vector_loops: Vec<String>,
}

/// One kernel's wall time in a profiled run ([`CpuExecutable::profile`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelTime {
    /// The kernel's name.
    pub name: String,
    /// Its wall time, all segments and threads together.
    pub time: Duration,
}

struct CompiledSegment {
    seg: Segment,
    clif: String,
    disasm: Option<String>,
}

struct CompiledKernel {
    name: String,
    segments: Vec<CompiledSegment>,
    stats: KernelStats,
}

/// Mutable memory of an executable: one run at a time holds it.
struct State {
    arena: Aligned,
    /// Constants, and outputs not returned to the caller, by buffer.
    owned: Vec<Option<Aligned>>,
    /// Staging for `bool` outputs (a `Vec<bool>` may hold only 0 and 1).
    bools: Vec<Option<Aligned>>,
    ptrs: Vec<usize>,
}

/// A compiled program, ready to run any number of times.
///
/// `run` takes `&self`: the executable is `Sync`, and concurrent calls
/// from several threads take turns on its buffer arena (a mutex), so they
/// cannot corrupt each other.
pub struct CpuExecutable {
    program: Program,
    kernels: Vec<CompiledKernel>,
    runtime: Box<Runtime>,
    accesses: Vec<String>,
    state: Mutex<State>,
    pool: Option<Arc<rayon::ThreadPool>>,
    compile_time: Duration,
    options: CpuOptions,
    /// Last: the code is freed after everything that points into it.
    _code: Code,
}

impl fmt::Debug for CpuExecutable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuExecutable")
            .field("program", &self.program.name)
            .field("kernels", &self.kernels.len())
            .field("threads", &self.runtime.threads)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn host_has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("fma")
    }
    #[cfg(target_arch = "aarch64")]
    {
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Rejects kernels whose scratch arrays exceed [`MAX_LOCAL_BYTES`]: they
/// live on the stack of whichever thread runs the kernel.
fn check_local_bytes(program: &Program) -> Result<()> {
    for k in &program.kernels {
        let bytes: usize = k
            .locals
            .iter()
            .map(|l| l.len.saturating_mul(l.ty.size_bytes()))
            .fold(0, usize::saturating_add);
        if bytes > MAX_LOCAL_BYTES {
            return Err(CpuError::Unsupported {
                kernel: k.name.clone(),
                message: format!(
                    "scratch arrays of {bytes} bytes exceed the {MAX_LOCAL_BYTES}-byte stack budget"
                ),
            });
        }
    }
    Ok(())
}

/// Bytes of a buffer's element type, as stored.
fn storage(d: DType, values: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * d.size_bytes());
    for &x in values {
        match d {
            DType::F32 => out.extend_from_slice(&(x as f32).to_le_bytes()),
            DType::F64 => out.extend_from_slice(&x.to_le_bytes()),
            DType::I32 => out.extend_from_slice(&(x as i32).to_le_bytes()),
            DType::Bool => out.push(u8::from(x != 0.0)),
            DType::Bf16 => out.extend_from_slice(&half::bf16::from_f64(x).to_bits().to_le_bytes()),
        }
    }
    out
}

/// Compiles a kernel IR program to native code for this machine.
///
/// The program is verified first ([`verify_program`]); invalid programs
/// are refused with [`CpuError::Invalid`].
pub fn compile(program: &Program, opts: &CpuOptions) -> Result<CpuExecutable> {
    compile_inner(program, opts, true)
}

/// Rejects matrix products the runtime routine does not provide: it
/// multiplies f32 or f64 memory into memory of the same type and computes
/// nothing besides (lowering for this backend widens bf16 operands first,
/// runs bf16 products as loop nests and sums squares in kernels).
fn check_gemms(program: &Program) -> Result<()> {
    for k in &program.kernels {
        let mut bad = None;
        birkhoff_ir::kernel::walk_stmts(&k.body, &mut |s| {
            if let Stmt::Gemm(g) = s {
                if program.buffer(g.a.buf).dtype() == DType::Bf16
                    || program.buffer(g.b.buf).dtype() == DType::Bf16
                {
                    bad = Some("the runtime matrix product takes f32 or f64 operands, not bf16");
                } else if program.buffer(g.c.buf).dtype() == DType::Bf16 {
                    bad = Some("the runtime matrix product writes f32 or f64 results, not bf16");
                } else if g.row_sumsq.is_some() {
                    bad = Some("the runtime matrix product does not compute row sums of squares");
                }
            }
        });
        if let Some(message) = bad {
            return Err(CpuError::Unsupported {
                kernel: k.name.clone(),
                message: message.to_string(),
            });
        }
    }
    Ok(())
}

/// [`compile`]; `verify: false` skips verification, which is sound only
/// in checked mode and exists to test that mode.
fn compile_inner(program: &Program, opts: &CpuOptions, verify: bool) -> Result<CpuExecutable> {
    let start = Instant::now();
    if verify {
        verify_program(program).map_err(CpuError::Invalid)?;
        check_local_bytes(program)?;
        check_gemms(program)?;
    } else {
        assert!(opts.checked, "unverified programs run only in checked mode");
    }
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };

    let mut flags = settings::builder();
    flags.set("opt_level", "speed")?;
    flags.set("enable_probestack", "true")?;
    flags.set("probestack_strategy", "inline")?;
    flags.set("use_colocated_libcalls", "false")?;
    flags.set("is_pic", "false")?;
    let isa = cranelift_native::builder()
        .map_err(|e| CpuError::Host(e.to_string()))?
        .finish(settings::Flags::new(flags))?;
    let mut jb = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    runtime::register_symbols(&mut jb);
    let mut module = JITModule::new(jb);

    let mut gemm_sig = module.make_signature();
    for _ in 0..3 {
        gemm_sig.params.push(cranelift_codegen::ir::AbiParam::new(
            cranelift_codegen::ir::types::I64,
        ));
    }
    gemm_sig.returns.push(cranelift_codegen::ir::AbiParam::new(
        cranelift_codegen::ir::types::I64,
    ));
    let gemm = module.declare_function(GEMM_SYMBOL, Linkage::Import, &gemm_sig)?;
    let mut libm = HashMap::new();
    for f in Libm::ALL {
        let sig = f.signature(module.make_signature());
        libm.insert(
            f,
            module.declare_function(f.symbol(), Linkage::Import, &sig)?,
        );
    }
    let imports = Imports { gemm, libm };
    let sig = codegen::segment_signature(&module);
    let base_cfg = GenConfig {
        checked: opts.checked,
        vectorize: opts.vectorize,
        fma: opts.fma && host_has_fma(),
    };

    let mut ctx = module.make_context();
    ctx.set_disasm(opts.disassemble);
    let mut fbc = FunctionBuilderContext::new();
    let mut gemms = Vec::new();
    let mut accesses = Vec::new();
    let mut pending = Vec::new();
    let mut kernels = Vec::new();
    for (ki, kernel) in program.kernels.iter().enumerate() {
        let mut stats = KernelStats {
            name: kernel.name.clone(),
            segments: 0,
            parallel_segments: 0,
            vector_loops: 0,
            scalar_vector_loops: Vec::new(),
        };
        let mut segs = Vec::new();
        for (si, seg) in codegen::segments(kernel).iter().enumerate() {
            let id = module.declare_function(
                &format!("k{ki}_s{si}_{}", kernel.name),
                Linkage::Local,
                &sig,
            )?;
            let mut cfg = base_cfg;
            let (gemms_before, accesses_before) = (gemms.len(), accesses.len());
            loop {
                ctx.func.signature = sig.clone();
                let (vectorized, scalar_loops) = {
                    let mut g = Gen {
                        b: FunctionBuilder::new(&mut ctx.func, &mut fbc),
                        module: &mut module,
                        imports: &imports,
                        program,
                        kernel,
                        cfg,
                        gemms: &mut gemms,
                        accesses: &mut accesses,
                        ptrs: cranelift_codegen::ir::Value::from_u32(0),
                        ctx: cranelift_codegen::ir::Value::from_u32(0),
                        bases: HashMap::new(),
                        slots: vec![None; kernel.locals.len()],
                        vars: Vec::new(),
                        loops: Vec::new(),
                        scopes: Scopes::default(),
                        fail: None,
                        refs: HashMap::new(),
                        vectorized: 0,
                        scalar_loops: Vec::new(),
                    };
                    g.vars = kernel
                        .vars
                        .iter()
                        .map(|d| g.b.declare_var(codegen::clif_ty(d.ty, 1)))
                        .collect();
                    g.segment(seg);
                    let out = (g.vectorized, std::mem::take(&mut g.scalar_loops));
                    let target = g.module.target_config();
                    g.b.finalize(target);
                    out
                };
                let clif = ctx.func.display().to_string();
                match module.define_function(id, &mut ctx) {
                    Ok(()) => {
                        stats.vector_loops += vectorized;
                        stats.scalar_vector_loops.extend(scalar_loops);
                        let disasm = ctx
                            .compiled_code()
                            .and_then(|c| c.vcode.clone())
                            .filter(|_| opts.disassemble);
                        module.clear_context(&mut ctx);
                        ctx.set_disasm(opts.disassemble);
                        segs.push((id, seg.parallel, seg.work, clif, disasm));
                        break;
                    }
                    Err(_) if cfg.vectorize && vectorized > 0 => {
                        // A SIMD form the target cannot lower: fall back to scalar code.
                        module.clear_context(&mut ctx);
                        ctx.set_disasm(opts.disassemble);
                        gemms.truncate(gemms_before);
                        accesses.truncate(accesses_before);
                        cfg.vectorize = false;
                        stats.scalar_vector_loops.push(
                            "SIMD code did not compile; kernel segment emitted scalar".into(),
                        );
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        stats.segments = segs.len();
        pending.push((kernel.name.clone(), segs, stats));
    }
    module.finalize_definitions()?;
    for (name, segs, mut stats) in pending {
        let segments: Vec<CompiledSegment> = segs
            .into_iter()
            .map(|(id, parallel, work, clif, disasm)| {
                let split = parallel.is_some() && threads > 1 && work >= opts.min_parallel_work;
                CompiledSegment {
                    seg: Segment {
                        entry: Entry(module.get_finalized_function(id) as usize),
                        parallel,
                        split,
                    },
                    clif,
                    disasm,
                }
            })
            .collect();
        stats.parallel_segments = segments.iter().filter(|s| s.seg.split).count();
        kernels.push(CompiledKernel {
            name,
            segments,
            stats,
        });
    }

    // The arena and every buffer the program owns are allocated below and
    // the outputs at each run: sizes that cannot fit are an error here,
    // not an aborted allocation.
    let needed = program
        .buffers
        .iter()
        .filter(|b| matches!(b.kind, BufferKind::Const(_) | BufferKind::Output))
        .map(|b| b.ty.size_bytes() as u64)
        .fold(program.arena_bytes as u64, u64::saturating_add);
    birkhoff_io::ensure_memory(
        needed,
        &format!(
            "the compiled program's buffers ({} kernels)",
            program.kernels.len()
        ),
    )
    .map_err(CpuError::OutOfMemory)?;
    let mut owned: Vec<Option<Aligned>> = Vec::with_capacity(program.buffers.len());
    let mut bools = Vec::with_capacity(program.buffers.len());
    for (i, b) in program.buffers.iter().enumerate() {
        let returned = program.outputs.iter().any(|(_, o)| o.0 as usize == i);
        owned.push(match &b.kind {
            BufferKind::Const(values) => {
                let mut a = Aligned::zeroed(b.ty.size_bytes());
                let bytes = storage(b.dtype(), values);
                a.bytes_mut()[..bytes.len()].copy_from_slice(&bytes);
                Some(a)
            }
            BufferKind::Output if !returned => Some(Aligned::zeroed(b.ty.size_bytes())),
            _ => None,
        });
        bools.push(
            (b.kind == BufferKind::Output && returned && b.dtype() == DType::Bool)
                .then(|| Aligned::zeroed(b.ty.size_bytes())),
        );
    }
    // A program with nothing to split runs on the calling thread: handing
    // a run to the workers costs more than a small program takes.
    let parallel = kernels
        .iter()
        .any(|k| k.segments.iter().any(|s| s.seg.split))
        || gemms.iter().any(|g| g.work() >= opts.min_parallel_work);
    let pool = if threads > 1 && parallel {
        Some(runtime::pool(threads)?)
    } else {
        None
    };
    Ok(CpuExecutable {
        program: program.clone(),
        kernels,
        runtime: Box::new(Runtime {
            gemms,
            threads,
            min_parallel_work: opts.min_parallel_work,
            checked: opts.checked,
        }),
        accesses,
        state: Mutex::new(State {
            arena: Aligned::zeroed(program.arena_bytes),
            owned,
            bools,
            ptrs: vec![0; program.buffers.len()],
        }),
        pool,
        compile_time: start.elapsed(),
        options: *opts,
        _code: Code::new(module),
    })
}

/// Elements the caller owns, borrowed for one run (see
/// [`CpuExecutable::run_borrowed`]).
#[derive(Clone, Copy, Debug)]
pub enum ElementsRef<'a> {
    /// `f32` elements.
    F32(&'a [f32]),
    /// `bf16` elements.
    Bf16(&'a [half::bf16]),
    /// `f64` elements.
    F64(&'a [f64]),
    /// `i32` elements.
    I32(&'a [i32]),
    /// `bool` elements.
    Bool(&'a [bool]),
}

impl ElementsRef<'_> {
    /// The element type.
    pub fn dtype(self) -> DType {
        match self {
            ElementsRef::F32(_) => DType::F32,
            ElementsRef::Bf16(_) => DType::Bf16,
            ElementsRef::F64(_) => DType::F64,
            ElementsRef::I32(_) => DType::I32,
            ElementsRef::Bool(_) => DType::Bool,
        }
    }

    /// How many elements.
    pub fn len(self) -> usize {
        match self {
            ElementsRef::F32(v) => v.len(),
            ElementsRef::Bf16(v) => v.len(),
            ElementsRef::F64(v) => v.len(),
            ElementsRef::I32(v) => v.len(),
            ElementsRef::Bool(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// A copy, owned.
    pub fn to_data(self) -> TensorData {
        match self {
            ElementsRef::F32(v) => TensorData::F32(v.to_vec()),
            ElementsRef::Bf16(v) => TensorData::Bf16(v.to_vec()),
            ElementsRef::F64(v) => TensorData::F64(v.to_vec()),
            ElementsRef::I32(v) => TensorData::I32(v.to_vec()),
            ElementsRef::Bool(v) => TensorData::Bool(v.to_vec()),
        }
    }

    fn addr(self) -> usize {
        match self {
            ElementsRef::F32(v) => v.as_ptr() as usize,
            ElementsRef::Bf16(v) => v.as_ptr() as usize,
            ElementsRef::F64(v) => v.as_ptr() as usize,
            ElementsRef::I32(v) => v.as_ptr() as usize,
            ElementsRef::Bool(v) => v.as_ptr() as usize,
        }
    }
}

impl<'a> From<&'a TensorData> for ElementsRef<'a> {
    fn from(d: &'a TensorData) -> Self {
        match d {
            TensorData::F32(v) => ElementsRef::F32(v),
            TensorData::Bf16(v) => ElementsRef::Bf16(v),
            TensorData::F64(v) => ElementsRef::F64(v),
            TensorData::I32(v) => ElementsRef::I32(v),
            TensorData::Bool(v) => ElementsRef::Bool(v),
        }
    }
}

/// A row-major input tensor whose elements the caller owns: run without
/// copying them into a [`Tensor`].
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    /// The shape.
    pub shape: &'a [usize],
    /// The elements, as many as the shape holds.
    pub elements: ElementsRef<'a>,
}

impl TensorRef<'_> {
    /// Its type.
    pub fn ty(&self) -> TensorType {
        TensorType::new(self.elements.dtype(), self.shape)
    }
}

/// Caller memory that a run writes an output into (see
/// [`CpuExecutable::run_borrowed_into`]).
#[derive(Debug)]
pub enum ElementsMut<'a> {
    /// `f32` elements.
    F32(&'a mut [f32]),
    /// `bf16` elements.
    Bf16(&'a mut [half::bf16]),
    /// `f64` elements.
    F64(&'a mut [f64]),
    /// `i32` elements.
    I32(&'a mut [i32]),
    /// `bool` elements.
    Bool(&'a mut [bool]),
}

/// A row-major output tensor in caller memory.
#[derive(Debug)]
pub struct TensorMut<'a> {
    /// The shape.
    pub shape: &'a [usize],
    /// The elements, as many as the shape holds.
    pub elements: ElementsMut<'a>,
}

impl ElementsMut<'_> {
    /// The same elements, read-only.
    pub fn as_ref(&self) -> ElementsRef<'_> {
        match self {
            ElementsMut::F32(v) => ElementsRef::F32(v),
            ElementsMut::Bf16(v) => ElementsRef::Bf16(v),
            ElementsMut::F64(v) => ElementsRef::F64(v),
            ElementsMut::I32(v) => ElementsRef::I32(v),
            ElementsMut::Bool(v) => ElementsRef::Bool(v),
        }
    }

    /// Overwrites the elements with `src`'s; false, changing nothing, when
    /// its type or length differs.
    pub fn fill(&mut self, src: &TensorData) -> bool {
        match (self, src) {
            (ElementsMut::F32(d), TensorData::F32(s)) if d.len() == s.len() => d.copy_from_slice(s),
            (ElementsMut::Bf16(d), TensorData::Bf16(s)) if d.len() == s.len() => {
                d.copy_from_slice(s);
            }
            (ElementsMut::F64(d), TensorData::F64(s)) if d.len() == s.len() => d.copy_from_slice(s),
            (ElementsMut::I32(d), TensorData::I32(s)) if d.len() == s.len() => d.copy_from_slice(s),
            (ElementsMut::Bool(d), TensorData::Bool(s)) if d.len() == s.len() => {
                d.copy_from_slice(s);
            }
            _ => return false,
        }
        true
    }

    fn addr_mut(&mut self) -> usize {
        self.as_ref().addr()
    }
}

/// Where one output of a run goes.
enum Slot<'a, 'b> {
    Owned(TensorData),
    Borrowed(&'a mut ElementsMut<'b>),
}

impl Slot<'_, '_> {
    fn addr_mut(&mut self) -> usize {
        match self {
            Slot::Owned(d) => data_addr_mut(d),
            Slot::Borrowed(e) => e.addr_mut(),
        }
    }

    /// Bool outputs are computed as bytes elsewhere and converted here.
    fn set_bools(&mut self, bytes: &[u8]) {
        let v = match self {
            Slot::Owned(TensorData::Bool(v)) => v.as_mut_slice(),
            Slot::Borrowed(ElementsMut::Bool(v)) => &mut **v,
            _ => return,
        };
        for (x, &byte) in v.iter_mut().zip(bytes) {
            *x = byte != 0;
        }
    }

    fn to_data(&self) -> TensorData {
        match self {
            Slot::Owned(d) => d.clone(),
            Slot::Borrowed(e) => e.as_ref().to_data(),
        }
    }

    /// Overwrites the elements with `src`'s (same type and length: two
    /// outputs of one buffer).
    fn fill(&mut self, src: TensorData) {
        match self {
            Slot::Owned(d) => *d = src,
            Slot::Borrowed(e) => {
                let filled = e.fill(&src);
                debug_assert!(filled, "outputs of one buffer share its type");
            }
        }
    }
}

/// A zeroed output tensor; a big one is advised onto huge pages before
/// its first touch (its zeroed pages come fresh from the system, untouched).
fn zeros(ty: &TensorType) -> Tensor {
    let n = ty.num_elements();
    let data = match ty.dtype {
        DType::F32 => TensorData::F32(vec![0.0; n]),
        DType::Bf16 => TensorData::Bf16(vec![half::bf16::ZERO; n]),
        DType::F64 => TensorData::F64(vec![0.0; n]),
        DType::I32 => TensorData::I32(vec![0; n]),
        DType::Bool => TensorData::Bool(vec![false; n]),
    };
    runtime::advise_huge_pages(data_addr(&data) as *const u8, ty.size_bytes());
    Tensor::new(ty.shape.clone(), data).expect("element count matches the shape")
}

/// Borrowed inputs as [`CpuExecutable::run_timed`] takes them, each
/// checked to hold its shape's elements.
fn borrowed_inputs<'a>(
    inputs: &'a BTreeMap<String, TensorRef<'_>>,
) -> Result<BTreeMap<&'a str, (TensorType, usize)>> {
    let mut given = BTreeMap::new();
    for (name, t) in inputs {
        let ty = t.ty();
        if birkhoff_ir::num_elements(t.shape) != Some(t.elements.len()) {
            return Err(CpuError::InputType {
                name: name.clone(),
                expected: ty.clone(),
                got: TensorType::new(ty.dtype, [t.elements.len()]),
            });
        }
        given.insert(name.as_str(), (ty, t.elements.addr()));
    }
    Ok(given)
}

/// Where [`CpuExecutable::run_timed`] puts the outputs.
enum Outputs<'a, 'b> {
    /// Tensors reused when they fit, allocated otherwise.
    Owned(&'a mut Vec<(String, Tensor)>),
    /// Caller memory, checked against the program's output types.
    Borrowed(&'a mut [TensorMut<'b>]),
}

/// Owned inputs as [`CpuExecutable::run_timed`] takes them.
fn owned_inputs(inputs: &BTreeMap<String, Tensor>) -> BTreeMap<&str, (TensorType, usize)> {
    inputs
        .iter()
        .map(|(name, t)| (name.as_str(), (t.ty().clone(), data_addr(t.data()))))
        .collect()
}

fn data_addr(d: &TensorData) -> usize {
    ElementsRef::from(d).addr()
}

fn data_addr_mut(d: &mut TensorData) -> usize {
    match d {
        TensorData::F32(v) => v.as_mut_ptr() as usize,
        TensorData::Bf16(v) => v.as_mut_ptr() as usize,
        TensorData::F64(v) => v.as_mut_ptr() as usize,
        TensorData::I32(v) => v.as_mut_ptr() as usize,
        TensorData::Bool(v) => v.as_mut_ptr() as usize,
    }
}

impl CpuExecutable {
    /// Runs the program on `inputs` (by name) and returns its outputs in
    /// signature order, in freshly allocated (zeroed) tensors.
    ///
    /// Errors: missing, unknown or mistyped inputs; in checked mode, an
    /// out-of-bounds access.
    pub fn run(&self, inputs: &BTreeMap<String, Tensor>) -> Result<Vec<(String, Tensor)>> {
        let mut outputs = Vec::new();
        self.run_into(inputs, &mut outputs)?;
        Ok(outputs)
    }

    /// Like [`run`](Self::run), but writes into `outputs`, reusing its
    /// tensors when they are this program's outputs (names and types, in
    /// order; pass back what a previous call returned) and replacing its
    /// contents otherwise. With reused outputs, a call allocates nothing,
    /// which is what benchmarks want. Reused outputs are not cleared:
    /// elements a program never writes keep their old values.
    pub fn run_into(
        &self,
        inputs: &BTreeMap<String, Tensor>,
        outputs: &mut Vec<(String, Tensor)>,
    ) -> Result<()> {
        self.run_timed(&owned_inputs(inputs), Outputs::Owned(outputs), None)
    }

    /// Like [`run`](Self::run) on inputs the caller owns, read in place
    /// (no copy): what a binding to another array library wants. The
    /// element slices must hold as many elements as their shapes; a
    /// mismatch is an [`CpuError::InputType`] error.
    pub fn run_borrowed(
        &self,
        inputs: &BTreeMap<String, TensorRef<'_>>,
    ) -> Result<Vec<(String, Tensor)>> {
        let given = borrowed_inputs(inputs)?;
        let mut outputs = Vec::new();
        self.run_timed(&given, Outputs::Owned(&mut outputs), None)?;
        Ok(outputs)
    }

    /// Like [`run_borrowed`](Self::run_borrowed), writing the outputs into
    /// caller memory: `outputs` holds one tensor per program output, in
    /// signature order, each of the output's type. Every element is
    /// written; none is read first.
    pub fn run_borrowed_into(
        &self,
        inputs: &BTreeMap<String, TensorRef<'_>>,
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let given = borrowed_inputs(inputs)?;
        let p = &self.program;
        if outputs.len() != p.outputs.len() {
            return Err(CpuError::OutputCount {
                expected: p.outputs.len(),
                got: outputs.len(),
            });
        }
        for ((name, b), t) in p.outputs.iter().zip(outputs.iter()) {
            let expected = &p.buffer(*b).ty;
            let (dtype, len) = (t.elements.as_ref().dtype(), t.elements.as_ref().len());
            let got = if birkhoff_ir::num_elements(t.shape) == Some(len) {
                TensorType::new(dtype, t.shape)
            } else {
                TensorType::new(dtype, [len])
            };
            if &got != expected {
                return Err(CpuError::OutputType {
                    name: name.clone(),
                    expected: expected.clone(),
                    got,
                });
            }
        }
        // Caller memory for a big output is often fresh from the system
        // (a new tensor each call); advised before the first touch, it is
        // mapped in huge pages, as the outputs the executable allocates are.
        for (t, (_, b)) in outputs.iter_mut().zip(&p.outputs) {
            let addr = t.elements.addr_mut();
            runtime::advise_huge_pages(addr as *const u8, p.buffer(*b).ty.size_bytes());
        }
        self.run_timed(&given, Outputs::Borrowed(outputs), None)
    }

    /// Runs once like [`CpuExecutable::run`], discarding the outputs, and
    /// returns the wall time of every kernel, in program order (a profile:
    /// which kernels a run's time goes to).
    ///
    /// # Errors
    /// As [`CpuExecutable::run`].
    pub fn profile(&self, inputs: &BTreeMap<String, Tensor>) -> Result<Vec<KernelTime>> {
        let mut outputs = Vec::new();
        let mut times = Vec::with_capacity(self.kernels.len());
        self.run_timed(
            &owned_inputs(inputs),
            Outputs::Owned(&mut outputs),
            Some(&mut times),
        )?;
        Ok(times)
    }

    /// Runs on `inputs`: each input's type and the address of its
    /// elements, which the caller keeps alive and unchanged for the call.
    fn run_timed(
        &self,
        inputs: &BTreeMap<&str, (TensorType, usize)>,
        outputs: Outputs<'_, '_>,
        mut times: Option<&mut Vec<KernelTime>>,
    ) -> Result<()> {
        let p = &self.program;
        for &name in inputs.keys() {
            if !p.inputs.iter().any(|(n, _)| n == name) {
                return Err(CpuError::UnknownInput {
                    name: name.to_string(),
                    known: p
                        .inputs
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        let mut input_addrs = Vec::with_capacity(p.inputs.len());
        for (name, b) in &p.inputs {
            let expected = &p.buffer(*b).ty;
            let (ty, addr) = inputs
                .get(name.as_str())
                .ok_or_else(|| CpuError::MissingInput {
                    name: name.clone(),
                    expected: expected.clone(),
                })?;
            if ty != expected {
                return Err(CpuError::InputType {
                    name: name.clone(),
                    expected: expected.clone(),
                    got: ty.clone(),
                });
            }
            input_addrs.push((*b, *addr));
        }
        let mut owned = None;
        let mut datas: Vec<Slot<'_, '_>> = match outputs {
            Outputs::Owned(outputs) => {
                let reusable = outputs.len() == p.outputs.len()
                    && outputs
                        .iter()
                        .zip(&p.outputs)
                        .all(|((n, t), (name, b))| n == name && t.ty() == &p.buffer(*b).ty);
                if !reusable {
                    *outputs = p
                        .outputs
                        .iter()
                        .map(|(name, b)| (name.clone(), zeros(&p.buffer(*b).ty)))
                        .collect();
                }
                let datas = outputs
                    .iter_mut()
                    .map(|(_, t)| {
                        Slot::Owned(std::mem::replace(t, Tensor::scalar_f32(0.0)).into_data())
                    })
                    .collect();
                owned = Some(outputs);
                datas
            }
            Outputs::Borrowed(outputs) => outputs
                .iter_mut()
                .map(|t| Slot::Borrowed(&mut t.elements))
                .collect(),
        };

        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let st = &mut *guard;
        let arena = st.arena.addr();
        for (i, b) in p.buffers.iter().enumerate() {
            st.ptrs[i] = match (&b.kind, st.owned[i].as_mut(), st.bools[i].as_mut()) {
                (BufferKind::Temp { offset }, _, _) => arena + offset,
                (_, Some(a), _) | (_, _, Some(a)) => a.addr(),
                _ => 0,
            };
        }
        for &(b, addr) in &input_addrs {
            st.ptrs[b.0 as usize] = addr;
        }
        // The first output naming a buffer receives it; duplicates copy after.
        let mut first = HashMap::new();
        for (k, (_, b)) in p.outputs.iter().enumerate() {
            if st.bools[b.0 as usize].is_none() && first.insert(*b, k).is_none() {
                st.ptrs[b.0 as usize] = datas[k].addr_mut();
            }
        }
        let status = {
            let ptrs = &st.ptrs;
            let rt = &*self.runtime;
            let mut all = || -> i64 {
                for (k, kernel) in self.kernels.iter().zip(&p.kernels) {
                    let start = std::time::Instant::now();
                    for s in &k.segments {
                        let status = runtime::run_segment(&s.seg, ptrs, rt);
                        if status != 0 {
                            return status;
                        }
                    }
                    if let Some(t) = times.as_deref_mut() {
                        t.push(KernelTime {
                            name: kernel.name.clone(),
                            time: start.elapsed(),
                        });
                    }
                }
                0
            };
            match &self.pool {
                Some(pool) => pool.install(all),
                None => all(),
            }
        };
        for (k, (_, b)) in p.outputs.iter().enumerate() {
            if let Some(a) = &st.bools[b.0 as usize] {
                datas[k].set_bools(a.bytes());
            } else if let Some(&f) = first.get(b)
                && f != k
            {
                let copy = datas[f].to_data();
                datas[k].fill(copy);
            }
        }
        drop(guard);
        if let Some(outputs) = owned {
            for ((_, t), (slot, (_, b))) in
                outputs.iter_mut().zip(datas.into_iter().zip(&p.outputs))
            {
                let Slot::Owned(data) = slot else {
                    unreachable!("owned outputs have owned slots")
                };
                *t = Tensor::new(p.buffer(*b).ty.shape.clone(), data)
                    .expect("output data keeps its length");
            }
        }
        if status != 0 {
            return Err(self.status_error(status));
        }
        Ok(())
    }

    fn status_error(&self, status: i64) -> CpuError {
        if status < 0 {
            let g = &self.runtime.gemms[(-status - 1) as usize];
            return CpuError::OutOfBounds {
                kernel: g.kernel().to_string(),
                access: "matrix product operand".into(),
            };
        }
        let what = &self.accesses[(status - 1) as usize];
        let (access, kernel) = what.rsplit_once(" in kernel ").unwrap_or((what, "?"));
        CpuError::OutOfBounds {
            kernel: kernel.to_string(),
            access: access.to_string(),
        }
    }

    /// Wall-clock time [`compile`] took (verification, code generation,
    /// linking and memory layout).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// The program this executable runs.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Worker threads parallel loops use.
    pub fn threads(&self) -> usize {
        self.runtime.threads
    }

    /// The options it was compiled with.
    pub fn options(&self) -> &CpuOptions {
        &self.options
    }

    /// What code generation did with each kernel.
    pub fn kernel_stats(&self) -> Vec<KernelStats> {
        self.kernels.iter().map(|k| k.stats.clone()).collect()
    }

    /// The machine code of every function, when compiled with
    /// [`CpuOptions::disassemble`].
    pub fn disassembly(&self) -> Option<String> {
        let mut out = String::new();
        for k in &self.kernels {
            for (i, s) in k.segments.iter().enumerate() {
                out.push_str(&format!("; kernel {} segment {i}\n", k.name));
                out.push_str(s.disasm.as_deref()?);
                out.push('\n');
            }
        }
        Some(out)
    }
}

impl fmt::Display for CpuExecutable {
    /// The Cranelift IR of every kernel, as generated (before Cranelift's
    /// own optimizations), with a header per function.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let threads = match (&self.pool, self.runtime.threads) {
            (None, n) if n > 1 => format!("the calling thread ({n} asked for; nothing to split)"),
            (_, n) => format!("{n} thread(s)"),
        };
        writeln!(
            f,
            "; program @{} on {threads}, compiled in {:.1} ms",
            self.program.name,
            self.compile_time.as_secs_f64() * 1e3
        )?;
        for k in &self.kernels {
            for (i, s) in k.segments.iter().enumerate() {
                let how = match (s.seg.parallel, s.seg.split) {
                    (Some(n), true) => format!("parallel over 0..{n}, split across threads"),
                    (Some(n), false) => format!("parallel over 0..{n}, run on one thread"),
                    _ => "serial".to_string(),
                };
                writeln!(f, "\n; kernel {} segment {i}: {how}", k.name)?;
                if k.stats.vector_loops > 0 || !k.stats.scalar_vector_loops.is_empty() {
                    writeln!(
                        f,
                        "; vector loops: {} SIMD, {} scalar",
                        k.stats.vector_loops,
                        k.stats.scalar_vector_loops.len()
                    )?;
                    for why in &k.stats.scalar_vector_loops {
                        writeln!(f, ";   scalar: {why}")?;
                    }
                }
                f.write_str(&s.clif)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use birkhoff_ir::kernel::{
        BufferDecl, BufferId, Expr, Gemm, Index, Kernel, LoopKind, Matrix, ScalarType,
    };
    use birkhoff_ir::{Op, TensorType};

    use super::*;

    /// `y[i] = x[i + shift] * 2` for `i` in `0..extent`, over 8-element buffers.
    fn shifted(extent: usize, shift: i64, kind: LoopKind) -> Program {
        let mut k = Kernel::new("k0_shift");
        let i = k.var(ScalarType::Index);
        k.body = vec![Stmt::Loop {
            var: i,
            extent,
            kind,
            body: vec![Stmt::Store {
                buf: BufferId(1),
                index: Index::var(i, 1),
                value: Expr::binary(
                    Op::Mul,
                    Expr::load(BufferId(0), Index::var(i, 1).shifted(shift)),
                    Expr::constant(ScalarType::F32, 2.0),
                ),
            }],
        }];
        let ty = TensorType::new(DType::F32, [8]);
        Program {
            name: "shift".into(),
            buffers: vec![
                BufferDecl {
                    name: "x".into(),
                    ty: ty.clone(),
                    kind: BufferKind::Input,
                },
                BufferDecl {
                    name: "y".into(),
                    ty,
                    kind: BufferKind::Output,
                },
            ],
            inputs: vec![("x".into(), BufferId(0))],
            outputs: vec![("y".into(), BufferId(1))],
            kernels: vec![k],
            arena_bytes: 0,
        }
    }

    fn x() -> BTreeMap<String, Tensor> {
        let t = Tensor::new([8], TensorData::F32((0..8).map(|v| v as f32).collect())).unwrap();
        BTreeMap::from([("x".to_string(), t)])
    }

    fn checked(threads: usize) -> CpuOptions {
        CpuOptions {
            checked: true,
            threads,
            min_parallel_work: 0,
            ..CpuOptions::default()
        }
    }

    #[test]
    fn checked_mode_catches_out_of_bounds_loads_and_stores() {
        for kind in [LoopKind::Serial, LoopKind::Parallel, LoopKind::Vector] {
            for threads in [1, 2] {
                // Reads one past the end of x.
                let p = shifted(8, 1, kind);
                assert!(compile(&p, &checked(threads)).is_err());
                let exe = compile_inner(&p, &checked(threads), false).unwrap();
                match exe.run(&x()) {
                    Err(CpuError::OutOfBounds { kernel, access }) => {
                        assert_eq!(kernel, "k0_shift");
                        assert_eq!(access, "load of %b0[%i0 + 1] (x, 8 elements)");
                    }
                    other => panic!("{kind:?}: expected out of bounds, got {other:?}"),
                }
                // Writes past the end of y (and reads past x).
                let p = shifted(12, 0, kind);
                let exe = compile_inner(&p, &checked(threads), false).unwrap();
                assert!(matches!(exe.run(&x()), Err(CpuError::OutOfBounds { .. })));
                // Before the start.
                let p = shifted(8, -1, kind);
                let exe = compile_inner(&p, &checked(threads), false).unwrap();
                assert!(matches!(exe.run(&x()), Err(CpuError::OutOfBounds { .. })));
                // In bounds: runs.
                let p = shifted(7, 1, kind);
                let exe = compile_inner(&p, &checked(threads), false).unwrap();
                let y = exe.run(&x()).unwrap();
                assert_eq!(
                    y[0].1.to_f64_vec()[..7],
                    [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]
                );
            }
        }
    }

    #[test]
    fn programs_with_nothing_to_split_run_on_the_calling_thread() {
        let p = shifted(7, 1, LoopKind::Parallel);
        let small = CpuOptions {
            threads: 2,
            ..CpuOptions::default()
        };
        let split = CpuOptions {
            min_parallel_work: 0,
            ..small
        };
        let (small, split) = (compile(&p, &small).unwrap(), compile(&p, &split).unwrap());
        assert!(small.pool.is_none() && split.pool.is_some());
        let header = |e: &CpuExecutable| e.to_string().lines().next().unwrap().to_string();
        assert!(
            header(&small).contains("on the calling thread (2 asked for; nothing to split)"),
            "{}",
            header(&small)
        );
        assert!(
            header(&split).contains("on 2 thread(s)"),
            "{}",
            header(&split)
        );
        assert_eq!(small.run(&x()).unwrap(), split.run(&x()).unwrap());
    }

    #[test]
    fn indices_past_i64_are_refused_by_the_verifier() {
        // 2^62 · 4 wraps to 0 in i64; the verifier's range is exact.
        let mut p = shifted(5, 0, LoopKind::Serial);
        if let Stmt::Loop { var, body, .. } = &mut p.kernels[0].body[0]
            && let Stmt::Store { index, .. } = &mut body[0]
        {
            *index = Index::var(*var, 1 << 62);
        }
        let e = compile(&p, &CpuOptions::default()).unwrap_err();
        assert!(matches!(e, CpuError::Invalid(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "invalid program: kernel k0_shift: store into y: \
             index range 0..=18446744073709551616 is outside 0..8"
        );
    }

    #[test]
    fn checked_mode_catches_out_of_bounds_matrix_products() {
        let mut p = shifted(8, 0, LoopKind::Serial);
        let m = |buf, offset| Matrix {
            buf: BufferId(buf),
            offset,
            row_stride: 2,
            col_stride: 1,
            batch_stride: 0,
        };
        let mut k = Kernel::new("k1_gemm");
        k.body = vec![Stmt::Gemm(Gemm {
            m: 2,
            n: 2,
            k: 2,
            batch: 1,
            a: m(0, 5),
            b: m(0, 0),
            c: m(1, 0),
            accumulate: false,
            row_sumsq: None,
        })];
        p.kernels.push(k);
        assert!(compile(&p, &checked(1)).is_err());
        let exe = compile_inner(&p, &checked(1), false).unwrap();
        match exe.run(&x()) {
            Err(CpuError::OutOfBounds { kernel, access }) => {
                assert_eq!(kernel, "k1_gemm");
                assert_eq!(access, "matrix product operand");
            }
            other => panic!("expected out of bounds, got {other:?}"),
        }
    }

    #[test]
    fn matrix_products_the_runtime_lacks_are_rejected() {
        let mut p = shifted(8, 0, LoopKind::Serial);
        let m = |buf| Matrix {
            buf: BufferId(buf),
            offset: 0,
            row_stride: 2,
            col_stride: 1,
            batch_stride: 0,
        };
        let mut k = Kernel::new("k1_gemm");
        k.body = vec![Stmt::Gemm(Gemm {
            m: 2,
            n: 2,
            k: 2,
            batch: 1,
            a: m(0),
            b: m(0),
            c: m(1),
            accumulate: false,
            row_sumsq: Some(m(1)),
        })];
        p.kernels.push(k);
        match compile(&p, &CpuOptions::default()) {
            Err(CpuError::Unsupported { kernel, message }) => {
                assert_eq!(kernel, "k1_gemm");
                assert!(message.contains("row sums of squares"), "{message}");
            }
            Err(e) => panic!("expected unsupported, got {e}"),
            Ok(_) => panic!("expected unsupported, got an executable"),
        }
    }

    #[test]
    fn bf16_matrix_product_results_are_rejected() {
        let mut p = shifted(8, 0, LoopKind::Serial);
        p.buffers.push(BufferDecl {
            name: "c".into(),
            ty: TensorType::new(DType::Bf16, [4]),
            kind: BufferKind::Output,
        });
        p.outputs.push(("c".into(), BufferId(2)));
        let m = |buf| Matrix {
            buf: BufferId(buf),
            offset: 0,
            row_stride: 2,
            col_stride: 1,
            batch_stride: 0,
        };
        let mut k = Kernel::new("k1_gemm");
        k.body = vec![Stmt::Gemm(Gemm {
            m: 2,
            n: 2,
            k: 2,
            batch: 1,
            a: m(0),
            b: m(0),
            c: m(2),
            accumulate: false,
            row_sumsq: None,
        })];
        p.kernels.push(k);
        match compile(&p, &CpuOptions::default()) {
            Err(CpuError::Unsupported { kernel, message }) => {
                assert_eq!(kernel, "k1_gemm");
                assert!(message.contains("not bf16"), "{message}");
            }
            Err(e) => panic!("expected unsupported, got {e}"),
            Ok(_) => panic!("expected unsupported, got an executable"),
        }
    }
}
