//! Robustness of the ONNX importer against corrupted and adversarial
//! files: [`import_bytes`] and [`import_file`] return (an `Ok` or an
//! `Err`) quickly on random bytes, on byte-level and protobuf-aware
//! mutations of the checked-in models, and on random small models built
//! here, never panicking, hanging or allocating without bound.
//!
//! Every case is made from one `u64` seed, so a failure names the
//! property and the seed, and
//!
//! ```text
//! BIRKHOFF_ONNX_FUZZ_REPLAY=<property>:<seed> cargo test -p birkhoff-onnx --test fuzz replay -- --nocapture
//! ```
//!
//! replays it. `PROPTEST_CASES` sets the cases per property (default
//! 256, about a second for all; 50000 take about a minute). On Unix each
//! property runs in a child process whose address space is capped
//! (`common::MEMORY_LIMIT_KIB`), so a case that allocates without bound aborts
//! that child (its seed is printed first) instead of exhausting the
//! machine; a case that runs past [`CASE_TIMEOUT`] fails as a hang.
//!
//! A bug found and not yet fixed can be listed with the `#[ignore]`d
//! test in `edge_cases.rs` that reproduces it ([`KNOWN_PANICS`],
//! [`KNOWN_MESSAGE_BUGS`], [`KNOWN_UNBOUNDED_SEEDS`]; empty now: the
//! fifteen found while writing these tests are fixed); the properties
//! pass over listed ones so that they keep finding new ones. Set
//! `BIRKHOFF_ONNX_FUZZ_STRICT=1` to count them as failures too.

mod common;
use common::read_varint;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use birkhoff_onnx::{ImportError, ImportOptions, import_bytes, import_file};
use proptest::test_runner::{Config, TestCaseError, TestRunner};

// ---------------------------------------------------------------------
// Limits.

/// How long one case may take before it counts as a hang. Imports of the
/// small seed models take milliseconds; this is far above that, so a
/// busy machine does not make the test flaky.
const CASE_TIMEOUT: Duration = Duration::from_secs(20);

/// Seed models larger than this are left out, so one case stays fast.
const MAX_SEED_BYTES: u64 = 20 << 10;

/// Small seed models left out because refusing them (and most of their
/// mutations) takes the importer up to seconds in a test build: it stops
/// only at its limits (2^20 nodes inlined from local functions, 2^24
/// folded Gather indices). They stay in `edge_cases.rs`.
const SLOW_SEEDS: &[&str] = &[
    "data/function_blowup.onnx",
    "data/gather_constant_huge.onnx",
];

/// Set in a child process: run the property here.
const CHILD_ENV: &str = "BIRKHOFF_ONNX_FUZZ_CHILD";

/// `<property>:<seed>`: the case [`replay`] runs.
const REPLAY_ENV: &str = "BIRKHOFF_ONNX_FUZZ_REPLAY";

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------
// A seeded generator (SplitMix64): the whole case follows from the seed.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------------
// The ONNX messages, as the importer declares them.

use birkhoff_onnx::proto as onnx;

// ---------------------------------------------------------------------
// Running one case.

/// One import to try.
struct Case {
    /// What the bytes are (seed model, mutations), for the failure message.
    what: String,
    bytes: Vec<u8>,
    /// Where external data is looked up (`import_bytes`'s `base`).
    base: Option<PathBuf>,
    /// `--dim` pins.
    dims: BTreeMap<String, usize>,
    /// Write the bytes to `model.onnx` in a temporary copy of `base` and
    /// use `import_file` instead of `import_bytes`.
    as_file: bool,
}

impl Case {
    fn new(what: impl Into<String>, bytes: Vec<u8>) -> Case {
        Case {
            what: what.into(),
            bytes,
            base: None,
            dims: BTreeMap::new(),
            as_file: false,
        }
    }
}

/// What an import did.
enum Outcome {
    Imported,
    Refused(String),
    Panicked(Panic),
}

/// A panic caught on an import thread.
#[derive(Clone, Debug)]
struct Panic {
    message: String,
    /// `file:line:column`.
    location: String,
    /// The innermost `birkhoff_onnx` function on the stack.
    function: String,
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<Panic>> = const { std::cell::RefCell::new(None) };
}

/// Installs (once) a panic hook that records panics on import threads
/// for [`run`] (where they are reported, not printed) and leaves other
/// threads' panics to the default hook.
fn install_panic_hook() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some(IMPORT_THREAD) {
                default(info);
                return;
            }
            let message = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| {
                    info.payload()
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_string())
                })
                .unwrap_or_else(|| "(a non-string panic payload)".into());
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            let function = innermost_importer_frame(&std::backtrace::Backtrace::force_capture())
                .unwrap_or_else(|| "(no birkhoff_onnx frame)".into());
            LAST_PANIC.with(|p| {
                *p.borrow_mut() = Some(Panic {
                    message,
                    location,
                    function,
                });
            });
        }));
    });
}

const IMPORT_THREAD: &str = "import";

/// `function (FILE:LINE)` of the innermost frame in this crate's
/// `src/` (inlined frames have short names, so the file says which).
fn innermost_importer_frame(trace: &std::backtrace::Backtrace) -> Option<String> {
    let text = trace.to_string();
    let mut name = "";
    for line in text.lines().map(str::trim) {
        if let Some(at) = line.strip_prefix("at ") {
            if let Some(i) = at.find("src/")
                && (at.contains("onnx/src/") || at.starts_with("./src/"))
            {
                let file = &at[i..];
                let file = file.rsplit_once(':').map_or(file, |(f, _)| f);
                return Some(format!("{name} ({file})"));
            }
        } else if let Some((_, n)) = line.split_once(": ") {
            name = n;
        }
    }
    None
}

/// Set: known bugs fail the properties too.
const STRICT_ENV: &str = "BIRKHOFF_ONNX_FUZZ_STRICT";

/// Panics already reported, each with the `#[ignore]`d test in
/// `edge_cases.rs` that reproduces it: (the innermost importer function,
/// a part of the panic message, the test). The properties pass over
/// these, so they keep looking for new bugs; with
/// `BIRKHOFF_ONNX_FUZZ_STRICT` set they do not. Remove an entry when its
/// bug is fixed.
const KNOWN_PANICS: &[(&str, &str, &str)] = &[];

/// Seed models that reproduce known unbounded allocations, or whose
/// mutations often do (an allocation over the cap aborts the process,
/// which cannot be passed over like a panic): (a part of the seed's path
/// or of its bytes, the test). Left out of the seeds unless
/// `BIRKHOFF_ONNX_FUZZ_STRICT` is set; the generator likewise leaves out
/// the known triggers ([`avoid_known_aborts`]).
const KNOWN_UNBOUNDED_SEEDS: &[(&str, &str)] = &[];

/// Verifier messages the importer passes on as "an importer bug" that
/// are already reported: (a part of the verifier's message, the test).
/// Names with line breaks or NUL bytes printed verbatim are the third
/// known message bug (`messages_quote_names_from_the_file`).
const KNOWN_MESSAGE_BUGS: &[(&str, &str)] = &[];

fn known_bug(p: &Panic) -> Option<&'static str> {
    if std::env::var_os(STRICT_ENV).is_some() {
        return None;
    }
    KNOWN_PANICS
        .iter()
        .find(|(f, m, _)| p.function.split(' ').next() == Some(f) && p.message.contains(m))
        .map(|b| b.2)
}

/// Imports `case` on a worker thread; `Err` says how it misbehaved
/// (panic, hang, a malformed error message).
fn run(case: &Case) -> Result<(), String> {
    // A case that times out is tried once more: on a loaded machine the
    // whole process can stall past the limit (a real hang stalls twice).
    let first = outcome(case);
    let result = match first {
        Ok(o) => o,
        Err(why) => outcome(case).map_err(|again| format!("{why}; tried again: {again}"))?,
    };
    match result {
        Outcome::Imported => Ok(()),
        Outcome::Refused(msg) => check_message(&msg, &case.bytes),
        Outcome::Panicked(p) => match known_bug(&p) {
            Some(_) => Ok(()),
            None => Err(format!(
                "the importer panicked at {} (in {}): {}",
                p.location, p.function, p.message
            )),
        },
    }
}

/// What importing `case` on a worker thread did; `Err` if it did not
/// return within [`CASE_TIMEOUT`].
fn outcome(case: &Case) -> Result<Outcome, String> {
    install_panic_hook();
    let (tx, rx) = mpsc::channel();
    let bytes = case.bytes.clone();
    let base = case.base.clone();
    let as_file = case.as_file;
    let opts = ImportOptions {
        dims: case.dims.clone(),
    };
    let start = Instant::now();
    std::thread::Builder::new()
        .name(IMPORT_THREAD.into())
        .spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                import_once(&bytes, base.as_deref(), as_file, &opts)
            }));
            let outcome = match outcome {
                Ok(Ok(())) => Outcome::Imported,
                Ok(Err(e)) => Outcome::Refused(e.to_string()),
                Err(_) => {
                    Outcome::Panicked(LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(
                        || Panic {
                            message: "(no panic recorded)".into(),
                            location: String::new(),
                            function: String::new(),
                        },
                    ))
                }
            };
            let _ = tx.send(outcome);
        })
        .map_err(|e| format!("cannot spawn the import thread: {e}"))?;
    rx.recv_timeout(CASE_TIMEOUT).map_err(|_| {
        format!(
            "the import did not return within {:?} (still running after {:?})",
            CASE_TIMEOUT,
            start.elapsed()
        )
    })
}

fn import_once(
    bytes: &[u8],
    base: Option<&Path>,
    as_file: bool,
    opts: &ImportOptions,
) -> Result<(), ImportError> {
    if as_file {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // The seed's files (its external data) beside the mutated model;
        // a file that cannot be copied is left out (the import then
        // reports it missing).
        let entries = base.and_then(|b| std::fs::read_dir(b).ok());
        for entry in entries.into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let _ = std::fs::copy(entry.path(), dir.path().join(entry.file_name()));
            }
        }
        let path = dir.path().join("model.onnx");
        std::fs::write(&path, bytes).expect("writes the model");
        import_file(&path, opts).map(drop)
    } else {
        import_bytes(bytes, "fuzz.onnx", base, opts).map(drop)
    }
}

/// An error message must say something, on one line, without NUL bytes
/// (it is printed to a terminal and into logs as one record), and must
/// not be the importer's own "does not verify (an importer bug)".
/// `bytes` is the model: names and equations it holds are printed as
/// they are (a known bug, `messages_quote_names_from_the_file`), so a
/// line break or NUL byte in the message is passed over when one of the
/// model's strings has it too.
fn check_message(msg: &str, bytes: &[u8]) -> Result<(), String> {
    if msg.trim().is_empty() {
        return Err("the error message is empty".into());
    }
    let strict = std::env::var_os(STRICT_ENV).is_some();
    if let Some((_, detail)) = msg.split_once("does not verify (an importer bug)") {
        // "graph @g has N errors", then one line per error: all known?
        let known = detail.lines().skip(1).all(|line| {
            KNOWN_MESSAGE_BUGS
                .iter()
                .any(|(part, _)| line.contains(part))
        });
        if strict || !known {
            return Err(format!(
                "the importer built a graph that does not verify: {msg:?}"
            ));
        }
        return Ok(());
    }
    let echoed = |c: char| !strict && strings_with(bytes, |d| d == c);
    for c in ['\n', '\r'] {
        if msg.contains(c) && !echoed(c) {
            return Err(format!("the error message spans several lines: {msg:?}"));
        }
    }
    if msg.contains('\0') && !echoed('\0') {
        return Err(format!("the error message holds a NUL byte: {msg:?}"));
    }
    Ok(())
}

/// Whether one of the strings of the model `bytes` the importer may
/// print (names, op types, domains, equations, external-data entries)
/// has a character `bad` matches. The mirror schema here is a subset of
/// the importer's, so it decodes whatever the importer decoded.
fn strings_with(bytes: &[u8], bad: impl Fn(char) -> bool + Copy) -> bool {
    let Ok(m) = <onnx::ModelProto as prost::Message>::decode(bytes) else {
        return false;
    };
    let mut strings: Vec<String> = Vec::new();
    let tensor = |t: &onnx::TensorProto, out: &mut Vec<String>| {
        out.push(t.name.clone());
        for e in &t.external_data {
            out.extend([e.key.clone(), e.value.clone()]);
        }
    };
    let node = |n: &onnx::NodeProto, out: &mut Vec<String>| {
        out.extend(n.input.iter().chain(&n.output).cloned());
        out.extend([n.name.clone(), n.op_type.clone(), n.domain.clone()]);
        for a in &n.attribute {
            out.push(a.name.clone());
            out.push(a.ref_attr_name.clone());
            out.push(String::from_utf8_lossy(&a.s).into_owned());
            if let Some(t) = &a.t {
                tensor(t, out);
            }
        }
    };
    for o in &m.opset_import {
        strings.push(o.domain.clone());
    }
    if let Some(g) = &m.graph {
        strings.push(g.name.clone());
        for n in &g.node {
            node(n, &mut strings);
        }
        for t in &g.initializer {
            tensor(t, &mut strings);
        }
        for v in g.input.iter().chain(&g.output) {
            strings.push(v.name.clone());
            let dims = v
                .r#type
                .iter()
                .flat_map(|t| &t.tensor_type)
                .flat_map(|t| &t.shape)
                .flat_map(|s| &s.dim);
            strings.extend(dims.filter_map(|d| d.dim_param.clone()));
        }
    }
    for f in &m.functions {
        strings.extend([f.name.clone(), f.domain.clone()]);
        strings.extend(f.input.iter().chain(&f.output).cloned());
        for n in &f.node {
            node(n, &mut strings);
        }
    }
    strings.iter().any(|s| s.contains(bad))
}

/// Runs `property` for `PROPTEST_CASES` seeds (in a memory-capped child
/// process where one can be made); panics with the property, seed and
/// case on the first failure.
fn fuzz(name: &str, default_cases: u32, property: Property) {
    if spawn_limited_child(name) {
        return;
    }
    let config = Config {
        cases: cases(default_cases),
        // A seed does not shrink meaningfully; report the first failure.
        max_shrink_iters: 0,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&proptest::num::u64::ANY, |seed| {
        let case = property(seed);
        // If the case aborts the process (an allocation over the cap),
        // this is the last line the child printed.
        if std::env::var_os(CHILD_ENV).is_some() {
            eprintln!("case {name}:{seed}");
        }
        run(&case).map_err(|why| {
            TestCaseError::fail(format!(
                "{why}\n  case: {}\n  replay: {REPLAY_ENV}={name}:{seed} cargo test -p birkhoff-onnx --test fuzz replay -- --nocapture",
                case.what
            ))
        })
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// On Unix, outside a child: runs test `name` in a child process of this
/// test binary with its address space capped, and checks that it passed.
/// Returns whether it did (false: run the test here).
fn spawn_limited_child(name: &str) -> bool {
    if std::env::var_os(CHILD_ENV).is_some() || !cfg!(unix) {
        return false;
    }
    let out = common::capped_test_command(name, CHILD_ENV)
        .output()
        .expect("runs the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The child prints each case before running it: the last one is the
    // case that aborted it, if one did.
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    let last_case = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("case "))
        .unwrap_or("(none)");
    let fatal: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("memory allocation of") || l.starts_with("fatal runtime error"))
        .collect();
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} failed in its memory-capped child ({}): the last case started was {last_case} {fatal:?}\n  replay: {REPLAY_ENV}={last_case} cargo test -p birkhoff-onnx --test fuzz replay -- --nocapture\n--- stdout\n{stdout}\n--- stderr (last 40 lines)\n{tail}",
        out.status
    );
    true
}

// ---------------------------------------------------------------------
// Seed models.

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// A model to mutate: its name, bytes and directory (for external data).
struct Seed {
    name: String,
    bytes: Vec<u8>,
    dir: PathBuf,
    /// Whether it refers to external data.
    external: bool,
    /// `--dim` pins it needs.
    dims: BTreeMap<String, usize>,
}

/// Every checked-in model under [`MAX_SEED_BYTES`]: the importer test
/// fixtures (error cases included; their mutations are as interesting)
/// and this crate's `tests/data` models.
fn seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut out = Vec::new();
        let roots = [
            repo_root().join("tests/onnx/fixtures"),
            repo_root().join("crates/onnx/tests/data"),
        ];
        for root in roots {
            let Ok(entries) = std::fs::read_dir(&root) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                let candidates: Vec<PathBuf> = if p.is_dir() {
                    vec![p.join("model.onnx")]
                } else if p.extension().is_some_and(|e| e == "onnx") {
                    vec![p.clone()]
                } else {
                    vec![]
                };
                for model in candidates {
                    let Ok(meta) = std::fs::metadata(&model) else {
                        continue;
                    };
                    if meta.len() > MAX_SEED_BYTES || SLOW_SEEDS.iter().any(|f| model.ends_with(f))
                    {
                        continue;
                    }
                    let bytes = std::fs::read(&model).expect("reads a seed model");
                    let known_abort = KNOWN_UNBOUNDED_SEEDS.iter().any(|(p, _)| {
                        model.to_string_lossy().contains(p) || contains(&bytes, p.as_bytes())
                    });
                    if known_abort && std::env::var_os(STRICT_ENV).is_none() {
                        continue;
                    }
                    let dir = model.parent().expect("a directory").to_path_buf();
                    let name = model
                        .strip_prefix(repo_root())
                        .unwrap_or(&model)
                        .display()
                        .to_string();
                    let external = contains(&bytes, b"location");
                    let mut dims = BTreeMap::new();
                    // The symbolic dims the fixtures and data models use.
                    for d in ["batch", "seq", "s0", "s1", "N", "T", "B"] {
                        dims.insert(d.to_string(), 2);
                    }
                    out.push(Seed {
                        name,
                        bytes,
                        dir,
                        external,
                        dims,
                    });
                }
            }
        }
        assert!(
            out.len() >= 20,
            "expected the ONNX fixtures under tests/onnx/fixtures (found {} seed models)",
            out.len()
        );
        out
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------
// Byte-level mutations.

/// Values that make good corrupted counts, lengths and sizes.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    1 << 62,
    i64::MAX as u64,
    1 << 63,
    u64::MAX,
    u64::MAX - 1,
];

fn varint(mut x: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (x & 0x7f) as u8;
        x >>= 7;
        if x == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// Applies one random byte-level edit; returns what it did.
fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>) -> String {
    let n = b.len();
    if n == 0 {
        let k = 1 + rng.below(16);
        let add = rng.bytes(k);
        b.extend(&add);
        return format!("append {add:02x?}");
    }
    match rng.below(8) {
        0 => {
            let i = rng.below(n);
            let bits = 1u8 << rng.below(8);
            b[i] ^= bits;
            format!("flip bit {bits:#04x} at {i}")
        }
        1 => {
            let i = rng.below(n);
            let v = rng.next() as u8;
            b[i] = v;
            format!("set byte {i} to {v:#04x}")
        }
        2 => {
            let at = rng.below(n);
            b.truncate(at);
            format!("truncate at {at}")
        }
        3 => {
            let at = rng.below(n + 1);
            let k = 1 + rng.below(16);
            let add = rng.bytes(k);
            b.splice(at..at, add.iter().copied());
            format!("insert {add:02x?} at {at}")
        }
        4 => {
            let start = rng.below(n);
            let len = 1 + rng.below((n - start).min(256));
            let at = rng.below(n + 1);
            let copy = b[start..start + len].to_vec();
            b.splice(at..at, copy);
            format!("duplicate {start}..{} at {at}", start + len)
        }
        5 => {
            let start = rng.below(n);
            let len = 1 + rng.below((n - start).min(64));
            b.drain(start..start + len);
            format!("delete {start}..{}", start + len)
        }
        6 => {
            // A varint of an interesting value over the bytes at `at`
            // (lengths, dims, counts and tags are varints).
            let at = rng.below(n);
            let v = *rng.pick(INTERESTING);
            let enc = varint(v);
            let end = (at + enc.len()).min(n);
            b.splice(at..end, enc);
            format!("varint {v:#x} at {at}")
        }
        _ => {
            // A fixed32/64 of an interesting float (values, f attributes).
            let at = rng.below(n);
            let f = *rng.pick(&[
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                -0.0,
                1e30,
                1e-45,
            ]);
            let end = (at + 4).min(n);
            b.splice(at..end, f.to_le_bytes());
            format!("float {f} at {at}")
        }
    }
}

// ---------------------------------------------------------------------
// Protobuf-aware mutations: parse the bytes as generic protobuf fields
// (without a schema), change one field somewhere in the tree, re-encode.

#[derive(Clone, Debug)]
enum Value {
    Varint(u64),
    Fixed64(u64),
    Bytes(Vec<u8>),
    Fixed32(u32),
}

#[derive(Clone, Debug)]
struct Field {
    tag: u32,
    value: Value,
}

/// `b` as a list of fields, if it parses as one (a message).
fn parse_fields(b: &[u8]) -> Option<Vec<Field>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < b.len() {
        let key = read_varint(b, &mut pos)?;
        let tag = u32::try_from(key >> 3).ok().filter(|&t| t > 0)?;
        let value = match key & 7 {
            0 => Value::Varint(read_varint(b, &mut pos)?),
            1 => {
                let v = b.get(pos..pos + 8)?;
                pos += 8;
                Value::Fixed64(u64::from_le_bytes(v.try_into().ok()?))
            }
            2 => {
                let len = usize::try_from(read_varint(b, &mut pos)?).ok()?;
                let v = b.get(pos..pos.checked_add(len)?)?.to_vec();
                pos += len;
                Value::Bytes(v)
            }
            5 => {
                let v = b.get(pos..pos + 4)?;
                pos += 4;
                Value::Fixed32(u32::from_le_bytes(v.try_into().ok()?))
            }
            _ => return None,
        };
        out.push(Field { tag, value });
    }
    Some(out)
}

fn encode_fields(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        let wire = match f.value {
            Value::Varint(_) => 0,
            Value::Fixed64(_) => 1,
            Value::Bytes(_) => 2,
            Value::Fixed32(_) => 5,
        };
        out.extend(varint((u64::from(f.tag) << 3) | wire));
        match &f.value {
            Value::Varint(v) => out.extend(varint(*v)),
            Value::Fixed64(v) => out.extend(v.to_le_bytes()),
            Value::Bytes(v) => {
                out.extend(varint(v.len() as u64));
                out.extend(v);
            }
            Value::Fixed32(v) => out.extend(v.to_le_bytes()),
        }
    }
    out
}

/// Strings worth putting where a name, location, op type, equation or
/// key was.
const STRINGS: &[&str] = &[
    "",
    "x",
    "y",
    "z",
    "..",
    "../model.onnx",
    "/etc/passwd",
    "model.onnx",
    ".",
    "a\nb",
    "a\0b",
    "\u{1F600}",
    "location",
    "offset",
    "length",
    "ij,jk->ik",
    "...ii->...",
    "ab,bc,cd->ad",
    "Add",
    "Einsum",
    "Reshape",
    "Trilu",
    "Expand",
    "ConstantOfShape",
    "Gather",
    "Slice",
    "ai.onnx",
    "com.microsoft",
    "batch",
    "none",
    "tanh",
];

/// Changes one field of the message `fields`, descending into nested
/// messages; returns what it did (a path of tags and the edit).
fn mutate_tree(rng: &mut Rng, fields: &mut Vec<Field>, depth: usize) -> String {
    if fields.is_empty() {
        let tag = 1 + rng.below(25) as u32;
        fields.push(Field {
            tag,
            value: Value::Varint(*rng.pick(INTERESTING)),
        });
        return format!("add field {tag}");
    }
    let i = rng.below(fields.len());
    // Descend into a nested message three times in four.
    if depth < 12
        && !rng.chance(4)
        && let Value::Bytes(b) = &fields[i].value
        && let Some(mut inner) = parse_fields(b).filter(|f| !f.is_empty())
    {
        let what = mutate_tree(rng, &mut inner, depth + 1);
        fields[i].value = Value::Bytes(encode_fields(&inner));
        return format!("{}/{what}", fields[i].tag);
    }
    let tag = fields[i].tag;
    match rng.below(6) {
        0 => {
            fields.remove(i);
            format!("{tag}: remove")
        }
        1 => {
            let copies = if rng.chance(8) { 64 } else { 1 };
            for _ in 0..copies {
                let f = fields[i].clone();
                fields.insert(i, f);
            }
            format!("{tag}: repeat x{copies}")
        }
        2 => {
            let j = rng.below(fields.len());
            fields.swap(i, j);
            format!("{tag}: swap with #{j}")
        }
        _ => {
            let what = match &mut fields[i].value {
                Value::Varint(v) => {
                    *v = match rng.below(4) {
                        0 => v.wrapping_add(1),
                        1 => v.wrapping_sub(1),
                        2 => rng.next() >> rng.below(64),
                        _ => *rng.pick(INTERESTING),
                    };
                    format!("varint {v:#x}")
                }
                Value::Fixed32(v) => {
                    *v = rng
                        .pick(&[f32::NAN, f32::INFINITY, -1.0, 0.0, 1e-40, 3.0e38, 2.0])
                        .to_bits();
                    format!("fixed32 {:?}", f32::from_bits(*v))
                }
                Value::Fixed64(v) => {
                    *v = rng
                        .pick(&[f64::NAN, f64::INFINITY, -1.0, 0.0, 1e300])
                        .to_bits();
                    format!("fixed64 {:?}", f64::from_bits(*v))
                }
                Value::Bytes(b) => match rng.below(4) {
                    0 => {
                        let s = rng.pick(STRINGS);
                        *b = s.as_bytes().to_vec();
                        format!("string {s:?}")
                    }
                    1 => {
                        // A packed repeated field of interesting varints
                        // (dims, ints attributes, int64_data).
                        let k = 1 + rng.below(6);
                        let vals: Vec<u64> = (0..k).map(|_| *rng.pick(INTERESTING)).collect();
                        *b = vals.iter().flat_map(|&v| varint(v)).collect();
                        format!("packed {vals:#x?}")
                    }
                    2 if !b.is_empty() => {
                        let cut = rng.below(b.len());
                        b.truncate(cut);
                        format!("cut to {cut}")
                    }
                    _ => {
                        let what = mutate_bytes(rng, b);
                        format!("bytes: {what}")
                    }
                },
            };
            format!("{tag}: {what}")
        }
    }
}

// ---------------------------------------------------------------------
// Random small models.

const OPS: &[&str] = &[
    "Identity",
    "Dropout",
    "Neg",
    "Abs",
    "Exp",
    "Log",
    "Sqrt",
    "Reciprocal",
    "Sigmoid",
    "Tanh",
    "Not",
    "Relu",
    "Erf",
    "Gelu",
    "Floor",
    "Ceil",
    "Sign",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "Mod",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Where",
    "Clip",
    "Cast",
    "CastLike",
    "MatMul",
    "Gemm",
    "Einsum",
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
    "ReduceL2",
    "Softmax",
    "LogSoftmax",
    "LayerNormalization",
    "RMSNormalization",
    "Trilu",
    "Gather",
    "Shape",
    "Size",
    "Constant",
    "ConstantOfShape",
    "Range",
    "Reshape",
    "Flatten",
    "Unsqueeze",
    "Squeeze",
    "Transpose",
    "Expand",
    "Concat",
    "Split",
    "Slice",
    "Resize",
];

const SMALL_INTS: &[i64] = &[-3, -2, -1, 0, 0, 1, 1, 1, 2, 2, 3, 4, 6];
const WILD_INTS: &[i64] = &[
    i64::MIN,
    i64::MIN + 1,
    -(1 << 40),
    -(1 << 31),
    1 << 20,
    1 << 31,
    1 << 32,
    1 << 40,
    1 << 62,
    i64::MAX,
];

/// Whether the generator steers clear of the known bugs that abort the
/// process (not set in strict mode).
fn avoid_known_aborts() -> bool {
    std::env::var_os(STRICT_ENV).is_none()
}

fn some_int(rng: &mut Rng) -> i64 {
    if rng.chance(8) {
        *rng.pick(WILD_INTS)
    } else {
        *rng.pick(SMALL_INTS)
    }
}

fn some_ints(rng: &mut Rng) -> Vec<i64> {
    let n = rng.below(5);
    (0..n).map(|_| some_int(rng)).collect()
}

fn some_dims(rng: &mut Rng) -> Vec<i64> {
    let n = rng.below(4);
    (0..n)
        .map(|_| {
            if rng.chance(16) {
                *rng.pick(WILD_INTS)
            } else {
                1 + rng.below(4) as i64
            }
        })
        .collect()
}

/// A tensor with dims and data that usually, not always, agree.
fn some_tensor(rng: &mut Rng, name: &str, int: bool) -> onnx::TensorProto {
    let dims = if int && rng.chance(2) {
        vec![rng.below(5) as i64]
    } else {
        some_dims(rng)
    };
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| {
            usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
        })
        .filter(|&c| c <= 64)
        .unwrap_or(1);
    let count = if rng.chance(10) { rng.below(8) } else { count };
    let mut t = onnx::TensorProto {
        dims,
        name: name.to_string(),
        ..Default::default()
    };
    match rng.below(if int { 2 } else { 6 }) {
        0 | 1 if int => {
            t.data_type = onnx::data_type::INT64;
            t.int64_data = (0..count).map(|_| some_int(rng)).collect();
        }
        0..=2 => {
            t.data_type = onnx::data_type::FLOAT;
            t.float_data = (0..count).map(|_| (rng.below(9) as f32) - 4.0).collect();
        }
        3 => {
            t.data_type = onnx::data_type::FLOAT;
            let k = count * 4 + usize::from(rng.chance(6));
            t.raw_data = rng.bytes(k);
        }
        4 => {
            t.data_type = *rng.pick(&[0, 2, 3, 5, 6, 9, 10, 11, 12, 13, 16, 17, 99]);
            let k = count * rng.pick(&[1, 2, 4, 8]);
            t.raw_data = rng.bytes(k);
        }
        _ => {
            t.data_type = onnx::data_type::FLOAT;
            t.data_location = 1;
            t.external_data = vec![
                onnx::StringStringEntryProto {
                    key: "location".into(),
                    value: (*rng.pick(&["weights.bin", "../weights.bin", "/dev/zero", "."])).into(),
                },
                onnx::StringStringEntryProto {
                    key: (*rng.pick(&["offset", "length"])).into(),
                    value: some_int(rng).to_string(),
                },
            ];
        }
    }
    t
}

fn attribute(rng: &mut Rng) -> onnx::AttributeProto {
    let name = *rng.pick(&[
        "axis",
        "axes",
        "perm",
        "keepdims",
        "to",
        "equation",
        "starts",
        "ends",
        "split",
        "num_outputs",
        "upper",
        "allowzero",
        "epsilon",
        "alpha",
        "beta",
        "transA",
        "transB",
        "approximate",
        "noop_with_empty_axes",
        "start",
        "end",
        "value",
        "value_float",
        "value_floats",
        "value_int",
        "value_ints",
        "min",
        "max",
    ]);
    let mut a = onnx::AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match name {
        "axes" | "perm" | "starts" | "ends" | "split" | "value_ints" => a.ints = some_ints(rng),
        "equation" => {
            a.s = (*rng.pick(&[
                "ij,jk->ik",
                "bij,bjk->bik",
                "...ij,...jk->...ik",
                "ij->ji",
                "ij",
                "i,i->",
                "ii->i",
                "ab,bc,cd->ad",
                "a...b->",
                "->",
                ",",
                "...",
                "ij->k",
                "é",
            ]))
            .as_bytes()
            .to_vec();
        }
        "approximate" => {
            a.s = (*rng.pick(&["none", "tanh", "erf", ""]))
                .as_bytes()
                .to_vec();
        }
        "value" => {
            let int = rng.chance(2);
            a.t = Some(some_tensor(rng, "", int));
        }
        "value_floats" => a.floats = vec![1.0, -2.0, f32::NAN][..rng.below(4)].to_vec(),
        "epsilon" | "alpha" | "beta" | "value_float" | "min" | "max" => {
            a.f = *rng.pick(&[0.0, 1e-5, 0.5, 2.0, -1.0, f32::NAN, f32::INFINITY]);
        }
        "to" => a.i = *rng.pick(&[0, 1, 2, 6, 7, 9, 10, 11, 16, 99, -1]),
        // A huge num_outputs makes Split allocate a size per output
        // (split_into_a_huge_number_of_outputs_is_refused).
        "num_outputs" if avoid_known_aborts() => a.i = *rng.pick(SMALL_INTS),
        _ => a.i = some_int(rng),
    }
    a
}

fn input_info(name: &str, elem_type: i32, dims: &[Option<i64>]) -> onnx::ValueInfoProto {
    onnx::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(onnx::TypeProto {
            tensor_type: Some(onnx::TensorTypeProto {
                elem_type,
                shape: Some(onnx::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| onnx::Dimension {
                            dim_value: *d,
                            dim_param: if d.is_none() {
                                Some("batch".into())
                            } else {
                                None
                            },
                        })
                        .collect(),
                }),
            }),
            ..Default::default()
        }),
    }
}

/// A random model of a few nodes over a few small inputs, initializers
/// and constants: mostly well-formed, with wild values here and there.
fn random_model(rng: &mut Rng) -> onnx::ModelProto {
    let mut values: Vec<String> = Vec::new();
    let mut g = onnx::GraphProto {
        name: "fuzz".into(),
        ..Default::default()
    };
    for k in 0..1 + rng.below(3) {
        let name = format!("x{k}");
        let rank = rng.below(4);
        let dims: Vec<Option<i64>> = (0..rank)
            .map(|_| {
                if rng.chance(10) {
                    None
                } else if rng.chance(30) {
                    Some(*rng.pick(WILD_INTS))
                } else {
                    Some(1 + rng.below(4) as i64)
                }
            })
            .collect();
        let ty = if rng.chance(8) {
            *rng.pick(&[7, 9, 10, 11, 16])
        } else {
            onnx::data_type::FLOAT
        };
        g.input.push(input_info(&name, ty, &dims));
        values.push(name);
    }
    for k in 0..rng.below(4) {
        let name = format!("w{k}");
        let int = rng.chance(2);
        g.initializer.push(some_tensor(rng, &name, int));
        values.push(name);
    }
    let nodes = 1 + rng.below(6);
    let mut produced = Vec::new();
    for k in 0..nodes {
        let op = *rng.pick(OPS);
        let mut node = onnx::NodeProto {
            op_type: op.to_string(),
            name: format!("n{k}"),
            ..Default::default()
        };
        if rng.chance(20) {
            node.domain = (*rng.pick(&["com.microsoft", "ai.onnx", "local"])).into();
        }
        let arity = match op {
            "Constant" => 0,
            "Where" | "Clip" | "Gemm" | "Range" | "Slice" | "LayerNormalization" => {
                1 + rng.below(4)
            }
            _ => 1 + rng.below(3),
        };
        for _ in 0..arity {
            let v = if rng.chance(12) {
                String::new()
            } else if rng.chance(30) {
                "undefined".into()
            } else {
                // Prefer recent values: chains go deeper.
                let n = values.len();
                let back = rng.below(n.min(3));
                values[n - 1 - back].clone()
            };
            node.input.push(v);
        }
        for _ in 0..rng.below(3) {
            node.attribute.push(attribute(rng));
        }
        if op == "Constant" && node.attribute.iter().all(|a| !a.name.starts_with("value")) {
            node.attribute.push(onnx::AttributeProto {
                name: "value_ints".into(),
                ints: some_ints(rng),
                ..Default::default()
            });
        }
        let outs = if op == "Split" { 1 + rng.below(3) } else { 1 };
        for j in 0..outs {
            let name = if rng.chance(30) && !values.is_empty() {
                // Two producers of one value.
                rng.pick(&values).clone()
            } else {
                format!("v{k}_{j}")
            };
            node.output.push(name.clone());
            values.push(name.clone());
            produced.push(name);
        }
        g.node.push(node);
    }
    let mut outputs = vec![produced.last().cloned().unwrap_or_default()];
    if rng.chance(3) {
        outputs.push(rng.pick(&values).clone());
    }
    if rng.chance(20) {
        outputs.push("nowhere".into());
    }
    for o in outputs {
        g.output.push(onnx::ValueInfoProto {
            name: o,
            r#type: None,
        });
    }
    let version = if rng.chance(16) {
        some_int(rng)
    } else {
        13 + rng.below(11) as i64
    };
    let mut functions = Vec::new();
    if rng.chance(10) {
        // A local function wrapping one op, called by one of the nodes.
        let op = *rng.pick(&["Relu", "Neg", "f", "Add"]);
        functions.push(onnx::FunctionProto {
            name: "f".into(),
            domain: "local".into(),
            input: vec!["a".into()],
            output: vec!["b".into()],
            node: vec![onnx::NodeProto {
                op_type: op.into(),
                domain: if op == "f" {
                    "local".into()
                } else {
                    String::new()
                },
                input: vec!["a".into(), "a".into()][..1 + usize::from(op == "Add")].to_vec(),
                output: vec!["b".into()],
                ..Default::default()
            }],
            ..Default::default()
        });
        if let Some(n) = g.node.first_mut() {
            n.op_type = "f".into();
            n.domain = "local".into();
        }
    }
    onnx::ModelProto {
        ir_version: 8,
        opset_import: vec![
            onnx::OperatorSetIdProto {
                domain: String::new(),
                version,
            },
            onnx::OperatorSetIdProto {
                domain: "local".into(),
                version: 1,
            },
        ],
        producer_name: "fuzz".into(),
        graph: Some(g),
        functions,
        ..Default::default()
    }
}

fn encode(m: &onnx::ModelProto) -> Vec<u8> {
    prost::Message::encode_to_vec(m)
}

// ---------------------------------------------------------------------
// The properties: each makes one case from a seed.

/// Random bytes: pure noise, or noise behind a plausible ModelProto
/// prefix (an `ir_version` and a graph field whose length may lie).
fn random_bytes(seed: u64) -> Case {
    let mut rng = Rng(seed);
    let max = if rng.chance(4) { 4096 } else { 64 };
    let len = rng.below(max);
    let mut bytes = Vec::new();
    let kind = rng.below(3);
    if kind > 0 {
        bytes.extend([0x08, 0x08]); // ir_version 8
        bytes.push(0x3a); // graph: field 7, length-delimited
        let claimed = if kind == 1 {
            len as u64
        } else {
            *rng.pick(INTERESTING)
        };
        bytes.extend(varint(claimed));
    }
    bytes.extend(rng.bytes(len));
    Case::new(format!("{len} random bytes (prefix kind {kind})"), bytes)
}

/// Random protobuf: well-formed fields with random tags and wire types,
/// nested a few levels, so the decoder gets past the first byte.
fn random_protobuf(seed: u64) -> Case {
    fn message(rng: &mut Rng, depth: usize) -> Vec<Field> {
        (0..rng.below(8))
            .map(|_| {
                let tag = if rng.chance(4) {
                    1 + rng.below(1000) as u32
                } else {
                    1 + rng.below(25) as u32
                };
                let value = match rng.below(5) {
                    0 => Value::Varint(*rng.pick(INTERESTING)),
                    1 => Value::Fixed32(rng.next() as u32),
                    2 => Value::Fixed64(rng.next()),
                    3 if depth < 6 => Value::Bytes(encode_fields(&message(rng, depth + 1))),
                    _ => Value::Bytes(rng.pick(STRINGS).as_bytes().to_vec()),
                };
                Field { tag, value }
            })
            .collect()
    }
    let mut rng = Rng(seed);
    let bytes = encode_fields(&message(&mut rng, 0));
    Case::new(format!("{} bytes of random protobuf", bytes.len()), bytes)
}

/// A seed model with 1 to 4 byte-level edits.
fn mutated_fixture(seed: u64) -> Case {
    let mut rng = Rng(seed);
    let s = rng.pick(seeds());
    let mut bytes = s.bytes.clone();
    let edits: Vec<String> = (0..1 + rng.below(4))
        .map(|_| mutate_bytes(&mut rng, &mut bytes))
        .collect();
    let mut case = Case::new(format!("{} with {}", s.name, edits.join("; ")), bytes);
    case.base = Some(s.dir.clone());
    case.dims.clone_from(&s.dims);
    case
}

/// A seed model with 1 to 3 protobuf-aware edits (a field removed,
/// repeated, swapped or given another value, anywhere in the tree).
fn structurally_mutated_fixture(seed: u64) -> Case {
    let mut rng = Rng(seed);
    let s = rng.pick(seeds());
    let mut fields = parse_fields(&s.bytes).unwrap_or_default();
    let edits: Vec<String> = (0..1 + rng.below(3))
        .map(|_| mutate_tree(&mut rng, &mut fields, 0))
        .collect();
    let mut case = Case::new(
        format!("{} with {}", s.name, edits.join("; ")),
        encode_fields(&fields),
    );
    case.base = Some(s.dir.clone());
    if rng.chance(2) {
        case.dims.clone_from(&s.dims);
    }
    case
}

/// A seed model with external data, mutated either way, read with
/// `import_file` from a temporary copy of its directory (so the data
/// files sit beside it).
fn mutated_external_model(seed: u64) -> Case {
    let mut rng = Rng(seed);
    let external: Vec<&Seed> = seeds().iter().filter(|s| s.external).collect();
    assert!(!external.is_empty(), "no seed model with external data");
    let s = *rng.pick(&external);
    let (bytes, edits) = if rng.chance(2) {
        let mut bytes = s.bytes.clone();
        let edits: Vec<String> = (0..1 + rng.below(3))
            .map(|_| mutate_bytes(&mut rng, &mut bytes))
            .collect();
        (bytes, edits)
    } else {
        let mut fields = parse_fields(&s.bytes).unwrap_or_default();
        let edits = (0..1 + rng.below(3))
            .map(|_| mutate_tree(&mut rng, &mut fields, 0))
            .collect();
        (encode_fields(&fields), edits)
    };
    let mut case = Case::new(format!("{} with {}", s.name, edits.join("; ")), bytes);
    case.base = Some(s.dir.clone());
    case.dims.clone_from(&s.dims);
    // Most cases read through import_bytes with the seed's directory as
    // the base (fast); one in four through import_file on a copy.
    case.as_file = rng.chance(4);
    case
}

/// A random small model built here, sometimes with edits to its bytes.
fn generated_model(seed: u64) -> Case {
    let mut rng = Rng(seed);
    let model = random_model(&mut rng);
    let mut bytes = encode(&model);
    let ops: Vec<&str> = model
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .map(|n| n.op_type.as_str())
        .collect();
    let mut what = format!("a generated model of {ops:?}");
    if rng.chance(4) {
        let mut fields = parse_fields(&bytes).unwrap_or_default();
        let edit = mutate_tree(&mut rng, &mut fields, 0);
        bytes = encode_fields(&fields);
        what.push_str(&format!(", then {edit}"));
    }
    let mut case = Case::new(what, bytes);
    if rng.chance(2) {
        case.dims
            .insert("batch".into(), *rng.pick(&[0, 1, 3, 1 << 20, usize::MAX]));
    }
    case
}

#[test]
fn random_bytes_are_refused_without_panicking() {
    fuzz(
        "random_bytes_are_refused_without_panicking",
        256,
        random_bytes,
    );
}

#[test]
fn random_protobuf_is_refused_without_panicking() {
    fuzz(
        "random_protobuf_is_refused_without_panicking",
        256,
        random_protobuf,
    );
}

#[test]
fn mutated_fixtures_never_panic() {
    fuzz("mutated_fixtures_never_panic", 256, mutated_fixture);
}

#[test]
fn structurally_mutated_fixtures_never_panic() {
    fuzz(
        "structurally_mutated_fixtures_never_panic",
        256,
        structurally_mutated_fixture,
    );
}

#[test]
fn mutated_external_data_models_never_panic() {
    fuzz(
        "mutated_external_data_models_never_panic",
        256,
        mutated_external_model,
    );
}

#[test]
fn generated_models_never_panic() {
    fuzz("generated_models_never_panic", 256, generated_model);
}

/// Runs the case `BIRKHOFF_ONNX_FUZZ_REPLAY=<property>:<seed>` names
/// (a no-op without it).
#[test]
fn replay() {
    let Ok(spec) = std::env::var(REPLAY_ENV) else {
        return;
    };
    let (name, seed) = spec
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{REPLAY_ENV} is <property>:<seed>, not {spec:?}"));
    let seed: u64 = seed.parse().expect("a decimal seed");
    let property = TEST_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no property {name:?}"))
        .1;
    let case = property(seed);
    if name == "generated_models_never_panic" {
        eprintln!("model: {:#?}", random_model(&mut Rng(seed)));
    }
    eprintln!("case: {}", case.what);
    eprintln!("bytes: {:02x?}", case.bytes);
    if let Err(why) = run(&case) {
        panic!("{why}");
    }
}

/// A property: the case a seed makes.
type Property = fn(u64) -> Case;

/// The test names, for [`replay`] (failures name the test).
const TEST_NAMES: &[(&str, Property)] = &[
    ("random_bytes_are_refused_without_panicking", random_bytes),
    (
        "random_protobuf_is_refused_without_panicking",
        random_protobuf,
    ),
    ("mutated_fixtures_never_panic", mutated_fixture),
    (
        "structurally_mutated_fixtures_never_panic",
        structurally_mutated_fixture,
    ),
    (
        "mutated_external_data_models_never_panic",
        mutated_external_model,
    ),
    ("generated_models_never_panic", generated_model),
];

// ---------------------------------------------------------------------
// Sanity of the harness itself.

/// The seed models are real: the importer reads (nearly) every fixture
/// that is not an error case, so the mutations start from models that
/// reach deep into the importer; and none of them is slow.
#[test]
fn most_seed_models_import_unchanged() {
    let mut ok = 0;
    let mut slow = Vec::new();
    let fixtures: Vec<&Seed> = seeds()
        .iter()
        .filter(|s| s.name.starts_with("tests/onnx/fixtures/") && !s.name.contains("/err_"))
        .collect();
    for s in &fixtures {
        let start = Instant::now();
        let r = import_bytes(
            &s.bytes,
            &s.name,
            Some(&s.dir),
            &ImportOptions {
                dims: s.dims.clone(),
            },
        );
        let took = start.elapsed();
        if took > Duration::from_secs(1) {
            slow.push(format!("{} took {took:?}", s.name));
        }
        ok += usize::from(r.is_ok());
    }
    assert!(
        ok * 10 >= fixtures.len() * 9,
        "only {ok} of {} fixture seed models import",
        fixtures.len()
    );
    assert!(slow.is_empty(), "slow seed models: {slow:?}");
}

#[test]
fn the_protobuf_walker_round_trips_every_seed() {
    for s in seeds() {
        let Some(fields) = parse_fields(&s.bytes) else {
            continue;
        };
        assert_eq!(encode_fields(&fields), s.bytes, "{}", s.name);
    }
}

#[test]
fn generated_models_are_mostly_importable() {
    // The generator is not useful if every model it makes fails at the
    // first check; some must get through, and most must get past decoding.
    let mut imported = 0;
    let mut node_errors = 0;
    for seed in 0..400 {
        let model = random_model(&mut Rng(seed));
        match outcome(&Case::new("", encode(&model))) {
            Ok(Outcome::Imported) => imported += 1,
            Ok(Outcome::Refused(m)) if m.starts_with("node ") => node_errors += 1,
            _ => {}
        }
    }
    assert!(
        imported >= 20,
        "only {imported} of 400 generated models import"
    );
    assert!(
        node_errors >= 40,
        "only {node_errors} of 400 generated models reach a node error"
    );
}
