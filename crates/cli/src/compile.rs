//! `birkhoff compile`.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use birkhoff::opt::{PASSES, optimize};

use birkhoff::opt::Report;
use clap::ValueEnum;

use crate::args::{CompileArgs, DumpFormat, EmitArg, ReportFormat, TargetArg};
use crate::source;
use birkhoff::{CompileOptions, GpuCode, compile_with, gpu_code, gpu_module, kernel_program};

/// Why `compile --target gpu` without `--emit` needs `-o`.
const ARTIFACT_NEEDS_OUTPUT: &str =
    "compile --target gpu writes an artifact: pass -o FILE.bkx (or --emit llvm|ptx to print code)";

pub fn main(a: &CompileArgs) -> Result<ExitCode> {
    for d in &a.dump_after {
        if d != "all" && !PASSES.iter().any(|p| p.name == d) {
            let known: Vec<&str> = PASSES.iter().map(|p| p.name).collect();
            bail!(
                "unknown pass '{d}' for --dump-after (passes: {}, or all)",
                known.join(", ")
            );
        }
    }
    if a.target == Some(TargetArg::Interp) {
        bail!("the interpreter runs graphs as they are: compile for --target cpu or --target gpu");
    }
    let (target, emit) = resolve_target(a.target, a.emit)?;
    if target == TargetArg::Gpu && emit.is_none() && a.output.is_none() {
        bail!("{ARTIFACT_NEEDS_OUTPUT}");
    }
    let generates_gpu_code = matches!(emit, None | Some(EmitArg::Llvm | EmitArg::Ptx));
    if target == TargetArg::Gpu && generates_gpu_code && !birkhoff::gpu::CODEGEN_ENABLED {
        // Before the optimizer runs: it would only be thrown away.
        return Err(birkhoff::gpu::GpuError::CodegenNotEnabled.into());
    }
    let src = source::load(&a.source, &a.model, &a.import)?;
    // Any dump asked for comes with 00-input: the input as the optimizer
    // holds it, the baseline the passes' dumps differ from.
    let wanted = |pass: &str| {
        !a.dump_after.is_empty()
            && (pass == "input" || a.dump_after.iter().any(|d| d == "all" || d == pass))
    };
    let out = optimize(&src.graph, wanted)?;
    for p in out.report.limited() {
        eprintln!(
            "warning: pass {} stopped at its {} after {} iterations, not saturated: the result may miss rewrites",
            p.name, p.stop_reason, p.iterations
        );
    }

    if !a.dump_after.is_empty() {
        std::fs::create_dir_all(&a.dump_dir)
            .with_context(|| format!("cannot create dump directory {}", a.dump_dir.display()))?;
        let (ext, render): (&str, fn(&birkhoff::ir::Graph) -> String) = match a.dump_format {
            DumpFormat::Text => ("bir", |g| g.to_string()),
            DumpFormat::Dot => ("dot", birkhoff::ir::to_dot),
        };
        // 00-input is the optimizer's "input" snapshot: the input as the
        // e-graph holds it (equal values merged, in the passes' order,
        // under its own names), so a dump differs from the one before
        // only where a pass changed something.
        let snapshots = out.snapshots.iter().map(|(name, g)| (name.as_str(), g));
        for (name, g) in snapshots {
            let index = PASSES
                .iter()
                .position(|p| p.name == name)
                .map_or(0, |i| i + 1);
            let path = a.dump_dir.join(format!("{index:02}-{name}.{ext}"));
            birkhoff::write_atomic(&path, render(g).as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        eprintln!(
            "wrote {} IR dumps to {}",
            out.snapshots.len(),
            a.dump_dir.display()
        );
    }

    let graph = if a.unfused { &src.graph } else { &out.graph };
    // The graph is optimized already (or deliberately not).
    let opts = CompileOptions {
        target: target.into(),
        optimize: false,
        ..CompileOptions::default()
    };
    let text = match emit {
        None => {
            let Some(path) = a.output.as_ref() else {
                bail!("{ARTIFACT_NEEDS_OUTPUT}");
            };
            let module = gpu_module(graph, &opts)?;
            module.save(path)?;
            eprintln!(
                "wrote GPU artifact {} (@{}, {} launches, {}, format version {})",
                path.display(),
                module.name,
                module.launches.len(),
                module.arch,
                module.version
            );
            if a.fusion_report {
                print_report(a, &out.report);
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(EmitArg::Graph) => graph.to_string(),
        Some(EmitArg::KernelIr) => kernel_program(graph, &opts)?.to_string(),
        Some(EmitArg::Clif) => compile_with(graph, &opts)?.code().unwrap_or_default(),
        Some(EmitArg::Llvm) => gpu_code(graph, &opts, GpuCode::Llvm)?,
        Some(EmitArg::Ptx) => gpu_code(graph, &opts, GpuCode::Ptx)?,
    };
    match &a.output {
        Some(path) => birkhoff::write_atomic(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?,
        None if !a.fusion_report => print!("{text}"),
        None => {}
    }
    if a.fusion_report {
        print_report(a, &out.report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(a: &CompileArgs, report: &Report) {
    match a.format {
        ReportFormat::Text => println!("{report}"),
        ReportFormat::Json => println!("{}", report.to_json()),
    }
}

/// The target and what to emit (`None`: a GPU artifact), from the flags:
/// `--emit llvm|ptx` implies the GPU, `--emit clif` the CPU, and a
/// contradiction is an error.
fn resolve_target(
    target: Option<TargetArg>,
    emit: Option<EmitArg>,
) -> Result<(TargetArg, Option<EmitArg>)> {
    let needs = |e: EmitArg| match e {
        EmitArg::Llvm | EmitArg::Ptx => Some(TargetArg::Gpu),
        EmitArg::Clif => Some(TargetArg::Cpu),
        EmitArg::Graph | EmitArg::KernelIr => None,
    };
    match (target, emit) {
        (Some(t), Some(e)) => match needs(e) {
            Some(n) if n != t => bail!(
                "--emit {} needs --target {}, not --target {}",
                e.to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default(),
                n.name(),
                t.name()
            ),
            _ => Ok((t, Some(e))),
        },
        (Some(TargetArg::Gpu), None) => Ok((TargetArg::Gpu, None)),
        (Some(TargetArg::Cpu | TargetArg::Interp), None) | (None, None) => {
            Ok((TargetArg::Cpu, Some(EmitArg::Graph)))
        }
        (None, Some(e)) => Ok((needs(e).unwrap_or(TargetArg::Cpu), Some(e))),
    }
}
