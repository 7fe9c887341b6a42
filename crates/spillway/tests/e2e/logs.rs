//! Logs for machines, through the real binary: `--log-format json` (every line of the
//! server's own log is one JSON object, whatever a client sends), `--access-log-format
//! combined|json`, and `X-Request-Id` tying the response, the application's environ and
//! both logs together.

use std::path::PathBuf;

use crate::support::{eventually, Json, Server, Spillway, IO_TIMEOUT};

/// A server whose access log is written in `format` to a file in its scratch directory.
fn with_access_log(format: &str, extra: &[&str]) -> (Server, PathBuf) {
    let b = Spillway::new("apps/hostile.py:app");
    let path = b.dir().join("access.log");
    let srv = b
        .arg("--access-log")
        .arg(&path)
        .args(["--access-log-format", format])
        .args(extra.iter().copied())
        .start();
    (srv, path)
}

fn access_lines(path: &PathBuf, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    assert!(
        eventually(IO_TIMEOUT, || {
            lines = std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect();
            lines.len() >= n
        }),
        "fewer than {n} access log lines: {lines:?}"
    );
    lines
}

/// A hostile request: a path with an escaped newline, quote, backslash and control
/// bytes, and headers with quotes, backslashes and bytes above 0x7f.
fn hostile(srv: &Server) -> u16 {
    let mut c = srv.connect();
    c.send(
        b"GET /raise%0a%22%5c%1b%00x\"\\ HTTP/1.1\r\nHost: t\r\nReferer: http://a/\"q\\\r\nUser-Agent: ua\xff\xfe\"x\r\n\r\n",
    );
    c.read_response().status
}

#[test]
fn json_logs_stay_one_valid_object_per_line_whatever_the_client_sends() {
    let (srv, access) = with_access_log("json", &["--log-format", "json", "--threads", "1"]);
    assert_eq!(hostile(&srv), 500);
    assert_eq!(srv.get("/pid").status, 200);
    assert!(
        srv.wait_output(IO_TIMEOUT, |e, _| e.contains("application error")),
        "{}",
        srv.report()
    );
    // Python's own stderr output (not ours) could be anything; Spillway's lines are JSON.
    let err = srv.stderr();
    let mut ours = 0;
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        let v = Json::parse(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{err}"));
        assert!(
            v.has("level") && v.has("message") && v.has("timestamp"),
            "{line}"
        );
        ours += 1;
    }
    assert!(ours >= 3, "{err}");
    let error = err
        .lines()
        .find(|l| l.contains("application error"))
        .map(|l| Json::parse(l).unwrap())
        .unwrap();
    assert!(
        error
            .get("message")
            .str()
            .unwrap_or_default()
            .contains("Traceback"),
        "{error}"
    );

    let lines = access_lines(&access, 2);
    for line in &lines {
        let v = Json::parse(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        for key in [
            "time",
            "method",
            "target",
            "status",
            "duration_ms",
            "queue_ms",
            "worker",
            "generation",
            "request_id",
        ] {
            assert!(v.has(key), "{key} missing: {line}");
        }
    }
    let first = Json::parse(&lines[0]).unwrap();
    assert_eq!(first.get("status").u64(), 500);
    assert!(first
        .get("target")
        .str()
        .unwrap_or_default()
        .starts_with("/raise"));
    assert_eq!(first.get("referer").str(), Some("http://a/\"q\\"));
}

#[test]
fn the_combined_format_is_apaches_with_the_numbers_after_it() {
    let (srv, access) = with_access_log("combined", &[]);
    let mut c = srv.connect();
    let r = c.request(
        "GET",
        "/pid?x=1",
        &[("Referer", "http://ref/"), ("User-Agent", "probe/1")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(hostile(&srv), 500);
    let lines = access_lines(&access, 2);
    // 127.0.0.1 - - [30/Nov/2026:13:55:36 +0000] "GET /pid?x=1 HTTP/1.1" 200 27 "http://ref/" "probe/1" queue=… total=… worker=… generation=1 request_id=…
    let l = &lines[0];
    assert!(l.starts_with("127.0.0.1 - - ["), "{l}");
    assert!(l.contains("+0000] \"GET /pid?x=1 HTTP/1.1\" 200 "), "{l}");
    assert!(l.contains(" \"http://ref/\" \"probe/1\" queue="), "{l}");
    assert!(l.contains(" generation=1 request_id="), "{l}");
    let id = r.header("x-request-id").unwrap();
    assert!(l.ends_with(&format!("request_id={id}")), "{l}");
    // Escaped, one line: a quote cannot close the field, a byte cannot break the line.
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].contains("\"ua\\xff\\xfe\\\"x\""), "{}", lines[1]);
}

#[test]
fn request_ids_are_generated_or_taken_from_a_trusted_peer_and_tie_everything_together() {
    let (srv, access) = with_access_log("default", &["--threads", "1"]);
    // Generated: in the response, the environ and the access log.
    let r = srv.get("/pid");
    let id = r
        .header("x-request-id")
        .expect("no X-Request-Id")
        .to_string();
    assert_eq!(id.len(), 36, "{id}");
    // Taken from a trusted peer (127.0.0.1 is trusted by default).
    let mut c = srv.connect();
    let r = c.request("GET", "/raise-here", &[("X-Request-Id", "lb-7f3a")], b"");
    assert_eq!(r.status, 500);
    assert_eq!(r.header("x-request-id"), Some("lb-7f3a"));
    assert!(
        srv.wait_output(IO_TIMEOUT, |e, _| e.lines().any(|l| l
            .contains("application error")
            && l.contains("request_id=lb-7f3a"))),
        "the error log does not name the request id\n{}",
        srv.report()
    );
    let lines = access_lines(&access, 2);
    assert!(lines[0].ends_with(&format!("request_id={id}")), "{lines:?}");
    assert!(lines[1].ends_with("request_id=lb-7f3a"), "{lines:?}");

    // Anyone else's id is replaced.
    let untrusted = Spillway::new("apps/echo.py:app")
        .args(["--forwarded-allow-ips", "192.0.2.1"])
        .start();
    let mut c = untrusted.connect();
    let r = c.request("GET", "/", &[("X-Request-Id", "spoofed")], b"");
    let id = r.header("x-request-id").unwrap().to_string();
    assert_ne!(id, "spoofed");
    let env = r.json().get("environ").clone();
    assert_eq!(env.get("HTTP_X_REQUEST_ID").str(), Some(id.as_str()));
}
