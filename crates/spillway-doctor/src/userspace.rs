//! The user-space layer of a Spillway front: finding its admin endpoint (from the process's
//! command line and environment, or `--metrics`), reading its queue, threads and refusals
//! from `/metrics`, and the finding that names which of the three layers — the kernel's
//! accept queue, Spillway's queue, the application — is the limit, with the numbers.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;

use crate::report::{
    Finding, ListenerView, ProcessView, Report, Severity, SpillwayView, WorkerThreads,
};
use crate::scrape::{self, Metrics};

/// Whether a process is a Spillway front: the `spillway` executable (or `python -m
/// spillway`, what pip installs).
fn is_spillway(p: &ProcessView) -> bool {
    let argv0 = p.cmdline.split_whitespace().next().unwrap_or("");
    p.command == "spillway"
        || argv0.rsplit('/').next() == Some("spillway")
        || p.cmdline.contains("-m spillway")
}

/// `--admin ADDR` / `--admin=ADDR` of a command line.
fn admin_flag(cmdline: &str) -> Option<String> {
    let mut args = cmdline.split_whitespace();
    while let Some(a) = args.next() {
        if a == "--admin" {
            return args.next().map(str::to_string);
        }
        if let Some(v) = a.strip_prefix("--admin=") {
            return Some(v.to_string());
        }
    }
    None
}

/// `SPILLWAY_ADMIN` of a process's environment, if readable.
fn admin_env(pid: u32) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0).find_map(|kv| {
        let kv = std::str::from_utf8(kv).ok()?;
        kv.strip_prefix("SPILLWAY_ADMIN=").map(str::to_string)
    })
}

/// The metrics URL of an admin bind address: loopback in place of a wildcard address.
fn metrics_url(admin: &str) -> String {
    if admin.starts_with("unix:") {
        return admin.to_string();
    }
    let addr = admin
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    format!("http://{addr}/metrics")
}

/// Where a listener's front serves its metrics: `Some((url, how it was found))`, `Some((None,
/// why not))` for a Spillway front without one, `None` for another server.
fn endpoint(l: &ListenerView, asked: Option<&str>) -> Option<(Option<String>, String)> {
    let front = l.processes.iter().find(|p| is_spillway(p));
    if let Some(url) = asked {
        return Some((Some(url.to_string()), "--metrics".into()));
    }
    let p = front?;
    if let Some(a) = admin_flag(&p.cmdline) {
        return Some((Some(metrics_url(&a)), "--admin in the command line".into()));
    }
    if let Some(a) = admin_env(p.pid) {
        return Some((
            Some(metrics_url(&a)),
            "SPILLWAY_ADMIN in the environment".into(),
        ));
    }
    Some((
        None,
        format!(
            "no --admin in pid {}'s command line or SPILLWAY_ADMIN in its environment (a config file's admin key is not read): pass --metrics URL",
            p.pid
        ),
    ))
}

/// Reads the user-space layer of each listener that is a Spillway front, keeping each
/// scrape for the next window's increases. `asked` is `--metrics`: it applies to the
/// listeners of the `--port`s asked for, or to the Spillway fronts when none was.
pub(crate) fn read(
    listeners: &mut [ListenerView],
    asked: Option<&str>,
    ports_asked: bool,
    previous: &mut HashMap<String, Metrics>,
) {
    for l in listeners {
        let asked = asked.filter(|_| ports_asked || l.processes.iter().any(is_spillway));
        let Some((url, found_by)) = endpoint(l, asked) else {
            continue;
        };
        let mut view = SpillwayView {
            metrics_url: url.clone(),
            found_by,
            ..SpillwayView::default()
        };
        if let Some(url) = url {
            match scrape::fetch(&url) {
                Ok(now) => {
                    fill(&mut view, &now, previous.get(&url));
                    previous.insert(url, now);
                }
                Err(e) => view.error = Some(e),
            }
        }
        l.spillway = Some(view);
    }
}

/// Adds the user-space findings of the Spillway fronts [`read`] found.
pub(crate) fn add_findings(r: &mut Report) {
    let mut found = Vec::new();
    for l in &r.listeners {
        layer_finding(r, l, &mut found);
    }
    r.findings.extend(found);
    r.findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
}

/// Increases of a labelled counter since `before`, by the label (all, on a first scrape).
fn increases(
    now: &Metrics,
    before: Option<&Metrics>,
    name: &str,
    key: impl Fn(&scrape::Sample) -> String,
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for s in now.series(name) {
        let k = key(s);
        let was = before.map_or(0.0, |b| {
            b.series(name)
                .filter(|o| key(o) == k)
                .map(|o| o.value)
                .sum()
        });
        let d = (s.value - was).max(0.0) as u64;
        *out.entry(k).or_default() += d;
    }
    out.retain(|_, n| *n > 0);
    out
}

fn buckets(m: &Metrics, name: &str) -> Vec<(f64, f64)> {
    m.series(name)
        .filter_map(|s| {
            let le = match s.label("le")? {
                "+Inf" => f64::INFINITY,
                v => v.parse().ok()?,
            };
            Some((le, s.value))
        })
        .collect()
}

fn fill(v: &mut SpillwayView, now: &Metrics, before: Option<&Metrics>) {
    v.queue_depth = now.value("spillway_queue_requests").unwrap_or(0.0) as u64;
    v.queue_oldest_wait_secs = now
        .value("spillway_queue_oldest_age_seconds")
        .unwrap_or(0.0);
    v.refusals = increases(now, before, "spillway_queue_refusals_total", |s| {
        s.label("reason").unwrap_or("?").to_string()
    });
    let mut errors = increases(now, before, "spillway_http_responses_total", |s| {
        format!(
            "{} {}",
            s.label("code").unwrap_or("?"),
            s.label("origin").unwrap_or("?")
        )
    });
    errors.retain(|k, _| k.starts_with('5'));
    v.errors_by_origin = errors;
    let mut workers: BTreeMap<(u32, u64), WorkerThreads> = BTreeMap::new();
    for (metric, busy) in [
        ("spillway_worker_threads", false),
        ("spillway_worker_busy_threads", true),
    ] {
        for s in now.series(metric) {
            let pid = s.label("pid").and_then(|p| p.parse().ok()).unwrap_or(0);
            let generation = s
                .label("generation")
                .and_then(|g| g.parse().ok())
                .unwrap_or(0);
            let w = workers.entry((pid, generation)).or_insert(WorkerThreads {
                pid,
                generation,
                busy: 0,
                threads: 0,
            });
            if busy {
                w.busy = s.value as u32;
            } else {
                w.threads = s.value as u32;
            }
        }
    }
    v.workers = workers.into_values().collect();
    let name = "spillway_application_duration_seconds_bucket";
    let all = buckets(now, name);
    let window: Vec<(f64, f64)> = match before {
        Some(b) => {
            let old = buckets(b, name);
            all.iter()
                .map(|&(le, n)| {
                    let was = old.iter().find(|(l, _)| *l == le).map_or(0.0, |o| o.1);
                    (le, n - was)
                })
                .collect()
        }
        None => Vec::new(),
    };
    v.app_p99_secs = scrape::quantile(0.99, &window);
    v.app_p99_in_window = v.app_p99_secs.is_some();
    if v.app_p99_secs.is_none() {
        v.app_p99_secs = scrape::quantile(0.99, &all);
    }
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.1} s")
    }
}

/// The finding `spillway_layer` (or `spillway_no_metrics`) for a Spillway front.
fn layer_finding(r: &Report, l: &ListenerView, out: &mut Vec<Finding>) {
    let Some(v) = &l.spillway else { return };
    if !v.is_read() {
        let why = v.error.as_deref().unwrap_or(&v.found_by);
        out.push(Finding {
            id: "spillway_no_metrics".into(),
            severity: Severity::Info,
            listener: Some(l.address.clone()),
            message: format!(
                "{} is a Spillway front, but its own metrics could not be read ({why}): only the kernel's layer is shown. Serve the admin endpoint (--admin 127.0.0.1:PORT) or pass --metrics URL.",
                l.label()
            ),
            evidence: BTreeMap::from([(
                "metrics_url".to_string(),
                json!(v.metrics_url),
            )]),
        });
        return;
    }
    let q = l.accept_queue;
    let overflows = r.delta("ListenOverflows");
    let (busy, threads) = v.threads();
    let n_workers = v.workers.len();
    let refused: u64 = v.refusals.values().sum();
    let kernel = if q.full {
        format!(
            "the kernel accept queue is full ({}/{}, ListenOverflows +{overflows})",
            q.depth, q.limit
        )
    } else if q.depth > 0 {
        format!("the kernel accept queue holds {} of {}", q.depth, q.limit)
    } else {
        "the kernel queue is empty".to_string()
    };
    let queue = if v.queue_depth > 0 {
        format!(
            "{} request{} wait in Spillway's queue (the oldest for {})",
            v.queue_depth,
            if v.queue_depth == 1 { "" } else { "s" },
            secs(v.queue_oldest_wait_secs)
        )
    } else {
        "Spillway's queue is empty".to_string()
    };
    let workers = match n_workers {
        1 => "the worker".to_string(),
        2 => "both workers".to_string(),
        n => format!("all {n} workers"),
    };
    let thread_text = if threads > 0 && busy >= threads {
        format!("all {threads} threads of {workers} are busy")
    } else {
        format!("{busy} of {threads} threads of {workers} are busy")
    };
    let p99 = v.app_p99_secs.map_or(String::new(), |p| {
        format!(
            "; application p99 {}{}",
            secs(p),
            if v.app_p99_in_window {
                ""
            } else {
                " since start"
            }
        )
    });
    let refusals = if refused > 0 {
        let by: Vec<String> = v.refusals.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!(
            "; {refused} refused with 503 in {:.0} s ({})",
            r.window_secs,
            by.join(", ")
        )
    } else {
        String::new()
    };
    let all_busy = threads > 0 && busy >= threads;
    let (layer, verdict, severity) = if q.full || overflows > 0 && q.depth > 0 {
        ("kernel", "the kernel's accept queue is the limit: the front is not accepting (at --max-connections, or starved of CPU)", Severity::Critical)
    } else if v.queue_depth > 0 && all_busy {
        (
            "application",
            "the application is the limit",
            if refused > 0 {
                Severity::Critical
            } else {
                Severity::Warning
            },
        )
    } else if v.queue_depth > 0 {
        ("spillway_queue", "requests wait in Spillway's queue though threads are free: workers are starting, being replaced, or warming up", Severity::Warning)
    } else if all_busy {
        (
            "application",
            "nothing waits yet, but the application has no thread to spare",
            Severity::Info,
        )
    } else {
        ("none", "no layer is saturated", Severity::Info)
    };
    out.push(Finding {
        id: "spillway_layer".into(),
        severity,
        listener: Some(l.address.clone()),
        message: format!(
            "{}: {kernel}; {queue}; {thread_text}{p99}{refusals}: {verdict}.",
            l.label()
        ),
        evidence: BTreeMap::from([
            ("layer".to_string(), json!(layer)),
            ("kernel_queue_depth".to_string(), json!(q.depth)),
            ("queue_depth".to_string(), json!(v.queue_depth)),
            (
                "queue_oldest_wait_secs".to_string(),
                json!(v.queue_oldest_wait_secs),
            ),
            ("threads_busy".to_string(), json!(busy)),
            ("threads".to_string(), json!(threads)),
            ("workers".to_string(), json!(n_workers)),
            ("refused".to_string(), json!(refused)),
            ("app_p99_secs".to_string(), json!(v.app_p99_secs)),
        ]),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_endpoint_comes_from_the_command_line() {
        let cmd = "/usr/bin/spillway -b 0.0.0.0:8000 --admin 0.0.0.0:9100 app:app";
        assert_eq!(admin_flag(cmd).as_deref(), Some("0.0.0.0:9100"));
        assert_eq!(
            admin_flag("spillway --admin=unix:/run/a.sock app").as_deref(),
            Some("unix:/run/a.sock")
        );
        assert_eq!(admin_flag("spillway app:app"), None);
        assert_eq!(metrics_url("0.0.0.0:9100"), "http://127.0.0.1:9100/metrics");
        assert_eq!(metrics_url("[::]:9100"), "http://[::1]:9100/metrics");
        assert_eq!(metrics_url("unix:/run/a.sock"), "unix:/run/a.sock");
        let p = |command: &str, cmdline: &str| ProcessView {
            pid: 1,
            command: command.into(),
            cmdline: cmdline.into(),
            threads: 1,
        };
        assert!(is_spillway(&p("spillway", "spillway app")));
        assert!(is_spillway(&p(
            "python3",
            "/venv/bin/python3 -m spillway app"
        )));
        assert!(!is_spillway(&p("gunicorn", "gunicorn app")));
    }

    /// A report of one Spillway listener whose metrics read `text` (then `later`).
    fn judged(text: &str, later: &str) -> (SpillwayView, Finding) {
        let mut r: Report = serde_json::from_value(json!({
            "schema": "spillway-doctor/1", "taken_at_unix_ms": 0, "window_secs": 1.0,
            "visibility": {"is_root": true, "unreadable_processes": 0, "note": null},
            "sysctls": {}, "counters": {}, "other_counter_deltas": {},
            "connection_totals": {}, "time_wait_destinations": [], "findings": [],
            "listeners": [{
                "address": "127.0.0.1:8000", "port": 8000, "family": "ipv4", "inode": 1,
                "uid": 0, "processes": [], "syn_queue": 0, "connections": {},
                "top_remotes": [],
                "accept_queue": {"depth": 0, "limit": 4096, "peak_depth": 0, "full": false}
            }]
        }))
        .unwrap();
        let mut view = SpillwayView {
            metrics_url: Some("http://x/metrics".into()),
            ..SpillwayView::default()
        };
        let before = scrape::parse(text);
        fill(&mut view, &scrape::parse(later), Some(&before));
        r.listeners[0].spillway = Some(view.clone());
        add_findings(&mut r);
        (view, r.findings.remove(0))
    }

    const BUSY: &str = "spillway_queue_requests 240\nspillway_queue_oldest_age_seconds 1.5\n\
        spillway_worker_threads{pid=\"1\",generation=\"1\"} 64\n\
        spillway_worker_busy_threads{pid=\"1\",generation=\"1\"} 64\n\
        spillway_worker_threads{pid=\"2\",generation=\"1\"} 64\n\
        spillway_worker_busy_threads{pid=\"2\",generation=\"1\"} 64\n";

    #[test]
    fn a_queue_behind_busy_threads_is_the_application() {
        let before = format!(
            "{BUSY}spillway_queue_refusals_total{{reason=\"queue_full\"}} 10\n\
            spillway_application_duration_seconds_bucket{{le=\"1\"}} 10\n\
            spillway_application_duration_seconds_bucket{{le=\"+Inf\"}} 10\n"
        );
        let after = format!(
            "{BUSY}spillway_queue_refusals_total{{reason=\"queue_full\"}} 22\n\
            spillway_http_responses_total{{code=\"503\",origin=\"server\"}} 22\n\
            spillway_application_duration_seconds_bucket{{le=\"1\"}} 10\n\
            spillway_application_duration_seconds_bucket{{le=\"+Inf\"}} 30\n"
        );
        let (v, f) = judged(&before, &after);
        assert_eq!(v.refusals.get("queue_full"), Some(&12));
        assert_eq!(v.threads(), (128, 128));
        assert!(v.app_p99_in_window);
        assert_eq!(f.id, "spillway_layer");
        assert_eq!(f.severity, Severity::Critical);
        assert!(
            f.message.contains(
                "the kernel queue is empty; 240 requests wait in Spillway's queue (the oldest for 1.5 s); all 128 threads of both workers are busy"
            ) && f.message.ends_with("the application is the limit."),
            "{}",
            f.message
        );
    }

    #[test]
    fn an_idle_front_is_no_layer() {
        let idle = "spillway_queue_requests 0\n\
            spillway_worker_threads{pid=\"1\",generation=\"1\"} 4\n\
            spillway_worker_busy_threads{pid=\"1\",generation=\"1\"} 1\n";
        let (_, f) = judged(idle, idle);
        assert_eq!(f.evidence["layer"], json!("none"));
        assert_eq!(f.severity, Severity::Info);
    }
}
