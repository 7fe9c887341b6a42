//! Request heads off the wire: httparse does the tokenising, and this module adds what
//! httparse leaves to its caller, strictly, because a lenient reading of the message
//! boundary is how requests get smuggled past a proxy: a bare LF is not a line end, a
//! `Transfer-Encoding` must be exactly one `chunked`, and a message may not carry both
//! `Transfer-Encoding` and `Content-Length`.
//!
//! Parsing is pure: bytes in, a [`RawHead`] borrowing them out. What the head means for
//! the application (environ names, trust, limits on fields) is `request.rs`'s business.

use std::mem::MaybeUninit;

use spillway_proto::Protocol;

use crate::error::Answer;

/// How the request body is framed on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    None,
    /// `Content-Length: n` (n > 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Limits that bound how much of a head the front reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    /// Longest request target (`--limit-request-line`).
    pub target: usize,
    /// Most header fields (`--limit-request-fields`).
    pub fields: usize,
    /// Longest header field, name and value (`--limit-request-field-size`).
    pub field_size: usize,
}

impl HeadLimits {
    /// Longest request line: method, target, version and their separators.
    fn request_line(&self) -> usize {
        self.target + 32
    }

    /// Most bytes a complete head may take; a client that sends more without finishing
    /// its head is refused before the front buffers any further.
    pub fn head_bytes(&self) -> usize {
        self.request_line() + self.fields * (self.field_size + 2) + 2
    }
}

/// A parsed request head, borrowing the connection's read buffer.
#[derive(Debug)]
pub(crate) struct RawHead<'b> {
    /// Bytes the head took, final CRLF included.
    pub len: usize,
    pub method: &'b str,
    pub target: &'b str,
    pub version: Protocol,
    pub headers: &'b [httparse::Header<'b>],
    pub framing: Framing,
    /// The client wants the connection kept open after the response.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1.
    pub expect_continue: bool,
}

/// Parses a head from the start of `buf`. `Ok(None)`: not complete yet, read more.
/// `storage` must have room for one more header than the limit allows; it need not be
/// initialised (a head is parsed per request, and zeroing storage for a hundred headers
/// each time shows in a profile).
pub(crate) fn parse<'b>(
    buf: &'b [u8],
    limits: &HeadLimits,
    storage: &'b mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<RawHead<'b>>, Answer> {
    let mut req = httparse::Request::new(&mut []);
    let parsed = req.parse_with_uninit_headers(buf, storage);
    let httparse::Request {
        method,
        path,
        version,
        headers,
    } = req;
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            check_partial(buf, limits)?;
            return Ok(None);
        }
        Err(e) => return Err(parse_error(e, buf, limits)),
    };
    if has_bare_lf(&buf[..len]) {
        return Err(Answer::Malformed(
            "Bad Request: a line ends in a bare LF, not CRLF\n",
        ));
    }
    let (Some(method), Some(target), Some(minor)) = (method, path, version) else {
        return Err(Answer::Malformed("Bad Request\n"));
    };
    if target.len() > limits.target {
        return Err(Answer::TargetTooLong);
    }
    let version = if minor == 1 {
        Protocol::Http11
    } else {
        Protocol::Http10
    };
    let headers: &'b [httparse::Header<'b>] = headers;
    if headers.len() > limits.fields {
        return Err(Answer::HeadersTooLarge);
    }
    let meta = scan_headers(headers, version)?;
    Ok(Some(RawHead {
        len,
        method,
        target,
        version,
        headers,
        framing: meta.framing,
        keep_alive: meta.keep_alive,
        expect_continue: meta.expect_continue,
    }))
}

/// What the framing headers say.
struct Meta {
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
}

fn scan_headers(headers: &[httparse::Header<'_>], version: Protocol) -> Result<Meta, Answer> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value)?;
            if length.is_some_and(|prev| prev != n) {
                return Err(Answer::Malformed(
                    "Bad Request: conflicting Content-Length values\n",
                ));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if version == Protocol::Http10 {
                return Err(Answer::Malformed(
                    "Bad Request: Transfer-Encoding in an HTTP/1.0 request\n",
                ));
            }
            if te_seen {
                return Err(Answer::Malformed(
                    "Bad Request: more than one Transfer-Encoding header\n",
                ));
            }
            te_seen = true;
            chunked = is_exactly_chunked(h.value)?;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") && version == Protocol::Http11 {
            expect_continue = trim(h.value).eq_ignore_ascii_case(b"100-continue");
        }
    }
    let framing = match (chunked, length) {
        (true, Some(_)) => {
            // RFC 9112 §6.3: a sender must not send both; the two readings of such a
            // message are exactly what request smuggling exploits.
            return Err(Answer::Malformed(
                "Bad Request: both Content-Length and Transfer-Encoding\n",
            ));
        }
        (true, None) => Framing::Chunked,
        (false, Some(0) | None) => Framing::None,
        (false, Some(n)) => Framing::Length(n),
    };
    let keep_alive = !close && (version == Protocol::Http11 || keep_alive_token);
    Ok(Meta {
        framing,
        keep_alive,
        expect_continue,
    })
}

/// `Content-Length` is one run of digits (RFC 9110 §8.6); signs, blanks inside, lists and
/// overflow are refused.
fn parse_content_length(v: &[u8]) -> Result<u64, Answer> {
    let v = trim(v);
    let bad = Answer::Malformed("Bad Request: invalid Content-Length\n");
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    v.iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add((d - b'0') as u64)
        })
        .ok_or(bad)
}

/// True for exactly `chunked`; any other coding is not implemented (501), and a repeated
/// or misplaced `chunked` is malformed (400).
fn is_exactly_chunked(v: &[u8]) -> Result<bool, Answer> {
    let mut codings = v.split(|&b| b == b',').map(trim);
    let first = codings.next().unwrap_or_default();
    let rest: Vec<&[u8]> = codings.collect();
    if first.eq_ignore_ascii_case(b"chunked") && rest.is_empty() {
        return Ok(true);
    }
    if first.eq_ignore_ascii_case(b"chunked")
        || rest.iter().any(|c| c.eq_ignore_ascii_case(b"chunked"))
    {
        return Err(Answer::Malformed(
            "Bad Request: chunked must be the only transfer coding, once\n",
        ));
    }
    Err(Answer::CodingNotImplemented)
}

/// Comma-separated list members, blanks trimmed, empty members skipped.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
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

fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

/// Whether the bytes that arrived since `from` may end a head (an empty line, with or
/// without CR: a bare-LF head must still be parsed, to be refused). Parsing only then
/// keeps a client that trickles a long head byte by byte from costing a full parse per
/// byte.
pub(crate) fn may_end_head(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(2);
    buf[start..].iter().enumerate().any(|(i, &b)| {
        b == b'\n' && (buf[start..][..i].ends_with(b"\n") || buf[start..][..i].ends_with(b"\n\r"))
    })
}

/// An incomplete head that can no longer become a valid one within the limits.
pub(crate) fn check_partial(buf: &[u8], limits: &HeadLimits) -> Result<(), Answer> {
    let line_end = buf.iter().position(|&b| b == b'\n');
    if line_end.is_none() && buf.len() > limits.request_line() {
        return Err(Answer::TargetTooLong);
    }
    if buf.len() > limits.head_bytes() {
        return Err(Answer::HeadersTooLarge);
    }
    Ok(())
}

fn parse_error(e: httparse::Error, buf: &[u8], limits: &HeadLimits) -> Answer {
    match e {
        httparse::Error::TooManyHeaders => Answer::HeadersTooLarge,
        httparse::Error::Version => {
            // `HTTP/2.0` and friends are well-formed versions we do not speak; anything
            // else in that place is just malformed.
            let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
            let looks_like_version = line
                .windows(6)
                .any(|w| w.starts_with(b"HTTP/") && w[5].is_ascii_digit());
            if looks_like_version {
                Answer::VersionNotSupported
            } else {
                Answer::Malformed("Bad Request: malformed request line\n")
            }
        }
        httparse::Error::Token => {
            // A target longer than the limit is 414 even when a later byte is bad.
            if buf.len() > limits.request_line() && !buf[..limits.request_line()].contains(&b'\n') {
                Answer::TargetTooLong
            } else {
                Answer::Malformed("Bad Request: malformed request line\n")
            }
        }
        httparse::Error::HeaderName | httparse::Error::HeaderValue => {
            Answer::Malformed("Bad Request: malformed header field\n")
        }
        httparse::Error::NewLine => Answer::Malformed("Bad Request: malformed line ending\n"),
        httparse::Error::Status => Answer::Malformed("Bad Request\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        target: 4094,
        fields: 100,
        field_size: 8190,
    };

    fn head(bytes: &[u8]) -> Result<Option<(Framing, bool, bool, usize)>, Answer> {
        let mut storage = vec![MaybeUninit::uninit(); LIMITS.fields + 1];
        parse(bytes, &LIMITS, &mut storage)
            .map(|o| o.map(|h| (h.framing, h.keep_alive, h.expect_continue, h.len)))
    }

    fn framing(bytes: &[u8]) -> Result<Framing, Answer> {
        head(bytes).map(|o| o.expect("complete head").0)
    }

    #[test]
    fn a_simple_get_parses_with_its_length() {
        let req = b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\nNEXT";
        let mut storage = vec![MaybeUninit::uninit(); 101];
        let h = parse(req, &LIMITS, &mut storage).unwrap().unwrap();
        assert_eq!(
            (h.method, h.target, h.version),
            ("GET", "/x?y=1", Protocol::Http11)
        );
        assert_eq!(h.len, req.len() - 4);
        assert_eq!(h.headers.len(), 1);
        assert!(h.keep_alive && !h.expect_continue);
        assert_eq!(h.framing, Framing::None);
    }

    #[test]
    fn only_an_empty_line_can_end_a_head() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(may_end_head(head, 0));
        assert!(
            may_end_head(head, head.len() - 1),
            "the last byte completes it"
        );
        assert!(!may_end_head(&head[..head.len() - 1], 0));
        assert!(may_end_head(b"GET / HTTP/1.1\nHost: a\n\n", 20));
        assert!(!may_end_head(b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n", 0));
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert_eq!(head(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap(), None);
        assert_eq!(head(b"GE").unwrap(), None);
    }

    #[test]
    fn bare_lf_is_not_a_line_end() {
        // llhttp invalid.md: a proxy that keeps the LF inside a value sees one request.
        for req in [
            &b"GET / HTTP/1.1\nHost: a\n\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        ] {
            assert!(matches!(head(req), Err(Answer::Malformed(_))), "{req:?}");
        }
    }

    #[test]
    fn content_length_and_chunked_framing() {
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n"),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
            Ok(Framing::None)
        );
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
        // Identical repeats name one length.
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"),
            Ok(Framing::Length(3))
        );
    }

    #[test]
    fn conflicting_or_invalid_lengths_are_400() {
        for req in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
        ] {
            assert!(
                matches!(head(req), Err(Answer::Malformed(_))),
                "{}",
                String::from_utf8_lossy(req)
            );
        }
    }

    #[test]
    fn transfer_encoding_must_be_exactly_one_chunked() {
        for req in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(
                matches!(head(req), Err(Answer::Malformed(_))),
                "{}",
                String::from_utf8_lossy(req)
            );
        }
        assert_eq!(
            head(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(Answer::CodingNotImplemented)
        );
    }

    #[test]
    fn keep_alive_follows_version_and_connection_tokens() {
        let ka = |r: &[u8]| head(r).unwrap().unwrap().1;
        assert!(ka(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn expect_continue_only_on_http11() {
        let ex = |r: &[u8]| head(r).unwrap().unwrap().2;
        assert!(ex(b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n"));
        assert!(!ex(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"));
    }

    #[test]
    fn limits_give_414_and_431() {
        let limits = HeadLimits {
            target: 64,
            fields: 2,
            field_size: 64,
        };
        let mut storage = vec![MaybeUninit::uninit(); 3];
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100));
        assert_eq!(
            parse(long_target.as_bytes(), &limits, &mut storage).unwrap_err(),
            Answer::TargetTooLong
        );
        let mut storage = vec![MaybeUninit::uninit(); 3];
        let endless_line = "GET /".to_string() + &"a".repeat(200);
        assert_eq!(
            parse(endless_line.as_bytes(), &limits, &mut storage).unwrap_err(),
            Answer::TargetTooLong
        );
        let mut storage = vec![MaybeUninit::uninit(); 3];
        let many = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            parse(many, &limits, &mut storage).unwrap_err(),
            Answer::HeadersTooLarge
        );
        let mut storage = vec![MaybeUninit::uninit(); 3];
        let endless_headers = format!("GET / HTTP/1.1\r\nA: {}", "b".repeat(400));
        assert_eq!(
            parse(endless_headers.as_bytes(), &limits, &mut storage).unwrap_err(),
            Answer::HeadersTooLarge
        );
    }

    #[test]
    fn versions_we_do_not_speak_are_505_and_garbage_is_400() {
        assert_eq!(
            head(b"GET / HTTP/2.0\r\n\r\n"),
            Err(Answer::VersionNotSupported)
        );
        assert!(matches!(
            head(b"GET / HTTX/1.1\r\n\r\n"),
            Err(Answer::Malformed(_))
        ));
        assert!(matches!(
            head(b"\x16\x03\x01\x02\x00"),
            Err(Answer::Malformed(_))
        ));
        assert!(matches!(
            head(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"),
            Err(Answer::Malformed(_))
        ));
        assert!(matches!(
            head(b"GET / HTTP/1.1\r\n folded: x\r\n\r\n"),
            Err(Answer::Malformed(_))
        ));
    }
}
