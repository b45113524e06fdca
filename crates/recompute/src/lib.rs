//! birkhoff's recomputation planner.
//!
//! mHC widens the residual stream `n`-fold, so in training the mHC
//! kernels' intermediates are dropped after the forward pass and recomputed
//! in the backward pass, without re-running the layer functions F. This
//! crate plans that for an L-layer mHC stack: keep the stream only at the
//! start of every block of `L_r` consecutive layers, and choose `L_r` from
//! the memory model of DESIGN §2 (see [`MhcStack`] and `docs/recompute.md`).
//!
//! ```
//! use birkhoff_recompute::MhcStack;
//!
//! let stack = MhcStack { layers: 60, streams: 4, hidden: 2560, tokens: 4096, bytes_per_element: 2 };
//! let plan = stack.plan(None, None).unwrap();
//! assert_eq!(plan.block, stack.optimal_block());
//! assert_eq!(plan.blocks.len(), 60usize.div_ceil(plan.block));
//! ```
//!
//! Not here yet: the general planner for any graph, fused multi-layer
//! recomputation and executing plans.

mod mhc;

pub use mhc::{BlockPlan, MemoryEstimate, MhcStack, PlanError, RecomputeCost};
