//! The property test of `docs/testing.md` ("Checking your own graphs") in
//! the form a user puts in their `tests/`: the `proptest!` macro over
//! `examples/property_test.rs`'s graph and case, so the guide's code is
//! compiled and run both ways.

#[path = "../examples/property_test.rs"]
#[allow(dead_code, reason = "the example's main is not called here")]
mod example;

use birkhoff::compare::{Check, random_inputs};
use birkhoff::dsl::Inits;
use birkhoff_testkit::sizes_and_seed;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn my_sublayer_fuses_and_compiles_faithfully(
        case in sizes_and_seed([1..9, 1..5, 1..33])
    ) {
        example::case(case)?;
    }
}

/// The same check in a plain `#[test]`, at one size.
#[test]
fn my_sublayer_at_one_size() {
    let graph = example::my_sublayer(4, 4, 16).expect("builds");
    let inputs = random_inputs(&graph, &Inits::new(), 1);
    Check::cpu()
        .run(&graph, &inputs)
        .expect("runs")
        .assert_passed();
}

/// A case proptest found and shrank: an input set on which `y` is
/// ill-conditioned (rounding the inputs to f32 moves one element by up to
/// 2.5e-5), so the compiled program is judged within its bound of the
/// graph run in f32, not only of the f64 reference (`docs/testing.md`).
#[test]
fn my_sublayer_on_an_ill_conditioned_input_set() {
    example::case(([2, 3, 18], 10756642702316294145)).expect("passes");
}
