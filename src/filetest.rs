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
//! * `test lower [fuse] [precise-output] [run]` — lower to kernel IR and
//!   match the printed program; `run` interprets it against the graph.
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
//! use birkhoff::filetest::run_text;
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
//! # Ok::<(), birkhoff::filetest::FileTestError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use birkhoff_dsl::{Init, Rng, random_tensor};
use birkhoff_ir::{
    DType, Graph, InterpOptions, Op, Tensor, interpret, parse_module_with_locations, verify_located,
};
use birkhoff_opt::{PASSES, Pass, pass, run_passes};

/// The environment variable that makes [`run_file`] rewrite mismatching
/// `precise-output` expectations from the actual output (set it to `1`).
pub const BLESS_VAR: &str = "BIRKHOFF_BLESS";

/// The `check:`-style directives, handed to the `filecheck` crate.
const CHECK_DIRECTIVES: &[&str] = &["check", "sameln", "nextln", "unordered", "not", "regex"];

/// A test file that cannot be run: unreadable, or not in the format.
#[derive(Debug, thiserror::Error)]
pub enum FileTestError {
    /// The file could not be read or rewritten.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
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
/// searched recursively; sorted, for a stable order.
pub fn collect_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
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
    let io = |source| FileTestError::Io {
        file: file.clone(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let bless = std::env::var(BLESS_VAR).is_ok_and(|v| !v.is_empty() && v != "0");
    let (outcome, rewritten) = run(&file, &text, bless)?;
    if let Some(new) = rewritten {
        crate::write_atomic(path, new.as_bytes()).map_err(io)?;
    }
    Ok(outcome)
}

/// Runs a test held in memory; `name` is used in messages. Never blesses:
/// a `precise-output` mismatch is always a failure.
pub fn run_text(name: &str, text: &str) -> Result<Outcome, FileTestError> {
    run(name, text, false).map(|(outcome, _)| outcome)
}

// ---- the file format --------------------------------------------------------

/// What a file asks for.
enum Command {
    Verify,
    Print,
    Opt {
        passes: Vec<&'static Pass>,
        precise: bool,
        run: bool,
    },
    /// Lowering to kernel IR (after every optimizer pass when `fuse`).
    Lower {
        fuse: bool,
        precise: bool,
        run: bool,
    },
    /// Lowering for the GPU and its LLVM IR (or PTX when `ptx`).
    Llvm {
        fuse: bool,
        ptx: bool,
        precise: bool,
        run: bool,
    },
    /// The recomputation rewrite, of given values or of the planner's choice.
    Recompute {
        forward: Vec<String>,
        values: Option<Vec<usize>>,
        precise: bool,
        run: bool,
    },
}

/// The transformation a `test opt` or `test lower` file checks.
#[derive(Clone, Copy)]
enum Transform<'a> {
    Opt(&'a [&'static Pass]),
    Lower {
        fuse: bool,
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

/// `set` values: how the `run` option draws inputs and compares outputs.
struct Settings {
    seed: u64,
    trials: usize,
    rtol: Option<f64>,
    init: Init,
    /// Line of the first `set`, for the error when nothing uses it.
    line: Option<usize>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            seed: 0,
            trials: 2,
            rtol: None,
            init: Init::default(),
            line: None,
        }
    }
}

/// One graph of a file: lines `start..=end` hold its text (`end` is its
/// last non-comment line), lines `end + 1..stop` its expectations. Indices
/// are 0-based.
#[derive(Clone, Copy)]
struct Chunk {
    start: usize,
    end: usize,
    stop: usize,
}

/// A file being run.
struct Run<'a> {
    file: &'a str,
    lines: Vec<&'a str>,
    settings: Settings,
    failures: Vec<Failure>,
    /// `(lines start..end, replacement)` for blessing, in file order.
    edits: Vec<(usize, usize, Vec<String>)>,
}

impl Run<'_> {
    fn malformed(&self, index: usize, message: impl Into<String>) -> FileTestError {
        FileTestError::Malformed {
            file: self.file.to_string(),
            line: index + 1,
            message: message.into(),
        }
    }

    fn fail(&mut self, index: usize, message: impl Into<String>) {
        self.failures.push(Failure {
            line: index + 1,
            message: message.into(),
        });
    }

    /// The graph's text, preceded by blank lines so that the parser's
    /// line numbers are the file's.
    fn graph_text(&self, c: Chunk) -> String {
        let mut s = "\n".repeat(c.start);
        s.push_str(&self.lines[c.start..=c.end].join("\n"));
        s.push('\n');
        s
    }

    /// The directive on line `i`, if it has one.
    fn directive(&self, i: usize) -> Result<Option<(&str, &str)>, FileTestError> {
        directive(self.lines[i]).map_err(|m| self.malformed(i, m))
    }
}

/// The text after `;` if the line is a comment line.
fn comment(line: &str) -> Option<&str> {
    line.trim_start().strip_prefix(';')
}

fn is_blank_or_comment(line: &str) -> bool {
    line.trim().is_empty() || comment(line).is_some()
}

fn is_graph_start(line: &str) -> bool {
    line.trim_start().strip_prefix("graph").is_some_and(|rest| {
        rest.is_empty() || rest.starts_with(|c: char| c.is_whitespace() || c == '@')
    })
}

/// A directive is a comment whose text starts with a directive keyword, a
/// colon and a space (`; check: mhc_pre`). Returns `(keyword, rest)`.
///
/// A comment that starts with what looks like a misspelt directive
/// (`chek:`, `CHECK:`, `check-next:`, `erorr:`) is an error rather than
/// prose, so a typo cannot silently check nothing; other words with a
/// colon (`; softmax: ...`) are prose.
fn directive(line: &str) -> Result<Option<(&str, &str)>, String> {
    let Some(text) = comment(line).map(str::trim_start) else {
        return Ok(None);
    };
    let Some((kw, rest)) = text.split_once(':') else {
        return Ok(None);
    };
    let is_word = !kw.is_empty() && kw.chars().all(|c| c.is_ascii_alphabetic() || c == '-');
    if !is_word || !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return Ok(None);
    }
    let known = CHECK_DIRECTIVES.iter().chain(&["error"]).copied();
    if !known.clone().any(|k| k == kw) {
        let lower = kw.to_ascii_lowercase();
        let near = known.clone().find(|k| {
            lower == *k
                || lower.starts_with(k) && k.len() >= 5
                || k.len() >= 5 && edit_distance(&lower, k) <= 1
        });
        return match near {
            Some(k) => Err(format!(
                "'{kw}:' looks like a misspelt directive; did you mean '{k}:'? (directives: {})",
                known.collect::<Vec<_>>().join(", ")
            )),
            None => Ok(None),
        };
    }
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(format!("'{kw}:' needs a pattern"));
    }
    Ok(Some((kw, rest)))
}

/// Levenshtein distance between two short ASCII words.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

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
        Command::Lower { fuse, precise, run } => {
            for &c in &chunks {
                run_opt(
                    &mut r,
                    c,
                    Transform::Lower { fuse: *fuse },
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

/// Reads the header; returns the command, its text and the index of the
/// first graph line.
fn parse_header(r: &mut Run<'_>) -> Result<(Command, String, usize), FileTestError> {
    let mut command: Option<(Command, String)> = None;
    let mut target_seen = false;
    let mut first = r.lines.len();
    for (i, line) in r.lines.iter().enumerate() {
        if is_graph_start(line) {
            first = i;
            break;
        }
        if is_blank_or_comment(line) {
            if let Some((kw, _)) = r.directive(i)? {
                let message =
                    format!("'{kw}:' before the first graph: expectations go after their graph");
                return Err(r.malformed(i, message));
            }
            continue;
        }
        // A header line may end in a comment, as IR lines may.
        let content = line.split(';').next().unwrap_or_default();
        let mut words = content.split_whitespace();
        match words.next() {
            Some("test") => {
                if command.is_some() {
                    return Err(r.malformed(i, "a file has one 'test' line"));
                }
                let text = words.clone().collect::<Vec<_>>().join(" ");
                command = Some((parse_command(words).map_err(|m| r.malformed(i, m))?, text));
            }
            Some("set") => {
                let pairs: Vec<&str> = words.collect();
                if pairs.is_empty() {
                    return Err(r.malformed(i, "'set' needs key=value pairs"));
                }
                for p in pairs {
                    set(&mut r.settings, p).map_err(|m| r.malformed(i, m))?;
                }
                r.settings.line.get_or_insert(i);
            }
            Some("target") => {
                let names: Vec<&str> = words.collect();
                if target_seen {
                    return Err(r.malformed(i, "a file has at most one 'target' line"));
                }
                if !matches!(names.as_slice(), ["cpu"] | ["nvptx"]) {
                    return Err(r.malformed(i, "expected 'target cpu' or 'target nvptx'"));
                }
                target_seen = true;
            }
            _ => {
                return Err(r.malformed(
                    i,
                    format!(
                        "expected 'test', 'set', 'target' or a graph, found '{}'",
                        line.trim()
                    ),
                ));
            }
        }
    }
    let Some((command, text)) = command else {
        return Err(r.malformed(0, "missing 'test <command>' line"));
    };
    if first == r.lines.len() {
        return Err(r.malformed(
            r.lines.len().saturating_sub(1),
            "missing graph: the file holds no 'graph'",
        ));
    }
    let uses_settings = matches!(
        command,
        Command::Opt { run: true, .. }
            | Command::Lower { run: true, .. }
            | Command::Llvm { run: true, .. }
            | Command::Recompute { run: true, .. }
    );
    if let (Some(i), false) = (r.settings.line, uses_settings) {
        return Err(r.malformed(i, "'set' only configures the 'run' option of 'test opt'"));
    }
    Ok((command, text, first))
}

fn parse_command<'a>(mut words: impl Iterator<Item = &'a str>) -> Result<Command, String> {
    let name = words
        .next()
        .ok_or("'test' needs a command (verify, print, opt, lower)")?;
    let options: Vec<&str> = words.collect();
    match name {
        "verify" | "print" => {
            if let Some(o) = options.first() {
                return Err(format!("'test {name}' takes no options, found '{o}'"));
            }
            Ok(if name == "verify" {
                Command::Verify
            } else {
                Command::Print
            })
        }
        "opt" => {
            let (mut passes, mut precise, mut run, mut all) = (Vec::new(), false, false, false);
            for o in options {
                match o {
                    "precise-output" => precise = true,
                    "run" => run = true,
                    "all" => all = true,
                    _ => passes.push(
                        pass(o).map_err(|e| format!("{e}; options: all, precise-output, run"))?,
                    ),
                }
            }
            if all && !passes.is_empty() {
                return Err("'all' runs every pass; name no others".to_string());
            }
            if all {
                passes = PASSES.iter().collect();
            }
            if passes.is_empty() {
                return Err("'test opt' needs at least one pass, or 'all'".to_string());
            }
            Ok(Command::Opt {
                passes,
                precise,
                run,
            })
        }
        "lower" => {
            let (mut fuse, mut precise, mut run) = (false, false, false);
            for o in options {
                match o {
                    "fuse" => fuse = true,
                    "precise-output" => precise = true,
                    "run" => run = true,
                    _ => {
                        return Err(format!(
                            "unknown option '{o}' for 'test lower' (options: fuse, precise-output, run)"
                        ));
                    }
                }
            }
            Ok(Command::Lower { fuse, precise, run })
        }
        "llvm" => {
            let (mut fuse, mut ptx, mut precise, mut run) = (false, false, false, false);
            for o in options {
                match o {
                    "fuse" => fuse = true,
                    "ptx" => ptx = true,
                    "precise-output" => precise = true,
                    "run" => run = true,
                    _ => {
                        return Err(format!(
                            "unknown option '{o}' for 'test llvm' (options: fuse, ptx, precise-output, run)"
                        ));
                    }
                }
            }
            Ok(Command::Llvm {
                fuse,
                ptx,
                precise,
                run,
            })
        }
        "recompute" => {
            let (mut forward, mut values, mut precise, mut run) =
                (vec!["loss".to_string()], None, false, false);
            for o in options {
                match o.split_once('=') {
                    Some(("forward", v)) => {
                        forward = v.split(',').map(str::to_string).collect();
                    }
                    Some(("values", v)) => {
                        let ids = v
                            .split(',')
                            .map(|x| x.strip_prefix('%').and_then(|n| n.parse().ok()))
                            .collect::<Option<Vec<usize>>>()
                            .ok_or_else(|| format!("values: expected %N,%M,..., found '{v}'"))?;
                        values = Some(ids);
                    }
                    _ => match o {
                        "precise-output" => precise = true,
                        "run" => run = true,
                        _ => {
                            return Err(format!(
                                "unknown option '{o}' for 'test recompute' (options: forward=, values=, precise-output, run)"
                            ));
                        }
                    },
                }
            }
            Ok(Command::Recompute {
                forward,
                values,
                precise,
                run,
            })
        }
        _ => Err(format!(
            "unknown test command '{name}' (commands: verify, print, opt, lower, llvm, recompute)"
        )),
    }
}

fn set(s: &mut Settings, pair: &str) -> Result<(), String> {
    let (key, value) = pair
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, found '{pair}'"))?;
    let bad = |what: &str| format!("set {key}: expected {what}, found '{value}'");
    match key {
        "seed" => s.seed = value.parse().map_err(|_| bad("an unsigned integer"))?,
        "trials" => {
            s.trials = value
                .parse()
                .ok()
                .filter(|t| (1..=100).contains(t))
                .ok_or_else(|| bad("an integer in 1..=100"))?;
        }
        "rtol" => {
            s.rtol = Some(
                value
                    .parse()
                    .ok()
                    .filter(|t: &f64| t.is_finite() && *t >= 0.0)
                    .ok_or_else(|| bad("a finite number >= 0"))?,
            );
        }
        "init" => {
            s.init = parse_init(value)
                .ok_or_else(|| bad("normal, normal(MEAN,STD) or uniform(LOW,HIGH)"))?;
        }
        _ => {
            return Err(format!(
                "unknown setting '{key}' (settings: seed, trials, rtol, init)"
            ));
        }
    }
    Ok(())
}

fn parse_init(v: &str) -> Option<Init> {
    if v == "normal" {
        return Some(Init::default());
    }
    let (name, args) = v.strip_suffix(')')?.split_once('(')?;
    let (a, b) = args.split_once(',')?;
    let (a, b): (f64, f64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    if !a.is_finite() || !b.is_finite() {
        return None;
    }
    match name {
        "normal" if b >= 0.0 => Some(Init::Normal { mean: a, std: b }),
        "uniform" if a < b => Some(Init::Uniform { low: a, high: b }),
        _ => None,
    }
}

/// Splits the body into graphs: each starts at a `graph` line and runs to
/// the next one.
fn split_graphs(r: &Run<'_>, first: usize) -> Vec<Chunk> {
    let starts: Vec<usize> = (first..r.lines.len())
        .filter(|&i| is_graph_start(r.lines[i]))
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &start)| {
            let stop = starts.get(k + 1).copied().unwrap_or(r.lines.len());
            let end = (start..stop)
                .rev()
                .find(|&i| !is_blank_or_comment(r.lines[i]))
                .unwrap_or(start);
            Chunk { start, end, stop }
        })
        .collect()
}

/// Parses and verifies a chunk's graph; `Err` is `(0-based line, message)`.
fn parse_graph_at(r: &Run<'_>, c: Chunk) -> Result<Graph, (usize, String)> {
    let graphs = parse_module_with_locations(&r.graph_text(c)).map_err(|e| {
        (
            e.line.saturating_sub(1),
            format!("parse error: {}", e.message),
        )
    })?;
    let [(graph, map)]: [_; 1] = graphs.try_into().map_err(|g: Vec<_>| {
        (
            c.start,
            format!("expected one graph here, found {}", g.len()),
        )
    })?;
    verify_located(&graph, &map).map_err(|errs| (c.start, errs.to_string()))?;
    Ok(graph)
}

// ---- test verify --------------------------------------------------------------

fn run_verify(r: &mut Run<'_>, c: Chunk) -> Result<(), FileTestError> {
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

fn run_print(r: &mut Run<'_>, c: Chunk) -> Result<(), FileTestError> {
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

fn run_opt(
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

/// Lines `lo..hi` of the precise-output block: the first run of comment
/// lines after the graph (blank lines may come before it). `lo == hi` is
/// where a missing block goes: right after the graph.
fn expectation_block(r: &Run<'_>, c: Chunk) -> (usize, usize) {
    let lo = (c.end + 1..c.stop).find(|&i| !r.lines[i].trim().is_empty());
    match lo {
        Some(lo) if comment(r.lines[lo]).is_some() => {
            let hi = (lo..c.stop)
                .find(|&i| comment(r.lines[i]).is_none())
                .unwrap_or(c.stop);
            (lo, hi)
        }
        _ => (c.end + 1, c.end + 1),
    }
}

/// The file with the edits applied, keeping its final newline.
fn apply_edits(text: &str, lines: &[&str], edits: &[(usize, usize, Vec<String>)]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut next = 0;
    for (lo, hi, new) in edits {
        out.extend(lines[next..*lo].iter().map(|l| l.to_string()));
        out.extend(new.iter().cloned());
        next = *hi;
    }
    out.extend(lines[next..].iter().map(|l| l.to_string()));
    let mut s = out.join("\n");
    if text.ends_with('\n') {
        s.push('\n');
    }
    s
}

// ---- numeric equivalence --------------------------------------------------------

/// The default relative tolerance for outputs of `dtype`.
fn default_rtol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-9,
        DType::F32 => 1e-5,
        DType::Bf16 => 1.0 / 128.0,
        DType::I32 | DType::Bool => 0.0,
    }
}

/// Interprets both graphs on `s.trials` sets of seeded random inputs and
/// compares every output.
/// What a transformation produced: an optimized graph or a kernel program.
enum Candidate {
    Graph(Graph),
    Program(birkhoff_ir::kernel::Program),
    /// A program lowered for the GPU, run through the GPU code generator
    /// and its host emulator.
    Gpu(birkhoff_ir::kernel::Program),
}

impl Candidate {
    fn run(&self, inputs: &BTreeMap<String, Tensor>) -> Result<Vec<(String, Tensor)>, String> {
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
        Transform::Opt(passes) => {
            let names: Vec<Pass> = passes.iter().map(|&&p| p).collect();
            let g = run_passes(graph, &names, |_| false)
                .map_err(|e| format!("optimizer failed: {e}"))?
                .graph;
            Ok((g.to_string(), Candidate::Graph(g)))
        }
        Transform::Lower { fuse } => {
            let g = if fuse {
                crate::opt::optimize(graph, |_| false)
                    .map_err(|e| format!("optimizer failed: {e}"))?
                    .graph
            } else {
                graph.clone()
            };
            let p = birkhoff_lower::lower(&g, &birkhoff_lower::LowerOptions::default())
                .map_err(|e| format!("lowering failed: {e}"))?;
            Ok((p.to_string(), Candidate::Program(p)))
        }
        Transform::Llvm { fuse, ptx } => {
            let g = if fuse {
                crate::opt::optimize(graph, |_| false)
                    .map_err(|e| format!("optimizer failed: {e}"))?
                    .graph
            } else {
                graph.clone()
            };
            let p = birkhoff_lower::lower(&g, &crate::compile::gpu_lower_options(None))
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

/// Runs a GPU program in the host emulator (builds with the `gpu` feature).
fn run_emulated(
    p: &birkhoff_ir::kernel::Program,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<Vec<(String, Tensor)>, String> {
    #[cfg(feature = "gpu")]
    {
        birkhoff_gpu::codegen::emulate(p, &birkhoff_gpu::CodegenOptions::default(), inputs)
            .map_err(|e| format!("emulated GPU program: {e}"))
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = (p, inputs);
        Err(birkhoff_gpu::GpuError::CodegenNotEnabled.to_string())
    }
}

/// Whether a test file's command needs GPU code generation (`test llvm`),
/// which builds without the `gpu` feature cannot run.
pub fn needs_gpu_codegen(text: &str) -> bool {
    text.lines().any(|l| {
        let mut w = l.split(';').next().unwrap_or_default().split_whitespace();
        w.next() == Some("test") && w.next() == Some("llvm")
    })
}

fn equivalent(before: &Graph, after: &Candidate, s: &Settings) -> Result<(), String> {
    let opts = InterpOptions::default();
    for trial in 0..s.trials {
        let seed = s.seed.wrapping_add(trial as u64);
        let root = Rng::new(seed);
        let mut inputs = BTreeMap::new();
        for &v in before.inputs() {
            if let Op::Input { name, ty, .. } = &before.node(v).op {
                let t = random_tensor(ty, &s.init, &mut root.fork(name));
                inputs.insert(name.clone(), t);
            }
        }
        let want = interpret(before, &inputs, &opts).map_err(|e| format!("input graph: {e}"))?;
        let got = after.run(&inputs)?;
        for ((name, w), (gname, g)) in want.iter().zip(&got) {
            if name != gname {
                return Err(format!("outputs differ: '{name}' vs '{gname}'"));
            }
            let rtol = s.rtol.unwrap_or_else(|| default_rtol(w.dtype()));
            compare(w, g, rtol).map_err(|m| format!("output '{name}' (seed {seed}): {m}"))?;
        }
    }
    Ok(())
}

/// Whether `got` agrees with `want`: same type; NaN where `want` is NaN;
/// infinities exactly; otherwise `|got - want| <= rtol · max(|want|, 1)`.
fn compare(want: &Tensor, got: &Tensor, rtol: f64) -> Result<(), String> {
    if want.ty() != got.ty() {
        return Err(format!("type {} vs {}", got.ty(), want.ty()));
    }
    let (w, g) = (want.to_f64_vec(), got.to_f64_vec());
    let bad: Vec<usize> = (0..w.len())
        .filter(|&i| {
            let (a, b) = (w[i], g[i]);
            if a.is_nan() || b.is_nan() {
                a.is_nan() != b.is_nan()
            } else if a.is_infinite() || b.is_infinite() {
                a != b
            } else {
                (a - b).abs() > rtol * a.abs().max(1.0)
            }
        })
        .collect();
    match bad.first() {
        None => Ok(()),
        Some(&i) => Err(format!(
            "{} of {} elements differ beyond rtol {rtol:e}; \
             first at flat index {i}: got {:e}, want {:e}",
            bad.len(),
            w.len(),
            g[i],
            w[i]
        )),
    }
}

// ---- diffs -------------------------------------------------------------------------

/// A unified diff of two line lists, with three lines of context.
fn unified_diff(a: &[&str], b: &[&str], a_name: &str, b_name: &str) -> String {
    const CONTEXT: usize = 3;
    let (n, m) = (a.len(), b.len());
    let mut out = format!("--- {a_name}\n+++ {b_name}\n");
    if n.saturating_mul(m) > 4_000_000 {
        // Too large for the quadratic table: show both whole.
        out.push_str(&format!("@@ -1,{n} +1,{m} @@\n"));
        a.iter().for_each(|l| out.push_str(&format!("-{l}\n")));
        b.iter().for_each(|l| out.push_str(&format!("+{l}\n")));
        return out;
    }
    // lcs[i][j]: longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // The edit script: (tag, line, a index, b index) before the edit.
    let mut ops: Vec<(char, &str, usize, usize)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i], i, j));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i], i, j));
            i += 1;
        } else {
            ops.push(('+', b[j], i, j));
            j += 1;
        }
    }
    let changes: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut k = 0;
    while k < changes.len() {
        // One hunk: changes closer than two contexts share it.
        let first = changes[k];
        while k + 1 < changes.len() && changes[k + 1] - changes[k] <= 2 * CONTEXT {
            k += 1;
        }
        let last = changes[k];
        k += 1;
        let (lo, hi) = (
            first.saturating_sub(CONTEXT),
            (last + CONTEXT + 1).min(ops.len()),
        );
        let span = &ops[lo..hi];
        let count = |skip: char| span.iter().filter(|o| o.0 != skip).count();
        let start = |count: usize, at: usize| if count == 0 { at } else { at + 1 };
        let (a_count, b_count) = (count('+'), count('-'));
        out.push_str(&format!(
            "@@ -{},{a_count} +{},{b_count} @@\n",
            start(a_count, span[0].2),
            start(b_count, span[0].3)
        ));
        for (tag, line, _, _) in span {
            out.push_str(&format!("{tag}{line}\n"));
        }
    }
    out
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
        let renamed = outcome(&text.replace("%1", "%y"));
        assert!(!renamed.passed());
        assert!(renamed.failures[0].message.contains(
            "-  %y = neg %x : f32[4]\n-  return %y\n+  %1 = neg %x : f32[4]\n+  return %1\n"
        ));
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

    #[test]
    fn prose_comments_are_not_directives() {
        for prose in [
            "; softmax: the rule",
            "; mul-one: x * 1 = x",
            "; Note: fine",
            "; a ratio 1:2",
        ] {
            assert_eq!(directive(prose), Ok(None), "{prose}");
        }
        assert_eq!(
            directive(";  check:  %1 = add "),
            Ok(Some(("check", "%1 = add")))
        );
    }

    #[test]
    fn outputs_compare_within_tolerance() {
        let t = |v: &[f64]| {
            Tensor::from_f64(birkhoff_ir::TensorType::new(DType::F64, [v.len()]), v).unwrap()
        };
        let want = t(&[1e3, 0.5, f64::NAN, f64::INFINITY]);
        assert!(compare(&want, &want, 0.0).is_ok());
        assert!(
            compare(
                &want,
                &t(&[1e3 * (1.0 + 2e-9), 0.5 + 2e-9, f64::NAN, f64::INFINITY]),
                1e-9
            )
            .is_err()
        );
        assert!(
            compare(
                &want,
                &t(&[1e3 * (1.0 + 2e-9), 0.5 + 2e-9, f64::NAN, f64::INFINITY]),
                1e-8
            )
            .is_ok()
        );
        assert!(compare(&want, &t(&[1e3, 0.5, 0.0, f64::INFINITY]), 1.0).is_err());
        assert!(compare(&want, &t(&[1e3, 0.5, f64::NAN, f64::MAX]), 1.0).is_err());
    }

    #[test]
    fn equivalence_catches_a_different_graph() {
        let parse = |op: &str| {
            birkhoff_ir::parse_graph(&format!(
                "graph @g(%x: f32[4], %y: f32[4]) -> (z: f32[4]) {{\n\
                 %2 = {op} %x, %y : f32[4]\n\
                 return %2\n}}"
            ))
            .unwrap()
        };
        let settings = Settings::default();
        assert!(equivalent(&parse("add"), &Candidate::Graph(parse("add")), &settings).is_ok());
        let err =
            equivalent(&parse("add"), &Candidate::Graph(parse("sub")), &settings).unwrap_err();
        assert!(err.starts_with("output 'z' (seed 0)"), "{err}");
    }

    #[test]
    fn diffs_are_unified() {
        let a = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let mut b = a;
        b[1] = "B";
        b[9] = "J";
        let d = unified_diff(&a, &b, "x", "y");
        assert_eq!(
            d,
            "--- x\n+++ y\n@@ -1,5 +1,5 @@\n a\n-b\n+B\n c\n d\n e\n\
             @@ -7,4 +7,4 @@\n g\n h\n i\n-j\n+J\n"
        );
        assert_eq!(
            unified_diff(&[], &["n"], "x", "y"),
            "--- x\n+++ y\n@@ -0,0 +1,1 @@\n+n\n"
        );
    }
}
