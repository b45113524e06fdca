//! The file format: the header (`test`, `set`, `target`), graphs and the
//! `;` comment lines after them that hold directives and `precise-output`
//! blocks.

use birkhoff_dsl::Init;
use birkhoff_ir::{Graph, parse_module_with_locations, verify_located};
use birkhoff_opt::{PASSES, Pass, pass};

use crate::{Failure, FileTestError};

/// The `check:`-style directives, handed to the `filecheck` crate.
const CHECK_DIRECTIVES: &[&str] = &["check", "sameln", "nextln", "unordered", "not", "regex"];

/// What a file asks for.
pub(crate) enum Command {
    Verify,
    Print,
    Opt {
        passes: Vec<&'static Pass>,
        precise: bool,
        run: bool,
    },
    /// Lowering to kernel IR (after every optimizer pass when `fuse`;
    /// with the GPU's lowering options when `gpu`).
    Lower {
        fuse: bool,
        gpu: bool,
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
    /// The optimizer's near misses: every pass, then the report's
    /// explanation of each mHC pattern that did not fuse.
    NearMiss {
        precise: bool,
    },
    /// The recomputation rewrite, of given values or of the planner's choice.
    Recompute {
        forward: Vec<String>,
        values: Option<Vec<usize>>,
        precise: bool,
        run: bool,
    },
}

/// `set` values: how the `run` option draws inputs and compares outputs.
pub(crate) struct Settings {
    pub(crate) seed: u64,
    pub(crate) trials: usize,
    pub(crate) rtol: Option<f64>,
    pub(crate) init: Init,
    /// Line of the first `set`, for the error when nothing uses it.
    pub(crate) line: Option<usize>,
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
pub(crate) struct Chunk {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) stop: usize,
}

/// A file being run.
pub(crate) struct Run<'a> {
    pub(crate) file: &'a str,
    pub(crate) lines: Vec<&'a str>,
    pub(crate) settings: Settings,
    pub(crate) failures: Vec<Failure>,
    /// `(lines start..end, replacement)` for blessing, in file order.
    pub(crate) edits: Vec<(usize, usize, Vec<String>)>,
}

impl Run<'_> {
    pub(crate) fn malformed(&self, index: usize, message: impl Into<String>) -> FileTestError {
        FileTestError::Malformed {
            file: self.file.to_string(),
            line: index + 1,
            message: message.into(),
        }
    }

    pub(crate) fn fail(&mut self, index: usize, message: impl Into<String>) {
        self.failures.push(Failure {
            line: index + 1,
            message: message.into(),
        });
    }

    /// The graph's text, preceded by blank lines so that the parser's
    /// line numbers are the file's.
    pub(crate) fn graph_text(&self, c: Chunk) -> String {
        let mut s = "\n".repeat(c.start);
        s.push_str(&self.lines[c.start..=c.end].join("\n"));
        s.push('\n');
        s
    }

    /// The directive on line `i`, if it has one.
    pub(crate) fn directive(&self, i: usize) -> Result<Option<(&str, &str)>, FileTestError> {
        directive(self.lines[i]).map_err(|m| self.malformed(i, m))
    }
}

/// The text after `;` if the line is a comment line.
pub(crate) fn comment(line: &str) -> Option<&str> {
    line.trim_start().strip_prefix(';')
}

pub(crate) fn is_blank_or_comment(line: &str) -> bool {
    line.trim().is_empty() || comment(line).is_some()
}

pub(crate) fn is_graph_start(line: &str) -> bool {
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
pub(crate) fn directive(line: &str) -> Result<Option<(&str, &str)>, String> {
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

/// Reads the header; returns the command, its text and the index of the
/// first graph line.
pub(crate) fn parse_header(r: &mut Run<'_>) -> Result<(Command, String, usize), FileTestError> {
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
        .ok_or("'test' needs a command (verify, print, opt, near-miss, lower, llvm, recompute)")?;
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
        "near-miss" => {
            let mut precise = false;
            for o in options {
                match o {
                    "precise-output" => precise = true,
                    _ => {
                        return Err(format!(
                            "unknown option '{o}' for 'test near-miss' (options: precise-output)"
                        ));
                    }
                }
            }
            Ok(Command::NearMiss { precise })
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
            let (mut fuse, mut gpu, mut precise, mut run) = (false, false, false, false);
            for o in options {
                match o {
                    "fuse" => fuse = true,
                    "gpu" => gpu = true,
                    "precise-output" => precise = true,
                    "run" => run = true,
                    _ => {
                        return Err(format!(
                            "unknown option '{o}' for 'test lower' (options: fuse, gpu, precise-output, run)"
                        ));
                    }
                }
            }
            Ok(Command::Lower {
                fuse,
                gpu,
                precise,
                run,
            })
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
            "unknown test command '{name}' (commands: verify, print, opt, near-miss, lower, llvm, recompute)"
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
pub(crate) fn split_graphs(r: &Run<'_>, first: usize) -> Vec<Chunk> {
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
pub(crate) fn parse_graph_at(r: &Run<'_>, c: Chunk) -> Result<Graph, (usize, String)> {
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

/// Lines `lo..hi` of the precise-output block: the first run of comment
/// lines after the graph (blank lines may come before it). `lo == hi` is
/// where a missing block goes: right after the graph.
pub(crate) fn expectation_block(r: &Run<'_>, c: Chunk) -> (usize, usize) {
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
pub(crate) fn apply_edits(
    text: &str,
    lines: &[&str],
    edits: &[(usize, usize, Vec<String>)],
) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
