//! `birkhoff run`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use birkhoff::dsl::{Rng, random_tensor};
use birkhoff::ir::{Graph, InterpOptions, Precision, Tensor, interpret_with_progress, node_cost};
use birkhoff::npy::{read_npy, write_npy};
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{Backend, PrecisionArg, RunArgs};
use crate::source::{self, Source};
use birkhoff::{CompileOptions, Target, compile_with};

/// Work (in interpreter cost units) above which a progress bar is shown.
const PROGRESS_THRESHOLD: u64 = 200_000_000;

/// Gathers one tensor per graph input: from `DIR/NAME.npy` when present,
/// else drawn from `seed`; rejects mismatched types and, unless allowed,
/// NaN or infinite values.
pub fn load_inputs(
    src: &Source,
    dir: Option<&Path>,
    seed: Option<u64>,
    allow_nonfinite: bool,
) -> Result<BTreeMap<String, Tensor>> {
    let g = &src.graph;
    if let Some(d) = dir {
        if !d.is_dir() {
            bail!("input directory {} does not exist", d.display());
        }
        warn_about_stray_files(g, d);
    } else if seed.is_none() && !g.inputs().is_empty() {
        bail!(
            "graph @{} needs inputs: pass --inputs DIR (one NAME.npy per input) or --seed S for random values",
            g.name()
        );
    }
    let root = Rng::new(seed.unwrap_or(0));
    let mut inputs = BTreeMap::new();
    for &v in g.inputs() {
        let name = g.input_name(v).unwrap_or_default();
        let ty = g.ty(v);
        let file = dir.map(|d| d.join(format!("{name}.npy")));
        let t = match (&file, seed) {
            (Some(f), _) if f.exists() => {
                let t = read_npy(f)?;
                if t.ty() != ty {
                    bail!(
                        "input '{name}' must be {ty}, but {} holds {}",
                        f.display(),
                        t.ty()
                    );
                }
                t
            }
            (_, Some(_)) => random_tensor(ty, &src.init(name), &mut root.fork(name)),
            (Some(f), None) => bail!(
                "missing input file {} for input '{name}' ({ty}); pass --seed S to draw random values for missing inputs",
                f.display()
            ),
            (None, None) => unreachable!("checked above"),
        };
        if let Some((i, x)) = t.first_non_finite().filter(|_| !allow_nonfinite) {
            bail!(
                "input '{name}' holds {x} at flat index {i}; pass --allow-nonfinite to run it anyway"
            );
        }
        inputs.insert(name.to_string(), t);
    }
    Ok(inputs)
}

fn warn_about_stray_files(g: &Graph, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "npy") {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            if g.input_by_name(stem).is_none() {
                eprintln!(
                    "note: ignoring {} (graph @{} has no input '{stem}')",
                    p.display(),
                    g.name()
                );
            }
        }
    }
}

/// Runs the interpreter with a progress bar on long graphs.
pub fn interpret(
    g: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    precision: Precision,
) -> Result<Vec<(String, Tensor)>> {
    let total: u64 = g.values().map(|v| node_cost(g, v)).sum();
    let bar = if total > PROGRESS_THRESHOLD {
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{spinner} interpreting @{msg} [{bar:30}] {percent}% ({eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(g.name().to_string());
        bar
    } else {
        ProgressBar::hidden()
    };
    let opts = InterpOptions {
        precision,
        ..InterpOptions::default()
    };
    let out = interpret_with_progress(g, inputs, &opts, &mut |done, _| bar.set_position(done));
    bar.finish_and_clear();
    Ok(out?)
}

/// `mean min max` of a tensor's elements.
pub fn stats(t: &Tensor) -> String {
    let v = t.to_f64_vec();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("mean {mean:>10.4e}  min {min:>10.4e}  max {max:>10.4e}")
}

pub fn main(a: &RunArgs) -> Result<ExitCode> {
    let mut src = source::load(&a.source, &a.model)?;
    let inputs = load_inputs(&src, a.inputs.as_deref(), a.seed, a.allow_nonfinite)?;
    if a.optimize {
        let out = birkhoff::opt::optimize(&src.graph, |_| false)?;
        let sites: Vec<String> = out
            .report
            .sites
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        println!(
            "optimized @{}: {} -> {} ops ({})",
            src.graph.name(),
            out.report.ops_before,
            out.report.ops_after,
            if sites.is_empty() {
                "nothing fused".to_string()
            } else {
                sites.join(", ")
            }
        );
        src.graph = out.graph;
    }
    let precision = match a.precision {
        PrecisionArg::F64 => Precision::F64,
        PrecisionArg::F32 => Precision::F32,
    };
    let start = Instant::now();
    let (outputs, engine) = match a.backend {
        Backend::Interp => (
            interpret(&src.graph, &inputs, precision)?,
            format!("the reference interpreter ({precision:?})"),
        ),
        Backend::Cpu => {
            // The CPU path compiles the graph as given (already optimized above with --optimize).
            let opts = CompileOptions {
                target: Target::Cpu,
                optimize: false,
                ..CompileOptions::default()
            };
            let exe = compile_with(&src.graph, &opts)?;
            (
                exe.run(&inputs)?,
                format!(
                    "the CPU backend (compiled in {:.1} ms)",
                    exe.compile_time().as_secs_f64() * 1e3
                ),
            )
        }
    };
    let elapsed = start.elapsed();
    if let Some(dir) = &a.outputs {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    }
    println!(
        "ran @{} ({} nodes) on {engine} in {:.1} ms",
        src.graph.name(),
        src.graph.len(),
        elapsed.as_secs_f64() * 1e3
    );
    for (name, t) in &outputs {
        let dest = match &a.outputs {
            Some(dir) => {
                let path = dir.join(format!("{name}.npy"));
                write_npy(&path, t)?;
                format!("  -> {}", path.display())
            }
            None => String::new(),
        };
        println!("  {name:<14} {:<16} {}{dest}", t.ty().to_string(), stats(t));
    }
    Ok(ExitCode::SUCCESS)
}
