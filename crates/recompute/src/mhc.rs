//! Block planning for an mHC stack: the memory model of `docs/design.md` §2, its
//! integer and analytic optima, memory budgets and block boundaries.

use std::fmt;
use std::ops::Range;

/// An L-layer mHC stack as the memory model sees it.
///
/// `layers` counts what `docs/design.md` §2 calls layers: units that each carry one
/// mHC connection (one widened-stream update). A model that wraps both the
/// attention and the MLP sublayer of a transformer layer in mHC has two such
/// units per transformer layer; pass whichever granularity the blocks should
/// be cut at.
///
/// The model, per token, for blocks of `L_r` consecutive layers: the stream
/// at the start of every block is kept, `n·C·⌈L/L_r⌉` elements (resident),
/// and the backward pass of one block recomputes that block's mHC
/// intermediates, `(n+2)·C·L_r` elements (transient). F (attention, MLP)
/// is never re-run: its outputs and the mixes are kept as they are without
/// recomputation, so they are the same for every plan and not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MhcStack {
    /// L: layers with an mHC connection.
    pub layers: usize,
    /// n: residual streams.
    pub streams: usize,
    /// C: hidden width.
    pub hidden: usize,
    /// T: tokens per step (batch × sequence).
    pub tokens: usize,
    /// Bytes per activation element (2 for bf16, 4 for f32).
    pub bytes_per_element: usize,
}

/// Predicted activation memory of a plan, in bytes for all `T` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// The kept block-start streams: `n·C` per block.
    pub resident_bytes: u64,
    /// One block's recomputed mHC intermediates: `(n+2)·C` per layer of the
    /// longest block.
    pub transient_bytes: u64,
    /// `resident_bytes + transient_bytes`.
    pub peak_bytes: u64,
}

/// What recomputation costs for a plan, in elements for all `T` tokens.
///
/// Every layer's mHC intermediates are recomputed exactly once, from its
/// block's start, whatever the block size: `(n+2)·C` elements per layer.
/// Each block additionally re-reads its kept starting stream once: `n·C`
/// elements per block. F is never re-run, so its cost is zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecomputeCost {
    /// Elements of mHC intermediates recomputed: `T·(n+2)·C·L`.
    pub recomputed_elements: u64,
    /// Elements of kept streams read back: `T·n·C·blocks`.
    pub reread_elements: u64,
}

/// A recomputation plan for an mHC stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockPlan {
    /// `L_r`: the longest a block may be.
    pub block: usize,
    /// The blocks as layer ranges, in order, covering `0..L`. Without
    /// boundaries all have length `block` except perhaps the last; with
    /// boundaries every segment between two boundaries is cut the same way.
    pub blocks: Vec<Range<usize>>,
    /// Predicted memory, computed from `blocks`.
    pub estimate: MemoryEstimate,
    /// What recomputation costs.
    pub recompute: RecomputeCost,
}

/// The most layers [`MhcStack::plan`] considers (it tries every block
/// size); far more than any model has.
pub const MAX_PLANNED_LAYERS: usize = 1_000_000;

/// Why a stack cannot be planned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// A dimension of the stack is zero.
    #[error("an mHC stack needs at least one {0}")]
    Zero(&'static str),
    /// A stack too large to plan: more layers than [`MAX_PLANNED_LAYERS`],
    /// or sizes whose byte counts do not fit in 64 bits.
    #[error("the mHC stack is too large to plan: {0}")]
    TooLarge(String),
    /// A block size of zero, or longer than the stack.
    #[error("block size {block} is outside 1..={layers}")]
    BlockOutOfRange {
        /// The block size asked for.
        block: usize,
        /// L.
        layers: usize,
    },
    /// A boundary at or past the last layer.
    #[error("block boundary {boundary} is outside 0..{layers}")]
    BoundaryOutOfRange {
        /// The offending boundary.
        boundary: usize,
        /// L.
        layers: usize,
    },
    /// Boundaries not strictly increasing.
    #[error("block boundaries must be strictly increasing, but {next} follows {prev}")]
    BoundariesUnsorted {
        /// The earlier boundary.
        prev: usize,
        /// The one after it.
        next: usize,
    },
    /// Even the best plan does not fit the budget.
    #[error(
        "no block size fits a budget of {budget} bytes: the smallest peak is {min_peak} bytes (block size {block})"
    )]
    OverBudget {
        /// The budget, in bytes.
        budget: u64,
        /// The smallest peak any block size achieves, in bytes.
        min_peak: u64,
        /// The block size that achieves it.
        block: usize,
    },
}

/// `a · b · c · d`, saturating at `u64::MAX`.
fn product(factors: &[usize]) -> u64 {
    let p = factors
        .iter()
        .try_fold(1u128, |acc, &f| acc.checked_mul(f as u128));
    p.and_then(|p| u64::try_from(p).ok()).unwrap_or(u64::MAX)
}

impl MhcStack {
    /// the memory model of `docs/design.md` §2 for uniform blocks of `block` layers: resident
    /// `n·C·⌈L/block⌉` plus transient `(n+2)·C·block` elements per token,
    /// times `T` and the element size. Byte counts saturate at `u64::MAX`.
    ///
    /// This is the formula as written, also for `block > L` (where the one
    /// real block is only `L` long); [`MhcStack::plan_block`] computes a
    /// plan's memory from its actual blocks instead.
    ///
    /// # Panics
    /// If `block` is zero.
    pub fn memory(&self, block: usize) -> MemoryEstimate {
        assert!(block > 0, "block size must be at least 1");
        self.estimate(self.layers.div_ceil(block), block)
    }

    /// Memory for `count` kept streams and a longest block of `longest`.
    fn estimate(&self, count: usize, longest: usize) -> MemoryEstimate {
        let (n, c, t, e) = (
            self.streams,
            self.hidden,
            self.tokens,
            self.bytes_per_element,
        );
        let resident_bytes = product(&[n, c, count, t, e]);
        let transient_bytes = product(&[n + 2, c, longest, t, e]);
        MemoryEstimate {
            resident_bytes,
            transient_bytes,
            peak_bytes: resident_bytes.saturating_add(transient_bytes),
        }
    }

    /// The integer block size in `1..=L` with the smallest peak under
    /// [`MhcStack::memory`]; ties go to the smaller block (the smaller
    /// working set live during a block's backward pass). 1 when `L` is 0.
    ///
    /// It is not always within one of [`MhcStack::analytic_block`]: the
    /// ceiling in `⌈L/L_r⌉` can move it further (n = 3, L = 25: the
    /// integer optimum is 5, the analytic one 3.87).
    /// [`MhcStack::block_gap_bound`] is the bound that does hold.
    pub fn optimal_block(&self) -> usize {
        (1..=self.layers.max(1))
            .min_by_key(|&b| self.memory(b).peak_bytes)
            .unwrap_or(1)
    }

    /// The continuous optimum `sqrt(n·L/(n+2))`, which minimizes
    /// `n·C·L/L_r + (n+2)·C·L_r` over real `L_r`.
    pub fn analytic_block(&self) -> f64 {
        let (n, l) = (self.streams as f64, self.layers as f64);
        (n * l / (n + 2.0)).sqrt()
    }

    /// A bound on `|optimal_block() − analytic_block()|` for `n, L ≥ 1`:
    /// `(k + sqrt(k² + 4·k·a)) / 2` with `a` the analytic optimum and
    /// `k = 1/4 + n/(n+2)`.
    ///
    /// Derivation (`docs/recompute.md`): with `g(x) = n·L/x + (n+2)·x`,
    /// `g(b) ≤ f(b) < g(b) + n` for the model's `f(b) = n·⌈L/b⌉ + (n+2)·b`,
    /// and `g(x) − g(a) = (n+2)(x−a)²/x`. Comparing the integer optimum
    /// `b*` with the integer nearest `a` (at most ½ away, and `a ≥ √(1/3)`)
    /// gives `(b*−a)² < k·b* ≤ k·(a + |b*−a|)`. The bound grows like
    /// `L^¼`; it is not a constant.
    pub fn block_gap_bound(&self) -> f64 {
        let n = self.streams as f64;
        let k = 0.25 + n / (n + 2.0);
        let a = self.analytic_block();
        (k + (k * k + 4.0 * k * a).sqrt()) / 2.0
    }

    fn validate(&self) -> Result<(), PlanError> {
        for (v, what) in [
            (self.layers, "layer"),
            (self.streams, "stream"),
            (self.hidden, "hidden unit"),
            (self.tokens, "token"),
            (self.bytes_per_element, "byte per element"),
        ] {
            if v == 0 {
                return Err(PlanError::Zero(what));
            }
        }
        if self.layers > MAX_PLANNED_LAYERS {
            return Err(PlanError::TooLarge(format!(
                "{} layers (at most {MAX_PLANNED_LAYERS} are planned)",
                self.layers
            )));
        }
        // Every byte count the plan reports is at most L·(n+2)·n·C·T·bytes.
        let all = [
            self.streams + 2,
            self.streams,
            self.hidden,
            self.tokens,
            self.bytes_per_element,
        ]
        .iter()
        .try_fold(self.layers as u64, |acc, &d| acc.checked_mul(d as u64));
        if all.is_none() {
            return Err(PlanError::TooLarge(format!(
                "L={} n={} C={} T={}: the activation sizes overflow 64-bit byte counts",
                self.layers, self.streams, self.hidden, self.tokens
            )));
        }
        Ok(())
    }

    /// The plan for a given block size: every segment between consecutive
    /// `boundaries` (layer indices where a new block must start, such as
    /// pipeline-stage starts; strictly increasing, each below `L`; 0 is
    /// implied) is cut into blocks of `block` layers, the last of each
    /// segment perhaps shorter, so no block crosses a boundary. Memory is
    /// computed from those blocks: one kept stream per block, transient for
    /// the longest block.
    pub fn plan_block(
        &self,
        block: usize,
        boundaries: Option<&[usize]>,
    ) -> Result<BlockPlan, PlanError> {
        self.validate()?;
        let l = self.layers;
        if block == 0 || block > l {
            return Err(PlanError::BlockOutOfRange { block, layers: l });
        }
        let starts = self.segment_starts(boundaries.unwrap_or(&[]))?;
        let mut blocks = Vec::new();
        for (i, &s) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(l);
            blocks.extend((s..end).step_by(block).map(|b| b..(b + block).min(end)));
        }
        let longest = blocks.iter().map(ExactSizeIterator::len).max().unwrap_or(0);
        let n = self.streams;
        Ok(BlockPlan {
            block,
            estimate: self.estimate(blocks.len(), longest),
            recompute: RecomputeCost {
                recomputed_elements: product(&[n + 2, self.hidden, l, self.tokens]),
                reread_elements: product(&[n, self.hidden, blocks.len(), self.tokens]),
            },
            blocks,
        })
    }

    /// Checks `boundaries` and returns the segment starts, beginning at 0.
    fn segment_starts(&self, boundaries: &[usize]) -> Result<Vec<usize>, PlanError> {
        let mut starts = vec![0];
        for (i, &b) in boundaries.iter().enumerate() {
            if b >= self.layers {
                return Err(PlanError::BoundaryOutOfRange {
                    boundary: b,
                    layers: self.layers,
                });
            }
            if let Some(&prev) = i.checked_sub(1).and_then(|p| boundaries.get(p))
                && b <= prev
            {
                return Err(PlanError::BoundariesUnsorted { prev, next: b });
            }
            if b > 0 {
                starts.push(b);
            }
        }
        Ok(starts)
    }

    /// The plan with the smallest peak over all block sizes `1..=L` (ties
    /// to the smaller block), with blocks aligned to `boundaries` as in
    /// [`MhcStack::plan_block`]. Without boundaries its block is
    /// [`MhcStack::optimal_block`] and its memory is [`MhcStack::memory`].
    ///
    /// With a `budget` in bytes, the plan must also fit it: since the plan
    /// already has the smallest peak, a budget below that peak is an
    /// [`PlanError::OverBudget`] error stating the minimum achievable peak.
    pub fn plan(
        &self,
        budget: Option<u64>,
        boundaries: Option<&[usize]>,
    ) -> Result<BlockPlan, PlanError> {
        let mut best = self.plan_block(1, boundaries)?;
        for b in 2..=self.layers {
            let p = self.plan_block(b, boundaries)?;
            if p.estimate.peak_bytes < best.estimate.peak_bytes {
                best = p;
            }
        }
        match budget {
            Some(budget) if best.estimate.peak_bytes > budget => Err(PlanError::OverBudget {
                budget,
                min_peak: best.estimate.peak_bytes,
                block: best.block,
            }),
            _ => Ok(best),
        }
    }
}

/// The blocks compactly: runs of equal-length blocks as `start..end (k × len)`,
/// single blocks as `start..end`, separated by `, `.
impl fmt::Display for BlockPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        while let Some(first) = self.blocks.get(i) {
            let len = first.len();
            let mut j = i + 1;
            while self.blocks.get(j).is_some_and(|b| b.len() == len) {
                j += 1;
            }
            if i > 0 {
                f.write_str(", ")?;
            }
            let end = self.blocks[j - 1].end;
            if j - i == 1 {
                write!(f, "{}..{end}", first.start)?;
            } else {
                write!(f, "{}..{end} ({} × {len})", first.start, j - i)?;
            }
            i = j;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_groups_runs() {
        let s = MhcStack {
            layers: 60,
            streams: 4,
            hidden: 1,
            tokens: 1,
            bytes_per_element: 1,
        };
        let p = s.plan_block(4, Some(&[0, 15, 30, 45])).unwrap();
        assert_eq!(
            p.to_string(),
            "0..12 (3 × 4), 12..15, 15..27 (3 × 4), 27..30, 30..42 (3 × 4), 42..45, 45..57 (3 × 4), 57..60"
        );
        assert_eq!(
            s.plan_block(7, None).unwrap().to_string(),
            "0..56 (8 × 7), 56..60"
        );
    }
}
