//! `birkhoff run`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use birkhoff::dsl::{Init, Rng, random_tensor};
use birkhoff::gpu::{GpuDevice, GpuExecutable, GpuModule};
use birkhoff::ir::{
    Graph, InterpOptions, Precision, Tensor, TensorData, TensorType, interpret_with_progress,
    node_cost,
};
use birkhoff::npy::{read_npy, stage_npy};
use birkhoff::onnx::Role;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{PrecisionArg, RunArgs, TargetArg};
use crate::source::{self, Source};
use birkhoff::{CompileOptions, compile_with};

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
    let specs: Vec<(String, TensorType)> = g
        .inputs()
        .iter()
        .map(|&v| {
            (
                g.input_name(v).unwrap_or_default().to_string(),
                g.ty(v).clone(),
            )
        })
        .collect();
    gather_inputs(
        &format!("graph @{}", g.name()),
        &specs,
        |name| src.init(name),
        &|name| file_stem(src.external_name(name, Role::Input), name),
        dir,
        seed,
        allow_nonfinite,
    )
}

/// The file name (without `.npy`) of an input or output: its ONNX name
/// where it has one that can be a file name, else its graph name.
fn file_stem(external: Option<&str>, name: &str) -> String {
    match external {
        Some(e)
            if !e.is_empty()
                && e.len() <= 200
                && e != "."
                && e != ".."
                && !e.contains(['/', '\\', '\0']) =>
        {
            e.to_string()
        }
        _ => name.to_string(),
    }
}

/// [`load_inputs`] for any list of named, typed inputs (`what` names
/// their owner in messages); `init` suggests a distribution per name and
/// `stem` gives the file name each is read from in `dir`.
pub fn gather_inputs(
    what: &str,
    specs: &[(String, TensorType)],
    init: impl Fn(&str) -> Init,
    stem: &dyn Fn(&str) -> String,
    dir: Option<&Path>,
    seed: Option<u64>,
    allow_nonfinite: bool,
) -> Result<BTreeMap<String, Tensor>> {
    // Every input is held in memory (random ones drawn through f64):
    // sizes that cannot fit are an error now, not an aborted allocation.
    let input_bytes = specs
        .iter()
        .map(|(_, t)| t.num_elements() as u64 * 8)
        .fold(0u64, u64::saturating_add);
    birkhoff::ensure_memory(input_bytes, &format!("the inputs of {what}"))
        .map_err(anyhow::Error::msg)?;
    if let Some(d) = dir {
        if d.exists() && !d.is_dir() {
            bail!(
                "--inputs {} is a file, not a directory: pass the directory that holds NAME.npy per input",
                d.display()
            );
        }
        if !d.is_dir() {
            bail!("input directory {} does not exist", d.display());
        }
        warn_about_stray_files(what, specs, stem, d);
    } else if seed.is_none()
        && specs
            .iter()
            .any(|(n, t)| !matches!(init(n), Init::Values(v) if v.ty() == t))
    {
        bail!(
            "{what} needs inputs: pass --inputs DIR (one NAME.npy per input) or --seed S for random values"
        );
    }
    let root = Rng::new(seed.unwrap_or(0));
    let mut inputs = BTreeMap::new();
    for (name, ty) in specs {
        let file = dir.map(|d| d.join(format!("{}.npy", stem(name))));
        let given = init(name);
        let t = match (&file, seed) {
            (Some(f), _) if f.exists() => {
                let t = read_npy(f).map_err(|e| {
                    let hint = if ty.dtype == birkhoff::ir::DType::I32
                        && e.to_string().contains("'<i8'")
                    {
                        " (integer inputs are i32: save them with .astype(np.int32))"
                    } else {
                        ""
                    };
                    anyhow::anyhow!("{e}{hint}")
                })?;
                if t.ty() != ty {
                    bail!(
                        "input '{name}' must be {ty}, but {} holds {}",
                        f.display(),
                        t.ty()
                    );
                }
                t
            }
            // A model's own values (an ONNX initializer, --weights) need no seed.
            (_, _) if matches!(&given, Init::Values(t) if t.ty() == ty) => {
                random_tensor(ty, &given, &mut root.fork(name))
            }
            (_, Some(_)) => random_tensor(ty, &given, &mut root.fork(name)),
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
        inputs.insert(name.clone(), t);
    }
    Ok(inputs)
}

fn warn_about_stray_files(
    what: &str,
    specs: &[(String, TensorType)],
    stem_of: &dyn Fn(&str) -> String,
    dir: &Path,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "npy") {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            if !specs.iter().any(|(n, _)| stem_of(n) == stem) {
                eprintln!(
                    "note: ignoring {} ({what} has no input '{stem}')",
                    p.display()
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
    // One pass over the elements as they are stored: an output as large
    // as memory allows is not copied again to f64.
    fn fold(values: impl Iterator<Item = f64>) -> (f64, f64, f64, usize) {
        values.fold(
            (0.0, f64::INFINITY, f64::NEG_INFINITY, 0),
            |(sum, min, max, n), v| (sum + v, min.min(v), max.max(v), n + 1),
        )
    }
    let (sum, min, max, n) = match t.data() {
        TensorData::F32(v) => fold(v.iter().map(|&x| f64::from(x))),
        TensorData::Bf16(v) => fold(v.iter().map(|&x| x.to_f64())),
        TensorData::F64(v) => fold(v.iter().copied()),
        TensorData::I32(v) => fold(v.iter().map(|&x| f64::from(x))),
        TensorData::Bool(v) => fold(v.iter().map(|&x| f64::from(u8::from(x)))),
    };
    let mean = sum / n as f64;
    format!("mean {mean:>10.4e}  min {min:>10.4e}  max {max:>10.4e}")
}

pub fn main(a: &RunArgs) -> Result<ExitCode> {
    if let Some(path) = &a.artifact {
        return run_artifact(a, path);
    }
    let Some(source) = &a.source else {
        bail!("pass a model name, an IR file or --artifact FILE");
    };
    let target = a.target.unwrap_or(TargetArg::Interp);
    // A flag that does nothing for the chosen target is a mistake to say,
    // not to ignore.
    if a.precision.is_some() && target != TargetArg::Interp {
        bail!(
            "--precision sets the interpreter's arithmetic (--target interp); a compiled program computes in the graph's dtypes"
        );
    }
    if a.device.is_some() && target != TargetArg::Gpu {
        bail!(
            "--device picks a GPU (--target gpu or --artifact); it means nothing for the interpreter or the CPU"
        );
    }
    let mut src = source::load(source, &a.model, &a.import)?;
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
    let precision = match a.precision.unwrap_or(PrecisionArg::F64) {
        PrecisionArg::F64 => Precision::F64,
        PrecisionArg::F32 => Precision::F32,
    };
    let start = Instant::now();
    let (outputs, engine) = match target {
        TargetArg::Interp => (
            interpret(&src.graph, &inputs, precision)?,
            format!("the reference interpreter ({precision:?})"),
        ),
        TargetArg::Cpu | TargetArg::Gpu => {
            // Compiles the graph as given (already optimized above with --optimize).
            let opts = CompileOptions {
                target: target.into(),
                optimize: false,
                device: a.device.unwrap_or(0),
                ..CompileOptions::default()
            };
            let exe = compile_with(&src.graph, &opts)?;
            let engine = match exe.gpu() {
                Some(g) => format!("GPU {}", g.device().info().name),
                None => "the CPU backend".to_string(),
            };
            (
                exe.run(&inputs)?,
                format!(
                    "{engine} (compiled in {:.1} ms)",
                    exe.compile_time().as_secs_f64() * 1e3
                ),
            )
        }
    };
    let elapsed = start.elapsed();
    println!(
        "ran @{} ({} nodes) on {engine} in {:.1} ms",
        src.graph.name(),
        src.graph.len(),
        elapsed.as_secs_f64() * 1e3
    );
    // Outputs of an ONNX model are written under its own names.
    let outputs: Vec<(String, Tensor)> = outputs
        .into_iter()
        .map(|(name, t)| (file_stem(src.external_name(&name, Role::Output), &name), t))
        .collect();
    write_outputs(a.outputs.as_deref(), &outputs)?;
    Ok(ExitCode::SUCCESS)
}

/// `run --artifact FILE`: a GPU artifact on the device, no compiler needed.
fn run_artifact(a: &RunArgs, path: &Path) -> Result<ExitCode> {
    if let Some(t) = a.target.filter(|&t| t != TargetArg::Gpu) {
        bail!(
            "an artifact runs only on the GPU; drop --target {} or pass --target gpu",
            t.name()
        );
    }
    if let Some(f) = a.model.to_model_args().given().first() {
        bail!(
            "--{} is a model flag; it does not apply to an artifact",
            f.name()
        );
    }
    if a.optimize {
        bail!("--optimize does not apply to an artifact (it was compiled already)");
    }
    // The file first: a bad artifact is reported as such on any machine.
    let module = GpuModule::load(path)?;
    let specs = module.input_types()?;
    let inputs = gather_inputs(
        &format!("artifact {} (@{})", path.display(), module.name),
        &specs,
        |_| Init::default(),
        &str::to_string,
        a.inputs.as_deref(),
        a.seed,
        a.allow_nonfinite,
    )?;
    let start = Instant::now();
    let device = GpuDevice::open(a.device.unwrap_or(0))?;
    let launches = module.launches.len();
    let name = module.name.clone();
    let exe = GpuExecutable::load(module, &device)?;
    let loaded = start.elapsed();
    let outputs = exe.run(&inputs)?;
    println!(
        "ran artifact {} (@{name}, {launches} launches) on GPU {} in {:.1} ms (loaded in {:.1} ms)",
        path.display(),
        device.info().name,
        (start.elapsed() - loaded).as_secs_f64() * 1e3,
        loaded.as_secs_f64() * 1e3
    );
    write_outputs(a.outputs.as_deref(), &outputs)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints each output's statistics and, with `dir`, writes `DIR/NAME.npy`.
fn write_outputs(dir: Option<&Path>, outputs: &[(String, Tensor)]) -> Result<()> {
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    }
    // All or none: every output is written in full beside its target
    // first; only when all are, they are renamed into place. A failure
    // before that (an output named like a directory, a full disk) leaves
    // no output file changed.
    let mut staged = Vec::new();
    if let Some(dir) = dir {
        for (name, t) in outputs {
            let path = dir.join(format!("{name}.npy"));
            staged.push((stage_npy(&path, t)?, path));
        }
    }
    let mut dests = Vec::new();
    for (file, path) in staged {
        file.commit()
            .with_context(|| format!("cannot write {}", path.display()))?;
        dests.push(format!("  -> {}", path.display()));
    }
    for (i, (name, t)) in outputs.iter().enumerate() {
        let dest = dests.get(i).map_or("", String::as_str);
        println!("  {name:<14} {:<16} {}{dest}", t.ty().to_string(), stats(t));
    }
    Ok(())
}
