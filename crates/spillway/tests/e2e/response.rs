//! Responses: streaming, framing, close(), HEAD/204/304, errors, start_response rules,
//! write(), wsgi.file_wrapper, wsgi.errors.

use crate::support::{eventually, Spillway};
use std::path::Path;
use std::time::Duration;

fn close_log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn stream_app() -> (crate::support::Server, std::path::PathBuf) {
    let b = Spillway::new("apps/stream.py:app")
        .arg("--threads")
        .arg("2");
    let log = b.dir().join("close.log");
    let srv = b.env("CLOSE_LOG", &log).start();
    (srv, log)
}

/// Waits (bounded) for a close() record starting with `prefix`.
fn wait_close(log: &Path, prefix: &str) -> String {
    let mut found = None;
    eventually(Duration::from_secs(20), || {
        found = close_log_lines(log)
            .into_iter()
            .find(|l| l.starts_with(prefix));
        found.is_some()
    });
    found.unwrap_or_else(|| {
        panic!(
            "close() was not called for {prefix:?}; close log: {:?}",
            close_log_lines(log)
        )
    })
}

#[test]
fn first_chunk_reaches_the_client_before_the_last_is_produced() {
    let (srv, _log) = stream_app();
    let mut conn = srv.connect();
    conn.send_request("GET", "/gated?marker=go", &[], b"");
    let head = conn.read_head().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(head.status, 200, "{}", head.raw);
    assert!(
        head.is_chunked(),
        "streaming response without Content-Length must be chunked: {}",
        head.raw
    );
    let first = conn
        .read_chunk()
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("a first chunk");
    assert_eq!(first, b"chunk-0\n");
    // Only now may the app produce the rest.
    std::fs::write(srv.dir().join("go"), "").unwrap();
    let mut rest = Vec::new();
    for _ in 0..100 {
        match conn.read_chunk().unwrap_or_else(|e| panic!("{e}")) {
            Some(c) => rest.extend_from_slice(&c),
            None => break,
        }
    }
    assert_eq!(String::from_utf8_lossy(&rest), "chunk-1\nchunk-2\n");
}

#[test]
fn no_content_length_means_chunked_and_empty_items_are_skipped() {
    let (srv, _log) = stream_app();
    let res = srv.get("/chunks?n=3");
    assert_eq!(res.status, 200, "{res}");
    assert!(res.head.is_chunked(), "{res}");
    assert!(res.header("content-length").is_none(), "{res}");
    assert_eq!(res.text(), "chunk-0\nchunk-1\nchunk-2\n");

    // Empty strings in the iterable must not end the chunked body early.
    let res = srv.get("/empty_chunks");
    assert_eq!(res.text(), "ab", "{res}");
}

#[test]
fn app_content_length_is_kept() {
    let (srv, log) = stream_app();
    let res = srv.get("/sized");
    assert_eq!(res.header("content-length"), Some("10"), "{res}");
    assert!(!res.head.is_chunked(), "{res}");
    assert_eq!(res.text(), "0123456789");
    wait_close(&log, "sized closed after");
}

#[test]
fn http10_client_gets_a_close_delimited_stream_not_chunked() {
    let (srv, _log) = stream_app();
    let mut conn = srv.connect();
    conn.send(b"GET /chunks?n=3 HTTP/1.0\r\n\r\n");
    let res = conn.read_response();
    assert_eq!(res.status, 200, "{res}");
    assert!(
        !res.head.is_chunked(),
        "HTTP/1.0 does not know chunked: {res}"
    );
    assert_eq!(res.text(), "chunk-0\nchunk-1\nchunk-2\n");
}

#[test]
fn close_is_called_after_a_normal_response() {
    let (srv, log) = stream_app();
    let res = srv.get("/chunks?n=2");
    assert_eq!(res.text(), "chunk-0\nchunk-1\n");
    wait_close(&log, "chunks closed after 2 chunks");
}

#[test]
fn close_is_called_when_the_client_disconnects_mid_stream() {
    let (srv, log) = stream_app();
    let mut conn = srv.connect();
    conn.send_request("GET", "/forever", &[], b"");
    let head = conn.read_head().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(head.status, 200);
    let _ = conn.read_chunk().unwrap_or_else(|e| panic!("{e}"));
    drop(conn);
    let line = wait_close(&log, "forever closed after");
    let n: u32 = line
        .split_whitespace()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(u32::MAX);
    assert!(
        n < 3000,
        "the server iterated the whole body although the client was gone: {line}"
    );
    // And the server still serves.
    assert_eq!(srv.get("/chunks?n=1").status, 200);
}

#[test]
fn close_is_called_when_the_iterable_raises() {
    let (srv, log) = stream_app();
    let mut conn = srv.connect();
    conn.send_request("GET", "/raise_mid", &[], b"");
    let _ = conn.try_read_response();
    wait_close(&log, "raise_mid closed after");
}

#[test]
fn head_has_headers_but_no_body_and_close_is_called() {
    let (srv, log) = stream_app();
    let mut conn = srv.connect();
    conn.send_request("HEAD", "/sized", &[], b"");
    let res = conn.read_response();
    assert_eq!(res.status, 200, "{res}");
    assert_eq!(
        res.header("content-length"),
        Some("10"),
        "HEAD should keep the app's Content-Length: {res}"
    );
    // Any body bytes would be misread as the next response's status line.
    let res = conn.get("/sized");
    assert_eq!(res.status, 200, "{res}");
    assert_eq!(res.text(), "0123456789");
    wait_close(&log, "sized closed after");

    // HEAD of a streaming response: no chunked body either.
    conn.send_request("HEAD", "/chunks?n=2", &[], b"");
    let res = conn.read_response();
    assert_eq!(res.status, 200, "{res}");
    let res = conn.get("/sized");
    assert_eq!(res.text(), "0123456789", "{res}");
}

#[test]
fn status_204_and_304_have_no_body() {
    let (srv, log) = stream_app();
    for code in [204u16, 304] {
        let mut conn = srv.connect();
        conn.send_request("GET", &format!("/status?code={code}"), &[], b"");
        let res = conn.read_response();
        assert_eq!(res.status, code, "{res}");
        assert!(!res.head.is_chunked(), "{code} must not be chunked: {res}");
        if code == 204 {
            assert!(
                res.header("content-length").is_none_or(|v| v == "0"),
                "{res}"
            );
        }
        // The app's body must not leak onto the connection.
        let next = conn.get("/sized");
        assert_eq!(next.status, 200, "after {code}: {next}");
        assert_eq!(next.text(), "0123456789");
        wait_close(&log, &format!("status-{code} closed after"));
    }
}

fn errors_app() -> crate::support::Server {
    Spillway::new("apps/errors.py:app")
        .arg("--threads")
        .arg("2")
        .start()
}

#[test]
fn exception_before_start_response_is_a_500_with_traceback_and_serving_goes_on() {
    let srv = errors_app();
    let res = srv.get("/before");
    assert_eq!(res.status, 500, "{res}");
    assert!(
        !res.text().contains("boom"),
        "the traceback must not reach the client: {res}"
    );
    assert!(srv.stderr_contains("Traceback"), "{}", srv.report());
    assert!(
        srv.stderr_contains("boom-before-start-response"),
        "{}",
        srv.report()
    );
    assert_eq!(srv.get("/ok").status, 200);
}

#[test]
fn exception_after_start_response_but_before_any_body_is_a_500() {
    let srv = errors_app();
    for path in ["/after_start", "/first_next", "/not_bytes"] {
        let res = srv.get(path);
        assert_eq!(res.status, 500, "{path}: {res}");
    }
    assert!(
        srv.stderr_contains("boom-after-start-response"),
        "{}",
        srv.report()
    );
    assert!(
        srv.stderr_contains("boom-in-first-next"),
        "{}",
        srv.report()
    );
    assert_eq!(srv.get("/ok").status, 200);
}

#[test]
fn exception_mid_stream_truncates_the_response_visibly() {
    let (srv, _log) = stream_app();
    let mut conn = srv.connect();
    conn.send_request("GET", "/raise_mid", &[], b"");
    let head = conn.read_head().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(head.status, 200, "{}", head.raw);
    let body = conn.read_body(&head, false);
    assert!(
        body.is_err(),
        "a response cut by an exception must not look complete to the client; got body {body:?}"
    );
    assert!(srv.stderr_contains("boom-mid-stream"), "{}", srv.report());
    assert_eq!(srv.get("/chunks?n=1").status, 200);
}

#[test]
fn start_response_with_exc_info_before_headers_are_sent_replaces_the_status() {
    let srv = errors_app();
    let res = srv.get("/exc_info_before_send");
    assert_eq!(res.status, 500, "{res}");
    assert_eq!(res.header("x-handled"), Some("yes"), "{res}");
    assert_eq!(res.text(), "handled");
}

#[test]
fn start_response_with_exc_info_after_headers_are_sent_reraises() {
    let srv = errors_app();
    let res = srv.get("/exc_info_after_send");
    assert_eq!(res.status, 200, "{res}");
    assert_eq!(res.text(), "first;reraised;end");
}

#[test]
fn second_start_response_without_exc_info_raises() {
    let srv = errors_app();
    let res = srv.get("/double_start");
    assert!(res.text().starts_with("second-call-raised:"), "{res}");
}

#[test]
fn write_callable() {
    let srv = Spillway::new("apps/write.py:app").start();
    let res = srv.get("/");
    assert_eq!(res.status, 200, "{res}");
    assert_eq!(res.text(), "abcd");
    let res = srv.get("/sized");
    assert_eq!(res.header("content-length"), Some("6"), "{res}");
    assert_eq!(res.text(), "abcdef");
}

#[test]
fn file_wrapper_serves_files_and_file_likes() {
    let b = Spillway::new("apps/filewrapper.py:app");
    let log = b.dir().join("close.log");
    let file = b.dir().join("payload.bin");
    let data = crate::support::pseudo_random(300_000, 7);
    std::fs::write(&file, &data).unwrap();
    let srv = b.env("CLOSE_LOG", &log).start();

    let res = srv.get(&format!("/file?path={}", file.display()));
    assert_eq!(res.status, 200, "{res}");
    assert_eq!(res.body.len(), data.len());
    assert!(res.body == data, "file body differs");
    wait_close(&log, "file closed");

    let res = srv.get("/bytesio");
    assert_eq!(res.status, 200, "{res}");
    assert_eq!(res.body, b"0123456789abcdef".repeat(4096));
}

#[test]
fn wsgi_errors_lines_go_to_stderr_with_the_worker_pid() {
    let srv = errors_app();
    let res = srv.get("/errors?token=t0k3n");
    assert_eq!(res.status, 200, "{res}");
    let pid = res.json().get("pid").u64();
    for needle in [
        "errors-write-t0k3n",
        "errors-writelines-t0k3n-a",
        "errors-writelines-t0k3n-b",
    ] {
        assert!(
            srv.stderr_contains(needle),
            "{needle} missing\n{}",
            srv.report()
        );
        let lines = srv.stderr_lines_with(needle);
        assert!(
            lines.iter().all(|l| l.contains(&format!("worker={pid}"))),
            "wsgi.errors line without worker={pid}: {lines:?}"
        );
    }
}

#[test]
fn responses_larger_than_the_credit_window_arrive_whole_to_a_slow_reader() {
    // 8 MiB streamed and 5 MiB in one chunk, both far past the 256 KiB response window:
    // the worker must wait for credit while the client is not reading, then finish.
    let srv = Spillway::new("apps/big.py:app").start();
    for (path, mib) in [("/stream?mib=8", 8usize), ("/whole?mib=5", 5)] {
        let mut conn = srv.connect();
        conn.send_request("GET", path, &[], b"");
        // Stall before reading: socket buffers fill and the front stops granting credit.
        std::thread::sleep(Duration::from_millis(300));
        let head = conn.read_head().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(head.status, 200, "{}", head.raw);
        let body = conn
            .read_body(&head, false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body.len(), mib << 20, "{path}");
        assert!(
            body.iter().enumerate().all(|(i, &b)| b as usize == i % 251),
            "{path}: body bytes differ from the pattern"
        );
    }
    assert_eq!(srv.get("/whole?mib=1").status, 200);
}
