//! `birkhoff._native`: the Python extension module under the `birkhoff`
//! package (`python/birkhoff`).
//!
//! It is deliberately small: `compile` turns a source (a zoo model name,
//! IR text, a `.bir` file or an `.onnx` file) into a `Module`, whose `run`
//! and `run_into` take and return NumPy arrays by name and whose
//! `run_tensors` reads and writes torch tensors in place (checked, in
//! `torch_views`), and `plan_blocks` gives birkhoff's recompute plan. Everything
//! else array-shaped (torch conversion, bf16 rounding, positional
//! arguments, the torch custom ops and their autograd) is the Python
//! package's, where those libraries live. Nothing is copied: the CPU
//! backend reads the input arrays in place, and each output array takes
//! over the memory the program wrote.

use std::collections::BTreeMap;
use std::path::Path;

use birkhoff::cpu::{ElementsMut, ElementsRef, TensorMut, TensorRef};
use birkhoff::dsl::zoo::{LayerFn, ModelArgs, build_model, model_info};
use birkhoff::ir::{DType, Graph, InputKind, Op, SinkhornVariant, Tensor, TensorData};
use birkhoff::lower::PreMixProjection;
use birkhoff::{CompileOptions, Executable, Target, compile_with};
use half::slice::HalfBitsSliceExt;
use half::vec::HalfFloatVecExt;
use numpy::{
    PyArray1, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

mod torch_views;
use torch_views::TensorMemory;

/// A compiled graph, ready to run many times.
#[pyclass(module = "birkhoff._native", frozen)]
struct Module {
    exe: Executable,
    /// Values for inputs the caller may leave out (an ONNX model's
    /// initializers).
    defaults: BTreeMap<String, Tensor>,
}

/// One input or output as Python sees it: name, dtype name, shape.
type Signature = (String, &'static str, Vec<usize>);

#[pymethods]
impl Module {
    /// The graph's inputs in order: `(name, kind, dtype, shape,
    /// has_default)`, where kind is `"data"` or `"param"`.
    fn inputs(&self) -> Vec<(String, &'static str, &'static str, Vec<usize>, bool)> {
        let g = self.exe.graph();
        g.inputs()
            .iter()
            .filter_map(|&v| match &g.node(v).op {
                Op::Input { name, kind, ty } => Some((
                    name.clone(),
                    match kind {
                        InputKind::Data => "data",
                        InputKind::Param => "param",
                    },
                    ty.dtype.name(),
                    ty.shape.clone(),
                    self.defaults.contains_key(name),
                )),
                _ => None,
            })
            .collect()
    }

    /// The graph's outputs in order: `(name, dtype, shape)`.
    fn outputs(&self) -> Vec<Signature> {
        let g = self.exe.graph();
        g.outputs()
            .iter()
            .map(|o| {
                let ty = g.ty(o.value);
                (o.name.clone(), ty.dtype.name(), ty.shape.clone())
            })
            .collect()
    }

    /// Runs the graph. `inputs` are `(name, array)` pairs, each a
    /// C-contiguous NumPy array of the input's declared dtype (bf16 as
    /// `uint16` bit patterns), read in place. Returns `(name, dtype,
    /// array)` per output, each array owning the memory the program wrote
    /// (bf16 again as `uint16`). The interpreter lock is released while
    /// the compiled code runs; the caller must not change the inputs
    /// meanwhile.
    fn run<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<(String, Bound<'py, PyAny>)>,
    ) -> PyResult<Vec<(String, &'static str, Bound<'py, PyAny>)>> {
        let held = self.hold_inputs(inputs)?;
        let refs = self.input_refs(&held)?;
        let outputs = py
            .detach(|| self.exe.run_borrowed(&refs))
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        drop(refs);
        drop(held);
        outputs
            .into_iter()
            .map(|(name, t)| {
                let dtype = t.dtype().name();
                let shape = t.shape().to_vec();
                Ok((name, dtype, owned_array(py, t.into_data(), shape)?))
            })
            .collect()
    }

    /// Like `run`, writing the outputs into `outputs`: one writable
    /// C-contiguous NumPy array per output, in order, of the output's
    /// dtype and shape (bf16 as `uint16`). Every element is written.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "Python arguments are extracted as owned values"
    )]
    fn run_into<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<(String, Bound<'py, PyAny>)>,
        outputs: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<()> {
        let held = self.hold_inputs(inputs)?;
        let refs = self.input_refs(&held)?;
        let g = self.exe.graph();
        if outputs.len() != g.outputs().len() {
            return Err(PyValueError::new_err(format!(
                "graph @{} has {} outputs, {} arrays were given",
                g.name(),
                g.outputs().len(),
                outputs.len()
            )));
        }
        let mut held_out = Vec::with_capacity(outputs.len());
        for (o, obj) in g.outputs().iter().zip(&outputs) {
            let ty = g.ty(o.value);
            let array = HeldMut::extract(obj, ty.dtype).map_err(|e| {
                PyValueError::new_err(format!("output {:?}: {e} (declared {ty})", o.name))
            })?;
            held_out.push((o.name.as_str(), array));
        }
        let mut muts = held_out
            .iter_mut()
            .zip(g.outputs())
            .map(|((name, a), o)| {
                a.tensor_mut(&g.ty(o.value).shape)
                    .map_err(|e| PyValueError::new_err(format!("output {name:?}: {e}")))
            })
            .collect::<PyResult<Vec<_>>>()?;
        py.detach(|| self.exe.run_borrowed_into(&refs, &mut muts))
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Runs the graph on torch tensors' memory in place: `inputs` are the
    /// graph's inputs in order, `outputs` its outputs in order, each a
    /// contiguous CPU `torch.Tensor` (or `nn.Parameter`) of the declared
    /// dtype and shape; every output element is written. Returns `None`
    /// on success, or, without running, why the tensors cannot be used in
    /// place (the caller can then go through `run_into` with copies). The
    /// interpreter lock is released while the compiled code runs; the
    /// caller must keep the tensors unchanged meanwhile.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "Python arguments are extracted as owned values"
    )]
    fn run_tensors<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<Bound<'py, PyAny>>,
        outputs: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<Option<String>> {
        let g = self.exe.graph();
        if inputs.len() != g.inputs().len() || outputs.len() != g.outputs().len() {
            return Ok(Some(format!(
                "graph @{} takes {} inputs and {} outputs, {} and {} were given",
                g.name(),
                g.inputs().len(),
                g.outputs().len(),
                inputs.len(),
                outputs.len()
            )));
        }
        let mut ins = Vec::with_capacity(inputs.len());
        for (k, (obj, &v)) in inputs.iter().zip(g.inputs()).enumerate() {
            match TensorMemory::of(obj, g.ty(v))? {
                Ok(m) => ins.push(m),
                Err(why) => return Ok(Some(format!("input {k}: {why}"))),
            }
        }
        let mut outs = Vec::with_capacity(outputs.len());
        for (k, (obj, o)) in outputs.iter().zip(g.outputs()).enumerate() {
            match TensorMemory::of(obj, g.ty(o.value))? {
                Ok(m) => outs.push(m),
                Err(why) => return Ok(Some(format!("output {k}: {why}"))),
            }
        }
        if let Err(why) = torch_views::check_disjoint(&ins, &outs) {
            return Ok(Some(why));
        }
        let refs: BTreeMap<String, TensorRef<'_>> = ins
            .iter()
            .zip(g.inputs())
            .filter_map(|(m, &v)| {
                let name = g.input_name(v)?;
                let shape = &g.ty(v).shape;
                Some((
                    name.to_string(),
                    TensorRef {
                        shape,
                        elements: m.elements(),
                    },
                ))
            })
            .collect();
        let mut muts: Vec<TensorMut<'_>> = outs
            .iter_mut()
            .zip(g.outputs())
            .map(|(m, o)| TensorMut {
                shape: &g.ty(o.value).shape,
                elements: m.elements_mut(),
            })
            .collect();
        // `inputs` and `outputs` hold the tensors, and so their storage,
        // until the views are gone.
        py.detach(|| self.exe.run_borrowed_into(&refs, &mut muts))
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(None)
    }

    /// The graph that runs, after the optimizer, as IR text.
    fn ir(&self) -> String {
        self.exe.graph().to_string()
    }

    /// The lowered kernel program as text (CPU and GPU targets).
    fn kernel_ir(&self) -> Option<String> {
        self.exe.program().map(|p| p.to_string())
    }

    /// What the optimizer fused, as text (`None` without the optimizer).
    fn fusion_report(&self) -> Option<String> {
        self.exe.fusion_report().map(|r| r.to_string())
    }

    /// Seconds the compilation took.
    fn compile_seconds(&self) -> f64 {
        self.exe.compile_time().as_secs_f64()
    }
}

impl Module {
    /// Each input array, borrowed read-only, after checking its name and
    /// dtype against the graph.
    fn hold_inputs<'py>(
        &self,
        inputs: Vec<(String, Bound<'py, PyAny>)>,
    ) -> PyResult<Vec<(String, Held<'py>)>> {
        let g = self.exe.graph();
        let mut held = Vec::with_capacity(inputs.len());
        for (name, obj) in inputs {
            let Some(v) = g.input_by_name(&name) else {
                return Err(PyKeyError::new_err(format!(
                    "{name:?} is not an input of graph @{}; its inputs are {}",
                    g.name(),
                    input_names(g)
                )));
            };
            let ty = g.ty(v);
            let array = Held::extract(&obj, ty.dtype).map_err(|e| {
                PyValueError::new_err(format!("input {name:?}: {e} (declared {ty})"))
            })?;
            held.push((name, array));
        }
        Ok(held)
    }

    /// The held inputs and the defaults for the rest, as the runtime reads
    /// them; fails if an input is given twice or missing.
    fn input_refs<'a>(
        &'a self,
        held: &'a [(String, Held<'_>)],
    ) -> PyResult<BTreeMap<String, TensorRef<'a>>> {
        let g = self.exe.graph();
        let mut refs = BTreeMap::new();
        for (name, array) in held {
            let r = array
                .tensor_ref()
                .map_err(|e| PyValueError::new_err(format!("input {name:?}: {e}")))?;
            if refs.insert(name.clone(), r).is_some() {
                return Err(PyValueError::new_err(format!(
                    "input {name:?} is given twice"
                )));
            }
        }
        for (name, t) in &self.defaults {
            refs.entry(name.clone()).or_insert_with(|| tensor_ref(t));
        }
        let missing: Vec<&str> = g
            .inputs()
            .iter()
            .filter_map(|&v| g.input_name(v))
            .filter(|n| !refs.contains_key(*n))
            .collect();
        if !missing.is_empty() {
            return Err(PyValueError::new_err(format!(
                "graph @{} needs inputs it was not given: {}",
                g.name(),
                missing.join(", ")
            )));
        }
        Ok(refs)
    }
}

fn input_names(g: &Graph) -> String {
    let names: Vec<&str> = g.inputs().iter().filter_map(|&v| g.input_name(v)).collect();
    names.join(", ")
}

/// An input array, borrowed read-only for one run.
enum Held<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
    Bf16(PyReadonlyArrayDyn<'py, u16>),
    I32(PyReadonlyArrayDyn<'py, i32>),
    Bool(PyReadonlyArrayDyn<'py, bool>),
}

impl<'py> Held<'py> {
    fn extract(obj: &Bound<'py, PyAny>, dtype: DType) -> Result<Held<'py>, String> {
        let held = match dtype {
            DType::F32 => obj.extract().map(Held::F32),
            DType::F64 => obj.extract().map(Held::F64),
            DType::Bf16 => obj.extract().map(Held::Bf16),
            DType::I32 => obj.extract().map(Held::I32),
            DType::Bool => obj.extract().map(Held::Bool),
        };
        held.map_err(|_| format!("expected a NumPy array of {}", array_dtype_name(dtype)))
    }

    /// The array as the runtime reads it; fails unless C-contiguous.
    fn tensor_ref(&self) -> Result<TensorRef<'_>, String> {
        let contiguous = |e| format!("the array is not C-contiguous ({e})");
        let (shape, elements) = match self {
            Held::F32(a) => (
                a.shape(),
                ElementsRef::F32(a.as_slice().map_err(contiguous)?),
            ),
            Held::F64(a) => (
                a.shape(),
                ElementsRef::F64(a.as_slice().map_err(contiguous)?),
            ),
            Held::Bf16(a) => (
                a.shape(),
                ElementsRef::Bf16(a.as_slice().map_err(contiguous)?.reinterpret_cast()),
            ),
            Held::I32(a) => (
                a.shape(),
                ElementsRef::I32(a.as_slice().map_err(contiguous)?),
            ),
            Held::Bool(a) => (
                a.shape(),
                ElementsRef::Bool(a.as_slice().map_err(contiguous)?),
            ),
        };
        Ok(TensorRef { shape, elements })
    }
}

/// The NumPy dtype that carries `dtype`.
fn array_dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float32",
        DType::F64 => "float64",
        DType::Bf16 => "uint16 (bf16 bit patterns)",
        DType::I32 => "int32",
        DType::Bool => "bool",
    }
}

/// An output array, borrowed writable for one run.
enum HeldMut<'py> {
    F32(PyReadwriteArrayDyn<'py, f32>),
    F64(PyReadwriteArrayDyn<'py, f64>),
    Bf16(PyReadwriteArrayDyn<'py, u16>),
    I32(PyReadwriteArrayDyn<'py, i32>),
    Bool(PyReadwriteArrayDyn<'py, bool>),
}

impl<'py> HeldMut<'py> {
    fn extract(obj: &Bound<'py, PyAny>, dtype: DType) -> Result<HeldMut<'py>, String> {
        let held = match dtype {
            DType::F32 => obj.extract().map(HeldMut::F32),
            DType::F64 => obj.extract().map(HeldMut::F64),
            DType::Bf16 => obj.extract().map(HeldMut::Bf16),
            DType::I32 => obj.extract().map(HeldMut::I32),
            DType::Bool => obj.extract().map(HeldMut::Bool),
        };
        held.map_err(|_| {
            format!(
                "expected a writable NumPy array of {}",
                array_dtype_name(dtype)
            )
        })
    }

    /// The array as the runtime writes it, as an output of `shape`;
    /// fails unless it has that shape and is C-contiguous.
    fn tensor_mut<'s>(&'s mut self, shape: &'s [usize]) -> Result<TensorMut<'s>, String> {
        let got = match self {
            HeldMut::F32(a) => a.shape().to_vec(),
            HeldMut::F64(a) => a.shape().to_vec(),
            HeldMut::Bf16(a) => a.shape().to_vec(),
            HeldMut::I32(a) => a.shape().to_vec(),
            HeldMut::Bool(a) => a.shape().to_vec(),
        };
        if got != shape {
            return Err(format!("expected shape {shape:?}, got {got:?}"));
        }
        let contiguous = |e| format!("the array is not C-contiguous ({e})");
        let elements = match self {
            HeldMut::F32(a) => ElementsMut::F32(a.as_slice_mut().map_err(contiguous)?),
            HeldMut::F64(a) => ElementsMut::F64(a.as_slice_mut().map_err(contiguous)?),
            HeldMut::Bf16(a) => {
                ElementsMut::Bf16(a.as_slice_mut().map_err(contiguous)?.reinterpret_cast_mut())
            }
            HeldMut::I32(a) => ElementsMut::I32(a.as_slice_mut().map_err(contiguous)?),
            HeldMut::Bool(a) => ElementsMut::Bool(a.as_slice_mut().map_err(contiguous)?),
        };
        Ok(TensorMut { shape, elements })
    }
}

/// An owned tensor, borrowed.
fn tensor_ref(t: &Tensor) -> TensorRef<'_> {
    TensorRef {
        shape: t.shape(),
        elements: ElementsRef::from(t.data()),
    }
}

/// A NumPy array of `shape` that takes over `data`'s memory (no copy).
fn owned_array<'py>(
    py: Python<'py>,
    data: TensorData,
    shape: Vec<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match data {
        TensorData::F32(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
        TensorData::F64(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
        TensorData::Bf16(v) => PyArray1::from_vec(py, v.reinterpret_into())
            .reshape(shape)?
            .into_any(),
        TensorData::I32(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
        TensorData::Bool(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
    })
}

/// Compiles `source` for `backend` (`"cpu"`, `"gpu"` or `"interp"`).
///
/// `source` is a zoo model name, a path to a `.bir` or `.onnx` file, or IR
/// text holding one graph. `flags` are the zoo's model flags (`tokens`,
/// `hidden`, `sinkhorn`, …, as the command line spells them with `_` for
/// `-`) for a zoo model, and `threads` / `projection` for the compiler.
#[pyfunction]
#[pyo3(signature = (source, backend = "cpu", optimize = true, flags = None))]
fn compile(
    py: Python<'_>,
    source: &str,
    backend: &str,
    optimize: bool,
    flags: Option<&Bound<'_, PyDict>>,
) -> PyResult<Module> {
    let target = match backend {
        "cpu" => Target::Cpu,
        "gpu" => Target::Gpu,
        "interp" => Target::Interp,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown backend {other:?}: expected \"cpu\", \"gpu\" or \"interp\""
            )));
        }
    };
    let mut flags = Flags::from_dict(flags)?;
    let mut opts = CompileOptions {
        target,
        optimize,
        ..CompileOptions::default()
    };
    opts.threads = flags.take_usize("threads")?;
    if let Some(p) = flags.take_str("projection")? {
        opts.projection = Some(match p.as_str() {
            "gemm" => PreMixProjection::Gemm,
            "in-kernel" | "in_kernel" => PreMixProjection::InKernel,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown projection {other:?}: expected \"gemm\" or \"in-kernel\""
                )));
            }
        });
    }
    let (graph, defaults) = load(source, &mut flags)?;
    flags.finish()?;
    let exe = py
        .detach(|| compile_with(&graph, &opts))
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    Ok(Module { exe, defaults })
}

/// The graph `source` names and its default input values.
fn load(source: &str, flags: &mut Flags) -> PyResult<(Graph, BTreeMap<String, Tensor>)> {
    let trimmed = source.trim_start();
    if trimmed.starts_with("graph") || trimmed.starts_with(';') || source.contains('\n') {
        flags.no_model_flags("IR text")?;
        let mut graphs = birkhoff::ir::parse_and_verify(source)
            .map_err(|e| PyValueError::new_err(format!("IR text: {e}")))?;
        return match graphs.len() {
            1 => Ok((graphs.remove(0), BTreeMap::new())),
            n => Err(PyValueError::new_err(format!(
                "IR text holds {n} graphs; compile takes exactly one"
            ))),
        };
    }
    let path = Path::new(source);
    if source.ends_with(".onnx") {
        flags.no_model_flags("an ONNX model")?;
        let imported = birkhoff::onnx::import_file(path, &birkhoff::onnx::ImportOptions::default())
            .map_err(|e| PyValueError::new_err(format!("{source}: {e}")))?;
        return Ok((imported.graph, imported.weights));
    }
    if model_info(source).is_ok() {
        let args = flags.model_args()?;
        let model = build_model(source, &args).map_err(|e| PyValueError::new_err(e.to_string()))?;
        return Ok((model.graph, BTreeMap::new()));
    }
    if source.ends_with(".bir") || path.is_file() {
        flags.no_model_flags("an IR file")?;
        let text = birkhoff::read_text(path)
            .map_err(|e| PyValueError::new_err(format!("cannot read {source}: {e}")))?;
        let mut graphs = birkhoff::ir::parse_and_verify(&text)
            .map_err(|e| PyValueError::new_err(format!("{source}:{e}")))?;
        return match graphs.len() {
            1 => Ok((graphs.remove(0), BTreeMap::new())),
            n => Err(PyValueError::new_err(format!(
                "{source} holds {n} graphs; compile takes exactly one"
            ))),
        };
    }
    let names: Vec<&str> = birkhoff::dsl::zoo::models()
        .iter()
        .map(|m| m.name)
        .collect();
    Err(PyValueError::new_err(format!(
        "{source:?} is neither a zoo model ({}), IR text, nor an existing .bir or .onnx file",
        names.join(", ")
    )))
}

/// A keyword flag's value.
#[derive(Clone, Debug)]
enum FlagValue {
    Int(i64),
    Float(f64),
    Str(String),
}

impl std::fmt::Display for FlagValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlagValue::Int(i) => write!(f, "{i}"),
            FlagValue::Float(x) => write!(f, "{x}"),
            FlagValue::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// Keyword flags not yet consumed, by name (`-` spelled `_`).
struct Flags(BTreeMap<String, FlagValue>);

impl Flags {
    fn from_dict(d: Option<&Bound<'_, PyDict>>) -> PyResult<Flags> {
        let mut map = BTreeMap::new();
        for (k, v) in d.into_iter().flat_map(|d| d.iter()) {
            let key: String = k.extract()?;
            // bool is an int in Python; no flag takes one.
            let value = if let Ok(i) = v.extract::<i64>() {
                FlagValue::Int(i)
            } else if let Ok(x) = v.extract::<f64>() {
                FlagValue::Float(x)
            } else if let Ok(s) = v.extract::<String>() {
                FlagValue::Str(s)
            } else {
                return Err(PyValueError::new_err(format!(
                    "flag {key}: expected an int, a float or a str"
                )));
            };
            map.insert(key.replace('-', "_"), value);
        }
        Ok(Flags(map))
    }

    fn take_usize(&mut self, name: &str) -> PyResult<Option<usize>> {
        match self.0.remove(name) {
            None => Ok(None),
            Some(FlagValue::Int(i)) if i >= 0 => Ok(Some(i as usize)),
            Some(v) => Err(PyValueError::new_err(format!(
                "flag {name}: expected a non-negative int, got {v}"
            ))),
        }
    }

    fn take_f64(&mut self, name: &str) -> PyResult<Option<f64>> {
        match self.0.remove(name) {
            None => Ok(None),
            Some(FlagValue::Int(i)) => Ok(Some(i as f64)),
            Some(FlagValue::Float(x)) => Ok(Some(x)),
            Some(v) => Err(PyValueError::new_err(format!(
                "flag {name}: expected a number, got {v}"
            ))),
        }
    }

    fn take_str(&mut self, name: &str) -> PyResult<Option<String>> {
        match self.0.remove(name) {
            None => Ok(None),
            Some(FlagValue::Str(s)) => Ok(Some(s)),
            Some(v) => Err(PyValueError::new_err(format!(
                "flag {name}: expected a str, got {v}"
            ))),
        }
    }

    fn take_parsed<T: std::str::FromStr>(&mut self, name: &str) -> PyResult<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        self.take_str(name)?
            .map(|s| {
                s.parse()
                    .map_err(|e| PyValueError::new_err(format!("flag {name}: {e}")))
            })
            .transpose()
    }

    /// The zoo's model flags, consumed.
    fn model_args(&mut self) -> PyResult<ModelArgs> {
        let dtype = match self.take_str("dtype")? {
            None => None,
            Some(name) => Some(DType::from_name(&name).ok_or_else(|| {
                PyValueError::new_err(format!("flag dtype: {name:?} is not f32, bf16 or f64"))
            })?),
        };
        Ok(ModelArgs {
            tokens: self.take_usize("tokens")?,
            streams: self.take_usize("streams")?,
            hidden: self.take_usize("hidden")?,
            heads: self.take_usize("heads")?,
            ffn: self.take_usize("ffn")?,
            layers: self.take_usize("layers")?,
            sinkhorn: self.take_parsed::<SinkhornVariant>("sinkhorn")?,
            iters: self.take_usize("iters")?,
            eps: self.take_f64("eps")?,
            norm_eps: self.take_f64("norm_eps")?,
            pre_eps: self.take_f64("pre_eps")?,
            post_mult: self.take_f64("post_mult")?,
            layer_fn: self.take_parsed::<LayerFn>("layer_fn")?,
            dtype,
        })
    }

    /// Fails if any model flag is given for a source that takes none.
    fn no_model_flags(&mut self, what: &str) -> PyResult<()> {
        let before = self.0.len();
        let args = self.model_args()?;
        if let Some(f) = args.given().first() {
            return Err(PyValueError::new_err(format!(
                "{} is a model flag; it does not apply to {what}",
                f.name()
            )));
        }
        debug_assert_eq!(before, self.0.len());
        Ok(())
    }

    /// Fails on flags nobody consumed.
    fn finish(self) -> PyResult<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.0.keys().map(String::as_str).collect();
        Err(PyValueError::new_err(format!(
            "unknown flag(s): {}",
            names.join(", ")
        )))
    }
}

/// birkhoff's recomputation plan for a stack of `layers` mHC layers (what
/// `birkhoff plan` prints): the block size and the blocks as `(start, end)`
/// layer ranges, each block keeping only the stream at its start, with the
/// predicted resident, transient and peak activation bytes. `budget` is in
/// bytes; `boundaries` are layers where a block must start (pipeline
/// stages).
#[pyfunction]
#[expect(
    clippy::too_many_arguments,
    clippy::needless_pass_by_value,
    reason = "a Python function's keyword arguments, extracted as owned values"
)]
#[pyo3(signature = (layers, streams, hidden, tokens, bytes_per_element = 4, budget = None, boundaries = None))]
fn plan_blocks<'py>(
    py: Python<'py>,
    layers: usize,
    streams: usize,
    hidden: usize,
    tokens: usize,
    bytes_per_element: usize,
    budget: Option<u64>,
    boundaries: Option<Vec<usize>>,
) -> PyResult<Bound<'py, PyDict>> {
    let stack = birkhoff::recompute::MhcStack {
        layers,
        streams,
        hidden,
        tokens,
        bytes_per_element,
    };
    let plan = stack
        .plan(budget, boundaries.as_deref())
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let d = PyDict::new(py);
    d.set_item("block", plan.block)?;
    let blocks: Vec<(usize, usize)> = plan.blocks.iter().map(|r| (r.start, r.end)).collect();
    d.set_item("blocks", blocks)?;
    d.set_item("resident_bytes", plan.estimate.resident_bytes)?;
    d.set_item("transient_bytes", plan.estimate.transient_bytes)?;
    d.set_item("peak_bytes", plan.estimate.peak_bytes)?;
    Ok(d)
}

/// The `birkhoff._native` extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(plan_blocks, m)?)?;
    m.add_class::<Module>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
