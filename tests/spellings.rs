//! Spelled mHC sublayers (`birkhoff_testkit::spellings`) compiled for the
//! CPU, fused, against the original graph in the interpreter: whatever way
//! the math was written, the fused program computes it. (That every
//! spelling fuses is `crates/opt/tests/spellings.rs`.)

use birkhoff::compare::{compare_compiled, random_inputs};
use birkhoff::dsl::zoo::LayerFn;
use birkhoff::ir::DType;
use birkhoff::{CompileOptions, Target, compile_with};
use birkhoff_testkit::proptest_cases;
use birkhoff_testkit::spellings::{Spelling, build, dims, spelling};
use proptest::prelude::*;

/// A sublayer or two of f32 ops: the reduction row, with room for the
/// chain of ops per sublayer, as for the zoo's models.
const FACTOR: f64 = 10.0;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(16)))]

    #[test]
    fn spelled_sublayers_compile_and_match_the_interpreter(
        s in spelling(),
        d in dims(1..3, DType::F32),
        seed in any::<u64>(),
    ) {
        check(&s, d, seed)?;
    }
}

fn check(
    s: &Spelling,
    d: birkhoff_testkit::spellings::Dims,
    seed: u64,
) -> Result<(), TestCaseError> {
    let model = build(s, &d, &s.config()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let g = &model.graph;
    let opts = CompileOptions {
        target: Target::Cpu,
        optimize: true,
        checked: true,
        ..CompileOptions::default()
    };
    let exe = compile_with(g, &opts).map_err(|e| TestCaseError::fail(format!("{e}\n{s:?}")))?;
    let fused = exe
        .graph()
        .nodes()
        .iter()
        .filter(|n| n.op.mnemonic() == "mhc_pre")
        .count();
    prop_assert_eq!(fused, d.layers, "{:?}\n{}", s, exe.graph());
    let inputs = random_inputs(g, &model.inits, seed);
    let got = exe
        .run(&inputs)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for e in compare_compiled(g, &inputs, &got, FACTOR)
        .map_err(|e| TestCaseError::fail(e.to_string()))?
    {
        prop_assert!(e.within, "{e}\n{s:?}");
    }
    Ok(())
}

/// The paper's spelling at the sizes of a small model.
#[test]
fn the_paper_spelling_compiles_and_matches() {
    let d = birkhoff_testkit::spellings::Dims {
        tokens: 16,
        streams: 4,
        hidden: 32,
        layers: 2,
        dtype: DType::F32,
        layer_fn: LayerFn::LinearTanh,
    };
    if let Err(e) = check(&Spelling::paper(), d, 3) {
        panic!("{e}");
    }
}
