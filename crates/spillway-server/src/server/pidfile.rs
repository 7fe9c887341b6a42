//! The pid file (`--pid-file`): written at start, removed at exit.
//!
//! It is written to a temporary file in the same directory and renamed into place:
//! rename(2) replaces whatever the name points at (a symbolic link planted there included)
//! and never writes through it, and a reader sees either no file or the whole pid. The
//! temporary file is created exclusively and without following links.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The front's pid file; removed when dropped.
pub(crate) struct PidFile(PathBuf);

impl PidFile {
    /// Writes our pid to `path`.
    pub fn create(path: &Path) -> io::Result<PidFile> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
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
            f.write_all(format!("{}\n", std::process::id()).as_bytes())?;
            std::fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map(|()| PidFile(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // remove_file unlinks the name itself; it never follows a link.
        let _ = std::fs::remove_file(&self.0);
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
        let pid = PidFile::create(&pid_path).unwrap();
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
}
