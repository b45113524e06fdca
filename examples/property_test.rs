//! A property test over a graph you wrote: fused against unfused, and
//! compiled against the reference, on random sizes and inputs.
//!
//! `docs/testing.md` ("Checking your own graphs") walks through it; the
//! same body goes into a `proptest!` test in your `tests/` (shown there).
//! Run it with `cargo run --example property_test`.

use birkhoff::compare::{Check, CheckError, random_inputs};
use birkhoff::dsl::zoo::mhc::{MhcConfig, MixParams, mhc_post, mhc_pre};
use birkhoff::dsl::{Builder, Inits, nn};
use birkhoff::ir::{DType, Graph};
use birkhoff_testkit::sizes_and_seed;
use proptest::test_runner::{Config, TestRunner};

/// The graph under test: one mHC sublayer with your own layer function
/// (an RMS-normalized linear layer and a tanh), at any size.
pub fn my_sublayer(tokens: usize, streams: usize, hidden: usize) -> birkhoff::dsl::Result<Graph> {
    let b = Builder::new("my_sublayer");
    let m = streams * (streams + 2);
    let x = b.input("x", DType::F32, &[tokens, streams, hidden]);
    let params = MixParams {
        proj: b.param("fn", DType::F32, &[m, streams * hidden]),
        scale: b.param("scale", DType::F32, &[3]),
        base: b.param("base", DType::F32, &[m]),
    };
    let w = b.param("w", DType::F32, &[hidden, hidden]);
    let (layer_input, post, comb) = mhc_pre(x, &params, &MhcConfig::default());
    let f = nn::linear(nn::rms_norm(layer_input, None, 1e-6), w)
        .tanh()
        .named("layer_output");
    b.output("y", mhc_post(f, x, post, comb));
    b.build()
}

/// One case: build at these sizes, draw inputs from this seed, check the
/// optimized graph (in f64, and in its own f32) and the compiled program.
pub fn case(([tokens, streams, hidden], seed): ([usize; 3], u64)) -> Result<(), CheckError> {
    let graph = my_sublayer(tokens, streams, hidden).map_err(|e| CheckError::Failed {
        what: e.to_string(),
        graph: String::new(),
    })?;
    let inputs = random_inputs(&graph, &Inits::new(), seed);
    Check::optimized()
        .in_declared_dtype()
        .run(&graph, &inputs)?
        .into_result()?;
    Check::cpu().run(&graph, &inputs)?.into_result()?;
    Ok(())
}

fn main() {
    let mut runner = TestRunner::new(Config {
        cases: 16,
        // A program has no source file to keep failing seeds beside.
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&sizes_and_seed([1..9, 1..5, 1..33]), |c| {
        case(c)?;
        Ok(())
    });
    match result {
        Ok(()) => println!("16 random sizes and input sets: fused = unfused, compiled = reference"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
