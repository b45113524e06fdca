//! Short and wide `f32` matrix products on AVX-512: `c[m×n] = a[m×k] ·
//! b[k×n]` with few rows (`m ≤ 24`), long rows of `b` and a moderate
//! inner dimension, such as the pre-mix backward's `d_fn = gᵀ·x` (24
//! rows, `k` the tokens, `n` the streams' width) at a training step's
//! token count.
//!
//! The GEMM crate packs `b` into panels before multiplying: for this shape
//! that is a second pass over the largest operand. Here each block of 16 columns
//! keeps its `m` sums in vector registers while the tokens stream by, in
//! runs of [`TOKENS_PER_RUN`] so a run's rows of `b` stay in cache for the
//! next block; `b` is read from memory once.
//!
//! Every sum runs over `k` in index order, one fused multiply-add per
//! term, starting from zero (or from `c` when accumulating). The caller
//! restores negative zeros afterwards, as for the GEMM crate.
#![allow(
    unsafe_code,
    reason = "AVX-512 intrinsics on the operands' raw addresses"
)]

use std::arch::x86_64::{
    __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
};

use rayon::prelude::*;

/// The most rows a product may have: each needs a vector register.
pub(crate) const MAX_ROWS: usize = 24;

/// The longest inner dimension taken. Beyond it the sweep's reads of `b`
/// (64 bytes from each row per block) lose to the GEMM crate's packing:
/// `c[24×10240] = a[24×4096]·b[4096×10240]` took 49–51 ms against 30–32,
/// while at an inner dimension of 512 or 1024 the sweep took 0.5–0.8× the
/// GEMM crate's time (`docs/backends.md`).
const MAX_INNER: usize = 1024;

/// Tokens (rows of `b`) per run: a run's rows of a 256-column chunk of
/// `b` (128 KB at 256 columns) stay in the core's L2 while the chunk's
/// 16 column blocks sweep them.
const TOKENS_PER_RUN: usize = 128;

/// Columns one task computes (a multiple of 16).
const CHUNK: usize = 256;

/// A product's shape and operand layout, in elements.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Product {
    /// Rows of `a` and `c`.
    pub m: usize,
    /// Columns of `b` and `c`.
    pub n: usize,
    /// The inner dimension.
    pub k: usize,
    /// `a`'s row and column strides.
    pub a_strides: (usize, usize),
    /// `b`'s row stride (its columns are contiguous).
    pub b_row_stride: usize,
    /// `c`'s row stride (its columns are contiguous).
    pub c_row_stride: usize,
    /// Add to `c` rather than overwrite it.
    pub accumulate: bool,
}

impl Product {
    /// Whether this routine takes the product: few rows, contiguous
    /// columns in `b` and `c`, and enough work that it is worth leaving
    /// the GEMM crate (which stays better for everything else).
    pub(crate) fn fits(&self) -> bool {
        (1..=MAX_ROWS).contains(&self.m)
            && self.n >= 16
            && (64..=MAX_INNER).contains(&self.k)
            && self.n.saturating_mul(self.k) >= 1 << 16
    }
}

/// Whether the running CPU has the instructions this routine uses.
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Computes `p` with its operands at `a`, `b`, `c` (addresses of their
/// first elements), across the current rayon pool's threads if
/// `parallel`.
///
/// # Safety
/// [`available`] returned true; every element of `a` (`m × k`), `b`
/// (`k × n`) and `c` (`m × n`) at the given strides lies inside live
/// memory, `c`'s elements overlap neither `a`'s nor `b`'s, and nothing
/// else touches `c` during the call.
pub(crate) unsafe fn run(p: &Product, a: usize, b: usize, c: usize, parallel: bool) {
    let chunks = p.n.div_ceil(CHUNK);
    let one = |i: usize| {
        let cols = i * CHUNK..((i + 1) * CHUNK).min(p.n);
        // SAFETY: the caller's guarantees; chunks write disjoint columns
        // of `c`.
        unsafe { chunk(p, cols, a as *const f32, b as *const f32, c as *mut f32) };
    };
    if parallel {
        (0..chunks).into_par_iter().for_each(one);
    } else {
        (0..chunks).for_each(one);
    }
}

/// Columns `cols` of the product.
///
/// # Safety
/// As [`run`], for these columns.
unsafe fn chunk(
    p: &Product,
    cols: std::ops::Range<usize>,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
) {
    // SAFETY: the caller's guarantees; each instantiation keeps `R`
    // accumulators in registers.
    unsafe {
        macro_rules! rows {
            ($($r:literal)*) => {
                match p.m {
                    $($r => blocks::<$r>(p, cols.clone(), a, b, c),)*
                    _ => unreachable!("`fits` admits 1..=MAX_ROWS rows"),
                }
            };
        }
        rows!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24);
    }
    let vector_end = cols.start + (cols.end - cols.start) / 16 * 16;
    for j in vector_end..cols.end {
        for r in 0..p.m {
            // SAFETY: as above; the same order of fused multiply-adds as
            // the vector blocks.
            unsafe {
                let cij = c.add(r * p.c_row_stride + j);
                let mut s = if p.accumulate { *cij } else { 0.0 };
                for t in 0..p.k {
                    let arj = *a.add(r * p.a_strides.0 + t * p.a_strides.1);
                    s = arj.mul_add(*b.add(t * p.b_row_stride + j), s);
                }
                *cij = s;
            }
        }
    }
}

/// The whole 16-column blocks of `cols`, `R` rows.
///
/// # Safety
/// As [`run`], and `R == p.m`.
#[target_feature(enable = "avx512f")]
unsafe fn blocks<const R: usize>(
    p: &Product,
    cols: std::ops::Range<usize>,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
) {
    let (ars, acs) = p.a_strides;
    let mut start = 0;
    while start < p.k {
        let end = (start + TOKENS_PER_RUN).min(p.k);
        let mut j = cols.start;
        while j + 16 <= cols.end {
            let mut acc: [__m512; R] = [_mm512_setzero_ps(); R];
            if start > 0 || p.accumulate {
                for (r, v) in acc.iter_mut().enumerate() {
                    // SAFETY: row r, columns j..j+16 of c.
                    *v = unsafe { _mm512_loadu_ps(c.add(r * p.c_row_stride + j)) };
                }
            }
            for t in start..end {
                // SAFETY: row t, columns j..j+16 of b; column t of a.
                let bv = unsafe { _mm512_loadu_ps(b.add(t * p.b_row_stride + j)) };
                for (r, v) in acc.iter_mut().enumerate() {
                    // SAFETY: row r, column t of a.
                    let art = unsafe { *a.add(r * ars + t * acs) };
                    *v = _mm512_fmadd_ps(_mm512_set1_ps(art), bv, *v);
                }
            }
            for (r, v) in acc.iter().enumerate() {
                // SAFETY: row r, columns j..j+16 of c.
                unsafe { _mm512_storeu_ps(c.add(r * p.c_row_stride + j), *v) };
            }
            j += 16;
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(p: &Product, a: &[f32], b: &[f32], c: &mut [f32]) {
        for r in 0..p.m {
            for j in 0..p.n {
                let cij = &mut c[r * p.c_row_stride + j];
                let mut s = if p.accumulate { *cij } else { 0.0 };
                for t in 0..p.k {
                    s = a[r * p.a_strides.0 + t * p.a_strides.1]
                        .mul_add(b[t * p.b_row_stride + j], s);
                }
                *cij = s;
            }
        }
    }

    /// The same fused multiply-adds in the same order as a scalar loop,
    /// so the results are equal bit for bit: for every row count, with
    /// and without whole blocks, a transposed `a`, padded rows of `b` and
    /// `c`, accumulation and both thread modes. Skipped on CPUs without
    /// AVX-512 (the executable then never calls it).
    #[test]
    fn the_pre_mix_backward_product_fits_and_others_do_not() {
        let d_fn = Product {
            m: 24,
            n: 2048,
            k: 512,
            a_strides: (1, 24),
            b_row_stride: 10240,
            c_row_stride: 10240,
            accumulate: false,
        };
        assert!(d_fn.fits());
        assert!(!Product { k: 4096, ..d_fn }.fits());
        assert!(!Product { m: 25, ..d_fn }.fits());
        assert!(!Product { n: 15, ..d_fn }.fits());
        assert!(!Product { k: 63, ..d_fn }.fits());
        assert!(
            !Product {
                n: 16,
                k: 64,
                ..d_fn
            }
            .fits()
        );
    }

    #[test]
    fn row_sweeps_equal_in_order_fused_sums() {
        if !available() {
            return;
        }
        let mut seed = 1u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for m in [1, 7, 16, 24] {
            for (n, k) in [(16, 64), (37, 300), (300, 129)] {
                for accumulate in [false, true] {
                    for transposed in [false, true] {
                        let p = Product {
                            m,
                            n,
                            k,
                            a_strides: if transposed { (1, m) } else { (k, 1) },
                            b_row_stride: n + 3,
                            c_row_stride: n + 5,
                            accumulate,
                        };
                        let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
                        let b: Vec<f32> = (0..k * (n + 3)).map(|_| next()).collect();
                        let c0: Vec<f32> = (0..m * (n + 5)).map(|_| next()).collect();
                        let mut want = c0.clone();
                        reference(&p, &a, &b, &mut want);
                        for parallel in [false, true] {
                            let mut got = c0.clone();
                            // SAFETY: the buffers hold every element at
                            // these strides; c is its own allocation.
                            unsafe {
                                run(
                                    &p,
                                    a.as_ptr() as usize,
                                    b.as_ptr() as usize,
                                    got.as_mut_ptr() as usize,
                                    parallel,
                                );
                            }
                            assert_eq!(got, want, "{p:?} parallel={parallel}");
                        }
                    }
                }
            }
        }
    }
}
