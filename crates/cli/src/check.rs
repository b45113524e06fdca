//! `birkhoff check`.

use std::process::ExitCode;

use anyhow::Result;

use crate::args::CheckArgs;
use crate::source::{import_onnx, is_onnx, read_ir_file};

pub fn main(a: &CheckArgs) -> Result<ExitCode> {
    if !a.dims.is_empty() && !a.files.iter().any(|f| is_onnx(&f.to_string_lossy())) {
        anyhow::bail!("--dim pins a symbolic dimension of an ONNX model; no file given is one");
    }
    let mut failed = false;
    for path in &a.files {
        let graphs = if is_onnx(&path.to_string_lossy()) {
            import_onnx(path, &a.dims).map(|m| vec![m.graph])
        } else {
            read_ir_file(path)
        };
        match graphs {
            Ok(graphs) if graphs.is_empty() => {
                eprintln!("error: {} holds no graph", path.display());
                failed = true;
            }
            Ok(graphs) => {
                for g in graphs {
                    let params = g
                        .inputs()
                        .iter()
                        .filter(|&&v| {
                            matches!(
                                g.node(v).op,
                                birkhoff::ir::Op::Input {
                                    kind: birkhoff::ir::InputKind::Param,
                                    ..
                                }
                            )
                        })
                        .count();
                    println!(
                        "{}: ok: graph @{} ({} nodes, {} inputs{}, {} outputs)",
                        path.display(),
                        g.name(),
                        g.len(),
                        g.inputs().len(),
                        if params > 0 {
                            format!(" of which {params} params")
                        } else {
                            String::new()
                        },
                        g.outputs().len()
                    );
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
