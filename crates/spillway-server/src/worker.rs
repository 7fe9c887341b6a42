//! One worker process as the front sees it: how it is started (re-executing our own binary
//! with one end of a socketpair as fd 3), the frames written to it (batched: everything
//! queued during one event-loop turn goes out in one write), and the reader that routes its
//! frames to the requests in flight on it.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use spillway_proto::{decode, encode_body, Frame, Kind, RequestHead, ResponseHead};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, Notify};

use crate::admission::Lease;
use crate::config::WorkerCommand;

/// What a request hears from its worker.
#[derive(Debug)]
pub enum Event {
    /// Status and headers.
    Head(Box<ResponseHead>),
    /// Body bytes.
    Body(Bytes),
    /// The response is complete.
    End,
    /// The application failed after sending the head.
    Abort,
    /// The worker process died or broke the protocol.
    WorkerLost,
}

/// A request started on a worker.
pub struct Opened {
    /// Its stream id on the worker's socket.
    pub stream: u32,
    /// What the worker answers.
    pub events: mpsc::UnboundedReceiver<Event>,
    /// Request-body credit from the worker.
    pub gate: Arc<CreditGate>,
}

/// Request-body credit granted by the worker, consumed by the body pump.
pub struct CreditGate {
    state: Mutex<(u64, bool)>,
    notify: Notify,
}

impl CreditGate {
    fn new(initial: u64) -> Arc<CreditGate> {
        Arc::new(CreditGate {
            state: Mutex::new((initial, false)),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, (u64, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn grant(&self, n: u64) {
        self.lock().0 += n;
        self.notify.notify_one();
    }

    /// Returns credit taken but not used.
    pub fn give_back(&self, n: u64) {
        self.grant(n);
    }

    fn close(&self) {
        self.lock().1 = true;
        self.notify.notify_one();
    }

    /// Waits for credit and takes up to `want` bytes of it; `None` once the stream is over.
    pub async fn take(&self, want: u64) -> Option<u64> {
        loop {
            let notified = self.notify.notified();
            {
                let mut st = self.lock();
                if st.1 {
                    return None;
                }
                if st.0 > 0 {
                    let n = st.0.min(want);
                    st.0 -= n;
                    return Some(n);
                }
            }
            notified.await;
        }
    }
}

struct StreamEntry {
    events: mpsc::UnboundedSender<Event>,
    gate: Arc<CreditGate>,
    /// Set when the request outlived `--timeout`: the client got 504, the thread is
    /// still busy in Python.
    stuck_since: Option<Instant>,
    /// Held until the worker reports the thread free (`ResponseEnd`/`ResponseAbort`).
    _lease: Option<Lease>,
}

/// Frames waiting to be written to the worker. Producers encode straight into the
/// shared buffer; the writer task takes the whole buffer per wake-up, so a burst of
/// requests costs one write syscall.
struct Outbox {
    buf: Mutex<BytesMut>,
    notify: Notify,
}

/// The front's handle on one worker process.
pub struct WorkerLink {
    /// Unique id of this worker incarnation (never reused).
    pub id: u64,
    /// OS process id.
    pub pid: u32,
    /// Generation the worker belongs to.
    pub generation: u64,
    outbox: Outbox,
    streams: Mutex<HashMap<u32, StreamEntry>>,
    next_stream: AtomicU32,
    alive: AtomicBool,
    /// Requests this worker finished.
    served: AtomicU64,
    /// Threads claimed by admission (queued hand-offs included), see `Lease`.
    pub(crate) leases: std::sync::atomic::AtomicUsize,
    /// Retire after this many requests (0: never), `--max-requests` plus jitter.
    max_requests: u64,
    /// Why the worker should be replaced, once decided.
    retire_reason: Mutex<Option<String>>,
    retire: Notify,
}

impl WorkerLink {
    /// Asks the supervisor to replace this worker (idempotent: the first reason wins).
    pub fn request_retire(&self, reason: String) {
        let mut r = self.retire_reason.lock().unwrap_or_else(|p| p.into_inner());
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
            if let Some(r) = self
                .retire_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return r;
            }
            self.retire.notified().await;
        }
    }

    /// Requests finished by this worker.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Marks a request as stuck (timed out for the client, still running in Python).
    pub fn mark_stuck(&self, stream: u32) {
        if let Some(e) = self.streams().get_mut(&stream) {
            e.stuck_since.get_or_insert_with(Instant::now);
            e.gate.close();
        }
    }

    /// Stuck requests, and how long the oldest has been stuck.
    pub fn stuck(&self) -> (usize, Duration) {
        let streams = self.streams();
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

    fn streams(&self) -> MutexGuard<'_, HashMap<u32, StreamEntry>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, f: impl FnOnce(&mut BytesMut)) {
        f(&mut self.outbox.buf.lock().unwrap_or_else(|p| p.into_inner()));
        self.outbox.notify.notify_one();
    }

    /// Queues a frame for the worker.
    pub fn send(&self, frame: &Frame) {
        self.push(|b| frame.encode(b));
    }

    /// Queues request-body bytes without building a frame value.
    pub fn send_body(&self, stream: u32, data: &[u8]) {
        self.push(|b| encode_body(Kind::RequestBody, stream, data, b));
    }

    /// Starts a request: registers its stream and queues its head frame.
    pub fn open(
        &self,
        lease: Lease,
        head: Box<RequestHead>,
        initial_credit: u64,
    ) -> Result<Opened, (Lease, Box<RequestHead>)> {
        if !self.alive.load(Ordering::Acquire) {
            return Err((lease, head));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let gate = CreditGate::new(initial_credit);
        let stream = loop {
            let s = self.next_stream.fetch_add(1, Ordering::Relaxed);
            if s != 0 && !self.streams().contains_key(&s) {
                break s;
            }
        };
        self.streams().insert(
            stream,
            StreamEntry {
                events: tx,
                gate: gate.clone(),
                stuck_since: None,
                _lease: Some(lease),
            },
        );
        self.send(&Frame::RequestHead { stream, head });
        Ok(Opened {
            stream,
            events: rx,
            gate,
        })
    }

    /// The client is gone: tell the worker, if the stream is still running there.
    pub fn cancel(&self, stream: u32) {
        let live = match self.streams().get(&stream) {
            Some(e) => {
                e.gate.close();
                true
            }
            None => false,
        };
        if live {
            self.send(&Frame::Cancel { stream });
        }
    }

    /// True while the stream has not ended on the worker.
    pub fn is_open(&self, stream: u32) -> bool {
        self.streams().contains_key(&stream)
    }

    /// Routes one frame from the worker. Errors mean the worker broke the protocol.
    fn route(&self, frame: Frame) -> Result<(), String> {
        let deliver = |stream: u32, ev: Event| {
            if let Some(e) = self.streams().get(&stream) {
                let _ = e.events.send(ev);
            }
        };
        match frame {
            Frame::ResponseHead { stream, head } => deliver(stream, Event::Head(head)),
            Frame::ResponseBody { stream, data } => deliver(stream, Event::Body(data)),
            Frame::ResponseEnd { stream } | Frame::ResponseAbort { stream } => {
                let ev = if matches!(frame, Frame::ResponseEnd { .. }) {
                    Event::End
                } else {
                    Event::Abort
                };
                // Removing the entry drops its lease: the thread is free again.
                if let Some(e) = self.streams().remove(&stream) {
                    e.gate.close();
                    let _ = e.events.send(ev);
                    let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
                    if self.max_requests > 0 && served == self.max_requests {
                        self.request_retire(format!("served max-requests ({served})"));
                    }
                }
            }
            Frame::BodyCredit { stream, bytes } => {
                if let Some(e) = self.streams().get(&stream) {
                    e.gate.grant(bytes as u64);
                }
            }
            other => return Err(format!("unexpected {:?} frame", other.kind())),
        }
        Ok(())
    }

    /// Fails every request in flight on this worker (it died): 502 for those without a
    /// response head, a cut connection for the rest.
    fn fail_all(&self) {
        self.alive.store(false, Ordering::Release);
        let entries: Vec<StreamEntry> = self.streams().drain().map(|(_, e)| e).collect();
        for mut e in entries {
            e.gate.close();
            let _ = e.events.send(Event::WorkerLost);
            // The dead worker's threads are not free: do not hand them out.
            if let Some(mut lease) = e._lease.take() {
                lease.forget();
            }
        }
    }

    /// Asks the worker to finish what it has and exit.
    pub fn shutdown(&self) {
        self.send(&Frame::Shutdown);
    }

    /// Threads claimed on this worker: requests in flight plus those about to start.
    pub fn claimed(&self) -> usize {
        self.leases.load(Ordering::Acquire)
    }

    /// Requests in flight on this worker.
    pub fn in_flight(&self) -> usize {
        self.streams().len()
    }
}

/// A started worker process before it said hello.
pub struct Spawned {
    /// The child process.
    pub child: tokio::process::Child,
    socket: tokio::net::UnixStream,
}

/// Starts a worker process: our own binary, with the worker end of a socketpair on fd 3.
pub fn spawn(cmd: &WorkerCommand, generation: u64) -> io::Result<Spawned> {
    let (front, worker) = std::os::unix::net::UnixStream::pair()?;
    let worker_fd: OwnedFd = worker.into();
    let raw = worker_fd.as_raw_fd();
    let mut c = std::process::Command::new(&cmd.program);
    c.args(&cmd.args)
        .arg("--generation")
        .arg(generation.to_string())
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        // Sockets and the notify channel belong to the front: a worker that saw them
        // could tell systemd it is "ready", or claim fds that are not its own.
        .env_remove(crate::systemd::ACTIVATION_VARS[0])
        .env_remove(crate::systemd::ACTIVATION_VARS[1])
        .env_remove(crate::systemd::ACTIVATION_VARS[2])
        .env_remove(crate::systemd::NOTIFY_SOCKET_VAR)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    if let Some(dir) = &cmd.cwd {
        c.current_dir(dir);
    }
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (dup2, fcntl, prctl, signal) on plain integers.
    unsafe {
        c.pre_exec(move || {
            if raw == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(raw, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            // A worker must not outlive its front, even if the front is SIGKILLed.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // Ctrl-C, a terminal hangup, or systemd's KillMode=control-group signal the
            // whole group; the front alone decides how workers stop (it drains them with
            // a shutdown frame), so a group-wide SIGTERM is not a worker crash.
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::signal(sig, libc::SIG_IGN);
            }
            Ok(())
        });
    }
    let child = tokio::process::Command::from(c).spawn()?;
    drop(worker_fd);
    front.set_nonblocking(true)?;
    let socket = tokio::net::UnixStream::from_std(front)?;
    Ok(Spawned { child, socket })
}

/// How a worker's start-up ended.
pub enum Startup {
    /// It imported the application; here is its link and its reader.
    Ready {
        /// The link to register with the pool.
        link: Arc<WorkerLink>,
        /// Threads it serves with.
        threads: u16,
        /// Pumps frames until the worker goes away.
        reader: WorkerReader,
    },
    /// It closed the socket or broke the protocol before being ready.
    Failed(String),
}

/// The reading half of a worker's socket, run by its supervisor task.
pub struct WorkerReader {
    link: Arc<WorkerLink>,
    rd: OwnedReadHalf,
    buf: BytesMut,
}

async fn read_frame(rd: &mut OwnedReadHalf, buf: &mut BytesMut) -> Result<Option<Frame>, String> {
    loop {
        match decode(buf) {
            Ok(Some(f)) => return Ok(Some(f)),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if buf.capacity() - buf.len() < 8192 {
            buf.reserve(64 * 1024);
        }
        match rd.read_buf(buf).await {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Performs the hello/ready handshake on a spawned worker; it retires after
/// `max_requests` requests (0: never).
pub async fn handshake(
    spawned: Spawned,
    id: u64,
    generation: u64,
    max_requests: u64,
) -> (tokio::process::Child, Startup) {
    let Spawned { child, socket } = spawned;
    let (mut rd, wr) = socket.into_split();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let pid = match read_frame(&mut rd, &mut buf).await {
        Ok(Some(Frame::Hello { version, pid })) if version == spillway_proto::PROTOCOL_VERSION => {
            pid
        }
        Ok(Some(Frame::Hello { version, .. })) => {
            return (
                child,
                Startup::Failed(format!(
                    "worker speaks frame protocol {version}, this front speaks {}",
                    spillway_proto::PROTOCOL_VERSION
                )),
            )
        }
        Ok(Some(other)) => {
            return (
                child,
                Startup::Failed(format!("expected hello, got {:?}", other.kind())),
            )
        }
        Ok(None) => return (child, Startup::Failed("exited before saying hello".into())),
        Err(e) => return (child, Startup::Failed(e)),
    };
    let threads = match read_frame(&mut rd, &mut buf).await {
        Ok(Some(Frame::Ready { threads })) => threads,
        Ok(Some(other)) => {
            return (
                child,
                Startup::Failed(format!("expected ready, got {:?}", other.kind())),
            )
        }
        Ok(None) => return (child, Startup::Failed("exited before it was ready".into())),
        Err(e) => return (child, Startup::Failed(e)),
    };
    let link = Arc::new(WorkerLink {
        id,
        pid,
        generation,
        outbox: Outbox {
            buf: Mutex::new(BytesMut::with_capacity(64 * 1024)),
            notify: Notify::new(),
        },
        streams: Mutex::new(HashMap::new()),
        next_stream: AtomicU32::new(1),
        alive: AtomicBool::new(true),
        served: AtomicU64::new(0),
        leases: std::sync::atomic::AtomicUsize::new(0),
        max_requests,
        retire_reason: Mutex::new(None),
        retire: Notify::new(),
    });
    tokio::spawn(write_loop(link.clone(), wr));
    (
        child,
        Startup::Ready {
            link: link.clone(),
            threads,
            reader: WorkerReader { link, rd, buf },
        },
    )
}

async fn write_loop(link: Arc<WorkerLink>, mut wr: OwnedWriteHalf) {
    loop {
        link.outbox.notify.notified().await;
        let data = {
            let mut b = link.outbox.buf.lock().unwrap_or_else(|p| p.into_inner());
            b.split()
        };
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

impl WorkerReader {
    /// Routes frames until the worker closes its socket; then fails what was in flight.
    pub async fn run(mut self) -> Option<String> {
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
        self.link.fail_all();
        self.link.outbox.notify.notify_one();
        err
    }
}
