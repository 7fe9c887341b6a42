//! Workers run in the application's own interpreter: a virtualenv's python, or the one
//! `--python` names, whatever interpreter the tests themselves were built with.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::Spillway;

/// `sys.version` of an interpreter, as it prints it.
fn version_of(python: &Path) -> String {
    let out = Command::new(python)
        .args(["-c", "import sys; print(sys.version)"])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// CPython 3.10+ interpreters on this host other than `python3` on PATH (Debian's, pyenv's),
/// at most `n`, one per version.
fn other_interpreters(n: usize) -> Vec<PathBuf> {
    let default = version_of(Path::new("python3"));
    let mut candidates = vec![PathBuf::from("/usr/bin/python3")];
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")));
    if let Some(Ok(dir)) = pyenv.map(|p| std::fs::read_dir(p.join("versions"))) {
        let mut versions: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev().map(|v| v.join("bin/python3")));
    }
    let mut seen = vec![default];
    let mut out = Vec::new();
    for c in candidates {
        if out.len() == n || !c.is_file() {
            continue;
        }
        let ok = Command::new(&c)
            .args(["-c", "import sys; sys.exit(sys.version_info < (3, 10))"])
            .status()
            .is_ok_and(|s| s.success());
        let v = version_of(&c);
        if ok && !seen.contains(&v) {
            seen.push(v);
            out.push(c);
        }
    }
    out
}

fn venv_of(python: &Path, dir: &Path) -> PathBuf {
    let venv = dir.join("venv");
    let out = Command::new(python)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} -m venv: {}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    venv
}

#[test]
fn a_virtualenv_of_another_interpreter_runs_that_interpreter() {
    let mut pythons = other_interpreters(2);
    if pythons.is_empty() {
        // A host with one Python still proves the virtualenv's own interpreter runs.
        pythons.push(PathBuf::from("python3"));
    }
    for python in pythons {
        let venv = venv_of(&python, &crate::support::test_dir());
        let srv = Spillway::new("apps/interpreter_probe.py:app")
            .arg("--virtualenv")
            .arg(&venv)
            .start();
        let j = srv.get("/").json();
        assert_eq!(
            j.get("version").s(),
            version_of(&venv.join("bin/python")),
            "{}",
            srv.report()
        );
        assert_eq!(Path::new(j.get("prefix").s()), venv, "{j}");
        assert_eq!(
            Path::new(j.get("executable").s()),
            venv.join("bin/python"),
            "{j}"
        );
        assert_eq!(j.get("argv").to_string(), r#"["spillway"]"#, "{j}");
        // The start-up log names the interpreter each worker runs.
        assert!(
            srv.stderr_lines_with("worker imported the application")
                .iter()
                .all(|l| l.contains(&format!("python={}", venv.join("bin/python").display()))),
            "{}",
            srv.report()
        );
    }
}

#[test]
fn python_names_the_interpreter_directly() {
    let python = other_interpreters(1)
        .pop()
        .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"));
    if !python.exists() {
        panic!("no CPython 3.10+ interpreter besides python3 and no /usr/bin/python3");
    }
    let srv = Spillway::new("apps/interpreter_probe.py:app")
        .arg("--python")
        .arg(&python)
        .start();
    let j = srv.get("/").json();
    assert_eq!(j.get("version").s(), version_of(&python), "{j}");
    assert!(
        srv.stderr().contains("python_chosen_by=\"--python\""),
        "{}",
        srv.report()
    );
}

#[test]
fn an_interpreter_workers_cannot_use_is_one_line_naming_python() {
    for (python, says) in [
        ("/nonexistent/python3", "does not exist"),
        ("/bin/true", "is not a Python 3 interpreter"),
        ("no-such-python-on-path", "on PATH"),
    ] {
        let out = Spillway::new("apps/interpreter_probe.py:app")
            .args(["--python", python])
            .run();
        crate::cli::one_line_naming(&out, "--python");
        assert!(out.stderr.contains(says), "{python}: {out}");
    }
    // An interpreter too old for the worker module, where the host has one.
    let old = other_old_interpreter();
    if let Some(old) = old {
        let out = Spillway::new("apps/interpreter_probe.py:app")
            .arg("--python")
            .arg(&old)
            .run();
        crate::cli::one_line_naming(&out, "--python");
        assert!(out.stderr.contains("3.10 or newer"), "{out}");
    }
}

/// A CPython older than 3.10 (pyenv keeps some), if this host has one.
fn other_old_interpreter() -> Option<PathBuf> {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")))?;
    std::fs::read_dir(root.join("versions"))
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin/python3"))
        .find(|p| {
            p.is_file()
                && Command::new(p)
                    .args(["-c", "import sys; sys.exit(sys.version_info >= (3, 10))"])
                    .status()
                    .is_ok_and(|s| s.success())
        })
}

#[test]
fn version_names_the_interpreter_workers_run() {
    let out = Spillway::bare().arg("--version").run();
    assert!(out.status.success(), "{out}");
    let default = version_of(Path::new("python3"));
    let short = default.split_whitespace().next().unwrap();
    assert!(
        out.stdout.contains(&format!("workers run CPython {short}")),
        "{out}"
    );
}
