//! One client connection: a timed connect that also reads the SYN retransmits it took, and
//! request/response exchanges on it, with every failure sorted into an [`ErrorClass`].

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::http1::{self, EofError, ParseError, ReadError, Response};

/// The error classes a report counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The target answered the SYN with a reset: nothing listens there.
    Refused,
    /// No connection within --timeout (typically SYNs dropped by a full accept queue).
    ConnectTimeout,
    /// Any other connect failure (no route, no free local port, …).
    ConnectError,
    /// The connection was reset while sending or awaiting a response.
    Reset,
    /// The server closed the connection (FIN) before a complete response.
    Closed,
    /// The response did not complete within --timeout.
    ReadTimeout,
    /// The response was not valid HTTP/1.1.
    Malformed,
    /// Any other socket error while sending or reading.
    Io,
}

impl ErrorClass {
    /// All classes, in report order.
    pub const ALL: [ErrorClass; 8] = [
        ErrorClass::Refused,
        ErrorClass::ConnectTimeout,
        ErrorClass::ConnectError,
        ErrorClass::Reset,
        ErrorClass::Closed,
        ErrorClass::ReadTimeout,
        ErrorClass::Malformed,
        ErrorClass::Io,
    ];

    /// The name used in the summary and the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Refused => "refused",
            ErrorClass::ConnectTimeout => "connect_timeout",
            ErrorClass::ConnectError => "connect_error",
            ErrorClass::Reset => "reset",
            ErrorClass::Closed => "closed",
            ErrorClass::ReadTimeout => "read_timeout",
            ErrorClass::Malformed => "malformed",
            ErrorClass::Io => "io",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Why a connect or an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("connection refused")]
    Refused,
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("connect failed: {0}")]
    Connect(io::Error),
    #[error("connection reset: {0}")]
    Reset(io::Error),
    #[error("connection {0}")]
    Closed(EofError),
    #[error("no complete response within {0:?}")]
    ReadTimeout(Duration),
    #[error("malformed response: {0}")]
    Malformed(ParseError),
    #[error("socket error: {0}")]
    Io(io::Error),
}

impl RequestError {
    pub(crate) fn class(&self) -> ErrorClass {
        match self {
            RequestError::Refused => ErrorClass::Refused,
            RequestError::ConnectTimeout(_) => ErrorClass::ConnectTimeout,
            RequestError::Connect(_) => ErrorClass::ConnectError,
            RequestError::Reset(_) => ErrorClass::Reset,
            RequestError::Closed(_) => ErrorClass::Closed,
            RequestError::ReadTimeout(_) => ErrorClass::ReadTimeout,
            RequestError::Malformed(_) => ErrorClass::Malformed,
            RequestError::Io(_) => ErrorClass::Io,
        }
    }

    fn from_connect_io(e: io::Error, timeout: Duration) -> RequestError {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => RequestError::Refused,
            // The kernel's own SYN retry limit (tcp_syn_retries) ran out before ours.
            io::ErrorKind::TimedOut => RequestError::ConnectTimeout(timeout),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                RequestError::Reset(e)
            }
            _ => RequestError::Connect(e),
        }
    }

    fn from_exchange_io(e: io::Error) -> RequestError {
        match e.kind() {
            // EPIPE: we wrote after the peer had reset or fully closed the connection.
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => RequestError::Reset(e),
            _ => RequestError::Io(e),
        }
    }
}

impl From<ReadError> for RequestError {
    fn from(e: ReadError) -> RequestError {
        match e {
            ReadError::Io(e) => RequestError::from_exchange_io(e),
            ReadError::Parse(e) => RequestError::Malformed(e),
            ReadError::Eof(e) => RequestError::Closed(e),
        }
    }
}

/// A connect attempt that completed.
pub(crate) struct Connected {
    pub conn: Conn,
    pub elapsed: Duration,
    pub syn_retransmits: Option<u32>,
}

/// A connect attempt that failed.
pub(crate) struct ConnectFailed {
    pub error: RequestError,
    pub elapsed: Duration,
    pub syn_retransmits: Option<u32>,
}

/// Opens a connection, timing only the TCP handshake and reading `tcpi_total_retrans` right
/// after it completes or gives up (while the socket still exists), so a slow connect can be
/// attributed to SYN retransmits.
pub(crate) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Connected, ConnectFailed> {
    let start = Instant::now();
    let fail = |error, syn_retransmits| ConnectFailed {
        error,
        elapsed: start.elapsed(),
        syn_retransmits,
    };
    let socket = match new_socket(addr) {
        Ok(s) => s,
        Err(e) => return Err(fail(RequestError::Connect(e), None)),
    };
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => {
            let retrans = crate::sys::total_retrans(socket.as_raw_fd());
            return Err(fail(RequestError::from_connect_io(e, timeout), retrans));
        }
    }
    let stream = match TcpStream::from_std(std::net::TcpStream::from(socket)) {
        Ok(s) => s,
        Err(e) => return Err(fail(RequestError::Connect(e), None)),
    };
    let result = tokio::time::timeout(timeout, wait_connected(&stream)).await;
    let elapsed = start.elapsed();
    let syn_retransmits = crate::sys::total_retrans(stream.as_raw_fd());
    match result {
        Ok(Ok(())) => {
            // Requests are written whole, so Nagle would only add delay to small bodies.
            let _ = stream.set_nodelay(true);
            Ok(Connected {
                conn: Conn {
                    stream,
                    buf: BytesMut::with_capacity(16 * 1024),
                    requests: 0,
                },
                elapsed,
                syn_retransmits,
            })
        }
        Ok(Err(e)) => Err(ConnectFailed {
            error: RequestError::from_connect_io(e, timeout),
            elapsed,
            syn_retransmits,
        }),
        Err(_) => Err(ConnectFailed {
            error: RequestError::ConnectTimeout(timeout),
            elapsed,
            syn_retransmits,
        }),
    }
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Waits for a non-blocking connect to finish, the way mio documents it: writable, then
/// `SO_ERROR`, then `getpeername` to rule out a spurious wake-up.
async fn wait_connected(stream: &TcpStream) -> io::Result<()> {
    loop {
        stream.writable().await?;
        let probe = stream.try_io(Interest::WRITABLE, || {
            if let Some(e) = stream.take_error()? {
                return Err(e);
            }
            match stream.peer_addr() {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    Err(io::ErrorKind::WouldBlock.into())
                }
                Err(e) => Err(e),
            }
        });
        match probe {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What the server did to an idle connection, seen without sending anything.
#[derive(Debug)]
pub(crate) enum IdleState {
    /// Nothing arrived: as far as the client can tell the connection is alive.
    Open,
    /// The server closed it (FIN).
    Closed,
    /// The server reset it.
    Reset,
    /// The server sent bytes nobody asked for (often a 408 before closing).
    Unsolicited(usize),
}

/// An open connection.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// Requests sent on this connection so far.
    pub requests: u64,
}

impl Conn {
    /// Sends one request and reads its whole response, all within `timeout`.
    pub(crate) async fn exchange(
        &mut self,
        request: &[u8],
        head_request: bool,
        timeout: Duration,
    ) -> Result<Response, RequestError> {
        self.requests += 1;
        let exchange = async {
            self.stream
                .write_all(request)
                .await
                .map_err(RequestError::from_exchange_io)?;
            http1::read_response(&mut self.stream, &mut self.buf, head_request)
                .await
                .map_err(RequestError::from)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(RequestError::ReadTimeout(timeout)),
        }
    }

    /// Segments retransmitted on this connection so far, SYNs included (`TCP_INFO`).
    pub(crate) fn retransmits(&self) -> Option<u32> {
        crate::sys::total_retrans(self.stream.as_raw_fd())
    }

    /// Looks at the socket without blocking, to tell whether the server ended it while idle.
    pub(crate) fn idle_state(&mut self) -> IdleState {
        let mut probe = [0u8; 4096];
        match self.stream.try_read(&mut probe) {
            Ok(0) => IdleState::Closed,
            Ok(n) => IdleState::Unsolicited(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => IdleState::Open,
            Err(_) => IdleState::Reset,
        }
    }

    /// Waits until the server sends something or closes (or `limit` passes); returns how long
    /// that took, `None` if nothing happened within `limit`.
    pub(crate) async fn wait_idle(&self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        match tokio::time::timeout(limit, self.stream.readable()).await {
            Ok(_) => Some(start.elapsed()),
            Err(_) => None,
        }
    }
}
