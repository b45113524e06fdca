//! Rewrite rules, in named rule sets that run in stages with their own
//! limits (see `docs/optimizer.md` for the policy).
//!
//! A rule is a search function: given an e-class, it inspects the e-graph
//! read-only and returns *actions*, each of which later adds the rewritten
//! term and names the pairs of classes to union. Searching every class
//! before applying anything keeps a stage's iteration independent of the
//! order in which classes are visited. Rules match attributes and shapes
//! in plain Rust rather than in egg's pattern language, because nearly
//! every rule here has a guard on an attribute (an axis, an epsilon, a
//! slice bound) or a shape.

pub(crate) mod build;
pub(crate) mod canonicalize;
pub(crate) mod contraction;
pub(crate) mod fuse_mhc;
pub(crate) mod log_domain;
pub(crate) mod recognize;
pub(crate) mod simplify;
pub(crate) mod sinkhorn;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use birkhoff_ir::{Op, TensorType, Type};
use egg::Id;
use serde::Serialize;

use crate::lang::{EG, ENode};

/// Adds terms and returns the pairs of classes to union.
pub(crate) type Build = Box<dyn FnOnce(&mut EG) -> Vec<(Id, Id)>>;

/// What a rule asks for once searching is done.
pub(crate) enum Action {
    /// Add `op(children)` and union it with `root`.
    Rewrite { root: Id, op: Op, children: Vec<Id> },
    /// Union two existing classes.
    Union(Id, Id),
    /// Add terms; return the pairs of classes to union.
    Custom(Build),
}

impl Action {
    /// A custom action.
    pub(crate) fn custom(f: impl FnOnce(&mut EG) -> Vec<(Id, Id)> + 'static) -> Action {
        Action::Custom(Box::new(f))
    }

    /// Whether the e-graph already holds what this action would add, so
    /// applying it again is pointless (saturated matches are skipped
    /// instead of re-added every iteration).
    fn is_known(&self, eg: &EG) -> bool {
        match self {
            Action::Rewrite { root, op, children } => {
                let node = ENode {
                    op: op.clone(),
                    children: children.clone(),
                };
                eg.lookup(node)
                    .is_some_and(|id| eg.find(id) == eg.find(*root))
            }
            Action::Union(a, b) => eg.find(*a) == eg.find(*b),
            Action::Custom(_) => false,
        }
    }

    fn apply(self, eg: &mut EG) -> Vec<(Id, Id)> {
        match self {
            Action::Rewrite { root, op, children } => crate::lang::add_checked(eg, op, children)
                .map(|id| (root, id))
                .into_iter()
                .collect(),
            Action::Union(a, b) => vec![(a, b)],
            Action::Custom(f) => f(eg),
        }
    }
}

/// Parent e-nodes of every class, indexed by canonical class id:
/// `(parent class, index of the node in that class)`.
pub(crate) type Parents = Vec<Vec<(Id, usize)>>;

/// What a rule's search sees.
pub(crate) struct Ctx<'a> {
    pub eg: &'a EG,
    pub parents: &'a Parents,
}

/// One named rewrite.
pub(crate) struct Rule {
    /// Kebab-case name, reported in statistics.
    pub name: &'static str,
    /// Finds the rewrites rooted at one class.
    pub search: fn(&Ctx<'_>, Id, &mut Vec<Action>),
}

/// When a rule set stops.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most iterations (search everything, then apply everything).
    pub iterations: usize,
    /// Stop once the e-graph has this many e-nodes.
    pub nodes: usize,
    /// Stop after this much time.
    pub time: Duration,
}

/// Why a rule set stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// An iteration changed nothing: every rule's consequences are in.
    Saturated,
    /// The rule set's iteration limit reached.
    IterationLimit,
    /// The rule set's e-node limit reached.
    NodeLimit,
    /// The rule set's time limit reached.
    TimeLimit,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Saturated => "saturated",
            StopReason::IterationLimit => "iteration limit",
            StopReason::NodeLimit => "node limit",
            StopReason::TimeLimit => "time limit",
        })
    }
}

/// A staged group of rules.
pub(crate) struct RuleSet {
    pub rules: Vec<Rule>,
    pub limits: Limits,
}

/// What one rule set did.
#[derive(Clone, Debug, Serialize)]
pub struct RuleSetStats {
    /// The rule set (pass) name.
    pub name: String,
    /// Iterations run.
    pub iterations: usize,
    /// E-nodes afterwards.
    pub egraph_nodes: usize,
    /// E-classes afterwards.
    pub egraph_classes: usize,
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// Wall-clock time in milliseconds.
    pub time_ms: f64,
    /// Per rule, how many of its rewrites changed the e-graph.
    pub applied: BTreeMap<String, usize>,
}

/// Every class's parent e-nodes.
pub(crate) fn parents(eg: &EG) -> Parents {
    let size = eg
        .classes()
        .map(|c| usize::from(c.id) + 1)
        .max()
        .unwrap_or(0);
    let mut p: Parents = vec![Vec::new(); size];
    for class in eg.classes() {
        for (i, n) in class.nodes.iter().enumerate() {
            for &ch in &n.children {
                p[usize::from(eg.find(ch))].push((class.id, i));
            }
        }
    }
    p
}

/// Runs `set` on `eg` until saturation or a limit.
pub(crate) fn run(eg: &mut EG, name: &str, set: &RuleSet) -> RuleSetStats {
    let start = Instant::now();
    let mut applied: BTreeMap<String, usize> =
        set.rules.iter().map(|r| (r.name.to_string(), 0)).collect();
    let mut stop = StopReason::IterationLimit;
    let mut iterations = 0;
    while iterations < set.limits.iterations {
        iterations += 1;
        let mut found: Vec<(&'static str, Action)> = Vec::new();
        {
            let par = parents(eg);
            let ctx = Ctx { eg, parents: &par };
            let ids: Vec<Id> = eg.classes().map(|c| c.id).collect();
            let mut actions = Vec::new();
            for rule in &set.rules {
                for &id in &ids {
                    (rule.search)(&ctx, id, &mut actions);
                    found.extend(
                        actions
                            .drain(..)
                            .filter(|a| !a.is_known(eg))
                            .map(|a| (rule.name, a)),
                    );
                }
            }
        }
        let mut changed = false;
        for (rule, action) in found {
            let mut did = false;
            for (a, b) in action.apply(eg) {
                did |= eg.union(a, b);
            }
            if did {
                *applied.get_mut(rule).expect("every rule is counted") += 1;
                changed = true;
            }
        }
        eg.rebuild();
        if !changed {
            stop = StopReason::Saturated;
            break;
        }
        if eg.total_size() >= set.limits.nodes {
            stop = StopReason::NodeLimit;
            break;
        }
        if start.elapsed() >= set.limits.time {
            stop = StopReason::TimeLimit;
            break;
        }
    }
    RuleSetStats {
        name: name.to_string(),
        iterations,
        egraph_nodes: eg.total_size(),
        egraph_classes: eg.number_of_classes(),
        stop_reason: stop,
        time_ms: start.elapsed().as_secs_f64() * 1e3,
        applied,
    }
}

// ---- matching helpers -------------------------------------------------------

/// The e-nodes of class `c` whose op satisfies `pred`.
pub(crate) fn nodes_where<'a>(
    eg: &'a EG,
    c: Id,
    pred: impl Fn(&Op) -> bool + 'a,
) -> impl Iterator<Item = &'a ENode> + 'a {
    eg[c].nodes.iter().filter(move |n| pred(&n.op))
}

/// The operand classes of every `op` node of class `c`.
pub(crate) fn args_of<'a>(eg: &'a EG, c: Id, op: &'a Op) -> impl Iterator<Item = &'a [Id]> + 'a {
    eg[c]
        .nodes
        .iter()
        .filter(move |n| n.op == *op)
        .map(|n| n.children.as_slice())
}

/// Both operand orders of every binary `op` node of class `c` (for
/// commutative ops, so rules match either spelling without a rewrite).
pub(crate) fn commuted<'a>(eg: &'a EG, c: Id, op: &'a Op) -> impl Iterator<Item = (Id, Id)> + 'a {
    args_of(eg, c, op).flat_map(|a| [(a[0], a[1]), (a[1], a[0])])
}

/// The sources `x` of every `broadcast(x)` node of class `c`.
pub(crate) fn broadcast_sources(eg: &EG, c: Id) -> Vec<Id> {
    nodes_where(eg, c, |op| matches!(op, Op::Broadcast { .. }))
        .map(|n| n.children[0])
        .collect()
}

/// The sources `x` of every `reshape(x)` node of class `c`.
pub(crate) fn reshape_sources(eg: &EG, c: Id) -> Vec<Id> {
    nodes_where(eg, c, |op| matches!(op, Op::Reshape { .. }))
        .map(|n| n.children[0])
        .collect()
}

/// The splat value of class `c`, if it is a constant splat.
pub(crate) fn splat(eg: &EG, c: Id) -> Option<f64> {
    eg[c].data.splat
}

/// The tensor type of class `c` (`None` for tuples).
pub(crate) fn tensor(eg: &EG, c: Id) -> Option<&TensorType> {
    match &eg[c].data.ty {
        Type::Tensor(t) => Some(t),
        Type::Tuple(_) => None,
    }
}

/// The shape of class `c` (empty for tuples).
pub(crate) fn shape(eg: &EG, c: Id) -> &[usize] {
    tensor(eg, c).map_or(&[], |t| t.shape.as_slice())
}

/// Whether classes `a` and `b` are the same class.
pub(crate) fn same(eg: &EG, a: Id, b: Id) -> bool {
    eg.find(a) == eg.find(b)
}

/// The parents of class `c` that are `op` nodes: `(parent class, node)`.
pub(crate) fn parents_where<'a>(
    ctx: &'a Ctx<'_>,
    c: Id,
    pred: impl Fn(&Op) -> bool + 'a,
) -> impl Iterator<Item = (Id, &'a ENode)> + 'a {
    let eg = ctx.eg;
    ctx.parents
        .get(usize::from(eg.find(c)))
        .into_iter()
        .flatten()
        .map(move |&(p, i)| (p, &eg[p].nodes[i]))
        .filter(move |(_, n)| pred(&n.op))
}

/// An action that adds `op(children)` and unions it with `root`.
pub(crate) fn rewrite_to(root: Id, op: Op, children: Vec<Id>) -> Action {
    Action::Rewrite { root, op, children }
}

/// An action that unions two existing classes.
pub(crate) fn union(a: Id, b: Id) -> Action {
    Action::Union(a, b)
}

/// The `x` of every `x − c` in class `u` whose `c` (or what it broadcasts)
/// is constant along `axis`: size 1 there, right-aligned.
pub(crate) fn shift_sources(eg: &EG, u: Id, axis: usize) -> Vec<Id> {
    let rank = shape(eg, u).len();
    // Along an axis of one element every value is constant, so any
    // difference would count, a previous round's own normalizer included,
    // and rounds would fold into each other; there only the maximum of
    // `x` itself (over the axis, or the matrix) is taken as a shift.
    let wide = shape(eg, u).get(axis).is_some_and(|&d| d > 1);
    let constant_along = |c: Id| {
        let s = shape(eg, c);
        let lead = rank.saturating_sub(s.len());
        axis < lead || s[axis - lead] == 1
    };
    let max_of = |c: Id, x: Id| {
        nodes_where(
            eg,
            c,
            |op| matches!(op, Op::ReduceMax { axes, keepdims: true } if axes.contains(&axis)),
        )
        .any(|n| same(eg, n.children[0], x))
    };
    args_of(eg, u, &Op::Sub)
        .filter(|a| {
            let mut sources = broadcast_sources(eg, a[1]);
            sources.push(a[1]);
            sources
                .into_iter()
                .any(|c| constant_along(c) && (wide || max_of(c, a[0])))
        })
        .map(|a| a[0])
        .collect()
}

/// Whether class `c` is `+0`, positive or NaN on every input — never `-0`,
/// `-inf` or negative — by what computes it: squares, `exp`, `abs`,
/// `sigmoid`, softmaxes and Sinkhorn projections, non-negative constants,
/// and sums, products, quotients, reductions, movements, roots and
/// sum-normalizations of such (a few ops deep).
pub(crate) fn non_negative(eg: &EG, c: Id) -> bool {
    non_negative_within(eg, c, 4)
}

fn non_negative_within(eg: &EG, c: Id, depth: usize) -> bool {
    if let Some(v) = splat(eg, c) {
        return v.is_sign_positive() && !v.is_nan();
    }
    if depth == 0 {
        return false;
    }
    let below = |x: Id| non_negative_within(eg, x, depth - 1);
    eg[c].nodes.iter().any(|n| match &n.op {
        Op::Mul => same(eg, n.children[0], n.children[1]) || n.children.iter().all(|&x| below(x)),
        Op::Add | Op::Div => n.children.iter().all(|&x| below(x)),
        Op::Exp | Op::Abs | Op::Sigmoid | Op::Softmax { .. } | Op::Sinkhorn(_) => true,
        Op::ReduceSum { .. }
        | Op::ReduceMax { .. }
        | Op::Broadcast { .. }
        | Op::Reshape { .. }
        | Op::Permute { .. }
        | Op::Slice { .. }
        | Op::Sqrt
        | Op::Rsqrt => below(n.children[0]),
        Op::RowNorm { eps } | Op::ColNorm { eps } => eps.get() >= 0.0 && below(n.children[0]),
        _ => false,
    })
}
