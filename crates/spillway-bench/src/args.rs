//! Command-line options of `spillway bench` ([`BenchArgs`]) and their validation into the one
//! typed configuration the scenarios read.

use std::path::PathBuf;
use std::time::Duration;

use crate::target::{RequestTemplate, Target, TargetError};

/// Default number of connections in a closed loop.
pub const DEFAULT_CONNECTIONS: usize = 50;
/// Default cap on connections opened on demand by an open-loop (`--rate`) run.
pub const DEFAULT_OPEN_LOOP_CAP: usize = 10_000;
/// Descriptors kept free for the runtime, stdio and output files when capping connections.
const RESERVED_FDS: u64 = 64;

/// `spillway bench URL [OPTIONS]`: the options as typed on the command line.
#[derive(clap::Args, Debug, Clone)]
#[command(about = "Load generator that reproduces connection incidents (plain HTTP/1.1)")]
pub struct BenchArgs {
    /// Target URL, plain HTTP: `http://HOST[:PORT][/PATH]` (scheme optional, port default 80).
    pub url: String,

    /// Closed loop: number of connections, each sending its next request as soon as the
    /// previous response is complete [default: 50]. With --rate: the cap on connections opened
    /// on demand [default: 10000, or the open-files limit if lower].
    #[arg(short = 'c', long, value_name = "N", value_parser = parse_count)]
    pub connections: Option<usize>,

    /// Open a new connection for every request and send `Connection: close` [default: off, connections are kept alive].
    #[arg(long)]
    pub no_keep_alive: bool,

    /// Requests sent on one connection before the client closes it and opens another [default: no limit, until the server closes it].
    #[arg(long, value_name = "K", value_parser = parse_count_u64, conflicts_with = "no_keep_alive")]
    pub requests_per_connection: Option<u64>,

    /// Open loop: send R requests per second on a fixed schedule whatever the responses do;
    /// latency counts from each request's intended send time (coordinated omission corrected)
    /// and connections are opened on demand [default: off, closed loop].
    #[arg(long, value_name = "R", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Storm: open N connections at the same instant, send one request on each, then stop [default: off].
    #[arg(long, value_name = "N", value_parser = parse_count, conflicts_with_all = ["rate", "idle_gaps", "requests_per_connection"])]
    pub storm: Option<usize>,

    /// Idle probe: for each gap (comma-separated durations, e.g. `1,9,80`) open a connection,
    /// send a request, stay idle for the gap, send again, and report whether the connection
    /// survived, was closed cleanly or was reset [default: off].
    #[arg(long, value_name = "GAPS", value_parser = parse_gaps, conflicts_with_all = ["rate", "no_keep_alive", "requests_per_connection"])]
    pub idle_gaps: Option<IdleGaps>,

    /// How long to keep sending: `10s`, `2m`, `500ms` or plain seconds; requests in flight at
    /// the end get up to --timeout to finish. Not used by --storm and --idle-gaps.
    #[arg(short = 'd', long, value_name = "TIME", default_value = "10s", value_parser = parse_duration_nonzero)]
    pub duration: Duration,

    /// Stop after this many requests (answered or failed), or at --duration, whichever comes first [default: no count limit].
    #[arg(long, value_name = "N", value_parser = parse_count_u64)]
    pub requests: Option<u64>,

    /// Request method.
    #[arg(long, value_name = "METHOD", default_value = "GET", value_parser = parse_method)]
    pub method: String,

    /// Extra request header `NAME: VALUE`, repeatable [default: none; bench always sends Host
    /// and User-Agent unless given here, and Content-Length with a body].
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,

    /// Request body, sent with Content-Length [default: none].
    #[arg(long, value_name = "TEXT", conflicts_with = "body_file")]
    pub body: Option<String>,

    /// Read the request body from FILE [default: none].
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,

    /// Limit on each connect and on each whole response (from sending the request to its last body byte).
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_duration_nonzero)]
    pub timeout: Duration,

    /// Write the full report as JSON to FILE (schema: crates/spillway-bench/SCHEMA.md) [default: none].
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Draw the latency distribution and latency/throughput over time as SVG to FILE [default: none].
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// Generator threads [default: the number of CPUs].
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub threads: Option<usize>,

    /// Do not draw the progress bar [default: drawn when stderr is a terminal].
    #[arg(long)]
    pub no_progress: bool,
}

/// The gaps of `--idle-gaps`, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct IdleGaps(pub Vec<Duration>);

/// What one run does, after validation.
#[derive(Debug, Clone, PartialEq)]
pub enum Scenario {
    /// A fixed set of connections, each sending back to back.
    Closed {
        /// Number of connections.
        connections: usize,
        /// Requests per connection before the client closes it; `None` for no limit.
        per_connection: Option<u64>,
    },
    /// Requests on a schedule, connections opened on demand.
    Open {
        /// Requests per second.
        rate: f64,
        /// Cap on open connections.
        max_connections: usize,
        /// Requests per connection before the client closes it; `None` for no limit.
        per_connection: Option<u64>,
    },
    /// N connections at once, one request each.
    Storm {
        /// Number of connections.
        connections: usize,
    },
    /// One connection per gap, two requests separated by the gap.
    Idle {
        /// The gaps.
        gaps: Vec<Duration>,
    },
}

impl Scenario {
    /// Short name used in the report: `closed`, `open`, `storm` or `idle`.
    pub fn kind(&self) -> &'static str {
        match self {
            Scenario::Closed { .. } => "closed",
            Scenario::Open { .. } => "open",
            Scenario::Storm { .. } => "storm",
            Scenario::Idle { .. } => "idle",
        }
    }
}

/// The validated configuration of one run.
#[derive(Debug)]
pub(crate) struct Config {
    pub target: Target,
    pub scenario: Scenario,
    pub duration: Duration,
    pub requests: Option<u64>,
    pub timeout: Duration,
    pub request: RequestTemplate,
    pub json: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub threads: usize,
    pub progress: bool,
}

/// Why the options cannot make a run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The URL is not one bench can use.
    #[error("URL: {0}")]
    Target(#[from] TargetError),
    /// `--body-file` could not be read.
    #[error("--body-file {path}: {source}")]
    BodyFile {
        /// The file named.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
}

impl Config {
    /// Validates the options once and derives everything the scenarios read.
    pub(crate) fn from_args(args: BenchArgs) -> Result<Config, ConfigError> {
        let target = Target::parse(&args.url)?;
        let body = match (&args.body, &args.body_file) {
            (Some(text), _) => Some(text.clone().into_bytes()),
            (None, Some(path)) => {
                Some(std::fs::read(path).map_err(|source| ConfigError::BodyFile {
                    path: path.clone(),
                    source,
                })?)
            }
            (None, None) => None,
        };
        let per_connection = if args.no_keep_alive {
            Some(1)
        } else {
            args.requests_per_connection
        };
        let scenario = if let Some(n) = args.storm {
            Scenario::Storm { connections: n }
        } else if let Some(gaps) = args.idle_gaps {
            Scenario::Idle { gaps: gaps.0 }
        } else if let Some(rate) = args.rate {
            let fd_cap = crate::sys::nofile_limit()
                .map(|n| n.saturating_sub(RESERVED_FDS).max(1))
                .unwrap_or(u64::MAX);
            let wanted = args.connections.unwrap_or(DEFAULT_OPEN_LOOP_CAP);
            Scenario::Open {
                rate,
                max_connections: usize::try_from(fd_cap).map_or(wanted, |cap| wanted.min(cap)),
                per_connection,
            }
        } else {
            Scenario::Closed {
                connections: args.connections.unwrap_or(DEFAULT_CONNECTIONS),
                per_connection,
            }
        };
        let request = RequestTemplate::new(&target, &args.method, &args.headers, body);
        let threads = args.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        Ok(Config {
            target,
            scenario,
            duration: args.duration,
            requests: args.requests,
            timeout: args.timeout,
            request,
            json: args.json,
            plot: args.plot,
            threads,
            progress: !args.no_progress,
        })
    }
}

/// Parses `10s`, `2m`, `500ms`, `1h`, `1.5s` or plain (fractional) seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const ALLOWED: &str = "expected a duration like 10s, 2m, 500ms or plain seconds";
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let number = number.trim();
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(ALLOWED.to_string());
    }
    let value: f64 = number.parse().map_err(|_| ALLOWED.to_string())?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| ALLOWED.to_string())
}

fn parse_duration_nonzero(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("expected a duration above zero, like 10s, 2m, 500ms or plain seconds".into());
    }
    Ok(d)
}

fn parse_gaps(s: &str) -> Result<IdleGaps, String> {
    const ALLOWED: &str = "expected comma-separated durations above zero, like 1,9,80 or 500ms,5s";
    let mut gaps = Vec::new();
    for part in s.split(',') {
        let gap = parse_duration(part).map_err(|_| ALLOWED.to_string())?;
        if gap.is_zero() {
            return Err(ALLOWED.into());
        }
        gaps.push(gap);
    }
    Ok(IdleGaps(gaps))
}

fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a whole number of 1 or more".into()),
    }
}

fn parse_count_u64(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a whole number of 1 or more".into()),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Ok(r),
        _ => Err("expected requests per second, a number above 0 and at most 10000000".into()),
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse_method(s: &str) -> Result<String, String> {
    if is_token(s) {
        Ok(s.to_string())
    } else {
        Err("expected an HTTP method token such as GET, POST or HEAD".into())
    }
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    const ALLOWED: &str =
        "expected `NAME: VALUE` with a token name and a value without line breaks";
    let (name, value) = s.split_once(':').ok_or(ALLOWED)?;
    let name = name.trim();
    let value = value.trim();
    if !is_token(name) || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(ALLOWED.into());
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        let mut all = vec!["bench"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.bench)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "-1", "1d", "ten", "1e3", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_make_a_bounded_closed_loop() {
        let args = parse(&["http://127.0.0.1:1/"]).expect("parses");
        assert_eq!(args.duration, Duration::from_secs(10));
        assert_eq!(args.timeout, Duration::from_secs(10));
        let cfg = Config::from_args(args).expect("valid");
        assert_eq!(
            cfg.scenario,
            Scenario::Closed {
                connections: 50,
                per_connection: None
            }
        );
    }

    #[test]
    fn scenarios_are_chosen_by_flags() {
        let cfg = Config::from_args(parse(&["127.0.0.1:1", "--storm", "7"]).expect("parses"))
            .expect("valid");
        assert_eq!(cfg.scenario, Scenario::Storm { connections: 7 });
        let cfg = Config::from_args(
            parse(&["127.0.0.1:1", "--idle-gaps", "1,500ms,80"]).expect("parses"),
        )
        .expect("valid");
        assert_eq!(
            cfg.scenario,
            Scenario::Idle {
                gaps: vec![
                    Duration::from_secs(1),
                    Duration::from_millis(500),
                    Duration::from_secs(80)
                ]
            }
        );
        let cfg = Config::from_args(
            parse(&[
                "127.0.0.1:1",
                "--rate",
                "100",
                "--no-keep-alive",
                "-c",
                "20",
            ])
            .expect("parses"),
        )
        .expect("valid");
        assert_eq!(
            cfg.scenario,
            Scenario::Open {
                rate: 100.0,
                max_connections: 20,
                per_connection: Some(1)
            }
        );
    }

    #[test]
    fn bad_values_name_the_flag_and_what_is_allowed() {
        let cases: &[(&[&str], &str)] = &[
            (&["u", "--duration", "soon"], "--duration"),
            (&["u", "--connections", "0"], "--connections"),
            (&["u", "--rate", "0"], "--rate"),
            (&["u", "--rate", "fast"], "--rate"),
            (&["u", "--idle-gaps", "1,,2"], "--idle-gaps"),
            (&["u", "-H", "no colon"], "--header"),
            (&["u", "--method", "GE T"], "--method"),
            (&["u", "--timeout", "0"], "--timeout"),
        ];
        for (args, flag) in cases {
            let err = parse(args).expect_err("must be rejected").to_string();
            let first = err.lines().next().unwrap_or_default();
            assert!(first.contains(flag), "{first}");
            assert!(first.contains("expected"), "{first}");
        }
    }

    #[test]
    fn conflicting_scenarios_are_rejected() {
        assert!(parse(&["u", "--storm", "5", "--rate", "10"]).is_err());
        assert!(parse(&["u", "--idle-gaps", "1", "--rate", "10"]).is_err());
        assert!(parse(&["u", "--no-keep-alive", "--requests-per-connection", "3"]).is_err());
        assert!(parse(&["u", "--body", "x", "--body-file", "f"]).is_err());
    }

    #[test]
    fn every_option_help_states_its_default() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for arg in cmd.get_arguments() {
            if arg.is_positional() || ["help", "version"].contains(&arg.get_id().as_str()) {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let has_default = !arg.get_default_values().is_empty();
            assert!(
                has_default || help.contains("[default:"),
                "--{} help lacks its default: {help}",
                arg.get_id()
            );
        }
    }
}
