//! The runtime side of generated code: calling it, the routines it calls
//! (matrix products, libm), worker threads and aligned memory.
//!
//! This is the one module that touches raw pointers and calls into JIT
//! code. Every `unsafe` block rests on the same facts, established before
//! any call: the program passed `verify_program` (every load and store is
//! in bounds for every iteration, or in checked mode is tested at run time
//! first), each entry of the pointer table addresses a live allocation of
//! at least the buffer's declared size and type that nothing else touches
//! during the call, inputs are never written (the verifier rejects stores
//! into them), and each function pointer was produced by this crate's
//! code generator with the segment ABI of [`crate::codegen`] and outlives
//! the call (the JIT memory is freed only when the executable is dropped).
#![allow(
    unsafe_code,
    reason = "calls JIT-compiled code and the gemm crate through raw pointers"
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use birkhoff_ir::DType;
use birkhoff_ir::kernel::{Gemm, Matrix, Program};
use cranelift_codegen::ir::types;
use cranelift_codegen::ir::{AbiParam, Signature, Type};
use cranelift_jit::{JITBuilder, JITModule};
use rayon::prelude::*;

/// Math routines generated code calls instead of inlining.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Libm {
    /// `f64::exp`.
    ExpF64,
    /// `f64::ln`.
    LogF64,
    /// `f64::tanh`.
    TanhF64,
    /// `1 / (1 + exp(-x))` in `f64`.
    SigmoidF64,
    /// `f64::powf`.
    PowF64,
    /// `f32` power computed in `f64` and rounded once.
    PowF32,
}

extern "C" fn exp_f64(x: f64) -> f64 {
    x.exp()
}

extern "C" fn log_f64(x: f64) -> f64 {
    x.ln()
}

extern "C" fn tanh_f64(x: f64) -> f64 {
    x.tanh()
}

extern "C" fn sigmoid_f64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

extern "C" fn pow_f64(a: f64, b: f64) -> f64 {
    a.powf(b)
}

extern "C" fn pow_f32(a: f32, b: f32) -> f32 {
    f64::from(a).powf(f64::from(b)) as f32
}

impl Libm {
    /// Every routine.
    pub const ALL: [Libm; 6] = [
        Libm::ExpF64,
        Libm::LogF64,
        Libm::TanhF64,
        Libm::SigmoidF64,
        Libm::PowF64,
        Libm::PowF32,
    ];

    /// The symbol generated code links against.
    pub fn symbol(self) -> &'static str {
        match self {
            Libm::ExpF64 => "birkhoff_exp_f64",
            Libm::LogF64 => "birkhoff_log_f64",
            Libm::TanhF64 => "birkhoff_tanh_f64",
            Libm::SigmoidF64 => "birkhoff_sigmoid_f64",
            Libm::PowF64 => "birkhoff_pow_f64",
            Libm::PowF32 => "birkhoff_pow_f32",
        }
    }

    fn address(self) -> *const u8 {
        match self {
            Libm::ExpF64 => exp_f64 as extern "C" fn(f64) -> f64 as *const u8,
            Libm::LogF64 => log_f64 as extern "C" fn(f64) -> f64 as *const u8,
            Libm::TanhF64 => tanh_f64 as extern "C" fn(f64) -> f64 as *const u8,
            Libm::SigmoidF64 => sigmoid_f64 as extern "C" fn(f64) -> f64 as *const u8,
            Libm::PowF64 => pow_f64 as extern "C" fn(f64, f64) -> f64 as *const u8,
            Libm::PowF32 => pow_f32 as extern "C" fn(f32, f32) -> f32 as *const u8,
        }
    }

    /// Its signature.
    pub fn signature(self, mut sig: Signature) -> Signature {
        let (ty, args): (Type, usize) = match self {
            Libm::PowF32 => (types::F32, 2),
            Libm::PowF64 => (types::F64, 2),
            _ => (types::F64, 1),
        };
        for _ in 0..args {
            sig.params.push(AbiParam::new(ty));
        }
        sig.returns.push(AbiParam::new(ty));
        sig
    }
}

/// The symbol of the matrix-product entry point.
pub(crate) const GEMM_SYMBOL: &str = "birkhoff_gemm";

/// Registers every runtime symbol with a JIT builder.
pub(crate) fn register_symbols(jb: &mut JITBuilder) {
    let gemm = gemm_entry as extern "C" fn(*const Runtime, i64, *const usize) -> i64;
    jb.symbol(GEMM_SYMBOL, gemm as *const u8);
    for f in Libm::ALL {
        jb.symbol(f.symbol(), f.address());
    }
}

/// One operand of a matrix product, resolved to element offsets.
#[derive(Clone, Debug)]
pub(crate) struct Operand {
    buf: usize,
    offset: usize,
    row_stride: isize,
    col_stride: isize,
    batch_stride: usize,
    /// Elements of the buffer (for checked mode).
    len: usize,
}

impl Operand {
    fn new(program: &Program, m: &Matrix) -> Operand {
        Operand {
            buf: m.buf.0 as usize,
            offset: m.offset,
            row_stride: m.row_stride as isize,
            col_stride: m.col_stride as isize,
            batch_stride: m.batch_stride,
            len: program.buffer(m.buf).len(),
        }
    }

    /// The last element touched by `batch` products of `rows × cols`.
    fn last(&self, rows: usize, cols: usize, batch: usize) -> usize {
        self.offset
            + (batch - 1) * self.batch_stride
            + (rows - 1) * self.row_stride as usize
            + (cols - 1) * self.col_stride as usize
    }
}

/// A matrix product as the runtime performs it.
#[derive(Clone, Debug)]
pub(crate) struct GemmCall {
    f64: bool,
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    a: Operand,
    b: Operand,
    c: Operand,
    accumulate: bool,
    /// For error messages.
    kernel: String,
}

impl GemmCall {
    /// Resolves a kernel IR matrix product (verified: one float type).
    pub fn new(program: &Program, g: &Gemm, kernel: &str) -> GemmCall {
        GemmCall {
            f64: program.buffer(g.c.buf).dtype() == DType::F64,
            m: g.m,
            n: g.n,
            k: g.k,
            batch: g.batch,
            a: Operand::new(program, &g.a),
            b: Operand::new(program, &g.b),
            c: Operand::new(program, &g.c),
            accumulate: g.accumulate,
            kernel: kernel.to_string(),
        }
    }

    /// Its multiply-adds.
    pub fn work(&self) -> u64 {
        [self.m, self.n, self.k, self.batch]
            .into_iter()
            .fold(1u64, |w, d| w.saturating_mul(d as u64))
    }

    /// Whether every operand stays inside its buffer.
    fn in_bounds(&self) -> bool {
        self.a.last(self.m, self.k, self.batch) < self.a.len
            && self.b.last(self.k, self.n, self.batch) < self.b.len
            && self.c.last(self.m, self.n, self.batch) < self.c.len
    }

    /// The kernel that calls it.
    pub fn kernel(&self) -> &str {
        &self.kernel
    }
}

/// What generated code receives as its `ctx` argument.
#[derive(Debug)]
pub(crate) struct Runtime {
    /// Every matrix product of the program, by position.
    pub gemms: Vec<GemmCall>,
    /// Worker threads (1: everything on the calling thread).
    pub threads: usize,
    /// Matrix products with fewer multiply-adds run on one thread.
    pub min_parallel_work: u64,
    /// Whether matrix products check their bounds.
    pub checked: bool,
}

/// Gives `-0` to every element of `g`'s product (one batch, whose
/// operands start at the byte addresses `a`, `b`, `c`) that the GEMM
/// computed as `+0` while its products are all `-0`. The runtime GEMM
/// starts each sum from `+0`, the IR from the `k = 0` product, and
/// `+0 + -0 = +0` while `-0 + -0 = -0`; every other sum agrees. Cheap
/// unless an output is all zeros: an element is only looked at when it is
/// `+0`, and its products only up to the first that is not `-0`.
///
/// # Safety
/// `a`, `b` and `c` address `g`'s operands of element type `T`, every
/// element inside its buffer.
unsafe fn restore_negative_zeros<T>(g: &GemmCall, a: usize, b: usize, c: usize, neg_zero: T)
where
    T: Copy + std::ops::Mul<Output = T> + Into<f64>,
{
    if g.k == 0 {
        return;
    }
    let (a, b, c) = (a as *const T, b as *const T, c as *mut T);
    let elem =
        |m: &Operand, i: usize, j: usize| i as isize * m.row_stride + j as isize * m.col_stride;
    for i in 0..g.m {
        for j in 0..g.n {
            // SAFETY: (i, j) is inside c (the caller's contract).
            let cij = unsafe { c.offset(elem(&g.c, i, j)) };
            let v: f64 = unsafe { *cij }.into();
            if v != 0.0 || v.is_sign_negative() {
                continue;
            }
            let all_negative_zero = (0..g.k).all(|p| {
                // SAFETY: (i, p) is inside a and (p, j) inside b.
                let prod: f64 =
                    unsafe { *a.offset(elem(&g.a, i, p)) * *b.offset(elem(&g.b, p, j)) }.into();
                prod == 0.0 && prod.is_sign_negative()
            });
            if all_negative_zero {
                // SAFETY: as above.
                unsafe { *cij = neg_zero };
            }
        }
    }
}

/// Runs one batch of the `f32` product `g`, operands at the byte
/// addresses `a`, `b`, `c`, with [`crate::row_sweep`] if that routine takes
/// it on this CPU (few rows, contiguous columns in `b` and `c`); whether it
/// did.
///
/// # Safety
/// `a`, `b` and `c` address `g`'s operands as for the GEMM call: every
/// element inside its buffer, `c` writable and distinct from the inputs.
unsafe fn row_sweep(g: &GemmCall, a: usize, b: usize, c: usize, parallel: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let stride = |s: isize| usize::try_from(s).ok();
        let (Some(ars), Some(acs), Some(brs), Some(crs)) = (
            stride(g.a.row_stride),
            stride(g.a.col_stride),
            stride(g.b.row_stride),
            stride(g.c.row_stride),
        ) else {
            return false;
        };
        let p = crate::row_sweep::Product {
            m: g.m,
            n: g.n,
            k: g.k,
            a_strides: (ars, acs),
            b_row_stride: brs,
            c_row_stride: crs,
            accumulate: g.accumulate,
        };
        let contiguous = g.b.col_stride == 1 && g.c.col_stride == 1;
        if contiguous && p.fits() && crate::row_sweep::available() {
            // SAFETY: the caller's guarantees, and the instructions are there.
            unsafe { crate::row_sweep::run(&p, a, b, c, parallel) };
            return true;
        }
    }
    let _ = (g, a, b, c, parallel);
    false
}

extern "C" fn gemm_entry(ctx: *const Runtime, id: i64, ptrs: *const usize) -> i64 {
    // SAFETY: generated code passes the `Runtime` the executable owns and
    // keeps alive for the duration of every call.
    let rt = unsafe { &*ctx };
    let g = &rt.gemms[id as usize];
    if rt.checked && !g.in_bounds() {
        // Checked-mode access codes count up from 1; matrix products down from -1.
        return -id - 1;
    }
    let base = |o: &Operand| -> usize {
        // SAFETY: `ptrs` is the pointer table of the running call, with one
        // entry per program buffer; `o.buf` is a verified buffer id.
        unsafe { *ptrs.add(o.buf) }
    };
    let (pa, pb, pc) = (base(&g.a), base(&g.b), base(&g.c));
    let par = if rt.threads > 1 && g.work() >= rt.min_parallel_work {
        gemm::Parallelism::Rayon(rt.threads)
    } else {
        gemm::Parallelism::None
    };
    let parallel = matches!(par, gemm::Parallelism::Rayon(_));
    for bi in 0..g.batch {
        let at =
            |o: &Operand, base: usize, size: usize| base + (o.offset + bi * o.batch_stride) * size;
        let (a, b, c) = (at(&g.a, pa, 4), at(&g.b, pb, 4), at(&g.c, pc, 4));
        if g.f64 {
            // SAFETY: the verifier (or the check above) keeps every element
            // of a, b and c inside its buffer; c is writable and distinct
            // from inputs; strides are in elements, as gemm expects.
            unsafe {
                gemm::gemm::<f64>(
                    g.m,
                    g.n,
                    g.k,
                    at(&g.c, pc, 8) as *mut f64,
                    g.c.col_stride,
                    g.c.row_stride,
                    g.accumulate,
                    at(&g.a, pa, 8) as *const f64,
                    g.a.col_stride,
                    g.a.row_stride,
                    at(&g.b, pb, 8) as *const f64,
                    g.b.col_stride,
                    g.b.row_stride,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
            }
        // SAFETY (the sweep): as for f64 above.
        } else if !unsafe { row_sweep(g, a, b, c, parallel) } {
            // SAFETY: as for f64 above.
            unsafe {
                gemm::gemm::<f32>(
                    g.m,
                    g.n,
                    g.k,
                    at(&g.c, pc, 4) as *mut f32,
                    g.c.col_stride,
                    g.c.row_stride,
                    g.accumulate,
                    at(&g.a, pa, 4) as *const f32,
                    g.a.col_stride,
                    g.a.row_stride,
                    at(&g.b, pb, 4) as *const f32,
                    g.b.col_stride,
                    g.b.row_stride,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
            }
        }
        if !g.accumulate {
            let size = if g.f64 { 8 } else { 4 };
            let (a, b, c) = (at(&g.a, pa, size), at(&g.b, pb, size), at(&g.c, pc, size));
            // SAFETY: the operands the GEMM call above read and wrote.
            unsafe {
                if g.f64 {
                    restore_negative_zeros::<f64>(g, a, b, c, -0.0);
                } else {
                    restore_negative_zeros::<f32>(g, a, b, c, -0.0);
                }
            }
        }
    }
    0
}

/// The address of a compiled segment function.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry(pub usize);

type SegmentFn = extern "C" fn(*const usize, i64, i64, *const Runtime) -> i64;

impl Entry {
    /// Runs iterations `[lo, hi)` (or the whole segment); returns its status.
    fn call(self, ptrs: &[usize], lo: i64, hi: i64, rt: &Runtime) -> i64 {
        // SAFETY: `self.0` is the finalized address of a function this crate
        // generated with exactly this signature (see the module docs for
        // why its memory accesses are valid), and the JIT memory outlives
        // the executable that owns both it and `ptrs`.
        let f: SegmentFn = unsafe { std::mem::transmute::<usize, SegmentFn>(self.0) };
        f(ptrs.as_ptr(), lo, hi, rt)
    }
}

/// A compiled segment as the runtime schedules it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    pub entry: Entry,
    /// Extent of its parallel loop, if it is one.
    pub parallel: Option<usize>,
    /// Whether that loop is split across threads.
    pub split: bool,
}

/// Runs one segment; returns the first non-zero status.
pub(crate) fn run_segment(seg: &Segment, ptrs: &[usize], rt: &Runtime) -> i64 {
    let Some(extent) = seg.parallel else {
        return seg.entry.call(ptrs, 0, 0, rt);
    };
    if !seg.split || rt.threads <= 1 || extent <= 1 {
        return seg.entry.call(ptrs, 0, extent as i64, rt);
    }
    let chunks = extent.min(rt.threads * 4);
    let status = AtomicI64::new(0);
    (0..chunks).into_par_iter().for_each(|c| {
        let lo = (extent * c / chunks) as i64;
        let hi = (extent * (c + 1) / chunks) as i64;
        if lo < hi {
            let s = seg.entry.call(ptrs, lo, hi, rt);
            if s != 0 {
                let _ = status.compare_exchange(0, s, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    });
    status.into_inner()
}

/// Shared worker pools, one per thread count (pools are expensive to
/// start, and executables with the same setting can share one).
pub(crate) fn pool(threads: usize) -> Result<Arc<rayon::ThreadPool>, rayon::ThreadPoolBuildError> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut pools = pools
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = pools.get(&threads) {
        return Ok(p.clone());
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("birkhoff-cpu-{i}"))
            .build()?,
    );
    pools.insert(threads, p.clone());
    Ok(p)
}

/// Zeroed memory at a 64-byte boundary (2 MiB for big buffers), freed on
/// drop: a program's arena and the buffers an executable owns.
pub(crate) struct Aligned {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

// SAFETY: `Aligned` owns its bytes like a `Vec<u8>`; access goes through
// `&self` / `&mut self`.
unsafe impl Send for Aligned {}
// SAFETY: as for `Send`: shared references only read.
unsafe impl Sync for Aligned {}

/// Buffers of at least this many bytes are placed on transparent huge
/// pages where the kernel offers them ([`advise_huge_pages`]).
pub const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// The size of a transparent huge page on x86-64 and most AArch64 Linux.
const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the whole 2 MiB pages inside `len` bytes at
/// `ptr` with transparent huge pages (`madvise(MADV_HUGEPAGE)`), when
/// `len` is at least [`HUGE_PAGE_MIN_BYTES`]. Done before the memory is
/// first touched, the first touch maps a 2 MiB page at once: a fresh
/// output of 168 MiB then costs a few hundred faults instead of 43,000.
/// Advice only: where the kernel has huge pages off, or on other
/// systems, nothing changes.
pub(crate) fn advise_huge_pages(ptr: *const u8, len: usize) {
    if len < HUGE_PAGE_MIN_BYTES {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
    let end = (ptr as usize + len) / HUGE_PAGE * HUGE_PAGE;
    if end <= start {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: `[start, end)` lies inside the caller's live allocation;
    // MADV_HUGEPAGE changes how its pages are backed, never its contents.
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
    }
}

impl Aligned {
    /// `bytes` zeroed bytes (at least one line, so the address is valid),
    /// on huge pages when big.
    pub fn zeroed(bytes: usize) -> Aligned {
        let size = bytes.max(1).next_multiple_of(64);
        let align = if size >= HUGE_PAGE_MIN_BYTES {
            HUGE_PAGE
        } else {
            64
        };
        let layout = std::alloc::Layout::from_size_align(size, align)
            .unwrap_or_else(|_| panic!("{size} bytes exceed the address space"));
        // SAFETY: `size` is at least 64. Allocated without zeroing, so the
        // advice comes before the first touch.
        let raw = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = std::ptr::NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        advise_huge_pages(raw, size);
        // SAFETY: `raw` holds `size` writable bytes.
        unsafe { raw.write_bytes(0, size) };
        Aligned { ptr, layout }
    }

    /// The base address.
    pub fn addr(&mut self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` holds `layout.size()` initialized bytes (zeroed at
        // allocation) for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// The bytes, mutably.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `bytes`, with exclusive access through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Owns the JIT code and frees it on drop (behind a mutex only so that
/// executables are `Sync`; nothing locks it before the drop).
pub(crate) struct Code(Mutex<Option<JITModule>>);

impl Code {
    pub fn new(module: JITModule) -> Code {
        Code(Mutex::new(Some(module)))
    }
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Code")
    }
}

impl Drop for Code {
    fn drop(&mut self) {
        let module = self
            .0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(m) = module {
            // SAFETY: `Code` is dropped with the executable that holds every
            // function pointer into this memory; no call can be running
            // (calls borrow the executable).
            unsafe { m.free_memory() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kilobytes of `AnonHugePages` in the mapping of `/proc/self/smaps`
    /// that holds `addr`.
    fn huge_kb(addr: usize) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((a, b)) = range.split_once('-')
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = (a..b).contains(&addr);
                continue;
            }
            if inside && let Some(kb) = line.strip_prefix("AnonHugePages:") {
                return kb.trim().trim_end_matches(" kB").trim().parse().ok();
            }
        }
        None
    }

    #[test]
    fn big_buffers_are_zeroed_at_huge_page_boundaries() {
        let mut a = Aligned::zeroed(9 << 20);
        assert_eq!(a.addr() % HUGE_PAGE, 0);
        assert!(a.bytes().len() >= 9 << 20);
        assert!(a.bytes().iter().all(|&b| b == 0));
        let small = Aligned::zeroed(100);
        assert_eq!(small.bytes().len(), 128);
        // Where the kernel offers transparent huge pages on request, the
        // advice before the first touch gets them.
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        if thp.contains("[madvise]") || thp.contains("[always]") {
            let kb = huge_kb(a.addr()).expect("the buffer's mapping is in smaps");
            assert!(kb >= 2048, "{kb} kB of huge pages under a 9 MiB buffer");
        }
    }
}
