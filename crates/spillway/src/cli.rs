//! The command line as the user types it: flags mirrored one to one, nothing derived.
//! Every serve option is an `Option` so that precedence (flag > `SPILLWAY_*` env > config
//! file > default) can be resolved afterwards in `settings`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Internal: run one worker process (started by the front).
    #[command(name = "__worker", hide = true)]
    Worker(WorkerArgs),
}

/// Options of `spillway APP`.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// The WSGI application: module:callable, module:factory() or path/to/file.py:callable.
    #[arg(value_name = "APP", env = "SPILLWAY_APP")]
    pub app: Option<String>,

    /// TOML configuration file with the same keys as the long options (e.g. `threads = 8`).
    #[arg(short = 'c', long, value_name = "FILE", env = "SPILLWAY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on: HOST:PORT, [::]:PORT or unix:/path. Repeatable.
    /// [default: 127.0.0.1:8000]
    #[arg(
        short = 'b',
        long,
        value_name = "ADDR",
        env = "SPILLWAY_BIND",
        value_delimiter = ','
    )]
    pub bind: Vec<String>,

    /// Worker processes, each embedding its own Python interpreter. [default: number of CPUs]
    #[arg(short = 'w', long, value_name = "N", env = "SPILLWAY_WORKERS",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Python threads per worker calling the application concurrently. [default: 4]
    #[arg(long, value_name = "N", env = "SPILLWAY_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// listen() backlog: the kernel accept queue; capped by net.core.somaxconn, which is
    /// logged at start. [default: 4096]
    #[arg(long, value_name = "N", env = "SPILLWAY_BACKLOG",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub backlog: Option<u32>,

    /// Seconds an idle keep-alive connection stays open, announced as `Keep-Alive: timeout=N`.
    /// Keep it above your proxy's pool idle timeout. [default: 75]
    #[arg(long, value_name = "SECS", env = "SPILLWAY_KEEP_ALIVE",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub keep_alive: Option<u64>,

    /// Seconds a client has to send a complete request head once it started one (and a new
    /// connection to send its first). Slower clients are disconnected. [default: 10]
    #[arg(long, value_name = "SECS", env = "SPILLWAY_HEADER_TIMEOUT",
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub header_timeout: Option<u64>,

    /// Seconds that shutdown waits for requests in flight. [default: 30]
    #[arg(long, value_name = "SECS", env = "SPILLWAY_GRACEFUL_TIMEOUT",
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub graceful_timeout: Option<u64>,

    /// Most requests waiting for a free Python thread; more get 503 with Retry-After at once.
    /// [default: 1024]
    #[arg(long, value_name = "N", env = "SPILLWAY_MAX_QUEUE",
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub max_queue: Option<u32>,

    /// Seconds a request may wait for a free Python thread; longer gets 503 with Retry-After.
    /// [default: 30]
    #[arg(long, value_name = "SECS", env = "SPILLWAY_QUEUE_TIMEOUT",
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub queue_timeout: Option<u64>,

    /// Most open client connections; past it the front stops accepting (new connections wait
    /// in the kernel queue) until the count falls below 90%. [default: 10000]
    #[arg(long, value_name = "N", env = "SPILLWAY_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub max_connections: Option<u32>,

    /// Seconds until a response must start (and longest pause between body chunks); longer
    /// gets 504 and the Python thread is marked stuck. A worker stuck longer than
    /// --graceful-timeout is replaced. [default: 60]
    #[arg(long, value_name = "SECS", env = "SPILLWAY_TIMEOUT",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: Option<u64>,

    /// Replace a worker after it served this many requests (0: never); the replacement
    /// starts first, so no request sees it. [default: 0]
    #[arg(long, value_name = "N", env = "SPILLWAY_MAX_REQUESTS",
          value_parser = clap::value_parser!(u64))]
    pub max_requests: Option<u64>,

    /// Up to this many extra requests per worker before replacement, chosen at random, so
    /// workers do not all restart together. [default: 0]
    #[arg(long, value_name = "N", env = "SPILLWAY_MAX_REQUESTS_JITTER",
          value_parser = clap::value_parser!(u64))]
    pub max_requests_jitter: Option<u64>,

    /// Replace a worker whose resident memory exceeds this many MiB (0: no limit).
    /// [default: 0]
    #[arg(long, value_name = "MIB", env = "SPILLWAY_MAX_WORKER_MEMORY",
          value_parser = clap::value_parser!(u64).range(0..=1_048_576))]
    pub max_worker_memory: Option<u64>,

    /// Admin endpoint: HOST:PORT or unix:/path, serving /healthz, /readyz, /status and
    /// POST /reload. Bind it to loopback or a unix socket. [default: off]
    #[arg(long, value_name = "ADDR", env = "SPILLWAY_ADMIN")]
    pub admin: Option<String>,

    /// HAProxy agent-check port (HOST:PORT): answers `up ready N%` (weight falls as the
    /// queue grows), `drain` while shutting down, `maint` with no worker. [default: off]
    #[arg(long, value_name = "ADDR", env = "SPILLWAY_AGENT_CHECK")]
    pub agent_check: Option<String>,

    /// Seconds that shutdown keeps serving with readiness off, so load balancers stop
    /// routing here before listeners close. [default: 5]
    #[arg(long, value_name = "SECS", env = "SPILLWAY_DRAIN_DELAY",
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub drain_delay: Option<u64>,

    /// Write the front's pid here (removed at exit); `spillway reload --pid-file` uses it.
    /// [default: none]
    #[arg(long, value_name = "FILE", env = "SPILLWAY_PID_FILE")]
    pub pid_file: Option<PathBuf>,

    /// Expect a PROXY protocol (v1 or v2) header on every client connection, as HAProxy's
    /// `send-proxy-v2` sends it; the client address in it becomes REMOTE_ADDR. Only peers
    /// in --forwarded-allow-ips may connect. [default: off]
    #[arg(long, env = "SPILLWAY_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,

    /// Peers (IPs or CIDRs, comma-separated, `*` for all) whose PROXY headers and
    /// X-Forwarded-For / X-Forwarded-Proto are believed. [default: 127.0.0.1,::1]
    #[arg(long, value_name = "LIST", env = "SPILLWAY_FORWARDED_ALLOW_IPS")]
    pub forwarded_allow_ips: Option<String>,

    /// Development: reload the workers when a Python file under the working directory or
    /// --pythonpath changes (polled once a second). [default: off]
    #[arg(long, env = "SPILLWAY_RELOAD")]
    pub reload: bool,

    /// Longest request target in bytes; longer gets 414. [default: 4094]
    #[arg(long, value_name = "BYTES", env = "SPILLWAY_LIMIT_REQUEST_LINE",
          value_parser = clap::value_parser!(u32).range(64..=1_048_576))]
    pub limit_request_line: Option<u32>,

    /// Most header fields in a request; more gets 431. [default: 100]
    #[arg(long, value_name = "N", env = "SPILLWAY_LIMIT_REQUEST_FIELDS",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit_request_fields: Option<u32>,

    /// Longest header field (name and value) in bytes; longer gets 431. [default: 8190]
    #[arg(long, value_name = "BYTES", env = "SPILLWAY_LIMIT_REQUEST_FIELD_SIZE",
          value_parser = clap::value_parser!(u32).range(64..=1_048_576))]
    pub limit_request_field_size: Option<u32>,

    /// Directory to change to before loading the application. [default: current directory]
    #[arg(long, value_name = "DIR", env = "SPILLWAY_CHDIR")]
    pub chdir: Option<PathBuf>,

    /// Directory to prepend to sys.path. Repeatable.
    #[arg(
        long,
        value_name = "DIR",
        env = "SPILLWAY_PYTHONPATH",
        value_delimiter = ':'
    )]
    pub pythonpath: Vec<PathBuf>,

    /// Virtualenv whose packages the application uses. [default: $VIRTUAL_ENV if set]
    #[arg(long, value_name = "DIR", env = "SPILLWAY_VIRTUALENV")]
    pub virtualenv: Option<PathBuf>,

    /// Environment variable for the application, KEY=VALUE. Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// URL prefix the application is mounted at (SCRIPT_NAME), e.g. /identity. [default: none]
    #[arg(long, value_name = "PATH", env = "SPILLWAY_ROOT_PATH")]
    pub root_path: Option<String>,

    /// Access log: a file path, or - for standard output. [default: off]
    #[arg(long, value_name = "FILE|-", env = "SPILLWAY_ACCESS_LOG")]
    pub access_log: Option<String>,

    /// Event-loop threads in the front process. 1 is fastest up to a few cores: the front
    /// does little per request and cross-thread wake-ups cost more than they bring. [default: 1]
    #[arg(long, value_name = "N", env = "SPILLWAY_FRONT_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub front_threads: Option<u16>,

    /// Log level: error, warn, info, debug or trace. [default: info]
    #[arg(long, value_name = "LEVEL", env = "SPILLWAY_LOG_LEVEL")]
    pub log_level: Option<String>,
}

/// Arguments of `spillway reload`.
#[derive(Args, Debug)]
pub struct ReloadArgs {
    /// The pid file the server was started with (--pid-file).
    #[arg(long, value_name = "FILE")]
    pub pid_file: PathBuf,
}

/// Arguments of the internal worker subcommand.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Inherited socketpair end.
    #[arg(long)]
    pub fd: i32,
    /// APP spec.
    #[arg(long)]
    pub app: String,
    /// Python threads.
    #[arg(long)]
    pub threads: u16,
    /// sys.path additions.
    #[arg(long)]
    pub pythonpath: Vec<PathBuf>,
    /// Virtualenv.
    #[arg(long)]
    pub virtualenv: Option<PathBuf>,
    /// More than one worker serves the app.
    #[arg(long)]
    pub multiprocess: bool,
    /// Log level.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Generation number.
    #[arg(long, default_value_t = 1)]
    pub generation: u64,
}
