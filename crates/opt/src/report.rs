//! The fusion report: what the optimizer found and what it saves.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::time::Duration;

use birkhoff_ir::{Graph, Op, Type, ValueId, format_bytes, value_name};
use egg::Id;
use serde::Serialize;

use crate::cost::{Cost, graph_cost, node_cost};
use crate::extract::Selection;
use crate::lang::Inserted;
use crate::near_miss::NearMiss;
use crate::rules::RuleSetStats;

/// One fused or semantic op in the optimized graph.
#[derive(Clone, Debug, Serialize)]
pub struct Site {
    /// Op mnemonic (`mhc_pre`, `sinkhorn`, …).
    pub kind: String,
    /// Its value in the optimized graph, as printed (`%N`: the input's
    /// name for the value it computes, where the input had one).
    pub value: String,
    /// The input graph's values it replaces, as the input prints them,
    /// in order, runs of numbers compressed (`%4..%30`).
    pub replaces: Vec<String>,
    /// Primitive ops of the original graph it computes.
    pub ops_replaced: usize,
    /// Bytes those ops move (each reading its operands, writing its result).
    pub bytes_unfused: u64,
    /// Bytes the fused op moves.
    pub bytes_fused: u64,
}

/// Everything `birkhoff compile --fusion-report` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Graph name.
    pub graph: String,
    /// Per pass (rule set): e-graph sizes, iterations, stop reason, time, rule counts.
    pub passes: Vec<RuleSetStats>,
    /// Non-input nodes before.
    pub ops_before: usize,
    /// Non-input nodes after.
    pub ops_after: usize,
    /// Cost of the original graph (every node a kernel).
    pub cost_before: Cost,
    /// Cost of the optimized graph.
    pub cost_after: Cost,
    /// Fused and semantic ops in the optimized graph, per kind.
    pub sites: BTreeMap<String, usize>,
    /// Each fused op with its memory-traffic saving.
    pub site_details: Vec<Site>,
    /// Cost of the extracted program as extraction sees it (each e-class once).
    pub extraction_cost: Cost,
    /// Improvements made by extraction's refinement step.
    pub extraction_refinements: usize,
    /// Extraction time in milliseconds.
    pub extraction_ms: f64,
    /// Total optimizer time in milliseconds.
    pub total_ms: f64,
    /// Parts of mHC patterns that did not fuse, and why.
    pub near_misses: Vec<NearMiss>,
    /// Values of the input equal to an earlier one (same op, attributes
    /// and operands), merged when the graph entered the e-graph: the
    /// first dump differs from the input by these even if no rule fired.
    pub duplicates_merged: usize,
    /// The batch and sequence axes merged into one token axis before the
    /// passes that produced this result (see `optimize`), if any.
    pub token_axes: Option<Vec<usize>>,
}

/// Counts of fused and semantic ops in a graph, per mnemonic.
pub fn sites(g: &Graph) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in g.nodes() {
        if n.op.is_fused() || n.op.is_semantic() {
            *m.entry(n.op.mnemonic().to_string()).or_insert(0) += 1;
        }
    }
    m
}

fn non_input_ops(g: &Graph) -> usize {
    g.nodes()
        .iter()
        .filter(|n| !matches!(n.op, Op::Input { .. }))
        .count()
}

fn own_cost(g: &Graph, v: ValueId) -> Cost {
    let n = g.node(v);
    let args: Vec<&Type> = n.args.iter().map(|&a| g.value_type(a)).collect();
    node_cost(&n.op, &args, &n.ty)
}

impl Report {
    #[allow(
        clippy::too_many_arguments,
        reason = "assembles the report from every stage's results"
    )]
    pub(crate) fn new(
        original: &Graph,
        optimized: &Graph,
        ins: &Inserted,
        classes: &[Id],
        passes: Vec<RuleSetStats>,
        selection: &Selection,
        extraction_ms: f64,
        total: Duration,
        near_misses: Vec<NearMiss>,
        duplicates_merged: usize,
    ) -> Report {
        let eg = &ins.egraph;
        // Original values by the class that now holds them.
        let mut by_class: HashMap<Id, Vec<ValueId>> = HashMap::new();
        for v in original.values() {
            by_class
                .entry(eg.find(ins.classes[v.index()]))
                .or_default()
                .push(v);
        }
        let mut site_details = Vec::new();
        for v in optimized.values() {
            let node = optimized.node(v);
            if !(node.op.is_fused() || node.op.is_semantic()) {
                continue;
            }
            // Results: the op's class, and the classes of its gets.
            let mut results = vec![classes[v.index()]];
            for u in optimized.values() {
                let un = optimized.node(u);
                if matches!(un.op, Op::Get { .. }) && un.args[0] == v {
                    results.push(classes[u.index()]);
                }
            }
            let stops: HashSet<Id> = node.args.iter().map(|a| classes[a.index()]).collect();
            // The original ops between the operands and the results.
            let mut region: HashSet<ValueId> = HashSet::new();
            let mut stack: Vec<ValueId> = results
                .iter()
                .flat_map(|c| by_class.get(c).cloned().unwrap_or_default())
                .collect();
            while let Some(o) = stack.pop() {
                let n = original.node(o);
                if matches!(n.op, Op::Input { .. })
                    || stops.contains(&eg.find(ins.classes[o.index()]))
                    || !region.insert(o)
                {
                    continue;
                }
                stack.extend(n.args.iter().copied());
            }
            let unfused: Cost = region.iter().map(|&o| own_cost(original, o)).sum();
            let mut replaced: Vec<ValueId> = region.iter().copied().collect();
            replaced.sort();
            site_details.push(Site {
                kind: node.op.mnemonic().to_string(),
                value: value_name(optimized, v),
                replaces: compress_names(replaced.iter().map(|&o| value_name(original, o))),
                ops_replaced: region
                    .iter()
                    .filter(|&&o| !crate::cost::is_free(&original.node(o).op))
                    .count(),
                bytes_unfused: unfused.bytes,
                bytes_fused: own_cost(optimized, v).bytes,
            });
        }
        Report {
            graph: original.name().to_string(),
            passes,
            ops_before: non_input_ops(original),
            ops_after: non_input_ops(optimized),
            cost_before: graph_cost(original),
            cost_after: graph_cost(optimized),
            sites: sites(optimized),
            site_details,
            extraction_cost: selection.cost,
            extraction_refinements: selection.refinements,
            extraction_ms,
            total_ms: total.as_secs_f64() * 1e3,
            near_misses,
            duplicates_merged,
            token_axes: None,
        }
    }

    /// The passes that a limit (iterations, e-nodes, time) stopped before
    /// they saturated.
    pub fn limited(&self) -> impl Iterator<Item = &RuleSetStats> {
        self.passes
            .iter()
            .filter(|p| p.stop_reason != crate::rules::StopReason::Saturated)
    }

    /// The report as indented JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// `%4, %5, %6, %9` as `%4..%6, %9`: runs of consecutive numbers as ranges.
fn compress_names(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    let flush = |run: &mut Option<(usize, usize)>, out: &mut Vec<String>| {
        if let Some((a, b)) = run.take() {
            out.push(if a == b {
                format!("%{a}")
            } else {
                format!("%{a}..%{b}")
            });
        }
    };
    for name in names {
        match name.trim_start_matches('%').parse::<usize>() {
            Ok(n) if run.is_some_and(|(_, b)| b + 1 == n) => {
                run = run.map(|(a, _)| (a, n));
            }
            Ok(n) => {
                flush(&mut run, &mut out);
                run = Some((n, n));
            }
            Err(_) => {
                flush(&mut run, &mut out);
                out.push(name);
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        let _ = writeln!(s, "fusion report for @{}", self.graph);
        let _ = writeln!(
            s,
            "  ops       {:>8} -> {:<8}",
            self.ops_before, self.ops_after
        );
        let _ = writeln!(
            s,
            "  kernels   {:>8} -> {:<8}",
            self.cost_before.launches, self.cost_after.launches
        );
        let _ = writeln!(
            s,
            "  bytes     {:>12} -> {:<12} (estimated memory traffic, every op reading its operands and writing its result)",
            format_bytes(self.cost_before.bytes),
            format_bytes(self.cost_after.bytes)
        );
        let _ = writeln!(
            s,
            "  flops     {:>12} -> {:<12}",
            self.cost_before.flops, self.cost_after.flops
        );
        let _ = writeln!(s, "\nsites found (fused and semantic ops in the result):");
        if self.sites.is_empty() {
            let _ = writeln!(s, "  none");
        }
        for (kind, n) in &self.sites {
            let (replaced, before, after) = self
                .site_details
                .iter()
                .filter(|d| &d.kind == kind)
                .fold((0, 0u64, 0u64), |(r, b, a), d| {
                    (r + d.ops_replaced, b + d.bytes_unfused, a + d.bytes_fused)
                });
            let _ = writeln!(
                s,
                "  {kind:<10} x{n:<5} replaces {replaced:>6} ops; traffic {} -> {} (saves {})",
                format_bytes(before),
                format_bytes(after),
                format_bytes(before.saturating_sub(after))
            );
        }
        if !self.site_details.is_empty() {
            let _ = writeln!(
                s,
                "\neach site (its value in the result, and the values of the input graph it replaces):"
            );
            for d in &self.site_details {
                let _ = writeln!(
                    s,
                    "  {:<6} {:<10} {} ops: {}",
                    d.value,
                    d.kind,
                    d.ops_replaced,
                    d.replaces.join(", ")
                );
            }
        }
        if !self.near_misses.is_empty() {
            let _ = writeln!(
                s,
                "\nnear misses (parts of an mHC pattern that did not fuse; values of the input graph):"
            );
            for m in &self.near_misses {
                let _ = writeln!(s, "  {m}");
            }
        }
        let _ = writeln!(s, "\npasses:");
        if let Some(lead) = &self.token_axes {
            let _ = writeln!(
                s,
                "  (the stream's token axes {lead:?} were merged into one of {} before the passes, so that its mHC could fuse; the outputs are reshaped back)",
                lead.iter().product::<usize>()
            );
        }
        if self.duplicates_merged > 0 {
            let _ = writeln!(
                s,
                "  (on entering the e-graph, {} values equal to earlier ones were merged with them)",
                self.duplicates_merged
            );
        }
        let _ = writeln!(
            s,
            "  {:<13} {:>6} {:>9} {:>9}  {:<16} {:>9}  rules applied",
            "pass", "iters", "e-nodes", "e-classes", "stop reason", "time"
        );
        for p in &self.passes {
            let applied: Vec<String> = p
                .applied
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            let _ = writeln!(
                s,
                "  {:<13} {:>6} {:>9} {:>9}  {:<16} {:>7.1}ms  {}",
                p.name,
                p.iterations,
                p.egraph_nodes,
                p.egraph_classes,
                p.stop_reason.to_string(),
                p.time_ms,
                if applied.is_empty() {
                    "-".to_string()
                } else {
                    applied.join(", ")
                }
            );
        }
        let _ = writeln!(
            s,
            "  {:<13} {:>55.1}ms  {} refinements",
            "extract", self.extraction_ms, self.extraction_refinements
        );
        let _ = write!(s, "  total {:.1} ms", self.total_ms);
        for p in self.limited() {
            let _ = write!(
                s,
                "\n  note: pass {} stopped at its {} after {} iterations, not saturated: \
                 rewrites it had not reached yet are missing from the result",
                p.name, p.stop_reason, p.iterations
            );
        }
        f.write_str(&s)
    }
}
