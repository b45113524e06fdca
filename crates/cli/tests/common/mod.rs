//! What every `birkhoff` end-to-end test uses: running the binary,
//! asserting success or a clean one-line failure, scratch directories.
#![allow(dead_code, reason = "each test file uses its own subset")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `birkhoff ARGS`.
pub fn birkhoff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_birkhoff"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// The output's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The output's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = birkhoff(args);
    assert!(
        o.status.success(),
        "birkhoff {args:?} failed:\n{}",
        stderr(&o)
    );
    stdout(&o)
}

/// Asserts a clean failure — exit code 1, a single `error:` line, no panic —
/// and returns that line.
pub fn fails(args: &[&str]) -> String {
    let o = birkhoff(args);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "birkhoff {args:?} should fail cleanly:\n{err}"
    );
    assert!(
        !err.contains("panicked"),
        "birkhoff {args:?} panicked:\n{err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("note:")).collect();
    assert_eq!(
        lines.len(),
        1,
        "birkhoff {args:?} should print one error line:\n{err}"
    );
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_string()
}

/// A fresh scratch directory, removed on drop.
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// A new empty directory for test `name`.
    pub fn new(name: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("birkhoff-cli-{name}-"))
            .tempdir()
            .unwrap();
        Scratch(dir)
    }

    /// `rel` inside the directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.path().join(rel)
    }

    /// `rel` inside the directory, as a string.
    pub fn s(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }
}

/// The file names in `dir`, sorted (none if it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).map_or_else(
        |_| vec![],
        |rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        },
    );
    v.sort();
    v
}
