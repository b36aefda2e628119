//! Files in a data directory, written so that a crash leaves either the old or the new content:
//! write a temporary file, fsync it, rename it over the target, fsync the directory.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use thiserror::Error;

/// A file operation that failed, and on which path.
#[derive(Debug, Error)]
#[error("{}: {source}", path.display())]
pub struct FileError {
    /// The file or directory.
    pub path: PathBuf,
    /// What the OS said.
    #[source]
    pub source: io::Error,
}

impl FileError {
    /// Turns an `io::Error` on `path` into a [`FileError`] (for `map_err`).
    pub fn on(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
        move |source| FileError {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Who may read a file written here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The usual permissions (umask).
    Shared,
    /// Only the owner (0600): keys and identities.
    OwnerOnly,
}

/// Replaces `path` with `bytes` atomically and durably: after a crash the file holds either its
/// old content or all of `bytes`, and once this returns the new content survives power loss.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_atomic_with(path, bytes, Access::Shared)
}

/// [`write_atomic`] with the permissions of `access`.
pub fn write_atomic_with(path: &Path, bytes: &[u8], access: Access) -> Result<(), FileError> {
    let tmp = path.with_extension("tmp");
    write_new(&tmp, bytes, access, false)?;
    fs::rename(&tmp, path).map_err(FileError::on(path))?;
    sync_parent(path)
}

/// Writes `bytes` to `path` and fsyncs it; with `create_new`, refuses to replace a file that
/// exists (an identity is never overwritten).
pub fn write_new(
    path: &Path,
    bytes: &[u8],
    access: Access,
    create_new: bool,
) -> Result<(), FileError> {
    let mut options = fs::OpenOptions::new();
    options.write(true);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    #[cfg(unix)]
    if access == Access::OwnerOnly {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = access;
    let mut file = options.open(path).map_err(FileError::on(path))?;
    file.write_all(bytes).map_err(FileError::on(path))?;
    file.sync_all().map_err(FileError::on(path))
}

/// Fsyncs the directory holding `path`, so that a rename or a new file in it is durable.
pub fn sync_parent(path: &Path) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    sync_dir(dir)
}

/// Fsyncs the directory `dir` (a no-op where directories cannot be opened, as on Windows).
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(FileError::on(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Creates `dir` and its parents if missing.
pub fn create_dir(dir: &Path) -> Result<(), FileError> {
    fs::create_dir_all(dir).map_err(FileError::on(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_and_owner_only_files_are_private() {
        let dir = std::env::temp_dir().join(format!("p2pmix-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        create_dir(&dir).unwrap();
        let path = dir.join("state.pb");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!path.with_extension("tmp").exists());
        let secret = dir.join("identity.key");
        write_new(&secret, b"k", Access::OwnerOnly, true).unwrap();
        assert!(
            write_new(&secret, b"other", Access::OwnerOnly, true).is_err(),
            "an identity is never overwritten"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&secret).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
