//! birkhoff's e-graph optimizer.
//!
//! The user writes mHC the way the paper writes the math, in primitive
//! ops; this crate finds the structure DeepSeek fused by hand. A graph is
//! inserted into an [`egg`] e-graph as a shared DAG, staged rule sets
//! ([`PASSES`]: canonicalize, simplify, recognize, sinkhorn, fuse-mhc) add
//! equivalent spellings — semantic ops such as `softmax` and `sinkhorn`,
//! then whole fused `mhc_pre` / `mhc_post` kernels — and an extractor that
//! counts shared subterms once picks the cheapest program under a cost
//! model of memory traffic, launches and flops ([`cost`]). [`expand`] is
//! the inverse: it rewrites every semantic and fused op back into
//! primitives, for passes (autodiff) that only know those.
//!
//! ```
//! use birkhoff_dsl::zoo::{ModelArgs, build_model};
//! use birkhoff_opt::optimize;
//!
//! let model = build_model("mhc-sublayer", &ModelArgs::default())?;
//! let out = optimize(&model.graph, |_| false)?;
//! assert_eq!(out.report.sites.get("mhc_pre"), Some(&1));
//! assert_eq!(out.report.sites.get("mhc_post"), Some(&1));
//! assert!(out.graph.len() < model.graph.len() / 10);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cost;
mod error;
mod expand;
mod extract;
mod flatten;
mod lang;
mod near_miss;
mod pipeline;
mod report;
mod rules;

pub use error::{Error, Result};
pub use expand::{expand, expand_keeping, is_expandable};
pub use near_miss::NearMiss;
pub use pipeline::{Optimized, PASSES, Pass, optimize, pass, run_passes};
pub use report::{Report, Site, sites};
pub use rules::{RuleSetStats, StopReason};
