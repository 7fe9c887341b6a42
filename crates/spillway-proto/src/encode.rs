//! Frames to bytes. Encoding appends to a caller's buffer that may already hold other
//! frames (the front batches everything queued in one event-loop turn), so a frame that
//! cannot be encoded must leave no trace: on error the buffer is cut back to where it was.

use bytes::{BufMut, BytesMut};

use crate::frame::{BodyKind, Frame, Kind, RequestHead};
use crate::{HEADER_LEN, HELLO_MAGIC, MAX_FRAME_LEN, MAX_NAME_LEN, MAX_PAIRS};

/// A value that does not fit the wire format; nothing was appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A header name (or other u16-prefixed field) longer than [`MAX_NAME_LEN`].
    #[error("a header name of {0} bytes exceeds the frame limit of {MAX_NAME_LEN}")]
    NameTooLong(usize),
    /// More header pairs than [`MAX_PAIRS`].
    #[error("{0} header fields exceed the frame limit of {MAX_PAIRS}")]
    TooManyPairs(usize),
    /// The whole frame is longer than [`MAX_FRAME_LEN`].
    #[error("a frame of {0} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    FrameTooLarge(usize),
}

impl Frame {
    /// Appends the encoded frame to `dst`; on error `dst` is left as it was.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let start = dst.len();
        let r = self.encode_unchecked(dst);
        if r.is_err() {
            dst.truncate(start);
        }
        r
    }

    fn encode_unchecked(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
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
            Frame::Backlog { waiting, oldest_ms } => {
                dst.put_u32_le(*waiting);
                dst.put_u32_le(*oldest_ms);
            }
            Frame::Served {
                requests,
                other_threads,
            } => {
                dst.put_u64_le(*requests);
                dst.put_u32_le(*other_threads);
            }
            Frame::Stats(st) => {
                for v in [st.threads, st.target, st.busy, st.queued] {
                    dst.put_u16_le(v);
                }
                for v in [st.requests, st.cpu_ns, st.gil_wait_ns, st.gil_takes] {
                    dst.put_u64_le(v);
                }
                put_bytes16(dst, &st.reason)?;
                put_bytes16(dst, &st.rule)?;
                for l in [st.current, st.previous] {
                    dst.put_u16_le(l.threads);
                    dst.put_u64_le(l.throughput_milli);
                    dst.put_u64_le(l.service_us);
                }
            }
            Frame::Shutdown
            | Frame::RequestEnd { .. }
            | Frame::Cancel { .. }
            | Frame::Expire { .. }
            | Frame::ResponseEnd { .. }
            | Frame::ResponseAbort { .. } => {}
            Frame::ResponseCredit { bytes, .. } | Frame::BodyCredit { bytes, .. } => {
                dst.put_u32_le(*bytes)
            }
            Frame::RequestBody { data, .. } | Frame::ResponseBody { data, .. } => {
                check_len(data.len() + 5)?;
                dst.put_slice(data)
            }
            Frame::RequestHead { head, .. } => encode_request_head(head, dst)?,
            Frame::ResponseHead { head, .. } => {
                dst.put_u16_le(head.status);
                put_pairs(dst, &head.headers)?;
            }
        }
        let len = dst.len() - start - 4;
        check_len(len)?;
        dst[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(())
    }
}

fn check_len(len: usize) -> Result<(), EncodeError> {
    if len > MAX_FRAME_LEN {
        Err(EncodeError::FrameTooLarge(len))
    } else {
        Ok(())
    }
}

/// Encodes a body frame straight from a slice, without building a [`Frame`] (saves a copy
/// into a `Bytes` on the hot path). `kind` must be a body kind.
pub fn encode_body(
    kind: Kind,
    stream: u32,
    data: &[u8],
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    debug_assert!(matches!(kind, Kind::RequestBody | Kind::ResponseBody));
    check_len(data.len() + 5)?;
    dst.reserve(HEADER_LEN + data.len());
    dst.put_u32_le((data.len() + 5) as u32);
    dst.put_u8(kind as u8);
    dst.put_u32_le(stream);
    dst.put_slice(data);
    Ok(())
}

fn encode_request_head(h: &RequestHead, dst: &mut BytesMut) -> Result<(), EncodeError> {
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
        put_bytes32(dst, field)?;
    }
    put_pairs(dst, &h.headers)
}

fn put_bytes16(dst: &mut BytesMut, b: &[u8]) -> Result<(), EncodeError> {
    let n = u16::try_from(b.len()).map_err(|_| EncodeError::NameTooLong(b.len()))?;
    dst.put_u16_le(n);
    dst.put_slice(b);
    Ok(())
}

fn put_bytes32(dst: &mut BytesMut, b: &[u8]) -> Result<(), EncodeError> {
    check_len(b.len())?;
    dst.put_u32_le(b.len() as u32);
    dst.put_slice(b);
    Ok(())
}

fn put_pairs(
    dst: &mut BytesMut,
    pairs: &[(bytes::Bytes, bytes::Bytes)],
) -> Result<(), EncodeError> {
    let n = u16::try_from(pairs.len()).map_err(|_| EncodeError::TooManyPairs(pairs.len()))?;
    dst.put_u16_le(n);
    for (k, v) in pairs {
        put_bytes16(dst, k)?;
        put_bytes32(dst, v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::frame::ResponseHead;
    use crate::{decode, Protocol, Scheme};

    fn response_with(headers: Vec<(Bytes, Bytes)>) -> Frame {
        Frame::ResponseHead {
            stream: 1,
            head: Box::new(ResponseHead {
                status: 200,
                headers,
            }),
        }
    }

    #[test]
    fn a_name_too_long_for_its_prefix_is_an_error_and_leaves_the_buffer_alone() {
        let mut buf = BytesMut::new();
        Frame::Cancel { stream: 9 }.encode(&mut buf).unwrap();
        let before = buf.clone();
        let long = Bytes::from(vec![b'x'; MAX_NAME_LEN + 1]);
        let e = response_with(vec![(long, Bytes::new())])
            .encode(&mut buf)
            .unwrap_err();
        assert_eq!(e, EncodeError::NameTooLong(MAX_NAME_LEN + 1));
        assert_eq!(buf, before, "a failed encode appends nothing");
        // What was queued before still decodes.
        assert_eq!(decode(&mut buf).unwrap(), Some(Frame::Cancel { stream: 9 }));
    }

    #[test]
    fn the_longest_name_fits() {
        let mut buf = BytesMut::new();
        let name = Bytes::from(vec![b'x'; MAX_NAME_LEN]);
        let f = response_with(vec![(name, Bytes::from_static(b"v"))]);
        f.encode(&mut buf).unwrap();
        assert_eq!(decode(&mut buf).unwrap(), Some(f));
    }

    #[test]
    fn too_many_pairs_and_too_large_frames_are_errors() {
        let mut buf = BytesMut::new();
        let pairs = vec![(Bytes::from_static(b"a"), Bytes::new()); MAX_PAIRS + 1];
        assert_eq!(
            response_with(pairs).encode(&mut buf),
            Err(EncodeError::TooManyPairs(MAX_PAIRS + 1))
        );
        let big = Bytes::from(vec![0u8; MAX_FRAME_LEN]);
        assert!(matches!(
            response_with(vec![(Bytes::from_static(b"a"), big.clone())]).encode(&mut buf),
            Err(EncodeError::FrameTooLarge(_))
        ));
        assert!(matches!(
            encode_body(Kind::ResponseBody, 1, &big, &mut buf),
            Err(EncodeError::FrameTooLarge(_))
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_request_head_over_the_frame_limit_is_an_error() {
        let head = RequestHead {
            method: Bytes::from_static(b"GET"),
            script_name: Bytes::new(),
            path_info: Bytes::from(vec![b'/'; MAX_FRAME_LEN]),
            query_string: Bytes::new(),
            protocol: Protocol::Http11,
            scheme: Scheme::Http,
            server_name: Bytes::new(),
            server_port: Bytes::new(),
            remote_addr: Bytes::new(),
            remote_port: Bytes::new(),
            body: BodyKind::Empty,
            expect_continue: false,
            headers: vec![],
        };
        let mut buf = BytesMut::new();
        let r = Frame::RequestHead {
            stream: 1,
            head: Box::new(head),
        }
        .encode(&mut buf);
        assert!(matches!(r, Err(EncodeError::FrameTooLarge(_))));
        assert!(buf.is_empty());
    }
}
