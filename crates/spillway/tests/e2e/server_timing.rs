//! Where a request's time went, as the client and the application's APM agent see it:
//! `Server-Timing` on responses over HTTP/1.1 and HTTP/2 (curl), and `HTTP_X_REQUEST_START`
//! read by a real agent's parsing code (Scout's, from PyPI) while a request waits in
//! Spillway's queue.

use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::support::venv::apm_venv;
use crate::support::{Server, Spillway};

/// The phases of a `Server-Timing` value, `name;dur=ms` each.
fn phases(v: &str) -> Vec<(String, f64)> {
    v.split(',')
        .map(|m| {
            let (name, params) = m.trim().split_once(';').unwrap_or_else(|| panic!("{v}"));
            let dur = params
                .strip_prefix("dur=")
                .and_then(|d| d.parse().ok())
                .unwrap_or_else(|| panic!("no dur in {v}"));
            (name.to_string(), dur)
        })
        .collect()
}

fn phase(v: &str, name: &str) -> f64 {
    phases(v)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in {v}"))
        .1
}

/// The response headers curl received over HTTP/2 (prior knowledge), lower-cased names.
fn h2_headers(srv: &Server, path: &str) -> String {
    let url = format!("http://127.0.0.1:{}{path}", srv.port());
    let o = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
            "-D",
            "-",
            "-o",
        ])
        .arg("/dev/null")
        .arg(&url)
        .stdin(Stdio::null())
        .output()
        .expect("curl (.ci/run installs it)");
    let out = String::from_utf8_lossy(&o.stdout).to_ascii_lowercase();
    assert!(out.starts_with("http/2 200"), "{out}{}", srv.report());
    out
}

fn h2_server_timing(srv: &Server, path: &str) -> Option<String> {
    h2_headers(srv, path).lines().find_map(|l| {
        l.strip_prefix("server-timing:")
            .map(|v| v.trim().to_string())
    })
}

#[test]
fn server_timing_names_queue_app_and_total_over_http1_and_http2() {
    let srv = Spillway::new("apps/overload.py:app")
        .arg("--threads")
        .arg("2")
        .start();
    let res = srv.get("/sleep?ms=50");
    assert_eq!(res.status, 200, "{res}");
    let v = res.header("server-timing").expect("a Server-Timing header");
    let names: Vec<String> = phases(v).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["queue", "app", "total"], "{v}");
    assert!(phase(v, "app") >= 45.0, "{v}");
    assert!(phase(v, "total") >= phase(v, "app"), "{v}");

    let v = h2_server_timing(&srv, "/sleep?ms=50").expect("Server-Timing over HTTP/2");
    assert!(phase(&v, "app") >= 45.0, "{v}");
    assert!(
        phase(&v, "total") >= phase(&v, "app") + phase(&v, "queue") - 0.01,
        "{v}"
    );
}

#[test]
fn server_timing_goes_only_to_the_peers_the_option_names() {
    // Trusted (the default) with the client not in --forwarded-allow-ips: nothing.
    let srv = Spillway::new("apps/overload.py:app")
        .args(["--forwarded-allow-ips", "10.9.9.9"])
        .start();
    let res = srv.get("/pid");
    assert_eq!(res.status, 200, "{res}");
    assert_eq!(res.header("server-timing"), None, "{res}");
    assert_eq!(h2_server_timing(&srv, "/pid"), None);
    drop(srv);

    let srv = Spillway::new("apps/overload.py:app")
        .args([
            "--forwarded-allow-ips",
            "10.9.9.9",
            "--server-timing",
            "all",
        ])
        .start();
    assert!(srv.get("/pid").header("server-timing").is_some());
    assert!(h2_server_timing(&srv, "/pid").is_some());
    drop(srv);

    let srv = Spillway::new("apps/overload.py:app")
        .args(["--server-timing", "off"])
        .start();
    assert_eq!(srv.get("/pid").header("server-timing"), None);
    assert_eq!(h2_server_timing(&srv, "/pid"), None);
}

/// One thread, busy with a slow request: the next one waits in Spillway's queue, and both
/// `Server-Timing` and Scout's agent (reading `HTTP_X_REQUEST_START`) show that wait.
#[test]
fn an_apm_agent_sees_the_time_a_request_queued() {
    let venv = apm_venv();
    let srv = Spillway::new("apps/apm.py:app")
        .arg("--virtualenv")
        .arg(&venv)
        .args(["--threads", "1"])
        .start();
    let addr = srv.addr();
    let slow = thread::spawn(move || {
        let mut c = crate::support::Conn::tcp(std::net::TcpStream::connect(addr).unwrap());
        c.request("GET", "/sleep?ms=600", &[], b"").status
    });
    thread::sleep(Duration::from_millis(150));
    let res = srv.get("/queue");
    assert_eq!(res.status, 200, "{res}");
    assert_eq!(slow.join().unwrap(), 200);
    let body = res.json();
    assert!(body.get("header").s().starts_with("t="), "{res}");
    let agent_ms = body
        .get("queue_ms")
        .num()
        .unwrap_or_else(|| panic!("agent refused: {res}"));
    let queued = phase(res.header("server-timing").unwrap(), "queue");
    assert!(queued >= 250.0, "Server-Timing queue {queued} ms: {res}");
    assert!(
        agent_ms >= queued - 1.0,
        "the agent's queue time ({agent_ms} ms) misses Spillway's queue ({queued} ms)"
    );

    // Over HTTP/2 too: the agent reads the front's start.
    let url = format!("http://127.0.0.1:{}/queue", srv.port());
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--http2-prior-knowledge", &url])
        .stdin(Stdio::null())
        .output()
        .expect("curl");
    let body = crate::support::Json::parse(&String::from_utf8_lossy(&o.stdout)).expect("JSON");
    assert!(body.get("header").s().starts_with("t="), "{body:?}");
    assert!(body.get("queue_ms").num().is_some(), "{body:?}");

    // A trusted proxy's own start is kept (the client here is 127.0.0.1, trusted by
    // default); an untrusted client's is replaced by the front's.
    let t = "t=1600000000000000";
    let res = srv.request("GET", "/queue", &[("X-Request-Start", t)], b"");
    assert_eq!(res.json().get("header").s(), t, "{res}");
    drop(srv);
    let srv = Spillway::new("apps/apm.py:app")
        .arg("--virtualenv")
        .arg(&venv)
        .args(["--forwarded-allow-ips", "10.9.9.9"])
        .start();
    let res = srv.request("GET", "/queue", &[("X-Queue-Start", t)], b"");
    let body = res.json();
    assert_ne!(body.get("header").s(), t, "{res}");
    assert!(
        body.get("queue_ms").num().is_some_and(|ms| ms < 5_000.0),
        "{res}"
    );
}
