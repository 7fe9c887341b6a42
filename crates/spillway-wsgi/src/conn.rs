//! The worker's end of the socketpair: the reader routes frames to requests (new ones go
//! to the thread pool), and Python threads write their response frames through a shared
//! writer, without giving up the GIL when the socket takes the bytes at once.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pyo3::Python;
use spillway_proto::{decode, BodyKind, Frame, RequestHead, SendWindow, INITIAL_RESPONSE_WINDOW};

use crate::held::{Held, HOLD_AGE};
use crate::pool::Pool;
use crate::WorkerError;

/// A request handed to a Python thread.
pub(crate) struct Job {
    pub stream: Arc<Stream>,
    pub head: Box<RequestHead>,
}

/// Per-request state shared between the reader thread and the Python thread serving it.
pub(crate) struct Stream {
    pub id: u32,
    state: Mutex<StreamState>,
    cond: Condvar,
}

/// What the reader thread has delivered for one request.
pub(crate) struct StreamState {
    /// A thread waits on this stream: only then is a change worth a wake-up.
    waiting: bool,
    /// Request-body chunks not yet taken by `wsgi.input`.
    pub body: VecDeque<Bytes>,
    /// The front sent `RequestEnd` (or there never was a body).
    pub body_done: bool,
    /// The client went away: stop iterating, fail reads.
    pub cancelled: bool,
    /// Response-body bytes the front still accepts without more credit.
    pub response_credit: SendWindow,
    /// The Python thread serving the request (CPython's ident), while it does.
    pub running_on: Option<std::os::raw::c_long>,
    /// An asynchronous `RequestTimeout` was raised in that thread.
    pub interrupted: bool,
}

impl Stream {
    fn new(id: u32, body: BodyKind) -> Stream {
        Stream {
            id,
            state: Mutex::new(StreamState {
                waiting: false,
                body: VecDeque::new(),
                body_done: matches!(body, BodyKind::Empty | BodyKind::Length(0)),
                cancelled: false,
                response_credit: SendWindow::new(INITIAL_RESPONSE_WINDOW),
                running_on: None,
                interrupted: false,
            }),
            cond: Condvar::new(),
        }
    }

    /// Locks the state; a poisoned lock only means another thread panicked mid-update of
    /// plain counters, so the data is still usable.
    pub fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks (the caller has released the GIL) until `ready` says the state is usable.
    pub fn wait_until<T>(&self, mut ready: impl FnMut(&mut StreamState) -> Option<T>) -> T {
        let mut st = self.lock();
        loop {
            if let Some(v) = ready(&mut st) {
                st.waiting = false;
                return v;
            }
            st.waiting = true;
            st = self.cond.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn update(&self, f: impl FnOnce(&mut StreamState)) {
        let mut st = self.lock();
        f(&mut st);
        let wake = st.waiting;
        drop(st);
        if wake {
            self.cond.notify_all();
        }
    }

    /// Takes up to `want` bytes of response credit under one lock: `None` once the client
    /// is gone, `Some(0)` when the front has granted nothing more yet.
    pub fn take_credit(&self, want: usize) -> Option<usize> {
        let mut st = self.lock();
        if st.cancelled {
            return None;
        }
        Some(st.response_credit.take(want))
    }

    /// True once the client has gone away.
    pub fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }
}

/// Exclusive use of the socket for writing. Not a `MutexGuard`: a thread that started a
/// write while holding the GIL must be able to finish it after releasing the GIL, and a
/// guard cannot cross that boundary.
struct WriteLock {
    state: Mutex<WriteState>,
    free: Condvar,
}

#[derive(Default)]
struct WriteState {
    busy: bool,
    /// Threads waiting for the lock: std's `notify_one` is a futex syscall even with no
    /// waiter, and a release without waiters (nearly every one) must not pay it.
    waiting: u32,
}

impl WriteLock {
    fn lock(&self) -> MutexGuard<'_, WriteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn try_acquire(&self) -> bool {
        !std::mem::replace(&mut self.lock().busy, true)
    }

    fn acquire(&self) {
        let mut st = self.lock();
        while st.busy {
            st.waiting += 1;
            st = self.free.wait(st).unwrap_or_else(|p| p.into_inner());
            st.waiting -= 1;
        }
        st.busy = true;
    }

    fn release(&self) {
        let mut st = self.lock();
        st.busy = false;
        let wake = st.waiting > 0;
        drop(st);
        if wake {
            self.free.notify_one();
        }
    }
}

/// The socket to the front, shared by the reader thread and every Python thread.
pub(crate) struct Link {
    sock: UnixStream,
    writing: WriteLock,
    streams: Mutex<HashMap<u32, Arc<Stream>>>,
    /// Called with each request the front expired, to interrupt its handler.
    on_expire: Box<dyn Fn(Arc<Stream>) + Send + Sync>,
    /// When a write last found the socket full (ns after `born`): the front is not taking
    /// responses as fast as they come, and more threads would not help.
    full_at: AtomicU64,
    born: Instant,
    /// Finished responses held back (see `held`).
    held: Mutex<Held>,
}

/// Why the reader loop ended.
pub(crate) enum ReadEnd {
    /// The front asked for a graceful exit.
    Shutdown,
    /// The front closed the socket: it is gone, nobody will read our responses.
    FrontGone,
}

fn front_gone(e: &std::io::Error) -> ! {
    tracing::error!(worker = std::process::id(), error = %e, "lost the socket to the front; exiting");
    std::process::exit(1)
}

/// Sends what the socket takes now, without blocking.
fn send_nonblocking(sock: &UnixStream, buf: &[u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: send(2) reads `buf.len()` bytes from a live slice on a socket we own;
        // MSG_DONTWAIT applies to this call only, so the socket stays blocking for others.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::WouldBlock => return Ok(0),
            std::io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
}

impl Link {
    pub fn new(sock: UnixStream, on_expire: impl Fn(Arc<Stream>) + Send + Sync + 'static) -> Link {
        Link {
            sock,
            writing: WriteLock {
                state: Mutex::new(WriteState::default()),
                free: Condvar::new(),
            },
            streams: Mutex::new(HashMap::new()),
            on_expire: Box::new(on_expire),
            full_at: AtomicU64::new(u64::MAX),
            born: Instant::now(),
            held: Mutex::new(Held::default()),
        }
    }

    /// Whether a write found the socket to the front full within the last `within`.
    pub fn was_full(&self, within: Duration) -> bool {
        let at = self.full_at.load(Ordering::Relaxed);
        at != u64::MAX
            && (self.born.elapsed().as_nanos() as u64).saturating_sub(at) < within.as_nanos() as u64
    }

    fn mark_full(&self) {
        self.full_at
            .store(self.born.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Writes already-encoded frames. The caller must not hold the GIL (a full socket
    /// buffer blocks here). A failed write means the front is gone: exit at once, since
    /// no response can reach anyone.
    pub fn write_all(&self, buf: &[u8]) {
        self.writing.acquire();
        let r = self.write_locked(buf);
        self.writing.release();
        if let Err(e) = r {
            front_gone(&e);
        }
    }

    /// Writes with the write lock held: what the socket takes at once, then (noting that
    /// it was full) the rest, blocking.
    fn write_locked(&self, buf: &[u8]) -> std::io::Result<()> {
        let sent = send_nonblocking(&self.sock, buf)?;
        if sent == buf.len() {
            return Ok(());
        }
        self.mark_full();
        (&self.sock).write_all(&buf[sent..])
    }

    /// Writes frames from a thread holding the GIL: at once if the socket takes them (no
    /// GIL hand-off, no wake-up), else the rest with the GIL released.
    pub fn write_hot(&self, py: Python<'_>, buf: &[u8]) {
        if !self.writing.try_acquire() {
            return crate::gil::detach(py, || self.write_all(buf));
        }
        let sent = match send_nonblocking(&self.sock, buf) {
            Ok(n) => n,
            Err(e) => {
                self.writing.release();
                front_gone(&e)
            }
        };
        if sent == buf.len() {
            self.writing.release();
            return;
        }
        self.mark_full();
        let rest = &buf[sent..];
        crate::gil::detach(py, || {
            let r = (&self.sock).write_all(rest);
            self.writing.release();
            if let Err(e) = r {
                front_gone(&e);
            }
        });
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the last frames of a response, or holds them back while `more` (this
    /// thread takes another queued request next).
    pub fn write_end(&self, py: Python<'_>, frames: &[u8], more: bool) {
        let out = self.held().offer(frames, more, Instant::now());
        if let Some(out) = out {
            self.write_hot(py, &out);
        }
    }

    /// Writes what is held back, from a thread holding the GIL before it goes to sleep.
    pub fn release_held(&self, py: Python<'_>) {
        let out = self.held().take();
        if let Some(out) = out {
            self.write_hot(py, &out);
        }
    }

    /// Writes what has been held back for [`HOLD_AGE`] or longer (from the reader,
    /// without the GIL).
    pub fn release_stale(&self) {
        let out = self.held().take_stale(HOLD_AGE, Instant::now());
        if let Some(out) = out {
            self.write_all(&out);
        }
    }

    /// Encodes and writes one control or credit frame (these always fit a frame).
    pub fn send(&self, frame: &Frame) {
        let mut buf = BytesMut::with_capacity(64);
        match frame.encode(&mut buf) {
            Ok(()) => self.write_all(&buf),
            Err(e) => {
                tracing::error!(worker = std::process::id(), error = %e, "could not encode a frame")
            }
        }
    }

    /// Forgets a finished stream (after its `ResponseEnd` was written).
    pub fn remove(&self, id: u32) {
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    fn get(&self, id: u32) -> Option<Arc<Stream>> {
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Reads once (waiting at most what `reader`'s timeout allows) and routes every
    /// complete frame: one read syscall serves a whole batch from a busy front. `None`:
    /// keep going. `chunk` is the read scratch space, reused across calls.
    pub fn read_batch(
        &self,
        reader: &mut UnixStream,
        buf: &mut BytesMut,
        chunk: &mut [u8],
        pool: &Pool<Job>,
    ) -> Result<Option<ReadEnd>, WorkerError> {
        let got = match reader.read(chunk) {
            Ok(0) => return Ok(Some(ReadEnd::FrontGone)),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(WorkerError::Io(e)),
        };
        buf.extend_from_slice(&chunk[..got]);
        while let Some(frame) = decode(buf)? {
            if let Some(end) = self.route(frame, pool)? {
                return Ok(Some(end));
            }
        }
        Ok(None)
    }

    fn route(&self, frame: Frame, pool: &Pool<Job>) -> Result<Option<ReadEnd>, WorkerError> {
        match frame {
            Frame::RequestHead { stream, head } => {
                let s = Arc::new(Stream::new(stream, head.body));
                self.streams
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(stream, s.clone());
                if !pool.push(Job { stream: s, head }) {
                    return Err(WorkerError::Protocol("request after shutdown".into()));
                }
            }
            Frame::RequestBody { stream, data } => {
                if let Some(s) = self.get(stream) {
                    s.update(|st| st.body.push_back(data));
                }
            }
            Frame::RequestEnd { stream } => {
                if let Some(s) = self.get(stream) {
                    s.update(|st| st.body_done = true);
                }
            }
            Frame::Cancel { stream } => {
                if let Some(s) = self.get(stream) {
                    s.update(|st| st.cancelled = true);
                }
            }
            Frame::Expire { stream } => {
                if let Some(s) = self.get(stream) {
                    s.update(|st| st.cancelled = true);
                    (self.on_expire)(s);
                }
            }
            Frame::ResponseCredit { stream, bytes } => {
                if let Some(s) = self.get(stream) {
                    let mut granted = Ok(());
                    s.update(|st| granted = st.response_credit.grant(bytes));
                    granted.map_err(|e| WorkerError::Protocol(e.to_string()))?;
                }
            }
            Frame::Backlog { waiting, oldest_ms } => {
                pool.backlog(waiting, std::time::Duration::from_millis(oldest_ms as u64))
            }
            Frame::Served {
                requests,
                other_threads,
            } => pool.served_all(requests, other_threads),
            Frame::Shutdown => return Ok(Some(ReadEnd::Shutdown)),
            other => {
                return Err(WorkerError::Protocol(format!(
                    "unexpected frame from the front: {:?}",
                    other.kind()
                )))
            }
        }
        Ok(None)
    }

    /// Cancels every stream, so Python threads blocked on input or credit wake up.
    pub fn cancel_all(&self) {
        let all: Vec<_> = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for s in all {
            s.update(|st| st.cancelled = true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(body: BodyKind) -> Box<RequestHead> {
        Box::new(RequestHead {
            method: Bytes::from_static(b"GET"),
            script_name: Bytes::new(),
            path_info: Bytes::from_static(b"/"),
            query_string: Bytes::new(),
            protocol: spillway_proto::Protocol::Http11,
            scheme: spillway_proto::Scheme::Http,
            server_name: Bytes::new(),
            server_port: Bytes::new(),
            remote_addr: Bytes::new(),
            remote_port: Bytes::new(),
            body,
            expect_continue: false,
            headers: Vec::new(),
        })
    }

    fn pool() -> Pool<Job> {
        let limits = crate::sizing::ThreadLimits {
            min: 1,
            max: 4,
            pinned: None,
            idle_exit: Duration::from_secs(10),
        };
        let p = Pool::new(limits, std::time::Instant::now());
        p.started();
        p
    }

    fn take(p: &Pool<Job>) -> Job {
        match p.take() {
            crate::pool::Next::Job(j) => j,
            crate::pool::Next::Exit => panic!("the pool let its thread go"),
        }
    }

    fn link() -> (Link, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Link::new(a, |_| {}), b)
    }

    #[test]
    fn queued_jobs_are_finished_after_close_then_threads_stop() {
        let q = pool();
        let s = Arc::new(Stream::new(1, BodyKind::Empty));
        assert!(q.push(Job {
            stream: s.clone(),
            head: head(BodyKind::Empty),
        }));
        q.close();
        assert!(!q.push(Job {
            stream: s,
            head: head(BodyKind::Empty),
        }));
        assert!(
            matches!(q.take(), crate::pool::Next::Job(_)),
            "what was queued before close still runs"
        );
        assert!(matches!(q.take(), crate::pool::Next::Exit));
    }

    #[test]
    fn frames_from_the_front_reach_their_stream() {
        let (link, _peer) = link();
        let q = pool();
        link.route(
            Frame::RequestHead {
                stream: 5,
                head: head(BodyKind::Chunked),
            },
            &q,
        )
        .unwrap();
        let job = take(&q);
        assert!(!job.stream.lock().body_done, "a chunked body is open");
        link.route(
            Frame::RequestBody {
                stream: 5,
                data: Bytes::from_static(b"abc"),
            },
            &q,
        )
        .unwrap();
        link.route(Frame::RequestEnd { stream: 5 }, &q).unwrap();
        let st = job.stream.lock();
        assert_eq!(st.body.front().map(|b| &b[..]), Some(&b"abc"[..]));
        assert!(st.body_done);
    }

    #[test]
    fn response_credit_is_granted_and_taken_and_cancel_stops_it() {
        let (link, _peer) = link();
        let q = pool();
        link.route(
            Frame::RequestHead {
                stream: 2,
                head: head(BodyKind::Empty),
            },
            &q,
        )
        .unwrap();
        let s = take(&q).stream;
        let all = INITIAL_RESPONSE_WINDOW as usize;
        assert_eq!(s.take_credit(all + 10), Some(all));
        assert_eq!(s.take_credit(1), Some(0), "exhausted: wait for the front");
        link.route(
            Frame::ResponseCredit {
                stream: 2,
                bytes: 7,
            },
            &q,
        )
        .unwrap();
        assert_eq!(s.take_credit(100), Some(7));
        link.route(Frame::Cancel { stream: 2 }, &q).unwrap();
        assert_eq!(s.take_credit(1), None, "the client is gone");
        assert!(s.is_cancelled());
    }

    #[test]
    fn a_credit_grant_past_the_window_is_a_protocol_error() {
        let (link, _peer) = link();
        let q = pool();
        link.route(
            Frame::RequestHead {
                stream: 3,
                head: head(BodyKind::Empty),
            },
            &q,
        )
        .unwrap();
        let r = link.route(
            Frame::ResponseCredit {
                stream: 3,
                bytes: u32::MAX,
            },
            &q,
        );
        assert!(matches!(r, Err(WorkerError::Protocol(_))));
    }

    #[test]
    fn frames_only_a_worker_sends_are_refused() {
        let (link, _peer) = link();
        let q = pool();
        assert!(link.route(Frame::Ready { threads: 1 }, &q).is_err());
    }
}
