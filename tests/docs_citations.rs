//! Every file the documentation and the code cite is in the repository:
//! a path such as `docs/ir.md` or `crates/opt/tests/expand.rs` in the
//! README, `docs/` or a source comment must name a file or directory that
//! exists (paths in source comments may be relative to their crate).

use std::path::{Path, PathBuf};

/// Where a cited path may start.
const ROOTS: [&str; 9] = [
    "docs/",
    "crates/",
    "tests/",
    "examples/",
    "benches/",
    "scripts/",
    "src/",
    "ir/",
    "backends/",
];

/// Citations that name no file of this repository on purpose.
const NOT_OURS: [(&str, &str); 1] = [
    // A user's source file in an example error message.
    ("docs/dsl.md", "src/model.rs"),
];

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

/// The repository-relative paths cited in `text`.
fn citations(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for root in ROOTS {
        for (at, _) in text.match_indices(root) {
            if text[..at].chars().next_back().is_some_and(is_path_char) {
                continue;
            }
            let end = text[at..]
                .find(|c: char| !is_path_char(c))
                .map_or(text.len(), |e| at + e);
            let path = text[at..end].trim_end_matches(['.', '-', '/']);
            if path.len() > root.len() {
                out.push(path.to_string());
            }
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if p.is_dir() {
            walk(&p, out);
        } else if matches!(
            p.extension().and_then(|x| x.to_str()),
            Some("md" | "rs" | "toml")
        ) {
            out.push(p);
        }
    }
}

/// The directory of the nearest `Cargo.toml` above `file`.
fn crate_root(root: &Path, file: &Path) -> PathBuf {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d.join("Cargo.toml").exists() {
            return d.to_path_buf();
        }
        dir = d.parent();
    }
    root.to_path_buf()
}

#[test]
fn every_cited_path_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(root, &mut files);
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut dangling = Vec::new();
    let mut checked = 0;
    for file in &files {
        let rel = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "tests/docs_citations.rs" {
            continue; // its examples are not citations
        }
        let text = std::fs::read_to_string(file).unwrap_or_default();
        // In sources, citations are in comments; strings there are data
        // (a test's scratch paths).
        let text = if rel.ends_with(".rs") {
            text.lines()
                .filter_map(|l| l.find("//").map(|i| &l[i..]))
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            text
        };
        for cited in citations(&text) {
            checked += 1;
            if NOT_OURS.contains(&(rel.as_str(), cited.as_str()))
                || cited.contains("proptest-regressions")
            {
                continue;
            }
            let from_crate = !rel.ends_with(".md") && crate_root(root, file).join(&cited).exists();
            if !root.join(&cited).exists() && !from_crate {
                dangling.push(format!("{rel}: {cited}"));
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} citations found: is the scan broken?"
    );
    assert!(
        dangling.is_empty(),
        "cited but not in the repository:\n{}",
        dangling.join("\n")
    );
}

#[test]
fn the_scan_finds_what_a_citation_looks_like() {
    let found = citations("see `docs/ir.md`, (crates/opt/src/lib.rs) and not mydocs/x.md.");
    assert_eq!(found, ["docs/ir.md", "crates/opt/src/lib.rs"]);
}
