//! Graphs: SSA values in an arena, with named inputs and outputs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::error::TypeError;
use crate::infer::infer;
use crate::op::{InputKind, Op};
use crate::types::{TensorType, Type};

/// A value (the result of one node). Displays as its text-IR spelling `%N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(u32);

impl ValueId {
    /// The id with this arena index.
    pub fn new(index: usize) -> Self {
        ValueId(u32::try_from(index).expect("graph larger than u32::MAX nodes"))
    }

    /// Arena index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// One operation applied to earlier values.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    /// The operation and its attributes.
    pub op: Op,
    /// Operands, all defined before this node.
    pub args: Vec<ValueId>,
    /// Result type; equals `infer(op, operand types)` in a verified graph.
    pub ty: Type,
}

impl Node {
    /// The result's tensor type.
    ///
    /// # Panics
    /// If the node produces a tuple. The verifier guarantees that only
    /// `get` consumes tuples and that outputs are tensors, so code walking
    /// a verified graph's operands and outputs never sees one.
    pub fn tensor_ty(&self) -> &TensorType {
        match &self.ty {
            Type::Tensor(t) => t,
            Type::Tuple(_) => panic!("{} produces a tuple, not a tensor", self.op.mnemonic()),
        }
    }
}

/// A named graph result.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Output {
    /// External name, unique among outputs.
    pub name: String,
    /// The value returned.
    pub value: ValueId,
}

/// A dataflow graph in SSA form.
///
/// Nodes live in an arena indexed by [`ValueId`]; every operand refers to
/// an earlier node, so arena order is a topological order. Inputs are the
/// first nodes, in signature order — the canonical form the text format
/// reproduces, so that `parse(print(g)) == g`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Graph {
    name: String,
    nodes: Vec<Node>,
    inputs: Vec<ValueId>,
    outputs: Vec<Output>,
    /// Names of non-input values that print as something other than
    /// their arena index: a name the user gave (`%h_pre`), or the id a
    /// value had in the graph it came from, so that passes and
    /// reorderings keep it. Never a value's own index.
    labels: BTreeMap<ValueId, String>,
    /// The labels in use, for collision checks.
    label_set: BTreeSet<String>,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// The graph's name (printed after `@`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renames the graph.
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// All nodes, in arena (topological) order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Number of nodes, inputs included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node defining `v`.
    pub fn node(&self, v: ValueId) -> &Node {
        &self.nodes[v.index()]
    }

    /// The tensor type of `v` (see [`Node::tensor_ty`] for when it panics).
    pub fn ty(&self, v: ValueId) -> &TensorType {
        self.nodes[v.index()].tensor_ty()
    }

    /// The type of `v`, tuple or tensor.
    pub fn value_type(&self, v: ValueId) -> &Type {
        &self.nodes[v.index()].ty
    }

    /// Every value id, in order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = ValueId> + ExactSizeIterator + use<> {
        (0..self.nodes.len()).map(ValueId::new)
    }

    /// Inputs, in signature order.
    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    /// Outputs, in signature order.
    pub fn outputs(&self) -> &[Output] {
        &self.outputs
    }

    /// The external name of an input value, if `v` is an input.
    pub fn input_name(&self, v: ValueId) -> Option<&str> {
        match &self.nodes.get(v.index())?.op {
            Op::Input { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The input value with this external name.
    pub fn input_by_name(&self, name: &str) -> Option<ValueId> {
        self.inputs
            .iter()
            .copied()
            .find(|&v| self.input_name(v) == Some(name))
    }

    /// Appends an input. Inputs must precede other nodes (see [`Graph`]);
    /// the verifier reports a graph that breaks this.
    pub fn add_input(
        &mut self,
        name: impl Into<String>,
        kind: InputKind,
        ty: TensorType,
    ) -> ValueId {
        let v = self.push(Node {
            op: Op::Input {
                name: name.into(),
                kind,
                ty: ty.clone(),
            },
            args: Vec::new(),
            ty: Type::Tensor(ty),
        });
        self.inputs.push(v);
        v
    }

    /// Appends a node after checking its operands and inferring its type.
    pub fn add(&mut self, op: Op, args: &[ValueId]) -> Result<ValueId, TypeError> {
        if matches!(op, Op::Input { .. }) {
            return Err(TypeError::Invalid {
                op: op.mnemonic(),
                message: "graph inputs are declared with add_input".to_string(),
            });
        }
        let tys: Vec<&Type> = args
            .iter()
            .map(|a| {
                self.nodes
                    .get(a.index())
                    .map(|n| &n.ty)
                    .ok_or_else(|| TypeError::Invalid {
                        op: op.mnemonic(),
                        message: format!("operand {a} is not defined"),
                    })
            })
            .collect::<Result<_, _>>()?;
        let ty = infer(&op, &tys)?;
        Ok(self.push(Node {
            op,
            args: args.to_vec(),
            ty,
        }))
    }

    /// Appends a node as given, unchecked: the parser and passes use this
    /// and run the verifier afterwards. An `Op::Input` pushed this way is
    /// not a graph input until listed by [`Graph::add_input`].
    ///
    /// Float attributes are stored rounded to the op's compute type
    /// ([`Op::attr_dtype`]), so that a graph prints them as written
    /// (`eps=1e-6` in an f32 graph) and reads back bit for bit.
    pub fn push(&mut self, mut node: Node) -> ValueId {
        let v = ValueId::new(self.nodes.len());
        node.op = node.op.with_attrs_rounded_to(Op::attr_dtype(&node.ty));
        self.nodes.push(node);
        v
    }

    /// Appends a named output.
    pub fn add_output(&mut self, name: impl Into<String>, value: ValueId) {
        self.outputs.push(Output {
            name: name.into(),
            value,
        });
    }

    /// How many times each value is used as an operand or output.
    pub fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0; self.nodes.len()];
        for n in &self.nodes {
            for a in &n.args {
                if let Some(u) = uses.get_mut(a.index()) {
                    *u += 1;
                }
            }
        }
        for o in &self.outputs {
            if let Some(u) = uses.get_mut(o.value.index()) {
                *u += 1;
            }
        }
        uses
    }

    /// Counts of nodes per op mnemonic, sorted by mnemonic (inputs included).
    pub fn op_histogram(&self) -> Vec<(&'static str, usize)> {
        let mut counts = std::collections::BTreeMap::new();
        for n in &self.nodes {
            *counts.entry(n.op.mnemonic()).or_insert(0) += 1;
        }
        counts.into_iter().collect()
    }

    /// The name `v` prints as when it is not its index (see
    /// [`Graph::set_label`]); inputs print by their input names instead.
    pub fn label(&self, v: ValueId) -> Option<&str> {
        self.labels.get(&v).map(String::as_str)
    }

    /// Whether some value carries `label`.
    pub fn has_label(&self, label: &str) -> bool {
        self.label_set.contains(label)
    }

    /// Names `v` `label` in the text form (`%label`): a name the user
    /// chose, or the id `v` had in an earlier graph. A label equal to
    /// `v`'s index is no label; a label another value has is refused (the
    /// text form needs unique names) and `false` returned.
    pub fn set_label(&mut self, v: ValueId, label: impl Into<String>) -> bool {
        let label = label.into();
        if let Some(old) = self.labels.remove(&v) {
            self.label_set.remove(&old);
        }
        if label == v.index().to_string() {
            return true;
        }
        if self.label_set.contains(&label) {
            return false;
        }
        self.label_set.insert(label.clone());
        self.labels.insert(v, label);
        true
    }

    /// Gives `v` the name `old` prints as in `from` (its label, or its
    /// index there), so that a copy into a new arena keeps its spelling.
    pub fn carry_label(&mut self, v: ValueId, from: &Graph, old: ValueId) {
        // Inputs print by their input names; checking the node keeps this
        // O(1) where searching the input list made copies quadratic.
        if matches!(self.nodes[v.index()].op, Op::Input { .. }) {
            return;
        }
        let name = crate::print::value_name(from, old);
        self.set_label(v, name.trim_start_matches('%'));
    }

    /// A copy in the order the optimizer writes its results: inputs
    /// first (in signature order), then the values depth first from the
    /// outputs (in output order, each value after its operands, operands
    /// in order), then the values no output needs, in their order. Every
    /// value keeps its name, so an optimized graph and its input printed
    /// this way differ only where the optimizer changed something.
    pub fn depth_first(&self) -> Graph {
        let len = self.nodes.len();
        let mut out = Graph::new(self.name.clone());
        let mut remap: Vec<Option<ValueId>> = vec![None; len];
        for &v in &self.inputs {
            let id = out.push(self.nodes[v.index()].clone());
            out.inputs.push(id);
            remap[v.index()] = Some(id);
        }
        let mut on_stack = vec![false; len];
        let roots: Vec<ValueId> = self
            .outputs
            .iter()
            .map(|o| o.value)
            .chain(self.values())
            .filter(|r| r.index() < len)
            .collect();
        // Iterative post-order: deep graphs must not overflow the stack.
        for root in roots {
            let mut stack = vec![(root, false)];
            while let Some((v, expanded)) = stack.pop() {
                if remap[v.index()].is_some() || (!expanded && on_stack[v.index()]) {
                    continue;
                }
                let node = &self.nodes[v.index()];
                if !expanded {
                    on_stack[v.index()] = true;
                    stack.push((v, true));
                    for &a in node.args.iter().rev().filter(|a| a.index() < len) {
                        stack.push((a, false));
                    }
                    continue;
                }
                remap[v.index()] = Some(out.push_copy(self, v, &remap));
            }
        }
        out.add_outputs_of(self, &remap);
        out
    }

    /// Appends a copy of `from`'s node `v` with its operands renamed by
    /// `remap` (a dangling operand stays as it is, for the verifier to
    /// report), keeping the name `v` prints as.
    pub(crate) fn push_copy(
        &mut self,
        from: &Graph,
        v: ValueId,
        remap: &[Option<ValueId>],
    ) -> ValueId {
        let mut n = from.node(v).clone();
        for a in &mut n.args {
            *a = remap.get(a.index()).copied().flatten().unwrap_or(*a);
        }
        let id = self.push(n);
        self.carry_label(id, from, v);
        id
    }

    /// Adds `from`'s outputs, their values renamed by `remap`.
    pub(crate) fn add_outputs_of(&mut self, from: &Graph, remap: &[Option<ValueId>]) {
        for o in &from.outputs {
            let value = remap
                .get(o.value.index())
                .copied()
                .flatten()
                .unwrap_or(o.value);
            self.add_output(o.name.clone(), value);
        }
    }

    /// A copy in canonical order: inputs first (in signature order), then
    /// the other nodes in their current order. Graphs built out of order
    /// (an input declared after some ops) call this before printing.
    pub fn canonicalize(&self) -> Graph {
        let mut remap = vec![ValueId(0); self.nodes.len()];
        let mut out = Graph::new(self.name.clone());
        let mut is_input = vec![false; self.nodes.len()];
        for &v in &self.inputs {
            let n = &self.nodes[v.index()];
            is_input[v.index()] = true;
            remap[v.index()] = out.push(n.clone());
            out.inputs.push(remap[v.index()]);
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if is_input[i] {
                continue;
            }
            let mut n = n.clone();
            for a in &mut n.args {
                // Dangling operands stay dangling for the verifier to report.
                *a = remap.get(a.index()).copied().unwrap_or(*a);
            }
            remap[i] = out.push(n);
            // The value keeps its spelling (a builder's `Var::id`).
            out.carry_label(remap[i], self, ValueId::new(i));
        }
        for o in &self.outputs {
            out.add_output(
                o.name.clone(),
                remap.get(o.value.index()).copied().unwrap_or(o.value),
            );
        }
        out
    }
}
