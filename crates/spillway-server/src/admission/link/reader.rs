//! Frames in from a worker: read off its socket and routed to their requests by the
//! link, until the worker closes the socket or breaks the protocol.

use std::sync::Arc;

use bytes::BytesMut;
use spillway_proto::{decode, Frame};
use tokio::io::AsyncReadExt;
use tokio::net::unix::OwnedReadHalf;

use super::{LinkError, WorkerLink};

/// The reading half of a worker's socket, run by its supervisor task.
pub struct WorkerReader {
    pub(super) link: Arc<WorkerLink>,
    pub(super) rd: OwnedReadHalf,
    pub(super) buf: BytesMut,
}

/// Reads one frame, waiting for more bytes as needed; `Ok(None)` at end of file.
pub(crate) async fn read_frame(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
) -> Result<Option<Frame>, LinkError> {
    loop {
        if let Some(f) = decode(buf)? {
            return Ok(Some(f));
        }
        if buf.capacity() - buf.len() < 8192 {
            buf.reserve(64 * 1024);
        }
        if rd.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

impl WorkerReader {
    /// Routes frames until the worker closes its socket or breaks the protocol.
    pub(crate) async fn route_until_end(&mut self) -> Option<LinkError> {
        loop {
            match read_frame(&mut self.rd, &mut self.buf).await {
                Ok(Some(frame)) => {
                    if let Err(e) = self.link.route(frame) {
                        return Some(e);
                    }
                }
                Ok(None) => return None,
                Err(e) => return Some(e),
            }
        }
    }

    /// The worker is gone (or broke the protocol): fails its requests in flight.
    /// `before_fail` runs first (it takes the worker out of the pool, so that their
    /// claims free nothing).
    pub(crate) fn fail(self, before_fail: impl FnOnce()) {
        before_fail();
        self.link.fail_all();
    }
}
