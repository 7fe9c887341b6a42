//! Test fixtures: small blocking HTTP/1.1 servers on loopback that can be told to misbehave,
//! and a helper that runs `spillway bench` and returns its JSON report.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use clap::Parser;
use socket2::{Domain, SockRef, Socket, Type};
use spillway_bench::BenchArgs;

/// How a test server treats each connection.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// `200 OK`, Content-Length, keep-alive.
    Ok,
    /// The given status with an empty body, keep-alive.
    Status(u16),
    /// `200 OK` with a chunked body, keep-alive.
    Chunked,
    /// `200 OK` with a body that ends when the server closes.
    CloseDelimited,
    /// Read the request, then reset the connection.
    Reset,
    /// Read the request, then close (FIN) without answering.
    CloseWithoutResponse,
    /// Read the request and never answer.
    Stall,
    /// Answer with a bad Content-Length.
    Malformed,
    /// Keep-alive, but close a connection idle for longer than this.
    CloseIdleAfter(Duration),
    /// Keep-alive, but reset a connection idle for longer than this.
    ResetIdleAfter(Duration),
    /// Answer the first request, reset on the second.
    ResetOnSecond,
    /// Answer the first request, close without answering on the second.
    CloseOnSecond,
    /// `200 OK` after sleeping this long, keep-alive.
    Slow(Duration),
}

/// A server running on its own threads; it lives until the test process exits.
pub struct Server {
    pub addr: SocketAddr,
    pub url: String,
}

fn listener(backlog: i32) -> Socket {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_reuse_address(true).expect("reuseaddr");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    socket.bind(&addr.into()).expect("bind");
    socket.listen(backlog).expect("listen");
    socket
}

fn local_addr(socket: &Socket) -> SocketAddr {
    socket
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("inet")
}

/// A well-behaved accept loop serving every connection in `mode`.
pub fn serve(mode: Mode) -> Server {
    serve_after(mode, Duration::ZERO, 1024)
}

/// A listener with `backlog` that starts accepting only after `delay`, then serves in `mode`.
pub fn serve_after(mode: Mode, delay: Duration, backlog: i32) -> Server {
    let socket = listener(backlog);
    let addr = local_addr(&socket);
    let listener: TcpListener = socket.into();
    thread::spawn(move || {
        thread::sleep(delay);
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            thread::spawn(move || handle(stream, mode));
        }
    });
    Server {
        addr,
        url: format!("http://{addr}/"),
    }
}

/// A listener with `backlog` that never accepts; keep the socket alive for the test.
pub fn never_accepting(backlog: i32) -> (Socket, String) {
    let socket = listener(backlog);
    let url = format!("http://{}/", local_addr(&socket));
    (socket, url)
}

/// An address where nothing listens.
pub fn refusing() -> String {
    let socket = listener(1);
    let addr = local_addr(&socket);
    drop(socket);
    format!("http://{addr}/")
}

/// Reads one request head (and a Content-Length body); false on end of file or timeout.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<bool, ErrorKind> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let body_len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let total = end + 4 + body_len;
            if buf.len() >= total {
                buf.drain(..total);
                return Ok(true);
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.kind()),
        }
    }
}

fn reset(stream: TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

fn handle(mut stream: TcpStream, mode: Mode) {
    let mut buf = Vec::new();
    let idle = match mode {
        Mode::CloseIdleAfter(d) | Mode::ResetIdleAfter(d) => Some(d),
        _ => None,
    };
    let _ = stream.set_read_timeout(idle);
    let mut served = 0u64;
    loop {
        match read_request(&mut stream, &mut buf) {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => {
                // Idle timeout.
                if let Mode::ResetIdleAfter(_) = mode {
                    reset(stream);
                }
                return;
            }
        }
        served += 1;
        let response: Vec<u8> = match mode {
            Mode::Ok | Mode::CloseIdleAfter(_) | Mode::ResetIdleAfter(_) => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=1\r\n\r\nhello".to_vec()
            }
            Mode::Status(code) => {
                format!("HTTP/1.1 {code} Whatever\r\nContent-Length: 0\r\n\r\n").into_bytes()
            }
            Mode::Chunked => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
            Mode::CloseDelimited => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\nbody until close");
                return;
            }
            Mode::Reset => return reset(stream),
            Mode::CloseWithoutResponse => return,
            Mode::Stall => {
                // Hold the connection until the client gives up and closes it.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
            Mode::Malformed => b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n".to_vec(),
            Mode::ResetOnSecond if served >= 2 => return reset(stream),
            Mode::CloseOnSecond if served >= 2 => return,
            Mode::ResetOnSecond | Mode::CloseOnSecond => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
            }
            Mode::Slow(d) => {
                thread::sleep(d);
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
            }
        };
        if stream.write_all(&response).is_err() {
            return;
        }
    }
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

/// The result of one bench run.
pub struct Run {
    pub exit: ExitCode,
    pub report: serde_json::Value,
}

impl Run {
    /// A number from the report at a JSON pointer such as `/errors/by_class/reset`.
    pub fn num(&self, pointer: &str) -> u64 {
        self.report
            .pointer(pointer)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or_else(|| panic!("{pointer} missing in {:#}", self.report))
    }

    /// A string from the report.
    pub fn str(&self, pointer: &str) -> &str {
        self.report
            .pointer(pointer)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_else(|| panic!("{pointer} missing in {:#}", self.report))
    }

    /// Errors of one class.
    pub fn errors(&self, class: &str) -> u64 {
        self.num(&format!("/errors/by_class/{class}"))
    }
}

/// A fresh path in the temp directory.
pub fn temp_path(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "spillway-bench-test-{}-{n}-{name}",
        std::process::id()
    ))
}

/// Runs `spillway bench URL ARGS…` and reads back its JSON report.
pub fn bench(url: &str, args: &[&str]) -> Run {
    let json = temp_path("report.json");
    let json_arg = json.to_string_lossy().into_owned();
    let mut argv = vec!["bench", url, "--no-progress", "--json", &json_arg];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let exit = spillway_bench::run(cli.bench).expect("bench runs");
    let text = std::fs::read_to_string(&json).expect("report written");
    let _ = std::fs::remove_file(&json);
    Run {
        exit,
        report: serde_json::from_str(&text).expect("report is JSON"),
    }
}
