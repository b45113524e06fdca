//! The short-and-wide product: `c[M × N] = a[M × K] · b[K × N]` with at
//! most 32 rows, `N` large and `K` long — the mHC pre-mix backward's
//! `d_fn = gᵀ·x` (24 rows, `nC` columns, `T` deep), which the general
//! tiled kernel runs at about 3.25 instructions per multiply-add.
//!
//! **Mapping.** A thread owns 4 neighbouring columns of `c` and all `M`
//! rows: `4·M` accumulators in registers. Per step of `K` it loads its 4
//! elements of `b`'s row (one 16-byte load of `f32`, or 8 bytes of
//! `bf16`, widened exactly) and the `M` elements of `a`'s column (16-byte
//! loads whose address the whole block shares, so the memory system
//! broadcasts them), then does `4·M` fused multiply-adds: at `M = 24`
//! about 1.1 instructions per multiply-add. Blocks of [`THREADS`] threads
//! cover 256 columns (small blocks, so that more of them fill the device);
//! the grid's `y` is the batch (the parts of a `K`
//! that lowering split so that the grid fills the device). Where that
//! still leaves fewer than [`GRID_MIN_ITERATIONS`] blocks (lowering keeps
//! parts at least 64 long: `d_fn` at T = 1024, C = 1024 has 16 column
//! blocks of 16 parts), blocks of [`NARROW_THREADS`] cover 128 columns,
//! twice as many blocks for the same reads of `b` and no more partial
//! results. Each sum runs
//! over `K` in order, in `f32`; a `bf16` result is rounded once, on the
//! store.
//!
//! Taken for `f32` `a` whose columns are contiguous (`row_stride` 1),
//! `f32` or `bf16` `b` and `c` with contiguous rows, `M` a multiple of 4
//! up to 32, `N` a multiple of 4 and at least one block wide, every
//! offset and stride a multiple of 4 elements (so the vector accesses are
//! aligned), no accumulation and no row sums.

use std::fmt::Write;

use birkhoff_ir::DType;
use birkhoff_ir::kernel::{Gemm, Program};

use super::launch::GRID_MIN_ITERATIONS;
use super::skinny::{base_pointer, operand};

/// Threads per block.
pub(crate) const THREADS: u32 = 64;

/// Threads per block where blocks of [`THREADS`] would not fill the
/// device.
pub(crate) const NARROW_THREADS: u32 = 32;

/// Columns of `c` per thread.
const COLS: usize = 4;

/// Columns of `c` per block of [`THREADS`].
pub(crate) const BLOCK_COLS: usize = COLS * THREADS as usize;

/// A product this kernel computes: sizes, and for each operand its
/// buffer, offset, the stride that is not 1, and the batch stride.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Wide {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub a: (usize, usize, usize, usize),
    pub b: (usize, usize, usize, usize),
    pub c: (usize, usize, usize, usize),
    pub b_bf16: bool,
    pub c_bf16: bool,
    /// Threads per block: [`THREADS`] or [`NARROW_THREADS`].
    pub threads: u32,
}

/// Whether `g` fits this kernel (see the module documentation).
pub(crate) fn applies(p: &Program, g: &Gemm) -> Option<Wide> {
    let dtype = |b: birkhoff_ir::kernel::BufferId| p.buffer(b).dtype();
    let float = |d: DType| matches!(d, DType::F32 | DType::Bf16);
    let by4 = |x: usize| x.is_multiple_of(4);
    let ok = dtype(g.a.buf) == DType::F32
        && float(dtype(g.b.buf))
        && float(dtype(g.c.buf))
        && (4..=32).contains(&g.m)
        && by4(g.m)
        && by4(g.n)
        && g.n >= BLOCK_COLS
        && g.k >= 1
        && g.a.row_stride == 1
        && g.b.col_stride == 1
        && g.c.col_stride == 1
        && [g.a.offset, g.a.col_stride, g.a.batch_stride]
            .into_iter()
            .chain([g.b.offset, g.b.row_stride, g.b.batch_stride])
            .chain([g.c.offset, g.c.row_stride, g.c.batch_stride])
            .all(by4)
        && !g.accumulate
        && g.row_sumsq.is_none()
        && u16::try_from(g.batch).is_ok()
        && i32::try_from(g.n.div_ceil(BLOCK_COLS)).is_ok();
    ok.then(|| Wide {
        m: g.m,
        n: g.n,
        k: g.k,
        batch: g.batch,
        a: operand(&g.a, g.a.col_stride),
        b: operand(&g.b, g.b.row_stride),
        c: operand(&g.c, g.c.row_stride),
        b_bf16: dtype(g.b.buf) == DType::Bf16,
        c_bf16: dtype(g.c.buf) == DType::Bf16,
        threads: if g.n.div_ceil(BLOCK_COLS) * g.batch < GRID_MIN_ITERATIONS {
            NARROW_THREADS
        } else {
            THREADS
        },
    })
}

impl Wide {
    /// Columns of `c` per block.
    pub(crate) fn block_cols(&self) -> usize {
        COLS * self.threads as usize
    }

    /// Blocks per grid: column blocks, then the batch.
    pub(crate) fn grid(&self) -> [u32; 3] {
        [
            self.n.div_ceil(self.block_cols()) as u32,
            self.batch as u32,
            1,
        ]
    }
}

/// LLVM IR text of a module holding one kernel, `entry`, computing `w`,
/// launched with [`Wide::grid`] blocks of [`Wide::threads`] threads.
pub(crate) fn module_ir(entry: &str, w: &Wide) -> String {
    let mut o = String::new();
    let (m, acc_n) = (w.m, w.m * COLS);
    // `write!` into a String cannot fail.
    macro_rules! w {
        ($($t:tt)*) => { let _ = writeln!(o, $($t)*); };
    }
    o.push_str(&super::text_prelude());
    w!("declare float @llvm.fma.f32(float, float, float)");
    w!("define void @{entry}(ptr addrspace(1) noalias readonly %tab) {{");
    w!("entry:");
    w!("  %tid32 = call i32 @llvm.nvvm.read.ptx.sreg.tid.x()");
    w!("  %bx32 = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()");
    w!("  %by32 = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.y()");
    w!("  %tid = zext i32 %tid32 to i64");
    w!("  %bx = zext i32 %bx32 to i64");
    w!("  %batch = zext i32 %by32 to i64");
    w!("  %cb = mul i64 %bx, {}", w.block_cols());
    w!("  %ct = mul i64 %tid, {COLS}");
    w!("  %col = add i64 %cb, %ct");
    w!("  %in = icmp ult i64 %col, {}", w.n);
    w!("  %acc = alloca [{acc_n} x float], align 4");
    w!("  br i1 %in, label %go, label %done");
    w!("go:");
    for (name, buf) in [("pa", w.a.0), ("pb", w.b.0), ("pc", w.c.0)] {
        base_pointer(&mut o, name, buf);
    }
    w!("  %a.bo = mul i64 %batch, {}", w.a.3);
    w!("  %a.base = add i64 %a.bo, {}", w.a.1);
    w!("  %b.bo = mul i64 %batch, {}", w.b.3);
    w!("  %b.b1 = add i64 %b.bo, {}", w.b.1);
    w!("  %b.base = add i64 %b.b1, %col");
    // Accumulator r·4 + j is row r, column col + j: constant indices,
    // which SROA turns into registers.
    for v in 0..acc_n {
        w!("  %acc.{v} = getelementptr [{acc_n} x float], ptr %acc, i64 0, i64 {v}");
        w!("  store float 0.0, ptr %acc.{v}");
    }
    w!("  br label %loop");
    w!("loop:");
    w!("  %kk = phi i64 [ 0, %go ], [ %kk.next, %loop ]");
    // b[kk, col .. col + 4].
    w!("  %b.ro = mul i64 %kk, {}", w.b.2);
    w!("  %b.o = add i64 %b.ro, %b.base");
    if w.b_bf16 {
        w!("  %b.p = getelementptr i16, ptr addrspace(1) %pb, i64 %b.o");
        w!("  %b.h = load <4 x i16>, ptr addrspace(1) %b.p, align 8, !invariant.load !0");
        w!("  %b.w = zext <4 x i16> %b.h to <4 x i32>");
        w!("  %b.s = shl <4 x i32> %b.w, <i32 16, i32 16, i32 16, i32 16>");
        w!("  %b.v = bitcast <4 x i32> %b.s to <4 x float>");
    } else {
        w!("  %b.p = getelementptr float, ptr addrspace(1) %pb, i64 %b.o");
        w!("  %b.v = load <4 x float>, ptr addrspace(1) %b.p, align 16, !invariant.load !0");
    }
    for j in 0..COLS {
        w!("  %b.{j} = extractelement <4 x float> %b.v, i32 {j}");
    }
    // a[0 .. M, kk], four rows a load.
    w!("  %a.co = mul i64 %kk, {}", w.a.2);
    w!("  %a.o = add i64 %a.co, %a.base");
    for q in 0..m / 4 {
        w!("  %a.o{q} = add i64 %a.o, {}", 4 * q);
        w!("  %a.p{q} = getelementptr float, ptr addrspace(1) %pa, i64 %a.o{q}");
        w!("  %a.v{q} = load <4 x float>, ptr addrspace(1) %a.p{q}, align 16, !invariant.load !0");
        for i in 0..4 {
            w!(
                "  %a.{} = extractelement <4 x float> %a.v{q}, i32 {i}",
                4 * q + i
            );
        }
    }
    for r in 0..m {
        for j in 0..COLS {
            let v = r * COLS + j;
            w!("  %x.{v} = load float, ptr %acc.{v}");
            w!("  %y.{v} = call float @llvm.fma.f32(float %a.{r}, float %b.{j}, float %x.{v})");
            w!("  store float %y.{v}, ptr %acc.{v}");
        }
    }
    w!("  %kk.next = add i64 %kk, 1");
    w!("  %more = icmp ult i64 %kk.next, {}", w.k);
    w!("  br i1 %more, label %loop, label %store");
    w!("store:");
    w!("  %c.bo = mul i64 %batch, {}", w.c.3);
    w!("  %c.b1 = add i64 %c.bo, {}", w.c.1);
    w!("  %c.base = add i64 %c.b1, %col");
    for r in 0..m {
        w!("  %c.o{r} = add i64 %c.base, {}", r * w.c.2);
        for j in 0..COLS {
            let v = r * COLS + j;
            w!("  %z.{v} = load float, ptr %acc.{v}");
        }
        if w.c_bf16 {
            let mut prev = "undef".to_string();
            for j in 0..COLS {
                let v = r * COLS + j;
                super::gemm::round_bf16(&mut o, &format!("h.{v}"), &format!("%z.{v}"));
                w!("  %cv{r}.{j} = insertelement <4 x i16> {prev}, i16 %h.{v}, i32 {j}");
                prev = format!("%cv{r}.{j}");
            }
            w!("  %c.p{r} = getelementptr i16, ptr addrspace(1) %pc, i64 %c.o{r}");
            w!("  store <4 x i16> {prev}, ptr addrspace(1) %c.p{r}, align 8");
        } else {
            let mut prev = "undef".to_string();
            for j in 0..COLS {
                let v = r * COLS + j;
                w!("  %cv{r}.{j} = insertelement <4 x float> {prev}, float %z.{v}, i32 {j}");
                prev = format!("%cv{r}.{j}");
            }
            w!("  %c.p{r} = getelementptr float, ptr addrspace(1) %pc, i64 %c.o{r}");
            w!("  store <4 x float> {prev}, ptr addrspace(1) %c.p{r}, align 16");
        }
    }
    w!("  br label %done");
    w!("done:");
    w!("  ret void");
    w!("}}");
    o.push_str(&super::text_epilogue(entry, w.threads));
    o
}
