//! The general matrix product: any shapes and strides, `f32`, `f64` or
//! `bf16` operands, as a classic shared-memory tiled kernel.
//!
//! One block of 16 × 16 threads owns a 16 × 16 tile of `c`; it walks `K`
//! in steps of 16, each thread staging one element of the `a` tile and
//! one of the `b` tile in shared memory (zero outside the matrices), then
//! every thread adds its row-times-column of the two tiles with fused
//! multiply-adds in `c`'s compute type. Blocks in the first column of
//! tiles also sum the squares of their `a` rows from the staged tiles
//! when the product asks for `row_sumsq`. The grid is
//! `(⌈N/16⌉, ⌈M/16⌉, batch)`.
//!
//! A `bf16` result (of `bf16` or `f32` operands, the graph's `bf16`
//! matrix products) is summed in `f32` and rounded to nearest-even once,
//! on the store, bit for bit as the backend's other `bf16` stores round;
//! accumulating into it widens the old value, adds in `f32`, and rounds.
//! The verifier gives such a product no `row_sumsq`.
//!
//! The mHC projections do not come here: their tall-and-skinny products
//! take [`super::skinny`] (tensor cores for `bf16` operands, a
//! register-blocked multiply-add kernel for `f32` ones). This one serves
//! the rest (attention scores, linear layers, `f32` models' other
//! products, `bf16` on GPUs before sm_80), where correctness for every
//! layout matters more than peak speed.

use std::fmt::Write;

use birkhoff_ir::DType;
use birkhoff_ir::kernel::{Gemm, Matrix, Program};

use crate::{GpuError, Result};

/// Tile edge.
const TILE: usize = 16;
/// Threads per block.
pub(crate) const THREADS: u32 = (TILE * TILE) as u32;

/// Blocks per grid for `g`, or why it cannot be launched.
pub(crate) fn grid(kernel: &str, g: &Gemm) -> Result<[u32; 3]> {
    let fit = |what: &str, n: usize, max: usize| -> Result<u32> {
        if n == 0 || n > max {
            Err(GpuError::Unsupported {
                kernel: kernel.to_string(),
                message: format!("a matrix product needs {n} blocks along {what} (1 to {max})"),
            })
        } else {
            Ok(n as u32)
        }
    };
    Ok([
        fit("its columns", g.n.div_ceil(TILE), i32::MAX as usize)?,
        fit("its rows", g.m.div_ceil(TILE), 65535)?,
        fit("its batch", g.batch, 65535)?,
    ])
}

/// LLVM IR text of a module holding one kernel, `entry`, computing `g`
/// over the program's buffer-address table (the backend's kernel ABI).
pub(crate) fn module_ir(entry: &str, p: &Program, g: &Gemm) -> String {
    let ad = p.buffer(g.a.buf).dtype();
    let bd = p.buffer(g.b.buf).dtype();
    let cd = p.buffer(g.c.buf).dtype();
    let t = if cd == DType::F64 { "double" } else { "float" };
    let zero = "0.0";
    let mut o = String::new();
    macro_rules! w {
        ($($t:tt)*) => { let _ = writeln!(o, $($t)*); };
    }
    o.push_str(&super::text_prelude());
    w!("declare i32 @llvm.nvvm.read.ptx.sreg.ctaid.z()");
    w!("declare {t} @llvm.fma.{}({t}, {t}, {t})", fma_suffix(t));
    w!(
        "@{entry}.as = internal addrspace(3) global [{} x {t}] undef, align 16",
        TILE * TILE
    );
    w!(
        "@{entry}.bs = internal addrspace(3) global [{} x {t}] undef, align 16",
        TILE * TILE
    );
    w!("define void @{entry}(ptr addrspace(1) noalias readonly %tab) {{");
    w!("entry:");
    w!("  %tid32 = call i32 @llvm.nvvm.read.ptx.sreg.tid.x()");
    w!("  %bx32 = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()");
    w!("  %by32 = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.y()");
    w!("  %bz32 = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.z()");
    w!("  %tid = zext i32 %tid32 to i64");
    w!("  %bx = zext i32 %bx32 to i64");
    w!("  %by = zext i32 %by32 to i64");
    w!("  %bz = zext i32 %bz32 to i64");
    w!("  %tx = and i64 %tid, 15");
    w!("  %ty = lshr i64 %tid, 4");
    w!("  %rb = mul i64 %by, {TILE}");
    w!("  %row = add i64 %rb, %ty");
    w!("  %cb = mul i64 %bx, {TILE}");
    w!("  %col = add i64 %cb, %tx");
    // Base pointers of the operands, from the address table.
    let base = |o: &mut String, name: &str, m: &Matrix| {
        let _ = writeln!(
            o,
            "  %{name}.slot = getelementptr inbounds i64, ptr addrspace(1) %tab, i64 {}",
            m.buf.0
        );
        let _ = writeln!(
            o,
            "  %{name}.addr = load i64, ptr addrspace(1) %{name}.slot, align 8, !invariant.load !0"
        );
        let _ = writeln!(
            o,
            "  %{name}.ptr = inttoptr i64 %{name}.addr to ptr addrspace(1)"
        );
        let _ = writeln!(o, "  %{name}.bo = mul i64 %bz, {}", m.batch_stride);
        let _ = writeln!(o, "  %{name}.off = add i64 %{name}.bo, {}", m.offset);
    };
    base(&mut o, "a", &g.a);
    base(&mut o, "b", &g.b);
    base(&mut o, "c", &g.c);
    if let Some(sq) = &g.row_sumsq {
        base(&mut o, "s", sq);
    }
    // This thread's slots in the tiles, and the row it reads of `as`.
    w!("  %mine = getelementptr inbounds {t}, ptr addrspace(3) @{entry}.as, i64 %tid");
    w!("  %bmine = getelementptr inbounds {t}, ptr addrspace(3) @{entry}.bs, i64 %tid");
    w!("  %arow = mul i64 %ty, {TILE}");
    w!("  %row.in = icmp ult i64 %row, {}", g.m);
    w!("  %col.in = icmp ult i64 %col, {}", g.n);
    w!("  br label %loop");
    w!("loop:");
    w!("  %k0 = phi i64 [ 0, %entry ], [ %k0.next, %tiles.end ]");
    w!("  %acc = phi {t} [ {zero}, %entry ], [ %acc.16, %tiles.end ]");
    w!("  %sq = phi {t} [ {zero}, %entry ], [ %sq.16, %tiles.end ]");
    // a[row, k0 + tx] into as[ty][tx].
    w!("  %ak = add i64 %k0, %tx");
    w!("  %ak.in = icmp ult i64 %ak, {}", g.k);
    w!("  %a.ok = and i1 %row.in, %ak.in");
    w!("  br i1 %a.ok, label %a.load, label %a.done");
    w!("a.load:");
    w!("  %a.r = mul i64 %row, {}", g.a.row_stride);
    w!("  %a.c = mul i64 %ak, {}", g.a.col_stride);
    w!("  %a.rc = add i64 %a.r, %a.c");
    w!("  %a.i = add i64 %a.rc, %a.off");
    load(&mut o, "a", ad, t);
    w!("  br label %a.done");
    w!("a.done:");
    w!("  %a.v = phi {t} [ %a.x, %a.load ], [ {zero}, %loop ]");
    w!("  store {t} %a.v, ptr addrspace(3) %mine");
    // b[k0 + ty, col] into bs[ty][tx].
    w!("  %bk = add i64 %k0, %ty");
    w!("  %bk.in = icmp ult i64 %bk, {}", g.k);
    w!("  %b.ok = and i1 %col.in, %bk.in");
    w!("  br i1 %b.ok, label %b.load, label %b.done");
    w!("b.load:");
    w!("  %b.r = mul i64 %bk, {}", g.b.row_stride);
    w!("  %b.c = mul i64 %col, {}", g.b.col_stride);
    w!("  %b.rc = add i64 %b.r, %b.c");
    w!("  %b.i = add i64 %b.rc, %b.off");
    load(&mut o, "b", bd, t);
    w!("  br label %b.done");
    w!("b.done:");
    w!("  %b.v = phi {t} [ %b.x, %b.load ], [ {zero}, %a.done ]");
    w!("  store {t} %b.v, ptr addrspace(3) %bmine");
    w!("  call void @llvm.nvvm.barrier0()");
    let f = fma_suffix(t);
    for kk in 0..TILE {
        w!("  %ai.{kk} = add i64 %arow, {kk}");
        w!("  %ap.{kk} = getelementptr inbounds {t}, ptr addrspace(3) @{entry}.as, i64 %ai.{kk}");
        w!("  %av.{kk} = load {t}, ptr addrspace(3) %ap.{kk}");
        w!(
            "  %bp.{kk} = getelementptr inbounds {t}, ptr addrspace(3) @{entry}.bs, i64 {}",
            kk * TILE
        );
        w!("  %bp2.{kk} = getelementptr inbounds {t}, ptr addrspace(3) %bp.{kk}, i64 %tx");
        w!("  %bv.{kk} = load {t}, ptr addrspace(3) %bp2.{kk}");
        let prev = if kk == 0 {
            "%acc".to_string()
        } else {
            format!("%acc.{kk}")
        };
        w!(
            "  %acc.{} = call {t} @llvm.fma.{f}({t} %av.{kk}, {t} %bv.{kk}, {t} {prev})",
            kk + 1
        );
        let prev = if kk == 0 {
            "%sq".to_string()
        } else {
            format!("%sq.{kk}")
        };
        if g.row_sumsq.is_some() {
            w!(
                "  %sq.{} = call {t} @llvm.fma.{f}({t} %av.{kk}, {t} %av.{kk}, {t} {prev})",
                kk + 1
            );
        } else {
            w!("  %sq.{} = fadd {t} {prev}, {zero}", kk + 1);
        }
    }
    w!("  call void @llvm.nvvm.barrier0()");
    w!("  br label %tiles.end");
    w!("tiles.end:");
    w!("  %k0.next = add i64 %k0, {TILE}");
    w!("  %more = icmp ult i64 %k0.next, {}", g.k);
    w!("  br i1 %more, label %loop, label %store");
    w!("store:");
    w!("  %c.ok = and i1 %row.in, %col.in");
    w!("  br i1 %c.ok, label %c.store, label %c.done");
    w!("c.store:");
    w!("  %c.r = mul i64 %row, {}", g.c.row_stride);
    w!("  %c.c = mul i64 %col, {}", g.c.col_stride);
    w!("  %c.rc = add i64 %c.r, %c.c");
    w!("  %c.i = add i64 %c.rc, %c.off");
    if cd == DType::Bf16 {
        w!("  %c.p = getelementptr inbounds i16, ptr addrspace(1) %c.ptr, i64 %c.i");
        let sum = if g.accumulate {
            w!("  %c.oldh = load i16, ptr addrspace(1) %c.p, align 2");
            w!("  %c.oldw = zext i16 %c.oldh to i32");
            w!("  %c.olds = shl i32 %c.oldw, 16");
            w!("  %c.old = bitcast i32 %c.olds to float");
            w!("  %c.new = fadd float %c.old, %acc.16");
            "%c.new"
        } else {
            "%acc.16"
        };
        round_bf16(&mut o, "c.h", sum);
        w!("  store i16 %c.h, ptr addrspace(1) %c.p, align 2");
    } else {
        w!("  %c.p = getelementptr inbounds {t}, ptr addrspace(1) %c.ptr, i64 %c.i");
        if g.accumulate {
            w!("  %c.old = load {t}, ptr addrspace(1) %c.p");
            w!("  %c.new = fadd {t} %c.old, %acc.16");
            w!("  store {t} %c.new, ptr addrspace(1) %c.p");
        } else {
            w!("  store {t} %acc.16, ptr addrspace(1) %c.p");
        }
    }
    w!("  br label %c.done");
    w!("c.done:");
    if let Some(sq) = &g.row_sumsq {
        // The first column of blocks, one thread per row.
        w!("  %s.col = or i64 %bx, %tx");
        w!("  %s.first = icmp eq i64 %s.col, 0");
        w!("  %s.ok = and i1 %s.first, %row.in");
        w!("  br i1 %s.ok, label %s.store, label %done");
        w!("s.store:");
        w!("  %s.r = mul i64 %row, {}", sq.row_stride);
        w!("  %s.i = add i64 %s.r, %s.off");
        w!("  %s.p = getelementptr inbounds {t}, ptr addrspace(1) %s.ptr, i64 %s.i");
        w!("  store {t} %sq.16, ptr addrspace(1) %s.p");
        w!("  br label %done");
    } else {
        w!("  br label %done");
    }
    w!("done:");
    w!("  ret void");
    w!("}}");
    o.push_str(&super::text_epilogue(entry, THREADS));
    o
}

/// `%{name}.x`: element `%{name}.i` of operand `name`, widened to `t`.
fn load(o: &mut String, name: &str, d: DType, t: &str) {
    let mut w = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    match d {
        DType::Bf16 => {
            w(format!(
                "  %{name}.p = getelementptr inbounds i16, ptr addrspace(1) %{name}.ptr, i64 %{name}.i"
            ));
            w(format!(
                "  %{name}.h = load i16, ptr addrspace(1) %{name}.p, align 2"
            ));
            w(format!("  %{name}.w = zext i16 %{name}.h to i32"));
            w(format!("  %{name}.s = shl i32 %{name}.w, 16"));
            if t == "double" {
                w(format!("  %{name}.f = bitcast i32 %{name}.s to float"));
                w(format!("  %{name}.x = fpext float %{name}.f to double"));
            } else {
                w(format!("  %{name}.x = bitcast i32 %{name}.s to float"));
            }
        }
        DType::F64 => {
            w(format!(
                "  %{name}.p = getelementptr inbounds double, ptr addrspace(1) %{name}.ptr, i64 %{name}.i"
            ));
            w(format!(
                "  %{name}.x = load double, ptr addrspace(1) %{name}.p, align 8"
            ));
        }
        _ => {
            w(format!(
                "  %{name}.p = getelementptr inbounds float, ptr addrspace(1) %{name}.ptr, i64 %{name}.i"
            ));
            if t == "double" {
                w(format!(
                    "  %{name}.f = load float, ptr addrspace(1) %{name}.p, align 4"
                ));
                w(format!("  %{name}.x = fpext float %{name}.f to double"));
            } else {
                w(format!(
                    "  %{name}.x = load float, ptr addrspace(1) %{name}.p, align 4"
                ));
            }
        }
    }
}

/// `%{out}`: the `f32` value `x` rounded to bf16 bits (`i16`): to
/// nearest, ties to even, NaN quieted — the same bits as the backend's
/// other bf16 stores.
pub(crate) fn round_bf16(o: &mut String, out: &str, x: &str) {
    let mut w = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    w(format!("  %{out}.u = bitcast float {x} to i32"));
    w(format!("  %{out}.hi = lshr i32 %{out}.u, 16"));
    w(format!("  %{out}.odd = and i32 %{out}.hi, 1"));
    w(format!("  %{out}.b = add i32 %{out}.u, 32767"));
    w(format!("  %{out}.r = add i32 %{out}.b, %{out}.odd"));
    w(format!("  %{out}.rn = lshr i32 %{out}.r, 16"));
    w(format!("  %{out}.qn = or i32 %{out}.hi, 64"));
    w(format!("  %{out}.nan = fcmp uno float {x}, {x}"));
    w(format!(
        "  %{out}.bits = select i1 %{out}.nan, i32 %{out}.qn, i32 %{out}.rn"
    ));
    w(format!("  %{out} = trunc i32 %{out}.bits to i16"));
}

fn fma_suffix(t: &str) -> &'static str {
    if t == "double" { "f64" } else { "f32" }
}
