//! The pass manager: named passes in a fixed order, run on one e-graph,
//! with IR snapshots after any pass.
//!
//! Input: a verified graph in any ops. Each pass is a rule set run to
//! saturation or its limits on the shared e-graph, so later passes see
//! every spelling earlier ones added. A snapshot (extraction of the
//! current e-graph) is a verified graph; the result is the final
//! snapshot. Output: a verified graph with the same inputs (in order),
//! outputs and semantics, within `docs/design.md` §3's tolerances.

use std::time::{Duration, Instant};

use birkhoff_ir::{Graph, Node, Op, ValueId, eliminate_dead_nodes, verify};
use egg::Id;

use crate::error::{Error, Result};
use crate::extract::{Selection, extract};
use crate::lang::{EG, Inserted, insert};
use crate::report::Report;
use crate::rules::{self, Limits, RuleSet, RuleSetStats};

/// One named pass.
#[derive(Clone, Copy)]
pub struct Pass {
    /// Kebab-case name (for `--dump-after`, filetests and reports).
    pub name: &'static str,
    /// What it does, in one line.
    pub description: &'static str,
    rules: fn() -> Vec<rules::Rule>,
    limits: Limits,
}

const fn limits(iterations: usize, seconds: u64) -> Limits {
    Limits {
        iterations,
        nodes: 2_000_000,
        time: Duration::from_secs(seconds),
    }
}

/// Every pass, in pipeline order.
pub static PASSES: &[Pass] = &[
    Pass {
        name: "canonicalize",
        description: "one spelling per idiom: a*recip(b) -> a/b, a/sqrt(b) -> a*rsqrt(b), mean as sum*(1/N), pow(x,2) -> x*x, pow(v,+-0.5) -> sqrt/rsqrt, (a*b)^T -> b^T*a^T, x+x -> x*2, movement folding",
        rules: rules::canonicalize::rules,
        limits: limits(8, 20),
    },
    Pass {
        name: "simplify",
        description: "IEEE-exact identities (x*1, x/1, x+(-0), -(-x)) and constant folding of splats",
        rules: rules::simplify::rules,
        limits: limits(8, 20),
    },
    Pass {
        name: "recognize",
        description: "softmax, row/column normalization, RMSNorm, sigmoid, contractions as matmuls, log-softmax chains as normalizations, and moving a per-row scale before a matmul",
        rules: rules::recognize::rules,
        limits: limits(6, 20),
    },
    Pass {
        name: "sinkhorn",
        description: "Sinkhorn-Knopp chains of any length in either variant, rows or columns first, become one sinkhorn op",
        rules: rules::sinkhorn::rules,
        limits: limits(4, 20),
    },
    Pass {
        name: "fuse-mhc",
        description: "whole mHC/HC pre-mixes become mhc_pre/hc_pre (weights packed), post-mixes mhc_post",
        rules: rules::fuse_mhc::rules,
        limits: limits(4, 20),
    },
];

/// Looks a pass up by name.
pub fn pass(name: &str) -> Result<&'static Pass> {
    PASSES
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| Error::UnknownPass {
            name: name.to_string(),
            known: PASSES.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
        })
}

/// The result of optimizing a graph.
pub struct Optimized {
    /// The optimized graph (verified).
    pub graph: Graph,
    /// What happened.
    pub report: Report,
    /// `(pass name, graph)` after each pass that was asked for, and first
    /// `("input", graph)` when `"input"` was: the input as the e-graph
    /// holds it before any rule (equal values merged, dead code dropped,
    /// in the passes' order, under the input's names).
    pub snapshots: Vec<(String, Graph)>,
}

/// Runs every pass in order; snapshots after the passes `snapshot` selects.
///
/// A graph whose stream has batch and sequence axes (`[B, S, n, C]`, as
/// PyTorch code writes it) is optimized a second time with those axes
/// merged into one token axis (`crate::flatten`), and that result is kept
/// when it fuses more: the mHC fusions take one token axis.
pub fn optimize(graph: &Graph, snapshot: impl Fn(&str) -> bool) -> Result<Optimized> {
    let first = run_passes(graph, PASSES, &snapshot)?;
    let Some(lead) = crate::flatten::token_axes(&first.graph) else {
        return Ok(first);
    };
    let flat = crate::flatten::flatten(&eliminate_dead_nodes(graph), &lead);
    let mut second = run_passes(&flat, PASSES, &snapshot)?;
    let fused = |o: &Optimized| o.graph.nodes().iter().filter(|n| n.op.is_fused()).count();
    if fused(&second) <= fused(&first) {
        return Ok(first);
    }
    second.report.token_axes = Some(lead);
    second.report.ops_before = first.report.ops_before;
    second.report.cost_before = first.report.cost_before;
    second.report.total_ms += first.report.total_ms;
    Ok(second)
}

/// Runs `passes` in the given order on one e-graph.
pub fn run_passes(
    graph: &Graph,
    passes: &[Pass],
    snapshot: impl Fn(&str) -> bool,
) -> Result<Optimized> {
    verify(graph).map_err(Error::Input)?;
    let start = Instant::now();
    // Dead code takes no part in matching: a fusion must not depend on it.
    let live = eliminate_dead_nodes(graph);
    let graph = &live;
    let mut ins = insert(graph);
    // Equal nodes (a constant written twice) share one class from the
    // start: the first snapshot shows them merged though no rule fired.
    let duplicates_merged = graph.len().saturating_sub(ins.egraph.number_of_classes());
    let mut stats: Vec<RuleSetStats> = Vec::new();
    let mut snapshots = Vec::new();
    if snapshot("input") {
        let (g, _) = extract_graph(&ins, graph, "input")?;
        snapshots.push(("input".to_string(), g));
    }
    for p in passes {
        let set = RuleSet {
            rules: (p.rules)(),
            limits: p.limits,
        };
        stats.push(rules::run(&mut ins.egraph, p.name, &set));
        if snapshot(p.name) {
            let (g, _) = extract_graph(&ins, graph, p.name)?;
            snapshots.push((p.name.to_string(), g));
        }
    }
    let t = Instant::now();
    let (out, (selection, classes)) = extract_graph(&ins, graph, "extract")?;
    let extract_ms = t.elapsed().as_secs_f64() * 1e3;
    let near_misses = crate::near_miss::near_misses(&ins, graph, &out, &classes);
    let report = Report::new(
        graph,
        &out,
        &ins,
        &classes,
        stats,
        &selection,
        extract_ms,
        start.elapsed(),
        near_misses,
        duplicates_merged,
    );
    Ok(Optimized {
        graph: out,
        report,
        snapshots,
    })
}

/// Extracts the cheapest graph from the e-graph, verified.
fn extract_graph(
    ins: &Inserted,
    original: &Graph,
    pass: &str,
) -> Result<(Graph, (Selection, Vec<Id>))> {
    let eg = &ins.egraph;
    let roots: Vec<Id> = original
        .outputs()
        .iter()
        .map(|o| eg.find(ins.classes[o.value.index()]))
        .collect();
    let selection = extract(eg, &roots).map_err(|class| {
        let output = original
            .outputs()
            .iter()
            .zip(&roots)
            .find(|(_, r)| **r == class)
            .map_or_else(|| "?".to_string(), |(o, _)| o.name.clone());
        Error::Extraction { output }
    })?;
    let (g, classes) = to_graph(eg, &selection, original, ins);
    verify(&g).map_err(|errors| Error::PassOutput {
        pass: pass.to_string(),
        errors,
    })?;
    Ok((g, (selection, classes)))
}

/// Builds a graph from a selection: the original inputs first, in order
/// (kept even if no longer used, so the signature never changes), then
/// every needed class in dependency order (depth first from the outputs,
/// operands in order, the order [`Graph::depth_first`] gives a graph).
/// Returns the class of every value.
///
/// A class that holds a value of the original graph takes that value's
/// name, so that a snapshot differs from the input (printed depth first)
/// only where a pass changed something; a class new to the graph is named
/// past the input's numbers, by its class id: the same name in every
/// snapshot (while no rule merges it) and whether or not snapshots were
/// taken.
fn to_graph(eg: &EG, sel: &Selection, original: &Graph, ins: &Inserted) -> (Graph, Vec<Id>) {
    use std::collections::HashMap;

    let mut g = Graph::new(original.name());
    let mut value_of: HashMap<Id, ValueId> = HashMap::new();
    let mut classes = Vec::new();
    let mut origin: HashMap<Id, ValueId> = HashMap::new();
    for v in original.values() {
        origin.entry(eg.find(ins.classes[v.index()])).or_insert(v);
    }
    let past_original = original
        .values()
        .filter_map(|v| original.label(v).and_then(|l| l.parse::<usize>().ok()))
        .map(|n| n + 1)
        .fold(original.len(), usize::max);
    for &v in original.inputs() {
        if let Op::Input { name, kind, ty } = &original.node(v).op {
            let id = g.add_input(name.clone(), *kind, ty.clone());
            value_of
                .entry(eg.find(ins.classes[v.index()]))
                .or_insert(id);
            classes.push(eg.find(ins.classes[v.index()]));
        }
    }
    // Iterative post-order: deep graphs must not overflow the stack.
    for o in original.outputs() {
        let root = eg.find(ins.classes[o.value.index()]);
        let mut stack = vec![(root, false)];
        while let Some((c, expanded)) = stack.pop() {
            if value_of.contains_key(&c) {
                continue;
            }
            let node = &sel.choice[&c];
            if !expanded {
                stack.push((c, true));
                for &ch in node.children.iter().rev() {
                    stack.push((eg.find(ch), false));
                }
                continue;
            }
            let args: Vec<ValueId> = node
                .children
                .iter()
                .map(|&ch| value_of[&eg.find(ch)])
                .collect();
            let id = g.push(Node {
                op: node.op.clone(),
                args,
                ty: eg[c].data.ty.clone(),
            });
            match origin.get(&c) {
                Some(&v) => g.carry_label(id, original, v),
                None => {
                    g.set_label(id, (past_original + usize::from(c)).to_string());
                }
            }
            value_of.insert(c, id);
            classes.push(c);
        }
        g.add_output(o.name.clone(), value_of[&root]);
    }
    (g, classes)
}

#[cfg(test)]
mod tests {
    use super::PASSES;

    /// `docs/optimizer.md` lists every rule of every pass in a table row
    /// of its own, so that a new rule cannot land undocumented.
    #[test]
    fn every_rule_is_documented() {
        let doc = include_str!("../../../docs/optimizer.md");
        let missing: Vec<String> = PASSES
            .iter()
            .flat_map(|pass| (pass.rules)().into_iter().map(move |r| (pass.name, r.name)))
            .filter(|(_, rule)| !doc.contains(&format!("| `{rule}` |")))
            .map(|(pass, rule)| format!("{pass}/{rule}"))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/optimizer.md has no row for {missing:?}"
        );
    }
}
