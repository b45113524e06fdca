//! Whether an allocation a user's sizes ask for can succeed, asked before
//! making it: a failed allocation aborts the process, an error does not.

/// The memory the system can give this process now, in bytes: Linux's
/// `MemAvailable`; `None` where it cannot be read.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `Err` with a message giving both sizes when `bytes` (for `what`) is
/// more than the system has available; `Ok` when it fits or the
/// available memory is unknown.
pub fn ensure_memory(bytes: u64, what: &str) -> Result<(), String> {
    match available_memory() {
        Some(free) if bytes > free => Err(format!(
            "{what}: {bytes} bytes ({:.1} GiB) needed, more than the {:.1} GiB of memory available",
            bytes as f64 / f64::from(1u32 << 30),
            free as f64 / f64::from(1u32 << 30)
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_sizes_are_refused_and_small_ones_pass() {
        assert!(ensure_memory(1 << 20, "a small buffer").is_ok());
        if available_memory().is_some() {
            let e = ensure_memory(u64::MAX, "8 TiB of inputs").unwrap_err();
            assert!(
                e.starts_with("8 TiB of inputs: 18446744073709551615 bytes"),
                "{e}"
            );
        }
    }
}
