//! `docs/architecture.md` against the tree: its crate table must list every
//! workspace member with exactly the workspace crates its `Cargo.toml`
//! depends on, and every path its stage table names must exist. The page is
//! where a newcomer starts; this keeps it true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rows of the Markdown table that follows the heading `heading`, as
/// cells (the header and the separator row left out).
fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("docs/architecture.md has no '{heading}'"));
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// The text between backticks in `cell`.
fn quoted(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The `birkhoff*` crates in the `[dependencies]` section of a manifest.
fn workspace_dependencies(manifest: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_deps = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if !in_deps {
            continue;
        }
        let key = line.split(['=', '.', ' ']).next().unwrap_or_default();
        if key.starts_with("birkhoff") {
            out.insert(key.to_string());
        }
    }
    out
}

/// The workspace members, from the root manifest: `path -> package name`.
fn members() -> BTreeMap<String, String> {
    let manifest = read(&root().join("Cargo.toml"));
    let list = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("the root manifest lists its members");
    quoted_strings(list)
        .into_iter()
        .map(|path| {
            let m = read(&root().join(&path).join("Cargo.toml"));
            let name = m
                .lines()
                .find_map(|l| l.strip_prefix("name = "))
                .map(|n| n.trim_matches('"').to_string())
                .unwrap_or_else(|| panic!("{path}/Cargo.toml has no package name"));
            (path, name)
        })
        .collect()
}

fn quoted_strings(s: &str) -> Vec<String> {
    s.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_crate_table_matches_every_manifest() {
    let doc = read(&root().join("docs/architecture.md"));
    let rows = table(&doc, "## Crates and their dependencies");
    assert!(!rows.is_empty(), "the crate table is empty");
    let mut documented = BTreeMap::new();
    for row in &rows {
        let [name, path, deps, _] = &row[..] else {
            panic!("a crate row has four cells: {row:?}");
        };
        let name = quoted(name).concat();
        let path = quoted(path).concat();
        let want: BTreeSet<String> = quoted(deps).into_iter().collect();
        let manifest = read(&root().join(&path).join("Cargo.toml"));
        let got = workspace_dependencies(&manifest);
        assert_eq!(
            got, want,
            "{name} ({path}/Cargo.toml) depends on {got:?}; docs/architecture.md says {want:?}"
        );
        documented.insert(path, name);
    }
    assert_eq!(
        documented,
        members(),
        "the crate table and the workspace members differ"
    );
}

#[test]
fn every_path_in_the_stage_table_exists() {
    let doc = read(&root().join("docs/architecture.md"));
    let rows = table(&doc, "## Where each stage lives");
    assert!(rows.len() > 20, "the stage table lost rows");
    let mut checked = 0;
    for row in &rows {
        for path in row.iter().flat_map(|c| quoted(c)) {
            if path.contains('/') {
                assert!(
                    root().join(&path).exists(),
                    "docs/architecture.md names {path}, which does not exist"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 30,
        "only {checked} paths found in the stage table"
    );
}

#[test]
fn the_dependency_parser_reads_only_normal_dependencies() {
    let manifest = "[package]\nname = \"x\"\n\n[dependencies]\nbirkhoff-ir.workspace = true\n\
                    birkhoff-io = { path = \"../io\" }\nhalf.workspace = true\n\n\
                    [dev-dependencies]\nbirkhoff-dsl.workspace = true\n";
    let got: Vec<String> = workspace_dependencies(manifest).into_iter().collect();
    assert_eq!(got, ["birkhoff-io", "birkhoff-ir"]);
}
