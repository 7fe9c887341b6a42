//! The front's validated configuration. The binary parses flags, environment and file,
//! validates once, and hands this typed value over; nothing here parses text but the
//! trusted-proxy list (`trusted`), which the request path also reads client addresses by.

pub mod trusted;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddr {
    /// A TCP address (`127.0.0.1:8000`, `[::]:8000`).
    Tcp(SocketAddr),
    /// A TCP address that terminates TLS (`tls:0.0.0.0:8443`).
    Tls(SocketAddr),
    /// A Unix domain socket path (`unix:/run/app.sock`).
    Unix(PathBuf),
}

impl std::fmt::Display for BindAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindAddr::Tcp(a) => write!(f, "{a}"),
            BindAddr::Tls(a) => write!(f, "tls:{a}"),
            BindAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Whether clients must present a certificate (gunicorn's `--cert-reqs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertReqs {
    /// No client certificate is asked for.
    None,
    /// One is asked for and verified if presented.
    Optional,
    /// The handshake fails without a valid one.
    Required,
}

/// TLS termination.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub certfile: PathBuf,
    /// PEM private key.
    pub keyfile: PathBuf,
    /// PEM CA certificates that client certificates must chain to.
    pub ca_certs: Option<PathBuf>,
    /// Whether client certificates are asked for, and required.
    pub cert_reqs: CertReqs,
    /// Every TCP listener speaks TLS (there is no `tls:` bind); else only the `tls:`
    /// ones do.
    pub all_tcp: bool,
}

/// Which HTTP versions listeners speak (`--http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpVersions {
    /// HTTP/1.1, and HTTP/2 by ALPN on TLS or with prior knowledge (h2c) in cleartext.
    #[default]
    Auto,
    /// HTTP/1.x only.
    Http1,
    /// HTTP/2 only.
    Http2,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    /// Standard output.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
}

/// How access log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    /// `client "request" status bytes total queue= worker= generation= request_id=`.
    #[default]
    Default,
    /// Apache's combined format, then Spillway's numbers as `key=value` fields.
    Combined,
    /// One JSON object per line.
    Json,
}

impl std::fmt::Display for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessLog::Stdout => f.write_str("(standard output)"),
            AccessLog::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// How to start a worker process (the binary re-executing itself).
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// Program to run (normally `/proc/self/exe`).
    pub program: PathBuf,
    /// Arguments, ending with what the worker needs to know.
    pub args: Vec<OsString>,
    /// Extra environment for the application (`--env`).
    pub env: Vec<(OsString, OsString)>,
    /// Working directory (`--chdir`).
    pub cwd: Option<PathBuf>,
}

/// How many Python threads each worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threads {
    /// Fewest threads a self-sizing worker keeps (`--min-threads`).
    pub min: u16,
    /// Most threads a self-sizing worker grows to (`--max-threads`).
    pub max: u16,
    /// A fixed pool (`--threads N`), or `None` to size by load.
    pub pinned: Option<u16>,
}

impl std::fmt::Display for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pinned {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "{}..{} by load", self.min, self.max),
        }
    }
}

/// Everything the front needs, validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The APP spec, for messages.
    pub app: String,
    /// Listeners.
    pub binds: Vec<BindAddr>,
    /// Worker processes.
    pub workers: usize,
    /// Python threads per worker.
    pub threads: Threads,
    /// `listen()` backlog requested.
    pub backlog: u32,
    /// Idle time after which a keep-alive connection is closed (announced to clients).
    pub keep_alive: Duration,
    /// Time a client has to send a complete request head.
    pub header_timeout: Duration,
    /// Longest request target (414 above).
    pub limit_request_line: usize,
    /// Most header fields (431 above).
    pub limit_request_fields: usize,
    /// Longest header field, name plus value (431 above).
    pub limit_request_field_size: usize,
    /// `SCRIPT_NAME` prefix, empty for none.
    pub root_path: String,
    /// Access log destination, if any.
    pub access_log: Option<AccessLog>,
    /// The access log's line format.
    pub access_log_format: AccessLogFormat,
    /// TLS termination, if any listener terminates TLS.
    pub tls: Option<TlsConfig>,
    /// The HTTP versions listeners speak.
    pub http: HttpVersions,
    /// Most concurrent streams per HTTP/2 connection.
    pub http2_max_streams: u32,
    /// How long shutdown waits for requests in flight.
    pub graceful_timeout: Duration,
    /// How workers are started.
    pub worker_command: WorkerCommand,
    /// Most requests waiting for a thread; more get 503.
    pub max_queue: usize,
    /// Longest wait for a thread; longer gets 503.
    pub queue_timeout: Duration,
    /// Most open client connections; past it the front stops accepting for a while.
    pub max_connections: usize,
    /// Longest time until a response starts (or between body chunks); longer gets 504.
    pub timeout: Duration,
    /// Request bodies up to this many bytes are received whole before the request
    /// queues for a Python thread (0: never).
    pub body_buffer: u64,
    /// Longest time a client may send no request-body bytes; longer gets 408.
    pub body_timeout: Duration,
    /// Bytes a second a streamed body must average while the application waits for it
    /// (0: no minimum); slower gets 408.
    pub body_min_rate: u64,
    /// Replace a worker after this many requests (0: never).
    pub max_requests: u64,
    /// Random extra requests (0..=jitter) per worker, so workers do not retire together.
    pub max_requests_jitter: u64,
    /// Replace a worker whose resident memory exceeds this many bytes.
    pub max_worker_memory: Option<u64>,
    /// Admin endpoint address, if any.
    pub admin: Option<BindAddr>,
    /// Names the admin endpoint's `Host` may carry besides addresses and localhost names.
    pub admin_hosts: Vec<String>,
    /// HAProxy agent-check address, if any.
    pub agent_check: Option<SocketAddr>,
    /// How long shutdown keeps serving with readiness off before closing listeners.
    pub drain_delay: Duration,
    /// Where to write our pid.
    pub pid_file: Option<PathBuf>,
    /// Listeners expect a PROXY protocol v1/v2 header (from trusted peers only).
    pub proxy_protocol: bool,
    /// Peers whose PROXY headers and X-Forwarded-* headers are believed.
    pub forwarded_allow_ips: crate::config::trusted::TrustedProxies,
    /// Which clients get a `Server-Timing` header.
    pub server_timing: ServerTiming,
    /// Directories whose Python files trigger a reload when they change (`--reload`).
    pub reload_roots: Vec<PathBuf>,
    /// Tells the service manager about state changes (systemd `sd_notify`); a no-op
    /// when not run under one.
    pub notify: StateNotifier,
}

/// A state-change notifier (`READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=…`).
#[derive(Clone)]
pub struct StateNotifier(pub std::sync::Arc<dyn Fn(&str) + Send + Sync>);

impl StateNotifier {
    /// A notifier that tells nobody.
    pub fn none() -> StateNotifier {
        StateNotifier(std::sync::Arc::new(|_| {}))
    }

    /// Sends one state change.
    pub fn notify(&self, msg: &str) {
        (self.0)(msg)
    }
}

impl std::fmt::Debug for StateNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateNotifier")
    }
}

/// Which clients get a `Server-Timing` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerTiming {
    /// Nobody.
    Off,
    /// Peers in `--forwarded-allow-ips` (a proxy, a local `curl`, a load test on the host):
    /// the queue and application times tell how loaded the server is, which is the
    /// operator's business, not every client's.
    #[default]
    Trusted,
    /// Every client.
    All,
}

impl ServerTiming {
    /// Whether a peer (trusted or not) gets the header.
    pub fn sends_to(self, trusted: bool) -> bool {
        match self {
            ServerTiming::Off => false,
            ServerTiming::Trusted => trusted,
            ServerTiming::All => true,
        }
    }
}
