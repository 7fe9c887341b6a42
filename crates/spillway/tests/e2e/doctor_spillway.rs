//! `spillway doctor` reading a Spillway front's own metrics, through real processes: the
//! front's admin endpoint found from its command line (or its environment, or given with
//! `--metrics`), and the finding that names the layer when every thread is busy and
//! requests wait in Spillway's queue; without an admin endpoint, doctor says so.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::support::lifecycle::{local, try_get};
use crate::support::{eventually, Server, Spillway};

const SPILLWAY: &str = env!("CARGO_BIN_EXE_spillway");

fn doctor(args: &[&str]) -> Output {
    Command::new(SPILLWAY)
        .arg("doctor")
        .args(args)
        .output()
        .expect("spillway doctor runs")
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn finding<'a>(r: &'a Value, id: &str) -> &'a Value {
    r["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no {id} finding: {r:#}"))
}

/// Two workers on two threads each (warmed up past their one-thread start), serving
/// `examples/slow.py`.
fn two_workers(admin: bool) -> Server {
    let mut s = Spillway::new("examples/slow.py:app")
        .workers(2)
        .args(["--threads", "2"]);
    if admin {
        s = s.with_admin();
    }
    let srv = s.start();
    let addr = srv.addr();
    // One slow request per worker ends both warm starts.
    let warm: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let s = TcpStream::connect(addr).unwrap();
                spillway_testkit::Conn::tcp(s)
                    .request("GET", "/?ms=300", &[], b"")
                    .status
            })
        })
        .collect();
    for w in warm {
        assert_eq!(w.join().unwrap(), 200);
    }
    srv
}

/// Sends `n` requests that each take `ms` and leaves them in flight; the connections
/// close when the returned streams drop.
fn load(srv: &Server, n: usize, ms: u64) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(srv.addr()).unwrap();
            write!(s, "GET /?ms={ms} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            s
        })
        .collect()
}

#[test]
fn doctor_names_the_application_as_the_limit_from_spillways_metrics() {
    let srv = two_workers(true);
    let _inflight = load(&srv, 12, 8000);
    let admin = local(srv.admin());
    assert!(eventually(Duration::from_secs(5), || {
        try_get(admin, "/metrics").is_ok_and(|r| r.text().contains("spillway_queue_requests 8\n"))
    }));
    let port = srv.port().to_string();
    let out = doctor(&["--json", "--port", &port, "--interval", "500ms"]);
    let r = json_of(&out);
    let v = &r["listeners"][0]["spillway"];
    assert_eq!(v["found_by"], "--admin in the command line", "{r:#}");
    assert_eq!(v["queue_depth"], 8, "{r:#}");
    assert!(v["queue_oldest_wait_secs"].as_f64() > Some(0.0), "{r:#}");
    let workers = v["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{r:#}");
    assert!(
        workers.iter().all(|w| w["busy"] == 2 && w["threads"] == 2),
        "{r:#}"
    );
    assert!(v["app_p99_secs"].as_f64() > Some(0.0), "{r:#}");
    let f = finding(&r, "spillway_layer");
    assert_eq!(f["evidence"]["layer"], "application", "{f:#}");
    assert_eq!(f["severity"], "warning", "{f:#}");
    assert_eq!(out.status.code(), Some(2));

    let text = doctor(&["--port", &port, "--interval", "300ms"]);
    let text = String::from_utf8_lossy(&text.stdout);
    eprintln!("{text}");
    assert!(
        text.contains("the kernel queue is empty; 8 requests wait in Spillway's queue")
            && text.contains("all 4 threads of both workers are busy")
            && text.contains("the application is the limit"),
        "{text}"
    );
    assert!(text.contains("spillway: queue 8"), "{text}");
}

#[test]
fn doctor_finds_the_admin_endpoint_in_the_environment_or_by_metrics() {
    let admin = crate::support::free_port();
    let srv = Spillway::new("examples/slow.py:app")
        .env("SPILLWAY_ADMIN", format!("127.0.0.1:{admin}"))
        .start();
    let metrics = format!("http://127.0.0.1:{admin}/metrics");
    assert!(eventually(Duration::from_secs(5), || {
        try_get(local(admin), "/metrics").is_ok()
    }));
    let port = srv.port().to_string();
    let r = json_of(&doctor(&["--json", "--port", &port, "--interval", "200ms"]));
    let v = &r["listeners"][0]["spillway"];
    assert_eq!(v["found_by"], "SPILLWAY_ADMIN in the environment", "{r:#}");
    assert_eq!(finding(&r, "spillway_layer")["evidence"]["layer"], "none");

    let r = json_of(&doctor(&[
        "--json",
        "--port",
        &port,
        "--interval",
        "200ms",
        "--metrics",
        &metrics,
    ]));
    assert_eq!(
        r["listeners"][0]["spillway"]["found_by"], "--metrics",
        "{r:#}"
    );
    assert_eq!(r["listeners"][0]["spillway"]["error"], Value::Null, "{r:#}");
}

#[test]
fn without_an_admin_endpoint_doctor_says_so_and_keeps_its_report() {
    let srv = two_workers(false);
    let port = srv.port().to_string();
    let r = json_of(&doctor(&["--json", "--port", &port, "--interval", "200ms"]));
    let f = finding(&r, "spillway_no_metrics");
    assert!(f["message"].as_str().unwrap().contains("--admin"), "{f:#}");
    assert_eq!(r["listeners"][0]["accept_queue"]["depth"], 0, "{r:#}");
    assert_eq!(r["listeners"][0]["spillway"]["metrics_url"], Value::Null);
}
