//! Findings: rules that turn a [`Report`]'s evidence into sentences with the numbers in them.
//!
//! Rule ids (stable, used in JSON):
//! - `accept_queue_full`: a listener's accept queue is at its limit (critical when
//!   `ListenOverflows` rose in the window).
//! - `listen_overflows_elsewhere`: `ListenOverflows` rose but no listener shown is full.
//! - `backlog_capped_by_somaxconn`: a listener's backlog equals `net.core.somaxconn` and
//!   that matters (small somaxconn, or the queue is half full or more).
//! - `syn_queue_drops`: SYN-queue drops (`TCPReqQFullDrop`, `ListenDrops` beyond
//!   `ListenOverflows`) without accept-queue overflow.
//! - `syncookies_firing`: `SyncookiesSent` / `TCPReqQFullDoCookies` rose.
//! - `abort_on_overflow`: `tcp_abort_on_overflow=1` (critical when overflows happen: RSTs).
//! - `close_wait`: many connections in CLOSE_WAIT on a listener.
//! - `time_wait_pressure`: TIME_WAIT sockets near the ephemeral port range or
//!   `tcp_max_tw_buckets`, or `TCPTimeWaitOverflow` rising.
//! - `no_listener`: a `--port` asked for has no listener (added by [`no_listener`]).
//! - `spillway_layer`, `spillway_no_metrics`: a Spillway front's own metrics (added by
//!   `userspace`).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::report::{Finding, ListenerView, Report, Severity};

/// A backlog below this is one an application picked by accident (wsgiref and Python's
/// socketserver use 5).
const TINY_BACKLOG: u32 = 64;
/// A somaxconn below this caps servers that ask for a realistic backlog (old default 128).
const SMALL_SOMAXCONN: u64 = 4096;
/// CLOSE_WAIT sockets on one listener before it is a finding.
const CLOSE_WAIT_WARN: u32 = 10;
/// Share of the ephemeral range (or of tcp_max_tw_buckets) in TIME_WAIT that is pressure.
const TIME_WAIT_SHARE: f64 = 0.5;

/// Runs every rule; findings come back most severe first.
pub fn evaluate(r: &Report) -> Vec<Finding> {
    let mut out = Vec::new();
    for l in &r.listeners {
        accept_queue_full(r, l, &mut out);
        backlog_capped(r, l, &mut out);
        close_wait(l, &mut out);
    }
    overflows_elsewhere(r, &mut out);
    syn_queue_drops(r, &mut out);
    syncookies(r, &mut out);
    abort_on_overflow(r, &mut out);
    time_wait(r, &mut out);
    // Stable sort: within one severity, listener findings keep port order.
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

/// Adds a `no_listener` warning for each asked-for port nothing listens on; kept apart
/// from [`evaluate`] because only the caller knows which ports were asked for.
pub fn no_listener(r: &mut Report, ports: &[u16]) {
    for &port in ports {
        if r.listeners.iter().any(|l| l.port == port) {
            continue;
        }
        r.findings.push(finding(
            "no_listener",
            Severity::Warning,
            None,
            format!(
                "Nothing listens on TCP port {port} in this network namespace: clients get \
                 \"connection refused\". If the server runs in a container, run doctor inside \
                 its network namespace (nsenter -t PID -n)."
            ),
            vec![("port", json!(port))],
        ));
    }
    r.findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
}

/// Cumulative seconds after the first SYN at which a client retransmits it: the first
/// RTO is 1 s and stays 1 s for `linear` more timeouts (`tcp_syn_linear_timeouts`, Linux
/// 6.7+; 0 before), then doubles. Also returns when the client gives up.
pub fn syn_retransmit_schedule(retries: u64, linear: u64) -> (Vec<u64>, u64) {
    let rto = |i: u64| {
        if i <= linear {
            1
        } else {
            1u64 << (i - linear).min(20)
        }
    };
    let mut at = Vec::new();
    let mut t = 0;
    for i in 0..retries.min(16) {
        t += rto(i);
        at.push(t);
    }
    (at, t + rto(retries.min(16)))
}

fn secs(w: f64) -> String {
    if (w - w.round()).abs() < 0.05 {
        format!("{} s", w.round())
    } else {
        format!("{w:.1} s")
    }
}

fn finding(
    id: &str,
    severity: Severity,
    listener: Option<&ListenerView>,
    message: String,
    evidence: Vec<(&str, Value)>,
) -> Finding {
    Finding {
        id: id.to_string(),
        severity,
        listener: listener.map(|l| l.address.clone()),
        message,
        evidence: evidence
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn accept_queue_full(r: &Report, l: &ListenerView, out: &mut Vec<Finding>) {
    let q = l.accept_queue;
    if !q.full {
        return;
    }
    let overflows = r.delta("ListenOverflows");
    let somaxconn = r.sysctl("net.core.somaxconn");
    let abort = r.sysctl("net.ipv4.tcp_abort_on_overflow") == Some(1);
    let retries = r.sysctl("net.ipv4.tcp_syn_retries").unwrap_or(6);
    let linear = r.sysctl("net.ipv4.tcp_syn_linear_timeouts").unwrap_or(0);
    let (schedule, give_up) = syn_retransmit_schedule(retries, linear);
    let window = secs(r.window_secs);
    let mut m = format!(
        "{}: accept queue full ({}/{}), ListenOverflows +{overflows} in {window}.",
        l.label(),
        q.depth,
        q.limit
    );
    let smx = somaxconn.map_or("?".to_string(), |s| s.to_string());
    if q.limit < TINY_BACKLOG {
        m += &format!(
            " Its backlog is {} — the application passed a tiny listen() backlog (the effective \
             value is min(backlog, somaxconn={smx})).",
            q.limit
        );
    } else if somaxconn == Some(u64::from(q.limit)) {
        m += &format!(
            " Its backlog is {} — capped by net.core.somaxconn={smx}.",
            q.limit
        );
    } else {
        m += &format!(
            " Its backlog is {}; the application is not calling accept() fast enough.",
            q.limit
        );
    }
    if l.close_wait_not_accepted > 0 {
        m += &format!(
            " {} of the queued connections were already abandoned by their clients (CLOSE_WAIT).",
            l.close_wait_not_accepted
        );
    }
    if let Some(p) = l.processes.first() {
        if l.processes.len() == 1 && p.threads == 1 {
            m += " It has a single thread, so one slow request stalls every queued connection.";
        }
    }
    if abort {
        m += " With tcp_abort_on_overflow=1 clients get a connection reset instead.";
    } else {
        let list: Vec<String> = schedule.iter().take(6).map(|t| t.to_string()).collect();
        m += &format!(
            " Clients wait on SYN retransmits ({}{} s on this kernel, giving up after {give_up} s).",
            list.join(", "),
            if schedule.len() > 6 { " …" } else { "" }
        );
    }
    m += " Raise the backlog and add workers, or serve it with a server that accepts without \
          waiting for the application.";
    let severity = if overflows > 0 {
        Severity::Critical
    } else {
        Severity::Warning
    };
    out.push(finding(
        "accept_queue_full",
        severity,
        Some(l),
        m,
        vec![
            ("queue_depth", json!(q.depth)),
            ("queue_limit", json!(q.limit)),
            ("peak_queue_depth", json!(q.peak_depth)),
            ("queued_abandoned", json!(l.close_wait_not_accepted)),
            ("listen_overflows_delta", json!(overflows)),
            ("listen_drops_delta", json!(r.delta("ListenDrops"))),
            ("tcp_syn_retrans_delta", json!(r.delta("TCPSynRetrans"))),
            ("window_secs", json!(r.window_secs)),
            ("somaxconn", json!(somaxconn)),
            ("syn_retransmit_at_secs", json!(schedule)),
        ],
    ));
}

fn backlog_capped(r: &Report, l: &ListenerView, out: &mut Vec<Finding>) {
    let Some(somaxconn) = r.sysctl("net.core.somaxconn") else {
        return;
    };
    let q = l.accept_queue;
    if u64::from(q.limit) != somaxconn || q.limit == 0 {
        return;
    }
    let pressed = q.peak_depth.saturating_mul(2) >= q.limit;
    if somaxconn >= SMALL_SOMAXCONN && !pressed {
        return;
    }
    let m = format!(
        "{}: its backlog is {}, exactly net.core.somaxconn={somaxconn}: the application asked \
         for at least that and the kernel capped it. The queue holds {} now (peak {}). Raise \
         net.core.somaxconn (sysctl -w net.core.somaxconn=N) so the backlog the application \
         asks for takes effect.",
        l.label(),
        q.limit,
        q.depth,
        q.peak_depth
    );
    out.push(finding(
        "backlog_capped_by_somaxconn",
        if pressed {
            Severity::Warning
        } else {
            Severity::Info
        },
        Some(l),
        m,
        vec![
            ("queue_limit", json!(q.limit)),
            ("somaxconn", json!(somaxconn)),
            ("queue_depth", json!(q.depth)),
            ("peak_queue_depth", json!(q.peak_depth)),
        ],
    ));
}

fn close_wait(l: &ListenerView, out: &mut Vec<Finding>) {
    // CLOSE_WAIT still in the accept queue is a client that gave up waiting; the
    // accept_queue_full finding covers that. Only accepted ones are the application's.
    let n = l
        .count("CLOSE_WAIT")
        .saturating_sub(l.close_wait_not_accepted);
    if n < CLOSE_WAIT_WARN {
        return;
    }
    let est = l.count("ESTABLISHED");
    let top = l
        .top_remotes
        .first()
        .map(|a| {
            format!(
                " Most connections come from {} ({}).",
                a.address, a.connections
            )
        })
        .unwrap_or_default();
    let m = format!(
        "{}: {n} connections in CLOSE_WAIT (and {est} ESTABLISHED): the clients have closed \
         them but the application never called close(). Each holds a file descriptor until \
         it does; this is a handler that hangs or leaks its socket.{top}",
        l.label()
    );
    out.push(finding(
        "close_wait",
        Severity::Warning,
        Some(l),
        m,
        vec![
            ("close_wait", json!(n)),
            ("established", json!(est)),
            ("threshold", json!(CLOSE_WAIT_WARN)),
        ],
    ));
}

fn overflows_elsewhere(r: &Report, out: &mut Vec<Finding>) {
    let overflows = r.delta("ListenOverflows");
    if overflows == 0 || r.listeners.iter().any(|l| l.accept_queue.full) {
        return;
    }
    let near = r
        .listeners
        .iter()
        .max_by_key(|l| l.accept_queue.peak_depth)
        .filter(|l| l.accept_queue.peak_depth > 0)
        .map(|l| {
            format!(
                " The fullest listener shown is {} at peak {}/{}.",
                l.address, l.accept_queue.peak_depth, l.accept_queue.limit
            )
        })
        .unwrap_or_default();
    let m = format!(
        "ListenOverflows +{overflows} in {} in this network namespace, but no listener shown has a \
         full accept queue now: the overflowing listener is another port (run without --port) \
         or fills in bursts shorter than the sampling.{near}",
        secs(r.window_secs)
    );
    out.push(finding(
        "listen_overflows_elsewhere",
        Severity::Warning,
        None,
        m,
        vec![
            ("listen_overflows_delta", json!(overflows)),
            ("window_secs", json!(r.window_secs)),
        ],
    ));
}

fn syn_queue_drops(r: &Report, out: &mut Vec<Finding>) {
    let overflows = r.delta("ListenOverflows");
    let reqq_drop = r.delta("TCPReqQFullDrop");
    // ListenDrops counts every drop at a listener, overflows included.
    let other_drops = r.delta("ListenDrops").saturating_sub(overflows);
    if overflows > 0 || (reqq_drop == 0 && other_drops == 0) {
        return;
    }
    let max_syn = r.sysctl("net.ipv4.tcp_max_syn_backlog");
    let cookies = r.sysctl("net.ipv4.tcp_syncookies");
    let fullest = r
        .listeners
        .iter()
        .max_by_key(|l| l.syn_queue)
        .filter(|l| l.syn_queue > 0)
        .map(|l| {
            format!(
                " The largest SYN queue is {} with {} half-open.",
                l.address, l.syn_queue
            )
        })
        .unwrap_or_default();
    let m = format!(
        "SYN-queue drops without accept-queue overflow: TCPReqQFullDrop +{reqq_drop}, ListenDrops \
         +{} (ListenOverflows +0) in {}. Half-open connections fill the SYN queue \
         (net.ipv4.tcp_max_syn_backlog={}, tcp_syncookies={}) — a SYN flood or clients that \
         never finish the handshake.{fullest} Enable syncookies (tcp_syncookies=1) or raise \
         tcp_max_syn_backlog and the listen() backlog.",
        r.delta("ListenDrops"),
        secs(r.window_secs),
        max_syn.map_or("?".into(), |v| v.to_string()),
        cookies.map_or("?".into(), |v| v.to_string()),
    );
    out.push(finding(
        "syn_queue_drops",
        Severity::Warning,
        None,
        m,
        vec![
            ("tcp_req_q_full_drop_delta", json!(reqq_drop)),
            ("listen_drops_delta", json!(r.delta("ListenDrops"))),
            ("listen_overflows_delta", json!(overflows)),
            ("tcp_max_syn_backlog", json!(max_syn)),
            ("window_secs", json!(r.window_secs)),
        ],
    ));
}

fn syncookies(r: &Report, out: &mut Vec<Finding>) {
    let sent = r.delta("SyncookiesSent");
    let cookies = r.delta("TCPReqQFullDoCookies");
    if sent == 0 && cookies == 0 {
        return;
    }
    let m = format!(
        "Syncookies firing: SyncookiesSent +{sent}, TCPReqQFullDoCookies +{cookies} in {}. A SYN \
         queue overflowed (its limit is the listen() backlog, at most \
         tcp_max_syn_backlog={}) and the kernel answered with cookies instead of queueing. \
         Connections still complete, but this is a SYN flood or a backlog too small for the \
         connection rate.",
        secs(r.window_secs),
        r.sysctl("net.ipv4.tcp_max_syn_backlog")
            .map_or("?".into(), |v| v.to_string()),
    );
    out.push(finding(
        "syncookies_firing",
        Severity::Warning,
        None,
        m,
        vec![
            ("syncookies_sent_delta", json!(sent)),
            ("tcp_req_q_full_do_cookies_delta", json!(cookies)),
            ("window_secs", json!(r.window_secs)),
        ],
    ));
}

fn abort_on_overflow(r: &Report, out: &mut Vec<Finding>) {
    if r.sysctl("net.ipv4.tcp_abort_on_overflow") != Some(1) {
        return;
    }
    let overflows = r.delta("ListenOverflows");
    let (severity, m) = if overflows > 0 {
        (
            Severity::Critical,
            format!(
                "net.ipv4.tcp_abort_on_overflow=1 and ListenOverflows +{overflows} in {}: clients \
                 whose handshake lands on a full accept queue get a RST (\"connection reset by \
                 peer\") instead of retrying. Set it to 0 unless clients are known to retry \
                 elsewhere, and fix the queue.",
                secs(r.window_secs)
            ),
        )
    } else {
        (
            Severity::Info,
            "net.ipv4.tcp_abort_on_overflow=1: when an accept queue overflows, clients get a RST \
             instead of a retried handshake, so a short burst becomes errors. No overflow \
             happened in the window."
                .to_string(),
        )
    };
    out.push(finding(
        "abort_on_overflow",
        severity,
        None,
        m,
        vec![
            ("tcp_abort_on_overflow", json!(1)),
            ("listen_overflows_delta", json!(overflows)),
        ],
    ));
}

fn time_wait(r: &Report, out: &mut Vec<Finding>) {
    let total = r.connection_totals.get("TIME_WAIT").copied().unwrap_or(0);
    let overflow = r.delta("TCPTimeWaitOverflow");
    let range = r
        .sysctls
        .get("net.ipv4.ip_local_port_range")
        .and_then(|v| spillway_netdiag::sysctl::port_range_size(v));
    let buckets = r.sysctl("net.ipv4.tcp_max_tw_buckets");
    let top = r.time_wait_destinations.first();
    let dest_pressed = match (top, range) {
        (Some(d), Some(range)) => f64::from(d.connections) >= TIME_WAIT_SHARE * f64::from(range),
        _ => false,
    };
    let buckets_pressed =
        buckets.is_some_and(|b| b > 0 && total as f64 >= TIME_WAIT_SHARE * b as f64);
    if overflow == 0 && !dest_pressed && !buckets_pressed {
        return;
    }
    let mut m = format!("TIME_WAIT pressure: {total} sockets in TIME_WAIT in this namespace.");
    if let (true, Some(d), Some(range)) = (dest_pressed, top, range) {
        m += &format!(
            " {} of them are connections to {} from ephemeral ports; the range has {range} \
             (net.ipv4.ip_local_port_range={}), so new connections to it fail with \
             EADDRNOTAVAIL once it is used up. Reuse connections (keep-alive, pooling) or \
             widen the range.",
            d.connections,
            d.address,
            r.sysctls
                .get("net.ipv4.ip_local_port_range")
                .map_or("?", String::as_str)
        );
    }
    if let Some(b) = buckets {
        if buckets_pressed || overflow > 0 {
            m += &format!(
                " net.ipv4.tcp_max_tw_buckets={b}; TCPTimeWaitOverflow +{overflow} in {} \
                 (beyond the limit the kernel drops TIME_WAIT state early).",
                secs(r.window_secs)
            );
        }
    }
    out.push(finding(
        "time_wait_pressure",
        if overflow > 0 || dest_pressed {
            Severity::Critical
        } else {
            Severity::Warning
        },
        None,
        m,
        vec![
            ("time_wait_total", json!(total)),
            ("ephemeral_ports", json!(range)),
            ("tcp_max_tw_buckets", json!(buckets)),
            ("top_destination", json!(top.map(|d| &d.address))),
            (
                "top_destination_time_wait",
                json!(top.map(|d| d.connections)),
            ),
            ("tcp_time_wait_overflow_delta", json!(overflow)),
        ],
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{
        AddressCount, CounterView, ProcessView, QueueView, VisibilityView, KEY_COUNTERS, SCHEMA,
    };

    /// A quiet host: default sysctls, zero deltas, no listeners.
    fn host() -> Report {
        let sysctls = [
            ("net.core.somaxconn", "4096"),
            ("net.ipv4.tcp_max_syn_backlog", "2048"),
            ("net.ipv4.tcp_syncookies", "1"),
            ("net.ipv4.tcp_abort_on_overflow", "0"),
            ("net.ipv4.tcp_syn_retries", "6"),
            ("net.ipv4.tcp_syn_linear_timeouts", "4"),
            ("net.ipv4.tcp_max_tw_buckets", "262144"),
            ("net.ipv4.ip_local_port_range", "32768 60999"),
        ];
        Report {
            schema: SCHEMA.into(),
            taken_at_unix_ms: 0,
            window_secs: 5.0,
            visibility: VisibilityView {
                is_root: true,
                unreadable_processes: 0,
                note: None,
            },
            sysctls: sysctls
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            counters: KEY_COUNTERS
                .iter()
                .map(|k| {
                    (
                        k.to_string(),
                        CounterView {
                            value: 1000,
                            delta: 0,
                            per_sec: 0.0,
                        },
                    )
                })
                .collect(),
            other_counter_deltas: BTreeMap::new(),
            connection_totals: BTreeMap::new(),
            time_wait_destinations: Vec::new(),
            listeners: Vec::new(),
            findings: Vec::new(),
        }
    }

    fn listener(depth: u32, limit: u32) -> ListenerView {
        ListenerView {
            address: "127.0.0.1:9876".into(),
            port: 9876,
            family: "ipv4".into(),
            inode: 1,
            uid: 0,
            processes: vec![ProcessView {
                pid: 4242,
                command: "python3".into(),
                cmdline: "python3 -m wsgiref".into(),
                threads: 1,
            }],
            accept_queue: QueueView {
                depth,
                limit,
                peak_depth: depth,
                full: depth > 0 && depth >= limit,
            },
            syn_queue: 0,
            connections: BTreeMap::new(),
            top_remotes: vec![AddressCount {
                address: "10.0.0.9".into(),
                connections: 40,
            }],
            close_wait_not_accepted: 0,
            spillway: None,
        }
    }

    fn set_delta(r: &mut Report, name: &str, delta: u64) {
        let c = r.counters.get_mut(name).expect("key counter");
        c.delta = delta;
        c.per_sec = delta as f64 / r.window_secs;
    }

    fn ids(r: &Report) -> Vec<(String, Severity)> {
        evaluate(r)
            .into_iter()
            .map(|f| (f.id, f.severity))
            .collect()
    }

    #[test]
    fn quiet_host_with_healthy_listener_has_no_findings() {
        let mut r = host();
        r.listeners.push(listener(0, 4096));
        r.listeners.push(listener(3, 128));
        assert!(evaluate(&r).is_empty());
    }

    #[test]
    fn full_tiny_queue_with_overflows_is_critical_and_says_why() {
        let mut r = host();
        r.listeners.push(listener(6, 5));
        set_delta(&mut r, "ListenOverflows", 412);
        let f = evaluate(&r);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].id, "accept_queue_full");
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(f[0].listener.as_deref(), Some("127.0.0.1:9876"));
        let m = &f[0].message;
        assert!(
            m.starts_with(
                "127.0.0.1:9876 (python3, pid 4242, 1 thread): accept queue full (6/5), \
                 ListenOverflows +412 in 5 s. Its backlog is 5 — the application passed a tiny \
                 listen() backlog (the effective value is min(backlog, somaxconn=4096))."
            ),
            "{m}"
        );
        assert!(
            m.contains("(1, 2, 3, 4, 5, 7 s on this kernel, giving up after 11 s)"),
            "{m}"
        );
        assert_eq!(f[0].evidence["listen_overflows_delta"], json!(412));
        assert_eq!(f[0].evidence["queue_limit"], json!(5));
    }

    #[test]
    fn full_queue_without_overflow_is_a_warning() {
        let mut r = host();
        r.listeners.push(listener(5, 5));
        assert_eq!(
            ids(&r),
            vec![("accept_queue_full".into(), Severity::Warning)]
        );
    }

    #[test]
    fn backlog_capped_by_small_somaxconn() {
        let mut r = host();
        r.sysctls.insert("net.core.somaxconn".into(), "128".into());
        r.listeners.push(listener(10, 128));
        assert_eq!(
            ids(&r),
            vec![("backlog_capped_by_somaxconn".into(), Severity::Info)]
        );
        r.listeners[0] = listener(100, 128);
        let f = evaluate(&r);
        assert_eq!(f[0].id, "backlog_capped_by_somaxconn");
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(f[0].message.contains("exactly net.core.somaxconn=128"));
        // A big somaxconn with an idle queue is fine.
        let mut r = host();
        r.listeners.push(listener(0, 4096));
        assert!(evaluate(&r).is_empty());
    }

    #[test]
    fn syn_queue_drops_without_overflow() {
        let mut r = host();
        set_delta(&mut r, "TCPReqQFullDrop", 30);
        set_delta(&mut r, "ListenDrops", 30);
        let mut l = listener(0, 4096);
        l.syn_queue = 2048;
        r.listeners.push(l);
        let f = evaluate(&r);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id, "syn_queue_drops");
        assert!(f[0].message.contains("TCPReqQFullDrop +30"));
        assert!(f[0].message.contains("127.0.0.1:9876 with 2048 half-open"));
        // With overflows, the drops are the accept queue's, not the SYN queue's.
        set_delta(&mut r, "ListenOverflows", 30);
        assert!(!ids(&r).iter().any(|(id, _)| id == "syn_queue_drops"));
    }

    #[test]
    fn syncookies_firing() {
        let mut r = host();
        set_delta(&mut r, "SyncookiesSent", 7);
        let f = evaluate(&r);
        assert_eq!(f[0].id, "syncookies_firing");
        assert!(f[0].message.contains("SyncookiesSent +7"));
        assert!(f[0].message.contains("tcp_max_syn_backlog=2048"));
    }

    #[test]
    fn abort_on_overflow_resets() {
        let mut r = host();
        r.sysctls
            .insert("net.ipv4.tcp_abort_on_overflow".into(), "1".into());
        assert_eq!(ids(&r), vec![("abort_on_overflow".into(), Severity::Info)]);
        set_delta(&mut r, "ListenOverflows", 9);
        r.listeners.push(listener(6, 5));
        let f = evaluate(&r);
        let abort = f.iter().find(|f| f.id == "abort_on_overflow").unwrap();
        assert_eq!(abort.severity, Severity::Critical);
        assert!(abort.message.contains("ListenOverflows +9 in 5 s"));
        let full = f.iter().find(|f| f.id == "accept_queue_full").unwrap();
        assert!(full.message.contains("connection reset"));
        assert!(!full.message.contains("SYN retransmits"));
    }

    #[test]
    fn many_close_wait() {
        let mut r = host();
        let mut l = listener(0, 4096);
        l.connections.insert("CLOSE_WAIT".into(), 37);
        l.connections.insert("ESTABLISHED".into(), 3);
        r.listeners.push(l);
        let f = evaluate(&r);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id, "close_wait");
        assert!(f[0]
            .message
            .contains("37 connections in CLOSE_WAIT (and 3 ESTABLISHED)"));
        assert!(f[0].message.contains("10.0.0.9 (40)"));
        // Clients that gave up while queued are not the application's leak.
        r.listeners[0].close_wait_not_accepted = 30;
        assert!(evaluate(&r).is_empty());
    }

    #[test]
    fn time_wait_pressure_on_one_destination() {
        let mut r = host();
        r.connection_totals.insert("TIME_WAIT".into(), 20000);
        r.time_wait_destinations.push(AddressCount {
            address: "10.0.0.50:5432".into(),
            connections: 19000,
        });
        let f = evaluate(&r);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id, "time_wait_pressure");
        assert_eq!(f[0].severity, Severity::Critical);
        assert!(f[0]
            .message
            .contains("19000 of them are connections to 10.0.0.50:5432"));
        assert!(f[0].message.contains("the range has 28232"));
        // Few TIME_WAITs: nothing.
        let mut r = host();
        r.connection_totals.insert("TIME_WAIT".into(), 200);
        assert!(evaluate(&r).is_empty());
    }

    #[test]
    fn overflows_with_no_full_listener_shown() {
        let mut r = host();
        r.listeners.push(listener(0, 4096));
        set_delta(&mut r, "ListenOverflows", 3);
        set_delta(&mut r, "ListenDrops", 3);
        assert_eq!(
            ids(&r),
            vec![("listen_overflows_elsewhere".into(), Severity::Warning)]
        );
    }

    #[test]
    fn asked_port_without_listener() {
        let mut r = host();
        r.listeners.push(listener(0, 128));
        no_listener(&mut r, &[9876, 8080]);
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.findings[0].id, "no_listener");
        assert!(r.findings[0].message.contains("port 8080"));
    }

    #[test]
    fn retransmit_schedule_matches_kernel_docs() {
        // Documentation/networking/ip-sysctl.rst: RTOs 1, 1, 1, 1, 1, 2, 4 with linear=4.
        assert_eq!(syn_retransmit_schedule(6, 4), (vec![1, 2, 3, 4, 5, 7], 11));
        // Before Linux 6.7: pure exponential backoff, 1 3 7 15 31 63, gives up at 127.
        assert_eq!(
            syn_retransmit_schedule(6, 0),
            (vec![1, 3, 7, 15, 31, 63], 127)
        );
    }

    #[test]
    fn findings_are_sorted_most_severe_first() {
        let mut r = host();
        r.sysctls
            .insert("net.ipv4.tcp_abort_on_overflow".into(), "1".into());
        r.listeners.push(listener(6, 5));
        set_delta(&mut r, "ListenOverflows", 1);
        set_delta(&mut r, "SyncookiesSent", 1);
        let sev: Vec<Severity> = evaluate(&r).iter().map(|f| f.severity).collect();
        let mut sorted = sev.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(sev, sorted);
    }
}
