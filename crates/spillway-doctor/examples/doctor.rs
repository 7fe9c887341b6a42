//! `spillway doctor` without the rest of spillway: `cargo run -p spillway-doctor --example doctor -- --port 8080`.

use std::process::ExitCode;

use clap::Parser;

/// Explain why connections to a port stall.
#[derive(Parser, Debug)]
#[command(name = "doctor")]
struct Cli {
    #[command(flatten)]
    doctor: spillway_doctor::DoctorArgs,
}

fn main() -> ExitCode {
    match spillway_doctor::run(Cli::parse().doctor) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
