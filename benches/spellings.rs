//! Does the way mHC is written change how fast it runs? A fixed sample of
//! spellings from `birkhoff_testkit::spellings` (the paper's, the paper's
//! with its Sinkhorn in the log domain, and draws of the generator from a
//! fixed seed), each one sublayer with
//! `F` the identity, compiled for the CPU at T = 4096, n = 4, C = 2560
//! (f32, tilekernels Sinkhorn with 10 rounds unless the draw says
//! otherwise), timed against the zoo's spelling *with the same settings*.
//!
//! `kernels` and `MB moved` (the cost model's bytes of the optimized graph)
//! are zoo/spelled: deterministic, where the times are noisy.
//!
//! Outputs are reused between runs (as `birkhoff bench` does by default),
//! so the times are the kernels', not the page faults of fresh outputs.
//! The spellings are timed round-robin, one run each per round, so that
//! the machine's drift hits all of them alike; each row is the median over
//! the rounds. `ratio` is the spelling's median over the zoo spelling's.
//!
//! `cargo bench --bench spellings` (add `-- --quick` for T = 1024, C = 1280
//! and fewer rounds; `-- --samples N` for another sample size).

use std::collections::BTreeMap;
use std::time::Instant;

use birkhoff::compare::random_inputs;
use birkhoff::dsl::zoo::LayerFn;
use birkhoff::ir::{DType, Tensor};
use birkhoff::opt::cost::graph_cost;
use birkhoff::{CompileOptions, Executable, Target, compile_with};
use birkhoff_testkit::spellings::{Dims, Spelling, build, spelling};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

struct Case {
    label: String,
    exe: Executable,
    inputs: BTreeMap<String, Tensor>,
    outputs: Vec<(String, Tensor)>,
    times: Vec<f64>,
    /// Kernels of the compiled program.
    kernels: usize,
    /// The cost model's bytes moved by the optimized graph, in MB.
    mb: f64,
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let samples: usize = arg("--samples").and_then(|s| s.parse().ok()).unwrap_or(12);
    let (tokens, hidden, rounds) = if quick {
        (1024, 1280, 10)
    } else {
        (4096, 2560, 30)
    };
    let dims = Dims {
        tokens,
        streams: 4,
        hidden,
        layers: 1,
        dtype: DType::F32,
        layer_fn: LayerFn::Identity,
    };
    // The sample: the paper, then the generator's draws from a fixed seed.
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let mut log_domain = Spelling::paper();
    log_domain.sinkhorn.log_domain = 1;
    let mut sample = vec![
        ("paper".to_string(), Spelling::paper()),
        ("paper log".to_string(), log_domain),
    ];
    for i in 0..samples {
        let s = spelling()
            .new_tree(&mut runner)
            .expect("the strategy draws")
            .current();
        sample.push((format!("draw {i}"), s));
    }
    println!(
        "spellings of one mHC sublayer, T={tokens} n=4 C={hidden} f32, F = identity; each against the zoo spelling with its settings"
    );
    println!(
        "{:<9} {:>11} {:>11} {:>7} {:>8} {:>9}  {:<11} {:>5}  spelling",
        "sample", "zoo ms", "spelled ms", "ratio", "kernels", "MB moved", "sinkhorn", "iters"
    );
    let mut worst: f64 = 0.0;
    for (label, s) in sample {
        let mut zoo = Spelling::zoo();
        zoo.settings = s.settings;
        let mut cases = vec![case("zoo", &zoo, &dims), case(&label, &s, &dims)];
        for round in 0..rounds {
            // Each goes first in every other round: whichever runs second
            // finds the other's data in cache.
            if round > 0 {
                cases.reverse();
            }
            for c in &mut cases {
                let t = Instant::now();
                c.exe.run_into(&c.inputs, &mut c.outputs).expect("runs");
                c.times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        cases.sort_by_key(|c| c.label != "zoo");
        let median = |c: &mut Case| {
            c.times.sort_by(f64::total_cmp);
            c.times[c.times.len() / 2]
        };
        let z = median(&mut cases[0]);
        let m = median(&mut cases[1]);
        worst = worst.max(m / z);
        println!(
            "{:<9} {:>11.2} {:>11.2} {:>7.3} {:>8} {:>9}  {:<11} {:>5}  {}",
            cases[1].label,
            z,
            m,
            m / z,
            format!("{}/{}", cases[0].kernels, cases[1].kernels),
            format!("{:.0}/{:.0}", cases[0].mb, cases[1].mb),
            s.settings.variant.name(),
            s.settings.iters,
            summary(&s)
        );
    }
    println!("worst ratio: {worst:.3}");
}

fn case(label: &str, s: &Spelling, dims: &Dims) -> Case {
    let model = build(s, dims, &s.config()).expect("the spelling builds");
    let opts = CompileOptions {
        target: Target::Cpu,
        ..CompileOptions::default()
    };
    let exe = compile_with(&model.graph, &opts).expect("compiles");
    let fused = exe
        .graph()
        .nodes()
        .iter()
        .filter(|n| matches!(n.op.mnemonic(), "mhc_pre" | "mhc_post"))
        .count();
    assert_eq!(fused, 2, "{label} did not fuse:\n{}", exe.graph());
    let inputs = random_inputs(&model.graph, &model.inits, 1);
    // One untimed run: first touch of the arena and the outputs, which
    // later runs reuse (as `birkhoff bench` does by default).
    let outputs = exe.run(&inputs).expect("runs");
    let kernels = exe.program().map_or(0, |p| p.kernels.len());
    let mb = graph_cost(exe.graph()).bytes as f64 / 1e6;
    Case {
        label: label.to_string(),
        exe,
        inputs,
        outputs,
        times: Vec::new(),
        kernels,
        mb,
    }
}

/// The spelling's choices in a few words.
fn summary(s: &Spelling) -> String {
    let mut parts = vec![
        format!("{:?}", s.projection),
        format!(
            "rms {} {:?}",
            if s.rms.before { "before" } else { "after" },
            s.rms.factor
        ),
        format!("{:?}", s.affine),
        format!("mix {:?}/{:?}", s.apply_mix, s.residual_mix),
    ];
    let flags = [
        (s.transposed_product, "(φᵀx̂ᵀ)ᵀ".to_string()),
        (s.sinkhorn.on_h_res, "H_res".to_string()),
        (s.sinkhorn.shift > 0, format!("shift {}", s.sinkhorn.shift)),
        (
            s.sinkhorn.log_domain > 0 && s.settings.eps == 0.0,
            format!("log-domain {}", s.sinkhorn.log_domain),
        ),
        (s.outer_matmul, "outer matmul".to_string()),
    ];
    parts.extend(flags.into_iter().filter(|f| f.0).map(|f| f.1));
    parts.join(", ")
}
