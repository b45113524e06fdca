//! The graph verifier.
//!
//! Checks every structural and typing invariant of a [`Graph`] and reports
//! all violations at once, each located at its node:
//!
//! * names (graph, inputs, outputs) are identifiers; input and output names
//!   are unique;
//! * inputs are the first nodes, in signature order, and only they are
//!   `input`/`param` nodes;
//! * every operand is defined before its use (SSA in arena order);
//! * every node's declared type equals the type inferred from its op and
//!   operands;
//! * the graph has at least one output, and every output is defined.

use crate::error::{VerifyError, VerifyErrors};
use crate::graph::{Graph, ValueId};
use crate::infer::infer;
use crate::op::Op;
use crate::print::{node_to_string, value_name};

/// Whether `s` is a valid name for a graph, input or output:
/// `[A-Za-z_][A-Za-z0-9_.]*`.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Checks `graph`; on failure returns every problem found.
pub fn verify(graph: &Graph) -> Result<(), VerifyErrors> {
    let mut errors = Vec::new();
    let mut graph_error = |message: String| {
        errors.push(VerifyError {
            value: None,
            value_name: String::new(),
            node_text: String::new(),
            message,
            location: None,
        });
    };
    if !is_identifier(graph.name()) {
        graph_error(format!(
            "graph name '{}' is not an identifier",
            graph.name()
        ));
    }
    if graph.outputs().is_empty() {
        graph_error("graph has no outputs".to_string());
    }
    let mut seen = std::collections::HashSet::new();
    for o in graph.outputs() {
        if !is_identifier(&o.name) {
            graph_error(format!("output name '{}' is not an identifier", o.name));
        }
        if !seen.insert(o.name.as_str()) {
            graph_error(format!("output name '{}' is used twice", o.name));
        }
        if o.value.index() >= graph.len() {
            graph_error(format!(
                "output '{}' returns undefined value {}",
                o.name, o.value
            ));
        } else if graph.value_type(o.value).is_tuple() {
            graph_error(format!(
                "output '{}' returns a tuple {}; return its elements with get",
                o.name, o.value
            ));
        }
    }
    for (i, &v) in graph.inputs().iter().enumerate() {
        if v.index() != i {
            graph_error(format!(
                "input {i} is {v}: inputs must be the first nodes, in signature order"
            ));
        }
    }

    let mut input_names = std::collections::HashSet::new();
    for v in graph.values() {
        let node = graph.node(v);
        let mut err = |message: String| {
            errors.push(VerifyError {
                value: Some(v),
                value_name: value_name(graph, v),
                node_text: node_to_string(graph, v),
                message,
                location: None,
            });
        };
        if let Op::Input { name, .. } = &node.op {
            if !graph.inputs().contains(&v) {
                err("input node is not in the graph signature".to_string());
            }
            if !is_identifier(name) {
                err(format!("input name '{name}' is not an identifier"));
            }
            if !input_names.insert(name.as_str()) {
                err(format!("input name '{name}' is used twice"));
            }
        }
        let mut arg_types = Vec::with_capacity(node.args.len());
        for &a in &node.args {
            if a >= v {
                err(format!("operand {a} is not defined before its use"));
            } else {
                arg_types.push(graph.value_type(a));
            }
        }
        if arg_types.len() != node.args.len() {
            continue;
        }
        match infer(&node.op, &arg_types) {
            Ok(ty) if ty == node.ty => {}
            Ok(ty) => err(format!(
                "declared type {} but the op produces {ty}",
                node.ty
            )),
            Err(e) => err(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(VerifyErrors {
            graph: graph.name().to_string(),
            errors,
        })
    }
}

/// The values that no output depends on.
pub fn dead_values(graph: &Graph) -> Vec<ValueId> {
    let mut live = vec![false; graph.len()];
    for o in graph.outputs() {
        if let Some(l) = live.get_mut(o.value.index()) {
            *l = true;
        }
    }
    for v in graph.values().rev() {
        if live[v.index()] {
            for a in &graph.node(v).args {
                if let Some(l) = live.get_mut(a.index()) {
                    *l = true;
                }
            }
        }
    }
    graph.values().filter(|v| !live[v.index()]).collect()
}

/// A copy of `graph` without the nodes no output depends on (inputs are
/// always kept, so the signature is unchanged). Order is preserved.
pub fn eliminate_dead_nodes(graph: &Graph) -> Graph {
    let dead: std::collections::HashSet<ValueId> = dead_values(graph).into_iter().collect();
    let mut out = Graph::new(graph.name());
    let mut remap: Vec<Option<ValueId>> = vec![None; graph.len()];
    for v in graph.values() {
        let node = graph.node(v);
        if let Op::Input { name, kind, ty } = &node.op
            && graph.inputs().contains(&v)
        {
            remap[v.index()] = Some(out.add_input(name.clone(), *kind, ty.clone()));
            continue;
        }
        if dead.contains(&v) {
            continue;
        }
        // Operands of live nodes are live; a dangling one stays as is.
        remap[v.index()] = Some(out.push_copy(graph, v, &remap));
    }
    out.add_outputs_of(graph, &remap);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_graph;

    #[test]
    fn dead_nodes_go_and_inputs_stay() {
        let g = parse_graph(
            "graph @g(%x: f32[2], %unused: f32[2]) -> (y: f32[2]) {\n  %2 = exp %x : f32[2]\n  %3 = log %x : f32[2]\n  %4 = neg %3 : f32[2]\n  return %2\n}",
        )
        .unwrap();
        let live = eliminate_dead_nodes(&g);
        assert!(verify(&live).is_ok());
        assert_eq!(live.len(), 3);
        assert_eq!(live.inputs().len(), 2);
        assert_eq!(live.to_string().matches("log").count(), 0);
    }
}
