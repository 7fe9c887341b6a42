//! `--reload` for development: polls the modification times of the application's Python
//! files once a second and reloads the workers (the same path as SIGHUP) when one changes.
//! Polling, not inotify: it works the same in containers, on network file systems and in
//! editors that replace files, and a second's delay does not matter while developing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Directories never worth watching (dependencies, caches, VCS data).
const SKIP: &[&str] = &[
    ".git",
    ".hg",
    ".venv",
    "venv",
    "__pycache__",
    "node_modules",
    "site-packages",
    "target",
    ".tox",
];
/// Stop scanning past this many files, so a huge tree cannot make a reload loop slow.
const MAX_FILES: usize = 20_000;

fn scan(roots: &[PathBuf]) -> HashMap<PathBuf, SystemTime> {
    let mut seen = HashMap::new();
    let mut stack: Vec<PathBuf> = roots.to_vec();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                let name = e.file_name();
                if !SKIP.iter().any(|s| name == *s) {
                    stack.push(path);
                }
            } else if ft.is_file() && path.extension().is_some_and(|x| x == "py") {
                if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                    seen.insert(path, m);
                }
                if seen.len() >= MAX_FILES {
                    return seen;
                }
            }
        }
    }
    seen
}

fn changed(
    before: &HashMap<PathBuf, SystemTime>,
    now: &HashMap<PathBuf, SystemTime>,
) -> Option<PathBuf> {
    for (p, t) in now {
        if before.get(p) != Some(t) {
            return Some(p.clone());
        }
    }
    before.keys().find(|p| !now.contains_key(*p)).cloned()
}

/// Calls `reload` whenever a `.py` file under `roots` changes; runs until aborted.
pub(crate) async fn watch(roots: Vec<PathBuf>, reload: crate::ops::control::Controller) {
    let r = roots.clone();
    let mut known = tokio::task::spawn_blocking(move || scan(&r))
        .await
        .unwrap_or_default();
    tracing::info!(files = known.len(), roots = ?roots, "--reload: watching Python files");
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let r = roots.clone();
        let now = tokio::task::spawn_blocking(move || scan(&r))
            .await
            .unwrap_or_default();
        if let Some(p) = changed(&known, &now) {
            tracing::info!(file = %p.display(), "--reload: file changed; reloading workers");
            reload.send(crate::ops::control::Control::Reload("--reload file change"));
        }
        known = now;
    }
}

/// Directories to watch for an application: its working directory and the extra
/// `sys.path` entries, made absolute.
pub fn roots_for(cwd: &Path, pythonpath: &[PathBuf]) -> Vec<PathBuf> {
    let mut v = vec![cwd.to_path_buf()];
    for p in pythonpath {
        let p = if p.is_absolute() {
            p.clone()
        } else {
            cwd.join(p)
        };
        if !v.iter().any(|x| p.starts_with(x)) {
            v.push(p);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_touched_python_file_is_a_change_and_caches_are_ignored() {
        let dir = std::env::temp_dir().join(format!("spillway-devreload-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("__pycache__")).unwrap();
        std::fs::write(dir.join("app.py"), "x = 1\n").unwrap();
        std::fs::write(dir.join("__pycache__/app.cpython-311.py"), "").unwrap();
        std::fs::write(dir.join("notes.txt"), "").unwrap();
        let a = scan(std::slice::from_ref(&dir));
        assert_eq!(a.len(), 1, "{a:?}");
        let f = std::fs::File::options()
            .write(true)
            .open(dir.join("app.py"))
            .unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        let b = scan(std::slice::from_ref(&dir));
        assert_eq!(changed(&a, &b), Some(dir.join("app.py")));
        std::fs::remove_file(dir.join("app.py")).unwrap();
        let c = scan(std::slice::from_ref(&dir));
        assert_eq!(changed(&b, &c), Some(dir.join("app.py")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
