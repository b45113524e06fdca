//! The graph builder and tensor handles.
//!
//! A [`Builder`] owns the graph under construction; [`Var`] is a cheap,
//! `Copy` handle to one value in it. Operations on handles append nodes.
//! A mistake (shape mismatch, bad axis, …) does not panic: it is recorded
//! with the caller's file and line, the resulting handle is *poisoned*
//! (operations on it quietly produce more poisoned handles), and
//! [`Builder::build`] returns every recorded mistake as an error.

use std::cell::RefCell;
use std::collections::HashSet;
use std::panic::Location;

use birkhoff_ir::{
    DType, Graph, InputKind, Literal, Op, TensorType, ValueId, is_identifier, verify,
};

use crate::error::{BuildError, Error, Result};

struct Inner {
    graph: Graph,
    errors: Vec<BuildError>,
    names: HashSet<String>,
}

/// Builds one graph. Create handles with [`Builder::input`],
/// [`Builder::param`] and the constant constructors, combine them, name
/// the results with [`Builder::output`], then call [`Builder::build`].
pub struct Builder {
    inner: RefCell<Inner>,
}

/// A handle to a value of the graph being built.
///
/// Arithmetic operators and the methods below append nodes. Binary
/// operations broadcast NumPy-style (shapes align at the right, size-1
/// dimensions stretch), inserting explicit `broadcast` nodes; a scalar
/// `f64` operand becomes a constant of the other operand's dtype.
#[derive(Clone, Copy)]
pub struct Var<'b> {
    pub(crate) b: &'b Builder,
    pub(crate) id: Option<ValueId>,
}

impl std::fmt::Debug for Var<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.id, self.ty()) {
            (Some(id), Some(ty)) => write!(f, "Var({id}: {ty})"),
            _ => f.write_str("Var(poisoned)"),
        }
    }
}

impl Builder {
    /// A builder for a graph called `name`.
    pub fn new(name: &str) -> Self {
        Builder {
            inner: RefCell::new(Inner {
                graph: Graph::new(name),
                errors: Vec::new(),
                names: HashSet::new(),
            }),
        }
    }

    #[track_caller]
    pub(crate) fn error(&self, message: impl Into<String>) {
        let loc = Location::caller();
        self.inner.borrow_mut().errors.push(BuildError {
            file: loc.file(),
            line: loc.line(),
            column: loc.column(),
            message: message.into(),
        });
    }

    pub(crate) fn poisoned(&self) -> Var<'_> {
        Var { b: self, id: None }
    }

    pub(crate) fn ty_of(&self, id: ValueId) -> TensorType {
        self.inner.borrow().graph.ty(id).clone()
    }

    /// Appends `op` applied to `args`; records an error (and returns a
    /// poisoned handle) if it is ill-typed.
    #[track_caller]
    pub(crate) fn add<'b>(&'b self, op: Op, args: &[Var<'b>]) -> Var<'b> {
        let Some(ids) = args.iter().map(|a| a.id).collect::<Option<Vec<_>>>() else {
            return self.poisoned();
        };
        let result = self.inner.borrow_mut().graph.add(op, &ids);
        match result {
            Ok(id) => Var {
                b: self,
                id: Some(id),
            },
            Err(e) => {
                self.error(e.to_string());
                self.poisoned()
            }
        }
    }

    #[track_caller]
    fn declare(&self, name: &str, kind: InputKind, dtype: DType, shape: &[usize]) -> Var<'_> {
        if !is_identifier(name) {
            self.error(format!(
                "input name '{name}' is not an identifier ([A-Za-z_][A-Za-z0-9_.]*)"
            ));
            return self.poisoned();
        }
        if !self.inner.borrow_mut().names.insert(format!("in:{name}")) {
            self.error(format!("input '{name}' is declared twice"));
            return self.poisoned();
        }
        let ty = TensorType::new(dtype, shape);
        if let Err(e) = birkhoff_ir::infer_type(
            &Op::Input {
                name: name.into(),
                kind,
                ty: ty.clone(),
            },
            &[],
        ) {
            self.error(format!("input '{name}': {e}"));
            return self.poisoned();
        }
        let id = self.inner.borrow_mut().graph.add_input(name, kind, ty);
        Var {
            b: self,
            id: Some(id),
        }
    }

    /// Declares a data input (fed per call).
    #[track_caller]
    pub fn input(&self, name: &str, dtype: DType, shape: &[usize]) -> Var<'_> {
        self.declare(name, InputKind::Data, dtype, shape)
    }

    /// Declares a parameter (a weight).
    #[track_caller]
    pub fn param(&self, name: &str, dtype: DType, shape: &[usize]) -> Var<'_> {
        self.declare(name, InputKind::Param, dtype, shape)
    }

    /// A tensor of `shape` with every element `value` (rounded to `dtype`).
    #[track_caller]
    pub fn full(&self, value: f64, dtype: DType, shape: &[usize]) -> Var<'_> {
        self.add(
            Op::Const(Literal::splat(TensorType::new(dtype, shape), value)),
            &[],
        )
    }

    /// A rank-0 constant.
    #[track_caller]
    pub fn scalar(&self, value: f64, dtype: DType) -> Var<'_> {
        self.full(value, dtype, &[])
    }

    /// A constant with every element given in row-major order.
    #[track_caller]
    pub fn constant(&self, values: &[f64], dtype: DType, shape: &[usize]) -> Var<'_> {
        let ty = TensorType::new(dtype, shape);
        match Literal::dense(ty.clone(), values.to_vec()) {
            Some(lit) => self.add(Op::Const(lit), &[]),
            None => {
                self.error(format!("{} values given for {ty}", values.len()));
                self.poisoned()
            }
        }
    }

    /// `out[i_0, …] = i_axis`.
    #[track_caller]
    pub fn iota(&self, dtype: DType, shape: &[usize], axis: usize) -> Var<'_> {
        self.add(
            Op::Iota {
                axis,
                ty: TensorType::new(dtype, shape),
            },
            &[],
        )
    }

    /// Joins `parts` (one dtype, equal shapes but along `axis`) along
    /// `axis`; an empty list is a recorded mistake, like any other.
    #[track_caller]
    pub fn concat<'b>(&'b self, parts: &[Var<'b>], axis: usize) -> Var<'b> {
        if parts.is_empty() {
            self.error("concat of no parts");
            return self.poisoned();
        }
        self.add(Op::Concat { axis }, parts)
    }

    /// Names `value` as a graph output.
    #[track_caller]
    pub fn output(&self, name: &str, value: Var<'_>) {
        if !is_identifier(name) {
            return self.error(format!(
                "output name '{name}' is not an identifier ([A-Za-z_][A-Za-z0-9_.]*)"
            ));
        }
        if !self.inner.borrow_mut().names.insert(format!("out:{name}")) {
            return self.error(format!("output '{name}' is named twice"));
        }
        if let Some(id) = value.id {
            self.inner.borrow_mut().graph.add_output(name, id);
        }
    }

    /// Names an intermediate value: the graph's text form spells it
    /// `%name` instead of a number, and the name survives printing,
    /// parsing and optimization wherever the value survives (a fused op
    /// takes the name of the value it computes). [`Var::named`] does the
    /// same inline.
    ///
    /// A name must be an identifier, not an input's name and not given
    /// twice; an input is named by its declaration. A mistake is recorded
    /// like any other.
    #[track_caller]
    pub fn name(&self, value: Var<'_>, name: &str) {
        let Some(id) = value.id else {
            return;
        };
        if !is_identifier(name) {
            return self.error(format!(
                "value name '{name}' is not an identifier ([A-Za-z_][A-Za-z0-9_.]*)"
            ));
        }
        let mut inner = self.inner.borrow_mut();
        if inner.graph.input_name(id).is_some() {
            drop(inner);
            return self.error(format!(
                "cannot name an input '{name}': it is named by its declaration"
            ));
        }
        if inner.names.contains(&format!("in:{name}")) {
            drop(inner);
            return self.error(format!("value name '{name}' is an input's name"));
        }
        if !inner.names.insert(format!("val:{name}")) {
            drop(inner);
            return self.error(format!("value name '{name}' is given twice"));
        }
        inner.graph.set_label(id, name);
    }

    /// Finishes the graph: returns every recorded mistake, or the graph in
    /// canonical order (inputs first), verified.
    #[track_caller]
    pub fn build(self) -> Result<Graph> {
        let here = Location::caller();
        let inner = self.inner.into_inner();
        let name = inner.graph.name().to_string();
        if !inner.errors.is_empty() {
            return Err(Error::Build {
                graph: name,
                errors: inner.errors,
            });
        }
        if inner.graph.outputs().is_empty() {
            let errors = vec![BuildError {
                file: here.file(),
                line: here.line(),
                column: here.column(),
                message: "graph has no outputs".into(),
            }];
            return Err(Error::Build {
                graph: name,
                errors,
            });
        }
        let graph = inner.graph.canonicalize();
        verify(&graph)?;
        Ok(graph)
    }
}
