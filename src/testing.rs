//! Fused-vs-unfused checking: how users trust the compiler on their own
//! graphs.
//!
//! The reference is always the original graph in the f64 interpreter
//! (DESIGN §5). A *candidate* — today the optimized graph in the same
//! interpreter; later each backend — runs on the same inputs, and every
//! output is compared element by element:
//!
//! ```text
//! |got - want| <= atol + rtol · max(|want|, 1e-3 · max|want over the output|)
//! ```
//!
//! with `atol`/`rtol` the reduction row of the DESIGN §5 tolerance table
//! for the output's dtype ([`Tolerance::reduction`]). The floor of a
//! thousandth of the output's peak keeps elements that cancel to nearly
//! zero from dominating the relative error.
//!
//! bf16 outputs of [`verify_with`] (and so [`verify_optimized`]) are held to
//! one bound over the whole output instead:
//!
//! ```text
//! |got - want| <= 4 · (atol + rtol · max|want over the output|)
//! ```
//!
//! A bf16 graph stores every intermediate in 8 bits, where a fused kernel
//! keeps f32 and rounds only its results, so the two programs differ by bf16
//! units of the largest values an element is computed from, even where the
//! element itself cancels to nearly zero. The bound is 8 units of 2^-8 of the
//! output's peak; the zoo's mHC models stay within 3.5 and its transformer
//! blocks within 4.5 over many seeds and shapes, while a wrong fusion is off
//! by the size of the values themselves.
//!
//! ```
//! use birkhoff::dsl::zoo::{ModelArgs, build_model};
//! use birkhoff::testing::{assert_optimized_matches, random_inputs};
//!
//! let model = build_model("mhc-pre", &ModelArgs::default())?;
//! let inputs = random_inputs(&model.graph, &model.inits, 7);
//! assert_optimized_matches(&model.graph, &inputs);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! For property tests, [`inputs`] is a proptest strategy over input sets.

use std::collections::BTreeMap;
use std::fmt;

use birkhoff_dsl::zoo::Inits;
use birkhoff_dsl::{Rng, random_tensor};
use birkhoff_ir::{DType, Graph, InterpOptions, Tensor, interpret};
use proptest::strategy::Strategy;

pub use birkhoff_ir::tolerance::Tolerance;

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The interpreter rejected the graph or its inputs.
    #[error("{0}")]
    Interp(#[from] birkhoff_ir::Error),
    /// The optimizer failed.
    #[error("{0}")]
    Optimize(#[from] birkhoff_opt::Error),
    /// Compiling or running the candidate failed.
    #[error("{0}")]
    Compile(#[from] crate::CompileError),
    /// The candidate returned different outputs (names or types).
    #[error("candidate output '{name}' does not match the reference: {detail}")]
    Mismatch {
        /// Output name.
        name: String,
        /// What differs.
        detail: String,
    },
}

/// Named outputs, as the interpreter returns them.
pub type Outputs = Vec<(String, Tensor)>;

/// One input set per graph input, drawn from `seed`: each input from its
/// own stream (`inits` suggests a distribution per name; standard normal
/// otherwise), so the values of one input do not depend on the others.
pub fn random_inputs(graph: &Graph, inits: &Inits, seed: u64) -> BTreeMap<String, Tensor> {
    let root = Rng::new(seed);
    graph
        .inputs()
        .iter()
        .map(|&v| {
            let name = graph.input_name(v).unwrap_or_default().to_string();
            let init = inits.get(&name).cloned().unwrap_or_default();
            let t = random_tensor(graph.ty(v), &init, &mut root.fork(&name));
            (name, t)
        })
        .collect()
}

/// A proptest strategy for input sets of `graph` (one seed per case;
/// shrinking moves toward seed 0).
pub fn inputs(
    graph: &Graph,
    inits: &Inits,
) -> impl Strategy<Value = BTreeMap<String, Tensor>> + use<> {
    let (graph, inits) = (graph.clone(), inits.clone());
    proptest::num::u64::ANY.prop_map(move |seed| random_inputs(&graph, &inits, seed))
}

/// A proptest strategy for zoo models on small shapes: `(model name, its
/// arguments, an input seed)` with 1–6 tokens, 1–4 streams, 1–3 heads of
/// 1–19 channels and 1–2 layers, where the model takes them (sizes that are
/// no multiple of the vector width or the thread count included).
pub fn zoo_case() -> impl Strategy<Value = (String, birkhoff_dsl::zoo::ModelArgs, u64)> {
    use birkhoff_dsl::zoo::{Flag, ModelArgs, models};
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

/// Cases per proptest property: `PROPTEST_CASES` when it is set to a
/// number, else `default`.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// [`compare_cpu`] as a proptest check: every output within tolerance,
/// and, when `outputs` is given, exactly that many outputs compared. The
/// failure message shows the graph.
pub fn check_cpu(
    graph: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    outputs: Option<usize>,
) -> Result<(), proptest::test_runner::TestCaseError> {
    use proptest::test_runner::TestCaseError;
    let errs =
        compare_cpu(graph, inputs).map_err(|e| TestCaseError::fail(format!("{e}\n{graph}")))?;
    if let Some(n) = outputs
        && errs.len() != n
    {
        return Err(TestCaseError::fail(format!(
            "{} outputs compared, {n} expected\n{graph}",
            errs.len()
        )));
    }
    match errs.into_iter().find(|e| !e.within) {
        Some(e) => Err(TestCaseError::fail(format!("{e}\n{graph}"))),
        None => Ok(()),
    }
}

/// The error of one candidate output against the reference.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputError {
    /// Output name.
    pub name: String,
    /// Largest `|got - want|`.
    pub max_abs: f64,
    /// Largest `|got - want| / max(|want|, floor)` (see the module docs).
    pub max_rel: f64,
    /// Flat index of the element with the largest relative error.
    pub worst_index: usize,
    /// The tolerance applied.
    pub tolerance: Tolerance,
    /// Whether every element is within tolerance.
    pub within: bool,
}

/// The interpreter settings of the reference: f64 arithmetic, outputs
/// returned unrounded.
pub fn reference_options() -> InterpOptions {
    InterpOptions {
        f64_outputs: true,
        ..InterpOptions::default()
    }
}

/// Compares a candidate's outputs with the reference's, output by output,
/// with the tolerance of each output's declared dtype in `graph`. Values
/// are compared as `f64`, so either side may be unrounded.
pub fn compare(
    graph: &Graph,
    reference: &Outputs,
    candidate: &Outputs,
) -> Result<Vec<OutputError>, CheckError> {
    compare_scaled(graph, reference, candidate, 1.0)
}

/// Compiles `graph` for the CPU in checked mode (every memory access
/// bounds-checked), runs it on `inputs` and compares every output with the
/// f64 reference interpreter ([`compare`]).
///
/// # Errors
/// Compilation, the run or the reference failed, or the outputs do not
/// match in name or type.
pub fn compare_cpu(
    graph: &Graph,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<Vec<OutputError>, CheckError> {
    let opts = crate::CompileOptions {
        target: crate::Target::Cpu,
        checked: true,
        ..crate::CompileOptions::default()
    };
    let got = crate::compile_with(graph, &opts)?.run(inputs)?;
    let want = interpret(graph, inputs, &reference_options())?;
    compare(graph, &want, &got)
}

/// [`compare`] with every tolerance multiplied by `factor`: for whole
/// models, where the per-op-family bounds of DESIGN §5 compound through
/// chained layers.
pub fn compare_scaled(
    graph: &Graph,
    reference: &Outputs,
    candidate: &Outputs,
    factor: f64,
) -> Result<Vec<OutputError>, CheckError> {
    compare_outputs(graph, reference, candidate, factor, false)
}

/// How much wider than the reduction row a bf16 output's bound is when two
/// programs that round at different points are compared (module docs).
const BF16_PROGRAMS_FACTOR: f64 = 4.0;

/// [`compare_scaled`]; with `bf16_programs`, bf16 outputs get the uniform
/// bound of the module docs.
fn compare_outputs(
    graph: &Graph,
    reference: &Outputs,
    candidate: &Outputs,
    factor: f64,
    bf16_programs: bool,
) -> Result<Vec<OutputError>, CheckError> {
    let mut out = Vec::new();
    for (i, (name, want)) in reference.iter().enumerate() {
        let Some((cname, got)) = candidate.get(i) else {
            return Err(CheckError::Mismatch {
                name: name.clone(),
                detail: "missing".into(),
            });
        };
        if cname != name || got.shape() != want.shape() {
            let detail = format!("got '{cname}' {} for {}", got.ty(), want.ty());
            return Err(CheckError::Mismatch {
                name: name.clone(),
                detail,
            });
        }
        let declared = graph
            .outputs()
            .get(i)
            .map_or(want.dtype(), |o| graph.ty(o.value).dtype);
        let by_peak = bf16_programs && declared == DType::Bf16;
        let factor = if by_peak {
            factor * BF16_PROGRAMS_FACTOR
        } else {
            factor
        };
        let base = Tolerance::reduction(declared);
        let tol = Tolerance {
            atol: base.atol * factor,
            rtol: base.rtol * factor,
        };
        let (w, g) = (want.to_f64_vec(), got.to_f64_vec());
        let peak = w
            .iter()
            .filter(|x| x.is_finite())
            .fold(0.0f64, |m, x| m.max(x.abs()));
        let floor = if by_peak { peak } else { 1e-3 * peak }.max(f64::MIN_POSITIVE);
        let mut e = OutputError {
            name: name.clone(),
            max_abs: 0.0,
            max_rel: 0.0,
            worst_index: 0,
            tolerance: tol,
            within: true,
        };
        for (k, (&gv, &wv)) in g.iter().zip(&w).enumerate() {
            let (abs, rel, ok) = if gv.is_nan() && wv.is_nan() || gv == wv {
                (0.0, 0.0, true)
            } else {
                let abs = (gv - wv).abs();
                let scale = wv.abs().max(floor);
                (abs, abs / scale, abs <= tol.atol + tol.rtol * scale)
            };
            let abs = if abs.is_nan() { f64::INFINITY } else { abs };
            let rel = if rel.is_nan() { f64::INFINITY } else { rel };
            e.max_abs = e.max_abs.max(abs);
            if rel > e.max_rel || (k == 0 && rel > 0.0) {
                e.max_rel = rel;
                e.worst_index = k;
            }
            e.within &= ok;
        }
        out.push(e);
    }
    Ok(out)
}

/// Runs `graph` and its optimized form on `inputs` in the f64 interpreter
/// and compares them.
pub fn check_optimized(
    graph: &Graph,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<Vec<OutputError>, CheckError> {
    let optimized = birkhoff_opt::optimize(graph, |_| false)?.graph;
    let opts = reference_options();
    let want = interpret(graph, inputs, &opts)?;
    let got = interpret(&optimized, inputs, &opts)?;
    compare(graph, &want, &got)
}

/// Panics, with a table of every output's error, unless `graph`'s
/// optimized form matches it on `inputs` within tolerance.
#[track_caller]
pub fn assert_optimized_matches(graph: &Graph, inputs: &BTreeMap<String, Tensor>) {
    match check_optimized(graph, inputs) {
        Ok(errs) if errs.iter().all(|e| e.within) => {}
        Ok(errs) => {
            let rows: Vec<String> = errs.iter().map(|e| format!("  {e}")).collect();
            panic!(
                "optimized @{} differs from the original:\n{}",
                graph.name(),
                rows.join("\n")
            );
        }
        Err(e) => panic!("could not check @{}: {e}", graph.name()),
    }
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<16} max abs {:.3e}  max rel {:.3e} (at element {})  tolerance rtol {:.0e} atol {:.0e}  {}",
            self.name,
            self.max_abs,
            self.max_rel,
            self.worst_index,
            self.tolerance.rtol,
            self.tolerance.atol,
            if self.within { "ok" } else { "FAIL" }
        )
    }
}

/// The worst case of one output over many random input sets.
#[derive(Clone, Debug, PartialEq)]
pub struct WorstCase {
    /// The worst error seen (its `within` is false if any case failed).
    pub error: OutputError,
    /// The seed of the input set with the largest relative error.
    pub worst_seed: u64,
    /// How many input sets exceeded the tolerance.
    pub failures: usize,
}

/// The result of [`verify_with`] / [`verify_optimized`].
#[derive(Clone, Debug)]
pub struct VerifySummary {
    /// Input sets tried (seeds `seed .. seed + cases`).
    pub cases: usize,
    /// Per output, in signature order.
    pub outputs: Vec<WorstCase>,
}

impl VerifySummary {
    /// Whether every output was within tolerance on every case.
    pub fn passed(&self) -> bool {
        self.outputs.iter().all(|w| w.failures == 0)
    }
}

/// Runs `cases` random input sets (seeds `seed`, `seed + 1`, …) through
/// the reference (the graph in the f64 interpreter, [`reference_options`])
/// and `candidate`, and
/// keeps each output's worst error and the seed that produced it. bf16
/// outputs get the uniform bound of the module docs.
pub fn verify_with(
    graph: &Graph,
    inits: &Inits,
    cases: usize,
    seed: u64,
    mut candidate: impl FnMut(&BTreeMap<String, Tensor>) -> Result<Outputs, CheckError>,
) -> Result<VerifySummary, CheckError> {
    let opts = reference_options();
    let mut worst: Vec<WorstCase> = Vec::new();
    for case in 0..cases {
        let s = seed.wrapping_add(case as u64);
        let inputs = random_inputs(graph, inits, s);
        let want = interpret(graph, &inputs, &opts)?;
        let got = candidate(&inputs)?;
        for (i, e) in compare_outputs(graph, &want, &got, 1.0, true)?
            .into_iter()
            .enumerate()
        {
            if i == worst.len() {
                worst.push(WorstCase {
                    error: e.clone(),
                    worst_seed: s,
                    failures: 0,
                });
            }
            let w = &mut worst[i];
            w.failures += usize::from(!e.within);
            if e.max_rel > w.error.max_rel {
                w.error.max_rel = e.max_rel;
                w.error.worst_index = e.worst_index;
                w.worst_seed = s;
            }
            w.error.max_abs = w.error.max_abs.max(e.max_abs);
            w.error.within &= e.within;
        }
    }
    Ok(VerifySummary {
        cases,
        outputs: worst,
    })
}

/// [`verify_with`] the optimized graph in the f64 interpreter as candidate.
pub fn verify_optimized(
    graph: &Graph,
    inits: &Inits,
    cases: usize,
    seed: u64,
) -> Result<VerifySummary, CheckError> {
    let optimized = birkhoff_opt::optimize(graph, |_| false)?.graph;
    let opts = reference_options();
    verify_with(graph, inits, cases, seed, |inputs| {
        Ok(interpret(&optimized, inputs, &opts)?)
    })
}
