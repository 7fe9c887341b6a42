//! `spillway doctor` end to end through the real binary, against Python listeners on
//! loopback: a listen(5) server that never accepts, overfilled while doctor samples; a
//! healthy one; and `--record` then `plot`.
//!
//! The `--watch` screen is tested with ratatui's TestBackend in spillway-doctor.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

const SPILLWAY: &str = env!("CARGO_BIN_EXE_spillway");

/// Binds 127.0.0.1:0, listen(BACKLOG), prints "port pid", then either never accepts or
/// accepts and holds every connection; exits when stdin closes.
const SERVER: &str = r#"
import os, socket, sys, threading
backlog, accept = int(sys.argv[1]), sys.argv[2] == "accept"
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(backlog)
held = []
def loop():
    while True:
        c, _ = s.accept()
        held.append(c)
if accept:
    threading.Thread(target=loop, daemon=True).start()
print(s.getsockname()[1], os.getpid(), flush=True)
sys.stdin.read()
"#;

/// A Python listener on loopback; killed on drop.
struct PyServer {
    child: Child,
    port: u16,
    pid: u32,
}

impl PyServer {
    fn start(backlog: u32, accept: bool) -> PyServer {
        let mut child = Command::new("python3")
            .args(["-c", SERVER, &backlog.to_string()])
            .arg(if accept { "accept" } else { "stall" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout piped"))
            .read_line(&mut line)
            .expect("server prints its port");
        let mut it = line
            .split_whitespace()
            .map(|s| s.parse::<u32>().expect("number"));
        let port = it.next().expect("port") as u16;
        let pid = it.next().expect("pid");
        PyServer { child, port, pid }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens up to `n` connections that complete into the accept queue.
fn fill(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect()
}

/// One SYN every 20 ms (each connect gives up after 10 ms) until `stop` or `max`
/// attempts. Against a full accept queue each SYN is one kernel ListenOverflow.
fn hammer(addr: SocketAddr, stop: &AtomicBool, max: u32) -> u32 {
    let mut n = 0;
    while n < max && !stop.load(Ordering::Relaxed) {
        let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(10));
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    n
}

fn doctor(args: &[&str]) -> Command {
    let mut c = Command::new(SPILLWAY);
    c.arg("doctor").args(args);
    c
}

/// Runs doctor while `addr` keeps receiving SYNs, so the per-namespace ListenOverflows
/// counter rises inside doctor's own sampling window.
fn doctor_while_hammering(addr: SocketAddr, args: &[&str]) -> Output {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let h = s.spawn(|| hammer(addr, &stop, 500));
        let out = doctor(args).output().expect("spillway runs");
        stop.store(true, Ordering::Relaxed);
        h.join().expect("hammer thread");
        out
    })
}

#[test]
fn json_names_the_stalled_port_its_pid_backlog_and_overflows() {
    let srv = PyServer::start(5, false);
    let _queued = fill(srv.addr(), 6);
    let port = srv.port.to_string();
    let out = doctor_while_hammering(srv.addr(), &["--json", "--port", &port, "--interval", "2s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "findings exit 2; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    assert_eq!(r["schema"], "spillway-doctor/1");

    let listeners = r["listeners"].as_array().expect("listeners");
    assert_eq!(listeners.len(), 1, "{stdout}");
    let l = &listeners[0];
    assert_eq!(l["port"], srv.port);
    assert_eq!(l["address"], format!("127.0.0.1:{port}"));
    assert!(
        l["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .any(|p| p["pid"] == srv.pid),
        "{l}"
    );
    assert_eq!(l["accept_queue"]["limit"], 5);
    assert_eq!(l["accept_queue"]["full"], true);
    assert!(l["accept_queue"]["depth"].as_u64() >= Some(5), "{l}");
    assert!(
        r["counters"]["ListenOverflows"]["delta"].as_u64() > Some(0),
        "{}",
        r["counters"]
    );

    let finding = r["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["id"] == "accept_queue_full")
        .unwrap_or_else(|| panic!("no accept_queue_full in {}", r["findings"]));
    assert_eq!(finding["severity"], "critical");
    assert_eq!(finding["listener"], format!("127.0.0.1:{port}"));
    assert_eq!(finding["evidence"]["queue_limit"], 5);
    assert!(finding["evidence"]["listen_overflows_delta"].as_u64() > Some(0));
    let msg = finding["message"].as_str().expect("message");
    assert!(msg.contains(&format!("pid {}", srv.pid)), "{msg}");
    assert!(msg.contains("Its backlog is 5"), "{msg}");
}

#[test]
fn text_report_explains_the_stall() {
    let srv = PyServer::start(5, false);
    let _queued = fill(srv.addr(), 6);
    let port = srv.port.to_string();
    let out = doctor_while_hammering(srv.addr(), &["--port", &port, "--interval", "1s"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("CRITICAL [accept_queue_full]"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{port} (python3, pid {}", srv.pid)),
        "{text}"
    );
    assert!(text.contains("accept queue full ("), "{text}");
}

#[test]
fn healthy_listener_has_no_finding() {
    let srv = PyServer::start(128, true);
    let _clients = fill(srv.addr(), 3);
    let port = srv.port.to_string();
    let out = doctor(&["--json", "--port", &port, "--interval", "300ms"])
        .output()
        .expect("spillway runs");
    let r: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let l = &r["listeners"][0];
    assert_eq!(l["port"], srv.port);
    assert_eq!(l["accept_queue"]["limit"], 128);
    assert_eq!(l["accept_queue"]["full"], false);
    assert!(l["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .any(|p| p["pid"] == srv.pid));
    // Other tests may overfill their own ports in this namespace at the same time, which
    // can raise host-wide findings; none may be about this listener.
    let addr = format!("127.0.0.1:{port}");
    let mine: Vec<&Value> = r["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["listener"] == addr.as_str())
        .collect();
    assert!(mine.is_empty(), "{mine:#?}");
}

#[test]
fn record_then_plot_draws_queue_overflow_and_connection_series() {
    let srv = PyServer::start(5, false);
    let _queued = fill(srv.addr(), 6);
    let dir = std::env::temp_dir().join(format!("spillway-doctor-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let jsonl = dir.join("incident.jsonl");
    let svg = dir.join("incident.svg");
    let _ = std::fs::remove_file(&jsonl);
    let port = srv.port.to_string();
    let rec = doctor_while_hammering(
        srv.addr(),
        &[
            "--record",
            jsonl.to_str().expect("utf-8 path"),
            "--interval",
            "200ms",
            "--samples",
            "5",
            "--port",
            &port,
        ],
    );
    assert!(
        rec.status.success(),
        "{}",
        String::from_utf8_lossy(&rec.stderr)
    );
    let recorded = std::fs::read_to_string(&jsonl).expect("recording written");
    assert_eq!(recorded.lines().count(), 5);

    let plot = doctor(&[
        "plot",
        jsonl.to_str().expect("utf-8 path"),
        "-o",
        svg.to_str().expect("utf-8 path"),
    ])
    .output()
    .expect("spillway runs");
    assert!(
        plot.status.success(),
        "{}",
        String::from_utf8_lossy(&plot.stderr)
    );
    let doc = std::fs::read_to_string(&svg).expect("svg written");
    assert!(doc.starts_with("<svg"), "{doc}");
    for series in [
        format!("queue depth 127.0.0.1:{port}"),
        format!("queue limit 127.0.0.1:{port}"),
        "ListenOverflows/s".to_string(),
        format!("connections 127.0.0.1:{port}"),
    ] {
        let tag = format!("data-series=\"{series}\"");
        let line = doc
            .lines()
            .find(|l| l.contains(&tag))
            .unwrap_or_else(|| panic!("no {series} in {doc}"));
        let points = line
            .split("points=\"")
            .nth(1)
            .and_then(|p| p.split('"').next())
            .expect("points attribute");
        assert_eq!(points.split(' ').count(), 5, "{line}");
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn help_documents_every_flag_and_its_default() {
    let out = doctor(&["--help"]).output().expect("spillway runs");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for flag in [
        "--port",
        "--json",
        "--interval",
        "--watch",
        "--record",
        "--samples",
        "plot",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    // Normalised because clap wraps help to the terminal width.
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("[default: 1s]"), "{help}");
}
