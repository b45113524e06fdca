//! `birkhoff test`: run IR file tests.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use birkhoff_filetests::{collect_files, run_file};

use crate::args::TestArgs;

pub fn main(a: &TestArgs) -> Result<ExitCode> {
    let files = collect_files(&a.paths).context("cannot list the test files")?;
    if files.is_empty() {
        bail!("no .bir files under the given paths");
    }
    let (mut passed, mut failed) = (0, 0);
    for f in &files {
        match run_file(f) {
            Ok(outcome) if outcome.passed() => {
                passed += 1;
                println!("ok   {}", f.display());
            }
            Ok(outcome) => {
                failed += 1;
                println!("FAIL {}\n{outcome}", f.display());
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {}: {e}", f.display());
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
