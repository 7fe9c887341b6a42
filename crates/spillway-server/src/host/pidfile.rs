//! The pid file (`--pid-file`): written at start, removed at exit, and exclusive.
//!
//! It is written to a temporary file in the same directory and renamed into place:
//! rename(2) replaces whatever the name points at (a symbolic link planted there included)
//! and never writes through it, and a reader sees either no file or the whole pid. The
//! temporary file is created exclusively and without following links.
//!
//! The server holds an flock(2) on the file for its life: a second server finds the lock
//! held and refuses to start (naming the holder), while a file left by a server that
//! died holds no lock and is replaced. At exit the file is removed only if the name still
//! points at the file this server wrote.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why the pid file could not be taken.
#[derive(Debug)]
pub(crate) enum PidFileError {
    /// A running server holds it; its pid as written in the file.
    Held(String),
    /// It could not be written.
    Io(io::Error),
}

/// The front's pid file, locked; removed when dropped if it is still ours.
pub(crate) struct PidFile {
    path: PathBuf,
    /// Holds the lock.
    file: File,
}

/// Takes an exclusive, non-blocking flock on `f`; false if another process holds one.
fn try_lock(f: &File) -> io::Result<bool> {
    // SAFETY: flock(2) on a descriptor owned by `f`, alive for the call.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        _ => Err(e),
    }
}

/// The pid in a pid file another server holds locked, or `None` if nobody holds it.
fn holder(path: &Path) -> io::Result<Option<String>> {
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        // Absent, or a link or something else planted there: replaced by the rename.
        Err(_) => return Ok(None),
    };
    if !f.metadata()?.is_file() || try_lock(&f)? {
        return Ok(None);
    }
    let mut pid = String::new();
    let _ = Read::by_ref(&mut f).take(32).read_to_string(&mut pid);
    Ok(Some(pid.trim().to_owned()))
}

impl PidFile {
    /// Writes our pid to `path` and locks it.
    pub fn create(path: &Path) -> Result<PidFile, PidFileError> {
        let name = path.file_name().ok_or_else(|| {
            PidFileError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file name",
            ))
        })?;
        if let Some(pid) = holder(path).map_err(PidFileError::Io)? {
            return Err(PidFileError::Held(pid));
        }
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            try_lock(&f)?;
            f.write_all(format!("{}\n", std::process::id()).as_bytes())?;
            std::fs::rename(&tmp, path)?;
            Ok(f)
        })();
        match written {
            Ok(file) => Ok(PidFile {
                path: path.to_owned(),
                file,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(PidFileError::Io(e))
            }
        }
    }

    /// Whether the name still points at the file this server wrote.
    fn still_ours(&self) -> bool {
        match (std::fs::symlink_metadata(&self.path), self.file.metadata()) {
            (Ok(at_path), Ok(ours)) => at_path.dev() == ours.dev() && at_path.ino() == ours.ino(),
            _ => false,
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // remove_file unlinks the name itself; it never follows a link. A file another
        // server wrote since (after ours was deleted by hand) is not ours to remove.
        if self.still_ours() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_symlink_is_replaced_not_written_through() {
        let dir = std::env::temp_dir().join(format!("spillway-pidfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let pid_path = dir.join("spillway.pid");
        std::os::unix::fs::symlink(&victim, &pid_path).unwrap();
        let pid = PidFile::create(&pid_path).map_err(|_| ()).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        let meta = std::fs::symlink_metadata(&pid_path).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(
            std::fs::read_to_string(&pid_path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(pid);
        assert!(!pid_path.exists());
        assert!(victim.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_held_pid_file_is_refused_and_a_replaced_one_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("spillway-pidlock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("spillway.pid");
        let first = PidFile::create(&path).map_err(|_| ()).unwrap();
        // flock belongs to the open file description: a second open in this process
        // conflicts as another process's would.
        match PidFile::create(&path) {
            Err(PidFileError::Held(pid)) => assert_eq!(pid, std::process::id().to_string()),
            Err(PidFileError::Io(e)) => panic!("{e}"),
            Ok(_) => panic!("a held pid file was taken over"),
        }
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "4242\n").unwrap();
        drop(first);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4242\n");
        // A file nobody holds (its server died) is replaced.
        let again = PidFile::create(&path).map_err(|_| ()).unwrap();
        drop(again);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
