//! Graphviz rendering of a graph.

use std::fmt::Write;

use crate::graph::Graph;
use crate::literal::LiteralValues;
use crate::op::Op;
use crate::print::{op_to_string, value_name};

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The graph in Graphviz DOT: one box per node labelled with its value,
/// op, attributes and type (a dense constant without its values); inputs and outputs highlighted; edges from operand to user.
pub fn to_dot(graph: &Graph) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{}\" {{", escape(graph.name()));
    s.push_str("  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n");
    for v in graph.values() {
        let node = graph.node(v);
        let (label, style) = match &node.op {
            Op::Input { .. } => (
                format!("{} : {}", value_name(graph, v), node.ty),
                ", style=filled, fillcolor=\"#dbeafe\"",
            ),
            // A dense constant's values would swamp the picture.
            Op::Const(lit) if !matches!(lit.values(), LiteralValues::Splat(_)) => (
                format!("{} = const : {}", value_name(graph, v), node.ty),
                ", style=dashed",
            ),
            Op::Const(_) => (
                format!("{} = {}", value_name(graph, v), op_to_string(graph, v)),
                ", style=dashed",
            ),
            _ => (
                format!("{} = {}", value_name(graph, v), op_to_string(graph, v)),
                "",
            ),
        };
        let _ = writeln!(s, "  n{} [label=\"{}\"{style}];", v.index(), escape(&label));
        for (i, a) in node.args.iter().enumerate() {
            let port = if node.args.len() > 1 {
                format!(" [label=\"{i}\"]")
            } else {
                String::new()
            };
            let _ = writeln!(s, "  n{} -> n{}{port};", a.index(), v.index());
        }
    }
    for (i, o) in graph.outputs().iter().enumerate() {
        let _ = writeln!(
            s,
            "  out{i} [label=\"{}\", shape=oval, style=filled, fillcolor=\"#dcfce7\"];",
            escape(&o.name)
        );
        let _ = writeln!(s, "  n{} -> out{i};", o.value.index());
    }
    s.push_str("}\n");
    s
}
