//! `birkhoff`: build, inspect, check and run tensor graphs.
//!
//! Every command takes a zoo model name or an IR file; errors are printed
//! as one line on stderr with a non-zero exit status.

mod args;
mod bench;
mod check;
mod compare;
mod compile;
mod demo;
mod dump;
mod filetest;
mod gpu_info;
mod models;
mod plan;
mod plot;
mod run;
mod source;
mod train;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let result = match cli.command {
        args::Command::Models => models::main(),
        args::Command::Dump(a) => dump::main(&a),
        args::Command::Check(a) => check::main(&a),
        args::Command::Compile(a) => compile::main(&a),
        args::Command::Run(a) => run::main(&a),
        args::Command::Compare(a) => compare::main(&a),
        args::Command::Verify(a) => {
            eprintln!(
                "note: `birkhoff verify` is now `birkhoff compare` (`check` verifies IR); \
                 the old name goes away in the next release"
            );
            compare::main(&a)
        }
        args::Command::Test(a) => filetest::main(&a),
        args::Command::Bench(a) => bench::main(&a),
        args::Command::Demo(a) => demo::main(&a),
        args::Command::GpuInfo(a) => gpu_info::main(&a),
        args::Command::Train(a) => train::main(&a),
        args::Command::TrainCompare(a) => train::compare(&a.runs, &a.out),
        args::Command::Plan(a) => plan::main(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
