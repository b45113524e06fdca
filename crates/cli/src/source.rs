//! Resolving a command's SOURCE argument: a zoo model, an IR file or an
//! ONNX model.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use birkhoff::dsl::Init;
use birkhoff::dsl::zoo::{Inits, build_model, model_info};
use birkhoff::ir::{Graph, parse_module_with_locations, verify_located};
use birkhoff::onnx::{ImportOptions, Imported, Role};

use crate::args::{ImportFlags, ModelFlags};

/// A graph to work on, with how to draw random inputs for it.
pub struct Source {
    /// The verified graph.
    pub graph: Graph,
    /// Suggested random initialization per input: zoo models' suggestions,
    /// the weights of an ONNX model or a `--weights` file.
    pub inits: Inits,
    /// What importing an ONNX model said about its names.
    pub imported: Option<Imported>,
}

impl Source {
    /// The initialization for input `name` (standard normal if unknown).
    pub fn init(&self, name: &str) -> Init {
        self.inits.get(name).cloned().unwrap_or_default()
    }

    /// The model's own name of graph input or output `ir`, where an ONNX
    /// import renamed it.
    pub fn external_name(&self, ir: &str, role: Role) -> Option<&str> {
        self.imported
            .as_ref()?
            .onnx_name(ir, role)
            .filter(|&n| n != ir)
    }

    /// IR comments naming the ONNX model's renamed values (empty for
    /// other sources).
    pub fn header(&self) -> String {
        self.imported
            .as_ref()
            .map(Imported::header)
            .unwrap_or_default()
    }
}

/// Whether `s` names an ONNX model.
pub fn is_onnx(s: &str) -> bool {
    s.to_ascii_lowercase().ends_with(".onnx")
}

/// Imports the ONNX model at `path` with `dims` pinned.
pub fn import_onnx(path: &Path, dims: &[(String, usize)]) -> Result<Imported> {
    let opts = ImportOptions {
        dims: dims.iter().cloned().collect(),
    };
    Ok(birkhoff::onnx::import_file(path, &opts)?)
}

/// Whether `s` names an IR file rather than a zoo model.
fn is_file(s: &str) -> bool {
    s.ends_with(".bir") || s.contains('/') || Path::new(s).is_file()
}

/// Parses and verifies every graph in an IR file; errors carry
/// `FILE:LINE:COL`.
pub fn read_ir_file(path: &Path) -> Result<Vec<Graph>> {
    let text =
        birkhoff::read_text(path).with_context(|| format!("cannot read {}", path.display()))?;
    let parsed = parse_module_with_locations(&text)
        .map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))?;
    let mut graphs = Vec::new();
    for (g, map) in parsed {
        if let Err(errs) = verify_located(&g, &map) {
            // One self-contained line per error, each reading `error: FILE:LINE:COL: ...`.
            let lines: Vec<String> = errs
                .errors
                .iter()
                .map(|e| format!("{}:{e} [graph @{}]", path.display(), g.name()))
                .collect();
            bail!("{}", lines.join("\nerror: "));
        }
        graphs.push(g);
    }
    Ok(graphs)
}

/// Loads SOURCE: builds a zoo model with `flags`, reads a one-graph IR
/// file, or imports an ONNX model (model flags are then an error); then
/// takes input values from `--weights`.
pub fn load(source: &str, flags: &ModelFlags, import: &ImportFlags) -> Result<Source> {
    let mut src = load_graph(source, flags, import)?;
    if let Some(path) = &import.weights {
        let tensors = birkhoff::safetensors::read(path).map_err(anyhow::Error::msg)?;
        let g = &src.graph;
        for (name, t) in tensors {
            let Some(v) = g.input_by_name(&name) else {
                bail!(
                    "{} holds `{name}`, which is no input of graph @{}",
                    path.display(),
                    g.name()
                );
            };
            if t.ty() != g.ty(v) {
                bail!(
                    "input `{name}` is {}, but {} holds {}",
                    g.ty(v),
                    path.display(),
                    t.ty()
                );
            }
            src.inits.insert(name, Init::Values(Arc::new(t)));
        }
    }
    Ok(src)
}

fn load_graph(source: &str, flags: &ModelFlags, import: &ImportFlags) -> Result<Source> {
    let model_flag = flags.to_model_args().given().first().map(|f| f.name());
    if is_onnx(source) {
        if let Some(f) = model_flag {
            bail!("--{f} is a model flag; it does not apply to an ONNX model");
        }
        let imported = import_onnx(Path::new(source), &import.dims)?;
        let inits: Inits = imported
            .weights
            .iter()
            .map(|(name, t)| (name.clone(), Init::Values(Arc::new(t.clone()))))
            .collect::<BTreeMap<_, _>>();
        return Ok(Source {
            graph: imported.graph.clone(),
            inits,
            imported: Some(imported),
        });
    }
    if !import.dims.is_empty() {
        bail!("--dim pins a symbolic dimension of an ONNX model; {source} is not one");
    }
    if is_file(source) && model_info(source).is_err() {
        if let Some(f) = model_flag {
            bail!("--{f} is a model flag; it does not apply to an IR file");
        }
        let path = Path::new(source);
        let mut graphs = read_ir_file(path)?;
        return match graphs.len() {
            1 => Ok(Source {
                graph: graphs.remove(0),
                inits: Inits::new(),
                imported: None,
            }),
            0 => bail!("{} holds no graph", path.display()),
            n => bail!(
                "{} holds {n} graphs; this command needs exactly one",
                path.display()
            ),
        };
    }
    let model = build_model(source, &flags.to_model_args())?;
    Ok(Source {
        graph: model.graph,
        inits: model.inits,
        imported: None,
    })
}
