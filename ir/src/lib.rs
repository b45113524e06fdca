//! birkhoff's graph IR.
//!
//! A [`Graph`] is a list of SSA values in an arena, each produced by one
//! [`Op`] from earlier values, with static [`TensorType`]s. This crate owns
//! everything that defines the IR: the op set and its typing rules
//! ([`infer_type`]), the [`verify`]er, the text format ([`Graph`]'s
//! `Display` and [`parse_module`]), Graphviz output ([`to_dot`]) and the
//! reference [`interpret`]er, whose `f64` results are the oracle every
//! compiled path is checked against.
//!
//! ```
//! use std::collections::BTreeMap;
//! use birkhoff_ir::{interpret, parse_and_verify, InterpOptions, Tensor, TensorData};
//!
//! let text = "
//! graph @softmax_row(%x: f32[1,3]) -> (y: f32[1,3]) {
//!   %1 = reduce_max %x, axes=[1], keepdims : f32[1,1]
//!   %2 = broadcast %1 : f32[1,3]
//!   %3 = sub %x, %2 : f32[1,3]
//!   %4 = exp %3 : f32[1,3]
//!   %5 = reduce_sum %4, axes=[1], keepdims : f32[1,1]
//!   %6 = broadcast %5 : f32[1,3]
//!   %7 = div %4, %6 : f32[1,3]
//!   return %7
//! }";
//! let graph = parse_and_verify(text)?.remove(0);
//! assert_eq!(parse_and_verify(&graph.to_string())?[0], graph);
//!
//! let x = Tensor::new([1, 3], TensorData::F32(vec![1.0, 2.0, 3.0]))?;
//! let inputs = BTreeMap::from([("x".to_string(), x)]);
//! let out = interpret(&graph, &inputs, &InterpOptions::default())?;
//! let y = out[0].1.to_f64_vec();
//! assert!((y.iter().sum::<f64>() - 1.0).abs() < 1e-6);
//! # Ok::<(), birkhoff_ir::Error>(())
//! ```
#![deny(missing_docs)]

mod dot;
mod error;
mod graph;
mod infer;
mod interp;
pub mod kernel;
mod literal;
mod op;
mod parse;
mod print;
mod reference;
mod tensor;
pub mod tolerance;
mod types;
mod verify;

pub use dot::to_dot;
pub use error::{Error, ParseError, Result, TypeError, VerifyError, VerifyErrors};
pub use graph::{Graph, Node, Output, ValueId};
pub use infer::{infer, infer_type};
pub use interp::{
    InterpOptions, Precision, eval_binary, eval_unary, interpret, interpret_with_progress,
    node_cost, store,
};
pub use literal::{Literal, LiteralValues, format_scalar, parse_scalar};
pub use op::{
    Arity, FloatAttr, InputKind, MAX_SINKHORN_ITERS, Op, OpKind, PreMixGates, PreMixSpec,
    SinkhornSpec, SinkhornVariant,
};
pub use parse::{
    Location, SourceMap, parse_and_verify, parse_graph, parse_module, parse_module_with_locations,
    verify_located,
};
pub use print::{node_to_string, op_to_string, value_name};
pub use tensor::{Tensor, TensorData};
pub use types::{
    DType, MAX_ELEMENTS, MAX_RANK, TensorType, Type, format_bytes, num_elements, round_bf16,
    strides,
};
pub use verify::{dead_values, eliminate_dead_nodes, is_identifier, verify};
