//! Project-local virtualenvs (Flask; an APM agent), each created once per target dir.
//!
//! Tests run in parallel (threads and test binaries), so creation is guarded by an
//! exclusive file lock. Nothing is skipped: if `python3 -m venv` or `pip` fails, the
//! calling test fails with their output.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Path of a virtualenv that has Flask installed (created on first use).
pub fn flask_venv() -> PathBuf {
    venv("flask-venv", &["flask"])
}

/// Path of a virtualenv with Scout's APM agent, whose own code parses `X-Request-Start`
/// (created on first use).
pub fn apm_venv() -> PathBuf {
    venv("apm-venv", &["scout-apm>=3,<5"])
}

fn venv(name: &str, packages: &[&str]) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(root).unwrap();
    let dir = root.join(name);
    let ready = dir.join(".spillway-ready");
    let lock = File::create(root.join(format!("{name}.lock"))).expect("create lock file");
    lock.lock().expect("lock the virtualenv's lock file");
    if !ready.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&dir),
            "python3 -m venv",
        );
        run(
            Command::new(dir.join("bin/pip"))
                .args(["install", "--disable-pip-version-check", "--no-input"])
                .args(packages)
                .env_remove("PIP_REQUIRE_VIRTUALENV"),
            &format!("pip install {}", packages.join(" ")),
        );
        std::fs::write(&ready, "ok\n").unwrap();
    }
    drop(lock);
    dir
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
