//! Responses onto the wire: the status line and headers the application chose, the framing
//! the front chooses (`Content-Length` as given, else chunked on HTTP/1.1 and
//! close-delimited on HTTP/1.0), `Date`, and the connection headers. Hop-by-hop headers are
//! the server's business (PEP 3333), so the application's are dropped.
//!
//! Encoding is pure: it appends to a buffer the connection writes in one syscall.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use spillway_proto::Protocol;

use crate::error::Answer;

/// What the request says about how to answer it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reply {
    /// `HEAD`: headers only, whatever the application produced.
    pub head_method: bool,
    pub version: Protocol,
    /// The connection may stay open after this response (the client wants it and the
    /// server is not draining).
    pub keep_alive: bool,
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body may follow (HEAD, 204, 304).
    None,
    /// `Content-Length`, with the bytes still to send.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// HTTP/1.0 without a length: the body ends when the connection closes.
    UntilClose,
}

/// The outcome of encoding a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub framing: BodyFraming,
    /// The connection closes after this response.
    pub close: bool,
    /// The status actually sent (an invalid one from a worker becomes 500).
    pub status: u16,
}

/// Appends a response head for `status` and the application's `headers`.
pub(crate) fn encode_head(
    status: u16,
    headers: &[(Bytes, Bytes)],
    reply: &Reply,
    keep_alive_value: &[u8],
    request_id: &[u8],
    dst: &mut BytesMut,
) -> Head {
    let status = if (200..=599).contains(&status) {
        status
    } else {
        500
    };
    dst.reserve(
        128 + headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>(),
    );
    status_line(status, dst);
    let no_body = reply.head_method || status == 204 || status == 304;
    let mut length: Option<u64> = None;
    let mut app_close = false;
    let mut has_date = false;
    let mut has_request_id = request_id.is_empty();
    for (name, value) in headers {
        if !valid_name(name) || !valid_value(value) {
            tracing::warn!(
                header = %String::from_utf8_lossy(name).escape_debug(),
                "the worker passed an invalid response header; dropped"
            );
            continue;
        }
        match classify(name) {
            Class::HopByHop { connection } => {
                if connection
                    && value
                        .split(|&b| b == b',')
                        .any(|t| trim(t).eq_ignore_ascii_case(b"close"))
                {
                    app_close = true;
                }
                continue;
            }
            Class::ContentLength => {
                let Some(n) = parse_length(value) else {
                    tracing::warn!("the application sent an invalid Content-Length; dropped");
                    continue;
                };
                if length.is_some() || status == 204 {
                    continue;
                }
                length = Some(n);
            }
            Class::Date => has_date = true,
            Class::Other => has_request_id |= name.eq_ignore_ascii_case(b"x-request-id"),
        }
        put_header(dst, name, value);
    }
    if !has_date {
        with_date(|d| put_header(dst, b"Date", d));
    }
    // The application's own, if it set one; else the request's.
    if !has_request_id {
        put_header(dst, b"X-Request-Id", request_id);
    }
    let framing = if no_body {
        BodyFraming::None
    } else if let Some(n) = length {
        BodyFraming::Length(n)
    } else if reply.version == Protocol::Http11 {
        put_header(dst, b"Transfer-Encoding", b"chunked");
        BodyFraming::Chunked
    } else {
        BodyFraming::UntilClose
    };
    let close = !reply.keep_alive || app_close || framing == BodyFraming::UntilClose;
    connection_headers(close, reply.version, keep_alive_value, dst);
    dst.put_slice(b"\r\n");
    Head {
        framing,
        close,
        status,
    }
}

/// Appends one piece of body; returns false if the application wrote past its
/// `Content-Length` (the excess is dropped and the connection must close).
pub(crate) fn encode_body(framing: &mut BodyFraming, data: &[u8], dst: &mut BytesMut) -> bool {
    if data.is_empty() {
        return true;
    }
    match framing {
        BodyFraming::None => true,
        BodyFraming::Length(left) => {
            let n = (*left).min(data.len() as u64) as usize;
            dst.put_slice(&data[..n]);
            *left -= n as u64;
            n == data.len()
        }
        BodyFraming::Chunked => {
            put_hex(dst, data.len());
            dst.put_slice(b"\r\n");
            dst.put_slice(data);
            dst.put_slice(b"\r\n");
            true
        }
        BodyFraming::UntilClose => {
            dst.put_slice(data);
            true
        }
    }
}

/// Appends the end of the body; returns false if the body is incomplete (fewer bytes than
/// its `Content-Length`), so the connection must close for the client to notice.
pub(crate) fn encode_end(framing: BodyFraming, dst: &mut BytesMut) -> bool {
    match framing {
        BodyFraming::Chunked => {
            dst.put_slice(b"0\r\n\r\n");
            true
        }
        BodyFraming::Length(left) => left == 0,
        BodyFraming::None | BodyFraming::UntilClose => true,
    }
}

/// Appends the front's own answer (an error or refusal); returns whether the connection
/// must close after it.
pub(crate) fn encode_answer(
    answer: Answer,
    retry_after: Option<u64>,
    reply: &Reply,
    keep_alive_value: &[u8],
    request_id: &[u8],
    dst: &mut BytesMut,
) -> bool {
    let body = answer.body().as_bytes();
    status_line(answer.status(), dst);
    put_header(dst, b"Content-Type", b"text/plain; charset=utf-8");
    let mut n = itoa::Buffer::new();
    put_header(dst, b"Content-Length", n.format(body.len()).as_bytes());
    if let Some(secs) = retry_after {
        put_header(dst, b"Retry-After", n.format(secs).as_bytes());
    }
    with_date(|d| put_header(dst, b"Date", d));
    if !request_id.is_empty() {
        put_header(dst, b"X-Request-Id", request_id);
    }
    let close = !reply.keep_alive || answer.closes_connection();
    connection_headers(close, reply.version, keep_alive_value, dst);
    dst.put_slice(b"\r\n");
    if !reply.head_method {
        dst.put_slice(body);
    }
    close
}

/// The interim response that invites the body of an `Expect: 100-continue` request.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

fn status_line(status: u16, dst: &mut BytesMut) {
    dst.put_slice(b"HTTP/1.1 ");
    let mut n = itoa::Buffer::new();
    dst.put_slice(n.format(status).as_bytes());
    dst.put_u8(b' ');
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    dst.put_slice(reason.as_bytes());
    dst.put_slice(b"\r\n");
}

fn connection_headers(close: bool, version: Protocol, keep_alive_value: &[u8], dst: &mut BytesMut) {
    if close {
        put_header(dst, b"Connection", b"close");
    } else {
        if version == Protocol::Http10 {
            put_header(dst, b"Connection", b"keep-alive");
        }
        put_header(dst, b"Keep-Alive", keep_alive_value);
    }
}

fn put_header(dst: &mut BytesMut, name: &[u8], value: &[u8]) {
    dst.put_slice(name);
    dst.put_slice(b": ");
    dst.put_slice(value);
    dst.put_slice(b"\r\n");
}

fn put_hex(dst: &mut BytesMut, mut n: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    dst.put_slice(&digits[i..]);
}

enum Class {
    HopByHop { connection: bool },
    ContentLength,
    Date,
    Other,
}

/// A connection-specific header, which never crosses a hop (RFC 9110 §7.6.1) and which
/// HTTP/2 forbids outright.
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    matches!(classify(name), Class::HopByHop { .. })
}

fn classify(name: &[u8]) -> Class {
    const HOP: [&[u8]; 7] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
    ];
    if name.eq_ignore_ascii_case(b"content-length") {
        Class::ContentLength
    } else if name.eq_ignore_ascii_case(b"date") {
        Class::Date
    } else if let Some(h) = HOP.iter().find(|h| name.eq_ignore_ascii_case(h)) {
        Class::HopByHop {
            connection: *h == b"connection",
        }
    } else {
        Class::Other
    }
}

fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn valid_value(value: &[u8]) -> bool {
    value.iter().all(|&b| b >= 0x20 && b != 0x7f || b == b'\t')
}

pub(crate) fn parse_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &v[start..end.max(start)]
}

thread_local! {
    /// The formatted `Date` value and the second it is for: formatting once a second,
    /// not once per response.
    static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut d = cell.borrow_mut();
        if d.0 != secs {
            d.1 = httpdate::fmt_http_date(now).into_bytes();
            d.0 = secs;
        }
        f(&d.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KA: &[u8] = b"timeout=75";

    fn reply(version: Protocol, keep_alive: bool) -> Reply {
        Reply {
            head_method: false,
            version,
            keep_alive,
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    Bytes::copy_from_slice(k.as_bytes()),
                    Bytes::copy_from_slice(v.as_bytes()),
                )
            })
            .collect()
    }

    fn text(b: &BytesMut) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[test]
    fn a_response_with_a_length_keeps_it_and_announces_keep_alive() {
        let mut out = BytesMut::new();
        let head = encode_head(
            200,
            &h(&[("Content-Type", "text/plain"), ("Content-Length", "5")]),
            &reply(Protocol::Http11, true),
            KA,
            b"",
            &mut out,
        );
        assert_eq!(head.framing, BodyFraming::Length(5));
        assert!(!head.close);
        let t = text(&out);
        assert!(
            t.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"),
            "{t}"
        );
        assert!(
            t.contains("\r\nDate: ") && t.contains("\r\nKeep-Alive: timeout=75\r\n"),
            "{t}"
        );
        assert!(t.ends_with("\r\n\r\n"));
    }

    #[test]
    fn without_a_length_http11_is_chunked_and_http10_is_close_delimited() {
        let mut out = BytesMut::new();
        let head = encode_head(200, &[], &reply(Protocol::Http11, true), KA, b"", &mut out);
        assert_eq!(head.framing, BodyFraming::Chunked);
        assert!(text(&out).contains("Transfer-Encoding: chunked\r\n"));
        let mut out = BytesMut::new();
        let head = encode_head(200, &[], &reply(Protocol::Http10, true), KA, b"", &mut out);
        assert_eq!(head.framing, BodyFraming::UntilClose);
        assert!(head.close);
        assert!(text(&out).contains("Connection: close\r\n"));
        assert!(!text(&out).contains("chunked"));
    }

    #[test]
    fn hop_by_hop_headers_from_the_app_are_dropped_but_close_is_honoured() {
        let mut out = BytesMut::new();
        let head = encode_head(
            200,
            &h(&[
                ("Connection", "close"),
                ("Transfer-Encoding", "gzip"),
                ("Upgrade", "h2c"),
                ("X-Ok", "1"),
            ]),
            &reply(Protocol::Http11, true),
            KA,
            b"",
            &mut out,
        );
        let t = text(&out);
        assert!(head.close);
        assert!(
            !t.contains("gzip") && !t.contains("h2c") && t.contains("X-Ok: 1"),
            "{t}"
        );
        assert_eq!(t.matches("Connection: close").count(), 1, "{t}");
    }

    #[test]
    fn head_204_and_304_have_no_body() {
        for (status, head_method) in [(200, true), (204, false), (304, false)] {
            let mut out = BytesMut::new();
            let r = Reply {
                head_method,
                ..reply(Protocol::Http11, true)
            };
            let head = encode_head(
                status,
                &h(&[("Content-Length", "10")]),
                &r,
                KA,
                b"",
                &mut out,
            );
            assert_eq!(head.framing, BodyFraming::None, "{status}");
            assert!(!text(&out).contains("chunked"));
            assert_eq!(
                text(&out).contains("Content-Length"),
                status != 204,
                "{status}"
            );
        }
    }

    #[test]
    fn invalid_statuses_and_headers_from_a_worker_do_not_reach_the_wire() {
        let mut out = BytesMut::new();
        let head = encode_head(
            999,
            &h(&[("Bad Name", "x"), ("X-Inject", "a\r\nSet-Cookie: evil")]),
            &reply(Protocol::Http11, true),
            KA,
            b"",
            &mut out,
        );
        assert_eq!(head.status, 500);
        let t = text(&out);
        assert!(
            t.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
            "{t}"
        );
        assert!(!t.contains("evil") && !t.contains("Bad Name"), "{t}");
    }

    #[test]
    fn body_pieces_follow_the_framing() {
        let mut out = BytesMut::new();
        let mut f = BodyFraming::Chunked;
        assert!(encode_body(&mut f, b"hello world, this is long", &mut out));
        assert!(encode_end(f, &mut out));
        assert_eq!(text(&out), "19\r\nhello world, this is long\r\n0\r\n\r\n");
        let mut out = BytesMut::new();
        let mut f = BodyFraming::Length(3);
        assert!(!encode_body(&mut f, b"abcd", &mut out), "one byte too many");
        assert_eq!(&out[..], b"abc");
        assert!(encode_end(f, &mut out));
        let mut f = BodyFraming::Length(3);
        assert!(encode_body(&mut f, b"ab", &mut out));
        assert!(!encode_end(f, &mut out), "one byte short");
    }

    #[test]
    fn answers_carry_length_retry_after_and_close() {
        let mut out = BytesMut::new();
        let close = encode_answer(
            Answer::Refused(crate::error::AdmissionError::QueueFull),
            Some(3),
            &reply(Protocol::Http11, true),
            KA,
            b"",
            &mut out,
        );
        assert!(!close);
        let t = text(&out);
        assert!(t.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{t}");
        assert!(
            t.contains("Retry-After: 3\r\n") && t.contains("Keep-Alive: timeout=75"),
            "{t}"
        );
        let body = Answer::Refused(crate::error::AdmissionError::QueueFull).body();
        assert!(t.ends_with(body) && t.contains(&format!("Content-Length: {}\r\n", body.len())));
        let mut out = BytesMut::new();
        assert!(encode_answer(
            Answer::Malformed("Bad\n"),
            None,
            &reply(Protocol::Http11, true),
            KA,
            b"",
            &mut out
        ));
        assert!(text(&out).contains("Connection: close"));
    }

    #[test]
    fn the_request_id_is_added_unless_the_application_set_one() {
        let r = reply(Protocol::Http11, true);
        let mut out = BytesMut::new();
        encode_head(200, &[], &r, KA, b"abc-1", &mut out);
        assert!(
            text(&out).contains("\r\nX-Request-Id: abc-1\r\n"),
            "{}",
            text(&out)
        );
        let mut out = BytesMut::new();
        encode_head(
            200,
            &h(&[("x-request-id", "app")]),
            &r,
            KA,
            b"abc-1",
            &mut out,
        );
        assert_eq!(text(&out).matches("equest-").count(), 1, "{}", text(&out));
        let mut out = BytesMut::new();
        encode_answer(Answer::TimedOut, None, &r, KA, b"abc-2", &mut out);
        assert!(
            text(&out).contains("X-Request-Id: abc-2\r\n"),
            "{}",
            text(&out)
        );
    }
}
