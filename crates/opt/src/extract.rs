//! Extraction that counts a shared subterm once.
//!
//! egg's stock extractor minimizes *tree* cost: a subterm used twice is
//! paid twice, so a multi-result fused op (used once per result) looks
//! three times as expensive as it is, and costs grow exponentially with
//! depth in a DAG. Here the objective is the **DAG cost**: the sum of the
//! own costs of the distinct e-classes the extracted program computes.
//!
//! 1. *Selection.* A Knuth/Dijkstra-style pass finalizes classes in order
//!    of an amortized cost (a node's own cost plus each child's cost
//!    divided by the child's number of users). A class is finalized only
//!    through a node whose children are all finalized, so the selection is
//!    acyclic by construction, and the finalization order is a topological
//!    order.
//! 2. *Refinement.* Local search on the exact DAG cost: for each needed
//!    class, try every alternative none of whose children is computed from
//!    the class in the current selection (checked by a search bounded by
//!    the selection's depths, so the selection stays acyclic), compute the
//!    exact change in DAG cost incrementally (reference counts over the
//!    selection: classes that stop or start being needed), and keep
//!    improvements. A class that can take one result of a multi-result op
//!    (a `get` of a tuple) is also tried together with every other needed
//!    class that can take another result of the same tuple: one fused op
//!    pays off only when all its results are used, which no single switch
//!    shows. An alternative blocked by a child computed from the class is
//!    tried too when that child is not needed: the child first moves to a
//!    node that closes no cycle (free, as nothing uses it). Repeats until
//!    nothing improves (at most [`REFINE_ROUNDS`] rounds).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use egg::Id;

use birkhoff_ir::Type;

use crate::cost::{Cost, node_cost};
use crate::lang::{EG, ENode};

/// Switches of unneeded classes: `(class, node)`.
type Moves = Vec<(usize, usize)>;
/// Reference-count changes by class.
type RefChanges = HashMap<usize, i64>;

/// Most refinement rounds.
pub const REFINE_ROUNDS: usize = 4;

/// A chosen e-node per needed class.
pub struct Selection {
    /// The chosen node of each class (by canonical id), for every class
    /// the roots need.
    pub choice: HashMap<Id, ENode>,
    /// DAG cost of the selection: every needed class once.
    pub cost: Cost,
    /// Improvements made by the refinement step.
    pub refinements: usize,
}

struct Candidate {
    cost: f64,
    class: usize,
    node: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Candidate {
    // Min-heap on cost; ties broken by position for determinism.
    fn cmp(&self, o: &Self) -> Ordering {
        o.cost
            .total_cmp(&self.cost)
            .then(o.class.cmp(&self.class))
            .then(o.node.cmp(&self.node))
    }
}

/// Dense view of the e-graph used by both steps.
struct Table {
    ids: Vec<Id>,
    nodes: Vec<Vec<ENode>>,
    /// Distinct child class indices of each node.
    kids: Vec<Vec<Vec<usize>>>,
    own: Vec<Vec<Cost>>,
    /// For each class holding a tuple, the `(class, node)` of every `get`
    /// of it.
    getters: Vec<Vec<(usize, usize)>>,
}

fn table(eg: &EG) -> (Table, HashMap<Id, usize>) {
    let ids: Vec<Id> = eg.classes().map(|c| c.id).collect();
    let index: HashMap<Id, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut t = Table {
        ids,
        nodes: vec![],
        kids: vec![],
        own: vec![],
        getters: vec![Vec::new(); ids_len(eg)],
    };
    for (ci, &id) in t.ids.iter().enumerate() {
        let class = &eg[id];
        let mut nodes = Vec::new();
        let mut kids = Vec::new();
        let mut own = Vec::new();
        for n in &class.nodes {
            let mut k: Vec<usize> = n.children.iter().map(|&c| index[&eg.find(c)]).collect();
            k.sort_unstable();
            k.dedup();
            let tys: Vec<&Type> = n.children.iter().map(|&c| &eg[c].data.ty).collect();
            let cost = node_cost(&n.op, &tys, &class.data.ty);
            own.push(if class.data.weight_side {
                crate::cost::weight_side_cost(cost)
            } else {
                cost
            });
            if matches!(n.op, birkhoff_ir::Op::Get { .. }) {
                t.getters[k[0]].push((ci, nodes.len()));
            }
            kids.push(k);
            nodes.push(n.clone());
        }
        t.nodes.push(nodes);
        t.kids.push(kids);
        t.own.push(own);
    }
    (t, index)
}

fn ids_len(eg: &EG) -> usize {
    eg.classes().count()
}

/// A node's own cost as a number; never zero, so that an extra node is
/// never free.
fn weight(c: &Cost) -> f64 {
    c.scalar() + 1e-3
}

/// Extracts the cheapest acyclic program computing every class in `roots`.
/// Returns the first root that has no acyclic term, on failure.
pub fn extract(eg: &EG, roots: &[Id]) -> Result<Selection, Id> {
    let (t, index) = table(eg);
    let nc = t.ids.len();
    let root_idx: Vec<usize> = roots.iter().map(|r| index[&eg.find(*r)]).collect();

    // Users of each class: distinct parent classes, plus root references.
    let mut users = vec![0usize; nc];
    let mut waiting: Vec<Vec<(usize, usize)>> = vec![Vec::new(); nc];
    let mut pending: Vec<Vec<usize>> = Vec::with_capacity(nc);
    {
        let mut seen_parent: Vec<Vec<usize>> = vec![Vec::new(); nc];
        for c in 0..nc {
            pending.push(t.kids[c].iter().map(Vec::len).collect());
            for (k, kids) in t.kids[c].iter().enumerate() {
                for &ch in kids {
                    waiting[ch].push((c, k));
                    seen_parent[ch].push(c);
                }
            }
        }
        for (ch, ps) in seen_parent.iter_mut().enumerate() {
            ps.sort_unstable();
            ps.dedup();
            users[ch] = ps.len();
        }
        for &r in &root_idx {
            users[r] += 1;
        }
    }

    // Step 1: selection in amortized-cost order.
    let mut cost = vec![f64::INFINITY; nc];
    let mut chosen: Vec<Option<usize>> = vec![None; nc];
    let mut order = vec![usize::MAX; nc];
    let mut heap = BinaryHeap::new();
    for c in 0..nc {
        for k in 0..t.nodes[c].len() {
            if t.kids[c][k].is_empty() {
                heap.push(Candidate {
                    cost: weight(&t.own[c][k]),
                    class: c,
                    node: k,
                });
            }
        }
    }
    let mut next = 0;
    while let Some(Candidate {
        cost: w,
        class: c,
        node: k,
    }) = heap.pop()
    {
        if chosen[c].is_some() {
            continue;
        }
        chosen[c] = Some(k);
        cost[c] = w;
        order[c] = next;
        next += 1;
        for &(p, pk) in &waiting[c] {
            pending[p][pk] -= 1;
            if pending[p][pk] == 0 && chosen[p].is_none() {
                let w = weight(&t.own[p][pk])
                    + t.kids[p][pk]
                        .iter()
                        .map(|&ch| cost[ch] / users[ch].max(1) as f64)
                        .sum::<f64>();
                heap.push(Candidate {
                    cost: w,
                    class: p,
                    node: pk,
                });
            }
        }
    }
    if let Some(&r) = root_idx.iter().find(|&&r| chosen[r].is_none()) {
        return Err(t.ids[r]);
    }

    // Step 2: exact DAG-cost refinement. A class's reference count is the
    // number of root references plus, for every needed class, one per
    // distinct child; a class is needed while its count is positive.
    let mut refs = vec![0i64; nc];
    for &r in &root_idx {
        refs[r] += 1;
    }
    let needed = |refs: &[i64]| refs.iter().map(|&r| r > 0).collect::<Vec<bool>>();
    let mut work: Vec<usize> = root_idx;
    let mut counted = vec![false; nc];
    while let Some(c) = work.pop() {
        if std::mem::replace(&mut counted[c], true) {
            continue;
        }
        let k = chosen[c].expect("reachable classes are chosen");
        for &ch in &t.kids[c][k] {
            refs[ch] += 1;
            work.push(ch);
        }
    }

    let mut order_of = Levels::new(&t, &chosen);
    let mut refinements = 0;
    for _ in 0..REFINE_ROUNDS {
        let mut improved = false;
        let mut classes: Vec<usize> = (0..nc)
            .filter(|&c| refs[c] > 0 && t.nodes[c].len() > 1)
            .collect();
        classes.sort_by_key(|&c| order[c]);
        for c in classes {
            if refs[c] <= 0 {
                continue;
            }
            let cur = chosen[c].expect("needed classes are chosen");
            for k in 0..t.nodes[c].len() {
                if k == cur || t.kids[c][k].iter().any(|&ch| chosen[ch].is_none()) {
                    continue;
                }
                // A child computed from `c` would close a cycle; if it is
                // not needed its choice is free, so it may first move to a
                // node that is not (`c = f(child)` while the unused child
                // was selected as `child = g(c)`).
                let Some(options) = unblock(&t, &chosen, &refs, &order_of.depth, c, k) else {
                    continue;
                };
                // The best of the ways to unblock (usually one child with
                // a few nodes).
                let mut best: Option<(f64, Moves, RefChanges)> = None;
                for moves in options {
                    let before: Vec<(usize, Option<usize>)> =
                        moves.iter().map(|&(b, _)| (b, chosen[b])).collect();
                    for &(b, kb) in &moves {
                        chosen[b] = Some(kb);
                    }
                    let (delta, changes) = simulate(&t, &chosen, &refs, cur, k, c);
                    for (b, kb) in before {
                        chosen[b] = kb;
                    }
                    if best.as_ref().is_none_or(|(d, _, _)| delta < *d) {
                        best = Some((delta, moves, changes));
                    }
                }
                if let Some((delta, moves, changes)) = best
                    && delta < -1e-9 * (1.0 + delta.abs())
                {
                    for (b, kb) in moves {
                        order_of.choose(&t, &mut chosen, b, kb);
                    }
                    for (x, d) in changes {
                        refs[x] += d;
                    }
                    order_of.choose(&t, &mut chosen, c, k);
                    refinements += 1;
                    improved = true;
                    break;
                }
                if let Some(group) = tuple_group(&t, &chosen, &refs, &order_of.depth, c, k)
                    && let Some(ref_changes) = improves(&t, &mut chosen, &mut refs, &group)
                {
                    for (x, d) in ref_changes {
                        refs[x] += d;
                    }
                    for (x, kx) in group {
                        order_of.choose(&t, &mut chosen, x, kx);
                    }
                    refinements += 1;
                    improved = true;
                    break;
                }
            }
        }
        if !improved {
            break;
        }
    }

    let need = needed(&refs);
    let mut choice = HashMap::new();
    let mut total = Cost::default();
    for c in 0..nc {
        if need[c] {
            let k = chosen[c].expect("needed classes are chosen");
            choice.insert(t.ids[c], t.nodes[c][k].clone());
            total = total + t.own[c][k];
        }
    }
    Ok(Selection {
        choice,
        cost: total,
        refinements,
    })
}

/// A level for every chosen class that is higher than each of its chosen
/// children's (a longest path from a leaf at first), kept so as the
/// selection changes: `reaches` prunes by it. Switching a class raises it
/// and its chosen ancestors as needed, so one switch costs its ancestors,
/// not the whole selection (levels only rise; stale high ones only prune
/// less).
struct Levels {
    depth: Vec<usize>,
    /// The classes whose chosen node has each class as a child.
    parents: Vec<Vec<usize>>,
}

impl Levels {
    fn new(t: &Table, chosen: &[Option<usize>]) -> Levels {
        let mut parents = vec![Vec::new(); chosen.len()];
        for (c, k) in chosen.iter().enumerate() {
            if let Some(k) = k {
                for &ch in &t.kids[c][*k] {
                    parents[ch].push(c);
                }
            }
        }
        Levels {
            depth: depths(t, chosen),
            parents,
        }
    }

    /// Switches class `c` to node `k` (which must close no cycle).
    fn choose(&mut self, t: &Table, chosen: &mut [Option<usize>], c: usize, k: usize) {
        if let Some(old) = chosen[c] {
            for &ch in &t.kids[c][old] {
                if let Some(i) = self.parents[ch].iter().position(|&p| p == c) {
                    self.parents[ch].swap_remove(i);
                }
            }
        }
        for &ch in &t.kids[c][k] {
            self.parents[ch].push(c);
        }
        chosen[c] = Some(k);
        let mut work = vec![c];
        while let Some(x) = work.pop() {
            let Some(kx) = chosen[x] else { continue };
            let need = t.kids[x][kx]
                .iter()
                .map(|&ch| self.depth[ch] + 1)
                .max()
                .unwrap_or(0);
            if self.depth[x] < need {
                self.depth[x] = need;
                work.extend(self.parents[x].iter().copied());
            }
        }
    }
}

/// Longest path from a leaf to each chosen class, in the current selection
/// (which is acyclic, so this is well defined); unchosen classes get 0.
fn depths(t: &Table, chosen: &[Option<usize>]) -> Vec<usize> {
    let nc = chosen.len();
    let mut depth = vec![0usize; nc];
    let mut state = vec![0u8; nc]; // 0 new, 1 open, 2 done
    for start in 0..nc {
        if chosen[start].is_none() || state[start] == 2 {
            continue;
        }
        let mut stack = vec![(start, false)];
        while let Some((c, closing)) = stack.pop() {
            let Some(k) = chosen[c] else { continue };
            if closing {
                depth[c] = t.kids[c][k]
                    .iter()
                    .map(|&ch| depth[ch] + 1)
                    .max()
                    .unwrap_or(0);
                state[c] = 2;
                continue;
            }
            if state[c] != 0 {
                continue;
            }
            state[c] = 1;
            stack.push((c, true));
            stack.extend(
                t.kids[c][k]
                    .iter()
                    .filter(|&&ch| state[ch] == 0)
                    .map(|&ch| (ch, false)),
            );
        }
    }
    depth
}

/// The ways to let class `c` take node `k` without a cycle, each a list
/// of moves `(class, node)`: one empty way if no child of `k` is computed
/// from `c`. A child that is, and is not needed (so its choice costs
/// nothing), may move to a node whose children are chosen and computed
/// from neither `c` nor it: one way per such node of the first blocking
/// child (the others take their first). `None` if a blocking child is
/// needed or has no such node.
fn unblock(
    t: &Table,
    chosen: &[Option<usize>],
    refs: &[i64],
    depth: &[usize],
    c: usize,
    k: usize,
) -> Option<Vec<Vec<(usize, usize)>>> {
    let mut per_child: Vec<Vec<(usize, usize)>> = Vec::new();
    for &b in &t.kids[c][k] {
        if !reaches(t, chosen, depth, b, c) {
            continue;
        }
        if b == c || refs[b] > 0 {
            return None;
        }
        let nodes: Vec<(usize, usize)> = (0..t.nodes[b].len())
            .filter(|&kb| {
                t.kids[b][kb].iter().all(|&ch| {
                    chosen[ch].is_some()
                        && !reaches(t, chosen, depth, ch, c)
                        && !reaches(t, chosen, depth, ch, b)
                })
            })
            .map(|kb| (b, kb))
            .collect();
        if nodes.is_empty() {
            return None;
        }
        per_child.push(nodes);
    }
    let Some((first, rest)) = per_child.split_first() else {
        return Some(vec![Vec::new()]);
    };
    let others: Vec<(usize, usize)> = rest.iter().map(|n| n[0]).collect();
    Some(
        first
            .iter()
            .map(|&m| std::iter::once(m).chain(others.iter().copied()).collect())
            .collect(),
    )
}

/// Whether class `c` is computed from class `from` in the current
/// selection (so making `c` use `from` would close a cycle). Only classes
/// deeper than `c` can lead to it, which bounds the search.
fn reaches(t: &Table, chosen: &[Option<usize>], depth: &[usize], from: usize, c: usize) -> bool {
    if from == c {
        return true;
    }
    if depth[from] <= depth[c] {
        return false;
    }
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![from];
    while let Some(x) = stack.pop() {
        if x == c {
            return true;
        }
        if depth[x] <= depth[c] || !seen.insert(x) {
            continue;
        }
        if let Some(k) = chosen[x] {
            stack.extend(&t.kids[x][k]);
        }
    }
    false
}

/// When node `k` of class `c` is a `get` of a tuple, the switches that
/// move `c` and every other needed class with a `get` of the same tuple
/// onto it (each to its own result), if none closes a cycle.
fn tuple_group(
    t: &Table,
    chosen: &[Option<usize>],
    refs: &[i64],
    depth: &[usize],
    c: usize,
    k: usize,
) -> Option<Vec<(usize, usize)>> {
    if !matches!(t.nodes[c][k].op, birkhoff_ir::Op::Get { .. }) {
        return None;
    }
    let tuple = t.kids[c][k][0];
    chosen[tuple]?;
    let mut group: Vec<(usize, usize)> = vec![(c, k)];
    for &(x, kx) in &t.getters[tuple] {
        if x != c && refs[x] > 0 && chosen[x] != Some(kx) && !group.iter().any(|g| g.0 == x) {
            group.push((x, kx));
        }
    }
    if group.len() < 2
        || group
            .iter()
            .any(|&(x, _)| reaches(t, chosen, depth, tuple, x))
    {
        return None;
    }
    Some(group)
}

/// The reference-count changes of the switches of `group`, applied one
/// after the other, if together they lower the DAG cost. `chosen` and
/// `refs` are changed while the switches are simulated and restored before
/// it returns (no copy of either: this runs once per candidate group).
fn improves(
    t: &Table,
    chosen: &mut [Option<usize>],
    refs: &mut [i64],
    group: &[(usize, usize)],
) -> Option<Vec<(usize, i64)>> {
    let mut ref_changes: Vec<(usize, i64)> = Vec::new();
    let mut old_choices: Vec<(usize, Option<usize>)> = Vec::new();
    let mut total = 0.0;
    let mut complete = true;
    for &(x, kx) in group {
        let Some(cur) = chosen[x] else {
            complete = false;
            break;
        };
        let (delta, changes) = simulate(t, chosen, refs, cur, kx, x);
        total += delta;
        for (y, d) in changes {
            refs[y] += d;
            ref_changes.push((y, d));
        }
        old_choices.push((x, chosen[x]));
        chosen[x] = Some(kx);
    }
    for &(y, d) in &ref_changes {
        refs[y] -= d;
    }
    for (x, k) in old_choices.into_iter().rev() {
        chosen[x] = k;
    }
    (complete && total < -1e-9 * (1.0 + total.abs())).then_some(ref_changes)
}

/// The exact change in DAG cost of switching class `c` from node `old` to
/// node `new`, and the reference-count changes that switch makes.
fn simulate(
    t: &Table,
    chosen: &[Option<usize>],
    refs: &[i64],
    old: usize,
    new: usize,
    c: usize,
) -> (f64, HashMap<usize, i64>) {
    let mut d: HashMap<usize, i64> = HashMap::new();
    let mut delta = weight(&t.own[c][new]) - weight(&t.own[c][old]);
    // Increments first, so a class shared by both sides never looks dead.
    let mut incs: Vec<usize> = t.kids[c][new].clone();
    while let Some(x) = incs.pop() {
        let e = d.entry(x).or_insert(0);
        *e += 1;
        if refs[x] + *e == 1 {
            let k = chosen[x].expect("children of candidates are chosen");
            delta += weight(&t.own[x][k]);
            incs.extend(&t.kids[x][k]);
        }
    }
    let mut decs: Vec<usize> = t.kids[c][old].clone();
    while let Some(x) = decs.pop() {
        let e = d.entry(x).or_insert(0);
        *e -= 1;
        if refs[x] + *e == 0 {
            let k = chosen[x].expect("needed classes are chosen");
            delta -= weight(&t.own[x][k]);
            decs.extend(&t.kids[x][k]);
        }
    }
    (delta, d)
}
