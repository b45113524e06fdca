//! `birkhoff`: build, inspect, check and run tensor graphs.
//!
//! Every command takes a zoo model name, an IR file or an ONNX model; errors are printed
//! as one line on stderr with a non-zero exit status.

mod args;
mod bench;
mod check;
mod compare;
mod compile;
mod demo;
mod dump;
mod filetest;
mod gpu_audit;
mod gpu_info;
mod import;
mod models;
mod plan;
mod plot;
mod run;
mod source;
mod train;

use std::process::ExitCode;

use clap::Parser;

/// What a failed write to stdout does: `print!` panics on an I/O error,
/// so a hook turns that one panic into how Unix tools behave. A reader
/// that went away (`birkhoff models | head -1`: a broken pipe) ends the
/// program quietly with success; any other error (a full disk, `>
/// /dev/full`) is one error line and a failure status. Every other panic
/// keeps the default report.
fn exit_quietly_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if let Some(cause) = message.strip_prefix("failed printing to stdout: ") {
            if cause.contains("Broken pipe") {
                std::process::exit(0);
            }
            eprintln!("error: cannot write to standard output: {cause}");
            std::process::exit(1);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    exit_quietly_on_closed_stdout();
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
        args::Command::GpuAudit(a) => gpu_audit::main(&a),
        args::Command::Train(a) => train::main(&a),
        args::Command::TrainCompare(a) => train::compare(&a.runs, &a.out),
        args::Command::Plan(a) => plan::main(&a),
        args::Command::Import(a) => import::main(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
