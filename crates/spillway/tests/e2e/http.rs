//! HTTP/1.x on the wire: keep-alive, pipelining, HTTP/1.0, limits, bad requests, slow
//! clients. Raw bytes in, raw bytes out.

use crate::support::http::show;
use crate::support::{Conn, Spillway};
use std::time::Duration;

fn echo() -> crate::support::Server {
    Spillway::new("apps/echo.py:app")
        .arg("--threads")
        .arg("2")
        .start()
}

fn path_of(res: &crate::support::Response) -> String {
    assert_eq!(res.status, 200, "{res}");
    res.json().get("environ").get("PATH_INFO").s().to_string()
}

/// Status code of the first response in `bytes`, if any.
fn first_status(bytes: &[u8]) -> Option<u16> {
    let s = String::from_utf8_lossy(bytes);
    let line = s.lines().next()?;
    if !line.starts_with("HTTP/1.") {
        return None;
    }
    line.split(' ').nth(1)?.parse().ok()
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let srv = Spillway::new("apps/echo.py:app")
        .arg("--keep-alive")
        .arg("7")
        .start();
    let mut conn = srv.connect();
    let mut ports = Vec::new();
    for i in 0..5 {
        let res = conn.get(&format!("/ka/{i}"));
        assert_eq!(path_of(&res), format!("/ka/{i}"));
        assert_eq!(res.header("keep-alive"), Some("timeout=7"), "{res}");
        ports.push(res.json().get("environ").get("REMOTE_PORT").s().to_string());
    }
    ports.dedup();
    assert_eq!(
        ports.len(),
        1,
        "requests did not share one connection: {ports:?}"
    );
}

#[test]
fn default_keep_alive_is_announced() {
    let srv = echo();
    let res = srv.get("/");
    assert_eq!(res.header("keep-alive"), Some("timeout=75"), "{res}");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let srv = echo();
    let mut conn = srv.connect();
    conn.send(
        b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
          GET /third HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let a = conn.read_response();
    let b = conn.read_response();
    let c = conn.read_response();
    assert_eq!(path_of(&a), "/first");
    assert_eq!(path_of(&b), "/second");
    assert_eq!(b.json().get("body").s(), "abc");
    assert_eq!(path_of(&c), "/third");
}

#[test]
fn connection_close_is_honoured() {
    let srv = echo();
    let mut conn = srv.connect();
    conn.send_request("GET", "/bye", &[("Connection", "close")], b"");
    let res = conn.read_response();
    assert_eq!(path_of(&res), "/bye");
    assert!(
        conn.closed_within(Duration::from_secs(20)).unwrap(),
        "server kept the connection open after Connection: close"
    );
}

#[test]
fn http10_request_is_answered_and_closed() {
    let srv = echo();
    let mut conn = srv.connect();
    conn.send(b"GET /ten HTTP/1.0\r\nUser-Agent: old\r\n\r\n");
    let res = conn.read_response();
    assert!(res.head.version.starts_with("HTTP/1."), "{res}");
    assert_eq!(path_of(&res), "/ten");
    assert!(
        conn.closed_within(Duration::from_secs(20)).unwrap(),
        "HTTP/1.0 without keep-alive must be closed"
    );
}

#[test]
fn http10_keep_alive_is_supported_or_closed_cleanly() {
    let srv = echo();
    let mut conn = srv.connect();
    conn.send(b"GET /ten-ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let res = conn.read_response();
    assert_eq!(path_of(&res), "/ten-ka");
    if res
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive"))
    {
        conn.send(b"GET /ten-ka-2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(path_of(&conn.read_response()), "/ten-ka-2");
    }
}

/// Sends `bytes`, expects a `want` status (and then a close or a working connection),
/// then checks the server still serves.
fn rejects(srv: &crate::support::Server, bytes: &[u8], want: u16) {
    let mut conn = srv.connect();
    // The server may close before reading everything; a failed write is not the point.
    let _ = conn.try_send(bytes);
    let got = conn.read_to_close().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        first_status(&got),
        Some(want),
        "request {} got {}",
        show(&bytes[..bytes.len().min(300)]),
        show(&got)
    );
    assert_eq!(
        srv.get("/still-serving").status,
        200,
        "server stopped serving after a bad request"
    );
}

#[test]
fn garbage_request_line_is_400() {
    let srv = echo();
    rejects(&srv, b"HELLO\r\n\r\n", 400);
    rejects(&srv, b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400);
    rejects(
        &srv,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        400,
    );
}

#[test]
fn request_line_over_the_limit_is_414() {
    let srv = Spillway::new("apps/echo.py:app")
        .arg("--limit-request-line")
        .arg("100")
        .start();
    // Within the limit: served.
    let ok = format!("/{}", "a".repeat(60));
    assert_eq!(path_of(&srv.get(&ok)), ok);
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(200));
    rejects(&srv, long.as_bytes(), 414);
}

#[test]
fn default_request_line_limit_is_4094_like_gunicorn() {
    let srv = echo();
    let ok = format!("/{}", "b".repeat(4000));
    assert_eq!(path_of(&srv.get(&ok)), ok);
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "b".repeat(5000));
    rejects(&srv, long.as_bytes(), 414);
}

#[test]
fn too_many_header_fields_is_431() {
    let srv = Spillway::new("apps/echo.py:app")
        .arg("--limit-request-fields")
        .arg("10")
        .start();
    let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..5 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    assert_eq!(srv.raw(req.as_bytes()).status, 200);
    let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..30 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    rejects(&srv, req.as_bytes(), 431);
}

#[test]
fn header_field_over_the_size_limit_is_431() {
    let srv = Spillway::new("apps/echo.py:app")
        .arg("--limit-request-field-size")
        .arg("100")
        .start();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Small: {}\r\n\r\n",
        "s".repeat(50)
    );
    assert_eq!(srv.raw(req.as_bytes()).status, 200);
    let req = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "v".repeat(300)
    );
    rejects(&srv, req.as_bytes(), 431);
}

#[test]
fn content_length_with_transfer_encoding_cannot_smuggle_a_request() {
    // RFC 9112 §6.3: reject, or read the body as chunked and close the connection after
    // responding. Either way a request hidden behind the conflicting lengths is never run.
    let srv = echo();
    let got = srv.raw_until_close(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let text = show(&got);
    match first_status(&got) {
        Some(400) => {}
        Some(200) => {
            assert!(
                text.to_ascii_lowercase().contains("connection: close"),
                "{text}"
            );
            assert!(
                text.contains("hello"),
                "body must be read as chunked: {text}"
            );
        }
        other => panic!("unexpected status {other:?}: {text}"),
    }
    assert!(
        !text.contains("/smuggled"),
        "a smuggled request was served: {text}"
    );
    assert_eq!(srv.get("/still-serving").status, 200);
}

#[test]
fn invalid_content_length_is_400() {
    let srv = echo();
    rejects(
        &srv,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        400,
    );
    rejects(
        &srv,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        400,
    );
    rejects(
        &srv,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    );
}

#[test]
fn unsupported_transfer_encoding_is_rejected() {
    let srv = echo();
    let mut conn = srv.connect();
    let _ = conn.try_send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nxxxx");
    let got = conn.read_to_close().unwrap_or_else(|e| panic!("{e}"));
    let status = first_status(&got);
    assert!(
        matches!(status, Some(400) | Some(501)),
        "Transfer-Encoding: gzip must be 400 or 501, got {}",
        show(&got)
    );
}

#[test]
fn http11_without_host_is_400() {
    let srv = echo();
    rejects(&srv, b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400);
}

#[test]
fn slow_header_is_cut_off_and_does_not_block_others() {
    let srv = Spillway::new("apps/echo.py:app")
        .arg("--header-timeout")
        .arg("1")
        .start();
    let mut slow = srv.connect();
    slow.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n");
    // Meanwhile another client is served.
    assert_eq!(path_of(&srv.get("/fast")), "/fast");
    // The slow client is answered 408 or simply closed, long before our 30 s read timeout.
    let got = slow
        .read_to_close()
        .unwrap_or_else(|e| panic!("slow client not closed: {e}"));
    assert!(
        got.is_empty() || first_status(&got) == Some(408),
        "expected 408 or a close, got {}",
        show(&got)
    );
}

#[test]
fn trickling_header_bytes_do_not_extend_the_header_timeout() {
    let srv = Spillway::new("apps/echo.py:app")
        .arg("--header-timeout")
        .arg("1")
        .start();
    let mut conn: Conn = srv.connect();
    conn.send(b"GET /trickle HTTP/1.1\r\nHost: x\r\n");
    let mut closed = false;
    // 40 x 250 ms = 10 s of trickling against a 1 s header timeout.
    for i in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        if conn.try_send(format!("X-T{i}: v\r\n").as_bytes()).is_err() {
            closed = true;
            break;
        }
    }
    if !closed {
        closed = conn.closed_within(Duration::from_secs(5)).unwrap_or(true);
    }
    assert!(
        closed,
        "a client trickling its head for 10 s was not cut off by --header-timeout 1"
    );
    assert_eq!(srv.get("/").status, 200);
}

#[test]
fn idle_keep_alive_connection_is_closed_after_the_timeout() {
    let srv = Spillway::new("apps/echo.py:app")
        .arg("--keep-alive")
        .arg("1")
        .start();
    let mut conn = srv.connect();
    let res = conn.get("/idle");
    assert_eq!(res.header("keep-alive"), Some("timeout=1"), "{res}");
    assert!(
        conn.closed_within(Duration::from_secs(20)).unwrap(),
        "idle connection still open 20 s after a 1 s keep-alive timeout"
    );
}

#[test]
fn request_target_forms_are_checked_against_the_method() {
    let srv = echo();
    rejects(&srv, b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    rejects(&srv, b"GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    rejects(
        &srv,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        405,
    );
    let res = srv.raw(b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(res.status, 200, "{res}");
}
