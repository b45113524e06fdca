//! Plans for training graphs: what `birkhoff train --recompute` runs.
//!
//! A training graph (forward and backward pass, from autodiff, after the
//! optimizer) is planned one of three ways ([`Recompute`]):
//!
//! * `none`: keep every saved activation;
//! * `block=K`: `docs/design.md` §2's mHC recipe on the graph's own connections —
//!   the residual stream is kept only at the start of every block of `K`
//!   consecutive connections; the other streams and every layer input (the
//!   pre-mix's first result) are recomputed in the backward pass by
//!   re-running the fused mHC ops (`mhc_pre`, `mhc_post`), never the layer
//!   functions F (the mixes, which are outputs, stay);
//! * `auto`: `block=K*` with `K*` the memory model's integer optimum
//!   ([`MhcStack::optimal_block`]) when the graph has mHC (or HC)
//!   connections; otherwise the general planner ([`crate::plan`]) with a
//!   recompute budget of [`AUTO_COST_FRACTION`] of the graph's cost.
//!
//! The connections are found structurally: the forward part's `mhc_post`
//! nodes in order, each reading the previous one's result as its residual
//! (a chain); stream `x_0` is the first one's residual input, `x_l` the
//! `l`-th one's result.

use std::fmt;
use std::str::FromStr;

use birkhoff_ir::{Graph, Op, ValueId};

use crate::mhc::MhcStack;
use crate::planner::{Objective, plan};
use crate::program::{Policy, RecomputeError, TensorProgram};
use crate::replay::replay_pre_mixes;

/// The share of a graph's cost (the optimizer's cost model, forward and
/// backward together) that `auto` lets the general planner spend on
/// recomputation, for graphs without mHC connections.
pub const AUTO_COST_FRACTION: f64 = 0.05;

/// What a training graph keeps for its backward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recompute {
    /// Keep every saved activation.
    #[default]
    None,
    /// The memory model's optimal mHC blocks, or the general planner for
    /// graphs without mHC connections.
    Auto,
    /// Keep the residual stream at the start of every block of this many
    /// consecutive mHC connections.
    Block(usize),
}

impl fmt::Display for Recompute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recompute::None => f.write_str("none"),
            Recompute::Auto => f.write_str("auto"),
            Recompute::Block(k) => write!(f, "block={k}"),
        }
    }
}

impl FromStr for Recompute {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Recompute::None),
            "auto" => Ok(Recompute::Auto),
            _ => match s.strip_prefix("block=").map(str::parse::<usize>) {
                Some(Ok(k)) if k > 0 => Ok(Recompute::Block(k)),
                Some(_) => Err(format!(
                    "'{s}': the block size in block=K is a whole number of layers, at least 1"
                )),
                None => Err(format!(
                    "'{s}' is not a recompute mode (none, auto, block=K)"
                )),
            },
        }
    }
}

/// The mHC connections of a training graph's forward part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connections {
    /// `x_0 … x_L`: the stream entering the first connection, then each
    /// connection's result.
    pub streams: Vec<ValueId>,
    /// Each connection's layer input (element 0 of its `mhc_pre` or
    /// `hc_pre`), where the graph has one.
    pub layer_inputs: Vec<ValueId>,
    /// The memory model of the stack (`T`, `n`, `C` from the stream's
    /// type `[T, n, C]`).
    pub stack: MhcStack,
}

impl Connections {
    /// The mHC connections of `graph`'s forward part (ancestors of
    /// `forward_outputs`), or `None` if it has none.
    ///
    /// # Errors
    /// An unknown forward output name.
    pub fn find(graph: &Graph, forward_outputs: &[&str]) -> Result<Option<Self>, RecomputeError> {
        let (order, split) = crate::program::forward_order(graph, forward_outputs)?;
        let forward = &order[..split];
        let posts: Vec<ValueId> = forward
            .iter()
            .copied()
            .filter(|&v| matches!(graph.node(v).op, Op::MhcPost))
            .collect();
        let Some(&first) = posts.first() else {
            return Ok(None);
        };
        // mhc_post's operands: (layer output, residual, post mix, comb mix).
        let mut streams = vec![graph.node(first).args[1]];
        for &p in &posts {
            if graph.node(p).args[1] != *streams.last().expect("x_0 is there") {
                // Not one chain (e.g. two independent stacks): no recipe.
                return Ok(None);
            }
            streams.push(p);
        }
        let ty = graph.ty(streams[0]);
        let &[tokens, n, hidden] = ty.shape.as_slice() else {
            return Ok(None);
        };
        let layer_inputs = forward
            .iter()
            .copied()
            .filter(|&v| {
                let node = graph.node(v);
                let Op::Get { index: 0 } = node.op else {
                    return false;
                };
                let pre = graph.node(node.args[0]);
                matches!(pre.op, Op::MhcPre(_) | Op::HcPre { .. }) && streams.contains(&pre.args[0])
            })
            .collect();
        Ok(Some(Connections {
            streams,
            layer_inputs,
            stack: MhcStack {
                layers: posts.len(),
                streams: n,
                hidden,
                tokens,
                bytes_per_element: ty.dtype.size_bytes(),
            },
        }))
    }

    /// The values the `block`-layer recipe recomputes: every stream but
    /// `x_0` and the block starts `x_K, x_2K, …` (the last stream `x_L`
    /// starts no block and is recomputed too), and every layer input
    /// (re-running its pre-mix).
    pub fn block_values(&self, block: usize) -> Vec<ValueId> {
        let layers = self.streams.len() - 1;
        let mut v: Vec<ValueId> = (1..=layers)
            .filter(|&i| !i.is_multiple_of(block) || i == layers)
            .map(|i| self.streams[i])
            .collect();
        v.extend(&self.layer_inputs);
        v
    }
}

/// A plan for a training graph: what [`crate::apply`] should recompute,
/// and the simulator's prediction for it.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingPlan {
    /// The graph the plan is for: the planned graph itself, or for
    /// `block=K` on mHC connections, that graph with its layer inputs
    /// replayed per block (`mhc_pre` split into `mhc_project` and
    /// `mhc_pre_projected`; see `docs/recompute.md`). `recompute` names
    /// values of this graph, and [`crate::apply`] rewrites it.
    pub graph: Graph,
    /// Layer inputs the backward pass reads from a replayed
    /// `mhc_pre_projected` (placed with their block) instead of keeping.
    pub replayed: usize,
    /// The mode asked for.
    pub mode: Recompute,
    /// The mHC block size used (`block=K`, or `auto` on an mHC graph).
    pub block: Option<usize>,
    /// The graph's mHC connections, if it has any.
    pub connections: Option<Connections>,
    /// Saved activations to recompute (values of the planned graph).
    pub recompute: Vec<ValueId>,
    /// Predicted peak of live activation bytes
    /// ([`TensorProgram::simulate`]).
    pub peak_bytes: u64,
    /// The same prediction when everything is kept.
    pub keep_all_peak_bytes: u64,
    /// Summed cost of every re-run op, in the optimizer's cost units.
    pub recompute_cost: f64,
}

impl fmt::Display for TrainingPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "recompute {}", self.mode)?;
        match (self.block, &self.connections) {
            (Some(k), Some(c)) => write!(
                f,
                " (mHC blocks of {k} over {} connections, n={}, C={}, T={})",
                c.stack.layers, c.stack.streams, c.stack.hidden, c.stack.tokens
            )?,
            _ if self.mode == Recompute::None => {}
            _ => f.write_str(" (general planner)")?,
        }
        write!(
            f,
            ": {} values recomputed; predicted peak {} B (keep-all {} B), recompute cost {:.0}",
            self.recompute.len() + self.replayed,
            self.peak_bytes,
            self.keep_all_peak_bytes,
            // An empty f64 sum is -0.
            self.recompute_cost + 0.0
        )
    }
}

/// Plans `graph` (a training graph whose forward part is the ancestors of
/// `forward_outputs`) for `mode`.
///
/// # Errors
/// An unknown forward output; `block=K` on a graph without mHC
/// connections ([`RecomputeError::NoConnections`]) or with `K` larger
/// than its number of connections ([`RecomputeError::BlockTooLarge`]).
pub fn plan_training(
    graph: &Graph,
    forward_outputs: &[&str],
    mode: Recompute,
) -> Result<TrainingPlan, RecomputeError> {
    let connections = Connections::find(graph, forward_outputs)?;
    let program = TensorProgram::from_graph(graph, forward_outputs, Policy::permissive())?;
    let keep_all = program.simulate(&[])?.peak_bytes;
    let block = match (mode, &connections) {
        (Recompute::None, _) => None,
        (Recompute::Block(_), None) => return Err(RecomputeError::NoConnections),
        (Recompute::Block(k), Some(c)) if k > c.stack.layers => {
            return Err(RecomputeError::BlockTooLarge {
                block: k,
                layers: c.stack.layers,
            });
        }
        (Recompute::Block(k), Some(_)) => Some(k),
        (Recompute::Auto, Some(c)) => Some(c.stack.optimal_block()),
        (Recompute::Auto, None) => {
            let general = TensorProgram::from_graph(graph, forward_outputs, Policy::default())?;
            let total: f64 = general.steps().iter().map(|s| s.cost).sum();
            let p = plan(
                &general,
                Objective::MinPeak {
                    max_cost: Some(AUTO_COST_FRACTION * total),
                },
            )?;
            return Ok(TrainingPlan {
                graph: graph.clone(),
                replayed: 0,
                mode,
                block: None,
                connections,
                recompute: p.recompute_values(&general),
                peak_bytes: p.peak_bytes,
                keep_all_peak_bytes: keep_all,
                recompute_cost: p.recompute_cost,
            });
        }
    };
    let (planned, replayed, program) = match (block, &connections) {
        (Some(k), Some(c)) => {
            let (g, replayed) = replay_pre_mixes(graph, forward_outputs, c, k)?;
            let p = TensorProgram::from_graph(&g, forward_outputs, Policy::permissive())?;
            (g, replayed, p)
        }
        _ => (graph.clone(), 0, program),
    };
    let recompute: Vec<ValueId> = match (block, Connections::find(&planned, forward_outputs)?) {
        (Some(k), Some(c)) => c
            .block_values(k)
            .into_iter()
            // Only what the backward pass reads is kept to begin with.
            // (and what must stay anyway: outputs).
            .filter(|&v| {
                program
                    .step_of(v)
                    .is_some_and(|s| program.is_saved(s) && !program.steps()[s].output)
            })
            .collect(),
        _ => Vec::new(),
    };
    let steps = program.steps_of(&planned, &recompute)?;
    let sim = program.simulate(&steps)?;
    // The replays run in the backward pass as ordinary steps; their cost is
    // recomputation all the same.
    let replay_cost: f64 = if replayed == 0 {
        0.0
    } else {
        let (order, split) = crate::program::forward_order(&planned, forward_outputs)?;
        order[split..]
            .iter()
            .map(|&v| planned.node(v))
            .filter(|n| matches!(n.op, Op::MhcPreProjected(_)))
            .map(|n| {
                let args: Vec<&birkhoff_ir::Type> =
                    n.args.iter().map(|&a| planned.value_type(a)).collect();
                birkhoff_opt::cost::node_cost(&n.op, &args, &n.ty).scalar()
            })
            .sum()
    };
    Ok(TrainingPlan {
        graph: planned,
        replayed,
        mode,
        block,
        connections,
        recompute,
        peak_bytes: sim.peak_bytes,
        keep_all_peak_bytes: keep_all,
        recompute_cost: sim.recompute_cost + replay_cost,
    })
}
