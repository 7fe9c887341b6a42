//! The front's request path over HTTP/2 (h2c, prior knowledge) against the fake worker:
//! the same exchange as HTTP/1.1, and the protections a hostile HTTP/2 client needs.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::Reason;
use http::Request;

use crate::h2client::{H2Response, H2};
use crate::harness::{config, Front};

fn ok(r: Result<H2Response, h2::Error>) -> H2Response {
    r.unwrap_or_else(|e| panic!("the stream failed: {e}"))
}

#[test]
fn streams_on_one_connection_are_answered_like_http1_requests() {
    let front = Front::start(config());
    let mut c = H2::connect(front.addr);
    let a = ok(c.get("/hello"));
    assert_eq!((a.status, a.text().as_str()), (200, "hello"), "{a:?}");
    assert!(a.headers.get("x-request-id").is_some(), "{a:?}");
    let b = ok(c.request("POST", "/echo", &[], b"abc"));
    assert_eq!((b.status, b.text().as_str()), (200, "abc"), "{b:?}");
    let big: Vec<u8> = (0..3 << 20).map(|i| (i % 253) as u8).collect();
    let e = ok(c.request("POST", "/echo", &[], &big));
    assert!(e.body == big, "a 3 MiB body came back changed");
    let d = ok(c.get("/big/5000000"));
    assert_eq!(d.body.len(), 5_000_000);
    assert_eq!(ok(c.get("/status/999")).status, 500);
}

#[test]
fn worker_failures_over_http2_are_502_or_a_reset_stream() {
    let front = Front::start(config());
    let mut c = H2::connect(front.addr);
    assert_eq!(ok(c.get("/die")).status, 502);
    // Cut midway: the stream is reset, never ended as if complete.
    for path in ["/abort", "/die-after-head", "/overrun"] {
        let r = c.get(path);
        assert!(r.is_err(), "{path}: a cut response looked complete: {r:?}");
    }
    let mut fresh = H2::connect(front.addr);
    assert!(eventually_ok(&mut fresh, "/hello"));
}

fn eventually_ok(c: &mut H2, path: &str) -> bool {
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        if c.get(path).is_ok_and(|r| r.status == 200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_worker_that_never_answers_gets_504_over_http2() {
    let mut cfg = config();
    cfg.timeout = Duration::from_secs(1);
    let front = Front::start(cfg);
    let mut c = H2::connect(front.addr);
    assert_eq!(ok(c.get("/hang/h2")).status, 504);
    assert!(
        front.marked("cancelled-h2"),
        "the worker was never told to stop"
    );
}

/// Item 2: a client that stops taking the response (no WINDOW_UPDATE, though its
/// connection answers PINGs) is cut at --timeout and the application told to stop.
#[test]
fn a_client_that_stops_reading_is_cut_at_the_timeout() {
    let mut cfg = config();
    cfg.timeout = Duration::from_secs(1);
    let front = Front::start(cfg);
    let mut c = H2::connect(front.addr);
    let req = Request::get("http://test/big/50000000")
        .body(())
        .expect("request");
    let (resp, _send) = c.open(req, true).expect("stream");
    // The head, then nothing is read: the window is never given back.
    let head = c.run(resp).expect("a response head");
    assert_eq!(head.status(), 200);
    assert!(
        front.marked("cancelled-big-50000000"),
        "the application kept running for a client that reads nothing"
    );
    drop(head);
}

/// Item 6: the application's wrong Content-Length is enforced as over HTTP/1.1.
#[test]
fn a_wrong_content_length_is_enforced_over_both_protocols() {
    let front = Front::start(config());
    let mut c = H2::connect(front.addr);
    let long = ok(c.get("/length/10/25"));
    assert_eq!(long.body, vec![b'x'; 10], "{long:?}");
    assert_eq!(
        long.headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"10"[..])
    );
    let short = c.get("/length/10/5");
    let e = short.expect_err("a short body looked complete");
    assert!(
        e.is_remote() && e.is_reset(),
        "not reset by the server: {e}"
    );

    let h1 = front.connect().get("/length/10/25");
    assert_eq!(h1.body, vec![b'x'; 10]);
    let mut s = front.connect();
    s.send_request("GET", "/length/10/5", &[], b"");
    let got = s.read_to_close().unwrap_or_default();
    assert!(
        got.ends_with(b"\r\n\r\nxxxxx"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// Item 5: `:authority` wins over a `host` field (RFC 9113 §8.3.1).
#[test]
fn authority_wins_over_a_host_field() {
    let front = Front::start(config());
    let mut c = H2::connect(front.addr);
    let r = ok(c.request(
        "GET",
        "http://right.example/environ",
        &[("host", "wrong.example")],
        b"",
    ));
    let text = r.text();
    assert!(text.contains("HTTP_HOST=right.example"), "{text}");
    assert!(!text.contains("wrong.example"), "{text}");
}

/// Item 4: HPACK makes a few wire bytes into a large header list; the front takes at most
/// 32 KiB of it per stream.
#[test]
fn a_large_header_list_is_refused() {
    let front = Front::start(config());
    let mut c = H2::connect(front.addr);
    let value = "v".repeat(4000);
    let headers: Vec<(String, String)> = (0..12)
        .map(|i| (format!("x-big-{i}"), value.clone()))
        .collect();
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = c.request("GET", "/hello", &refs, b"");
    assert!(
        matches!(&r, Ok(resp) if resp.status == 431),
        "48 KB of headers: {r:?}"
    );
    // The stream is refused, not the connection.
    assert_eq!(ok(c.get("/hello")).status, 200);
}

/// Item 7: streams reset right after they were accepted (not only before) are counted,
/// and a connection that does it to most of its streams gets GOAWAY.
#[test]
fn resets_after_accept_get_the_connection_closed() {
    let front = Front::start(config());
    let mut c = H2::connect(front.addr);
    let mut refused = None;
    for i in 0..150 {
        let req = Request::get("http://test/slow/200")
            .body(())
            .expect("request");
        match c.open(req, true) {
            Ok((_resp, mut send)) => {
                std::thread::sleep(Duration::from_millis(5));
                send.send_reset(Reason::CANCEL);
            }
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let closed = refused.is_some() || c.closed_within(Duration::from_secs(5));
    assert!(
        closed,
        "150 streams reset just after they started, and no GOAWAY"
    );
    // Other clients are served.
    assert_eq!(front.get("/hello").status, 200);
}

/// Item 3: a connection that never acknowledges the closing PING is dropped.
#[test]
fn a_quiet_http2_connection_that_ignores_goaway_is_dropped() {
    let mut cfg = config();
    cfg.keep_alive = Duration::from_secs(1);
    cfg.header_timeout = Duration::from_secs(1);
    let front = Front::start(cfg);
    let mut s = std::net::TcpStream::connect(front.addr).expect("connect");
    // The preface and empty SETTINGS, then silence: nothing acknowledged, ever.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .expect("preface");
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break true,
        }
        if started.elapsed() > Duration::from_secs(12) {
            break false;
        }
    };
    assert!(closed, "a silent HTTP/2 connection was held open");
}

/// Item 1: an HTTP/2 upload is received before it queues for a thread, as over HTTP/1.1:
/// trickling streams hold none.
#[test]
fn trickling_http2_uploads_hold_no_thread() {
    let front = Front::start(config());
    let mut c = H2::connect(front.addr);
    let mut uploads = Vec::new();
    for _ in 0..3 {
        let req = Request::post("http://test/echo")
            .header("content-length", "100")
            .body(())
            .expect("request");
        let (resp, mut send) = c.open(req, false).expect("stream");
        send.send_data(Bytes::from_static(b"x"), false)
            .expect("data");
        uploads.push((resp, send));
    }
    std::thread::sleep(Duration::from_millis(300));
    // Both threads are free: a request on another connection is served at once.
    let started = Instant::now();
    let r = front.connect().get("/slow/10");
    assert_eq!(r.status, 200, "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?}: the trickling uploads held the threads",
        started.elapsed()
    );
    for (resp, mut send) in uploads {
        send.send_data(Bytes::from(vec![b'y'; 99]), true)
            .expect("rest");
        let r = c.run(resp).expect("response");
        assert_eq!(r.status(), 200);
    }
}

/// Item 1, streamed bodies: a client trickling a body the application reads as it comes
/// (larger than --body-buffer, or sent after `100 Continue`) gets 408 once it falls below
/// --body-min-rate, over both protocols, and the application hears it is gone.
#[test]
fn a_streamed_upload_below_the_minimum_rate_gets_408_over_both_protocols() {
    let mut cfg = config();
    cfg.body_buffer = 1024;
    cfg.body_min_rate = 1000;
    cfg.threads = spillway_server::Threads {
        min: 3,
        max: 3,
        pinned: Some(3),
    };
    let front = Front::start(cfg);

    let mut large = front.connect();
    large.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
    let mut expect = front.connect();
    expect.send(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(expect.read_interim(), Ok(100));
    let started = Instant::now();
    let mut c = H2::connect(front.addr);
    let req = Request::post("http://test/echo")
        .header("content-length", "100000")
        .body(())
        .expect("request");
    let (resp, mut send) = c.open(req, false).expect("stream");
    let h2 = c.spawn(async move { resp.await.map(|r| r.status().as_u16()) });
    // One byte every 200 ms on each: alive, but far below 1000 B/s.
    let mut h1 = [(large, None), (expect, None)];
    let done = |h1: &[(spillway_testkit::Conn, Option<spillway_testkit::Response>)]| {
        h1.iter().all(|(_, r)| r.is_some())
    };
    while started.elapsed() < Duration::from_secs(15) && !(done(&h1) && h2.is_finished()) {
        let _ = send.send_data(Bytes::from_static(b"z"), false);
        for (conn, answer) in h1.iter_mut() {
            if answer.is_none() {
                let _ = conn.try_send(b"z");
                *answer = conn
                    .poll_response(Duration::from_millis(100))
                    .unwrap_or(None);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (what, (_, answer)) in ["over --body-buffer", "after 100 Continue"].iter().zip(&h1) {
        let r = answer
            .as_ref()
            .unwrap_or_else(|| panic!("no answer to a trickled body {what}"));
        assert_eq!(r.status, 408, "{what}: {r}");
    }
    assert!(h2.is_finished(), "no answer over HTTP/2 to a trickled body");
    let status = c.run(h2).expect("the task");
    assert_eq!(status.ok(), Some(408));
    assert!(front.marked("cancelled-echo"), "the application waited on");
}

/// A stream the client resets once its request runs cancels it on the worker, as a
/// client leaving an HTTP/1.1 connection does; a full queue is 503 with Retry-After.
#[test]
fn a_reset_stream_cancels_its_request_and_a_full_queue_is_503_over_http2() {
    let mut cfg = config();
    cfg.max_queue = 1;
    let front = Front::start(cfg);
    let mut c = H2::connect(front.addr);
    let req = Request::get("http://test/wait-cancel/h2")
        .body(())
        .expect("request");
    let (_resp, mut send) = c.open(req, true).expect("stream");
    std::thread::sleep(Duration::from_millis(300));
    send.send_reset(Reason::CANCEL);
    assert!(
        front.marked("cancelled-h2"),
        "the application ran on for a reset stream"
    );

    // Two threads busy, one request queued: the next is refused at once.
    let mut busy = Vec::new();
    for _ in 0..3 {
        let req = Request::get("http://test/slow/1500")
            .body(())
            .expect("request");
        busy.push(c.open(req, true).expect("stream"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = ok(c.get("/hello"));
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.headers.get("retry-after").is_some(), "{r:?}");
    for (resp, _) in busy {
        assert_eq!(c.run(resp).expect("response").status(), 200);
    }
}

/// Item 17: a worker that breaks the reply order is retired (replaced), like one that
/// breaks the credit rules, over either protocol, not marked stuck and kept.
#[test]
fn a_worker_that_breaks_the_reply_order_is_replaced() {
    let front = Front::start(config());
    let pid = |front: &Front| front.get("/pid").text();
    for over_h2 in [false, true] {
        let before = pid(&front);
        let status = if over_h2 {
            ok(H2::connect(front.addr).get("/end-no-head")).status
        } else {
            front.get("/end-no-head").status
        };
        assert_eq!(status, 502);
        let until = Instant::now() + Duration::from_secs(8);
        let mut now = pid(&front);
        while now == before && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
            now = pid(&front);
        }
        assert_ne!(
            now, before,
            "the worker that broke the rules still serves (h2: {over_h2})"
        );
    }
}
