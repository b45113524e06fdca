//! Lowering: graph IR to kernel IR.
//!
//! [`lower`] partitions a verified graph into kernels — views become
//! strides, elementwise chains fuse into their consumers, reductions,
//! matrix products and the semantic and fused ops become kernels of their
//! own (the latter from hand-written [`templates`]) — and places every
//! temporary in one arena with liveness-based reuse ([`memory`]).
//!
//! ```
//! use birkhoff_dsl::zoo::{ModelArgs, build_model};
//! use birkhoff_lower::{LowerOptions, lower};
//!
//! let model = build_model("mhc-post", &ModelArgs::default())?;
//! let fused = birkhoff_opt::optimize(&model.graph, |_| false)?.graph;
//! let program = lower(&fused, &LowerOptions::default())?;
//! assert_eq!(program.kernels.len(), 1);
//! assert!(program.kernels[0].name.ends_with("mhc_post"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod builder;
mod error;
mod kernel_fusion;
mod lower;
pub mod memory;
mod scratch_at_use;
pub mod templates;
mod views;

pub use builder::ProgramBuilder;
pub use error::{LowerError, Result};
pub use lower::{MAX_FUSED_DEPTH, lower};
pub use views::Access;

/// How the mHC pre-mix computes its `n(n+2)` projections.
///
/// The default is [`PreMixProjection::Gemm`]: on the CPU backend it measured
/// 25–34 ms against 283 ms for the in-kernel sweep at T = 4096, n = 4,
/// C = 2560 (`birkhoff bench mhc-pre --projection ...`): the runtime GEMM
/// uses 256-bit FMA and register blocking, while the one-sweep kernel
/// keeps n(n+2)+1 accumulators live, more than the 16 vector registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PreMixProjection {
    /// Inside the fused kernel, in the same sweep over each token's row
    /// as the sum of squares (reads x once; compute-bound on CPUs).
    InKernel,
    /// With the runtime's matrix product, then a per-token kernel.
    #[default]
    Gemm,
}

/// What the target backend's matrix-product routine provides beyond
/// `f32`/`f64` products (see `birkhoff_ir::kernel::Gemm`); lowering uses
/// the extras only where they are switched on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GemmSupport {
    /// It reads `bf16` operands directly, one or both (the other `f32`),
    /// else they are widened to `f32` copies by a kernel first.
    pub bf16_operands: bool,
    /// It writes the sum of squares of every row of `a` while reading it
    /// (else a kernel sweeps the rows again for it).
    pub row_sumsq: bool,
    /// It writes a `bf16` result: products accumulate in `f32` and each
    /// element is rounded to `bf16` once, when stored (as the graph's
    /// semantics round a `bf16` matrix product). With it, `bf16` matrix
    /// products take the routine (their operands read as `bf16` directly
    /// with [`GemmSupport::bf16_operands`], else from `f32` copies); without
    /// it they are loop nests. `i32` products are loop nests either way.
    pub bf16_results: bool,
    /// The fewest blocks of 16 rows an `mhc` projection (`x · fnᵀ`, a
    /// product of at most 32 columns) should run as: with fewer, its long
    /// inner dimension is split into partial products, a batch that a
    /// kernel sums afterwards, so the device has enough independent work
    /// (0: never split). The GPU: 264, two per SM of an H100.
    pub min_row_blocks: usize,
}

/// The longest part, in tokens, a split short-and-wide product leaves one
/// thread to sum ([`GemmSupport::wide_splits`]).
pub const WIDE_PART_MAX: usize = 1024;

impl GemmSupport {
    /// How many partial products a projection of `rows` rows and inner
    /// dimension `k` is split into ([`GemmSupport::min_row_blocks`]): a
    /// power of two, each part at least 256 long and a multiple of 32.
    pub fn k_splits(&self, rows: usize, k: usize) -> usize {
        self.splits(rows.div_ceil(16), k, 32, 256)
    }

    /// How many partial products a short, wide product (`d_fn = gᵀ·x`:
    /// at most 32 rows, `cols` columns, inner dimension `k`) is split into,
    /// for the same number of blocks when a block covers 256 columns: a
    /// power of two, each part at least 64 long (at T = 1024, C = 2048:
    /// 16 parts, 512 blocks; parts of 128 left 256 blocks, and twice the
    /// chain per thread).
    ///
    /// Parts are also halved while longer than [`WIDE_PART_MAX`] (when
    /// splitting at all): a thread sums one part in order, so past that
    /// its chain, not the device's width, limits the product (at
    /// T = 16384, C = 2560: 16 parts where 8 fill the device).
    pub fn wide_splits(&self, cols: usize, k: usize) -> usize {
        let mut s = self.splits(cols.div_ceil(256), k, 1, 64);
        while self.min_row_blocks > 0
            && k / s > WIDE_PART_MAX
            && k.is_multiple_of(2 * s)
            && k / (2 * s) >= 64
        {
            s *= 2;
        }
        s
    }

    /// Doubles the parts of `k` while `blocks` times them stays under
    /// [`GemmSupport::min_row_blocks`] and halves leave parts of at least
    /// `min`, each a multiple of `quantum`.
    fn splits(&self, blocks: usize, k: usize, quantum: usize, min: usize) -> usize {
        let mut s = 1;
        while blocks * s < self.min_row_blocks
            && k.is_multiple_of(2 * s * quantum)
            && k / (2 * s) >= min
        {
            s *= 2;
        }
        s
    }
}

/// Lowering settings.
#[derive(Clone, Copy, Debug)]
pub struct LowerOptions {
    /// How `mhc_pre` / `hc_pre` compute their projections.
    pub projection: PreMixProjection,
    /// What the backend's matrix product provides.
    pub gemm: GemmSupport,
    /// Fuse consecutive per-row kernels and merge their sweeps (see
    /// `kernel_fusion.rs`); on by default, off to look at the unfused kernels.
    pub fuse_kernels: bool,
    /// Keep a token's long scalar work — the Sinkhorn projection of the
    /// pre-mix and its backward — in a kernel of its own, apart from the
    /// kernels that stream the token's rows (the GPU: a thread per token
    /// runs all tokens' chains at once, where inside a block per token one
    /// warp would run each chain while the row's other warps wait). The
    /// pre-mix then hands its gates over in a `[T, n]` temporary.
    pub scalar_kernels_apart: bool,
    /// Spell a Sinkhorn column normalization as one vector reduction per
    /// column (and its backward likewise), not as rows added into a
    /// scratch row of column sums. The sums are the same terms in the
    /// same order when run in order; a backend that spreads vector loops
    /// over lanes can then run a matrix element per lane, a row's and a
    /// column's sum each a reduction across `n` of them (the GPU). Off on
    /// the CPU, which keeps the row-wise form its vector loops suit.
    pub column_reductions: bool,
    /// Divide a Sinkhorn line (forward and backward) by its sum through
    /// the sum's reciprocal, one per line, and a multiply per element: two
    /// roundings instead of one, within the numerics contract, for a
    /// backend whose exact division costs several instructions and whose
    /// line sums land on one lane (the GPU). Off on the CPU, which divides.
    pub reciprocal_lines: bool,
    /// Compute a scratch array's elements where they are read, when each
    /// is read once and the fill's inputs stay unchanged (see
    /// `scratch_at_use.rs`): a GPU block's scalar section then holds one
    /// value at a time, not a whole unrolled row. Off on the CPU, whose
    /// vector loops fill such rows a vector at a time.
    pub values_at_use: bool,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions {
            projection: PreMixProjection::default(),
            gemm: GemmSupport::default(),
            fuse_kernels: true,
            scalar_kernels_apart: false,
            column_reductions: false,
            reciprocal_lines: false,
            values_at_use: false,
        }
    }
}

impl LowerOptions {
    /// How the GPU target lowers: its matrix product reads bf16 operands
    /// and sums each row's squares from the same loads, so the pre-mix
    /// streams a token's row once for its projection and once to apply it;
    /// it also writes bf16 results, so bf16 models' matrix products run on
    /// its tiled kernel rather than as loop nests; short projections split
    /// their inner dimension; long per-token scalar work is a kernel of
    /// its own ([`LowerOptions::scalar_kernels_apart`]); and Sinkhorn's
    /// column sums are reductions ([`LowerOptions::column_reductions`]),
    /// its lines divided through reciprocals
    /// ([`LowerOptions::reciprocal_lines`]); scratch rows read once are
    /// computed at their reads ([`LowerOptions::values_at_use`]).
    pub fn gpu(projection: PreMixProjection) -> LowerOptions {
        LowerOptions {
            projection,
            gemm: GemmSupport {
                bf16_operands: true,
                row_sumsq: true,
                bf16_results: true,
                min_row_blocks: 264,
            },
            scalar_kernels_apart: true,
            column_reductions: true,
            reciprocal_lines: true,
            values_at_use: true,
            ..LowerOptions::default()
        }
    }
}
