//! The e-graph language: one e-node per graph IR op, with shape and dtype
//! as e-class data.
//!
//! Every op of the IR is an e-node: the op (with its attributes) plus its
//! operand classes. Inputs carry their name, so two inputs of the same
//! type never merge. A graph goes in as a shared DAG — one e-node per
//! graph node, common subterms once — and comes out by extraction.

use birkhoff_ir::{Graph, Op, Type, infer};
use egg::{Analysis, DidMerge, EGraph, Id, Language};

/// One e-node: an IR op and its operand e-classes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ENode {
    /// The op, attributes included.
    pub op: Op,
    /// Operand classes, in order.
    pub children: Vec<Id>,
}

impl Language for ENode {
    type Discriminant = std::mem::Discriminant<Op>;

    fn discriminant(&self) -> Self::Discriminant {
        std::mem::discriminant(&self.op)
    }

    fn matches(&self, other: &Self) -> bool {
        self.op == other.op && self.children.len() == other.children.len()
    }

    fn children(&self) -> &[Id] {
        &self.children
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.children
    }
}

/// What every e-class knows about its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Data {
    /// Shape and dtype (equal for every e-node of the class).
    pub ty: Type,
    /// The value of every element, if the class is a constant splat.
    pub splat: Option<f64>,
    /// Whether the value depends on no data input: only on parameters
    /// and constants (weight-side work, sized by the weights and not by
    /// the tokens).
    pub weight_side: bool,
}

/// The shape-and-constant analysis.
#[derive(Clone, Copy, Debug, Default)]
pub struct TypeAnalysis;

/// The e-graph birkhoff optimizes.
pub type EG = EGraph<ENode, TypeAnalysis>;

impl Analysis<ENode> for TypeAnalysis {
    type Data = Data;

    fn make(egraph: &mut EG, enode: &ENode, _id: Id) -> Data {
        let tys: Vec<&Type> = enode.children.iter().map(|&c| &egraph[c].data.ty).collect();
        // Every e-node enters through `add_checked` or from a verified
        // graph, so inference cannot fail here.
        let ty = infer(&enode.op, &tys)
            .unwrap_or_else(|e| panic!("ill-typed e-node {}: {e}", enode.op.mnemonic()));
        let splat = match &enode.op {
            Op::Const(lit) => lit.as_splat(),
            Op::Broadcast { .. } | Op::Reshape { .. } => egraph[enode.children[0]].data.splat,
            _ => None,
        };
        let weight_side = match &enode.op {
            Op::Input { kind, .. } => *kind == birkhoff_ir::InputKind::Param,
            _ => enode.children.iter().all(|&c| egraph[c].data.weight_side),
        };
        Data {
            ty,
            splat,
            weight_side,
        }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        // Rules only union equal values, and equal values have equal types.
        debug_assert_eq!(a.ty, b.ty, "merged e-classes of different types");
        // Equal values: if one spelling needs only weights, the value does.
        let weights_changed = b.weight_side && !a.weight_side;
        a.weight_side |= b.weight_side;
        let merged = match (a.splat, b.splat) {
            (None, Some(v)) => {
                a.splat = Some(v);
                DidMerge(true, false)
            }
            (Some(_), None) => DidMerge(false, true),
            _ => DidMerge(false, false),
        };
        DidMerge(merged.0 || weights_changed, merged.1)
    }
}

/// Adds `op(children)` if it is well-typed; `None` (and a debug-build
/// panic, since a rule built it) otherwise.
pub fn add_checked(eg: &mut EG, op: Op, children: Vec<Id>) -> Option<Id> {
    let tys: Vec<&Type> = children.iter().map(|&c| &eg[c].data.ty).collect();
    match infer(&op, &tys) {
        Ok(_) => Some(eg.add(ENode { op, children })),
        Err(e) => {
            debug_assert!(false, "a rule built an ill-typed {}: {e}", op.mnemonic());
            None
        }
    }
}

/// A graph inserted into an e-graph: the class of every value.
pub struct Inserted {
    /// The e-graph.
    pub egraph: EG,
    /// The class of each graph value, by [`ValueId::index`].
    pub classes: Vec<Id>,
}

/// Inserts a verified graph as a shared DAG.
pub fn insert(graph: &Graph) -> Inserted {
    let mut egraph = EG::new(TypeAnalysis);
    let mut classes: Vec<Id> = Vec::with_capacity(graph.len());
    for v in graph.values() {
        let node = graph.node(v);
        let children = node.args.iter().map(|a| classes[a.index()]).collect();
        classes.push(egraph.add(ENode {
            op: node.op.clone(),
            children,
        }));
    }
    egraph.rebuild();
    Inserted { egraph, classes }
}
