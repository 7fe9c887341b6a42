//! The front's socket to one worker: frames out (batched: everything queued during one
//! event-loop turn goes out in one write) and frames in, routed to the request each belongs
//! to. The link only routes; what a request does with its frames is `dispatch`'s business.
//! It holds each stream's [`Claim`] until the worker reports the thread free, so a thread
//! is never handed on while Python still runs a request the client gave up on.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use spillway_proto::{
    decode, encode_body, EncodeError, Frame, FrameError, Kind, RequestHead, ResponseHead,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, Notify};

use crate::pool::Claim;

/// What a request hears from its worker.
#[derive(Debug)]
pub(crate) enum Event {
    /// Status and headers.
    Head(Box<ResponseHead>),
    /// Body bytes.
    Body(Bytes),
    /// The worker wants this many more request-body bytes.
    BodyCredit(u32),
    /// The response is complete; the thread is free.
    End,
    /// The application failed after sending the head; the thread is free.
    Abort,
    /// The worker process died or broke the protocol.
    WorkerLost,
}

/// Why a link to a worker broke.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// The worker sent bytes that are not a frame.
    #[error("protocol error: {0}")]
    Protocol(#[from] FrameError),
    /// The worker sent a frame only a front may send.
    #[error("unexpected {0:?} frame")]
    Unexpected(Kind),
    /// Reading the socket failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

/// Why a request could not be opened on a worker.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The worker is gone; the claim and head are handed back so the caller can forget
    /// the one and try another worker with the other.
    Dead(Claim, Box<RequestHead>),
    /// The head does not fit in a frame.
    TooLarge(EncodeError),
}

struct StreamEntry {
    events: mpsc::UnboundedSender<Event>,
    /// Set when the request outlived `--timeout`: the client got 504, the thread is
    /// still busy in Python.
    stuck_since: Option<Instant>,
    /// Held until the worker reports the thread free (`ResponseEnd`/`ResponseAbort`).
    claim: Option<Claim>,
}

/// The front's handle on one worker process.
pub struct WorkerLink {
    /// Unique id of this worker incarnation (never reused).
    pub id: u64,
    /// OS process id.
    pub pid: u32,
    /// Generation the worker belongs to.
    pub generation: u64,
    /// Frames waiting to be written: producers encode straight into it, the writer task
    /// takes the whole buffer per wake-up.
    outbox: Mutex<BytesMut>,
    outbox_ready: Notify,
    streams: Mutex<HashMap<u32, StreamEntry>>,
    next_stream: AtomicU32,
    alive: AtomicBool,
    /// Requests this worker finished.
    served: AtomicU64,
    /// Retire after this many requests (0: never), `--max-requests` plus jitter.
    max_requests: u64,
    /// Why the worker should be replaced, once decided.
    retire_reason: Mutex<Option<String>>,
    retire: Notify,
    /// Signalled when a stream ends or gets stuck, for whoever drains this worker.
    changed: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WorkerLink {
    /// A link over `socket` to worker `pid`; spawns its writer task and returns the
    /// reader, which the caller runs until the worker goes away.
    pub(crate) fn start(
        id: u64,
        pid: u32,
        generation: u64,
        max_requests: u64,
        rd: OwnedReadHalf,
        buf: BytesMut,
        wr: OwnedWriteHalf,
    ) -> (Arc<WorkerLink>, WorkerReader) {
        let link = Arc::new(WorkerLink {
            id,
            pid,
            generation,
            outbox: Mutex::new(BytesMut::with_capacity(64 * 1024)),
            outbox_ready: Notify::new(),
            streams: Mutex::new(HashMap::new()),
            next_stream: AtomicU32::new(1),
            alive: AtomicBool::new(true),
            served: AtomicU64::new(0),
            max_requests,
            retire_reason: Mutex::new(None),
            retire: Notify::new(),
            changed: Notify::new(),
        });
        tokio::spawn(write_loop(link.clone(), wr));
        let reader = WorkerReader {
            link: link.clone(),
            rd,
            buf,
        };
        (link, reader)
    }

    /// Asks the supervisor to replace this worker (idempotent: the first reason wins).
    pub fn request_retire(&self, reason: String) {
        let mut r = lock(&self.retire_reason);
        if r.is_none() {
            *r = Some(reason);
            drop(r);
            // notify_one stores a permit, so a supervisor not yet waiting still sees it.
            self.retire.notify_one();
        }
    }

    /// Waits until the worker should be replaced; returns why.
    pub async fn retired(&self) -> String {
        loop {
            if let Some(r) = lock(&self.retire_reason).clone() {
                return r;
            }
            self.retire.notified().await;
        }
    }

    /// Requests finished by this worker.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Requests in flight on this worker.
    pub fn in_flight(&self) -> usize {
        lock(&self.streams).len()
    }

    /// Stuck requests, and how long the oldest has been stuck.
    pub fn stuck(&self) -> (usize, Duration) {
        let streams = lock(&self.streams);
        let mut n = 0;
        let mut oldest = Duration::ZERO;
        for e in streams.values() {
            if let Some(t) = e.stuck_since {
                n += 1;
                oldest = oldest.max(t.elapsed());
            }
        }
        (n, oldest)
    }

    /// Queues a frame. Only frames that always fit go through here: control frames and
    /// fixed-size stream frames.
    fn send(&self, frame: &Frame) {
        let mut out = lock(&self.outbox);
        if let Err(e) = frame.encode(&mut out) {
            // Unreachable for the frames passed here; never worth a panic in the front.
            tracing::error!(worker = self.pid, error = %e, "could not encode a frame");
            return;
        }
        drop(out);
        self.outbox_ready.notify_one();
    }

    /// Starts a request: registers its stream and queues its head frame. The head is
    /// encoded before anything is registered, so a head too large for a frame leaves no
    /// trace on the link.
    pub(crate) fn open(
        &self,
        claim: Claim,
        head: Box<RequestHead>,
    ) -> Result<(u32, mpsc::UnboundedReceiver<Event>), OpenError> {
        if !self.alive.load(Ordering::Acquire) {
            return Err(OpenError::Dead(claim, head));
        }
        let mut streams = lock(&self.streams);
        let stream = loop {
            let s = self.next_stream.fetch_add(1, Ordering::Relaxed);
            if s != 0 && !streams.contains_key(&s) {
                break s;
            }
        };
        let frame = Frame::RequestHead { stream, head };
        frame
            .encode(&mut lock(&self.outbox))
            .map_err(OpenError::TooLarge)?;
        let (tx, rx) = mpsc::unbounded_channel();
        streams.insert(
            stream,
            StreamEntry {
                events: tx,
                stuck_since: None,
                claim: Some(claim),
            },
        );
        drop(streams);
        self.outbox_ready.notify_one();
        Ok((stream, rx))
    }

    /// Queues request-body bytes (at most [`spillway_proto::MAX_CHUNK`] per call).
    pub(crate) fn send_body(&self, stream: u32, data: &[u8]) {
        let mut out = lock(&self.outbox);
        if let Err(e) = encode_body(Kind::RequestBody, stream, data, &mut out) {
            tracing::error!(worker = self.pid, error = %e, "could not encode a body frame");
            return;
        }
        drop(out);
        self.outbox_ready.notify_one();
    }

    /// The request body is complete.
    pub(crate) fn end_body(&self, stream: u32) {
        self.send(&Frame::RequestEnd { stream });
    }

    /// The front wrote `bytes` more of the response to the client: the worker may send
    /// that many more.
    pub(crate) fn grant_response(&self, stream: u32, bytes: u32) {
        self.send(&Frame::ResponseCredit { stream, bytes });
    }

    /// The client is gone: tell the worker, if the stream is still running there.
    pub(crate) fn cancel(&self, stream: u32) {
        if lock(&self.streams).contains_key(&stream) {
            self.send(&Frame::Cancel { stream });
        }
    }

    /// Marks a request as stuck (timed out for the client, still running in Python) and
    /// tells the worker to stop it.
    pub(crate) fn mark_stuck(&self, stream: u32) {
        let live = match lock(&self.streams).get_mut(&stream) {
            Some(e) => {
                e.stuck_since.get_or_insert_with(Instant::now);
                true
            }
            None => false,
        };
        if live {
            self.send(&Frame::Cancel { stream });
            self.changed.notify_waiters();
        }
    }

    /// Completes when a stream ends or is marked stuck (re-check what you wait for).
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Routes one frame from the worker.
    fn route(&self, frame: Frame) -> Result<(), LinkError> {
        let deliver = |stream: u32, ev: Event| {
            if let Some(e) = lock(&self.streams).get(&stream) {
                let _ = e.events.send(ev);
            }
        };
        match frame {
            Frame::ResponseHead { stream, head } => deliver(stream, Event::Head(head)),
            Frame::ResponseBody { stream, data } => deliver(stream, Event::Body(data)),
            Frame::BodyCredit { stream, bytes } => deliver(stream, Event::BodyCredit(bytes)),
            Frame::ResponseEnd { stream } | Frame::ResponseAbort { stream } => {
                let ev = if matches!(frame, Frame::ResponseEnd { .. }) {
                    Event::End
                } else {
                    Event::Abort
                };
                // Removing the entry drops its claim: the thread is free again.
                let entry = lock(&self.streams).remove(&stream);
                if let Some(e) = entry {
                    let _ = e.events.send(ev);
                    drop(e);
                    let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
                    if self.max_requests > 0 && served == self.max_requests {
                        self.request_retire(format!("served max-requests ({served})"));
                    }
                    self.changed.notify_waiters();
                }
            }
            other => return Err(LinkError::Unexpected(other.kind())),
        }
        Ok(())
    }

    /// Fails every request in flight on this worker (it died): the caller must have
    /// taken the worker out of the pool first, so its claims free nothing.
    fn fail_all(&self) {
        self.alive.store(false, Ordering::Release);
        let entries: Vec<StreamEntry> = lock(&self.streams).drain().map(|(_, e)| e).collect();
        for mut e in entries {
            let _ = e.events.send(Event::WorkerLost);
            // The dead worker's threads are not free: do not hand them out.
            if let Some(claim) = e.claim.as_mut() {
                claim.forget();
            }
        }
        self.outbox_ready.notify_one();
        self.changed.notify_waiters();
    }

    /// Asks the worker to finish what it has and exit.
    pub fn shutdown(&self) {
        self.send(&Frame::Shutdown);
    }
}

async fn write_loop(link: Arc<WorkerLink>, mut wr: OwnedWriteHalf) {
    loop {
        link.outbox_ready.notified().await;
        let data = lock(&link.outbox).split();
        if data.is_empty() {
            if !link.alive.load(Ordering::Acquire) {
                return;
            }
            continue;
        }
        if wr.write_all(&data).await.is_err() {
            return; // the reader sees the same failure and fails the streams
        }
    }
}

/// The reading half of a worker's socket, run by its supervisor task.
pub struct WorkerReader {
    link: Arc<WorkerLink>,
    rd: OwnedReadHalf,
    buf: BytesMut,
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
    /// `before_fail` runs before the in-flight requests are failed (it takes the worker
    /// out of the pool, so that their claims free nothing).
    pub(crate) async fn run(mut self, before_fail: impl FnOnce()) -> Option<LinkError> {
        let err = loop {
            match read_frame(&mut self.rd, &mut self.buf).await {
                Ok(Some(frame)) => {
                    if let Err(e) = self.link.route(frame) {
                        break Some(e);
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        before_fail();
        self.link.fail_all();
        err
    }
}
