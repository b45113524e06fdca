//! The IR file-test driver: `.bir` files that hold IR in and expectations
//! out (Cranelift's filetests, LLVM's FileCheck).
//!
//! A file starts with a header — one `test <command> [options]` line,
//! optional `set key=value` lines and an optional `target cpu|nvptx` line —
//! followed by one or more graphs, each with its expectations in `;`
//! comment lines after its closing brace. The commands:
//!
//! * `test verify` — every graph must parse and verify, except where a
//!   `; error: <substring>` line right after an IR line expects an error
//!   located on that line; every error must be expected.
//! * `test print` — printing the parsed graph must give back its text.
//! * `test lower [fuse] [gpu] [precise-output] [run]` — lower to kernel IR
//!   (with the GPU target's lowering options when `gpu`) and match the
//!   printed program; `run` interprets it against the graph.
//! * `test llvm [fuse] [ptx] [precise-output] [run]` — lower as the GPU
//!   target does and match its LLVM IR (before optimization), or its PTX
//!   with `ptx`; `run` runs the generated code in the GPU emulator against
//!   the graph. Needs a build with the `gpu` feature; the file-test runner
//!   skips these files in other builds.
//! * `test opt <pass>... | all [precise-output] [run]` — run the passes,
//!   print the result and match it against `check:`/`nextln:`/`sameln:`/
//!   `unordered:`/`not:`/`regex:` directives (the `filecheck` crate), or
//!   with `precise-output` against the whole printed graph written in the
//!   comment block after the input graph. With `run`, the input and the
//!   optimized graph are also interpreted on seeded random inputs and every
//!   output must agree within a relative tolerance.
//!
//! * `test near-miss [precise-output]` — run every pass and match the
//!   fusion report's near misses (one line each, or `no near misses`).
//!
//! * `test recompute [forward=<name>,...] [values=%N,...] [precise-output] [run]`
//!   — rewrite a training graph with `birkhoff_recompute::apply` so that
//!   the saved activations `values` are recomputed in the backward pass
//!   (`forward` names the forward outputs, default `loss`). Without
//!   `values` the general planner chooses them (default policy, smallest
//!   peak) and the printed plan precedes the graph. Expectations and `run`
//!   work as for `test opt`.
//!
//! [`run_file`] runs one file; with `BIRKHOFF_BLESS=1` in the environment
//! it rewrites mismatching `precise-output` blocks in place. A malformed
//! file is a [`FileTestError`] located at `file:line`; expectations that
//! do not hold are [`Failure`]s in the [`Outcome`]. `docs/testing.md` is
//! the guide.
//!
//! ```
//! use birkhoff_filetests::run_text;
//!
//! let text = "
//! test opt simplify run
//!
//! graph @mul_one(%x: f32[4]) -> (y: f32[4]) {
//!   %1 = const 1.0 : f32[4]
//!   %2 = mul %x, %1 : f32[4]
//!   return %2
//! }
//! ; not: mul
//! ; check: return %x
//! ";
//! let outcome = run_text("mul-one.bir", text)?;
//! assert!(outcome.passed(), "{outcome}");
//!
//! let wrong = text.replace("; check: return %x", "; check: return %2");
//! assert!(!run_text("mul-one.bir", &wrong)?.passed());
//! # Ok::<(), birkhoff_filetests::FileTestError>(())
//! ```

mod compare;
mod diff;
mod format;
mod runners;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::format::{Command, Run, Settings, apply_edits, parse_header, split_graphs};
use crate::runners::{Transform, run_opt, run_print, run_verify};

/// The environment variable that makes [`run_file`] rewrite mismatching
/// `precise-output` expectations from the actual output (set it to `1`).
pub const BLESS_VAR: &str = "BIRKHOFF_BLESS";

/// A test file that cannot be run: unreadable, or not in the format.
#[derive(Debug, thiserror::Error)]
pub enum FileTestError {
    /// The file could not be read or rewritten.
    #[error("{file}: {error}")]
    Io {
        /// The file.
        file: String,
        /// What went wrong (in the message, so not also an error source).
        error: std::io::Error,
    },
    /// The file is not a valid test: unknown command or option, missing
    /// graph, bad directive or setting.
    #[error("{file}:{line}: {message}")]
    Malformed {
        /// The file.
        file: String,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// One expectation that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// 1-based line the failure is about (a graph, an IR line, a directive).
    pub line: usize,
    /// What was expected and what happened, possibly over several lines.
    pub message: String,
}

/// The result of running one test file.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The file's name, as given.
    pub file: String,
    /// The test line without `test`, e.g. `opt sinkhorn run`.
    pub command: String,
    /// How many graphs the file holds.
    pub graphs: usize,
    /// Every expectation that did not hold; empty when the test passed.
    pub failures: Vec<Failure>,
    /// How many `precise-output` blocks were rewritten by blessing.
    pub blessed: usize,
}

impl Outcome {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            let s = if self.graphs == 1 { "" } else { "s" };
            write!(
                f,
                "{}: ok (test {}, {} graph{s}",
                self.file, self.command, self.graphs
            )?;
            if self.blessed > 0 {
                write!(f, ", {} blessed", self.blessed)?;
            }
            return f.write_str(")");
        }
        for (i, fail) in self.failures.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            write!(f, "{}:{}: {}", self.file, fail.line, fail.message)?;
        }
        Ok(())
    }
}

/// Every `.bir` file named by `paths`: files as given, directories
/// searched recursively; sorted, for a stable order. Symbolic links to
/// directories inside a searched directory are not followed (a link to
/// `.` would make the search endless); links to files are.
pub fn collect_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|e| e == "bir") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    Ok(out)
}

/// Runs the test file at `path`. With `BIRKHOFF_BLESS=1` set, mismatching
/// `precise-output` blocks are rewritten from the actual output (the file
/// is replaced atomically) and count as passing.
pub fn run_file(path: &Path) -> Result<Outcome, FileTestError> {
    let file = path.display().to_string();
    let io = |error| FileTestError::Io {
        file: file.clone(),
        error,
    };
    let text = birkhoff_io::read_text(path).map_err(io)?;
    let bless = std::env::var(BLESS_VAR).is_ok_and(|v| !v.is_empty() && v != "0");
    let (outcome, rewritten) = run(&file, &text, bless)?;
    if let Some(new) = rewritten {
        birkhoff_io::write_atomic(path, new.as_bytes()).map_err(io)?;
    }
    Ok(outcome)
}

/// Runs a test held in memory; `name` is used in messages. Never blesses:
/// a `precise-output` mismatch is always a failure.
pub fn run_text(name: &str, text: &str) -> Result<Outcome, FileTestError> {
    run(name, text, false).map(|(outcome, _)| outcome)
}

/// Runs the test in `text`; with `bless`, also returns the file rewritten
/// with every mismatching `precise-output` block replaced.
fn run(file: &str, text: &str, bless: bool) -> Result<(Outcome, Option<String>), FileTestError> {
    let mut r = Run {
        file,
        lines: text.lines().collect(),
        settings: Settings::default(),
        failures: Vec::new(),
        edits: Vec::new(),
    };
    let (command, command_text, first) = parse_header(&mut r)?;
    let chunks = split_graphs(&r, first);
    match &command {
        Command::Verify => {
            for &c in &chunks {
                run_verify(&mut r, c)?;
            }
        }
        Command::Print => {
            for &c in &chunks {
                run_print(&mut r, c)?;
            }
        }
        Command::Opt {
            passes,
            precise,
            run,
        } => {
            for &c in &chunks {
                run_opt(&mut r, c, Transform::Opt(passes), *precise, *run, bless)?;
            }
        }
        Command::NearMiss { precise } => {
            for &c in &chunks {
                run_opt(&mut r, c, Transform::NearMiss, *precise, false, bless)?;
            }
        }
        Command::Lower {
            fuse,
            gpu,
            precise,
            run,
        } => {
            for &c in &chunks {
                run_opt(
                    &mut r,
                    c,
                    Transform::Lower {
                        fuse: *fuse,
                        gpu: *gpu,
                    },
                    *precise,
                    *run,
                    bless,
                )?;
            }
        }
        Command::Llvm {
            fuse,
            ptx,
            precise,
            run,
        } => {
            for &c in &chunks {
                run_opt(
                    &mut r,
                    c,
                    Transform::Llvm {
                        fuse: *fuse,
                        ptx: *ptx,
                    },
                    *precise,
                    *run,
                    bless,
                )?;
            }
        }
        Command::Recompute {
            forward,
            values,
            precise,
            run,
        } => {
            for &c in &chunks {
                let t = Transform::Recompute {
                    forward,
                    values: values.as_deref(),
                };
                run_opt(&mut r, c, t, *precise, *run, bless)?;
            }
        }
    }
    let blessed = r.edits.len();
    let rewritten = (blessed > 0).then(|| apply_edits(text, &r.lines, &r.edits));
    let outcome = Outcome {
        file: file.to_string(),
        command: command_text,
        graphs: chunks.len(),
        failures: r.failures,
        blessed,
    };
    Ok((outcome, rewritten))
}

/// Whether a test file's command needs GPU code generation (`test llvm`),
/// which builds without the `gpu` feature cannot run.
pub fn needs_gpu_codegen(text: &str) -> bool {
    text.lines().any(|l| {
        let mut w = l.split(';').next().unwrap_or_default().split_whitespace();
        w.next() == Some("test") && w.next() == Some("llvm")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MUL_ONE: &str = "test opt simplify run

graph @g(%x: f32[4]) -> (y: f32[4]) {
  %1 = const 1.0 : f32[4]
  %2 = mul %x, %1 : f32[4]
  return %2
}
; not: mul
; check: return %x
";

    fn outcome(text: &str) -> Outcome {
        run_text("t.bir", text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The line and message of the malformed-file error `text` gives.
    fn malformed(text: &str) -> (usize, String) {
        match run_text("t.bir", text) {
            Err(FileTestError::Malformed { line, message, .. }) => (line, message),
            other => panic!("expected a malformed-file error, got {other:?}"),
        }
    }
    #[test]
    fn checks_pass_and_wrong_checks_fail() {
        assert!(outcome(MUL_ONE).passed(), "{}", outcome(MUL_ONE));
        let commented = MUL_ONE.replace("simplify run", "simplify run ; x * 1 = x");
        assert!(outcome(&commented).passed());
        let wrong = outcome(&MUL_ONE.replace("check: return %x", "check: return %2"));
        assert!(!wrong.passed());
        assert_eq!(wrong.failures[0].line, 8);
        assert!(wrong.failures[0].message.contains("Missed #1"), "{wrong}");
        let present = outcome(&MUL_ONE.replace("not: mul", "not: graph"));
        assert!(!present.passed(), "a not: that matches must fail");
    }

    #[test]
    fn error_markers_must_match_every_error() {
        let text = "test verify
graph @g(%x: f32[4], %i: i32[4]) -> (y: f32[4]) {
  %2 = exp %i : i32[4]
; error: exp is not defined for i32 operands
  return %x
}
";
        assert!(outcome(text).passed(), "{}", outcome(text));
        let wrong = outcome(&text.replace("exp is not", "log is not"));
        let lines: Vec<usize> = wrong.failures.iter().map(|f| f.line).collect();
        assert_eq!(lines, [4, 3], "{wrong}");
        let unmarked = outcome(&text.replace("; error: exp is not defined for i32 operands\n", ""));
        assert_eq!(unmarked.failures.len(), 1);
        assert!(unmarked.failures[0].message.starts_with("unexpected error"));
        let misplaced = outcome(&text.replace("  return %x\n", "  return %x\n; error: exp\n"));
        assert_eq!(misplaced.failures.len(), 1, "{misplaced}");
        assert!(
            misplaced.failures[0]
                .message
                .contains("on line 5; no error there")
        );
    }

    #[test]
    fn print_must_reproduce_the_text() {
        let text = "test print
graph @g(%x: f32[4]) -> (y: f32[4]) {
  %1 = neg %x : f32[4]
  return %1
}
";
        assert!(outcome(text).passed());
        // Names survive printing; spacing and a float's spelling do not.
        assert!(outcome(&text.replace("%1", "%y")).passed());
        let respaced = outcome(&text.replace("neg %x :", "neg  %x  :"));
        assert!(!respaced.passed());
        assert!(
            respaced.failures[0]
                .message
                .contains("-  %1 = neg  %x  : f32[4]\n+  %1 = neg %x : f32[4]\n"),
            "{}",
            respaced.failures[0].message
        );
    }

    #[test]
    fn precise_output_diffs_and_blesses() {
        let text = MUL_ONE
            .replace("simplify run", "simplify precise-output")
            .replace(
                "; not: mul\n; check: return %x\n",
                "; graph @g(%x: f32[4]) -> (y: f32[4]) {\n;   return %2\n; }\n",
            );
        let failed = outcome(&text);
        assert_eq!(failed.failures.len(), 1);
        let message = &failed.failures[0].message;
        assert!(message.contains("@@ -1,3 +1,3 @@\n graph @g"), "{message}");
        assert!(
            message.contains("-  return %2\n+  return %x\n"),
            "{message}"
        );
        assert!(message.contains(BLESS_VAR));

        let (blessed, rewritten) = run("t.bir", &text, true).unwrap();
        assert!(blessed.passed());
        assert_eq!(blessed.blessed, 1);
        let rewritten = rewritten.expect("blessing rewrites the file");
        assert!(
            rewritten.ends_with("; graph @g(%x: f32[4]) -> (y: f32[4]) {\n;   return %x\n; }\n")
        );
        assert!(outcome(&rewritten).passed());
        assert_eq!(run("t.bir", &rewritten, true).unwrap().1, None);

        // A missing block is added after the graph, separated by a blank line.
        let bare = text.replace(
            "; graph @g(%x: f32[4]) -> (y: f32[4]) {\n;   return %2\n; }\n",
            "",
        );
        let (_, added) = run("t.bir", &bare, true).unwrap();
        assert_eq!(
            added.unwrap(),
            rewritten.replace("}\n; graph", "}\n\n; graph")
        );
    }

    #[test]
    fn malformed_files_are_located_errors() {
        let graph = "graph @g(%x: f32[4]) -> (y: f32[4]) {\n  return %x\n}\n";
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "missing 'test <command>' line"),
            ("test frob\n", 1, "unknown test command 'frob'"),
            ("test opt no-such-pass\n", 1, "unknown pass 'no-such-pass'"),
            ("test opt\n", 1, "needs at least one pass"),
            ("test opt all canonicalize\n", 1, "name no others"),
            ("test verify extra\n", 1, "takes no options"),
            (
                "test verify\nset seed=1\n",
                2,
                "only configures the 'run' option",
            ),
            (
                "test opt simplify run\nset speed=1\n",
                2,
                "unknown setting 'speed'",
            ),
            (
                "test opt simplify run\nset init=uniform(2,1)\n",
                2,
                "set init",
            ),
            (
                "test verify\ntarget gpu\n",
                2,
                "expected 'target cpu' or 'target nvptx'",
            ),
            ("test verify\ntest print\n", 2, "one 'test' line"),
            (
                "test verify\nfoo\n",
                2,
                "expected 'test', 'set', 'target' or a graph",
            ),
        ];
        for &(header, line, message) in cases {
            let (l, m) = malformed(&format!("{header}{graph}"));
            assert_eq!((l, m.contains(message)), (line, true), "{header:?}: {m}");
        }
        let opt = "test opt simplify\n";
        let (l, m) = malformed(&format!("{opt}{graph}"));
        assert_eq!(l, 4);
        assert!(m.contains("no expectations"), "{m}");
        for (directive, message) in [
            ("; chek: x", "did you mean 'check:'"),
            ("; CHECK: x", "did you mean 'check:'"),
            ("; check-next: x", "did you mean 'check:'"),
            ("; check:", "needs a pattern"),
            ("; error: x", "is for 'test verify'"),
            ("; check: $(", "bad directive"),
        ] {
            let (l, m) = malformed(&format!("{opt}{graph}{directive}\n"));
            assert_eq!((l, m.contains(message)), (5, true), "{directive}: {m}");
        }
        let (l, m) = malformed(&format!("test verify\n{graph}; check: x\n"));
        assert_eq!(
            (l, m.contains("not used by 'test verify'")),
            (5, true),
            "{m}"
        );
        let (l, m) = malformed("test verify\n");
        assert_eq!((l, m.contains("missing graph")), (1, true), "{m}");
        let (l, m) = malformed(&format!("test verify\n; error: x\n{graph}"));
        assert_eq!((l, m.contains("before the first graph")), (2, true), "{m}");
    }
}
