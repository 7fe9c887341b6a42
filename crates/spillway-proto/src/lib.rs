//! Frames between the front and its workers: a small, versioned, length-prefixed binary
//! codec. No I/O happens here: the front and the worker own their sockets and hand this
//! crate buffers, so the codec can be unit-tested and fuzzed on its own.
//!
//! Wire layout of every frame (all integers little-endian):
//!
//! ```text
//! +-------------+--------+---------------+------------------+
//! | length: u32 | kind:u8| stream: u32   | payload ...      |
//! +-------------+--------+---------------+------------------+
//!   length counts kind + stream + payload (so it is >= 5)
//! ```
//!
//! A `stream` names one request; several are in flight on one socket. Control frames use
//! stream 0. Variable-length fields are prefixed by their length (u16 for names and short
//! strings, u32 for values). Nothing is text or JSON: the hot path must stay cheap.
#![forbid(unsafe_code)]

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Version of this protocol; a front refuses a worker that speaks another one.
pub const PROTOCOL_VERSION: u16 = 1;

/// Magic bytes at the start of the `Hello` payload, to catch a stray process on the socket.
pub const HELLO_MAGIC: &[u8; 4] = b"SPWY";

/// Largest frame accepted (length field value); larger ones are a protocol error.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Largest body chunk an encoder should put in one frame, so a big chunk does not delay
/// frames of other streams for long.
pub const MAX_CHUNK: usize = 256 * 1024;

/// Request-body bytes the front may send before the worker grants credit, when the client
/// did not ask for `100 Continue`: small bodies then travel with the head, no round trip.
pub const INITIAL_REQUEST_WINDOW: u32 = 64 * 1024;

/// Response-body bytes a worker may send before the front grants more credit.
pub const INITIAL_RESPONSE_WINDOW: u32 = 256 * 1024;

/// Exit status of a worker whose application could not be imported; the front tells it
/// apart from a crash (at start-up it means: stop, the configuration is wrong).
pub const EXIT_APP_LOAD_FAILED: i32 = 3;

const HEADER_LEN: usize = 4 + 1 + 4;

/// A decoding failure: the peer is broken or not a spillway process; drop the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Length field outside 5..=MAX_FRAME_LEN.
    #[error("frame length {0} outside the allowed 5..={MAX_FRAME_LEN}")]
    BadLength(usize),
    /// Unknown frame kind byte.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// The payload ended before a field was complete.
    #[error("frame {kind:?} truncated: payload too short")]
    Truncated {
        /// Kind of the frame whose payload was short.
        kind: Kind,
    },
    /// Bytes left over after the last field.
    #[error("frame {kind:?} has {extra} trailing bytes")]
    Trailing {
        /// Kind of the frame with trailing bytes.
        kind: Kind,
        /// Number of bytes left over.
        extra: usize,
    },
    /// A control frame with a stream id, or a request frame without one.
    #[error(
        "frame {kind:?} on stream {stream}: control frames use stream 0, request frames never do"
    )]
    BadStream {
        /// Kind of the frame.
        kind: Kind,
        /// The stream id received.
        stream: u32,
    },
    /// An enumerated field had a value this version does not know.
    #[error("frame {kind:?}: invalid value {value} for {field}")]
    BadValue {
        /// Kind of the frame.
        kind: Kind,
        /// Field name.
        field: &'static str,
        /// The value received.
        value: u64,
    },
}

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// worker → front: first frame, protocol version and pid.
    Hello = 0x01,
    /// worker → front: application imported, threads available.
    Ready = 0x02,
    /// front → worker: finish in-flight requests, then exit.
    Shutdown = 0x03,
    /// front → worker: a new request.
    RequestHead = 0x10,
    /// front → worker: request body bytes.
    RequestBody = 0x11,
    /// front → worker: request body complete.
    RequestEnd = 0x12,
    /// front → worker: the client is gone; stop working on this stream.
    Cancel = 0x13,
    /// front → worker: the worker may send this many more response-body bytes.
    ResponseCredit = 0x14,
    /// worker → front: status and headers.
    ResponseHead = 0x20,
    /// worker → front: response body bytes.
    ResponseBody = 0x21,
    /// worker → front: response complete, the thread is free again.
    ResponseEnd = 0x22,
    /// worker → front: the application failed after the head was sent; cut the response.
    ResponseAbort = 0x23,
    /// worker → front: the application wants this many more request-body bytes.
    BodyCredit = 0x24,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0x01 => Kind::Hello,
            0x02 => Kind::Ready,
            0x03 => Kind::Shutdown,
            0x10 => Kind::RequestHead,
            0x11 => Kind::RequestBody,
            0x12 => Kind::RequestEnd,
            0x13 => Kind::Cancel,
            0x14 => Kind::ResponseCredit,
            0x20 => Kind::ResponseHead,
            0x21 => Kind::ResponseBody,
            0x22 => Kind::ResponseEnd,
            0x23 => Kind::ResponseAbort,
            0x24 => Kind::BodyCredit,
            _ => return None,
        })
    }
}

/// HTTP version of the request, as `SERVER_PROTOCOL` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `HTTP/1.0`
    Http10 = 0,
    /// `HTTP/1.1`
    Http11 = 1,
}

impl Protocol {
    /// The `SERVER_PROTOCOL` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http10 => "HTTP/1.0",
            Protocol::Http11 => "HTTP/1.1",
        }
    }
}

/// URL scheme of the request, as `wsgi.url_scheme` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http`
    Http = 0,
    /// `https`
    Https = 1,
}

impl Scheme {
    /// The `wsgi.url_scheme` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// How the request body is framed on the client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all: `wsgi.input` is at EOF from the start.
    Empty,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`: length unknown until `RequestEnd`.
    Chunked,
}

/// Everything a worker needs to build a PEP 3333 environ, already decoded by the front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// `REQUEST_METHOD`
    pub method: Bytes,
    /// `SCRIPT_NAME` (the configured root path that matched)
    pub script_name: Bytes,
    /// `PATH_INFO`: percent-decoded bytes (the worker maps them to latin-1)
    pub path_info: Bytes,
    /// `QUERY_STRING`, raw
    pub query_string: Bytes,
    /// `SERVER_PROTOCOL`
    pub protocol: Protocol,
    /// `wsgi.url_scheme`
    pub scheme: Scheme,
    /// `SERVER_NAME`
    pub server_name: Bytes,
    /// `SERVER_PORT`
    pub server_port: Bytes,
    /// `REMOTE_ADDR`
    pub remote_addr: Bytes,
    /// `REMOTE_PORT`
    pub remote_port: Bytes,
    /// Body framing.
    pub body: BodyKind,
    /// The client sent `Expect: 100-continue`: the front sends no body until credit comes.
    pub expect_continue: bool,
    /// Environ entries from headers, keys already in environ form (`HTTP_HOST`,
    /// `CONTENT_TYPE`, …), repeated headers already joined.
    pub headers: Vec<(Bytes, Bytes)>,
}

/// Status and headers from the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Header name/value pairs in the application's order.
    pub headers: Vec<(Bytes, Bytes)>,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// worker → front: first frame on the socket.
    Hello {
        /// Protocol version the worker speaks.
        version: u16,
        /// The worker's pid.
        pid: u32,
    },
    /// worker → front: application imported; ready for `threads` concurrent requests.
    Ready {
        /// Python threads that take requests.
        threads: u16,
    },
    /// front → worker: finish in-flight requests, then exit.
    Shutdown,
    /// front → worker: a new request on `stream`.
    RequestHead {
        /// Request id.
        stream: u32,
        /// The request.
        head: Box<RequestHead>,
    },
    /// front → worker: body bytes.
    RequestBody {
        /// Request id.
        stream: u32,
        /// Bytes.
        data: Bytes,
    },
    /// front → worker: the body is complete.
    RequestEnd {
        /// Request id.
        stream: u32,
    },
    /// front → worker: client gone; stop and release the thread.
    Cancel {
        /// Request id.
        stream: u32,
    },
    /// front → worker: more response-body credit.
    ResponseCredit {
        /// Request id.
        stream: u32,
        /// Bytes granted.
        bytes: u32,
    },
    /// worker → front: status and headers.
    ResponseHead {
        /// Request id.
        stream: u32,
        /// Status and headers.
        head: Box<ResponseHead>,
    },
    /// worker → front: body bytes.
    ResponseBody {
        /// Request id.
        stream: u32,
        /// Bytes.
        data: Bytes,
    },
    /// worker → front: response complete, application's `close()` done, thread free.
    ResponseEnd {
        /// Request id.
        stream: u32,
    },
    /// worker → front: failure after the head; the client connection must be cut.
    ResponseAbort {
        /// Request id.
        stream: u32,
    },
    /// worker → front: the application wants more request-body bytes.
    BodyCredit {
        /// Request id.
        stream: u32,
        /// Bytes granted.
        bytes: u32,
    },
}

impl Frame {
    /// The kind byte of this frame.
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Hello { .. } => Kind::Hello,
            Frame::Ready { .. } => Kind::Ready,
            Frame::Shutdown => Kind::Shutdown,
            Frame::RequestHead { .. } => Kind::RequestHead,
            Frame::RequestBody { .. } => Kind::RequestBody,
            Frame::RequestEnd { .. } => Kind::RequestEnd,
            Frame::Cancel { .. } => Kind::Cancel,
            Frame::ResponseCredit { .. } => Kind::ResponseCredit,
            Frame::ResponseHead { .. } => Kind::ResponseHead,
            Frame::ResponseBody { .. } => Kind::ResponseBody,
            Frame::ResponseEnd { .. } => Kind::ResponseEnd,
            Frame::ResponseAbort { .. } => Kind::ResponseAbort,
            Frame::BodyCredit { .. } => Kind::BodyCredit,
        }
    }

    /// The stream this frame belongs to (0 for control frames).
    pub fn stream(&self) -> u32 {
        match self {
            Frame::Hello { .. } | Frame::Ready { .. } | Frame::Shutdown => 0,
            Frame::RequestHead { stream, .. }
            | Frame::RequestBody { stream, .. }
            | Frame::RequestEnd { stream }
            | Frame::Cancel { stream }
            | Frame::ResponseCredit { stream, .. }
            | Frame::ResponseHead { stream, .. }
            | Frame::ResponseBody { stream, .. }
            | Frame::ResponseEnd { stream }
            | Frame::ResponseAbort { stream }
            | Frame::BodyCredit { stream, .. } => *stream,
        }
    }

    /// Appends the encoded frame to `dst`.
    ///
    /// Panics if a field exceeds its length prefix (a u16 name over 64 KiB, or a frame
    /// over [`MAX_FRAME_LEN`]); callers bound those sizes before building a frame.
    pub fn encode(&self, dst: &mut BytesMut) {
        let start = dst.len();
        dst.put_u32_le(0); // patched below
        dst.put_u8(self.kind() as u8);
        dst.put_u32_le(self.stream());
        match self {
            Frame::Hello { version, pid } => {
                dst.put_slice(HELLO_MAGIC);
                dst.put_u16_le(*version);
                dst.put_u32_le(*pid);
            }
            Frame::Ready { threads } => dst.put_u16_le(*threads),
            Frame::Shutdown
            | Frame::RequestEnd { .. }
            | Frame::Cancel { .. }
            | Frame::ResponseEnd { .. }
            | Frame::ResponseAbort { .. } => {}
            Frame::ResponseCredit { bytes, .. } | Frame::BodyCredit { bytes, .. } => {
                dst.put_u32_le(*bytes)
            }
            Frame::RequestBody { data, .. } | Frame::ResponseBody { data, .. } => {
                dst.put_slice(data)
            }
            Frame::RequestHead { head, .. } => encode_request_head(head, dst),
            Frame::ResponseHead { head, .. } => {
                dst.put_u16_le(head.status);
                put_pairs(dst, &head.headers);
            }
        }
        let len = dst.len() - start - 4;
        assert!(
            len <= MAX_FRAME_LEN,
            "frame of {len} bytes exceeds MAX_FRAME_LEN"
        );
        dst[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    }
}

/// Encodes a body frame straight from a slice, without building a [`Frame`] (saves a copy
/// into a `Bytes` on the hot path).
pub fn encode_body(kind: Kind, stream: u32, data: &[u8], dst: &mut BytesMut) {
    debug_assert!(matches!(kind, Kind::RequestBody | Kind::ResponseBody));
    assert!(data.len() + 5 <= MAX_FRAME_LEN, "body frame too large");
    dst.reserve(HEADER_LEN + data.len());
    dst.put_u32_le((data.len() + 5) as u32);
    dst.put_u8(kind as u8);
    dst.put_u32_le(stream);
    dst.put_slice(data);
}

fn encode_request_head(h: &RequestHead, dst: &mut BytesMut) {
    dst.put_u8(h.protocol as u8);
    dst.put_u8(h.scheme as u8);
    dst.put_u8(h.expect_continue as u8);
    match h.body {
        BodyKind::Empty => dst.put_u8(0),
        BodyKind::Length(n) => {
            dst.put_u8(1);
            dst.put_u64_le(n);
        }
        BodyKind::Chunked => dst.put_u8(2),
    }
    for field in [
        &h.method,
        &h.script_name,
        &h.path_info,
        &h.query_string,
        &h.server_name,
        &h.server_port,
        &h.remote_addr,
        &h.remote_port,
    ] {
        put_bytes32(dst, field);
    }
    put_pairs(dst, &h.headers);
}

fn put_bytes16(dst: &mut BytesMut, b: &[u8]) {
    let n = u16::try_from(b.len()).expect("name longer than 64 KiB");
    dst.put_u16_le(n);
    dst.put_slice(b);
}

fn put_bytes32(dst: &mut BytesMut, b: &[u8]) {
    dst.put_u32_le(b.len() as u32);
    dst.put_slice(b);
}

fn put_pairs(dst: &mut BytesMut, pairs: &[(Bytes, Bytes)]) {
    let n = u16::try_from(pairs.len()).expect("more than 65535 headers");
    dst.put_u16_le(n);
    for (k, v) in pairs {
        put_bytes16(dst, k);
        put_bytes32(dst, v);
    }
}

/// Decodes one frame from the front of `src`, consuming it; `Ok(None)` when `src` does not
/// yet hold a whole frame. Body payloads are split off `src` without copying.
pub fn decode(src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    if src.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([src[0], src[1], src[2], src[3]]) as usize;
    if !(5..=MAX_FRAME_LEN).contains(&len) {
        return Err(FrameError::BadLength(len));
    }
    if src.len() < 4 + len {
        src.reserve(4 + len - src.len());
        return Ok(None);
    }
    src.advance(4);
    let frame = src.split_to(len).freeze();
    decode_frame(frame).map(Some)
}

/// A cursor over one frame's payload that turns short reads into [`FrameError::Truncated`].
struct Payload {
    buf: Bytes,
    kind: Kind,
}

impl Payload {
    fn need(&self, n: usize) -> Result<(), FrameError> {
        if self.buf.remaining() < n {
            Err(FrameError::Truncated { kind: self.kind })
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        self.need(2)?;
        Ok(self.buf.get_u16_le())
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        self.need(4)?;
        Ok(self.buf.get_u32_le())
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        self.need(8)?;
        Ok(self.buf.get_u64_le())
    }
    fn take(&mut self, n: usize) -> Result<Bytes, FrameError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }
    fn bytes16(&mut self) -> Result<Bytes, FrameError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn bytes32(&mut self) -> Result<Bytes, FrameError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn pairs(&mut self) -> Result<Vec<(Bytes, Bytes)>, FrameError> {
        let n = self.u16()? as usize;
        // Each pair takes at least 6 bytes: refuse a count the payload cannot hold before
        // allocating for it.
        self.need(n.saturating_mul(6))?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.bytes16()?;
            let val = self.bytes32()?;
            v.push((k, val));
        }
        Ok(v)
    }
    fn bad(&self, field: &'static str, value: u64) -> FrameError {
        FrameError::BadValue {
            kind: self.kind,
            field,
            value,
        }
    }
    fn finish(self) -> Result<(), FrameError> {
        if self.buf.has_remaining() {
            Err(FrameError::Trailing {
                kind: self.kind,
                extra: self.buf.remaining(),
            })
        } else {
            Ok(())
        }
    }
}

fn decode_frame(mut frame: Bytes) -> Result<Frame, FrameError> {
    let kind_byte = frame.get_u8();
    let kind = Kind::from_u8(kind_byte).ok_or(FrameError::UnknownKind(kind_byte))?;
    let stream = frame.get_u32_le();
    let control = matches!(kind, Kind::Hello | Kind::Ready | Kind::Shutdown);
    if control != (stream == 0) {
        return Err(FrameError::BadStream { kind, stream });
    }
    let mut p = Payload { buf: frame, kind };
    let f = match kind {
        Kind::Hello => {
            let magic = p.take(4)?;
            if magic.as_ref() != HELLO_MAGIC {
                return Err(p.bad(
                    "magic",
                    u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]) as u64,
                ));
            }
            let version = p.u16()?;
            let pid = p.u32()?;
            Frame::Hello { version, pid }
        }
        Kind::Ready => Frame::Ready { threads: p.u16()? },
        Kind::Shutdown => Frame::Shutdown,
        Kind::RequestEnd => Frame::RequestEnd { stream },
        Kind::Cancel => Frame::Cancel { stream },
        Kind::ResponseEnd => Frame::ResponseEnd { stream },
        Kind::ResponseAbort => Frame::ResponseAbort { stream },
        Kind::ResponseCredit => Frame::ResponseCredit {
            stream,
            bytes: p.u32()?,
        },
        Kind::BodyCredit => Frame::BodyCredit {
            stream,
            bytes: p.u32()?,
        },
        Kind::RequestBody => {
            let data = std::mem::take(&mut p.buf);
            Frame::RequestBody { stream, data }
        }
        Kind::ResponseBody => {
            let data = std::mem::take(&mut p.buf);
            Frame::ResponseBody { stream, data }
        }
        Kind::ResponseHead => {
            let status = p.u16()?;
            if !(100..=999).contains(&status) {
                return Err(p.bad("status", status as u64));
            }
            let headers = p.pairs()?;
            Frame::ResponseHead {
                stream,
                head: Box::new(ResponseHead { status, headers }),
            }
        }
        Kind::RequestHead => {
            let protocol = match p.u8()? {
                0 => Protocol::Http10,
                1 => Protocol::Http11,
                v => return Err(p.bad("protocol", v as u64)),
            };
            let scheme = match p.u8()? {
                0 => Scheme::Http,
                1 => Scheme::Https,
                v => return Err(p.bad("scheme", v as u64)),
            };
            let expect_continue = match p.u8()? {
                0 => false,
                1 => true,
                v => return Err(p.bad("expect_continue", v as u64)),
            };
            let body = match p.u8()? {
                0 => BodyKind::Empty,
                1 => BodyKind::Length(p.u64()?),
                2 => BodyKind::Chunked,
                v => return Err(p.bad("body", v as u64)),
            };
            let head = RequestHead {
                method: p.bytes32()?,
                script_name: p.bytes32()?,
                path_info: p.bytes32()?,
                query_string: p.bytes32()?,
                server_name: p.bytes32()?,
                server_port: p.bytes32()?,
                remote_addr: p.bytes32()?,
                remote_port: p.bytes32()?,
                protocol,
                scheme,
                body,
                expect_continue,
                headers: p.pairs()?,
            };
            Frame::RequestHead {
                stream,
                head: Box::new(head),
            }
        }
    };
    p.finish()?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn sample_request() -> RequestHead {
        RequestHead {
            method: b("POST"),
            script_name: b("/api"),
            path_info: Bytes::from_static(b"/caf\xc3\xa9"),
            query_string: b("a=1&b=%20"),
            protocol: Protocol::Http11,
            scheme: Scheme::Https,
            server_name: b("127.0.0.1"),
            server_port: b("8000"),
            remote_addr: b("10.1.2.3"),
            remote_port: b("51234"),
            body: BodyKind::Length(1 << 40),
            expect_continue: true,
            headers: vec![(b("HTTP_HOST"), b("example")), (b("CONTENT_TYPE"), b(""))],
        }
    }

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Hello {
                version: PROTOCOL_VERSION,
                pid: 4242,
            },
            Frame::Ready { threads: 4 },
            Frame::Shutdown,
            Frame::RequestHead {
                stream: 7,
                head: Box::new(sample_request()),
            },
            Frame::RequestHead {
                stream: 8,
                head: Box::new(RequestHead {
                    body: BodyKind::Chunked,
                    expect_continue: false,
                    protocol: Protocol::Http10,
                    scheme: Scheme::Http,
                    headers: vec![],
                    ..sample_request()
                }),
            },
            Frame::RequestBody {
                stream: 7,
                data: b("hello"),
            },
            Frame::RequestBody {
                stream: 7,
                data: Bytes::new(),
            },
            Frame::RequestEnd { stream: 7 },
            Frame::Cancel { stream: u32::MAX },
            Frame::ResponseCredit {
                stream: 3,
                bytes: 65536,
            },
            Frame::ResponseHead {
                stream: 7,
                head: Box::new(ResponseHead {
                    status: 200,
                    headers: vec![(b("Content-Type"), b("text/plain")), (b("X-A"), b(""))],
                }),
            },
            Frame::ResponseBody {
                stream: 7,
                data: b("world"),
            },
            Frame::ResponseEnd { stream: 7 },
            Frame::ResponseAbort { stream: 9 },
            Frame::BodyCredit {
                stream: 7,
                bytes: 1,
            },
        ]
    }

    #[test]
    fn every_frame_round_trips() {
        for f in all_frames() {
            let mut buf = BytesMut::new();
            f.encode(&mut buf);
            let got = decode(&mut buf).unwrap().unwrap();
            assert_eq!(got, f);
            assert!(buf.is_empty(), "decoder left bytes behind for {f:?}");
        }
    }

    #[test]
    fn frames_decode_from_one_buffer_in_order() {
        let frames = all_frames();
        let mut buf = BytesMut::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        for f in &frames {
            assert_eq!(&decode(&mut buf).unwrap().unwrap(), f);
        }
        assert_eq!(decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn partial_input_waits_for_more_at_every_split() {
        let mut whole = BytesMut::new();
        Frame::RequestHead {
            stream: 1,
            head: Box::new(sample_request()),
        }
        .encode(&mut whole);
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(decode(&mut part).unwrap(), None, "cut at {cut}");
            part.extend_from_slice(&whole[cut..]);
            assert!(decode(&mut part).unwrap().is_some());
        }
    }

    #[test]
    fn encode_body_matches_frame_encoding() {
        let mut a = BytesMut::new();
        let mut c = BytesMut::new();
        encode_body(Kind::ResponseBody, 5, b"abc", &mut a);
        Frame::ResponseBody {
            stream: 5,
            data: b("abc"),
        }
        .encode(&mut c);
        assert_eq!(a, c);
    }

    #[test]
    fn bad_length_is_rejected() {
        let mut buf = BytesMut::from(&[4u8, 0, 0, 0, 0x01][..]);
        assert_eq!(decode(&mut buf), Err(FrameError::BadLength(4)));
        let mut buf = BytesMut::from(&((MAX_FRAME_LEN as u32 + 1).to_le_bytes())[..]);
        assert_eq!(
            decode(&mut buf),
            Err(FrameError::BadLength(MAX_FRAME_LEN + 1))
        );
    }

    #[test]
    fn stream_ids_must_match_the_frame_kind() {
        // Shutdown (control) on stream 0x3f3f0000: found by the fuzzer.
        let mut buf = BytesMut::from(&[5u8, 0, 0, 0, 0x03, 0, 0, 63, 63][..]);
        assert!(matches!(
            decode(&mut buf),
            Err(FrameError::BadStream {
                kind: Kind::Shutdown,
                ..
            })
        ));
        let mut buf = BytesMut::from(&[5u8, 0, 0, 0, 0x13, 0, 0, 0, 0][..]);
        assert!(matches!(
            decode(&mut buf),
            Err(FrameError::BadStream {
                kind: Kind::Cancel,
                stream: 0
            })
        ));
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let mut buf = BytesMut::from(&[5u8, 0, 0, 0, 0x7f, 0, 0, 0, 0][..]);
        assert_eq!(decode(&mut buf), Err(FrameError::UnknownKind(0x7f)));
    }

    #[test]
    fn truncated_and_trailing_payloads_are_rejected() {
        // Ready with one byte instead of two.
        let mut buf = BytesMut::from(&[6u8, 0, 0, 0, 0x02, 0, 0, 0, 0, 9][..]);
        assert_eq!(
            decode(&mut buf),
            Err(FrameError::Truncated { kind: Kind::Ready })
        );
        // Cancel with a stray byte.
        let mut buf = BytesMut::from(&[6u8, 0, 0, 0, 0x13, 1, 0, 0, 0, 9][..]);
        assert_eq!(
            decode(&mut buf),
            Err(FrameError::Trailing {
                kind: Kind::Cancel,
                extra: 1
            })
        );
    }

    #[test]
    fn huge_pair_count_does_not_allocate() {
        // ResponseHead claiming 65535 headers in a 2-byte payload.
        let mut buf = BytesMut::new();
        buf.put_u32_le(5 + 4);
        buf.put_u8(Kind::ResponseHead as u8);
        buf.put_u32_le(1);
        buf.put_u16_le(200);
        buf.put_u16_le(u16::MAX);
        assert_eq!(
            decode(&mut buf),
            Err(FrameError::Truncated {
                kind: Kind::ResponseHead
            })
        );
    }

    #[test]
    fn bad_enum_values_are_rejected() {
        let mut buf = BytesMut::new();
        Frame::RequestHead {
            stream: 1,
            head: Box::new(sample_request()),
        }
        .encode(&mut buf);
        buf[HEADER_LEN] = 9; // protocol byte
        assert!(matches!(
            decode(&mut buf),
            Err(FrameError::BadValue {
                field: "protocol",
                ..
            })
        ));
        let mut buf = BytesMut::new();
        Frame::Hello { version: 1, pid: 1 }.encode(&mut buf);
        buf[HEADER_LEN] = b'X';
        assert!(matches!(
            decode(&mut buf),
            Err(FrameError::BadValue { field: "magic", .. })
        ));
    }
}
