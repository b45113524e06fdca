//! Micro-benchmarks (being written).
fn main() {}
