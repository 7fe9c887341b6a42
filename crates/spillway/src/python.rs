//! The Python extension module `spillway._spillway`: `main` runs the front inside the
//! interpreter pip installed Spillway into (the console script), and `worker` runs one
//! worker inside the application's interpreter. Both release the GIL for as long as they
//! run; the front never imports the application.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pyo3::prelude::*;

use crate::cli::WorkerArgs;
use crate::interpreter::Host;

/// `spillway` from pip's console script: `argv` is `sys.argv`, `executable` the
/// interpreter workers default to, `module` this module's file.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>, executable: PathBuf, module: PathBuf) -> i32 {
    // The front's own signal handling replaces Python's: a Ctrl-C must stop the front as
    // it does the executable, not leave a KeyboardInterrupt pending for when it returns.
    // SAFETY: restoring a default disposition has no preconditions; tokio installs its
    // handlers after this.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    let host = Host {
        python: Some(executable),
        module: Some(module),
    };
    let argv = argv.into_iter().map(Into::into).collect();
    let code = py.detach(|| crate::main(argv, &host));
    exit_status(code)
}

/// The process exit status of an `ExitCode` (0 or the byte it was made from).
fn exit_status(code: ExitCode) -> i32 {
    if code == ExitCode::SUCCESS {
        0
    } else {
        (0..=255u8)
            .find(|&b| ExitCode::from(b) == code)
            .map_or(1, i32::from)
    }
}

/// One worker: `argv` is what the front put after the module's path. It never returns:
/// the process ends here, as an embedded worker's did, without finalizing the interpreter
/// (application threads that never end must not keep a stopped worker alive).
#[pyfunction]
fn worker(py: Python<'_>, argv: Vec<String>) -> PyResult<()> {
    let args =
        WorkerArgs::try_parse_from(std::iter::once("spillway-worker".to_owned()).chain(argv))
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    crate::init_logging(&args.log_level, &args.log_format);
    // `top` and `ps -o comm` name the process for what it is rather than "python3".
    // SAFETY: PR_SET_NAME copies at most 16 bytes from a NUL-terminated string.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"spillway-worker".as_ptr()) };
    let code = match py.detach(|| run_worker(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("spillway worker: {e:#}");
            1
        }
    };
    // Lines the application printed are still in Python's buffers.
    for stream in ["stdout", "stderr"] {
        if let Ok(s) = py.import("sys").and_then(|sys| sys.getattr(stream)) {
            let _ = s.call_method0("flush");
        }
    }
    std::process::exit(code);
}

fn run_worker(args: WorkerArgs) -> anyhow::Result<i32> {
    if args.fd != 3 {
        anyhow::bail!("--fd must be 3 (the front passes the socket there)");
    }
    // SAFETY: fd 3 was set up by the front (dup2 before exec) and nothing else in this
    // process has taken ownership of it.
    let fd = unsafe { OwnedFd::from_raw_fd(3) };
    // Close-on-exec from here on: a process the application starts (`subprocess`,
    // `os.system('… &')`) must not keep our link to the front open, or the front could
    // not tell when this worker is gone.
    // SAFETY: fcntl on an fd this process owns, with plain integer arguments.
    if unsafe { libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        anyhow::bail!(
            "cannot make fd 3 close-on-exec: {}",
            std::io::Error::last_os_error()
        );
    }
    let socket = std::os::unix::net::UnixStream::from(fd);
    // The front takes end-of-file on this socket before the process has exited for a
    // broken worker, and kills it: keep one descriptor open until the exit itself, which
    // comes after Python's buffers are flushed.
    std::mem::forget(socket.try_clone()?);
    let spec = spillway_wsgi::WorkerSpec {
        app: args.app,
        threads: spillway_wsgi::ThreadLimits {
            min: args.min_threads,
            max: args.max_threads,
            pinned: args.threads,
            idle_exit: std::time::Duration::from_secs(args.thread_idle_timeout),
        },
        pythonpath: args.pythonpath,
        multiprocess: args.multiprocess,
        batch_scheduling: args.scheduling == "batch",
    };
    match spillway_wsgi::run(spec, socket) {
        Ok(()) => Ok(0),
        Err(spillway_wsgi::WorkerError::AppLoad { .. }) => Ok(spillway_proto::EXIT_APP_LOAD_FAILED),
        Err(e) => Err(e.into()),
    }
}

/// The module: `main` for the console script, `worker` for the front's workers.
#[pymodule]
fn _spillway(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(worker, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
