//! Executing a plan: the graph rewrite that recomputes the chosen saved
//! activations in the backward pass.
//!
//! Lowering schedules kernels in graph node order and plans memory by
//! liveness, so a plan is executed by placing nodes: the forward part
//! first, then the backward part, with a clone of each recomputed value
//! inserted right before its first backward use, exactly where
//! [`TensorProgram::simulate`] assumes it runs.

use birkhoff_ir::{Graph, Node, Op, ValueId, verify};
use birkhoff_opt::cost::is_free;

use crate::program::{Policy, RecomputeError, TensorProgram, forward_order};

/// `graph` rewritten to recompute the saved activations `recompute` in the
/// backward pass instead of keeping them.
///
/// The result computes the same outputs. Its forward part (the ancestors
/// of `forward_outputs`) comes first, in the original order, then the
/// backward part. Each value in `recompute` is re-run by a clone of its
/// node inserted immediately before its first backward use, after clones
/// of any freed forward values it needs (recursively, as the simulator
/// does), and every later backward use reads the clone. Views over a
/// recomputed value (`reshape`, `broadcast`) are cloned with it, and a
/// recomputed `get` with its tuple op; views in the backward part are
/// placed right before their first user. The graph is verified before it
/// is returned.
///
/// `recompute` must name saved activations (forward values some backward
/// node uses, not views of one, not outputs); any op may be re-run, since
/// this executes a plan rather than judging it. Do not run the e-graph
/// optimizer on the result: it would merge each clone with its original
/// and undo the plan.
pub fn apply(
    graph: &Graph,
    forward_outputs: &[&str],
    recompute: &[ValueId],
) -> Result<Graph, RecomputeError> {
    verify(graph).map_err(|e| RecomputeError::InvalidGraph(e.to_string()))?;
    let p = TensorProgram::from_graph(graph, forward_outputs, Policy::permissive())?;
    let r = p.steps_of(graph, recompute)?;
    // Validates the plan with the simulator's own checks.
    let _ = p.simulate(&r)?;
    let (order, split) = forward_order(graph, forward_outputs)?;
    let n = graph.len();
    let mut forward = vec![false; n];
    for &v in &order[..split] {
        forward[v.index()] = true;
    }
    let mut in_r = vec![false; p.steps().len()];
    for &s in &r {
        in_r[s] = true;
    }
    let saved = p.saved();
    let available: Vec<bool> = (0..p.steps().len())
        .map(|s| {
            s < p.forward_len()
                && !in_r[s]
                && (saved.binary_search(&s).is_ok() || p.steps()[s].output)
        })
        .collect();

    let mut rw = Rewriter {
        graph,
        p: &p,
        out: Graph::new(graph.name()),
        map: vec![None; n],
        clone: vec![None; n],
        forward,
        available,
    };
    for &v in &order {
        let node = graph.node(v);
        if let Op::Input { name, kind, ty } = &node.op
            && graph.inputs().contains(&v)
        {
            rw.map[v.index()] = Some(rw.out.add_input(name.clone(), *kind, ty.clone()));
            continue;
        }
        if rw.forward[v.index()] {
            let args = node
                .args
                .iter()
                .map(|a| rw.mapped(*a))
                .collect::<Result<_, _>>()?;
            rw.map[v.index()] = Some(rw.out.push(Node {
                args,
                ..node.clone()
            }));
        } else if node.op.is_leaf() {
            rw.map[v.index()] = Some(rw.out.push(node.clone()));
        } else if !is_free(&node.op) || matches!(node.op, Op::Get { .. }) {
            // (A `get` owns its element's storage, as the simulator counts
            // it, so it runs where it stands, like any other step.)
            let args = node
                .args
                .iter()
                .map(|a| rw.resolve(*a))
                .collect::<Result<_, _>>()?;
            rw.map[v.index()] = Some(rw.out.push(Node {
                args,
                ..node.clone()
            }));
        }
        // Backward views are placed lazily, right before their first user.
    }
    for o in graph.outputs() {
        let v = rw.resolve(o.value)?;
        rw.out.add_output(o.name.clone(), v);
    }
    verify(&rw.out).map_err(|e| RecomputeError::Verify(e.to_string()))?;
    Ok(rw.out)
}

struct Rewriter<'a> {
    graph: &'a Graph,
    p: &'a TensorProgram,
    out: Graph,
    /// The emitted copy of each original node.
    map: Vec<Option<ValueId>>,
    /// The recomputed copy of each freed forward node (and views of it).
    clone: Vec<Option<ValueId>>,
    forward: Vec<bool>,
    /// Per step: kept for the backward part.
    available: Vec<bool>,
}

impl Rewriter<'_> {
    fn mapped(&self, v: ValueId) -> Result<ValueId, RecomputeError> {
        self.map
            .get(v.index())
            .copied()
            .flatten()
            .ok_or_else(|| RecomputeError::Verify(format!("{v} used before it is placed")))
    }

    /// The value a backward node reads for original value `v`.
    fn resolve(&mut self, v: ValueId) -> Result<ValueId, RecomputeError> {
        if self.forward[v.index()] {
            let Some(s) = self.p.step_of(v) else {
                return self.mapped(v); // resident
            };
            if self.available[s] {
                return self.mapped(v);
            }
            return self.rematerialize(v);
        }
        if let Some(m) = self.map[v.index()] {
            return Ok(m);
        }
        // A backward view, placed at its first use.
        let node = self.graph.node(v).clone();
        let args = node
            .args
            .iter()
            .map(|a| self.resolve(*a))
            .collect::<Result<_, _>>()?;
        let m = self.out.push(Node { args, ..node });
        self.map[v.index()] = Some(m);
        Ok(m)
    }

    /// The clone of freed forward value `v`, made now if not made yet
    /// (after its own freed operands).
    fn rematerialize(&mut self, v: ValueId) -> Result<ValueId, RecomputeError> {
        if let Some(c) = self.clone[v.index()] {
            return Ok(c);
        }
        let node = self.graph.node(v).clone();
        let args = node
            .args
            .iter()
            .map(|a| self.resolve(*a))
            .collect::<Result<_, _>>()?;
        let c = self.out.push(Node { args, ..node });
        self.clone[v.index()] = Some(c);
        Ok(c)
    }
}
