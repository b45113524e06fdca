//! The model the general planner works on: a schedule of value-producing
//! steps, split into a forward and a backward part, and the simulator that
//! predicts peak memory and recompute cost for a choice of activations to
//! recompute.
//!
//! A [`TensorProgram`] is built from a training graph with
//! [`TensorProgram::from_graph`] or directly from [`Step`]s (for tests and
//! for planning programs that are not graphs yet). [`TensorProgram::simulate`]
//! is the single definition of what a plan means; the planners and the
//! rewrite ([`crate::apply`]) follow it exactly.

use std::collections::HashMap;

use birkhoff_ir::{Graph, Op, Type, ValueId};
use birkhoff_opt::cost::{is_free, node_cost};

/// Errors of the general planner and the rewrite.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RecomputeError {
    /// A name given as a forward output is not an output of the graph.
    #[error("'{0}' is not an output of the graph")]
    UnknownOutput(String),
    /// A step refers to a step that does not come before it.
    #[error("step {step} uses step {arg}, which does not come before it")]
    BadArgument {
        /// The step.
        step: usize,
        /// The offending argument.
        arg: usize,
    },
    /// More forward steps than steps.
    #[error("forward part of {forward} steps in a program of {steps}")]
    BadBoundary {
        /// The forward length given.
        forward: usize,
        /// The number of steps.
        steps: usize,
    },
    /// A value to recompute does not exist.
    #[error("{0} is not a value of the program")]
    NoSuchValue(String),
    /// A value to recompute is an input, constant or a view of one: it is
    /// resident, never freed, so there is nothing to recompute.
    #[error("{0} is resident (an input, a constant or a view of one) and is never recomputed")]
    Resident(String),
    /// A value to recompute is not a saved activation (a forward value
    /// that some backward step uses).
    #[error("{0} is not a saved activation (a forward value the backward part uses)")]
    NotSaved(String),
    /// A value to recompute is a graph output, which must stay.
    #[error("{0} is an output of the graph and must stay")]
    Output(String),
    /// The plan would re-run a step the policy forbids re-running
    /// (by default a matrix product).
    #[error("the plan would re-run {0}, which the policy does not allow to be recomputed")]
    NotRecomputable(String),
    /// Brute force was asked to enumerate too many subsets.
    #[error("brute force over {candidates} candidates is too large (at most {max})")]
    TooManyCandidates {
        /// Candidates in the program.
        candidates: usize,
        /// The limit.
        max: usize,
    },
    /// No plan meets the memory budget.
    #[error("no plan has a peak of at most {budget} bytes; the smallest found is {best} bytes")]
    OverBudget {
        /// The budget asked for.
        budget: u64,
        /// The smallest peak found.
        best: u64,
    },
    /// The budget is not a finite, non-negative number.
    #[error("recompute-cost budget {0} is not a finite non-negative number")]
    BadBudget(f64),
    /// `block=K` asks for the mHC recipe on a graph with no chain of
    /// `mhc_post` connections.
    #[error(
        "block=K recomputation needs mHC (or HC) connections, and this graph has none; use auto (the general planner) or none"
    )]
    NoConnections,
    /// `block=K` with more layers per block than the graph has
    /// connections.
    #[error("block={block} is larger than the graph's {layers} mHC connections")]
    BlockTooLarge {
        /// The block size asked for.
        block: usize,
        /// The graph's connections.
        layers: usize,
    },
    /// The graph given to the rewrite does not verify.
    #[error("the graph does not verify: {0}")]
    InvalidGraph(String),
    /// The rewritten graph failed verification (a bug in the rewrite).
    #[error("the rewritten graph does not verify: {0}")]
    Verify(String),
}

/// Which ops the planner may re-run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Whether matrix products (`matmul`) may be recomputed. Off by
    /// default: they are the layer functions' expensive part, and the mHC
    /// recipe never re-runs F.
    pub recompute_matmul: bool,
}

impl Policy {
    /// Every saved activation that is not a graph output may be recomputed
    /// (what [`crate::apply`] executes: it runs a given plan, it does not
    /// judge it).
    pub fn permissive() -> Self {
        Policy {
            recompute_matmul: true,
        }
    }

    /// Whether `op` may be re-run under this policy.
    pub fn allows(&self, op: &Op) -> bool {
        self.recompute_matmul || !matches!(op, Op::MatMul)
    }
}

/// One value-producing step of a [`TensorProgram`].
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Bytes of the step's result while it is live.
    pub bytes: u64,
    /// Bytes live only while the step runs: the contiguous copies a kernel
    /// template makes of operands that are broadcast views (lowering gives
    /// every template row-major operands, and a broadcast is not one).
    pub scratch: u64,
    /// What re-running the step costs (the optimizer's scalar cost).
    pub cost: f64,
    /// The steps whose results it reads (resident values are not listed),
    /// each earlier than this step.
    pub args: Vec<usize>,
    /// Whether the policy allows re-running it.
    pub recomputable: bool,
    /// A graph output: lives to the end and is never recomputed.
    pub output: bool,
    /// The graph value it stands for, when built from a graph.
    pub value: Option<ValueId>,
}

impl Step {
    /// A recomputable, non-output step not tied to a graph.
    pub fn new(bytes: u64, cost: f64, args: Vec<usize>) -> Self {
        Step {
            bytes,
            scratch: 0,
            cost,
            args,
            recomputable: true,
            output: false,
            value: None,
        }
    }
}

/// A schedule of steps: the forward part (`0..forward_len`) then the
/// backward part, in execution order.
///
/// Inputs, parameters, constants and views of them are resident for the
/// whole step and are not steps: they are not counted in the activation
/// peak. Views (`reshape`, `broadcast` — the ops
/// [`birkhoff_opt::cost::is_free`] calls free, but `get`) allocate
/// nothing: a view is folded into the step that produced its storage, and
/// a use of the view is a use of that step, so storage lives as long as
/// any view of it. A fused op's tuple owns no storage: each `get` of it is
/// a free step owning its element, as lowering makes each element its own
/// buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorProgram {
    steps: Vec<Step>,
    forward_len: usize,
    /// Graph only: the step of every value (`None` for resident values).
    root: Vec<Option<usize>>,
}

/// The outcome of running a plan through the model.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct Simulation {
    /// The largest sum of live bytes at any point of the schedule.
    pub peak_bytes: u64,
    /// Summed cost of every re-run step.
    pub recompute_cost: f64,
    /// Steps re-run, in the order they run (recursive rematerializations
    /// of freed arguments included).
    pub rerun: Vec<usize>,
}

/// Where an instance of a step runs, in terms that do not depend on the
/// plan: the forward step, a clone made while resolving argument `arg` of
/// backward step `before` (`index` is the cloned step), or the backward
/// step itself. The chain planner orders these to add memory profiles of
/// different plans slot by slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Slot {
    Forward(usize),
    Clone {
        before: usize,
        arg: usize,
        index: usize,
    },
    Backward(usize),
    End,
}

/// One run of a step in the trace of a plan.
#[derive(Clone, Debug)]
pub(crate) struct Instance {
    pub step: usize,
    pub clone: bool,
    pub birth: Slot,
    pub death: Slot,
}

impl TensorProgram {
    /// A program from explicit steps; the first `forward_len` form the
    /// forward part. Every argument must be an earlier step (so the
    /// forward part never reads the backward part).
    pub fn new(steps: Vec<Step>, forward_len: usize) -> Result<Self, RecomputeError> {
        if forward_len > steps.len() {
            return Err(RecomputeError::BadBoundary {
                forward: forward_len,
                steps: steps.len(),
            });
        }
        for (i, s) in steps.iter().enumerate() {
            for &a in &s.args {
                if a >= i {
                    return Err(RecomputeError::BadArgument { step: i, arg: a });
                }
            }
        }
        Ok(TensorProgram {
            steps,
            forward_len,
            root: Vec::new(),
        })
    }

    /// The program of a training graph. The forward part is every ancestor
    /// of the outputs named in `forward_outputs` (e.g. `["loss"]`), in graph
    /// order; the backward part is every other node, in graph order
    /// ([`forward_order`] gives that order as values).
    pub fn from_graph(
        graph: &Graph,
        forward_outputs: &[&str],
        policy: Policy,
    ) -> Result<Self, RecomputeError> {
        let (order, forward_nodes) = forward_order(graph, forward_outputs)?;
        let n = graph.len();
        // root[v]: the step whose storage v is (views fold onto their source).
        let mut root: Vec<Option<usize>> = vec![None; n];
        let mut steps = Vec::new();
        let mut forward_len = 0;
        let mut is_output = vec![false; n];
        for o in graph.outputs() {
            if let Some(x) = is_output.get_mut(o.value.index()) {
                *x = true;
            }
        }
        for (pos, &v) in order.iter().enumerate() {
            let node = graph.node(v);
            if node.op.is_leaf() {
                continue;
            }
            // A tuple's elements are separate buffers once lowered, each
            // with its own lifetime: `get` owns its element's storage (and
            // costs nothing to re-run) and the tuple step none, so a
            // short-lived element can be recomputed while a long-lived one
            // (say, an output) stays.
            if is_free(&node.op) && !matches!(node.op, Op::Get { .. }) {
                // A view: the storage of its only operand (resident if that is).
                root[v.index()] = node.args.first().and_then(|a| root[a.index()]);
                continue;
            }
            let mut args = Vec::new();
            for a in &node.args {
                if let Some(r) = root[a.index()]
                    && !args.contains(&r)
                {
                    args.push(r);
                }
            }
            let tys: Vec<&Type> = node.args.iter().map(|&a| graph.value_type(a)).collect();
            root[v.index()] = Some(steps.len());
            let templated = node.op.is_semantic() || node.op.is_fused();
            let scratch = if templated {
                node.args
                    .iter()
                    .filter(|&&a| expands(graph, a))
                    .map(|&a| graph.ty(a).size_bytes() as u64)
                    .sum()
            } else {
                0
            };
            steps.push(Step {
                bytes: match &node.ty {
                    Type::Tuple(_) => 0,
                    Type::Tensor(t) => t.size_bytes() as u64,
                },
                scratch,
                cost: node_cost(&node.op, &tys, &node.ty).scalar(),
                args,
                recomputable: policy.allows(&node.op),
                output: false,
                value: Some(v),
            });
            if pos < forward_nodes {
                forward_len = steps.len();
            }
        }
        for (v, out) in is_output.iter().enumerate() {
            if *out && let Some(r) = root[v] {
                steps[r].output = true;
            }
        }
        let mut p = TensorProgram::new(steps, forward_len)?;
        p.root = root;
        Ok(p)
    }

    /// All steps, in schedule order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Number of forward steps (they come first).
    pub fn forward_len(&self) -> usize {
        self.forward_len
    }

    /// The step holding the storage of graph value `v` (`None` for resident
    /// values and programs not built from a graph).
    pub fn step_of(&self, v: ValueId) -> Option<usize> {
        self.root.get(v.index()).copied().flatten()
    }

    /// Whether forward step `i` is used by some backward step.
    pub fn is_saved(&self, i: usize) -> bool {
        i < self.forward_len
            && self.steps[self.forward_len..]
                .iter()
                .any(|s| s.args.contains(&i))
    }

    /// The saved activations: forward steps some backward step uses.
    pub fn saved(&self) -> Vec<usize> {
        let mut used = vec![false; self.forward_len];
        for s in &self.steps[self.forward_len..] {
            for &a in &s.args {
                if a < self.forward_len {
                    used[a] = true;
                }
            }
        }
        (0..self.forward_len).filter(|&i| used[i]).collect()
    }

    /// The saved activations a plan may recompute: recomputable and not outputs.
    pub fn candidates(&self) -> Vec<usize> {
        self.saved()
            .into_iter()
            .filter(|&i| self.steps[i].recomputable && !self.steps[i].output)
            .collect()
    }

    /// Whether the forward part is a chain: every forward step after the
    /// first reads exactly one step, the one before it, and the first reads none.
    pub fn is_chain(&self) -> bool {
        (0..self.forward_len).all(|i| {
            let a = &self.steps[i].args;
            if i == 0 {
                a.is_empty()
            } else {
                a.len() == 1 && a[0] == i - 1
            }
        })
    }

    /// How a step is named in errors and printed plans: its graph value
    /// (`%7`) or `step N`.
    pub fn describe(&self, i: usize) -> String {
        match self.steps.get(i).and_then(|s| s.value) {
            Some(v) => v.to_string(),
            None => format!("step {i}"),
        }
    }

    /// Checks that `recompute` names candidates (saved, recomputable, not
    /// outputs) and returns it as a membership table.
    fn check_plan(&self, recompute: &[usize]) -> Result<Vec<bool>, RecomputeError> {
        let mut in_r = vec![false; self.steps.len()];
        for &r in recompute {
            let Some(step) = self.steps.get(r) else {
                return Err(RecomputeError::NoSuchValue(format!("step {r}")));
            };
            if !self.is_saved(r) {
                return Err(RecomputeError::NotSaved(self.describe(r)));
            }
            if step.output {
                return Err(RecomputeError::Output(self.describe(r)));
            }
            if !step.recomputable {
                return Err(RecomputeError::NotRecomputable(self.describe(r)));
            }
            in_r[r] = true;
        }
        Ok(in_r)
    }

    /// The trace of a plan: every run of every step, with birth and death.
    ///
    /// Forward steps run in order. A forward step is *available* to the
    /// backward part if it is kept (saved or an output, and not in the
    /// plan); any other forward step is freed after its last forward use.
    /// Before each backward step, each of its arguments in order is
    /// resolved: a freed forward step not yet rematerialized is re-run
    /// (a clone), after resolving its own arguments the same way; a
    /// clone is made at most once and serves every later use.
    pub(crate) fn trace(&self, recompute: &[usize]) -> Result<Vec<Instance>, RecomputeError> {
        let in_r = self.check_plan(recompute)?;
        let nf = self.forward_len;
        let saved = {
            let mut s = vec![false; nf];
            for i in self.saved() {
                s[i] = true;
            }
            s
        };
        let available: Vec<bool> = (0..nf)
            .map(|i| !in_r[i] && (saved[i] || self.steps[i].output))
            .collect();
        let mut inst: Vec<Instance> = Vec::with_capacity(self.steps.len());
        // current[i]: the instance serving uses of step i.
        let mut current: Vec<usize> = vec![usize::MAX; self.steps.len()];
        let mut cloned = vec![false; nf];
        let use_of = |inst: &mut Vec<Instance>, k: usize, at: Slot| inst[k].death = at;
        for i in 0..nf {
            for &a in &self.steps[i].args {
                use_of(&mut inst, current[a], Slot::Forward(i));
            }
            current[i] = inst.len();
            inst.push(Instance {
                step: i,
                clone: false,
                birth: Slot::Forward(i),
                death: Slot::Forward(i),
            });
        }
        for b in nf..self.steps.len() {
            for (p, &a) in self.steps[b].args.iter().enumerate() {
                if a < nf && !available[a] && !cloned[a] {
                    self.rematerialize(a, b, p, &available, &mut cloned, &mut current, &mut inst)?;
                }
            }
            for &a in &self.steps[b].args {
                use_of(&mut inst, current[a], Slot::Backward(b));
            }
            current[b] = inst.len();
            inst.push(Instance {
                step: b,
                clone: false,
                birth: Slot::Backward(b),
                death: Slot::Backward(b),
            });
        }
        for i in 0..self.steps.len() {
            if self.steps[i].output {
                inst[current[i]].death = Slot::End;
            }
        }
        Ok(inst)
    }

    /// Re-runs freed forward step `a` (and, first, its freed arguments)
    /// while resolving argument `p` of backward step `b`.
    #[allow(
        clippy::too_many_arguments,
        reason = "the trace's state, threaded through the recursion"
    )]
    fn rematerialize(
        &self,
        a: usize,
        b: usize,
        p: usize,
        available: &[bool],
        cloned: &mut [bool],
        current: &mut [usize],
        inst: &mut Vec<Instance>,
    ) -> Result<(), RecomputeError> {
        if !self.steps[a].recomputable {
            return Err(RecomputeError::NotRecomputable(self.describe(a)));
        }
        for &x in &self.steps[a].args {
            if !available[x] && !cloned[x] {
                self.rematerialize(x, b, p, available, cloned, current, inst)?;
            }
        }
        let at = Slot::Clone {
            before: b,
            arg: p,
            index: a,
        };
        for &x in &self.steps[a].args {
            inst[current[x]].death = at;
        }
        current[a] = inst.len();
        cloned[a] = true;
        inst.push(Instance {
            step: a,
            clone: true,
            birth: at,
            death: at,
        });
        Ok(())
    }

    /// Peak memory and recompute cost of recomputing the saved activations
    /// in `recompute` (step indices); `&[]` keeps everything.
    ///
    /// A value lives from its production to its last use; outputs live to
    /// the end. Memory is counted at every step, with the step's arguments
    /// and result both live. Errors if `recompute` names a step that is not
    /// a candidate, or if the plan would re-run a step the policy forbids
    /// (a freed forward value, e.g. a matmul with no backward use, needed
    /// to rematerialize a recomputed one).
    pub fn simulate(&self, recompute: &[usize]) -> Result<Simulation, RecomputeError> {
        let (live, inst) = self.live_bytes(recompute)?;
        let peak = live.iter().copied().max().unwrap_or(0);
        let rerun: Vec<usize> = inst.iter().filter(|x| x.clone).map(|x| x.step).collect();
        Ok(Simulation {
            peak_bytes: u64::try_from(peak).unwrap_or(u64::MAX),
            recompute_cost: rerun.iter().map(|&s| self.steps[s].cost).sum(),
            rerun,
        })
    }

    /// The sum of live bytes over every point of the schedule under a plan
    /// (the area under the memory curve).
    pub(crate) fn live_area(&self, recompute: &[usize]) -> Result<u128, RecomputeError> {
        let (live, _) = self.live_bytes(recompute)?;
        Ok(live.iter().map(|&m| u128::try_from(m).unwrap_or(0)).sum())
    }

    /// Live bytes at every instance of the trace (and after the last).
    fn live_bytes(
        &self,
        recompute: &[usize],
    ) -> Result<(Vec<i128>, Vec<Instance>), RecomputeError> {
        let inst = self.trace(recompute)?;
        // Instances are in execution order, so a slot's position is the
        // position of the instance born there (End: one past the last).
        let mut pos: HashMap<Slot, usize> = HashMap::with_capacity(inst.len() + 1);
        for (k, x) in inst.iter().enumerate() {
            pos.insert(x.birth, k);
        }
        pos.insert(Slot::End, inst.len());
        let mut delta = vec![0i128; inst.len() + 2];
        for x in &inst {
            let (b, d) = (pos[&x.birth], pos[&x.death]);
            let step = &self.steps[x.step];
            delta[b] += i128::from(step.bytes);
            delta[d + 1] -= i128::from(step.bytes);
            delta[b] += i128::from(step.scratch);
            delta[b + 1] -= i128::from(step.scratch);
        }
        let mut live = 0i128;
        let mut out = Vec::with_capacity(inst.len() + 1);
        for d in &delta[..=inst.len()] {
            live += d;
            out.push(live);
        }
        Ok((out, inst))
    }

    /// The steps of graph values, for plans given as values.
    pub fn steps_of(
        &self,
        graph: &Graph,
        values: &[ValueId],
    ) -> Result<Vec<usize>, RecomputeError> {
        values
            .iter()
            .map(|&v| {
                if v.index() >= graph.len() {
                    return Err(RecomputeError::NoSuchValue(v.to_string()));
                }
                match self.step_of(v) {
                    None => Err(RecomputeError::Resident(v.to_string())),
                    Some(s) if self.steps[s].value != Some(v) => Err(RecomputeError::NotSaved(
                        format!("{v} (a view of {}; name that instead)", self.describe(s)),
                    )),
                    Some(s) => Ok(s),
                }
            })
            .collect()
    }
}

/// Whether `v` is reached through views that include a broadcast adding
/// elements: what lowering copies before a kernel template reads it.
fn expands(graph: &Graph, mut v: ValueId) -> bool {
    loop {
        let node = graph.node(v);
        match node.op {
            Op::Broadcast { .. } => {
                let from = graph.ty(node.args[0]).num_elements();
                if graph.ty(v).num_elements() > from {
                    return true;
                }
            }
            Op::Reshape { .. } => {}
            _ => return false,
        }
        v = node.args[0];
    }
}

/// The node order of a training graph split at the forward boundary:
/// inputs first (in signature order, as the IR requires), then the other
/// ancestors of the outputs named in `forward_outputs` (and every `get` of
/// a tuple among them), then every other node, each group in graph order.
/// Also returns the number of nodes in the first two groups.
pub fn forward_order(
    graph: &Graph,
    forward_outputs: &[&str],
) -> Result<(Vec<ValueId>, usize), RecomputeError> {
    let mut forward = vec![false; graph.len()];
    let mut stack = Vec::new();
    for name in forward_outputs {
        let Some(o) = graph.outputs().iter().find(|o| o.name == *name) else {
            return Err(RecomputeError::UnknownOutput((*name).to_string()));
        };
        stack.push(o.value);
    }
    while let Some(v) = stack.pop() {
        if let Some(f) = forward.get_mut(v.index())
            && !*f
        {
            *f = true;
            stack.extend(graph.node(v).args.iter().copied());
        }
    }
    // A `get` of a forward tuple belongs with its tuple: the element's
    // buffer is written by the forward op wherever the `get` stands, so it
    // is a forward value (and one step owns each element, see
    // `TensorProgram`).
    for v in graph.values() {
        let node = graph.node(v);
        if matches!(node.op, Op::Get { .. }) && forward[node.args[0].index()] {
            forward[v.index()] = true;
        }
    }
    let mut input = vec![false; graph.len()];
    for v in graph.inputs() {
        if let Some(x) = input.get_mut(v.index()) {
            *x = true;
        }
    }
    let is_input = |v: ValueId| input[v.index()];
    let mut order: Vec<ValueId> = graph.inputs().to_vec();
    order.extend(
        graph
            .values()
            .filter(|&v| forward[v.index()] && !is_input(v)),
    );
    let split = order.len();
    order.extend(
        graph
            .values()
            .filter(|&v| !forward[v.index()] && !is_input(v)),
    );
    Ok((order, split))
}
