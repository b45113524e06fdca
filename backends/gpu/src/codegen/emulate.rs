//! Runs the generated kernels on the host, one OS thread per GPU thread,
//! so that the code generator's numerics are tested on machines without
//! a GPU.
//!
//! The program's module is built and optimized exactly as for the GPU;
//! its LLVM IR is then retargeted to the host: address spaces are
//! dropped (global and shared memory are ordinary host memory; blocks run
//! one after another, so a shared-memory array is private to the block
//! running), and every NVVM intrinsic becomes a call into this file —
//! thread and block indices from thread-local state, `barrier0` a real
//! barrier over the block's threads, `bar.warp.sync` one over the warp's,
//! `shfl.sync.bfly` and `shfl.sync.idx` exchanges within the warp, and `mma.sync.m16n8k16` a warp-wide product computed from the
//! 32 lanes' fragments with the PTX ISA's fragment layout. The module is
//! then JIT-compiled for the host and every launch run in order, each
//! block's threads in parallel.
//!
//! What this checks is the generated code's logic — launch mapping,
//! indexing, vectorization, barriers, block reductions, the tensor-core
//! fragment layout, scalar semantics — not NVPTX instruction selection
//! or the timing of a real device. A thread that waits at a barrier the
//! rest of its block never reaches is a code-generation bug; the emulator
//! reports it and aborts rather than hang.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use birkhoff_ir::kernel::Program;
use birkhoff_ir::{Tensor, TensorType};
use inkwell::OptimizationLevel;
use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::targets::{InitializationConfig, Target, TargetMachine};

use super::optimized;
use crate::module::{const_storage, from_storage, to_storage};
use crate::{CodegenOptions, GpuError, GpuModule, Result};

/// How long a thread waits at a barrier before the emulator declares the
/// block deadlocked.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(60);

/// Compiles `program` for the GPU and runs it on the host (see the
/// module documentation). Inputs are checked as the device runtime checks
/// them; outputs come back by name, in signature order.
pub fn emulate(
    program: &Program,
    opts: &CodegenOptions,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<Vec<(String, Tensor)>> {
    let ctx = Context::create();
    let (module, infos, _) = optimized(&ctx, program, opts)?;
    let text = host_ir(&module.print_to_string().to_string());
    drop(module);

    Target::initialize_native(&InitializationConfig::default())
        .map_err(|e| GpuError::Llvm(format!("host target: {e}")))?;
    let host = ctx
        .create_module_from_ir(MemoryBuffer::create_from_memory_range_copy(
            text.as_bytes(),
            "host",
        ))
        .map_err(|e| GpuError::Llvm(format!("retargeting to the host: {e}")))?;
    host.set_triple(&TargetMachine::get_default_triple());
    let ee = host
        .create_jit_execution_engine(OptimizationLevel::None)
        .map_err(|e| GpuError::Llvm(format!("host JIT: {e}")))?;
    for f in host.get_functions() {
        let name = f.get_name().to_string_lossy().into_owned();
        if f.count_basic_blocks() > 0 || !name.starts_with("emu.") {
            continue;
        }
        let addr = intrinsic_address(&name)
            .ok_or_else(|| GpuError::Llvm(format!("the emulator has no {name}")))?;
        ee.add_global_mapping(&f, addr);
    }

    // The module's buffer plan, as the device runtime would allocate it.
    let (buffers, ins, outs) = GpuModule::buffer_plan(program);
    let plan = GpuModule {
        version: crate::ARTIFACT_VERSION,
        name: program.name.clone(),
        ptx: String::new(),
        arch: opts.arch.clone(),
        buffers,
        inputs: ins,
        outputs: outs,
        arena_bytes: program.arena_bytes,
        launches: Vec::new(),
    };
    plan.check_inputs(inputs)?;
    // Memory not written by an input or a constant starts as all-ones
    // bytes (NaN for floats), so a kernel reading what nothing wrote
    // shows in its outputs.
    let mut arena = words(program.arena_bytes);
    let mut own: Vec<Option<Vec<u128>>> = Vec::new();
    for b in &plan.buffers {
        let bytes = b
            .size_bytes()
            .ok_or_else(|| GpuError::InvalidModule(format!("buffer '{}' is too big", b.name)))?;
        own.push(match b.role.as_str() {
            "temp" => None,
            "input" => {
                let t = &inputs[&b.name];
                Some(from_bytes(&to_storage(t)))
            }
            "const" => Some(from_bytes(&const_storage(b)?)),
            _ => Some(words(bytes)),
        });
    }
    let arena_base = arena.as_mut_ptr() as u64;
    let table: Vec<u64> = plan
        .buffers
        .iter()
        .zip(own.iter_mut())
        .map(|(b, o)| match o {
            Some(v) => v.as_mut_ptr() as u64,
            None => arena_base + b.offset as u64,
        })
        .collect();

    for info in &infos {
        let addr = ee
            .get_function_address(&info.entry)
            .map_err(|e| GpuError::Llvm(format!("entry {}: {e}", info.entry)))?;
        run_grid(addr, &table, info.grid, info.block);
    }

    let mut out = Vec::new();
    for (name, i) in &plan.outputs {
        let b = &plan.buffers[*i];
        let ty: TensorType = b.ty()?;
        let bytes = ty.size_bytes();
        let words = own[*i]
            .as_ref()
            .ok_or_else(|| GpuError::InvalidModule(format!("output '{name}' is a temporary")))?;
        let raw: Vec<u8> = words
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .take(bytes)
            .collect();
        out.push((name.clone(), from_storage(&ty, &raw)?));
    }
    // Keep the memory alive until every launch is done.
    drop(arena);
    Ok(out)
}

/// `bytes` of all-ones memory, 16-byte aligned (as device allocations
/// are at least), never empty.
fn words(bytes: usize) -> Vec<u128> {
    vec![u128::MAX; bytes.div_ceil(16).max(1)]
}

fn from_bytes(b: &[u8]) -> Vec<u128> {
    let mut v = words(b.len());
    for (w, c) in v.iter_mut().zip(b.chunks(16)) {
        let mut x = [0xffu8; 16];
        x[..c.len()].copy_from_slice(c);
        *w = u128::from_le_bytes(x);
    }
    v
}

/// The module's LLVM IR, retargeted to the host (see the module docs).
fn host_ir(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.starts_with("target datalayout") || line.starts_with("target triple") {
            continue;
        }
        let mut l = line
            .replace(" addrspace(1)", "")
            .replace(" addrspace(3)", "")
            .replace("addrspacecast", "bitcast")
            .replace("@llvm.nvvm.", "@emu.nvvm.");
        if l.starts_with("declare") && l.contains("@emu.nvvm.") {
            // Intrinsic attributes (`memory(none)`, ...) do not hold for
            // the emulating calls.
            if let Some(p) = l.rfind(')') {
                l.truncate(p + 1);
            }
            if l.contains("@emu.nvvm.mma.") {
                l = mma_wrapper(&l);
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// A definition for the `mma` declaration `decl` that passes the
/// fragments to [`emu_mma`] and returns what it writes.
fn mma_wrapper(decl: &str) -> String {
    let name_start = decl.find('@').unwrap_or(0);
    let name_end = decl[name_start..]
        .find('(')
        .map_or(decl.len(), |i| name_start + i);
    let name = &decl[name_start..name_end];
    let s = "{ float, float, float, float }";
    let mut o = String::new();
    o.push_str("declare void @emu.mma.impl(ptr, i32, i32, i32, i32, i32, i32, float, float, float, float)\n");
    o.push_str(&format!(
        "define {s} {name}(i32 %a0, i32 %a1, i32 %a2, i32 %a3, i32 %b0, i32 %b1, float %c0, float %c1, float %c2, float %c3) {{\n"
    ));
    o.push_str("  %o = alloca [4 x float], align 4\n");
    o.push_str("  call void @emu.mma.impl(ptr %o, i32 %a0, i32 %a1, i32 %a2, i32 %a3, i32 %b0, i32 %b1, float %c0, float %c1, float %c2, float %c3)\n");
    let mut prev = "undef".to_string();
    for i in 0..4 {
        o.push_str(&format!("  %p{i} = getelementptr float, ptr %o, i64 {i}\n"));
        o.push_str(&format!("  %d{i} = load float, ptr %p{i}\n"));
        o.push_str(&format!(
            "  %r{i} = insertvalue {s} {prev}, float %d{i}, {i}\n"
        ));
        prev = format!("%r{i}");
    }
    o.push_str(&format!("  ret {s} {prev}\n}}"));
    o
}

/// The host function emulating intrinsic `name` (renamed `emu.…`).
fn intrinsic_address(name: &str) -> Option<usize> {
    let f: usize = match name {
        "emu.nvvm.read.ptx.sreg.tid.x" => emu_tid_x as extern "C" fn() -> u32 as usize,
        "emu.nvvm.read.ptx.sreg.tid.y" | "emu.nvvm.read.ptx.sreg.tid.z" => {
            emu_zero as extern "C" fn() -> u32 as usize
        }
        "emu.nvvm.read.ptx.sreg.ntid.x" => emu_ntid_x as extern "C" fn() -> u32 as usize,
        "emu.nvvm.read.ptx.sreg.ctaid.x" => emu_ctaid_x as extern "C" fn() -> u32 as usize,
        "emu.nvvm.read.ptx.sreg.ctaid.y" => emu_ctaid_y as extern "C" fn() -> u32 as usize,
        "emu.nvvm.read.ptx.sreg.ctaid.z" => emu_ctaid_z as extern "C" fn() -> u32 as usize,
        "emu.nvvm.barrier0" => emu_barrier as extern "C" fn() as usize,
        "emu.nvvm.bar.warp.sync" => emu_warp_sync as extern "C" fn(u32) as usize,
        "emu.nvvm.shfl.sync.bfly.i32" => {
            emu_shfl_i32 as extern "C" fn(u32, u32, u32, u32) -> u32 as usize
        }
        "emu.nvvm.shfl.sync.bfly.f32" => {
            emu_shfl_f32 as extern "C" fn(u32, f32, u32, u32) -> f32 as usize
        }
        "emu.nvvm.shfl.sync.idx.i32" => {
            emu_shfl_idx_i32 as extern "C" fn(u32, u32, u32, u32) -> u32 as usize
        }
        "emu.nvvm.shfl.sync.idx.f32" => {
            emu_shfl_idx_f32 as extern "C" fn(u32, f32, u32, u32) -> f32 as usize
        }
        "emu.mma.impl" => emu_mma as MmaFn as usize,
        _ => return None,
    };
    Some(f)
}

type MmaFn = extern "C" fn(*mut f32, u32, u32, u32, u32, u32, u32, f32, f32, f32, f32);

/// A reusable barrier that gives up after [`BARRIER_TIMEOUT`].
struct Bar {
    n: usize,
    state: Mutex<(usize, u64)>,
    cv: Condvar,
}

impl Bar {
    fn new(n: usize) -> Bar {
        Bar {
            n,
            state: Mutex::new((0, 0)),
            cv: Condvar::new(),
        }
    }

    fn wait(&self, what: &str) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let generation = g.1;
        g.0 += 1;
        if g.0 == self.n {
            g.0 = 0;
            g.1 += 1;
            self.cv.notify_all();
            return;
        }
        while g.1 == generation {
            let (ng, to) = self
                .cv
                .wait_timeout(g, BARRIER_TIMEOUT)
                .unwrap_or_else(|e| e.into_inner());
            g = ng;
            if to.timed_out() && g.1 == generation {
                // Unwinding cannot cross the generated code's frames.
                eprintln!(
                    "GPU emulator: {what}: {} of {} threads arrived and the rest never did \
                     (a code-generation bug: divergent barrier)",
                    g.0, self.n
                );
                std::process::abort();
            }
        }
    }
}

/// One warp's exchange area.
struct Warp {
    bar: Bar,
    vals: Mutex<[u32; 32]>,
    frags: Mutex<[[u32; 10]; 32]>,
}

/// One block's synchronization state.
struct Block {
    bar: Bar,
    warps: Vec<Warp>,
    ntid: u32,
}

/// What a thread knows about itself.
struct Me {
    tid: u32,
    ctaid: [u32; 3],
    block: Arc<Block>,
}

thread_local! {
    static ME: RefCell<Option<Me>> = const { RefCell::new(None) };
}

fn with_me<T>(f: impl FnOnce(&Me) -> T) -> T {
    ME.with(|m| {
        let m = m.borrow();
        match m.as_ref() {
            Some(me) => f(me),
            None => {
                eprintln!("GPU emulator: an intrinsic ran outside a launch");
                std::process::abort();
            }
        }
    })
}

/// Runs one launch: blocks in order, each block's threads in parallel.
#[allow(unsafe_code, reason = "calls JIT-compiled kernel code")]
fn run_grid(addr: usize, table: &[u64], grid: [u32; 3], block: u32) {
    let tab = table.as_ptr() as usize;
    let nwarps = block.div_ceil(32) as usize;
    for z in 0..grid[2] {
        for y in 0..grid[1] {
            for x in 0..grid[0] {
                let b = Arc::new(Block {
                    bar: Bar::new(block as usize),
                    warps: (0..nwarps)
                        .map(|w| Warp {
                            bar: Bar::new((block as usize - w * 32).min(32)),
                            vals: Mutex::new([0; 32]),
                            frags: Mutex::new([[0; 10]; 32]),
                        })
                        .collect(),
                    ntid: block,
                });
                std::thread::scope(|s| {
                    for t in 0..block {
                        let b = Arc::clone(&b);
                        std::thread::Builder::new()
                            .stack_size(1 << 20)
                            .spawn_scoped(s, move || {
                                ME.with(|m| {
                                    *m.borrow_mut() = Some(Me {
                                        tid: t,
                                        ctaid: [x, y, z],
                                        block: b,
                                    });
                                });
                                // SAFETY: `addr` is the address of a JIT-compiled
                                // function of type `void (ptr)`, and `tab` points at
                                // the address table, which outlives the launch, as
                                // does every buffer it names.
                                let f: extern "C" fn(*const u64) = unsafe {
                                    std::mem::transmute::<usize, extern "C" fn(*const u64)>(addr)
                                };
                                f(tab as *const u64);
                                ME.with(|m| *m.borrow_mut() = None);
                            })
                            .unwrap_or_else(|e| {
                                eprintln!("GPU emulator: cannot start a thread: {e}");
                                std::process::abort();
                            });
                    }
                });
            }
        }
    }
}

extern "C" fn emu_tid_x() -> u32 {
    with_me(|m| m.tid)
}

extern "C" fn emu_zero() -> u32 {
    0
}

extern "C" fn emu_ntid_x() -> u32 {
    with_me(|m| m.block.ntid)
}

extern "C" fn emu_ctaid_x() -> u32 {
    with_me(|m| m.ctaid[0])
}

extern "C" fn emu_ctaid_y() -> u32 {
    with_me(|m| m.ctaid[1])
}

extern "C" fn emu_ctaid_z() -> u32 {
    with_me(|m| m.ctaid[2])
}

extern "C" fn emu_barrier() {
    let b = with_me(|m| Arc::clone(&m.block));
    b.bar.wait("bar.sync");
}

/// `bar.warp.sync` over the whole warp (the only mask the code uses).
extern "C" fn emu_warp_sync(_mask: u32) {
    let (tid, b) = with_me(|m| (m.tid, Arc::clone(&m.block)));
    b.warps[(tid / 32) as usize].bar.wait("bar.warp.sync");
}

/// `shfl.sync.bfly.b32` over the whole warp.
extern "C" fn emu_shfl_i32(_mask: u32, v: u32, lane_mask: u32, _clamp: u32) -> u32 {
    exchange(v, |lane| lane ^ (lane_mask as usize & 31))
}

/// `shfl.sync.idx.b32` over the whole warp, by the PTX ISA's rule: `c`
/// holds the segment mask (bits 8–12) and the clamp (bits 0–4); a source
/// past the segment's last lane reads the lane's own value.
extern "C" fn emu_shfl_idx_i32(_mask: u32, v: u32, b: u32, c: u32) -> u32 {
    let seg = ((c >> 8) & 31) as usize;
    let clamp = (c & 31) as usize;
    exchange(v, |lane| {
        let min = lane & seg;
        let max = min | (clamp & !seg);
        let j = min | (b as usize & !seg & 31);
        if j > max { lane } else { j }
    })
}

extern "C" fn emu_shfl_idx_f32(mask: u32, v: f32, b: u32, c: u32) -> f32 {
    f32::from_bits(emu_shfl_idx_i32(mask, v.to_bits(), b, c))
}

/// Every lane of the warp offers `v` and reads the value lane `source(own
/// lane)` offered.
fn exchange(v: u32, source: impl Fn(usize) -> usize) -> u32 {
    let (tid, b) = with_me(|m| (m.tid, Arc::clone(&m.block)));
    let w = &b.warps[(tid / 32) as usize];
    let lane = (tid % 32) as usize;
    w.vals.lock().unwrap_or_else(|e| e.into_inner())[lane] = v;
    w.bar.wait("shfl.sync");
    let r = w.vals.lock().unwrap_or_else(|e| e.into_inner())[source(lane)];
    w.bar.wait("shfl.sync");
    r
}

extern "C" fn emu_shfl_f32(mask: u32, v: f32, lane_mask: u32, clamp: u32) -> f32 {
    f32::from_bits(emu_shfl_i32(mask, v.to_bits(), lane_mask, clamp))
}

/// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32` over the warp:
/// each lane passes its fragments and gets its four elements of `d`.
#[allow(clippy::too_many_arguments, reason = "the intrinsic's operands")]
#[allow(unsafe_code, reason = "writes the result through the caller's pointer")]
extern "C" fn emu_mma(
    out: *mut f32,
    a0: u32,
    a1: u32,
    a2: u32,
    a3: u32,
    b0: u32,
    b1: u32,
    c0: f32,
    c1: f32,
    c2: f32,
    c3: f32,
) {
    let (tid, b) = with_me(|m| (m.tid, Arc::clone(&m.block)));
    let w = &b.warps[(tid / 32) as usize];
    let lane = (tid % 32) as usize;
    w.frags.lock().unwrap_or_else(|e| e.into_inner())[lane] = [
        a0,
        a1,
        a2,
        a3,
        b0,
        b1,
        c0.to_bits(),
        c1.to_bits(),
        c2.to_bits(),
        c3.to_bits(),
    ];
    w.bar.wait("mma.sync");
    let frags = *w.frags.lock().unwrap_or_else(|e| e.into_inner());
    w.bar.wait("mma.sync");
    let (a, bm) = mma_operands(&frags);
    let (g, t) = (lane / 4, lane % 4);
    let at = [
        (g, 2 * t),
        (g, 2 * t + 1),
        (g + 8, 2 * t),
        (g + 8, 2 * t + 1),
    ];
    let c = [c0, c1, c2, c3];
    let mut d = [0f32; 4];
    for (i, &(r, col)) in at.iter().enumerate() {
        let mut s = c[i];
        for k in 0..16 {
            s += a[r][k] * bm[k][col];
        }
        d[i] = s;
    }
    // SAFETY: `out` is the wrapper's `[4 x float]` alloca.
    unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), out, 4) };
}

/// `A` (16 × 16) and `B` (16 × 8) from the 32 lanes' fragments, per the
/// PTX ISA's layout for `m16n8k16` with 16-bit operands: lane `(g, t)`
/// holds `A[g][2t..2t+2]`, `A[g+8][2t..]`, `A[g][2t+8..]`, `A[g+8][2t+8..]`
/// and `B[2t..2t+2][g]`, `B[2t+8..][g]`, lower element in the low half.
fn mma_operands(frags: &[[u32; 10]; 32]) -> ([[f32; 16]; 16], [[f32; 8]; 16]) {
    let bf = |bits: u32, hi: bool| f32::from_bits(if hi { bits & 0xffff_0000 } else { bits << 16 });
    let mut a = [[0f32; 16]; 16];
    let mut b = [[0f32; 8]; 16];
    for (lane, f) in frags.iter().enumerate() {
        let (g, t) = (lane / 4, lane % 4);
        for e in 0..2 {
            let hi = e == 1;
            a[g][2 * t + e] = bf(f[0], hi);
            a[g + 8][2 * t + e] = bf(f[1], hi);
            a[g][2 * t + 8 + e] = bf(f[2], hi);
            a[g + 8][2 * t + 8 + e] = bf(f[3], hi);
            b[2 * t + e][g] = bf(f[4], hi);
            b[2 * t + 8 + e][g] = bf(f[5], hi);
        }
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ir_drops_address_spaces_and_renames_intrinsics() {
        let ir = "target triple = \"nvptx64-nvidia-cuda\"\n\
                  @s = internal addrspace(3) global [4 x float] undef\n\
                  declare i32 @llvm.nvvm.read.ptx.sreg.tid.x() #0\n\
                  define void @k(ptr addrspace(1) %t) {\n  %x = call i32 @llvm.nvvm.read.ptx.sreg.tid.x()\n  ret void\n}";
        let h = host_ir(ir);
        assert!(
            !h.contains("addrspace") && !h.contains("target triple"),
            "{h}"
        );
        assert!(
            h.contains("declare i32 @emu.nvvm.read.ptx.sreg.tid.x()\n"),
            "{h}"
        );
        assert!(
            h.contains("call i32 @emu.nvvm.read.ptx.sreg.tid.x()"),
            "{h}"
        );
        assert!(intrinsic_address("emu.nvvm.read.ptx.sreg.tid.x").is_some());
        assert!(intrinsic_address("emu.nvvm.no.such.thing").is_none());
    }

    #[test]
    fn mma_operands_follow_the_fragment_layout() {
        // Lane (g, t)'s a0 low half is A[g][2t]: put the lane number there.
        let mut frags = [[0u32; 10]; 32];
        for (lane, f) in frags.iter_mut().enumerate() {
            let bits = u32::from(half::bf16::from_f32(lane as f32).to_bits());
            f[0] = bits;
            f[5] = bits << 16;
        }
        let (a, b) = mma_operands(&frags);
        assert_eq!(a[3][2 * 2], 14.0); // lane 14: g = 3, t = 2
        assert_eq!(a[3][2 * 2 + 1], 0.0);
        assert_eq!(b[2 + 8 + 1][5], 21.0); // lane 21: g = 5, t = 1, high half of b1
    }
}
