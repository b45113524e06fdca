//! From a decoded `ModelProto` to a birkhoff graph.
//!
//! Nodes are imported in dependency order. Each ONNX value becomes either
//! a graph value or a constant the importer knows: shape arithmetic
//! (`Shape`, `Gather`, `Concat`, `Range`, …) is folded here, since
//! birkhoff's shapes are static, and only what depends on an input
//! reaches the graph. Float initializers of more than one element become
//! `param` inputs, created when first used, with their values kept beside
//! the graph.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use birkhoff_ir::{DType, Graph, InputKind, Literal, Op, Tensor, TensorType, ValueId, verify};

use crate::error::ImportError;
use crate::proto::{GraphProto, ModelProto, NodeProto, TensorProto};
use crate::tensor::{Const, decode, ir_dtype, is_float, shape_of};

/// The largest model file read (protobuf itself stops at 2 GiB; weights
/// beyond that live in external-data files).
const MAX_MODEL_BYTES: u64 = 2 << 30;

/// The most nodes inlining model-local functions may make (calls nest,
/// so a small file can describe an astronomically large graph).
const MAX_INLINED_NODES: usize = 1 << 20;

/// The oldest default-domain opset read: 13 moved `axes` and `split` to
/// inputs and gave `Softmax` its one-axis meaning.
const MIN_OPSET: i64 = 13;

/// How to import a model.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Sizes of symbolic dimensions, by name (`--dim NAME=SIZE`).
    pub dims: BTreeMap<String, usize>,
}

/// What a renamed ONNX name is in the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A graph input fed per call.
    Input,
    /// An initializer, now a `param` input.
    Param,
    /// A graph output.
    Output,
}

/// One ONNX name and the IR name that stands for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renamed {
    /// The name in the ONNX file.
    pub onnx: String,
    /// The input or output name in the graph.
    pub ir: String,
    /// Which kind of name.
    pub role: Role,
}

/// An imported model: the graph, its weights and its names.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The verified graph; initializers are `param` inputs.
    pub graph: Graph,
    /// The initializers' values, by input name.
    pub weights: BTreeMap<String, Tensor>,
    /// Every graph input, param and output with its ONNX name.
    pub names: Vec<Renamed>,
    /// The default-domain opset the model imports.
    pub opset: i64,
    /// Who wrote the file (`producer_name producer_version`).
    pub producer: String,
}

impl Imported {
    /// The ONNX name of the input or output the graph calls `ir`.
    pub fn onnx_name(&self, ir: &str, role: Role) -> Option<&str> {
        self.names
            .iter()
            .find(|r| r.ir == ir && r.role == role)
            .map(|r| r.onnx.as_str())
    }

    /// The IR name of the input or output the model calls `onnx`.
    pub fn ir_name(&self, onnx: &str, role: Role) -> Option<&str> {
        self.names
            .iter()
            .find(|r| r.onnx == onnx && r.role == role)
            .map(|r| r.ir.as_str())
    }

    /// IR comment lines (`; onnx ...`) naming the model and every name the
    /// import changed, to print above the graph.
    pub fn header(&self) -> String {
        let mut s = format!(
            "; imported from ONNX (opset {}{})\n",
            self.opset,
            if self.producer.trim().is_empty() {
                String::new()
            } else {
                format!(", written by {}", self.producer.trim())
            }
        );
        for r in &self.names {
            if r.onnx != r.ir {
                let role = match r.role {
                    Role::Input => "input",
                    Role::Param => "param",
                    Role::Output => "output",
                };
                s.push_str(&format!(
                    "; onnx {role} {:?} is {}{}\n",
                    r.onnx,
                    if r.role == Role::Output { "" } else { "%" },
                    r.ir
                ));
            }
        }
        s
    }
}

/// Reads and imports the ONNX model at `path`; external data is read from
/// the model's directory.
pub fn import_file(path: &Path, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let bytes = birkhoff_io::read_bounded(path, MAX_MODEL_BYTES).map_err(|e| {
        ImportError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        }
        .escaped()
    })?;
    let base = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    import_bytes(&bytes, &path.display().to_string(), base, opts)
}

/// Imports a model from its bytes; `what` names it in messages and
/// `base` is where its external data lives (none: external data is an
/// error).
pub fn import_bytes(
    bytes: &[u8],
    what: &str,
    base: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    import_model(bytes, what, base, opts).map_err(ImportError::escaped)
}

fn import_model(
    bytes: &[u8],
    what: &str,
    base: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    let model: ModelProto =
        prost::Message::decode(bytes).map_err(|e: prost::DecodeError| ImportError::Decode {
            path: what.to_string(),
            message: e.to_string(),
        })?;
    let Some(graph) = &model.graph else {
        return Err(ImportError::Decode {
            path: what.to_string(),
            message: "the file holds no graph (is it an ONNX model?)".to_string(),
        });
    };
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| ImportError::model("the model imports no default-domain (ai.onnx) opset"))?;
    if opset < MIN_OPSET {
        return Err(ImportError::model(format!(
            "the model uses opset {opset}; the oldest this importer reads is {MIN_OPSET} \
             (convert it with onnx.version_converter)"
        )));
    }
    let name = ir_identifier(if graph.name.is_empty() {
        "main"
    } else {
        &graph.name
    });
    let mut imp = Importer {
        g: Graph::new(name),
        vals: HashMap::new(),
        inits: HashMap::new(),
        base,
        weights: BTreeMap::new(),
        used: HashSet::new(),
        names: Vec::new(),
    };
    let nodes = inline_functions(&model, graph)?;
    imp.declare(graph, opts)?;
    let order = topological_order(graph, &nodes)?;
    for i in order {
        let n = &nodes[i];
        let outs = imp.node(n).map_err(|message| ImportError::Node {
            index: i,
            name: n.name.clone(),
            op_type: if n.domain.is_empty() || n.domain == "ai.onnx" {
                n.op_type.clone()
            } else {
                format!("{}:{}", n.domain, n.op_type)
            },
            message,
        })?;
        for (name, v) in n.output.iter().zip(outs) {
            if name.is_empty() {
                continue;
            }
            if let Val::Node { id, .. } = &v {
                imp.label(*id, name);
            }
            imp.vals.insert(name.clone(), v);
        }
    }
    if graph.output.is_empty() {
        return Err(ImportError::model("the graph has no outputs"));
    }
    for o in &graph.output {
        let v = imp
            .vals
            .get(&o.name)
            .cloned()
            .or_else(|| {
                imp.inits
                    .contains_key(&o.name)
                    .then(|| Val::Init(o.name.clone()))
            })
            .ok_or_else(|| {
                ImportError::model(format!(
                    "graph output `{}` is not computed by any node",
                    o.name
                ))
            })?;
        let id = imp
            .id(&v)
            .map_err(|m| ImportError::model(format!("graph output `{}`: {m}", o.name)))?;
        // Output names are their own namespace (the signature's).
        let base = ir_identifier(&o.name);
        let mut ir = base.clone();
        let mut k = 1;
        while imp.g.outputs().iter().any(|out| out.name == ir) {
            k += 1;
            ir = format!("{base}_{k}");
        }
        imp.names.push(Renamed {
            onnx: o.name.clone(),
            ir: ir.clone(),
            role: Role::Output,
        });
        imp.g.add_output(ir, id);
    }
    let g = imp.g.canonicalize();
    if let Err(errs) = verify(&g) {
        return Err(ImportError::model(format!(
            "the imported graph does not verify (an importer bug): {errs}"
        )));
    }
    Ok(Imported {
        graph: g,
        weights: imp.weights,
        names: imp.names,
        opset,
        producer: format!("{} {}", model.producer_name, model.producer_version),
    })
}

/// A valid IR identifier for an ONNX name: characters outside
/// `[A-Za-z0-9_.]` become `_`, and a name that does not start with a
/// letter or `_` gets a `v` in front.
pub fn ir_identifier(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, 'v');
    }
    s
}

/// The nodes of `graph` with every call of a model-local function
/// replaced by the function's body (names inside made unique by the
/// call's position); calls nest at most 16 deep.
fn inline_functions(model: &ModelProto, graph: &GraphProto) -> Result<Vec<NodeProto>, ImportError> {
    if model.functions.is_empty() {
        return Ok(graph.node.clone());
    }
    let mut out = Vec::new();
    let mut counter = 0usize;
    for n in &graph.node {
        expand(model, n, 0, &mut counter, &mut out)?;
    }
    Ok(out)
}

fn expand(
    model: &ModelProto,
    n: &NodeProto,
    depth: usize,
    counter: &mut usize,
    out: &mut Vec<NodeProto>,
) -> Result<(), ImportError> {
    let Some(f) = model
        .functions
        .iter()
        .find(|f| f.name == n.op_type && f.domain == n.domain)
    else {
        if out.len() >= MAX_INLINED_NODES {
            return Err(ImportError::model(format!(
                "inlining the model's local functions makes more than {MAX_INLINED_NODES} nodes"
            )));
        }
        out.push(n.clone());
        return Ok(());
    };
    if depth >= 16 {
        return Err(ImportError::model(format!(
            "model-local function `{}` calls functions more than 16 deep (recursion?)",
            f.name
        )));
    }
    *counter += 1;
    let prefix = format!("{}__{}__", f.name, counter);
    let mut rename: HashMap<&str, String> = HashMap::new();
    for (formal, actual) in f.input.iter().zip(&n.input) {
        rename.insert(formal, actual.clone());
    }
    for (formal, actual) in f.output.iter().zip(&n.output) {
        rename.insert(formal, actual.clone());
    }
    let map = |s: &String, rename: &HashMap<&str, String>| -> String {
        if s.is_empty() {
            return String::new();
        }
        rename
            .get(s.as_str())
            .cloned()
            .unwrap_or_else(|| format!("{prefix}{s}"))
    };
    for inner in &f.node {
        let mut m = inner.clone();
        m.input = inner.input.iter().map(|s| map(s, &rename)).collect();
        m.output = inner.output.iter().map(|s| map(s, &rename)).collect();
        m.name = format!("{prefix}{}", inner.name);
        // Attributes that refer to the call's attributes take their values.
        let mut attrs = Vec::new();
        for a in &inner.attribute {
            if a.ref_attr_name.is_empty() {
                attrs.push(a.clone());
            } else if let Some(actual) = n
                .attribute
                .iter()
                .chain(&f.attribute_proto)
                .find(|x| x.name == a.ref_attr_name)
            {
                let mut v = actual.clone();
                v.name = a.name.clone();
                attrs.push(v);
            }
        }
        m.attribute = attrs;
        expand(model, &m, depth + 1, counter, out)?;
    }
    Ok(())
}

/// Node indices in an order where each node follows the producers of its
/// inputs; errors name an undefined value or a cycle.
fn topological_order(graph: &GraphProto, nodes: &[NodeProto]) -> Result<Vec<usize>, ImportError> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if producer.insert(o, i).is_some() {
                return Err(ImportError::model(format!(
                    "value `{o}` is produced by more than one node (the second is {})",
                    node_label(i, n)
                )));
            }
        }
    }
    let known: HashSet<&str> = graph
        .input
        .iter()
        .map(|v| v.name.as_str())
        .chain(graph.initializer.iter().map(|t| t.name.as_str()))
        .collect();
    // Iterative depth-first search: 0 = unseen, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    for root in 0..nodes.len() {
        if state[root] != 0 {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        state[root] = 1;
        while let Some(&mut (i, ref mut next)) = stack.last_mut() {
            let n = &nodes[i];
            if *next < n.input.len() {
                let name = &n.input[*next];
                *next += 1;
                if name.is_empty() {
                    continue;
                }
                match producer.get(name.as_str()) {
                    Some(&p) => match state[p] {
                        0 => {
                            state[p] = 1;
                            stack.push((p, 0));
                        }
                        1 => {
                            return Err(ImportError::model(format!(
                                "the graph has a cycle: {} needs `{name}`, which depends on \
                                 its own output",
                                node_label(i, n)
                            )));
                        }
                        _ => {}
                    },
                    None if known.contains(name.as_str()) => {}
                    None => {
                        return Err(ImportError::Node {
                            index: i,
                            name: n.name.clone(),
                            op_type: n.op_type.clone(),
                            message: format!(
                                "undefined value `{name}`: no node, input or initializer has that name"
                            ),
                        });
                    }
                }
            } else {
                state[i] = 2;
                order.push(i);
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// `node 3 \`name\` (MatMul)`, or `node 3 (MatMul)` for an unnamed node.
fn node_label(i: usize, n: &NodeProto) -> String {
    if n.name.is_empty() {
        format!("node {i} ({})", n.op_type)
    } else {
        format!("node {i} `{}` ({})", n.name, n.op_type)
    }
}

/// An ONNX value during import.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    /// A graph value and the ONNX element type it stands for.
    Node { id: ValueId, dtype: i32 },
    /// A value known at import.
    Const(Rc<Const>),
    /// A float initializer not yet used in the graph (a `param` input once it is).
    Init(String),
}

pub(crate) struct Importer<'m> {
    g: Graph,
    vals: HashMap<String, Val>,
    inits: HashMap<String, &'m TensorProto>,
    pub(crate) base: Option<&'m Path>,
    weights: BTreeMap<String, Tensor>,
    /// IR names taken by inputs and labels.
    used: HashSet<String>,
    names: Vec<Renamed>,
}

/// Reads attributes of one node.
pub(crate) struct Attrs<'n>(pub(crate) &'n NodeProto);

impl Attrs<'_> {
    pub(crate) fn get(&self, name: &str) -> Option<&crate::proto::AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }
    pub(crate) fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }
    pub(crate) fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f)
    }
    pub(crate) fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
}

/// An axis in `[-rank, rank)` made non-negative.
pub(crate) fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    if a < -r || a >= r {
        return Err(format!("axis {a} is out of range for rank {rank}"));
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

pub(crate) fn axes(list: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for &a in list {
        let k = axis(a, rank)?;
        if out.contains(&k) {
            return Err(format!("axis {a} is repeated"));
        }
        out.push(k);
    }
    Ok(out)
}

impl<'m> Importer<'m> {
    /// Records graph inputs (pinning symbolic dimensions) and initializers.
    fn declare(&mut self, graph: &'m GraphProto, opts: &ImportOptions) -> Result<(), ImportError> {
        for t in &graph.initializer {
            self.inits.insert(t.name.clone(), t);
        }
        for vi in &graph.input {
            // Older exporters list initializers among the inputs too; the
            // initializer gives the value.
            if self.inits.contains_key(&vi.name) {
                continue;
            }
            let tt = vi
                .r#type
                .as_ref()
                .and_then(|t| t.tensor_type.as_ref())
                .ok_or_else(|| {
                    ImportError::model(format!(
                        "input `{}` is not a tensor (sequences, maps and optionals are not supported)",
                        vi.name
                    ))
                })?;
            let dtype = ir_dtype(tt.elem_type)
                .map_err(|m| ImportError::model(format!("input `{}`: {m}", vi.name)))?;
            let shape = tt.shape.as_ref().ok_or_else(|| {
                ImportError::model(format!(
                    "input `{}` has no shape; birkhoff needs static shapes",
                    vi.name
                ))
            })?;
            let mut dims = Vec::new();
            for (k, d) in shape.dim.iter().enumerate() {
                match (&d.dim_value, &d.dim_param) {
                    (Some(v), _) => dims.push(*v),
                    (None, Some(p)) if !p.is_empty() => match opts.dims.get(p) {
                        Some(0) => {
                            return Err(ImportError::model(format!(
                                "input `{}`: dimension `{p}` is pinned to 0; sizes must be positive",
                                vi.name
                            )));
                        }
                        Some(&s) => dims.push(i64::try_from(s).map_err(|_| {
                            ImportError::model(format!(
                                "input `{}`: dimension `{p}` is pinned to {s}, too large",
                                vi.name
                            ))
                        })?),
                        None => {
                            return Err(ImportError::UnpinnedDim {
                                name: p.clone(),
                                input: vi.name.clone(),
                            });
                        }
                    },
                    _ => {
                        return Err(ImportError::model(format!(
                            "input `{}` has an unknown size on axis {k}; re-export with a fixed \
                             or named dimension",
                            vi.name
                        )));
                    }
                }
            }
            let shape =
                shape_of(&dims, &format!("input `{}`", vi.name)).map_err(ImportError::model)?;
            if let Some(k) = shape.iter().position(|&d| d == 0) {
                return Err(ImportError::model(format!(
                    "input `{}` has a zero-size axis {k}; birkhoff's tensors have positive sizes",
                    vi.name
                )));
            }
            let ir = self.fresh_name(&vi.name);
            let id = self
                .g
                .add_input(ir.clone(), InputKind::Data, TensorType::new(dtype, shape));
            self.names.push(Renamed {
                onnx: vi.name.clone(),
                ir,
                role: Role::Input,
            });
            self.vals.insert(
                vi.name.clone(),
                Val::Node {
                    id,
                    dtype: tt.elem_type,
                },
            );
        }
        for t in &graph.initializer {
            // Every shape checked once, here: later code trusts it.
            let shape = shape_of(&t.dims, &format!("initializer `{}`", t.name))
                .map_err(ImportError::model)?;
            let v = if is_float(t.data_type) && shape.iter().product::<usize>() > 1 {
                Val::Init(t.name.clone())
            } else {
                let values = decode(t, self.base).map_err(ImportError::model)?;
                let shape = shape_of(&t.dims, &t.name).map_err(ImportError::model)?;
                Val::Const(Rc::new(Const::new(t.data_type, shape, values.to_f64())))
            };
            self.vals.entry(t.name.clone()).or_insert(v);
        }
        Ok(())
    }

    /// An unused IR identifier for an ONNX name.
    fn fresh_name(&mut self, onnx: &str) -> String {
        let base = ir_identifier(onnx);
        let mut name = base.clone();
        let mut k = 1;
        while self.used.contains(&name) || self.g.has_label(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.used.insert(name.clone());
        name
    }

    /// Names `id` after the ONNX value it computes, where that name is free.
    fn label(&mut self, id: ValueId, onnx: &str) {
        if self.g.label(id).is_some() || self.g.inputs().contains(&id) {
            return;
        }
        let name = ir_identifier(onnx);
        if self.used.contains(&name) || name.parse::<usize>().is_ok() {
            return;
        }
        if self.g.set_label(id, name.clone()) {
            self.used.insert(name);
        }
    }

    pub(crate) fn dtype(&self, v: &Val) -> i32 {
        match v {
            Val::Node { dtype, .. } => *dtype,
            Val::Const(c) => c.dtype,
            Val::Init(n) => self.inits[n].data_type,
        }
    }

    pub(crate) fn shape(&self, v: &Val) -> Vec<usize> {
        match v {
            Val::Node { id, .. } => self.g.ty(*id).shape.clone(),
            Val::Const(c) => c.shape.clone(),
            // Checked in `declare`.
            Val::Init(n) => shape_of(&self.inits[n].dims, n).unwrap_or_default(),
        }
    }

    /// The graph value of `v`: constants become `const` nodes, unused
    /// initializers `param` inputs.
    pub(crate) fn id(&mut self, v: &Val) -> Result<ValueId, String> {
        match v {
            Val::Node { id, .. } => Ok(*id),
            Val::Const(c) => self.literal(c),
            Val::Init(name) => {
                if let Some(Val::Node { id, .. }) = self.vals.get(&format!("\0param:{name}")) {
                    return Ok(*id);
                }
                let t = self.inits[name];
                let shape = shape_of(&t.dims, &format!("initializer `{name}`"))?;
                let bytes = shape.iter().product::<usize>() as u64 * 8;
                birkhoff_io::ensure_memory(bytes, &format!("initializer `{name}`"))?;
                let values = decode(t, self.base)?;
                let tensor = crate::tensor::to_ir_tensor(values, shape)?;
                let ir = self.fresh_name(name);
                let id = self
                    .g
                    .add_input(ir.clone(), InputKind::Param, tensor.ty().clone());
                self.weights.insert(ir.clone(), tensor);
                self.names.push(Renamed {
                    onnx: name.clone(),
                    ir,
                    role: Role::Param,
                });
                self.vals.insert(
                    format!("\0param:{name}"),
                    Val::Node {
                        id,
                        dtype: t.data_type,
                    },
                );
                Ok(id)
            }
        }
    }

    /// A `const` node holding `c`.
    pub(crate) fn literal(&mut self, c: &Const) -> Result<ValueId, String> {
        let ty = c.ir_type()?;
        if ty.dtype == DType::I32
            && c.data
                .iter()
                .any(|&x| x < f64::from(i32::MIN) || x > f64::from(i32::MAX))
        {
            return Err(format!(
                "an integer constant of shape {:?} does not fit in i32, the graph's integer type",
                c.shape
            ));
        }
        let lit = match c.data.first() {
            Some(&x) if c.data.iter().all(|&y| y.to_bits() == x.to_bits()) => Literal::splat(ty, x),
            _ => Literal::dense(ty, c.data.clone()).ok_or("constant size mismatch")?,
        };
        self.add(Op::Const(lit), &[])
    }

    pub(crate) fn add(&mut self, op: Op, args: &[ValueId]) -> Result<ValueId, String> {
        self.g.add(op, args).map_err(|e| e.to_string())
    }

    /// The known value of `v`, or an error saying `what` must be constant.
    pub(crate) fn constant(&self, v: &Val, what: &str) -> Result<Rc<Const>, String> {
        match v {
            Val::Const(c) => Ok(c.clone()),
            Val::Init(n) => {
                let t = self.inits[n];
                let shape = shape_of(&t.dims, n)?;
                if shape.iter().product::<usize>() > 1 << 20 {
                    return Err(format!("{what} must be a small constant"));
                }
                Ok(Rc::new(Const::new(
                    t.data_type,
                    shape,
                    decode(t, self.base)?.to_f64(),
                )))
            }
            Val::Node { .. } => Err(format!(
                "{what} must be known when importing (a constant or computed from shapes), \
                 but it depends on a graph input"
            )),
        }
    }

    pub(crate) fn broadcast(&mut self, id: ValueId, shape: &[usize]) -> Result<ValueId, String> {
        if self.g.ty(id).shape == shape {
            return Ok(id);
        }
        self.add(
            Op::Broadcast {
                shape: shape.to_vec(),
            },
            &[id],
        )
    }

    pub(crate) fn reshape(&mut self, id: ValueId, shape: &[usize]) -> Result<ValueId, String> {
        if self.g.ty(id).shape == shape {
            return Ok(id);
        }
        self.add(
            Op::Reshape {
                shape: shape.to_vec(),
            },
            &[id],
        )
    }

    pub(crate) fn permute(&mut self, id: ValueId, perm: &[usize]) -> Result<ValueId, String> {
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(id);
        }
        self.add(
            Op::Permute {
                perm: perm.to_vec(),
            },
            &[id],
        )
    }

    /// A constant of IR type `dtype` and `shape`, every element `x`.
    pub(crate) fn splat(
        &mut self,
        dtype: DType,
        shape: &[usize],
        x: f64,
    ) -> Result<ValueId, String> {
        self.add(
            Op::Const(Literal::splat(TensorType::new(dtype, shape.to_vec()), x)),
            &[],
        )
    }

    /// `v` as a graph value of ONNX type `dtype` and broadcast to `shape`;
    /// a constant with one repeated value becomes a splat of that shape.
    pub(crate) fn operand(
        &mut self,
        v: &Val,
        dtype: i32,
        shape: &[usize],
    ) -> Result<ValueId, String> {
        if let Val::Const(c) = v
            && let Some(&x) = c.data.first()
            && c.data.iter().all(|&y| y.to_bits() == x.to_bits())
        {
            return self.splat(ir_dtype(dtype)?, shape, x);
        }
        let id = match v {
            Val::Const(c) if c.dtype != dtype => {
                let mut c = Const::clone(c);
                c.dtype = dtype;
                self.literal(&c.rounded())?
            }
            _ => self.id(v)?,
        };
        let want = ir_dtype(dtype)?;
        let id = if self.g.ty(id).dtype != want {
            self.add(Op::Cast { dtype: want }, &[id])?
        } else {
            id
        };
        self.broadcast(id, shape)
    }

    /// `op` applied elementwise to `args` after NumPy broadcasting; the
    /// operands take the element type of the first non-constant one.
    pub(crate) fn elementwise(&mut self, op: Op, args: &[Val]) -> Result<ValueId, String> {
        let mut shape = Vec::new();
        for a in args {
            shape = crate::tensor::broadcast_shapes(&shape, &self.shape(a)).ok_or_else(|| {
                format!(
                    "operand shapes {:?} do not broadcast",
                    args.iter().map(|a| self.shape(a)).collect::<Vec<_>>()
                )
            })?;
        }
        let dtype = self.common_dtype(args);
        let ids = args
            .iter()
            .map(|a| self.operand(a, dtype, &shape))
            .collect::<Result<Vec<_>, _>>()?;
        self.add(op, &ids)
    }

    /// The element type operands of one op share: that of the first
    /// graph value, else of the first operand.
    pub(crate) fn common_dtype(&self, args: &[Val]) -> i32 {
        args.iter()
            .find(|a| !matches!(a, Val::Const(_)))
            .or(args.first())
            .map_or(crate::proto::data_type::FLOAT, |a| self.dtype(a))
    }

    /// Imports one node; returns its outputs in order.
    fn node(&mut self, n: &NodeProto) -> Result<Vec<Val>, String> {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(format!(
                "unsupported op {} of domain `{}` (only the default ONNX domain is supported)",
                n.op_type, n.domain
            ));
        }
        let mut ins: Vec<Option<Val>> = Vec::with_capacity(n.input.len());
        for name in &n.input {
            ins.push(if name.is_empty() {
                None
            } else {
                Some(
                    self.vals
                        .get(name)
                        .cloned()
                        .ok_or_else(|| format!("undefined value `{name}`"))?,
                )
            });
        }
        if let Some(v) = crate::ops::leaf(self, n, &ins)? {
            return Ok(vec![v]);
        }
        crate::ops::import_node(self, n, &Attrs(n), &ins)
    }
}

impl Importer<'_> {
    /// The type of graph value `id`.
    pub(crate) fn ty(&self, id: ValueId) -> &TensorType {
        self.g.ty(id)
    }
}
