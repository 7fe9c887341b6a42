//! The frame vocabulary: what a front and a worker say to each other, as Rust values.

use bytes::Bytes;

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// worker → front: first frame, protocol version and pid.
    Hello = 0x01,
    /// worker → front: application imported, threads available.
    Ready = 0x02,
    /// front → worker: finish in-flight requests, then exit.
    Shutdown = 0x03,
    /// worker → front: its threads and the numbers that size them.
    Stats = 0x04,
    /// front → worker: requests are waiting in the front's queue.
    Backlog = 0x05,
    /// front → worker: requests all workers have finished so far, and the others' threads.
    Served = 0x06,
    /// front → worker: a new request.
    RequestHead = 0x10,
    /// front → worker: request body bytes.
    RequestBody = 0x11,
    /// front → worker: request body complete.
    RequestEnd = 0x12,
    /// front → worker: the client is gone; stop working on this stream.
    Cancel = 0x13,
    /// front → worker: the worker may send this many more response-body bytes.
    ResponseCredit = 0x14,
    /// front → worker: the request ran past `--timeout`; interrupt its handler.
    Expire = 0x15,
    /// worker → front: status and headers.
    ResponseHead = 0x20,
    /// worker → front: response body bytes.
    ResponseBody = 0x21,
    /// worker → front: response complete, the thread is free again.
    ResponseEnd = 0x22,
    /// worker → front: the application failed after the head was sent; cut the response.
    ResponseAbort = 0x23,
    /// worker → front: the application wants this many more request-body bytes.
    BodyCredit = 0x24,
}

impl Kind {
    pub(crate) fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0x01 => Kind::Hello,
            0x02 => Kind::Ready,
            0x03 => Kind::Shutdown,
            0x04 => Kind::Stats,
            0x05 => Kind::Backlog,
            0x06 => Kind::Served,
            0x10 => Kind::RequestHead,
            0x11 => Kind::RequestBody,
            0x12 => Kind::RequestEnd,
            0x13 => Kind::Cancel,
            0x14 => Kind::ResponseCredit,
            0x15 => Kind::Expire,
            0x20 => Kind::ResponseHead,
            0x21 => Kind::ResponseBody,
            0x22 => Kind::ResponseEnd,
            0x23 => Kind::ResponseAbort,
            0x24 => Kind::BodyCredit,
            _ => return None,
        })
    }
}

/// HTTP version of the request, as `SERVER_PROTOCOL` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `HTTP/1.0`
    Http10 = 0,
    /// `HTTP/1.1`
    Http11 = 1,
    /// `HTTP/2`
    Http2 = 2,
}

impl Protocol {
    /// The `SERVER_PROTOCOL` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http10 => "HTTP/1.0",
            Protocol::Http11 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
        }
    }
}

/// URL scheme of the request, as `wsgi.url_scheme` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http`
    Http = 0,
    /// `https`
    Https = 1,
}

impl Scheme {
    /// The `wsgi.url_scheme` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// How the request body is framed on the client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all: `wsgi.input` is at EOF from the start.
    Empty,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`: length unknown until `RequestEnd`.
    Chunked,
}

/// Everything a worker needs to build a PEP 3333 environ, already decoded by the front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// `REQUEST_METHOD`
    pub method: Bytes,
    /// `SCRIPT_NAME` (the configured root path that matched)
    pub script_name: Bytes,
    /// `PATH_INFO`: percent-decoded bytes (the worker maps them to latin-1)
    pub path_info: Bytes,
    /// `QUERY_STRING`, raw
    pub query_string: Bytes,
    /// `SERVER_PROTOCOL`
    pub protocol: Protocol,
    /// `wsgi.url_scheme`
    pub scheme: Scheme,
    /// `SERVER_NAME`
    pub server_name: Bytes,
    /// `SERVER_PORT`
    pub server_port: Bytes,
    /// `REMOTE_ADDR`
    pub remote_addr: Bytes,
    /// `REMOTE_PORT`
    pub remote_port: Bytes,
    /// Body framing.
    pub body: BodyKind,
    /// The client sent `Expect: 100-continue`: the front sends no body until credit comes.
    pub expect_continue: bool,
    /// Environ entries from headers, keys already in environ form (`HTTP_HOST`,
    /// `CONTENT_TYPE`, …), repeated headers already joined.
    pub headers: Vec<(Bytes, Bytes)>,
}

/// Status and headers from the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Header name/value pairs in the application's order.
    pub headers: Vec<(Bytes, Bytes)>,
}

/// What a worker reports about its thread pool: what it has, and the cumulative counters
/// a reader turns into rates by taking differences.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkerStats {
    /// Python threads running now.
    pub threads: u16,
    /// Threads the pool is sizing itself towards.
    pub target: u16,
    /// Threads serving a request now.
    pub busy: u16,
    /// Requests waiting in the worker for a thread.
    pub queued: u16,
    /// Requests finished since start.
    pub requests: u64,
    /// CPU time of the worker process since start, in nanoseconds.
    pub cpu_ns: u64,
    /// Time threads waited to take the GIL, in nanoseconds, since start.
    pub gil_wait_ns: u64,
    /// How many times a thread took the GIL (to average the wait).
    pub gil_takes: u64,
    /// Why the thread count last changed, in an operator's words (empty: unchanged).
    pub reason: Bytes,
    /// The sizing rule that made the last decision (empty: none yet).
    pub rule: Bytes,
    /// What the current thread count was measured to do (threads 0: not yet measured).
    pub current: LevelStats,
    /// What the thread count before it was measured to do.
    pub previous: LevelStats,
}

/// What one thread count of a worker was measured to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LevelStats {
    /// The thread count (0: no measurement).
    pub threads: u16,
    /// Requests completed per second, in thousandths.
    pub throughput_milli: u64,
    /// Mean time a request held its thread, in microseconds.
    pub service_us: u64,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// worker → front: first frame on the socket.
    Hello {
        /// Protocol version the worker speaks.
        version: u16,
        /// The worker's pid.
        pid: u32,
    },
    /// worker → front: application imported; ready for `threads` concurrent requests.
    Ready {
        /// Python threads that take requests.
        threads: u16,
    },
    /// front → worker: finish in-flight requests, then exit.
    Shutdown,
    /// worker → front: its thread pool.
    Stats(Box<WorkerStats>),
    /// front → worker: requests wait in the front's queue (every worker is full), the
    /// oldest for `oldest_ms`; `waiting` 0 says the queue emptied.
    Backlog {
        /// Requests waiting.
        waiting: u32,
        /// How long the oldest has waited, in milliseconds.
        oldest_ms: u32,
    },
    /// front → worker: requests all the front's workers have finished since it started
    /// (this one's included). A worker's own throughput can rise by taking work from the
    /// others (a share of a lock they all contend for); this count says whether the
    /// whole rose.
    Served {
        /// Requests finished, a count that only grows.
        requests: u64,
        /// Threads the other workers run: while they change, the others' throughput
        /// moves for reasons of their own.
        other_threads: u32,
    },
    /// front → worker: a new request on `stream`.
    RequestHead {
        /// Request id.
        stream: u32,
        /// The request.
        head: Box<RequestHead>,
    },
    /// front → worker: body bytes.
    RequestBody {
        /// Request id.
        stream: u32,
        /// Bytes.
        data: Bytes,
    },
    /// front → worker: the body is complete.
    RequestEnd {
        /// Request id.
        stream: u32,
    },
    /// front → worker: client gone; stop and release the thread.
    Cancel {
        /// Request id.
        stream: u32,
    },
    /// front → worker: the request ran past `--timeout`: the client got 504; stop the
    /// handler (an asynchronous exception in its thread) and free the thread.
    Expire {
        /// Request id.
        stream: u32,
    },
    /// front → worker: more response-body credit.
    ResponseCredit {
        /// Request id.
        stream: u32,
        /// Bytes granted.
        bytes: u32,
    },
    /// worker → front: status and headers.
    ResponseHead {
        /// Request id.
        stream: u32,
        /// Status and headers.
        head: Box<ResponseHead>,
    },
    /// worker → front: body bytes.
    ResponseBody {
        /// Request id.
        stream: u32,
        /// Bytes.
        data: Bytes,
    },
    /// worker → front: response complete, application's `close()` done, thread free.
    ResponseEnd {
        /// Request id.
        stream: u32,
    },
    /// worker → front: failure after the head; the client connection must be cut.
    ResponseAbort {
        /// Request id.
        stream: u32,
    },
    /// worker → front: the application wants more request-body bytes.
    BodyCredit {
        /// Request id.
        stream: u32,
        /// Bytes granted.
        bytes: u32,
    },
}

impl Frame {
    /// The kind byte of this frame.
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Hello { .. } => Kind::Hello,
            Frame::Ready { .. } => Kind::Ready,
            Frame::Shutdown => Kind::Shutdown,
            Frame::Stats(_) => Kind::Stats,
            Frame::Backlog { .. } => Kind::Backlog,
            Frame::Served { .. } => Kind::Served,
            Frame::RequestHead { .. } => Kind::RequestHead,
            Frame::RequestBody { .. } => Kind::RequestBody,
            Frame::RequestEnd { .. } => Kind::RequestEnd,
            Frame::Cancel { .. } => Kind::Cancel,
            Frame::Expire { .. } => Kind::Expire,
            Frame::ResponseCredit { .. } => Kind::ResponseCredit,
            Frame::ResponseHead { .. } => Kind::ResponseHead,
            Frame::ResponseBody { .. } => Kind::ResponseBody,
            Frame::ResponseEnd { .. } => Kind::ResponseEnd,
            Frame::ResponseAbort { .. } => Kind::ResponseAbort,
            Frame::BodyCredit { .. } => Kind::BodyCredit,
        }
    }

    /// The stream this frame belongs to (0 for control frames).
    pub fn stream(&self) -> u32 {
        match self {
            Frame::Hello { .. }
            | Frame::Ready { .. }
            | Frame::Shutdown
            | Frame::Stats(_)
            | Frame::Backlog { .. }
            | Frame::Served { .. } => 0,
            Frame::RequestHead { stream, .. }
            | Frame::RequestBody { stream, .. }
            | Frame::RequestEnd { stream }
            | Frame::Cancel { stream }
            | Frame::Expire { stream }
            | Frame::ResponseCredit { stream, .. }
            | Frame::ResponseHead { stream, .. }
            | Frame::ResponseBody { stream, .. }
            | Frame::ResponseEnd { stream }
            | Frame::ResponseAbort { stream }
            | Frame::BodyCredit { stream, .. } => *stream,
        }
    }
}
