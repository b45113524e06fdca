//! Bounded reads of untrusted files: a path that is not a regular file (a
//! FIFO that would block forever, a device such as `/dev/zero` that never
//! ends, a directory) is refused before it is opened, and a file larger
//! than its format allows is refused before it is read.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

/// The largest IR text file read: far more than the parser's million-node
/// graphs take.
pub const MAX_TEXT_BYTES: u64 = 1 << 30;

/// Reads all of `path`, which must be a regular file (symbolic links are
/// followed) of at most `limit` bytes.
///
/// # Errors
/// `path` is missing or unreadable, not a regular file, or larger than
/// `limit` (also if it grows past it while being read).
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let meta = fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a directory, device or FIFO)",
        ));
    }
    let too_large = |len: u64| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{len} bytes, over the limit of {limit} bytes for this kind of file"),
        )
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::new();
    File::open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text, at most [`MAX_TEXT_BYTES`].
///
/// # Errors
/// As [`read_bounded`], or the file is not UTF-8.
pub fn read_text(path: &Path) -> io::Result<String> {
    String::from_utf8(read_bounded(path, MAX_TEXT_BYTES)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("not UTF-8 text: {e}")))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn special_files_and_oversized_files_are_refused() {
        let e = read_bounded(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_text(Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.npy");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            // Refused without opening it, which would block.
            let e = read_bounded(&fifo, 1 << 20).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        let big = dir.path().join("big.bir");
        fs::write(&big, vec![b' '; 100]).unwrap();
        let e = read_bounded(&big, 99).unwrap_err();
        assert!(
            e.to_string().contains("100 bytes, over the limit of 99"),
            "{e}"
        );
        assert_eq!(read_bounded(&big, 100).unwrap().len(), 100);
    }
}
