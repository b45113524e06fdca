//! Does the way mHC is written change how fast it runs? A fixed sample of
//! spellings from `birkhoff_testkit::spellings` (the zoo's, the paper's,
//! and draws of the generator from a fixed seed), each one sublayer with
//! `F` the identity, compiled for the CPU at T = 4096, n = 4, C = 2560
//! (f32, tilekernels Sinkhorn with 10 rounds unless the draw says
//! otherwise), timed against the zoo's spelling *with the same settings*.
//!
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
use birkhoff::{CompileOptions, Executable, Target, compile_with};
use birkhoff_testkit::spellings::{Dims, Spelling, build, spelling};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

struct Case {
    label: String,
    exe: Executable,
    inputs: BTreeMap<String, Tensor>,
    times: Vec<f64>,
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
        (1024, 1280, 5)
    } else {
        (4096, 2560, 9)
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
    let mut sample = vec![("paper".to_string(), Spelling::paper())];
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
        "{:<8} {:>11} {:>11} {:>7}  {:<9} {:>5}  spelling",
        "sample", "zoo ms", "spelled ms", "ratio", "sinkhorn", "iters"
    );
    let mut worst: f64 = 0.0;
    for (label, s) in sample {
        let mut zoo = Spelling::zoo();
        zoo.settings = s.settings;
        let mut cases = vec![case("zoo", &zoo, &dims), case(&label, &s, &dims)];
        for _ in 0..rounds {
            for c in &mut cases {
                let t = Instant::now();
                c.exe.run(&c.inputs).expect("runs");
                c.times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        let median = |c: &mut Case| {
            c.times.sort_by(f64::total_cmp);
            c.times[c.times.len() / 2]
        };
        let z = median(&mut cases[0]);
        let m = median(&mut cases[1]);
        worst = worst.max(m / z);
        println!(
            "{:<8} {:>11.2} {:>11.2} {:>7.3}  {:<9} {:>5}  {}",
            cases[1].label,
            z,
            m,
            m / z,
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
    // One untimed run: first touch of the arena and the outputs.
    exe.run(&inputs).expect("runs");
    Case {
        label: label.to_string(),
        exe,
        inputs,
        times: Vec::new(),
    }
}

/// The spelling's choices in a few words.
fn summary(s: &Spelling) -> String {
    format!(
        "{:?}, rms {}, {:?}, mix {:?}/{:?}{}{}",
        s.projection,
        if s.rms.before { "before" } else { "after" },
        s.affine,
        s.apply_mix,
        s.residual_mix,
        if s.sinkhorn.on_h_res { ", H_res" } else { "" },
        if s.outer_matmul { ", outer matmul" } else { "" },
    )
}
