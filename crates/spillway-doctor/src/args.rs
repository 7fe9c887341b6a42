//! The command line of `spillway doctor`: its flags, the `plot` subcommand and the
//! `--interval` parser.

use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `spillway doctor`.
#[derive(clap::Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DoctorArgs {
    /// Only look at listeners on this port; repeat for several. [default: every listening port]
    #[arg(long = "port", value_name = "P")]
    pub ports: Vec<u16>,

    /// Print the report as JSON (schema: docs/doctor-json.md in spillway-doctor) instead of
    /// text. [default: text]
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,

    /// Sampling interval: counter deltas are measured over it, and --watch/--record take one
    /// sample per interval. Accepts "2s", "500ms" or plain seconds ("1.5"); 50ms to 1h.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,

    /// Live terminal view refreshed every --interval; q, Esc or Ctrl-C quits. [default: off]
    #[arg(long)]
    pub watch: bool,

    /// Append one JSON report per --interval to FILE (JSON Lines), the input of
    /// `doctor plot`. Runs until interrupted or --samples. [default: off]
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,

    /// With --watch or --record: stop after N samples. [default: run until interrupted]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub samples: Option<u64>,

    /// A Spillway front's metrics URL (http://HOST:PORT/metrics or unix:/path), for a front
    /// whose admin endpoint is not in its command line or SPILLWAY_ADMIN. [default: found
    /// from the front's process]
    #[arg(long, value_name = "URL")]
    pub metrics: Option<String>,

    /// Optional subcommand (`plot`).
    #[command(subcommand)]
    pub command: Option<DoctorCommand>,
}

/// Subcommands of `spillway doctor`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum DoctorCommand {
    /// Draw accept-queue depth, ListenOverflows rate and connections over time from a
    /// --record file, as SVG.
    Plot(PlotArgs),
}

/// Arguments of `spillway doctor plot`.
#[derive(clap::Args, Debug, Clone)]
pub struct PlotArgs {
    /// The JSON Lines file written by `doctor --record`.
    #[arg(value_name = "FILE.jsonl")]
    pub input: PathBuf,

    /// Where to write the SVG (overwritten if it exists).
    #[arg(short = 'o', long = "output", value_name = "FILE.svg")]
    pub output: PathBuf,
}

/// Parses "2s", "500ms", "1.5" (seconds) into a duration between 50 ms and 1 h.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(sec) = s.strip_suffix('s') {
        (sec, 1.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 2s, 500ms or 1.5"))?;
    let secs = v * scale;
    if !(0.05..=3600.0).contains(&secs) {
        return Err(format!("{s:?} is outside 50ms..1h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        doctor: DoctorArgs,
    }

    #[test]
    fn intervals_parse() {
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("fast").is_err());
        assert!(parse_interval("2h").is_err());
    }

    #[test]
    fn flags_and_plot_subcommand_parse() {
        let c = Cli::parse_from(["doctor", "--port", "80", "--port", "443", "--json"]);
        assert_eq!(c.doctor.ports, vec![80, 443]);
        assert!(c.doctor.json);
        assert_eq!(c.doctor.interval, Duration::from_secs(1));
        let c = Cli::parse_from(["doctor", "plot", "in.jsonl", "-o", "out.svg"]);
        match c.doctor.command {
            Some(DoctorCommand::Plot(p)) => {
                assert_eq!(p.input, PathBuf::from("in.jsonl"));
                assert_eq!(p.output, PathBuf::from("out.svg"));
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["doctor", "--json", "--watch"]).is_err());
        assert!(Cli::try_parse_from(["doctor", "plot", "in.jsonl"]).is_err());
    }

    #[test]
    fn every_flag_help_states_its_default() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for arg in cmd.get_arguments() {
            if arg.get_id() == "help" {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let has_default = !arg.get_default_values().is_empty() || help.contains("default");
            assert!(
                has_default,
                "--{} help does not state a default",
                arg.get_id()
            );
        }
    }
}
