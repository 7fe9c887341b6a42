//! Which Python interpreter workers run in, and how one is started: that interpreter's own
//! executable, loading Spillway's worker extension module by path, so `sys.executable`,
//! `sys.prefix`, site-packages and `.pth` files are exactly what `python -c 'import app'`
//! sees there.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where this front runs.
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// The interpreter that launched the front, when pip installed `spillway` as its
    /// console script.
    pub python: Option<PathBuf>,
    /// The worker extension module the front itself was loaded from (pip), if any.
    pub module: Option<PathBuf>,
}

impl Host {
    /// A front started as its own executable (a cargo build).
    pub fn standalone() -> Host {
        Host::default()
    }
}

/// Why an interpreter cannot run workers, in one line.
#[derive(Debug, thiserror::Error)]
pub enum InterpreterError {
    /// Nothing by that name is on PATH, or the path does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It ran but is not a CPython workers can use.
    #[error("{0}")]
    Unsuitable(String),
}

/// An [`InterpreterError`] and the option whose value led to it (`--python` when a default
/// did), so the one-line report can name what to change.
#[derive(Debug, thiserror::Error)]
#[error("{option}: {error}")]
pub struct ChoiceError {
    /// `--python`, `--virtualenv` or `VIRTUAL_ENV`.
    pub option: &'static str,
    /// What is wrong with the interpreter.
    pub error: InterpreterError,
}

/// The interpreter workers run in, as it describes itself.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// `sys.executable`: a virtualenv's `bin/python`, or the real binary behind a shim.
    pub executable: PathBuf,
    /// `sys.prefix`.
    pub prefix: String,
    /// `sys.implementation.name` and `platform.python_version()`, e.g. `CPython 3.12.1`.
    pub version: String,
    /// What chose it: `--python`, `--virtualenv`, `VIRTUAL_ENV`, the installing
    /// interpreter, or `python3 on PATH`.
    pub chosen_by: &'static str,
}

/// The lowest minor version the stable-ABI worker module is built for (`abi3-py310`).
pub const MIN_MINOR: u32 = 10;

/// Prints what `Interpreter` holds, one value per line, and whether the build is
/// free-threaded (which cannot load an abi3 module). Run with `-S`: without `site` the
/// interpreter starts in a few milliseconds instead of tens (a `.pth` file may import
/// anything), and nothing printed here depends on it; `sys.prefix` does, so a virtualenv's
/// is found from its `pyvenv.cfg`, as `site` finds it.
const PROBE: &str = r#"import sys
print(sys.executable)
print(sys.prefix)
print(sys.implementation.name, sys.version_info[0], sys.version_info[1],
      int('t' in getattr(sys, 'abiflags', '')), sys.version.split()[0])
"#;

/// The `-c` program a worker starts with: argv[1] is the worker extension's path, the rest
/// are the worker's options. The module is loaded by path rather than imported so that an
/// interpreter that does not have Spillway installed (`--python`, another virtualenv) runs
/// the same code as the front: the module uses the stable ABI, valid for any CPython
/// 3.10 or newer. `{EXIT}` is replaced by the exit status that means "could not start".
const WORKER_MAIN: &str = r#"# spillway worker (ps shows this line first)
import sys
if sys.implementation.name != 'cpython' or sys.version_info < (3, 10):
    sys.stderr.write('spillway: workers need CPython 3.10 or newer; %s is %s %s\n' % (
        sys.executable, sys.implementation.name, sys.version.split()[0]))
    sys.exit({EXIT})
from importlib.machinery import ExtensionFileLoader as _Loader
from importlib.util import module_from_spec as _module, spec_from_file_location as _spec
_p = sys.argv[1]
_s = _spec('spillway._spillway', _p, loader=_Loader('spillway._spillway', _p))
_m = _module(_s)
_s.loader.exec_module(_m)
_m.worker(sys.argv[2:])
"#;

/// The `-c` program of a worker, with the exit status for a failed start filled in.
pub fn worker_main() -> String {
    WORKER_MAIN.replace("{EXIT}", &spillway_proto::EXIT_APP_LOAD_FAILED.to_string())
}

/// Chooses the interpreter: `--python`, else the `--virtualenv`'s, else the one pip
/// installed spillway with, else `$VIRTUAL_ENV`'s, else `python3` on PATH; then asks it
/// what it is.
pub fn choose(
    python: Option<&Path>,
    virtualenv: Option<&Path>,
    virtual_env_var: Option<&Path>,
    host: &Host,
) -> Result<Interpreter, ChoiceError> {
    let venv_python = |dir: &Path| {
        let p = dir.join("bin").join("python");
        if p.exists() {
            Ok(p)
        } else {
            Err(InterpreterError::NotFound(format!(
                "{} has no bin/python",
                dir.display()
            )))
        }
    };
    let (path, chosen_by, option) = if let Some(p) = python {
        (find(p), "--python", "--python")
    } else if let Some(v) = virtualenv {
        (venv_python(v), "--virtualenv", "--virtualenv")
    } else if let Some(p) = &host.python {
        (
            Ok(p.clone()),
            "the interpreter spillway was installed with",
            "--python",
        )
    } else if let Some(v) = virtual_env_var {
        (venv_python(v), "VIRTUAL_ENV", "VIRTUAL_ENV")
    } else {
        (find(Path::new("python3")), "python3 on PATH", "--python")
    };
    path.and_then(|p| probe(&p, chosen_by))
        .map_err(|error| ChoiceError { option, error })
}

/// A bare name is looked up on PATH; a path must exist.
fn find(p: &Path) -> Result<PathBuf, InterpreterError> {
    if p.components().count() > 1 || p.is_absolute() {
        return if p.exists() {
            Ok(p.to_path_buf())
        } else {
            Err(InterpreterError::NotFound(format!(
                "{} does not exist",
                p.display()
            )))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
        .ok_or_else(|| {
            InterpreterError::NotFound(format!(
                "no {} on PATH: name the interpreter with --python or --virtualenv",
                p.display()
            ))
        })
}

/// Runs the interpreter once to learn what it is, and refuses what cannot load the worker.
fn probe(path: &Path, chosen_by: &'static str) -> Result<Interpreter, InterpreterError> {
    let out = Command::new(path)
        .args(["-S", "-c", PROBE])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            InterpreterError::NotFound(format!("{} cannot be run: {e}", path.display()))
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    if !out.status.success() || lines.len() < 3 {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(InterpreterError::Unsuitable(format!(
            "{} is not a Python 3 interpreter workers can use: {}",
            path.display(),
            err.lines().last().unwrap_or("it printed nothing").trim()
        )));
    }
    let facts: Vec<&str> = lines[2].split_whitespace().collect();
    let minor: u32 = facts.get(2).and_then(|m| m.parse().ok()).unwrap_or(0);
    let version = match facts.first() {
        Some(&"cpython") => format!("CPython {}", facts.get(4).unwrap_or(&"?")),
        other => format!("{} {}", other.unwrap_or(&"?"), facts.get(4).unwrap_or(&"?")),
    };
    if facts.first() != Some(&"cpython") || facts.get(1) != Some(&"3") || minor < MIN_MINOR {
        return Err(InterpreterError::Unsuitable(format!(
            "{} is {version}; workers need CPython 3.{MIN_MINOR} or newer",
            path.display()
        )));
    }
    if facts.get(3) == Some(&"1") {
        return Err(InterpreterError::Unsuitable(format!(
            "{} is a free-threaded build ({version}): the worker module uses the stable ABI, \
             which free-threaded CPython cannot load (see the README)",
            path.display()
        )));
    }
    let executable = PathBuf::from(lines[0]);
    // What `site` makes sys.prefix: the virtualenv around the executable, if any.
    let venv = executable
        .parent()
        .and_then(Path::parent)
        .filter(|d| d.join("pyvenv.cfg").is_file());
    Ok(Interpreter {
        prefix: venv.map_or_else(|| lines[1].to_owned(), |d| d.display().to_string()),
        executable,
        version,
        chosen_by,
    })
}

/// The worker extension module: the one the front was loaded from (pip), else the one a
/// cargo build puts beside this executable (`libspillway.so`, in the target directory or
/// its `deps/`), else the one a system package installs for it (`../lib/spillway/`, so
/// `/usr/bin/spillway` finds `/usr/lib/spillway/libspillway.so`).
pub fn worker_module(host: &Host) -> Result<PathBuf, InterpreterError> {
    if let Some(m) = &host.module {
        return Ok(m.clone());
    }
    let exe = std::env::current_exe()
        .map_err(|e| InterpreterError::NotFound(format!("cannot find our own executable: {e}")))?;
    module_near(&exe).ok_or_else(|| {
        InterpreterError::NotFound(format!(
            "the worker module libspillway.so is neither beside {} nor in ../lib/spillway/: \
             build the workspace (cargo build), or install the wheel (pip install spillway)",
            exe.display()
        ))
    })
}

/// Where the worker module is, relative to the executable, in the order a cargo build and
/// then a system package put it. `current_exe` has resolved symlinks already, so a link to
/// the executable elsewhere on PATH still finds the module.
fn module_near(exe: &Path) -> Option<PathBuf> {
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let packaged = dir.parent().map(|p| p.join("lib/spillway/libspillway.so"));
    [
        Some(dir.join("libspillway.so")),
        Some(dir.join("deps/libspillway.so")),
        packaged,
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file())
}

/// The worker's program and arguments before its own options.
pub fn worker_argv(module: &Path) -> Vec<OsString> {
    vec!["-c".into(), worker_main().into(), module.into()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_program_names_the_exit_status_of_a_failed_start() {
        let p = worker_main();
        assert!(!p.contains("{EXIT}"));
        assert!(p.contains(&format!(
            "sys.exit({})",
            spillway_proto::EXIT_APP_LOAD_FAILED
        )));
    }

    #[test]
    fn the_worker_module_is_found_where_cargo_and_the_package_put_it() {
        let root = std::env::temp_dir().join(format!("spillway-module-{}", std::process::id()));
        let bin = root.join("usr/bin");
        let lib = root.join("usr/lib/spillway");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&lib).unwrap();
        let exe = bin.join("spillway");
        assert_eq!(module_near(&exe), None);
        std::fs::write(lib.join("libspillway.so"), b"").unwrap();
        assert_eq!(module_near(&exe), Some(lib.join("libspillway.so")));
        std::fs::write(bin.join("libspillway.so"), b"").unwrap();
        assert_eq!(module_near(&exe), Some(bin.join("libspillway.so")));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_interpreter_is_named() {
        let e = find(Path::new("/nonexistent/python")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/python does not exist"));
        let e = find(Path::new("no-such-python-here")).unwrap_err();
        assert!(
            e.to_string().contains("no no-such-python-here on PATH"),
            "{e}"
        );
    }
}
