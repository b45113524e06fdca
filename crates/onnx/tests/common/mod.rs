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

/// A protobuf varint at `pos` (advanced past it), or `None` if the bytes
/// end first or it is longer than ten bytes.
pub fn read_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut x = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        x |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(x);
        }
    }
    None
}
