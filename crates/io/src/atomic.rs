//! Atomic file writes: a crash or error never leaves a half-written file.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically: into a temporary file in the same
/// directory, synced, then renamed over `path`. On error `path` is
/// untouched and the temporary file removed. A symbolic link is written
/// through (the file it points to is replaced, the link stays); a path
/// that is neither new nor a regular file (a directory, a device such as
/// `/dev/full`, a FIFO) is refused with an error rather than replaced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomically(path, |f| f.write_all(bytes))
}

/// Creates a fresh temporary file next to `path`, lets `fill` write it,
/// syncs it and renames it over `path`. On any error (or panic in `fill`)
/// the temporary file is removed and `path` is untouched.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    stage(path, fill)?.commit()
}

/// A file written in full beside its target but not yet in place: the
/// first half of an atomic write, for writing several files all or none
/// (stage every one, then [`Staged::commit`] each). Dropped uncommitted,
/// the temporary file is removed and the target untouched.
pub struct Staged {
    tmp: RemoveOnDrop,
    target: PathBuf,
    dir: PathBuf,
}

/// Checks that `path` may be replaced (see [`write_atomic`]), creates a
/// fresh temporary file next to it, lets `fill` write it and syncs it.
///
/// # Errors
/// `path` is not replaceable, or creating, writing or syncing failed (the
/// temporary file is removed).
pub fn stage(path: &Path, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<Staged> {
    let target = replaceable_target(path)?;
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tmp, mut file) = create_temp(&dir, name)?;
    let tmp = RemoveOnDrop(Some(tmp));
    fill(&mut file)?;
    file.sync_all()?;
    drop(file);
    Ok(Staged { tmp, target, dir })
}

impl Staged {
    /// Renames the temporary file over the target.
    ///
    /// # Errors
    /// The rename failed (the temporary file is removed).
    pub fn commit(self) -> io::Result<()> {
        fs::rename(self.tmp.path(), &self.target)?;
        self.tmp.disarm();
        // Make the rename itself durable. Best effort: not every platform
        // or file system can sync a directory, and the data is in place.
        #[cfg(unix)]
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// The file a write to `path` replaces: `path` itself when it is new or a
/// regular file, the file a symbolic link points to (followed to its end,
/// so the link stays a link), and an error for anything else — a device,
/// a FIFO, a directory — which a rename would destroy.
fn replaceable_target(path: &Path) -> io::Result<PathBuf> {
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(path.to_path_buf()),
        other => other?,
    };
    if meta.file_type().is_symlink() {
        return match fs::canonicalize(path) {
            Ok(end) => replaceable_target(&end),
            // A dangling link: write the file it names.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let link = fs::read_link(path)?;
                let end = match path.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
                if fs::symlink_metadata(&end).is_ok() {
                    // A link into a missing directory, or a loop.
                    Err(e)
                } else {
                    Ok(end)
                }
            }
            Err(e) => Err(e),
        };
    }
    if meta.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "refusing to replace {}: it is not a regular file (a directory, device or FIFO)",
                path.display()
            ),
        ))
    }
}

/// A new file `.<name>.<pid>.<n>.tmp` in `dir`, never an existing one.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
        let tmp = dir.join(tmp_name);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            // Left over by an earlier process with the same id: skip it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free name for a temporary file",
    ))
}

/// Removes a temporary file when dropped, unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("armed")
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("birkhoff-atomic-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_symlink_is_written_through_and_stays_a_link() {
        let dir = scratch("link");
        let target = dir.join("target.txt");
        fs::write(&target, "old").unwrap();
        let link = dir.join("link.bir");
        std::os::unix::fs::symlink("target.txt", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        // A dangling link names the file to create.
        let dangling = dir.join("dangling.bir");
        std::os::unix::fs::symlink("made.txt", &dangling).unwrap();
        write_atomic(&dangling, b"made").unwrap();
        assert_eq!(fs::read_to_string(dir.join("made.txt")).unwrap(), "made");
        assert!(
            fs::symlink_metadata(&dangling)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn devices_directories_and_fifos_are_refused_not_replaced() {
        let dir = scratch("special");
        let sub = dir.join("sub");
        fs::create_dir(&sub).unwrap();
        let e = write_atomic(&sub, b"x").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(sub.is_dir());
        if Path::new("/dev/null").exists() {
            let e = write_atomic(Path::new("/dev/null"), b"x").unwrap_err();
            assert!(
                e.to_string().contains("refusing to replace /dev/null"),
                "{e}"
            );
            assert!(!fs::metadata("/dev/null").unwrap().is_file());
        }
        // A link to a device is refused too.
        let link = dir.join("null.bir");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        assert!(write_atomic(&link, b"x").is_err());
        // No temporary file is left behind.
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
