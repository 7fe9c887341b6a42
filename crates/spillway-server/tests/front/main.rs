//! The front's request path against a fake worker (no Python): what a client sees when a
//! worker answers, streams, dies, hangs, floods or breaks the protocol.

mod h2client;
mod harness;
mod http2;

use std::io::Read;
use std::time::{Duration, Instant};

use harness::{config, Front};
use spillway_server::Control;
use spillway_testkit::{show, Crc32};

/// Bytes as text, unescaped (`show` escapes for messages).
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn requests_are_answered_in_order_on_one_connection() {
    let front = Front::start(config());
    let mut c = front.connect();
    c.send(
        b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
          GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let a = c.read_response();
    let b = c.read_response();
    let d = c.read_response();
    assert_eq!((a.status, a.text().as_str()), (200, "hello"), "{a}");
    assert_eq!((b.status, b.text().as_str()), (200, "abc"), "{b}");
    assert_eq!(d.status, 204, "{d}");
    assert_eq!(a.header("keep-alive"), Some("timeout=30"), "{a}");
    assert!(a.header("date").is_some(), "{a}");
}

#[test]
fn the_head_reaches_the_worker_as_environ_fields() {
    let front = Front::start(config());
    let r = front.connect().request(
        "GET",
        "/environ/x%20y?q=1",
        &[("X-Trace", "7"), ("X_Spoof", "no")],
        b"",
    );
    let text = r.text();
    assert!(text.contains("path=/environ/x y query=q=1"), "{text}");
    assert!(text.contains("remote=127.0.0.1:"), "{text}");
    assert!(text.contains("HTTP_X_TRACE=7"), "{text}");
    assert!(!text.contains("Spoof"), "{text}");
}

#[test]
fn worker_death_mid_request_is_a_502_and_the_next_request_is_served() {
    let front = Front::start(config());
    let r = front.get("/die");
    assert_eq!(r.status, 502, "{r}");
    // The supervisor replaces the worker; new requests never see the dead one.
    let started = Instant::now();
    loop {
        let r = front.get("/hello");
        if r.status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no new worker: {r}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn worker_death_after_the_head_cuts_the_connection() {
    let front = Front::start(config());
    let mut c = front.connect();
    c.send_request("GET", "/die-after-head", &[], b"");
    let got = c.read_to_close().unwrap_or_else(|e| panic!("{e}"));
    let text = text(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.contains("partial"),
        "what was produced arrives: {text}"
    );
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the body must not look complete: {text}"
    );
}

#[test]
fn a_worker_that_never_answers_gets_504_and_is_told_to_stop() {
    let mut cfg = config();
    cfg.timeout = Duration::from_secs(1);
    let front = Front::start(cfg);
    let started = Instant::now();
    let r = front.get("/hang/a");
    assert_eq!(r.status, 504, "{r}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(front.marked("cancelled-a"), "the worker never got Cancel");
    // The connection stays usable, and the other thread serves.
    assert_eq!(front.get("/hello").status, 200);
}

#[test]
fn a_response_larger_than_the_credit_reaches_a_slow_reader_whole() {
    let front = Front::start(config());
    let mut c = front.connect();
    let n = 4 * 1024 * 1024;
    c.send_request("GET", &format!("/big/{n}"), &[], b"");
    // Read slowly at first: the worker must wait for credit, not flood the front.
    std::thread::sleep(Duration::from_millis(300));
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), n);
    assert!(r
        .body
        .iter()
        .enumerate()
        .all(|(i, &b)| b == ((i % (16 * 1024)) % 251) as u8));
}

#[test]
fn a_large_upload_flows_under_credit_and_arrives_whole() {
    let front = Front::start(config());
    let body = spillway_testkit::pseudo_random(3 * 1024 * 1024 + 17, 9);
    let r = front.connect().request("POST", "/echo", &[], &body);
    assert_eq!(r.status, 200, "{}", r.head.status);
    let (mut a, mut b) = (Crc32::default(), Crc32::default());
    a.update(&body);
    b.update(&r.body);
    assert_eq!((r.body.len(), b.finish()), (body.len(), a.finish()));
}

#[test]
fn a_chunked_upload_is_decoded_for_the_worker() {
    let front = Front::start(config());
    let mut c = front.connect();
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.text(), "hello world", "{r}");
}

#[test]
fn a_client_that_leaves_cancels_its_request_on_the_worker() {
    let front = Front::start(config());
    let mut c = front.connect();
    c.send_request("GET", "/wait-cancel/gone", &[], b"");
    std::thread::sleep(Duration::from_millis(200));
    drop(c);
    assert!(
        front.marked("cancelled-gone"),
        "the worker never heard the client left"
    );
    assert_eq!(front.get("/hello").status, 200);
}

#[test]
fn a_malformed_frame_fails_the_worker_and_another_takes_over() {
    let front = Front::start(config());
    let r = front.get("/garbage");
    assert_eq!(r.status, 502, "{r}");
    let started = Instant::now();
    while front.get("/hello").status != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "no new worker");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_application_failure_midway_cuts_the_response() {
    let front = Front::start(config());
    let mut c = front.connect();
    c.send_request("GET", "/abort", &[], b"");
    let text = text(&c.read_to_close().unwrap_or_else(|e| panic!("{e}")));
    assert!(text.contains("first part"), "{text}");
    assert!(!text.ends_with("0\r\n\r\n"), "{text}");
}

#[test]
fn a_worker_breaking_the_rules_gets_502_not_a_broken_response() {
    let front = Front::start(config());
    assert_eq!(front.get("/end-no-head").status, 502);
    let mut c = front.connect();
    c.send_request("GET", "/overrun", &[], b"");
    let text = text(&c.read_to_close().unwrap_or_else(|e| panic!("{e}")));
    // The head went out before the flood: the connection is cut, nothing past the
    // credit is passed on.
    assert!(text.len() < 300 * 1024, "{} bytes passed on", text.len());
}

#[test]
fn a_status_no_http_response_can_carry_becomes_500() {
    let front = Front::start(config());
    let r = front.get("/status/999");
    assert_eq!(r.status, 500, "{r}");
}

#[test]
fn expect_continue_is_answered_only_when_the_worker_asks_for_the_body() {
    let front = Front::start(config());
    let mut c = front.connect();
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.read_interim(), Ok(100));
    c.send(b"body");
    assert_eq!(c.read_response().text(), "body");
    // An application that never reads gets no 100; the connection closes after the
    // answer, since the client may or may not send the body.
    let mut c = front.connect();
    c.send(
        b"POST /no-read HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    );
    let got = text(&c.read_to_close().unwrap_or_else(|e| panic!("{e}")));
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert!(!got.contains("100 Continue"), "{got}");
    assert!(got.contains("Connection: close"), "{got}");
}

#[test]
fn an_unread_body_is_skipped_so_the_connection_carries_on() {
    let front = Front::start(config());
    let mut c = front.connect();
    let body = vec![b'z'; 200 * 1024];
    let r = c.request("POST", "/no-read", &[], &body);
    assert_eq!(r.text(), "ok");
    assert_eq!(c.get("/hello").text(), "hello");
}

#[test]
fn a_full_queue_is_refused_with_503_and_retry_after() {
    let mut cfg = config();
    cfg.threads.pinned = Some(1);
    cfg.max_queue = 1;
    let front = Front::start(cfg);
    let mut busy = front.connect();
    busy.send_request("GET", "/slow/1500", &[], b"");
    std::thread::sleep(Duration::from_millis(200));
    let mut queued = front.connect();
    queued.send_request("GET", "/hello", &[], b"");
    std::thread::sleep(Duration::from_millis(200));
    let mut refused = front.connect();
    let r = refused.get("/hello");
    assert_eq!(r.status, 503, "{r}");
    assert!(r.header("retry-after").is_some(), "{r}");
    // Refused, not failed: the same connection serves once there is room.
    assert_eq!(busy.read_response().text(), "slow");
    assert_eq!(queued.read_response().text(), "hello");
    assert_eq!(refused.get("/hello").status, 200);
}

#[test]
fn malformed_requests_get_4xx_and_the_front_keeps_serving() {
    let front = Front::start(config());
    for (req, want) in [
        (&b"GET / HTTP/1.1\nHost: x\n\n"[..], 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ] {
        let mut c = front.connect();
        c.send(req);
        let got = c.read_to_close().unwrap_or_else(|e| panic!("{e}"));
        let text = text(&got);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {want} ")),
            "{} -> {text}",
            show(req)
        );
    }
    assert_eq!(front.get("/hello").status, 200);
}

#[test]
fn drain_finishes_the_request_in_flight_with_connection_close() {
    let front = Front::start(config());
    let mut c = front.connect();
    c.send_request("GET", "/slow/600", &[], b"");
    std::thread::sleep(Duration::from_millis(100));
    front.control(Control::Stop("test"));
    let r = c.read_response();
    assert_eq!(r.text(), "slow");
    assert_eq!(r.header("connection"), Some("close"), "{r}");
    assert_eq!(front.join(), Ok(()));
}

#[test]
fn an_idle_connection_is_closed_cleanly_after_keep_alive() {
    let mut cfg = config();
    cfg.keep_alive = Duration::from_secs(1);
    let front = Front::start(cfg);
    let mut c = front.connect();
    assert_eq!(c.get("/hello").status, 200);
    assert_eq!(c.closed_within(Duration::from_secs(5)), Ok(true));
}

#[test]
fn a_head_that_never_completes_is_cut_at_the_header_timeout() {
    let mut cfg = config();
    cfg.header_timeout = Duration::from_secs(1);
    let front = Front::start(cfg);
    let mut raw = std::net::TcpStream::connect(front.addr).unwrap();
    std::io::Write::write_all(&mut raw, b"GET /hello HTTP/1.1\r\nHost: x\r\n").unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = raw.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected a close, got {:?}", show(&buf[..n]));
    assert!(started.elapsed() < Duration::from_secs(4));
}
