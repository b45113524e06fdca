//! The `f32` flavour of the tall-and-skinny product ([`super::skinny`]):
//! `f32` operands, fused multiply-adds on the CUDA cores. It serves the
//! `f32` mHC projection, which is a bandwidth problem (`N = n(n+2)`
//! columns, 6 multiply-adds per byte of `x`), so each element of `a` is
//! loaded once, with 16-byte loads, and each element of `b` loaded into a
//! register serves many rows.
//!
//! **Mapping.** A block of 8 warps owns `16·tiles` rows (the rule of
//! [`super::skinny`]). Each lane owns `R` of them ([`rows_per_lane`]: 2,
//! or 4 in 64-row blocks) and all `N` columns: `R·N` accumulators in
//! registers. A warp is `G = 16·tiles / R` row groups of `kl = 32 / G`
//! lanes (`lane = g·kl + t`); lane `(g, t)` owns rows `g + G·i` (`i < R`)
//! of the block, and in each warp step of `kw = 4·kl` elements of `K` it
//! loads the 4 elements at `4t` of each of its rows (`kl` lanes read
//! `4·kl` contiguous floats of a row: whole 32-byte sectors) and the same
//! 4 elements of every column of `b`, a 16-byte load whose address the
//! warp's `G` row groups share and whose values each lane uses for its
//! `R` rows. Steps are dealt to the 8 warps in turn, so at any moment the
//! block reads 8 neighbouring steps of each of its rows, and each warp
//! has the rows of its next [`PREFETCH`] steps in flight while it
//! computes one. Per lane and step that is `R + N` loads, `4·R·N` fused
//! multiply-adds and, with `row_sumsq`, `4·R` more for the squares, from
//! the same registers: at `R = 2`, `N = 24` (the mHC projection, 16 or 32
//! rows per block) 239 PTX instructions per step with the loop's, 1.25
//! per multiply-add, and about 108 registers, so two blocks fit on an SM.
//! `R = 4` in 64-row blocks keeps each row's share of a load at 32 bytes
//! (`kl = 2`) at the price of registers (one block per SM).
//!
//! **Reduction.** After the loop, the `kl` lanes of a row group hold
//! partial sums of the same `R·N` values (and `R` squares). A
//! reduce-scatter over butterfly shuffles halves the list at each of the
//! `log2 kl` steps — a lane sends the half its partner keeps and adds
//! the half it keeps — so each value is summed on one lane in a fixed
//! order and each lane ends with `R·N / kl` of them. The 8 warps then
//! add theirs into shared memory in warp order (warp 0 stores), and the
//! block writes its rows of `c` (and the sums of squares) from there. The
//! order of every sum is fixed by the code, so results are deterministic
//! run to run; they differ from a sequential dot product only by the
//! order of the `f32` sums, which the kernel IR allows.
//!
//! Rows past `M` read row `M - 1` (valid memory) and are not stored: rows
//! are independent, so they cost nothing but the loads.

use std::fmt::Write;

use super::skinny::{Skinny, THREADS, WARPS, buffer_bases, store_c, store_sumsq};

/// Rows of `a` per lane (`R`) for blocks of `tiles` 16-row tiles.
fn rows_per_lane(tiles: usize) -> usize {
    if tiles >= 4 { 4 } else { 2 }
}

/// Steps of `a` each warp keeps in flight ahead of the one it computes.
const PREFETCH: usize = 2;

/// LLVM IR text of a module holding one kernel, `entry`, computing `s`
/// (an `f32` product), launched with [`Skinny::grid`] blocks of
/// [`THREADS`] threads.
pub(crate) fn module_ir(entry: &str, s: &Skinny) -> String {
    let mut o = String::new();
    let l = Layout::of(s);
    let (r, g_n, kl, kw, vp) = (l.r, l.groups, l.klanes, l.kw, l.vp);
    let rows = s.rows();
    let steps = s.k / kw;
    let n = s.n;
    // `write!` into a String cannot fail.
    macro_rules! w {
        ($($t:tt)*) => { let _ = writeln!(o, $($t)*); };
    }
    o.push_str(&super::text_prelude());
    w!("declare float @llvm.fma.f32(float, float, float)");
    w!("declare float @llvm.nvvm.shfl.sync.bfly.f32(i32, float, i32, i32)");
    w!(
        "@{entry}.red = internal addrspace(3) global [{} x float] undef, align 16",
        g_n * vp
    );
    w!("define void @{entry}(ptr addrspace(1) noalias readonly %tab) {{");
    w!("entry:");
    w!("  %tid = call i32 @llvm.nvvm.read.ptx.sreg.tid.x()");
    w!("  %bx = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()");
    w!("  %by = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.y()");
    w!("  %warp = lshr i32 %tid, 5");
    w!("  %lane = and i32 %tid, 31");
    w!("  %t32 = and i32 %lane, {}", kl - 1);
    w!("  %g32 = lshr i32 %lane, {}", kl.trailing_zeros());
    w!("  %g = zext i32 %g32 to i64");
    w!("  %t = zext i32 %t32 to i64");
    w!("  %batch = zext i32 %by to i64");
    w!("  %rowbase32 = mul i32 %bx, {rows}");
    w!("  %rowbase = zext i32 %rowbase32 to i64");
    buffer_bases(&mut o, s);
    // Accumulators: value i·np + j is row i's column j (j = n: its sum of
    // squares); an alloca with constant indices, which SROA turns into
    // registers.
    w!("  %acc = alloca [{vp} x float], align 4");
    for v in 0..vp {
        w!("  %acc.{v} = getelementptr [{vp} x float], ptr %acc, i64 0, i64 {v}");
        w!("  store float 0.0, ptr %acc.{v}");
    }
    // Element offsets of this lane's rows and of `b` at step 0; rows past
    // the end read the last row.
    w!("  %t4 = mul i64 %t, 4");
    w!("  %a.batch = mul i64 %batch, {}", s.a.3);
    for i in 0..r {
        w!("  %ar.{i} = add i64 %rowbase, {}", i * g_n);
        w!("  %ar2.{i} = add i64 %ar.{i}, %g");
        w!("  %aok.{i} = icmp ult i64 %ar2.{i}, {}", s.m);
        w!(
            "  %arc.{i} = select i1 %aok.{i}, i64 %ar2.{i}, i64 {}",
            s.m - 1
        );
        w!("  %aro.{i} = mul i64 %arc.{i}, {}", s.a.2);
        w!("  %arb.{i} = add i64 %aro.{i}, %a.batch");
        w!("  %arc2.{i} = add i64 %arb.{i}, {}", s.a.1);
        w!("  %aoff.{i} = add i64 %arc2.{i}, %t4");
    }
    w!("  %b.batch = mul i64 %batch, {}", s.b.3);
    w!("  %b.b1 = add i64 %b.batch, {}", s.b.1);
    w!("  %boff = add i64 %b.b1, %t4");
    // The step loop: warp w computes steps w, w + 8, …, PREFETCH of them
    // per trip, with the rows of `a` of its next PREFETCH steps in flight
    // (a step past the end loads the last step again: valid memory).
    w!("  %first = zext i32 %warp to i64");
    for j in 0..PREFETCH {
        w!("  %pre.{j} = add i64 %first, {}", j * WARPS);
        load_a(&mut o, &l, steps, &format!("%pre.{j}"), &format!("p{j}"));
    }
    w!("  br label %loop.head");
    w!("loop.head:");
    w!("  %s = phi i64 [ %first, %entry ], [ %s.next, %loop.latch ]");
    for j in 0..PREFETCH {
        for i in 0..r {
            w!(
                "  %h.{j}.{i} = phi <4 x float> [ %av.p{j}.{i}, %entry ], [ %av.n{j}.{i}, %loop.latch ]"
            );
        }
    }
    w!("  %go = icmp ult i64 %s, {steps}");
    w!("  br i1 %go, label %step.0, label %reduce");
    for j in 0..PREFETCH {
        w!("step.{j}:");
        w!("  %s.{j} = add i64 %s, {}", j * WARPS);
        w!("  %pf.{j} = add i64 %s.{j}, {}", PREFETCH * WARPS);
        load_a(&mut o, &l, steps, &format!("%pf.{j}"), &format!("n{j}"));
        step_body(
            &mut o,
            s,
            &l,
            &format!("q{j}"),
            &format!("%s.{j}"),
            &format!("%h.{j}"),
        );
        if j + 1 < PREFETCH {
            w!("  %nx.{j} = add i64 %s, {}", (j + 1) * WARPS);
            w!("  %more.{j} = icmp ult i64 %nx.{j}, {steps}");
            w!("  br i1 %more.{j}, label %step.{}, label %reduce", j + 1);
        } else {
            w!("  br label %loop.latch");
        }
    }
    w!("loop.latch:");
    w!("  %s.next = add i64 %s, {}", PREFETCH * WARPS);
    w!("  br label %loop.head");
    // Reduce-scatter over the kl lanes of each row group.
    w!("reduce:");
    let mut cur: Vec<String> = (0..vp).map(|v| format!("%x.{v}")).collect();
    for (v, x) in cur.iter().enumerate() {
        w!("  {x} = load float, ptr %acc.{v}");
    }
    w!("  %off.0 = add i32 0, 0");
    let mut mask = 1;
    let mut step = 0;
    while mask < kl {
        let h = cur.len() / 2;
        w!("  %bit{step}.m = and i32 %t32, {mask}");
        w!("  %bit{step} = icmp ne i32 %bit{step}.m, 0");
        w!("  %bo{step} = select i1 %bit{step}, i32 {h}, i32 0");
        w!("  %off.{} = add i32 %off.{step}, %bo{step}", step + 1);
        let mut next = Vec::with_capacity(h);
        for j in 0..h {
            let v = format!("{step}.{j}");
            let (lo, hi) = (&cur[j], &cur[j + h]);
            w!("  %snd.{v} = select i1 %bit{step}, float {lo}, float {hi}");
            w!("  %kp.{v} = select i1 %bit{step}, float {hi}, float {lo}");
            w!(
                "  %rcv.{v} = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %snd.{v}, i32 {mask}, i32 31)"
            );
            w!("  %rs.{v} = fadd float %kp.{v}, %rcv.{v}");
            next.push(format!("%rs.{v}"));
        }
        cur = next;
        mask *= 2;
        step += 1;
    }
    // This lane's values sit at g·vp + off + j of the block's sums.
    w!("  %slot0 = mul i32 %g32, {vp}");
    w!("  %slot = add i32 %slot0, %off.{step}");
    for wi in 0..WARPS {
        w!("  %mine.{wi} = icmp eq i32 %warp, {wi}");
        w!("  br i1 %mine.{wi}, label %add.{wi}, label %added.{wi}");
        w!("add.{wi}:");
        for (j, x) in cur.iter().enumerate() {
            let v = format!("{wi}.{j}");
            w!("  %ri.{v} = add i32 %slot, {j}");
            w!(
                "  %rp.{v} = getelementptr [{} x float], ptr addrspace(3) @{entry}.red, i32 0, i32 %ri.{v}",
                g_n * vp
            );
            if wi == 0 {
                w!("  store float {x}, ptr addrspace(3) %rp.{v}");
            } else {
                w!("  %ro.{v} = load float, ptr addrspace(3) %rp.{v}");
                w!("  %rn.{v} = fadd float %ro.{v}, {x}");
                w!("  store float %rn.{v}, ptr addrspace(3) %rp.{v}");
            }
        }
        w!("  br label %added.{wi}");
        w!("added.{wi}:");
        w!("  call void @llvm.nvvm.barrier0()");
    }
    // Results: thread i writes elements i, i + 256, … of the rows × N
    // tile; row r of the block is value (r / G)·np + column of group r % G.
    w!("  %c.batch = mul i64 %batch, {}", s.c.4);
    let per = (rows * n).div_ceil(WARPS * 32);
    for i in 0..per {
        let v = format!("o{i}");
        w!("  %{v}.e = add i32 %tid, {}", i * WARPS * 32);
        w!("  %{v}.in = icmp ult i32 %{v}.e, {}", rows * n);
        w!("  %{v}.r = udiv i32 %{v}.e, {n}");
        w!("  %{v}.col = urem i32 %{v}.e, {n}");
        w!("  %{v}.row = add i32 %rowbase32, %{v}.r");
        w!("  %{v}.rok = icmp ult i32 %{v}.row, {}", s.m);
        w!("  %{v}.ok = and i1 %{v}.in, %{v}.rok");
        w!("  br i1 %{v}.ok, label %{v}.do, label %{v}.done");
        w!("{v}.do:");
        red_index(&mut o, &v, &format!("%{v}.r"), &format!("%{v}.col"), &l);
        w!(
            "  %{v}.sp = getelementptr [{} x float], ptr addrspace(3) @{entry}.red, i32 0, i32 %{v}.si",
            g_n * vp
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
        red_index(&mut o, "q", "%tid", &n.to_string(), &l);
        w!(
            "  %q.sp = getelementptr [{} x float], ptr addrspace(3) @{entry}.red, i32 0, i32 %q.si",
            g_n * vp
        );
        w!("  %q.x = load float, ptr addrspace(3) %q.sp");
        store_sumsq(&mut o, sq, "%q.x");
    }
    w!("  ret void");
    w!("}}");
    o.push_str(&super::text_epilogue(entry, THREADS));
    o
}

/// The shape of one lane's work.
struct Layout {
    /// Rows per lane (`R`).
    r: usize,
    /// Row groups per warp (`G`).
    groups: usize,
    /// Lanes per row group, splitting `K` (`kl`).
    klanes: usize,
    /// Elements of `K` per warp step.
    kw: usize,
    /// Values per row: `N`, plus the sum of squares.
    np: usize,
    /// Values per lane, `R·np` padded to a multiple of `kl`.
    vp: usize,
}

impl Layout {
    fn of(s: &Skinny) -> Layout {
        let r = rows_per_lane(s.tiles);
        let groups = s.rows() / r;
        let klanes = 32 / groups;
        let np = s.n + usize::from(s.sumsq.is_some());
        Layout {
            r,
            groups,
            klanes,
            kw: 4 * klanes,
            np,
            vp: (r * np).next_multiple_of(klanes),
        }
    }
}

/// `%{v}.si`: the shared-memory index of column `col` (an i32 value or
/// constant) of block row `r` (an i32 value).
fn red_index(o: &mut String, v: &str, r: &str, col: &str, l: &Layout) {
    let mut w = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    w(format!("  %{v}.rg = urem i32 {r}, {}", l.groups));
    w(format!("  %{v}.ri = udiv i32 {r}, {}", l.groups));
    w(format!("  %{v}.s0 = mul i32 %{v}.rg, {}", l.vp));
    w(format!("  %{v}.s1 = mul i32 %{v}.ri, {}", l.np));
    w(format!("  %{v}.s2 = add i32 %{v}.s0, %{v}.s1"));
    w(format!("  %{v}.si = add i32 %{v}.s2, {col}"));
}

/// `%av.{q}.{i}`: this lane's 4 elements of its row `i` at step `st` (an
/// i64 value), or at the last step where `st` is past it.
fn load_a(o: &mut String, l: &Layout, steps: usize, st: &str, q: &str) {
    macro_rules! w {
        ($($t:tt)*) => { let _ = writeln!(o, $($t)*); };
    }
    w!("  %sin.{q} = icmp ult i64 {st}, {steps}");
    w!(
        "  %sc.{q} = select i1 %sin.{q}, i64 {st}, i64 {}",
        steps - 1
    );
    w!("  %k0.{q} = mul i64 %sc.{q}, {}", l.kw);
    w!("  %pak.{q} = getelementptr float, ptr addrspace(1) %pa, i64 %k0.{q}");
    for i in 0..l.r {
        w!("  %ap.{q}.{i} = getelementptr float, ptr addrspace(1) %pak.{q}, i64 %aoff.{i}");
        w!(
            "  %al.{q}.{i} = load <4 x float>, ptr addrspace(1) %ap.{q}.{i}, align 16, !invariant.load !0"
        );
        // A use other than extractelement keeps the 16-byte load (and
        // its invariance) whole through the optimizer.
        w!("  %av.{q}.{i} = freeze <4 x float> %al.{q}.{i}");
    }
}

/// Squares and multiply-adds of step `st` (an i64 value) with this
/// lane's rows of `a` in the vectors `{h}.{i}`; `q` keeps value names
/// unique.
fn step_body(o: &mut String, s: &Skinny, l: &Layout, q: &str, st: &str, h: &str) {
    macro_rules! w {
        ($($t:tt)*) => { let _ = writeln!(o, $($t)*); };
    }
    let r = l.r;
    for i in 0..r {
        for e in 0..4 {
            w!("  %a.{q}.{i}.{e} = extractelement <4 x float> {h}.{i}, i32 {e}");
        }
    }
    if s.sumsq.is_some() {
        for i in 0..r {
            let v = i * l.np + s.n;
            w!("  %sq0.{q}.{i} = load float, ptr %acc.{v}");
            let mut acc = format!("%sq0.{q}.{i}");
            for e in 0..4 {
                let x = format!("%a.{q}.{i}.{e}");
                w!(
                    "  %sq{}.{q}.{i} = call float @llvm.fma.f32(float {x}, float {x}, float {acc})",
                    e + 1
                );
                acc = format!("%sq{}.{q}.{i}", e + 1);
            }
            w!("  store float {acc}, ptr %acc.{v}");
        }
    }
    w!("  %bk0.{q} = mul i64 {st}, {}", l.kw);
    w!("  %bk.{q} = add i64 %boff, %bk0.{q}");
    w!("  %pbk.{q} = getelementptr float, ptr addrspace(1) %pb, i64 %bk.{q}");
    for j in 0..s.n {
        let b = format!("{q}.{j}");
        w!(
            "  %bp.{b} = getelementptr float, ptr addrspace(1) %pbk.{q}, i64 {}",
            j * s.b.2
        );
        w!("  %bl.{b} = load <4 x float>, ptr addrspace(1) %bp.{b}, align 16, !invariant.load !0");
        w!("  %bv.{b} = freeze <4 x float> %bl.{b}");
        for e in 0..4 {
            w!("  %b.{b}.{e} = extractelement <4 x float> %bv.{b}, i32 {e}");
        }
        for i in 0..r {
            let v = i * l.np + j;
            w!("  %c0.{b}.{i} = load float, ptr %acc.{v}");
            let mut acc = format!("%c0.{b}.{i}");
            for e in 0..4 {
                w!(
                    "  %c{}.{b}.{i} = call float @llvm.fma.f32(float %a.{q}.{i}.{e}, float %b.{b}.{e}, float {acc})",
                    e + 1
                );
                acc = format!("%c{}.{b}.{i}", e + 1);
            }
            w!("  store float {acc}, ptr %acc.{v}");
        }
    }
}
