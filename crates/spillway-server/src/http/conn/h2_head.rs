//! An HTTP/2 request's head in the frame protocol's terms: its fields through the same
//! rules as an HTTP/1.1 head (`:authority` as `Host`), and the fields the access log keeps.

use bytes::Bytes;
use spillway_proto::Protocol;

use crate::error::Answer;
use crate::h1::head::Framing;
use crate::http::request::{build_head, HeadView, Peer};

/// The frame head of an HTTP/2 request, through the same rules as HTTP/1.1's.
pub(crate) fn head_of(
    parts: &http::request::Parts,
    end_stream: bool,
    limits: &crate::h1::head::HeadLimits,
    peer: &Peer,
    policy: &crate::http::request::RequestPolicy,
) -> Result<(spillway_proto::RequestHead, Framing), Answer> {
    let mut fields: Vec<httparse::Header<'_>> = Vec::with_capacity(parts.headers.len() + 1);
    for (name, value) in &parts.headers {
        fields.push(httparse::Header {
            name: name.as_str(),
            value: value.as_bytes(),
        });
    }
    // `:authority` is HTTP/2's Host, and wins over a `host` field (RFC 9113 §8.3.1).
    if let Some(a) = parts.uri.authority() {
        fields.retain(|f| !f.name.eq_ignore_ascii_case("host"));
        fields.push(httparse::Header {
            name: "host",
            value: a.as_str().as_bytes(),
        });
    }
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let framing = match parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
        None if end_stream => Framing::None,
        None => Framing::Chunked,
    };
    if fields.len() > limits.fields {
        return Err(Answer::HeadersTooLarge);
    }
    if target.len() > limits.target {
        return Err(Answer::TargetTooLong);
    }
    let view = HeadView {
        method: parts.method.as_str(),
        target,
        version: Protocol::Http2,
        headers: &fields,
        framing,
        expect_continue: false,
    };
    build_head(&view, peer, policy).map(|h| (h, framing))
}

/// A request field the access log keeps (empty when it keeps none).
pub(super) fn header_bytes(parts: &http::request::Parts, name: &str, wanted: bool) -> Bytes {
    if !wanted {
        return Bytes::new();
    }
    parts
        .headers
        .get(name)
        .map_or_else(Bytes::new, |v| Bytes::copy_from_slice(v.as_bytes()))
}
