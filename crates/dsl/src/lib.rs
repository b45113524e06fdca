//! The Rust DSL for birkhoff graphs, and the model zoo.
//!
//! Build a graph with a [`Builder`] and [`Var`] handles; arithmetic
//! operators and methods append primitive ops, broadcasting NumPy-style.
//! Shape mistakes are reported with the caller's file and line by
//! [`Builder::build`], never by a panic.
//!
//! ```
//! use birkhoff_dsl::{Builder, nn};
//! use birkhoff_ir::DType;
//!
//! let b = Builder::new("norm");
//! let x = b.input("x", DType::F32, &[8, 64]);
//! let w = b.param("w", DType::F32, &[64]);
//! b.output("y", nn::rms_norm(x, Some(w), 1e-6));
//! let graph = b.build()?;
//! assert!(graph.to_string().contains("rsqrt"));
//!
//! // Mistakes surface from build(), located at the offending call.
//! let b = Builder::new("bad");
//! let x = b.input("x", DType::F32, &[8, 64]);
//! let y = b.input("y", DType::F32, &[8, 32]);
//! b.output("z", x + y);
//! assert!(b.build().unwrap_err().to_string().contains("cannot broadcast"));
//! # Ok::<(), birkhoff_dsl::Error>(())
//! ```
//!
//! The [`zoo`] builds every model of the mHC paper from these pieces, and
//! [`lm`] the byte-level language model that training uses.

mod builder;
mod error;
mod init;
pub mod lm;
pub mod nn;
mod var;
pub mod zoo;

pub use builder::{Builder, Var};
pub use error::{BuildError, Error, Result};
pub use init::{Init, Inits, Rng, random_inputs, random_tensor};
pub use var::{broadcast_shapes, concat};
