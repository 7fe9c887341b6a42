//! `--watch` rendered through ratatui's `TestBackend` and compared with a stored snapshot
//! (`tests/snapshots/watch.txt`; regenerate with `UPDATE_SNAPSHOTS=1 cargo test`).

use std::time::Duration;

use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::Terminal;
use serde_json::json;
use spillway_doctor::report::{Report, SCHEMA};
use spillway_doctor::rules;
use spillway_doctor::watch::{draw, WatchView};

/// A stalled listen(5) server next to a healthy one, as doctor would report them.
fn stalled_report() -> Report {
    let counter = |value: u64, delta: u64| json!({"value": value, "delta": delta, "per_sec": delta as f64 / 5.0});
    let mut r: Report = serde_json::from_value(json!({
        "schema": SCHEMA,
        "taken_at_unix_ms": 1_700_000_000_000u64,
        "window_secs": 5.0,
        "visibility": {"is_root": true, "unreadable_processes": 0, "note": null},
        "sysctls": {
            "net.core.somaxconn": "4096",
            "net.ipv4.tcp_abort_on_overflow": "0",
            "net.ipv4.tcp_max_syn_backlog": "2048",
            "net.ipv4.tcp_syn_retries": "6",
            "net.ipv4.tcp_syn_linear_timeouts": "4",
            "net.ipv4.tcp_syncookies": "1"
        },
        "counters": {
            "ListenOverflows": counter(1016, 412),
            "ListenDrops": counter(1016, 412),
            "TCPReqQFullDrop": counter(0, 0),
            "TCPReqQFullDoCookies": counter(0, 0),
            "SyncookiesSent": counter(0, 0),
            "TCPSynRetrans": counter(670, 300),
            "TCPTimeouts": counter(672, 300),
            "EmbryonicRsts": counter(0, 0)
        },
        "other_counter_deltas": {},
        "connection_totals": {"ESTABLISHED": 9, "LISTEN": 2},
        "time_wait_destinations": [],
        "listeners": [
            {
                "address": "127.0.0.1:8000", "port": 8000, "family": "ipv4", "inode": 11, "uid": 0,
                "processes": [{"pid": 4100, "command": "spillway", "cmdline": "spillway serve", "threads": 9}],
                "accept_queue": {"depth": 0, "limit": 4096, "peak_depth": 0, "full": false},
                "syn_queue": 0,
                "connections": {"ESTABLISHED": 3},
                "top_remotes": [{"address": "127.0.0.1", "connections": 3}]
            },
            {
                "address": "127.0.0.1:9876", "port": 9876, "family": "ipv4", "inode": 12, "uid": 0,
                "processes": [{"pid": 4242, "command": "python3", "cmdline": "python3 app.py", "threads": 1}],
                "accept_queue": {"depth": 6, "limit": 5, "peak_depth": 6, "full": true},
                "syn_queue": 0,
                "connections": {"ESTABLISHED": 6},
                "top_remotes": [{"address": "127.0.0.1", "connections": 6}]
            }
        ],
        "findings": []
    }))
    .expect("fixture is a valid report");
    r.findings = rules::evaluate(&r);
    r
}

#[test]
fn watch_screen_matches_snapshot() {
    let mut view = WatchView::new(Duration::from_secs(1), Some("incident.jsonl".into()));
    for rate in [0, 40, 82] {
        let mut r = stalled_report();
        if let Some(c) = r.counters.get_mut("ListenOverflows") {
            c.per_sec = f64::from(rate);
        }
        view.push(r);
    }
    let mut terminal = Terminal::new(TestBackend::new(110, 30)).expect("test terminal");
    terminal.draw(|f| draw(f, &view)).expect("draw");
    let screen = terminal.backend().to_string();

    // The parts an operator looks for, independent of layout details.
    assert!(screen.contains("127.0.0.1:9876"), "{screen}");
    assert!(screen.contains("python3 4242"), "{screen}");
    assert!(screen.contains("6/5 FULL"), "{screen}");
    assert!(screen.contains("ListenOverflows +412 (82.0/s)"), "{screen}");
    assert!(screen.contains("CRITICAL"), "{screen}");
    assert!(screen.contains("accept queue full (6/5)"), "{screen}");
    assert!(screen.contains("recording to incident.jsonl"), "{screen}");

    // The FULL queue cell is drawn in red.
    let buf = terminal.backend().buffer();
    let (x, y) = (0..buf.area.height)
        .find_map(|y| {
            let row: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect();
            row.find("6/5 FULL").map(|x| (x as u16, y))
        })
        .expect("queue cell on screen");
    assert_eq!(buf[(x, y)].fg, Color::Red);

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/watch.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &screen).expect("write snapshot");
    }
    let expected =
        std::fs::read_to_string(&path).expect("snapshot exists (UPDATE_SNAPSHOTS=1 to create)");
    assert_eq!(
        screen,
        expected,
        "screen differs from {}:\n{screen}",
        path.display()
    );
}

#[test]
fn watch_before_first_sample_says_it_is_sampling() {
    let view = WatchView::new(Duration::from_millis(1500), None);
    let mut terminal = Terminal::new(TestBackend::new(80, 12)).expect("test terminal");
    terminal.draw(|f| draw(f, &view)).expect("draw");
    let screen = terminal.backend().to_string();
    assert!(
        screen.contains("sampling… first numbers in 1.5 s"),
        "{screen}"
    );
}

#[test]
fn watch_shows_a_spillway_fronts_queue_and_threads() {
    use spillway_doctor::report::{SpillwayView, WorkerThreads};
    let mut r = stalled_report();
    r.listeners[0].spillway = Some(SpillwayView {
        metrics_url: Some("http://127.0.0.1:9000/metrics".into()),
        found_by: "--admin in the command line".into(),
        queue_depth: 240,
        queue_oldest_wait_secs: 1.5,
        workers: vec![
            WorkerThreads {
                pid: 4101,
                generation: 1,
                busy: 64,
                threads: 64,
            },
            WorkerThreads {
                pid: 4102,
                generation: 1,
                busy: 64,
                threads: 64,
            },
        ],
        app_p99_secs: Some(0.41),
        app_p99_in_window: true,
        ..SpillwayView::default()
    });
    let mut view = WatchView::new(Duration::from_secs(1), None);
    view.push(r);
    let mut terminal = Terminal::new(TestBackend::new(140, 34)).expect("test terminal");
    terminal.draw(|f| draw(f, &view)).expect("draw");
    let screen = terminal.backend().to_string();
    assert!(screen.contains("Spillway (user space"), "{screen}");
    assert!(
        screen.contains("127.0.0.1:8000  queue 240 (oldest 1.50 s)   threads busy 128/128"),
        "{screen}"
    );
    assert!(screen.contains("app p99 0.410 s"), "{screen}");
}
