//! The doctor library against real Python listeners on loopback: a listen(5) server that
//! never accepts, overfilled while doctor samples, and a healthy one.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use spillway_doctor::{collect_report, Severity};
use support::{fill, hammer, PyServer};

#[test]
fn overfilled_listen_5_server_is_diagnosed() {
    let srv = PyServer::start(5, false);
    let _queued = fill(srv.addr(), 6);
    let stop = AtomicBool::new(false);
    // ListenOverflows is per namespace and only its delta over doctor's window counts,
    // so SYNs keep arriving while doctor samples (bounded: at most 400 attempts).
    let report = std::thread::scope(|s| {
        let h = s.spawn(|| hammer(srv.addr(), &stop, 400));
        let report = collect_report(&[srv.port], Duration::from_secs(1), None);
        stop.store(true, Ordering::Relaxed);
        h.join().expect("hammer thread");
        report
    })
    .expect("doctor report");

    assert_eq!(report.listeners.len(), 1, "{report:#?}");
    let l = &report.listeners[0];
    assert_eq!(l.port, srv.port);
    assert!(l.processes.iter().any(|p| p.pid == srv.pid), "{l:#?}");
    assert_eq!(l.accept_queue.limit, 5);
    assert!(l.accept_queue.full, "{l:#?}");
    assert!(
        report.delta("ListenOverflows") > 0,
        "{:#?}",
        report.counters
    );
    let f = report
        .findings
        .iter()
        .find(|f| f.id == "accept_queue_full")
        .expect("accept_queue_full finding");
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.listener.as_deref(), Some(l.address.as_str()));
    assert!(
        f.message.contains(&format!("pid {}", srv.pid)),
        "{}",
        f.message
    );
    assert!(f.message.contains("Its backlog is 5"), "{}", f.message);
}

#[test]
fn healthy_listener_has_no_finding() {
    let srv = PyServer::start(128, true);
    let _clients = fill(srv.addr(), 3);
    let report = collect_report(&[srv.port], Duration::from_millis(300), None).expect("report");
    assert_eq!(report.listeners.len(), 1);
    let l = &report.listeners[0];
    assert!(l.processes.iter().any(|p| p.pid == srv.pid));
    assert_eq!(l.accept_queue.limit, 128);
    assert!(!l.accept_queue.full);
    // Host-wide findings may come from other tests overfilling their own ports in this
    // namespace; none may be about this listener.
    let mine: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.listener.as_deref() == Some(l.address.as_str()))
        .collect();
    assert!(mine.is_empty(), "{mine:#?}");
}

#[test]
fn record_then_plot_draws_every_series() {
    let srv = PyServer::start(5, false);
    let _queued = fill(srv.addr(), 6);
    let dir = std::env::temp_dir().join(format!("doctor-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let jsonl = dir.join("rec.jsonl");
    let svg = dir.join("rec.svg");
    let _ = std::fs::remove_file(&jsonl);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let h = s.spawn(|| hammer(srv.addr(), &stop, 400));
        spillway_doctor::record::run(
            &[srv.port],
            Duration::from_millis(200),
            &jsonl,
            Some(4),
            None,
        )
        .expect("record");
        stop.store(true, Ordering::Relaxed);
        h.join().expect("hammer thread");
    });
    let lines = std::fs::read_to_string(&jsonl).expect("recording");
    assert_eq!(lines.lines().count(), 4);

    let summary = spillway_doctor::plot::plot_file(&jsonl, &svg).expect("plot");
    assert_eq!(summary.samples, 4);
    let doc = std::fs::read_to_string(&svg).expect("svg written");
    assert!(doc.starts_with("<svg"));
    for series in [
        format!("queue depth 127.0.0.1:{}", srv.port),
        format!("queue limit 127.0.0.1:{}", srv.port),
        "ListenOverflows/s".to_string(),
        format!("connections 127.0.0.1:{}", srv.port),
    ] {
        let tag = format!("data-series=\"{series}\"");
        let line = doc
            .lines()
            .find(|l| l.contains(&tag))
            .unwrap_or_else(|| panic!("no {series} in {doc}"));
        let points = line
            .split("points=\"")
            .nth(1)
            .expect("points")
            .split('"')
            .next();
        assert_eq!(points.map(|p| p.split(' ').count()), Some(4), "{line}");
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
