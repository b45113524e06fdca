//! Optimizer scaling in two spellings of mHC: the zoo's `mhc-block
//! --layers L` (two sublayers per layer) and the paper's equations
//! (`birkhoff_testkit::spellings::Spelling::paper`) stacked `2L` sublayers
//! deep, for L = 1, 8, 16, 32, 64.
//!
//! Prints, per depth, the median wall time of `optimize` over a few runs,
//! the time per layer (flat when optimizer time is linear in depth), the
//! largest e-graph, and the fusion sites found. Run with
//! `cargo bench --bench optimizer` (add `-- --quick` for one run each).

use std::time::{Duration, Instant};

use birkhoff::dsl::zoo::{LayerFn, ModelArgs, build_model};
use birkhoff::ir::{DType, Graph};
use birkhoff::opt::optimize;
use birkhoff_testkit::spellings::{Dims, Spelling, build};

/// The model of `layers` layers in a spelling.
fn model(spelling: &str, layers: usize) -> Graph {
    match spelling {
        "zoo" => {
            build_model(
                "mhc-block",
                &ModelArgs {
                    layers: Some(layers),
                    ..ModelArgs::default()
                },
            )
            .expect("zoo model builds")
            .graph
        }
        _ => {
            let s = Spelling::paper();
            let d = Dims {
                tokens: 32,
                streams: 4,
                hidden: 64,
                layers: 2 * layers,
                dtype: DType::F32,
                layer_fn: LayerFn::LinearTanh,
            };
            build(&s, &d, &s.config())
                .expect("spelled model builds")
                .graph
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 1 } else { 5 };
    for spelling in ["zoo", "paper"] {
        scaling(spelling, runs);
    }
}

fn scaling(spelling: &str, runs: usize) {
    println!(
        "\noptimizer scaling, {spelling} spelling (T=32, n=4, C=64; two sublayers per layer, each one mhc_pre and one mhc_post)"
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
        let graph = model(spelling, layers);
        let mut times: Vec<Duration> = Vec::new();
        let mut last = None;
        for _ in 0..runs {
            let t = Instant::now();
            let out = optimize(&graph, |_| false).expect("optimizes");
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
