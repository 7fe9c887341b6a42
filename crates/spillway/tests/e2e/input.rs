//! Request bodies: wsgi.input methods, framing, large uploads, `Expect: 100-continue`.

use crate::support::{peak_rss_kib, pseudo_random, Crc32, Json, Spillway};
use std::time::Duration;

fn input_app() -> crate::support::Server {
    Spillway::new("apps/input.py:app")
        .arg("--threads")
        .arg("2")
        .start()
}

fn ok_json(res: &crate::support::Response) -> Json {
    assert_eq!(res.status, 200, "{res}");
    res.json()
}

fn after_eof_is_empty(j: &Json) {
    let v: Vec<u64> = j.get("after_eof").arr().iter().map(Json::u64).collect();
    assert_eq!(
        v,
        vec![0, 0, 0],
        "read()/read(5)/readline() at EOF must give b'': {j}"
    );
}

#[test]
fn read_n_returns_at_most_n_bytes_then_eof() {
    let srv = input_app();
    let j = ok_json(&srv.post("/read_n?n=4", "text/plain", b"0123456789"));
    assert_eq!(j.get("body").s(), "0123456789");
    assert!(
        j.get("sizes")
            .arr()
            .iter()
            .all(|s| s.u64() <= 4 && s.u64() > 0),
        "{j}"
    );
    after_eof_is_empty(&j);
}

#[test]
fn read_without_argument_returns_everything() {
    let srv = input_app();
    let j = ok_json(&srv.post("/read_all", "text/plain", b"all of it\nand more"));
    assert_eq!(j.get("body").s(), "all of it\nand more");
    after_eof_is_empty(&j);
    let j = ok_json(&srv.post("/read_none_arg?none=1", "text/plain", b"via read(None)"));
    assert_eq!(j.get("body").s(), "via read(None)");
    let j = ok_json(&srv.post("/read_none_arg?none=0", "text/plain", b"via read(-1)"));
    assert_eq!(j.get("body").s(), "via read(-1)");
}

#[test]
fn readline_with_and_without_limit() {
    let srv = input_app();
    let j = ok_json(&srv.post("/readline", "text/plain", b"one\ntwo\n\nthree"));
    assert_eq!(j.get("lines").strs(), vec!["one\n", "two\n", "\n", "three"]);
    after_eof_is_empty(&j);
    let j = ok_json(&srv.post("/readline?n=2", "text/plain", b"abcde\nfg\n"));
    assert_eq!(j.get("lines").strs(), vec!["ab", "cd", "e\n", "fg", "\n"]);
}

#[test]
fn readlines_and_iteration() {
    let srv = input_app();
    let j = ok_json(&srv.post("/readlines", "text/plain", b"a\nb\nc"));
    assert_eq!(j.get("lines").strs(), vec!["a\n", "b\n", "c"]);
    after_eof_is_empty(&j);
    let j = ok_json(&srv.post("/iter", "text/plain", b"x\ny\n"));
    assert_eq!(j.get("lines").strs(), vec!["x\n", "y\n"]);
    after_eof_is_empty(&j);
}

#[test]
fn mixed_reads_keep_position() {
    let srv = input_app();
    let j = ok_json(&srv.post("/mixed", "text/plain", b"abcdef\nghi\njkl"));
    assert_eq!(j.get("parts").strs(), vec!["abc", "def\n", "ghi\njkl"]);
}

#[test]
fn no_body_reads_as_empty() {
    let srv = input_app();
    let j = ok_json(&srv.get("/read_all"));
    assert_eq!(j.get("body").s(), "");
    after_eof_is_empty(&j);
}

#[test]
fn chunked_request_body() {
    let srv = input_app();
    let res = srv.raw(
        b"POST /read_all HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    let j = ok_json(&res);
    assert_eq!(j.get("body").s(), "hello world!");
    assert_eq!(j.get("input_terminated").bool(), Some(true));
    after_eof_is_empty(&j);
}

#[test]
fn chunked_body_read_line_by_line() {
    let srv = input_app();
    let res = srv.raw(
        b"POST /readline HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          3\r\nab\n\r\n4\r\ncd\nx\r\n0\r\n\r\n",
    );
    let j = ok_json(&res);
    assert_eq!(j.get("lines").strs(), vec!["ab\n", "cd\n", "x"]);
}

/// Streams `total` bytes in 64 KiB pieces; returns (crc, response).
fn upload(
    srv: &crate::support::Server,
    total: usize,
    chunked: bool,
) -> (u32, crate::support::Response) {
    let block = pseudo_random(1 << 20, 0x5eed);
    let mut conn = srv.connect();
    let head = if chunked {
        "POST /hash HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
    } else {
        format!("POST /hash HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n\r\n")
    };
    conn.send(head.as_bytes());
    let mut crc = Crc32::default();
    let mut sent = 0usize;
    let piece = 64 * 1024;
    while sent < total {
        let n = piece.min(total - sent);
        let off = sent % block.len();
        let mut data = block[off..(off + n).min(block.len())].to_vec();
        // Stamp the offset so a reordered or repeated piece changes the CRC.
        let stamp = (sent as u64).to_le_bytes();
        let k = stamp.len().min(data.len());
        data[..k].copy_from_slice(&stamp[..k]);
        crc.update(&data);
        if chunked {
            conn.send(format!("{:x}\r\n", data.len()).as_bytes());
            conn.send(&data);
            conn.send(b"\r\n");
        } else {
            conn.send(&data);
        }
        sent += data.len();
    }
    if chunked {
        conn.send(b"0\r\n\r\n");
    }
    conn.set_timeout(Duration::from_secs(60));
    let res = conn.read_response();
    (crc.finish(), res)
}

#[test]
fn large_upload_streams_through_with_bounded_memory() {
    let srv = input_app();
    // Warm up: a worker exists and has imported the app.
    let j = ok_json(&srv.post("/hash", "application/octet-stream", b"warm"));
    let worker = j.get("pid").u64() as u32;
    let front_before = peak_rss_kib(srv.pid).expect("front VmHWM");
    let worker_before = peak_rss_kib(worker).expect("worker VmHWM");

    let total = 64 << 20;
    let (crc, res) = upload(&srv, total, false);
    let j = ok_json(&res);
    assert_eq!(j.get("len").u64(), total as u64);
    assert_eq!(j.get("crc").u64(), crc as u64, "body corrupted in transit");

    let (crc, res) = upload(&srv, 16 << 20, true);
    let j = ok_json(&res);
    assert_eq!(j.get("len").u64(), 16 << 20);
    assert_eq!(
        j.get("crc").u64(),
        crc as u64,
        "chunked body corrupted in transit"
    );

    // Neither process may have held the 64 MiB body: allow 32 MiB of growth each.
    let front_after = peak_rss_kib(srv.pid).expect("front VmHWM");
    let worker_after = peak_rss_kib(worker).expect("worker VmHWM");
    assert!(
        front_after - front_before < 32 * 1024,
        "front peak RSS grew from {front_before} KiB to {front_after} KiB during a 64 MiB upload"
    );
    assert!(
        worker_after - worker_before < 32 * 1024,
        "worker peak RSS grew from {worker_before} KiB to {worker_after} KiB during a 64 MiB upload"
    );
}

#[test]
fn expect_100_continue_is_sent_when_the_app_reads() {
    let srv = input_app();
    let mut conn = srv.connect();
    conn.send(
        b"POST /read_all HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    );
    // The body is held back until the server asks for it.
    let status = conn
        .read_interim()
        .unwrap_or_else(|e| panic!("no 100 Continue: {e}"));
    assert_eq!(status, 100);
    conn.send(b"hello there");
    let res = conn.read_response();
    let j = ok_json(&res);
    assert_eq!(j.get("body").s(), "hello there");
}

#[test]
fn expect_100_continue_is_not_sent_when_the_app_does_not_read() {
    let srv = input_app();
    let mut conn = srv.connect();
    conn.send(
        b"POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    );
    let res = conn.read_response();
    assert_eq!(
        res.head.interim,
        Vec::<u16>::new(),
        "got an interim response although the app never read wsgi.input: {res}"
    );
    assert_eq!(res.status, 200, "{res}");
    assert_eq!(res.json().get("read").bool(), Some(false));
}

#[test]
fn a_request_without_expect_gets_no_100() {
    let srv = input_app();
    let res = srv.post("/read_all", "text/plain", b"plain");
    assert!(res.head.interim.is_empty(), "{res}");
    assert_eq!(res.json().get("body").s(), "plain");
}

#[test]
fn unread_body_does_not_break_the_next_request_on_the_connection() {
    let srv = input_app();
    let mut conn = srv.connect();
    let res = conn.request(
        "POST",
        "/noread",
        &[],
        b"ignored body bytes that nobody reads",
    );
    assert_eq!(res.status, 200, "{res}");
    // The unread body must be discarded, not parsed as the next request; closing the
    // connection instead is fine if the response said so.
    if res
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    {
        conn = srv.connect();
    }
    let res = conn.request("POST", "/read_all", &[], b"second");
    let j = ok_json(&res);
    assert_eq!(j.get("body").s(), "second");
}
