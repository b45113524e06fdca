//! `birkhoff bench`: time a compiled model.
//!
//! Bytes follow the minimal-bytes model of the peer harness: every input
//! (parameters included) read once, every output written once. GB/s is
//! those bytes over the median time, so the numbers compare with peers
//! that report the same figure.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use birkhoff::{CompileOptions, Target, compile_with};

use crate::args::{Backend, BenchArgs, ProjectionArg};
use crate::source;

pub fn main(a: &BenchArgs) -> Result<ExitCode> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let src = source::load(&a.source, &a.model)?;
    let g = &src.graph;
    let target = match a.backend {
        Backend::Interp => Target::Interp,
        Backend::Cpu => Target::Cpu,
    };
    let opts = CompileOptions {
        target,
        optimize: !a.unfused,
        threads: a.threads,
        projection: match a.projection {
            ProjectionArg::InKernel => birkhoff::lower::Projection::InKernel,
            ProjectionArg::Gemm => birkhoff::lower::Projection::Gemm,
        },
        checked: false,
    };
    let exe = compile_with(g, &opts)?;
    let inputs = birkhoff::testing::random_inputs(g, &src.inits, a.seed);
    let mut outputs = Vec::new();
    let call = |outputs: &mut Vec<_>| -> Result<()> {
        if a.fresh_outputs {
            *outputs = exe.run(&inputs)?;
        } else {
            exe.run_into(&inputs, outputs)?;
        }
        Ok(())
    };
    for _ in 0..a.warmup {
        call(&mut outputs)?;
    }
    let mut times = Vec::with_capacity(a.runs);
    for _ in 0..a.runs {
        let t = Instant::now();
        call(&mut outputs)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let (min, max) = (times[0], times[times.len() - 1]);
    let bytes: u64 = g
        .inputs()
        .iter()
        .chain(g.outputs().iter().map(|o| &o.value))
        .map(|&v| g.ty(v).size_bytes() as u64)
        .sum();
    let flops = birkhoff::opt::cost::graph_cost(exe.graph()).flops;
    let gbps = bytes as f64 / median / 1e9;
    let gflops = flops as f64 / median / 1e9;
    let backend = match a.backend {
        Backend::Interp => "interp",
        Backend::Cpu => "cpu",
    };
    if a.json {
        println!(
            "{{\"model\": \"{}\", \"backend\": \"{backend}\", \"fused\": {}, \"threads\": {}, \"runs\": {}, \"median_s\": {median:e}, \"min_s\": {min:e}, \"max_s\": {max:e}, \"bytes\": {bytes}, \"gbps\": {gbps:.4}, \"flops\": {flops}, \"gflops\": {gflops:.4}, \"compile_s\": {:e}, \"fresh_outputs\": {}}}",
            g.name(),
            !a.unfused,
            a.threads.map_or("null".to_string(), |t| t.to_string()),
            a.runs,
            exe.compile_time().as_secs_f64(),
            a.fresh_outputs
        );
    } else {
        println!(
            "@{} on {backend} ({}, {} threads, {} outputs): median {:.3} ms (min {:.3}, max {:.3}, {} runs) | {:.1} MB minimal traffic -> {gbps:.2} GB/s | {:.2} GFLOP -> {gflops:.2} GFLOP/s | compile {:.1} ms",
            g.name(),
            if a.unfused { "unfused" } else { "fused" },
            a.threads.map_or("all".to_string(), |t| t.to_string()),
            if a.fresh_outputs { "fresh" } else { "reused" },
            median * 1e3,
            min * 1e3,
            max * 1e3,
            a.runs,
            bytes as f64 / 1e6,
            flops as f64 / 1e9,
            exe.compile_time().as_secs_f64() * 1e3
        );
    }
    Ok(ExitCode::SUCCESS)
}
