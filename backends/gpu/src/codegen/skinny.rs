//! The tall-and-skinny matrix products: `c[M×N] = a[M×K] · b[K×N]` with
//! `N ≤ 32`, rows of `a` and columns of `b` contiguous and long (`K` a
//! multiple of 32) — the mHC pre-mix's projection `x · fnᵀ`, which has
//! only `n(n+2)` columns, reads every token's `n·C` row once, and is
//! therefore bound by memory, not arithmetic. Optionally it also writes
//! each row's sum of squares (`Gemm::row_sumsq`) from the same loads. Two
//! flavours share the launch shape and the choice of rows per block, and
//! both add the warps' partial sums in warp order:
//!
//! * `bf16` operands on tensor cores (sm_80 and later), this file;
//! * `f32` operands with fused multiply-adds on the CUDA cores
//!   ([`super::skinny_fma`]).
//!
//! **Rows per block.** A block of 8 warps owns `16·tiles` rows of `a` and
//! every column of `c`; the 8 warps share the rows and deal the row's `K`
//! among themselves, piece by piece. `tiles` (1, 2 or 4) is chosen
//! per product at compile time: the most that still give at least
//! [`MIN_BLOCKS`] blocks (two per SM of a 132-SM H100), else 1. Fewer
//! rows per block also mean fewer accumulators per thread, so more blocks
//! fit on an SM. The price is `b`: each block streams its own rows of `a`
//! once but reads all of `b` (`fn`, `n(n+2) · nC` elements: 786 KB in
//! `bf16` at C = 4096, n = 4), from L2 after the first block, so `b` is
//! read `⌈M / 16·tiles⌉ · batch` times, and that traffic is `N / (16·tiles)`
//! of `a`'s: 0.375× at 64 rows, 0.75× at 32, 1.5× at 16. At T = 8192,
//! C = 4096 the rule picks 16 rows: 512 blocks instead of 128 (which left
//! 4 of 132 SMs idle and one 8-warp block on each of the others; the
//! tensor-core kernel's registers drop from 190 to 58 per thread), for
//! 403 MB of `fn` through L2 beside the 268 MB of `x` from DRAM (101 MB at
//! 64 rows; in `f32` both double). L2 serves that faster than DRAM serves
//! `x`, and blocks resident on one SM walk `fn` in the same order, so part
//! of it hits L1; that it stays hidden is a model, not a measurement.
//! Below 264 · 16 rows (T = 2048: 128 blocks) the grid stays smaller than
//! [`MIN_BLOCKS`]: splitting `K` across blocks would need a reduction
//! across blocks, and a deterministic one (partials, then the last block
//! of a row group sums them in order) needs a device-wide fence between
//! the partials and an atomic ticket, which LLVM 19's NVPTX backend does
//! not select from plain IR (`fence`; atomic orderings become relaxed
//! `atom`) and the host emulator cannot run as inline PTX.
//!
//! **Tensor-core mapping.** The row's 32-element chunks are dealt to the
//! warps in turn, so at any moment the block streams 8 neighbouring
//! chunks (512 contiguous bytes) of each of its rows. A lane `(g, t)` (`g = lane / 4`,
//! `t = lane % 4`) loads 16 bytes — 8 elements at `8t` — of rows `g` and
//! `g + 8` of each tile and of rows `g`, `g + 8`, `g + 16`, `g + 24` of
//! `bᵀ` (`fn`), and feeds them to
//! `mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32` twice. The tensor core's
//! fragment wants lane `t` to hold `k = 2t, 2t+1` and `2t+8, 2t+9` of a
//! 16-wide step; a dot product does not care which `k` pairs with which as
//! long as `a` and `b` agree, so step `s` of the chunk gives logical `k`
//! (2t + e) the physical element 8t + 4s + e and (2t + 8 + e) the element
//! 8t + 4s + 2 + e — every element of the chunk exactly once, loaded
//! with one 16-byte vector per row instead of four 4-byte ones.
//!
//! **Numerics.** A `bf16 × bf16` product is exact in `f32`, and the tensor
//! core accumulates in `f32`, so this computes what a CUDA-core `f32` dot
//! product computes, up to the order of the sum (the kernel IR allows any
//! order). Partial sums of the 8 warps are added in warp order through
//! shared memory, so results are deterministic run to run.
//!
//! The kernels are written as LLVM IR text from these templates and linked
//! into the program's module; every loop over tiles is unrolled here, so
//! fragments live in registers.

use std::fmt::Write;

use birkhoff_ir::DType;
use birkhoff_ir::kernel::{Gemm, Matrix, Program};

/// Blocks a product should launch at least: two per SM of an H100 (132
/// SMs), the largest GPU the launch shapes are tuned for.
pub(crate) const MIN_BLOCKS: usize = 2 * 132;
/// Warps per block.
pub(crate) const WARPS: usize = 8;
/// Threads per block.
pub(crate) const THREADS: u32 = (WARPS * 32) as u32;

/// Which kernel computes the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `bf16` operands on tensor cores.
    TensorCore,
    /// `f32` operands with fused multiply-adds.
    Fma,
}

/// The compile-time facts of one product, once [`applies`] accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Skinny {
    pub(crate) flavor: Flavor,
    /// 16-row tiles per block: 1, 2 or 4 ([`tiles_for`]).
    pub(crate) tiles: usize,
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) batch: usize,
    /// `(buffer index, offset, row stride, batch stride)` of `a`.
    pub(crate) a: (usize, usize, usize, usize),
    /// `(buffer index, offset, stride between columns of b, batch stride)`.
    pub(crate) b: (usize, usize, usize, usize),
    /// `(buffer index, offset, row stride, column stride, batch stride)`.
    pub(crate) c: (usize, usize, usize, usize, usize),
    /// `(buffer index, offset, row stride, batch stride)` of the sums.
    pub(crate) sumsq: Option<(usize, usize, usize, usize)>,
    pub(crate) accumulate: bool,
}

/// 16-row tiles per block for `m` rows in each of `batch` products: the
/// most of 4, 2 and 1 that give at least [`MIN_BLOCKS`] blocks, else 1.
pub(crate) fn tiles_for(m: usize, batch: usize) -> usize {
    [4, 2]
        .into_iter()
        .find(|&t| m.div_ceil(16 * t).saturating_mul(batch) >= MIN_BLOCKS)
        .unwrap_or(1)
}

/// Whether `g` fits a tall-and-skinny kernel on `sm_{sm}`: `bf16`
/// operands (sm_80 and later, tensor cores) or `f32` ones (fused
/// multiply-adds), an `f32` result, `a` rows and `b` columns contiguous
/// and 16-byte aligned, `1 ≤ N ≤ 32`, `K` a positive multiple of 32.
pub(crate) fn applies(program: &Program, g: &Gemm, sm: u32) -> Option<Skinny> {
    let dtype = |b: birkhoff_ir::kernel::BufferId| program.buffer(b).dtype();
    let flavor = match (dtype(g.a.buf), dtype(g.b.buf)) {
        (DType::Bf16, DType::Bf16) if sm >= 80 => Flavor::TensorCore,
        (DType::F32, DType::F32) => Flavor::Fma,
        _ => return None,
    };
    // Elements per 16 bytes.
    let vector = 16 / dtype(g.a.buf).size_bytes();
    let aligned = |x: usize| x.is_multiple_of(vector);
    let tiles = tiles_for(g.m, g.batch);
    let ok = dtype(g.c.buf) == DType::F32
        && g.a.col_stride == 1
        && g.b.row_stride == 1
        && (1..=32).contains(&g.n)
        && g.m >= 1
        && g.k >= 32
        && g.k.is_multiple_of(32)
        && [g.a.offset, g.a.row_stride, g.a.batch_stride]
            .into_iter()
            .chain([g.b.offset, g.b.col_stride, g.b.batch_stride])
            .all(aligned)
        && i32::try_from(g.m.div_ceil(16 * tiles)).is_ok()
        && u16::try_from(g.batch).is_ok();
    ok.then(|| Skinny {
        flavor,
        tiles,
        m: g.m,
        n: g.n,
        k: g.k,
        batch: g.batch,
        a: operand(&g.a, g.a.row_stride),
        b: operand(&g.b, g.b.col_stride),
        c: (
            g.c.buf.0 as usize,
            g.c.offset,
            g.c.row_stride,
            g.c.col_stride,
            g.c.batch_stride,
        ),
        sumsq: g
            .row_sumsq
            .as_ref()
            .map(|s| (s.buf.0 as usize, s.offset, s.row_stride, s.batch_stride)),
        accumulate: g.accumulate,
    })
}

/// `(buffer, offset, stride, batch stride)` of an operand whose other
/// stride is 1, as the generated kernels take them.
pub(crate) fn operand(m: &Matrix, stride: usize) -> (usize, usize, usize, usize) {
    (m.buf.0 as usize, m.offset, stride, m.batch_stride)
}

impl Skinny {
    /// Blocks per grid `(x, y, z)`: row blocks, then the batch.
    pub(crate) fn grid(&self) -> [u32; 3] {
        [self.m.div_ceil(self.rows()) as u32, self.batch as u32, 1]
    }

    /// Rows of `a` per block.
    pub(crate) fn rows(&self) -> usize {
        16 * self.tiles
    }

    /// Whether the product runs on tensor cores.
    pub(crate) fn tensor_cores(&self) -> bool {
        self.flavor == Flavor::TensorCore
    }

    /// Column tiles of 8.
    fn ntiles(&self) -> usize {
        self.n.div_ceil(8)
    }
}

/// LLVM IR text of a module holding one kernel, `entry`, computing `s`.
/// The kernel takes the program's buffer-address table (the backend's
/// kernel ABI) and must be launched with [`Skinny::grid`] blocks of
/// [`THREADS`] threads.
pub(crate) fn module_ir(entry: &str, s: &Skinny) -> String {
    match s.flavor {
        Flavor::TensorCore => tensor_core_ir(entry, s),
        Flavor::Fma => super::skinny_fma::module_ir(entry, s),
    }
}

/// [`module_ir`] of the tensor-core flavour.
fn tensor_core_ir(entry: &str, s: &Skinny) -> String {
    let mut o = String::new();
    let nt = s.ntiles();
    let tiles = s.tiles;
    let rows = s.rows();
    let chunks = s.k / 32;
    // `write!` into a String cannot fail.
    macro_rules! w {
        ($($t:tt)*) => { let _ = writeln!(o, $($t)*); };
    }
    o.push_str(&super::text_prelude());
    w!("declare float @llvm.fma.f32(float, float, float)");
    w!("declare float @llvm.nvvm.shfl.sync.bfly.f32(i32, float, i32, i32)");
    w!(
        "declare {{float, float, float, float}} @llvm.nvvm.mma.m16n8k16.row.col.bf16(i32, i32, i32, i32, i32, i32, float, float, float, float)"
    );
    w!(
        "@{entry}.red = internal addrspace(3) global [{} x float] undef, align 16",
        rows * 32
    );
    w!("@{entry}.redsq = internal addrspace(3) global [{rows} x float] undef, align 16");
    w!("define void @{entry}(ptr addrspace(1) noalias readonly %tab) {{");
    w!("entry:");
    w!("  %tid = call i32 @llvm.nvvm.read.ptx.sreg.tid.x()");
    w!("  %bx = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()");
    w!("  %by = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.y()");
    w!("  %warp = lshr i32 %tid, 5");
    w!("  %lane = and i32 %tid, 31");
    w!("  %g32 = lshr i32 %lane, 2");
    w!("  %t32 = and i32 %lane, 3");
    w!("  %g = zext i32 %g32 to i64");
    w!("  %t = zext i32 %t32 to i64");
    w!("  %batch = zext i32 %by to i64");
    w!("  %rowbase32 = mul i32 %bx, {rows}");
    w!("  %rowbase = zext i32 %rowbase32 to i64");
    buffer_bases(&mut o, s);
    // Accumulators and sums of squares: allocas with constant indices,
    // which SROA turns into registers.
    w!("  %acc = alloca [{} x float], align 4", tiles * nt * 4);
    w!("  %sq = alloca [{} x float], align 4", 2 * tiles);
    for i in 0..tiles * nt * 4 {
        w!(
            "  %acc.{i} = getelementptr [{} x float], ptr %acc, i64 0, i64 {i}",
            tiles * nt * 4
        );
        w!("  store float 0.0, ptr %acc.{i}");
    }
    for i in 0..2 * tiles {
        w!(
            "  %sq.{i} = getelementptr [{} x float], ptr %sq, i64 0, i64 {i}",
            2 * tiles
        );
        w!("  store float 0.0, ptr %sq.{i}");
    }
    // Element offsets (in elements of a and b) of this lane's rows at
    // chunk 0; rows past the end read the last row (valid memory) and
    // are zeroed after the load.
    w!("  %a.batch = mul i64 %batch, {}", s.a.3);
    w!("  %b.batch = mul i64 %batch, {}", s.b.3);
    w!("  %t8 = mul i64 %t, 8");
    for mt in 0..tiles {
        for h in 0..2 {
            let r = format!("{mt}.{h}");
            w!("  %ar.{r} = add i64 %rowbase, {}", mt * 16 + h * 8);
            w!("  %ar2.{r} = add i64 %ar.{r}, %g");
            w!("  %aok.{r} = icmp ult i64 %ar2.{r}, {}", s.m);
            w!(
                "  %arc.{r} = select i1 %aok.{r}, i64 %ar2.{r}, i64 {}",
                s.m - 1
            );
            w!("  %aro.{r} = mul i64 %arc.{r}, {}", s.a.2);
            w!("  %arb.{r} = add i64 %aro.{r}, %a.batch");
            w!("  %arc2.{r} = add i64 %arb.{r}, {}", s.a.1);
            w!("  %aoff.{r} = add i64 %arc2.{r}, %t8");
        }
    }
    for j in 0..nt {
        w!("  %bn.{j} = add i64 %g, {}", j * 8);
        w!("  %bok.{j} = icmp ult i64 %bn.{j}, {}", s.n);
        w!(
            "  %bnc.{j} = select i1 %bok.{j}, i64 %bn.{j}, i64 {}",
            s.n - 1
        );
        w!("  %bno.{j} = mul i64 %bnc.{j}, {}", s.b.2);
        w!("  %bnb.{j} = add i64 %bno.{j}, %b.batch");
        w!("  %bnc2.{j} = add i64 %bnb.{j}, {}", s.b.1);
        w!("  %boff.{j} = add i64 %bnc2.{j}, %t8");
    }
    // The chunk loop: chunks warp, warp + 8, …; two per trip while two
    // remain, then at most one.
    w!("  %first = zext i32 %warp to i64");
    w!("  br label %loop2.head");
    w!("loop2.head:");
    w!("  %c2 = phi i64 [ %first, %entry ], [ %c2.next, %loop2.body ]");
    w!("  %c2.last = add i64 %c2, {WARPS}");
    w!("  %two = icmp ult i64 %c2.last, {chunks}");
    w!("  br i1 %two, label %loop2.body, label %tail.head");
    w!("loop2.body:");
    chunk_bodies(&mut o, s, "u", &["%c2", "%c2.last"]);
    w!("  %c2.next = add i64 %c2, {}", 2 * WARPS);
    w!("  br label %loop2.head");
    w!("tail.head:");
    w!("  %one = icmp ult i64 %c2, {chunks}");
    w!("  br i1 %one, label %tail.body, label %reduce");
    w!("tail.body:");
    chunk_bodies(&mut o, s, "v", &["%c2"]);
    w!("  br label %reduce");
    // Cross-warp reduction in warp order through shared memory.
    w!("reduce:");
    for i in 0..(rows * 32) / (WARPS * 32) {
        w!("  %z.{i} = add i32 %tid, {}", i * WARPS * 32);
        w!(
            "  %zp.{i} = getelementptr [{} x float], ptr addrspace(3) @{entry}.red, i32 0, i32 %z.{i}",
            rows * 32
        );
        w!("  store float 0.0, ptr addrspace(3) %zp.{i}");
    }
    w!("  %zsq = icmp ult i32 %tid, {rows}");
    w!("  br i1 %zsq, label %zsq.do, label %zsq.done");
    w!("zsq.do:");
    w!(
        "  %zsqp = getelementptr [{rows} x float], ptr addrspace(3) @{entry}.redsq, i32 0, i32 %tid"
    );
    w!("  store float 0.0, ptr addrspace(3) %zsqp");
    w!("  br label %zsq.done");
    w!("zsq.done:");
    // Quad sums of the squares (lanes t = 0..3 of a row group).
    for i in 0..2 * tiles {
        w!("  %sqv.{i} = load float, ptr %sq.{i}");
        w!(
            "  %sqx.{i} = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %sqv.{i}, i32 1, i32 31)"
        );
        w!("  %sqy.{i} = fadd float %sqv.{i}, %sqx.{i}");
        w!(
            "  %sqz.{i} = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %sqy.{i}, i32 2, i32 31)"
        );
        w!("  %sqs.{i} = fadd float %sqy.{i}, %sqz.{i}");
    }
    w!("  call void @llvm.nvvm.barrier0()");
    for wi in 0..WARPS {
        w!("  %mine.{wi} = icmp eq i32 %warp, {wi}");
        w!("  br i1 %mine.{wi}, label %add.{wi}, label %added.{wi}");
        w!("add.{wi}:");
        for mt in 0..tiles {
            for j in 0..nt {
                for e in 0..4 {
                    let i = (mt * nt + j) * 4 + e;
                    // c0, c1: row g, cols 2t, 2t+1; c2, c3: row g + 8.
                    let (dr, dc) = (if e < 2 { 0 } else { 8 }, e % 2);
                    let v = format!("{wi}.{i}");
                    w!("  %fv.{v} = load float, ptr %acc.{i}");
                    w!("  %fr.{v} = add i32 %g32, {}", mt * 16 + dr);
                    w!("  %fc0.{v} = mul i32 %t32, 2");
                    w!("  %fc.{v} = add i32 %fc0.{v}, {}", j * 8 + dc);
                    w!("  %fi0.{v} = mul i32 %fr.{v}, 32");
                    w!("  %fi.{v} = add i32 %fi0.{v}, %fc.{v}");
                    w!(
                        "  %fp.{v} = getelementptr [{} x float], ptr addrspace(3) @{entry}.red, i32 0, i32 %fi.{v}",
                        rows * 32
                    );
                    w!("  %fo.{v} = load float, ptr addrspace(3) %fp.{v}");
                    w!("  %fs.{v} = fadd float %fo.{v}, %fv.{v}");
                    w!("  store float %fs.{v}, ptr addrspace(3) %fp.{v}");
                }
            }
        }
        w!("  %lead.{wi} = icmp eq i32 %t32, 0");
        w!("  br i1 %lead.{wi}, label %addsq.{wi}, label %added.{wi}");
        w!("addsq.{wi}:");
        for mt in 0..tiles {
            for h in 0..2 {
                let i = mt * 2 + h;
                let v = format!("{wi}.{i}");
                w!("  %qr.{v} = add i32 %g32, {}", mt * 16 + h * 8);
                w!(
                    "  %qp.{v} = getelementptr [{rows} x float], ptr addrspace(3) @{entry}.redsq, i32 0, i32 %qr.{v}"
                );
                w!("  %qo.{v} = load float, ptr addrspace(3) %qp.{v}");
                w!("  %qs.{v} = fadd float %qo.{v}, %sqs.{i}");
                w!("  store float %qs.{v}, ptr addrspace(3) %qp.{v}");
            }
        }
        w!("  br label %added.{wi}");
        w!("added.{wi}:");
        w!("  call void @llvm.nvvm.barrier0()");
    }
    // Results: thread i writes elements i, i + 256, … of the 64 × N tile.
    w!("  %c.batch = mul i64 %batch, {}", s.c.4);
    let per = (rows * s.n).div_ceil(WARPS * 32);
    for i in 0..per {
        let v = format!("o{i}");
        w!("  %{v}.e = add i32 %tid, {}", i * WARPS * 32);
        w!("  %{v}.in = icmp ult i32 %{v}.e, {}", rows * s.n);
        w!("  %{v}.r = udiv i32 %{v}.e, {}", s.n);
        w!("  %{v}.col = urem i32 %{v}.e, {}", s.n);
        w!("  %{v}.row = add i32 %rowbase32, %{v}.r");
        w!("  %{v}.rok = icmp ult i32 %{v}.row, {}", s.m);
        w!("  %{v}.ok = and i1 %{v}.in, %{v}.rok");
        w!("  br i1 %{v}.ok, label %{v}.do, label %{v}.done");
        w!("{v}.do:");
        w!("  %{v}.si0 = mul i32 %{v}.r, 32");
        w!("  %{v}.si = add i32 %{v}.si0, %{v}.col");
        w!(
            "  %{v}.sp = getelementptr [{} x float], ptr addrspace(3) @{entry}.red, i32 0, i32 %{v}.si",
            rows * 32
        );
        w!("  %{v}.x = load float, ptr addrspace(3) %{v}.sp");
        store_c(&mut o, s, &v);
    }
    if let Some(sq) = s.sumsq {
        w!("  %sqrow = add i32 %rowbase32, %tid");
        w!("  %sqok0 = icmp ult i32 %tid, {rows}");
        w!("  %sqok1 = icmp ult i32 %sqrow, {}", s.m);
        w!("  %sqok = and i1 %sqok0, %sqok1");
        w!("  br i1 %sqok, label %sqw.do, label %sqw.done");
        w!("sqw.do:");
        w!(
            "  %sqwp = getelementptr [{rows} x float], ptr addrspace(3) @{entry}.redsq, i32 0, i32 %tid"
        );
        w!("  %sqwx = load float, ptr addrspace(3) %sqwp");
        store_sumsq(&mut o, sq, "%sqwx");
    }
    w!("  ret void");
    w!("}}");
    o.push_str(&super::text_epilogue(entry, THREADS));
    o
}

/// `%pa`, `%pb`, `%pc` (and `%ps` with row sums): the operands' base
/// addresses from the buffer-address table, shared by both flavours.
pub(crate) fn buffer_bases(o: &mut String, s: &Skinny) {
    base_pointer(o, "pa", s.a.0);
    base_pointer(o, "pb", s.b.0);
    base_pointer(o, "pc", s.c.0);
    if let Some(sq) = s.sumsq {
        base_pointer(o, "ps", sq.0);
    }
}

/// `%{name}`: buffer `buf`'s device address, read from the table `%tab`.
pub(crate) fn base_pointer(o: &mut String, name: &str, buf: usize) {
    macro_rules! w {
        ($($t:tt)*) => { let _ = writeln!(o, $($t)*); };
    }
    w!("  %{name}.slot = getelementptr i64, ptr addrspace(1) %tab, i64 {buf}");
    w!("  %{name}.addr = load i64, ptr addrspace(1) %{name}.slot, align 8, !invariant.load !0");
    w!("  %{name} = inttoptr i64 %{name}.addr to ptr addrspace(1)");
}

/// The end of a result element's store, shared by both flavours: `%{v}.x`
/// (its value) goes to `c` at row `%{v}.row`, column `%{v}.col` of product
/// `%c.batch` (added to the old value when accumulating), then control
/// reaches `{v}.done`.
pub(crate) fn store_c(o: &mut String, s: &Skinny, v: &str) {
    macro_rules! w {
        ($($t:tt)*) => { let _ = writeln!(o, $($t)*); };
    }
    w!("  %{v}.row64 = zext i32 %{v}.row to i64");
    w!("  %{v}.col64 = zext i32 %{v}.col to i64");
    w!("  %{v}.ro = mul i64 %{v}.row64, {}", s.c.2);
    w!("  %{v}.co = mul i64 %{v}.col64, {}", s.c.3);
    w!("  %{v}.o0 = add i64 %{v}.ro, %{v}.co");
    w!("  %{v}.o1 = add i64 %{v}.o0, %c.batch");
    w!("  %{v}.o = add i64 %{v}.o1, {}", s.c.1);
    w!("  %{v}.p = getelementptr float, ptr addrspace(1) %pc, i64 %{v}.o");
    if s.accumulate {
        w!("  %{v}.old = load float, ptr addrspace(1) %{v}.p");
        w!("  %{v}.y = fadd float %{v}.old, %{v}.x");
        w!("  store float %{v}.y, ptr addrspace(1) %{v}.p");
    } else {
        w!("  store float %{v}.x, ptr addrspace(1) %{v}.p");
    }
    w!("  br label %{v}.done");
    w!("{v}.done:");
}

/// The end of a row sum's store, shared by both flavours: `x` goes to the
/// sums `sq` at row `%sqrow` of product `%batch`, then control reaches
/// `sqw.done`.
pub(crate) fn store_sumsq(o: &mut String, sq: (usize, usize, usize, usize), x: &str) {
    macro_rules! w {
        ($($t:tt)*) => { let _ = writeln!(o, $($t)*); };
    }
    w!("  %sqrow64 = zext i32 %sqrow to i64");
    w!("  %sqo0 = mul i64 %sqrow64, {}", sq.2);
    w!("  %sqob = mul i64 %batch, {}", sq.3);
    w!("  %sqo1 = add i64 %sqo0, %sqob");
    w!("  %sqo = add i64 %sqo1, {}", sq.1);
    w!("  %sqp = getelementptr float, ptr addrspace(1) %ps, i64 %sqo");
    w!("  store float {x}, ptr addrspace(1) %sqp");
    w!("  br label %sqw.done");
    w!("sqw.done:");
}

/// Loads, squares and tensor-core products of the chunks whose indices
/// are the i64 values `chunks` (all loads first, to keep them in flight
/// together); `p` keeps value names unique.
fn chunk_bodies(o: &mut String, s: &Skinny, p: &str, chunks: &[&str]) {
    let nt = s.ntiles();
    let tiles = s.tiles;
    macro_rules! w {
        ($($t:tt)*) => { let _ = writeln!(o, $($t)*); };
    }
    for (ci, c) in chunks.iter().enumerate() {
        let q = format!("{p}{ci}");
        w!("  %k0.{q} = mul i64 {c}, 32");
        for mt in 0..tiles {
            for h in 0..2 {
                let r = format!("{mt}.{h}");
                w!("  %ae.{q}.{r} = add i64 %aoff.{r}, %k0.{q}");
                w!("  %ap.{q}.{r} = getelementptr i16, ptr addrspace(1) %pa, i64 %ae.{q}.{r}");
                w!(
                    "  %al.{q}.{r} = load <4 x i32>, ptr addrspace(1) %ap.{q}.{r}, align 16, !invariant.load !0"
                );
                w!(
                    "  %av.{q}.{r} = select i1 %aok.{r}, <4 x i32> %al.{q}.{r}, <4 x i32> zeroinitializer"
                );
            }
        }
        for j in 0..nt {
            w!("  %be.{q}.{j} = add i64 %boff.{j}, %k0.{q}");
            w!("  %bp.{q}.{j} = getelementptr i16, ptr addrspace(1) %pb, i64 %be.{q}.{j}");
            w!(
                "  %bl.{q}.{j} = load <4 x i32>, ptr addrspace(1) %bp.{q}.{j}, align 16, !invariant.load !0"
            );
            w!(
                "  %bv.{q}.{j} = select i1 %bok.{j}, <4 x i32> %bl.{q}.{j}, <4 x i32> zeroinitializer"
            );
        }
    }
    for (ci, _) in chunks.iter().enumerate() {
        let q = format!("{p}{ci}");
        // Squares: each 32-bit word holds two bf16, low element first.
        for mt in 0..tiles {
            for h in 0..2 {
                let r = format!("{mt}.{h}");
                let i = mt * 2 + h;
                w!("  %sq0.{q}.{r} = load float, ptr %sq.{i}");
                let mut acc = format!("%sq0.{q}.{r}");
                for word in 0..4 {
                    let v = format!("{q}.{r}.{word}");
                    w!("  %wd.{v} = extractelement <4 x i32> %av.{q}.{r}, i32 {word}");
                    w!("  %lo.{v} = shl i32 %wd.{v}, 16");
                    w!("  %hi.{v} = and i32 %wd.{v}, -65536");
                    w!("  %lof.{v} = bitcast i32 %lo.{v} to float");
                    w!("  %hif.{v} = bitcast i32 %hi.{v} to float");
                    w!(
                        "  %s1.{v} = call float @llvm.fma.f32(float %lof.{v}, float %lof.{v}, float {acc})"
                    );
                    w!(
                        "  %s2.{v} = call float @llvm.fma.f32(float %hif.{v}, float %hif.{v}, float %s1.{v})"
                    );
                    acc = format!("%s2.{v}");
                }
                w!("  store float {acc}, ptr %sq.{i}");
            }
        }
        for step in 0..2 {
            for mt in 0..tiles {
                for j in 0..nt {
                    let v = format!("{q}.{step}.{mt}.{j}");
                    let (w0, w1) = (2 * step, 2 * step + 1);
                    w!("  %a0.{v} = extractelement <4 x i32> %av.{q}.{mt}.0, i32 {w0}");
                    w!("  %a1.{v} = extractelement <4 x i32> %av.{q}.{mt}.1, i32 {w0}");
                    w!("  %a2.{v} = extractelement <4 x i32> %av.{q}.{mt}.0, i32 {w1}");
                    w!("  %a3.{v} = extractelement <4 x i32> %av.{q}.{mt}.1, i32 {w1}");
                    w!("  %b0.{v} = extractelement <4 x i32> %bv.{q}.{j}, i32 {w0}");
                    w!("  %b1.{v} = extractelement <4 x i32> %bv.{q}.{j}, i32 {w1}");
                    let base = (mt * nt + j) * 4;
                    for e in 0..4 {
                        w!("  %c{e}.{v} = load float, ptr %acc.{}", base + e);
                    }
                    w!(
                        "  %d.{v} = call {{float, float, float, float}} @llvm.nvvm.mma.m16n8k16.row.col.bf16(i32 %a0.{v}, i32 %a1.{v}, i32 %a2.{v}, i32 %a3.{v}, i32 %b0.{v}, i32 %b1.{v}, float %c0.{v}, float %c1.{v}, float %c2.{v}, float %c3.{v})"
                    );
                    for e in 0..4 {
                        w!("  %d{e}.{v} = extractvalue {{float, float, float, float}} %d.{v}, {e}");
                        w!("  store float %d{e}.{v}, ptr %acc.{}", base + e);
                    }
                }
            }
        }
    }
}
