//! The reverse-mode driver: checks the request, copies the forward graph,
//! sweeps it backwards accumulating cotangents, and names the results.
//!
//! Input: any graph that passes the verifier. Output: one verified graph
//! with the same inputs (same names, kinds and order) whose outputs are the
//! loss (under its own name) and then `d_<name>` for each requested input,
//! each of that input's type. Forward nodes the backward pass reads stay in
//! the graph, so it computes the forward and the backward in one run;
//! forward nodes that neither the loss nor a gradient needs are dropped.

use std::borrow::Cow;

use birkhoff_ir::{Graph, Node, Op, ValueId, eliminate_dead_nodes, verify};

use crate::append::Appender;
use crate::error::{AutodiffError, Result};
use crate::vjp::{vjp, vjp_tuple};

/// The graph that computes output `loss` of `graph` and its gradient with
/// respect to each input or parameter named in `wrt`.
///
/// `loss` must name a float output with exactly one element (shape `[]`,
/// `[1]`, `[1,1]`, …); `wrt` must name float inputs, each at most once. The
/// result has `graph`'s inputs, and outputs `loss` followed by `d_<name>`
/// for each `wrt` name, in order, each of that input's type. An input the
/// loss does not depend on gets a gradient of zeros.
///
/// Every primitive op has a gradient rule, and so do `sinkhorn`,
/// `mhc_post` and `mhc_pre`: a `sinkhorn`'s cotangent goes through one
/// fused `sinkhorn_grad` node, which recomputes the rounds from the saved
/// logits, an `mhc_post`'s through one `mhc_post_grad` node, which
/// computes all four operand cotangents in one pass over the residual,
/// and the cotangents of an `mhc_pre`'s elements (from its `get`s) through
/// one `mhc_pre_grad` node, which recomputes the forward per token. The
/// other semantic and fused ops (`row_norm`, `softmax`, `hc_pre`, …) are
/// expanded into primitives first (`birkhoff_opt::expand_keeping`),
/// keeping every `sinkhorn`, `mhc_pre` and `mhc_post` as one node.
pub fn grad(graph: &Graph, loss: &str, wrt: &[&str]) -> Result<Graph> {
    verify(graph).map_err(AutodiffError::InvalidGraph)?;
    let graph = expand_for_autodiff(graph)?;
    let graph = graph.as_ref();

    let loss_value = find_loss(graph, loss)?;
    let targets = find_targets(graph, loss, wrt)?;

    let mut out = copy_without_outputs(graph);
    let cotangents = backprop(&mut out, loss_value, &targets)?;

    let mut e = Appender { g: &mut out };
    let mut grads = Vec::with_capacity(targets.len());
    for &t in &targets {
        grads.push(match cotangents.get(t.index()).copied().flatten() {
            Some(c) => c,
            None => e.splat_like(t, 0.0)?,
        });
    }
    out.add_output(loss, loss_value);
    for (name, g) in wrt.iter().zip(grads) {
        out.add_output(format!("d_{name}"), g);
    }
    let out = eliminate_dead_nodes(&out);
    verify(&out).map_err(AutodiffError::Verify)?;
    Ok(out)
}

/// `graph` with its semantic and fused ops (`softmax`, `rms_norm`,
/// `mhc_pre`, …) expanded into the primitives the interpreter defines them
/// by (`birkhoff_opt::expand_keeping`), so every op has a gradient rule;
/// borrowed as it is when it has none. `sinkhorn` stays one node, also
/// inside an expanded `mhc_pre`: its rule (`sinkhorn_grad`) recomputes the
/// rounds, where differentiating the unrolled rounds would keep every
/// round's intermediates alive. `mhc_pre` stays one node: its rule
/// (`mhc_pre_grad`) recomputes each token's forward from `x` and
/// back-propagates through all of it in one op, the `get`s of its tuple
/// passing their cotangents to it. `mhc_post` stays one node too: its rule
/// (`mhc_post_grad`) reads each token's residual and cotangent once, where
/// the expansion's backward makes several passes over `[T, n, C]`
/// tensors. The gradient graph computes the rest of the forward pass in
/// primitives; the optimizer fuses it again.
fn expand_for_autodiff(graph: &Graph) -> Result<Cow<'_, Graph>> {
    let keep = |op: &Op| matches!(op, Op::Sinkhorn(_) | Op::MhcPost | Op::MhcPre(_));
    if !graph
        .nodes()
        .iter()
        .any(|n| birkhoff_opt::is_expandable(&n.op) && !keep(&n.op))
    {
        return Ok(Cow::Borrowed(graph));
    }
    birkhoff_opt::expand_keeping(graph, keep)
        .map(Cow::Owned)
        .map_err(|e| AutodiffError::Expand(e.to_string()))
}

fn names(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

fn find_loss(graph: &Graph, loss: &str) -> Result<ValueId> {
    let out = graph
        .outputs()
        .iter()
        .find(|o| o.name == loss)
        .ok_or_else(|| AutodiffError::UnknownOutput {
            name: loss.to_string(),
            graph: graph.name().to_string(),
            known: names(graph.outputs().iter().map(|o| o.name.clone())),
        })?;
    let ty = graph.ty(out.value);
    if !ty.dtype.is_float() {
        return Err(AutodiffError::NonFloatLoss {
            name: loss.to_string(),
            ty: ty.clone(),
        });
    }
    if ty.num_elements() != 1 {
        return Err(AutodiffError::NonScalarLoss {
            name: loss.to_string(),
            ty: ty.clone(),
        });
    }
    Ok(out.value)
}

fn find_targets(graph: &Graph, loss: &str, wrt: &[&str]) -> Result<Vec<ValueId>> {
    let mut used = vec![loss.to_string()];
    let mut targets = Vec::with_capacity(wrt.len());
    for &name in wrt {
        let v = graph
            .input_by_name(name)
            .ok_or_else(|| AutodiffError::UnknownInput {
                name: name.to_string(),
                graph: graph.name().to_string(),
                known: names(
                    graph
                        .inputs()
                        .iter()
                        .filter_map(|&i| graph.input_name(i).map(str::to_string)),
                ),
            })?;
        let ty = graph.ty(v);
        if !ty.dtype.is_float() {
            return Err(AutodiffError::NonFloatInput {
                name: name.to_string(),
                ty: ty.clone(),
            });
        }
        let out_name = format!("d_{name}");
        if used.contains(&out_name) {
            return Err(AutodiffError::DuplicateName { name: out_name });
        }
        used.push(out_name);
        targets.push(v);
    }
    Ok(targets)
}

/// The forward graph with every node at its old id and no outputs.
fn copy_without_outputs(graph: &Graph) -> Graph {
    let mut out = Graph::new(format!("{}_grad", graph.name()));
    for v in graph.values() {
        let node: &Node = graph.node(v);
        match &node.op {
            Op::Input { name, kind, ty } if graph.inputs().contains(&v) => {
                out.add_input(name.clone(), *kind, ty.clone());
            }
            _ => {
                out.push(node.clone());
            }
        }
    }
    debug_assert_eq!(out.len(), graph.len());
    out
}

/// Sweeps from the loss back to the inputs. Returns the accumulated
/// cotangent of every value that lies on a path from a target to the loss.
fn backprop(out: &mut Graph, loss: ValueId, targets: &[ValueId]) -> Result<Vec<Option<ValueId>>> {
    let n = loss.index() + 1;
    // Values that depend on a target (forward reachability)…
    let mut from_target = vec![false; n];
    for &t in targets {
        if t.index() < n {
            from_target[t.index()] = true;
        }
    }
    for v in 0..n {
        if !from_target[v] && out.nodes()[v].args.iter().any(|a| from_target[a.index()]) {
            from_target[v] = true;
        }
    }
    // …and whose float value carries a gradient.
    // Tuples count: `get` reports their producer as unsupported.
    let carries = |g: &Graph, v: ValueId| {
        from_target[v.index()]
            && match g.value_type(v).as_tensor() {
                Some(t) => t.dtype.is_float(),
                None => true,
            }
    };

    let mut cot: Vec<Option<ValueId>> = vec![None; n];
    if carries(out, loss) {
        let seed = Appender { g: out }.splat_like(loss, 1.0)?;
        cot[loss.index()] = Some(seed);
    }
    // The cotangents of the elements of tuple values (from their `get`s).
    let mut parts: Vec<Vec<Option<ValueId>>> = vec![Vec::new(); n];
    for i in (0..n).rev() {
        let v = ValueId::new(i);
        if !parts[i].is_empty() {
            // A tuple value: one rule for all its elements' cotangents.
            let gs = std::mem::take(&mut parts[i]);
            let args = out.node(v).args.clone();
            let needs: Vec<bool> = args.iter().map(|&a| carries(out, a)).collect();
            let contributions = vjp_tuple(&mut Appender { g: out }, v, &gs, &needs)?;
            for (a, c) in args.into_iter().zip(contributions) {
                let Some(c) = c else { continue };
                cot[a.index()] = Some(match cot[a.index()] {
                    Some(prev) => Appender { g: out }.add(prev, c)?,
                    None => c,
                });
            }
            continue;
        }
        let Some(g) = cot[i] else { continue };
        if let Op::Get { index } = out.node(v).op {
            let t = out.node(v).args[0];
            if matches!(out.node(t).op, Op::MhcPre(_)) {
                if carries(out, t) {
                    let count = match out.value_type(t) {
                        birkhoff_ir::Type::Tuple(ts) => ts.len(),
                        birkhoff_ir::Type::Tensor(_) => 1,
                    };
                    let slots = &mut parts[t.index()];
                    slots.resize(count, None);
                    slots[index] = Some(match slots[index] {
                        Some(prev) => Appender { g: out }.add(prev, g)?,
                        None => g,
                    });
                }
                continue;
            }
        }
        let args = out.node(v).args.clone();
        let needs: Vec<bool> = args.iter().map(|&a| carries(out, a)).collect();
        if !needs.iter().any(|&b| b) {
            continue;
        }
        let contributions = vjp(&mut Appender { g: out }, v, g, &needs)?;
        for (a, c) in args.into_iter().zip(contributions) {
            let Some(c) = c else { continue };
            cot[a.index()] = Some(match cot[a.index()] {
                Some(prev) => Appender { g: out }.add(prev, c)?,
                None => c,
            });
        }
    }
    Ok(cot)
}
