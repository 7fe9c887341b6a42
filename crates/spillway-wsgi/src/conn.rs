//! The worker's end of the socketpair: a reader thread that routes frames to requests,
//! and a shared writer that Python threads use for response frames.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use spillway_proto::{decode, BodyKind, Frame, RequestHead, SendWindow, INITIAL_RESPONSE_WINDOW};

use crate::WorkerError;

/// Requests waiting for a Python thread. A plain mutex and condvar, on purpose: channel
/// implementations spin before parking, and several idle Python threads spinning took a
/// measurable share of a 2-core machine from the front (seen with perf).
pub(crate) struct JobQueue {
    state: Mutex<(VecDeque<Job>, bool)>,
    ready: Condvar,
}

impl JobQueue {
    pub fn new() -> JobQueue {
        JobQueue {
            state: Mutex::new((VecDeque::new(), false)),
            ready: Condvar::new(),
        }
    }

    fn push(&self, job: Job) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.1 {
            return false;
        }
        st.0.push_back(job);
        drop(st);
        self.ready.notify_one();
        true
    }

    /// No more jobs: threads finish what is queued, then `next` returns `None`.
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.ready.notify_all();
    }

    /// Blocks (the caller has released the GIL) for the next job.
    pub fn next(&self) -> Option<Job> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(job) = st.0.pop_front() {
                return Some(job);
            }
            if st.1 {
                return None;
            }
            st = self.ready.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

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
    /// Request-body chunks not yet taken by `wsgi.input`.
    pub body: VecDeque<Bytes>,
    /// The front sent `RequestEnd` (or there never was a body).
    pub body_done: bool,
    /// The client went away: stop iterating, fail reads.
    pub cancelled: bool,
    /// Response-body bytes the front still accepts without more credit.
    pub response_credit: SendWindow,
}

impl Stream {
    fn new(id: u32, body: BodyKind) -> Stream {
        Stream {
            id,
            state: Mutex::new(StreamState {
                body: VecDeque::new(),
                body_done: matches!(body, BodyKind::Empty | BodyKind::Length(0)),
                cancelled: false,
                response_credit: SendWindow::new(INITIAL_RESPONSE_WINDOW),
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
                return v;
            }
            st = self.cond.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn update(&self, f: impl FnOnce(&mut StreamState)) {
        f(&mut self.lock());
        self.cond.notify_all();
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

/// The socket to the front, shared by the reader thread and every Python thread.
pub(crate) struct Link {
    writer: Mutex<UnixStream>,
    streams: Mutex<HashMap<u32, Arc<Stream>>>,
}

/// Why the reader loop ended.
pub(crate) enum ReadEnd {
    /// The front asked for a graceful exit.
    Shutdown,
    /// The front closed the socket: it is gone, nobody will read our responses.
    FrontGone,
}

impl Link {
    pub fn new(writer: UnixStream) -> Link {
        Link {
            writer: Mutex::new(writer),
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// Writes already-encoded frames. The caller must not hold the GIL (a full socket
    /// buffer blocks here). A failed write means the front is gone: exit at once, since
    /// no response can reach anyone.
    pub fn write_all(&self, buf: &[u8]) {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = w.write_all(buf) {
            tracing::error!(worker = std::process::id(), error = %e, "lost the socket to the front; exiting");
            std::process::exit(1);
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

    /// Reads frames until the front says shutdown or goes away, handing requests to the
    /// Python threads through `jobs`. Runs on its own thread without the GIL.
    pub fn read_loop(
        &self,
        mut reader: UnixStream,
        jobs: &JobQueue,
    ) -> Result<ReadEnd, WorkerError> {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            // Take every frame already buffered before the next read: one read syscall
            // serves a whole batch from a busy front.
            while let Some(frame) = decode(&mut buf)? {
                if let Some(end) = self.route(frame, jobs)? {
                    return Ok(end);
                }
            }
            let got = match reader.read(&mut chunk) {
                Ok(0) => return Ok(ReadEnd::FrontGone),
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(WorkerError::Io(e)),
            };
            buf.extend_from_slice(&chunk[..got]);
        }
    }

    fn route(&self, frame: Frame, jobs: &JobQueue) -> Result<Option<ReadEnd>, WorkerError> {
        match frame {
            Frame::RequestHead { stream, head } => {
                let s = Arc::new(Stream::new(stream, head.body));
                self.streams
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(stream, s.clone());
                if !jobs.push(Job { stream: s, head }) {
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
            Frame::ResponseCredit { stream, bytes } => {
                if let Some(s) = self.get(stream) {
                    let mut granted = Ok(());
                    s.update(|st| granted = st.response_credit.grant(bytes));
                    granted.map_err(|e| WorkerError::Protocol(e.to_string()))?;
                }
            }
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

    fn link() -> (Link, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Link::new(a), b)
    }

    #[test]
    fn queued_jobs_are_finished_after_close_then_threads_stop() {
        let q = JobQueue::new();
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
            q.next().is_some(),
            "what was queued before close still runs"
        );
        assert!(q.next().is_none());
    }

    #[test]
    fn frames_from_the_front_reach_their_stream() {
        let (link, _peer) = link();
        let q = JobQueue::new();
        link.route(
            Frame::RequestHead {
                stream: 5,
                head: head(BodyKind::Chunked),
            },
            &q,
        )
        .unwrap();
        let job = q.next().unwrap();
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
        let q = JobQueue::new();
        link.route(
            Frame::RequestHead {
                stream: 2,
                head: head(BodyKind::Empty),
            },
            &q,
        )
        .unwrap();
        let s = q.next().unwrap().stream;
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
        let q = JobQueue::new();
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
        let q = JobQueue::new();
        assert!(link.route(Frame::Ready { threads: 1 }, &q).is_err());
    }
}
