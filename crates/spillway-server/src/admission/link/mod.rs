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
    encode_body, EncodeError, Frame, FrameError, Kind, RequestHead, ResponseHead, WorkerStats,
};
use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use tokio::sync::Notify;

use crate::admission::pool::Claim;
use crate::telemetry::metrics::Recycle;

mod reader;
pub(crate) use reader::read_frame;
pub use reader::WorkerReader;

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

/// Where one request's events wait for its owner: a small queue and the owner's waker.
/// (A channel per request allocated a kilobyte block each; this is the whole need.)
#[derive(Default)]
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
}

#[derive(Default)]
struct InboxState {
    events: VecDeque<Event>,
    waker: Option<Waker>,
}

impl Inbox {
    fn push(&self, ev: Event) {
        let mut st = lock(&self.state);
        st.events.push_back(ev);
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The next event, or registers `cx` to be woken for it.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Event> {
        let mut st = lock(&self.state);
        match st.events.pop_front() {
            Some(ev) => Poll::Ready(ev),
            None => {
                if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    st.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// The next event if one is here.
    pub fn try_recv(&self) -> Option<Event> {
        lock(&self.state).events.pop_front()
    }
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

/// Hashes stream ids, which are sequential numbers we chose ourselves: no defence against
/// crafted keys is needed, and SipHash showed in the profile at three lookups per request.
#[derive(Default, Clone, Copy)]
struct StreamIdHasher(u64);

impl std::hash::Hasher for StreamIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Streams = HashMap<u32, StreamEntry, std::hash::BuildHasherDefault<StreamIdHasher>>;

struct StreamEntry {
    events: Arc<Inbox>,
    /// Set when the request outlived `--timeout`: the client got 504, the thread is
    /// still busy in Python.
    stuck_since: Option<Instant>,
    /// Held until the worker reports the thread free (`ResponseEnd`/`ResponseAbort`).
    claim: Option<Claim>,
}

/// Requests beyond its threads a worker may hold when its requests are short: the next
/// request is already there when a thread finishes one, and a whole batch travels in one
/// read and one write each way. Measured on hello world (2 cores, 2 workers): CPU per
/// request fell from 44 µs with one request in flight per worker to 18 µs with 16.
pub(crate) const MAX_PIPELINE: u32 = 16;
/// How long a request may expect to wait in a worker behind the pipelined ones: the
/// pipeline holds what the worker completes in this time (its completion rate times the
/// budget), so requests that take long (I/O, a hang) are not queued inside a worker,
/// where `--queue-timeout` and fair dispatch cannot reach them.
const PIPELINE_BUDGET: Duration = Duration::from_millis(2);
/// A worker that completed nothing for this long while requests queue in the front gets
/// no pipeline until it completes one again.
const PIPELINE_STALL: Duration = Duration::from_millis(20);

/// How many requests the front may give a worker at once, and why.
#[derive(Debug, Default)]
struct Capacity {
    /// The worker sizes its threads by load, so it can grow when pipelined requests wait;
    /// a pinned pool (`--threads N`) takes exactly N requests at a time, as gunicorn's.
    pipelined: bool,
    /// Python threads the worker runs (its last report).
    threads: u16,
    /// Mean time between two completions (exponentially weighted), once two finished.
    interval_ns: Option<f64>,
    /// When the last request finished.
    last_done: Option<Instant>,
    /// No completion for [`PIPELINE_STALL`] while requests queued: no pipeline.
    stalled: bool,
    /// Requests it may hold now: threads plus the pipeline.
    limit: u32,
    /// The worker's last report.
    stats: WorkerStats,
    /// Why its thread count last changed.
    reason: String,
}

impl Capacity {
    fn pipeline(&self) -> u32 {
        if !self.pipelined || self.stalled {
            return 0;
        }
        match self.interval_ns {
            Some(i) if i > 0.0 => {
                ((PIPELINE_BUDGET.as_nanos() as f64 / i) as u32).min(MAX_PIPELINE)
            }
            _ => 0,
        }
    }

    /// Recomputes the limit; the new one if it changed.
    fn update(&mut self) -> Option<u32> {
        let limit = u32::from(self.threads.max(1)) + self.pipeline();
        (limit != self.limit).then(|| {
            self.limit = limit;
            limit
        })
    }
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
    streams: Mutex<Streams>,
    next_stream: AtomicU32,
    alive: AtomicBool,
    /// Requests this worker finished.
    served: AtomicU64,
    /// Retire after this many requests (0: never), `--max-requests` plus jitter.
    max_requests: u64,
    /// Why the worker should be replaced, once decided.
    retire_reason: Mutex<Option<(Recycle, String)>>,
    retire: Notify,
    /// Signalled when a stream ends or gets stuck, for whoever drains this worker.
    changed: Notify,
    capacity: Mutex<Capacity>,
    /// Told the worker's new request limit (its pool slot).
    on_limit: Box<dyn Fn(u32) + Send + Sync>,
    /// The backlog last told to the worker (waiting > 0).
    told_backlog: AtomicBool,
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
        (threads, pipelined): (u16, bool),
        on_limit: Box<dyn Fn(u32) + Send + Sync>,
        (rd, buf, wr): (OwnedReadHalf, BytesMut, OwnedWriteHalf),
    ) -> (Arc<WorkerLink>, WorkerReader) {
        let link = Arc::new(WorkerLink {
            id,
            pid,
            generation,
            outbox: Mutex::new(BytesMut::with_capacity(64 * 1024)),
            outbox_ready: Notify::new(),
            streams: Mutex::new(Streams::default()),
            next_stream: AtomicU32::new(1),
            alive: AtomicBool::new(true),
            served: AtomicU64::new(0),
            max_requests,
            retire_reason: Mutex::new(None),
            retire: Notify::new(),
            changed: Notify::new(),
            capacity: Mutex::new(Capacity {
                pipelined,
                threads,
                limit: u32::from(threads.max(1)),
                ..Capacity::default()
            }),
            on_limit,
            told_backlog: AtomicBool::new(false),
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
    pub fn request_retire(&self, why: Recycle, reason: String) {
        let mut r = lock(&self.retire_reason);
        if r.is_none() {
            *r = Some((why, reason));
            drop(r);
            // notify_one stores a permit, so a supervisor not yet waiting still sees it.
            self.retire.notify_one();
        }
    }

    /// Waits until the worker should be replaced; returns why.
    pub async fn retired(&self) -> (Recycle, String) {
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
    ) -> Result<(u32, Arc<Inbox>), OpenError> {
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
        let inbox = Arc::new(Inbox::default());
        streams.insert(
            stream,
            StreamEntry {
                events: inbox.clone(),
                stuck_since: None,
                claim: Some(claim),
            },
        );
        drop(streams);
        self.outbox_ready.notify_one();
        Ok((stream, inbox))
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
    /// tells the worker to interrupt it.
    pub(crate) fn mark_stuck(&self, stream: u32) {
        let live = match lock(&self.streams).get_mut(&stream) {
            Some(e) => {
                e.stuck_since.get_or_insert_with(Instant::now);
                true
            }
            None => false,
        };
        if live {
            self.send(&Frame::Expire { stream });
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
                e.events.push(ev);
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
                    e.events.push(ev);
                    drop(e);
                    self.completed();
                    let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
                    if self.max_requests > 0 && served == self.max_requests {
                        self.request_retire(
                            Recycle::MaxRequests,
                            format!("served max-requests ({served})"),
                        );
                    }
                    self.changed.notify_waiters();
                }
            }
            Frame::Stats(st) => self.stats_in(*st),
            other => return Err(LinkError::Unexpected(other.kind())),
        }
        Ok(())
    }

    /// A request finished: the completion rate sizes the pipeline.
    fn completed(&self) {
        let now = Instant::now();
        let mut c = lock(&self.capacity);
        if let Some(last) = c.last_done {
            let x = now.duration_since(last).as_nanos() as f64;
            c.interval_ns = Some(c.interval_ns.map_or(x, |i| i + (x - i) / 16.0));
        }
        c.last_done = Some(now);
        c.stalled = false;
        if let Some(limit) = c.update() {
            drop(c);
            (self.on_limit)(limit);
        }
    }

    /// The worker reported its thread pool.
    fn stats_in(&self, st: WorkerStats) {
        let mut c = lock(&self.capacity);
        if !st.reason.is_empty() {
            c.reason = String::from_utf8_lossy(&st.reason).into_owned();
        }
        c.threads = st.target.max(1);
        c.stats = st;
        if let Some(limit) = c.update() {
            drop(c);
            (self.on_limit)(limit);
        }
    }

    /// The worker's last report, why its thread count last changed, and how many
    /// requests the front gives it at once.
    pub fn pool_stats(&self) -> (WorkerStats, String, u32) {
        let c = lock(&self.capacity);
        (c.stats.clone(), c.reason.clone(), c.limit)
    }

    /// Tells the worker that requests wait in the front's queue (or that none do any
    /// more): its signal to grow while every worker is full.
    pub(crate) fn backlog(&self, waiting: usize, oldest: Duration) {
        let any = waiting > 0;
        if any {
            let mut c = lock(&self.capacity);
            let stalled = c.last_done.is_none_or(|t| t.elapsed() >= PIPELINE_STALL);
            if stalled && !c.stalled {
                c.stalled = true;
                if let Some(limit) = c.update() {
                    drop(c);
                    (self.on_limit)(limit);
                }
            }
        }
        if !any && !self.told_backlog.swap(false, Ordering::Relaxed) {
            return;
        }
        self.told_backlog.store(any, Ordering::Relaxed);
        self.send(&Frame::Backlog {
            waiting: waiting.min(u32::MAX as usize) as u32,
            oldest_ms: oldest.as_millis().min(u32::MAX as u128) as u32,
        });
    }

    /// Tells the worker how many requests all workers have finished, and how many
    /// threads the others run.
    pub(crate) fn served_all(&self, requests: u64, other_threads: u32) {
        self.send(&Frame::Served {
            requests,
            other_threads,
        });
    }

    /// The Python threads the worker last said it runs (its target).
    pub(crate) fn threads(&self) -> u16 {
        lock(&self.capacity).threads
    }

    /// Fails every request in flight on this worker (it died): the caller must have
    /// taken the worker out of the pool first, so its claims free nothing.
    fn fail_all(&self) {
        self.alive.store(false, Ordering::Release);
        let entries: Vec<StreamEntry> = lock(&self.streams).drain().map(|(_, e)| e).collect();
        for mut e in entries {
            e.events.push(Event::WorkerLost);
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
