//! Bytes to frames. Every length is checked before it is trusted, so arbitrary input
//! (this is fuzzed) yields an error, never a panic or a huge allocation.

use bytes::{Buf, Bytes, BytesMut};

use crate::frame::{
    BodyKind, Frame, Kind, LevelStats, Protocol, RequestHead, ResponseHead, Scheme, WorkerStats,
};
use crate::{HELLO_MAGIC, MAX_FRAME_LEN};

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
    let control = matches!(
        kind,
        Kind::Hello | Kind::Ready | Kind::Shutdown | Kind::Stats | Kind::Backlog | Kind::Served
    );
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
        Kind::Backlog => Frame::Backlog {
            waiting: p.u32()?,
            oldest_ms: p.u32()?,
        },
        Kind::Served => Frame::Served {
            requests: p.u64()?,
            other_threads: p.u32()?,
        },
        Kind::Stats => Frame::Stats(Box::new(WorkerStats {
            threads: p.u16()?,
            target: p.u16()?,
            busy: p.u16()?,
            queued: p.u16()?,
            requests: p.u64()?,
            cpu_ns: p.u64()?,
            gil_wait_ns: p.u64()?,
            gil_takes: p.u64()?,
            reason: p.bytes16()?,
            rule: p.bytes16()?,
            current: level(&mut p)?,
            previous: level(&mut p)?,
        })),
        Kind::RequestEnd => Frame::RequestEnd { stream },
        Kind::Cancel => Frame::Cancel { stream },
        Kind::Expire => Frame::Expire { stream },
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
        Kind::RequestHead => Frame::RequestHead {
            stream,
            head: Box::new(request_head(&mut p)?),
        },
    };
    p.finish()?;
    Ok(f)
}

/// The payload of a `RequestHead` frame.
fn level(p: &mut Payload) -> Result<LevelStats, FrameError> {
    Ok(LevelStats {
        threads: p.u16()?,
        throughput_milli: p.u64()?,
        service_us: p.u64()?,
    })
}

fn request_head(p: &mut Payload) -> Result<RequestHead, FrameError> {
    let protocol = match p.u8()? {
        0 => Protocol::Http10,
        1 => Protocol::Http11,
        2 => Protocol::Http2,
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
    Ok(RequestHead {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode_body, HEADER_LEN, PROTOCOL_VERSION};
    use bytes::BufMut;

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
            Frame::Backlog {
                waiting: 12,
                oldest_ms: 40,
            },
            Frame::Served {
                requests: 1 << 40,
                other_threads: 96,
            },
            Frame::Stats(Box::new(WorkerStats {
                threads: 9,
                target: 12,
                busy: 8,
                queued: 3,
                requests: 1 << 40,
                cpu_ns: 123_456_789,
                gil_wait_ns: 42,
                gil_takes: 7,
                reason: b("requests waited 3 ms with every thread busy"),
                rule: b("probe-up"),
                current: LevelStats {
                    threads: 12,
                    throughput_milli: 1_180_500,
                    service_us: 10_150,
                },
                previous: LevelStats {
                    threads: 8,
                    throughput_milli: 790_000,
                    service_us: 10_100,
                },
            })),
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
            Frame::Expire { stream: 3 },
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
            f.encode(&mut buf).unwrap();
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
            f.encode(&mut buf).unwrap();
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
        .encode(&mut whole)
        .unwrap();
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
        encode_body(Kind::ResponseBody, 5, b"abc", &mut a).unwrap();
        Frame::ResponseBody {
            stream: 5,
            data: b("abc"),
        }
        .encode(&mut c)
        .unwrap();
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
        .encode(&mut buf)
        .unwrap();
        buf[HEADER_LEN] = 9; // protocol byte
        assert!(matches!(
            decode(&mut buf),
            Err(FrameError::BadValue {
                field: "protocol",
                ..
            })
        ));
        let mut buf = BytesMut::new();
        Frame::Hello { version: 1, pid: 1 }
            .encode(&mut buf)
            .unwrap();
        buf[HEADER_LEN] = b'X';
        assert!(matches!(
            decode(&mut buf),
            Err(FrameError::BadValue { field: "magic", .. })
        ));
    }
}
