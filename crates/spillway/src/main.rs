//! `spillway`: command line, configuration and wiring. Serving is in `spillway-server`,
//! the Python worker in `spillway-wsgi`; this file only connects them.

mod cli;
mod settings;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use cli::Command;

fn init_logging(level: &str, format: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if format.eq_ignore_ascii_case("json") {
        // One object per event, its fields at the top level beside `message`: what log
        // shippers (Vector, Fluent Bit, Loki's promtail) index without a parser.
        fmt.json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        fmt.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// A clap error as one line; a bad value that came from `SPILLWAY_*` names that variable.
fn one_line_error(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let first = settings::first_line(e);
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return first;
    };
    let Some(long) = arg
        .strip_prefix("--")
        .and_then(|a| a.split([' ', '=']).next())
    else {
        return first;
    };
    let var = format!("SPILLWAY_{}", long.to_ascii_uppercase().replace('-', "_"));
    let on_command_line =
        std::env::args().any(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
    if !on_command_line && std::env::var_os(&var).is_some() {
        format!("{var}: {first}")
    } else {
        first
    }
}

fn main() -> ExitCode {
    let cli = match settings::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(settings::SettingsError::Clap(e)) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            eprintln!("spillway: {}", one_line_error(&e));
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("spillway: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Some(Command::Doctor(args)) => spillway_doctor::run(args),
        Some(Command::Bench(args)) => spillway_bench::run(args),
        Some(Command::Worker(args)) => run_worker(args),
        Some(Command::Reload(args)) => reload(args),
        None => serve(cli.serve),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: what failed and why, outermost context first.
            eprintln!("spillway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `spillway reload --pid-file FILE`: SIGHUP to the running front.
fn reload(args: cli::ReloadArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.pid_file)
        .with_context(|| format!("cannot read the pid file {}", args.pid_file.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a pid", args.pid_file.display()))?;
    anyhow::ensure!(
        pid > 1,
        "{} holds an invalid pid {pid}",
        args.pid_file.display()
    );
    // SAFETY: kill(2) with a pid read from the file; it fails cleanly if no such process.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        let e = std::io::Error::last_os_error();
        anyhow::bail!(
            "cannot signal pid {pid} from {}: {e}",
            args.pid_file.display()
        );
    }
    eprintln!("spillway: reload requested (SIGHUP to pid {pid})");
    Ok(ExitCode::SUCCESS)
}

fn serve(args: cli::ServeArgs) -> anyhow::Result<ExitCode> {
    if !cfg!(feature = "python") {
        anyhow::bail!(
            "this spillway was built without the `python` feature: it runs `doctor` and `bench` \
             but cannot serve an application (build with default features)"
        );
    }
    let settings = settings::resolve(args)?;
    init_logging(&settings.log_level, &settings.log_format);
    let mut cfg = settings.server;
    let activated = spillway_server::systemd::listen_fds().context("socket activation")?;
    let notifier = spillway_server::systemd::Notifier::from_env().context("NOTIFY_SOCKET")?;
    if notifier.is_enabled() {
        let notifier = std::sync::Arc::new(notifier);
        cfg.notify = spillway_server::StateNotifier(std::sync::Arc::new(move |msg: &str| {
            if let Err(e) = notifier.notify(msg) {
                tracing::warn!(error = %e, "sd_notify failed");
            }
        }));
    }
    let front_threads = settings.front_threads;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        app = %cfg.app,
        workers = cfg.workers,
        threads = %cfg.threads,
        "starting"
    );
    // One event-loop thread avoids cross-thread wake-ups, which dominated the front's CPU
    // per request when measured on 2 cores (24 µs/request with 2 threads, 15.6 µs with 1).
    let mut builder = if front_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(front_threads);
        b
    };
    let runtime = builder
        .enable_all()
        .thread_name("spillway-front")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(spillway_server::serve(cfg, activated))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "python")]
fn run_worker(args: cli::WorkerArgs) -> anyhow::Result<ExitCode> {
    use std::os::fd::{FromRawFd, OwnedFd};
    init_logging(&args.log_level, &args.log_format);
    if args.fd != 3 {
        anyhow::bail!("__worker: --fd must be 3 (the front passes the socket there)");
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
            "__worker: cannot make fd 3 close-on-exec: {}",
            std::io::Error::last_os_error()
        );
    }
    // Rust's runtime catches SIGSEGV and SIGBUS to report stack overflows, and returns
    // from any other, expecting the fault to recur: a signal sent with kill() (or raised
    // again by faulthandler after its traceback) would then leave a broken worker
    // running. A worker dies of these signals, as any process does.
    for signal in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: restoring the default disposition of a signal has no preconditions.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    let socket = std::os::unix::net::UnixStream::from(fd);
    let spec = spillway_wsgi::WorkerSpec {
        app: args.app,
        threads: spillway_wsgi::ThreadLimits {
            min: args.min_threads,
            max: args.max_threads,
            pinned: args.threads,
            idle_exit: std::time::Duration::from_secs(args.thread_idle_timeout),
        },
        pythonpath: args.pythonpath,
        virtualenv: args.virtualenv,
        multiprocess: args.multiprocess,
    };
    match spillway_wsgi::run(spec, socket) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(spillway_wsgi::WorkerError::AppLoad { .. }) => {
            Ok(ExitCode::from(spillway_proto::EXIT_APP_LOAD_FAILED as u8))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(feature = "python"))]
fn run_worker(_args: cli::WorkerArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this spillway was built without the `python` feature: it cannot run workers")
}
