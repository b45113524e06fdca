//! Fused-vs-unfused checking: how users trust the compiler on their own
//! graphs.
//!
//! The reference is always the original graph in the f64 interpreter
//! (`docs/design.md`, numerics). A *candidate* — the optimized graph in the
//! same interpreter, or a compiled program — runs on the same inputs, and
//! every output is compared element by element under the workspace's one
//! tolerance rule (`birkhoff_ir::tolerance`):
//!
//! ```text
//! |got - want| <= atol + rtol · max(|want|, floor)
//! ```
//!
//! with `atol`/`rtol` the reduction row of the tolerance table for the
//! output's dtype and `floor` a thousandth of the output's largest value
//! ([`Rule::output`]), which keeps elements that cancel to nearly zero from
//! dominating the relative error.
//!
//! bf16 outputs of [`compare_cases`] (and so [`compare_optimized_cases`]) are
//! compared under [`Rule::rounded_apart`] instead: 4 × the reduction row,
//! measured against the output's peak. A bf16 graph stores every
//! intermediate in 8 bits, where a fused kernel keeps f32 and rounds only
//! its results, so the two programs differ by bf16 units of the largest
//! values an element is computed from, even where the element itself
//! cancels to nearly zero.
//!
//! ```
//! use birkhoff::dsl::zoo::{ModelArgs, build_model};
//! use birkhoff::compare::{assert_optimized_matches, random_inputs};
//!
//! let model = build_model("mhc-pre", &ModelArgs::default())?;
//! let inputs = random_inputs(&model.graph, &model.inits, 7);
//! assert_optimized_matches(&model.graph, &inputs);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Check`] is the one entry point for a user's own checks: fused
//! against unfused ([`Check::optimized`], optionally also computed in the
//! graph's own dtypes to surface f32 overflow) or compiled against the
//! reference ([`Check::cpu`]), with a tolerance the user can tighten, and
//! a [`Verdict`] that prints the rule in words; `docs/testing.md` has a
//! worked property test. For property tests, `birkhoff-testkit` has
//! strategies over sizes and seeds, seeded input sets and zoo models
//! (`sizes_and_seed`, `seeded_inputs`, `zoo_case`); a failed verdict's
//! [`Verdict::into_result`] (like [`check_cpu`]'s error) turns into a
//! proptest failure with `?`.

use std::collections::BTreeMap;
use std::fmt;

pub use birkhoff_dsl::random_inputs;
use birkhoff_dsl::zoo::Inits;
use birkhoff_ir::{DType, Graph, InterpOptions, Precision, Tensor, interpret};

pub use birkhoff_ir::tolerance::{Rule, Tolerance};

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
    /// A check ([`check_cpu`]) failed: an output out of tolerance, or the
    /// candidate could not be compiled or run; the message ends with the
    /// graph.
    #[error("{what}\n{graph}")]
    Failed {
        /// What failed.
        what: String,
        /// The graph checked, printed.
        graph: String,
    },
}

/// Named outputs, as the interpreter returns them.
pub type Outputs = Vec<(String, Tensor)>;

/// [`compare_cpu`] as a pass/fail check: every output within tolerance,
/// and, when `outputs` is given, exactly that many outputs compared. A
/// failure ([`CheckError::Failed`]) carries the graph; in a proptest body,
/// `check_cpu(..)?` makes it the case's failure.
pub fn check_cpu(
    graph: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    outputs: Option<usize>,
) -> Result<(), CheckError> {
    let failed = |what: String| CheckError::Failed {
        what,
        graph: graph_for_message(graph),
    };
    let errs = compare_cpu(graph, inputs).map_err(|e| failed(e.to_string()))?;
    if let Some(n) = outputs
        && errs.len() != n
    {
        return Err(failed(format!(
            "{} outputs compared, {n} expected",
            errs.len()
        )));
    }
    match errs.into_iter().find(|e| !e.within) {
        Some(e) => Err(failed(e.to_string())),
        None => Ok(()),
    }
}

/// Graphs up to this many lines are printed whole in a failure message.
const GRAPH_LINES_IN_MESSAGES: usize = 40;

/// `graph` printed for a failure message, or, past
/// [`GRAPH_LINES_IN_MESSAGES`] lines, a line saying how to see it: a
/// proptest failure should not scroll thousands of lines.
fn graph_for_message(graph: &Graph) -> String {
    let text = graph.to_string();
    let lines = text.lines().count();
    if lines <= GRAPH_LINES_IN_MESSAGES {
        text
    } else {
        format!(
            "(graph @{} has {lines} lines; print it, or dump it with `birkhoff dump`, to see it)",
            graph.name()
        )
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
    /// The `floor` of the rule: the relative part of the bound is
    /// `rtol · max(|want|, floor)` (0 when measured per element).
    pub floor: f64,
    /// Elements compared.
    pub elements: usize,
    /// Elements outside the bound.
    pub failures: usize,
    /// The first element the candidate computed as NaN or ±inf where the
    /// reference is finite, with its value: an overflow the f64 reference
    /// cannot show.
    pub non_finite: Option<(usize, f64)>,
    /// Whether every element is within tolerance.
    pub within: bool,
    /// Of the `failures`, how many were within the same bound of the graph
    /// run in `f32` by the interpreter, and so passed (compiled programs
    /// only, [`compare_compiled`]).
    pub within_f32_run: usize,
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
/// models, where the per-op-family bounds compound through chained layers.
pub fn compare_scaled(
    graph: &Graph,
    reference: &Outputs,
    candidate: &Outputs,
    factor: f64,
) -> Result<Vec<OutputError>, CheckError> {
    compare_with(graph, reference, candidate, |dtype| {
        Rule::output(dtype).scaled(factor)
    })
}

/// Compares a candidate's outputs with the reference's under the rule
/// `rule` gives for each output's declared dtype in `graph` (e.g.
/// `|d| Rule::output(d).scaled(10.0).forgiving_overflow()`).
pub fn compare_with(
    graph: &Graph,
    reference: &Outputs,
    candidate: &Outputs,
    rule: impl Fn(DType) -> Rule,
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
        let rule = rule(declared_dtype(graph, i, want));
        let (got, want) = (got.to_f64_vec(), want.to_f64_vec());
        let c = rule.compare(&got, &want);
        let non_finite = got
            .iter()
            .zip(&want)
            .position(|(g, w)| !g.is_finite() && w.is_finite())
            .map(|k| (k, got[k]));
        out.push(OutputError {
            name: name.clone(),
            max_abs: c.max_abs,
            max_rel: c.max_rel,
            worst_index: c.max_rel_index,
            tolerance: rule.tolerance,
            floor: c.floor,
            elements: c.elements,
            failures: c.failures,
            non_finite,
            within: c.passed(),
            within_f32_run: 0,
        });
    }
    Ok(out)
}

/// The dtype output `i` of `graph` declares (the reference's own where
/// the graph has no such output).
fn declared_dtype(graph: &Graph, i: usize, reference: &Tensor) -> DType {
    graph
        .outputs()
        .get(i)
        .map_or(reference.dtype(), |o| graph.ty(o.value).dtype)
}

/// Compares the outputs of `graph` compiled for an `f32` (or `bf16`)
/// target with two references on the same `inputs`: the f64 oracle
/// ([`reference_options`]) and the interpreter's `f32` mode, under
/// [`Rule::output`] scaled by `factor`, forgiving elements that overflowed
/// on both sides ([`Rule::forgiving_overflow`]).
///
/// An element passes when it is within the rule of the oracle, or of the
/// `f32` reference (an intermediate that overflows or underflows in `f32`
/// does so in compiled code too), or when the `f32` reference is NaN where
/// the oracle is not: there an intermediate overflowed to `inf - inf`,
/// and compiled code that contracts a multiply and an add into one fused
/// multiply-add overflows at another step (to an infinity, or not at all).
/// The errors reported are against the oracle.
pub fn compare_compiled(
    graph: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    candidate: &Outputs,
    factor: f64,
) -> Result<Vec<OutputError>, CheckError> {
    let rule = |d| Rule::output(d).scaled(factor).forgiving_overflow();
    compare_compiled_with(graph, inputs, candidate, rule, Overflow::Forgiven)
}

/// Whether [`compare_compiled_with`] passes a non-finite element where the
/// `f32` reference is also non-finite.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Overflow {
    /// Passed: for the library's own tests, where compiled code and the
    /// interpreter may overflow at different steps of the same formula.
    Forgiven,
    /// Failed, so that a user's check names the first non-finite output.
    Reported,
}

/// [`compare_compiled`] under the rule `rule` gives for each output's
/// declared dtype: an element passes when it is within that rule of the
/// f64 oracle or of the interpreter's `f32` mode, which rounds the same
/// intermediates as compiled code does (where a graph is ill-conditioned,
/// rounding its inputs to `f32` alone can move an output past the oracle's
/// bound).
fn compare_compiled_with(
    graph: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    candidate: &Outputs,
    rule: impl Fn(DType) -> Rule,
    overflow: Overflow,
) -> Result<Vec<OutputError>, CheckError> {
    let oracle = interpret(graph, inputs, &reference_options())?;
    let mut errs = compare_with(graph, &oracle, candidate, &rule)?;
    if errs.iter().all(|e| e.within) {
        return Ok(errs);
    }
    let f32_mode = InterpOptions {
        precision: Precision::F32,
        ..reference_options()
    };
    let single = interpret(graph, inputs, &f32_mode)?;
    for (i, e) in errs.iter_mut().enumerate().filter(|(_, e)| !e.within) {
        let rule = rule(declared_dtype(graph, i, &oracle[i].1));
        let got = candidate[i].1.to_f64_vec();
        let (want, want32) = (oracle[i].1.to_f64_vec(), single[i].1.to_f64_vec());
        let by_oracle = rule.verdicts(&got, &want);
        let by_f32 = rule.verdicts(&got, &want32);
        let forgiven = |k: usize| match overflow {
            Overflow::Forgiven => by_f32[k] || (want32[k].is_nan() && !want[k].is_nan()),
            Overflow::Reported => by_f32[k] && got[k].is_finite(),
        };
        e.within_f32_run = (0..got.len())
            .filter(|&k| !by_oracle[k] && forgiven(k))
            .count();
        e.within = (0..got.len()).all(|k| by_oracle[k] || forgiven(k));
    }
    Ok(errs)
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
    /// One line that states the rule: `ok` means every element satisfied
    /// `|got − want| ≤ atol + rtol·max(|want|, floor)`, so a largest
    /// relative error above `rtol` can still be `ok` (its element was
    /// within `atol`, or below the floor).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.within { "ok" } else { "FAIL" };
        write!(f, "{:<16} {verdict}: ", self.name)?;
        if let Some((k, v)) = self.non_finite.filter(|_| !self.within) {
            write!(
                f,
                "non-finite output: element {k} is {v} where the reference is finite; "
            )?;
        }
        write!(
            f,
            "{} of {} elements outside |got - want| <= {:.0e} + {:.0e}·max(|want|, {:.3e}); \
             largest |got - want| {:.3e}, largest relative {:.3e} (element {})",
            self.failures,
            self.elements,
            self.tolerance.atol,
            self.tolerance.rtol,
            self.floor,
            self.max_abs,
            self.max_rel,
            self.worst_index,
        )?;
        if self.within_f32_run > 0 {
            write!(
                f,
                "; of those, {} within it of the graph run in f32",
                self.within_f32_run
            )?;
        }
        Ok(())
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

/// The result of [`compare_cases`] / [`compare_optimized_cases`].
#[derive(Clone, Debug)]
pub struct CaseSummary {
    /// Input sets tried (seeds `seed .. seed + cases`).
    pub cases: usize,
    /// Per output, in signature order.
    pub outputs: Vec<WorstCase>,
}

impl fmt::Display for CaseSummary {
    /// The worst error of each output over the cases, with the seed that
    /// produced it, under the rule in words (see [`OutputError`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} input sets: {}",
            self.cases,
            if self.passed() { "passed" } else { "FAILED" }
        )?;
        for w in &self.outputs {
            writeln!(
                f,
                "  {} (worst at seed {}; {} of {} sets outside the bound)",
                w.error, w.worst_seed, w.failures, self.cases
            )?;
        }
        Ok(())
    }
}

impl CaseSummary {
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
pub fn compare_cases(
    graph: &Graph,
    inits: &Inits,
    cases: usize,
    seed: u64,
    mut candidate: impl FnMut(&BTreeMap<String, Tensor>) -> Result<Outputs, CheckError>,
) -> Result<CaseSummary, CheckError> {
    let opts = reference_options();
    let mut worst: Vec<WorstCase> = Vec::new();
    for case in 0..cases {
        let s = seed.wrapping_add(case as u64);
        let inputs = random_inputs(graph, inits, s);
        let want = interpret(graph, &inputs, &opts)?;
        let got = candidate(&inputs)?;
        for (i, e) in compare_with(graph, &want, &got, Rule::rounded_apart)?
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
    Ok(CaseSummary {
        cases,
        outputs: worst,
    })
}

/// [`compare_cases`] the optimized graph in the f64 interpreter as candidate.
pub fn compare_optimized_cases(
    graph: &Graph,
    inits: &Inits,
    cases: usize,
    seed: u64,
) -> Result<CaseSummary, CheckError> {
    let optimized = birkhoff_opt::optimize(graph, |_| false)?.graph;
    let opts = reference_options();
    compare_cases(graph, inits, cases, seed, |inputs| {
        Ok(interpret(&optimized, inputs, &opts)?)
    })
}

/// What a [`Check`] runs against the reference (the original graph in the
/// f64 interpreter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Candidate {
    /// The optimized graph, in the same f64 interpreter: the fusions alone.
    Optimized,
    /// The graph optimized and compiled for the CPU (every memory access
    /// bounds-checked), computing in the graph's own dtypes.
    Cpu,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Candidate::Optimized => "the optimized graph (f64 interpreter)",
            Candidate::Cpu => "the compiled CPU program",
        })
    }
}

/// One check of a graph on one input set, configured by its builder
/// methods and run with [`Check::run`]:
///
/// ```
/// use birkhoff::compare::{Check, random_inputs};
/// use birkhoff::dsl::zoo::{ModelArgs, build_model};
///
/// let model = build_model("mhc-sublayer", &ModelArgs::default())?;
/// let inputs = random_inputs(&model.graph, &model.inits, 7);
/// let verdict = Check::optimized().in_declared_dtype().run(&model.graph, &inputs)?;
/// assert!(verdict.passed(), "{verdict}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The default rules, all measured against a thousandth of each output's
/// peak ([`Rule::output`]):
///
/// * the compiled program, and the optimized graph run in its declared
///   dtypes: the tolerance table's reduction row of the output's dtype
///   (f32: `rtol 1e-4`, `atol 1e-5`), for f32 sums in any order. A
///   compiled program's finite element also passes within that row of the
///   graph run in `f32` by the interpreter: where the graph is
///   ill-conditioned, rounding the inputs to `f32` alone can move an
///   output past the f64 reference's bound;
/// * the optimized graph in f64: the *elementwise* row of the output's
///   dtype (f32: `rtol 1e-5`, `atol 1e-6`), ten times tighter. Both sides
///   compute in f64, so reordered sums cost nothing; what remains is that
///   a fused op uses exact constants where the graph holds them rounded
///   to its dtype (an f32 graph's mean multiplies by `1/N` rounded to f32,
///   `rms_norm` divides by `N`), which moves results by a few f32 units.
///   At power-of-two sizes the zoo's fused and unfused graphs agree to
///   1e-13; tighten with [`Check::tolerance`] where yours do too.
#[derive(Clone, Debug)]
pub struct Check {
    candidate: Candidate,
    tolerance: Option<Tolerance>,
    factor: f64,
    in_declared_dtype: bool,
}

impl Check {
    /// Fused against unfused: the optimized graph in the f64 interpreter.
    pub fn optimized() -> Check {
        Check {
            candidate: Candidate::Optimized,
            tolerance: None,
            factor: 1.0,
            in_declared_dtype: false,
        }
    }

    /// Compiled against reference: the CPU program in the graph's dtypes.
    pub fn cpu() -> Check {
        Check {
            candidate: Candidate::Cpu,
            ..Check::optimized()
        }
    }

    /// Compares every output under `|got - want| <= atol + rtol·max(|want|,
    /// floor)` with these `rtol` and `atol` instead of the table's (the
    /// floor stays a thousandth of the output's peak).
    #[must_use]
    pub fn tolerance(self, rtol: f64, atol: f64) -> Check {
        Check {
            tolerance: Some(Tolerance::new(atol, rtol)),
            ..self
        }
    }

    /// Multiplies the tolerance by `factor` (deep models compound the
    /// per-op bounds).
    #[must_use]
    pub fn scaled(self, factor: f64) -> Check {
        Check { factor, ..self }
    }

    /// For [`Check::optimized`]: also runs the optimized graph in its
    /// declared dtypes (f32 arithmetic for f32 and bf16 graphs) and
    /// compares that with the f64 reference under the dtype's row, so
    /// that an f32 overflow (an `exp` past 88, a NaN) shows as a
    /// non-finite output with its first element instead of passing in
    /// f64. The compiled program always computes in its dtypes.
    #[must_use]
    pub fn in_declared_dtype(self) -> Check {
        Check {
            in_declared_dtype: true,
            ..self
        }
    }

    /// The rule for an output of declared dtype `d`: the reduction row of
    /// `d` for a candidate computing in `d`; for the optimized graph in
    /// f64 (`exact_arithmetic`), the elementwise row of `d` (see
    /// [`Check`]).
    fn rule(&self, exact_arithmetic: bool) -> impl Fn(DType) -> Rule + '_ {
        move |d| {
            let mut rule = Rule::output(d);
            if exact_arithmetic {
                rule.tolerance = Tolerance::elementwise(d);
            }
            if let Some(t) = self.tolerance {
                rule.tolerance = t;
            }
            rule.scaled(self.factor)
        }
    }

    /// Runs the reference and the candidate on `inputs` and compares them.
    ///
    /// # Errors
    /// The graph could not be optimized, compiled or interpreted, or the
    /// candidate's outputs differ in name or shape. Numbers out of
    /// tolerance are not an error: they are in the [`Verdict`].
    pub fn run(
        &self,
        graph: &Graph,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<Verdict, CheckError> {
        let reference = interpret(graph, inputs, &reference_options())?;
        let optimized = birkhoff_opt::optimize(graph, |_| false)?.graph;
        let (outputs, declared) = match self.candidate {
            Candidate::Optimized => {
                let got = interpret(&optimized, inputs, &reference_options())?;
                let outputs = compare_with(graph, &reference, &got, self.rule(true))?;
                let declared = if self.in_declared_dtype {
                    let f32_mode = InterpOptions {
                        precision: Precision::F32,
                        ..reference_options()
                    };
                    let got = interpret(&optimized, inputs, &f32_mode)?;
                    compare_with(graph, &reference, &got, self.rule(false))?
                } else {
                    Vec::new()
                };
                (outputs, declared)
            }
            Candidate::Cpu => {
                let opts = crate::CompileOptions {
                    target: crate::Target::Cpu,
                    checked: true,
                    optimize: false,
                    ..crate::CompileOptions::default()
                };
                let got = crate::compile_with(&optimized, &opts)?.run(inputs)?;
                (
                    compare_compiled_with(
                        graph,
                        inputs,
                        &got,
                        self.rule(false),
                        Overflow::Reported,
                    )?,
                    Vec::new(),
                )
            }
        };
        Ok(Verdict {
            graph: graph.name().to_string(),
            candidate: self.candidate,
            outputs,
            declared,
        })
    }
}

/// What a [`Check`] found: every output's error against the reference,
/// and the rule it was judged by, in words (`Display`).
#[derive(Clone, Debug)]
pub struct Verdict {
    /// The graph's name.
    pub graph: String,
    /// What ran against the reference.
    pub candidate: Candidate,
    /// Per output, in signature order: the candidate against the reference.
    pub outputs: Vec<OutputError>,
    /// Per output, the candidate run in its declared dtypes against the
    /// reference ([`Check::in_declared_dtype`]; empty otherwise).
    pub declared: Vec<OutputError>,
}

impl Verdict {
    /// Whether every output is within its bound (in both comparisons).
    pub fn passed(&self) -> bool {
        self.outputs.iter().chain(&self.declared).all(|e| e.within)
    }

    /// `Ok(self)` if it passed, else [`CheckError::Failed`] with the whole
    /// verdict: in a proptest body, `check.run(..)?.into_result()?` fails
    /// the case with it (proptest turns any error into a failure).
    ///
    /// # Errors
    /// An output out of tolerance.
    pub fn into_result(self) -> Result<Verdict, CheckError> {
        if self.passed() {
            Ok(self)
        } else {
            Err(CheckError::Failed {
                what: self.to_string(),
                graph: String::new(),
            })
        }
    }

    /// Panics with the whole verdict unless it passed: for a plain
    /// `#[test]`.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.passed(), "{self}");
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "@{}: {} against the original graph in the f64 interpreter: {}",
            self.graph,
            self.candidate,
            if self.passed() { "passed" } else { "FAILED" }
        )?;
        writeln!(
            f,
            "  (an element is ok when |got - want| <= atol + rtol·max(|want|, floor); \
             floor is a thousandth of the output's largest |want|{})",
            match self.candidate {
                Candidate::Cpu =>
                    "; a finite element is also ok within that bound of the graph run in f32",
                Candidate::Optimized => "",
            }
        )?;
        for e in &self.outputs {
            writeln!(f, "  {e}")?;
        }
        if !self.declared.is_empty() {
            writeln!(f, "  computed in the graph's own dtypes:")?;
            for e in &self.declared {
                writeln!(f, "  {e}")?;
            }
        }
        Ok(())
    }
}
