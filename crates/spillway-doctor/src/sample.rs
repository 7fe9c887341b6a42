//! Sampling: takes host snapshots an interval apart and turns each pair into a [`Report`],
//! findings included.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::Context;
use spillway_netdiag::{HostSnapshot, Listener, TcpState};

use crate::report::{
    AddressCount, CounterView, ListenerView, ProcessView, QueueView, Report, VisibilityView,
    KEY_COUNTERS, SCHEMA,
};
use crate::rules;
use crate::scrape::Metrics;
use crate::userspace;

/// Samples twice, `interval` apart, and builds the report (what one-shot doctor prints).
pub fn collect_report(
    ports: &[u16],
    interval: Duration,
    metrics: Option<String>,
) -> anyhow::Result<Report> {
    let mut s = Sampler::start(ports)?.with_metrics(metrics);
    std::thread::sleep(interval);
    s.sample()
}

/// Takes successive snapshots and turns each pair into a [`Report`].
pub struct Sampler {
    ports: Vec<u16>,
    prev: HostSnapshot,
    prev_at: Instant,
    /// `--metrics`: a Spillway front's metrics URL given by hand.
    metrics: Option<String>,
    /// The last scrape of each Spillway front's metrics, for the window's increases.
    scrapes: HashMap<String, Metrics>,
}

impl Sampler {
    /// Takes the first snapshot.
    pub fn start(ports: &[u16]) -> anyhow::Result<Sampler> {
        let prev_at = Instant::now();
        let prev = spillway_netdiag::snapshot(ports).context("reading TCP state")?;
        Ok(Sampler {
            ports: ports.to_vec(),
            prev,
            prev_at,
            metrics: None,
            scrapes: HashMap::new(),
        })
    }

    /// Reads a Spillway front's metrics from `url` (`--metrics`) rather than from the admin
    /// endpoint its command line names; takes the window's first scrape of every front now.
    pub fn with_metrics(mut self, url: Option<String>) -> Sampler {
        self.metrics = url;
        let mut listeners: Vec<ListenerView> = self
            .prev
            .listeners
            .iter()
            .map(|l| listener_view(l, None))
            .collect();
        userspace::read(
            &mut listeners,
            self.metrics.as_deref(),
            !self.ports.is_empty(),
            &mut self.scrapes,
        );
        self
    }

    /// Takes the next snapshot and reports on the window since the previous one.
    pub fn sample(&mut self) -> anyhow::Result<Report> {
        let at = Instant::now();
        let snap = spillway_netdiag::snapshot(&self.ports).context("reading TCP state")?;
        let mut report = Report::from_samples(&self.prev, &snap, at - self.prev_at);
        rules::no_listener(&mut report, &self.ports);
        userspace::read(
            &mut report.listeners,
            self.metrics.as_deref(),
            !self.ports.is_empty(),
            &mut self.scrapes,
        );
        userspace::add_findings(&mut report);
        self.prev = snap;
        self.prev_at = at;
        Ok(report)
    }
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
        spillway: None,
    }
}
