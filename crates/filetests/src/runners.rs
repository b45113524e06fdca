//! The commands: `test verify`, `test print`, and the transformations
//! (`test opt`, `lower`, `llvm`, `recompute`) whose printed result is
//! matched against directives or a `precise-output` block and, with `run`,
//! checked numerically against the input graph.

use std::collections::BTreeMap;

use birkhoff_ir::{
    Graph, InterpOptions, Tensor, interpret, parse_module_with_locations, verify_located,
};
use birkhoff_opt::{Pass, run_passes};

use crate::compare::equivalent;
use crate::diff::unified_diff;
use crate::format::{Chunk, Run, comment, expectation_block, is_blank_or_comment, parse_graph_at};
use crate::{BLESS_VAR, FileTestError};

/// The transformation a `test opt` or `test lower` file checks.
#[derive(Clone, Copy)]
pub(crate) enum Transform<'a> {
    Opt(&'a [&'static Pass]),
    NearMiss,
    Lower {
        fuse: bool,
        gpu: bool,
    },
    Llvm {
        fuse: bool,
        ptx: bool,
    },
    Recompute {
        forward: &'a [String],
        values: Option<&'a [usize]>,
    },
}

// ---- test verify --------------------------------------------------------------

pub(crate) fn run_verify(r: &mut Run<'_>, c: Chunk) -> Result<(), FileTestError> {
    // (line the marker is about, substring, marker line), 0-based.
    let mut expected: Vec<(usize, String, usize)> = Vec::new();
    // The chunk starts with the graph line, so every marker follows one.
    let mut last_ir = c.start;
    for i in c.start..c.stop {
        match r.directive(i)? {
            Some(("error", pattern)) => expected.push((last_ir, pattern.to_string(), i)),
            Some((kw, _)) => {
                let message = format!(
                    "'{kw}:' is not used by 'test verify'; mark errors with '; error: <substring>'"
                );
                return Err(r.malformed(i, message));
            }
            None if !is_blank_or_comment(r.lines[i]) => last_ir = i,
            None => {}
        }
    }
    // Every error the parser or verifier reports: (0-based line, message).
    let text = r.graph_text(c);
    let found: Vec<(usize, String)> = match parse_module_with_locations(&text) {
        Err(e) => vec![(e.line.saturating_sub(1), e.message)],
        Ok(graphs) => {
            let mut found = Vec::new();
            for (g, map) in &graphs {
                if let Err(errs) = verify_located(g, map) {
                    for e in errs.errors {
                        let line = e.location.map_or(c.start, |(l, _)| l.saturating_sub(1));
                        found.push((line, e.message));
                    }
                }
            }
            found
        }
    };
    let mut used = vec![false; found.len()];
    for (at, pattern, marker) in &expected {
        let hit = found
            .iter()
            .position(|(line, msg)| line == at && msg.contains(pattern.as_str()));
        match hit {
            Some(k) => used[k] = true,
            None => {
                let here: Vec<&str> = found
                    .iter()
                    .filter(|(line, _)| line == at)
                    .map(|(_, m)| m.as_str())
                    .collect();
                let got = if here.is_empty() {
                    "no error there".to_string()
                } else {
                    format!("got: {}", here.join("; "))
                };
                r.fail(
                    *marker,
                    format!(
                        "expected an error containing '{pattern}' on line {}; {got}",
                        at + 1
                    ),
                );
            }
        }
    }
    for ((line, msg), used) in found.iter().zip(used) {
        // An expectation may match one error that another expectation
        // also matched; any error nobody expected fails.
        let expected_here = expected
            .iter()
            .any(|(at, p, _)| at == line && msg.contains(p.as_str()));
        if !used && !expected_here {
            r.fail(*line, format!("unexpected error: {msg}"));
        }
    }
    Ok(())
}

// ---- test print ---------------------------------------------------------------

pub(crate) fn run_print(r: &mut Run<'_>, c: Chunk) -> Result<(), FileTestError> {
    for i in c.start..c.stop {
        if let Some((kw, _)) = r.directive(i)? {
            return Err(r.malformed(
                i,
                format!("'test print' takes no directives, found '{kw}:'"),
            ));
        }
    }
    let graph = match parse_graph_at(r, c) {
        Ok(g) => g,
        Err((line, msg)) => {
            r.fail(line, msg);
            return Ok(());
        }
    };
    let printed = graph.to_string();
    let actual: Vec<&str> = printed.trim_end().lines().collect();
    let input: Vec<&str> = r.lines[c.start..=c.end]
        .iter()
        .map(|l| l.trim_end())
        .collect();
    if actual != input {
        let message = format!(
            "graph @{} does not print as written:\n{}",
            graph.name(),
            unified_diff(&input, &actual, "written", "printed")
        );
        r.fail(c.start, message);
    }
    Ok(())
}

// ---- test opt -----------------------------------------------------------------

pub(crate) fn run_opt(
    r: &mut Run<'_>,
    c: Chunk,
    transform: Transform<'_>,
    precise: bool,
    equiv: bool,
    bless: bool,
) -> Result<(), FileTestError> {
    // Expectations: the precise-output block, or directives.
    let block = precise.then(|| expectation_block(r, c));
    let mut checker = filecheck::CheckerBuilder::new();
    let mut directives = Vec::new();
    for i in c.start..c.stop {
        let Some((kw, _)) = r.directive(i)? else {
            continue;
        };
        if kw == "error" {
            return Err(r.malformed(i, "'error:' is for 'test verify'"));
        }
        if precise {
            return Err(r.malformed(i, format!("'{kw}:' cannot be used with precise-output")));
        }
        if i <= c.end {
            return Err(r.malformed(
                i,
                format!("'{kw}:' inside the graph: expectations go after its closing brace"),
            ));
        }
        let text = comment(r.lines[i]).unwrap_or_default();
        checker
            .directive(text)
            .map_err(|e| r.malformed(i, format!("bad directive: {e}")))?;
        directives.push(i);
    }
    if !precise && directives.is_empty() {
        return Err(r.malformed(
            c.end,
            "graph has no expectations: add '; check:' lines after it, or use precise-output",
        ));
    }

    let graph = match parse_graph_at(r, c) {
        Ok(g) => g,
        Err((line, msg)) => {
            r.fail(line, msg);
            return Ok(());
        }
    };
    let (printed, candidate) = match apply(&graph, transform) {
        Ok(x) => x,
        Err(e) => {
            r.fail(c.start, format!("graph @{}: {e}", graph.name()));
            return Ok(());
        }
    };
    let printed = format!("{}\n", printed.trim_end());

    if let Some((lo, hi)) = block {
        let expected: Vec<String> = r.lines[lo..hi]
            .iter()
            .map(|l| {
                let t = comment(l).unwrap_or_default();
                t.strip_prefix(' ').unwrap_or(t).trim_end().to_string()
            })
            .collect();
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        let actual: Vec<&str> = printed.lines().collect();
        if expected != actual {
            if bless {
                let new = actual.iter().map(|l| {
                    if l.is_empty() {
                        ";".to_string()
                    } else {
                        format!("; {l}")
                    }
                });
                let new: Vec<String> = if lo == hi {
                    std::iter::once(String::new()).chain(new).collect()
                } else {
                    new.collect()
                };
                r.edits.push((lo, hi, new));
            } else {
                let at = if lo == hi { c.end } else { lo };
                let message = format!(
                    "graph @{}: the result differs from the precise-output block:\n{}\n\
                     run with {BLESS_VAR}=1 to accept the actual output",
                    graph.name(),
                    unified_diff(&expected, &actual, "expected", "actual")
                );
                r.fail(at, message);
            }
        }
    } else {
        let checker = checker.finish();
        match checker.explain(&printed, filecheck::NO_VARIABLES) {
            Ok((true, _)) => {}
            Ok((false, explanation)) => {
                let listing: Vec<String> = directives
                    .iter()
                    .enumerate()
                    .map(|(k, &i)| {
                        format!(
                            "  #{k} (line {}) {}",
                            i + 1,
                            comment(r.lines[i]).unwrap_or_default().trim()
                        )
                    })
                    .collect();
                let message = format!(
                    "graph @{}: the result does not match the directives\n\
                     {}\n{explanation}",
                    graph.name(),
                    listing.join("\n")
                );
                r.fail(directives[0], message);
            }
            Err(e) => return Err(r.malformed(directives[0], format!("bad directive: {e}"))),
        }
    }

    if equiv && let Err(message) = equivalent(&graph, &candidate, &r.settings) {
        r.fail(
            c.start,
            format!(
                "graph @{}: the transformed program computes something else: {message}",
                graph.name()
            ),
        );
    }
    Ok(())
}

/// What a transformation produced: an optimized graph or a kernel program.
pub(crate) enum Candidate {
    Graph(Graph),
    Program(birkhoff_ir::kernel::Program),
    /// A program lowered for the GPU, run through the GPU code generator
    /// and its host emulator.
    Gpu(birkhoff_ir::kernel::Program),
}

impl Candidate {
    pub(crate) fn run(
        &self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<Vec<(String, Tensor)>, String> {
        match self {
            Candidate::Graph(g) => interpret(g, inputs, &InterpOptions::default())
                .map_err(|e| format!("optimized graph: {e}")),
            Candidate::Program(p) => {
                birkhoff_ir::kernel::run_program(p, inputs, birkhoff_ir::Precision::F64)
                    .map_err(|e| format!("lowered program: {e}"))
            }
            Candidate::Gpu(p) => run_emulated(p, inputs),
        }
    }
}

/// Applies a transformation; returns its printed form and the result.
fn apply(graph: &Graph, t: Transform<'_>) -> Result<(String, Candidate), String> {
    match t {
        Transform::Recompute { forward, values } => {
            use birkhoff_recompute::{Objective, Policy, TensorProgram};
            let fwd: Vec<&str> = forward.iter().map(String::as_str).collect();
            let (header, chosen) = match values {
                Some(v) => (
                    String::new(),
                    v.iter().map(|&i| birkhoff_ir::ValueId::new(i)).collect(),
                ),
                None => {
                    let p = TensorProgram::from_graph(graph, &fwd, Policy::default())
                        .map_err(|e| format!("recompute failed: {e}"))?;
                    let plan = birkhoff_recompute::plan(&p, Objective::MinPeak { max_cost: None })
                        .map_err(|e| format!("recompute planning failed: {e}"))?;
                    (format!("{plan}\n"), plan.recompute_values(&p))
                }
            };
            let g = birkhoff_recompute::apply(graph, &fwd, &chosen)
                .map_err(|e| format!("recompute failed: {e}"))?;
            Ok((format!("{header}{g}"), Candidate::Graph(g)))
        }
        Transform::NearMiss => {
            let out = birkhoff_opt::optimize(graph, |_| false)
                .map_err(|e| format!("optimizer failed: {e}"))?;
            let lines: Vec<String> = out
                .report
                .near_misses
                .iter()
                .map(|m| m.to_string())
                .collect();
            let text = if lines.is_empty() {
                "no near misses".to_string()
            } else {
                lines.join("\n")
            };
            Ok((text, Candidate::Graph(out.graph)))
        }
        Transform::Opt(passes) => {
            let names: Vec<Pass> = passes.iter().map(|&&p| p).collect();
            let g = run_passes(graph, &names, |_| false)
                .map_err(|e| format!("optimizer failed: {e}"))?
                .graph;
            Ok((g.to_string(), Candidate::Graph(g)))
        }
        Transform::Lower { fuse, gpu } => {
            let g = if fuse {
                birkhoff_opt::optimize(graph, |_| false)
                    .map_err(|e| format!("optimizer failed: {e}"))?
                    .graph
            } else {
                graph.clone()
            };
            let opts = if gpu {
                birkhoff_lower::LowerOptions::gpu(Default::default())
            } else {
                birkhoff_lower::LowerOptions::default()
            };
            let p =
                birkhoff_lower::lower(&g, &opts).map_err(|e| format!("lowering failed: {e}"))?;
            Ok((p.to_string(), Candidate::Program(p)))
        }
        Transform::Llvm { fuse, ptx } => {
            let g = if fuse {
                birkhoff_opt::optimize(graph, |_| false)
                    .map_err(|e| format!("optimizer failed: {e}"))?
                    .graph
            } else {
                graph.clone()
            };
            let p =
                birkhoff_lower::lower(&g, &birkhoff_lower::LowerOptions::gpu(Default::default()))
                    .map_err(|e| format!("lowering failed: {e}"))?;
            let opts = birkhoff_gpu::CodegenOptions::default();
            let text = if ptx {
                birkhoff_gpu::compile_module(&p, &opts).map(|m| m.ptx)
            } else {
                birkhoff_gpu::emit_llvm(&p, &opts)
            }
            .map_err(|e| format!("GPU code generation failed: {e}"))?;
            Ok((text, Candidate::Gpu(p)))
        }
    }
}

/// Runs a GPU program in the host emulator (builds with GPU code
/// generation; others report that they cannot).
fn run_emulated(
    p: &birkhoff_ir::kernel::Program,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<Vec<(String, Tensor)>, String> {
    birkhoff_gpu::emulate(p, &birkhoff_gpu::CodegenOptions::default(), inputs)
        .map_err(|e| format!("emulated GPU program: {e}"))
}
