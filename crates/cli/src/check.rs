//! `birkhoff check`.

use std::process::ExitCode;

use anyhow::Result;

use crate::args::CheckArgs;
use crate::source::read_ir_file;

pub fn main(a: &CheckArgs) -> Result<ExitCode> {
    let mut failed = false;
    for path in &a.files {
        match read_ir_file(path) {
            Ok(graphs) if graphs.is_empty() => {
                eprintln!("error: {} holds no graph", path.display());
                failed = true;
            }
            Ok(graphs) => {
                for g in graphs {
                    println!(
                        "{}: ok: graph @{} ({} nodes, {} inputs, {} outputs)",
                        path.display(),
                        g.name(),
                        g.len(),
                        g.inputs().len(),
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
