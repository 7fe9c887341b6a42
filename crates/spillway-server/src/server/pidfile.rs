//! The pid file (`--pid-file`): written at start, removed at exit.

use std::path::{Path, PathBuf};

/// The front's pid file; removed when dropped.
pub(crate) struct PidFile(PathBuf);

impl PidFile {
    /// Writes our pid to `path`.
    pub fn create(path: &Path) -> std::io::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
        Ok(PidFile(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
