//! Request bodies received before the request queues for a Python thread, for both
//! protocols: up to `--body-buffer` bytes, each piece within `--body-timeout`, into a
//! [`Buffered`] the exchange sends first. What is left of a larger body streams later,
//! under the exchange's pace rules.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncRead;

use super::buffer::Buffered;
use super::read_more;
use crate::admission::dispatch::Exchange;
use crate::error::Answer;
use crate::h1::body::{BodyDecoder, Piece};
use crate::h1::head::Framing;
use crate::telemetry::throttle::client_body_refused;

/// Where a request body comes from: a protocol's framing.
pub(super) trait BodySource {
    /// The next piece, at most `max` bytes (a protocol whose pieces come whole may give
    /// more); `Ok(None)` once the body is complete. `Err(Some)`: the body broke a rule;
    /// `Err(None)`: the client left.
    async fn piece(&mut self, max: usize) -> Result<Option<Bytes>, Option<Answer>>;
}

/// An HTTP/1.1 body: decoded from the read buffer, refilled from the connection.
pub(super) struct H1Body<'a, S> {
    pub io: &'a mut S,
    pub rbuf: &'a mut BytesMut,
    pub decoder: &'a mut BodyDecoder,
}

impl<S: AsyncRead + Unpin> BodySource for H1Body<'_, S> {
    async fn piece(&mut self, max: usize) -> Result<Option<Bytes>, Option<Answer>> {
        loop {
            match self.decoder.decode(self.rbuf, max).map_err(Some)? {
                Some(Piece::Data(d)) => return Ok(Some(d)),
                Some(Piece::End) => return Ok(None),
                None => {
                    if read_more(self.io, self.rbuf).await == 0 {
                        return Err(None);
                    }
                }
            }
        }
    }
}

/// Whether a body framed as `framing` is received before the request queues: any of
/// unknown length (up to the limit, the rest streams), a sized one within the limit.
pub(super) fn buffers(framing: Framing, limit: u64) -> bool {
    match framing {
        Framing::None => false,
        Framing::Length(n) => n <= limit,
        Framing::Chunked => limit > 0,
    }
}

/// Receives the body (or its first `limit` bytes) within `timeout` a piece. `Err(Some)`:
/// the answer for a client that broke the framing, stalled, or whose body could not be
/// held; `Err(None)`: the client left.
pub(super) async fn hold<B: BodySource>(
    body: &mut B,
    limit: u64,
    timeout: Duration,
    client: &str,
) -> Result<Buffered, Option<Answer>> {
    let mut held = Buffered::new();
    while held.len() < limit {
        let max = (limit - held.len()).min(spillway_proto::MAX_CHUNK as u64) as usize;
        let piece = match tokio::time::timeout(timeout, body.piece(max)).await {
            Ok(Ok(Some(d))) => d,
            Ok(Ok(None)) => break,
            Ok(Err(Some(answer))) => {
                client_body_refused(client, answer, "broken request body");
                return Err(Some(answer));
            }
            Ok(Err(None)) => return Err(None),
            Err(_) => {
                client_body_refused(
                    client,
                    Answer::BodyTimeout,
                    "no bytes within --body-timeout",
                );
                return Err(Some(Answer::BodyTimeout));
            }
        };
        if !held.push(&piece).await {
            // Over the shared budget, or no temporary file: hand what came on with the
            // rest, which streams.
            held.spill(piece);
            break;
        }
    }
    Ok(held)
}

/// Sends what the credit allows of the body the front held (before anything read since),
/// and lets it go once it is all out: whether anything was sent. Both protocols send it so.
pub(super) fn send_held(
    ex: &mut Exchange,
    held: &mut Option<Buffered>,
    client: &str,
) -> Result<bool, Answer> {
    let mut progressed = false;
    while let Some(h) = held.as_mut() {
        let credit = ex.body_credit();
        if credit == 0 {
            break;
        }
        let max = credit.min(spillway_proto::MAX_CHUNK as u64) as usize;
        match h.next_chunk(max) {
            Ok(Some(data)) => {
                ex.send_body(&data);
                progressed = true;
            }
            Ok(None) => *held = None,
            Err(e) => {
                tracing::error!(client, error = %e, "cannot read a held request body back; 503");
                return Err(Answer::BufferFailed);
            }
        }
    }
    if held.as_ref().is_some_and(|b| b.is_drained()) {
        *held = None;
    }
    Ok(progressed)
}
