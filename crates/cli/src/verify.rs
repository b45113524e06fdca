//! `birkhoff verify`: the optimized graph against the original.

use std::process::ExitCode;

use anyhow::{Result, bail};
use birkhoff::testing::{CheckError, verify_optimized, verify_with};
use birkhoff::{Target, compile};

use crate::args::{Backend, VerifyArgs};
use crate::source;

pub fn main(a: &VerifyArgs) -> Result<ExitCode> {
    if a.cases == 0 {
        bail!("--cases must be at least 1");
    }
    let src = source::load(&a.source, &a.model)?;
    let (summary, what) = match a.backend {
        Backend::Interp => (
            verify_optimized(&src.graph, &src.inits, a.cases, a.seed)?,
            "optimized graph in the f64 interpreter",
        ),
        Backend::Cpu => {
            let exe = compile(&src.graph, Target::Cpu)?;
            let run = |inputs: &_| {
                exe.run(inputs).map_err(|e| CheckError::Mismatch {
                    name: "(all)".into(),
                    detail: e.to_string(),
                })
            };
            (
                verify_with(&src.graph, &src.inits, a.cases, a.seed, run)?,
                "fused program compiled for this CPU",
            )
        }
    };
    println!(
        "verify @{}: {what} vs the original graph in the f64 interpreter, {} random input sets (seeds {}..{})",
        src.graph.name(),
        summary.cases,
        a.seed,
        a.seed.wrapping_add(a.cases as u64 - 1)
    );
    println!(
        "inputs: the model's suggested distributions (zoo models) or N(0,1), each input from its own seeded stream"
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
