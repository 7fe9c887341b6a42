//! The load generator behind `spillway bench`: closed-loop, open-loop, storm and idle-probe
//! scenarios over plain HTTP/1.1, with connect time, SYN retransmits, error classes and
//! status classes measured separately, so a run reproduces and explains connection incidents.
//!
//! The HTTP/1.1 client is our own (see [`http1`]) on purpose: a general client crate pools
//! connections and folds connect time into response time, and those are exactly what this
//! tool exists to measure.

mod args;
mod conn;
mod http1;
mod progress;
mod report;
mod scenario;
mod stats;
mod summary;
mod svg;
mod sys;
mod target;
mod verdict;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

pub use args::BenchArgs;

/// Runs `spillway bench` on a runtime of its own, prints the summary to stdout and returns
/// exit status 1 when not a single response arrived, 2 when the options cannot make a run.
///
/// It raises the soft open-files limit to the hard limit, because a storm or an open-loop run
/// needs one descriptor per connection.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    // Before validation, so the open-loop connection cap sees the raised limit.
    let nofile = sys::raise_nofile_limit();
    let cfg = match args::Config::from_args(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let cfg = Arc::new(cfg);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads)
        .enable_all()
        .thread_name("spillway-bench")
        .build()
        .context("cannot start the tokio runtime")?;

    let show_progress = cfg.progress && std::io::stderr().is_terminal();
    let outcome = runtime.block_on(scenario::run(Arc::clone(&cfg), show_progress, nofile));
    // Tasks abandoned at the hard stop may still hold sockets; do not wait for them.
    runtime.shutdown_background();

    let report = report::Report::build(&cfg, &outcome);
    // Files first: a summary piped into `head` must not cost the report.
    if let Some(path) = &cfg.json {
        let text = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write --json {}", path.display()))?;
    }
    if let Some(path) = &cfg.plot {
        std::fs::write(path, svg::render(&report))
            .with_context(|| format!("cannot write --plot {}", path.display()))?;
    }
    let mut summary_text = Vec::new();
    summary::write_summary(&report, &mut summary_text).context("cannot format the summary")?;
    match std::io::stdout().lock().write_all(&summary_text) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e).context("cannot write the summary to stdout"),
    }
    if report.responses.total == 0 {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
