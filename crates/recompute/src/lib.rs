//! birkhoff's recomputation planner.
//!
//! mHC widens the residual stream `n`-fold, so in training the mHC
//! kernels' intermediates are dropped after the forward pass and recomputed
//! in the backward pass, without re-running the layer functions F. This
//! crate plans that for an L-layer mHC stack: keep the stream only at the
//! start of every block of `L_r` consecutive layers, and choose `L_r` from
//! the memory model of `docs/design.md` §2 (see [`MhcStack`] and `docs/recompute.md`).
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
//! The general planner works on any training graph (forward then backward,
//! as `birkhoff_autodiff::grad` builds it): [`TensorProgram`] models the
//! schedule and [`TensorProgram::simulate`] predicts peak memory and
//! recompute cost for a choice of saved activations to recompute; [`plan`]
//! chooses one (exactly on forward chains, greedily on DAGs) and [`apply`]
//! rewrites the graph to execute it.
//!
//! ```
//! use birkhoff_recompute::{Objective, Policy, TensorProgram, apply, plan};
//!
//! let g = birkhoff_ir::parse_graph(
//!     "graph @f(%x: f64[64]) -> (loss: f64[], d: f64[64]) {
//!        %1 = exp %x : f64[64]
//!        %2 = exp %1 : f64[64]
//!        %3 = reduce_sum %2, axes=[0] : f64[]
//!        %4 = mul %1, %2 : f64[64]
//!        return %3, %4
//!      }",
//! )?;
//! let p = TensorProgram::from_graph(&g, &["loss"], Policy::default())?;
//! let best = plan(&p, Objective::MinPeak { max_cost: None })?;
//! assert!(best.peak_bytes <= best.keep_all_peak_bytes);
//! let rewritten = apply(&g, &["loss"], &best.recompute_values(&p))?;
//! assert_eq!(rewritten.outputs().len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`plan_training`] plans a training graph the way `birkhoff train
//! --recompute none|auto|block=K` does: the mHC recipe on the graph's own
//! connections ([`Connections`]), or the general planner.

mod mhc;
mod planner;
mod program;
mod replay;
mod rewrite;
mod training;

pub use mhc::{BlockPlan, MAX_PLANNED_LAYERS, MemoryEstimate, MhcStack, PlanError, RecomputeCost};
pub use planner::{
    GeneralPlan, MAX_BRUTE_FORCE_CANDIDATES, MAX_CHAIN_LABELS, MAX_CHAIN_SLOTS, Method, Objective,
    brute_force, chain_dp, greedy, plan,
};
pub use program::{Policy, RecomputeError, Simulation, Step, TensorProgram, forward_order};
pub use rewrite::apply;
pub use training::{AUTO_COST_FRACTION, Connections, Recompute, TrainingPlan, plan_training};
