//! The tolerance table lives with the IR (it states the numerics contract
//! every backend is held to); re-exported here for tests.

pub use birkhoff_ir::tolerance::{DTypeTolerance, TOLERANCES, Tolerance, assert_close, close};
