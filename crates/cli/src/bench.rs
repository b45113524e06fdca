//! `birkhoff bench`: time a compiled model.
//!
//! Bytes follow the minimal-bytes model of the peer harness: every input
//! (parameters included) read once, every output written once. GB/s is
//! those bytes over the median time, so the numbers compare with peers
//! that report the same figure.
//!
//! On the GPU the times are device times of the whole launch sequence,
//! measured with CUDA events on the stream (inputs uploaded once, outputs
//! not downloaded), and each launch is also timed on its own.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use birkhoff::gpu::LaunchTiming;
use birkhoff::{CompileOptions, Executable, compile_with};

use crate::args::{BenchArgs, ProjectionArg};
use crate::source;

/// The most runs `bench` times: a median of a million is as good as one
/// of more, and the times are all kept.
const MAX_RUNS: usize = 1_000_000;

pub fn main(a: &BenchArgs) -> Result<ExitCode> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    // Every run's time is kept for the median.
    if a.runs > MAX_RUNS {
        bail!(
            "--runs {} is more than the {MAX_RUNS} a benchmark times",
            a.runs
        );
    }
    let src = source::load(&a.source, &a.model, &a.import)?;
    let g = &src.graph;
    let opts = CompileOptions {
        target: a.target.into(),
        optimize: !a.unfused,
        threads: a.threads,
        projection: a.projection.map(|p| match p {
            ProjectionArg::InKernel => birkhoff::lower::PreMixProjection::InKernel,
            ProjectionArg::Gemm => birkhoff::lower::PreMixProjection::Gemm,
        }),
        device: a.device,
        ..CompileOptions::default()
    };
    let exe = compile_with(g, &opts)?;
    let inputs = birkhoff::compare::random_inputs(g, &src.inits, a.seed);
    let (mut times, launches) = match exe.gpu() {
        Some(gpu) => (
            gpu.time(&inputs, a.warmup, a.runs)?,
            gpu.time_launches(&inputs, a.warmup.min(1), a.runs)?,
        ),
        None => (host_times(a, &exe, &inputs)?, Vec::new()),
    };
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
    let backend = a.target.name();
    let device = exe.gpu().map(|g| g.device().info().name.clone());
    if a.json {
        let gpu_fields = match &device {
            Some(d) => format!(
                ", \"device\": {}, \"launches\": [{}]",
                json_str(d),
                launches
                    .iter()
                    .map(|l| format!(
                        "{{\"entry\": {}, \"kernel\": {}, \"median_s\": {:e}}}",
                        json_str(&l.entry),
                        json_str(&l.kernel),
                        l.median_s()
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => String::new(),
        };
        // Every input's type, so a reader knows the shape and dtype.
        let input_types = g
            .inputs()
            .iter()
            .map(|&v| {
                format!(
                    "{}: {}",
                    json_str(g.input_name(v).unwrap_or_default()),
                    json_str(&g.ty(v).to_string())
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{{\"model\": \"{}\", \"backend\": \"{backend}\", \"inputs\": {{{input_types}}}, \"fused\": {}, \"threads\": {}, \"runs\": {}, \"median_s\": {median:e}, \"min_s\": {min:e}, \"max_s\": {max:e}, \"bytes\": {bytes}, \"gbps\": {gbps:.4}, \"flops\": {flops}, \"gflops\": {gflops:.4}, \"compile_s\": {:e}, \"fresh_outputs\": {}{gpu_fields}}}",
            g.name(),
            !a.unfused,
            a.threads.map_or("null".to_string(), |t| t.to_string()),
            a.runs,
            exe.compile_time().as_secs_f64(),
            a.fresh_outputs
        );
    } else {
        let setting = match &device {
            Some(d) => format!("{d}, device time"),
            None => format!(
                "{} threads, {} outputs",
                a.threads.map_or("all".to_string(), |t| t.to_string()),
                if a.fresh_outputs { "fresh" } else { "reused" }
            ),
        };
        println!(
            "@{} on {backend} ({}, {setting}): median {:.3} ms (min {:.3}, max {:.3}, {} runs) | {:.1} MB minimal traffic -> {gbps:.2} GB/s | {:.2} GFLOP -> {gflops:.2} GFLOP/s | compile {:.1} ms",
            g.name(),
            if a.unfused { "unfused" } else { "fused" },
            median * 1e3,
            min * 1e3,
            max * 1e3,
            a.runs,
            bytes as f64 / 1e6,
            flops as f64 / 1e9,
            exe.compile_time().as_secs_f64() * 1e3
        );
        print_launches(&launches);
    }
    if a.profile {
        print_profile(&exe, &inputs)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--profile`: one more run with every kernel timed; the slowest go to
/// stderr (so that `--json` stays one object on stdout).
fn print_profile(
    exe: &Executable,
    inputs: &std::collections::BTreeMap<String, birkhoff::ir::Tensor>,
) -> Result<()> {
    let start = std::time::Instant::now();
    let mut kernels = exe.profile(inputs)?;
    let wall = start.elapsed().as_secs_f64();
    let total: f64 = kernels.iter().map(|k| k.time.as_secs_f64()).sum();
    kernels.sort_by_key(|k| std::cmp::Reverse(k.time));
    eprintln!(
        "profile: {} kernels, {:.3} ms in all, of a {:.3} ms run; the slowest:",
        kernels.len(),
        total * 1e3,
        wall * 1e3
    );
    for k in kernels.iter().take(PROFILE_ROWS) {
        let t = k.time.as_secs_f64();
        eprintln!(
            "  {:>10.3} ms {:>5.1}%  {}",
            t * 1e3,
            100.0 * t / total.max(f64::MIN_POSITIVE),
            k.name
        );
    }
    Ok(())
}

/// Kernels `--profile` lists.
const PROFILE_ROWS: usize = 15;

/// Wall-clock seconds of each timed call on the host (CPU, interpreter).
fn host_times(
    a: &BenchArgs,
    exe: &Executable,
    inputs: &std::collections::BTreeMap<String, birkhoff::ir::Tensor>,
) -> Result<Vec<f64>> {
    let mut outputs = Vec::new();
    let call = |outputs: &mut Vec<_>| -> Result<()> {
        if a.fresh_outputs {
            *outputs = exe.run(inputs)?;
        } else {
            exe.run_into(inputs, outputs)?;
        }
        Ok(())
    };
    for _ in 0..a.warmup {
        call(&mut outputs)?;
    }
    let mut times = Vec::with_capacity(a.runs);
    for _ in 0..a.runs {
        // The previous call's fresh outputs are freed before the clock
        // starts, as a peer's timer never sees its results freed either.
        if a.fresh_outputs {
            drop(std::mem::take(&mut outputs));
        }
        let t = Instant::now();
        call(&mut outputs)?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(times)
}

fn print_launches(launches: &[LaunchTiming]) {
    for l in launches {
        println!(
            "  {:<32} {:<24} median {:.3} ms",
            l.entry,
            l.kernel,
            l.median_s() * 1e3
        );
    }
}

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
