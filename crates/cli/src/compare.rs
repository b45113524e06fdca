//! `birkhoff compare` (formerly `verify`): the optimized or compiled graph
//! against the original on random inputs.

use std::process::ExitCode;

use anyhow::{Result, bail};
use birkhoff::compare::{CheckError, compare_cases, compare_optimized_cases};
use birkhoff::{CompileOptions, compile_with};

use crate::args::{CompareArgs, TargetArg};
use crate::source;

pub fn main(a: &CompareArgs) -> Result<ExitCode> {
    if a.cases == 0 {
        bail!("--cases must be at least 1");
    }
    let src = source::load(&a.source, &a.model, &a.import)?;
    let (summary, what) = match a.target {
        TargetArg::Interp => (
            compare_optimized_cases(&src.graph, &src.inits, a.cases, a.seed)?,
            "optimized graph in the f64 interpreter".to_string(),
        ),
        TargetArg::Cpu | TargetArg::Gpu => {
            let opts = CompileOptions {
                target: a.target.into(),
                device: a.device,
                ..CompileOptions::default()
            };
            let exe = compile_with(&src.graph, &opts)?;
            let run = |inputs: &_| {
                exe.run(inputs).map_err(|e| CheckError::Mismatch {
                    name: "(all)".into(),
                    detail: e.to_string(),
                })
            };
            let what = match exe.gpu() {
                Some(g) => format!("fused program compiled for GPU {}", g.device().info().name),
                None => "fused program compiled for this CPU".to_string(),
            };
            (
                compare_cases(&src.graph, &src.inits, a.cases, a.seed, run)?,
                what,
            )
        }
    };
    println!(
        "compare @{}: {what} vs the original graph in the f64 interpreter, {} random input sets (seeds {}..{})",
        src.graph.name(),
        summary.cases,
        a.seed,
        a.seed.wrapping_add(a.cases as u64 - 1)
    );
    println!(
        "inputs: a model's own weights (ONNX initializers, --weights), its suggested distributions (zoo models) or N(0,1), each drawn input from its own seeded stream"
    );
    for w in &summary.outputs {
        let e = &w.error;
        println!(
            "  {:<14} max abs {:.3e}  max rel {:.3e}  worst seed {}  (tolerance rtol {:.0e}, atol {:.0e})  {}",
            e.name,
            e.max_abs,
            e.max_rel,
            w.worst_seed,
            e.tolerance.rtol,
            e.tolerance.atol,
            if w.failures == 0 {
                "ok".to_string()
            } else {
                format!("FAILED in {} of {} cases", w.failures, summary.cases)
            }
        );
    }
    Ok(if summary.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
