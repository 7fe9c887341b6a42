//! `spillway bench` names the layer the p99 went to, through real processes: a wsgiref
//! server (listen backlog 5, one thread) under a connection storm → the kernel's accept
//! queue; Spillway with one thread and a 200 ms application under 50 clients → the server's
//! queue; the same with threads to spare → the application. Each run is bounded in count
//! and time; only the verdict's layer is asserted, never a latency.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::support::{Json, Spillway};

const SPILLWAY: &str = env!("CARGO_BIN_EXE_spillway");

/// `wsgiref.simple_server` as `python3 -m wsgiref.simple_server` runs: one thread,
/// socketserver's `listen(5)`; each request takes 20 ms. Prints its port when it listens.
const WSGIREF: &str = r#"
import sys, time
from wsgiref.simple_server import make_server, WSGIRequestHandler
class Quiet(WSGIRequestHandler):
    def log_message(self, *a): pass
def app(environ, start_response):
    time.sleep(0.02)
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
httpd = make_server("127.0.0.1", 0, app, handler_class=Quiet)
assert httpd.request_queue_size == 5
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
"#;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `spillway bench URL ARGS… --json F`; returns the report and the summary printed.
pub(crate) fn bench(url: &str, args: &[&str]) -> (Json, String) {
    let dir = crate::support::test_dir();
    let json = dir.join("bench.json");
    let out = Command::new(SPILLWAY)
        .arg("bench")
        .arg(url)
        .args(args)
        .arg("--no-progress")
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .expect("run spillway bench");
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no report ({e}): {summary}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (Json::parse(&text).expect("report is JSON"), summary)
}

fn layer(report: &Json, summary: &str) -> String {
    let v = report.get("verdict");
    assert!(summary.contains("verdict"), "{summary}");
    eprintln!("{summary}");
    v.get("layer").s().to_string()
}

#[test]
fn a_storm_on_a_listen_backlog_of_5_is_the_kernel_accept_queue() {
    let mut child = Command::new("python3")
        .args(["-c", WSGIREF])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _server = Killed(child);
    let url = format!("http://127.0.0.1:{}/", line.trim());
    let (report, summary) = bench(&url, &["--storm", "60", "--timeout", "8s"]);
    assert_eq!(layer(&report, &summary), "accept_queue", "{summary}");
    let v = report.get("verdict");
    assert_eq!(v.get("confidence").s(), "high", "{summary}");
    assert!(
        v.get("tail").get("with_syn_retransmits").u64() >= 1,
        "{summary}"
    );
}

fn slow_spillway(threads: &str) -> crate::support::Server {
    Spillway::new("examples/slow.py:app")
        .env("SLOW_MS", "200")
        .args(["--threads", threads])
        .start()
}

#[test]
fn one_busy_thread_under_50_clients_is_the_server_queue() {
    let srv = slow_spillway("1");
    let url = format!("http://127.0.0.1:{}/", srv.port());
    // 60 requests of 200 ms on one thread: about 12 s; 50 wait from the start.
    let (report, summary) = bench(
        &url,
        &[
            "-c",
            "50",
            "--requests",
            "60",
            "-d",
            "20s",
            "--timeout",
            "25s",
        ],
    );
    assert_eq!(report.get("responses").get("total").u64(), 60, "{summary}");
    assert_eq!(layer(&report, &summary), "server_queue", "{summary}");
    assert_eq!(report.get("verdict").get("confidence").s(), "high");
}

#[test]
fn threads_to_spare_under_50_clients_is_the_application() {
    let srv = slow_spillway("64");
    // A new worker starts on one thread until its first request finishes (warm start):
    // that first wait is the server's queue, not what this test is about.
    assert_eq!(srv.get("/?ms=1").status, 200);
    let url = format!("http://127.0.0.1:{}/", srv.port());
    let (report, summary) = bench(
        &url,
        &[
            "-c",
            "50",
            "--requests",
            "200",
            "-d",
            "20s",
            "--timeout",
            "25s",
        ],
    );
    assert_eq!(report.get("responses").get("total").u64(), 200, "{summary}");
    assert_eq!(layer(&report, &summary), "application", "{summary}");
    assert_eq!(report.get("verdict").get("confidence").s(), "high");
}
