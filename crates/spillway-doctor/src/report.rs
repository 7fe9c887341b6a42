//! The doctor report: two host snapshots an interval apart turned into one serialisable
//! document. This is the `--json` output and one line of a `--record` file; its schema
//! is documented field by field here and in `docs/doctor-json.md`.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use spillway_netdiag::{HostSnapshot, Listener, TcpState};

use crate::rules;

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
    /// Builds the report from two snapshots `window` apart and runs the rules on it.
    pub fn from_samples(before: &HostSnapshot, after: &HostSnapshot, window: Duration) -> Report {
        let window_secs = window.as_secs_f64().max(1e-3);
        let mut counters = BTreeMap::new();
        let mut other_counter_deltas = BTreeMap::new();
        for (name, &value) in &after.tcp_ext {
            // Counters only grow; a smaller value means a wrap or a new namespace.
            let delta = value.saturating_sub(before.tcp_ext.get(name).copied().unwrap_or(value));
            if KEY_COUNTERS.contains(&name.as_str()) {
                counters.insert(
                    name.clone(),
                    CounterView {
                        value,
                        delta,
                        per_sec: delta as f64 / window_secs,
                    },
                );
            } else if delta > 0 {
                other_counter_deltas.insert(name.clone(), delta);
            }
        }
        let listeners: Vec<ListenerView> = after
            .listeners
            .iter()
            .map(|l| {
                let earlier = before
                    .listeners
                    .iter()
                    .find(|b| b.inode == l.inode && b.local == l.local);
                listener_view(l, earlier)
            })
            .collect();
        let hidden = listeners.iter().filter(|l| l.processes.is_empty()).count();
        let vis = after.visibility;
        let note = if vis.is_root {
            None
        } else if hidden > 0 || vis.unreadable_pids > 0 {
            Some(format!(
                "not root: {} processes' open sockets were unreadable and {hidden} listener(s) \
                 show no owning process; run as root to see other users' pids, commands and threads",
                vis.unreadable_pids
            ))
        } else {
            None
        };
        let mut report = Report {
            schema: SCHEMA.to_string(),
            taken_at_unix_ms: after
                .taken_at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            window_secs,
            visibility: VisibilityView {
                is_root: vis.is_root,
                unreadable_processes: vis.unreadable_pids,
                note,
            },
            sysctls: after.sysctls.clone(),
            counters,
            other_counter_deltas,
            connection_totals: after
                .state_totals
                .iter()
                .map(|(s, n)| (s.name().to_string(), *n))
                .collect(),
            time_wait_destinations: after
                .time_wait_destinations
                .iter()
                .map(|(a, n)| AddressCount {
                    address: a.to_string(),
                    connections: *n,
                })
                .collect(),
            listeners,
            findings: Vec::new(),
        };
        report.findings = rules::evaluate(&report);
        report
    }

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

fn listener_view(l: &Listener, earlier: Option<&Listener>) -> ListenerView {
    let q = l.accept_queue;
    let peak = earlier.map_or(q.depth, |e| e.accept_queue.depth.max(q.depth));
    ListenerView {
        address: l.local.to_string(),
        port: l.local.port(),
        family: if l.local.is_ipv6() { "ipv6" } else { "ipv4" }.to_string(),
        inode: l.inode,
        uid: l.uid,
        processes: l
            .processes
            .iter()
            .map(|p| ProcessView {
                pid: p.pid,
                command: p.command.clone(),
                cmdline: p.cmdline.clone(),
                threads: p.threads,
            })
            .collect(),
        accept_queue: QueueView {
            depth: q.depth,
            limit: q.limit,
            peak_depth: peak,
            full: q.depth > 0 && q.is_full(),
        },
        syn_queue: l.count(TcpState::SynRecv),
        connections: l
            .connections
            .iter()
            .map(|(s, n)| (s.name().to_string(), *n))
            .collect(),
        top_remotes: l
            .top_remotes
            .iter()
            .map(|(a, n)| AddressCount {
                address: a.to_string(),
                connections: *n,
            })
            .collect(),
        close_wait_not_accepted: l.close_wait_not_accepted,
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
