//! `spillway doctor`: explains why connections to a port stall, on any Linux host.
//!
//! It samples the host's TCP state twice, `--interval` apart (netlink `sock_diag`,
//! /proc, `TcpExt` counters, sysctls, all through `spillway-netdiag`), and turns the
//! evidence into findings: sentences with the numbers in them and what to do. It can
//! also watch live (`--watch`), record samples (`--record`) and plot a recording. When a
//! port belongs to a Spillway front, its own metrics add the user-space layer (its queue,
//! its threads) and a finding that names which layer is the limit.
//!
//! Exit status of a one-shot run: 0 when no finding is a warning or worse, 2 when one
//! is; errors are returned to the caller (the binary prints them and exits 1).

mod args;
pub mod plot;
pub mod record;
pub mod report;
pub mod rules;
mod sample;
pub mod scrape;
pub mod text;
mod userspace;
pub mod watch;

use std::process::ExitCode;

pub use args::{parse_interval, DoctorArgs, DoctorCommand, PlotArgs};
pub use report::{Finding, Report, Severity};
pub use sample::{collect_report, Sampler};

/// Runs `spillway doctor` with parsed arguments; prints to stdout.
pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    if let Some(DoctorCommand::Plot(p)) = &args.command {
        let summary = plot::plot_file(&p.input, &p.output)?;
        println!(
            "wrote {} ({} samples, {} series)",
            p.output.display(),
            summary.samples,
            summary.series
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.watch {
        watch::run(&args)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(path) = &args.record {
        record::run(
            &args.ports,
            args.interval,
            path,
            args.samples,
            args.metrics.clone(),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let report = collect_report(&args.ports, args.interval, args.metrics.clone())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text::render(&report));
    }
    Ok(if report.worst() >= Some(Severity::Warning) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
