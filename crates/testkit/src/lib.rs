//! Shared test support for birkhoff: one tolerance table and the proptest
//! strategies every crate's property tests draw from.
//!
//! * [`tolerance`](crate::Tolerance): allowed `atol`/`rtol` per element type
//!   ([`TOLERANCES`]) and [`assert_close`] / [`close`], which report the
//!   worst element.
//! * strategies: small [`tensor_type`]s, [`tensor`]s with or without
//!   NaN, ±Inf, ±0 and subnormals, interpreter [`inputs`] for a graph, and
//!   random well-typed [`graph`]s over every op of the IR;
//! * whole models: [`zoo_case`] (zoo models on small shapes),
//!   [`seeded_inputs`] (input sets as seeds) and [`proptest_cases`];
//! * [`spellings`]: equivalent spellings of an mHC sublayer, for the
//!   optimizer's fusion properties.
//!
//! ```
//! use birkhoff_ir::{verify, DType, Tensor, TensorType};
//! use birkhoff_testkit::{assert_close, close, graph, Tolerance};
//! use proptest::prelude::*;
//!
//! let ty = TensorType::new(DType::F32, [2]);
//! let want = Tensor::from_f64(ty.clone(), &[1.0, f64::NAN])?;
//! let got = Tensor::from_f64(ty, &[1.000001, f64::NAN])?;
//! assert_close(&got, &want, Tolerance::elementwise(DType::F32));
//! assert!(close(&got, &want, Tolerance::EXACT).is_err());
//!
//! proptest!(|(g in graph())| {
//!     prop_assert!(verify(&g).is_ok(), "{g}");
//! });
//! # Ok::<(), birkhoff_ir::Error>(())
//! ```

mod cases;
#[allow(
    clippy::if_same_then_else,
    reason = "`eps + x` and `x + eps` are different spellings: the generator writes both on purpose"
)]
pub mod spellings;
mod strategies;
mod tolerance;

pub use cases::{proptest_cases, seeded_inputs, sizes_and_seed, zoo_case};
pub use strategies::{
    MAX_DIM, MAX_GRAPH_ELEMENTS, MAX_TEST_RANK, dtype, graph, graph_from_choices, inputs, scalar,
    shape, special_scalars, tensor, tensor_type,
};
pub use tolerance::{DTypeTolerance, TOLERANCES, Tolerance, assert_close, close};
