//! Optimizer scaling: `mhc-block --layers L` for L = 1, 8, 16, 32, 64.
//!
//! Prints, per depth, the median wall time of `optimize` over a few runs,
//! the time per layer (flat when optimizer time is linear in depth), the
//! largest e-graph, and the fusion sites found. Run with
//! `cargo bench --bench optimizer` (add `-- --quick` for one run each).

use std::time::{Duration, Instant};

use birkhoff::dsl::zoo::{ModelArgs, build_model};
use birkhoff::opt::optimize;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 1 } else { 5 };
    println!(
        "optimizer scaling on mhc-block (T=32, n=4, C=64; every sublayer should give one mhc_pre and one mhc_post)"
    );
    println!(
        "{:>7} {:>11} {:>9} {:>11} {:>12} {:>12} {:>9} {:>9}  stop reasons",
        "layers",
        "graph ops",
        "result",
        "median ms",
        "ms / layer",
        "max e-nodes",
        "mhc_pre",
        "mhc_post"
    );
    for layers in [1usize, 8, 16, 32, 64] {
        let model = build_model(
            "mhc-block",
            &ModelArgs {
                layers: Some(layers),
                ..ModelArgs::default()
            },
        )
        .expect("zoo model builds");
        let mut times: Vec<Duration> = Vec::new();
        let mut last = None;
        for _ in 0..runs {
            let t = Instant::now();
            let out = optimize(&model.graph, |_| false).expect("optimizes");
            times.push(t.elapsed());
            last = Some(out);
        }
        times.sort();
        let median = times[times.len() / 2].as_secs_f64() * 1e3;
        let out = last.expect("at least one run");
        let r = &out.report;
        let max_nodes = r.passes.iter().map(|p| p.egraph_nodes).max().unwrap_or(0);
        let stops: Vec<String> = r.passes.iter().map(|p| p.stop_reason.to_string()).collect();
        let count = |k: &str| r.sites.get(k).copied().unwrap_or(0);
        println!(
            "{:>7} {:>11} {:>9} {:>11.1} {:>12.2} {:>12} {:>9} {:>9}  {}",
            layers,
            r.ops_before,
            r.ops_after,
            median,
            median / layers as f64,
            max_nodes,
            count("mhc_pre"),
            count("mhc_post"),
            stops.join(",")
        );
        assert_eq!(
            (count("mhc_pre"), count("mhc_post")),
            (2 * layers, 2 * layers),
            "missed fusion sites"
        );
    }
}
