//! A minimal HTTP/1.1 response reader: status line and headers (via `httparse`), then a body
//! framed by Content-Length, chunked encoding or the end of the connection.
//!
//! It is written here rather than taken from a client crate because a client crate pools
//! connections and hides when a connection is opened, reused or found dead; bench measures
//! exactly those. The parser is sans-I/O ([`ResponseParser`]) so every framing edge is unit
//! tested by feeding bytes; [`read_response`] drives it over any async reader. Bodies are
//! counted and discarded, never kept.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest response head accepted (status line plus headers).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers accepted in one head.
pub const MAX_HEADERS: usize = 128;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE_BYTES: usize = 8 * 1024;

/// What is known about one complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code of the final (non-1xx) response.
    pub status: u16,
    /// Whether the connection may carry another request.
    pub reusable: bool,
    /// Body bytes received (after chunk decoding).
    pub body_bytes: u64,
    /// `timeout=N` of a `Keep-Alive` header, if the server announced its idle timeout.
    pub keep_alive_timeout: Option<u64>,
    /// The server's own account of the request (`Server-Timing`), if it sent one.
    pub timing: Option<Phases>,
}

/// The phases a server measured, from `Server-Timing` metrics named `queue`, `app` and
/// `total` (as Spillway sends them), in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Phases {
    pub queue_us: Option<u64>,
    pub app_us: Option<u64>,
    pub total_us: Option<u64>,
}

impl Phases {
    /// Adds the known metrics of one `Server-Timing` field value (`name;dur=ms, …`); the
    /// first value of each name wins, unknown names and parameters are ignored.
    fn add_field(&mut self, value: &[u8]) {
        for metric in split_list(value) {
            let mut params = metric.split(|&b| b == b';').map(trim);
            let name = params.next().unwrap_or_default();
            let Some(dur) = params.find_map(|p| strip_prefix_ignore_case(p, b"dur=")) else {
                continue;
            };
            let Some(us) = std::str::from_utf8(dur)
                .ok()
                .and_then(|d| d.parse::<f64>().ok())
                .filter(|ms| ms.is_finite() && *ms >= 0.0)
                .map(|ms| (ms * 1000.0).round() as u64)
            else {
                continue;
            };
            let slot = if name.eq_ignore_ascii_case(b"queue") {
                &mut self.queue_us
            } else if name.eq_ignore_ascii_case(b"app") {
                &mut self.app_us
            } else if name.eq_ignore_ascii_case(b"total") {
                &mut self.total_us
            } else {
                continue;
            };
            slot.get_or_insert(us);
        }
    }

    fn is_empty(&self) -> bool {
        *self == Phases::default()
    }
}

/// Why the bytes are not a valid response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// httparse rejected the head.
    #[error("bad response head: {0}")]
    Head(httparse::Error),
    /// The head did not end within [`MAX_HEAD_BYTES`].
    #[error("response head longer than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] headers.
    #[error("more than {MAX_HEADERS} response headers")]
    TooManyHeaders,
    /// Content-Length is not a number, or several disagree.
    #[error("bad Content-Length")]
    ContentLength,
    /// A chunk-size line is not hexadecimal or is too long.
    #[error("bad chunk size line")]
    ChunkSize,
    /// A chunk's data is not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    ChunkEnd,
    /// A trailer line is too long.
    #[error("trailer line too long")]
    Trailer,
}

/// The connection ended before the response was complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EofError {
    /// Not one byte of the response arrived (the keep-alive race looks like this).
    #[error("closed before any response byte")]
    BeforeResponse,
    /// Part of the head arrived.
    #[error("closed inside the response head")]
    InHead,
    /// The head arrived, the body was cut short.
    #[error("closed after {received} body bytes, before the body ended")]
    InBody {
        /// Body bytes that did arrive.
        received: u64,
    },
}

/// One step of [`ResponseParser::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// More bytes are needed.
    NeedMore,
    /// The response is complete; bytes after it stay in the buffer.
    Done(Response),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailer,
    UntilClose,
    Done,
}

/// Incremental parser for one response; it consumes what it has used from the buffer.
#[derive(Debug)]
pub struct ResponseParser {
    head_request: bool,
    state: State,
    seen_bytes: bool,
    status: u16,
    reusable: bool,
    keep_alive_timeout: Option<u64>,
    timing: Option<Phases>,
    body_bytes: u64,
}

impl ResponseParser {
    /// A parser for the response to one request; `head_request` because a HEAD response has
    /// no body whatever its headers say.
    pub fn new(head_request: bool) -> ResponseParser {
        ResponseParser {
            head_request,
            state: State::Head,
            seen_bytes: false,
            status: 0,
            reusable: false,
            keep_alive_timeout: None,
            timing: None,
            body_bytes: 0,
        }
    }

    /// Consumes as much of `buf` as belongs to this response.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Step, ParseError> {
        if !buf.is_empty() {
            self.seen_bytes = true;
        }
        loop {
            match self.state {
                State::Head => {
                    if !self.parse_head(buf)? {
                        return Ok(Step::NeedMore);
                    }
                }
                State::Length(remaining) => {
                    let take = remaining.min(buf.len() as u64);
                    buf.advance(take as usize);
                    self.body_bytes += take;
                    if take == remaining {
                        self.state = State::Done;
                    } else {
                        self.state = State::Length(remaining - take);
                        return Ok(Step::NeedMore);
                    }
                }
                State::ChunkSize => {
                    let Some(line) = take_line(buf, ParseError::ChunkSize)? else {
                        return Ok(Step::NeedMore);
                    };
                    let size = parse_chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkData(remaining) => {
                    let take = remaining.min(buf.len() as u64);
                    buf.advance(take as usize);
                    self.body_bytes += take;
                    if take == remaining {
                        self.state = State::ChunkDataEnd;
                    } else {
                        self.state = State::ChunkData(remaining - take);
                        return Ok(Step::NeedMore);
                    }
                }
                State::ChunkDataEnd => match buf.first() {
                    None => return Ok(Step::NeedMore),
                    Some(b'\n') => {
                        buf.advance(1);
                        self.state = State::ChunkSize;
                    }
                    Some(b'\r') => match buf.get(1) {
                        None => return Ok(Step::NeedMore),
                        Some(b'\n') => {
                            buf.advance(2);
                            self.state = State::ChunkSize;
                        }
                        Some(_) => return Err(ParseError::ChunkEnd),
                    },
                    Some(_) => return Err(ParseError::ChunkEnd),
                },
                State::Trailer => {
                    let Some(line) = take_line(buf, ParseError::Trailer)? else {
                        return Ok(Step::NeedMore);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                    }
                }
                State::UntilClose => {
                    self.body_bytes += buf.len() as u64;
                    buf.clear();
                    return Ok(Step::NeedMore);
                }
                State::Done => return Ok(Step::Done(self.response())),
            }
        }
    }

    /// The connection reached end of file: a close-delimited body ends here, anything else
    /// was cut short.
    pub fn eof(&self) -> Result<Response, EofError> {
        match self.state {
            State::UntilClose | State::Done => Ok(self.response()),
            State::Head if !self.seen_bytes => Err(EofError::BeforeResponse),
            State::Head => Err(EofError::InHead),
            _ => Err(EofError::InBody {
                received: self.body_bytes,
            }),
        }
    }

    fn response(&self) -> Response {
        Response {
            status: self.status,
            reusable: self.reusable && self.state != State::UntilClose,
            body_bytes: self.body_bytes,
            keep_alive_timeout: self.keep_alive_timeout,
            timing: self.timing,
        }
    }

    /// Parses one head if complete; returns false when more bytes are needed.
    fn parse_head(&mut self, buf: &mut BytesMut) -> Result<bool, ParseError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Err(ParseError::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(httparse::Error::TooManyHeaders) => return Err(ParseError::TooManyHeaders),
            Err(e) => return Err(ParseError::Head(e)),
        };
        let status = resp.code.unwrap_or(0);
        let http11 = resp.version == Some(1);
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut has_te = false;
        let mut close = false;
        let mut keep_alive = false;
        let mut keep_alive_timeout = None;
        let mut timing = Phases::default();
        for h in resp.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                for v in split_list(h.value) {
                    let n = parse_decimal(v).ok_or(ParseError::ContentLength)?;
                    if content_length.is_some_and(|old| old != n) {
                        return Err(ParseError::ContentLength);
                    }
                    content_length = Some(n);
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                has_te = true;
                // Only the last coding decides: chunked must be the final one.
                if let Some(last) = split_list(h.value).last() {
                    chunked = last.eq_ignore_ascii_case(b"chunked");
                }
            } else if name.eq_ignore_ascii_case("connection") {
                for token in split_list(h.value) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case("keep-alive") {
                for param in split_list(h.value) {
                    if let Some(v) = strip_prefix_ignore_case(param, b"timeout=") {
                        keep_alive_timeout = parse_decimal(v);
                    }
                }
            } else if name.eq_ignore_ascii_case("server-timing") {
                timing.add_field(h.value);
            }
        }
        buf.advance(len);
        if (100..200).contains(&status) && status != 101 {
            // An interim response (100 Continue, 103 Early Hints): the real one follows.
            return Ok(true);
        }
        self.status = status;
        self.reusable = !close && (http11 || keep_alive) && status != 101;
        self.keep_alive_timeout = keep_alive_timeout;
        self.timing = (!timing.is_empty()).then_some(timing);
        self.state = if self.head_request || status == 204 || status == 304 || status == 101 {
            State::Done
        } else if has_te {
            // RFC 9112 6.3: Transfer-Encoding overrides Content-Length; a final coding other
            // than chunked means the body runs to the end of the connection.
            if chunked {
                State::ChunkSize
            } else {
                State::UntilClose
            }
        } else if let Some(n) = content_length {
            if n == 0 {
                State::Done
            } else {
                State::Length(n)
            }
        } else {
            State::UntilClose
        };
        Ok(true)
    }
}

/// Takes one line (without CR LF) off the front of `buf`, or `None` if no full line yet.
fn take_line(buf: &mut BytesMut, too_long: ParseError) -> Result<Option<Vec<u8>>, ParseError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) if i > MAX_LINE_BYTES => Err(too_long),
        Some(i) => {
            let mut line = buf.split_to(i + 1).to_vec();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE_BYTES => Err(too_long),
        None => Ok(None),
    }
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, ParseError> {
    let size = line.split(|&b| b == b';').next().unwrap_or_default();
    let size = trim(size);
    if size.is_empty() {
        return Err(ParseError::ChunkSize);
    }
    let mut n: u64 = 0;
    for &b in size {
        let d = (b as char).to_digit(16).ok_or(ParseError::ChunkSize)?;
        n = n
            .checked_mul(16)
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or(ParseError::ChunkSize)?;
    }
    Ok(n)
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The non-empty, trimmed elements of a comma-separated header value.
fn split_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|v| !v.is_empty())
}

fn strip_prefix_ignore_case<'a>(v: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (v.len() >= prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| trim(&v[prefix.len()..]))
}

/// Why reading a response failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket failed (reset, …).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The bytes are not a valid response.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The connection ended early.
    #[error(transparent)]
    Eof(#[from] EofError),
}

/// Reads one response from `reader`, using and leaving leftover bytes in `buf`.
pub async fn read_response<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Response, ReadError> {
    let mut parser = ResponseParser::new(head_request);
    loop {
        if let Step::Done(resp) = parser.parse(buf)? {
            return Ok(resp);
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        if reader.read_buf(buf).await? == 0 {
            return Ok(parser.eof()?);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces of `step` bytes and returns the outcome and leftover bytes.
    fn feed(bytes: &[u8], step: usize, head: bool) -> (Result<Response, String>, Vec<u8>) {
        let mut p = ResponseParser::new(head);
        let mut buf = BytesMut::new();
        for (i, piece) in bytes.chunks(step).enumerate() {
            buf.extend_from_slice(piece);
            match p.parse(&mut buf) {
                Ok(Step::Done(r)) => {
                    let unfed = bytes.get((i + 1) * step..).unwrap_or_default();
                    buf.extend_from_slice(unfed);
                    return (Ok(r), buf.to_vec());
                }
                Ok(Step::NeedMore) => {}
                Err(e) => return (Err(e.to_string()), buf.to_vec()),
            }
        }
        (p.eof().map_err(|e| e.to_string()), buf.to_vec())
    }

    /// Every split of the input must give the same result.
    fn all_splits(bytes: &[u8], head: bool) -> (Result<Response, String>, Vec<u8>) {
        let whole = feed(bytes, bytes.len().max(1), head);
        for step in 1..bytes.len() {
            assert_eq!(feed(bytes, step, head), whole, "split every {step} bytes");
        }
        whole
    }

    fn ok(status: u16, reusable: bool, body_bytes: u64) -> Result<Response, String> {
        Ok(Response {
            status,
            reusable,
            body_bytes,
            keep_alive_timeout: None,
            timing: None,
        })
    }

    #[test]
    fn server_timing_phases() {
        let (r, _) = all_splits(
            b"HTTP/1.1 200 OK\r\nServer-Timing: db;dur=3, queue;dur=1.5\r\nServer-Timing: app;desc=\"x\";dur=12.25, total;dur=14, queue;dur=9\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!(
            r.unwrap().timing,
            Some(Phases {
                queue_us: Some(1500),
                app_us: Some(12250),
                total_us: Some(14000)
            })
        );
        let (r, _) = all_splits(
            b"HTTP/1.1 200 OK\r\nServer-Timing: cache;dur=2, app;dur=-1\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!(r.unwrap().timing, None);
    }

    #[test]
    fn content_length_keeps_pipelined_bytes() {
        let (r, rest) = all_splits(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloNEXT",
            false,
        );
        assert_eq!(r, ok(200, true, 5));
        assert_eq!(rest, b"NEXT");
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(all_splits(resp, false).0, ok(200, true, 31));
    }

    #[test]
    fn close_delimited_ends_at_eof_and_is_not_reusable() {
        let (r, _) = all_splits(b"HTTP/1.1 200 OK\r\n\r\nbody until close", false);
        assert_eq!(r, ok(200, false, 16));
        let (r, _) = all_splits(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
            false,
        );
        assert_eq!(r, ok(200, false, 2));
    }

    #[test]
    fn connection_semantics() {
        let r = all_splits(
            b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!(r.0, ok(503, false, 0));
        let r = all_splits(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert_eq!(r.0, ok(200, false, 0));
        let r = all_splits(
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5, max=100\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!(
            r.0,
            Ok(Response {
                status: 200,
                reusable: true,
                body_bytes: 0,
                keep_alive_timeout: Some(5),
                timing: None,
            })
        );
    }

    #[test]
    fn bodiless_responses() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
        assert_eq!(all_splits(head, true).0, ok(200, true, 0));
        let r = all_splits(b"HTTP/1.1 204 No Content\r\n\r\nHTTP", false);
        assert_eq!(r, (ok(204, true, 0), b"HTTP".to_vec()));
        assert_eq!(
            all_splits(b"HTTP/1.1 304 Not Modified\r\n\r\n", false).0,
            ok(304, true, 0)
        );
    }

    #[test]
    fn interim_responses_are_skipped() {
        let resp = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
            HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(all_splits(resp, false).0, ok(201, true, 2));
    }

    #[test]
    fn malformed_responses() {
        let cases: &[&[u8]] = &[
            b"HTTX/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF\r\n",
            b"hello world\r\n\r\n",
        ];
        for case in cases {
            let (r, _) = feed(case, case.len(), false);
            assert!(
                r.as_ref().is_err_and(|e| !e.starts_with("closed")),
                "{:?} gave {r:?}",
                String::from_utf8_lossy(case)
            );
        }
        // Same content-length twice is allowed.
        let (r, _) = feed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx",
            64,
            false,
        );
        assert_eq!(r, ok(200, true, 1));
    }

    #[test]
    fn oversized_heads_are_rejected() {
        let mut resp = b"HTTP/1.1 200 OK\r\n".to_vec();
        while resp.len() <= MAX_HEAD_BYTES {
            resp.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let (r, _) = feed(&resp, 4096, false);
        assert!(r.is_err_and(|e| e.contains("longer than") || e.contains("more than")));
    }

    #[test]
    fn early_eof_is_classified() {
        assert_eq!(
            feed(b"", 1, false).0,
            Err("closed before any response byte".to_string())
        );
        assert_eq!(
            feed(b"HTTP/1.1 200 OK\r\nCont", 4, false).0,
            Err("closed inside the response head".to_string())
        );
        assert_eq!(
            feed(
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                4,
                false
            )
            .0,
            Err("closed after 3 body bytes, before the body ended".to_string())
        );
    }

    #[tokio::test]
    async fn reads_over_a_stream() {
        let data: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 404 NF\r\nContent-Length: 0\r\n\r\n";
        let mut reader = data;
        let mut buf = BytesMut::new();
        let first = read_response(&mut reader, &mut buf, false)
            .await
            .expect("first");
        assert_eq!(first.status, 200);
        let second = read_response(&mut reader, &mut buf, false)
            .await
            .expect("second");
        assert_eq!(second.status, 404);
        let third = read_response(&mut reader, &mut buf, false).await;
        assert!(matches!(
            third,
            Err(ReadError::Eof(EofError::BeforeResponse))
        ));
    }
}
