//! The command line: every serve option is defined here once, with its name, help, default
//! (a named constant, which clap prints as `[default: …]`), validation and environment
//! variable. The config file's keys are these options' long names and go through the same
//! parsers (see `settings`), so nothing about an option is written twice.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Defaults of the serve options, quoted by `--help` and read by nothing else.
pub mod defaults {
    pub const BIND: &str = "127.0.0.1:8000";
    pub const MIN_THREADS: u16 = 1;
    pub const MAX_THREADS: u16 = 128;
    pub const THREAD_IDLE_TIMEOUT: u64 = 10;
    pub const WORKER_SCHEDULING: &str = "batch";
    pub const BACKLOG: u32 = 4096;
    pub const KEEP_ALIVE: u64 = 75;
    pub const HEADER_TIMEOUT: u64 = 10;
    pub const BODY_BUFFER: &str = "16M";
    pub const BODY_TIMEOUT: u64 = 60;
    pub const BODY_MIN_RATE: u64 = 1024;
    pub const GRACEFUL_TIMEOUT: u64 = 30;
    pub const MAX_QUEUE: u32 = 1024;
    pub const QUEUE_TIMEOUT: u64 = 30;
    pub const MAX_CONNECTIONS: u32 = 10_000;
    pub const TIMEOUT: u64 = 60;
    pub const MAX_REQUESTS: u64 = 0;
    pub const MAX_REQUESTS_JITTER: u64 = 0;
    pub const MAX_WORKER_MEMORY: u64 = 0;
    pub const DRAIN_DELAY: u64 = 5;
    pub const FORWARDED_ALLOW_IPS: &str = "127.0.0.1,::1";
    pub const SERVER_TIMING: &str = "trusted";
    pub const LIMIT_REQUEST_LINE: u32 = 4094;
    pub const LIMIT_REQUEST_FIELDS: u32 = 100;
    pub const LIMIT_REQUEST_FIELD_SIZE: u32 = 8190;
    pub const FRONT_THREADS: u16 = 1;
    pub const LOG_LEVEL: &str = "info";
    pub const LOG_FORMAT: &str = "text";
    pub const CERT_REQS: &str = "none";
    pub const HTTP: &str = "auto";
    pub const HTTP2_MAX_STREAMS: u32 = 100;
    pub const ACCESS_LOG_FORMAT: &str = "default";
}

/// The longest header field a frame can carry (a header name is u16-prefixed).
pub const MAX_FIELD_SIZE: u32 = 65_536;

/// An application server for Python WSGI web APIs.
#[derive(Parser, Debug)]
#[command(
    name = "spillway",
    version,
    about = "An application server for Python WSGI web APIs",
    long_about = "Serves a WSGI application with a front process that accepts and queues every \
                  connection at once, and worker processes that embed CPython.\n\n\
                  APP is module:callable, module:factory() or path/to/file.py:callable.\n\
                  Every option can also be set as SPILLWAY_<OPTION> in the environment or as \
                  a key in the -c/--config TOML file; a flag wins over the environment, which \
                  wins over the file.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// A companion tool instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Serve options.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Companion subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Explain why connections to a port stall (any listening TCP port on this host).
    Doctor(spillway_doctor::DoctorArgs),
    /// Load generator that reproduces connection incidents.
    Bench(spillway_bench::BenchArgs),
    /// Reload a running server's workers (sends SIGHUP to the pid in --pid-file).
    Reload(ReloadArgs),
}

/// Options of `spillway APP`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The WSGI application: module:callable, module:factory() or path/to/file.py:callable.
    #[arg(value_name = "APP", env = "SPILLWAY_APP")]
    pub app: Option<String>,

    /// TOML configuration file with the same keys as the long options (e.g. `threads = 8`).
    #[arg(short = 'c', long, value_name = "FILE", env = "SPILLWAY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on: HOST:PORT, [::]:PORT (IPv6 only), :PORT (all IPv4),
    /// unix:/path, or tls:HOST:PORT for a TLS listener (with --certfile; without any
    /// tls: listener, --certfile makes every TCP listener TLS). Repeatable.
    #[arg(short = 'b', long, value_name = "ADDR", env = "SPILLWAY_BIND",
          value_delimiter = ',', default_value = defaults::BIND)]
    pub bind: Vec<String>,

    /// Worker processes, each embedding its own Python interpreter. [default: number of CPUs]
    #[arg(short = 'w', long, value_name = "N", env = "SPILLWAY_WORKERS",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// A fixed number of Python threads per worker, as gunicorn's --threads. Without it,
    /// each worker sizes its pool by load between --min-threads and --max-threads.
    /// [default: sized by load]
    #[arg(long, value_name = "N", env = "SPILLWAY_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Fewest Python threads a self-sizing worker keeps (after its warm start on one).
    #[arg(long, value_name = "N", env = "SPILLWAY_MIN_THREADS", default_value_t = defaults::MIN_THREADS,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub min_threads: u16,

    /// Most Python threads a self-sizing worker grows to while requests wait and more
    /// threads are measured to complete more requests. Enough for 200 clients of an API that
    /// waits on its database, across two workers; an idle thread costs ~0.1 MiB. If every
    /// thread of your application holds its own database connection, keep
    /// workers × max-threads within the database's connection limit.
    #[arg(long, value_name = "N", env = "SPILLWAY_MAX_THREADS", default_value_t = defaults::MAX_THREADS,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_threads: u16,

    /// Seconds a Python thread of a self-sizing worker may find no work before it leaves
    /// (down to --min-threads).
    #[arg(long, value_name = "SECS", env = "SPILLWAY_THREAD_IDLE_TIMEOUT",
          default_value_t = defaults::THREAD_IDLE_TIMEOUT,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub thread_idle_timeout: u64,

    /// CPU scheduling of the workers: batch (Linux SCHED_BATCH: a worker woken by a request
    /// does not preempt the front or other work on its CPU; same share of CPU, fewer context
    /// switches per request) or normal (the default policy of every process).
    #[arg(long, value_name = "POLICY", env = "SPILLWAY_WORKER_SCHEDULING", default_value = defaults::WORKER_SCHEDULING,
          ignore_case = true,
          value_parser = clap::builder::PossibleValuesParser::new(["batch", "normal"]))]
    pub worker_scheduling: String,

    /// listen() backlog: the kernel accept queue; capped by net.core.somaxconn, which is
    /// logged at start.
    #[arg(long, value_name = "N", env = "SPILLWAY_BACKLOG", default_value_t = defaults::BACKLOG,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub backlog: u32,

    /// Seconds an idle keep-alive connection stays open, announced as `Keep-Alive: timeout=N`.
    /// Keep it above your proxy's pool idle timeout.
    #[arg(long, value_name = "SECS", env = "SPILLWAY_KEEP_ALIVE", default_value_t = defaults::KEEP_ALIVE,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub keep_alive: u64,

    /// Seconds a client has to send a complete request head once it started one (and a new
    /// connection to send its first). Slower clients are disconnected.
    #[arg(long, value_name = "SECS", env = "SPILLWAY_HEADER_TIMEOUT", default_value_t = defaults::HEADER_TIMEOUT,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub header_timeout: u64,

    /// Request bodies up to this size (bytes, or with a K/M/G suffix) are received whole
    /// before the request waits for a Python thread, so slow uploads hold no thread; the
    /// first 64 KiB in memory, the rest in an unnamed file in $TMPDIR. Larger bodies
    /// stream to the application as they arrive. 0: stream every body.
    #[arg(long, value_name = "BYTES", env = "SPILLWAY_BODY_BUFFER", default_value = defaults::BODY_BUFFER,
          value_parser = parse_size)]
    pub body_buffer: u64,

    /// Seconds a client may send no request-body bytes while its body is expected; longer
    /// gets 408 and the connection is closed.
    #[arg(long, value_name = "SECS", env = "SPILLWAY_BODY_TIMEOUT", default_value_t = defaults::BODY_TIMEOUT,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub body_timeout: u64,

    /// Bytes a second a client must average while the application waits for a body it
    /// streams (one over --body-buffer, or sent after `Expect: 100-continue`, over HTTP/1.1
    /// or HTTP/2), after a 5-second grace; slower gets 408 and the Python thread is freed.
    /// 0: only --body-timeout applies.
    #[arg(long, value_name = "BYTES", env = "SPILLWAY_BODY_MIN_RATE", default_value_t = defaults::BODY_MIN_RATE,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    pub body_min_rate: u64,

    /// Seconds that shutdown waits for requests in flight.
    #[arg(long, value_name = "SECS", env = "SPILLWAY_GRACEFUL_TIMEOUT", default_value_t = defaults::GRACEFUL_TIMEOUT,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub graceful_timeout: u64,

    /// Most requests waiting for a free Python thread; more get 503 with Retry-After at once.
    #[arg(long, value_name = "N", env = "SPILLWAY_MAX_QUEUE", default_value_t = defaults::MAX_QUEUE,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub max_queue: u32,

    /// Seconds a request may wait for a free Python thread; longer gets 503 with Retry-After.
    #[arg(long, value_name = "SECS", env = "SPILLWAY_QUEUE_TIMEOUT", default_value_t = defaults::QUEUE_TIMEOUT,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub queue_timeout: u64,

    /// Most open client connections; past it the front stops accepting (new connections wait
    /// in the kernel queue) until the count falls below 90%.
    #[arg(long, value_name = "N", env = "SPILLWAY_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub max_connections: u32,

    /// Seconds until a response must start (and longest pause between body chunks); longer
    /// gets 504 and the Python thread is marked stuck. A worker stuck longer than
    /// --graceful-timeout is replaced.
    #[arg(long, value_name = "SECS", env = "SPILLWAY_TIMEOUT", default_value_t = defaults::TIMEOUT,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,

    /// Replace a worker after it served this many requests (0: never); the replacement
    /// starts first, so no request sees it.
    #[arg(long, value_name = "N", env = "SPILLWAY_MAX_REQUESTS", default_value_t = defaults::MAX_REQUESTS,
          value_parser = clap::value_parser!(u64))]
    pub max_requests: u64,

    /// Up to this many extra requests per worker before replacement, chosen at random, so
    /// workers do not all restart together.
    #[arg(long, value_name = "N", env = "SPILLWAY_MAX_REQUESTS_JITTER", default_value_t = defaults::MAX_REQUESTS_JITTER,
          value_parser = clap::value_parser!(u64))]
    pub max_requests_jitter: u64,

    /// Replace a worker whose resident memory exceeds this many MiB (0: no limit).
    #[arg(long, value_name = "MIB", env = "SPILLWAY_MAX_WORKER_MEMORY", default_value_t = defaults::MAX_WORKER_MEMORY,
          value_parser = clap::value_parser!(u64).range(0..=1_048_576))]
    pub max_worker_memory: u64,

    /// Admin endpoint: HOST:PORT or unix:/path, serving /healthz, /readyz, /status and
    /// POST /reload. Bind it to loopback or a unix socket. [default: off]
    #[arg(long, value_name = "ADDR", env = "SPILLWAY_ADMIN")]
    pub admin: Option<String>,

    /// Host names (comma-separated) the admin endpoint answers /status, /metrics and
    /// /reload for, besides IP addresses, localhost names and this machine's host name;
    /// any other Host gets 403 (DNS rebinding). [default: none]
    #[arg(
        long,
        value_name = "NAMES",
        env = "SPILLWAY_ADMIN_HOSTS",
        default_value = ""
    )]
    pub admin_hosts: String,

    /// HAProxy agent-check port (HOST:PORT): answers `up ready N%` (weight falls as the
    /// queue grows), `drain` while shutting down, `maint` with no worker. [default: off]
    #[arg(long, value_name = "ADDR", env = "SPILLWAY_AGENT_CHECK")]
    pub agent_check: Option<String>,

    /// Seconds that shutdown keeps serving with readiness off, so load balancers stop
    /// routing here before listeners close.
    #[arg(long, value_name = "SECS", env = "SPILLWAY_DRAIN_DELAY", default_value_t = defaults::DRAIN_DELAY,
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub drain_delay: u64,

    /// Write the front's pid here (removed at exit); `spillway reload --pid-file` uses it.
    /// [default: none]
    #[arg(long, value_name = "FILE", env = "SPILLWAY_PID_FILE")]
    pub pid_file: Option<PathBuf>,

    /// PEM certificate chain (leaf first) for TLS listeners; re-read on reload (SIGHUP),
    /// and kept if the new one does not load. [default: no TLS]
    #[arg(long, value_name = "FILE", env = "SPILLWAY_CERTFILE")]
    pub certfile: Option<PathBuf>,

    /// PEM private key of --certfile. [default: none]
    #[arg(long, value_name = "FILE", env = "SPILLWAY_KEYFILE")]
    pub keyfile: Option<PathBuf>,

    /// PEM CA certificates that client certificates must chain to (with --cert-reqs).
    /// [default: none]
    #[arg(long, value_name = "FILE", env = "SPILLWAY_CA_CERTS")]
    pub ca_certs: Option<PathBuf>,

    /// Client certificates: none, optional (verified if presented) or required (0, 1, 2
    /// as gunicorn's). The verified subject reaches the application as SSL_CLIENT_S_DN.
    #[arg(long, value_name = "REQS", env = "SPILLWAY_CERT_REQS", default_value = defaults::CERT_REQS,
          ignore_case = true,
          value_parser = clap::builder::PossibleValuesParser::new(["none", "optional", "required", "0", "1", "2"]))]
    pub cert_reqs: String,

    /// HTTP versions: auto (HTTP/1.1, and HTTP/2 by ALPN on TLS or with prior knowledge
    /// in cleartext), 1 (HTTP/1.x only) or 2 (HTTP/2 only).
    #[arg(long, value_name = "VERSIONS", env = "SPILLWAY_HTTP", default_value = defaults::HTTP,
          ignore_case = true,
          value_parser = clap::builder::PossibleValuesParser::new(["auto", "1", "2"]))]
    pub http: String,

    /// Most concurrent streams per HTTP/2 connection; more are refused by the protocol.
    #[arg(long, value_name = "N", env = "SPILLWAY_HTTP2_MAX_STREAMS", default_value_t = defaults::HTTP2_MAX_STREAMS,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub http2_max_streams: u32,

    /// Expect a PROXY protocol (v1 or v2) header on every client connection, as HAProxy's
    /// `send-proxy-v2` sends it; the client address in it becomes REMOTE_ADDR. Only peers
    /// in --forwarded-allow-ips may connect. [default: off]
    #[arg(long, env = "SPILLWAY_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,

    /// Peers (IPs or CIDRs, comma-separated, `*` for all) whose PROXY headers and
    /// X-Forwarded-For / X-Forwarded-Proto are believed.
    #[arg(long, value_name = "LIST", env = "SPILLWAY_FORWARDED_ALLOW_IPS",
          default_value = defaults::FORWARDED_ALLOW_IPS)]
    pub forwarded_allow_ips: String,

    /// Server-Timing response header (queue, app and total milliseconds): off, trusted
    /// (peers in --forwarded-allow-ips only: how loaded the server is is the operator's
    /// business) or all.
    #[arg(long, value_name = "WHO", env = "SPILLWAY_SERVER_TIMING", default_value = defaults::SERVER_TIMING,
          ignore_case = true,
          value_parser = clap::builder::PossibleValuesParser::new(["off", "trusted", "all"]))]
    pub server_timing: String,

    /// Development: reload the workers when a Python file under the working directory or
    /// --pythonpath changes (polled once a second). [default: off]
    #[arg(long, env = "SPILLWAY_RELOAD")]
    pub reload: bool,

    /// Longest request target in bytes; longer gets 414.
    #[arg(long, value_name = "BYTES", env = "SPILLWAY_LIMIT_REQUEST_LINE", default_value_t = defaults::LIMIT_REQUEST_LINE,
          value_parser = clap::value_parser!(u32).range(64..=1_048_576))]
    pub limit_request_line: u32,

    /// Most header fields in a request; more gets 431.
    #[arg(long, value_name = "N", env = "SPILLWAY_LIMIT_REQUEST_FIELDS", default_value_t = defaults::LIMIT_REQUEST_FIELDS,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit_request_fields: u32,

    /// Longest header field (name and value) in bytes, at most 65536; longer gets 431.
    #[arg(long, value_name = "BYTES", env = "SPILLWAY_LIMIT_REQUEST_FIELD_SIZE",
          default_value_t = defaults::LIMIT_REQUEST_FIELD_SIZE,
          value_parser = clap::value_parser!(u32).range(64..=MAX_FIELD_SIZE as i64))]
    pub limit_request_field_size: u32,

    /// Directory to change to before loading the application. [default: current directory]
    #[arg(long, value_name = "DIR", env = "SPILLWAY_CHDIR")]
    pub chdir: Option<PathBuf>,

    /// Directory to prepend to sys.path. Repeatable (`:`-separated in the environment).
    /// [default: none]
    #[arg(
        long,
        value_name = "DIR",
        env = "SPILLWAY_PYTHONPATH",
        value_delimiter = ':'
    )]
    pub pythonpath: Vec<PathBuf>,

    /// Virtualenv whose packages the application uses: workers run its bin/python.
    /// [default: $VIRTUAL_ENV if set and spillway was not installed into a virtualenv]
    #[arg(long, value_name = "DIR", env = "SPILLWAY_VIRTUALENV")]
    pub virtualenv: Option<PathBuf>,

    /// The Python interpreter workers run in (CPython 3.10 or newer). [default: the
    /// interpreter spillway was installed with by pip; else the --virtualenv's python; else
    /// python3 on PATH]
    #[arg(long, value_name = "PATH", env = "SPILLWAY_PYTHON")]
    pub python: Option<PathBuf>,

    /// Environment variable for the application, KEY=VALUE. Repeatable (a table in the
    /// config file: `env = { KEY = "value" }`). [default: none]
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// URL prefix the application is mounted at (SCRIPT_NAME), e.g. /identity. [default: none]
    #[arg(long, value_name = "PATH", env = "SPILLWAY_ROOT_PATH")]
    pub root_path: Option<String>,

    /// Access log: a file path, or - for standard output. [default: off]
    #[arg(long, value_name = "FILE|-", env = "SPILLWAY_ACCESS_LOG")]
    pub access_log: Option<String>,

    /// Access log line format: default (client, request, status, bytes, times, worker,
    /// generation, request id), combined (Apache's, then the same numbers as key=value),
    /// or json (one object per line).
    #[arg(long, value_name = "FORMAT", env = "SPILLWAY_ACCESS_LOG_FORMAT",
          default_value = defaults::ACCESS_LOG_FORMAT, ignore_case = true,
          value_parser = clap::builder::PossibleValuesParser::new(["default", "combined", "json"]))]
    pub access_log_format: String,

    /// Event-loop threads in the front process. 1 is fastest up to a few cores: the front
    /// does little per request and cross-thread wake-ups cost more than they bring.
    #[arg(long, value_name = "N", env = "SPILLWAY_FRONT_THREADS", default_value_t = defaults::FRONT_THREADS,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub front_threads: u16,

    /// Log level.
    #[arg(long, value_name = "LEVEL", env = "SPILLWAY_LOG_LEVEL", default_value = defaults::LOG_LEVEL,
          ignore_case = true,
          value_parser = clap::builder::PossibleValuesParser::new(["error", "warn", "info", "debug", "trace"]))]
    pub log_level: String,

    /// Format of Spillway's own log (standard error): text, or json (one object per
    /// event, for log shippers). Workers log the same way.
    #[arg(long, value_name = "FORMAT", env = "SPILLWAY_LOG_FORMAT", default_value = defaults::LOG_FORMAT,
          ignore_case = true,
          value_parser = clap::builder::PossibleValuesParser::new(["text", "json"]))]
    pub log_format: String,
}

/// Arguments of `spillway reload`.
#[derive(Args, Debug)]
pub struct ReloadArgs {
    /// The pid file the server was started with (--pid-file).
    #[arg(long, value_name = "FILE")]
    pub pid_file: PathBuf,
}

/// What the front tells a worker on its command line (after the interpreter's `-c` and the
/// extension module's path).
#[derive(Parser, Debug)]
#[command(name = "spillway-worker")]
pub struct WorkerArgs {
    /// Inherited socketpair end.
    #[arg(long)]
    pub fd: i32,
    /// APP spec.
    #[arg(long)]
    pub app: String,
    /// A fixed pool size.
    #[arg(long)]
    pub threads: Option<u16>,
    /// Fewest threads when sizing by load.
    #[arg(long, default_value_t = 1)]
    pub min_threads: u16,
    /// Most threads when sizing by load.
    #[arg(long, default_value_t = 1)]
    pub max_threads: u16,
    /// Seconds an idle thread lingers.
    #[arg(long, default_value_t = 10)]
    pub thread_idle_timeout: u64,
    /// sys.path additions.
    #[arg(long)]
    pub pythonpath: Vec<PathBuf>,
    /// More than one worker serves the app.
    #[arg(long)]
    pub multiprocess: bool,
    /// CPU scheduling policy of the worker's threads: batch or normal.
    #[arg(long, default_value = "batch")]
    pub scheduling: String,
    /// Log level.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

/// Parses a size in bytes: digits with an optional K, M or G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, shift) = match t.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&t[..t.len() - 1], 10),
        Some(b'M') => (&t[..t.len() - 1], 20),
        Some(b'G') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size: use bytes, or a number with K, M or G"))?;
    n.checked_mul(1 << shift)
        .filter(|&b| b <= 1 << 40)
        .ok_or_else(|| format!("`{s}` is above the 1 TiB this allows"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_serve_option_has_help_and_an_environment_variable_or_is_repeatable() {
        let cmd = Cli::command();
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            assert!(arg.get_help().is_some(), "--{long} has no help");
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            if long != "env" {
                let want = format!("SPILLWAY_{}", long.to_ascii_uppercase().replace('-', "_"));
                assert_eq!(env.as_deref(), Some(want.as_str()), "--{long}");
            }
        }
    }

    #[test]
    fn sizes_take_binary_suffixes_and_refuse_the_rest() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.5M").is_err());
        assert!(parse_size("10T").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
