//! Resolving a command's SOURCE argument: a zoo model or an IR file.

use std::path::Path;

use anyhow::{Context, Result, bail};
use birkhoff::dsl::Init;
use birkhoff::dsl::zoo::{Inits, build_model, model_info};
use birkhoff::ir::{Graph, parse_module_with_locations, verify_located};

use crate::args::ModelFlags;

/// A graph to work on, with how to draw random inputs for it.
pub struct Source {
    /// The verified graph.
    pub graph: Graph,
    /// Suggested random initialization per input (zoo models only).
    pub inits: Inits,
}

impl Source {
    /// The initialization for input `name` (standard normal if unknown).
    pub fn init(&self, name: &str) -> Init {
        self.inits.get(name).cloned().unwrap_or_default()
    }
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

/// Loads SOURCE: builds a zoo model with `flags`, or reads a one-graph IR
/// file (model flags are then an error).
pub fn load(source: &str, flags: &ModelFlags) -> Result<Source> {
    if is_file(source) && model_info(source).is_err() {
        let given = flags.to_model_args().given();
        if let Some(f) = given.first() {
            bail!(
                "--{} is a model flag; it does not apply to an IR file",
                f.name()
            );
        }
        let path = Path::new(source);
        let mut graphs = read_ir_file(path)?;
        return match graphs.len() {
            1 => Ok(Source {
                graph: graphs.remove(0),
                inits: Inits::new(),
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
    })
}
