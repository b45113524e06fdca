//! `birkhoff compile`.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use birkhoff::opt::{PASSES, optimize};

use crate::args::{CompileArgs, EmitArg, ReportFormat};
use crate::source;
use birkhoff::{CompileOptions, Target, compile_with};

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
    let src = source::load(&a.source, &a.model)?;
    let wanted = |pass: &str| a.dump_after.iter().any(|d| d == "all" || d == pass);
    let out = optimize(&src.graph, wanted)?;

    if !a.dump_after.is_empty() {
        std::fs::create_dir_all(&a.dump_dir)
            .with_context(|| format!("cannot create dump directory {}", a.dump_dir.display()))?;
        let input = a.dump_dir.join("00-input.bir");
        birkhoff::write_atomic(&input, src.graph.to_string().as_bytes())
            .with_context(|| format!("cannot write {}", input.display()))?;
        for (name, g) in &out.snapshots {
            let index = PASSES
                .iter()
                .position(|p| p.name == name)
                .map_or(0, |i| i + 1);
            let path = a.dump_dir.join(format!("{index:02}-{name}.bir"));
            birkhoff::write_atomic(&path, g.to_string().as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        eprintln!(
            "wrote {} IR dumps to {}",
            out.snapshots.len() + 1,
            a.dump_dir.display()
        );
    }

    let graph = if a.unfused { &src.graph } else { &out.graph };
    let text = match a.emit {
        EmitArg::Graph => graph.to_string(),
        EmitArg::KernelIr => birkhoff::lower::lower(graph, &Default::default())?.to_string(),
        EmitArg::Clif => {
            let opts = CompileOptions {
                target: Target::Cpu,
                optimize: false,
                ..CompileOptions::default()
            };
            compile_with(graph, &opts)?.code().unwrap_or_default()
        }
    };
    match &a.output {
        Some(path) => birkhoff::write_atomic(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?,
        None if !a.fusion_report => print!("{text}"),
        None => {}
    }
    if a.fusion_report {
        match a.format {
            ReportFormat::Text => println!("{}", out.report),
            ReportFormat::Json => println!("{}", out.report.to_json()),
        }
    }
    Ok(ExitCode::SUCCESS)
}
