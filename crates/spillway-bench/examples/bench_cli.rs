//! `spillway bench` as a standalone program, for use before (or without) the `spillway`
//! binary: `cargo run --release -p spillway-bench --example bench_cli -- URL [OPTIONS]`.

use std::process::ExitCode;

use clap::Parser;
use spillway_bench::BenchArgs;

#[derive(Parser)]
#[command(
    name = "spillway-bench",
    about = "Load generator that reproduces connection incidents"
)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn main() -> anyhow::Result<ExitCode> {
    spillway_bench::run(Cli::parse().bench)
}
