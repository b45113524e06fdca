//! Replaying a block's pre-mixes in the backward pass.
//!
//! In the `block=K` recipe every layer input is recomputed. Re-running a
//! whole `mhc_pre` would redo its projection, a matrix product over each
//! token's `n·C` row that kernel fusion cannot merge with anything. So
//! each mHC connection's pre-mix is split, in the forward pass, into its
//! two halves — `mhc_project` (the product) and `mhc_pre_projected` (the
//! per-token rest), which compute exactly what `mhc_pre` computed — and
//! the backward pass reads its layer input from a second
//! `mhc_pre_projected` on the same stream and the kept mixes (`[T, m]`,
//! `m = n(n+2)`: small next to the `[T, C]` layer input).
//!
//! The replays of one block are placed together, in layer order, right
//! before the block's first backward use of any of its streams or layer
//! inputs. Recomputing the block's streams then puts each `mhc_post`
//! clone right before the replay that reads its result, so the block's
//! recomputation is a run of per-token kernels — pre-mix, post-mix,
//! pre-mix, … — that kernel fusion makes one kernel: DeepSeek's
//! multi-layer recompute, reading the block's starting stream once.

use std::collections::HashMap;

use birkhoff_ir::{Graph, Node, Op, ValueId, verify};

use crate::program::{RecomputeError, forward_order};
use crate::training::Connections;

/// `graph` with the pre-mix of every mHC connection whose layer input the
/// backward pass reads split in two, and those reads served by replays,
/// grouped by blocks of `block` connections (see the module docs); the
/// number of replays. HC connections (`hc_pre`) are left as they are.
pub(crate) fn replay_pre_mixes(
    graph: &Graph,
    forward_outputs: &[&str],
    connections: &Connections,
    block: usize,
) -> Result<(Graph, usize), RecomputeError> {
    let (order, split) = forward_order(graph, forward_outputs)?;
    let mut position = vec![usize::MAX; graph.len()];
    for (i, &v) in order.iter().enumerate() {
        position[v.index()] = i;
    }
    let backward = |v: ValueId| position[v.index()] >= split;
    let layers = connections.streams.len() - 1;

    // The connections to replay: an `mhc_pre` whose layer input has a
    // backward user. By connection: (layer input, pre-mix node).
    let mut replayed: Vec<Option<(ValueId, ValueId)>> = vec![None; layers];
    for &li in &connections.layer_inputs {
        let pre = graph.node(li).args[0];
        if !matches!(graph.node(pre).op, Op::MhcPre(_)) {
            continue;
        }
        let Some(l) = connections
            .streams
            .iter()
            .position(|&s| s == graph.node(pre).args[0])
        else {
            continue;
        };
        if l < layers && first_backward_use(graph, &position, split, &[li]).is_some() {
            replayed[l] = Some((li, pre));
        }
    }
    if replayed.iter().all(Option::is_none) {
        return Ok((graph.clone(), 0));
    }

    // Each block's replays go right before its first backward use of a
    // stream or layer input (the last block's includes the last stream,
    // which is recomputed from it).
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for start in (0..layers).step_by(block) {
        let end = (start + block).min(layers);
        let members: Vec<usize> = (start..end).filter(|&l| replayed[l].is_some()).collect();
        if members.is_empty() {
            continue;
        }
        let mut trigger: Vec<ValueId> = (start..end).map(|l| connections.streams[l]).collect();
        trigger.extend(
            members
                .iter()
                .filter_map(|&l| replayed[l].map(|(li, _)| li)),
        );
        if end == layers {
            trigger.push(connections.streams[layers]);
        }
        let at = first_backward_use(graph, &position, split, &trigger)
            .expect("a replayed layer input has a backward user");
        groups.entry(at).or_default().extend(members);
    }

    let mut out = Graph::new(graph.name());
    let mut map: Vec<Option<ValueId>> = vec![None; graph.len()];
    let m = |map: &[Option<ValueId>], v: ValueId| map[v.index()].expect("operands come first");
    // By original pre-mix node: the mixes its forward half computed.
    let mut mixes: HashMap<ValueId, ValueId> = HashMap::new();
    // By original layer input: the replay the backward pass reads.
    let mut replay: HashMap<ValueId, ValueId> = HashMap::new();
    let mut count = 0;
    for (i, &v) in order.iter().enumerate() {
        let node = graph.node(v);
        if let Op::Input { name, kind, ty } = &node.op
            && graph.inputs().contains(&v)
        {
            map[v.index()] = Some(out.add_input(name.clone(), *kind, ty.clone()));
            continue;
        }
        if let Some(members) = groups.get(&i) {
            for &l in members {
                let (li, pre) = replayed[l].expect("a member is replayed");
                let p = graph.node(pre);
                let args = [
                    m(&map, p.args[0]),
                    mixes[&pre],
                    m(&map, p.args[2]),
                    m(&map, p.args[3]),
                ];
                let r = push(&mut out, projected(&p.op), &args)?;
                let r0 = push(&mut out, Op::Get { index: 0 }, &[r])?;
                replay.insert(li, r0);
                count += 1;
            }
        }
        let is_split = replayed.iter().flatten().any(|&(_, pre)| pre == v);
        let mapped = if is_split {
            let [x, w, s, b] = [0, 1, 2, 3].map(|a| m(&map, node.args[a]));
            let mix = push(&mut out, Op::MhcProject, &[x, w])?;
            mixes.insert(v, mix);
            push(&mut out, projected(&node.op), &[x, mix, s, b])?
        } else {
            let args = node
                .args
                .iter()
                .map(|&a| match replay.get(&a) {
                    Some(&r) if backward(v) => r,
                    _ => m(&map, a),
                })
                .collect();
            out.push(Node {
                args,
                ..node.clone()
            })
        };
        map[v.index()] = Some(mapped);
    }
    for o in graph.outputs() {
        out.add_output(o.name.clone(), m(&map, o.value));
    }
    verify(&out).map_err(|e| RecomputeError::Verify(e.to_string()))?;
    Ok((out, count))
}

/// The position in `order` of the first backward node that reads one of
/// `values`.
fn first_backward_use(
    graph: &Graph,
    position: &[usize],
    split: usize,
    values: &[ValueId],
) -> Option<usize> {
    graph
        .values()
        .filter(|&u| position[u.index()] >= split && position[u.index()] != usize::MAX)
        .filter(|&u| graph.node(u).args.iter().any(|a| values.contains(a)))
        .map(|u| position[u.index()])
        .min()
}

/// `mhc_pre_projected` with `mhc_pre`'s attributes.
fn projected(op: &Op) -> Op {
    match *op {
        Op::MhcPre(spec) => Op::MhcPreProjected(spec),
        _ => unreachable!("only mhc_pre is split"),
    }
}

/// Adds `op(args)` with its inferred type.
fn push(g: &mut Graph, op: Op, args: &[ValueId]) -> Result<ValueId, RecomputeError> {
    g.add(op, args)
        .map_err(|e| RecomputeError::Verify(e.to_string()))
}
