//! `spillway`: command line, configuration and wiring. Serving is in `spillway-server`,
//! the Python worker in `spillway-wsgi`; this crate only connects them. It is both the
//! library of the `spillway` executable and, built as a Python extension module
//! (`spillway._spillway`), what pip installs: the console script runs the same front, and
//! every worker loads this module into the application's interpreter.

mod cli;
mod config_file;
pub mod interpreter;
#[cfg(feature = "python")]
mod python;
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
    let first = config_file::first_line(e);
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

/// Runs `spillway` with `argv` (the program name first): serve, or a companion tool.
pub fn main(argv: Vec<std::ffi::OsString>, host: &interpreter::Host) -> ExitCode {
    if matches!(
        argv.get(1).and_then(|a| a.to_str()),
        Some("--version" | "-V")
    ) {
        print_version(host);
        return ExitCode::SUCCESS;
    }
    let cli = match config_file::parse(argv) {
        Ok(cli) => cli,
        Err(settings::SettingsError::Clap(e)) => {
            use clap::error::ErrorKind;
            if e.kind() == ErrorKind::DisplayVersion {
                print_version(host);
                return ExitCode::SUCCESS;
            }
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
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
        Some(Command::Reload(args)) => reload(args),
        None => serve(cli.serve, host),
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

/// `spillway --version`: this build, and the interpreter workers would run in.
fn print_version(host: &interpreter::Host) {
    println!("spillway {}", env!("CARGO_PKG_VERSION"));
    let venv = std::env::var_os("VIRTUAL_ENV")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from);
    match interpreter::choose(None, None, venv.as_deref(), host) {
        Ok(i) => println!(
            "workers run {} at {} (prefix {}; {})",
            i.version,
            i.executable.display(),
            i.prefix,
            i.chosen_by
        ),
        Err(e) => println!("workers: {}", e.error),
    }
}

fn serve(args: cli::ServeArgs, host: &interpreter::Host) -> anyhow::Result<ExitCode> {
    if !cfg!(feature = "python") {
        anyhow::bail!(
            "this spillway was built without the `python` feature: it runs `doctor` and `bench` \
             but cannot serve an application (build with default features)"
        );
    }
    let settings = settings::resolve(args, host)?;
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
        python = %settings.interpreter.executable.display(),
        python_version = %settings.interpreter.version,
        python_prefix = %settings.interpreter.prefix,
        python_chosen_by = settings.interpreter.chosen_by,
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
