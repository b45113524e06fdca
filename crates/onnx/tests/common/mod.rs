//! What the importer's robustness tests share.

use std::process::Command;

/// Address-space cap of the child processes (4 GiB): far more than any
/// small model needs, far less than an allocation sized by a corrupted
/// count.
pub const MEMORY_LIMIT_KIB: u64 = 4 << 20;

/// A command that runs test `name` of the current test binary alone, in
/// a shell whose address space is capped at [`MEMORY_LIMIT_KIB`], with
/// `child_env` set (so the test knows to run itself) and backtraces off
/// (they would push the abort message out of the tail shown).
pub fn capped_test_command(name: &str, child_env: &str) -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -v {MEMORY_LIMIT_KIB} 2>/dev/null; exec \"$0\" \"$@\""
        ))
        .arg(exe)
        .args([
            name,
            "--exact",
            "--include-ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(child_env, "1")
        .env("RUST_BACKTRACE", "0");
    cmd
}
