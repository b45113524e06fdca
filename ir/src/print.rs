//! The text printer.
//!
//! Grammar (full reference in `docs/ir.md`):
//!
//! ```text
//! graph @NAME(%IN: TYPE, param %W: TYPE, ...) -> (OUT: TYPE, ...) {
//!   %N = MNEMONIC OPERANDS, ATTRIBUTES : TYPE
//!   return %A, %B
//! }
//! ```
//!
//! Inputs are spelled by name (`%residual`), every other value by its id
//! (`%12`). Floats print in their shortest exact spelling, so printing and
//! parsing round-trips bit for bit.

use std::fmt::{self, Write};

use crate::graph::{Graph, ValueId};
use crate::literal::{LiteralValues, format_scalar};
use crate::op::{FloatAttr, InputKind, Op, PreMixSpec, SinkhornSpec};
use crate::types::DType;

/// The text spelling of a value in `graph`: `%name` for inputs, `%label`
/// for a labelled value ([`Graph::set_label`]), `%N` (its index) otherwise
/// — or, where a label took `N`, the first free `%N_k`.
pub fn value_name(graph: &Graph, v: ValueId) -> String {
    if let Some(name) = graph.input_name(v) {
        return format!("%{name}");
    }
    if let Some(label) = graph.label(v) {
        return format!("%{label}");
    }
    let n = v.index().to_string();
    if !graph.has_label(&n) {
        return format!("%{n}");
    }
    (1..)
        .map(|k| format!("{n}_{k}"))
        .find(|s| !graph.has_label(s))
        .map(|s| format!("%{s}"))
        .unwrap_or_default()
}

fn write_list(f: &mut impl Write, xs: &[usize]) -> fmt::Result {
    f.write_char('[')?;
    for (i, x) in xs.iter().enumerate() {
        if i > 0 {
            f.write_char(',')?;
        }
        write!(f, "{x}")?;
    }
    f.write_char(']')
}

/// Writes the right-hand side of a node: `MNEMONIC OPERANDS, ATTRS : TYPE`,
/// or without the operands (`MNEMONIC ATTRS : TYPE`) for a label.
fn write_rhs(f: &mut impl Write, graph: &Graph, v: ValueId, operands: bool) -> fmt::Result {
    let node = graph.node(v);
    f.write_str(node.op.mnemonic())?;
    if let Op::Const(lit) = &node.op {
        f.write_char(' ')?;
        let d = lit.ty().dtype;
        match lit.values() {
            LiteralValues::Splat(x) => format_scalar(f, d, *x)?,
            LiteralValues::Dense(xs) => {
                f.write_char('[')?;
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    format_scalar(f, d, *x)?;
                }
                f.write_char(']')?;
            }
        }
        return write!(f, " : {}", node.ty);
    }
    let ad = Op::attr_dtype(&node.ty);
    let mut sep = " ";
    for &a in node.args.iter().filter(|_| operands) {
        // An out-of-range operand only occurs in graphs the verifier is
        // about to reject; print it rather than panic.
        let name = if a.index() < graph.len() {
            value_name(graph, a)
        } else {
            a.to_string()
        };
        write!(f, "{sep}{name}")?;
        sep = ", ";
    }
    match &node.op {
        Op::Iota { axis, .. } | Op::Concat { axis } => write!(f, "{sep}axis={axis}")?,
        Op::ReduceSum { axes, keepdims } | Op::ReduceMax { axes, keepdims } => {
            write!(f, "{sep}axes=")?;
            write_list(f, axes)?;
            if *keepdims {
                f.write_str(", keepdims")?;
            }
        }
        Op::Permute { perm } => {
            write!(f, "{sep}perm=")?;
            write_list(f, perm)?;
        }
        Op::Slice { start, end } => {
            write!(f, "{sep}start=")?;
            write_list(f, start)?;
            f.write_str(", end=")?;
            write_list(f, end)?;
        }
        Op::RowNorm { eps } | Op::ColNorm { eps } | Op::RmsNorm { eps } => {
            write_float(f, sep, "eps", *eps, ad)?;
        }
        Op::Softmax { axis } => write!(f, "{sep}axis={axis}")?,
        Op::Sinkhorn(spec) | Op::SinkhornGrad(spec) => write_sinkhorn(f, sep, spec, ad)?,
        Op::MhcPre(spec) | Op::MhcPreGrad(spec) | Op::MhcPreProjected(spec) => {
            write_pre_mix(f, sep, spec, ad)?;
        }
        Op::HcPre { norm_eps } => write_float(f, sep, "norm_eps", *norm_eps, ad)?,
        Op::Get { index } => write!(f, "{sep}index={index}")?,
        _ => {}
    }
    write!(f, " : {}", node.ty)
}

/// Writes `key=v` in the shortest spelling of the attribute's type `d`
/// (so `1e-6` in an f32 op reads `1e-6`, not the f64 digits of its f32
/// rounding); a value `d` does not hold exactly prints in full.
fn write_float(f: &mut impl Write, sep: &str, key: &str, v: FloatAttr, d: DType) -> fmt::Result {
    write!(f, "{sep}{key}=")?;
    let d = if d.holds(v.get()) { d } else { DType::F64 };
    format_scalar(f, d, v.get())
}

fn write_sinkhorn(f: &mut impl Write, sep: &str, s: &SinkhornSpec, d: DType) -> fmt::Result {
    write!(f, "{sep}variant={}, iters={}", s.variant.name(), s.iters)?;
    write_float(f, ", ", "eps", s.eps, d)
}

fn write_pre_mix(f: &mut impl Write, sep: &str, s: &PreMixSpec, d: DType) -> fmt::Result {
    write_float(f, sep, "norm_eps", s.norm_eps, d)?;
    write_float(f, ", ", "pre_eps", s.pre_eps, d)?;
    write_float(f, ", ", "post_mult", s.post_mult, d)?;
    write_sinkhorn(f, ", ", &s.sinkhorn, d)
}

/// One node as a line of text (without indentation), e.g.
/// `%5 = add %4, %residual : f32[4,8]`.
pub fn node_to_string(graph: &Graph, v: ValueId) -> String {
    let mut s = String::new();
    let node = graph.node(v);
    if let Op::Input { kind, .. } = &node.op {
        let kw = if *kind == InputKind::Param {
            "param "
        } else {
            ""
        };
        let _ = write!(s, "{kw}{}: {}", value_name(graph, v), node.ty);
    } else {
        let _ = write!(s, "{} = ", value_name(graph, v));
        let _ = write_rhs(&mut s, graph, v, true);
    }
    s
}

/// A node's op with its attributes and type but not its operands, e.g.
/// `sinkhorn variant=paper, iters=20, eps=0.0 : f32[4,4,4]` (graph
/// pictures draw the operands as edges).
pub fn op_to_string(graph: &Graph, v: ValueId) -> String {
    let mut s = String::new();
    let _ = write_rhs(&mut s, graph, v, false);
    s
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "graph @{}(", self.name())?;
        for (i, &v) in self.inputs().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(&node_to_string(self, v))?;
        }
        f.write_str(") -> (")?;
        for (i, o) in self.outputs().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match self.nodes().get(o.value.index()) {
                Some(n) => write!(f, "{}: {}", o.name, n.ty)?,
                None => write!(f, "{}: ?", o.name)?,
            }
        }
        f.write_str(") {\n")?;
        for v in self.values() {
            if matches!(self.node(v).op, Op::Input { .. }) && self.inputs().contains(&v) {
                continue;
            }
            writeln!(f, "  {}", node_to_string(self, v))?;
        }
        f.write_str("  return")?;
        for (i, o) in self.outputs().iter().enumerate() {
            let name = if o.value.index() < self.len() {
                value_name(self, o.value)
            } else {
                o.value.to_string()
            };
            write!(f, "{}{name}", if i == 0 { " " } else { ", " })?;
        }
        f.write_str("\n}\n")
    }
}
