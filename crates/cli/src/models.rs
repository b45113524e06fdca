//! `birkhoff models`.

use std::process::ExitCode;

use anyhow::Result;
use birkhoff::dsl::zoo::models;

pub fn main() -> Result<ExitCode> {
    for m in models() {
        println!("{}\n  {}", m.name, m.summary);
        for f in m.flags {
            println!("    --{:<10} {}", f.name(), f.help());
        }
        println!();
    }
    println!("Run one with: birkhoff run MODEL [flags] --seed 0 --outputs out/");
    Ok(ExitCode::SUCCESS)
}
