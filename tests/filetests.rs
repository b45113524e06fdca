//! IR file tests: every `.bir` file under `tests/filetests/` is one test,
//! named by its path relative to that folder (`opt/sinkhorn.bir`), so
//! `cargo test --test filetests -- opt/sinkhorn` runs just that file.
//! `BIRKHOFF_BLESS=1` rewrites `precise-output` expectations in place.
//! The format is in `docs/testing.md`.

use std::path::Path;

use birkhoff_filetests::{collect_files, needs_gpu_codegen, run_file};
use libtest_mimic::{Arguments, Failed, Trial};

fn run(path: &Path) -> Result<(), Failed> {
    match run_file(path) {
        Ok(outcome) if outcome.passed() => Ok(()),
        Ok(outcome) => Err(outcome.to_string().into()),
        Err(e) => Err(e.to_string().into()),
    }
}

fn main() {
    let args = Arguments::from_args();
    // Run from the package root so failures name files as
    // `tests/filetests/opt/sinkhorn.bir:12`.
    if let Err(e) = std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")) {
        eprintln!("cannot enter the package root: {e}");
        std::process::exit(2);
    }
    let root = Path::new("tests/filetests");
    let files = match collect_files(&[root.to_path_buf()]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot read {}: {e}", root.display());
            std::process::exit(2);
        }
    };
    if files.is_empty() {
        eprintln!("no .bir files under {}", root.display());
        std::process::exit(2);
    }
    let trials = files
        .into_iter()
        .map(|path| {
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            // `test llvm` files need GPU code generation.
            let skip = !birkhoff::gpu::CODEGEN_ENABLED
                && std::fs::read_to_string(&path).is_ok_and(|t| needs_gpu_codegen(&t));
            Trial::test(name, move || run(&path)).with_ignored_flag(skip)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
