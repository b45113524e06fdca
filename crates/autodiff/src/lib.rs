//! Reverse-mode automatic differentiation over birkhoff's graph IR.
//!
//! [`grad`] takes a graph, the name of a scalar float output (the loss) and
//! the names of float inputs, and returns one graph that computes the loss
//! and its gradient with respect to each of those inputs: the forward pass
//! followed by the backward pass, built from the same primitive ops, so it
//! goes through the optimizer and the backends like any other graph. The
//! gradient rules and their conventions at non-differentiable points are
//! in `docs/autodiff.md`.
//!
//! ```
//! use std::collections::BTreeMap;
//! use birkhoff_autodiff::grad;
//! use birkhoff_ir::{interpret, parse_graph, DType, InterpOptions, Tensor, TensorType};
//!
//! // loss = sum(x · x), so d_x = 2 x.
//! let g = parse_graph(
//!     "graph @sq(%x: f64[3]) -> (loss: f64[]) {
//!        %1 = mul %x, %x : f64[3]
//!        %2 = reduce_sum %1, axes=[0] : f64[]
//!        return %2
//!      }",
//! )?;
//! let dg = grad(&g, "loss", &["x"])?;
//! assert_eq!(dg.outputs()[1].name, "d_x");
//!
//! let x = Tensor::from_f64(TensorType::new(DType::F64, [3]), &[1.0, -2.0, 0.5])?;
//! let out = interpret(&dg, &BTreeMap::from([("x".to_string(), x)]), &InterpOptions::default())?;
//! assert_eq!(out[0].1.to_f64_vec(), vec![5.25]);
//! assert_eq!(out[1].1.to_f64_vec(), vec![2.0, -4.0, 1.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod append;
mod error;
mod grad;
mod vjp;

pub use error::{AutodiffError, Result};
pub use grad::grad;
