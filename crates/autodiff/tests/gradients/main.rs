//! Gradient checks for `birkhoff_autodiff::grad`.
//!
//! * `ops`: every primitive op's gradient rule against central finite
//!   differences of the f64 reference interpreter, on proptest-chosen
//!   shapes and values, plus the conventions at non-differentiable points.
//! * `composites`: an MLP with RMSNorm and a softmax cross-entropy loss,
//!   written in primitive ops with the DSL.
//! * `fused`: gradients through the semantic and fused ops (expanded into
//!   primitives first) on every zoo model, against finite differences and
//!   against the unfused graph.
//! * `sinkhorn`: the recomputing Sinkhorn backward (`sinkhorn_grad`)
//!   against autodiff through the unrolled primitive rounds.
//! * `mhc_post`: the fused post-mix backward (`mhc_post_grad`) against
//!   autodiff through the expanded primitives.
//! * `mhc_pre`: the fused pre-mix backward (`mhc_pre_grad`) against
//!   autodiff through the expanded primitives.
//! * `errors`: every error a caller can provoke.
//!
//! Case counts are fixed per property (see `common::config`);
//! `PROPTEST_CASES` overrides them.

mod common;
mod composites;
mod errors;
mod fused;
mod mhc_post;
mod mhc_pre;
mod ops;
mod sinkhorn;
