//! A small, careful HTTP/1.1 client for tests: raw bytes out, a parsed response back.
//!
//! Handles Content-Length, chunked and close-delimited bodies, responses that never have a
//! body (HEAD, 1xx, 204, 304) and interim `100 Continue` responses. Every read has a
//! timeout and every loop is bounded.

use crate::json::Json;
use crate::IO_TIMEOUT;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const MAX_HEAD: usize = 256 * 1024;
const MAX_BODY: usize = 512 * 1024 * 1024;
const MAX_INTERIM: usize = 16;

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One client connection.
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    eof: bool,
    timeout: Duration,
    /// Methods of requests sent through `request`/`send_request`, not yet answered.
    pending: VecDeque<String>,
    /// Everything received on this connection, for failure reports.
    pub received: Vec<u8>,
}

/// A response head: status line and headers.
#[derive(Clone, Debug, Default)]
pub struct Head {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// Status codes of interim (1xx) responses that came before this one.
    pub interim: Vec<u16>,
    pub raw: String,
}

impl Head {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header named `name`.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length").map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad Content-Length {v:?}"))
        })
    }
}

/// A complete response.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub head: Head,
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body parsed as JSON; panics with the whole response if it is not.
    pub fn json(&self) -> Json {
        Json::parse(&self.text()).unwrap_or_else(|e| panic!("body is not JSON ({e}):\n{self}"))
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(4000).collect();
        write!(f, "{}{}", self.head.raw, body)
    }
}

/// What a raw exchange looked like, for failure messages.
pub fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s: String = s.chars().take(4000).collect();
    format!("{s:?}")
}

impl Conn {
    pub fn tcp(s: TcpStream) -> Conn {
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Conn::new(Stream::Tcp(s))
    }

    pub fn unix(s: UnixStream) -> Conn {
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Conn::new(Stream::Unix(s))
    }

    fn new(stream: Stream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
            eof: false,
            timeout: IO_TIMEOUT,
            pending: VecDeque::new(),
            received: Vec::new(),
        }
    }

    /// Changes the timeout of every following read.
    pub fn set_timeout(&mut self, d: Duration) {
        self.timeout = d;
        match &self.stream {
            Stream::Tcp(s) => s.set_read_timeout(Some(d)).unwrap(),
            Stream::Unix(s) => s.set_read_timeout(Some(d)).unwrap(),
        }
    }

    /// The local port (TCP only).
    pub fn local_port(&self) -> u16 {
        match &self.stream {
            Stream::Tcp(s) => s.local_addr().unwrap().port(),
            Stream::Unix(_) => 0,
        }
    }

    /// Writes all of `bytes`; panics on error.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).unwrap_or_else(|e| {
            panic!(
                "write failed: {e}; received so far: {}",
                show(&self.received)
            )
        });
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Half-closes the write side.
    pub fn shutdown_write(&mut self) {
        let _ = match &self.stream {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }

    /// Sends a request (adding Host and Content-Length when there is a body) without
    /// reading the response.
    pub fn send_request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        let mut req = format!("{method} {target} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str("Host: test.invalid\r\n");
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        let framed = headers.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
        });
        if !body.is_empty() && !framed {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.send(&bytes);
        self.pending.push_back(method.to_string());
    }

    /// Sends a request and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.send_request(method, target, headers, body);
        self.read_response()
    }

    /// `GET target` on this connection.
    pub fn get(&mut self, target: &str) -> Response {
        self.request("GET", target, &[], b"")
    }

    fn fill(&mut self, deadline: Instant) -> Result<usize, String> {
        if self.eof {
            return Ok(0);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out; received: {}", show(&self.received)));
        }
        let mut tmp = [0u8; 64 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => {
                self.eof = true;
                Ok(0)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                if self.received.len() < 64 * 1024 {
                    self.received.extend_from_slice(&tmp[..n]);
                }
                Ok(n)
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                Err(format!(
                    "read timed out after {:?}; received: {}",
                    self.timeout,
                    show(&self.received)
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(1),
            Err(e) => Err(format!(
                "read error: {e}; received: {}",
                show(&self.received)
            )),
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    fn take_line(&mut self, deadline: Instant, limit: usize) -> Result<String, String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if self.buf.len() > limit {
                return Err(format!("line longer than {limit}: {}", show(&self.buf)));
            }
            if self.fill(deadline)? == 0 {
                return Err(format!(
                    "connection closed mid-line; received: {}",
                    show(&self.received)
                ));
            }
        }
    }

    fn take_exact(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            if self.fill(deadline)? == 0 {
                return Err(format!(
                    "connection closed after {} of {n} body bytes; received: {}",
                    self.buf.len(),
                    show(&self.received)
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads one response head, skipping (and recording) interim 1xx responses except
    /// `101`.
    pub fn read_head(&mut self) -> Result<Head, String> {
        let deadline = self.deadline();
        let mut interim = Vec::new();
        for _ in 0..MAX_INTERIM {
            // Wait for the whole head.
            let end = loop {
                if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(format!("response head over {MAX_HEAD} bytes"));
                }
                if self.fill(deadline)? == 0 {
                    return Err(if self.buf.is_empty() {
                        format!(
                            "connection closed before a response; received: {}",
                            show(&self.received)
                        )
                    } else {
                        format!("connection closed mid-head: {}", show(&self.buf))
                    });
                }
            };
            let raw: Vec<u8> = self.buf.drain(..end).collect();
            let raw = String::from_utf8_lossy(&raw).into_owned();
            let mut lines = raw.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap_or_default().to_string();
            if !version.starts_with("HTTP/1.") {
                return Err(format!("bad status line {status_line:?}"));
            }
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad status line {status_line:?}"))?;
            let reason = parts.next().unwrap_or_default().to_string();
            let mut headers = Vec::new();
            for l in lines.filter(|l| !l.is_empty()) {
                let (k, v) = l
                    .split_once(':')
                    .ok_or_else(|| format!("bad header line {l:?}"))?;
                headers.push((k.to_string(), v.trim().to_string()));
            }
            if (100..200).contains(&status) && status != 101 {
                interim.push(status);
                continue;
            }
            return Ok(Head {
                version,
                status,
                reason,
                headers,
                interim,
                raw,
            });
        }
        Err(format!("more than {MAX_INTERIM} interim responses"))
    }

    /// Reads only an interim (1xx) response head, e.g. `100 Continue`, and returns its
    /// status. Fails if the next head is a final response.
    pub fn read_interim(&mut self) -> Result<u16, String> {
        let deadline = self.deadline();
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill(deadline)? == 0 {
                return Err(format!("closed; received: {}", show(&self.received)));
            }
        };
        let raw: Vec<u8> = self.buf[..end].to_vec();
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let status: u16 = raw
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad head {raw:?}"))?;
        if (100..200).contains(&status) {
            self.buf.drain(..end);
            Ok(status)
        } else {
            Err(format!("expected an interim response, got {raw:?}"))
        }
    }

    /// Reads the next chunk of a chunked body: `Some(data)`, or `None` at the last chunk
    /// (trailers are consumed).
    pub fn read_chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        let deadline = self.deadline();
        let line = self.take_line(deadline, 4096)?;
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size line {line:?}"))?;
        if size == 0 {
            for _ in 0..1000 {
                if self.take_line(deadline, MAX_HEAD)?.is_empty() {
                    return Ok(None);
                }
            }
            return Err("too many trailers".into());
        }
        if size > MAX_BODY {
            return Err(format!("chunk of {size} bytes"));
        }
        let data = self.take_exact(size, deadline)?;
        let crlf = self.take_exact(2, deadline)?;
        if crlf != b"\r\n" {
            return Err(format!("chunk not followed by CRLF: {}", show(&crlf)));
        }
        Ok(Some(data))
    }

    /// Reads the body that belongs to `head`. `head_request` says the request was HEAD.
    pub fn read_body(&mut self, head: &Head, head_request: bool) -> Result<Vec<u8>, String> {
        if head_request
            || head.status == 204
            || head.status == 304
            || (100..200).contains(&head.status)
        {
            return Ok(Vec::new());
        }
        if head.is_chunked() {
            let mut body = Vec::new();
            for _ in 0..10_000_000 {
                match self.read_chunk()? {
                    Some(c) => {
                        body.extend_from_slice(&c);
                        if body.len() > MAX_BODY {
                            return Err("body too large".into());
                        }
                    }
                    None => return Ok(body),
                }
            }
            return Err("too many chunks".into());
        }
        if let Some(n) = head.content_length() {
            let deadline = self.deadline();
            return self.take_exact(n, deadline);
        }
        self.read_to_close()
    }

    /// Everything until the peer closes (a reset after data counts as a close).
    pub fn read_to_close(&mut self) -> Result<Vec<u8>, String> {
        let deadline = self.deadline();
        while !self.eof {
            if self.buf.len() > MAX_BODY {
                return Err("close-delimited body too large".into());
            }
            match self.fill(deadline) {
                Ok(_) => {}
                Err(e) if e.starts_with("read error") => break,
                Err(e) => return Err(e),
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// Reads one complete response; panics with what was received if that fails.
    pub fn read_response(&mut self) -> Response {
        self.try_read_response().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_read_response(&mut self) -> Result<Response, String> {
        let is_head = self.pending.pop_front().is_some_and(|m| m == "HEAD");
        self.try_read_response_to(is_head)
    }

    /// Waits at most `wait` for a response head: `Ok(None)` if none arrived yet (whatever
    /// part of it arrived is kept for the next call), `Ok(Some(..))` with the whole response
    /// (read with the connection's normal timeout) once it did. For telling which of several
    /// connections gets answered first without blocking on the others.
    pub fn poll_response(&mut self, wait: Duration) -> Result<Option<Response>, String> {
        let old = self.timeout;
        self.set_timeout(wait);
        let head = self.read_head();
        self.set_timeout(old);
        let head = match head {
            Ok(h) => h,
            Err(e) if e.contains("timed out") => return Ok(None),
            Err(e) => return Err(e),
        };
        let is_head = self.pending.pop_front().is_some_and(|m| m == "HEAD");
        let body = self.read_body(&head, is_head)?;
        Ok(Some(Response {
            status: head.status,
            head,
            body,
        }))
    }

    /// Reads one response to a HEAD request sent with `send`.
    pub fn read_head_response(&mut self) -> Response {
        self.try_read_response_to(true)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_read_response_to(&mut self, head_request: bool) -> Result<Response, String> {
        let head = self.read_head()?;
        let body = self.read_body(&head, head_request)?;
        Ok(Response {
            status: head.status,
            head,
            body,
        })
    }

    /// Whether the server closed this connection (EOF or reset) within `timeout`;
    /// any bytes that arrive meanwhile are returned in the error.
    pub fn closed_within(&mut self, timeout: Duration) -> Result<bool, String> {
        self.set_timeout(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Ok(0) => return Ok(true),
                Ok(_) => {
                    if self.buf.len() > MAX_HEAD {
                        return Err(format!("unexpected data: {}", show(&self.buf)));
                    }
                }
                Err(e) if e.starts_with("read error") => return Ok(true),
                Err(_) => return Ok(false),
            }
        }
    }

    /// Bytes received but not consumed yet.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }

    /// Reads whatever arrives within `d` without failing (for "nothing more was sent").
    pub fn drain_for(&mut self, d: Duration) -> Vec<u8> {
        let old = self.timeout;
        self.set_timeout(d);
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            match self.fill(deadline) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        self.set_timeout(old);
        std::mem::take(&mut self.buf)
    }
}
