//! Strategies for whole-model property tests: zoo models on small shapes,
//! seeded input sets, and the case count.

use std::collections::BTreeMap;

use birkhoff_dsl::random_inputs;
use birkhoff_dsl::zoo::{Flag, Inits, ModelArgs, models};
use birkhoff_ir::{Graph, Tensor};
use proptest::strategy::Strategy;

/// Input sets for `graph` drawn by [`random_inputs`] (one seed per case;
/// shrinking moves toward seed 0), so a failing case prints as a seed,
/// not as tensors.
pub fn seeded_inputs(
    graph: &Graph,
    inits: &Inits,
) -> impl Strategy<Value = BTreeMap<String, Tensor>> + use<> {
    let (graph, inits) = (graph.clone(), inits.clone());
    proptest::num::u64::ANY.prop_map(move |seed| random_inputs(&graph, &inits, seed))
}

/// Zoo models on small shapes: `(model name, its arguments, an input
/// seed)` with 1–6 tokens, 1–4 streams, 1–3 heads of 1–19 channels and
/// 1–2 layers, where the model takes them (sizes that are no multiple of
/// the vector width or the thread count included).
pub fn zoo_case() -> impl Strategy<Value = (String, ModelArgs, u64)> {
    (
        proptest::sample::select(models().to_vec()),
        1usize..7,
        1usize..5,
        1usize..4,
        1usize..20,
        1usize..3,
        proptest::num::u64::ANY,
    )
        .prop_map(|(info, t, n, heads, c_per_head, layers, seed)| {
            let takes = |f: Flag| info.flags.contains(&f);
            let args = ModelArgs {
                tokens: Some(t),
                streams: takes(Flag::Streams).then_some(n),
                hidden: takes(Flag::Hidden).then_some(heads * c_per_head),
                heads: takes(Flag::Heads).then_some(heads),
                layers: takes(Flag::Layers).then_some(layers),
                ..ModelArgs::default()
            };
            (info.name.to_string(), args, seed)
        })
}

/// Sizes for a graph you build yourself, one drawn from each range, and
/// an input seed: a property test over `(sizes, seed)` builds its graph
/// inside the test, so a failure prints (and shrinks toward) a few small
/// numbers, not a graph of thousands of lines.
pub fn sizes_and_seed<const N: usize>(
    ranges: [std::ops::Range<usize>; N],
) -> impl Strategy<Value = ([usize; N], u64)> {
    (ranges, proptest::num::u64::ANY)
}

/// Cases per proptest property: `PROPTEST_CASES` when it is set to a
/// number, else `default`.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
