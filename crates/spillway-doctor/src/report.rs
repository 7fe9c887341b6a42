//! The doctor report: what two host snapshots an interval apart showed, as one serialisable
//! document (built in `sample.rs`, judged in `rules.rs`). This is the `--json` output and one
//! line of a `--record` file; its schema is documented field by field here and in
//! `docs/doctor-json.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Value of [`Report::schema`]; bumped when a field changes meaning or goes away.
pub const SCHEMA: &str = "spillway-doctor/1";

/// The `TcpExt` counters doctor reports with rates, in this order.
pub const KEY_COUNTERS: &[&str] = &[
    "ListenOverflows",
    "ListenDrops",
    "TCPReqQFullDrop",
    "TCPReqQFullDoCookies",
    "SyncookiesSent",
    "TCPSynRetrans",
    "TCPTimeouts",
    "EmbryonicRsts",
    "TCPTimeWaitOverflow",
];

/// One doctor run (or one `--record` sample): what was seen and what it means.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// When the second sample was taken, milliseconds since the Unix epoch.
    pub taken_at_unix_ms: u64,
    /// Seconds between the two samples that counter deltas and rates cover.
    pub window_secs: f64,
    /// What this user could not see, and what root would add.
    pub visibility: VisibilityView,
    /// TCP sysctls by dotted name (`net.core.somaxconn`), raw text values.
    pub sysctls: BTreeMap<String, String>,
    /// The [`KEY_COUNTERS`] of `TcpExt`, per network namespace (host-wide, not per port).
    pub counters: BTreeMap<String, CounterView>,
    /// Every other `TcpExt` counter that moved during the window: name → delta.
    pub other_counter_deltas: BTreeMap<String, u64>,
    /// Sockets per TCP state over the whole network namespace (`SYN_RECV`, `TIME_WAIT`, …).
    pub connection_totals: BTreeMap<String, u32>,
    /// TIME_WAIT sockets of outgoing connections, by destination, most first (top 5).
    pub time_wait_destinations: Vec<AddressCount>,
    /// Listening sockets, sorted by port; only the `--port`s asked for, if any.
    pub listeners: Vec<ListenerView>,
    /// What is wrong, most severe first. Empty when all is well.
    pub findings: Vec<Finding>,
}

/// What an unprivileged run cannot see.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VisibilityView {
    /// Running as root.
    pub is_root: bool,
    /// Processes whose fd tables were unreadable (other users' processes, without root).
    pub unreadable_processes: usize,
    /// A sentence on what root would add, when something was hidden.
    pub note: Option<String>,
}

/// One `TcpExt` counter over the window.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct CounterView {
    /// Value at the second sample (since boot or namespace creation).
    pub value: u64,
    /// Increase between the two samples.
    pub delta: u64,
    /// `delta / window_secs`.
    pub per_sec: f64,
}

/// An address with a connection count.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AddressCount {
    /// IP address, or `ip:port` for TIME_WAIT destinations.
    pub address: String,
    /// Number of sockets.
    pub connections: u32,
}

/// One listening socket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListenerView {
    /// `ip:port` (`[v6]:port` for IPv6).
    pub address: String,
    /// Port number.
    pub port: u16,
    /// `"ipv4"` or `"ipv6"`.
    pub family: String,
    /// Socket inode.
    pub inode: u64,
    /// Uid owning the socket.
    pub uid: u32,
    /// Processes holding the socket (several for prefork servers); empty if hidden.
    pub processes: Vec<ProcessView>,
    /// Kernel accept queue.
    pub accept_queue: QueueView,
    /// Half-open connections in the SYN queue (`SYN_RECV`).
    pub syn_queue: u32,
    /// Connections on this listener by TCP state name.
    pub connections: BTreeMap<String, u32>,
    /// Remote IPs with most connections (top 5).
    pub top_remotes: Vec<AddressCount>,
    /// Of `connections["CLOSE_WAIT"]`, those still in the accept queue (the client gave
    /// up before the application accepted them); the rest are the application's.
    #[serde(default)]
    pub close_wait_not_accepted: u32,
    /// The user-space layer, when the listener belongs to a Spillway front: what its own
    /// metrics say (`null` for other servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spillway: Option<SpillwayView>,
}

/// A Spillway front's own account of its queue and threads, from its admin endpoint's
/// `/metrics`; counts marked "in the window" are increases since the previous scrape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SpillwayView {
    /// The metrics URL read, `null` when no admin endpoint was found.
    pub metrics_url: Option<String>,
    /// Where the URL came from (`--admin` in the command line, `SPILLWAY_ADMIN` in the
    /// environment, `--metrics`), or why there is none.
    pub found_by: String,
    /// Why the metrics could not be read, if they could not.
    pub error: Option<String>,
    /// Requests waiting in Spillway's admission queue for a Python thread.
    pub queue_depth: u64,
    /// How long the oldest of them has waited, seconds.
    pub queue_oldest_wait_secs: f64,
    /// 503s from admission in the window, by reason (`queue_full`, `queue_timeout`).
    pub refusals: BTreeMap<String, u64>,
    /// 5xx responses in the window by `code origin` (`503 front`, `504 application`, …).
    pub errors_by_origin: BTreeMap<String, u64>,
    /// Each live worker's threads.
    pub workers: Vec<WorkerThreads>,
    /// Application time p99 (dispatch to response start), seconds: over the window when
    /// requests finished in it, else since the front started.
    pub app_p99_secs: Option<f64>,
    /// Whether `app_p99_secs` covers only the window.
    pub app_p99_in_window: bool,
}

/// One worker's thread pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerThreads {
    pub pid: u32,
    pub generation: u64,
    /// Threads running a request.
    pub busy: u32,
    /// Threads in the pool.
    pub threads: u32,
}

impl SpillwayView {
    /// Busy threads and threads, over all workers.
    pub fn threads(&self) -> (u32, u32) {
        self.workers
            .iter()
            .fold((0, 0), |(b, t), w| (b + w.busy, t + w.threads))
    }

    /// Whether the metrics were read.
    pub fn is_read(&self) -> bool {
        self.metrics_url.is_some() && self.error.is_none()
    }
}

/// A process holding a listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessView {
    /// Process id.
    pub pid: u32,
    /// Short command name.
    pub command: String,
    /// Full command line.
    pub cmdline: String,
    /// Thread count.
    pub threads: u32,
}

/// Accept-queue depth and limit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct QueueView {
    /// Connections waiting for `accept()` at the second sample (Recv-Q).
    pub depth: u32,
    /// Effective backlog, min(listen() backlog, somaxconn) (Send-Q).
    pub limit: u32,
    /// Largest depth seen in either sample.
    pub peak_depth: u32,
    /// `depth >= limit` (the kernel drops SYNs once depth exceeds the limit).
    pub full: bool,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing is failing.
    Info,
    /// Degraded or about to fail.
    Warning,
    /// Clients are failing or waiting now.
    Critical,
}

impl Severity {
    /// Upper-case label for text output.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// One diagnosis with the numbers behind it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    /// Stable rule id, e.g. `accept_queue_full` (see `rules.rs` for the list).
    pub id: String,
    /// Severity.
    pub severity: Severity,
    /// The listener (`ip:port`) it is about; `null` for host-wide findings.
    pub listener: Option<String>,
    /// Plain-language explanation with the numbers in it and what to do.
    pub message: String,
    /// The numbers the rule used, by name.
    pub evidence: BTreeMap<String, serde_json::Value>,
}

impl Report {
    /// The delta of a key counter over the window (0 if the kernel lacks it).
    pub fn delta(&self, counter: &str) -> u64 {
        self.counters.get(counter).map(|c| c.delta).unwrap_or(0)
    }

    /// A sysctl parsed as a number, if present and numeric.
    pub fn sysctl(&self, name: &str) -> Option<u64> {
        self.sysctls.get(name).and_then(|v| v.trim().parse().ok())
    }

    /// The most severe finding, if any.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

impl ListenerView {
    /// "127.0.0.1:9876 (python3, pid 4242, 1 thread)", or the uid when the process is hidden.
    pub fn label(&self) -> String {
        match self.processes.as_slice() {
            [] => format!("{} (uid {}, process not visible)", self.address, self.uid),
            [p] => format!(
                "{} ({}, pid {}, {} thread{})",
                self.address,
                p.command,
                p.pid,
                p.threads,
                if p.threads == 1 { "" } else { "s" }
            ),
            [p, rest @ ..] => format!(
                "{} ({}, pids {} and {} more, {} threads in all)",
                self.address,
                p.command,
                p.pid,
                rest.len(),
                self.processes.iter().map(|p| p.threads).sum::<u32>()
            ),
        }
    }

    /// Connections in the named state (0 if none).
    pub fn count(&self, state: &str) -> u32 {
        self.connections.get(state).copied().unwrap_or(0)
    }

    /// All connections on this listener, any state.
    pub fn total_connections(&self) -> u32 {
        self.connections.values().sum()
    }
}
